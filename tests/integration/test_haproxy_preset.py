"""The ``haproxy`` preset against the real HAProxy 2.6 Prometheus exposition.

HAProxy serves its own metrics (``http-request use-service prometheus-exporter``) in front of
two real backends: ``app1`` always answers 200, ``app2`` answers 500 to every fifth request.
trimtab's embedded scrape source scrapes HAProxy on a fake clock, every 5 s of it, while real
requests go through the proxy between scrapes (HAProxy's counters are read before each scrape
until they hold every answer, so each interval holds exactly its requests). SLOs written with
``preset: {name: haproxy, …}`` then give app2 an error ratio of exactly 20 % (UNAVAILABLE at
a 1 % budget) and app1 0 % (HEALTHY), per HAProxy server, by the preset's ``server`` label;
and the ``queue`` signal reads the server queue HAProxy really holds: two requests waiting
for app2 (``maxconn 1``) behind one it is serving.
"""

from __future__ import annotations

import http.client
import itertools
import re
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import missing
from proxies.haproxy import BACKEND, HAProxyProcess, haproxy_binary
from servers import free_port, wait_until
from trimtab.adapters.scrape import ScrapeSource
from trimtab.slo import Level, load_text, models
from trimtab.slo.health import health_windows
from trimtab.slo.ports import SeriesRequest

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
STEP = 5.0
INTERVALS = 12  # one minute of scrapes: the SLOs' window
PER_INTERVAL = 50  # requests per interval, alternating app1 and app2 (roundrobin, equal weights)
FAILING_EVERY = 5  # app2 answers 500 to every fifth request: 20 %
WAITING = 2  # requests queued for app2 while it serves one

