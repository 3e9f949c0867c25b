"""The one definition of healthy.

:func:`judge` turns the measurements of one SLO for one backend into a :class:`Health`:
HEALTHY, DEGRADED, UNAVAILABLE or UNKNOWN, with the evidence that decided it. It is the only code
that does so; :mod:`trimtab.slo.rules` compiles the same comparisons to PromQL, and a test holds
the two to the same answer on the same numbers.

The judgement, in order:

1. UNKNOWN if the source failed, if any window the health definition names has no value or a
   NaN, or — for indicators that count requests — if the shortest window saw no count or fewer
   than ``minEvents`` requests. No data is not good news.
2. UNAVAILABLE if every ``unavailable`` window exceeds its threshold.
3. DEGRADED if every ``degraded`` window exceeds its threshold.

For a budget-based SLO that counts requests, a level also needs at least ``minBadEvents`` bad
events (error ratio × requests) in each of its windows; crossed on fewer, the verdict is UNKNOWN
(not enough evidence, ``low_traffic``) — after both full levels, before HEALTHY. Low traffic is
judged on evidence, never on one bad request.
4. HEALTHY otherwise.

"Exceeds" is strict: a budget-based SLO compares the burn rate (error ratio ÷ error budget) with
``burnRate`` using ``>``; a value-based one compares the value with ``above`` (``>``) or
``below`` (``<``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from functools import lru_cache
from typing import NamedTuple

from .durations import format_duration
from .models import DEFAULT_BUDGET_HEALTH, HealthSpec, SLOSpec

__all__ = [
    "Evidence",
    "Health",
    "Level",
    "WindowMeasurement",
    "counts_events",
    "error_budget",
    "health_spec",
    "health_windows",
    "is_budget_based",
    "judge",
]


class Level(IntEnum):
    """Health levels; the integer is what ``trimtab:slo_health:level`` records."""

    UNKNOWN = -1
    HEALTHY = 0
    DEGRADED = 1
    UNAVAILABLE = 2


class WindowMeasurement(NamedTuple):
    """One window's numbers: the error ratio (budget-based) or the value, and the request count."""

    value: float | None
    events: float | None = None


class Evidence(NamedTuple):
    """A comparison that took part in the judgement."""

    level: Level
    window: float
    measured: float | None  # the burn rate (budget-based) or the value compared
    threshold: float
    comparison: str  # "burnRate", "above" or "below"
    exceeded: bool
    events: float | None = None
    bad: float | None = None  # bad events (error ratio × requests), where trimtab counts them


class Health(NamedTuple):
    """The level of one SLO for one backend, why, and the numbers behind it."""

    level: Level
    reason: str
    evidence: tuple[Evidence, ...] = ()
    error: str | None = None
    low_traffic: bool = False  # UNKNOWN because fewer than minEvents requests were seen


# The three types above are immutable named tuples, not frozen dataclasses: a cycle builds a
# few of each per SLO, backend and target — 10,000 targets make 350,000 — and a named tuple is
# built four times faster. Where a cycle builds most of them, they are built by ``tuple.__new__``
# with every field in order, as ``NamedTuple._make`` does, without the Python frame of their
# ``__new__`` (0.21 µs an Evidence instead of 0.33).
new_tuple = tuple.__new__


def is_budget_based(spec: SLOSpec) -> bool:
    """True when the SLO is judged by burn rate (error ratio against its objective)."""
    plain = spec.plain
    return plain.quantile is None and plain.gauge is None


def counts_events(spec: SLOSpec) -> bool:
    """True when trimtab knows the request count, so ``minEvents`` applies."""
    plain = spec.plain
    return any(k is not None for k in (plain.error_ratio, plain.latency, plain.quantile))


def error_budget(spec: SLOSpec) -> float:
    """The share of events allowed to be bad: 1 − objective (99.9 → 0.001).

    Computed in decimal from the objective as written, so 99.9 gives exactly the float 0.001
    (not 0.0009999999999999432) here and in the generated rules alike.
    """
    if spec.objective is None:
        raise ValueError("a budget-based SLO needs an objective")
    return _budget(spec.objective)


@lru_cache(maxsize=256)
def _budget(objective: float) -> float:
    return float((Decimal(100) - Decimal(repr(objective))) / Decimal(100))


def health_spec(spec: SLOSpec) -> HealthSpec:
    """The SLO's health definition, with the default for budget-based SLOs that give none."""
    if spec.health is not None:
        return spec.health
    return DEFAULT_BUDGET_HEALTH


def health_windows(spec: SLOSpec) -> tuple[float, ...]:
    """Every window the health definition names, shortest first."""
    return health_spec(spec).windows


