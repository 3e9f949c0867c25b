"""A cycle over many targets records and acts in batches, keeping each target's promises: its
intent and its decision are durable before its weights move, and a log that cannot be written
moves nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from trimtab.adapters.fake import FakeTrafficAdapter, ListMetricSource
from trimtab.controller import reconcile
from trimtab.controller.decisions import DecisionLog
from trimtab.controller.reconcile import Reconciler, ReconcilerConfig
from trimtab.controller.record import Action, Decision, DecisionWeights
from trimtab.controller.state import Intent, StateStore
from trimtab.controller.targets import targets
from trimtab.slo import load_text
from trimtab.slo.ports import Measurements, MetricSource, SeriesRequest, Weights

NAMES = ("alpha", "beta", "gamma")
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
"""
    + "".join(
        f"""---
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  slos: [{{name: errors}}]
  stable: v1
  canary: v2
  route: {{file: {{path: {name}.json}}}}
  steps: [{{weight: 10, hold: 1m}}, {{weight: 100}}]
  analysis: {{interval: 30s, baseline: false}}
"""
        for name in NAMES
    ),
    "batch.yaml",
)
TARGETS = targets(CONFIG)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
START = {"v1": 100, "v2": 0}
FIRST_STEP = {"v1": 90, "v2": 10}


class Watching(FakeTrafficAdapter):
    """A proxy that, whenever it is asked to move, looks at what is on disk."""

    def __init__(self, directory: Path) -> None:
        super().__init__(START)
        self.directory = directory
        self.seen: list[tuple[set[str], set[str]]] = []

    def set_weights(self, weights: Weights) -> None:
        log = DecisionLog(self.directory / "decisions.jsonl")  # as a restarted process would
        states = StateStore(self.directory / "state")
        moves = {d.target for d in log.records() if d.action == Action.ADVANCE}
        intents = {t.key for t in TARGETS if states.load(t.key).intent is not None}
        self.seen.append((moves, intents))
        super().set_weights(weights)


def reconciler(
    directory: Path, adapters: dict[str, FakeTrafficAdapter], source: MetricSource | None = None
) -> Reconciler:
    return Reconciler(
        ReconcilerConfig(
            source=source or ListMetricSource.constant({"v1": 0.0001, "v2": 0.0001}),
            adapters=adapters,
            states=StateStore(directory / "state"),
            log=DecisionLog(directory / "decisions.jsonl"),
            specs={f"Rollout/{n}": r.spec for n, r in CONFIG.rollouts.items()},
            sleep=lambda _: None,
        )
    )


def test_every_intent_and_decision_is_durable_before_any_move(tmp_path: Path) -> None:
    adapters = {t.key: Watching(tmp_path) for t in TARGETS}
    decisions = reconciler(tmp_path, dict(adapters)).cycle(TARGETS, T0)
    assert [d.action for d in decisions] == [Action.ADVANCE] * len(TARGETS)
    everyone = {t.key for t in TARGETS}
    for adapter in adapters.values():
        assert adapter.seen == [(everyone, everyone)]
        assert adapter.weights == FIRST_STEP
    states = StateStore(tmp_path / "state")
    assert all(states.load(t.key).intent is None for t in TARGETS)  # verified, cleared
    assert DecisionLog(tmp_path / "decisions.jsonl").verify().ok


def test_a_log_that_cannot_be_appended_to_moves_nothing_and_keeps_no_intent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapters = {t.key: FakeTrafficAdapter(START) for t in TARGETS}
    run = reconciler(tmp_path, dict(adapters))

    def refuse(self: DecisionLog, decisions: Iterable[Decision]) -> list[Decision]:
        raise OSError("disk full")

    monkeypatch.setattr(DecisionLog, "append_all", refuse)
    with pytest.raises(OSError, match="disk full"):
        run.cycle(TARGETS, T0)
    assert all(a.calls == [] for a in adapters.values())
    states = StateStore(tmp_path / "state")
    assert all(states.load(t.key).intent is None for t in TARGETS)
    monkeypatch.undo()
    decisions = run.cycle(TARGETS, T0 + timedelta(seconds=30))  # the log is back: on it goes
    assert [d.action for d in decisions] == [Action.ADVANCE] * len(TARGETS)
    assert all(a.calls == [FIRST_STEP] for a in adapters.values())


