"""The reconcile cycle end to end on the in-library fakes, a real state dir and decision log."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from trimtab.adapters.fake import FakeTrafficAdapter, ListMetricSource, Sampled
from trimtab.controller.decisions import DecisionLog
from trimtab.controller.reconcile import Reconciler, ReconcilerConfig, UnappliedOverride
from trimtab.controller.record import Decision
from trimtab.controller.state import Intent, StateConflict, StateStore
from trimtab.controller.targets import Target, targets
from trimtab.slo import load_text
from trimtab.slo.health import WindowMeasurement
from trimtab.slo.ports import SeriesRequest, Verification, Weights
from trimtab.slo.traffic import PermanentTrafficError, TransientTrafficError

SLO = """
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
"""
CONFIG = load_text(
    SLO
    + """
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {name: shop}
spec:
  slos: [{name: errors}]
  stable: v1
  canary: v2
  route: {file: {path: w.json}}
  steps: [{weight: 10, hold: 1m}, {weight: 50, hold: 1m}, {weight: 100}]
  analysis: {interval: 30s, baseline: false}
  guardrails: {maxStep: 50, minInterval: 1m, maxShiftsPerHour: 12}
""",
    "reconcile.yaml",
)
TARGET: Target = targets(CONFIG)[0]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
HEALTHY = 0.0001  # error ratio: burn 0.1
BROKEN = 0.2  # burn 200: UNAVAILABLE


@dataclass
class Rig:
    adapter: FakeTrafficAdapter
    source: ListMetricSource
    states: StateStore
    log: DecisionLog
    dry_run: bool = False

    def reconciler(self) -> Reconciler:
        return Reconciler(
            ReconcilerConfig(
                source=self.source,
                adapters={TARGET.key: self.adapter},
                states=self.states,
                log=self.log,
                specs={TARGET.key: CONFIG.rollouts["shop"].spec},
                dry_run=self.dry_run,
                sleep=lambda _: None,
            )
        )

    def run(self, minutes: float) -> str:
        return str(self.reconciler().cycle([TARGET], T0 + timedelta(minutes=minutes))[0].action)


def rig(tmp_path: Path, canary_ratio: float = HEALTHY, **adapter: object) -> Rig:
    fake = FakeTrafficAdapter({"v1": 100, "v2": 0}, **adapter)  # type: ignore[arg-type]
    source = ListMetricSource.constant({"v1": HEALTHY, "v2": canary_ratio})
    return Rig(
        fake, source, StateStore(tmp_path / "state"), DecisionLog(tmp_path / "decisions.jsonl")
    )


def drive(r: Rig, until: float, step: float = 0.5) -> Iterator[tuple[float, str]]:
    minute = 0.0
    while minute <= until:
        yield minute, r.run(minute)
        minute += step


def test_a_healthy_canary_is_promoted_step_by_step(tmp_path: Path) -> None:
    r = rig(tmp_path)
    actions = [action for _, action in drive(r, 6)]
    assert actions.count("advance") == 2
    assert actions.count("promote") == 1
    assert r.adapter.applied == [
        {"v1": 100, "v2": 0},
        {"v1": 90, "v2": 10},
        {"v1": 50, "v2": 50},
        {"v1": 0, "v2": 100},
    ]
    assert r.states.load(TARGET.key).phase == "Promoted"
    assert r.log.verify().ok


def test_an_unavailable_canary_is_rolled_back_in_one_cycle(tmp_path: Path) -> None:
    r = rig(tmp_path)
    assert r.run(0) == "advance"
    r.source = ListMetricSource.constant({"v1": HEALTHY, "v2": BROKEN})
    assert r.run(0.5) == "rollback"
    assert r.adapter.weights == {"v1": 100, "v2": 0}
    assert r.run(1) == "none"  # stays rolled back
    rollback = next(d for d in r.log.records() if d.action == "rollback")
    assert rollback.health["v2"]["errors"] == "UNAVAILABLE"
    assert any(reason.get("threshold") == 14.4 for reason in rollback.reasons)


def test_drift_holds_and_never_fights_a_person(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.run(0)
    r.adapter.drift({"v1": 70, "v2": 30})
    calls = len(r.adapter.calls)
    assert r.run(2) == "hold"
    assert r.run(3) == "hold"
    assert len(r.adapter.calls) == calls
    assert "drift" in str(r.log.last(TARGET.key).reasons)  # type: ignore[union-attr]
    assert r.log.last(TARGET.key).cause == "drift"  # type: ignore[union-attr]


def test_dry_run_never_calls_set_weights_and_records_dry_run(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.dry_run = True
    actions = [action for _, action in drive(r, 6)]
    assert "promote" in actions
    assert r.adapter.calls == []
    records = list(r.log.records())
    assert records
    assert all(d.dry_run for d in records)


def test_measuring_waits_until_the_proxy_applied_the_weights(tmp_path: Path) -> None:
    r = rig(tmp_path, apply_lag=3)
    assert r.run(0) == "advance"
    assert r.run(0.5) == "hold"
    assert "waiting for the proxy" in str(r.log.last(TARGET.key).reasons)  # type: ignore[union-attr]
    assert r.log.last(TARGET.key).cause == "verify-pending"  # type: ignore[union-attr]
    for minute in (1, 1.5, 2, 2.5, 3):
        r.run(minute)
    assert r.states.load(TARGET.key).intent is None
    assert r.adapter.weights["v2"] >= 10


def test_a_refused_change_leaves_traffic_and_state_as_they_were(tmp_path: Path) -> None:
    r = rig(tmp_path, fail=lambda n: PermanentTrafficError("config rejected"))
    assert r.run(0) == "hold"
    assert r.adapter.weights == {"v1": 100, "v2": 0}
    state = r.states.load(TARGET.key)
    assert state.intent is None
    assert state.step == -1
    assert "refused" in str(r.log.last(TARGET.key).reasons)  # type: ignore[union-attr]
    assert r.log.last(TARGET.key).cause == "adapter-error"  # type: ignore[union-attr]


def test_a_metrics_outage_holds_the_weights(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.run(0)
    r.source.down = "connection refused"
    assert r.run(2) == "hold"
    assert r.run(4) == "hold"
    assert r.adapter.weights == {"v1": 90, "v2": 10}
    last = r.log.last(TARGET.key)
    assert last is not None
    assert last.health["v2"]["errors"] == "UNKNOWN"
    assert last.cause == "no-data"


def test_a_restart_with_a_pending_intent_applies_it_once_and_never_steps_twice(
    tmp_path: Path,
) -> None:
    r = rig(tmp_path, apply_lag=100)
    assert r.run(0) == "advance"  # intent saved; the proxy has not applied it
    restarted = Rig(
        FakeTrafficAdapter({"v1": 100, "v2": 0}),  # a fresh proxy that lost the change
        r.source,
        StateStore(tmp_path / "state"),
        DecisionLog(tmp_path / "decisions.jsonl"),
    )
    restarted.run(0.5)
    assert restarted.adapter.calls == [{"v1": 90, "v2": 10}]
    assert restarted.states.load(TARGET.key).step == 0
    assert restarted.log.verify().ok


@pytest.mark.parametrize("minutes", [0.5, 2])
def test_repeated_holds_are_recorded_once(tmp_path: Path, minutes: float) -> None:
    r = rig(tmp_path)
    r.run(0)
    r.source.down = True
    for m in range(2, 8):
        r.run(m * minutes)
    holds = [d for d in r.log.records() if d.action == "hold"]
    assert len(holds) == 1


def test_a_transient_adapter_error_is_retried(tmp_path: Path) -> None:
    r = rig(tmp_path, fail={1: TransientTrafficError("socket busy")}.get)
    assert r.run(0) == "advance"
    assert r.adapter.calls == [{"v1": 90, "v2": 10}, {"v1": 90, "v2": 10}]
    assert r.adapter.weights == {"v1": 90, "v2": 10}


def test_windows_clip_to_the_time_since_the_last_shift(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.run(0)  # shift to 10 %
    r.run(1.25)  # 75 s after the shift: whole 30 s intervals → 60 s
    requests, _ = r.source.history[-1]
    [request] = requests
    assert request.windows == (60.0,)  # 1m, 5m and 30m all measured over the last 60 s
    assert dict(request.clipped) == {300.0: 60.0, 1800.0: 60.0}
    for minute in range(2, 30):
        r.run(minute)
    assert r.states.load(TARGET.key).phase == "Promoted"
    requests, _ = r.source.history[-1]
    assert requests[0].clipped == ()  # only a progressing rollout clips


def test_a_clipped_window_stands_for_the_slo_window_in_the_judgement() -> None:
    from trimtab.slo.health import WindowMeasurement
    from trimtab.slo.ports import SeriesRequest, SeriesResult

    slo = CONFIG.slos["errors"]
    request = SeriesRequest.of("Rollout/shop", slo, {}, (60.0, 300.0, 1800.0), clip_to=90.0)
    assert request.windows == (60.0, 90.0)
    measured = {60.0: WindowMeasurement(0.2, 100.0), 90.0: WindowMeasurement(0.2, 150.0)}
    result = SeriesResult(request, {"v2": measured})
    assert set(result.judged("v2")) == {60.0, 90.0, 300.0, 1800.0}
    assert result.health("v2").level.name == "UNAVAILABLE"


def test_targets_are_scheduled_by_their_own_interval() -> None:
    from trimtab.controller.targets import BALANCE_INTERVAL, Target, by_interval

    def target(name: str, interval: float | None) -> Target:
        kind = "Rollout" if interval else "Balance"
        return Target(kind, name, ("a", "b"), (), False, interval)

    chosen = [
        target("slow", 60.0),
        target("fast", 10.0),
        target("zones", None),
        target("also", 10.0),
    ]
    groups = by_interval(chosen)
    assert list(groups) == sorted([10.0, 60.0, BALANCE_INTERVAL])
    assert [t.name for t in groups[10.0]] == ["fast", "also"]
    assert [t.name for t in groups[BALANCE_INTERVAL]] == ["zones"]


def test_an_intent_whose_decision_a_crash_kept_out_of_the_log_is_recorded_then_applied_once(
    tmp_path: Path,
) -> None:
    """A crash after saving the intent (with its decision) and before recording the decision:
    the next process records that decision, then applies it once — one step, one record."""
    r = rig(tmp_path)
    half = {"v1": 50, "v2": 50}
    minute = 0.0
    while r.adapter.weights != half:  # to 10 %, the hold, then to 50 %
        r.run(minute)
        minute += 0.5
        assert minute < 10
    (advance,) = [d for d in r.log.records() if d.weights.desired == half]
    # Rewind to the moment between saving the intent and recording it: the log without its
    # last record, the route still at 10 %.
    lines = r.log.path.read_text().splitlines(keepends=True)
    assert advance.id in lines[-1]
    r.log.path.write_text("".join(lines[:-1]))
    r.log.head_path.unlink()
    r.adapter.drift({"v1": 90, "v2": 10})
    state = r.states.load(TARGET.key)
    assert state.intent is None
    r.states.save(TARGET.key, state.with_(applied={"v1": 90, "v2": 10}, intent=None))
    pending = r.states.load(TARGET.key)
    intent = Intent(
        advance.weights.desired, advance.id, "advance", advance.at, record=advance.to_json()
    )
    r.states.save(TARGET.key, pending.with_(intent=intent))
    r.reconciler().cycle([TARGET], T0 + timedelta(minutes=minute))  # a new process
    recorded = [
        d for d in r.log.records() if d.weights.desired == half and d.action.value == "advance"
    ]
    assert [d.id for d in recorded] == [advance.id]
    assert r.adapter.weights == half
    assert r.log.verify().ok, r.log.verify().findings


def test_the_last_decision_follows_another_writer(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.run(0)
    mine, theirs = r.log, DecisionLog(tmp_path / "decisions.jsonl")
    first = mine.last(TARGET.key)
    assert first is not None
    r.reconciler().override(TARGET, "pause", "alice", T0 + timedelta(minutes=1))
    assert mine.last(TARGET.key) == theirs.last(TARGET.key)
    assert mine.last(TARGET.key).actor == "alice"  # type: ignore[union-attr]


class Meanwhile:
    """The route as a person's command sees it: its ``when`` call (``get_weights`` or
    ``verify``) first runs ``meanwhile`` (what a controller does in the same moment) while
    ``times`` are left; ``moves`` says whether the command may set weights (no: it stops
    there, as if killed)."""

    def __init__(
        self,
        route: FakeTrafficAdapter,
        meanwhile: Callable[[], object],
        times: int,
        *,
        moves: bool = True,
        when: str = "get_weights",
    ) -> None:
        self.route, self.meanwhile, self.times, self.moves = route, meanwhile, times, moves
        self.when = when

    def _now(self, call: str) -> None:
        if call == self.when and self.times > 0:
            self.times -= 1
            self.meanwhile()

    def get_weights(self) -> Weights:
        self._now("get_weights")
        return self.route.get_weights()

    def set_weights(self, weights: Weights) -> None:
        if not self.moves:
            raise PermanentTrafficError("the command stopped before moving the route")
        self.route.set_weights(weights)

    def verify(self, weights: Weights) -> Verification:
        self._now("verify")
        return self.route.verify(weights)


def commanding(r: Rig, route: Meanwhile, log: DecisionLog | None = None) -> Reconciler:
    """The reconciler of a ``trimtab pause|abort|…`` process, on ``route``."""
    config = r.reconciler().config
    return Reconciler(replace(config, adapters={TARGET.key: route}, log=log or config.log))


def _a_cycle_saves(states: StateStore) -> None:
    """What a controller's cycle does to the target's state: saves it (its version moves on)."""
    states.save(TARGET.key, states.load(TARGET.key))


def test_a_command_that_meets_a_cycles_save_decides_again_and_is_recorded_once(
    tmp_path: Path,
) -> None:
    r = rig(tmp_path)
    r.run(0)
    cycle = StateStore(tmp_path / "state")  # the controller's, in another process
    route = Meanwhile(r.adapter, lambda: _a_cycle_saves(cycle), times=1)
    decision = commanding(r, route).override(TARGET, "pause", "alice", T0 + timedelta(minutes=1))
    assert route.times == 0  # the cycle did save between the command's read and its save
    assert r.states.load(TARGET.key).phase == "Paused"
    pauses = [d for d in r.log.records() if d.action.value == "pause"]
    assert [d.id for d in pauses] == [decision.id]
    assert r.log.verify().ok


def test_a_command_that_keeps_meeting_saves_fails_and_records_nothing(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.run(0)
    before = list(r.log.records())
    cycle = StateStore(tmp_path / "state")
    route = Meanwhile(r.adapter, lambda: _a_cycle_saves(cycle), times=99)
    with pytest.raises(StateConflict):
        commanding(r, route).override(TARGET, "abort", "alice", T0 + timedelta(minutes=1))
    assert list(r.log.records()) == before
    assert r.states.load(TARGET.key).phase == "Progressing"
    assert r.adapter.weights == {"v1": 90, "v2": 10}


def test_a_command_whose_move_a_cycle_verified_meanwhile_succeeds(tmp_path: Path) -> None:
    """A cycle that reads the command's intent while the proxy applies it verifies it and
    saves the state first: the command's own verification then meets that save. The abort
    happened and is recorded once; the command says so instead of failing."""
    r = rig(tmp_path)
    r.run(0)
    controller = StateStore(tmp_path / "state")

    def a_cycle_verifies() -> None:
        state = controller.load(TARGET.key)
        assert state.intent is not None
        controller.save(TARGET.key, state.with_(applied=dict(state.intent.weights), intent=None))

    route = Meanwhile(r.adapter, a_cycle_verifies, times=1, when="verify")
    decision = commanding(r, route).override(TARGET, "abort", "alice", T0 + timedelta(minutes=1))
    assert route.times == 0
    assert r.adapter.weights == {"v1": 100, "v2": 0}
    state = r.states.load(TARGET.key)
    assert (state.phase, state.intent, state.applied) == ("RolledBack", None, r.adapter.weights)
    assert [d.id for d in r.log.records() if d.action.value == "abort"] == [decision.id]


class Racing(DecisionLog):
    """The log as a person's command writes to it: before the command's append, ``meanwhile``
    runs once (a controller's cycle that reads the command's intent first)."""

    def __init__(self, path: Path, meanwhile: Callable[[], object]) -> None:
        super().__init__(path)
        self.meanwhile: Callable[[], object] | None = meanwhile

    def append_missing(self, decisions: Sequence[Decision]) -> list[Decision]:
        if self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            run()
        return super().append_missing(decisions)


def test_a_commands_decision_that_a_cycle_recorded_first_is_in_the_log_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    r = rig(tmp_path)
    controller = r.reconciler()
    controller.cycle([TARGET], T0)  # to 10 %
    later = T0 + timedelta(minutes=1)
    slow = Racing(r.log.path, lambda: controller.cycle([TARGET], later))
    route = Meanwhile(r.adapter, lambda: None, times=0)
    decision = commanding(r, route, slow).override(TARGET, "abort", "alice", later)
    assert slow.meanwhile is None  # the cycle ran between the command's save and its append
    assert "recorded decision" in caplog.text  # by the cycle, from the intent
    aborts = [d for d in r.log.records() if d.action.value == "abort"]
    assert [(d.id, d.hash) for d in aborts] == [(decision.id, decision.hash)]
    assert r.adapter.weights == {"v1": 100, "v2": 0}
    assert r.log.verify().ok


def test_a_commands_move_that_it_did_not_record_is_recorded_by_the_controller_first(
    tmp_path: Path,
) -> None:
    """A person's ``abort`` stopped after saving its intent, before recording it: the running
    controller, which has checked this target's intents before, records that decision and
    then rolls back — never a move the log does not hold."""
    r = rig(tmp_path, apply_lag=1)
    controller = r.reconciler()  # one process for the whole test
    minute = 0.0
    while r.states.load(TARGET.key).intent is None:  # to 10 %, waiting for the proxy
        controller.cycle([TARGET], T0 + timedelta(minutes=minute))
        minute += 0.5
    while r.states.load(TARGET.key).intent is not None:  # verified, in a later cycle
        controller.cycle([TARGET], T0 + timedelta(minutes=minute))
        minute += 0.5
    assert r.adapter.weights == {"v1": 90, "v2": 10}
    stopped = Meanwhile(r.adapter, lambda: None, times=0, moves=False)
    elsewhere = DecisionLog(tmp_path / "lost.jsonl")  # the record the stop kept from the log
    with pytest.raises(UnappliedOverride) as refused:
        commanding(r, stopped, elsewhere).override(TARGET, "abort", "alice", T0)
    (lost,) = list(elsewhere.records())
    assert lost.id in str(refused.value)
    assert "applies it on its next cycle" in str(refused.value)
    assert r.states.load(TARGET.key).intent is not None
    assert r.log.find(lost.id) is None

    while r.adapter.weights != {"v1": 100, "v2": 0}:
        assert minute < 10
        controller.cycle([TARGET], T0 + timedelta(minutes=minute))
        minute += 0.5
    recorded = r.log.find(lost.id)
    assert recorded is not None
    assert recorded.actor == "alice"
    assert [d.id for d in r.log.records() if d.action.value == "abort"] == [lost.id]
    assert r.log.verify().ok


def test_a_hold_that_only_counts_time_is_recorded_once_and_writes_no_state(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.run(0)  # advance to 10 %
    r.run(0.5)  # verified: the hold starts
    saved = r.states.path(TARGET.key).stat().st_mtime_ns
    for minute in (0.6, 0.7, 0.8, 0.9):  # healthy, inside the 1m hold: "healthy for …" moves on
        assert r.run(minute) == "hold"
    holds = [d for d in r.log.records() if d.cause == "hold-in-progress"]
    assert len(holds) == 1, [d.reasons for d in holds]
    assert r.states.path(TARGET.key).stat().st_mtime_ns == saved


BASELINE_CONFIG = load_text(
    SLO
    + """
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {name: shop}
spec:
  slos: [{name: errors}]
  stable: v1
  canary: v2
  route: {file: {path: w.json}}
  steps: [{weight: 10, hold: 30m}, {weight: 100}]
  analysis: {interval: 30s, baseline: true, stepTimeout: 2h}
  guardrails: {maxStep: 100, minInterval: 1m, maxShiftsPerHour: 12}