CONFIG = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: app-errors}
spec:
  service: app
  objective: 99
  minEvents: 10
  indicator:
    preset: {name: haproxy, selector: '{proxy="{{service}}"}'}
  health:
    degraded: {burnRate: 2, windows: [1m]}
    unavailable: {burnRate: 10, windows: [1m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: app-queue}
spec:
  service: app
  indicator:
    preset: {name: haproxy, signal: queue, selector: '{proxy="{{service}}"}'}
  health:
    degraded: {above: 1, windows: [1m]}
    unavailable: {above: 10, windows: [1m]}
""",
    "haproxy-preset.yaml",
)


class App:
    """Two HTTP backends: ``app1`` always 200; ``app2`` 500 to every fifth request, and
    ``/slow`` held until :attr:`release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.servers: dict[str, ThreadingHTTPServer] = {}
        # per server, the requests answered (``/slow`` aside) and how many with a 500
        self.answered: dict[str, list[int]] = {}
        release = self.release
        for name in ("app1", "app2"):
            counter = itertools.count(1)
            answered = self.answered[name] = [0, 0]

            class Handler(BaseHTTPRequestHandler):
                protocol_version = "HTTP/1.1"
                disable_nagle_algorithm = True
                failing = name == "app2"
                seen = counter
                tally = answered

                def do_GET(self) -> None:
                    if self.path.startswith("/slow"):
                        release.wait(30)
                        status = 200
                    else:
                        failed = self.failing and next(self.seen) % FAILING_EVERY == 0
                        status = 500 if failed else 200
                        self.tally[0] += 1
                        self.tally[1] += failed
                    body = b"ok"
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, format: str, *args: Any) -> None:
                    pass

            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            self.servers[name] = server

    def address(self, name: str) -> str:
        host, port = self.servers[name].server_address[:2]
        return f"{host!s}:{port}"

    def stop(self) -> None:
        self.release.set()
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


@pytest.fixture
def app() -> Iterator[App]:
    running = App()
    yield running
    running.stop()


@dataclass
class Proxy:
    process: HAProxyProcess
    metrics: str  # the exporter's URL

    @property
    def port(self) -> int:
        return self.process.port


@pytest.fixture
def haproxy(tmp_path: Path, app: App) -> Iterator[Proxy]:
    if haproxy_binary() is None:
        missing("haproxy (Debian package haproxy)")
    process = HAProxyProcess(tmp_path / "haproxy", port=free_port())
    metrics = free_port()
    process.config = f"""global
    stats socket {process.socket} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout queue 30s
    option http-server-close

frontend web
    bind 127.0.0.1:{process.port}
    default_backend {BACKEND}

frontend metrics
    bind 127.0.0.1:{metrics}
    http-request use-service prometheus-exporter if {{ path /metrics }}

backend {BACKEND}
    balance roundrobin
    use-server app2 if {{ path_beg /slow }}
    server app1 {app.address("app1")} weight 100
    server app2 {app.address("app2")} weight 100 maxconn 1
"""
    process.start()
    yield Proxy(process, f"http://127.0.0.1:{metrics}/metrics")
    app.release.set()
    process.stop()


def exposition(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        return str(response.read().decode())


def sample(text: str, metric: str, **labels: str) -> float:
    """The sum of ``metric``'s samples carrying ``labels`` in an exposition text."""
    total = 0.0
    for line in text.splitlines():
        found = re.fullmatch(rf"{metric}\{{([^}}]*)\}} (\S+)", line)
        if found and all(f'{k}="{v}"' in found.group(1) for k, v in labels.items()):
            total += float(found.group(2))
    return total


def get(port: int, path: str = "/") -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_the_haproxy_preset_judges_each_server_from_haproxys_own_metrics(
    haproxy: Proxy, app: App
) -> None:
    url = haproxy.metrics
    clock = [T0]
    config = models.ScrapeSource.model_validate({"targets": [{"url": url}], "interval": "5s"})
    source = ScrapeSource(config, clock=lambda: clock[0])
    sent = 0
    statuses: list[int] = []
    source.scrape_once()
    for interval in range(INTERVALS):
        for _ in range(PER_INTERVAL):
            statuses.append(get(haproxy.port))
        sent += PER_INTERVAL

        def counted(expected: int = sent) -> bool:
            text = exposition(url)
            return sample(text, "haproxy_server_http_responses_total", proxy=BACKEND) == expected

        wait_until(counted, f"HAProxy counting {sent} responses")
        if interval == INTERVALS - 1:  # the last interval ends with a queue in front of app2
            waiting = [
                threading.Thread(target=get, args=(haproxy.port, "/slow"), daemon=True)
                for _ in range(1 + WAITING)
            ]
            for thread in waiting:
                thread.start()
            wait_until(
                lambda: (
                    sample(exposition(url), "haproxy_server_current_queue", server="app2")
                    == WAITING
                ),
                f"{WAITING} requests queued for app2",
            )
        clock[0] += STEP
        source.scrape_once()
    # Roundrobin alternates, except that a request finding app2 still at its maxconn (its last
    # connection not yet closed, on a busy machine) goes to app1: count what app2 answered.
    served, failed = app.answered["app2"]
    assert app.answered["app1"][0] + served == INTERVALS * PER_INTERVAL
    assert served >= INTERVALS * PER_INTERVAL // 2 - 5
    assert statuses.count(500) == failed == served // FAILING_EVERY
    assert source.targets()[0].up

    at = datetime.fromtimestamp(clock[0], UTC)
    errors, queue = (
        SeriesRequest.of("Balance/app", slo, {"service": "app"}, health_windows(slo.spec))
        for slo in (CONFIG.slos["app-errors"], CONFIG.slos["app-queue"])
    )
    measured = source.query([errors, queue], at)
    ratio = measured[errors]
    assert ratio.error is None
    assert CONFIG.slos["app-errors"].spec.backend_label == "server"
    assert ratio.windows("app2")[60.0].value == pytest.approx(failed / served, rel=1e-9)
    assert ratio.windows("app1")[60.0].value == 0.0
    # every app2 answer of the minute, extrapolated to the window's edges
    assert ratio.windows("app2")[60.0].events == pytest.approx(served, rel=0.1)
    assert ratio.health("app2").level is Level.UNAVAILABLE  # burn rate 20 > 10
    assert ratio.health("app1").level is Level.HEALTHY

    depth = measured[queue]
    assert depth.error is None
    assert depth.windows("app2")[60.0].value == WAITING
    assert depth.windows("app1")[60.0].value == 0.0
    assert depth.health("app2").level is Level.DEGRADED
    assert depth.health("app1").level is Level.HEALTHY
