"""The embedded scrape source: trimtab's own scraper, when no Prometheus is configured.

:class:`ScrapeSource` implements :class:`~trimtab.slo.ports.MetricSource`. It scrapes exposition
endpoints (an app's ``/metrics``, Envoy's ``/stats/prometheus``) every ``interval``, keeps a
bounded ring of samples per series for ``retention``, and answers the batch plan of
:mod:`trimtab.slo.batching` with :func:`trimtab.slo.evaluate.evaluate`, which computes what
Prometheus 2.42 computes for the same queries (``rate`` extrapolation, ``histogram_quantile``,
label matching). Free PromQL (``events``, ``raw`` indicators; gauge queries other than a selector
or an aggregation of one) comes back as an error: configure Prometheus for those.

Scraping follows Prometheus where it matters for the numbers:

- every sample of a scrape is stamped with the scrape's start time (explicit timestamps in the
  exposition are honoured), in milliseconds;
- each series carries ``instance`` (the target's ``host:port``) and the target's extra labels;
  a scraped label that clashes with one of those is kept as ``exported_<name>``; empty labels
  are dropped; a synthetic ``up`` series is 1 or 0 per scrape;
- a failed scrape (refused, timed out, HTTP error, unparsable) marks the target down and adds no
  samples; its series, and series that vanish from a scrape, get staleness markers.

Failures are data. ``targets()`` says which target is up, with its last error. A request that
reads series of a target that is down right now is answered with that error (UNKNOWN, never a
verdict on stale numbers); when every target is down, ``source_error`` says so.

The clock is injected and :meth:`ScrapeSource.scrape_once` is public, so tests drive it without
sleeping; :meth:`~ScrapeSource.start` runs it on a daemon thread every ``interval``.
"""

from __future__ import annotations

import logging
import math
import re
import struct
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from trimtab.slo import models
from trimtab.slo.batching import (
    Answer,
    Query,
    assemble,
    plan_what_can_be_planned,
    with_unplanned,
)
from trimtab.slo.durations import format_duration
from trimtab.slo.evaluate import Point, Series, evaluate, read_selectors, selects
from trimtab.slo.ports import Measurements, SeriesRequest, SeriesResult
from trimtab.slo.promql import Selector

__all__ = ["ScrapeSource", "TargetStatus"]

log = logging.getLogger(__name__)

DEFAULT_RETENTION = 3600.0
MAX_BODY = 64 * 1024 * 1024
MAX_WORKERS = 8
_ACCEPT = "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"
# Prometheus's staleness marker: a NaN with its own bit pattern, so an exported NaN stays a value.
_STALE_BITS = struct.pack("<Q", 0x7FF0000000000002)
_STALE = struct.unpack("<d", _STALE_BITS)[0]
_COUNTER_TYPE = re.compile(r"^#\s*TYPE\s+(\S+)\s+counter\s*$", re.MULTILINE)

Key = tuple[tuple[str, str], ...]


def _is_stale(value: float) -> bool:
    return value != value and struct.pack("<d", value) == _STALE_BITS


@dataclass(frozen=True)
class TargetStatus:
    """The state of one scrape target after its last scrape."""

    url: str
    labels: Mapping[str, str]  # instance and the configured extra labels
    up: bool | None = None  # None until the first scrape
    last_scrape: datetime | None = None
    duration: float | None = None  # seconds the last scrape took
    error: str | None = None  # why the last scrape failed
    samples: int = 0  # samples taken in by the last scrape


