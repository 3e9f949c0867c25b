"""Grafana dashboards built from the SLO models the controller judges with (DESIGN.md section 8).

Three dashboards, built with ``grafana-foundation-sdk`` (pinned in ``pyproject.toml``: its
releases carry an epoch, so an unpinned install may pick an older Grafana schema):

- **Overview** (``trimtab-overview``): per Rollout/Balance, the weights over time and the health
  per SLO and backend as a state timeline; every decision that moves traffic (any action but
  ``none`` and ``hold``) is an annotation.
- **SLO detail**: health as the controller judged it and as the recording rules compute it, the
  SLI per backend, the error budget remaining, and per window the burn rate (budget-based SLOs)
  or the value (value-based ones) against the DEGRADED and UNAVAILABLE thresholds.
- **Controller** (``trimtab-controller``): cycle duration, source and adapter errors, decisions
  per action, and which instance leads (the one running cycles).

They read only series trimtab produces: the ``trimtab:*`` recording rules of
:mod:`trimtab.slo.rules` and the controller's own ``trimtab_*`` metrics.

:func:`generic` is the bundled set, committed as JSON beside this module: one SLO dashboard with
``slo``, ``target`` and ``window`` variables whose thresholds are the controller's
``trimtab_slo_threshold`` series. :func:`for_config` bakes a configuration in: one SLO dashboard
per SLO, each window's panel carrying exactly the thresholds whose level lists that window, as
threshold steps drawn as dashed lines (orange DEGRADED, red UNAVAILABLE).

Output is deterministic (stable uids, panel ids in order, sorted keys), so the committed JSON can
be compared with a fresh build. ``python -m trimtab.dashboards.generate`` rewrites it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    StackingConfig,
)
from grafana_foundation_sdk.builders.dashboard import (
    AnnotationQuery,
    CustomVariable,
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from trimtab.slo import Config, rules
from trimtab.slo.durations import format_duration
from trimtab.slo.health import Level, error_budget, health_spec, is_budget_based
from trimtab.slo.models import SLO, LevelThreshold
from trimtab.slo.promql import quote

__all__ = [
    "BUNDLED_DIR",
    "LEVEL_COLORS",
    "GeneratedDashboard",
    "controller",
    "for_config",
    "generic",
    "overview",
    "provisioning_provider",
    "slo_detail",
    "slo_generic",
    "slo_uid",
    "threshold_steps",
    "write",
]

BUNDLED_DIR = Path(__file__).resolve().parent
"""Where the generic dashboards are committed (package data of ``trimtab.dashboards``)."""
LEVEL_COLORS = {Level.DEGRADED: "orange", Level.UNAVAILABLE: "red"}
"""The colour of each level's threshold step; HEALTHY is green."""
HEALTHY_COLOR = "green"
TAGS = ["trimtab"]
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
BUDGET_WINDOWS = ("7d", "14d", "28d", "30d", "90d")
MOVES = 'action!~"none|hold"'  # decisions that change (or try to change) traffic
_LEVELS = {
    str(level.value): ValueMappingResult(text=level.name, color=color, index=i)
    for i, (level, color) in enumerate(
        (
            (Level.UNKNOWN, "purple"),
            (Level.HEALTHY, HEALTHY_COLOR),
            (Level.DEGRADED, LEVEL_COLORS[Level.DEGRADED]),
            (Level.UNAVAILABLE, LEVEL_COLORS[Level.UNAVAILABLE]),
        )
    )
}
_UID_MAX = 40  # Grafana's limit


