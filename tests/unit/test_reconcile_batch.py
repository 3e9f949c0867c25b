"""A cycle over many targets records and acts in batches, keeping each target's promises: its
intent and its decision are durable before its weights move, and a log that cannot be written
moves nothing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from trimtab.adapters.fake import FakeTrafficAdapter, ListMetricSource
from trimtab.controller import reconcile
from trimtab.controller.decisions import DecisionLog
from trimtab.controller.reconcile import Reconciler, ReconcilerConfig
from trimtab.controller.record import Action, Decision, DecisionWeights
from trimtab.controller.state import Intent, StateStore
from trimtab.controller.targets import targets
from trimtab.slo import load_text
from trimtab.slo.ports import Weights

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


def reconciler(directory: Path, adapters: dict[str, FakeTrafficAdapter]) -> Reconciler:
    return Reconciler(
        ReconcilerConfig(
            source=ListMetricSource.constant({"v1": 0.0001, "v2": 0.0001}),
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
    having = DecisionLog.having

    def counted(self: DecisionLog, ids: Iterable[str]) -> set[str]:
        asked = set(ids)
        passes.append(asked)
        return having(self, asked)

    monkeypatch.setattr(DecisionLog, "having", counted)
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