class _Ring:
    """A bounded ring of (timestamp, value) in two ``array('d')`` (16 bytes a sample)."""

    __slots__ = ("_start", "_times", "_values", "labels", "size", "target")

    def __init__(self, labels: dict[str, str], target: int, capacity: int) -> None:
        self.labels = labels
        self.target = target
        self._times = array("d", bytes(8 * capacity))
        self._values = array("d", bytes(8 * capacity))
        self._start = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def time(self, i: int) -> float:
        return self._times[(self._start + i) % len(self._times)]

    def __getitem__(self, i: int) -> float:  # times, for bisect
        return self.time(i)

    @property
    def last(self) -> float:
        return self.time(self.size - 1) if self.size else -math.inf

    def append(self, t: float, value: float) -> None:
        capacity = len(self._times)
        if self.size < capacity:
            i = (self._start + self.size) % capacity
            self.size += 1
        else:
            i = self._start
            self._start = (self._start + 1) % capacity
        self._times[i] = t
        self._values[i] = value

    def between(self, start: float, end: float) -> Series:
        lo, hi = bisect_left(self, start), bisect_right(self, end)
        points: list[Point] = []
        stale: list[float] = []
        capacity = len(self._times)
        for i in range(lo, hi):
            j = (self._start + i) % capacity
            t, v = self._times[j], self._values[j]
            if _is_stale(v):
                stale.append(t)
            else:
                points.append((t, v))
        return Series(self.labels, points, stale)


