"""The Balance policy: a pool (zones, regions, versions) kept at nominal weights while healthy.

Pure: ``decide(spec, memory, health, current, now)`` returns a :class:`Proposal`. The rules:

1. A backend's level is its worst SLO: UNAVAILABLE, then DEGRADED, then UNKNOWN, then HEALTHY.
2. If every backend that carries weight is DEGRADED or UNAVAILABLE there is no safe place to send
   traffic: hold. UNKNOWN keeps a backend's drain as it is (a metrics outage freezes weights).
3. DEGRADED drains ``drain.degraded`` percent of the backend's nominal weight, UNAVAILABLE
   ``drain.unavailable`` — at once, but never more than ``guardrails.maxDrain`` percent of the
   total capacity drained at the same time (the worst backends first); the rest is held and the
   decision names ``maxDrain``.
4. A drained backend gets its weight back only after ``restoreAfter`` of continuous HEALTHY
   (hysteresis), and then as a move toward risk: rate-limited by the guardrails. A cycle that
   drains never restores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from trimtab.slo.durations import format_duration
from trimtab.slo.health import Health, Level
from trimtab.slo.models import BalanceSpec

from .causes import Cause
from .guardrails import GuardrailNote, Limits, apportion, bound

__all__ = ["BalanceMemory", "BalanceProposal", "decide", "weights_for"]


@dataclass(frozen=True)
class BalanceMemory:
    """What the Balance policy remembers between cycles."""

    drained: Mapping[str, int] = field(default_factory=dict)  # percent of nominal, per backend
    healthy_since: Mapping[str, datetime] = field(default_factory=dict)
    last_shift_at: datetime | None = None
    shift_times: tuple[datetime, ...] = ()  # restores (moves toward risk)


@dataclass(frozen=True)
class BalanceProposal:
    action: str
    desired: dict[str, int]
    memory: BalanceMemory
    reasons: tuple[str, ...] = ()
    guardrails: tuple[GuardrailNote, ...] = ()
    cause: Cause = field(kw_only=True)


_ORDER = {Level.UNAVAILABLE: 0, Level.DEGRADED: 1, Level.UNKNOWN: 2, Level.HEALTHY: 3}


def worst(levels: Mapping[str, Health]) -> Level:
    """A backend's level: its worst SLO (UNKNOWN ranks between DEGRADED and HEALTHY)."""
    if not levels:
        return Level.UNKNOWN
    return min((h.level for h in levels.values()), key=_ORDER.__getitem__)


def weights_for(spec: BalanceSpec, drained: Mapping[str, int]) -> dict[str, int]:
    """The route's weights with each backend's nominal weight reduced by its drain (all zero
    when everything would be drained: only ever shown, never applied)."""
    shares = {b: n * (100 - drained.get(b, 0)) / 100 for b, n in spec.backends.items()}
    if sum(shares.values()) <= 0:
        return dict.fromkeys(spec.backends, 0)
    return apportion(shares)


def _capacity(spec: BalanceSpec, drained: Mapping[str, int]) -> float:
    total = sum(spec.backends.values())
    return sum(n * drained.get(b, 0) / 100 for b, n in spec.backends.items()) * 100 / total


def decide(
    spec: BalanceSpec,
    memory: BalanceMemory,
    health: Mapping[str, Mapping[str, Health]],
    current: Mapping[str, int],
    now: datetime,
) -> BalanceProposal:
    """The next move of a Balance (see the module docstring for the rules)."""
    levels = {b: worst(health.get(b, {})) for b in spec.backends}
    since = {
        b: memory.healthy_since.get(b, now) for b, level in levels.items() if level is Level.HEALTHY
    }
    memory = replace(memory, healthy_since=since)
    drained = {b: memory.drained.get(b, 0) for b in spec.backends}
    carrying = [b for b, n in spec.backends.items() if n > 0]
    sick = [b for b in carrying if levels[b] in (Level.DEGRADED, Level.UNAVAILABLE)]
    if carrying and len(sick) == len(carrying):
        why = "every backend is unhealthy (" + ", ".join(f"{b} {levels[b].name}" for b in sick)
        return BalanceProposal(
            "hold", dict(current), memory, (why + "): no safe place",), cause=Cause.ALL_UNHEALTHY
        )

    wanted = dict(drained)
    for b, level in levels.items():
        if level is Level.UNAVAILABLE:
            wanted[b] = max(drained[b], spec.drain.unavailable)
        elif level is Level.DEGRADED:
            wanted[b] = max(drained[b], spec.drain.degraded)

    if any(wanted[b] > drained[b] for b in spec.backends):
        return _drain(spec, memory, levels, drained, wanted)

    restoring = [
        b
        for b in spec.backends
        if drained[b] > 0
        and levels[b] is Level.HEALTHY
        and (now - since[b]).total_seconds() >= spec.restore_after
    ]
    if restoring:
        return _restore(spec, memory, drained, restoring, current, now)
    waiting = [b for b in spec.backends if drained[b] > 0 and levels[b] is Level.HEALTHY]
    reasons = [
        f"{b} HEALTHY for {format_duration(max((now - since[b]).total_seconds(), 0.001))} of "
        f"restoreAfter {format_duration(spec.restore_after)}"
        for b in waiting
    ]
    reasons += [
        f"{b} UNKNOWN: its drain is kept" for b in spec.backends if levels[b] is Level.UNKNOWN
    ]
    action = "hold" if reasons or any(drained.values()) else "none"
    if waiting:
        cause = Cause.RESTORE_WAITING
    elif any(levels[b] is Level.UNKNOWN for b in spec.backends):
        cause = Cause.NO_DATA
    else:
        cause = Cause.DRAIN if any(drained.values()) else Cause.BALANCED
    return BalanceProposal(
        action, weights_for(spec, drained), memory, tuple(reasons) or ("all healthy",), cause=cause
    )


