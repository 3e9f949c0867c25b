"""PromQL's arithmetic without Prometheus: what the embedded scrape source computes.

Pure functions that give the numbers Prometheus 2.42 gives for the queries :mod:`.promql`
compiles, over samples a :class:`SeriesStore` holds:

- :func:`extrapolated_rate` (``rate``, ``increase``) is Prometheus's ``extrapolatedRate``
  (``promql/functions.go``): samples with timestamps in ``[at − window, at]``, at least two;
  a counter reset adds the value before the reset; the result is extrapolated to a window edge
  when the first or last sample lies within 1.1 average sample intervals of it, otherwise by half
  an interval; for counters the start is clamped to where the counter would have been zero
  (``durationToZero``), before the 1.1× test, as 2.x does (3.0 changed the order and made the
  window left-open).
- :func:`bucket_quantile` is ``bucketQuantile`` (``promql/quantile.go``): buckets sorted by upper
  bound, a ``+Inf`` bucket required, equal bounds coalesced, counts made monotonic, rank
  ``q × count``, linear interpolation inside the bucket, with its special cases for the first
  bucket (bound ≤ 0) and the ``+Inf`` bucket.
- label matching (:func:`matches`) with PromQL semantics: regexes fully anchored, a missing label
  equals ``""``; aggregation ``sum|max|min|avg by`` and ``max|avg|last_over_time``.

:func:`evaluate` answers one :class:`~trimtab.slo.batching.Query` for the built-in indicators
(errorRatio, latency, quantile, and gauges that are a selector or an aggregation of one). Free
PromQL (``events``, ``raw``, any other gauge query) is answered with an error string: only
Prometheus evaluates PromQL in full.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol

from .batching import Answer, Query, Sample
from .models import UNIT_PER_SECOND, LatencyIndicator, SLOSpec
from .presets import resolve
from .promql import (
    GaugeShape,
    Matcher,
    PromQLError,
    Selector,
    fill_query,
    fill_selector,
    grouping_labels,
    ieee_divide,
    parse_gauge,
    parse_selector,
)

__all__ = [
    "FREE_PROMQL",
    "LOOKBACK",
    "UNSUPPORTED_GAUGE",
    "Point",
    "Series",
    "SeriesStore",
    "StaticStore",
    "aggregate_by",
    "bucket_quantile",
    "evaluate",
    "extrapolated_rate",
    "histogram_quantile",
    "increase",
    "instant_value",
    "matches",
    "over_time",
    "rate",
    "read_selectors",
    "selects",
]

Point = tuple[float, float]
"""``(timestamp in seconds, value)``."""

Aggregation = Literal["sum", "max", "min", "avg"]
OverTime = Literal["max", "avg", "last"]

LOOKBACK = 300.0
"""Prometheus's default lookback delta: an instant selector sees samples up to 5 m old."""

NAME = "__name__"
FREE_PROMQL = (
    "the embedded scrape source cannot evaluate free PromQL (events and raw indicators); "
    "configure Prometheus for this SLO"
)
UNSUPPORTED_GAUGE = (
    "the scrape source evaluates only a selector or an aggregation of one; "
    "configure Prometheus for this query"
)


@dataclass(frozen=True)
class Series:
    """One series' samples over the span asked for, in time order.

    ``points`` holds the values; ``stale`` the times of staleness markers (written when a series
    disappears from its target or the target fails), which end the series for instant lookups.
    """

    labels: Mapping[str, str]  # with "__name__"
    points: Sequence[Point]
    stale: Sequence[float] = ()


class SeriesStore(Protocol):
    """Where the samples come from (the scrape source's rings, or a list in a test)."""

    def select(self, selector: Selector, start: float, end: float) -> Iterable[Series]:
        """The series ``selector`` matches, with their samples at ``start <= t <= end``."""
        ...


@dataclass(frozen=True)
class StaticStore:
    """A store over a fixed list of series: for tests, and replaying samples read elsewhere."""

    series: Sequence[Series]

    def select(self, selector: Selector, start: float, end: float) -> list[Series]:
        return [
            Series(
                s.labels,
                [p for p in s.points if start <= p[0] <= end],
                [t for t in s.stale if start <= t <= end],
            )
            for s in self.series
            if selects(selector, s.labels)
        ]


# ---------------------------------------------------------------------------------- matching


@lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise PromQLError(f"invalid regular expression {pattern!r}: {exc}") from exc


