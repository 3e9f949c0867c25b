"""Checks that relate several fields or documents, each pointing at the field to fix.

Per SLO: indicator selectors parse, placeholders sit inside label matchers, the health definition
fits the indicator (burn rates for budget-based SLOs, ``above``/``below`` for value-based ones),
degraded is less severe than unavailable, windows ascend. Per Rollout and Balance: the SLOs they
name exist and tell backends apart, ``params`` fill every placeholder, steps rise and end at 100,
weights sum to 100, the route maps exactly the target's backends.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from .errors import Problem
from .health import is_budget_based
from .models import SLO, Balance, HealthSpec, LevelThreshold, Rollout, SLORef
from .presets import expand
from .promql import PromQLError, fill_query, parse_selector, placeholders
from .yamlsource import SourceDocument

if TYPE_CHECKING:
    from .loader import Config

__all__ = ["check", "slo_placeholders"]

Path = tuple[str | int, ...]


def check(config: Config) -> list[Problem]:
    """Every cross-field and cross-document problem in ``config``."""
    problems: list[Problem] = []
    for name, slo in config.slos.items():
        problems.extend(_check_slo(slo, config.origin("SLO", name)))
    for name, rollout in config.rollouts.items():
        doc = config.origin("Rollout", name)
        problems.extend(_check_refs(rollout.spec.slos, config, doc))
        problems.extend(_check_rollout(rollout, doc))
    for name, balance in config.balances.items():
        doc = config.origin("Balance", name)
        problems.extend(_check_refs(balance.spec.slos, config, doc))
        problems.extend(_check_balance(balance, doc))
    return problems


def slo_placeholders(slo: SLO) -> set[str]:
    """The ``{{param}}`` names an SLO's queries use (``{{window}}`` excluded)."""
    names: set[str] = set()
    for _, text in _query_fields(slo):
        names |= placeholders(text)
    names.discard("window")
    return names


def _query_fields(slo: SLO) -> Iterator[tuple[Path, str]]:
    indicator = slo.spec.indicator
    base: Path = ("spec", "indicator", indicator.kind)
    block = indicator.chosen[1]
    for name, info in type(block).model_fields.items():
        value = getattr(block, name)
        if isinstance(value, str) and name not in ("name", "signal", "aggregate", "unit"):
            yield (*base, info.alias or name), value


def _check_slo(slo: SLO, doc: SourceDocument) -> Iterator[Problem]:
    indicator = slo.spec.indicator
    if indicator.preset is not None:
        try:
            expand(indicator.preset)
        except ValueError as exc:
            yield doc.problem(("spec", "indicator", "preset", "signal"), str(exc))
            return
    yield from _check_queries(slo, doc)
    yield from _check_health(slo, doc)


def _check_queries(slo: SLO, doc: SourceDocument) -> Iterator[Problem]:
    kind = slo.spec.indicator.kind
    for path, text in _query_fields(slo):
        field = path[-1]
        try:
            if kind == "preset" and field == "selector":
                parse_selector(text, metric_required=False) if text else None  # "" selects all
            elif kind == "errorRatio":
                parse_selector(text, metric_required=True)
            elif kind in ("latency", "quantile"):
                if field == "histogram":
                    parse_selector(text)
                    if "{" in text:
                        raise PromQLError("histogram is a metric name; put matchers in 'selector'")
                else:
                    parse_selector(text, metric_required=False) if text else None
            else:
                fill_query(text, 300.0, None)
        except PromQLError as exc:
            yield doc.problem(path, str(exc))
            continue
        if "window" in placeholders(text) and kind not in ("events", "raw"):
            yield doc.problem(path, "{{window}} is only for full queries (events, raw)")
        if kind in ("events", "raw") and "window" not in placeholders(text):
            yield doc.problem(path, "a full query needs {{window}} where the range goes")


def _check_health(slo: SLO, doc: SourceDocument) -> Iterator[Problem]:
    budget = is_budget_based(slo.spec)
    health = slo.spec.health
    if budget and slo.spec.objective is None:
        yield doc.problem(
            ("spec", "objective"),
            f"{slo.spec.indicator.kind} is budget-based: give an 'objective' such as 99.9",
            key=True,
        )
    if health is None:
        if not budget:
            yield doc.problem(
                ("spec", "indicator"),
                "a value-based indicator needs 'health' with degraded/unavailable "
                "'above' or 'below' thresholds",
                key=True,
            )
        return
    for level in ("degraded", "unavailable"):
        threshold: LevelThreshold = getattr(health, level)
        path: Path = ("spec", "health", level)
        if budget and threshold.comparison != "burnRate":
            yield doc.problem(
                (*path, threshold.comparison),
                f"{slo.spec.indicator.kind} is budget-based: use 'burnRate', not "
                f"'{threshold.comparison}'",
                key=True,
            )
        if not budget and threshold.comparison == "burnRate":
            yield doc.problem(
                (*path, "burnRate"),
                f"{slo.spec.indicator.kind} is judged by value: use 'above' or 'below'",
                key=True,
            )
        windows = threshold.windows
        for i in range(1, len(windows)):
            if windows[i] <= windows[i - 1]:
                yield doc.problem(
                    (*path, "windows", i), "windows must be listed from shortest to longest"
                )
    yield from _check_order(health, doc)


