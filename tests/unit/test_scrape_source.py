"""The embedded scrape source against real loopback exporters, on a fake clock.

Two exporters serve text this test controls: one for the ``checkout`` service, one for ``cart``
(the params of two targets measured in one batch). Every scrape is stamped by the fake clock,
and the exporters' counters are computed for that same instant, so every expected number below
is exact: counters grow linearly and the windows are sampled every 5 s edge to edge.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from trimtab.adapters.scrape import ScrapeSource
from trimtab.slo import Level, load_text, models
from trimtab.slo.health import health_windows
from trimtab.slo.ports import Measurements, SeriesRequest

T0 = 1_700_000_000.0
STEP = 5.0
WINDOW = 60.0
BOUNDS = ("0.1", "0.25", "0.5", "+Inf")


@dataclass
class Backend:
    """One version of a service: requests per second, error share, cumulative share per bucket."""

    rps: float
    errors: float
    buckets: tuple[float, float, float, float]  # ≤0.1, ≤0.25, ≤0.5, +Inf
    queue: float
    started: float = T0  # when the process (and its counters) started


@dataclass
class Exporter:
    """A loopback exporter rendering its service's metrics for the fake ``now``."""

    service: str
    backends: dict[str, Backend]
    now: float = T0
    port: int = 0
    scrapes: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _connections: list[socket.socket] = field(default_factory=list, repr=False)

    def render(self) -> str:
        lines = [
            "# HELP app_requests Requests served.",
            "# TYPE app_requests counter",  # no _total, as Envoy's counters
        ]
        for version, b in self.backends.items():
            served = b.rps * (self.now - b.started)
            labels = f'service="{self.service}",version="{version}"'
            lines.append(f'app_requests{{{labels},code="200"}} {served * (1 - b.errors)!r}')
            if b.errors:  # the 5xx series exists only once there were errors
                lines.append(f'app_requests{{{labels},code="503"}} {served * b.errors!r}')
        lines += ["# TYPE app_latency_seconds histogram"]
        for version, b in self.backends.items():
            served = b.rps * (self.now - b.started)
            labels = f'service="{self.service}",version="{version}"'
            for le, share in zip(BOUNDS, b.buckets, strict=True):
                lines.append(f'app_latency_seconds_bucket{{{labels},le="{le}"}} {served * share!r}')
            lines.append(f"app_latency_seconds_count{{{labels}}} {served!r}")
            lines.append(f"app_latency_seconds_sum{{{labels}}} {served * 0.1!r}")
        lines += ["# TYPE app_queue_depth gauge"]
        for version, b in self.backends.items():
            lines.append(
                f'app_queue_depth{{service="{self.service}",version="{version}"}} {b.queue}'
            )
        return "\n".join(lines) + "\n"

    def start(self) -> Exporter:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                outer._connections.append(self.connection)

            def do_GET(self) -> None:
                outer.scrapes += 1
                body = outer.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop as a process does: no listener, and every open connection closed."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._connections.clear()
            assert self._thread is not None
            self._thread.join(5)
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"