def matches(matcher: Matcher, labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy ``matcher`` (a missing label is ``""``; regexes anchored)."""
    value = labels.get(matcher.label, "")
    if matcher.op == "=":
        return value == matcher.value
    if matcher.op == "!=":
        return value != matcher.value
    found = _regex(matcher.value).fullmatch(value) is not None
    return found if matcher.op == "=~" else not found


def selects(selector: Selector, labels: Mapping[str, str]) -> bool:
    """Whether ``selector`` picks the series with ``labels`` (``__name__`` is the metric)."""
    if selector.metric and labels.get(NAME) != selector.metric:
        return False
    return all(matches(m, labels) for m in selector.matchers)


# ------------------------------------------------------------------------------ range functions


def extrapolated_rate(
    points: Sequence[Point],
    start: float,
    end: float,
    *,
    is_counter: bool = True,
    is_rate: bool = True,
) -> float | None:
    """Prometheus 2.42 ``extrapolatedRate`` over ``points`` (already inside ``[start, end]``).

    ``None`` when there are fewer than two points (Prometheus returns no sample).
    """
    if len(points) < 2:
        return None
    first_t, first_v = points[0]
    last_t, last_v = points[-1]
    result = last_v - first_v
    if is_counter:
        previous = first_v
        for _, value in points[1:]:
            if value < previous:
                result += previous
            previous = value

    # Durations from millisecond integers, as Prometheus computes them: epoch seconds as floats
    # carry ~1e-7 s of rounding that would show in the ninth digit.
    first_ms, last_ms = round(first_t * 1000), round(last_t * 1000)
    start_ms, end_ms = round(start * 1000), round(end * 1000)
    to_start = (first_ms - start_ms) / 1000
    to_end = (end_ms - last_ms) / 1000
    sampled = (last_ms - first_ms) / 1000
    average = sampled / (len(points) - 1)

    if is_counter and result > 0 and first_v >= 0:
        to_zero = sampled * (first_v / result)
        to_start = min(to_start, to_zero)

    threshold = average * 1.1
    extrapolate_to = sampled
    extrapolate_to += to_start if to_start < threshold else average / 2
    extrapolate_to += to_end if to_end < threshold else average / 2
    factor = ieee_divide(extrapolate_to, sampled)
    if is_rate:
        factor /= (end_ms - start_ms) / 1000
    return result * factor


def rate(points: Sequence[Point], start: float, end: float) -> float | None:
    """``rate(series[end - start])`` at ``end``."""
    return extrapolated_rate(points, start, end, is_counter=True, is_rate=True)


def increase(points: Sequence[Point], start: float, end: float) -> float | None:
    """``increase(series[end - start])`` at ``end``."""
    return extrapolated_rate(points, start, end, is_counter=True, is_rate=False)


def over_time(aggregate: OverTime, values: Sequence[float]) -> float:
    """``max_over_time`` / ``avg_over_time`` / ``last_over_time`` of non-empty ``values``."""
    if aggregate == "last":
        return values[-1]
    if aggregate == "avg":
        return math.fsum(values) / len(values)
    best = values[0]
    for value in values:
        if value > best or math.isnan(best):
            best = value
    return best


def instant_value(series: Series, at: float, lookback: float = LOOKBACK) -> float | None:
    """What an instant selector returns for ``series`` at ``at``: the latest sample in
    ``[at − lookback, at]``, unless a staleness marker came after it."""
    latest: Point | None = None
    for point in reversed(series.points):
        if point[0] <= at:
            latest = point
            break
    if latest is None or latest[0] < at - lookback:
        return None
    if any(latest[0] < t <= at for t in series.stale):
        return None
    return latest[1]


# ---------------------------------------------------------------------------------- aggregation


def _key(labels: Mapping[str, str], by: Sequence[str]) -> tuple[tuple[str, str], ...]:
    # Prometheus drops empty labels: a series without a `by` label groups without it.
    return tuple((name, labels[name]) for name in by if labels.get(name, ""))


def aggregate_by(op: Aggregation, by: Sequence[str], samples: Iterable[Sample]) -> list[Sample]:
    """``op by (by) (samples)``: one sample per distinct value of the ``by`` labels."""
    groups: dict[tuple[tuple[str, str], ...], list[float]] = defaultdict(list)
    for labels, value in samples:
        groups[_key(labels, by)].append(value)
    out: list[Sample] = []
    for key, values in groups.items():
        if op == "sum":
            total = 0.0
            for value in values:
                total += value
            result = total
        elif op == "avg":
            result = math.fsum(values) / len(values)
        else:
            result = values[0]
            for value in values:
                if (value > result if op == "max" else value < result) or math.isnan(result):
                    result = value
        out.append((dict(key), result))
    return out


def _parse_bound(text: str) -> float | None:
    # Go's strconv.ParseFloat: no digit separators; Python's float() allows them.
    if "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def bucket_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """Prometheus 2.42 ``bucketQuantile`` over ``(upper bound, cumulative count)`` pairs."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets, key=lambda b: b[0])
    if not ordered or ordered[-1][0] != math.inf:
        return math.nan
    coalesced: list[list[float]] = []
    for bound, count in ordered:
        if coalesced and coalesced[-1][0] == bound:
            coalesced[-1][1] += count
        else:
            coalesced.append([bound, count])
    highest = -math.inf
    for bucket in coalesced:  # ensureMonotonic
        if bucket[1] > highest:
            highest = bucket[1]
        elif bucket[1] < highest:
            bucket[1] = highest
    if len(coalesced) < 2:
        return math.nan
    observations = coalesced[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(coalesced) - 1) if coalesced[i][1] >= rank), len(coalesced) - 1)
    if b == len(coalesced) - 1:
        return coalesced[-2][0]
    if b == 0 and coalesced[0][0] <= 0:
        return coalesced[0][0]
    start = 0.0
    end, count = coalesced[b]
    if b > 0:
        start = coalesced[b - 1][0]
        count -= coalesced[b - 1][1]
        rank -= coalesced[b - 1][1]
    return start + (end - start) * ieee_divide(rank, count)


