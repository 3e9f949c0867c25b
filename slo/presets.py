"""Presets: well-known metric families expanded to plain indicators.

- ``otel-http`` — errors from ``http_server_request_duration_seconds_count`` with
  ``http_response_status_code=~"5.."``; latency from the ``http_server_request_duration_seconds``
  histogram (seconds). No default backendLabel.
- ``envoy`` — errors from ``envoy_cluster_upstream_rq_xx`` with ``envoy_response_code_class="5"``;
  latency from ``envoy_cluster_upstream_rq_time`` (milliseconds). backendLabel
  ``envoy_cluster_name``.
- ``istio`` — errors from ``istio_requests_total{reporter="destination"}`` with
  ``response_code=~"5.."``; latency from ``istio_request_duration_milliseconds``. backendLabel
  ``destination_version``.
- ``nginx-ingress`` — errors from ``nginx_ingress_controller_requests`` with ``status=~"5.."``;
  latency from ``nginx_ingress_controller_request_duration_seconds``. backendLabel ``service``.
- ``haproxy`` — errors from ``haproxy_server_http_responses_total`` with ``code="5xx"``; no
  latency histogram; ``queue`` from ``haproxy_server_current_queue``. backendLabel ``server``.

``otel-http`` follows the OpenTelemetry HTTP semantic conventions (``http.server.request.duration``
in seconds) as the SDK's Prometheus exporter names them. Signals: ``errors`` (error ratio),
``latency`` (share slower than ``threshold``), ``quantile`` (e.g. p95; default 0.95), ``queue``
(HAProxy's per-server queue, a gauge). Thresholds and values are in seconds whatever the histogram's
unit (``unit: milliseconds`` on the plain indicator does the conversion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .models import (
    ErrorRatioIndicator,
    GaugeIndicator,
    Indicator,
    LatencyIndicator,
    PresetIndicator,
    QuantileIndicator,
)

__all__ = ["PRESETS", "Preset", "default_backend_label", "resolve"]


@dataclass(frozen=True)
class Preset:
    """How one metric family is read."""

    requests: str
    errors: str
    histogram: str | None
    unit: Literal["seconds", "milliseconds"]  # of the histogram's buckets
    queue: str | None
    backend_label: str | None


PRESETS: dict[str, Preset] = {
    "otel-http": Preset(
        requests="http_server_request_duration_seconds_count",
        errors='http_response_status_code=~"5.."',
        histogram="http_server_request_duration_seconds",
        unit="seconds",
        queue=None,
        backend_label=None,
    ),
    "envoy": Preset(
        requests="envoy_cluster_upstream_rq_xx",
        errors='envoy_response_code_class="5"',
        histogram="envoy_cluster_upstream_rq_time",
        unit="milliseconds",
        queue=None,
        backend_label="envoy_cluster_name",
    ),
    "istio": Preset(
        requests='istio_requests_total{reporter="destination"}',
        errors='response_code=~"5.."',
        histogram='istio_request_duration_milliseconds{reporter="destination"}',
        unit="milliseconds",
        queue=None,
        backend_label="destination_version",
    ),
    "nginx-ingress": Preset(
        requests="nginx_ingress_controller_requests",
        errors='status=~"5.."',
        histogram="nginx_ingress_controller_request_duration_seconds",
        unit="seconds",
        queue=None,
        backend_label="service",
    ),
    "haproxy": Preset(
        requests="haproxy_server_http_responses_total",
        errors='code="5xx"',
        histogram=None,
        unit="seconds",
        queue="haproxy_server_current_queue",
        backend_label="server",
    ),
}


def _merge(metric_with_matchers: str, *extra: str) -> str:
    """``istio_requests_total{reporter="destination"}`` + ``{a="b"}`` → one selector text."""
    metric, _, inner = metric_with_matchers.partition("{")
    parts = [inner.rstrip("}")] if inner else []
    for text in extra:
        body = text.strip()
        if body.startswith("{") and body.endswith("}"):
            body = body[1:-1]
        if body.strip():
            parts.append(body.strip())
    return f"{metric}{{{', '.join(parts)}}}" if parts else metric


def _split(selector: str) -> tuple[str, str]:
    metric, _, inner = selector.partition("{")
    return metric, ("{" + inner) if inner else ""


def expand(preset: PresetIndicator) -> Indicator:
    """The plain indicator a preset stands for; ``ValueError`` if the signal does not apply."""
    family = PRESETS[preset.name]
    if preset.signal == "errors":
        return Indicator(
            error_ratio=ErrorRatioIndicator(
                errors=_merge(family.requests, preset.selector, family.errors),
                total=_merge(family.requests, preset.selector),
            )
        )
    if preset.signal == "queue":
        if family.queue is None:
            raise ValueError(f"preset {preset.name!r} has no 'queue' signal (only haproxy has)")
        return Indicator(gauge=GaugeIndicator(query=_merge(family.queue, preset.selector)))
    if family.histogram is None:
        raise ValueError(
            f"preset {preset.name!r} exposes no latency histogram: use signal errors or queue"
        )
    metric, matchers = _split(_merge(family.histogram, preset.selector))
    if preset.signal == "latency":
        if preset.threshold is None:
            raise ValueError("signal 'latency' needs a 'threshold' such as 250ms")
        return Indicator(
            latency=LatencyIndicator(
                histogram=metric,
                selector=matchers,
                threshold=preset.threshold,
                unit=family.unit,
            )
        )
    return Indicator(
        quantile=QuantileIndicator(
            histogram=metric,
            selector=matchers,
            quantile=preset.quantile or 0.95,
            unit=family.unit,
        )
    )


def resolve(indicator: Indicator) -> Indicator:
    """``indicator`` with any preset expanded; plain indicators are returned unchanged."""
    return expand(indicator.preset) if indicator.preset is not None else indicator


def default_backend_label(indicator: Indicator) -> str | None:
    """The label a preset's metrics tell backends apart by, if it has a natural one."""
    if indicator.preset is None:
        return None
    return PRESETS[indicator.preset.name].backend_label
