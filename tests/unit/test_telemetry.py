"""The controller's telemetry: exposed metric names and labels, the HTTP endpoints, and spans."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString
from trimtab.adapters.fake import FakeTrafficAdapter, ListMetricSource
from trimtab.controller.decisions import DecisionLog
from trimtab.controller.reconcile import Reconciler, ReconcilerConfig
from trimtab.controller.record import Action, Decision, DecisionWeights
from trimtab.controller.series import _numbers
from trimtab.controller.state import StateStore
from trimtab.controller.targets import targets
from trimtab.controller.telemetry import Telemetry, span_processors_from_env
from trimtab.slo import load_text
from trimtab.slo.batching import Answer, Query, assemble, plan_queries
from trimtab.slo.health import WindowMeasurement
from trimtab.slo.ports import Measurements, MetricSource, SeriesRequest, SeriesResult
from trimtab.slo.traffic import PermanentTrafficError

CONFIG = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: shop
  objective: 99.9
  backendLabel: version
  minEvents: 10
  indicator:
    errorRatio: {errors: 'req_total{code="500"}', total: req_total}
---
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {name: shop}
spec:
  slos: [{name: errors}]
  stable: v1
  canary: v2
  route: {file: {path: w.json}}
  steps: [{weight: 10, hold: 1m}, {weight: 100}]
  analysis: {interval: 30s, baseline: false}
""",
    "telemetry.yaml",
)
TARGET = targets(CONFIG)[0]
KEY = "Rollout/shop"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
HEALTHY = 0.0001
NAMES = (
    "trimtab_route_weight",
    "trimtab_slo_health",
    "trimtab_slo_value",
    "trimtab_slo_threshold",
    "trimtab_decisions_total",
    "trimtab_cycle_duration_seconds",
    "trimtab_source_errors_total",
    "trimtab_adapter_errors_total",
)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def telemetry(spans: InMemorySpanExporter) -> Iterator[Telemetry]:
    t = Telemetry(CollectorRegistry(), span_processors=[SimpleSpanProcessor(spans)])
    yield t
    t.shutdown()


def reconciler(
    telemetry: Telemetry, tmp_path: Path, source: MetricSource, adapter: FakeTrafficAdapter
) -> Reconciler:
    plain = Reconciler(
        ReconcilerConfig(
            source=source,
            adapters={KEY: adapter},
            states=StateStore(tmp_path / "state"),
            log=DecisionLog(tmp_path / "decisions.jsonl"),
            specs={KEY: CONFIG.rollouts["shop"].spec},
            sleep=lambda _: None,
        )
    )
    return telemetry.instrument(plain)


def cycle(telemetry: Telemetry, r: Reconciler) -> list[Decision]:
    return telemetry.run_cycle(lambda: r.cycle([TARGET], T0))


