"""``judge``, the one definition of healthy, and the PromQL the same indicators compile to."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import pytest
from trimtab.slo import load_text
from trimtab.slo.durations import parse_duration
from trimtab.slo.health import Evidence, Level, WindowMeasurement, error_budget, judge
from trimtab.slo.models import SLOSpec
from trimtab.slo.promql import compile_sli, parse_selector

NAN = math.nan
HEALTHY, DEGRADED, UNAVAILABLE, UNKNOWN = (
    Level.HEALTHY,
    Level.DEGRADED,
    Level.UNAVAILABLE,
    Level.UNKNOWN,
)

ERROR_RATIO = {
    "errorRatio": {
        "errors": 'http_server_requests_total{service="{{service}}", code=~"5.."}',
        "total": 'http_server_requests_total{service="{{service}}"}',
    }
}


def spec(indicator: Mapping[str, Any] = ERROR_RATIO, **fields: Any) -> SLOSpec:
    data = {"service": "checkout", "objective": 99.9, "backendLabel": "version"}
    return SLOSpec.model_validate({**data, "indicator": indicator, **fields})


# Error budget 0.1 %: a ratio of 0.006 burns it 6 times too fast.
BUDGET = spec(
    health={
        "degraded": {"burnRate": 6, "windows": ["5m", "30m"]},
        "unavailable": {"burnRate": 14.4, "windows": ["1m", "5m"]},
    },
    minEvents=50,
)
BUDGET_DEFAULT_HEALTH = spec()  # the same thresholds, from the default
P95 = spec(
    {
        "quantile": {
            "histogram": "http_server_request_duration_seconds",
            "selector": '{service="{{service}}"}',
            "quantile": 0.95,
        }
    },
    health={
        "degraded": {"above": "250ms", "windows": ["5m"]},
        "unavailable": {"above": "1s", "windows": ["1m", "5m"]},
    },
)
HOSTS_UP = spec(
    {"gauge": {"query": 'sum by (version) (up{job="{{service}}"})', "aggregate": "avg"}},
    health={
        "degraded": {"below": 3, "windows": ["5m"]},
        "unavailable": {"below": 1, "windows": ["1m", "5m"]},
    },
)


def measure(
    values: Mapping[str, float | None], events: float | Mapping[str, float | None] | None = 600.0
) -> dict[float, WindowMeasurement]:
    """Measurements keyed by window seconds; ``events``: one count for every window, or each's."""
    per_window = events if isinstance(events, Mapping) else dict.fromkeys(values, events)
    return {parse_duration(w): WindowMeasurement(v, per_window.get(w)) for w, v in values.items()}


def ratios(
    r1: float | None, r5: float | None, r30: float | None, **kw: Any
) -> dict[float, WindowMeasurement]:
    return measure({"1m": r1, "5m": r5, "30m": r30}, **kw)


def ratio_at_burn(burn: float) -> float:
    """The error ratio whose burn rate is exactly ``burn``.

    Not simply ``burn / 1000``: 99.9 has no exact binary form, so the budget is
    0.0009999999999999432 and a ratio of 0.006 burns at 6.000000000000341.
    """
    ratio = burn * error_budget(BUDGET)
    assert ratio / error_budget(BUDGET) == burn
    return ratio


AT_6 = ratio_at_burn(6.0)
AT_14_4 = ratio_at_burn(14.4)

