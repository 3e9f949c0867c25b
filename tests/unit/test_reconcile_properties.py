"""Properties of the reconcile cycle over random health sequences (DESIGN.md sections 5, 6, 10).

The real :class:`Reconciler` drives a :class:`FakeTrafficAdapter` (with a random apply lag) from a
:class:`ListMetricSource` whose answer changes every cycle, on a fake clock stepping 30 s, with a
real :class:`StateStore` and :class:`DecisionLog` in a temporary directory. Whatever the health
sequence:

(a) every weights written, served or decided sum to 100, each within 0..100;
(b) no move toward risk (a canary raised; a drained backend given weight back) is bigger than
    ``maxStep``, sooner than ``minInterval`` after the previous one, or beyond
    ``maxShiftsPerHour`` in any rolling hour;
(c) once rolled back, the canary stays at 0 (no person acts);
(d) in dry-run, ``set_weights`` is never called and every decision says ``dryRun``;
(e) the decision log verifies.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from trimtab.adapters.fake import FakeTrafficAdapter, ListMetricSource, Sampled
from trimtab.controller.decisions import Decision, DecisionLog
from trimtab.controller.reconcile import Reconciler, ReconcilerConfig
from trimtab.controller.state import StateStore
from trimtab.controller.targets import Target, targets
from trimtab.slo import load_text
from trimtab.slo.health import WindowMeasurement
from trimtab.slo.models import Balance, Rollout
from trimtab.slo.ports import SeriesRequest

CONFIG = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: shop
  objective: 99.9
  backendLabel: version
  minEvents: 10
  indicator:
    errorRatio: {errors: 'req_total{code="500"}', total: req_total}
---
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {name: shop}
spec:
  slos: [{name: errors}]
  stable: v1
  canary: v2
  route: {file: {path: w.json}}
  steps: [{weight: 10, hold: 1m}, {weight: 35, hold: 1m}, {weight: 60, hold: 1m}, {weight: 100}]
  analysis:
    interval: 30s
    baseline: false
    failureLimit: 1
    noData: {hold: true, rollbackAfter: 5m}
  guardrails: {maxStep: 25, minInterval: 90s, maxShiftsPerHour: 4}
---
apiVersion: trimtab.dev/v1alpha1
kind: Balance
metadata: {name: zones}
spec:
  slos: [{name: errors}]
  backends: {a: 34, b: 33, c: 33}
  route: {file: {path: z.json}}
  drain: {degraded: 50, unavailable: 100}
  restoreAfter: 2m
  guardrails: {maxStep: 10, minInterval: 90s, maxDrain: 50, maxShiftsPerHour: 4}
""",
    "properties.yaml",
)
ROLLOUT_TARGET, BALANCE_TARGET = targets(CONFIG)
ROLLOUT: Rollout = CONFIG.rollouts["shop"]
BALANCE: Balance = CONFIG.balances["zones"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(seconds=30)
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None  # fsync-heavy: memory when we can
HOUR = timedelta(hours=1)
EVENTS = 10_000.0

# Error ratios against a 99.9 % objective: burn 0.1 (HEALTHY), 10 (DEGRADED), 200 (UNAVAILABLE).
RATIOS: dict[str, float | None] = {
    "healthy": 0.0001,
    "degraded": 0.01,
    "unavailable": 0.2,
    "nan": math.nan,
    "missing": None,
}
DOWN = "down"
LONGEST = 200  # cycles: 100 minutes, so maxShiftsPerHour holds and then lets go
# Mostly healthy, so rollouts get far and drained backends come back.
LEVEL = st.sampled_from(["healthy"] * 6 + ["degraded", "unavailable", "nan", "missing"])


def answers(backends: Sequence[str]) -> st.SearchStrategy[list[str | dict[str, str]]]:
    """A health sequence: per cycle, the source down or a level per backend, in runs."""
    healthy = st.just(dict.fromkeys(backends, "healthy"))
    mixed = st.fixed_dictionaries(dict.fromkeys(backends, LEVEL))
    cycle = st.one_of(healthy, healthy, mixed, mixed, mixed, st.just(DOWN))
    runs = st.lists(st.tuples(cycle, st.integers(1, 20)), min_size=1, max_size=25)
    return runs.map(lambda rs: [answer for answer, n in rs for _ in range(n)][:LONGEST])


@dataclass
class Run:
    """One sequence driven through the reconciler, and what was seen along the way."""

    target: Target
    spec: Rollout | Balance
    adapter: FakeTrafficAdapter
    states: StateStore
    log: DecisionLog
    times: list[datetime] = field(default_factory=list)
    calls_at: list[tuple[datetime, dict[str, int]]] = field(default_factory=list)
    applied_at: list[tuple[datetime, dict[str, int]]] = field(default_factory=list)
    drained_at: list[tuple[datetime, dict[str, int]]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


def drive(
    directory: Path,
    target: Target,
    spec: Rollout | Balance,
    initial: Mapping[str, int],
    sequence: Sequence[str | dict[str, str]],
    *,
    apply_lag: int,
    dry_run: bool,
) -> Run:
    current: dict[str, str | dict[str, str]] = {"answer": DOWN}

    def sample(request: SeriesRequest, backend: str, window: float, at: datetime) -> Sampled:
        answer = current["answer"]
        assert isinstance(answer, dict)
        ratio = RATIOS[answer[backend]]
        return None if ratio is None else WindowMeasurement(ratio, EVENTS)

    source = ListMetricSource(sample, backends=target.backends)
    adapter = FakeTrafficAdapter(initial, apply_lag=apply_lag)
    run = Run(
        target,
        spec,
        adapter,
        StateStore(directory / "state"),
        DecisionLog(directory / "decisions.jsonl"),
    )
    reconciler = Reconciler(
        ReconcilerConfig(
            source=source,
            adapters={target.key: adapter},
            states=run.states,
            log=run.log,
            specs={target.key: spec.spec},
            dry_run=dry_run,
            sleep=lambda _: None,
        )
    )
    run.applied_at.append((T0 - STEP, dict(initial)))
    for number, answer in enumerate(sequence):
        now = T0 + number * STEP
        current["answer"] = answer
        source.down = answer == DOWN
        calls, applied = len(adapter.calls), len(adapter.applied)
        reconciler.cycle([target], now)
        run.times.append(now)
        run.calls_at += [(now, c) for c in adapter.calls[calls:]]
        run.applied_at += [(now, a) for a in adapter.applied[applied:]]
        run.drained_at.append((now, dict(run.states.load(target.key).drained)))
    run.decisions = list(run.log.records())
    return run


# ------------------------------------------------------------------------------ the checks


def check_weights_are_percentages(run: Run) -> None:
    """(a)"""
    seen = [w for _, w in run.calls_at] + [w for _, w in run.applied_at]
    for d in run.decisions:
        seen += [d.weights.current, d.weights.desired]
        if d.weights.applied is not None:
            seen.append(d.weights.applied)
    for weights in seen:
        if not weights:
            continue  # a hold before the weights could be read has none
        assert set(weights) == set(run.target.backends), weights
        assert sum(weights.values()) == 100, weights
        assert all(0 <= w <= 100 for w in weights.values()), weights


def check_guardrails(moves: Sequence[tuple[datetime, int]], spec: Rollout | Balance) -> None:
    """(b) over ``(when, points gained by a backend at risk)``, one per move toward risk."""
    g = spec.spec.guardrails
    for number, (when, gain) in enumerate(moves):
        assert gain <= g.max_step, f"a move of {gain} points at {when}; maxStep {g.max_step}"
        if number > 0:
            since = (when - moves[number - 1][0]).total_seconds()
            assert since >= g.min_interval, f"moves toward risk {since:g}s apart at {when}"
        within = [t for t, _ in moves if when - HOUR < t <= when]
        assert len(within) <= g.max_shifts_per_hour, f"{len(within)} moves in the hour to {when}"


def rollout_moves(history: Sequence[tuple[datetime, Mapping[str, int]]]) -> list[tuple]:
    """Moves toward risk in a sequence of requested weights: each raise of the canary."""
    canary = ROLLOUT.spec.canary
    moves = []
    before = 0
    for when, weights in history:
        if weights[canary] > before:
            moves.append((when, weights[canary] - before))
        before = weights[canary]
    return moves


def check_rollout(run: Run, dry_run: bool) -> None:
    canary = ROLLOUT.spec.canary
    check_weights_are_percentages(run)
    # (b) from what the adapter was asked to do (with times), and from the decisions, which
    # hold the same moves in a dry run too.
    check_guardrails(rollout_moves(run.calls_at), ROLLOUT)
    check_guardrails(
        rollout_moves([(d.at, d.weights.desired) for d in run.decisions if d.weights.desired]),
        ROLLOUT,
    )
    for d in run.decisions:
        if d.weights.desired and d.weights.current:
            gain = d.weights.desired[canary] - d.weights.current[canary]
            assert gain <= ROLLOUT.spec.guardrails.max_step, d
    for (_, before), (when, after) in zip(run.applied_at, run.applied_at[1:], strict=False):
        gain = after[canary] - before[canary]
        assert gain <= ROLLOUT.spec.guardrails.max_step, f"served +{gain} at {when}"
    # (c) once rolled back, the canary stays at 0
    rollback = next((d.at for d in run.decisions if d.action == "rollback"), None)
    if rollback is not None:
        assert run.states.load(run.target.key).phase == "RolledBack"
        assert all(d.weights.desired[canary] == 0 for d in run.decisions if d.at >= rollback)
        # In the rollback's own cycle a pending advance may be re-applied (verified) before
        # the decision; the cycle's last call is the rollback, and nothing raises it after.
        if not dry_run:
            assert [w for t, w in run.calls_at if t == rollback][-1][canary] == 0
        assert all(w[canary] == 0 for t, w in run.calls_at if t > rollback)
        assert all(w[canary] == 0 for t, w in run.applied_at if t > rollback)
        if not dry_run and run.times[-1] > rollback:
            # Verified by a cycle after the rollback (the lag is at most two reads).
            settled = run.states.load(run.target.key)
            if settled.intent is None:
                assert run.adapter.weights[canary] == 0
    if run.states.load(run.target.key).phase == "Promoted" and not dry_run:
        assert any(w[canary] == 100 for _, w in run.calls_at)


def check_balance(run: Run, dry_run: bool) -> None:
    check_weights_are_percentages(run)
    nominal = BALANCE.spec.backends
    limit = BALANCE.spec.guardrails.max_step
    # (b) A move toward risk gives a drained backend weight back: its drain shrinks (the
    # state says which backends are drained, and it survives restarts like the weights).
    restores: dict[datetime, list[str]] = {}
    before: Mapping[str, int] = {}
    for when, drained in run.drained_at:
        restored = [b for b in nominal if drained.get(b, 0) < before.get(b, 0)]
        grown = [b for b in nominal if drained.get(b, 0) > before.get(b, 0)]
        assert not (restored and grown), f"one cycle drained and restored at {when}"
        if restored:
            restores[when] = restored
        before = drained
    by_time = {d.at: d for d in run.decisions if d.action == "restore"}
    assert sorted(by_time) == sorted(restores), "a restore without its decision, or the reverse"
    moves = []
    for when, restored in sorted(restores.items()):
        w = by_time[when].weights
        gain = max(w.desired[b] - w.current[b] for b in restored)
        if gain > 0:  # every backend restored at once leaves the weights as they were: no risk
            moves.append((when, gain))
    check_guardrails(moves, BALANCE)
    if dry_run:
        return
    # What the adapter was asked to do: the backends a restore gives weight back to gain at
    # most maxStep over the weights asked for before; other calls give no drained backend more.
    previous = dict(nominal)
    for when, weights in run.calls_at:
        for b in restores.get(when, ()):
            assert weights[b] - previous[b] <= limit, f"{b} +{weights[b] - previous[b]} at {when}"
        previous = dict(weights)


def check_common(run: Run, dry_run: bool, *, in_hypothesis: bool = True) -> None:
    if in_hypothesis:  # coverage statistics (pytest --hypothesis-show-statistics)
        for action in sorted({str(d.action) for d in run.decisions}):
            event(f"action {action}")
        for name in sorted({g["name"] for d in run.decisions for g in d.guardrails}):
            event(f"guardrail {name}")
        event(f"phase {run.states.load(run.target.key).phase}")
    if dry_run:  # (d)
        assert run.adapter.calls == []
        assert run.decisions
        assert all(d.dry_run for d in run.decisions)
    else:
        assert not any(d.dry_run for d in run.decisions)
    assert run.log.verify().ok  # (e)


# ------------------------------------------------------------------------------ the tests

ALL_HEALTHY: list[str | dict[str, str]] = [{"v1": "healthy", "v2": "healthy"}] * LONGEST
ZONE_OUTAGE: list[str | dict[str, str]] = [
    *[{"a": "unavailable", "b": "degraded", "c": "healthy"}] * 4,
    *[{"a": "healthy", "b": "healthy", "c": "healthy"}] * 60,
]


def test_the_examples_exercise_every_guardrail() -> None:
    """The properties are only as good as the moves they see: a healthy rollout is promoted
    through maxStep and maxShiftsPerHour holds, and a zone outage is restored in small steps."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        run = drive(Path(d), ROLLOUT_TARGET, ROLLOUT, {"v1": 100, "v2": 0}, ALL_HEALTHY,
                    apply_lag=0, dry_run=False)  # fmt: skip
        assert [w["v2"] for _, w in run.applied_at] == [0, 10, 35, 60, 85, 100]
        assert [(t - T0).total_seconds() for t, _ in run.calls_at][-1] >= 3600
        names = {g["name"] for d in run.decisions for g in d.guardrails}
        assert {"maxStep", "maxShiftsPerHour"} <= names
        assert run.states.load(ROLLOUT_TARGET.key).phase == "Promoted"
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        run = drive(Path(d), BALANCE_TARGET, BALANCE, dict(BALANCE.spec.backends), ZONE_OUTAGE,
                    apply_lag=0, dry_run=False)  # fmt: skip
        restores = [d for d in run.decisions if d.action == "restore"]
        assert len(restores) >= 3
        assert all(g["name"] != "maxStep" for d in restores for g in d.guardrails)
        assert "minInterval" in {g["name"] for d in run.decisions for g in d.guardrails}
        gains = [max(d.weights.desired[b] - d.weights.current[b] for b in "ab") for d in restores]
        assert max(gains) == BALANCE.spec.guardrails.max_step
        assert run.adapter.weights == dict(BALANCE.spec.backends)
        check_balance(run, dry_run=False)


SETTINGS = settings(
    max_examples=100,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(
    sequence=answers(ROLLOUT_TARGET.backends),
    apply_lag=st.integers(0, 2),
    dry_run=st.booleans(),
)
@example(sequence=ALL_HEALTHY, apply_lag=1, dry_run=False)
@example(sequence=ALL_HEALTHY, apply_lag=0, dry_run=True)
def test_rollout_properties(
    sequence: list[str | dict[str, str]], apply_lag: int, dry_run: bool
) -> None:
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        run = drive(
            Path(d),
            ROLLOUT_TARGET,
            ROLLOUT,
            {"v1": 100, "v2": 0},
            sequence,
            apply_lag=apply_lag,
            dry_run=dry_run,
        )
        check_rollout(run, dry_run)
        check_common(run, dry_run)


@SETTINGS
@given(
    sequence=answers(BALANCE_TARGET.backends),
    apply_lag=st.integers(0, 2),
    dry_run=st.booleans(),
)
@example(sequence=ZONE_OUTAGE, apply_lag=1, dry_run=False)
@example(sequence=ZONE_OUTAGE, apply_lag=0, dry_run=True)
def test_balance_properties(
    sequence: list[str | dict[str, str]], apply_lag: int, dry_run: bool
) -> None:
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        run = drive(
            Path(d),
            BALANCE_TARGET,
            BALANCE,
            dict(BALANCE.spec.backends),
            sequence,
            apply_lag=apply_lag,
            dry_run=dry_run,
        )
        check_balance(run, dry_run)
        check_common(run, dry_run)


def test_maxdrain_with_every_backend_drained() -> None:
    """b UNAVAILABLE (drained 100%), then a and c UNAVAILABLE while b waits out restoreAfter:
    maxDrain bounds the drain and the cycle records it (this once raised: the maxDrain note
    apportioned a total share of 0)."""
    sequence: list[str | dict[str, str]] = [
        {"a": "healthy", "b": "unavailable", "c": "healthy"},
        {"a": "unavailable", "b": "healthy", "c": "unavailable"},
    ]
    with tempfile.TemporaryDirectory(dir=SCRATCH) as d:
        run = drive(Path(d), BALANCE_TARGET, BALANCE, dict(BALANCE.spec.backends), sequence,
                    apply_lag=0, dry_run=False)  # fmt: skip
        check_balance(run, dry_run=False)
        check_common(run, dry_run=False, in_hypothesis=False)
        assert any(g["name"] == "maxDrain" for d in run.decisions for g in d.guardrails)