def value(telemetry: Telemetry, name: str, **labels: str) -> float | None:
    """The sample ``/metrics`` serves, read back by ``prometheus_client``'s own parser."""
    for family in text_string_to_metric_families(telemetry.exposition().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def test_a_cycle_exposes_every_metric_with_its_labels(telemetry: Telemetry, tmp_path: Path) -> None:
    source = ListMetricSource.constant({"v1": HEALTHY, "v2": HEALTHY})
    adapter = FakeTrafficAdapter({"v1": 100, "v2": 0})
    (decision,) = cycle(telemetry, reconciler(telemetry, tmp_path, source, adapter))
    assert decision.action is Action.ADVANCE

    text = telemetry.exposition().decode()
    types = {line.split()[2]: line.split()[3] for line in text.splitlines() if "# TYPE" in line}
    assert types == {
        "trimtab_route_weight": "gauge",
        "trimtab_slo_health": "gauge",
        "trimtab_slo_value": "gauge",
        "trimtab_slo_threshold": "gauge",
        "trimtab_target_phase": "gauge",
        "trimtab_decisions_total": "counter",
        "trimtab_cycle_duration_seconds": "histogram",
        "trimtab_source_errors_total": "counter",
        "trimtab_adapter_errors_total": "counter",
    }
    assert "otel_scope" not in text
    assert "target_info" not in text

    assert value(telemetry, "trimtab_target_phase", target=KEY, phase="Progressing") == 1
    assert value(telemetry, "trimtab_route_weight", target=KEY, backend="v1") == 90
    assert value(telemetry, "trimtab_route_weight", target=KEY, backend="v2") == 10
    for backend in ("v1", "v2"):
        assert (
            value(telemetry, "trimtab_slo_health", slo="errors", target=KEY, backend=backend) == 0
        )
        for window in ("1m", "5m", "30m"):
            got = value(
                telemetry, "trimtab_slo_value", slo="errors", target=KEY, backend=backend,
                window=window,
            )  # fmt: skip
            assert got == pytest.approx(HEALTHY)
    assert value(telemetry, "trimtab_slo_threshold", slo="errors", level="DEGRADED") == 6
    assert value(telemetry, "trimtab_slo_threshold", slo="errors", level="UNAVAILABLE") == 14.4
    assert value(telemetry, "trimtab_decisions_total", target=KEY, action="advance") == 1
    assert value(telemetry, "trimtab_cycle_duration_seconds_count") == 1
    assert value(telemetry, "trimtab_cycle_duration_seconds_sum") > 0  # type: ignore[operator]
    assert value(telemetry, "trimtab_source_errors_total") == 0
    assert value(telemetry, "trimtab_adapter_errors_total", target=KEY) == 0


def test_a_source_outage_counts_and_leaves_health_unknown(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    source = ListMetricSource.constant({"v1": HEALTHY, "v2": HEALTHY}, down="connection refused")
    r = reconciler(telemetry, tmp_path, source, FakeTrafficAdapter({"v1": 100, "v2": 0}))
    cycle(telemetry, r)
    cycle(telemetry, r)
    assert value(telemetry, "trimtab_source_errors_total") == 2
    assert value(telemetry, "trimtab_slo_health", slo="errors", target=KEY, backend="v2") == -1
    assert "trimtab_slo_value{" not in telemetry.exposition().decode()
    assert value(telemetry, "trimtab_cycle_duration_seconds_count") == 2


class BatchedSource:
    """A source that plans and assembles as the Prometheus source does (results read from a
    batch's table when asked), with canned answers: a healthy error ratio on both backends,
    or a failed query for the windows in ``failing``."""

    def __init__(self, failing: tuple[float, ...] = ()) -> None:
        self.failing = failing

    def query(self, requests: Sequence[SeriesRequest], at: datetime) -> Measurements:
        answers: list[tuple[Query, Answer]] = []
        for query in plan_queries(requests):
            count = 600.0 if query.field == "events" else 600.0 * HEALTHY
            rows = [({"version": b}, count) for b in ("v1", "v2")]
            answers.append((query, "timed out" if query.window in self.failing else rows))
        return assemble(requests, answers)

    def query_range(self, *args: object) -> list[tuple[datetime, SeriesResult]]:
        raise NotImplementedError


def test_a_cycle_makes_each_backends_measurements_once_for_metrics_and_judgement(
    telemetry: Telemetry, tmp_path: Path, table_reads: list[int]
) -> None:
    """/metrics records the values of the results the reconciler judges, as it takes them: a
    backend's measurements are read from the batch once a cycle, not once for each."""
    adapter = FakeTrafficAdapter({"v1": 100, "v2": 0})
    r = reconciler(telemetry, tmp_path, BatchedSource(), adapter)
    cycle(telemetry, r)
    assert len(table_reads) == 2  # one per backend
    for backend in ("v1", "v2"):
        got = value(
            telemetry, "trimtab_slo_value", slo="errors", target=KEY, backend=backend, window="5m"
        )
        assert got == pytest.approx(HEALTHY)
    assert value(telemetry, "trimtab_source_errors_total") == 0


def test_a_batch_with_failed_queries_counts_once(telemetry: Telemetry, tmp_path: Path) -> None:
    source = BatchedSource(failing=(60.0, 300.0))
    r = reconciler(telemetry, tmp_path, source, FakeTrafficAdapter({"v1": 100, "v2": 0}))
    cycle(telemetry, r)
    assert value(telemetry, "trimtab_source_errors_total") == 1
    assert value(telemetry, "trimtab_slo_health", slo="errors", target=KEY, backend="v2") == -1
    assert value(
        telemetry, "trimtab_slo_value", slo="errors", target=KEY, backend="v2", window="30m"
    ) == pytest.approx(HEALTHY)
    source.failing = ()
    cycle(telemetry, r)
    assert value(telemetry, "trimtab_source_errors_total") == 1


def test_adapter_errors_are_counted_per_target(telemetry: Telemetry, tmp_path: Path) -> None:
    source = ListMetricSource.constant({"v1": HEALTHY, "v2": HEALTHY})
    adapter = FakeTrafficAdapter(
        {"v1": 100, "v2": 0}, fail=lambda n: PermanentTrafficError("refused")
    )
    (decision,) = cycle(telemetry, reconciler(telemetry, tmp_path, source, adapter))
    assert decision.action is Action.HOLD
    assert value(telemetry, "trimtab_adapter_errors_total", target=KEY) == 1
    assert value(telemetry, "trimtab_route_weight", target=KEY, backend="v2") == 0
    assert value(telemetry, "trimtab_decisions_total", target=KEY, action="hold") == 1


def decision(weights: dict[str, int], health: dict[str, dict[str, str]], **kw: object) -> Decision:
    return Decision(
        at=T0,
        target="Balance/api",
        kind="Balance",
        action=kw.pop("action", Action.DRAIN),  # type: ignore[arg-type]
        weights=DecisionWeights(weights, weights),
        health=health,
        dry_run=False,
    )


def test_levels_are_numbers_and_gone_backends_drop_out(telemetry: Telemetry) -> None:
    levels = {"a": "UNAVAILABLE", "b": "DEGRADED", "c": "HEALTHY", "d": "UNKNOWN"}
    telemetry.record_decision(
        decision(dict.fromkeys("abcd", 25), {b: {"lat": lv} for b, lv in levels.items()})
    )
    got = {
        b: value(telemetry, "trimtab_slo_health", slo="lat", target="Balance/api", backend=b)
        for b in "abcd"
    }
    assert got == {"a": 2, "b": 1, "c": 0, "d": -1}
    telemetry.record_decision(decision({"a": 50, "b": 50}, {}, action=Action.HOLD))
    assert value(telemetry, "trimtab_route_weight", target="Balance/api", backend="c") is None
    assert value(telemetry, "trimtab_route_weight", target="Balance/api", backend="a") == 50
    # a hold without health keeps the last judgement
    assert (
        value(telemetry, "trimtab_slo_health", slo="lat", target="Balance/api", backend="d") == -1
    )
    assert value(telemetry, "trimtab_decisions_total", target="Balance/api", action="drain") == 1


def test_http_endpoints(telemetry: Telemetry) -> None:
    host, port = telemetry.serve("127.0.0.1:0")
    assert host == "127.0.0.1"
    assert port > 0
    base = f"http://{host}:{port}"
    with httpx.Client(base_url=base, timeout=5) as client:
        assert client.get("/healthz").text == "ok\n"
        response = client.get("/readyz")
        assert (response.status_code, response.text) == (503, "not the leader\n")
        telemetry.leading = True
        response = client.get("/readyz")
        assert (response.status_code, response.text) == (503, "no cycle completed yet\n")
        telemetry.run_cycle(lambda: [decision({"a": 100}, {"a": {"lat": "HEALTHY"}})])
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain; version=")
        assert 'trimtab_route_weight{backend="a",target="Balance/api"} 100.0' in metrics.text
        assert client.get("/nothing").status_code == 404
    telemetry.shutdown()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/healthz", timeout=2)


def test_metrics_are_served_a_chunk_at_a_time_and_parse_back_whole(telemetry: Telemetry) -> None:
    # 3,000 targets write more lines than one chunk holds: the response is several chunks,
    # without a length, ended by the connection's close (HTTP/1.0).
    batch = [
        replace(decision({"a": 60, "b": 40}, {"a": {"lat": "HEALTHY"}}), target=f"Balance/b{n}")
        for n in range(3000)
    ]
    telemetry.run_cycle(lambda: batch)
    assert len(list(telemetry.exposition_chunks())) > 2
    host, port = telemetry.serve("127.0.0.1:0")
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=10) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert "content-length" not in response.headers
    assert response.content == telemetry.exposition()
    samples = {
        family.name: len(family.samples) for family in text_string_to_metric_families(response.text)
    }
    assert samples["trimtab_route_weight"] == 6000
    assert samples["trimtab_slo_health"] == 3000
    assert samples["trimtab_decisions"] == 3000


def test_a_span_per_cycle_and_a_child_per_decision(
    telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    batch = [decision({"a": 100}, {}), decision({"a": 100}, {}, action=Action.NONE)]
    telemetry.run_cycle(lambda: batch)
    telemetry.run_cycle(lambda: batch[:1])
    finished = spans.get_finished_spans()
    cycles = [s for s in finished if s.name == "trimtab.cycle"]
    children = [s for s in finished if s.name == "trimtab.decision"]
    assert len(cycles) == 2
    assert len(children) == 3
    assert all(c.parent is None for c in cycles)
    parents = [c.parent.span_id for c in children if c.parent is not None]
    ids = [c.context.span_id for c in cycles]
    assert parents == [ids[0], ids[0], ids[1]]
    assert cycles[0].attributes is not None
    assert cycles[0].attributes["trimtab.decisions"] == 2
    first = children[0].attributes or {}
    assert first["trimtab.target"] == "Balance/api"
    assert first["trimtab.action"] == "drain"
    assert first["trimtab.decision.id"] == batch[0].id


def test_a_failed_cycle_records_an_error_span_and_stays_unready(
    telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    def boom() -> list[Decision]:
        raise RuntimeError("boom")

    telemetry.leading = True
    with pytest.raises(RuntimeError):
        telemetry.run_cycle(boom)
    (span,) = spans.get_finished_spans()
    assert not span.status.is_ok
    assert telemetry.ready() == (False, "no cycle completed yet")


def test_trace_exporters_come_only_from_otel_traces_exporter(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert span_processors_from_env() == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert span_processors_from_env() == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console, nosuch")
    with caplog.at_level(logging.WARNING):
        (processor,) = span_processors_from_env()
    assert isinstance(processor, BatchSpanProcessor)
    processor.shutdown()  # type: ignore[no-untyped-call]
    assert "nosuch" in caplog.text


def test_service_name_defaults_to_trimtab_and_follows_otel_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, expected in ((None, "trimtab"), ("shop-controller", "shop-controller")):
        if name is None:
            monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        else:
            monkeypatch.setenv("OTEL_SERVICE_NAME", name)
        exporter = InMemorySpanExporter()  # a provider's shutdown stops its exporter
        t = Telemetry(CollectorRegistry(), span_processors=[SimpleSpanProcessor(exporter)])
        t.run_cycle(list)
        (span,) = exporter.get_finished_spans()
        t.shutdown()
        assert span.resource.attributes["service.name"] == expected


def test_every_target_keeps_its_own_series_past_the_sdk_default_of_2000(
    telemetry: Telemetry,
) -> None:
    # The OpenTelemetry SDK folds series past its cardinality limit (2,000 by default) into one
    # overflow series; per-target series are kept outside it, so none is folded.
    for n in range(2500):
        telemetry.record_decision(
            replace(decision({"a": 50, "b": 50}, {"a": {"lat": "HEALTHY"}}), target=f"Balance/b{n}")
        )
    text = telemetry.exposition().decode()
    assert "overflow" not in text
    assert value(telemetry, "trimtab_route_weight", target="Balance/b2499", backend="b") == 50
    assert value(telemetry, "trimtab_decisions_total", target="Balance/b2499", action="drain") == 1
    weights = [line for line in text.splitlines() if line.startswith("trimtab_route_weight{")]
    assert len(weights) == 5000


def test_a_clipped_window_is_exposed_under_the_slo_window_it_stands_for(
    telemetry: Telemetry,
) -> None:
    slo = CONFIG.slos["errors"]
    request = SeriesRequest.of(KEY, slo, {}, (60.0, 300.0, 1800.0), clip_to=90.0)
    assert request.windows == (60.0, 90.0)
    measured = {
        "v1": {60.0: WindowMeasurement(0.001, 600.0), 90.0: WindowMeasurement(0.002, 900.0)},
        "v2": {60.0: WindowMeasurement(None, 0.0), 90.0: WindowMeasurement(0.004, 90.0)},
    }
    telemetry.series.record_results(KEY, [SeriesResult(request, measured)])
    exposed = {
        (backend, window): value(
            telemetry,
            "trimtab_slo_value",
            slo="errors",
            target=KEY,
            backend=backend,
            window=window,
        )
        for backend in ("v1", "v2")
        for window in ("1m", "5m", "30m")
    }
    assert exposed == {
        ("v1", "1m"): 0.001,
        ("v1", "5m"): 0.002,  # the 90 s since the shift, standing for 5m and 30m
        ("v1", "30m"): 0.002,
        ("v2", "1m"): None,  # no value: no series
        ("v2", "5m"): 0.004,
        ("v2", "30m"): 0.004,
    }
    assert value(telemetry, "trimtab_slo_value", slo="errors", target=KEY, window="1m30s") is None


def test_the_exposition_escapes_what_the_text_format_escapes_and_parses_back(
    telemetry: Telemetry,
) -> None:
    odd = 'Balance/a"b\\c\nd'  # names are validated; the writer does not rely on it
    telemetry.record_decision(replace(decision({"a": 50, "b": 50}, {}), target=odd))
    text = telemetry.exposition().decode()
    assert 'target="Balance/a\\"b\\\\c\\nd"' in text
    assert value(telemetry, "trimtab_route_weight", target=odd, backend="a") == 50
    assert value(telemetry, "trimtab_decisions_total", target=odd, action="drain") == 1
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["trimtab_decisions"] == "counter"
    assert families["trimtab_route_weight"] == "gauge"


def test_a_followed_cycle_records_each_decision_before_handing_it_on_and_keeps_none(
    telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    batch = [replace(decision({"a": 100}, {}), target=f"Balance/b{n}") for n in range(3)]
    recorded_when_handed: list[float | None] = []

    def each(d: Decision) -> None:
        recorded_when_handed.append(
            value(telemetry, "trimtab_decisions_total", target=d.target, action="drain")
        )

    assert telemetry.follow_cycle(lambda: iter(batch), each) == 3
    assert recorded_when_handed == [1.0, 1.0, 1.0]
    assert value(telemetry, "trimtab_cycle_duration_seconds_count") == 1.0
    (cycle_span,) = [s for s in spans.get_finished_spans() if s.name == "trimtab.cycle"]
    assert (cycle_span.attributes or {})["trimtab.decisions"] == 3


def test_a_cycle_that_fails_midway_keeps_what_it_decided_before(telemetry: Telemetry) -> None:
    def failing() -> Iterator[Decision]:
        yield decision({"a": 100}, {})
        raise RuntimeError("the log's disk is full")

    handed: list[Decision] = []
    with pytest.raises(RuntimeError):
        telemetry.follow_cycle(failing, handed.append)
    assert len(handed) == 1
    assert value(telemetry, "trimtab_decisions_total", target="Balance/api", action="drain") == 1.0
    assert value(telemetry, "trimtab_cycle_duration_seconds_count") is None  # no duration
    assert telemetry.cycles == 0


EDGES = (math.inf, -math.inf, math.nan, 999_999.9, 1e6, 1_234_567.0, 1e16, 1e17, -2e6, 3, 0)


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-1e3, max_value=1e3),  # SLI values, mostly
            st.floats(),
            st.sampled_from(EDGES),  # where the text of Go and of Python part
        )
    )
)
def test_values_are_written_as_prometheus_client_writes_them(values: list[float]) -> None:
    assert list(_numbers(values)) == [floatToGoString(v) for v in values]