def _present(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What :func:`judge` reads of an SLO's spec, worked out once per spec (the spec is
    immutable; a cycle judges it for every backend of every target that uses it)."""

    windows: tuple[float, ...]  # every window the health definition names, shortest first
    counting: bool  # the request count is known: minEvents applies
    budget: float | None  # the error budget of a budget-based SLO
    levels: tuple[tuple[Level, float, str, tuple[float, ...]], ...]  # worst level first
    min_events: int
    min_bad_events: int

    @staticmethod
    def of(spec: SLOSpec) -> _Plan:
        h = health_spec(spec)
        return _Plan(
            h.windows,
            counts_events(spec),
            error_budget(spec) if is_budget_based(spec) else None,
            tuple(
                (level, t.value, t.comparison, tuple(t.windows))
                for level, t in ((Level.UNAVAILABLE, h.unavailable), (Level.DEGRADED, h.degraded))
            ),
            spec.min_events,
            spec.min_bad_events,
        )


_PLANS: dict[int, tuple[SLOSpec, _Plan]] = {}  # by id(spec), holding the spec so the id stays its
_PLANS_KEPT = 4096


def _plan(spec: SLOSpec) -> _Plan:
    found = _PLANS.get(id(spec))
    if found is not None and found[0] is spec:
        return found[1]
    if len(_PLANS) >= _PLANS_KEPT:  # a long-lived process that reloads its configuration
        _PLANS.clear()
    plan = _Plan.of(spec)
    _PLANS[id(spec)] = (spec, plan)
    return plan


def judge(
    spec: SLOSpec,
    measurements: Mapping[float, WindowMeasurement],
    *,
    error: str | None = None,
) -> Health:
    """The health of one backend for one SLO, from its measurements keyed by window (seconds)."""
    if error is not None:
        return Health(Level.UNKNOWN, f"source failed: {error}", error=error)
    plan = _plan(spec)
    windows = plan.windows
    for window in windows:
        m = measurements.get(window)
        if m is None or m.value is None or math.isnan(m.value):
            return Health(Level.UNKNOWN, f"no data in the {format_duration(window)} window")
    counting = plan.counting
    if counting:
        shortest = measurements[windows[0]].events
        if not _present(shortest):
            return Health(
                Level.UNKNOWN, f"no request count in the {format_duration(windows[0])} window"
            )
        assert shortest is not None
        if shortest < plan.min_events:
            return Health(
                Level.UNKNOWN,
                f"{_count(shortest)} requests in {format_duration(windows[0])}, fewer than "
                f"minEvents {plan.min_events}",
                low_traffic=True,
            )

    budget = plan.budget
    counts_bad = budget is not None and counting  # bad events = error ratio × requests
    evidence: list[Evidence] = []
    thin: list[Level] = []  # levels whose thresholds are crossed on too few bad events
    for level, threshold, comparison, level_windows in plan.levels:
        first = len(evidence)
        crossed = enough = True
        for window in level_windows:
            value, events = measurements[window]
            assert value is not None
            measured = value / budget if budget is not None else value
            over = measured < threshold if comparison == "below" else measured > threshold
            bad = value * events if counts_bad and events else None
            evidence.append(
                new_tuple(
                    Evidence, (level, window, measured, threshold, comparison, over, events, bad)
                )
            )
            crossed = crossed and over
            if counts_bad and events is not None and value * events < plan.min_bad_events:
                enough = False  # minBadEvents: a few bad requests never decide
        if crossed:
            if enough:
                return Health(level, _reason(level, evidence[first:]), tuple(evidence))
            thin.append(level)
    if thin:
        return Health(
            Level.UNKNOWN,
            f"past the {thin[0].name} threshold on fewer than minBadEvents "
            f"{plan.min_bad_events} bad requests: not enough evidence",
            tuple(evidence),
            low_traffic=True,
        )
    return new_tuple(
        Health, (Level.HEALTHY, "within every threshold", tuple(evidence), None, False)
    )


def _count(events: float) -> str:
    """A request count as a person reads it: Prometheus' ``increase`` extrapolates to the
    window's edges, so most counts are fractional ("about 12", not "12.196")."""
    return f"{events:g}" if float(events).is_integer() else f"about {events:.0f}"


def _reason(level: Level, rows: list[Evidence]) -> str:
    parts = []
    for row in rows:
        name = "burn rate" if row.comparison == "burnRate" else "value"
        sign = "<" if row.comparison == "below" else ">"
        parts.append(
            f"{name} {row.measured:.4g} {sign} {row.threshold:g} over {format_duration(row.window)}"
        )
    return f"{level.name}: " + " and ".join(parts)