CASES = [
    # name, spec, measurements, level
    ("healthy", BUDGET, ratios(0.001, 0.001, 0.001), HEALTHY),
    ("degraded", BUDGET, ratios(0.008, 0.008, 0.007), DEGRADED),
    ("unavailable", BUDGET, ratios(0.05, 0.05, 0.05), UNAVAILABLE),
    ("unavailable-without-degraded-windows", BUDGET, ratios(0.02, 0.02, 0.001), UNAVAILABLE),
    ("degraded-short-window-only", BUDGET, ratios(0.001, 0.01, 0.001), HEALTHY),
    ("degraded-long-window-only", BUDGET, ratios(0.001, 0.001, 0.01), HEALTHY),
    ("unavailable-1m-only", BUDGET, ratios(0.05, 0.001, 0.001), HEALTHY),
    ("burn-rate-equal-to-6-is-not-above", BUDGET, ratios(0.0, AT_6, AT_6), HEALTHY),
    (
        "burn-rate-just-above-6",
        BUDGET,
        ratios(0.0, *[math.nextafter(AT_6, 1)] * 2, events=1000.0),  # 6 bad: enough of them
        DEGRADED,
    ),
    ("burn-rate-equal-to-14.4-is-not-above", BUDGET, ratios(AT_14_4, AT_14_4, 0.01), DEGRADED),
    ("default-health-degraded", BUDGET_DEFAULT_HEALTH, ratios(0.008, 0.008, 0.007), DEGRADED),
    ("default-health-unavailable", BUDGET_DEFAULT_HEALTH, ratios(0.5, 0.5, 0.0), UNAVAILABLE),
    ("missing-window", BUDGET, ratios(0.05, 0.05, None), UNKNOWN),
    ("nan-ratio", BUDGET, ratios(0.001, NAN, 0.001), UNKNOWN),
    ("no-measurements", BUDGET, {}, UNKNOWN),
    ("events-below-min", BUDGET, ratios(0.05, 0.05, 0.05, events=49.0), UNKNOWN),
    ("events-equal-to-min", BUDGET, ratios(0.1, 0.1, 0.1, events=50.0), UNAVAILABLE),
    # Past the thresholds on fewer than minBadEvents (4) bad requests: not enough evidence.
    ("too-few-bad-events", BUDGET, ratios(0.05, 0.05, 0.05, events=50.0), UNKNOWN),
    (
        "unavailable-unproven-but-degraded-proven",
        BUDGET,
        ratios(0.05, 0.05, 0.05, events={"1m": 50.0, "5m": 3000.0, "30m": 18000.0}),
        DEGRADED,
    ),
    ("events-unknown", BUDGET, ratios(0.05, 0.05, 0.05, events=None), UNKNOWN),
    ("events-nan", BUDGET, ratios(0.05, 0.05, 0.05, events=NAN), UNKNOWN),
    (
        "min-events-counts-the-shortest-window-only",
        BUDGET,
        ratios(0.1, 0.1, 0.1, events={"1m": 50.0, "5m": 3000.0, "30m": None}),
        UNAVAILABLE,
    ),
    ("p95-healthy", P95, measure({"1m": 0.1, "5m": 0.2}), HEALTHY),
    ("p95-degraded", P95, measure({"1m": 0.3, "5m": 0.3}), DEGRADED),
    ("p95-unavailable", P95, measure({"1m": 1.5, "5m": 1.2}), UNAVAILABLE),
    ("p95-equal-to-250ms", P95, measure({"1m": 0.25, "5m": 0.25}), HEALTHY),
    ("p95-equal-to-1s", P95, measure({"1m": 1.0, "5m": 1.0}), DEGRADED),
    ("p95-infinite", P95, measure({"1m": math.inf, "5m": math.inf}), UNAVAILABLE),
    ("p95-few-events", P95, measure({"1m": 1.5, "5m": 1.2}, events=10.0), UNKNOWN),
    ("hosts-healthy", HOSTS_UP, measure({"1m": 5.0, "5m": 5.0}, events=None), HEALTHY),
    ("hosts-degraded", HOSTS_UP, measure({"1m": 2.0, "5m": 2.5}, events=None), DEGRADED),
    ("hosts-unavailable", HOSTS_UP, measure({"1m": 0.0, "5m": 0.5}, events=None), UNAVAILABLE),
    ("hosts-equal-to-3-is-not-below", HOSTS_UP, measure({"1m": 3.0, "5m": 3.0}), HEALTHY),
    ("hosts-equal-to-1-is-not-below", HOSTS_UP, measure({"1m": 1.0, "5m": 1.0}), DEGRADED),
    ("hosts-nan", HOSTS_UP, measure({"1m": NAN, "5m": 5.0}), UNKNOWN),
]


@pytest.mark.parametrize(
    ("slo", "measurements", "level"),
    [pytest.param(s, m, lvl, id=name) for name, s, m, lvl in CASES],
)
def test_judge(slo: SLOSpec, measurements: dict, level: Level) -> None:
    assert judge(slo, measurements).level is level


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 15


def test_source_error_is_unknown_with_the_error() -> None:
    health = judge(BUDGET, ratios(0.05, 0.05, 0.05), error="connection refused")
    assert health.level is UNKNOWN
    assert health.error == "connection refused"
    assert "connection refused" in health.reason
    assert health.evidence == ()


