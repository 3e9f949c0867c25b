"""Every alert `trimtab rules` emits and every decision cause has a runbook page of one shape, and
the PromQL a page asks you to run reads only series trimtab produces."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import promql_parser
import pytest
from trimtab.controller.causes import Cause
from trimtab.controller.dashboards_cli import runbook_dirs, runbook_names, runbook_page
from trimtab.controller.decisions import DecisionLog
from trimtab.controller.record import Action, Decision, DecisionWeights
from trimtab.slo import load
from trimtab.slo.rules import DEFAULT_RUNBOOK_BASE_URL, generate_rules

REPO = Path(__file__).resolve().parents[2]
TRIMTAB = str(Path(sys.executable).parent / "trimtab")
RUNBOOKS = REPO / "runbooks"
PAGES = sorted(RUNBOOKS.glob("*.md"))
SECTIONS = ("**What it means.**", "**Confirm.**", "**What to do now.**", "**Follow-up.**")
DEFAULT_ALERTS = {  # the names `trimtab rules` gives when an SLO names none, and their pages
    "TrimtabErrorBudgetBurn": "error-budget-burn",
    "TrimtabSLOUnavailable": "slo-unavailable",
    "TrimtabSLODegraded": "slo-degraded",
}
CONTROLLER_SERIES = {  # DESIGN.md section 6, as exposed (test_dashboards scrapes a live one)
    "trimtab_route_weight",
    "trimtab_slo_health",
    "trimtab_slo_value",
    "trimtab_slo_threshold",
    "trimtab_decisions_total",
    "trimtab_cycle_duration_seconds_bucket",
    "trimtab_cycle_duration_seconds_count",
    "trimtab_cycle_duration_seconds_sum",
    "trimtab_source_errors_total",
    "trimtab_adapter_errors_total",
}
RULES = generate_rules(load([REPO / "examples"]).slos.values())
ALERTS = [r for g in RULES["groups"] for r in g["rules"] if "alert" in r]
RECORDED = {r["record"] for g in RULES["groups"] for r in g["rules"] if "record" in r}


def _slug(alert: dict[str, object]) -> str:
    url = str(alert["annotations"]["runbook_url"])  # type: ignore[index]
    assert url.startswith(DEFAULT_RUNBOOK_BASE_URL), url
    return url.removeprefix(DEFAULT_RUNBOOK_BASE_URL)


def test_the_examples_raise_every_kind_of_alert() -> None:
    names = {a["alert"] for a in ALERTS}
    assert set(DEFAULT_ALERTS) <= names
    assert "CheckoutHighErrorRate" in names  # an SLO's own alerting.name


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: f"{a['alert']}-{a['labels']['slo']}")
def test_every_alert_links_a_runbook_page_that_exists(alert: dict[str, object]) -> None:
    slug = _slug(alert)
    assert (RUNBOOKS / f"{slug}.md").is_file(), f"{alert['alert']}: no runbooks/{slug}.md"


@pytest.mark.parametrize(("alert", "slug"), DEFAULT_ALERTS.items())
def test_default_alert_names_are_the_titles_of_their_pages(alert: str, slug: str) -> None:
    assert {_slug(a) for a in ALERTS if a["alert"] == alert} == {slug}
    title = (RUNBOOKS / f"{slug}.md").read_text(encoding="utf-8").splitlines()[0]
    assert title.startswith("# ")
    assert f"`{alert}`" in title


@pytest.mark.parametrize("cause", list(Cause), ids=str)
def test_every_decision_cause_has_a_page_titled_with_its_code(cause: Cause) -> None:
    page = RUNBOOKS / f"{cause.value}.md"
    assert page.is_file(), f"no runbooks/{cause.value}.md"
    assert f"(`{cause.value}`)" in page.read_text(encoding="utf-8").splitlines()[0]


def test_no_page_is_orphaned() -> None:
    expected = {c.value for c in Cause} | {_slug(a) for a in ALERTS}
    assert {p.stem for p in PAGES} == expected


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_page_has_the_four_sections_in_order(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    positions = [text.find(section) for section in SECTIONS]
    assert -1 not in positions, f"{page.name} lacks {SECTIONS[positions.index(-1)]}"
    assert positions == sorted(positions), f"{page.name}: sections out of order"
    assert "```promql" in text, f"{page.name}: no PromQL to confirm with"
    now = text.split("**What to do now.**")[1].split("**Follow-up.**")[0]
    assert re.search(r"`trimtab\s+[a-z]+", now), f"{page.name}: no trimtab command to run"


def _promql_lines(text: str) -> list[str]:
    blocks = re.findall(r"```promql\n(.*?)```", text, flags=re.DOTALL)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def _metric_names(expr: promql_parser.Expr) -> set[str]:
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(expr, visit)
    return names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_runbook_promql_parses_and_reads_only_trimtab_series(page: Path) -> None:
    lines = _promql_lines(page.read_text(encoding="utf-8"))
    assert lines
    for line in lines:
        names = _metric_names(promql_parser.parse(line))
        assert names, line
        assert names <= RECORDED | CONTROLLER_SERIES, f"{page.name}: {line}"


def test_explain_names_the_cause_page_then_the_alert_pages_of_its_reasons() -> None:
    decision = {
        "cause": "canary-unavailable",
        "reasons": [
            {"level": "UNAVAILABLE", "comparison": "burnRate", "slo": "errors"},
            {"level": "DEGRADED", "comparison": "above", "slo": "p95"},
            {"level": "UNAVAILABLE", "comparison": "burnRate", "slo": "slow"},
            {"level": "UNKNOWN", "slo": "queue"},
            {"message": "rolled back"},
        ],
    }
    assert runbook_names(decision) == ["canary-unavailable", "error-budget-burn", "slo-degraded"]
    assert runbook_names({"reasons": [{"message": "an old record without a cause"}]}) == []


def test_runbooks_are_found_from_the_source_tree_and_refuse_paths() -> None:
    assert runbook_dirs()[0] == RUNBOOKS
    assert runbook_page("drift") == RUNBOOKS / "drift.md"
    assert runbook_page("../README") is None
    assert runbook_page("no-such-page") is None


def _logged(tmp_path: Path, **fields: object) -> str:
    decision = Decision(
        at=datetime(2026, 1, 1, tzinfo=UTC),
        target="Rollout/checkout",
        kind="Rollout",
        action=Action.ROLLBACK,
        weights=DecisionWeights({"v1": 75, "v2": 25}, {"v1": 100, "v2": 0}),
        health={"v1": {"checkout-errors": "HEALTHY"}, "v2": {"checkout-errors": "UNAVAILABLE"}},
        reasons=[
            {
                "slo": "checkout-errors",
                "backend": "v2",
                "level": "UNAVAILABLE",
                "comparison": "burnRate",
                "value": 40.0,
                "threshold": 14.4,
                "window": "1m",
            },
        ],
        dry_run=False,
        **fields,  # type: ignore[arg-type]
    )
    return DecisionLog(tmp_path / "decisions.jsonl").append(decision).id


def explain(tmp_path: Path, decision_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRIMTAB, "explain", decision_id, "--state-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_explain_shows_the_runbook_of_the_decisions_cause(tmp_path: Path) -> None:
    decision_id = _logged(tmp_path, cause=Cause.CANARY_UNAVAILABLE.value)
    result = explain(tmp_path, decision_id)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"runbook canary-unavailable: {DEFAULT_RUNBOOK_BASE_URL}canary-unavailable" in lines
    assert f"runbook error-budget-burn: {DEFAULT_RUNBOOK_BASE_URL}error-budget-burn" in lines
    assert "Canary unavailable" in result.stdout  # the page itself
    # its placeholders filled, so the PromQL can be pasted as it is
    assert 'trimtab_slo_health{target="Rollout/checkout", slo="checkout-errors"}' in result.stdout
    assert "What to do now." in result.stdout
    as_json = json.loads(explain(tmp_path, decision_id, "-o", "json").stdout)
    assert as_json["cause"] == "canary-unavailable"
    assert "runbooks" not in as_json


def test_explain_of_an_old_record_without_a_cause_shows_no_cause_page(tmp_path: Path) -> None:
    result = explain(tmp_path, _logged(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "runbook error-budget-burn:" in result.stdout
    assert "runbook canary-unavailable" not in result.stdout
    assert "What it means." not in result.stdout
