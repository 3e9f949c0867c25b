"""The Rollout and Balance policies and their guardrails, table-driven, on a fake clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from trimtab.controller import balance, rollout
from trimtab.controller.causes import Cause
from trimtab.controller.guardrails import Limits, apportion, bound
from trimtab.controller.rollout import Phase, RolloutMemory
from trimtab.slo import load_text
from trimtab.slo.baseline import compare
from trimtab.slo.health import Evidence, Health, Level

CONFIG = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: shop
  objective: 99.9
  backendLabel: version
  indicator:
    errorRatio: {errors: 'req_total{code="500"}', total: req_total}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: latency}
spec:
  service: shop
  backendLabel: version
  indicator:
    quantile: {histogram: req_seconds, quantile: 0.95}
  health: {degraded: {above: 250ms}, unavailable: {above: 1s}}
---
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {name: shop}
spec:
  slos: [{name: errors}, {name: latency}]
  stable: v1
  canary: v2
  route: {file: {path: w.json}}
  steps: [{weight: 5, hold: 2m}, {weight: 25, hold: 5m}, {weight: 50, hold: 5m}, {weight: 100}]
  analysis: {failureLimit: 2, noData: {rollbackAfter: 10m}, pauseTimeout: 30m}
  guardrails: {maxStep: 25, minInterval: 1m, maxShiftsPerHour: 4}
---
apiVersion: trimtab.dev/v1alpha1
kind: Balance
metadata: {name: zones}
spec:
  slos: [{name: errors}]
  backends: {a: 34, b: 33, c: 33}
  route: {file: {path: z.json}}
  drain: {degraded: 50, unavailable: 100}
  restoreAfter: 5m
  guardrails: {maxStep: 20, minInterval: 1m, maxDrain: 50, maxShiftsPerHour: 12}
""",
    "policies.yaml",
)
ROLLOUT = CONFIG.rollouts["shop"].spec
BALANCE = CONFIG.balances["zones"].spec
T0 = datetime(2026, 1, 1, tzinfo=UTC)
H, D, U, K = Level.HEALTHY, Level.DEGRADED, Level.UNAVAILABLE, Level.UNKNOWN


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def levels(**backends: Level | tuple[Level, Level]) -> dict[str, dict[str, Health]]:
    """``v2=U`` (every SLO) or ``v2=(H, D)`` (errors, latency) → health per backend per SLO."""
    out = {}
    for backend, given in backends.items():
        pair = given if isinstance(given, tuple) else (given, given)
        out[backend] = {
            slo: Health(level, f"{slo} {level.name}")
            for slo, level in zip(("errors", "latency"), pair, strict=True)
        }
    return out


