"""``trimtab plan`` against a real Prometheus, on the README's example configuration.

Forty minutes of OpenTelemetry-style HTTP metrics and queue depths are backfilled for the
examples' checkout service: v1 is healthy; v2 fails 10 % of requests and serves 90 % of them in
about two seconds; zone-a's queue is short, zone-b's degraded, zone-c's past unavailable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from servers import PrometheusServer
from trimtab.controller.state import StateStore, TargetState

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TRIMTAB = str(Path(sys.executable).parent / "trimtab")
START = 1_767_225_600  # 2026-01-01T00:00:00Z
STEP = 15
SAMPLES = 40 * 60 // STEP
AT = "2026-01-01T00:40:00Z"
BOUNDS = ("0.1", "0.25", "1", "2.5", "+Inf")

# (version, status code) → (requests per second, bucket the requests fall into)
TRAFFIC = {
    ("v1", "200"): (10.0, "0.1"),
    ("v2", "200"): (9.0, "2.5"),
    ("v2", "500"): (1.0, "0.1"),
}
QUEUES = {"zone-a": 5.0, "zone-b": 200.0, "zone-c": 800.0}


def _histogram() -> Iterator[str]:
    name = "http_server_request_duration_seconds"
    yield f"# TYPE {name} histogram"
    for (version, code), (rate, bucket) in TRAFFIC.items():
        labels = (
            f'service_name="checkout",service_version="{version}",'
            f'http_response_status_code="{code}"'
        )
        for bound in BOUNDS:
            inside = BOUNDS.index(bound) >= BOUNDS.index(bucket)
            for i in range(SAMPLES + 1):
                count = rate * STEP * i if inside else 0.0
                yield f'{name}_bucket{{{labels},le="{bound}"}} {count} {START + STEP * i}'
        for i in range(SAMPLES + 1):
            yield f"{name}_count{{{labels}}} {rate * STEP * i} {START + STEP * i}"
        for i in range(SAMPLES + 1):
            yield f"{name}_sum{{{labels}}} {rate * STEP * i * 0.05} {START + STEP * i}"


def _queues() -> Iterator[str]:
    yield "# TYPE checkout_queue_depth gauge"
    for zone, depth in QUEUES.items():
        for i in range(SAMPLES + 1):
            labels = f'service="checkout",zone="{zone}"'
            yield f"checkout_queue_depth{{{labels}}} {depth} {START + STEP * i}"


@pytest.fixture
def prometheus(prometheus_server: Callable[[str], PrometheusServer]) -> PrometheusServer:
    text = "\n".join([*_histogram(), *_queues(), "# EOF", ""])
    return prometheus_server(text)


def plan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRIMTAB, "plan", "-f", "examples/checkout", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=60,
    )


def test_plan_json_shows_each_backend_level_per_slo(prometheus: PrometheusServer) -> None:
    result = plan("--prometheus", prometheus.url, "--at", AT, "-o", "json")
    assert result.returncode == 0, result.stderr
    reports = {r["target"]: r for r in json.loads(result.stdout)}
    assert set(reports) == {"Rollout/checkout", "Balance/checkout-zones"}

    rollout = reports["Rollout/checkout"]
    assert rollout["health"] == {
        "v1": dict.fromkeys(
            ("checkout-errors", "checkout-p95", "checkout-slow-requests"), "HEALTHY"
        ),
        "v2": dict.fromkeys(
            ("checkout-errors", "checkout-p95", "checkout-slow-requests"), "UNAVAILABLE"
        ),
    }
    assert reports["Balance/checkout-zones"]["health"] == {
        "zone-a": {"checkout-queue": "HEALTHY"},
        "zone-b": {"checkout-queue": "DEGRADED"},
        "zone-c": {"checkout-queue": "UNAVAILABLE"},
    }
    for report in reports.values():
        assert report["dryRun"] is True
        assert report["at"].startswith("2026-01-01T00:40:00")
        assert set(report["weights"]) == {"current", "desired"}
    # A pending rollout whose canary already fails is not started.
    assert (rollout["action"], rollout["cause"]) == ("hold", "canary-unavailable")
    assert rollout["weights"] == {"current": {"v1": 100, "v2": 0}, "desired": {"v1": 100, "v2": 0}}
    # zone-c (UNAVAILABLE) drained fully, zone-b (DEGRADED) by half: 49.5 % of capacity,
    # within maxDrain 50. HAProxy is not running here: planned from the nominal weights.
    zones = reports["Balance/checkout-zones"]
    assert (zones["action"], zones["cause"]) == ("drain", "drain")
    assert zones["weights"]["current"] == {"zone-a": 34, "zone-b": 33, "zone-c": 33}
    assert zones["weights"]["desired"] == {"zone-a": 67, "zone-b": 33, "zone-c": 0}
    assert any("cannot read the proxy's weights" in r["message"] for r in zones["reasons"])


def test_plan_from_the_saved_state_rolls_a_progressing_canary_back_and_changes_nothing(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    states = StateStore(tmp_path)
    at = datetime.fromisoformat(AT)
    states.save(
        "Rollout/checkout",
        TargetState(
            phase="Progressing",
            step=1,
            applied={"v1": 75, "v2": 25},
            last_shift_at=at - timedelta(minutes=10),
            step_started_at=at - timedelta(minutes=10),
        ),
    )
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = plan(
        "--prometheus", prometheus.url, "--at", AT, "--state-dir", str(tmp_path), "-o", "json"
    )
    assert result.returncode == 0, result.stderr
    rollout = next(r for r in json.loads(result.stdout) if r["target"] == "Rollout/checkout")
    # The baseline test (10 % errors against none) is checked first; UNAVAILABLE would also do.
    assert (rollout["action"], rollout["cause"]) == ("rollback", "baseline-regression")
    assert rollout["weights"] == {"current": {"v1": 75, "v2": 25}, "desired": {"v1": 100, "v2": 0}}
    assert rollout["phase"] == "RolledBack"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written


def test_plan_reasons_carry_value_threshold_window_and_query(prometheus: PrometheusServer) -> None:
    result = plan("--prometheus", prometheus.url, "--at", AT, "-o", "json")
    reasons = json.loads(result.stdout)[0]["reasons"]
    errors_v2 = next(r for r in reasons if r["slo"] == "checkout-errors" and r["backend"] == "v2")
    assert errors_v2["level"] == "UNAVAILABLE"
    assert errors_v2["value"] == pytest.approx(100.0)  # 10 % errors ÷ 0.1 % budget
    assert errors_v2["threshold"] == 14.4
    assert errors_v2["window"] == "1m"
    assert 'service_name="checkout"' in errors_v2["query"]
    p95_v2 = next(r for r in reasons if r["slo"] == "checkout-p95" and r["backend"] == "v2")
    assert p95_v2["value"] == pytest.approx(1 + 1.5 * 8.5 / 9)  # interpolated in (1, 2.5]


def test_plan_text_shows_a_table_per_target(prometheus: PrometheusServer) -> None:
    result = plan("--prometheus", prometheus.url, "--at", AT)
    assert result.returncode == 0, result.stderr
    assert "Rollout/checkout" in result.stdout
    assert "UNAVAILABLE" in result.stdout
    assert "zone-b" in result.stdout


def test_plan_with_prometheus_down_reports_unknown_and_the_source(tmp_path: Path) -> None:
    result = plan("--prometheus", "http://127.0.0.1:9", "--at", AT, "-o", "json")
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    for report in reports:
        assert report["source"]["up"] is False
        assert {level for slos in report["health"].values() for level in slos.values()} == {
            "UNKNOWN"
        }
