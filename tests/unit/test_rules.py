"""Prometheus rules generated from SLOs: burn-rate factors, windows, runbooks, generic queries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from trimtab.slo.models import API_VERSION, SLO
from trimtab.slo.rules import (
    DEFAULT_RUNBOOK_BASE_URL,
    alert_windows,
    dump_rules,
    generate_rules,
    slo_rule_group,
)

ROOT = Path(__file__).resolve().parents[2]

ERROR_RATIO = {
    "errorRatio": {
        "errors": 'http_server_requests_total{service="{{service}}", code=~"5.."}',
        "total": 'http_server_requests_total{service="{{service}}"}',
    }
}
QUANTILE = {
    "quantile": {
        "histogram": "http_server_request_duration_seconds",
        "selector": '{service="{{service}}"}',
        "quantile": 0.95,
    }
}
VALUE_HEALTH = {
    "degraded": {"above": "250ms", "windows": ["5m"]},
    "unavailable": {"above": "1s", "windows": ["1m", "5m"]},
}


def make_slo(name: str = "checkout-errors", indicator: Any = ERROR_RATIO, **spec: Any) -> SLO:
    return SLO.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": "SLO",
            "metadata": {"name": name},
            "spec": {
                "service": "checkout",
                "objective": 99.9,
                "backendLabel": "version",
                "indicator": indicator,
                **spec,
            },
        }
    )


def p95_slo(**spec: Any) -> SLO:
    return make_slo("checkout-p95", QUANTILE, health=VALUE_HEALTH, **spec)


def records(group: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    return [r for r in group["rules"] if r.get("record") == metric]


def alerts(group: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in group["rules"] if "alert" in r]


def recorded_windows(group: dict[str, Any], metric: str) -> set[str]:
    return {r["labels"]["window"] for r in records(group, metric)}


# ------------------------------------------------------------------------------ burn-rate factors


def test_burn_rate_factors_of_a_30_day_window() -> None:
    got = [(w.severity, w.long, w.short, f) for w, f in alert_windows(make_slo(window="30d"))]
    assert [g[:3] for g in got] == [
        ("page", 3600.0, 300.0),
        ("page", 21600.0, 1800.0),
        ("ticket", 86400.0, 7200.0),
        ("ticket", 259200.0, 21600.0),
    ]
    assert [g[3] for g in got] == pytest.approx([14.4, 6.0, 3.0, 1.0])


def test_burn_rate_factors_scale_with_a_28_day_window() -> None:
    factors = [f for _, f in alert_windows(make_slo(window="28d"))]
    assert factors == pytest.approx([13.44, 5.6, 2.8, 0.9333], abs=1e-4)


def _conditions(expr: str) -> list[tuple[str, float]]:
    """(window, factor) of every ``burn rate > factor`` comparison, in order."""
    found = re.findall(
        r'trimtab:slo_burn_rate\{slo="checkout-errors", window="(\w+)"\}\) > ([0-9.e+-]+)', expr
    )
    return [(window, float(factor)) for window, factor in found]


@pytest.mark.parametrize(
    ("window", "page", "ticket"),
    [
        ("30d", [14.4, 14.4, 6.0, 6.0], [3.0, 3.0, 1.0, 1.0]),
        ("28d", [13.44, 13.44, 5.6, 5.6], [2.8, 2.8, 0.93333, 0.93333]),
    ],
)
def test_alert_expressions_use_the_factors_with_their_windows(
    window: str, page: list[float], ticket: list[float]
) -> None:
    group = slo_rule_group(make_slo(window=window))
    by_severity = {a["labels"]["severity"]: a["expr"] for a in alerts(group)}
    assert set(by_severity) == {"page", "ticket"}

    page_conditions = _conditions(by_severity["page"])
    assert [w for w, _ in page_conditions] == ["1h", "5m", "6h", "30m"]
    assert [f for _, f in page_conditions] == pytest.approx(page, abs=1e-4)

    ticket_conditions = _conditions(by_severity["ticket"])
    assert [w for w, _ in ticket_conditions] == ["1d", "2h", "3d", "6h"]
    assert [f for _, f in ticket_conditions] == pytest.approx(ticket, abs=1e-4)
    # Long and short window of a pair must both burn: "and" within, "or" between the pairs.
    assert by_severity["page"].count(" and ") == 2
    assert by_severity["page"].count("\n  or\n") == 1


# --------------------------------------------------------------------------------- alert details


def test_every_alert_has_a_runbook_under_the_configured_base() -> None:
    rules = generate_rules([make_slo(), p95_slo()], runbook_base_url="https://wiki.example.com/rb")
    urls = [a["annotations"]["runbook_url"] for g in rules["groups"] for a in alerts(g)]
    assert len(urls) == 4
    assert all(url.startswith("https://wiki.example.com/rb/") for url in urls)
    assert sorted(urls) == [
        "https://wiki.example.com/rb/error-budget-burn",
        "https://wiki.example.com/rb/error-budget-burn",
        "https://wiki.example.com/rb/slo-degraded",
        "https://wiki.example.com/rb/slo-unavailable",
    ]


def test_runbook_pages_exist_for_every_alert() -> None:
    rules = generate_rules([make_slo(), p95_slo()])
    for group in rules["groups"]:
        for alert in alerts(group):
            url = alert["annotations"]["runbook_url"]
            assert url.startswith(DEFAULT_RUNBOOK_BASE_URL)
            page = ROOT / "runbooks" / (url.removeprefix(DEFAULT_RUNBOOK_BASE_URL) + ".md")
            assert page.is_file(), f"{alert['alert']} points at {url}, but {page} is missing"


@pytest.mark.parametrize("build", [make_slo, p95_slo], ids=["budget", "value"])
@pytest.mark.parametrize(
    ("alerting", "severities"),
    [
        ({}, ["page", "ticket"]),
        ({"page": {"disable": True}}, ["ticket"]),
        ({"ticket": {"disable": True}}, ["page"]),
        ({"page": {"disable": True}, "ticket": {"disable": True}}, []),
    ],
)
def test_disable_removes_that_alert(build: Any, alerting: dict, severities: list[str]) -> None:
    group = slo_rule_group(build(alerting=alerting))
    assert [a["labels"]["severity"] for a in alerts(group)] == severities


def test_alerting_names_and_labels_are_applied() -> None:
    slo = make_slo(
        alerting={
            "name": "CheckoutHighErrorRate",
            "labels": {"team": "payments"},
            "page": {"labels": {"routing": "pager"}},
        }
    )
    page, ticket = alerts(slo_rule_group(slo))
    assert page["alert"] == ticket["alert"] == "CheckoutHighErrorRate"
    assert page["labels"] == {
        "severity": "page",
        "team": "payments",
        "routing": "pager",
        "slo": "checkout-errors",
    }
    assert ticket["labels"] == {"severity": "ticket", "team": "payments", "slo": "checkout-errors"}


def test_alerts_of_different_slos_are_told_apart_by_their_labels() -> None:
    """promtool's duplicate-rules lint: same alert name and labels in one file is an error."""
    slos = [make_slo("a"), make_slo("b"), p95_slo(), make_slo("p99", QUANTILE, health=VALUE_HEALTH)]
    keys = [
        (a["alert"], tuple(sorted(a["labels"].items())))
        for g in generate_rules(slos)["groups"]
        for a in alerts(g)
    ]
    assert len(keys) == 8
    assert len(set(keys)) == len(keys)