CONFIG = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: shop
  objective: 99
  backendLabel: version
  minEvents: 10
  indicator:
    errorRatio:
      errors: app_requests{service="{{service}}", code=~"5.."}
      total: app_requests{service="{{service}}"}
  health:
    degraded: {burnRate: 2, windows: [1m]}
    unavailable: {burnRate: 10, windows: [1m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: slow}
spec:
  service: shop
  objective: 90
  backendLabel: version
  minEvents: 10
  indicator:
    latency: {histogram: app_latency_seconds, selector: '{service="{{service}}"}', threshold: 250ms}
  health:
    degraded: {burnRate: 2, windows: [1m]}
    unavailable: {burnRate: 4, windows: [1m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: p95}
spec:
  service: shop
  backendLabel: version
  minEvents: 10
  indicator:
    quantile: {histogram: app_latency_seconds, selector: '{service="{{service}}"}', quantile: 0.95}
  health:
    degraded: {above: 200ms, windows: [1m]}
    unavailable: {above: 400ms, windows: [1m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: queue}
spec:
  service: shop
  backendLabel: version
  indicator:
    gauge: {query: 'max by (version) (app_queue_depth{service="{{service}}"})'}
  health:
    degraded: {above: 10, windows: [1m]}
    unavailable: {above: 50, windows: [1m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: events}
spec:
  service: shop
  objective: 99
  backendLabel: version
  indicator:
    events:
      errorQuery: sum by (version) (rate(app_requests{code=~"5.."}[{{window}}]))
      totalQuery: sum by (version) (rate(app_requests[{{window}}]))
  health:
    degraded: {burnRate: 2, windows: [1m]}
    unavailable: {burnRate: 10, windows: [1m]}
""",
    "scrape.yaml",
)
SLOS = ("errors", "slow", "p95", "queue")


def request(slo: str, service: str) -> SeriesRequest:
    spec = CONFIG.slos[slo]
    return SeriesRequest.of(
        f"Rollout/{service}", spec, {"service": service}, health_windows(spec.spec)
    )


REQUESTS = [request(slo, service) for service in ("checkout", "cart") for slo in SLOS]


@dataclass
class Rig:
    checkout: Exporter
    cart: Exporter
    source: ScrapeSource
    clock: list[float]

    def advance(self, seconds: float) -> None:
        """Scrape every 5 s of fake time for ``seconds``."""
        end = self.clock[0] + seconds
        while self.clock[0] < end:
            self.clock[0] += STEP
            self.checkout.now = self.cart.now = self.clock[0]
            self.source.scrape_once()

    def measure(self, requests: list[SeriesRequest] = REQUESTS) -> Measurements:
        return self.source.query(requests, datetime.fromtimestamp(self.clock[0], UTC))


@pytest.fixture
def rig() -> Iterator[Rig]:
    checkout = Exporter(
        "checkout",
        {
            "v1": Backend(10, 0.01, (0.9, 0.98, 1.0, 1.0), queue=3),
            "v2": Backend(10, 0.2, (0.3, 0.5, 0.9, 1.0), queue=40),
        },
    ).start()
    cart = Exporter(
        "cart",
        {
            "v1": Backend(5, 0.0, (0.5, 1.0, 1.0, 1.0), queue=0),
            "v2": Backend(20, 0.05, (0.1, 0.2, 0.3, 1.0), queue=70),
        },
    ).start()
    clock = [T0]
    config = models.ScrapeSource.model_validate(
        {
            "targets": [
                {"url": checkout.url, "labels": {"cluster": "east"}},
                {"url": cart.url},
            ],
            "interval": "5s",
        }
    )
    source = ScrapeSource(config, clock=lambda: clock[0])
    yield Rig(checkout, cart, source, clock)
    source.stop()
    checkout.stop()
    cart.stop()


def values(measured: Measurements, slo: str, service: str, field: str = "value") -> dict[str, Any]:
    result = measured[request(slo, service)]
    assert result.error is None, result.error
    return {
        backend: getattr(result.windows(backend)[WINDOW], field)
        for backend in ("v1", "v2")
        if WINDOW in result.windows(backend)
    }


def level(measured: Measurements, slo: str, service: str, backend: str) -> Level:
    return measured[request(slo, service)].health(backend).level


def test_one_batch_measures_every_slo_of_both_services_per_backend(rig: Rig) -> None:
    rig.advance(120)
    measured = rig.measure()
    assert measured.source_error is None

    assert values(measured, "errors", "checkout") == {
        "v1": pytest.approx(0.01),
        "v2": pytest.approx(0.2),
    }
    # cart v1 never served a 5xx: no error series at all, which counts as 0 (`or 0 * total`)
    assert values(measured, "errors", "cart") == {"v1": 0.0, "v2": pytest.approx(0.05)}
    assert values(measured, "errors", "checkout", "events") == {
        "v1": pytest.approx(600),
        "v2": pytest.approx(600),
    }
    assert values(measured, "errors", "cart", "events") == {
        "v1": pytest.approx(300),
        "v2": pytest.approx(1200),
    }
    # slower than 250 ms: 1 − share at le="0.25"
    assert values(measured, "slow", "checkout") == {
        "v1": pytest.approx(0.02),
        "v2": pytest.approx(0.5),
    }
    assert values(measured, "slow", "cart") == {
        "v1": pytest.approx(0.0, abs=1e-12),
        "v2": pytest.approx(0.8),
    }
    # p95: checkout v1 rank 0.95 in (0.1, 0.25]: 0.1 + 0.15·0.05/0.08; v2 falls in +Inf → 0.5;
    # cart v1 rank in (0.1, 0.25]: 0.1 + 0.15·0.45/0.5; cart v2 in +Inf → 0.5
    assert values(measured, "p95", "checkout") == {
        "v1": pytest.approx(0.1 + 0.15 * 0.05 / 0.08),
        "v2": pytest.approx(0.5),
    }
    assert values(measured, "p95", "cart") == {"v1": pytest.approx(0.235), "v2": pytest.approx(0.5)}
    assert values(measured, "queue", "checkout") == {"v1": 3.0, "v2": 40.0}
    assert values(measured, "queue", "cart") == {"v1": 0.0, "v2": 70.0}

    assert [level(measured, "errors", "checkout", b) for b in ("v1", "v2")] == [
        Level.HEALTHY,  # burn 1
        Level.UNAVAILABLE,  # burn 20
    ]
    assert level(measured, "queue", "cart", "v2") is Level.UNAVAILABLE
    assert level(measured, "p95", "checkout", "v2") is Level.UNAVAILABLE


def test_targets_report_up_and_the_series_carry_instance_and_extra_labels(rig: Rig) -> None:
    rig.advance(10)
    checkout, cart = rig.source.targets()
    assert checkout.up is True
    assert cart.up is True
    assert checkout.error is None
    assert checkout.labels == {"instance": f"127.0.0.1:{rig.checkout.port}", "cluster": "east"}
    assert checkout.last_scrape == datetime.fromtimestamp(T0 + 10, UTC)
    assert checkout.samples == 4 + 2 * 6 + 2  # requests, histogram, queue
    assert rig.checkout.scrapes == 2


def test_a_target_that_goes_down_makes_its_slos_unknown_then_recovers(rig: Rig) -> None:
    rig.advance(120)
    rig.cart.stop()
    rig.advance(5)

    checkout, cart = rig.source.targets()
    assert checkout.up is True
    assert cart.up is False
    assert cart.error is not None
    assert "refused" in cart.error

    measured = rig.measure()
    assert measured.source_error is None  # one target is still up
    for slo in SLOS:
        health = measured[request(slo, "cart")].health("v2")
        assert health.level is Level.UNKNOWN
        assert f"scrape target {rig.cart.url} is down" in health.reason
        assert level(measured, slo, "checkout", "v2") is not Level.UNKNOWN

    rig.cart.start()  # same port
    rig.advance(5)
    assert rig.source.targets()[1].up is True
    measured = rig.measure()
    assert values(measured, "errors", "cart") == {"v1": 0.0, "v2": pytest.approx(0.05)}
    assert level(measured, "queue", "cart", "v2") is Level.UNAVAILABLE


def test_every_target_down_is_a_source_error(rig: Rig) -> None:
    rig.advance(60)
    rig.checkout.stop()
    rig.cart.stop()
    rig.advance(5)
    measured = rig.measure()
    assert measured.source_error is not None
    assert measured.source_error.startswith("scrape source: all targets down: ")
    assert rig.checkout.url in measured.source_error
    health = measured[request("errors", "checkout")].health("v1")
    assert health.level is Level.UNKNOWN
    assert health.reason == f"source failed: {measured.source_error}"


def test_a_counter_reset_is_handled_as_prometheus_does(rig: Rig) -> None:
    rig.advance(90)
    # the cart process restarts right after a scrape: its counters start again from zero
    for backend in rig.cart.backends.values():
        backend.started = rig.clock[0]
    rig.advance(30)
    measured = rig.measure()
    assert values(measured, "errors", "cart") == {"v1": 0.0, "v2": pytest.approx(0.05)}
    assert values(measured, "errors", "cart", "events") == {
        "v1": pytest.approx(300),
        "v2": pytest.approx(1200),
    }
    assert values(measured, "p95", "cart")["v1"] == pytest.approx(0.235)


def test_free_promql_is_unknown_with_the_reason(rig: Rig) -> None:
    rig.advance(60)
    events = request("events", "checkout")
    health = rig.measure([events])[events].health("v1")
    assert health.level is Level.UNKNOWN
    assert "cannot evaluate free PromQL" in health.reason


def test_before_two_scrapes_there_is_no_data_not_a_verdict(rig: Rig) -> None:
    rig.advance(5)
    measured = rig.measure()
    assert measured.source_error is None
    assert measured[request("errors", "checkout")].health("v1").reason == "no data in the 1m window"


def test_a_window_longer_than_the_retention_is_an_error(rig: Rig) -> None:
    short = ScrapeSource(
        models.ScrapeSource.model_validate({"targets": [{"url": rig.cart.url}], "interval": "5s"}),
        retention=30,
        clock=lambda: rig.clock[0],
    )
    short.scrape_once()
    result = short.query([request("errors", "cart")], datetime.fromtimestamp(rig.clock[0], UTC))
    assert result[request("errors", "cart")].error == (
        "the 1m window is longer than the scrape source keeps (30s); "
        "configure Prometheus or a longer retention"
    )
    short.stop()


def test_a_stale_series_ends_instant_lookups(rig: Rig) -> None:
    rig.advance(60)
    # checkout v2 disappears from the exposition: its queue gauge goes stale at once
    del rig.checkout.backends["v2"]
    rig.advance(65)
    measured = rig.measure()
    assert "v2" not in measured[request("queue", "checkout")].backends
    assert values(measured, "queue", "checkout") == {"v1": 3.0}


def test_background_thread_scrapes_every_interval_and_stops(rig: Rig) -> None:
    config = models.ScrapeSource.model_validate(
        {"targets": [{"url": rig.cart.url}], "interval": "50ms"}
    )
    source = ScrapeSource(config)
    source.start()
    deadline = threading.Event()
    for _ in range(200):
        if rig.cart.scrapes >= 3:
            break
        deadline.wait(0.01)
    source.stop()
    assert rig.cart.scrapes >= 3
    seen = rig.cart.scrapes
    deadline.wait(0.2)
    assert rig.cart.scrapes == seen  # stopped


def test_a_scraped_nan_is_a_value_not_a_staleness_marker(rig: Rig) -> None:
    # Prometheus marks staleness with a NaN of its own; an exported NaN stays a value.
    rig.checkout.backends["v1"].queue = math.nan
    rig.advance(30)
    result = rig.measure([request("queue", "checkout")])[request("queue", "checkout")]
    value = result.windows("v1")[WINDOW].value
    assert value is not None
    assert math.isnan(value)
    assert result.health("v1").reason == "no data in the 1m window"  # NaN is no data


@contextlib.contextmanager
def serving(status: int, content_type: str, body: str) -> Iterator[str]:
    """A one-answer exporter; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def scrape_twice(url: str, labels: dict[str, str] | None = None) -> ScrapeSource:
    clock = [T0]
    config = models.ScrapeSource.model_validate(
        {"targets": [{"url": url, "labels": labels or {}}], "interval": "5s"}
    )
    source = ScrapeSource(config, clock=lambda: clock[0])
    source.scrape_once()
    clock[0] += 5
    source.scrape_once()
    return source


JOBS_SLO = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: jobs}
spec:
  service: shop
  objective: 99
  backendLabel: version
  minEvents: 0
  indicator:
    errorRatio:
      errors: jobs_total{result="failed"}
      total: jobs_total
  health:
    degraded: {burnRate: 2, windows: [5s]}
    unavailable: {burnRate: 10, windows: [5s]}
""",
    "jobs.yaml",
).slos["jobs"]
JOBS = SeriesRequest.of("Balance/jobs", JOBS_SLO, {}, [5.0])


def test_openmetrics_answers_are_read_with_the_openmetrics_parser() -> None:
    text = (
        "# TYPE jobs counter\n"
        'jobs_total{version="v1",result="ok"} 90\n'
        'jobs_created{version="v1",result="ok"} 1700000000\n'
        'jobs_total{version="v1",result="failed"} 10\n'
        "# EOF\n"
    )
    with serving(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", text) as url:
        source = scrape_twice(url)
    assert source.targets()[0].up is True
    result = source.query([JOBS], datetime.fromtimestamp(T0 + 5, UTC))[JOBS]
    # a constant counter: no increase, a ratio of 0/0
    value = result.windows("v1")[5.0].value
    assert value is not None
    assert math.isnan(value)
    assert result.windows("v1")[5.0].events == 0.0


def test_an_http_error_marks_the_target_down_with_the_status() -> None:
    with serving(503, "text/plain", "unavailable") as url:
        source = scrape_twice(url)
    status = source.targets()[0]
    assert status.up is False
    assert status.error == "HTTP 503"
    assert source.query([JOBS], datetime.fromtimestamp(T0 + 5, UTC)).source_error == (
        f"scrape source: all targets down: {url}: HTTP 503"
    )


def test_an_unparsable_answer_marks_the_target_down() -> None:
    with serving(200, "text/plain", "this is { not metrics\n") as url:
        source = scrape_twice(url)
    status = source.targets()[0]
    assert status.up is False
    assert status.error is not None


def test_a_scraped_label_that_clashes_with_a_target_label_is_kept_as_exported() -> None:
    # As Prometheus without honor_labels: the configured label wins, the exporter's is renamed.
    text = '# TYPE jobs_total counter\njobs_total{version="canary",result="ok"} 1\n'
    with serving(200, "text/plain", text) as url:
        source = scrape_twice(url, {"version": "v2"})
    result = source.query([JOBS], datetime.fromtimestamp(T0 + 5, UTC))[JOBS]
    assert set(result.backends) == {"v2"}
