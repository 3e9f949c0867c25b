"""The controller's own telemetry (DESIGN.md section 6): metrics and traces through the
OpenTelemetry SDK, and a small HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``.

Metrics go to an injected ``prometheus_client.CollectorRegistry``; the exposition holds exactly
these families::

    trimtab_route_weight{target,backend}             gauge: the weights a decision leaves
    trimtab_slo_health{slo,target,backend}           gauge: 2 UNAVAILABLE … 0 HEALTHY, -1 UNKNOWN
    trimtab_slo_value{slo,target,backend,window}     gauge: the measured SLI (ratio or value)
    trimtab_slo_threshold{slo,level}                 gauge: DEGRADED / UNAVAILABLE thresholds
    trimtab_target_phase{target,phase}               gauge: 1 for the target's current phase
    trimtab_decisions_total{target,action}           counter
    trimtab_cycle_duration_seconds                   histogram
    trimtab_source_errors_total                      counter: query batches with a failure
    trimtab_adapter_errors_total{target}             counter: failed adapter calls

The fleet-wide ones — the cycle's duration and the source's errors — are OpenTelemetry SDK
instruments, exported by ``PrometheusMetricReader(registry=...)`` with scope labels and
``target_info`` switched off. The exporter hands counters to ``CounterMetricFamily``, which adds
``_total`` (so counters are created without it), and appends the unit, mapped (``s`` →
``seconds``), to names not already ending in it (so the histogram is ``trimtab_cycle_duration``
in ``s``).

The per-target ones are kept in :class:`~trimtab.controller.series.TargetSeries`, compact, and
written out in the same text format after the registry's families when ``/metrics`` is read
(:meth:`Telemetry.exposition_chunks`). At 10,000 targets they are about 180,000 series: through
the SDK each cost about 2 KB (300 MB in all) and a scrape took 12 s, past Prometheus' default
scrape timeout; an SDK counter ``add`` took longer than deciding a hold; through
``prometheus_client``'s writer, which checks and escapes every label name of every sample, a
scrape still took 3 s.

Traces: a span per cycle with a child per decision; exporters only from
``OTEL_TRACES_EXPORTER`` (unset or ``none``: no exporter, and no decision spans are made).

The reconciler never imports this module: :meth:`Telemetry.instrument` wraps its source and
adapters, and the CLI runs each cycle through :meth:`Telemetry.follow_cycle` (``run --once``
through :meth:`Telemetry.run_cycle`, which keeps the decisions to print them).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import entry_points
from typing import Any, TypeVar, cast

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from trimtab.slo.ports import (
    Measurements,
    MetricSource,
    SeriesRequest,
    SeriesResult,
    TrafficAdapter,
    Verification,
    Weights,
)
from trimtab.slo.traffic import TrafficError

from .reconcile import Reconciler, taking
from .record import Decision
from .series import TargetSeries

__all__ = ["DEFAULT_LISTEN", "Telemetry", "span_processors_from_env"]

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9464"
"""Where ``/metrics`` is served without a Controller: loopback (DESIGN.md section 13)."""
CYCLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_T = TypeVar("_T")


def span_processors_from_env() -> list[SpanProcessor]:
    """A batch processor per exporter named in ``OTEL_TRACES_EXPORTER`` (comma-separated
    entry points of ``opentelemetry_traces_exporter``; each exporter reads its own ``OTEL_*``)."""
    found: list[SpanProcessor] = []
    for name in (n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")):
        if name in ("", "none"):
            continue
        points = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not points:
            log.warning("OTEL_TRACES_EXPORTER: no exporter %r installed; not exporting it", name)
            continue
        found.append(BatchSpanProcessor(points[0].load()()))
    return found


def _resource() -> Resource:
    detected = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
        detected = detected.merge(Resource({"service.name": "trimtab"}))
    return detected


class Telemetry:
    """Metrics into ``registry``, spans to ``span_processors`` (default: from ``OTEL_*``)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        span_processors: Sequence[SpanProcessor] | None = None,
    ) -> None:
        self.registry = registry
        self.leading = False  # set by the CLI while this process holds the leader lock
        self.cycles = 0
        self.series = TargetSeries()
        self._server: ThreadingHTTPServer | None = None
        resource = _resource()
        reader = PrometheusMetricReader(
            registry=registry,
            scope_info_enabled=False,
            disable_target_info=True,
        )
        self._meters = MeterProvider(
            metric_readers=[reader], resource=resource, shutdown_on_exit=False
        )
        meter = self._meters.get_meter("trimtab.controller")
        self._source_errors = meter.create_counter(
            "trimtab_source_errors", description="Metric-source query batches with a failure."
        )
        self._source_errors.add(0)  # exposed from the start, so rate() sees the first error
        self._duration = meter.create_histogram(
            "trimtab_cycle_duration",
            unit="s",
            description="Seconds per reconcile cycle.",
            explicit_bucket_boundaries_advisory=CYCLE_BUCKETS,
        )
        processors = span_processors_from_env() if span_processors is None else span_processors
        self._exporting = bool(processors)  # decision spans only for someone to read them
        self._tracers = TracerProvider(resource=resource, shutdown_on_exit=False)
        for processor in processors:
            self._tracers.add_span_processor(processor)
        self.tracer = self._tracers.get_tracer("trimtab.controller")

    # ----------------------------------------------------------------------------- metrics

    def exposition(self) -> bytes:
        """What ``/metrics`` serves (Prometheus text format 0.0.4), as one text."""
        return b"".join(self.exposition_chunks())

    def exposition_chunks(self) -> Iterator[bytes]:
        """What ``/metrics`` serves, a chunk at a time: the registry's families (the SDK's),
        then the per-target ones (:class:`~trimtab.controller.series.TargetSeries`)."""
        yield generate_latest(self.registry)
        yield from self.series.chunks()

    def record_decision(self, decision: Decision) -> None:
        """Count ``decision``; the route's weights and (when judged) its health per SLO."""
        self.series.record_decisions([decision])

    def record_source_error(self) -> None:
        self._source_errors.add(1)

    def record_adapter_error(self, target: str) -> None:
        self.series.record_adapter_error(target)

    def _record_in_cycle(self, decision: Decision) -> None:
        """One decision of the current cycle: its metrics, in a child span when spans are
        exported."""
        if self._exporting:
            with self.decision_span(decision):
                self.record_decision(decision)
        else:
            self.record_decision(decision)

    # ------------------------------------------------------------------------------ traces

    @contextmanager
    def cycle_span(self) -> Iterator[Span]:
        """The current span for one cycle; decision spans opened inside are its children."""
        with self.tracer.start_as_current_span("trimtab.cycle") as span:
            yield span

    @contextmanager
    def decision_span(self, decision: Decision) -> Iterator[Span]:
        attributes = {
            "trimtab.decision.id": decision.id,
            "trimtab.target": decision.target,
            "trimtab.action": decision.action.value,
            "trimtab.dry_run": decision.dry_run,
        }
        with self.tracer.start_as_current_span("trimtab.decision", attributes=attributes) as span:
            yield span

    def run_cycle(self, cycle: Callable[[], Iterable[Decision]]) -> list[Decision]:
        """:meth:`follow_cycle`, keeping every decision, in order."""
        decisions: list[Decision] = []
        self.follow_cycle(cycle, decisions.append)
        return decisions

    def follow_cycle(
        self, cycle: Callable[[], Iterable[Decision]], each: Callable[[Decision], object]
    ) -> int:
        """Run ``cycle`` in a cycle span, timed; record each decision as it comes, then hand it
        to ``each`` and keep nothing of it (at 10,000 targets, a cycle's decisions are 23 MB).

        Returns how many decisions there were. The duration is the cycle's wall time, ``each``
        included. A cycle that raises has its decisions so far recorded, and no duration.
        """
        with self.cycle_span() as span:
            started = time.perf_counter()
            count = 0
            for decision in cycle():
                self._record_in_cycle(decision)
                each(decision)
                count += 1
            span.set_attribute("trimtab.decisions", count)
            self._duration.record(time.perf_counter() - started)
            self.cycles += 1
        return count

    # ----------------------------------------------------------------------------- wiring

    def instrument(self, reconciler: Reconciler) -> Reconciler:
        """A reconciler whose source and adapters report to this telemetry."""
        config = reconciler.config
        adapters = {k: _Adapter(self, k, a) for k, a in config.adapters.items()}
        self.series.add_targets(adapters)
        return Reconciler(replace(config, source=_Source(self, config.source), adapters=adapters))

    # ------------------------------------------------------------------------------- HTTP

    def ready(self) -> tuple[bool, str]:
        if not self.leading:
            return False, "not the leader"
        if not self.cycles:
            return False, "no cycle completed yet"
        return True, "ok"

    def serve(self, listen: str = DEFAULT_LISTEN) -> tuple[str, int]:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` from a daemon
        thread; returns the address bound (port 0 picks a free one)."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        server_class = _Server6 if ":" in host else ThreadingHTTPServer
        self._server = server_class((host, int(port)), _handler(self))
        threading.Thread(
            target=self._server.serve_forever, name="trimtab-http", daemon=True
        ).start()
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])

    def shutdown(self) -> None:
        """Stop the server, flush spans, and unregister from the registry."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._tracers.shutdown()
        self._meters.shutdown()


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler(telemetry: Telemetry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._stream(telemetry.exposition_chunks())
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                ready, reason = telemetry.ready()
                self._send(200 if ready else 503, f"{reason}\n".encode())
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _stream(self, chunks: Iterator[bytes]) -> None:
            """200 and ``chunks`` as they are written, without a length: the response ends
            when the connection closes (HTTP/1.0), so a scrape never holds the whole text."""
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.end_headers()
            try:
                for chunk in chunks:
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                log.debug("%s left during a scrape", self.address_string())

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


class _Source:
    """A metric source that reports each batch's values and failures."""

    def __init__(self, telemetry: Telemetry, inner: MetricSource) -> None:
        self.telemetry, self.inner = telemetry, inner

    def query(self, requests: Sequence[SeriesRequest], at: datetime) -> Measurements:
        """The inner source's answer, whose results record each target's SLI values as the
        cycle takes them (:class:`_Recording`)."""
        measurements = self.inner.query(requests, at)
        self.telemetry.series.record_thresholds(requests)
        if measurements.source_error is not None:
            self.telemetry.record_source_error()
        recording = _Recording(self.telemetry, measurements, requests)
        return Measurements(recording, measurements.source_error)

    def query_range(
        self, request: SeriesRequest, start: datetime, end: datetime, step: float
    ) -> list[tuple[datetime, SeriesResult]]:
        return self.inner.query_range(request, start, end, step)


class _Recording(Mapping[tuple[str, str], SeriesResult]):
    """A batch's results that record a target's SLI values once the cycle has taken all of
    its results (the reconciler takes each once, and judges it).

    The values are read from the results the judgement then reads, so each backend's
    measurements are made once a cycle, where recording them at the batch's arrival made them
    twice (at 10,000 targets, 60,000 fewer reads of the batch's table a cycle). A target whose
    results the cycle does not take keeps its last values. A batch with a failed query counts
    once in ``trimtab_source_errors_total``: when its first failed result is taken, or at once
    when the source itself is down.
    """

    def __init__(
        self, telemetry: Telemetry, measurements: Measurements, requests: Sequence[SeriesRequest]
    ) -> None:
        self._telemetry = telemetry
        self._results = measurements.results
        self._result = taking(self._results)  # as the reconciler takes them: each result once
        self._failed = measurements.source_error is not None  # counted already
        self._left: dict[str, set[tuple[str, str]]] = {}  # per target, its keys not yet taken
        for request in requests:
            self._left.setdefault(request.target, set()).add(request.key)
        self._taken: dict[str, list[SeriesResult]] = {}

    def get(self, key: tuple[str, str], default: Any = None) -> Any:
        result = self._result(key)
        left = self._left.get(key[0])
        if left is not None and key in left:
            self._take(key, left, result)
        return default if result is None else result

    def __getitem__(self, key: tuple[str, str]) -> SeriesResult:
        result = self.get(key)
        if result is None:
            raise KeyError(key)
        return cast(SeriesResult, result)

    def __contains__(self, key: object) -> bool:
        return key in self._results

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def _take(
        self, key: tuple[str, str], left: set[tuple[str, str]], result: SeriesResult | None
    ) -> None:
        target = key[0]
        left.discard(key)
        taken = self._taken.setdefault(target, [])
        if result is not None:
            taken.append(result)
        if not self._failed and (result is None or result.error is not None):
            self._failed = True  # a request with no result is one that failed
            self._telemetry.record_source_error()
        if not left:
            del self._left[target], self._taken[target]
            self._telemetry.series.record_results(target, taken)


class _Adapter:
    """A traffic adapter that counts the calls that raise :class:`TrafficError`."""

    def __init__(self, telemetry: Telemetry, target: str, inner: TrafficAdapter) -> None:
        self.telemetry, self.target, self.inner = telemetry, target, inner

    def _call(self, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except TrafficError:
            self.telemetry.record_adapter_error(self.target)
            raise

    def get_weights(self) -> Weights:
        return self._call(self.inner.get_weights)

    def set_weights(self, weights: Weights) -> None:
        self._call(lambda: self.inner.set_weights(weights))

    def verify(self, weights: Weights) -> Verification:
        return self._call(lambda: self.inner.verify(weights))
