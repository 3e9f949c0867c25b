"""The Grafana dashboards: committed JSON without drift, PromQL that reads only series trimtab
produces (the rules of `trimtab rules` and a running controller's /metrics), thresholds equal to
the YAML's, and the structure Grafana needs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from trimtab.adapters.fake import FakeTrafficAdapter, ListMetricSource
from trimtab.controller.decisions import DecisionLog
from trimtab.controller.reconcile import Reconciler, ReconcilerConfig
from trimtab.controller.state import StateStore
from trimtab.controller.targets import targets
from trimtab.controller.telemetry import Telemetry
from trimtab.controller.wiring import nominal_weights
from trimtab.dashboards.generate import (
    BUNDLED_DIR,
    LEVEL_COLORS,
    GeneratedDashboard,
    for_config,
    generic,
    slo_uid,
)
from trimtab.slo import Config, load, load_text
from trimtab.slo.durations import format_duration, parse_duration
from trimtab.slo.health import health_spec, is_budget_based
from trimtab.slo.models import BalanceSpec, RolloutSpec
from trimtab.slo.rules import generate_rules

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TRIMTAB = str(Path(sys.executable).parent / "trimtab")
CONFIG = load([EXAMPLES])
RULES = generate_rules(CONFIG.slos.values())
RECORDED = {r["record"] for g in RULES["groups"] for r in g["rules"] if "record" in r}
RECORDED_LABELS = {"slo", "window"}  # what the dashboards may match recorded series on
SCRAPE_LABELS = {"instance", "job"}  # added by Prometheus when it scrapes the controller
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}
DESIGN_DEFAULT = {"DEGRADED": (6.0, ["5m", "30m"]), "UNAVAILABLE": (14.4, ["1m", "5m"])}

GENERIC = generic()
BAKED = for_config(CONFIG)
ALL = [*GENERIC, *BAKED]


# --------------------------------------------------------------------------- the JSON models


def panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(model: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, PromQL)`` of every panel target, annotation and query variable."""
    for panel in panels(model):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for annotation in model.get("annotations", {}).get("list", []):
        yield f"annotation {annotation['name']!r}", annotation["expr"]
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.*), *(\w+)\)", variable["query"])
            assert found, f"variable {variable['name']}: not label_values(selector, label)"
            yield f"variable {variable['name']!r}", found.group(1)


def parseable(expr: str) -> str:
    """``expr`` with Grafana's variables in range brackets replaced by a duration."""
    return re.sub(r"\[\$\{?\w+\}?\]", "[5m]", expr)


def selectors(expr: str) -> list[tuple[set[str], set[str]]]:
    """``(metric names, label names matched)`` of each vector selector in ``expr``."""
    found: list[tuple[set[str], set[str]]] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.MatrixSelector):
            node = node.vector_selector
        if not isinstance(node, promql_parser.VectorSelector):
            return
        names = {node.name} if node.name else set()
        labels = set()
        for m in node.matchers.matchers:
            if m.name == "__name__":
                names |= set(m.value.split("|"))
            else:
                labels.add(m.name)
        found.append((names, labels))

    promql_parser.walk(promql_parser.parse(parseable(expr)), visit)
    return found


# ------------------------------------------------------------------- a controller's /metrics


