"""Wiring: from a loaded configuration to a ready :class:`~.reconcile.Reconciler`.

Chooses the state directory (``--state-dir``, else the Controller's ``stateDir``, else
``.trimtab``; a ``--dry-run`` keeps its state in ``<stateDir>/dry-run``), builds one traffic
adapter per target from its route block, and opens the decision log
(``<stateDir>/decisions.jsonl``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trimtab.adapters.envoy import EnvoyAdapter
from trimtab.adapters.file import FileAdapter
from trimtab.adapters.haproxy import HAProxyAdapter
from trimtab.adapters.nginx import NginxAdapter
from trimtab.slo import Config
from trimtab.slo.models import BalanceSpec, RolloutSpec
from trimtab.slo.ports import MetricSource, TrafficAdapter, Weights
from trimtab.slo.routes import EnvoyRoute, FileRoute, HAProxyRoute, NginxRoute
from trimtab.slo.sharing import Pool, share

from .decisions import DecisionLog
from .reconcile import Reconciler, ReconcilerConfig
from .state import StateStore
from .targets import Target, targets

__all__ = [
    "FACTORIES",
    "AdapterUnavailable",
    "Wiring",
    "build_adapter",
    "nominal_weights",
    "policy_specs",
    "state_dir",
    "wire",
]


class AdapterUnavailable(ValueError):
    """The route names an adapter this version of trimtab cannot drive yet."""


def state_dir(config: Config, override: Path | None) -> Path:
    """Where state and decisions live."""
    if override is not None:
        return override
    if config.controller is not None:
        return Path(config.controller.spec.state_dir)
    return Path(".trimtab")


AdapterFactory = Callable[[Any, Sequence[str], Weights, bool], TrafficAdapter]
"""Builds a traffic adapter from (route block, backends, nominal weights, dry_run)."""


def _envoy(
    route: EnvoyRoute, backends: Sequence[str], nominal: Weights, dry_run: bool
) -> EnvoyAdapter:
    return EnvoyAdapter(route, backends, initial=nominal, create=not dry_run)


def _file(
    route: FileRoute, backends: Sequence[str], nominal: Weights, dry_run: bool
) -> FileAdapter:
    return FileAdapter(route, backends, initial=nominal, create=not dry_run)


def _haproxy(
    route: HAProxyRoute, backends: Sequence[str], nominal: Weights, dry_run: bool
) -> HAProxyAdapter:
    # HAProxy's running weights are the truth: nominal is validated, never written.
    return HAProxyAdapter(route, backends, initial=nominal, create=not dry_run)


def _nginx(
    route: NginxRoute, backends: Sequence[str], nominal: Weights, dry_run: bool
) -> NginxAdapter:
    # Without a pidFile, verification waits a fixed settle time after each reload.
    return NginxAdapter(
        route, backends, initial=nominal, create=not dry_run, pid_file=route.pid_file
    )


# One entry per adapter block this version can drive, by its YAML name.
FACTORIES: dict[str, AdapterFactory] = {
    "envoy": _envoy,
    "file": _file,
    "haproxy": _haproxy,
    "nginx": _nginx,
}


def nominal_weights(spec: RolloutSpec | BalanceSpec) -> Weights:
    """Where traffic starts: all on a Rollout's stable, a Balance's nominal weights."""
    if isinstance(spec, RolloutSpec):
        return {spec.stable: 100, spec.canary: 0}
    return dict(spec.backends)


def build_adapter(
    spec: RolloutSpec | BalanceSpec, target: Target, *, dry_run: bool
) -> TrafficAdapter:
    """The traffic adapter of a target's route block (which writes nothing in dry-run)."""
    name, block = spec.route.chosen
    factory = FACTORIES.get(name)
    if factory is None:
        raise AdapterUnavailable(
            f"{target.key}: the {name} adapter is not available in this version yet; "
            f"use one of {', '.join(sorted(FACTORIES))}, or `trimtab plan` to see decisions"
        )
    return factory(block, target.backends, nominal_weights(spec), dry_run)


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
    adapters = {
        t.key: build_adapter(_spec(config, t), t, dry_run=dry_run or t.dry_run) for t in chosen
    }
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
            specs=policy_specs(config),
            dry_run=dry_run,
            actor=actor,
        )
    )
    return Wiring(reconciler, chosen, log, states)


def policy_specs(config: Config) -> dict[str, RolloutSpec | BalanceSpec]:
    """Each target's spec as its policy reads it, by target key: without its SLO references,
    which the target holds resolved, with their params. At 10,000 Rollouts of three SLOs each,
    the references were 13 MB that a running controller never reads. (A copy is not validated,
    so the empty list stands; the copies share their sets of given fields.)"""
    shared = Pool()
    return {
        f"{kind}/{name}": share(model.spec.model_copy(update={"slos": []}), shared)
        for kind, models in (("Rollout", config.rollouts), ("Balance", config.balances))
        for name, model in models.items()
    }


def _spec(config: Config, target: Target) -> RolloutSpec | BalanceSpec:
    documents = config.rollouts if target.kind == "Rollout" else config.balances
    return documents[target.name].spec