def progressing(step: int, **changes: object) -> RolloutMemory:
    base = RolloutMemory(
        phase=Phase.PROGRESSING,
        step=step,
        step_started_at=at(0),
        last_shift_at=at(0),
        shift_times=(at(0),),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def canary(weight: int) -> dict[str, int]:
    return {"v1": 100 - weight, "v2": weight}


@dataclass(frozen=True)
class RolloutCase:
    name: str
    memory: RolloutMemory
    health: Mapping[str, Mapping[str, Health]]
    current: dict[str, int]
    now: datetime
    action: str
    canary: int
    phase: Phase
    guardrail: str | None = None
    failures: int | None = None
    baseline: tuple[int, int, int, int] | None = None  # canary bad/total, stable bad/total
    reason: str | None = None


ROLLOUT_CASES = [
    RolloutCase(
        "pending_starts_at_the_first_step",
        RolloutMemory(),
        levels(v1=H, v2=K),
        canary(0),
        at(0),
        "advance",
        5,
        Phase.PROGRESSING,
    ),
    RolloutCase(
        "pending_does_not_start_a_canary_already_unavailable",
        RolloutMemory(),
        levels(v1=H, v2=(U, H)),
        canary(0),
        at(0),
        "hold",
        0,
        Phase.PENDING,
        reason="not starting",
    ),
    RolloutCase(
        "healthy_within_the_hold_holds",
        progressing(0),
        levels(v1=H, v2=H),
        canary(5),
        at(1),
        "hold",
        5,
        Phase.PROGRESSING,
        reason="hold at 5%",
    ),
    RolloutCase(
        "healthy_through_the_hold_advances",
        progressing(0, healthy_since=at(0)),
        levels(v1=H, v2=H),
        canary(5),
        at(2),
        "advance",
        25,
        Phase.PROGRESSING,
    ),
    RolloutCase(
        "unavailable_canary_rolls_back_in_one_cycle",
        progressing(0),
        levels(v1=H, v2=(H, U)),
        canary(5),
        at(0.1),
        "rollback",
        0,
        Phase.ROLLED_BACK,
    ),
    RolloutCase(
        "unavailable_canary_rolls_back_despite_guardrails",
        progressing(2, last_shift_at=at(9.9)),
        levels(v1=H, v2=U),
        canary(50),
        at(10),
        "rollback",
        0,
        Phase.ROLLED_BACK,
    ),
    RolloutCase(
        "unavailable_on_both_is_a_shared_fault_and_holds",
        progressing(0),
        levels(v1=U, v2=U),
        canary(5),
        at(3),
        "hold",
        5,
        Phase.PROGRESSING,
        reason="shared fault",
    ),
    RolloutCase(
        "first_degraded_counts_a_failure_and_holds",
        progressing(1),
        levels(v1=H, v2=D),
        canary(25),
        at(3),
        "hold",
        25,
        Phase.PROGRESSING,
        failures=1,
    ),
    RolloutCase(
        "degraded_within_failure_limit_holds",
        progressing(1, failures=1),
        levels(v1=H, v2=D),
        canary(25),
        at(3),
        "hold",
        25,
        Phase.PROGRESSING,
        failures=2,
    ),
    RolloutCase(
        "degraded_past_failure_limit_rolls_back",
        progressing(1, failures=2),
        levels(v1=H, v2=D),
        canary(25),
        at(3),
        "rollback",
        0,
        Phase.ROLLED_BACK,
    ),
    RolloutCase(
        "degraded_on_both_does_not_count",
        progressing(1, failures=1),
        levels(v1=D, v2=D),
        canary(25),
        at(3),
        "hold",
        25,
        Phase.PROGRESSING,
        failures=1,
    ),
    RolloutCase(
        "unknown_holds_and_starts_the_no_data_clock",
        progressing(1),
        levels(v1=H, v2=K),
        canary(25),
        at(3),
        "hold",
        25,
        Phase.PROGRESSING,
        reason="no data",
    ),
    RolloutCase(
        "unknown_for_rollback_after_rolls_back",
        progressing(1, no_data_since=at(0)),
        levels(v1=H, v2=K),
        canary(25),
        at(10),
        "rollback",
        0,
        Phase.ROLLED_BACK,
    ),
    RolloutCase(
        "unknown_just_before_rollback_after_holds",
        progressing(1, no_data_since=at(0)),
        levels(v1=H, v2=K),
        canary(25),
        at(9.9),
        "hold",
        25,
        Phase.PROGRESSING,
    ),
    RolloutCase(
        "unknown_never_advances_even_after_the_hold",
        progressing(0, healthy_since=at(0)),
        levels(v1=H, v2=(H, K)),
        canary(5),
        at(30),
        "hold",
        5,
        Phase.PROGRESSING,
    ),
    RolloutCase(
        "a_significant_baseline_regression_rolls_back_at_once",
        progressing(1),
        levels(v1=H, v2=H),
        canary(25),
        at(9),
        "rollback",
        0,
        Phase.ROLLED_BACK,
        baseline=(100, 2000, 2, 6000),
    ),
    RolloutCase(
        "unavailable_on_both_with_a_baseline_regression_is_the_canary",
        progressing(1),
        levels(v1=D, v2=U),
        canary(25),
        at(3),
        "rollback",
        0,
        Phase.ROLLED_BACK,
        baseline=(100, 2000, 2, 6000),
    ),
    RolloutCase(
        "unavailable_canary_with_a_degraded_stable_and_no_regression_holds",
        progressing(1),
        levels(v1=D, v2=U),
        canary(25),
        at(3),
        "hold",
        25,
        Phase.PROGRESSING,
        baseline=(30, 2000, 80, 6000),
        reason="shared fault",
    ),
    RolloutCase(
        "a_step_without_conclusion_times_out",
        progressing(1, no_data_since=at(55)),
        levels(v1=H, v2=K),
        canary(25),
        at(60),
        "rollback",
        0,
        Phase.ROLLED_BACK,
        reason="stepTimeout",
    ),
    RolloutCase(
        "baseline_without_evidence_does_not_block",
        progressing(0, healthy_since=at(0)),
        levels(v1=H, v2=H),
        canary(5),
        at(3),
        "advance",
        25,
        Phase.PROGRESSING,
        baseline=(1, 20, 0, 2000),
    ),
    RolloutCase(
        "rolled_back_stays_at_zero",
        progressing(1, phase=Phase.ROLLED_BACK),
        levels(v1=H, v2=H),
        canary(0),
        at(50),
        "none",
        0,
        Phase.ROLLED_BACK,
    ),
    RolloutCase(
        "promoted_stays_at_full_weight",
        progressing(3, phase=Phase.PROMOTED),
        levels(v1=H, v2=U),
        canary(100),
        at(50),
        "none",
        100,
        Phase.PROMOTED,
    ),
    RolloutCase(
        "paused_holds",
        progressing(1, phase=Phase.PAUSED, paused_at=at(0)),
        levels(v1=H, v2=H),
        canary(25),
        at(20),
        "hold",
        25,
        Phase.PAUSED,
    ),
    RolloutCase(
        "pause_times_out_into_a_rollback",
        progressing(1, phase=Phase.PAUSED, paused_at=at(0)),
        levels(v1=H, v2=H),
        canary(25),
        at(30),
        "rollback",
        0,
        Phase.ROLLED_BACK,
    ),
    RolloutCase(
        "max_step_cuts_fifty_to_one_hundred_at_seventy_five",
        progressing(2, healthy_since=at(0)),
        levels(v1=H, v2=H),
        canary(50),
        at(6),
        "advance",
        75,
        Phase.PROGRESSING,
        guardrail="maxStep",
    ),
    RolloutCase(
        "from_between_steps_healthy_through_the_hold_promotes",
        progressing(2, healthy_since=at(0)),
        levels(v1=H, v2=H),
        canary(75),
        at(6),
        "promote",
        100,
        Phase.PROMOTED,
    ),
    RolloutCase(
        "min_interval_holds_an_advance",
        progressing(0, healthy_since=at(0), step_started_at=at(-5), last_shift_at=at(1.5)),
        levels(v1=H, v2=H),
        canary(5),
        at(2),
        "hold",
        5,
        Phase.PROGRESSING,
        guardrail="minInterval",
    ),
    RolloutCase(
        "max_shifts_per_hour_holds_an_advance",
        progressing(0, healthy_since=at(0), shift_times=(at(-50), at(-40), at(-30), at(0))),
        levels(v1=H, v2=H),
        canary(5),
        at(3),
        "hold",
        5,
        Phase.PROGRESSING,
        guardrail="maxShiftsPerHour",
    ),
    RolloutCase(
        "shifts_older_than_an_hour_do_not_count",
        progressing(0, healthy_since=at(0), shift_times=(at(-70), at(-65), at(-61), at(0))),
        levels(v1=H, v2=H),
        canary(5),
        at(3),
        "advance",
        25,
        Phase.PROGRESSING,
    ),
]


@pytest.mark.parametrize("case", ROLLOUT_CASES, ids=lambda c: c.name)
def test_rollout_policy(case: RolloutCase) -> None:
    baseline = compare(*case.baseline) if case.baseline else None
    proposal = rollout.decide(ROLLOUT, case.memory, case.health, baseline, case.current, case.now)
    assert proposal.action == case.action, proposal.reasons
    assert proposal.desired == canary(case.canary)
    assert sum(proposal.desired.values()) == 100
    assert proposal.memory.phase is case.phase
    if case.guardrail:
        assert [note.name for note in proposal.guardrails] == [case.guardrail]
    else:
        assert proposal.guardrails == ()
    if case.failures is not None:
        assert proposal.memory.failures == case.failures
    if case.reason:
        assert any(case.reason in text for text in proposal.reasons), proposal.reasons


def test_no_data_clock_resets_when_data_returns() -> None:
    memory = progressing(1, no_data_since=at(0))
    proposal = rollout.decide(ROLLOUT, memory, levels(v1=H, v2=H), None, canary(25), at(5))
    assert proposal.memory.no_data_since is None


def test_unknown_counts_as_failure_when_no_data_does_not_hold() -> None:
    strict = ROLLOUT.model_copy(
        update={
            "analysis": ROLLOUT.analysis.model_copy(
                update={"no_data": ROLLOUT.analysis.no_data.model_copy(update={"hold": False})}
            )
        }
    )
    proposal = rollout.decide(
        strict, progressing(1, failures=2), levels(v1=H, v2=K), None, canary(25), at(3)
    )
    assert proposal.action == "rollback"


def test_the_hold_restarts_after_a_failure() -> None:
    memory = progressing(0, healthy_since=at(0))
    failing = rollout.decide(ROLLOUT, memory, levels(v1=H, v2=D), None, canary(5), at(1.5))
    assert failing.memory.healthy_since is None
    again = rollout.decide(ROLLOUT, failing.memory, levels(v1=H, v2=H), None, canary(5), at(2))
    assert again.action == "hold"


# ------------------------------------------------------------------------------------ Balance


def zones(**given: Level) -> dict[str, dict[str, Health]]:
    return {b: {"errors": Health(given.get(b, H), "")} for b in ("a", "b", "c")}


NOMINAL = {"a": 34, "b": 33, "c": 33}


@dataclass(frozen=True)
class BalanceCase:
    name: str
    health: dict[str, dict[str, Health]]
    action: str
    weights: dict[str, int]
    memory: balance.BalanceMemory = field(default_factory=balance.BalanceMemory)
    current: dict[str, int] = field(default_factory=lambda: dict(NOMINAL))
    now: datetime = T0
    guardrail: str | None = None
    drained: dict[str, int] | None = None


C_DRAINED = balance.BalanceMemory(
    drained={"c": 100}, healthy_since={"c": at(-10)}, last_shift_at=at(-10)
)
C_WEIGHTS = {"a": 51, "b": 49, "c": 0}

BALANCE_CASES = [
    BalanceCase("all_healthy_keeps_nominal", zones(), "none", NOMINAL),
    BalanceCase("unavailable_drains_fully", zones(c=U), "drain", C_WEIGHTS, drained={"c": 100}),
    BalanceCase(
        "degraded_drains_half", zones(c=D), "drain", {"a": 41, "b": 39, "c": 20}, drained={"c": 50}
    ),
    BalanceCase(
        "drain_ignores_min_interval",
        zones(c=U),
        "drain",
        C_WEIGHTS,
        memory=balance.BalanceMemory(last_shift_at=T0),
        drained={"c": 100},
    ),
    BalanceCase(
        "max_drain_limits_two_unavailable_zones",
        zones(b=U, c=U),
        "drain",
        {"a": 68, "b": 0, "c": 32},
        guardrail="maxDrain",
        drained={"b": 100, "c": 51},
    ),
    BalanceCase("every_backend_unhealthy_holds", zones(a=D, b=U, c=U), "hold", NOMINAL),
    BalanceCase(
        "unknown_keeps_the_drain",
        zones(c=K),
        "hold",
        C_WEIGHTS,
        memory=C_DRAINED,
        current=C_WEIGHTS,
        drained={"c": 100},
    ),
    BalanceCase(
        "recovered_but_not_for_restore_after_holds",
        zones(),
        "hold",
        C_WEIGHTS,
        memory=replace(C_DRAINED, healthy_since={"c": at(-4)}),
        current=C_WEIGHTS,
        drained={"c": 100},
    ),
    BalanceCase(
        "healthy_for_restore_after_restores_by_max_step",
        zones(),
        "restore",
        {"a": 41, "b": 39, "c": 20},
        memory=C_DRAINED,
        current=C_WEIGHTS,
        drained={"c": 48},
    ),
    BalanceCase(
        "restore_waits_for_min_interval",
        zones(),
        "hold",
        C_WEIGHTS,
        memory=replace(C_DRAINED, last_shift_at=at(-0.5)),
        current=C_WEIGHTS,
        guardrail="minInterval",
        drained={"c": 100},
    ),
]


@pytest.mark.parametrize("case", BALANCE_CASES, ids=lambda c: c.name)
def test_balance_policy(case: BalanceCase) -> None:
    proposal = balance.decide(BALANCE, case.memory, case.health, case.current, case.now)
    assert proposal.action == case.action, proposal.reasons
    assert proposal.desired == case.weights
    assert sum(proposal.desired.values()) == 100
    assert [n.name for n in proposal.guardrails] == ([case.guardrail] if case.guardrail else [])
    if case.drained is not None:
        assert {b: d for b, d in proposal.memory.drained.items() if d} == case.drained


def test_max_drain_is_never_exceeded() -> None:
    proposal = balance.decide(BALANCE, balance.BalanceMemory(), zones(a=U, b=U), NOMINAL, T0)
    assert proposal.action == "drain"
    drained_capacity = sum(NOMINAL[b] * d / 100 for b, d in proposal.memory.drained.items())
    assert drained_capacity <= 50


# --------------------------------------------------------------------------------- guardrails


def test_bound_leaves_moves_toward_safety_alone() -> None:
    limits = Limits(max_step=5, min_interval=600, max_shifts_per_hour=1)
    weights, notes = bound(
        canary(50), canary(0), ["v2"], limits, last_shift_at=T0, shift_times=(T0,), now=T0
    )
    assert weights == canary(0)
    assert notes == []


def test_apportion_keeps_the_total_and_floors_bounded_backends() -> None:
    assert apportion({"a": 1, "b": 1, "c": 1}) == {"a": 34, "b": 33, "c": 33}
    assert apportion({"x": 12.9, "y": 87.1}, floor=["x"]) == {"x": 12, "y": 88}


def test_low_traffic_holds_without_the_no_data_clock() -> None:
    quiet = Health(K, "12 requests in 1m, fewer than minEvents 50", low_traffic=True)
    health = {"v1": levels(v1=H)["v1"], "v2": {"errors": quiet, "latency": quiet}}
    proposal = rollout.decide(ROLLOUT, progressing(1), health, None, canary(25), at(30))
    assert proposal.action == "hold"
    assert proposal.memory.no_data_since is None
    assert any("not enough traffic" in r for r in proposal.reasons)
    late = rollout.decide(ROLLOUT, progressing(1), health, None, canary(25), at(60))
    assert late.action == "rollback"  # stepTimeout still ends the wait


# Every decision names the rule behind it: the cause a runbook page and a dashboard key on.
ROLLOUT_CAUSES = {
    "pending_starts_at_the_first_step": Cause.ROLLOUT_STARTED,
    "pending_does_not_start_a_canary_already_unavailable": Cause.CANARY_UNAVAILABLE,
    "healthy_within_the_hold_holds": Cause.HOLD_IN_PROGRESS,
    "healthy_through_the_hold_advances": Cause.STEP_PASSED,
    "unavailable_canary_rolls_back_in_one_cycle": Cause.CANARY_UNAVAILABLE,
    "unavailable_canary_rolls_back_despite_guardrails": Cause.CANARY_UNAVAILABLE,
    "unavailable_on_both_is_a_shared_fault_and_holds": Cause.SHARED_FAULT,
    "first_degraded_counts_a_failure_and_holds": Cause.CANARY_DEGRADED,
    "degraded_within_failure_limit_holds": Cause.CANARY_DEGRADED,
    "degraded_past_failure_limit_rolls_back": Cause.FAILURE_LIMIT,
    "degraded_on_both_does_not_count": Cause.SHARED_FAULT,
    "unknown_holds_and_starts_the_no_data_clock": Cause.NO_DATA,
    "unknown_for_rollback_after_rolls_back": Cause.NO_DATA_TIMEOUT,
    "unknown_just_before_rollback_after_holds": Cause.NO_DATA,
    "unknown_never_advances_even_after_the_hold": Cause.NO_DATA,
    "a_significant_baseline_regression_rolls_back_at_once": Cause.BASELINE_REGRESSION,
    "unavailable_on_both_with_a_baseline_regression_is_the_canary": Cause.BASELINE_REGRESSION,
    "unavailable_canary_with_a_degraded_stable_and_no_regression_holds": Cause.SHARED_FAULT,
    "a_step_without_conclusion_times_out": Cause.STEP_TIMEOUT,
    "baseline_without_evidence_does_not_block": Cause.STEP_PASSED,
    "rolled_back_stays_at_zero": Cause.ROLLED_BACK,
    "promoted_stays_at_full_weight": Cause.PROMOTED,
    "paused_holds": Cause.PAUSED,
    "pause_times_out_into_a_rollback": Cause.PAUSE_TIMEOUT,
    "max_step_cuts_fifty_to_one_hundred_at_seventy_five": Cause.STEP_PASSED,
    "from_between_steps_healthy_through_the_hold_promotes": Cause.PROMOTED,
    "min_interval_holds_an_advance": Cause.GUARDRAIL,
    "max_shifts_per_hour_holds_an_advance": Cause.GUARDRAIL,
    "shifts_older_than_an_hour_do_not_count": Cause.STEP_PASSED,
}
BALANCE_CAUSES = {
    "all_healthy_keeps_nominal": Cause.BALANCED,
    "unavailable_drains_fully": Cause.DRAIN,
    "degraded_drains_half": Cause.DRAIN,
    "drain_ignores_min_interval": Cause.DRAIN,
    "max_drain_limits_two_unavailable_zones": Cause.MAX_DRAIN,
    "every_backend_unhealthy_holds": Cause.ALL_UNHEALTHY,
    "unknown_keeps_the_drain": Cause.NO_DATA,
    "recovered_but_not_for_restore_after_holds": Cause.RESTORE_WAITING,
    "healthy_for_restore_after_restores_by_max_step": Cause.RESTORE,
    "restore_waits_for_min_interval": Cause.GUARDRAIL,
}


def test_every_rollout_case_names_its_cause() -> None:
    assert set(ROLLOUT_CAUSES) == {case.name for case in ROLLOUT_CASES}
    for case in ROLLOUT_CASES:
        baseline = compare(*case.baseline) if case.baseline else None
        proposal = rollout.decide(
            ROLLOUT, case.memory, case.health, baseline, case.current, case.now
        )
        assert proposal.cause is ROLLOUT_CAUSES[case.name], case.name


def test_every_balance_case_names_its_cause() -> None:
    assert set(BALANCE_CAUSES) == {case.name for case in BALANCE_CASES}
    for case in BALANCE_CASES:
        proposal = balance.decide(BALANCE, case.memory, case.health, case.current, case.now)
        assert proposal.cause is BALANCE_CAUSES[case.name], case.name


def _with_stable_burning(burn: float, comparison: str = "burnRate") -> dict[str, dict[str, Health]]:
    """The canary DEGRADED on errors; the stable HEALTHY but burning its budget at ``burn``
    against the degraded threshold 6 (both windows)."""
    health = levels(v1=H, v2=(D, H))
    health["v1"]["errors"] = Health(
        H,
        "stable burning",
        tuple(Evidence(D, window, burn, 6.0, comparison, exceeded=False) for window in (300, 1800)),
    )
    return health


@pytest.mark.parametrize(
    ("burn", "comparison", "shared"),
    [
        (3.5, "burnRate", True),  # the stable burns within half of 6: a shared fault
        (3.0, "burnRate", True),  # exactly half
        (2.5, "burnRate", False),  # far from it: the canary's failure counts
        (5.0, "above", False),  # a value (a p95) read from coarse buckets never counts as shared
    ],
)
def test_a_stable_nearly_as_unhealthy_makes_a_degraded_canary_a_shared_fault(
    burn: float, comparison: str, shared: bool
) -> None:
    memory = progressing(0, failures=2)  # one more counted failure rolls back (failureLimit 2)
    health = _with_stable_burning(burn, comparison)
    proposal = rollout.decide(ROLLOUT, memory, health, None, canary(5), at(1))
    if shared:
        assert (proposal.action, proposal.cause) == ("hold", Cause.SHARED_FAULT)
        assert proposal.memory.failures == 2
    else:
        assert (proposal.action, proposal.cause) == ("rollback", Cause.FAILURE_LIMIT)


def _degraded_on(bad: float, window: float = 300.0) -> dict[str, dict[str, Health]]:
    """The canary DEGRADED on errors with ``bad`` bad events in its shortest degraded window."""
    health = levels(v1=H, v2=(D, H))
    rows = (
        Evidence(D, window, 8.0, 6.0, "burnRate", True, 500.0, bad),
        Evidence(D, 1800.0, 8.0, 6.0, "burnRate", True, 500.0, bad),
    )
    health["v2"]["errors"] = Health(D, "errors DEGRADED", rows)
    return health


@pytest.mark.parametrize(
    ("bad_now", "minutes_later", "counted"),
    [
        (5.0, 0.5, False),  # the same five errors, seen again 30 s later
        (4.0, 0.5, False),  # one slid out of the window: still nothing new
        (5.4, 0.5, False),  # extrapolation noise, not a new event
        (6.0, 0.5, True),  # a new bad event
        (5.0, 5.0, True),  # the windows no longer overlap: all of it is new
    ],
)
def test_a_degraded_verdict_on_bad_events_already_counted_is_not_counted_again(
    bad_now: float, minutes_later: float, counted: bool
) -> None:
    first = rollout.decide(ROLLOUT, progressing(0), _degraded_on(5.0), None, canary(5), at(1))
    assert (first.memory.failures, first.memory.failure_bad) == (1, {"errors": 5.0})
    later = at(1 + minutes_later)
    proposal = rollout.decide(ROLLOUT, first.memory, _degraded_on(bad_now), None, canary(5), later)
    assert proposal.action == "hold"
    assert proposal.cause is Cause.CANARY_DEGRADED
    assert proposal.memory.failures == (2 if counted else 1)
    assert proposal.memory.healthy_since is None  # never a step toward health either
    if not counted:
        assert "already counted" in proposal.reasons[0]


def test_low_traffic_errors_seen_in_overlapping_windows_do_not_roll_back() -> None:
    # failureLimit 2: the third counted failure rolls back. Six evaluations of the same five
    # errors count once; new errors count again.
    memory = progressing(0)
    for step in range(6):
        proposal = rollout.decide(
            ROLLOUT, memory, _degraded_on(5.0), None, canary(5), at(1 + step / 2)
        )
        memory = proposal.memory
    assert (proposal.action, memory.failures) == ("hold", 1)
    for step, bad in enumerate((7.0, 9.0)):
        proposal = rollout.decide(
            ROLLOUT, memory, _degraded_on(bad), None, canary(5), at(4.5 + step / 2)
        )
        memory = proposal.memory
    assert (proposal.action, proposal.cause) == ("rollback", Cause.FAILURE_LIMIT)


def test_a_degraded_value_counts_every_evaluation() -> None:
    # A p95 counts no events: each DEGRADED evaluation is a failure, as before.
    memory = progressing(0)
    for step in range(3):
        proposal = rollout.decide(
            ROLLOUT, memory, levels(v1=H, v2=(H, D)), None, canary(5), at(1 + step / 2)
        )
        memory = proposal.memory
    assert (proposal.action, proposal.cause) == ("rollback", Cause.FAILURE_LIMIT)


def test_a_new_step_forgets_the_counted_bad_events() -> None:
    memory = replace(
        progressing(0),
        failures=1,
        failure_bad={"errors": 5.0},
        failure_at=at(0.5),
        healthy_since=at(0.5),
    )
    proposal = rollout.decide(ROLLOUT, memory, levels(v1=H, v2=H), None, canary(5), at(3))
    assert proposal.action == "advance"
    assert (proposal.memory.failures, proposal.memory.failure_bad) == (0, {})
    assert proposal.memory.failure_at is None
