"""Prometheus recording and alerting rules from the same SLO definitions the controller judges.

Per SLO, one rule group (Prometheus evaluates a group's rules in order, so the level sees the
burn rates of the same evaluation):

- ``trimtab:slo_error_ratio`` / ``trimtab:slo_value`` — the SLI per window (label ``window``);
- ``trimtab:slo_events`` — the request count per window, where the indicator knows it;
- ``trimtab:slo_burn_rate`` — error ratio ÷ error budget (budget-based SLOs);
- ``trimtab:slo_health:level`` — 2 UNAVAILABLE, 1 DEGRADED, 0 HEALTHY, −1 UNKNOWN: the
  comparisons of :func:`trimtab.slo.health.judge`, in PromQL;
- alerts: multiwindow, multi-burn-rate (SRE Workbook) for budget-based SLOs — page at 2 % of the
  budget in 1h (5m confirming) or 5 % in 6h (30m), ticket at 10 % in 1d (2h) or in 3d (6h); the
  factors scale with the SLO window (30d: 14.4, 6, 3, 1). Value-based SLOs alert on the level.

Every alert carries a ``runbook_url``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from .durations import format_duration
from .health import counts_events, error_budget, health_spec, health_windows, is_budget_based
from .models import SLO, LevelThreshold
from .promql import compile_sli, quote

__all__ = [
    "ALERT_WINDOWS",
    "DEFAULT_RUNBOOK_BASE_URL",
    "BurnAlertWindow",
    "alert_windows",
    "dump_rules",
    "generate_rules",
    "slo_rule_group",
]

DEFAULT_RUNBOOK_BASE_URL = "https://trimtab.dev/runbooks/"

ERROR_RATIO = "trimtab:slo_error_ratio"
VALUE = "trimtab:slo_value"
EVENTS = "trimtab:slo_events"
BURN_RATE = "trimtab:slo_burn_rate"
LEVEL = "trimtab:slo_health:level"


@dataclass(frozen=True)
class BurnAlertWindow:
    """One multiwindow condition: ``budget_share`` of the budget spent within ``long``."""

    severity: str
    long: float
    short: float
    budget_share: float

    def factor(self, slo_window: float) -> float:
        """The burn rate that spends ``budget_share`` of a ``slo_window`` budget in ``long``."""
        return round(self.budget_share * slo_window / self.long, 10)


ALERT_WINDOWS: tuple[BurnAlertWindow, ...] = (
    BurnAlertWindow("page", 3600.0, 300.0, 0.02),
    BurnAlertWindow("page", 6 * 3600.0, 1800.0, 0.05),
    BurnAlertWindow("ticket", 86400.0, 2 * 3600.0, 0.10),
    BurnAlertWindow("ticket", 3 * 86400.0, 6 * 3600.0, 0.10),
)


def alert_windows(slo: SLO) -> list[tuple[BurnAlertWindow, float]]:
    """The burn-rate alert conditions of ``slo`` with their factors."""
    return [(w, w.factor(slo.spec.window)) for w in ALERT_WINDOWS]


def _num(value: float) -> str:
    return repr(float(value))


def _series(metric: str, slo: str, window: float | None = None) -> str:
    matchers = f"slo={quote(slo)}"
    if window is not None:
        matchers += f", window={quote(format_duration(window))}"
    return f"{metric}{{{matchers}}}"


def _at(metric: str, slo: str, window: float) -> str:
    """One window's series with the ``window`` label dropped, so windows can be combined."""
    return f"max without (window) ({_series(metric, slo, window)})"


def _all_of(conditions: Iterable[str]) -> str:
    """1 where every 0/1 condition holds; the series is absent otherwise."""
    return f"(({' * '.join(conditions)}) == 1)"


def _level_expr(slo: SLO) -> str:
    name, spec = slo.metadata.name, slo.spec
    main = BURN_RATE if is_budget_based(spec) else VALUE
    windows = health_windows(spec)
    base = f"group without (window) ({_series(main, name)})"
    if counts_events(spec):
        base = f"({base} or group without (window) ({_series(EVENTS, name)}))"

    unknown: list[str] = []
    for w in windows:
        x = _at(main, name, w)
        unknown.append(f"(({x} != bool {x}) == 1) * -1")
        unknown.append(f"({base} unless {x}) * -1")
    if counts_events(spec):
        e = _at(EVENTS, name, windows[0])
        unknown.append(f"({base} unless {e}) * -1")
        unknown.append(f"(({e} != bool {e}) == 1) * -1")
        unknown.append(f"(({e} < bool {_num(spec.min_events)}) == 1) * -1")

    evidenced = is_budget_based(spec) and counts_events(spec)  # health.py's minBadEvents

    def crossed(threshold: LevelThreshold) -> str:
        op = "<" if threshold.comparison == "below" else ">"
        return _all_of(
            f"({_at(main, name, w)} {op} bool {_num(threshold.value)})" for w in threshold.windows
        )

    def proven(threshold: LevelThreshold) -> str:
        if not evidenced:
            return crossed(threshold)
        conditions = [
            f"({_at(main, name, w)} > bool {_num(threshold.value)})"
            f" * ({_at(ERROR_RATIO, name, w)} * {_at(EVENTS, name, w)}"
            f" >= bool {_num(spec.min_bad_events)})"
            for w in threshold.windows
        ]
        return _all_of(conditions)

    h = health_spec(spec)
    terms = [*unknown, f"{proven(h.unavailable)} * 2", proven(h.degraded)]
    if evidenced:  # crossed on too few bad events: not enough evidence
        terms += [f"({crossed(t)} unless {proven(t)}) * -1" for t in (h.unavailable, h.degraded)]
    terms.append(f"{base} * 0")
    return "\n  or\n".join(f"({t})" for t in terms)