@dataclass(frozen=True)
class GeneratedDashboard:
    """One dashboard: its uid, title and Grafana JSON model (``id`` unset: Grafana assigns)."""

    uid: str
    title: str
    model: dict[str, Any]

    @property
    def filename(self) -> str:
        return f"{self.uid}.json"

    def to_json(self) -> str:
        """The model as committed: sorted keys, two-space indent, a final newline."""
        return json.dumps(self.model, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------------------ building blocks


def _series(metric: str, **matchers: str) -> str:
    """``metric{k="v", …}`` with the values quoted for PromQL."""
    return f"{metric}{{{', '.join(f'{k}={quote(v)}' for k, v in matchers.items())}}}"


def _queries(queries: Sequence[tuple[str, str]], *, instant: bool = False) -> list[Dataquery]:
    """Prometheus queries ``(expr, legend)`` with refIds A, B, …"""
    built = []
    for i, (expr, legend) in enumerate(queries):
        q = Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i))
        q = q.datasource(DATASOURCE)
        built.append(q.instant() if instant else q.range())
    return built


def _timeseries(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[tuple[str, str]],
    *,
    span: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(span)
        .height(height)
        .fill_opacity(10)
    )
    return panel.targets(list(_queries(queries)))


def _health(
    title: str, description: str, queries: Sequence[tuple[str, str]], *, span: int = 12
) -> statetimeline.Panel:
    """A state timeline of health levels (-1 UNKNOWN … 2 UNAVAILABLE)."""
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(span)
        .height(8)
        .mappings([ValueMap(options=dict(_LEVELS))])
        .thresholds(_steps([(HEALTHY_COLOR, None)]))
        .show_value(common.VisibilityMode.NEVER)
        .targets(list(_queries(queries)))
    )


def _steps(steps: Iterable[tuple[str, float | None]]) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for color, value in steps])
    )


def _dashboard(uid: str, title: str, description: str) -> Dashboard:
    """A dashboard with trimtab's defaults: the ``datasource`` variable and links to the others."""
    return (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .link(
            DashboardLink("trimtab")
            .type(DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .keep_time(True)
            .include_vars(False)
        )
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )


def _variable(name: str, label: str, query: str, *, multi: bool = True) -> QueryVariable:
    variable = (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )
    if multi:
        variable = variable.multi(True).include_all(True).all_value(".*")
    return variable


def _finish(builder: Dashboard, uid: str, title: str) -> GeneratedDashboard:
    """Encode, number the panels in order, and complete what the SDK does not model."""
    model: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(builder.build()))
    next_id = 1
    for panel in model.get("panels", []):
        for each in (panel, *panel.get("panels", [])):
            each["id"] = next_id
            next_id += 1
    for annotation in model.get("annotations", {}).get("list", []):
        # Prometheus annotation fields (Grafana reads them beside ``expr``)
        annotation.update(
            step="30s",
            titleFormat="{{action}}",
            textFormat="{{target}}: {{action}}",
            tagKeys="target,action",
            useValueForTime=False,
        )
    return GeneratedDashboard(uid, title, model)


# ------------------------------------------------------------------------------------ overview


def overview() -> GeneratedDashboard:
    """Every Rollout and Balance: phase, weights, health per SLO, decisions as annotations."""
    uid, title = "trimtab-overview", "trimtab / Overview"
    target = 'target="$target"'
    builder = (
        _dashboard(uid, title, "Every Rollout and Balance: weights, health, decisions.")
        .with_variable(_variable("target", "Target", "label_values(trimtab_route_weight, target)"))
        .annotation(
            AnnotationQuery()
            .name("Decisions")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("blue")
            .expr(
                "sum by (target, action) (changes(trimtab_decisions_total"
                f'{{target=~"$target", {MOVES}}}[1m])) > 0'
            )
        )
        .with_row(Row("$target").repeat("target"))
        .with_panel(
            statetimeline.Panel()
            .title("Phase")
            .description(
                "The target's phase over time (trimtab_target_phase): Pending, Progressing, "
                "Paused, Promoted, RolledBack for a Rollout; Balancing for a Balance."
            )
            .datasource(DATASOURCE)
            .span(24)
            .height(3)
            .show_value(common.VisibilityMode.NEVER)
            .targets(list(_queries([(f"trimtab_target_phase{{{target}}} == 1", "{{phase}}")])))
        )
        .with_panel(
            _timeseries(
                "Weights",
                "Percent of the route's traffic per backend, as the last decision left it.",
                "percent",
                [(f"trimtab_route_weight{{{target}}}", "{{backend}}")],
            )
            .min(0)
            .max(100)
            .stacking(StackingConfig().mode(common.StackingMode.NORMAL))
            .fill_opacity(40)
        )
        .with_panel(
            _health(
                "Health per SLO",
                "The level trimtab acted on, per backend and SLO (trimtab_slo_health).",
                [(f"trimtab_slo_health{{{target}}}", "{{backend}} · {{slo}}")],
            )
        )
        .with_panel(
            _timeseries(
                "Decisions that move traffic",
                "Decisions per action (none and hold left out); each is also an annotation.",
                "short",
                [
                    (
                        "sum by (action) (increase(trimtab_decisions_total"
                        f"{{{target}, {MOVES}}}[$__rate_interval]))",
                        "{{action}}",
                    )
                ],
                span=24,
                height=6,
            ).draw_style(common.GraphDrawStyle.BARS)
        )
    )
    return _finish(builder, uid, title)


