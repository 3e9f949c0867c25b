"""PromQL arithmetic without Prometheus: values derived by hand from Prometheus 2.42's code.

rate/increase follow ``extrapolatedRate`` (promql/functions.go), histogram_quantile follows
``bucketQuantile`` (promql/quantile.go). Each expected number is worked out in the comment beside
it, so a change in the algorithm shows up as a wrong number here.
"""

from __future__ import annotations

import math

import pytest
from trimtab.slo import load_text
from trimtab.slo.batching import Query, Sample, assemble, plan_queries
from trimtab.slo.evaluate import (
    FREE_PROMQL,
    UNSUPPORTED_GAUGE,
    Point,
    Series,
    StaticStore,
    aggregate_by,
    bucket_quantile,
    evaluate,
    extrapolated_rate,
    histogram_quantile,
    increase,
    instant_value,
    matches,
    over_time,
    rate,
    selects,
)
from trimtab.slo.health import health_windows
from trimtab.slo.ports import SeriesRequest
from trimtab.slo.promql import Matcher, PromQLError, parse_selector

# ------------------------------------------------------------------------------ rate, increase

# Window [40, 100] (rate(x[60s]) at t=100) unless a case says otherwise.
RATE_CASES = [
    pytest.param(
        [(45, 100), (55, 110), (65, 120), (75, 130), (85, 140), (95, 150)],
        # sampled 50 s, average 10 s, threshold 11 s; 5 s to each edge < 11: extrapolate to both
        # edges. durationToZero = 50·100/50 = 100 > 5, no clamp. 50 · (50+5+5)/50 = 60.
        60.0,
        id="regular-extrapolated-to-both-edges",
    ),
    pytest.param(
        [(45, 0), (55, 10), (65, 20), (75, 30), (85, 40), (95, 50)],
        # durationToZero = 50·0/50 = 0 < 5: the counter started at 45 s. 50 · (50+0+5)/50 = 55.
        55.0,
        id="counter-from-zero-clamped-by-durationToZero",
    ),
    pytest.param(
        [(45, 100), (55, 110), (65, 5), (75, 15)],
        # raw 15−100 = −85, +110 for the reset → 25. Sampled 30, average 10, threshold 11.
        # Start: 5 s < 11 (durationToZero 30·100/25 = 120 no clamp) → +5.
        # End: 25 s ≥ 11 → half an interval, +5. 25 · 40/30 = 33.333…
        25 * 40 / 30,
        id="counter-reset-adds-the-value-before-it",
    ),
    pytest.param(
        [(45, 100), (55, 3), (65, 2), (75, 8)],
        # two resets: 8−100 = −92, +100 (100→3) +3 (3→2) = 11. Sampled 30, start 5 → +5
        # (durationToZero 30·100/11 = 272.7), end 25 ≥ 11 → +5. 11 · 40/30.
        11 * 40 / 30,
        id="two-resets",
    ),
    pytest.param(
        [(70, 1000), (80, 1010), (90, 1020), (100, 1030)],
        # a series that starts inside the window: 30 s to the start ≥ 11 → half an interval.
        # End 0. 30 · (30+5+0)/30 = 35.
        35.0,
        id="series-starting-in-the-window-extrapolates-half-an-interval",
    ),
    pytest.param(
        [(70, 8), (80, 18), (90, 28), (100, 38)],
        # Prometheus 2.x clamps to durationToZero BEFORE the 1.1× test: zero point 30·8/30 = 8 s
        # before the first sample; 8 < 11, so it extrapolates 8 s (3.x would take 5 s: 35).
        # 30 · (30+8+0)/30 = 38.
        38.0,
        id="durationToZero-before-the-threshold-as-in-2.42",
    ),
    pytest.param(
        [(40, 10), (100, 70)],
        # both samples on the window edges (the range is closed): 60 · 60/60 = 60; zero point
        # 60·10/60 = 10 s > 0 to start.
        60.0,
        id="samples-on-both-edges",
    ),
    pytest.param(
        [(50, 5), (60, 5), (70, 5)],
        # a flat counter: 0 whatever the extrapolation.
        0.0,
        id="flat",
    ),
]


@pytest.mark.parametrize(("points", "expected_increase"), RATE_CASES)
def test_increase_and_rate_follow_extrapolated_rate(
    points: list[Point], expected_increase: float
) -> None:
    assert increase(points, 40, 100) == pytest.approx(expected_increase, rel=1e-12)
    assert rate(points, 40, 100) == pytest.approx(expected_increase / 60, rel=1e-12)


