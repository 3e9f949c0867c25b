"""The demo's backend: a small HTTP service instrumented with the OpenTelemetry SDK.

``python -m trimtab.controller.demoapp --version v2`` serves, on 127.0.0.1:

- ``GET /`` (any path): answers ``200 <version>`` after a short, slightly random delay — or,
  with a fault set, a ``500`` for a share of requests and/or a slower answer;
- ``GET /metrics``: its metrics in the Prometheus text format, through the OpenTelemetry SDK's
  Prometheus exporter: ``http.server.request.duration`` (seconds, the bucket boundaries the HTTP
  semantic conventions advise) with ``http.request.method``, ``http.route`` and
  ``http.response.status_code`` — scraped, it reads ``http_server_request_duration_seconds_*``,
  what trimtab's ``otel-http`` preset expects;
- ``POST /fault`` with ``{"errorRate": 0.3, "delay": 0.4}``: from now on, that share of requests
  fails and every request waits that much longer (``{}`` clears it).

It prints ``listening on PORT`` once ready (port 0 picks a free one) and stops on SIGTERM or
SIGINT. The demo starts one per version and scrapes them with a ``version`` target label.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest

__all__ = ["Fault", "build_server", "main"]

# The boundaries the HTTP semantic conventions advise for http.server.request.duration.
BOUNDARIES = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
BASE_DELAY = (0.002, 0.02)  # seconds: a healthy answer takes this long, uniformly
MAX_FAULT_DELAY = 5.0


class Fault:
    """What goes wrong right now: a share of failing requests and an added delay (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.error_rate = 0.0
        self.delay = 0.0

    def set(self, settings: dict[str, Any]) -> None:
        error_rate = float(settings.get("errorRate", 0.0))
        delay = float(settings.get("delay", 0.0))
        if not 0.0 <= error_rate <= 1.0 or not 0.0 <= delay <= MAX_FAULT_DELAY:
            raise ValueError(f"errorRate in [0, 1], delay in [0, {MAX_FAULT_DELAY:g}] seconds")
        with self._lock:
            self.error_rate, self.delay = error_rate, delay

    def draw(self, rng: random.Random) -> tuple[bool, float]:
        """(fails?, seconds to wait) for one request."""
        with self._lock:
            error_rate, delay = self.error_rate, self.delay
        return rng.random() < error_rate, rng.uniform(*BASE_DELAY) + delay


def build_server(version: str, port: int = 0, *, seed: int | None = None) -> ThreadingHTTPServer:
    """The backend's HTTP server, bound to 127.0.0.1:``port`` (not yet serving)."""
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(
        registry=registry, disable_target_info=True, scope_info_enabled=False
    )
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "demo", "service.version": version}),
        views=[
            View(
                instrument_name="http.server.request.duration",
                aggregation=ExplicitBucketHistogramAggregation(BOUNDARIES),
            )
        ],
    )
    duration = provider.get_meter("trimtab.demo").create_histogram(
        "http.server.request.duration", unit="s", description="Duration of HTTP server requests."
    )
    fault = Fault()
    rng = random.Random(seed)  # noqa: S311  (simulated faults, not secrets)
    rng_lock = threading.Lock()
    answer = version.encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # slow behind a proxy's keep-alive otherwise

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._reply(200, generate_latest(registry), "text/plain; version=0.0.4")
                return
            started = time.perf_counter()
            with rng_lock:
                fails, delay = fault.draw(rng)
            time.sleep(delay)
            status = 500 if fails else 200
            self._reply(status, b"failing\n" if fails else answer + b"\n", "text/plain")
            attributes: dict[str, str | int] = {
                "http.request.method": "GET",
                "http.route": "/",
                "http.response.status_code": status,
            }
            duration.record(time.perf_counter() - started, attributes)

        def do_POST(self) -> None:
            if self.path != "/fault":
                self._reply(404, b"not found\n", "text/plain")
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                settings = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(settings, dict):
                    raise ValueError("a JSON object")
                fault.set(settings)
            except ValueError as error:
                self._reply(400, f"{error}\n".encode(), "text/plain")
                return
            self._reply(204, b"", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trimtab.controller.demoapp")
    parser.add_argument("--version", required=True, help="what this backend answers, e.g. v2")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    server = build_server(args.version, args.port)

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