def slo_rule_group(slo: SLO, runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL) -> dict[str, Any]:
    """The rule group of one SLO (recording rules, then alerts)."""
    name, spec = slo.metadata.name, slo.spec
    budget_based = is_budget_based(spec)
    windows = set(health_windows(spec))
    if budget_based:
        windows |= {w for a in ALERT_WINDOWS for w in (a.long, a.short)}
    labels = {**spec.labels, "slo": name}
    rules: list[dict[str, Any]] = []
    for w in sorted(windows):
        sli = compile_sli(spec, w)
        window_labels = {**labels, "window": format_duration(w)}
        if budget_based:
            assert sli.ratio is not None
            rules.append({"record": ERROR_RATIO, "expr": sli.ratio, "labels": window_labels})
            rules.append(
                {
                    "record": BURN_RATE,
                    "expr": f"{_series(ERROR_RATIO, name, w)} / {_num(error_budget(spec))}",
                    "labels": window_labels,
                }
            )
        else:
            assert sli.value is not None
            rules.append({"record": VALUE, "expr": sli.value, "labels": window_labels})
        if sli.events is not None:
            rules.append({"record": EVENTS, "expr": sli.events, "labels": window_labels})
    rules.append({"record": LEVEL, "expr": _level_expr(slo), "labels": labels})
    rules.extend(_alerts(slo, runbook_base_url))
    return {"name": f"trimtab-slo-{name}", "rules": rules}


def _alerts(slo: SLO, runbook_base_url: str) -> list[dict[str, Any]]:
    name, spec = slo.metadata.name, slo.spec
    alerting = spec.alerting
    base = runbook_base_url if runbook_base_url.endswith("/") else runbook_base_url + "/"
    out: list[dict[str, Any]] = []
    if is_budget_based(spec):
        alert = alerting.name or "TrimtabErrorBudgetBurn"
        for severity, cfg in (("page", alerting.page), ("ticket", alerting.ticket)):
            if cfg.disable:
                continue
            conditions = []
            shown = []
            for window, factor in alert_windows(slo):
                if window.severity != severity:
                    continue
                long_, short = _at(BURN_RATE, name, window.long), _at(BURN_RATE, name, window.short)
                conditions.append(f"({long_} > {_num(factor)} and {short} > {_num(factor)})")
                shown.append(f"{factor:.4g}× over {format_duration(window.long)}")
            out.append(
                {
                    "alert": alert,
                    "expr": "\n  or\n".join(conditions),
                    "labels": {"severity": severity, **alerting.labels, **cfg.labels, "slo": name},
                    "annotations": {
                        "summary": f"SLO {name} ({spec.service}) is burning its error budget",
                        "description": (
                            f"{{{{ $labels.slo }}}} burns its {spec.objective or 0:g}% objective "
                            f"at {' or '.join(shown)} (value {{{{ $value | humanize }}}})."
                        ),
                        "runbook_url": base + "error-budget-burn",
                        **alerting.annotations,
                        **cfg.annotations,
                    },
                }
            )
        return out
    h = health_spec(spec)
    for severity, cfg, level, threshold, slug in (
        ("page", alerting.page, 2, h.unavailable, "slo-unavailable"),
        ("ticket", alerting.ticket, 1, h.degraded, "slo-degraded"),
    ):
        if cfg.disable:
            continue
        out.append(
            {
                "alert": alerting.name
                or ("TrimtabSLOUnavailable" if level == 2 else "TrimtabSLODegraded"),
                "expr": f"{_series(LEVEL, name)} == {level}",
                "for": format_duration(max(threshold.windows)),
                "labels": {"severity": severity, **alerting.labels, **cfg.labels, "slo": name},
                "annotations": {
                    "summary": f"SLO {name} ({spec.service}) is "
                    + ("UNAVAILABLE" if level == 2 else "DEGRADED"),
                    "description": (
                        f"{{{{ $labels.slo }}}} is {threshold.comparison} {threshold.value:g} "
                        f"over {', '.join(format_duration(w) for w in threshold.windows)}."
                    ),
                    "runbook_url": base + slug,
                    **alerting.annotations,
                    **cfg.annotations,
                },
            }
        )
    return out


def generate_rules(
    slos: Iterable[SLO], runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL
) -> dict[str, Any]:
    """A Prometheus rule file (``{"groups": [...]}``) for ``slos``, in name order."""
    ordered = sorted(slos, key=lambda s: s.metadata.name)
    return {"groups": [slo_rule_group(s, runbook_base_url) for s in ordered]}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_rules(rules: dict[str, Any]) -> str:
    """The rule file as YAML, multi-line expressions as literal blocks."""
    return yaml.dump(rules, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