# ---------------------------------------------------------------------------------- controller


def controller() -> GeneratedDashboard:
    """The controller itself: cycles, errors, decisions, leadership."""
    uid, title = "trimtab-controller", "trimtab / Controller"
    rate = "[$__rate_interval]"
    cycling = "changes(trimtab_cycle_duration_seconds_count[5m]) > 0"
    builder = (
        _dashboard(uid, title, "The trimtab controller: cycles, errors, decisions, leader.")
        .with_row(Row("Leader"))
        .with_panel(
            stat.Panel()
            .title("Controllers running cycles")
            .description(
                "Only the leader runs cycles. 1 is right; 0 means nothing acts on the SLOs; "
                "more than 1 means leader election is broken (two controllers move traffic)."
            )
            .datasource(DATASOURCE)
            .span(6)
            .height(6)
            .thresholds(_steps([("red", None), ("green", 1), ("red", 2)]))
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
            .targets(list(_queries([(f"count({cycling}) or vector(0)", "controllers")])))
        )
        .with_panel(
            _health(
                "Leader",
                "Which instance ran cycles: the leader. Standby controllers do not cycle.",
                [
                    (
                        "max by (instance) (changes(trimtab_cycle_duration_seconds_count"
                        f"{rate}) > bool 0)",
                        "{{instance}}",
                    )
                ],
                span=18,
            ).mappings(
                [
                    ValueMap(
                        options={
                            "0": ValueMappingResult(text="idle", color="gray", index=0),
                            "1": ValueMappingResult(text="leading", color="green", index=1),
                        }
                    )
                ]
            )
        )
        .with_row(Row("Cycles"))
        .with_panel(
            _timeseries(
                "Cycle duration",
                "Seconds per reconcile cycle (all targets), by quantile.",
                "s",
                [
                    (
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(trimtab_cycle_duration_seconds_bucket{rate})))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.9, 0.99)
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Cycles per minute",
                "How often the controller cycles (its shortest analysis interval).",
                "short",
                [(f"60 * sum(rate(trimtab_cycle_duration_seconds_count{rate}))", "cycles")],
            )
        )
        .with_row(Row("Errors and decisions"))
        .with_panel(
            _timeseries(
                "Metric-source errors",
                "Query batches with a failure. While the source fails, health is UNKNOWN and "
                "weights hold (runbook: no-data).",
                "short",
                [(f"sum(increase(trimtab_source_errors_total{rate}))", "source errors")],
                span=8,
            )
        )
        .with_panel(
            _timeseries(
                "Adapter errors",
                "Failed calls to the traffic adapter per target (runbook: adapter-error).",
                "short",
                [
                    (
                        f"sum by (target) (increase(trimtab_adapter_errors_total{rate}))",
                        "{{target}}",
                    )
                ],
                span=8,
            )
        )
        .with_panel(
            _timeseries(
                "Decisions per action",
                "Every decision of every cycle, holds included.",
                "short",
                [(f"sum by (action) (increase(trimtab_decisions_total{rate}))", "{{action}}")],
                span=8,
            )
            .draw_style(common.GraphDrawStyle.BARS)
            .stacking(StackingConfig().mode(common.StackingMode.NORMAL))
        )
    )
    return _finish(builder, uid, title)


