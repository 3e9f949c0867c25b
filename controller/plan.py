"""``trimtab plan``: one dry-run look at every target — the health of each backend per SLO.

One batch of queries serves every target (:mod:`trimtab.slo.batching`); each backend is judged by
:func:`trimtab.slo.health.judge` and reported with the value, threshold, window and query behind
the verdict. The output has the shape of a decision (DESIGN.md section 9) so that the reconciler
can fill in ``action`` and ``weights`` without changing it; until then ``action`` is ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from trimtab.slo.durations import format_duration
from trimtab.slo.health import Evidence, Health, Level
from trimtab.slo.models import SLO
from trimtab.slo.ports import Measurements, MetricSource
from trimtab.slo.promql import compile_sli

from .targets import Target, requests_for

__all__ = ["observe", "plan"]


def observe(targets: Sequence[Target], source: MetricSource, at: datetime) -> Measurements:
    """Measure every SLO of every target in one batch."""
    return source.query([r for t in targets for r in requests_for(t)], at)


def plan(targets: Sequence[Target], source: MetricSource, at: datetime) -> list[dict[str, Any]]:
    """One decision-shaped report per target (see the module docstring)."""
    measurements = observe(targets, source, at)
    reports = []
    for target in targets:
        health: dict[str, dict[str, str]] = {backend: {} for backend in target.backends}
        reasons: list[dict[str, Any]] = []
        for request in requests_for(target):
            result = measurements[request]
            slo = request.slo
            for backend in target.backends:
                verdict = result.health(backend)
                health[backend][slo.metadata.name] = verdict.level.name
                reasons.append(_reason(slo, backend, verdict, request.param_map))
        reports.append(
            {
                "at": at.isoformat(),
                "target": target.key,
                "kind": target.kind,
                "action": "none",
                "weights": {"current": {}, "desired": {}},
                "health": health,
                "reasons": reasons,
                "dryRun": True,
                "source": {
                    "up": measurements.source_error is None,
                    "error": measurements.source_error,
                },
            }
        )
    return reports


def _decisive(health: Health) -> Evidence | None:
    """The comparison that best explains the level: the first row of the deciding threshold."""
    if not health.evidence:
        return None
    wanted = health.level if health.level in (Level.UNAVAILABLE, Level.DEGRADED) else Level.DEGRADED
    rows = [row for row in health.evidence if row.level == wanted] or list(health.evidence)
    return rows[0]


def _reason(slo: SLO, backend: str, health: Health, params: dict[str, str]) -> dict[str, Any]:
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
        sli = compile_sli(slo.spec, row.window, {k: [v] for k, v in params.items()})
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