def test_unavailable_needs_every_window_to_exceed() -> None:
    health = judge(BUDGET, ratios(0.05, 0.01, 0.01))
    assert health.level is DEGRADED
    unavailable = [e for e in health.evidence if e.level is UNAVAILABLE]
    assert [(e.window, e.exceeded) for e in unavailable] == [(60.0, True), (300.0, False)]


def test_no_data_names_the_window() -> None:
    health = judge(BUDGET, ratios(0.001, 0.001, None))
    assert health.level is UNKNOWN
    assert health.reason == "no data in the 30m window"


def test_too_few_events_says_how_many() -> None:
    health = judge(BUDGET, ratios(0.05, 0.05, 0.05, events=12.0))
    assert health.level is UNKNOWN
    assert health.reason == "12 requests in 1m, fewer than minEvents 50"
    extrapolated = judge(BUDGET, ratios(0.05, 0.05, 0.05, events=12.196))
    assert extrapolated.reason == "about 12 requests in 1m, fewer than minEvents 50"
    negative = judge(BUDGET, ratios(0.05, 0.05, 0.05, events=-math.inf))  # a broken query
    assert negative.reason == "about -inf requests in 1m, fewer than minEvents 50"


def test_degraded_evidence_holds_every_comparison_made() -> None:
    health = judge(BUDGET, ratios(0.008, 0.008, 0.007, events={"1m": 600.0, "5m": 3000.0}))
    assert health.level is DEGRADED
    rows = [(e.level, e.window, e.threshold, e.comparison, e.exceeded) for e in health.evidence]
    assert rows == [
        (UNAVAILABLE, 60.0, 14.4, "burnRate", False),
        (UNAVAILABLE, 300.0, 14.4, "burnRate", False),
        (DEGRADED, 300.0, 6.0, "burnRate", True),
        (DEGRADED, 1800.0, 6.0, "burnRate", True),
    ]
    assert [e.measured for e in health.evidence] == pytest.approx([8.0, 8.0, 8.0, 7.0])
    assert [e.events for e in health.evidence] == [600.0, 3000.0, 3000.0, None]
    assert health.reason == "DEGRADED: burn rate 8 > 6 over 5m and burn rate 7 > 6 over 30m"


def test_unavailable_evidence_stops_at_unavailable() -> None:
    health = judge(BUDGET, ratios(0.05, 0.02, 0.001))
    assert health.level is UNAVAILABLE
    assert [(e.level, e.window, e.exceeded) for e in health.evidence] == [
        (UNAVAILABLE, 60.0, True),
        (UNAVAILABLE, 300.0, True),
    ]
    assert [e.measured for e in health.evidence] == pytest.approx([50.0, 20.0])
    assert (
        health.reason == "UNAVAILABLE: burn rate 50 > 14.4 over 1m and burn rate 20 > 14.4 over 5m"
    )


def test_healthy_evidence_shows_nothing_exceeded_everywhere() -> None:
    health = judge(BUDGET, ratios(0.02, 0.001, 0.001))
    assert health.level is HEALTHY
    assert health.reason == "within every threshold"
    assert [(e.level, e.window, e.exceeded) for e in health.evidence] == [
        (UNAVAILABLE, 60.0, True),
        (UNAVAILABLE, 300.0, False),
        (DEGRADED, 300.0, False),
        (DEGRADED, 1800.0, False),
    ]


def test_value_based_evidence_compares_the_value_itself() -> None:
    health = judge(HOSTS_UP, measure({"1m": 2.0, "5m": 2.5}, events=None))
    assert health.level is DEGRADED
    assert health.evidence[-1] == Evidence(DEGRADED, 300.0, 2.5, 3.0, "below", True, None)
    assert health.reason == "DEGRADED: value 2.5 < 3 over 5m"


def test_value_based_above_uses_seconds() -> None:
    health = judge(P95, measure({"1m": 0.3, "5m": 0.3}))
    assert health.evidence[-1].threshold == 0.25
    assert health.evidence[-1].comparison == "above"
    assert health.reason == "DEGRADED: value 0.3 > 0.25 over 5m"


def test_gauge_needs_no_request_count() -> None:
    assert judge(HOSTS_UP, measure({"1m": 0.0, "5m": 0.0}, events=None)).level is UNAVAILABLE


# ---------------------------------------------------------------------------------- compile_sli