class _Rings:
    """Every series' ring, by metric name; a :class:`~trimtab.slo.evaluate.SeriesStore`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.by_name: dict[str, dict[Key, _Ring]] = {}

    def ring(self, labels: dict[str, str], target: int) -> _Ring:
        key = tuple(sorted(labels.items()))
        rings = self.by_name.setdefault(labels["__name__"], {})
        ring = rings.get(key)
        if ring is None:
            ring = rings[key] = _Ring(labels, target, self.capacity)
        return ring

    def mark_stale(self, rings: Iterable[_Ring], at: float) -> None:
        for ring in rings:
            if at > ring.last:
                ring.append(at, _STALE)

    def forget(self, horizon: float) -> None:
        """Drop series with no sample since ``horizon``."""
        for name in list(self.by_name):
            rings = self.by_name[name]
            for key in [k for k, r in rings.items() if r.last < horizon]:
                del rings[key]
            if not rings:
                del self.by_name[name]

    def matching(self, selector: Selector) -> Iterator[_Ring]:
        groups = (
            [self.by_name.get(selector.metric, {})] if selector.metric else self.by_name.values()
        )
        for rings in groups:
            for ring in rings.values():
                if selects(selector, ring.labels):
                    yield ring

    def select(self, selector: Selector, start: float, end: float) -> list[Series]:
        return [ring.between(start, end) for ring in self.matching(selector)]

    def __len__(self) -> int:
        return sum(len(rings) for rings in self.by_name.values())


@dataclass
class _Target:
    config: models.ScrapeTarget
    labels: dict[str, str]
    status: TargetStatus
    live: list[_Ring]  # series in the last successful scrape, for staleness markers


class ScrapeSource:
    """Scrapes exposition endpoints and answers SLO queries as Prometheus would.

    ``config`` is the Controller's ``metrics.scrape`` block. ``retention`` bounds what is kept
    (a window longer than it is an error, not a silently shorter window). ``gauge_step`` is the
    resolution of gauge subqueries (Prometheus uses its ``evaluation_interval``); by default the
    scrape interval, so every sample counts. ``clock`` returns epoch seconds.
    """

    def __init__(
        self,
        config: models.ScrapeSource,
        *,
        retention: float = DEFAULT_RETENTION,
        timeout: float | None = None,
        gauge_step: float | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retention <= 0:
            raise ValueError("retention must be positive")
        self.interval = config.interval
        self.retention = retention
        self.timeout = timeout if timeout is not None else min(config.interval, 10.0)
        self.gauge_step = gauge_step if gauge_step is not None else config.interval
        self._clock = clock
        self._transport = transport
        self._targets = []
        for target in config.targets:
            labels = _target_labels(target)
            self._targets.append(_Target(target, labels, TargetStatus(target.url, labels), []))
        self._rings = _Rings(math.ceil(retention / config.interval) + 16)
        self._lock = threading.Lock()
        self._scraping = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None

    def __repr__(self) -> str:
        urls = ", ".join(t.config.url for t in self._targets)
        return f"ScrapeSource([{urls}], interval={format_duration(self.interval)})"

    def __enter__(self) -> ScrapeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------- scraping

    def targets(self) -> list[TargetStatus]:
        """Every target's state after its last scrape, in configuration order."""
        with self._lock:
            return [t.status for t in self._targets]

    @property
    def series_count(self) -> int:
        with self._lock:
            return len(self._rings)

    def scrape_once(self) -> None:
        """Scrape every target once (concurrently), then take the samples in."""
        with self._scraping:  # never two rounds at once
            self._http()  # created once, before the workers share it
            if len(self._targets) == 1:
                self._scrape(self._targets[0], 0)
                return
            with ThreadPoolExecutor(min(MAX_WORKERS, len(self._targets))) as pool:
                list(pool.map(self._scrape, self._targets, range(len(self._targets))))

    def start(self) -> None:
        """Scrape every ``interval`` on a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="trimtab-scrape", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background scraping (if running) and close connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
            self._thread = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _loop(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                self.scrape_once()
            except Exception:  # keep scraping; a bug here must not end the loop silently
                log.exception("scrape round failed")
            due += self.interval
            now = time.monotonic()
            if due < now:  # a slow round: skip the missed slots, never overlap or bunch up
                due = now + self.interval - (now - due) % self.interval
            self._stop.wait(due - now)

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.timeout,
                follow_redirects=True,
                transport=self._transport,
                headers={
                    "Accept": _ACCEPT,
                    "User-Agent": "trimtab-scrape",
                    "X-Prometheus-Scrape-Timeout-Seconds": f"{self.timeout:g}",
                },
            )
        return self._client

    def _scrape(self, target: _Target, index: int) -> None:
        started = _ms(self._clock())
        began = time.monotonic()
        try:
            families = self._fetch(target.config.url)
            samples = list(_samples(families, target.labels))
        except Exception as exc:  # every failure of a scrape is the target's state, as data
            self._down(target, index, started, time.monotonic() - began, _reason(exc))
            return
        with self._lock:
            live: list[_Ring] = []
            for labels, value, explicit in samples:
                ring = self._rings.ring(labels, index)
                t = _ms(explicit) if explicit is not None else started
                if t <= ring.last:
                    continue  # duplicate or out of order, as Prometheus rejects it
                ring.append(t, value)
                if explicit is None:
                    live.append(ring)
            kept = {id(r) for r in live}
            self._rings.mark_stale((r for r in target.live if id(r) not in kept), started)
            target.live = live
            self._up(target, index, started, 1.0)
            target.status = replace(
                target.status,
                up=True,
                last_scrape=_datetime(started),
                duration=time.monotonic() - began,
                error=None,
                samples=len(samples),
            )
            self._rings.forget(started - self.retention)

    def _fetch(self, url: str) -> list[Metric]:
        with self._http().stream("GET", url) as response:
            if response.status_code != 200:
                raise _ScrapeError(f"HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BODY:
                    raise _ScrapeError(f"body larger than {MAX_BODY} bytes")
            kind = response.headers.get("content-type", "")
        text = body.decode("utf-8")
        if kind.startswith("application/openmetrics-text"):
            return list(openmetrics_families(text))  # type: ignore[no-untyped-call]
        return _text_families(text)

    def _down(self, target: _Target, index: int, at: float, took: float, reason: str) -> None:
        with self._lock:
            self._rings.mark_stale(target.live, at)
            target.live = []
            self._up(target, index, at, 0.0)
            target.status = replace(
                target.status,
                up=False,
                last_scrape=_datetime(at),
                duration=took,
                error=reason,
                samples=0,
            )
        log.info("scrape of %s failed: %s", target.config.url, reason)

    def _up(self, target: _Target, index: int, at: float, value: float) -> None:
        ring = self._rings.ring({"__name__": "up", **target.labels}, index)
        if at > ring.last:
            ring.append(at, value)

    # ----------------------------------------------------------------------------- queries

    def query(self, requests: Sequence[SeriesRequest], at: datetime) -> Measurements:
        """Every request's windows at ``at`` (naive datetimes are UTC), in one batch."""
        when = _ms(_seconds(at))
        plan, unplanned = plan_what_can_be_planned(requests)
        with self._lock:
            statuses = [t.status for t in self._targets]
            down = [s for s in statuses if s.up is False]
            if statuses and len(down) == len(statuses):
                error = "scrape source: all targets down: " + "; ".join(
                    f"{s.url}: {s.error}" for s in down
                )
                answers: list[tuple[Query, Answer]] = [(q, error) for q in plan]
                return with_unplanned(
                    requests, assemble(requests, answers, source_error=error), unplanned
                )
            answers = []
            for query in plan:
                answers.extend(self._answer(query, when, statuses))
        return with_unplanned(requests, assemble(requests, answers), unplanned)

    def _answer(
        self, query: Query, at: float, statuses: Sequence[TargetStatus]
    ) -> list[tuple[Query, Answer]]:
        if query.window > self.retention:
            return [
                (
                    query,
                    f"the {format_duration(query.window)} window is longer than the scrape "
                    f"source keeps ({format_duration(self.retention)}); configure Prometheus "
                    "or a longer retention",
                )
            ]
        try:
            answer = evaluate(query, at, self._rings, gauge_step=self.gauge_step)
        except Exception as exc:  # the port never raises: a failed evaluation is UNKNOWN
            log.exception("evaluating %s failed", query.promql)
            return [(query, f"scrape source: evaluation failed: {_reason(exc)}")]
        if isinstance(answer, str) or not any(s.up is False for s in statuses):
            return [(query, answer)]
        # Members reading series of a target that is down now are UNKNOWN with its error,
        # not judged on what it said before it went down; the others keep the answer.
        out: list[tuple[Query, Answer]] = []
        for member in query.members:
            one = replace(query, members=(member,))
            failed = self._down_target(member, query, at, statuses)
            out.append((one, failed if failed is not None else answer))
        return out

    def _down_target(
        self, member: SeriesRequest, query: Query, at: float, statuses: Sequence[TargetStatus]
    ) -> str | None:
        params = {name: (value,) for name, value in member.params} or None
        for selector in read_selectors(query.spec, params):
            for ring in self._rings.matching(selector):
                status = statuses[ring.target]
                if status.up is False and ring.last >= at - query.window:
                    return f"scrape target {status.url} is down: {status.error}"
        return None

    def query_range(
        self, request: SeriesRequest, start: datetime, end: datetime, step: float
    ) -> list[tuple[datetime, SeriesResult]]:
        """The request evaluated at ``start``, ``start + step``, … up to ``end``, over the rings."""
        if step <= 0 or end < start:
            raise ValueError("query_range needs step > 0 and end >= start")
        results = []
        at = start
        while at <= end:
            results.append((at, self.query([request], at)[request]))
            at += timedelta(seconds=step)
        return results