def histogram_quantile(q: float, samples: Iterable[Sample]) -> list[Sample]:
    """``histogram_quantile(q, samples)``: per label set without ``le``; bad ``le`` skipped."""
    groups: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = defaultdict(list)
    for labels, value in samples:
        bound = _parse_bound(labels.get("le", ""))
        if bound is None:
            continue
        key = tuple(sorted((k, v) for k, v in labels.items() if k not in ("le", NAME)))
        groups[key].append((bound, value))
    return [(dict(key), bucket_quantile(q, buckets)) for key, buckets in groups.items()]


# ---------------------------------------------------------------------------------- indicators


def _gauge_query(text: str) -> GaugeShape:
    """A gauge query the scrape source can evaluate, or ``PromQLError`` (UNSUPPORTED_GAUGE)."""
    shape = parse_gauge(text)
    if shape is None:
        raise PromQLError(UNSUPPORTED_GAUGE)
    return shape


def _suffixed(selector: Selector, suffix: str) -> Selector:
    return Selector(selector.metric + suffix, selector.matchers)


def read_selectors(spec: SLOSpec, params: Mapping[str, Sequence[str]] | None) -> list[Selector]:
    """The selectors an indicator reads, placeholders filled as the compiled PromQL fills them.

    ``[]`` for free PromQL; ``PromQLError`` for a gauge query the scrape source cannot evaluate.
    """
    plain = resolve(spec.indicator)
    if plain.error_ratio is not None:
        er = plain.error_ratio
        texts = (er.errors or er.good or "", er.total)
        return [fill_selector(parse_selector(t), params) for t in texts]
    histogram = plain.latency or plain.quantile
    if histogram is not None:
        base = fill_selector(parse_selector(histogram.histogram + histogram.selector), params)
        return [_suffixed(base, "_bucket"), _suffixed(base, "_count")]
    if plain.gauge is not None:
        return [_gauge_query(fill_query(plain.gauge.query, 1.0, params)).selector]
    return []


def _drop_name(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != NAME}


@dataclass(frozen=True)
class _Filtered:
    """A store that hides the series ``keep`` rejects."""

    store: SeriesStore
    keep: Callable[[Mapping[str, str]], bool]

    def select(self, selector: Selector, start: float, end: float) -> Iterable[Series]:
        return [s for s in self.store.select(selector, start, end) if self.keep(s.labels)]


def _ranged(
    store: SeriesStore,
    selector: Selector,
    at: float,
    window: float,
    function: Callable[[Sequence[Point], float, float], float | None],
) -> list[Sample]:
    out: list[Sample] = []
    for series in store.select(selector, at - window, at):
        value = function(series.points, at - window, at)
        if value is not None:
            out.append((_drop_name(series.labels), value))
    return out


def _sum_rate(
    store: SeriesStore, selector: Selector, at: float, window: float, by: Sequence[str]
) -> dict[tuple[tuple[str, str], ...], float]:
    summed = aggregate_by("sum", by, _ranged(store, selector, at, window, rate))
    return {tuple(sorted(labels.items())): value for labels, value in summed}