def _drain(
    spec: BalanceSpec,
    memory: BalanceMemory,
    levels: Mapping[str, Level],
    drained: dict[str, int],
    wanted: dict[str, int],
) -> BalanceProposal:
    limit = spec.guardrails.max_drain
    granted = dict(drained)
    notes: list[GuardrailNote] = []
    # The worst first; among equals the bigger drain, then the name, so the outcome is stable.
    order = sorted(
        (b for b in spec.backends if wanted[b] > drained[b]),
        key=lambda b: (_ORDER[levels[b]], -wanted[b], b),
    )
    for b in order:
        trial = {**granted, b: wanted[b]}
        if _capacity(spec, trial) <= limit:
            granted = trial
            continue
        low, high = granted[b], wanted[b]  # the most this backend can take within maxDrain
        while low < high:
            middle = (low + high + 1) // 2
            if _capacity(spec, {**granted, b: middle}) <= limit:
                low = middle
            else:
                high = middle - 1
        granted[b] = low
    if granted != wanted:
        notes.append(
            GuardrailNote(
                "maxDrain",
                weights_for(spec, wanted),
                weights_for(spec, granted),
                f"draining all would remove {_capacity(spec, wanted):.0f}% of capacity; "
                f"maxDrain {limit}%",
            )
        )
    reasons = tuple(
        f"{b} {levels[b].name}: drained {granted[b]}% of its nominal weight"
        for b in order
        if granted[b] > drained[b]
    )
    if _capacity(spec, granted) >= 100:  # maxDrain 100 and nothing left to serve: no safe place
        held = ("draining would leave no backend serving: holding",)
        return BalanceProposal(
            "hold",
            weights_for(spec, drained),
            memory,
            held,
            tuple(notes),
            cause=Cause.ALL_UNHEALTHY,
        )
    if not reasons:
        held = ("maxDrain reached: nothing more can be drained",)
        return BalanceProposal(
            "hold", weights_for(spec, drained), memory, held, tuple(notes), cause=Cause.MAX_DRAIN
        )
    moved = replace(memory, drained=granted)
    cause = Cause.MAX_DRAIN if notes else Cause.DRAIN
    return BalanceProposal(
        "drain", weights_for(spec, granted), moved, reasons, tuple(notes), cause=cause
    )


def _restore(
    spec: BalanceSpec,
    memory: BalanceMemory,
    drained: dict[str, int],
    restoring: list[str],
    current: Mapping[str, int],
    now: datetime,
) -> BalanceProposal:
    g = spec.guardrails
    # Give back as much as maxStep allows: no restoring backend gains more than maxStep points.
    lowered = {**drained, **dict.fromkeys(restoring, 0)}
    desired = weights_for(spec, lowered)
    while over := [
        b
        for b in restoring
        if desired[b] - current.get(b, 0) > g.max_step and lowered[b] < drained[b]
    ]:
        for b in over:
            lowered[b] += 1
        desired = weights_for(spec, lowered)
    weights, notes = bound(
        current,
        desired,
        restoring,
        Limits(g.max_step, g.min_interval, g.max_shifts_per_hour),
        last_shift_at=memory.last_shift_at,
        shift_times=memory.shift_times,
        now=now,
    )
    if weights != desired:
        return BalanceProposal(
            "hold",
            dict(current),
            memory,
            ("restore held by a guardrail",),
            tuple(notes),
            cause=Cause.GUARDRAIL,
        )
    moved = replace(
        memory, drained=lowered, last_shift_at=now, shift_times=(*memory.shift_times, now)
    )
    reasons = tuple(
        f"{b} HEALTHY for restoreAfter: drain {drained[b]}% → {lowered[b]}%" for b in restoring
    )
    return BalanceProposal("restore", weights, moved, reasons, cause=Cause.RESTORE)
