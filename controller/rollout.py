"""The Rollout policy: a canary moves from stable to canary in steps, or back at once.

Pure: ``decide(spec, memory, health, baseline, current, now)`` returns a :class:`Proposal`;
nothing here reads a clock, a file or the network. The rules, in the order they apply:

1. A finished rollout stays finished: ``RolledBack`` keeps the canary at 0 and ``Promoted`` at
   100 until a person acts. ``Paused`` holds, and rolls back when ``analysis.pauseTimeout``
   passes — every waiting phase has a timeout.
2. A significant regression against the stable (the baseline test, anytime-valid at its
   ``alpha`` over the whole rollout) rolls back in the same cycle: the evidence is already strong.
3. UNAVAILABLE on the canary, for any SLO, rolls back in the same cycle, whatever the guardrails
   say about raising — unless the stable is unhealthy for that SLO too and the baseline finds
   no regression: then the fault is shared (a dependency, not the canary) and the rollout holds.
4. DEGRADED on the canary counts toward ``failureLimit``; one more than the limit rolls back.
   A DEGRADED verdict counts only on new evidence: windows overlap from one evaluation to the
   next, and a verdict whose shortest window holds no more bad events than when the last failure
   was counted repeats that failure — it holds, but is not counted again (:func:`_repeated`).
5. UNKNOWN holds (no data is not good news) and rolls back once it lasted
   ``noData.rollbackAfter``; with ``noData.hold: false`` it counts as a failure instead. Too
   little traffic (fewer than ``minEvents``) is not missing data: it holds without that clock —
   low traffic is never a failure — and ``stepTimeout`` bounds the wait.
6. Otherwise the canary is HEALTHY on every SLO: after the step's ``hold`` of continuous health
   it advances to the next step; reaching 100 promotes. Guardrails bound the advance.
7. A step that has not moved on within ``analysis.stepTimeout`` (health coming and going, data
   appearing and vanishing) rolls back as inconclusive: every waiting phase has a timeout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from trimtab.slo.baseline import BaselineResult, Verdict
from trimtab.slo.durations import format_duration
from trimtab.slo.health import Health, Level
from trimtab.slo.models import RolloutSpec

from .causes import Cause
from .guardrails import GuardrailNote, Limits, bound

__all__ = ["Phase", "Proposal", "RolloutMemory", "decide", "weights_at"]


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"


@dataclass(frozen=True, slots=True)
class RolloutMemory:
    """What the Rollout policy remembers between cycles."""

    phase: Phase = Phase.PENDING
    step: int = -1  # index into spec.steps; -1 before the first
    step_started_at: datetime | None = None
    healthy_since: datetime | None = None  # canary HEALTHY on every SLO since
    failures: int = 0  # DEGRADED or baseline-regression evaluations in this step
    failure_bad: Mapping[str, float] = field(default_factory=dict)  # per SLO, at the last one
    failure_at: datetime | None = None  # when the last failure was counted
    no_data_since: datetime | None = None
    paused_at: datetime | None = None
    last_shift_at: datetime | None = None
    shift_times: tuple[datetime, ...] = ()  # moves toward risk (for maxShiftsPerHour)


@dataclass(frozen=True, slots=True)
class Proposal:
    """What the policy wants: the action, the weights, why, and its memory afterwards."""

    action: str
    desired: dict[str, int]
    memory: RolloutMemory
    reasons: tuple[str, ...] = ()
    guardrails: tuple[GuardrailNote, ...] = field(default_factory=tuple)
    cause: Cause = field(kw_only=True)


def weights_at(spec: RolloutSpec, canary: int) -> dict[str, int]:
    """The route's weights with ``canary`` percent on the canary."""
    return {spec.stable: 100 - canary, spec.canary: canary}


def _limits(spec: RolloutSpec) -> Limits:
    g = spec.guardrails
    return Limits(g.max_step, g.min_interval, g.max_shifts_per_hour)


