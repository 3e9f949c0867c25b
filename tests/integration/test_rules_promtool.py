"""One definition of healthy: Prometheus, running the generated rules, agrees with ``judge``.

``promtool test rules`` evaluates the rules of :mod:`trimtab.slo.rules` on input series; the
expected ``trimtab:slo_health:level`` of every case is what :func:`trimtab.slo.health.judge`
answers for the same numbers. Two ways in:

- at the SLI: the inputs are the recorded SLI series themselves (``trimtab:slo_error_ratio``,
  ``trimtab:slo_value``, ``trimtab:slo_events``) with chosen values, one backend per case, so the
  burn-rate and level rules run on exactly those numbers (edge cases: thresholds hit exactly, NaN,
  missing windows, ``minEvents``);
- end to end: raw request counters, with margins wide enough that rate extrapolation cannot
  matter, and the SLIs worked out by hand for ``judge``.

Also: ``promtool check rules`` accepts the rules of every SLO in ``examples/`` and of every
``openslo/v1`` and Sloth ``prometheus/v1`` file in ``../shared/peer-specs``.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from trimtab.slo import load, load_text
from trimtab.slo.durations import parse_duration
from trimtab.slo.health import Level, WindowMeasurement, error_budget, judge
from trimtab.slo.models import SLO
from trimtab.slo.promql import quote
from trimtab.slo.rules import dump_rules, generate_rules

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PEER_SPECS = REPO.parent / "shared" / "peer-specs"

LEVEL = "trimtab:slo_health:level"

SLOS = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: checkout-errors}
spec:
  service: checkout
  objective: 99.9
  window: 30d
  backendLabel: version
  indicator:
    errorRatio:
      errors: http_server_requests_total{service="{{service}}", code=~"5.."}
      total: http_server_requests_total{service="{{service}}"}
  health:
    degraded: {burnRate: 6, windows: [5m, 30m]}
    unavailable: {burnRate: 14.4, windows: [1m, 5m]}
  minEvents: 50
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: checkout-p95}
spec:
  service: checkout
  objective: 99
  backendLabel: version
  indicator:
    quantile:
      histogram: http_server_request_duration_seconds
      selector: '{service="{{service}}"}'
      quantile: 0.95
  health:
    degraded: {above: 250ms, windows: [5m]}
    unavailable: {above: 1s, windows: [1m, 5m]}
  minEvents: 50
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: checkout-hosts}
spec:
  service: checkout
  objective: 99
  backendLabel: zone
  indicator:
    gauge:
      query: sum by (zone) (up{job="{{service}}"})
      aggregate: avg
  health:
    degraded: {below: 3, windows: [5m]}
    unavailable: {below: 1, windows: [1m, 5m]}
""",
    "test_rules_promtool.py",
).slos

ERRORS = SLOS["checkout-errors"]  # budget-based, counts requests
P95 = SLOS["checkout-p95"]  # value-based (above), counts requests
HOSTS = SLOS["checkout-hosts"]  # value-based (below), no request count

BUDGET = error_budget(ERRORS.spec)
NAN = math.nan
INF = math.inf


def ratio_at_burn(burn: float) -> float:
    """The error ratio whose burn rate is exactly ``burn`` in floating point."""
    ratio = burn * BUDGET
    assert ratio / BUDGET == burn, "pick a burn rate reachable exactly"
    return ratio


def just_above(value: float) -> float:
    return math.nextafter(value, math.inf)


# ------------------------------------------------------------------------------ promtool helpers


def run_promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd, check=False)


def series_name(metric: str, labels: Mapping[str, str]) -> str:
    return metric + "{" + ",".join(f"{k}={quote(v)}" for k, v in labels.items()) + "}"


def constant(value: float, steps: int = 30) -> str:
    """A promtool input that holds ``value`` at every step."""
    if math.isnan(value):
        text = "NaN"
    elif math.isinf(value):
        text = "+Inf" if value > 0 else "-Inf"
    else:
        text = repr(float(value))
    return f"{text}+0x{steps}"


