"""The in-library fakes: a proxy that lags, fails and drifts on cue; a source fed from tables."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta

import pytest
from trimtab.adapters.fake import DEFAULT_EVENTS, FakeTrafficAdapter, ListMetricSource, Sampled
from trimtab.slo import Level, WindowMeasurement, load_text
from trimtab.slo.health import health_windows
from trimtab.slo.ports import MetricSource, SeriesRequest, TrafficAdapter, Verification
from trimtab.slo.traffic import PermanentTrafficError, TransientTrafficError, WeightsError

START = {"v1": 100, "v2": 0}
STEP = {"v1": 95, "v2": 5}
HALF = {"v1": 50, "v2": 50}

# ------------------------------------------------------------------------ FakeTrafficAdapter


def test_it_is_a_traffic_adapter_serving_its_initial_weights() -> None:
    port: TrafficAdapter = FakeTrafficAdapter(START)
    assert port.get_weights() == START
    assert port.verify(START) is Verification.VERIFIED
    assert port.verify(STEP) is Verification.PENDING


def test_without_lag_weights_apply_at_once_and_every_call_is_recorded() -> None:
    fake = FakeTrafficAdapter(START)
    fake.set_weights(STEP)
    fake.set_weights(HALF)
    assert fake.verify(HALF) is Verification.VERIFIED
    assert fake.get_weights() == HALF
    assert fake.calls == [STEP, HALF]
    assert fake.applied == [START, STEP, HALF]


def test_apply_lag_keeps_verify_pending_for_that_many_reads() -> None:
    fake = FakeTrafficAdapter(START, apply_lag=2)
    fake.set_weights(STEP)
    assert fake.pending == STEP
    assert fake.verify(STEP) is Verification.PENDING
    assert fake.get_weights() == START  # the proxy still serves the old split
    assert fake.verify(STEP) is Verification.VERIFIED
    assert fake.pending is None
    assert fake.reads == 3


def test_a_newer_change_replaces_a_pending_one_and_restarts_the_lag() -> None:
    fake = FakeTrafficAdapter(START, apply_lag=1)
    fake.set_weights(STEP)
    assert fake.verify(STEP) is Verification.PENDING
    fake.set_weights(HALF)
    assert fake.verify(HALF) is Verification.PENDING
    assert fake.verify(HALF) is Verification.VERIFIED
    assert fake.applied == [START, HALF]  # STEP never took effect


def test_settle_applies_a_pending_change_without_counting_a_read() -> None:
    fake = FakeTrafficAdapter(START, apply_lag=5)
    fake.set_weights(STEP)
    fake.settle()
    assert fake.weights == STEP
    assert fake.reads == 0


@pytest.mark.parametrize("error", [TransientTrafficError("503"), PermanentTrafficError("403")])
def test_the_nth_set_fails_on_cue_and_leaves_the_weights(error: Exception) -> None:
    fake = FakeTrafficAdapter(START, fail={2: error}.get)
    fake.set_weights(STEP)
    with pytest.raises(type(error)) as caught:
        fake.set_weights(HALF)
    assert caught.value is error
    assert fake.get_weights() == STEP
    assert fake.verify(HALF) is Verification.PENDING
    fake.set_weights(HALF)  # the third call goes through
    assert fake.get_weights() == HALF
    assert fake.calls == [STEP, HALF, HALF]


def test_an_adapter_told_to_remember_few_keeps_the_latest_and_still_counts_every_call() -> None:
    fake = FakeTrafficAdapter(START, remember=1, fail={3: TransientTrafficError("503")}.get)
    fake.set_weights(STEP)
    fake.set_weights(HALF)
    assert fake.calls == [HALF]
    assert fake.applied == [HALF]
    with pytest.raises(TransientTrafficError):
        fake.set_weights(STEP)  # the third call, though only one is remembered
    forgetful = FakeTrafficAdapter(START, remember=0)
    forgetful.set_weights(STEP)
    assert (forgetful.calls, forgetful.applied, forgetful.get_weights()) == ([], [], STEP)


def test_reads_fail_on_cue() -> None:
    fake = FakeTrafficAdapter(START, read_fail={1: TransientTrafficError("timeout")}.get)
    with pytest.raises(TransientTrafficError):
        fake.get_weights()
    assert fake.get_weights() == START


def test_invalid_weights_are_refused_as_a_real_adapter_does() -> None:
    fake = FakeTrafficAdapter(START, fail=lambda n: PermanentTrafficError("never asked"))
    with pytest.raises(WeightsError, match="sum to 100"):
        fake.set_weights({"v1": 90, "v2": 5})
    with pytest.raises(WeightsError, match="unknown 'v3'"):
        fake.verify({"v1": 90, "v2": 5, "v3": 5})
    assert fake.calls == [{"v1": 90, "v2": 5}]  # recorded, not applied
    assert fake.weights == START
    with pytest.raises(ValueError):
        FakeTrafficAdapter({"v1": 90})
    with pytest.raises(ValueError):
        FakeTrafficAdapter(START, apply_lag=-1)


def test_backends_can_be_given_beside_the_initial_weights() -> None:
    with pytest.raises(WeightsError, match="missing 'v3'"):
        FakeTrafficAdapter(START, backends=["v1", "v2", "v3"])
    fake = FakeTrafficAdapter({"v1": 100, "v2": 0, "v3": 0}, backends=["v1", "v2", "v3"])
    assert fake.backends == ("v1", "v2", "v3")


def test_drift_is_a_person_changing_weights_behind_trimtabs_back() -> None:
    fake = FakeTrafficAdapter(START, apply_lag=3)
    fake.set_weights(STEP)
    fake.drift(HALF)
    assert fake.get_weights() == HALF
    assert fake.pending is None  # the lagging change was overwritten
    assert fake.verify(STEP) is Verification.PENDING
    assert fake.calls == [STEP]  # drift is not a call of trimtab's
    with pytest.raises(WeightsError):
        fake.drift({"v1": 1})


def test_an_adapter_that_cannot_verify_says_unsupported() -> None:
    fake = FakeTrafficAdapter(START, verifies=False)
    fake.set_weights(STEP)
    assert fake.verify(STEP) is Verification.UNSUPPORTED
    assert fake.get_weights() == STEP


def test_the_fake_adapter_is_thread_safe() -> None:
    fake = FakeTrafficAdapter(START, apply_lag=1)
    errors: list[BaseException] = []

    def work(canary: int) -> None:
        try:
            for _ in range(200):
                fake.set_weights({"v1": 100 - canary, "v2": canary})
                fake.verify({"v1": 100 - canary, "v2": canary})
                fake.get_weights()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(fake.calls) == 1600
    assert fake.reads == 3200


# -------------------------------------------------------------------------- ListMetricSource

CONFIG = load_text(
    """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: checkout
  objective: 99.9
  backendLabel: version
  minEvents: 50
  indicator:
    errorRatio:
      errors: http_requests_total{service="{{service}}", code=~"5.."}
      total: http_requests_total{service="{{service}}"}
  health:
    degraded: {burnRate: 6, windows: [5m, 30m]}
    unavailable: {burnRate: 14.4, windows: [1m, 5m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: queue}
spec:
  service: checkout
  backendLabel: version
  indicator:
    gauge: {query: 'max by (version) (queue_depth{service="{{service}}"})'}
  health:
    degraded: {above: 10, windows: [1m]}
    unavailable: {above: 50, windows: [1m]}
"""
)
ERRORS = SeriesRequest.of(
    "Rollout/checkout",
    CONFIG.slos["errors"],
    {"service": "checkout"},
    health_windows(CONFIG.slos["errors"].spec),
)
QUEUE = SeriesRequest.of(
    "Rollout/checkout",
    CONFIG.slos["queue"],
    {"service": "checkout"},
    health_windows(CONFIG.slos["queue"].spec),
)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_it_is_a_metric_source_answering_keyed_like_the_real_ones() -> None:
    source: MetricSource = ListMetricSource.constant({"v1": 0.0001, "v2": 0.05})
    measured = source.query([ERRORS], T0)
    assert set(measured.results) == {("Rollout/checkout", "errors")}
    result = measured[ERRORS]
    assert set(result.backends) == {"v1", "v2"}
    assert set(result.windows("v1")) == {60.0, 300.0, 1800.0}  # exactly the requested windows
    assert result.windows("v1")[60.0] == WindowMeasurement(0.0001, DEFAULT_EVENTS)
    assert result.health("v1").level is Level.HEALTHY
    assert result.health("v2").level is Level.UNAVAILABLE  # burn rate 50
    assert measured.source_error is None


def test_only_the_requested_windows_are_answered() -> None:
    source = ListMetricSource.constant({"v1": 3.0})
    short = SeriesRequest.of("Balance/pool", CONFIG.slos["queue"], {}, [60.0])
    assert set(source.query([short], T0)[short].windows("v1")) == {60.0}


def test_the_most_specific_key_wins() -> None:
    source = ListMetricSource.constant(
        {
            "v2": 0.0001,
            ("errors", "v2"): 0.008,  # degraded: burn rate 8 over 5m and 30m
            ("errors", "v2", "1m"): 0.02,  # one window alone does not make it unavailable
            ("queue", "v2"): 60.0,
        }
    )
    measured = source.query([ERRORS, QUEUE], T0)
    assert measured[ERRORS].windows("v2")[60.0].value == 0.02
    assert measured[ERRORS].windows("v2")[300.0].value == 0.008
    assert measured[ERRORS].health("v2").level is Level.DEGRADED
    assert measured[QUEUE].health("v2").level is Level.UNAVAILABLE


def test_values_may_carry_their_request_counts() -> None:
    source = ListMetricSource.constant(
        {"v1": (0.0001, 10.0), "v2": WindowMeasurement(0.0001, 500.0)}
    )
    measured = source.query([ERRORS], T0)[ERRORS]
    assert measured.health("v1").level is Level.UNKNOWN  # fewer than minEvents
    assert "fewer than minEvents" in measured.health("v1").reason
    assert measured.health("v2").level is Level.HEALTHY
    few = ListMetricSource.constant({"v1": 0.0001}, events=20.0)
    assert few.query([ERRORS], T0)[ERRORS].health("v1").level is Level.UNKNOWN


def test_missing_series_and_failed_windows_are_unknown() -> None:
    source = ListMetricSource.constant(
        {
            "v1": 0.0001,
            "v2": None,  # no series at all
            ("errors", "v3"): math.nan,
            ("queue", "v1"): "query timed out",  # the query failed: every backend of it
        }
    )
    measured = source.query([ERRORS, QUEUE], T0)
    assert "v2" not in measured[ERRORS].backends
    assert measured[ERRORS].health("v2").level is Level.UNKNOWN
    assert measured[ERRORS].health("v3").level is Level.UNKNOWN
    assert measured[QUEUE].error == "query timed out"
    assert measured[QUEUE].health("v3").level is Level.UNKNOWN
    assert measured.source_error is None


def test_a_source_that_is_down_says_so_and_comes_back() -> None:
    source = ListMetricSource.constant({"v1": 0.0001}, down=True)
    measured = source.query([ERRORS], T0)
    assert measured.source_error == "the fake metric source is down"
    assert measured[ERRORS].errors == dict.fromkeys(ERRORS.windows, measured.source_error)
    assert measured[ERRORS].health("v1").level is Level.UNKNOWN
    source.down = "connection refused"
    assert source.query([ERRORS], T0).source_error == "connection refused"
    source.down = False
    assert source.query([ERRORS], T0)[ERRORS].health("v1").level is Level.HEALTHY
    assert source.queries == 3


def test_queries_are_counted_and_remembered() -> None:
    source = ListMetricSource.constant({"v1": 1.0})
    source.query([ERRORS, QUEUE], T0)
    source.query([QUEUE], T0 + timedelta(seconds=30))
    assert source.queries == 2
    assert source.history == [((ERRORS, QUEUE), T0), ((QUEUE,), T0 + timedelta(seconds=30))]


def test_a_source_told_to_remember_few_batches_keeps_the_latest() -> None:
    source = ListMetricSource.constant({"v1": 1.0}, remember=1)
    source.query([ERRORS, QUEUE], T0)
    source.query([QUEUE], T0 + timedelta(seconds=30))
    assert source.queries == 2
    assert source.history == [((QUEUE,), T0 + timedelta(seconds=30))]


def test_a_timeline_answers_with_the_table_in_force_at_each_time() -> None:
    t1 = T0 + timedelta(minutes=5)
    source = ListMetricSource.from_timeline(
        [
            (t1, {"v1": 0.0001, "v2": 0.05}),  # order given does not matter
            (T0, {"v1": 0.0001, "v2": 0.0001}),
        ]
    )

    def level(at: datetime) -> Level:
        return source.query([ERRORS], at)[ERRORS].health("v2").level

    assert level(T0 - timedelta(seconds=1)) is Level.UNKNOWN  # before the first table: no data
    assert level(T0) is Level.HEALTHY
    assert level(t1 - timedelta(seconds=1)) is Level.HEALTHY
    assert level(t1) is Level.UNAVAILABLE
    assert level(t1.replace(tzinfo=None)) is Level.UNAVAILABLE  # naive times are UTC
    with pytest.raises(ValueError, match="same time"):
        ListMetricSource.from_timeline([(T0, {}), (T0, {})])


def test_query_range_steps_through_the_timeline() -> None:
    source = ListMetricSource.from_timeline(
        [(T0, {"v2": 0.0001}), (T0 + timedelta(minutes=1), {"v2": 0.05})]
    )
    points = source.query_range(ERRORS, T0, T0 + timedelta(minutes=2), 30.0)
    assert [t for t, _ in points] == [T0 + timedelta(seconds=30 * i) for i in range(5)]
    levels = [result.health("v2").level for _, result in points]
    assert levels == [Level.HEALTHY] * 2 + [Level.UNAVAILABLE] * 3
    assert source.range_queries == 1
    assert source.queries == 0
    with pytest.raises(ValueError):
        source.query_range(ERRORS, T0, T0 - timedelta(seconds=1), 30.0)


def test_a_function_decides_for_the_backends_it_is_told() -> None:
    asked: list[tuple[str, str, float, datetime]] = []

    def sample(request: SeriesRequest, backend: str, window: float, at: datetime) -> Sampled:
        asked.append((request.slo.metadata.name, backend, window, at))
        return WindowMeasurement(window / 1e6, 1000.0)

    source = ListMetricSource(sample, backends=["v1"])
    result = source.query([QUEUE], datetime(2024, 5, 1, 12, 0))[QUEUE]
    assert asked == [("queue", "v1", 60.0, T0)]  # aware UTC, only known backends
    assert result.windows("v1")[60.0].value == 60.0 / 1e6
    assert result.windows("v2") == {}


@pytest.mark.parametrize(
    "table",
    [{("errors",): 1.0}, {("errors", "v1", 0): 1.0}, {"v1": object()}, {"v1": True}],
)
def test_a_malformed_table_is_refused(table: dict[object, object]) -> None:
    with pytest.raises(TypeError):
        ListMetricSource.constant(table)  # type: ignore[arg-type]