def test_a_restart_records_every_lost_decision_in_one_pass_and_moves_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    states, log = StateStore(tmp_path / "state"), DecisionLog(tmp_path / "decisions.jsonl")
    lost = {}
    for target in TARGETS:  # a crash between saving the intents and recording the decisions
        decision = Decision(
            at=T0,
            target=target.key,
            kind="Rollout",
            action=Action.ADVANCE,
            weights=DecisionWeights(START, FIRST_STEP),
            dry_run=False,
            phase="Progressing",
        )
        intent = Intent(FIRST_STEP, decision.id, "advance", T0, record=decision.to_json())
        states.save(target.key, states.load(target.key).with_(applied=START, intent=intent))
        lost[target.key] = decision.id
    passes: list[set[str]] = []
    append_missing = DecisionLog.append_missing

    def counted(self: DecisionLog, decisions: Sequence[Decision]) -> list[Decision]:
        passes.append({d.id for d in decisions})
        return append_missing(self, decisions)

    monkeypatch.setattr(DecisionLog, "append_missing", counted)
    adapters = {t.key: FakeTrafficAdapter(START) for t in TARGETS}
    reconciler(tmp_path, dict(adapters)).cycle(TARGETS, T0 + timedelta(seconds=30))
    assert passes == [set(lost.values())]
    recorded = [d.id for d in log.records() if d.action == Action.ADVANCE]
    assert sorted(recorded) == sorted(lost.values())
    assert all(a.calls == [FIRST_STEP] for a in adapters.values())
    assert all(states.load(t.key).intent is None for t in TARGETS)
    assert log.verify().ok


def test_a_cycle_over_more_targets_than_a_batch_decides_records_and_moves_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "BATCH", 2)  # three targets: a batch of two, then one
    appends: list[list[str]] = []
    append_all = DecisionLog.append_all

    def counted(self: DecisionLog, decisions: Iterable[Decision]) -> list[Decision]:
        given = list(decisions)
        appends.append([d.target for d in given])
        return append_all(self, given)

    monkeypatch.setattr(DecisionLog, "append_all", counted)
    adapters = {t.key: Watching(tmp_path) for t in TARGETS}
    decisions = reconciler(tmp_path, dict(adapters)).cycle(TARGETS, T0)
    assert [d.target for d in decisions] == [t.key for t in TARGETS]
    assert [d.action for d in decisions] == [Action.ADVANCE] * len(TARGETS)
    assert appends == [[t.key for t in TARGETS[:2]], [TARGETS[2].key]]
    # Each batch's decisions and intents are on disk before its moves; the batch before it
    # has moved and verified (intents cleared).
    first, second = {t.key for t in TARGETS[:2]}, {TARGETS[2].key}
    for target in TARGETS:
        moved = adapters[target.key]
        expected = (first, first) if target in TARGETS[:2] else (first | second, second)
        assert moved.seen == [expected]
        assert moved.weights == FIRST_STEP
    assert DecisionLog(tmp_path / "decisions.jsonl").verify().ok


