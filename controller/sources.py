"""Choosing the metric source: ``--prometheus URL``, else the Controller's, else the scraper."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from trimtab.adapters.prometheus import PrometheusSource
from trimtab.adapters.scrape import ScrapeSource
from trimtab.slo import Config, models

__all__ = ["build_source", "collecting"]


def build_source(
    config: Config, prometheus_url: str | None
) -> PrometheusSource | ScrapeSource | None:
    """The source ``config`` asks for (the flag wins), or ``None`` when none is configured."""
    metrics = config.controller.spec.metrics if config.controller else models.Metrics()
    if prometheus_url is not None:
        base = metrics.prometheus.model_dump() if metrics.prometheus else {}
        settings = models.PrometheusSource.model_validate({**base, "url": prometheus_url})
        return PrometheusSource(settings)
    if metrics.prometheus is not None:
        return PrometheusSource(metrics.prometheus)
    if metrics.scrape is not None:
        return ScrapeSource(metrics.scrape)
    return None


@contextmanager
def collecting(source: PrometheusSource | ScrapeSource, warmup: float) -> Iterator[None]:
    """Make ``source`` ready to answer: the scraper runs for ``warmup`` seconds first.

    The embedded scraper holds no history before it starts, so a one-shot command lets it
    collect a few samples; rates need two. Prometheus needs nothing.
    """
    if not isinstance(source, ScrapeSource):
        yield
        return
    source.start()
    try:
        time.sleep(warmup)
        yield
    finally:
        source.stop()
