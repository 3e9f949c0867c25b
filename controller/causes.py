"""Why a decision was taken, as a stable code: what a runbook page, a dashboard and a script key on.

Every decision carries one :class:`Cause` beside its free-text reasons. The free text says the
particulars (which SLO, which value); the cause names the rule that fired, so
``runbooks/<cause>.md`` can say what it means and what to do, and ``trimtab explain`` can point
to it. The values are part of the decision record's format: add, never rename.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Cause"]


class Cause(StrEnum):
    """The rule behind a decision (``runbooks/<value>.md`` explains each)."""

    # Rollout: moving forward
    ROLLOUT_STARTED = "rollout-started"  # the first step of a canary
    HOLD_IN_PROGRESS = "hold-in-progress"  # healthy, waiting out the step's hold
    STEP_PASSED = "step-passed"  # healthy through the hold: advance
    PROMOTED = "promoted"  # the last step passed: all traffic on the canary
    # Rollout: stopping
    CANARY_UNAVAILABLE = "canary-unavailable"  # an SLO UNAVAILABLE on the canary: rollback at once
    CANARY_DEGRADED = "canary-degraded"  # DEGRADED, counted toward failureLimit
    FAILURE_LIMIT = "failure-limit"  # more DEGRADED evaluations than failureLimit: rollback
    BASELINE_REGRESSION = "baseline-regression"  # canary significantly worse than stable
    STEP_TIMEOUT = "step-timeout"  # no conclusion within stepTimeout: rollback
    ROLLED_BACK = "rolled-back"  # rolled back earlier; waiting for a person
    # Rollout and Balance: not enough to go on
    NO_DATA = "no-data"  # an SLO UNKNOWN (source down, no samples): hold
    NO_DATA_TIMEOUT = "no-data-timeout"  # UNKNOWN for longer than noData.rollbackAfter: rollback
    LOW_TRAFFIC = "low-traffic"  # too few events to judge: hold
    SHARED_FAULT = "shared-fault"  # stable as bad as the canary: not the canary's fault, hold
    PAUSED = "paused"  # paused by a person
    PAUSE_TIMEOUT = "pause-timeout"  # paused longer than pauseTimeout: rollback
    GUARDRAIL = "guardrail"  # a move toward risk held or shortened by maxStep/minInterval/…
    # Balance
    BALANCED = "balanced"  # every backend healthy at its nominal weight
    DRAIN = "drain"  # a backend DEGRADED/UNAVAILABLE: weight moved away
    MAX_DRAIN = "max-drain"  # draining limited by maxDrain (blast radius)
    ALL_UNHEALTHY = "all-unhealthy"  # every backend unhealthy: no safe place, hold
    RESTORE_WAITING = "restore-waiting"  # healthy again, waiting out restoreAfter
    RESTORE = "restore"  # healthy for restoreAfter: weight returns
    # The cycle
    DRIFT = "drift"  # the proxy's weights differ from the last applied: a person? hold
    VERIFY_PENDING = "verify-pending"  # the proxy has not confirmed the last change yet
    ADAPTER_ERROR = "adapter-error"  # setting weights failed: held where they were
    MANUAL = "manual"  # promote/abort/pause/resume by a person