def _check_order(health: HealthSpec, doc: SourceDocument) -> Iterator[Problem]:
    d, u = health.degraded, health.unavailable
    if d.comparison != u.comparison:
        yield doc.problem(
            ("spec", "health", "unavailable", u.comparison),
            f"degraded uses '{d.comparison}' and unavailable '{u.comparison}': use the same",
            key=True,
        )
        return
    worse = d.value > u.value if d.comparison == "below" else d.value < u.value
    if not worse:
        relation = "above" if d.comparison == "below" else "below"
        yield doc.problem(
            ("spec", "health", "degraded", d.comparison),
            f"degraded threshold {d.value:g} must be {relation} the unavailable one "
            f"({u.value:g}): degraded is the less severe level",
        )


def _check_refs(refs: Sequence[SLORef], config: Config, doc: SourceDocument) -> Iterator[Problem]:
    seen: set[str] = set()
    for i, ref in enumerate(refs):
        path: Path = ("spec", "slos", i)
        if ref.name in seen:
            yield doc.problem((*path, "name"), f"SLO {ref.name!r} is listed twice")
        seen.add(ref.name)
        slo = config.slos.get(ref.name)
        if slo is None and ("SLO", ref.name) in config.invalid:
            continue  # its own problems are reported where it is defined
        if slo is None:
            known = ", ".join(sorted(config.slos)) or "none loaded"
            yield doc.problem((*path, "name"), f"no SLO named {ref.name!r} (known: {known})")
            continue
        if slo.spec.backend_label is None:
            yield doc.problem(
                (*path, "name"),
                f"SLO {ref.name!r} has no backendLabel, so it cannot tell backends apart",
            )
        needed = slo_placeholders(slo)
        missing = sorted(needed - set(ref.params))
        if missing:
            yield doc.problem(
                (*path, "params"),
                f"SLO {ref.name!r} needs params for " + ", ".join("{{" + m + "}}" for m in missing),
                key=True,
            )
        for extra in sorted(set(ref.params) - needed):
            yield doc.problem(
                (*path, "params", extra),
                f"SLO {ref.name!r} has no {{{{{extra}}}}} placeholder",
                key=True,
            )


def _check_route(
    expected: set[str], route_backends: set[str] | None, adapter: str, doc: SourceDocument
) -> Iterator[Problem]:
    if route_backends is None or route_backends == expected:
        return
    path: Path = ("spec", "route", adapter)
    missing = sorted(expected - route_backends)
    unknown = sorted(route_backends - expected)
    if missing:
        yield doc.problem(path, f"route maps no {', '.join(missing)}", key=True)
    if unknown:
        yield doc.problem(path, f"route maps unknown backends {', '.join(unknown)}", key=True)


def _check_rollout(rollout: Rollout, doc: SourceDocument) -> Iterator[Problem]:
    spec = rollout.spec
    if spec.stable == spec.canary:
        yield doc.problem(("spec", "canary"), "canary must differ from stable")
    previous = 0
    for i, step in enumerate(spec.steps):
        if step.weight <= previous:
            yield doc.problem(
                ("spec", "steps", i, "weight"),
                f"steps must rise: {step.weight} follows {previous}",
            )
        previous = max(previous, step.weight)
    if spec.steps[-1].weight != 100:
        yield doc.problem(
            ("spec", "steps", len(spec.steps) - 1, "weight"),
            f"the last step must reach 100, not {spec.steps[-1].weight}",
        )
    yield from _check_route(
        {spec.stable, spec.canary}, spec.route.backends(), spec.route.adapter, doc
    )


def _check_balance(balance: Balance, doc: SourceDocument) -> Iterator[Problem]:
    spec = balance.spec
    total = sum(spec.backends.values())
    if total != 100:
        yield doc.problem(("spec", "backends"), f"weights must sum to 100, not {total}")
    if spec.drain.degraded > spec.drain.unavailable:
        yield doc.problem(
            ("spec", "drain", "degraded"),
            f"degraded drain {spec.drain.degraded} exceeds unavailable drain "
            f"{spec.drain.unavailable}",
        )
    if spec.route.adapter == "ingressNginx":
        yield doc.problem(
            ("spec", "route", "ingressNginx"),
            "ingressNginx moves a canary's weight only; use it in a Rollout",
            key=True,
        )
    yield from _check_route(set(spec.backends), spec.route.backends(), spec.route.adapter, doc)
