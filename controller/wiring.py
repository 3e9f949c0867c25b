"""Wiring: from a loaded configuration to a ready :class:`~.reconcile.Reconciler`.

Chooses the state directory (``--state-dir``, else the Controller's ``stateDir``, else
``.trimtab``; a ``--dry-run`` keeps its state in ``<stateDir>/dry-run``), builds one traffic
adapter per target from its route block, and opens the decision log
(``<stateDir>/decisions.jsonl``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trimtab.adapters.file import FileAdapter
from trimtab.slo import Config
from trimtab.slo.models import Balance, Rollout
from trimtab.slo.ports import MetricSource, TrafficAdapter

from .decisions import DecisionLog
from .reconcile import Reconciler, ReconcilerConfig
from .state import StateStore
from .targets import Target, targets

__all__ = ["Wiring", "build_adapter", "state_dir", "wire"]


class AdapterUnavailable(ValueError):
    """The route names an adapter this version of trimtab cannot drive yet."""


def state_dir(config: Config, override: Path | None) -> Path:
    """Where state and decisions live."""
    if override is not None:
        return override
    if config.controller is not None:
        return Path(config.controller.spec.state_dir)
    return Path(".trimtab")


def build_adapter(spec: Rollout | Balance, target: Target, *, dry_run: bool) -> TrafficAdapter:
    """The traffic adapter of a target's route block (which writes nothing in dry-run)."""
    route = spec.spec.route
    if route.file is not None:
        nominal = (
            {spec.spec.stable: 100, spec.spec.canary: 0}
            if isinstance(spec, Rollout)
            else dict(spec.spec.backends)
        )
        return FileAdapter(route.file, target.backends, initial=nominal, create=not dry_run)
    raise AdapterUnavailable(
        f"{target.key}: the {route.adapter} adapter is not available in this version yet; "
        "use the file adapter or `trimtab plan` to see decisions"
    )


@dataclass(frozen=True)
class Wiring:
    reconciler: Reconciler
    targets: list[Target]
    log: DecisionLog
    states: StateStore


def wire(
    config: Config,
    source: MetricSource,
    *,
    directory: Path,
    dry_run: bool,
    actor: str = "controller",
) -> Wiring:
    """A reconciler over every target of ``config``."""
    chosen = targets(config)
    specs: dict[str, Rollout | Balance] = {
        **{f"Rollout/{n}": r for n, r in config.rollouts.items()},
        **{f"Balance/{n}": b for n, b in config.balances.items()},
    }
    adapters = {t.key: build_adapter(specs[t.key], t, dry_run=dry_run or t.dry_run) for t in chosen}
    # A dry run remembers the weights it would have set; kept apart, they never make a later
    # real run see drift. Its decisions go to the one log, marked dryRun.
    states = StateStore(directory / "dry-run" if dry_run else directory)
    log = DecisionLog(directory / "decisions.jsonl")
    reconciler = Reconciler(
        ReconcilerConfig(
            source=source,
            adapters=adapters,
            states=states,
            log=log,
            specs=specs,
            dry_run=dry_run,
            actor=actor,
        )
    )
    return Wiring(reconciler, chosen, log, states)