def test_value_based_alerts_fire_on_the_recorded_level() -> None:
    unavailable, degraded = alerts(slo_rule_group(p95_slo()))
    assert unavailable["alert"] == "TrimtabSLOUnavailable"
    assert unavailable["expr"] == 'trimtab:slo_health:level{slo="checkout-p95"} == 2'
    assert unavailable["for"] == "5m"
    assert degraded["alert"] == "TrimtabSLODegraded"
    assert degraded["expr"] == 'trimtab:slo_health:level{slo="checkout-p95"} == 1'


# ------------------------------------------------------------------------------ recording rules


def test_recording_rules_cover_health_and_alert_windows() -> None:
    slo = make_slo(
        health={
            "degraded": {"burnRate": 6, "windows": ["10m", "1h"]},
            "unavailable": {"burnRate": 14.4, "windows": ["2m", "10m"]},
        }
    )
    group = slo_rule_group(slo)
    expected = {"2m", "10m", "1h"} | {"5m", "30m", "6h", "2h", "1d", "3d"}
    assert recorded_windows(group, "trimtab:slo_error_ratio") == expected
    assert recorded_windows(group, "trimtab:slo_burn_rate") == expected
    assert recorded_windows(group, "trimtab:slo_events") == expected
    assert records(group, "trimtab:slo_value") == []


