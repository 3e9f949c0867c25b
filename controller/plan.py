"""``trimtab plan``: one dry-run cycle of the reconciler, now, changing nothing.

The reconciler runs exactly as ``trimtab run --dry-run --once`` would — same measurements
(windows clipped to the last shift), same policies and guardrails — on a scratch copy of the
targets' state, so nothing on disk changes: no state, no decision log, no proxy. A proxy whose
weights cannot be read (not running here) is planned from the weights trimtab last applied, or
the route's nominal weights, and the report says so.

Each report has the shape of a decision (DESIGN.md section 9): ``action``, ``weights``
(``current`` → ``desired``), ``health``, ``cause``, ``guardrails``, and ``reasons``: one per
backend and SLO with the value, threshold, window and query behind its level, then the
policy's own reasons.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from trimtab.slo import Config
from trimtab.slo.durations import format_duration
from trimtab.slo.health import Evidence, Health, Level
from trimtab.slo.models import SLO
from trimtab.slo.ports import Measurements, MetricSource, SeriesRequest, Verification, Weights
from trimtab.slo.promql import compile_sli
from trimtab.slo.traffic import PermanentTrafficError, TrafficError

from .reconcile import Reconciler
from .state import StateStore
from .targets import Target
from .wiring import nominal_weights, wire

__all__ = ["plan"]


class _Recording:
    """A metric source that remembers what the cycle asked and what it got."""

    def __init__(self, source: MetricSource) -> None:
        self.source = source
        self.requests: list[SeriesRequest] = []
        self.measurements: Measurements | None = None

    def query(self, requests: Sequence[SeriesRequest], at: datetime) -> Measurements:
        self.requests = list(requests)
        self.measurements = self.source.query(requests, at)
        return self.measurements

    def query_range(self, *args: Any, **kwargs: Any) -> Any:
        return self.source.query_range(*args, **kwargs)


class _ReadOnly:
    """An adapter that only reads; unreadable weights fall back to ``fallback`` (noted)."""

    def __init__(self, inner: Any, fallback: Weights) -> None:
        self.inner = inner
        self.fallback = dict(fallback)
        self.note: str | None = None

    def get_weights(self) -> Weights:
        try:
            return self.inner.get_weights()  # type: ignore[no-any-return]
        except TrafficError as error:
            self.note = f"cannot read the proxy's weights ({error}); planned from {self.fallback}"
            return dict(self.fallback)

    def set_weights(self, weights: Weights) -> None:
        raise PermanentTrafficError("plan never sets weights")

    def verify(self, weights: Weights) -> Verification:
        return Verification.VERIFIED


def plan(
    config: Config,
    chosen: Sequence[Target],
    source: MetricSource,
    at: datetime,
    state_dir: Path,
) -> list[dict[str, Any]]:
    """One decision-shaped report per target of ``chosen`` (see the module docstring)."""
    recording = _Recording(source)
    with tempfile.TemporaryDirectory(prefix="trimtab-plan-") as scratch:
        _copy_states(state_dir, Path(scratch) / "dry-run", chosen)
        wiring = wire(config, recording, directory=Path(scratch), dry_run=True, actor="plan")
        states = wiring.states
        adapters: dict[str, _ReadOnly] = {}
        for target in chosen:
            spec = wiring.reconciler.config.specs[target.key]
            applied = states.load(target.key).applied
            fallback = dict(applied) if applied else nominal_weights(spec)
            adapters[target.key] = _ReadOnly(
                wiring.reconciler.config.adapters[target.key], fallback
            )
        reconciler = Reconciler(replace(wiring.reconciler.config, adapters=adapters))
        decisions = reconciler.cycle(list(chosen), at)
    measurements = recording.measurements
    assert measurements is not None
    reports = []
    for target, decision in zip(chosen, decisions, strict=True):
        d = decision.to_json()
        reasons = [
            _reason(request.slo, backend, measurements[request].health(backend), request)
            for request in recording.requests
            if request.target == target.key
            for backend in target.backends
        ]
        policy = [r for r in d["reasons"] if "slo" not in r]
        note = adapters[target.key].note
        report = {
            "at": at.isoformat(),
            "target": target.key,
            "kind": target.kind,
            "action": d["action"],
            "weights": {"current": d["weights"]["current"], "desired": d["weights"]["desired"]},
            "health": d["health"],
            "cause": d["cause"],
            "reasons": [*reasons, *policy, *([{"message": note}] if note else [])],
            "guardrails": d["guardrails"],
            "phase": d["phase"],
            "dryRun": True,
            "source": {
                "up": measurements.source_error is None,
                "error": measurements.source_error,
            },
        }
        reports.append(report)
    return reports


def _copy_states(state_dir: Path, scratch: Path, chosen: Sequence[Target]) -> None:
    """The targets' saved states (the real ones, not a dry run's) into ``scratch``."""
    real, copy = StateStore(state_dir), StateStore(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    for target in chosen:
        if real.path(target.key).is_file():
            shutil.copyfile(real.path(target.key), copy.path(target.key))


def _decisive(health: Health) -> Evidence | None:
    """The comparison that best explains the level: the first row of the deciding threshold."""
    if not health.evidence:
        return None
    wanted = health.level if health.level in (Level.UNAVAILABLE, Level.DEGRADED) else Level.DEGRADED
    rows = [row for row in health.evidence if row.level == wanted] or list(health.evidence)
    return rows[0]


def _reason(slo: SLO, backend: str, health: Health, request: SeriesRequest) -> dict[str, Any]:
    row = _decisive(health)
    reason: dict[str, Any] = {
        "slo": slo.metadata.name,
        "backend": backend,
        "level": health.level.name,
        "message": health.reason,
        "value": None,
        "threshold": None,
        "comparison": None,
        "window": None,
        "query": None,
    }
    if health.error:
        reason["error"] = health.error
    if row is not None:
        params = {k: [v] for k, v in request.param_map.items()}
        sli = compile_sli(slo.spec, _measured(request, row.window), params)
        reason.update(
            value=row.measured,
            threshold=row.threshold,
            comparison=row.comparison,
            window=format_duration(row.window),
            query=sli.ratio or sli.value,
            evidence=[
                {
                    "level": e.level.name,
                    "window": format_duration(e.window),
                    "value": e.measured,
                    "threshold": e.threshold,
                    "exceeded": e.exceeded,
                    "events": e.events,
                }
                for e in health.evidence
            ],
        )
    return reason


def _measured(request: SeriesRequest, window: float) -> float:
    """The window actually queried for an SLO window (shorter right after a shift)."""
    return dict(request.clipped).get(window, window)