class _ScrapeError(Exception):
    pass


def _target_labels(target: models.ScrapeTarget) -> dict[str, str]:
    netloc = urlsplit(target.url).netloc.rpartition("@")[2]
    return {"instance": netloc, **{k: v for k, v in target.labels.items() if v}}


def _text_families(text: str) -> list[Metric]:
    """Families of the text format, with counter samples named as written.

    prometheus_client's parser appends ``_total`` to the samples of a counter whose ``# TYPE``
    names it without (Envoy's ``envoy_cluster_upstream_rq_xx``); Prometheus stores the name as
    written, and selectors use that name, so the suffix is taken back off.
    """
    plain_counters = {n for n in _COUNTER_TYPE.findall(text) if not n.endswith("_total")}
    families = list(text_string_to_metric_families(text))
    for family in families:
        if family.type == "counter" and family.name in plain_counters:
            family.samples = [
                s._replace(name=s.name.removesuffix("_total")) for s in family.samples
            ]
    return families


def _samples(
    families: Iterable[Metric], target: Mapping[str, str]
) -> Iterator[tuple[dict[str, str], float, float | None]]:
    for family in families:
        for sample in family.samples:
            labels = {"__name__": sample.name}
            for name, value in sample.labels.items():
                if value:
                    labels[f"exported_{name}" if name in target else name] = value
            labels.update(target)
            explicit = None if sample.timestamp is None else float(sample.timestamp)
            yield labels, float(sample.value), explicit


def _reason(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused" if "refused" in str(exc).lower() else f"cannot connect: {exc}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, _ScrapeError | httpx.HTTPError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:299] + "…"


def _ms(seconds: float) -> float:
    """Seconds rounded to the millisecond, as Prometheus timestamps are."""
    return round(seconds * 1000) / 1000


def _seconds(at: datetime) -> float:
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp()


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