@pytest.fixture(scope="module")
def controller_series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Series name → label names, scraped from a running controller after one cycle over the
    examples (fake proxies, healthy constant data)."""
    work = tmp_path_factory.mktemp("controller")
    chosen = targets(CONFIG)
    specs: dict[str, RolloutSpec | BalanceSpec] = {
        f"Rollout/{n}": r.spec for n, r in CONFIG.rollouts.items()
    }
    specs |= {f"Balance/{n}": b.spec for n, b in CONFIG.balances.items()}
    adapters = {}
    for target in chosen:
        adapters[target.key] = FakeTrafficAdapter(nominal_weights(specs[target.key]))
    backends = {b for t in chosen for b in t.backends}
    source = ListMetricSource.constant(dict.fromkeys(backends, 0.0001))
    telemetry = Telemetry(CollectorRegistry(), span_processors=[])
    reconciler = telemetry.instrument(
        Reconciler(
            ReconcilerConfig(
                source=source,
                adapters=adapters,
                states=StateStore(work / "state"),
                log=DecisionLog(work / "decisions.jsonl"),
                specs=specs,
                sleep=lambda _: None,
            )
        )
    )
    decisions = telemetry.run_cycle(lambda: reconciler.cycle(chosen, datetime.now(UTC)))
    assert len(decisions) == len(chosen)
    host, port = telemetry.serve("127.0.0.1:0")
    try:
        text = httpx.get(f"http://{host}:{port}/metrics", timeout=5).text
    finally:
        telemetry.shutdown()
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def test_the_running_controller_exposes_what_the_dashboards_need(
    controller_series: dict[str, set[str]],
) -> None:
    assert controller_series["trimtab_slo_threshold"] == {"slo", "level"}
    assert {"target", "backend", "slo"} <= controller_series["trimtab_slo_health"]
    assert "trimtab_cycle_duration_seconds_bucket" in controller_series


@pytest.mark.parametrize("dashboard", ALL, ids=lambda d: d.uid)
def test_every_query_parses_and_reads_only_series_trimtab_produces(
    dashboard: GeneratedDashboard, controller_series: dict[str, set[str]]
) -> None:
    produced = RECORDED | set(controller_series)
    seen = 0
    for where, expr in queries(dashboard.model):
        found = selectors(expr)
        assert found, f"{where}: no series in {expr}"
        for names, labels in found:
            assert names, f"{where}: a selector without a metric name in {expr}"
            assert names <= produced, f"{where}: {sorted(names - produced)} not produced"
            for name in names:
                allowed = RECORDED_LABELS if name in RECORDED else controller_series[name]
                unknown = labels - allowed - SCRAPE_LABELS
                assert not unknown, f"{where}: {name} has no label {sorted(unknown)}"
            seen += 1
    assert seen >= 5


@pytest.mark.parametrize("dashboard", ALL, ids=lambda d: d.uid)
def test_every_variable_a_query_uses_is_defined(dashboard: GeneratedDashboard) -> None:
    defined = {v["name"] for v in dashboard.model["templating"]["list"]} | GRAFANA_VARIABLES
    for where, expr in queries(dashboard.model):
        used = set(re.findall(r"\$\{?(\w+)\}?", expr))
        assert used <= defined, f"{where}: undefined {sorted(used - defined)}"
    for panel in panels(dashboard.model):
        if "repeat" in panel:
            assert panel["repeat"] in defined


# ------------------------------------------------------------------------------------ drift


def test_committed_dashboards_equal_a_fresh_build() -> None:
    committed = {p.name for p in BUNDLED_DIR.glob("*.json")}
    assert committed == {d.filename for d in GENERIC}, "regenerate: see below"
    for dashboard in GENERIC:
        on_disk = (BUNDLED_DIR / dashboard.filename).read_text(encoding="utf-8")
        assert on_disk == dashboard.to_json(), (
            f"dashboards/{dashboard.filename} drifted from the generator: run "
            "`.venv/bin/python -m trimtab.dashboards.generate` and commit the result"
        )


def test_a_build_is_deterministic() -> None:
    assert [d.to_json() for d in generic()] == [d.to_json() for d in GENERIC]
    assert [d.to_json() for d in for_config(CONFIG)] == [d.to_json() for d in BAKED]


# ------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("dashboard", ALL, ids=lambda d: d.uid)
def test_structure_grafana_needs(dashboard: GeneratedDashboard) -> None:
    model = dashboard.model
    assert model["uid"] == dashboard.uid
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard.uid)
    assert "id" not in model
    assert "trimtab" in model["tags"]
    first = model["templating"]["list"][0]
    assert (first["name"], first["type"], first["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    ids = [p["id"] for p in panels(model)]
    assert len(ids) == len(set(ids))
    for panel in panels(model):
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
        assert grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
    for annotation in model.get("annotations", {}).get("list", []):
        assert annotation["datasource"]["uid"] == "${datasource}"


def test_uids_are_unique_and_each_dashboard_has_its_variables() -> None:
    for group in (GENERIC, BAKED):
        assert len({d.uid for d in group}) == len(group)
    names = {d.uid: [v["name"] for v in d.model["templating"]["list"]] for d in ALL}
    assert names["trimtab-overview"] == ["datasource", "target"]
    assert names["trimtab-slo"] == ["datasource", "slo", "target", "window", "budget_window"]
    assert names["trimtab-controller"] == ["datasource"]
    for name in CONFIG.slos:
        assert names[slo_uid(name)] == ["datasource", "target"]
    assert len(slo_uid("x" * 63)) <= 40
    assert slo_uid("x" * 63) != slo_uid("x" * 62)


def test_decisions_are_annotations_on_the_overview() -> None:
    overview = next(d for d in GENERIC if d.uid == "trimtab-overview").model
    (annotation,) = overview["annotations"]["list"]
    assert "trimtab_decisions_total" in annotation["expr"]
    assert annotation["tagKeys"] == "target,action"


# ------------------------------------------------------------------------------ thresholds


def _steps(panel: dict[str, Any]) -> dict[str, float]:
    """Level name → threshold value of a window panel (colour tells the level)."""
    by_color = {color: level.name for level, color in LEVEL_COLORS.items()}
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0] == {"color": "green", "value": None}
    return {by_color[s["color"]]: s["value"] for s in steps[1:]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """``trimtab dashboards export -f examples`` as a user runs it: uid → model."""
    out = tmp_path_factory.mktemp("export")
    result = subprocess.run(
        [TRIMTAB, "dashboards", "export", "-f", str(EXAMPLES), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


def _window_panels(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for panel in panels(model):
        m = re.fullmatch(r"(?:Burn rate|Value) over (\S+)", panel["title"])
        if m:
            found[m.group(1)] = panel
    return found


@pytest.mark.parametrize("name", sorted(CONFIG.slos))
def test_exported_thresholds_equal_the_slo_definition(
    name: str, exported: dict[str, dict[str, Any]]
) -> None:
    slo = CONFIG.slos[name]
    h = health_spec(slo.spec)
    windows = _window_panels(exported[slo_uid(name)])
    assert set(windows) == {format_duration(w) for w in h.windows}
    for w, panel in windows.items():
        expected = {
            level: t.value
            for level, t in (("DEGRADED", h.degraded), ("UNAVAILABLE", h.unavailable))
            if parse_duration(w) in t.windows
        }
        assert _steps(panel) == expected, f"{name} over {w}"
        assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "dashed"
        metric = "trimtab:slo_burn_rate" if is_budget_based(slo.spec) else "trimtab:slo_value"
        assert panel["targets"][0]["expr"].startswith(f"{metric}{{")


def _yaml_slos() -> list[dict[str, Any]]:
    docs = [d for p in sorted(EXAMPLES.rglob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    return [d for d in docs if d and d.get("kind") == "SLO"]


@pytest.mark.parametrize("doc", _yaml_slos(), ids=lambda d: d["metadata"]["name"])
def test_exported_thresholds_equal_the_numbers_written_in_the_yaml(
    doc: dict[str, Any], exported: dict[str, dict[str, Any]]
) -> None:
    """Read from the YAML text itself (not the models): what the user wrote is what is drawn."""
    health = doc["spec"].get("health")
    levels = {
        "DEGRADED": health["degraded"] if health else None,
        "UNAVAILABLE": health["unavailable"] if health else None,
    }
    windows = _window_panels(exported[slo_uid(doc["metadata"]["name"])])
    for level, written in levels.items():
        if written is None:  # no health block: the documented default (DESIGN.md section 3)
            value, spans = DESIGN_DEFAULT[level]
        else:
            raw = next(written[k] for k in ("burnRate", "above", "below") if k in written)
            value = parse_duration(raw) if isinstance(raw, str) else float(raw)
            spans = written.get("windows", ["5m"])
        for span in spans:
            assert _steps(windows[format_duration(parse_duration(span))])[level] == value


def test_generic_dashboards_read_thresholds_from_the_controller() -> None:
    slo = next(d for d in GENERIC if d.uid == "trimtab-slo").model
    (window,) = [p for p in panels(slo) if p.get("repeat") == "window"]
    assert "trimtab_slo_threshold" in window["targets"][1]["expr"]
    for dashboard in GENERIC:
        for panel in panels(dashboard.model):
            steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {})
            colors = {s["color"] for s in steps.get("steps", [])}
            if panel["type"] == "timeseries":  # no baked level thresholds in the bundled set
                assert not colors & set(LEVEL_COLORS.values()), panel["title"]


def test_thresholds_follow_the_comparison_for_value_slos_judged_below() -> None:
    config = _gauge_slo(
        "health: {degraded: {below: 10, windows: [5m]}, unavailable: {below: 2, windows: [5m]}}"
    )
    (detail,) = [d for d in for_config(config) if d.uid == slo_uid("throughput")]
    steps = _window_panels(detail.model)["5m"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps == [
        {"color": "red", "value": None},
        {"color": "orange", "value": 2.0},
        {"color": "green", "value": 10.0},
    ]


def _gauge_slo(health: str) -> Config:
    return load_text(
        f"""
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {{name: throughput}}
spec:
  service: shop
  backendLabel: zone
  indicator: {{gauge: {{query: 'sum by (zone) (rate(req_total[1m]))'}}}}
  {health}