def test_a_streamed_cycle_hands_over_each_batch_once_it_is_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`trimtab run` takes the decisions as each batch lands and keeps none of them."""
    monkeypatch.setattr(reconcile, "BATCH", 2)
    adapters: dict[str, FakeTrafficAdapter] = {t.key: FakeTrafficAdapter(START) for t in TARGETS}
    stream = reconciler(tmp_path, adapters).stream(TARGETS, T0)
    first = next(stream)
    logged = [d.target for d in DecisionLog(tmp_path / "decisions.jsonl").records()]
    assert logged == [first.target, TARGETS[1].key]  # the first batch, recorded
    assert [adapters[t.key].weights for t in TARGETS] == [FIRST_STEP, FIRST_STEP, START]
    rest = list(stream)
    assert [d.target for d in [first, *rest]] == [t.key for t in TARGETS]
    assert adapters[TARGETS[2].key].weights == FIRST_STEP


class Meanwhile:
    """A metric source during whose query ``act`` runs: what happens while a cycle measures."""

    def __init__(self, act: Callable[[], object]) -> None:
        self.inner = ListMetricSource.constant({"v1": 0.0001, "v2": 0.0001})
        self.act = act

    def query(self, requests: Sequence[SeriesRequest], at: datetime) -> Measurements:
        self.act()
        return self.inner.query(requests, at)

    def query_range(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.query_range(*args, **kwargs)


def test_a_person_acting_on_one_target_during_a_cycle_holds_back_only_that_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`trimtab pause beta` lands while the cycle measures (seconds, at scale): beta's state
    on disk is newer than the one the cycle read. The cycle leaves beta to the next one; the
    other targets of its batch, and the batches after it, go on."""
    monkeypatch.setattr(reconcile, "BATCH", 2)  # beta in the first batch, gamma in the next
    adapters: dict[str, FakeTrafficAdapter] = {t.key: FakeTrafficAdapter(START) for t in TARGETS}
    beta = TARGETS[1]
    person = reconciler(tmp_path, adapters)  # as `trimtab pause` would, in its own process
    run = reconciler(
        tmp_path, adapters, Meanwhile(lambda: person.override(beta, "pause", "ana", T0))
    )
    decisions = run.cycle(TARGETS, T0)
    assert [d.target for d in decisions] == [TARGETS[0].key, TARGETS[2].key]
    assert [d.action for d in decisions] == [Action.ADVANCE] * 2
    assert adapters[beta.key].weights == START  # never moved
    assert adapters[TARGETS[2].key].weights == FIRST_STEP
    states = StateStore(tmp_path / "state")
    assert states.load(beta.key).phase == "Paused"  # the person's state, as they left it
    later = reconciler(tmp_path, adapters).cycle([beta], T0 + timedelta(seconds=30))
    assert [(d.target, d.action) for d in later] == [(beta.key, Action.HOLD)]
    assert DecisionLog(tmp_path / "decisions.jsonl").verify().ok


class Interrupted(FakeTrafficAdapter):
    """A proxy during whose move ``act`` runs: a person's command after the intent was saved."""

    def __init__(self, act: Callable[[], object]) -> None:
        super().__init__(START)
        self.act = act

    def set_weights(self, weights: Weights) -> None:
        super().set_weights(weights)
        self.act()


def test_a_person_acting_while_a_target_moves_leaves_its_verification_to_the_next_cycle(
    tmp_path: Path,
) -> None:
    adapters: dict[str, FakeTrafficAdapter] = {t.key: FakeTrafficAdapter(START) for t in TARGETS}
    beta = TARGETS[1]
    person = reconciler(tmp_path, adapters)
    adapters[beta.key] = Interrupted(lambda: person.override(beta, "pause", "ana", T0))
    decisions = reconciler(tmp_path, adapters).cycle(TARGETS, T0)
    assert [d.action for d in decisions] == [Action.ADVANCE] * 3  # all recorded, all moved
    states = StateStore(tmp_path / "state")
    paused = states.load(beta.key)
    assert paused.phase == "Paused"
    assert paused.intent is not None  # the person's save kept it; the cycle did not clear it
    assert all(states.load(t.key).intent is None for t in TARGETS if t is not beta)
    later = reconciler(tmp_path, adapters).cycle([beta], T0 + timedelta(seconds=30))
    assert [d.action for d in later] == [Action.HOLD]
    assert states.load(beta.key).intent is None  # verified then
    assert adapters[beta.key].weights == FIRST_STEP
    assert DecisionLog(tmp_path / "decisions.jsonl").verify().ok