def _rollback(
    spec: RolloutSpec, memory: RolloutMemory, now: datetime, cause: Cause, why: str
) -> Proposal:
    done = replace(memory, phase=Phase.ROLLED_BACK, last_shift_at=now, failures=0)
    return Proposal("rollback", weights_at(spec, 0), done, (why,), cause=cause)


def _hold(current: Mapping[str, int], memory: RolloutMemory, cause: Cause, *why: str) -> Proposal:
    return Proposal("hold", dict(current), memory, tuple(why), cause=cause)


SHARED_MARGIN = 0.5
"""A stable burning its error budget at least this close to the burn rate the canary crossed is
nearly as unhealthy."""


def _nearly(stable: Health | None, level: Level) -> bool:
    """Whether ``stable`` burned its error budget within :data:`SHARED_MARGIN` of ``level``'s
    burn rate in every window of that level.

    A shared fault (a dependency both versions call) pushes both versions' burn rates up
    together; which of the two crosses the threshold first is then a matter of sampling noise,
    not of the canary. Only burn rates: a value judged against a threshold (a p95) is read from
    coarse histogram buckets, where a healthy stable can read close to the threshold.
    """
    rows = [e for e in (stable.evidence if stable else ()) if e.level is level]
    if not rows or any(row.comparison != "burnRate" for row in rows):
        return False
    return all(
        row.measured is not None
        and not math.isnan(row.measured)
        and row.measured >= row.threshold * SHARED_MARGIN
        for row in rows
    )


def _verdicts(
    spec: RolloutSpec, health: Mapping[str, Mapping[str, Health]]
) -> tuple[list[str], list[tuple[str, str]], list[str], list[str], list[str]]:
    """(unavailable, degraded, unknown, low traffic, shared) SLO messages for the canary.

    Called once the baseline found no regression: a canary unhealthy where the stable is
    unhealthy too — or burns its budget nearly as fast (:func:`_nearly`) — is then a shared
    fault.
    """
    unavailable: list[str] = []
    degraded: list[tuple[str, str]] = []
    unknown: list[str] = []
    quiet: list[str] = []
    shared: list[str] = []
    canary = health.get(spec.canary, {})
    stable = health.get(spec.stable, {})
    for slo, verdict in sorted(canary.items()):
        base = stable.get(slo)
        base_level = base.level if base is not None else Level.UNKNOWN
        text = f"{slo}: canary {verdict.level.name} ({verdict.reason})"
        bad = (Level.UNAVAILABLE, Level.DEGRADED)
        if verdict.level in bad and base_level in bad:
            shared.append(
                f"{text}; stable is {base_level.name} too and the baseline finds no regression: "
                "a shared fault, not the canary"
            )
        elif verdict.level in bad and _nearly(base, verdict.level):
            shared.append(
                f"{text}; stable burns its budget within {100 - round(100 * SHARED_MARGIN)}% as "
                "fast and the baseline finds no regression: a shared fault, not the canary"
            )
        elif verdict.level is Level.UNAVAILABLE:
            unavailable.append(text)
        elif verdict.level is Level.DEGRADED:
            degraded.append((slo, text))
        elif verdict.level is Level.UNKNOWN:
            (quiet if verdict.low_traffic else unknown).append(text)
    return unavailable, degraded, unknown, quiet, shared


NEW_EVIDENCE = 0.5
"""More bad events than this, beyond what the last counted failure saw, make a repeated DEGRADED
a new failure (half an event: Prometheus' ``increase`` extrapolates counts to the window's
edges)."""


def _bad_events(verdict: Health) -> tuple[float, float] | None:
    """(bad events, window) of the shortest DEGRADED window, where trimtab counts them."""
    rows = [e for e in verdict.evidence if e.level is Level.DEGRADED]
    if not rows:
        return None
    row = min(rows, key=lambda e: e.window)
    if row.bad is None or not math.isfinite(row.bad):
        return None
    return row.bad, row.window