@pytest.mark.parametrize("points", [[], [(50, 1)]], ids=["none", "one"])
def test_fewer_than_two_samples_give_no_result(points: list[Point]) -> None:
    assert rate(points, 40, 100) is None
    assert increase(points, 40, 100) is None


def test_a_gauge_delta_has_no_reset_handling_and_no_zero_clamp() -> None:
    # delta(): 5−10 = −5 over 20 s sampled, 5 s to each edge (< 11): −5 · 30/20 = −7.5.
    points: list[Point] = [(45, 10), (55, 20), (65, 5)]
    assert extrapolated_rate(points, 40, 70, is_counter=False, is_rate=False) == -7.5


# ----------------------------------------------------------------------------- quantiles

INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # 0 + 1 · 5/10: the lowest bucket interpolates from 0
        pytest.param(0.25, [(1, 10), (2, 20), (INF, 20)], 0.5, id="first-bucket-from-zero"),
        # rank 15 in (1, 2]: 1 + 1 · (15−10)/(20−10)
        pytest.param(0.75, [(2, 20), (1, 10), (INF, 20)], 1.5, id="sorted-by-bound"),
        # rank 19 falls in +Inf: the second-highest bound
        pytest.param(0.95, [(1, 10), (2, 18), (INF, 20)], 2.0, id="inf-bucket"),
        # lowest bound ≤ 0 and the rank in it: that bound
        pytest.param(0.1, [(-1, 5), (0.5, 10), (INF, 10)], -1.0, id="first-bound-not-positive"),
        # equal bounds coalesce: (1, 5)+(1, 5) = (1, 10) → 0 + 1 · 5/10
        pytest.param(0.25, [(1, 5), (1, 5), (2, 20), (INF, 20)], 0.5, id="coalesce"),
        # (2, 8) forced up to 10: rank 12 in (2, 3] → 2 + (12−10)/(18−10) = 2.25 (2.4 if not)
        pytest.param(0.6, [(1, 10), (2, 8), (3, 18), (INF, 20)], 2.25, id="forced-monotonic"),
        pytest.param(0.5, [(1, 10), (2, 20)], math.nan, id="no-inf-bucket"),
        pytest.param(0.5, [(INF, 20)], math.nan, id="one-bucket"),
        pytest.param(0.5, [(1, 0), (INF, 0)], math.nan, id="no-observations"),
        pytest.param(-0.1, [(1, 10), (INF, 10)], -INF, id="q-below-0"),
        pytest.param(1.1, [(1, 10), (INF, 10)], INF, id="q-above-1"),
        pytest.param(math.nan, [(1, 10), (INF, 10)], math.nan, id="q-nan"),
    ],
)
def test_bucket_quantile(q: float, buckets: list[tuple[float, float]], expected: float) -> None:
    got = bucket_quantile(q, buckets)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-12)


def test_coarse_buckets_read_a_true_p95_of_120ms_as_176ms() -> None:
    """COMPONENTS.md: latency thresholds belong on bucket bounds.

    1,000 requests: 899 at or under 100 ms, 51 in (100, 120] ms, 50 in (120, 250] ms. The true
    p95 (the 950th) is 120 ms; the histogram only knows 101 requests in (0.1, 0.25], so rank 950
    interpolates 0.1 + 0.15 · (950−899)/101 = 0.1757 s.
    """
    buckets = [(0.05, 400), (0.1, 899), (0.25, 1000), (0.5, 1000), (INF, 1000)]
    assert bucket_quantile(0.95, buckets) == pytest.approx(0.1 + 0.15 * 51 / 101, rel=1e-12)
    assert bucket_quantile(0.95, buckets) == pytest.approx(0.176, abs=0.0005)


def test_histogram_quantile_groups_by_labels_without_le_and_skips_bad_bounds() -> None:
    samples: list[Sample] = [
        ({"version": "v1", "le": "1"}, 10.0),
        ({"version": "v1", "le": "+Inf"}, 20.0),
        ({"version": "v1", "le": "1_0"}, 5.0),  # Go's ParseFloat refuses digit separators
        ({"version": "v2", "le": "2.0"}, 5.0),
        ({"version": "v2", "le": "+Inf"}, 10.0),
        ({"version": "v2"}, 99.0),  # no le: skipped
    ]
    got = {labels["version"]: value for labels, value in histogram_quantile(0.5, samples)}
    assert got == {"v1": 1.0, "v2": 2.0}