# ------------------------------------------------------------------------------ SLO, generic


def _threshold_style(panel: timeseries.Panel) -> timeseries.Panel:
    return panel.thresholds_style(
        GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
    )


def _threshold_series(panel: timeseries.Panel) -> timeseries.Panel:
    """Series named ``<LEVEL> threshold`` drawn as dashed lines in the level's colour."""
    for level, color in LEVEL_COLORS.items():
        panel = panel.override_by_name(
            f"{level.name} threshold",
            [
                DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color}),
                DynamicConfigValue(
                    id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
                ),
                DynamicConfigValue(id_val="custom.fillOpacity", value=0),
            ],
        )
    return panel


def slo_generic() -> GeneratedDashboard:
    """One SLO at a time (``slo`` variable); thresholds from ``trimtab_slo_threshold``."""
    uid, title = "trimtab-slo", "trimtab / SLO"
    slo, window = 'slo="$slo"', 'window="$window"'
    either = f'{{__name__=~"{rules.BURN_RATE}|{rules.VALUE}", {slo}}}'
    builder = (
        _dashboard(
            uid,
            title,
            "One SLO: health, SLI per backend, error budget, and burn rate or value per window "
            "against the thresholds the controller judges with (trimtab_slo_threshold).",
        )
        .with_variable(_variable("slo", "SLO", f"label_values({rules.LEVEL}, slo)", multi=False))
        .with_variable(
            _variable("target", "Target", f"label_values(trimtab_slo_health{{{slo}}}, target)")
        )
        .with_variable(_variable("window", "Window", f"label_values({either}, window)"))
        .with_variable(
            CustomVariable("budget_window")
            .label("SLO window")
            .values(",".join(BUDGET_WINDOWS))
            .current(VariableOption(selected=True, text="30d", value="30d"))
        )
    )
    builder = _slo_health_rows(builder, "$slo", "__auto", 'target=~"$target"')
    builder = builder.with_panel(
        _timeseries(
            "SLI per backend",
            "What trimtab measured per backend and window: the error ratio (budget-based "
            "SLOs) or the value (value-based).",
            "short",
            [
                (
                    f'trimtab_slo_value{{{slo}, target=~"$target"}}',
                    "{{target}} · {{backend}} {{window}}",
                )
            ],
        )
    ).with_panel(
        _budget_panel(
            f"1 - avg_over_time({_series(rules.BURN_RATE, slo='$slo', window='1h')}"
            "[$budget_window])",
            "__auto",
        )
    )
    window_panel = _timeseries(
        "Over $window",
        "Burn rate (budget-based SLOs) or value (value-based) against the DEGRADED and "
        "UNAVAILABLE thresholds. A level counts only over the windows its health definition "
        "lists; `trimtab dashboards export -f` draws exactly those per window.",
        "short",
        [
            (
                f"{rules.BURN_RATE}{{{slo}, {window}}} or {rules.VALUE}{{{slo}, {window}}}",
                "__auto",
            ),
            (f"max by (level) (trimtab_slo_threshold{{{slo}}})", "{{level}} threshold"),
        ],
        span=8,
    )
    builder = builder.with_row(Row("Burn rate or value per window")).with_panel(
        _threshold_series(window_panel).repeat("window").repeat_direction("h").max_per_row(3)
    )
    return _finish(builder, uid, title)


