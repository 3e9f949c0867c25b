"""The controller commands as a person runs them: ``run --once``, ``status``, ``history``,
``explain`` and the manual overrides, on the embedded scrape source and the file adapter."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from servers import free_port
from trimtab.controller.decisions import DecisionLog
from trimtab.controller.leader import FileLeaderLock

pytestmark = pytest.mark.integration

TRIMTAB = str(Path(sys.executable).parent / "trimtab")
EXPOSITION = b"""# TYPE req_total counter
req_total{version="v1",code="200"} 1000
req_total{version="v2",code="200"} 100
"""


class _Exporter(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(EXPOSITION)))
        self.end_headers()
        self.wfile.write(EXPOSITION)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def exporter() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


@pytest.fixture
def workdir(tmp_path: Path, exporter: str) -> Path:
    (tmp_path / "trimtab.yaml").write_text(
        f"""
apiVersion: trimtab.dev/v1alpha1
kind: Controller
spec:
  metrics: {{scrape: {{targets: [{{url: "{exporter}"}}], interval: 1s}}}}
  stateDir: state
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {{name: errors}}
spec:
  service: shop
  objective: 99.9
  backendLabel: version
  minEvents: 0
  indicator:
    errorRatio: {{errors: 'req_total{{code="500"}}', total: req_total}}
---
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {{name: shop}}
spec:
  slos: [{{name: errors}}]
  stable: v1
  canary: v2
  route: {{file: {{path: weights.json}}}}
  steps: [{{weight: 10, hold: 1m}}, {{weight: 100}}]
"""
    )
    return tmp_path


def trimtab(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TRIMTAB, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=workdir,
        timeout=60,
    )


def weights(workdir: Path) -> dict[str, int]:
    return dict(json.loads((workdir / "weights.json").read_text()))


def test_run_once_then_status_history_explain_and_overrides(workdir: Path) -> None:
    first = trimtab(workdir, "run", "-f", "trimtab.yaml", "--once", "--warmup", "1.5", "-o", "json")
    assert first.returncode == 0, first.stderr
    [decision] = json.loads(first.stdout)
    assert decision["action"] == "advance"
    assert decision["weights"] == {
        "current": {"v1": 100, "v2": 0},
        "desired": {"v1": 90, "v2": 10},
        "applied": None,
    }
    assert weights(workdir) == {"v1": 90, "v2": 10}

    status = trimtab(workdir, "status", "-f", "trimtab.yaml", "-o", "json")
    [state] = json.loads(status.stdout)
    assert state["target"] == "Rollout/shop"
    assert state["phase"] == "Progressing"
    assert state["applied"] == {"v1": 90, "v2": 10}
    assert state["intent"] is None

    explain = trimtab(workdir, "explain", decision["id"], "-f", "trimtab.yaml")
    assert explain.returncode == 0, explain.stderr
    assert "advance" in explain.stdout
    assert "rollout started" in explain.stdout

    pause = trimtab(workdir, "pause", "shop", "-f", "trimtab.yaml")
    assert pause.returncode == 0, pause.stderr
    abort = trimtab(workdir, "abort", "shop", "-f", "trimtab.yaml")
    assert abort.returncode == 0, abort.stderr
    assert weights(workdir) == {"v1": 100, "v2": 0}

    history = json.loads(trimtab(workdir, "history", "-f", "trimtab.yaml", "-o", "json").stdout)
    assert [d["action"] for d in history] == ["advance", "pause", "abort"]
    assert history[1]["actor"] != "controller"
    verify = trimtab(workdir, "history", "-f", "trimtab.yaml", "--verify")
    assert verify.returncode == 0, verify.stderr
    assert "3 records" in verify.stdout


def test_dry_run_writes_no_weights_and_records_dry_run(workdir: Path) -> None:
    result = trimtab(
        workdir, "run", "-f", "trimtab.yaml", "--once", "--dry-run", "--warmup", "1.5", "-o", "json"
    )
    assert result.returncode == 0, result.stderr
    [decision] = json.loads(result.stdout)
    assert decision["dryRun"] is True
    assert decision["action"] == "advance"
    assert not (workdir / "weights.json").exists()
    # A real run afterwards starts from the real weights: no drift from the dry run's.
    real = trimtab(workdir, "run", "-f", "trimtab.yaml", "--once", "--warmup", "1.5", "-o", "json")
    assert real.returncode == 0, real.stderr
    [decision] = json.loads(real.stdout)
    assert decision["action"] == "advance"
    assert decision["dryRun"] is False
    assert weights(workdir) == {"v1": 90, "v2": 10}


def test_a_tampered_history_fails_verification(workdir: Path) -> None:
    trimtab(workdir, "run", "-f", "trimtab.yaml", "--once", "--warmup", "1.5")
    log = workdir / "state" / "decisions.jsonl"
    log.write_text(log.read_text().replace('"advance"', '"promote"'))
    verify = trimtab(workdir, "history", "-f", "trimtab.yaml", "--verify")
    assert verify.returncode == 1


def test_sigterm_stops_the_loop_like_ctrl_c(workdir: Path) -> None:
    """What Kubernetes and systemd send: the controller leaves as an interrupted one does (its
    cycle finished, the leader lock released, exit status 0), not killed where it stands."""
    config = workdir / "trimtab.yaml"
    config.write_text(
        config.read_text().replace(
            "stateDir: state", f"stateDir: state\n  listen: 127.0.0.1:{free_port()}"
        )
    )
    process = subprocess.Popen(
        [TRIMTAB, "run", "-f", "trimtab.yaml", "--warmup", "1.5"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        log = DecisionLog(workdir / "state" / "decisions.jsonl")
        for _ in range(600):  # the first cycle records its advance
            if log.path.exists() and log.records():
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "stopping" in stderr
    assert weights(workdir) == {"v1": 90, "v2": 10}
    lock = FileLeaderLock(workdir / "state" / "leader.lock")
    assert lock.try_acquire()
    lock.release()