# --------------------------------------------------------------------------------- matching

LABELS = {"__name__": "http_requests_total", "code": "503", "service": "checkout"}


@pytest.mark.parametrize(
    ("matcher", "expected"),
    [
        (Matcher("code", "=", "503"), True),
        (Matcher("code", "!=", "503"), False),
        (Matcher("code", "=~", "5.."), True),
        (Matcher("code", "=~", "5."), False),  # anchored at both ends
        (Matcher("code", "=~", "0.*"), False),  # anchored at the start
        (Matcher("code", "!~", "2..|3.."), True),
        (Matcher("zone", "=", ""), True),  # a missing label equals ""
        (Matcher("zone", "=~", ""), True),
        (Matcher("zone", "!=", ""), False),
        (Matcher("zone", "=~", ".+"), False),
        (Matcher("service", "=~", "(?:cart|checkout)"), True),
        (Matcher("__name__", "=~", "http_.*_total"), True),
    ],
)
def test_label_matchers_follow_promql(matcher: Matcher, expected: bool) -> None:
    assert matches(matcher, LABELS) is expected


def test_selector_needs_the_metric_name_and_every_matcher() -> None:
    assert selects(parse_selector('http_requests_total{code=~"5.."}'), LABELS)
    assert not selects(parse_selector('http_requests{code=~"5.."}'), LABELS)
    assert not selects(parse_selector('http_requests_total{code=~"5..", zone="a"}'), LABELS)


def test_an_invalid_regex_is_a_promql_error() -> None:
    with pytest.raises(PromQLError, match="invalid regular expression"):
        matches(Matcher("code", "=~", "5(("), LABELS)


# ------------------------------------------------------------------------------ aggregation


def test_sum_by_groups_missing_labels_together_without_the_label() -> None:
    samples: list[Sample] = [
        ({"version": "v1", "code": "200"}, 1.0),
        ({"version": "v1", "code": "500"}, 2.0),
        ({"code": "200"}, 4.0),
        ({"version": "", "code": "500"}, 8.0),
    ]
    got = sorted(
        (sorted(labels.items()), v) for labels, v in aggregate_by("sum", ["version"], samples)
    )
    assert got == [([], 12.0), ([("version", "v1")], 3.0)]


def test_max_and_min_skip_a_leading_nan_as_promql_does() -> None:
    samples: list[Sample] = [({}, math.nan), ({}, 1.0), ({}, 3.0)]
    assert aggregate_by("max", [], samples) == [({}, 3.0)]
    assert aggregate_by("min", [], samples) == [({}, 1.0)]
    assert aggregate_by("avg", [], samples[1:]) == [({}, 2.0)]


def test_over_time_aggregations() -> None:
    assert over_time("max", [3.0, 7.0, 5.0]) == 7.0
    assert over_time("avg", [3.0, 7.0, 5.0]) == 5.0
    assert over_time("last", [3.0, 7.0, 5.0]) == 5.0


def test_instant_value_looks_back_five_minutes_and_stops_at_a_staleness_marker() -> None:
    series = Series({"__name__": "q"}, [(100, 1.0), (200, 2.0)], stale=[250])
    assert instant_value(series, 99) is None
    assert instant_value(series, 150) == 1.0
    assert instant_value(series, 249) == 2.0
    assert instant_value(series, 250) is None  # marked stale
    fresh = Series({"__name__": "q"}, [(100, 1.0)])
    assert instant_value(fresh, 400) == 1.0
    assert instant_value(fresh, 400.001) is None  # older than the lookback


# ------------------------------------------------------------------------- whole indicators