def _slo_health_rows(builder: Dashboard, slo: str, backend_legend: str, target: str) -> Dashboard:
    """The two health timelines: the controller's verdict and the recording rules'."""
    return (
        builder.with_row(Row("Health"))
        .with_panel(
            _health(
                "Health as trimtab judged it",
                "The level the controller acted on, per target and backend (trimtab_slo_health).",
                [(f"trimtab_slo_health{{slo={quote(slo)}, {target}}}", "{{target}} · {{backend}}")],
            )
        )
        .with_panel(
            _health(
                "Health from the recording rules",
                "trimtab:slo_health:level: the same comparisons compiled to PromQL by "
                "`trimtab rules`. It should agree with the controller's verdict.",
                [(_series(rules.LEVEL, slo=slo), backend_legend)],
            )
        )
        .with_row(Row("SLI and error budget"))
    )


def _budget_panel(expr: str, legend: str) -> stat.Panel:
    return (
        stat.Panel()
        .title("Error budget remaining")
        .description(
            "1 − the mean hourly burn rate over the SLO window: the share of the budget left "
            "(budget-based SLOs; below 0 the objective is missed)."
        )
        .datasource(DATASOURCE)
        .unit("percentunit")
        .span(12)
        .height(8)
        .thresholds(_steps([("red", None), ("orange", 0), ("green", 0.25)]))
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
        .targets(list(_queries([(expr, legend)], instant=True)))
    )


# ------------------------------------------------------------------------- SLO, from a config


def slo_uid(name: str) -> str:
    """The uid of the baked dashboard of SLO ``name`` (Grafana allows 40 characters)."""
    uid = f"trimtab-slo-{name}"
    if len(uid) <= _UID_MAX:
        return uid
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{uid[: _UID_MAX - 9]}-{digest}"


def _applicable(spec_slo: SLO, window: float) -> list[tuple[Level, LevelThreshold]]:
    """The levels whose health definition lists ``window``, most severe last."""
    h = health_spec(spec_slo.spec)
    return [
        (level, threshold)
        for level, threshold in ((Level.DEGRADED, h.degraded), (Level.UNAVAILABLE, h.unavailable))
        if window in threshold.windows
    ]


def threshold_steps(
    levels: Sequence[tuple[Level, LevelThreshold]],
) -> list[tuple[str, float | None]]:
    """Grafana threshold steps ``(colour, value)`` for the levels that apply to one window.

    ``burnRate`` and ``above``: green below, each level's colour from its value up.
    ``below``: the most severe colour at the bottom, green from the mildest threshold up.
    """
    ordered = sorted(levels, key=lambda lt: lt[1].value)
    if not ordered or ordered[0][1].comparison != "below":
        return [(HEALTHY_COLOR, None), *((LEVEL_COLORS[lv], t.value) for lv, t in ordered)]
    colors = [LEVEL_COLORS[lv] for lv, _ in ordered] + [HEALTHY_COLOR]
    return [(colors[0], None), *((colors[i + 1], t.value) for i, (_, t) in enumerate(ordered))]


def _unit(slo: SLO) -> str:
    if is_budget_based(slo.spec):
        return "short"
    return "s" if slo.spec.plain.quantile is not None else "short"


def _definition(slo: SLO) -> str:
    h = health_spec(slo.spec)
    parts = []
    for level, t in ((Level.DEGRADED, h.degraded), (Level.UNAVAILABLE, h.unavailable)):
        what = (
            "burn rate >"
            if t.comparison == "burnRate"
            else ("<" if t.comparison == "below" else ">")
        )
        over = " and ".join(format_duration(w) for w in t.windows)
        parts.append(f"{level.name}: {what} {t.value:g} over {over}")
    return "; ".join(parts)