""",
    "baseline.yaml",
)
SUBTLE = 0.004  # burn 4: under every health threshold; only the baseline test can see it


def _counters(fault_at: float) -> ListMetricSource:
    """Requests at 10/s on the canary and 90/s on the stable; errors at 0.1 %, and on the
    canary at :data:`SUBTLE` from minute ``fault_at``: each window's exact expected counts."""

    def bad(backend: str, start: float, end: float) -> float:
        rps = 10.0 if backend == "v2" else 90.0
        if backend == "v1" or end <= fault_at * 60:
            return rps * (end - start) * 0.001
        split = max(start, fault_at * 60)
        return rps * ((split - start) * 0.001 + (end - split) * SUBTLE)

    def sample(request: SeriesRequest, backend: str, window: float, at: datetime) -> Sampled:
        end = (at - T0).total_seconds()
        events = (10.0 if backend == "v2" else 90.0) * window
        return WindowMeasurement(bad(backend, end - window, end) / events, events)

    return ListMetricSource(sample, backends=("v1", "v2"))


def _baseline_rig(tmp_path: Path, fault_at: float) -> Rig:
    r = rig(tmp_path)
    r.source = _counters(fault_at)
    return r


def _baseline_reconciler(r: Rig) -> Reconciler:
    """A new reconciler — a new process — on ``r``'s source, adapter, state and log."""
    return Reconciler(
        ReconcilerConfig(
            source=r.source,
            adapters={TARGET.key: r.adapter},
            states=r.states,
            log=r.log,
            specs={TARGET.key: BASELINE_CONFIG.rollouts["shop"].spec},
            sleep=lambda _: None,
        )
    )