def _repeated(
    memory: RolloutMemory, slo: str, seen: tuple[float, float] | None, now: datetime
) -> bool:
    """Whether a DEGRADED verdict rests on the bad events the last counted failure already saw.

    Windows overlap from one evaluation to the next: without new bad events, a DEGRADED verdict
    repeats the evidence already counted — at low traffic, the same few errors would count
    ``failureLimit`` times. A verdict is a new failure when its shortest window holds more bad
    events than when the last failure was counted, or no longer overlaps that window. Value-
    based SLOs (a p95) count no events: each DEGRADED evaluation counts.
    """
    last = memory.failure_bad.get(slo)
    if seen is None or last is None or memory.failure_at is None:
        return False
    bad, window = seen
    if (now - memory.failure_at).total_seconds() >= window:
        return False
    return bad < last + NEW_EVIDENCE


def decide(
    spec: RolloutSpec,
    memory: RolloutMemory,
    health: Mapping[str, Mapping[str, Health]],
    baseline: BaselineResult | None,
    current: Mapping[str, int],
    now: datetime,
) -> Proposal:
    """The next move of a Rollout (see the module docstring for the rules)."""
    canary_weight = current.get(spec.canary, 0)
    if memory.phase is Phase.ROLLED_BACK:
        return Proposal(
            "none",
            weights_at(spec, 0),
            memory,
            ("rolled back; waiting for a person",),
            cause=Cause.ROLLED_BACK,
        )
    if memory.phase is Phase.PROMOTED:
        return Proposal("none", weights_at(spec, 100), memory, ("promoted",), cause=Cause.PROMOTED)
    if memory.phase is Phase.PAUSED:
        paused_for = (now - (memory.paused_at or now)).total_seconds()
        if paused_for >= spec.analysis.pause_timeout:
            return _rollback(
                spec,
                memory,
                now,
                Cause.PAUSE_TIMEOUT,
                f"paused for {format_duration(spec.analysis.pause_timeout)}: timed out",
            )
        return _hold(current, memory, Cause.PAUSED, "paused")
    if memory.phase is Phase.PENDING:
        down = sorted(
            slo for slo, h in health.get(spec.canary, {}).items() if h.level is Level.UNAVAILABLE
        )
        if down:  # it already serves (mirrored or leftover traffic) and fails: do not start
            why = f"not starting: the canary is already UNAVAILABLE on {', '.join(down)}"
            return _hold(current, memory, Cause.CANARY_UNAVAILABLE, why)
        started = replace(memory, phase=Phase.PROGRESSING, step=-1, step_started_at=now)
        return _advance(spec, started, current, now, Cause.ROLLOUT_STARTED, "rollout started")

    if baseline is not None and baseline.verdict is Verdict.REGRESSION:
        return _rollback(
            spec, memory, now, Cause.BASELINE_REGRESSION, f"baseline: {baseline.reason}"
        )
    in_step = (now - (memory.step_started_at or now)).total_seconds()
    if in_step >= spec.analysis.step_timeout:
        why = f"no conclusion within stepTimeout {format_duration(spec.analysis.step_timeout)}"
        return _rollback(spec, memory, now, Cause.STEP_TIMEOUT, why)
    unavailable, degraded, unknown, quiet, shared = _verdicts(spec, health)
    if unavailable:
        why = "UNAVAILABLE: " + "; ".join(unavailable)
        return _rollback(spec, memory, now, Cause.CANARY_UNAVAILABLE, why)

    canary = health.get(spec.canary, {})
    seen = {slo: _bad_events(canary[slo]) for slo, _ in degraded}
    repeated: list[str] = []
    failed: list[str] = []
    for slo, text in degraded:
        (repeated if _repeated(memory, slo, seen[slo], now) else failed).append(text)
    if unknown and not spec.analysis.no_data.hold:
        failed.extend(unknown)
    if not failed and repeated:
        why = "DEGRADED again on the bad events already counted as a failure: " + "; ".join(
            repeated
        )
        return _hold(current, replace(memory, healthy_since=None), Cause.CANARY_DEGRADED, why)
    if failed:
        failures = memory.failures + 1
        bad = {slo: b[0] for slo, b in seen.items() if b is not None}
        counted = replace(
            memory, failures=failures, healthy_since=None, failure_bad=bad, failure_at=now
        )
        limit = spec.analysis.failure_limit
        if failures > limit:
            why = f"failure {failures}, more than failureLimit {limit}: " + "; ".join(failed)
            return _rollback(spec, counted, now, Cause.FAILURE_LIMIT, why)
        why = f"failure {failures} of {limit} tolerated: " + "; ".join(failed)
        return _hold(current, counted, Cause.CANARY_DEGRADED, why)

    if unknown:
        since = memory.no_data_since or now
        waiting = replace(memory, no_data_since=since, healthy_since=None)
        lasted = (now - since).total_seconds()
        if lasted >= spec.analysis.no_data.rollback_after:
            why = f"no data for {format_duration(lasted)}: " + "; ".join(unknown)
            return _rollback(spec, waiting, now, Cause.NO_DATA_TIMEOUT, why)
        why = "no data is not good news: " + "; ".join(unknown)
        return _hold(current, waiting, Cause.NO_DATA, why)

    if memory.no_data_since is not None:
        memory = replace(memory, no_data_since=None)
    if quiet:  # not enough evidence: wait for traffic; stepTimeout bounds the wait
        return _hold(
            current,
            replace(memory, healthy_since=None),
            Cause.LOW_TRAFFIC,
            "not enough traffic to judge: " + "; ".join(quiet),
        )
    if shared:
        return _hold(current, replace(memory, healthy_since=None), Cause.SHARED_FAULT, *shared)

    healthy_since = memory.healthy_since or now
    if memory.healthy_since is None:
        memory = replace(memory, healthy_since=healthy_since)
    # After a move the guardrails cut short, the canary sits between steps and waits the hold
    # of the step it last reached again: slow toward risk.
    step = spec.steps[memory.step] if memory.step >= 0 else None
    hold = (step.hold if step is not None else None) or 0.0
    healthy_for = (
        now - max(healthy_since, memory.step_started_at or healthy_since)
    ).total_seconds()
    if healthy_for < hold:
        return _hold(
            current,
            memory,
            Cause.HOLD_IN_PROGRESS,
            f"healthy for {format_duration(max(healthy_for, 0.001))} of the "
            f"{format_duration(hold)} hold at {canary_weight}%",
        )
    why = f"healthy through the hold at {canary_weight}%"
    return _advance(spec, memory, current, now, Cause.STEP_PASSED, why)


