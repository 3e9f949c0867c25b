"""The Prometheus source against a real Prometheus, and against loopback servers that misbehave.

Deterministic data: OpenMetrics for three services (checkout, cart, pay), two versions each and
three zones, backfilled into Prometheus before it starts, one sample every 15 s for an hour
ending at ``AT``. Range selectors in Prometheus 2.42 include both ends, and every window ends on
a sample, so ``increase`` over a window is exactly the sum of the increments inside it and every
expected number below is worked out by hand.

- checkout v1, cart v1, pay v1: healthy — 100 requests per step, no errors, p95 on the 0.1 s
  bound, 1 % slower than 250 ms.
- checkout v2: healthy until ``AT - 10m``, then 2 % errors and 18 % slow requests.
- cart v2: healthy but quiet — 10 requests per step, 40 a minute, under ``minEvents`` 50.
- pay v2: stopped reporting at ``AT - 20m``.
"""

from __future__ import annotations

import base64
import gc
import json
import logging
import math
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from conftest import missing
from servers import (
    LoopbackServer,
    PrometheusServer,
    Recorded,
    Reply,
    free_port,
    prometheus_vector,
    wait_until,
)
from trimtab.adapters.prometheus import PrometheusSource
from trimtab.slo import Level, load_text
from trimtab.slo.batching import plan_queries
from trimtab.slo.health import health_windows
from trimtab.slo.models import PrometheusSource as PrometheusConfig
from trimtab.slo.ports import Measurements, SeriesRequest

pytestmark = pytest.mark.integration

T0 = 1_699_999_980  # minute-aligned, so the gauge's 1m subquery steps land on samples
STEP = 15
AT = T0 + 3600
AT_TIME = datetime.fromtimestamp(AT, tz=UTC)
FAULT = AT - 600  # checkout v2 fails from here on
PAY_V2_STOPS = AT - 1200
BOUNDS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")

# Requests per step: successful ones per latency bucket (not cumulative), and 5xx (all fast).
HEALTHY = ((50, 45, 4, 1, 0, 0), 0)  # p95 = 0.1 exactly; 1 % over 250 ms
FAILING = ((40, 30, 10, 15, 3, 0), 2)  # 2 % errors; 18 % over 250 ms; p95 inside (0.25, 0.5]
QUIET = ((5, 4, 1, 0, 0, 0), 0)  # 10 a step: 40 a minute

SERVICES = ("checkout", "cart", "pay")
ZONES = {
    "checkout": ("zone-a", "zone-b", "zone-c"),
    "cart": ("zone-a", "zone-b"),
    "pay": ("zone-a",),
}


def traffic(service: str, version: str, t: int) -> tuple[tuple[int, ...], int] | None:
    if (service, version) == ("checkout", "v2") and t > FAULT:
        return FAILING
    if (service, version) == ("cart", "v2"):
        return QUIET
    if (service, version) == ("pay", "v2") and t > PAY_V2_STOPS:
        return None
    return HEALTHY


def queue_depth(service: str, zone: str, t: int) -> int:
    if service != "checkout":
        return {"cart": 5, "pay": 7}[service]
    if zone == "zone-b":
        return 420 if AT - 180 <= t <= AT - 120 else 50
    return {"zone-a": 10, "zone-c": 600}[zone]


def openmetrics() -> str:
    """The hour of data, each family contiguous and each series in time order."""
    steps = range(T0, AT + 1, STEP)
    hist = "http_server_request_duration_seconds"
    lines = [f"# TYPE {hist} histogram"]
    for service in SERVICES:
        for version in ("v1", "v2"):
            for code, failed in (("200", False), ("500", True)):
                if failed and (service, version) != ("checkout", "v2"):
                    continue  # no 5xx series at all for backends that never failed
                labels = (
                    f'service_name="{service}",service_version="{version}",'
                    f'http_response_status_code="{code}"'
                )
                rows: dict[str, list[str]] = {}
                counts = [0] * len(BOUNDS)
                for t in steps:
                    now = traffic(service, version, t)
                    if now is None:
                        break
                    if t > T0:
                        buckets, errors = now
                        per_bucket = (errors, 0, 0, 0, 0, 0) if failed else buckets
                        counts = [c + n for c, n in zip(counts, per_bucket, strict=True)]
                    cumulative = 0
                    for bound, count in zip(BOUNDS, counts, strict=True):
                        cumulative += count
                        row = f'{hist}_bucket{{{labels},le="{bound}"}} {cumulative} {t}'
                        rows.setdefault(bound, []).append(row)
                    rows.setdefault("count", []).append(
                        f"{hist}_count{{{labels}}} {cumulative} {t}"
                    )
                    rows.setdefault("sum", []).append(
                        f"{hist}_sum{{{labels}}} {cumulative / 10} {t}"
                    )
                for series in rows.values():
                    lines.extend(series)
    lines.append("# TYPE checkout_queue_depth gauge")
    for service in SERVICES:
        for zone in ZONES[service]:
            labels = f'service="{service}",zone="{zone}"'
            lines.extend(
                f"checkout_queue_depth{{{labels}}} {queue_depth(service, zone, t)} {t}"
                for t in steps
            )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