def promtool_test_rules(
    promtool: str,
    tmp_path: Path,
    slos: Sequence[SLO],
    tests: Sequence[dict[str, Any]],
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yaml").write_text(dump_rules(generate_rules(slos)), encoding="utf-8")
    document = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": list(tests)}
    test_file = tmp_path / "test.yaml"
    test_file.write_text(yaml.safe_dump(document, sort_keys=False, width=1000), encoding="utf-8")
    return run_promtool(promtool, "test", "rules", test_file.name, cwd=tmp_path)


def assert_passed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"promtool disagrees:\n{result.stdout}\n{result.stderr}"
    assert "SUCCESS" in result.stdout


# ------------------------------------------------------------------- level equivalence at the SLI


@dataclass(frozen=True)
class Case:
    """One backend's recorded SLIs; a window left out has no series at all."""

    name: str
    expected: Level  # what the table's author expects; judge must agree, then Prometheus must
    values: Mapping[str, float]  # window → error ratio (budget-based) or value
    events: Mapping[str, float] = field(default_factory=dict)  # window → request count

    def measurements(self) -> dict[float, WindowMeasurement]:
        windows = set(self.values) | set(self.events)
        return {
            parse_duration(w): WindowMeasurement(self.values.get(w), self.events.get(w))
            for w in windows
        }


AT_6 = ratio_at_burn(6.0)
AT_14_4 = ratio_at_burn(14.4)

HEALTHY, DEGRADED, UNAVAILABLE, UNKNOWN = (
    Level.HEALTHY,
    Level.DEGRADED,
    Level.UNAVAILABLE,
    Level.UNKNOWN,
)
Values = tuple[float | None, ...]


def by_window(windows: Sequence[str], values: Values) -> dict[str, float]:
    """``values`` keyed by window; ``None`` leaves the window out (no series)."""
    assert len(windows) == len(values)
    return {w: v for w, v in zip(windows, values, strict=True) if v is not None}


PLENTY: Values = (600.0, 3000.0, 18000.0)


def budget(name: str, expected: Level, ratios: Values, events: Values = PLENTY) -> Case:
    """checkout-errors: error ratios and request counts over 1m, 5m and 30m."""
    windows = ("1m", "5m", "30m")
    return Case(name, expected, by_window(windows, ratios), by_window(windows, events))


def p95(name: str, expected: Level, values: Values, events: Values = (600.0, None)) -> Case:
    """checkout-p95: the p95 in seconds and request counts over 1m and 5m."""
    windows = ("1m", "5m")
    return Case(name, expected, by_window(windows, values), by_window(windows, events))


def hosts(name: str, expected: Level, values: Values) -> Case:
    """checkout-hosts: the average number of hosts up over 1m and 5m; no request count."""
    return Case(name, expected, by_window(("1m", "5m"), values))


BUDGET_CASES = [
    budget("healthy", HEALTHY, (0.001, 0.001, 0.001)),
    budget("no-errors", HEALTHY, (0.0, 0.0, 0.0)),
    budget("degraded", DEGRADED, (0.008, 0.008, 0.007)),
    budget("unavailable", UNAVAILABLE, (0.05, 0.05, 0.05)),
    budget("all-errors", UNAVAILABLE, (1.0, 1.0, 1.0)),
    # UNAVAILABLE needs only its own windows, not the degraded ones too.
    budget("unavailable-long-window-calm", UNAVAILABLE, (0.02, 0.02, 0.001)),
    # Every window of a level must exceed.
    budget("degraded-short-window-only", HEALTHY, (0.001, 0.01, 0.002)),
    budget("degraded-long-window-only", HEALTHY, (0.001, 0.001, 0.01)),
    budget("unavailable-1m-only", HEALTHY, (0.05, 0.003, 0.001)),
    budget("unavailable-1m-only-but-degraded", DEGRADED, (0.05, 0.01, 0.01)),
    # Strict comparisons: a burn rate equal to the threshold does not exceed it.
    budget("burn-exactly-6", HEALTHY, (AT_6, AT_6, AT_6)),
    budget("burn-just-above-6", DEGRADED, (0.001, just_above(AT_6), just_above(AT_6))),
    budget("burn-exactly-14.4", DEGRADED, (AT_14_4, AT_14_4, 0.01)),
    budget("burn-just-above-14.4", UNAVAILABLE, (just_above(AT_14_4),) * 2 + (0.001,)),
    # No data is not good news.
    budget("no-ratio-in-30m", UNKNOWN, (0.001, 0.001, None)),
    budget("unavailable-but-30m-missing", UNKNOWN, (0.05, 0.05, None)),
    budget("no-ratio-in-1m", UNKNOWN, (None, 0.01, 0.01)),
    budget("nan-ratio", UNKNOWN, (0.001, NAN, 0.001)),
    budget("idle", UNKNOWN, (NAN, NAN, NAN), events=(0.0, 0.0, 0.0)),
    budget("only-events", UNKNOWN, (None, None, None)),
    budget("only-ratios-no-events", UNKNOWN, (0.001, 0.001, 0.001), events=(None, None, None)),
    # minEvents counts the shortest window, and only that one.
    budget("events-below-min", UNKNOWN, (0.05, 0.05, 0.05), events=(49.0, 3000.0, 18000.0)),
    budget("events-exactly-min", UNAVAILABLE, (0.1, 0.1, 0.1), events=(50.0, 3000.0, 18000.0)),
    # minBadEvents: crossed on fewer than 3 bad requests is not proof
    budget(
        "two-bad-in-the-1m-window", DEGRADED, (0.05, 0.05, 0.05), events=(50.0, 3000.0, 18000.0)
    ),
    budget("two-bad-everywhere", UNKNOWN, (0.04, 0.04, 0.04), events=(50.0, 50.0, 50.0)),
    budget("events-nan", UNKNOWN, (0.001, 0.001, 0.001), events=(NAN, 3000.0, 18000.0)),
    budget("events-missing-in-1m", UNKNOWN, (0.001, 0.001, 0.001), events=(None, 3000.0, 18000.0)),
    budget(
        "few-events-in-longer-windows", UNKNOWN, (0.008, 0.008, 0.008), events=(60.0, 10.0, 0.0)
    ),
]

P95_CASES = [
    p95("healthy", HEALTHY, (0.1, 0.12)),
    p95("degraded", DEGRADED, (0.3, 0.3)),
    p95("unavailable", UNAVAILABLE, (2.0, 1.5)),
    p95("unavailable-1m-only", DEGRADED, (2.0, 0.5)),
    p95("slow-1m-only", HEALTHY, (0.5, 0.2)),
    p95("exactly-250ms", HEALTHY, (0.25, 0.25)),
    p95("exactly-1s", DEGRADED, (1.0, 1.0)),
    p95("infinite", UNAVAILABLE, (INF, INF)),  # histogram_quantile in the +Inf bucket
    p95("nan", UNKNOWN, (NAN, 0.1)),
    p95("5m-missing", UNKNOWN, (2.0, None)),
    p95("events-below-min", UNKNOWN, (2.0, 2.0), events=(49.0, None)),
    p95("events-exactly-min", UNAVAILABLE, (2.0, 2.0), events=(50.0, None)),
    p95("events-missing-in-1m", UNKNOWN, (0.1, 0.1), events=(None, 3000.0)),
]

HOSTS_CASES = [
    hosts("healthy", HEALTHY, (5.0, 5.0)),
    hosts("degraded", DEGRADED, (2.0, 2.5)),
    hosts("unavailable", UNAVAILABLE, (0.0, 0.5)),
    hosts("exactly-3", HEALTHY, (3.0, 3.0)),
    hosts("exactly-1", DEGRADED, (1.0, 1.0)),
    hosts("unavailable-1m-only", DEGRADED, (0.0, 2.0)),
    hosts("low-1m-only", HEALTHY, (2.0, 4.0)),
    hosts("nan", UNKNOWN, (5.0, NAN)),
    hosts("1m-missing", UNKNOWN, (None, 0.0)),
]

TABLES = [
    (ERRORS, "trimtab:slo_error_ratio", BUDGET_CASES),
    (P95, "trimtab:slo_value", P95_CASES),
    (HOSTS, "trimtab:slo_value", HOSTS_CASES),
]


def backend(case: Case) -> str:
    return f"case-{case.name}"


def sli_inputs(slo: SLO, metric: str, cases: Sequence[Case]) -> list[dict[str, str]]:
    label = slo.spec.backend_label
    assert label is not None
    inputs = []
    for case in cases:
        for source, values in ((metric, case.values), ("trimtab:slo_events", case.events)):
            for window, value in values.items():
                labels = {"slo": slo.metadata.name, "window": window, label: backend(case)}
                inputs.append({"series": series_name(source, labels), "values": constant(value)})
    return inputs


def level_test(slo: SLO, case: Case, level: Level, eval_time: str = "10m") -> dict[str, Any]:
    """A promql_expr_test: the recorded level of ``case``'s backend is ``level``."""
    label = slo.spec.backend_label
    assert label is not None
    labels = {"slo": slo.metadata.name, label: backend(case)}
    return {
        "expr": series_name(LEVEL, labels),
        "eval_time": eval_time,
        "exp_samples": [{"labels": series_name(LEVEL, labels), "value": int(level)}],
    }


ALL_CASES = [
    pytest.param(slo, case, id=f"{slo.metadata.name}-{case.name}")
    for slo, _, cases in TABLES
    for case in cases
]


@pytest.mark.parametrize(("slo", "case"), ALL_CASES)
def test_case_table_is_what_judge_answers(slo: SLO, case: Case) -> None:
    assert judge(slo.spec, case.measurements()).level is case.expected


def test_threshold_ratios_are_exact() -> None:
    assert error_budget(ERRORS.spec) == BUDGET
    assert AT_6 / BUDGET == 6.0
    assert just_above(AT_6) / BUDGET > 6.0
    assert just_above(AT_14_4) / BUDGET > 14.4


@pytest.mark.parametrize(
    ("slo", "metric", "cases"),
    [pytest.param(*table, id=table[0].metadata.name) for table in TABLES],
)
def test_prometheus_records_the_level_judge_gives_at_the_sli(
    promtool: str, tmp_path: Path, slo: SLO, metric: str, cases: Sequence[Case]
) -> None:
    assert len(cases) >= 9
    tests = [level_test(slo, c, judge(slo.spec, c.measurements()).level) for c in cases]
    group = {"interval": "1m", "input_series": sli_inputs(slo, metric, cases)}
    result = promtool_test_rules(promtool, tmp_path, [slo], [{**group, "promql_expr_test": tests}])
    assert_passed(result)


def test_promtool_notices_a_wrong_level(promtool: str, tmp_path: Path) -> None:
    """The harness can fail: an UNAVAILABLE backend claimed HEALTHY is rejected."""
    case = next(c for c in BUDGET_CASES if c.name == "unavailable")
    group = {
        "interval": "1m",
        "input_series": sli_inputs(ERRORS, "trimtab:slo_error_ratio", [case]),
    }
    tests = [{**group, "promql_expr_test": [level_test(ERRORS, case, Level.HEALTHY)]}]
    result = promtool_test_rules(promtool, tmp_path, [ERRORS], tests)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


# -------------------------------------------------------------- level equivalence from counters

STEP = 15.0  # seconds between samples of the raw counters
STEPS = 480  # two hours


@dataclass(frozen=True)
class Traffic:
    """One backend's raw counters and the SLIs they mean, worked out by hand."""

    version: str
    expected: Level
    ok: str  # promtool values of the code="200" counter
    errors: str | None  # of the code="500" counter; None: the series does not exist
    measured: Mapping[float, WindowMeasurement]
    service: str = "checkout"


def steady(version: str, expected: Level, ok: float, errors: float, **kw: Any) -> Traffic:
    """Counters growing by ``ok`` and ``errors`` requests every step, for two hours."""
    per_second = (ok + errors) / STEP
    ratio = errors / (ok + errors)
    measured = {w: WindowMeasurement(ratio, per_second * w) for w in (60.0, 300.0, 1800.0)}
    return Traffic(version, expected, f"0+{ok:g}x{STEPS}", f"0+{errors:g}x{STEPS}", measured, **kw)


TRAFFIC = [
    steady("healthy", Level.HEALTHY, ok=999, errors=1),  # burn rate 1
    steady("degraded", Level.DEGRADED, ok=990, errors=10),  # burn rate 10
    steady("unavailable", Level.UNAVAILABLE, ok=900, errors=100),  # burn rate 100
    steady("unavailable", Level.UNAVAILABLE, ok=500, errors=500, service="cart"),
    steady("low-traffic", Level.UNKNOWN, ok=10, errors=0),  # 40 requests a minute < minEvents 50
    # No 5xx counter at all: the error ratio is 0, not missing.
    Traffic(
        "no-5xx-series",
        Level.HEALTHY,
        ok=f"0+1000x{STEPS}",
        errors=None,
        measured={w: WindowMeasurement(0.0, 4000 * w / 60) for w in (60.0, 300.0, 1800.0)},
    ),
    # Counters that stopped moving: rate 0/0 is NaN, no requests.
    Traffic(
        "idle",
        Level.UNKNOWN,
        ok=f"5000+0x{STEPS}",
        errors=f"3+0x{STEPS}",
        measured={w: WindowMeasurement(NAN, 0.0) for w in (60.0, 300.0, 1800.0)},
    ),
    # Stopped reporting at 50m: at 1h the 1m and 5m windows hold no samples, the 30m one does.
    Traffic(
        "stopped",
        Level.UNKNOWN,
        ok=f"0+999x200 _x{STEPS - 200}",
        errors=f"0+1x200 _x{STEPS - 200}",
        measured={1800.0: WindowMeasurement(0.001, None)},
    ),
]


def counter_inputs() -> list[dict[str, str]]:
    inputs = []
    for t in TRAFFIC:
        for code, values in (("200", t.ok), ("500", t.errors)):
            if values is not None:
                labels = {"service": t.service, "version": t.version, "code": code}
                inputs.append(
                    {"series": series_name("http_server_requests_total", labels), "values": values}
                )
    return inputs


@pytest.mark.parametrize("traffic", TRAFFIC, ids=lambda t: f"{t.service}-{t.version}")
def test_hand_worked_slis_judge_as_expected(traffic: Traffic) -> None:
    assert judge(ERRORS.spec, traffic.measured).level is traffic.expected


def test_prometheus_records_the_level_judge_gives_from_raw_counters(
    promtool: str, tmp_path: Path
) -> None:
    tests = []
    for t in TRAFFIC:
        labels = {"slo": ERRORS.metadata.name, "service": t.service, "version": t.version}
        level = judge(ERRORS.spec, t.measured).level
        tests.append(
            {
                "expr": series_name(LEVEL, labels),
                "eval_time": "1h",
                "exp_samples": [{"labels": series_name(LEVEL, labels), "value": int(level)}],
            }
        )
    group = {"interval": f"{STEP:g}s", "input_series": counter_inputs(), "promql_expr_test": tests}
    assert_passed(promtool_test_rules(promtool, tmp_path, [ERRORS], [group]))


# ---------------------------------------------------------------------------- promtool check


def peer_spec_files() -> list[Path]:
    """Every ``openslo/v1`` and Sloth ``prometheus/v1`` file under the peer specs."""
    if not PEER_SPECS.is_dir():
        return []
    found = []
    for path in sorted(PEER_SPECS.rglob("*")):
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        if any(
            isinstance(d, dict)
            and (d.get("apiVersion") == "openslo/v1" or d.get("version") == "prometheus/v1")
            for d in documents
        ):
            found.append(path)
    return found


PEER_FILES = peer_spec_files()


def check_rules(promtool: str, tmp_path: Path, slos: Sequence[SLO]) -> None:
    rules = generate_rules(slos)
    count = sum(len(group["rules"]) for group in rules["groups"])
    path = tmp_path / "rules.yaml"
    path.write_text(dump_rules(rules), encoding="utf-8")
    result = run_promtool(promtool, "check", "rules", "--lint-fatal", str(path), cwd=tmp_path)
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}\n{result.stderr}"
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_rules_of_the_examples_pass_promtool_check(promtool: str, tmp_path: Path) -> None:
    config = load([REPO / "examples"])
    assert config.slos, "examples/ holds no SLO"
    check_rules(promtool, tmp_path, list(config.slos.values()))


def test_rules_of_the_test_slos_pass_promtool_check(promtool: str, tmp_path: Path) -> None:
    check_rules(promtool, tmp_path, list(SLOS.values()))


def test_peer_specs_are_there() -> None:
    names = {p.relative_to(PEER_SPECS).as_posix() for p in PEER_FILES}
    assert len(names) >= 10, f"expected the peer specs in {PEER_SPECS}, found {sorted(names)}"
    assert "sloth/getting-started.yml" in names
    assert "openslo/budgeting-method/occurences-slo.yaml" in names


@pytest.mark.parametrize(
    "path", PEER_FILES, ids=[p.relative_to(PEER_SPECS).as_posix() for p in PEER_FILES]
)
def test_rules_of_peer_specs_pass_promtool_check(promtool: str, tmp_path: Path, path: Path) -> None:
    config = load([path])
    assert config.slos, f"{path} gave no SLO"
    check_rules(promtool, tmp_path, list(config.slos.values()))
