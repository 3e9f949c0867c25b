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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from trimtab.slo.baseline import BaselineResult, BaselineSettings, compare
from trimtab.slo.durations import format_duration
from trimtab.slo.health import Health, counts_events, health_windows, is_budget_based
from trimtab.slo.models import Balance, Rollout
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
from .state import Intent, Override, StateStore, TargetState
from .targets import Target, requests_for

__all__ = ["Reconciler", "ReconcilerConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcilerConfig:
    """Everything a cycle talks to (one object, not nine arguments)."""

    source: MetricSource
    adapters: Mapping[str, TrafficAdapter]  # by target key ("Rollout/checkout")
    states: StateStore
    log: DecisionLog
    specs: Mapping[str, Rollout | Balance]  # by target key
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
        self._resumed: set[str] = set()  # targets whose saved intent this process checked

    def cycle(self, targets: Sequence[Target], now: datetime) -> list[Decision]:
        """One measurement batch for every target, then one decision per target."""
        states = {t.key: self.config.states.load(t.key) for t in targets}
        plans = {t.key: _requests(t, states[t.key], now) for t in targets}
        measurements = self.config.source.query([r for rs in plans.values() for r in rs], now)
        return [self.reconcile(t, measurements, now, plans[t.key], states[t.key]) for t in targets]

    def reconcile(
        self,
        target: Target,
        measurements: Measurements,
        now: datetime,
        requests: Sequence[SeriesRequest] | None = None,
        state: TargetState | None = None,
    ) -> Decision:
        """One target's cycle; returns its decision (recorded when it says something new).

        ``requests`` and ``state`` are what :meth:`cycle` already built and read.
        """
        config = self.config
        states = config.states
        state = states.load(target.key) if state is None else state
        requests = _requests(target, state, now) if requests is None else requests
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
        if state.intent is not None and not dry_run and target.key not in self._resumed:
            self._resumed.add(target.key)  # once per process: after a crash, or a restart
            self._record_lost(target, state.intent)
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
        if isinstance(spec, Rollout):
            memory = _rollout_memory(state, spec)
            baseline = self._baseline(results, spec) if spec.spec.analysis.baseline else None
            proposal = rollout.decide(spec.spec, memory, health, baseline, actual, now)
            action, desired = proposal.action, proposal.desired
            reasons, notes, cause = proposal.reasons, proposal.guardrails, proposal.cause
            proposed = _with_rollout_memory(state, proposal.memory, spec, now)
        else:
            balanced = balance.decide(spec.spec, _balance_memory(state), health, actual, now)
            action, desired = balanced.action, balanced.desired
            reasons, notes, cause = balanced.reasons, balanced.guardrails, balanced.cause
            proposed = _with_balance_memory(state, balanced.memory, now)

        # 6. Record, before acting. A move saves its intent (carrying the decision) first, then
        # records the decision, then acts: a crash between the two leaves an intent whose
        # decision the next process records before acting on it — never a recorded decision
        # that nothing followed (a phantom step in the history).
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

        # 7-8. Act and verify
        if not moving:
            if proposed != state:  # a hold that changes nothing writes nothing
                states.save(target.key, proposed)
            return self._record(decision)
        if dry_run:
            states.save(target.key, proposed.with_(applied=desired))
            return self._record(decision)
        intent = Intent(desired, decision.id, action, now, record=decision.to_json())
        pending = states.save(target.key, proposed.with_(intent=intent))
        try:
            decision = self._record(decision)
        except BaseException:
            states.save(target.key, state.with_(version=pending.version))  # not recorded: undo
            raise
        try:
            self._apply(adapter, desired)
        except TrafficError as error:
            states.save(target.key, state.with_(version=pending.version))  # nothing happened
            return self._hold(
                target,
                state,
                actual,
                now,
                Cause.ADAPTER_ERROR,
                f"the adapter refused {desired}: {error}; traffic left as it was",
            )
        self._settle(target, pending, adapter, desired)
        return decision

    def override(self, target: Target, command: str, actor: str, now: datetime) -> Decision:
        """A person's command: ``pause``, ``resume``, ``abort`` (roll back now) or ``promote``.

        Recorded with the person as the actor. ``resume`` also accepts the weights the route
        serves now as applied, ending a drift hold: trimtab never fights a person, so it waits
        for one to say the route is theirs again.
        """
        states = self.config.states
        state = states.load(target.key)
        adapter = self.config.adapters[target.key]
        spec = self.config.specs[target.key]
        actual = dict(adapter.get_weights())
        mark = Override(command, actor, now)
        changes: dict[str, object] = {"actor_override": mark}
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
            if not isinstance(spec, Rollout):
                raise ValueError(f"{command} applies to a Rollout, not {target.key}")
            if command == "abort":
                desired = rollout.weights_at(spec.spec, 0)
                changes.update(phase=Phase.ROLLED_BACK.value)
            else:
                desired = rollout.weights_at(spec.spec, 100)
                changes.update(phase=Phase.PROMOTED.value, step=len(spec.spec.steps) - 1)
        else:
            raise ValueError(f"unknown command {command!r}")
        decision = self.config.log.append(
            Decision(
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
        )
        state = states.save(target.key, state.with_(**changes))
        if desired != actual and not self.config.dry_run:
            pending = states.save(
                target.key, state.with_(intent=Intent(desired, decision.id, command, now))
            )
            self._apply(adapter, desired)
            self._settle(target, pending, adapter, desired)
        return decision

    # ------------------------------------------------------------------------------ helpers

    def _apply(self, adapter: TrafficAdapter, weights: Mapping[str, int]) -> None:
        """Set ``weights``, retrying transient failures with exponential backoff."""
        retrying = Retrying(
            stop=stop_after_attempt(self.config.attempts),
            wait=wait_exponential(multiplier=self.config.backoff),
            retry=retry_if_exception_type(TransientTrafficError),
            sleep=self.config.sleep,
            before_sleep=lambda state: log.warning(
                "transient adapter error (try %d): %s",
                state.attempt_number,
                state.outcome.exception() if state.outcome else "",
            ),
            reraise=True,
        )
        retrying(adapter.set_weights, weights)

    def _settle(
        self,
        target: Target,
        state: TargetState,
        adapter: TrafficAdapter,
        actual: Mapping[str, int],
    ) -> TargetState | None:
        """Finish a pending intent: re-apply if the route does not hold it, then verify.

        Returns the state with the intent cleared and ``applied`` set, or ``None`` while the
        proxy has not applied it yet.
        """
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
        return self.config.states.save(
            target.key, state.with_(applied=dict(intent.weights), intent=None)
        )

    def _baseline(self, results: Sequence[SeriesResult], spec: Rollout) -> BaselineResult | None:
        """Canary against stable on the first budget-based SLO with request counts, over its
        longest window — clipped to the last shift, so the counts of an earlier split never
        judge this one."""
        for result in results:
            slo_spec = result.request.slo.spec
            if not (is_budget_based(slo_spec) and counts_events(slo_spec)):
                continue
            window = health_windows(slo_spec)[-1]
            canary = result.judged(spec.spec.canary).get(window)
            stable = result.judged(spec.spec.stable).get(window)
            if canary is None or stable is None or canary.value is None or stable.value is None:
                continue
            if canary.events is None or stable.events is None:
                continue
            return compare(
                canary.value * canary.events,
                canary.events,
                stable.value * stable.events,
                stable.events,
                self.config.baseline,
            )
        return None

    def _record_lost(self, target: Target, intent: Intent) -> None:
        """Record the decision of a saved intent if a crash kept it out of the log.

        A move saves its intent (carrying the decision) before recording the decision, and
        records it before acting: an intent whose decision is not in the log was never acted
        on. Recording it now, as it was decided, keeps the log's promise — every move is
        recorded before it is made — and the cycle goes on to apply it once."""
        if intent.record is None or self.config.log.find(intent.decision_id) is not None:
            return
        log.warning(
            "%s: recording decision %s, which a stop kept out of the log before it was acted on",
            target.key,
            intent.decision_id,
        )
        self.config.log.append(Decision.from_json(intent.record))

    def _record(self, decision: Decision) -> Decision:
        """Append ``decision`` unless it repeats the target's last one: a hold or a no-op with
        the same cause, health and weights is logged once, however its wording moves on
        ("healthy for 2m of the 5m hold" each cycle) — at 10,000 targets a record per target
        per cycle would be most of a cycle's cost and of the log."""
        last = self.config.log.last(decision.target)
        if (
            last is not None
            and decision.action in (Action.HOLD, Action.NONE)
            and last.action == decision.action
            and last.cause == decision.cause
            and last.health == decision.health
            and last.weights.desired == decision.weights.desired
            and last.dry_run == decision.dry_run
            and (decision.cause is not None or _messages(last) == _messages(decision))
        ):
            return decision
        return self.config.log.append(decision)

    def _hold(
        self,
        target: Target,
        state: TargetState,
        actual: Mapping[str, int],
        now: datetime,
        cause: Cause,
        why: str,
    ) -> Decision:
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
        return self._record(decision)


def _requests(target: Target, state: TargetState, now: datetime) -> list[SeriesRequest]:
    """What to measure for ``target``: a progressing Rollout's windows clip to its last shift
    (DESIGN.md section 5, step 3)."""
    since = state.step_started_at if state.phase == Phase.PROGRESSING else None
    return requests_for(
        target, shifted_for=None if since is None else (now - since).total_seconds()
    )


def _messages(decision: Decision) -> list[object]:
    return [r.get("message") for r in decision.reasons]


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


def _rollout_memory(state: TargetState, spec: Rollout) -> rollout.RolloutMemory:
    return rollout.RolloutMemory(
        phase=Phase(state.phase),
        step=state.step,
        step_started_at=state.step_started_at,
        healthy_since=state.healthy_since.get(spec.spec.canary),
        failures=state.failures,
        no_data_since=state.no_data_since,
        paused_at=state.paused_at,
        last_shift_at=state.last_shift_at,
        shift_times=state.shift_times,
    )


def _with_rollout_memory(
    state: TargetState, memory: rollout.RolloutMemory, spec: Rollout, now: datetime
) -> TargetState:
    since = {spec.spec.canary: memory.healthy_since} if memory.healthy_since else {}
    return state.with_(
        phase=memory.phase.value,
        step=memory.step,
        step_started_at=memory.step_started_at,
        healthy_since=since,
        failures=memory.failures,
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