def _until_rollback(r: Rig, reconciler: Callable[[], Reconciler], minutes: float) -> float | None:
    minute = 0.0
    while minute <= minutes:
        decision = reconciler().cycle([TARGET], T0 + timedelta(minutes=minute))[0]
        if decision.action == "rollback":
            return minute
        minute += 0.5
    return None


def test_the_baseline_test_finds_a_canary_that_turns_subtly_worse_late_in_a_step(
    tmp_path: Path,
) -> None:
    r = _baseline_rig(tmp_path, fault_at=12)
    reconciler = _baseline_reconciler(r)
    rolled = _until_rollback(r, lambda: reconciler, 30)
    assert rolled is not None
    assert rolled > 12
    rollback = r.log.last(TARGET.key)
    assert rollback is not None
    assert rollback.cause == "baseline-regression"
    assert "change points" in str(rollback.reasons)
    assert r.adapter.weights == {"v1": 100, "v2": 0}


def test_a_restarted_controller_goes_on_with_the_saved_baseline_test(tmp_path: Path) -> None:
    # A new process every cycle: the baseline test it carries in memory is lost each time and
    # only the memo saved with the state survives. It still finds the fault — counting the data
    # since the saved memo once, not again from the step's start.
    r = _baseline_rig(tmp_path / "restarted", fault_at=12)
    once = _baseline_rig(tmp_path / "one-process", fault_at=12)
    reconciler = _baseline_reconciler(once)
    fresh = _until_rollback(r, lambda: _baseline_reconciler(r), 30)
    kept = _until_rollback(once, lambda: reconciler, 30)
    assert fresh is not None
    assert kept is not None
    assert 12 < kept <= fresh
    memo = r.states.load(TARGET.key).baseline
    assert memo is not None
    assert memo.track.started > 0