""",
        "throughput.yaml",
    )


# ----------------------------------------------------------------------------------- export


def test_export_without_files_writes_the_bundled_dashboards_and_a_provider(tmp_path: Path) -> None:
    result = subprocess.run(
        [TRIMTAB, "dashboards", "export", "-o", str(tmp_path), "--provisioning",
         "--folder", "SRE", "--grafana-path", "/var/lib/grafana/dashboards/trimtab"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for dashboard in GENERIC:
        assert (tmp_path / dashboard.filename).read_text() == dashboard.to_json()
    provider = yaml.safe_load((tmp_path / "trimtab-provider.yaml").read_text())
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["folder"] == "SRE"
    assert entry["options"]["path"] == "/var/lib/grafana/dashboards/trimtab"
    written = [tmp_path / d.filename for d in GENERIC] + [tmp_path / "trimtab-provider.yaml"]
    assert result.stdout.split() == [str(p) for p in written]


def test_export_provider_points_at_the_output_directory_by_default(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [TRIMTAB, "dashboards", "export", "-o", str(out), "--provisioning"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    provider = yaml.safe_load((out / "trimtab-provider.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == str(out.resolve())


def test_export_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: trimtab.dev/v1alpha1\nkind: SLO\nmetadata: {name: x}\nspec: {}\n")
    run = [TRIMTAB, "dashboards", "export"]
    usage = subprocess.run(run, capture_output=True, text=True, check=False)
    assert usage.returncode == 2  # -o is required
    invalid = subprocess.run(
        [*run, "-f", str(bad), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert invalid.returncode == 1
    assert f"{bad}:" in invalid.stderr
    blocked = tmp_path / "file"
    blocked.write_text("")
    unwritable = subprocess.run(
        [*run, "-o", str(blocked)], capture_output=True, text=True, check=False
    )
    assert unwritable.returncode == 1
    assert "cannot write" in unwritable.stderr