CONFIG = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: checkout
  objective: 99.9
  window: 30d
  backendLabel: service_version
  indicator:
    errorRatio:
      errors: >-
        http_server_request_duration_seconds_count{service_name="{{service}}",
        http_response_status_code=~"5.."}
      total: http_server_request_duration_seconds_count{service_name="{{service}}"}
  health:
    degraded: {burnRate: 6, windows: [5m, 30m]}
    unavailable: {burnRate: 14.4, windows: [1m, 5m]}
  minEvents: 50
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: p95}
spec:
  service: checkout
  window: 30d
  backendLabel: service_version
  indicator:
    quantile:
      histogram: http_server_request_duration_seconds
      selector: '{service_name="{{service}}"}'
      quantile: 0.95
  health:
    degraded: {above: 250ms, windows: [5m]}
    unavailable: {above: 1s, windows: [1m, 5m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: slow-requests}
spec:
  service: checkout
  objective: 99
  window: 30d
  backendLabel: service_version
  indicator:
    latency:
      histogram: http_server_request_duration_seconds
      selector: '{service_name="{{service}}"}'
      threshold: 250ms
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: queue}
spec:
  service: checkout
  window: 30d
  backendLabel: zone
  indicator:
    gauge:
      query: max by (zone, service) (checkout_queue_depth{service="{{service}}"})
      aggregate: max
  health:
    degraded: {above: 100}
    unavailable: {above: 500}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: broken}
spec:
  service: checkout
  objective: 99.9
  backendLabel: service_version
  indicator:
    events:
      errorQuery: >-
        sum by (service_version) (no_such_function(http_server_request_duration_seconds_count{
        service_name="{{service}}", http_response_status_code=~"5.."}[{{window}}]))
      totalQuery: >-
        sum by (service_version) (rate(http_server_request_duration_seconds_count{
        service_name="{{service}}"}[{{window}}]))