def _events(
    store: SeriesStore, selector: Selector, at: float, window: float, by: Sequence[str]
) -> list[Sample]:
    return aggregate_by("sum", by, _ranged(store, selector, at, window, increase))


def _counted(
    spec: SLOSpec, store: SeriesStore, query: Query, at: float, by: Sequence[str]
) -> list[Sample]:
    """The bad (or good) requests over the window: ``CompiledSLI.counted``."""
    plain = resolve(spec.indicator)
    counted_selector, _ = read_selectors(spec, query.params)
    if plain.latency is not None:
        store = _Filtered(store, _at_threshold(plain.latency))
    return _events(store, counted_selector, at, query.window, by)


def _at_threshold(lat: LatencyIndicator) -> Callable[[Mapping[str, str]], bool]:
    """Whether a bucket series is the `le` bucket equal to the threshold, compared as numbers
    ("0.25" = "0.250")."""
    bound = lat.threshold * UNIT_PER_SECOND[lat.unit]

    def at_threshold(labels: Mapping[str, str]) -> bool:
        le = _parse_bound(labels.get("le", ""))
        return le is not None and math.isclose(le, bound, rel_tol=1e-9, abs_tol=1e-12)

    return at_threshold


def _quantile(
    spec: SLOSpec, store: SeriesStore, query: Query, at: float, by: Sequence[str]
) -> list[Sample]:
    q = resolve(spec.indicator).quantile
    assert q is not None
    bucket_selector, _ = read_selectors(spec, query.params)
    per_bucket = aggregate_by(
        "sum", (*by, "le"), _ranged(store, bucket_selector, at, query.window, rate)
    )
    scale = UNIT_PER_SECOND[q.unit]
    return [(labels, value / scale) for labels, value in histogram_quantile(q.quantile, per_bucket)]


def _gauge(
    spec: SLOSpec,
    store: SeriesStore,
    query: Query,
    at: float,
    by: Sequence[str],
    step: float,
) -> list[Sample]:
    gauge = resolve(spec.indicator).gauge
    assert gauge is not None
    inner = _gauge_query(fill_query(gauge.query, 1.0, query.params))
    # The compiled query is `agg by (...) (agg_over_time((inner)[window:]))`: a subquery whose
    # steps are the multiples of `step` in [at − window, at], each an instant evaluation.
    step_ms = max(1, round(step * 1000))
    at_ms = round(at * 1000)
    first_ms = step_ms * ((at_ms - round(query.window * 1000)) // step_ms)
    if first_ms < at_ms - round(query.window * 1000):
        first_ms += step_ms
    steps = [t / 1000 for t in range(first_ms, at_ms + 1, step_ms)]
    if not steps:
        return []
    series = list(store.select(inner.selector, steps[0] - LOOKBACK, at))
    values: dict[tuple[tuple[str, str], ...], list[float]] = defaultdict(list)
    for t in steps:
        instant: list[Sample] = []
        for s in series:
            value = instant_value(s, t)
            if value is not None:
                instant.append((s.labels, value))
        if inner.op is not None:
            instant = aggregate_by(inner.op, inner.by, instant)
        for labels, value in instant:
            values[tuple(sorted(labels.items()))].append(value)
    per_series = [
        (_drop_name(dict(key)), over_time(gauge.aggregate, points))
        for key, points in values.items()
    ]
    across: Aggregation = "avg" if gauge.aggregate == "avg" else "max"
    return aggregate_by(across, by, per_series)


def evaluate(query: Query, at: float, store: SeriesStore, *, gauge_step: float = 60.0) -> Answer:
    """The samples ``query`` returns at ``at`` (epoch seconds), or why it cannot be answered.

    ``gauge_step`` is the resolution of the gauge subquery (Prometheus uses its global
    ``evaluation_interval``, 1 m by default). Never raises for a query it cannot evaluate.
    """
    spec = query.spec
    plain = resolve(spec.indicator)
    by = grouping_labels(spec)
    try:
        if plain.events is not None or plain.raw is not None:
            return FREE_PROMQL
        if query.field == "events":
            _, count_selector = read_selectors(spec, query.params)
            return _events(store, count_selector, at, query.window, by)
        if query.field == "counted":
            return _counted(spec, store, query, at, by)
        if plain.error_ratio is not None or plain.latency is not None:
            return f"{query.field!r} is not asked of an error ratio: its counts are"
        if plain.quantile is not None:
            return _quantile(spec, store, query, at, by)
        return _gauge(spec, store, query, at, by, gauge_step)
    except PromQLError as exc:
        return str(exc)
