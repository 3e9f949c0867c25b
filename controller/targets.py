"""Targets: the Rollouts and Balances the controller steers, and what each needs measured."""

from __future__ import annotations

from dataclasses import dataclass

from trimtab.slo import Config
from trimtab.slo.health import health_windows
from trimtab.slo.models import SLO, Balance, Rollout
from trimtab.slo.ports import SeriesRequest

__all__ = ["Target", "requests_for", "targets"]


@dataclass(frozen=True)
class Target:
    """One Rollout or Balance, with the backends it moves traffic between."""

    kind: str  # "Rollout" or "Balance"
    name: str
    backends: tuple[str, ...]
    slos: tuple[tuple[SLO, tuple[tuple[str, str], ...]], ...]  # (SLO, sorted params)
    dry_run: bool

    @property
    def key(self) -> str:
        """``Kind/name``: how a target is named in requests, decisions and metrics."""
        return f"{self.kind}/{self.name}"


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
    slos = tuple(
        (config.slos[ref.name], tuple(sorted(ref.params.items()))) for ref in model.spec.slos
    )
    return Target(kind, name, backends, slos, model.spec.dry_run)


def requests_for(target: Target) -> list[SeriesRequest]:
    """One request per SLO of ``target``, for every window its health definition names."""
    return [
        SeriesRequest.of(target.key, slo, dict(params), health_windows(slo.spec))
        for slo, params in target.slos
    ]