""",
    "test_prometheus_source.yaml",
).slos

M1, M5, M30 = 60.0, 300.0, 1800.0


def request(slo: str, service: str) -> SeriesRequest:
    spec = CONFIG[slo]
    kind = "Balance" if slo == "queue" else "Rollout"
    return SeriesRequest.of(
        f"{kind}/{service}", spec, {"service": service}, health_windows(spec.spec)
    )


ALL = [request(slo, s) for slo in ("errors", "p95", "slow-requests", "queue") for s in SERVICES]


def source(url: str, **settings: object) -> PrometheusSource:
    return PrometheusSource(PrometheusConfig.model_validate({"url": url, **settings}))


@pytest.fixture
def prometheus(prometheus_server: Callable[[str], PrometheusServer]) -> PrometheusServer:
    return prometheus_server(openmetrics())


@pytest.fixture
def prom_source(prometheus: PrometheusServer) -> Iterator[PrometheusSource]:
    with source(prometheus.url) as s:
        yield s


def level(measured: Measurements, req: SeriesRequest, backend: str) -> Level:
    return measured[req].health(backend).level


# ------------------------------------------------------------------------------ exact values


def test_one_batch_measures_every_target_exactly(prom_source: PrometheusSource) -> None:
    measured = prom_source.query(ALL, AT_TIME)
    assert measured.source_error is None
    assert prom_source.up
    assert prom_source.last_error is None

    errors = measured[request("errors", "checkout")]
    assert errors.error is None
    v1, v2 = errors.windows("v1"), errors.windows("v2")
    assert [(v1[w].value, v1[w].events) for w in (M1, M5, M30)] == [(0, 400), (0, 2000), (0, 12000)]
    assert v2[M1].value == pytest.approx(0.02)
    assert v2[M1].events == 400
    assert v2[M5].value == pytest.approx(0.02)
    assert v2[M5].events == 2000
    assert v2[M30].value == pytest.approx(80 / 12000)
    assert v2[M30].events == 12000

    p95 = measured[request("p95", "checkout")]
    assert p95.windows("v1")[M1].value == pytest.approx(0.1)
    assert p95.windows("v1")[M5].value == pytest.approx(0.1)
    assert p95.windows("v2")[M5].value == pytest.approx(0.25 + 0.25 * 13 / 15)  # interpolated
    assert p95.windows("v2")[M5].events == 2000

    slow = measured[request("slow-requests", "checkout")]
    assert slow.windows("v1")[M5].value == pytest.approx(0.01)
    assert slow.windows("v2")[M1].value == pytest.approx(0.18)
    assert slow.windows("v2")[M30].value == pytest.approx((80 * 1 + 40 * 18) / 12000)

    queue = measured[request("queue", "checkout")]
    assert {zone: queue.windows(zone)[M5].value for zone in ZONES["checkout"]} == {
        "zone-a": 10,
        "zone-b": 420,
        "zone-c": 600,
    }
    assert measured[request("queue", "cart")].windows("zone-b")[M5].value == 5
    assert set(measured[request("queue", "pay")].backends) == {"zone-a"}  # no other service's zones

    cart = measured[request("errors", "cart")]
    assert cart.windows("v2")[M1].events == 40
    assert set(cart.backends) == {"v1", "v2"}  # checkout's series did not leak into cart


def test_one_batch_judges_every_backend(prom_source: PrometheusSource) -> None:
    measured = prom_source.query(ALL, AT_TIME)
    expected = {
        ("errors", "checkout", "v1"): Level.HEALTHY,
        ("errors", "checkout", "v2"): Level.UNAVAILABLE,
        ("errors", "cart", "v1"): Level.HEALTHY,
        ("errors", "cart", "v2"): Level.UNKNOWN,  # under minEvents
        ("errors", "pay", "v1"): Level.HEALTHY,
        ("errors", "pay", "v2"): Level.UNKNOWN,  # stopped reporting
        ("p95", "checkout", "v1"): Level.HEALTHY,
        ("p95", "checkout", "v2"): Level.DEGRADED,
        ("slow-requests", "checkout", "v1"): Level.HEALTHY,
        ("slow-requests", "checkout", "v2"): Level.UNAVAILABLE,
        ("queue", "checkout", "zone-a"): Level.HEALTHY,
        ("queue", "checkout", "zone-b"): Level.DEGRADED,
        ("queue", "checkout", "zone-c"): Level.UNAVAILABLE,
        ("queue", "cart", "zone-a"): Level.HEALTHY,
    }
    got = {key: level(measured, request(key[0], key[1]), key[2]) for key in expected}
    assert got == expected

    failing = measured[request("errors", "checkout")].health("v2")
    burn = {(e.level, e.window): e.measured for e in failing.evidence}
    assert burn[(Level.UNAVAILABLE, M1)] == pytest.approx(20)  # 2 % against a 0.1 % budget
    assert burn[(Level.UNAVAILABLE, M5)] == pytest.approx(20)
    assert "burn rate 20 > 14.4 over 1m" in failing.reason

    quiet = measured[request("errors", "cart")].health("v2")
    assert quiet.reason == "40 requests in 1m, fewer than minEvents 50"
    gone = measured[request("errors", "pay")].health("v2")
    assert gone.reason == "no data in the 1m window"
    assert set(measured[request("errors", "pay")].windows("v2")) == {M30}  # older data is there


def test_queries_grow_with_indicators_not_targets(prom_source: PrometheusSource) -> None:
    one_target = [r for r in ALL if r.param_map["service"] == "checkout"]
    plan = plan_queries(ALL)
    before = prom_source.queries_sent
    prom_source.query(ALL, AT_TIME)
    sent = prom_source.queries_sent - before
    assert sent == len(plan)
    # Three targets cost what one does: the gauge keeps the `service` label, so it batches too.
    assert sent == len(plan_queries(one_target))
    assert sent < sum(len(plan_queries([r])) for r in ALL)


def test_answers_are_let_go_of_without_the_collector(prom_source: PrometheusSource) -> None:
    # A cycle runs with the collector paused (controller/heap.py): an answer kept alive by a
    # reference cycle would stay until the cycle ends (1.6 MB each at 10,000 targets).
    gc.collect()
    gc.disable()
    try:
        measured = prom_source.query(ALL, AT_TIME)
        alive = [o for o in gc.get_objects() if isinstance(o, httpx.Response)]
    finally:
        gc.enable()
    assert measured.source_error is None
    assert alive == []


def test_range_query_gives_the_instant_answers(prom_source: PrometheusSource) -> None:
    req = request("errors", "checkout")
    start = datetime.fromtimestamp(FAULT - 120, tz=UTC)
    points = prom_source.query_range(req, start, AT_TIME, 60)
    assert [p[0] for p in points][:2] == [start, datetime.fromtimestamp(FAULT - 60, tz=UTC)]
    assert points[-1][0] == AT_TIME
    assert len(points) == 13
    for at, result in (points[0], points[-1], points[5]):
        assert result.backends == prom_source.query([req], at)[req].backends
    assert points[-1][1].health("v2").level is Level.UNAVAILABLE
    assert points[0][1].health("v2").level is Level.HEALTHY


def test_live_scraped_exporter_is_measured_now(
    loopback_server: Callable[..., LoopbackServer],
    prometheus_scraping: Callable[..., PrometheusServer],
) -> None:
    exporter = loopback_server(
        lambda _: Reply(
            body=b'checkout_queue_depth{service="checkout"} 42\n',
            content_type="text/plain; version=0.0.4",
        )
    )
    prometheus = prometheus_scraping({exporter.url + "/metrics": {"zone": "zone-a"}})
    queue = request("queue", "checkout")
    with source(prometheus.url) as s:
        # The gauge's subquery steps on whole evaluation intervals (1s here): a sample younger
        # than one step is not seen yet.
        wait_until(
            lambda: bool(s.query([queue], datetime.now(UTC))[queue].backends), "queue depth seen"
        )
        measured = s.query([queue], datetime.now(UTC))
    assert measured[queue].windows("zone-a")[M5].value == 42
    assert {r.path for r in exporter.requests} == {"/metrics"}


# ------------------------------------------------------------------------------ outages


def test_stopped_prometheus_is_a_source_error_and_recovers(
    prometheus: PrometheusServer, prom_source: PrometheusSource
) -> None:
    requests = [request("errors", "checkout"), request("queue", "checkout")]
    assert level(prom_source.query(requests, AT_TIME), requests[0], "v1") is Level.HEALTHY

    prometheus.stop()
    down = prom_source.query(requests, AT_TIME)
    assert down.source_error is not None
    assert down.source_error.startswith(f"cannot reach Prometheus at {prometheus.url}")
    assert "refused" in down.source_error.lower()
    for req in requests:
        for backend in ("v1", "v2", "zone-a"):
            health = down[req].health(backend)
            assert health.level is Level.UNKNOWN
            assert health.reason == f"source failed: {down.source_error}"
    assert not prom_source.up
    assert prom_source.last_error == down.source_error

    prometheus.start()  # same storage, same port
    back = prom_source.query(requests, AT_TIME)
    assert back.source_error is None
    assert prom_source.up
    assert level(back, requests[0], "v2") is Level.UNAVAILABLE
    assert level(back, requests[1], "zone-c") is Level.UNAVAILABLE


def test_an_unreachable_source_is_not_asked_once_per_query() -> None:
    with source(f"http://127.0.0.1:{free_port()}") as closed:
        closed_one_at_a_time = PrometheusSource(closed.config, max_workers=1)
    with closed_one_at_a_time as s:
        measured = s.query(ALL, AT_TIME)
        assert s.queries_sent == 1  # the rest of the batch shares the refused connection
    assert measured.source_error is not None
    assert "refused" in measured.source_error.lower()
    assert all(measured[r].error == measured.source_error for r in ALL)


def test_query_prometheus_rejects_fails_only_its_slo(prom_source: PrometheusSource) -> None:
    broken = request("broken", "checkout")
    errors = request("errors", "checkout")
    measured = prom_source.query([broken, errors], AT_TIME)
    assert measured.source_error is None
    assert prom_source.up
    health = measured[broken].health("v1")
    assert health.level is Level.UNKNOWN
    assert "Prometheus rejected the query (bad_data)" in health.reason
    assert "no_such_function" in health.reason
    assert level(measured, errors, "v1") is Level.HEALTHY
    assert prom_source.last_error is not None
    assert "bad_data" in prom_source.last_error


# A Prometheus stand-in: every backend healthy, whatever the query.
def healthy_answer(recorded: Recorded) -> Reply:
    query = parse_qs(recorded.body.decode())["query"][0]
    labels = {
        "service_name": "checkout",
        "service_version": "v1",
        "service": "checkout",
        "zone": "zone-a",
    }
    counts_errors = "5.." in query  # the errors among the requests: none
    return prometheus_vector(
        [(labels, "1000" if "increase(" in query and not counts_errors else "0")]
    )


STAND_IN_REQUESTS = [request("errors", "checkout"), request("queue", "checkout")]


def test_timeout_is_unknown_then_recovers(loopback_server: Callable[..., LoopbackServer]) -> None:
    server = loopback_server(lambda _: Reply(delay=30))
    with source(server.url, timeout=0.5) as slow:
        measured = slow.query(STAND_IN_REQUESTS, AT_TIME)
        assert measured.source_error == "Prometheus did not answer within 500ms"
        assert measured[STAND_IN_REQUESTS[0]].health("v1").reason == (
            "source failed: Prometheus did not answer within 500ms"
        )
        server.responder = healthy_answer
        recovered = slow.query(STAND_IN_REQUESTS, AT_TIME)
        assert recovered.source_error is None
        assert slow.up
        assert level(recovered, STAND_IN_REQUESTS[0], "v1") is Level.HEALTHY


ERROR_JSON = b'{"status":"error","errorType":"%s","error":"%s"}'


@pytest.mark.parametrize(
    ("reply", "reason", "down"),
    [
        (
            Reply(500, b"oops", "text/plain"),
            "Prometheus answered HTTP 500 Internal Server Error",
            True,
        ),
        (
            Reply(502, b"<html>bad gateway</html>", "text/html"),
            "Prometheus answered HTTP 502 Bad Gateway",
            True,
        ),
        (Reply(401, b"", "text/plain"), "Prometheus answered HTTP 401 Unauthorized", True),
        (
            Reply(503, ERROR_JSON % (b"unavailable", b"too many queries")),
            "Prometheus answered HTTP 503 Service Unavailable (unavailable): too many queries",
            True,
        ),
        (
            Reply(200, b"not json"),
            "Prometheus answered HTTP 200 OK but not with its JSON API",
            True,
        ),
        (Reply(200, b'{"status": "success"}'), "Prometheus answered without data", True),
        (
            Reply(400, ERROR_JSON % (b"bad_data", b"parse error")),
            "Prometheus rejected the query (bad_data): parse error",
            False,
        ),
        (
            Reply(422, ERROR_JSON % (b"execution", b"many-to-many matching not allowed")),
            "Prometheus rejected the query (execution): many-to-many matching not allowed",
            False,
        ),
        (
            Reply(200, b'{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}'),
            "the query returned a scalar, not a vector",
            False,
        ),
        (
            Reply(
                200, b'{"status":"success","data":{"resultType":"vector","result":[{"value":[1]}]}}'
            ),
            "Prometheus answered a malformed vector",
            True,
        ),
        (
            Reply(
                200,
                b'{"status":"success","data":{"resultType":"vector",'
                b'"result":[{"metric":{"version":"v1"},"value":[1,"fast"]}]}}',
            ),
            "Prometheus answered a malformed vector",
            True,
        ),
        (  # broken after a good series, already split when the break is found
            Reply(
                200,
                b'{"status":"success","data":{"resultType":"vector","result":['
                b'{"metric":{"version":"v1","zone":"zone-a"},"value":[1,"0.0001"]},{"value":[1]}]}}',
            ),
            "Prometheus answered a malformed vector",
            True,
        ),
    ],
)
def test_bad_answers_are_unknown_with_the_cause_then_recover(
    loopback_server: Callable[..., LoopbackServer], reply: Reply, reason: str, down: bool
) -> None:
    server = loopback_server(lambda _: reply)
    with source(server.url) as s:
        measured = s.query(STAND_IN_REQUESTS, AT_TIME)
        for req in STAND_IN_REQUESTS:
            health = measured[req].health("v1" if req.slo.metadata.name == "errors" else "zone-a")
            assert health.level is Level.UNKNOWN
            assert health.reason.startswith(f"source failed: {reason}")
        assert (measured.source_error is not None) is down
        assert s.up is not down
        server.responder = healthy_answer
        recovered = s.query(STAND_IN_REQUESTS, AT_TIME)
        assert recovered.source_error is None
        assert s.up
        assert s.last_error is None
        assert level(recovered, STAND_IN_REQUESTS[1], "zone-a") is Level.HEALTHY


def test_label_values_that_are_not_strings_are_read_as_text(
    loopback_server: Callable[..., LoopbackServer],
) -> None:
    """Prometheus sends every label value as a string; an API that sends a number is read as
    its text (the series is not split as it is decoded, but after), not dropped."""

    def answer(recorded: Recorded) -> Reply:
        reply = healthy_answer(recorded)
        body = json.loads(reply.body)
        for series in body["data"]["result"]:
            series["metric"].update(service_version=2, shard=7)  # the backend label read too
        return Reply(body=json.dumps(body).encode())

    server = loopback_server(answer)
    with source(server.url) as s:
        measured = s.query(STAND_IN_REQUESTS, AT_TIME)
    assert list(measured[STAND_IN_REQUESTS[0]].backends) == ["2"]
    assert level(measured, STAND_IN_REQUESTS[0], "2") is Level.HEALTHY
    assert level(measured, STAND_IN_REQUESTS[1], "zone-a") is Level.HEALTHY


def test_a_lasting_failure_is_logged_once_and_its_end_too(
    loopback_server: Callable[..., LoopbackServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = loopback_server(lambda _: Reply(500, b"", "text/plain"))
    with source(server.url) as s, caplog.at_level(logging.INFO, "trimtab.adapters.prometheus"):
        for _ in range(3):
            s.query(STAND_IN_REQUESTS, AT_TIME)
        server.responder = healthy_answer
        s.query(STAND_IN_REQUESTS, AT_TIME)
    assert [r.getMessage() for r in caplog.records] == [
        "Prometheus query failed: Prometheus answered HTTP 500 Internal Server Error",
        "Prometheus queries succeed again",
    ]


def test_special_float_values_and_warnings(
    loopback_server: Callable[..., LoopbackServer], caplog: pytest.LogCaptureFixture
) -> None:
    def answer(recorded: Recorded) -> Reply:
        query = parse_qs(recorded.body.decode())["query"][0]
        zones = [
            ({"zone": "zone-a", "service": "checkout"}, "+Inf"),
            ({"zone": "zone-b", "service": "checkout"}, "NaN"),
            ({"zone": "zone-c", "service": "checkout"}, "-Inf"),
        ]
        reply = prometheus_vector(zones if "max_over_time" in query else [])
        body = json.loads(reply.body) | {"warnings": ["results may be partial"]}
        return Reply(body=json.dumps(body).encode())

    server = loopback_server(answer)
    queue = request("queue", "checkout")
    with source(server.url) as s, caplog.at_level(logging.WARNING, "trimtab.adapters.prometheus"):
        measured = s.query([queue, request("errors", "checkout")], AT_TIME)
    values = {
        zone: measured[queue].windows(zone)[M5].value for zone in ("zone-a", "zone-b", "zone-c")
    }
    assert values["zone-a"] == math.inf
    assert values["zone-c"] == -math.inf
    assert math.isnan(values["zone-b"])
    assert level(measured, queue, "zone-a") is Level.UNAVAILABLE
    assert level(measured, queue, "zone-b") is Level.UNKNOWN  # NaN is no data
    # An empty answer is no data, not an error.
    errors = measured[request("errors", "checkout")]
    assert errors.error is None
    assert errors.health("v1").reason == "no data in the 1m window"
    assert "results may be partial" in caplog.text


# ------------------------------------------------------------------------------ auth and TLS


TOKEN = "s3cret-token-0123456789"


def recorded_auth(server: LoopbackServer) -> set[str]:
    return {r.headers.get("Authorization", "") for r in server.requests}


def test_bearer_token_file_is_sent_and_reread(
    loopback_server: Callable[..., LoopbackServer], tmp_path: Path
) -> None:
    server = loopback_server(healthy_answer)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = {"bearerTokenFile": str(token_file), "headers": {"X-Scope-OrgID": "team-a"}}
    with source(server.url + "/prometheus/", **settings) as s:
        s.query(STAND_IN_REQUESTS, AT_TIME)
        assert recorded_auth(server) == {f"Bearer {TOKEN}"}
        assert {r.headers["X-Scope-OrgID"] for r in server.requests} == {"team-a"}
        first = server.requests[0]
        assert (first.method, first.path) == ("POST", "/prometheus/api/v1/query")
        form = parse_qs(first.body.decode())
        assert form["time"] == [f"{AT}.000"]
        assert form["timeout"] == ["10.000"]

        token_file.write_text("rotated-token")  # e.g. a projected service-account token
        server.requests.clear()
        s.query(STAND_IN_REQUESTS, AT_TIME)
        assert recorded_auth(server) == {"Bearer rotated-token"}

        token_file.unlink()
        measured = s.query(STAND_IN_REQUESTS, AT_TIME)
        assert measured.source_error == (
            f"cannot read the Prometheus token (file {token_file}): No such file or directory"
        )


def test_bearer_token_env_and_basic_auth_are_sent(
    loopback_server: Callable[..., LoopbackServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = loopback_server(healthy_answer)
    monkeypatch.setenv("TRIMTAB_TEST_TOKEN", TOKEN)
    with source(server.url, bearerTokenEnv="TRIMTAB_TEST_TOKEN") as s:
        s.query(STAND_IN_REQUESTS[:1], AT_TIME)
    assert recorded_auth(server) == {f"Bearer {TOKEN}"}

    server.requests.clear()
    password = tmp_path / "password"
    password.write_text("pässword")
    basic = {"basicAuth": {"username": "trimtab", "passwordFile": str(password)}}
    with source(server.url, **basic) as s:
        s.query(STAND_IN_REQUESTS[:1], AT_TIME)
    expected = base64.b64encode("trimtab:pässword".encode()).decode()
    assert recorded_auth(server) == {f"Basic {expected}"}


def test_secrets_never_reach_errors_logs_or_reprs(
    loopback_server: Callable[..., LoopbackServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A server that echoes the credential back in its error must not get it into our errors.
    def echo(recorded: Recorded) -> Reply:
        error = f"invalid credentials {recorded.headers.get('Authorization')}".encode()
        return Reply(403, ERROR_JSON % (b"auth", error))

    server = loopback_server(echo)
    monkeypatch.setenv("TRIMTAB_TEST_TOKEN", TOKEN)
    with (
        caplog.at_level(logging.DEBUG),
        source(server.url, bearerTokenEnv="TRIMTAB_TEST_TOKEN", timeout=1) as s,
    ):
        measured = s.query(STAND_IN_REQUESTS, AT_TIME)
        texts = [repr(s), repr(s.config), repr(measured), str(s.last_error), caplog.text]
    assert measured.source_error == (
        "Prometheus answered HTTP 403 Forbidden (auth): invalid credentials Bearer <redacted>"
    )
    for text in texts:
        assert TOKEN not in text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"headers": {"authorization": "Bearer x"}}, "header 'authorization' is not allowed"),
        ({"url": "http://user:hunter2@127.0.0.1:9"}, "not the URL"),
        ({"bearerTokenFile": "/nonexistent/token"}, "cannot read the Prometheus token"),
        (
            {"bearerTokenEnv": "TRIMTAB_UNSET_VARIABLE"},
            "environment variable TRIMTAB_UNSET_VARIABLE",
        ),
        (
            {"bearerTokenEnv": "HOME", "basicAuth": {"username": "u", "passwordEnv": "HOME"}},
            "not both",
        ),
        ({"tls": {"caFile": "/nonexistent/ca.pem"}}, "cannot use tls.caFile"),
    ],
)
def test_unusable_settings_fail_at_construction(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        source(str(settings.pop("url", "http://127.0.0.1:9")), **settings)
    assert "hunter2" not in str(error.value)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the ``openssl`` command."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            ["/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
    except FileNotFoundError:
        missing("openssl (Debian package openssl)")
    return cert, key


def test_tls_is_verified_unless_told_otherwise(
    loopback_server: Callable[..., LoopbackServer], certificate: tuple[Path, Path]
) -> None:
    server = loopback_server(healthy_answer, tls=certificate)
    assert server.url.startswith("https://")
    with source(server.url) as s:
        refused = s.query(STAND_IN_REQUESTS, AT_TIME)
    assert refused.source_error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in refused.source_error
    with source(server.url, tls={"caFile": str(certificate[0])}) as s:
        assert s.query(STAND_IN_REQUESTS, AT_TIME).source_error is None
    with source(server.url, tls={"insecureSkipVerify": True}) as s:
        assert s.query(STAND_IN_REQUESTS, AT_TIME).source_error is None
