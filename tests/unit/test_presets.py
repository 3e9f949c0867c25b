"""Presets expand to the plain indicators they stand for, selector or not."""

from __future__ import annotations

import pytest
from trimtab.slo import ConfigError, load_text
from trimtab.slo.promql import compile_sli

SLO = """\
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {{name: s}}
spec:
  service: shop
  objective: 99
  indicator: {{preset: {preset}}}
  health: {health}
"""
BUDGET = "{degraded: {burnRate: 3}, unavailable: {burnRate: 10}}"
VALUE = "{degraded: {above: 250ms}, unavailable: {above: 1s}}"


def expanded(preset: str, health: str = BUDGET) -> object:
    config = load_text(SLO.format(preset=preset, health=health), "slo.yaml")
    return config.slos["s"].spec.plain


def test_a_preset_without_a_selector_selects_every_series() -> None:
    plain = expanded("{name: otel-http}")
    ratio = plain.error_ratio  # type: ignore[attr-defined]
    assert ratio.total == "http_server_request_duration_seconds_count"
    assert (
        ratio.errors
        == 'http_server_request_duration_seconds_count{http_response_status_code=~"5.."}'
    )


def test_a_selector_is_merged_with_the_preset_matchers() -> None:
    plain = expanded("{name: otel-http, selector: '{service_name=\"{{service}}\"}'}")
    ratio = plain.error_ratio  # type: ignore[attr-defined]
    assert ratio.errors == (
        'http_server_request_duration_seconds_count{service_name="{{service}}", '
        'http_response_status_code=~"5.."}'
    )


def test_a_quantile_preset_reads_the_histogram_in_its_unit() -> None:
    plain = expanded("{name: envoy, signal: quantile, quantile: 0.99}", VALUE)
    quantile = plain.quantile  # type: ignore[attr-defined]
    assert (quantile.histogram, quantile.quantile, quantile.unit) == (
        "envoy_cluster_upstream_rq_time",
        0.99,
        "milliseconds",
    )


def test_the_haproxy_queue_is_a_gauge() -> None:
    plain = expanded("{name: haproxy, signal: queue}", VALUE)
    assert plain.gauge.query == "haproxy_server_current_queue"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        ("{name: otel-http, signal: queue}", "no 'queue' signal"),
        ("{name: haproxy, signal: quantile}", "no latency histogram"),
        ("{name: otel-http, selector: 'not a selector'}", "invalid selector"),
    ],
)
def test_a_preset_that_cannot_apply_is_an_error(preset: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        expanded(preset, VALUE)


@pytest.mark.parametrize("name", ["otel-http", "envoy", "nginx-ingress", "istio", "haproxy"])
def test_every_preset_compiles_to_an_error_ratio(name: str) -> None:
    text = SLO.format(preset=f"{{name: {name}}}", health=BUDGET)
    slo = load_text(text, "s.yaml").slos["s"]
    assert "rate(" in str(compile_sli(slo.spec, 300.0).ratio)
