"""The reconcile cycle (DESIGN.md section 5): observe, verify, measure, judge, decide, record,
act, verify.

Every collaborator is injected through one :class:`ReconcilerConfig`; the clock is the ``now``
argument. The cycle never raises for the outside world's failures: a source outage is UNKNOWN
(weights hold), an adapter error holds and is recorded, a permanent adapter error leaves traffic
as it was.

Crash safety: the decision is recorded and the target's state saved with an *intent* (the
weights about to be applied) before the adapter is called. A restart that finds an intent
re-applies the same weights (idempotent) and verifies them; it never steps again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from trimtab.slo.baseline import BaselineResult, BaselineSettings, BaselineTrack, extend, observe
from trimtab.slo.durations import format_duration
from trimtab.slo.errors import TrimtabError
from trimtab.slo.health import Health, counts_events, health_windows, is_budget_based
from trimtab.slo.models import BalanceSpec, RolloutSpec
from trimtab.slo.ports import (
    Measurements,
    MetricSource,
    SeriesRequest,
    SeriesResult,
    TrafficAdapter,
    Verification,
)
from trimtab.slo.traffic import TrafficError, TransientTrafficError

from . import balance, rollout
from .causes import Cause
from .decisions import DecisionLog
from .guardrails import recent_shifts
from .record import Action, Decision, DecisionWeights
from .rollout import Phase
from .state import BaselineMemo, Intent, Override, StateConflict, StateStore, TargetState
from .targets import Target, requests_for

__all__ = ["Reconciler", "ReconcilerConfig", "UnappliedOverride", "taking"]

log = logging.getLogger(__name__)

_QUIET = (Action.HOLD, Action.NONE)  # the actions a repeat of the last decision is not logged for

BATCH = 500
"""Targets decided, then committed, together. Each batch costs two fsyncs (state files, the
decision log) when it writes anything; larger batches hold more turns in memory at once."""
OVERRIDE_ATTEMPTS = 3
"""How many times a person's command reads and decides again when a cycle saved the target's
state meanwhile."""


class UnappliedOverride(TrimtabError):
    """A person's command is recorded and its intent saved, but the route refused its weights:
    a running controller applies them on its next cycle (as after a crash)."""

    def __init__(self, decision: Decision, error: TrafficError) -> None:
        desired = dict(decision.weights.desired)
        super().__init__(
            f"{decision.action} is recorded ({decision.id}), but the route refused {desired}: "
            f"{error}. Its intent is saved: a running controller applies it on its next cycle."
        )
        self.decision = decision


@dataclass(frozen=True)
class ReconcilerConfig:
    """Everything a cycle talks to (one object, not nine arguments)."""

    source: MetricSource
    adapters: Mapping[str, TrafficAdapter]  # by target key ("Rollout/checkout")
    states: StateStore
    log: DecisionLog
    # By target key, what its policy reads: a Rollout's or Balance's spec. The target holds its
    # SLOs, resolved with their params, so a wired spec may leave out its own (wiring.py).
    specs: Mapping[str, RolloutSpec | BalanceSpec]
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    dry_run: bool = False
    actor: str = "controller"
    attempts: int = 3  # tries of a transient adapter failure
    backoff: float = 0.2  # seconds before the second try; doubles after
    sleep: Callable[[float], None] = time.sleep


class Reconciler:
    """Runs cycles over targets with the collaborators of a :class:`ReconcilerConfig`."""

    def __init__(self, config: ReconcilerConfig) -> None:
        self.config = config
        # Per target, the decision of the last intent this process found in the log or put
        # there: an intent another writer saved (a restart, a person's command) is new here.
        self._logged: dict[str, str] = {}
        self._baselines: dict[str, BaselineMemo] = {}  # per target, the step's baseline test
        # One shared by every move: a Retrying is a reference cycle (its per-call state holds its
        # bound methods), and one per move left 10,000 a cycle for the collector.
        self._retrying = Retrying(
            stop=stop_after_attempt(config.attempts),
            wait=wait_exponential(multiplier=config.backoff),
            retry=retry_if_exception_type(TransientTrafficError),
            sleep=config.sleep,
            before_sleep=lambda state: log.warning(
                "transient adapter error (try %d): %s",
                state.attempt_number,
                state.outcome.exception() if state.outcome else "",
            ),
            reraise=True,
        )

    def cycle(self, targets: Sequence[Target], now: datetime) -> list[Decision]:
        """One measurement batch for every target, then one decision per target: :meth:`stream`,
        its decisions in a list."""
        return list(self.stream(targets, now))

    def stream(self, targets: Sequence[Target], now: datetime) -> Iterator[Decision]:
        """A cycle whose decisions are yielded as each batch of them is committed.

        The targets are decided (steps 1-5) and committed (:meth:`_commit`) in batches of up
        to :data:`BATCH`: one batch of state writes, one append to the decision log, then the
        moves. Each move's intent and decision are durable before it is made, as in a cycle of
        one target; a batch pays for durability a few times, not per target. A caller that
        lets each decision go holds one batch of them, not the fleet's: at 10,000 targets a
        cycle's decisions are 23 MB. The cycle runs as its decisions are taken, so a caller
        that stops early leaves the remaining targets for the next cycle.
        """
        states = {t.key: self.config.states.load(t.key) for t in targets}
        plans = {t.key: _requests(t, states[t.key], now) for t in targets}
        answer = self.config.source.query([r for rs in plans.values() for r in rs], now)
        self._record_lost([t for t in targets if self._resuming(t, states[t.key])], states)
        # Each target's results are let go of once it is decided, and the rest of a cycle's
        # data with its batch: at 10,000 targets, what a cycle holds at once is most of the
        # controller's memory.
        take, source_error = taking(answer.results), answer.source_error
        del answer
        for first in range(0, len(targets), BATCH):
            turns = []
            for target in targets[first : first + BATCH]:
                requests, state = plans.pop(target.key), states.pop(target.key)
                mine = {r.key: found for r in requests if (found := take(r.key)) is not None}
                measurements = Measurements(mine, source_error)
                turns.append(self._decide(target, measurements, now, requests, state))
            decisions = self._commit(turns, set_aside=True)
            del turns
            yield from decisions

    def reconcile(
        self,
        target: Target,
        measurements: Measurements,
        now: datetime,
        requests: Sequence[SeriesRequest] | None = None,
        state: TargetState | None = None,
    ) -> Decision:
        """One target's cycle; returns its decision (recorded when it says something new).

        ``requests`` and ``state`` are what the caller already built and read.
        """
        state = self.config.states.load(target.key) if state is None else state
        requests = _requests(target, state, now) if requests is None else requests
        if self._resuming(target, state):
            self._record_lost([target], {target.key: state})
        return self._commit([self._decide(target, measurements, now, requests, state)])[0]

    def _decide(
        self,
        target: Target,
        measurements: Measurements,
        now: datetime,
        requests: Sequence[SeriesRequest],
        state: TargetState,
    ) -> _Turn:
        """Steps 1-5 for one target: what to record, what state to save, what to move."""
        config = self.config
        adapter = config.adapters[target.key]
        dry_run = config.dry_run or target.dry_run

        # 1. Observe
        try:
            actual = dict(adapter.get_weights())
        except TrafficError as error:
            return self._hold(
                target, state, {}, now, Cause.ADAPTER_ERROR, f"cannot read the weights: {error}"
            )
        if dry_run and state.applied is not None:
            actual = dict(state.applied)  # dry-run: judge from the weights it would have set

        # 2. Verify the last change before measuring: measuring too early measures old weights
        if state.intent is not None and not dry_run:
            settled = self._settle(target, state, adapter, actual)
            if settled is None:
                why = "waiting for the proxy to apply"
                return self._hold(target, state, actual, now, Cause.VERIFY_PENDING, why)
            state = settled
            actual = dict(state.applied or actual)
        if state.applied is None:
            state = state.with_(applied=actual)
        elif actual != dict(state.applied) and not dry_run:
            return self._hold(
                target,
                state,
                actual,
                now,
                Cause.DRIFT,
                f"drift: the route serves {actual}, not the {dict(state.applied)} trimtab "
                "applied; a person may be intervening. Holding until `trimtab resume`.",
            )

        # 3-4. Measure (one batch for every target, done by cycle()) and judge
        results = [measurements[r] for r in requests]
        health = {
            b: {result.request.slo.metadata.name: result.health(b) for result in results}
            for b in target.backends
        }

        # 5. Decide
        spec = config.specs[target.key]
        if isinstance(spec, RolloutSpec):
            memory = _rollout_memory(state, spec)
            baseline = (
                self._baseline(target, results, spec, state, now)
                if spec.analysis.baseline
                else None
            )
            proposal = rollout.decide(spec, memory, health, baseline, actual, now)
            action, desired = proposal.action, proposal.desired
            reasons, notes, cause = proposal.reasons, proposal.guardrails, proposal.cause
            proposed = (
                state  # most cycles: a hold that changes nothing
                if proposal.memory == memory
                else _with_rollout_memory(state, proposal.memory, spec, now)
            )
            memo = self._baselines.get(target.key)
            if memo is not None and proposed != state:  # saved with a write that happens anyway
                proposed = proposed.with_(baseline=memo)
        else:
            balanced = balance.decide(spec, _balance_memory(state), health, actual, now)
            action, desired = balanced.action, balanced.desired
            reasons, notes, cause = balanced.reasons, balanced.guardrails, balanced.cause
            proposed = _with_balance_memory(state, balanced.memory, now)

        moving = desired != actual
        decision = Decision(
            at=now,
            target=target.key,
            kind=target.kind,
            action=Action(action),
            weights=DecisionWeights(actual, desired, None if moving else actual),
            health={b: {slo: h.level.name for slo, h in per.items()} for b, per in health.items()},
            reasons=[*_reason_rows(health), *({"message": r} for r in reasons)],
            guardrails=[n.to_json() for n in notes],
            dry_run=dry_run,
            actor=config.actor,
            phase=proposed.phase,
            cause=cause,
        )
        turn = _Turn(target, decision, state, actual)
        if not moving:
            if proposed != state:  # a hold that changes nothing writes nothing
                turn.save = proposed
        elif dry_run:
            turn.save = proposed.with_(applied=desired)
        else:
            # A move saves its intent (carrying the decision) first, then records the
            # decision, then acts: a crash between the two leaves an intent whose decision the
            # next process records before acting on it — never a recorded decision that
            # nothing followed (a phantom step in the history).
            intent = Intent(desired, decision.id, action, now, record=decision.to_json())
            turn.save, turn.move = proposed.with_(intent=intent), desired
        return turn

    def _commit(self, turns: Sequence[_Turn], *, set_aside: bool = False) -> list[Decision]:
        """Steps 6-8 for a batch of turns, each step done once for the whole batch; the
        decisions of the turns committed.

        6. Record, before acting: every state to save — each move's intent, carrying its
           decision, among them — is written and fsync'd; then every decision is appended to
           the log with one fsync. A log that cannot be appended to undoes the intents, and
           nothing moves.
        7. Act: each move's weights are set (transient failures retried); a refused move
           leaves traffic and state as they were and is recorded as a hold.
        8. Verify: each move is read back, and the verified states (intent cleared) are saved
           in one batch. A crash before then leaves intents, which the next cycle verifies
           without stepping again.

        With ``set_aside``, a target whose state changed on disk since the cycle read it (a
        person's ``trimtab pause`` while the cycle measured) is left out — nothing recorded,
        nothing moved, its state as that person left it — and decided again next cycle; the
        rest of the batch goes on. Without, :class:`StateConflict` fails the batch.
        """
        states = self.config.states
        moves = [t for t in turns if t.move is not None]
        writes = [(t.target.key, t.save) for t in turns if t.save is not None]
        pending = self._save_all(writes, set_aside=set_aside)
        if len(pending) < len(writes):  # set aside: decided again next cycle
            turns = [t for t in turns if t.save is None or t.target.key in pending]
            moves = [t for t in moves if t.target.key in pending]
        try:
            decisions = self._record([t.decision for t in turns])
        except BaseException:
            # Should this undo fail too, intents stay on disk without their decisions in the
            # log: new to :meth:`_resuming`, the next cycle looks for them there again.
            states.save_all([(t.target.key, _unmoved(t, pending)) for t in moves])
            raise
        for turn in moves:  # in the log: no need to look for them there
            self._logged[turn.target.key] = turn.decision.id
        verified: list[tuple[str, TargetState]] = []
        refused: dict[int, Decision] = {}
        for index, turn in enumerate(turns):
            if turn.move is None:
                continue
            key, adapter = turn.target.key, self.config.adapters[turn.target.key]
            try:
                self._apply(adapter, turn.move)
            except TrafficError as error:
                verified.append((key, _unmoved(turn, pending)))  # nothing happened
                why = f"the adapter refused {dict(turn.move)}: {error}; traffic left as it was"
                hold = self._hold(
                    turn.target, turn.state, turn.actual, turn.decision.at, Cause.ADAPTER_ERROR, why
                )
                refused[index] = hold.decision
                continue
            done = self._verified(turn.target, pending[key], adapter, turn.move)
            if done is not None:
                verified.append((key, done))
        self._save_all(verified, set_aside=set_aside)
        if refused:
            holds = self._record(list(refused.values()))
            for index, hold_decision in zip(refused, holds, strict=True):
                decisions[index] = hold_decision
        return decisions

    def _save_all(
        self, pairs: Sequence[tuple[str, TargetState]], *, set_aside: bool
    ) -> dict[str, TargetState]:
        """Save ``pairs``; the saved states by target. With ``set_aside``, the targets whose
        state changed on disk since it was read are left unsaved (and named in the log)."""
        while True:
            try:
                saved = self.config.states.save_all(pairs)
            except StateConflict as conflict:
                stale = set(conflict.targets)
                if not set_aside or not stale:
                    raise
                for key in sorted(stale):
                    log.warning(
                        "%s: its state changed on disk during the cycle (a person's command?); "
                        "left as it is, for the next cycle to take up",
                        key,
                    )
                pairs = [(key, state) for key, state in pairs if key not in stale]
                continue
            return {key: state for (key, _), state in zip(pairs, saved, strict=True)}

    def override(self, target: Target, command: str, actor: str, now: datetime) -> Decision:
        """A person's command: ``pause``, ``resume``, ``abort`` (roll back now) or ``promote``.

        Recorded with the person as the actor. ``resume`` also accepts the weights the route
        serves now as applied, ending a drift hold: trimtab never fights a person, so it waits
        for one to say the route is theirs again.

        As in a cycle, the state is saved before the decision is recorded, and a move's intent
        carries its decision: a running controller that finds the intent without its decision
        in the log (the command stopped between the two) records it before acting on it. When
        a controller's cycle saves this target's state between the command's read and its
        save, the command reads the state again and decides again, up to
        :data:`OVERRIDE_ATTEMPTS` times; so it never records a decision that did not take effect.
        The decision goes in with :meth:`DecisionLog.append_missing`: a cycle that read the
        intent before it was recorded records it from there, and it is in the log once.

        Raises ``ValueError`` for a command that does not apply to the target's phase or kind,
        :class:`~trimtab.controller.state.StateConflict` when every attempt met a save, and
        :class:`UnappliedOverride` when the decision is recorded but the route refused it.
        """
        states, log_ = self.config.states, self.config.log
        adapter = self.config.adapters[target.key]
        for attempt in range(1, OVERRIDE_ATTEMPTS + 1):
            state = states.load(target.key)
            actual = dict(adapter.get_weights())
            decision, changed, desired = self._overridden(
                target, state, actual, command, actor, now
            )
            moving = desired != actual and not self.config.dry_run
            if moving:
                intent = Intent(desired, decision.id, command, now, record=decision.to_json())
                changed = changed.with_(intent=intent)
            try:
                saved = states.save(target.key, changed)
                break
            except StateConflict:
                if attempt == OVERRIDE_ATTEMPTS:
                    raise
                log.info("%s: its state changed while %s was decided", target.key, command)
        try:
            # A cycle that read the intent first may have recorded it: not again, then.
            appended = log_.append_missing([decision])
            recorded = appended[0] if appended else (log_.find(decision.id) or decision)
        except BaseException:
            try:
                states.save(target.key, state.with_(version=saved.version))  # as it was
            except Exception as undo:  # the first failure is the one to report
                log.error(
                    "%s: cannot undo the state of an unrecorded %s: %s", target.key, command, undo
                )
            raise
        if moving:
            try:
                self._apply(adapter, desired)
            except TrafficError as error:
                raise UnappliedOverride(recorded, error) from error
            try:
                self._settle(target, saved, adapter, desired)
            except StateConflict:  # a cycle took the intent up meanwhile: it verifies the move
                log.info("%s: the controller verifies %s", target.key, command)
        return recorded

    def _overridden(
        self,
        target: Target,
        state: TargetState,
        actual: dict[str, int],
        command: str,
        actor: str,
        now: datetime,
    ) -> tuple[Decision, TargetState, dict[str, int]]:
        """What a person's ``command`` decides from ``state``: its decision, the state it
        leaves (not saved) and the weights it wants. Raises ``ValueError`` for a command that
        does not apply."""
        spec = self.config.specs[target.key]
        changes: dict[str, object] = {"actor_override": Override(command, actor, now)}
        desired = actual
        if command == "pause":
            if state.phase not in (Phase.PENDING, Phase.PROGRESSING):
                raise ValueError(f"{target.key} is {state.phase}: only a running rollout pauses")
            changes.update(
                phase=Phase.PAUSED.value, paused_at=now, paused_reason=f"paused by {actor}"
            )
        elif command == "resume":
            if state.phase == Phase.PAUSED:
                running = Phase.PROGRESSING if state.step >= 0 else Phase.PENDING
                changes.update(phase=running.value, paused_at=None, paused_reason=None)
            changes.update(applied=actual, intent=None, healthy_since={}, no_data_since=None)
        elif command in ("abort", "promote"):
            if not isinstance(spec, RolloutSpec):
                raise ValueError(f"{command} applies to a Rollout, not {target.key}")
            if command == "abort":
                desired = rollout.weights_at(spec, 0)
                changes.update(phase=Phase.ROLLED_BACK.value)
            else:
                desired = rollout.weights_at(spec, 100)
                changes.update(phase=Phase.PROMOTED.value, step=len(spec.steps) - 1)
        else:
            raise ValueError(f"unknown command {command!r}")
        decision = Decision(
            at=now,
            target=target.key,
            kind=target.kind,
            action=Action(command),
            weights=DecisionWeights(actual, desired, None if desired != actual else actual),
            reasons=[{"message": f"{command} by {actor}"}],
            dry_run=self.config.dry_run,
            actor=actor,
            phase=str(changes.get("phase", state.phase)),
            cause=Cause.MANUAL,
        )
        return decision, state.with_(**changes), desired

    # ------------------------------------------------------------------------------ helpers

    def _apply(self, adapter: TrafficAdapter, weights: Mapping[str, int]) -> None:
        """Set ``weights``, retrying transient failures with exponential backoff."""
        self._retrying(adapter.set_weights, weights)

    def _settle(
        self,
        target: Target,
        state: TargetState,
        adapter: TrafficAdapter,
        actual: Mapping[str, int],
    ) -> TargetState | None:
        """Finish a pending intent: re-apply if the route does not hold it, then verify.

        Returns the state with the intent cleared and ``applied`` set (saved), or ``None``
        while the proxy has not applied it yet.
        """
        done = self._verified(target, state, adapter, actual)
        return None if done is None else self.config.states.save(target.key, done)

    def _verified(
        self,
        target: Target,
        state: TargetState,
        adapter: TrafficAdapter,
        actual: Mapping[str, int],
    ) -> TargetState | None:
        """:meth:`_settle` without saving: the state to save once the intent is verified."""
        intent = state.intent
        assert intent is not None
        try:
            if dict(actual) != dict(intent.weights):
                self._apply(adapter, intent.weights)  # idempotent: never a second step
            verification = adapter.verify(intent.weights)
        except TrafficError as error:
            log.warning("%s: verifying %s failed: %s", target.key, dict(intent.weights), error)
            return None
        if verification is Verification.PENDING:
            return None
        return state.with_(applied=dict(intent.weights), intent=None)

    def _baseline(
        self,
        target: Target,
        results: Sequence[SeriesResult],
        spec: RolloutSpec,
        state: TargetState,
        now: datetime,
    ) -> BaselineResult | None:
        """Canary against stable on the first budget-based SLO with request counts: the test of
        :mod:`trimtab.slo.baseline`, carried from one cycle to the next and across steps.

        While the step is younger than the SLO's longest window, that window is clipped to the
        step: its counts are cumulative since the step began, and :func:`observe` takes what is
        new. Once the step outlives it, the shortest window is counted each time it no longer
        overlaps what was counted before (:func:`extend`); between those, the verdict stands on
        what is counted. Only a progressing Rollout is tested.
        """
        if state.phase != Phase.PROGRESSING:
            self._baselines.pop(target.key, None)
            return None
        for result in results:
            slo_spec = result.request.slo.spec
            if not (is_budget_based(slo_spec) and counts_events(slo_spec)):
                continue
            windows = health_windows(slo_spec)
            memo = self._memo(target, state, now)
            settings = self.config.baseline
            if windows[-1] in dict(result.request.clipped):
                counts = _counts(result, spec, windows[-1])
                if counts is None:
                    continue
                track, verdict = observe(memo.track, *counts, settings)
                at = now
            elif (now - memo.at).total_seconds() >= windows[0]:
                counts = _counts(result, spec, windows[0])
                if counts is None:
                    continue
                track, verdict = extend(memo.track, *counts, settings)
                at = now
            else:
                track, verdict = extend(memo.track, 0, 0, 0, 0, settings)
                at = memo.at
            self._baselines[target.key] = BaselineMemo(track, state.step_started_at, at)
            return verdict
        return None

    def _memo(self, target: Target, state: TargetState, now: datetime) -> BaselineMemo:
        """The baseline test of ``target``'s current step: this process's latest, or the saved
        one if newer (another controller led meanwhile); a new step goes on from the last."""
        memo = self._baselines.get(target.key)
        saved = state.baseline
        if memo is None or (saved is not None and saved.at > memo.at):
            memo = saved
        began = state.step_started_at or now
        if memo is None:
            return BaselineMemo(BaselineTrack(), state.step_started_at, began)
        if memo.step_started_at != state.step_started_at:
            return BaselineMemo(memo.track.next_step(), state.step_started_at, began)
        return memo

    def _resuming(self, target: Target, state: TargetState) -> bool:
        """Whether ``state`` holds an intent whose decision this process has not found in the
        log yet: one saved before a crash or a restart, or by a person's command."""
        return (
            state.intent is not None
            and not (self.config.dry_run or target.dry_run)
            and self._logged.get(target.key) != state.intent.decision_id
        )

    def _record_lost(self, targets: Sequence[Target], states: Mapping[str, TargetState]) -> None:
        """Record the decisions of saved intents that a crash kept out of the log.

        A move saves its intent (carrying the decision) before recording the decision, and
        records it before acting: an intent whose decision is not in the log was never acted
        on. Recording it now, as it was decided, keeps the log's promise — every move is
        recorded before it is made — and the cycle goes on to apply it once. One pass over the
        log finds which decisions it lacks, however many targets resume, under the lock of the
        append: a person's command that saved the intent records its decision once, whichever
        of the two comes first."""
        intents = {}
        for target in targets:
            intent = states[target.key].intent
            if intent is None:
                continue
            self._logged[target.key] = intent.decision_id
            if intent.record is not None:
                intents[target.key] = intent
        if not intents:
            return
        records = [Decision.from_json(i.record) for i in intents.values() if i.record is not None]
        for decision in self.config.log.append_missing(records):
            log.warning(
                "%s: recorded decision %s from its saved intent, before acting on it: the "
                "process that saved the intent stopped, or has yet to record it",
                decision.target,
                decision.id,
            )

    def _record(self, decisions: Sequence[Decision]) -> list[Decision]:
        """Append ``decisions`` (one append, one fsync), except each that repeats its target's
        last one: a hold or a no-op with the same cause, health and weights is logged once,
        however its wording moves on ("healthy for 2m of the 5m hold" each cycle) — at 10,000
        targets a record per target per cycle would be most of a cycle's cost and of the log.
        Returns every decision, sealed (``hash`` set) when it was appended."""
        said = self.config.log.said(d.target for d in decisions)
        fresh: list[int] = []
        for index, decision in enumerate(decisions):
            gist = decision.gist()
            if decision.action in _QUIET and said.get(decision.target) == gist:
                continue  # says nothing new
            fresh.append(index)
            said[decision.target] = gist
        recorded = list(decisions)
        if fresh:  # nothing new (a steady cycle): the log is not even opened
            sealed = self.config.log.append_all([decisions[i] for i in fresh])
            for index, decision in zip(fresh, sealed, strict=True):
                recorded[index] = decision
        return recorded

    def _hold(
        self,
        target: Target,
        state: TargetState,
        actual: Mapping[str, int],
        now: datetime,
        cause: Cause,
        why: str,
    ) -> _Turn:
        """A turn that holds the weights for ``why``, saving nothing."""
        decision = Decision(
            at=now,
            target=target.key,
            kind=target.kind,
            action=Action.HOLD,
            weights=DecisionWeights(actual, actual, actual),
            reasons=[{"message": why}],
            dry_run=self.config.dry_run or target.dry_run,
            actor=self.config.actor,
            phase=state.phase,
            cause=cause,
        )
        return _Turn(target, decision, state, actual)


@dataclass(slots=True)
class _Turn:
    """One target's part of a cycle, decided (steps 1-5) and waiting to be committed."""

    target: Target
    decision: Decision  # recorded unless it repeats the target's last decision
    state: TargetState  # the state decided from: what a move that does not happen leaves
    actual: Mapping[str, int]  # the weights the route served
    save: TargetState | None = None  # saved before the decision is recorded
    move: Mapping[str, int] | None = None  # set after the decision is recorded


def _unmoved(turn: _Turn, saved: Mapping[str, TargetState]) -> TargetState:
    """The state a move that did not happen leaves: as decided from, at the saved version."""
    return turn.state.with_(version=saved[turn.target.key].version)


def _requests(target: Target, state: TargetState, now: datetime) -> list[SeriesRequest]:
    """What to measure for ``target``: a progressing Rollout's windows clip to its last shift
    (DESIGN.md section 5, step 3)."""
    since = state.step_started_at if state.phase == Phase.PROGRESSING else None
    return requests_for(
        target, shifted_for=None if since is None else (now - since).total_seconds()
    )


def _reason_rows(health: Mapping[str, Mapping[str, Health]]) -> list[dict[str, object]]:
    """One reason per backend and SLO that is not HEALTHY, with its deciding comparison."""
    rows: list[dict[str, object]] = []
    for backend, per in health.items():
        for slo, verdict in per.items():
            if verdict.level.name == "HEALTHY":
                continue
            row: dict[str, object] = {
                "slo": slo,
                "backend": backend,
                "level": verdict.level.name,
                "message": verdict.reason,
            }
            exceeded = [e for e in verdict.evidence if e.exceeded and e.level == verdict.level]
            if exceeded:
                e = exceeded[0]
                row.update(
                    value=e.measured,
                    threshold=e.threshold,
                    window=format_duration(e.window),
                    comparison=e.comparison,
                )
            if verdict.error:
                row["error"] = verdict.error
            rows.append(row)
    return rows


def _rollout_memory(state: TargetState, spec: RolloutSpec) -> rollout.RolloutMemory:
    return rollout.RolloutMemory(
        phase=Phase(state.phase),
        step=state.step,
        step_started_at=state.step_started_at,
        healthy_since=state.healthy_since.get(spec.canary),
        failures=state.failures,
        failure_bad=state.failure_bad,
        failure_at=state.failure_at,
        no_data_since=state.no_data_since,
        paused_at=state.paused_at,
        last_shift_at=state.last_shift_at,
        shift_times=state.shift_times,
    )


def _with_rollout_memory(
    state: TargetState, memory: rollout.RolloutMemory, spec: RolloutSpec, now: datetime
) -> TargetState:
    since = {spec.canary: memory.healthy_since} if memory.healthy_since else {}
    return state.with_(
        phase=memory.phase.value,
        step=memory.step,
        step_started_at=memory.step_started_at,
        healthy_since=since,
        failures=memory.failures,
        failure_bad=memory.failure_bad,
        failure_at=memory.failure_at,
        no_data_since=memory.no_data_since,
        paused_at=memory.paused_at,
        last_shift_at=memory.last_shift_at,
        shift_times=tuple(recent_shifts(memory.shift_times, now)),
    )


def _balance_memory(state: TargetState) -> balance.BalanceMemory:
    return balance.BalanceMemory(
        drained=dict(state.drained),
        healthy_since=dict(state.healthy_since),
        last_shift_at=state.last_shift_at,
        shift_times=state.shift_times,
    )


def _with_balance_memory(
    state: TargetState, memory: balance.BalanceMemory, now: datetime
) -> TargetState:
    return state.with_(
        drained={b: d for b, d in memory.drained.items() if d},
        healthy_since=dict(memory.healthy_since),
        last_shift_at=memory.last_shift_at,
        shift_times=tuple(recent_shifts(memory.shift_times, now)),
    )


def _counts(
    result: SeriesResult, spec: RolloutSpec, window: float
) -> tuple[float, float, float, float] | None:
    """(canary bad, canary requests, stable bad, stable requests) over ``window``, if measured."""
    canary = result.judged(spec.canary).get(window)
    stable = result.judged(spec.stable).get(window)
    if canary is None or stable is None or canary.value is None or stable.value is None:
        return None
    if canary.events is None or stable.events is None:
        return None
    return (
        canary.value * canary.events,
        canary.events,
        stable.value * stable.events,
        stable.events,
    )


def taking(
    results: Mapping[tuple[str, str], SeriesResult],
) -> Callable[[tuple[str, str]], SeriesResult | None]:
    """How a cycle takes each request's result, once. A dict of them (a fake source's) is
    emptied as it goes, so each result goes with its target; results made when asked (the
    batched sources') hold nothing to let go of."""
    if isinstance(results, dict):
        kept = dict(results)
        return lambda key: kept.pop(key, None)
    return results.get