def test_value_based_slos_record_values_over_their_health_windows_only() -> None:
    group = slo_rule_group(p95_slo())
    assert recorded_windows(group, "trimtab:slo_value") == {"1m", "5m"}
    assert recorded_windows(group, "trimtab:slo_events") == {"1m", "5m"}
    assert records(group, "trimtab:slo_burn_rate") == []
    assert records(group, "trimtab:slo_error_ratio") == []


@pytest.mark.parametrize("build", [make_slo, p95_slo], ids=["budget", "value"])
def test_every_series_an_expression_reads_is_recorded_before_it(build: Any) -> None:
    group = slo_rule_group(build())
    recorded: set[tuple[str, str]] = set()
    for rule in group["rules"]:
        for metric, window in re.findall(
            r'(trimtab:[a-z_:]+)\{slo="[^"]+", window="(\w+)"\}', rule["expr"]
        ):
            assert (metric, window) in recorded, f"{metric}[{window}] read before it is recorded"
        if "record" in rule:
            recorded.add((rule["record"], rule["labels"].get("window", "")))
    level = records(group, "trimtab:slo_health:level")
    assert len(level) == 1
    assert level[0]["labels"] == {"slo": group["name"].removeprefix("trimtab-slo-")}


def test_slo_labels_are_on_every_recorded_series() -> None:
    group = slo_rule_group(make_slo(labels={"team": "payments"}))
    for rule in group["rules"]:
        if "record" in rule:
            assert rule["labels"]["team"] == "payments"
            assert rule["labels"]["slo"] == "checkout-errors"


def test_generic_rules_match_every_service_and_keep_it_apart() -> None:
    group = slo_rule_group(make_slo())
    for rule in records(group, "trimtab:slo_error_ratio") + records(group, "trimtab:slo_events"):
        assert "{{" not in rule["expr"]
        assert 'service=~".+"' in rule["expr"]
        assert 'service="' not in rule["expr"]
        assert "sum by (version, service) (" in rule["expr"]
    one = records(group, "trimtab:slo_events")[0]
    assert one["expr"] == (
        'sum by (version, service) (increase(http_server_requests_total{service=~".+"}[1m]))'
    )


def test_rule_groups_come_in_name_order() -> None:
    rules = generate_rules([make_slo("zeta"), make_slo("alpha"), p95_slo()])
    assert [g["name"] for g in rules["groups"]] == [
        "trimtab-slo-alpha",
        "trimtab-slo-checkout-p95",
        "trimtab-slo-zeta",
    ]


def test_dumped_rules_read_back_the_same() -> None:
    rules = generate_rules([make_slo(), p95_slo()])
    text = dump_rules(rules)
    assert yaml.safe_load(text) == rules
    assert re.search(r"[&*]id\d+", text) is None  # no YAML anchors or aliases
    assert "expr: |-\n" in text  # the level's multi-line expression as a literal block