def test_carrying_the_baseline_test_writes_no_state_on_a_hold(tmp_path: Path) -> None:
    r = _baseline_rig(tmp_path, fault_at=10**6)  # healthy throughout
    reconciler = _baseline_reconciler(r)
    reconciler.cycle([TARGET], T0)  # advance to 10 %
    reconciler.cycle([TARGET], T0 + timedelta(seconds=30))  # verified: the hold starts
    version = r.states.load(TARGET.key).version
    for minute in (1, 1.5, 2, 2.5):
        assert reconciler.cycle([TARGET], T0 + timedelta(minutes=minute))[0].action == "hold"
    assert r.states.load(TARGET.key).version == version


def test_a_cycle_leaves_nothing_for_the_collector(tmp_path: Path) -> None:
    """Cycles run with the collector paused (controller/heap.py): whatever reference cycles a
    cycle made would stay until it ends — at 10,000 moves, tens of MB."""
    reconciler = rig(tmp_path).reconciler()
    gc.collect()
    gc.disable()
    left: dict[str, int] = {}
    try:
        for minute in range(7):  # advance, holds, advance, holds, promote, none
            action = str(reconciler.cycle([TARGET], T0 + timedelta(minutes=minute))[0].action)
            left[action] = left.get(action, 0) + gc.collect()
    finally:
        gc.enable()
    assert set(left) >= {"advance", "hold", "promote"}
    assert left == dict.fromkeys(left, 0)
