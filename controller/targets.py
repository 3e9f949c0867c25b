"""Targets: the Rollouts and Balances the controller steers, and what each needs measured."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from trimtab.slo import Config
from trimtab.slo.health import health_windows
from trimtab.slo.models import SLO, Balance, Rollout
from trimtab.slo.ports import SeriesRequest

__all__ = ["BALANCE_INTERVAL", "Target", "by_interval", "requests_for", "targets"]

BALANCE_INTERVAL = 30.0
"""Seconds between a Balance's cycles (a Balance has no analysis interval)."""


@dataclass(frozen=True, slots=True)  # slots: 10,000 of them at scale
class Target:
    """One Rollout or Balance, with the backends it moves traffic between."""

    kind: str  # "Rollout" or "Balance"
    name: str
    backends: tuple[str, ...]
    slos: tuple[tuple[SLO, tuple[tuple[str, str], ...]], ...]  # (SLO, sorted params)
    dry_run: bool
    interval: float | None = None  # a Rollout's analysis interval: windows clip to multiples
    # ``Kind/name``: how a target is named in requests, decisions and metrics (one string per
    # target, however many maps it keys).
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.kind}/{self.name}")


def targets(config: Config) -> list[Target]:
    """Every target of ``config``, Rollouts then Balances, each in name order."""
    found: list[Target] = []
    for name, rollout in sorted(config.rollouts.items()):
        found.append(
            _target("Rollout", name, rollout, (rollout.spec.stable, rollout.spec.canary), config)
        )
    for name, balance in sorted(config.balances.items()):
        found.append(_target("Balance", name, balance, tuple(balance.spec.backends), config))
    return found


def _target(
    kind: str, name: str, model: Rollout | Balance, backends: tuple[str, ...], config: Config
) -> Target:
    params: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
    slos = tuple(
        (config.slos[ref.name], params.setdefault(pairs, pairs))  # equal params: one tuple
        for ref in model.spec.slos
        for pairs in [tuple(sorted(ref.params.items()))]
    )
    interval = model.spec.analysis.interval if isinstance(model, Rollout) else None
    return Target(kind, name, backends, slos, model.spec.dry_run, interval)


def requests_for(target: Target, *, shifted_for: float | None = None) -> list[SeriesRequest]:
    """One request per SLO of ``target``, for every window its health definition names.

    ``shifted_for``: seconds since a Rollout's last shift. Windows longer than that are clipped
    to it, rounded down to whole analysis intervals (at least one), so the traffic split before
    the shift never judges the canary, and targets shifted at similar times still share queries.
    """
    clip = None
    if shifted_for is not None and target.interval:
        clip = max(target.interval, math.floor(shifted_for / target.interval) * target.interval)
    return [
        SeriesRequest.canonical(target.key, slo, params, health_windows(slo.spec), clip)
        for slo, params in target.slos
    ]


def by_interval(chosen: list[Target]) -> dict[float, list[Target]]:
    """``chosen`` grouped by how often each is judged (a Rollout's analysis interval, else
    :data:`BALANCE_INTERVAL`), shortest first: one scheduler job, and one query batch, each."""
    groups: dict[float, list[Target]] = {}
    for target in chosen:
        groups.setdefault(target.interval or BALANCE_INTERVAL, []).append(target)
    return dict(sorted(groups.items()))