def test_bound_param_becomes_an_equality_matcher() -> None:
    sli = compile_sli(BUDGET, 300.0, {"service": ["checkout"]})
    assert sli.ratio == (
        '(sum by (version, service) (rate(http_server_requests_total{service="checkout", '
        'code=~"5.."}[5m])) or 0 * sum by (version, service) '
        '(rate(http_server_requests_total{service="checkout"}[5m]))) / '
        'sum by (version, service) (rate(http_server_requests_total{service="checkout"}[5m]))'
    )
    assert sli.events == (
        'sum by (version, service) (increase(http_server_requests_total{service="checkout"}[5m]))'
    )
    assert sli.by == ("version", "service")


def test_batched_params_become_one_regex_matcher() -> None:
    sli = compile_sli(BUDGET, 60.0, {"service": ["a", "b"]})
    assert sli.ratio is not None
    assert 'http_server_requests_total{service=~"(?:a|b)", code=~"5.."}[1m]' in sli.ratio
    assert 'http_server_requests_total{service=~"(?:a|b)"}[1m]' in sli.ratio
    assert "{{" not in sli.ratio


def test_batched_params_are_regex_escaped() -> None:
    sli = compile_sli(BUDGET, 60.0, {"service": ["a.b", "c"]})
    assert sli.events == (
        "sum by (version, service) "
        '(increase(http_server_requests_total{service=~"(?:a\\\\.b|c)"}[1m]))'
    )


def test_generic_compilation_matches_any_service() -> None:
    sli = compile_sli(BUDGET, 60.0)
    assert sli.events == (
        'sum by (version, service) (increase(http_server_requests_total{service=~".+"}[1m]))'
    )


def test_quantile_binds_params_and_groups_by_le() -> None:
    sli = compile_sli(P95, 300.0, {"service": ["checkout"]})
    assert sli.value == (
        "histogram_quantile(0.95, sum by (version, service, le) "
        '(rate(http_server_request_duration_seconds_bucket{service="checkout"}[5m])))'
    )


def _matcher_value(query: str, metric: str) -> str:
    """The value of the first ``service`` matcher of ``metric`` in ``query`` (parsing unescapes).

    ``parse_selector`` reads a string up to its first unescaped quote, as PromQL does; if a
    value broke out of its string, the selector would end early or not parse.
    """
    start = query.index(metric + "{")
    end = query.index("}[", start)
    selector = parse_selector(query[start : end + 1])
    return next(m.value for m in selector.matchers if m.label == "service")


@pytest.mark.parametrize(
    "value",
    ['x"} or vector(1) or {a="', "back\\slash", 'trailing\\"', "new\nline", "\\"],
)
def test_a_bound_param_cannot_break_out_of_its_string(value: str) -> None:
    sli = compile_sli(BUDGET, 60.0, {"service": [value]})
    assert sli.events is not None
    assert sli.events.startswith(
        'sum by (version, service) (increase(http_server_requests_total{service="'
    )
    assert sli.events.endswith('"}[1m]))')
    assert "\n" not in sli.events
    assert _matcher_value(sli.events, "http_server_requests_total") == value


def test_a_quote_in_a_bound_param_is_escaped() -> None:
    sli = compile_sli(BUDGET, 60.0, {"service": ['a"b\\c']})
    assert 'http_server_requests_total{service="a\\"b\\\\c"}[1m]' in (sli.events or "")


def test_batched_params_cannot_break_out_of_their_string() -> None:
    values = ['x"} or vector(1) #', "b\\", "c"]
    sli = compile_sli(BUDGET, 60.0, {"service": values})
    assert sli.events is not None
    assert sli.events.count('service=~"') == 1
    pattern = _matcher_value(sli.events, "http_server_requests_total")
    for value in values:
        assert re.fullmatch(pattern, value), value
    for other in ("x", "b", 'x"}', "bb\\", "cc"):
        assert not re.fullmatch(pattern, other), other


def test_escaped_regex_in_a_selector_compiles_back_unchanged() -> None:
    selector = parse_selector(r'http_requests_total{code=~"5\\d\\d", path="a\"b"}')
    assert [m.value for m in selector.matchers] == [r"5\d\d", 'a"b']
    spec = (
        load_text(
            r"""
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: esc}
spec:
  service: s
  objective: 99
  backendLabel: version
  indicator:
    errorRatio:
      errors: 'http_requests_total{code=~"5\\d\\d"}'
      total: http_requests_total
""",
            "esc.yaml",
        )
        .slos["esc"]
        .spec
    )
    assert r'code=~"5\\d\\d"' in (compile_sli(spec, 300.0).ratio or "")