CONFIG = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: shop
  objective: 99
  backendLabel: version
  indicator:
    errorRatio:
      errors: http_requests_total{service="{{service}}", code=~"5.."}
      total: http_requests_total{service="{{service}}"}
  health:
    degraded: {burnRate: 2, windows: [1m]}
    unavailable: {burnRate: 10, windows: [1m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: slow}
spec:
  service: shop
  objective: 99
  backendLabel: version
  indicator:
    latency:
      histogram: rq_ms
      selector: '{service="{{service}}"}'
      threshold: 250ms
      unit: milliseconds
  health:
    degraded: {burnRate: 2, windows: [1m]}
    unavailable: {burnRate: 10, windows: [1m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: p95}
spec:
  service: shop
  backendLabel: version
  indicator:
    quantile:
      histogram: rq_ms
      selector: '{service="{{service}}"}'
      quantile: 0.95
      unit: milliseconds
  health:
    degraded: {above: 200ms, windows: [1m]}
    unavailable: {above: 1s, windows: [1m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: queue}
spec:
  service: shop
  backendLabel: zone
  indicator:
    gauge: {query: 'sum by (zone) (queue_depth{service="{{service}}"})', aggregate: max}
  health:
    degraded: {above: 10, windows: [1m]}
    unavailable: {above: 50, windows: [1m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: queue-rate}
spec:
  service: shop
  backendLabel: zone
  indicator:
    gauge: {query: 'rate(queue_depth{service="{{service}}"}[1m])'}
  health:
    degraded: {above: 10, windows: [1m]}
    unavailable: {above: 50, windows: [1m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: events}
spec:
  service: shop
  objective: 99
  indicator:
    events:
      errorQuery: sum(rate(http_requests_total{code=~"5.."}[{{window}}]))
      totalQuery: sum(rate(http_requests_total[{{window}}]))
""",
    "evaluate.yaml",
)


def queries(name: str, *services: str) -> dict[str, Query]:
    slo = CONFIG.slos[name]
    windows = health_windows(slo.spec)
    requests = [SeriesRequest.of(f"Rollout/{s}", slo, {"service": s}, windows) for s in services]
    requests = requests or [SeriesRequest.of("Rollout/any", slo, {}, windows)]
    return {q.field: q for q in plan_queries(requests)}


def counter(labels: dict[str, str], per_second: float, start: float = 0.0) -> Series:
    """A counter sampled every 10 s over [0, 120], growing ``per_second`` from ``start``."""
    return Series(labels, [(float(t), start + per_second * t) for t in range(0, 121, 10)])


def by(answer: object, label: str) -> dict[str, float]:
    assert not isinstance(answer, str), answer
    assert isinstance(answer, list)
    return {labels[label]: value for labels, value in answer}


def ratios(name: str, service: str, store: StaticStore) -> dict[str, float | None]:
    """The error ratio per version over the SLO's first window at t=120, as a cycle gets it:
    the plan's counts evaluated, then assembled."""
    slo = CONFIG.slos[name]
    windows = health_windows(slo.spec)
    request = SeriesRequest.of(f"Rollout/{service}", slo, {"service": service}, windows)
    answers = [(q, evaluate(q, 120, store)) for q in plan_queries([request])]
    result = assemble([request], answers)[request]
    return {b: result.windows(b)[windows[0]].value for b in result.backends}


def test_error_ratio_counts_a_backend_without_error_series_as_zero() -> None:
    store = StaticStore(
        [
            counter(
                {
                    "__name__": "http_requests_total",
                    "service": "cart",
                    "version": "v1",
                    "code": "200",
                },
                10,
            ),
            counter(
                {
                    "__name__": "http_requests_total",
                    "service": "cart",
                    "version": "v2",
                    "code": "200",
                },
                9,
            ),
            counter(
                {
                    "__name__": "http_requests_total",
                    "service": "cart",
                    "version": "v2",
                    "code": "503",
                },
                1,
            ),
            counter(
                {
                    "__name__": "http_requests_total",
                    "service": "shop",
                    "version": "v1",
                    "code": "503",
                },
                5,
            ),
        ]
    )
    plan = queries("errors", "cart")
    assert ratios("errors", "cart", store) == {"v1": 0.0, "v2": pytest.approx(0.1)}
    assert by(evaluate(plan["counted"], 120, store), "version") == {"v2": pytest.approx(60)}
    # a window of 60 s fully sampled every 10 s: increase = rate · 60, exactly
    assert by(evaluate(plan["events"], 120, store), "version") == {
        "v1": pytest.approx(600),
        "v2": pytest.approx(600),
    }


def test_batched_params_answer_every_service_grouped_by_its_label() -> None:
    store = StaticStore(
        [
            counter({"__name__": "http_requests_total", "service": "a", "version": "v1"}, 10),
            counter({"__name__": "http_requests_total", "service": "b", "version": "v1"}, 20),
            counter({"__name__": "http_requests_total", "service": "c", "version": "v1"}, 40),
        ]
    )
    answer = evaluate(queries("errors", "a", "b")["events"], 120, store)
    assert by(answer, "service") == {"a": pytest.approx(600), "b": pytest.approx(1200)}


def histogram(version: str, le_per_second: dict[str, float]) -> list[Series]:
    base = {"service": "shop", "version": version}
    out = [
        counter({"__name__": "rq_ms_bucket", **base, "le": le}, r)
        for le, r in le_per_second.items()
    ]
    out.append(counter({"__name__": "rq_ms_count", **base}, le_per_second["+Inf"]))
    return out


def test_latency_reads_the_bucket_equal_to_the_threshold_in_the_histogram_unit() -> None:
    # 250 ms in a milliseconds histogram is le="250.0" here; matched by value, not by text.
    store = StaticStore(
        histogram("v1", {"100": 50, "250.0": 90, "+Inf": 100})
        + histogram("v2", {"100": 10, "250": 40, "+Inf": 100})
    )
    assert ratios("slow", "shop", store) == {"v1": pytest.approx(0.1), "v2": pytest.approx(0.6)}


def test_latency_without_a_bucket_at_the_threshold_has_no_value() -> None:
    store = StaticStore(histogram("v1", {"100": 50, "500": 90, "+Inf": 100}))
    assert evaluate(queries("slow", "shop")["counted"], 120, store) == []
    assert ratios("slow", "shop", store) == {"v1": None}  # requests counted, no ratio


def test_quantile_sums_buckets_by_backend_and_converts_to_seconds() -> None:
    # two instances of v1 sum bucket by bucket: le=100 → 60/s, le=250 → 100/s, +Inf → 100/s;
    # rank 95 in (100, 250]: 100 + 150 · 35/40 = 231.25 ms
    store = StaticStore(
        histogram("v1", {"100": 30, "250": 50, "+Inf": 50})
        + [
            Series({**s.labels, "instance": "b"}, s.points)
            for s in histogram("v1", {"100": 30, "250": 50, "+Inf": 50})
        ]
    )
    assert by(evaluate(queries("p95", "shop")["value"], 120, store), "version") == {
        "v1": pytest.approx(0.23125)
    }


def test_gauge_aggregates_per_step_then_over_the_window() -> None:
    """`max by (zone) (max_over_time((sum by (zone) (queue_depth))[1m:10s]))` at t=120."""

    def gauge(zone: str, instance: str, values: list[tuple[float, float]]) -> Series:
        labels = {"__name__": "queue_depth", "service": "shop", "zone": zone, "instance": instance}
        return Series(labels, values)

    store = StaticStore(
        [
            gauge("a", "1", [(55, 100), (65, 1), (95, 7), (115, 2)]),  # 100 is before the window
            gauge("a", "2", [(65, 3), (95, 3)]),
            gauge("b", "1", [(50, 4)]),  # still seen: 5 m lookback
        ]
    )
    # steps 60, 70, …, 120. zone a: 60 → 100+0 (instance 2 has nothing yet) = 100, 70 → 1+3,
    # 100 → 7+3 = 10, 120 → 2+3. The sample at 55 is before the window, but the step at 60
    # still sees it (lookback), as Prometheus's subquery does.
    got = by(evaluate(queries("queue", "shop")["value"], 120, store, gauge_step=10), "zone")
    assert got == {"a": 100.0, "b": 4.0}
    # a step at 55 would not exist with a 60 s step aligned to multiples of 60: only 60 and 120
    got = by(evaluate(queries("queue", "shop")["value"], 120, store, gauge_step=60), "zone")
    assert got == {"a": 100.0, "b": 4.0}
    got = by(evaluate(queries("queue", "shop")["value"], 119, store, gauge_step=60), "zone")
    assert got == {"a": 100.0, "b": 4.0}  # only the step at 60
    got = by(evaluate(queries("queue", "shop")["value"], 125, store, gauge_step=60), "zone")
    assert got == {"a": 5.0, "b": 4.0}  # only the step at 120: 2 + 3


def test_gauge_queries_beyond_a_selector_or_an_aggregation_are_refused() -> None:
    store = StaticStore([])
    assert evaluate(queries("queue-rate", "shop")["value"], 120, store) == UNSUPPORTED_GAUGE


def test_free_promql_is_refused() -> None:
    assert evaluate(queries("events")["value"], 120, StaticStore([])) == FREE_PROMQL