def _advance(
    spec: RolloutSpec,
    memory: RolloutMemory,
    current: Mapping[str, int],
    now: datetime,
    cause: Cause,
    why: str,
) -> Proposal:
    following = memory.step + 1
    if following >= len(spec.steps):
        return Proposal("none", dict(current), memory, ("no step left",), cause=Cause.PROMOTED)
    goal = weights_at(spec, spec.steps[following].weight)
    weights, notes = bound(
        current,
        goal,
        [spec.canary],
        _limits(spec),
        last_shift_at=memory.last_shift_at,
        shift_times=memory.shift_times,
        now=now,
    )
    if weights.get(spec.canary, 0) <= current.get(spec.canary, 0):
        return Proposal(
            "hold",
            dict(current),
            memory,
            (why, "held by a guardrail"),
            tuple(notes),
            cause=Cause.GUARDRAIL,
        )
    reached = weights.get(spec.canary, 0) >= spec.steps[following].weight
    moved = replace(
        memory,
        step=following if reached else memory.step,
        step_started_at=now,  # counts since the last shift: a new split is a new test
        failures=0 if reached else memory.failures,
        failure_bad={} if reached else memory.failure_bad,
        failure_at=None if reached else memory.failure_at,
        healthy_since=None,
        last_shift_at=now,
        shift_times=(*memory.shift_times, now),
    )
    if reached and spec.steps[following].weight == 100:
        return Proposal(
            "promote",
            weights,
            replace(moved, phase=Phase.PROMOTED),
            (why, "promoted"),
            tuple(notes),
            cause=Cause.PROMOTED,
        )
    return Proposal("advance", weights, moved, (why,), tuple(notes), cause=cause)
