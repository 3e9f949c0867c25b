"""Guardrails: moves toward risk are slow and bounded; moves toward safety are not.

A move is *toward risk* when it raises the weight of a backend at risk — a canary, or a drained
backend getting weight back. Such a move is bounded by three guardrails, each named in the
decision when it changed the proposal:

- ``maxStep`` — no backend at risk gains more than ``maxStep`` points in one shift (the move is
  cut proportionally, so 50 → 100 with ``maxStep: 25`` goes through 75);
- ``minInterval`` — no move toward risk sooner than this after the previous shift;
- ``maxShiftsPerHour`` — at most this many moves toward risk in any hour.

Everything else (a rollback, a drain) passes unchanged: slow toward risk, fast toward safety.
Pure: the clock is the ``now`` argument.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from trimtab.slo.durations import format_duration

__all__ = ["GuardrailNote", "Limits", "apportion", "bound", "is_toward_risk", "recent_shifts"]

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Limits:
    """The guardrails of a Rollout or Balance."""

    max_step: int
    min_interval: float  # seconds
    max_shifts_per_hour: int


@dataclass(frozen=True)
class GuardrailNote:
    """A guardrail that changed a proposal: what was proposed and what it allowed."""

    name: str
    proposed: dict[str, int]
    bounded: dict[str, int]
    detail: str

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "proposed": self.proposed,
            "bounded": self.bounded,
            "detail": self.detail,
        }


def apportion(
    shares: Mapping[str, float], total: int = 100, *, floor: Collection[str] = ()
) -> dict[str, int]:
    """Integers summing to ``total`` in the proportions of ``shares`` (largest remainder).

    Backends in ``floor`` are rounded down, never up, so a bounded increase stays bounded.
    """
    mass = sum(shares.values())
    if mass <= 0:
        raise ValueError("apportion needs a positive total share")
    exact = {b: total * s / mass for b, s in shares.items()}
    result = {b: math.floor(v) for b, v in exact.items()}
    left = total - sum(result.values())
    # The largest remainders get the missing units; ties go to the first name, for stability.
    order = sorted((b for b in exact if b not in floor), key=lambda b: (result[b] - exact[b], b))
    for b in order[:left]:
        result[b] += 1
    left = total - sum(result.values())
    for b in sorted(exact, key=lambda b: (result[b] - exact[b], b))[:left]:
        result[b] += 1  # only when every backend is floored
    return result


def is_toward_risk(
    current: Mapping[str, int], desired: Mapping[str, int], at_risk: Collection[str]
) -> bool:
    """Whether ``desired`` raises the weight of a backend at risk."""
    return any(desired.get(b, 0) > current.get(b, 0) for b in at_risk)


def recent_shifts(shift_times: Sequence[datetime], now: datetime) -> list[datetime]:
    """The moves toward risk of the last hour (what ``maxShiftsPerHour`` counts)."""
    return [t for t in shift_times if now - t < HOUR]


def bound(
    current: Mapping[str, int],
    desired: Mapping[str, int],
    at_risk: Collection[str],
    limits: Limits,
    *,
    last_shift_at: datetime | None,
    shift_times: Sequence[datetime],
    now: datetime,
) -> tuple[dict[str, int], list[GuardrailNote]]:
    """``desired`` as far as the guardrails allow, and the notes of those that changed it."""
    proposed = dict(desired)
    if not is_toward_risk(current, desired, at_risk):
        return proposed, []
    held = dict(current)
    if last_shift_at is not None and (now - last_shift_at).total_seconds() < limits.min_interval:
        wait = limits.min_interval - (now - last_shift_at).total_seconds()
        detail = (
            f"last shift {format_duration(max((now - last_shift_at).total_seconds(), 0.001))} "
            f"ago; minInterval {format_duration(limits.min_interval)} ({wait:.0f}s to wait)"
        )
        return held, [GuardrailNote("minInterval", proposed, held, detail)]
    shifts = recent_shifts(shift_times, now)
    if len(shifts) >= limits.max_shifts_per_hour:
        detail = (
            f"{len(shifts)} shifts toward risk in the last hour; "
            f"maxShiftsPerHour {limits.max_shifts_per_hour}"
        )
        return held, [GuardrailNote("maxShiftsPerHour", proposed, held, detail)]
    biggest = max(desired.get(b, 0) - current.get(b, 0) for b in at_risk)
    if biggest <= limits.max_step:
        return proposed, []
    fraction = limits.max_step / biggest
    shares = {
        b: current.get(b, 0) + fraction * (desired.get(b, 0) - current.get(b, 0)) for b in desired
    }
    bounded = apportion(shares, floor=[b for b in at_risk if desired.get(b, 0) > current.get(b, 0)])
    detail = f"a move of {biggest} points toward risk; maxStep {limits.max_step}"
    return bounded, [GuardrailNote("maxStep", proposed, bounded, detail)]