def slo_detail(slo: SLO) -> GeneratedDashboard:
    """One SLO with its thresholds baked in from the YAML."""
    name, spec = slo.metadata.name, slo.spec
    uid, title = slo_uid(name), f"trimtab / SLO {name}"
    backend = f"{{{{{spec.backend_label}}}}}" if spec.backend_label else "__auto"
    budget = is_budget_based(spec)
    builder = _dashboard(
        uid, title, f"SLO {name} ({spec.service}). {_definition(slo)}."
    ).with_variable(
        _variable(
            "target", "Target", f"label_values(trimtab_slo_health{{slo={quote(name)}}}, target)"
        )
    )
    builder = _slo_health_rows(builder, name, backend, 'target=~"$target"')
    sli = _timeseries(
        "SLI per backend",
        "What trimtab measured per backend and window: "
        + ("the error ratio." if budget else "the value."),
        "percentunit" if budget else _unit(slo),
        [
            (
                f'trimtab_slo_value{{slo={quote(name)}, target=~"$target"}}',
                "{{target}} · {{backend}} {{window}}",
            )
        ],
        span=12 if budget else 24,
    )
    builder = builder.with_panel(sli)
    if budget:
        builder = builder.with_panel(
            _budget_panel(
                f"1 - avg_over_time({_series(rules.BURN_RATE, slo=name, window='1h')}"
                f"[{format_duration(spec.window)}])",
                backend,
            )
        )
    builder = builder.with_row(Row(("Burn rate" if budget else "Value") + " per window"))
    for window in health_spec(spec).windows:
        builder = builder.with_panel(_window_panel(slo, window, backend))
    return _finish(builder, uid, title)


def _window_panel(slo: SLO, window: float, backend: str) -> timeseries.Panel:
    """The burn rate or value over one window, from the rules and as the controller saw it."""
    name, spec = slo.metadata.name, slo.spec
    w = format_duration(window)
    budget = is_budget_based(spec)
    recorded = _series(rules.BURN_RATE if budget else rules.VALUE, slo=name, window=w)
    measured = f'trimtab_slo_value{{slo={quote(name)}, target=~"$target", window={quote(w)}}}'
    if budget:
        measured = f"{measured} / {error_budget(spec)!r}"
    levels = _applicable(slo, window)
    judged = "; ".join(
        f"{lv.name} {'<' if t.comparison == 'below' else '>'} {t.value:g}" for lv, t in levels
    )
    panel = _timeseries(
        f"{'Burn rate' if budget else 'Value'} over {w}",
        f"Thresholds that count over {w}: {judged}. From the recording rules (rules) and as "
        "the controller measured it (controller).",
        _unit(slo),
        [(recorded, f"{backend} (rules)"), (measured, "{{target}} · {{backend}} (controller)")],
        span=8,
    )
    return _threshold_style(panel).thresholds(_steps(threshold_steps(levels)))


# ----------------------------------------------------------------------------------- the sets


def generic() -> list[GeneratedDashboard]:
    """The bundled dashboards (committed under ``dashboards/``): thresholds read at run time."""
    return [overview(), slo_generic(), controller()]


def for_config(config: Config) -> list[GeneratedDashboard]:
    """Overview, controller, and one SLO dashboard per SLO of ``config`` with its thresholds."""
    details = [slo_detail(config.slos[name]) for name in sorted(config.slos)]
    return [overview(), controller(), *details]


def write(dashboards: Iterable[GeneratedDashboard], directory: Path) -> list[Path]:
    """Write each dashboard as ``<uid>.json`` into ``directory`` (created); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for dashboard in dashboards:
        path = directory / dashboard.filename
        path.write_text(dashboard.to_json(), encoding="utf-8")
        written.append(path)
    return written


def provisioning_provider(path: str, folder: str = "trimtab") -> str:
    """A Grafana dashboard provider file (``provisioning/dashboards/*.yaml``) reading ``path``."""
    provider = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "trimtab",
                "orgId": 1,
                "folder": folder,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": path, "foldersFromFilesStructure": False},
            }
        ],
    }
    return yaml.safe_dump(provider, sort_keys=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the committed generic dashboards (``python -m trimtab.dashboards.generate``)."""
    directory = Path(argv[0]) if argv else BUNDLED_DIR
    for path in write(generic(), directory):
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
