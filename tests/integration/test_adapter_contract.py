"""The traffic adapter contract, on every real proxy (DESIGN.md section 7, issue 5).

Each test runs once per proxy harness (``tests/proxies``): the real proxy in front of two real
backends, steered by the adapter ``trimtab run`` would build. What every adapter promises:
set → get → verify round trips exactly; the proxy serves the weights; a repeat is idempotent;
trimtab percents translate to the proxy's scale and back exactly; invalid weights change
nothing; and a proxy failure raises the right error type and leaves traffic as it was.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import missing
from proxies import HARNESSES, START, Backends, ProxyHarness, count_split
from trimtab.slo.ports import TrafficAdapter, Verification, Weights
from trimtab.slo.traffic import TrafficError, WeightsError, from_scale

pytestmark = pytest.mark.integration

VERIFY_TIMEOUT = 10.0  # seconds; every proxy here applies a change within milliseconds
SPLIT_REQUESTS = 400
# Proxies that pick a backend at random per request: 400 requests at p = 0.3 have a standard
# deviation of 2.3 points; 9 points is ~4 standard deviations.
RANDOM_TOLERANCE = 9

FAILURES = [(name, failure) for name, harness in HARNESSES.items() for failure in harness.failures]


@pytest.fixture
def backends() -> Iterator[Backends]:
    running = Backends().start()
    yield running
    running.stop()


def _start(name: str, tmp_path: Path, backends: Backends) -> Iterator[ProxyHarness]:
    harness_type = HARNESSES[name]
    if harness_type.binary() is None:
        missing(f"{name} (see scripts/lib.sh)")
    harness = harness_type(tmp_path, backends)
    harness.start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture(params=sorted(HARNESSES))
def proxy(
    request: pytest.FixtureRequest, tmp_path: Path, backends: Backends
) -> Iterator[ProxyHarness]:
    yield from _start(request.param, tmp_path, backends)


def set_and_verify(adapter: TrafficAdapter, weights: Weights) -> None:
    adapter.set_weights(weights)
    deadline = time.monotonic() + VERIFY_TIMEOUT
    while (state := adapter.verify(weights)) is Verification.PENDING:
        assert time.monotonic() < deadline, f"{weights} not verified within {VERIFY_TIMEOUT}s"
        time.sleep(0.01)
    assert state is Verification.VERIFIED


def assert_serves(proxy: ProxyHarness, weights: Weights) -> None:
    served = count_split(proxy.url, SPLIT_REQUESTS)
    assert sum(served.values()) == SPLIT_REQUESTS
    assert set(served) == set(weights), f"unexpected answers: {served}"
    for backend, percent in weights.items():
        share = 100 * served[backend] / SPLIT_REQUESTS
        if percent in (0, 100) or proxy.exact_split:
            assert share == pytest.approx(percent, abs=1), served
        else:
            assert share == pytest.approx(percent, abs=RANDOM_TOLERANCE), served


def test_starts_with_all_traffic_on_the_stable(proxy: ProxyHarness) -> None:
    adapter = proxy.adapter()
    assert adapter.get_weights() == START
    assert adapter.verify(START) is Verification.VERIFIED
    assert_serves(proxy, START)


@pytest.mark.parametrize(
    "weights",
    [{"v1": 95, "v2": 5}, {"v1": 1, "v2": 99}, {"v1": 0, "v2": 100}, {"v1": 67, "v2": 33}],
    ids=lambda w: f"{w['v1']}-{w['v2']}",
)
def test_set_get_verify_round_trip(proxy: ProxyHarness, weights: Weights) -> None:
    adapter = proxy.adapter()
    set_and_verify(adapter, weights)
    assert adapter.get_weights() == weights
    assert proxy.adapter().get_weights() == weights  # a new adapter (a restart) reads the same
    other = {"v1": weights["v2"], "v2": weights["v1"]}
    if other != weights:
        assert adapter.verify(other) is Verification.PENDING


def test_the_proxy_serves_the_weights(proxy: ProxyHarness) -> None:
    adapter = proxy.adapter()
    for weights in ({"v1": 0, "v2": 100}, {"v1": 30, "v2": 70}, {"v1": 100, "v2": 0}):
        set_and_verify(adapter, weights)
        assert_serves(proxy, weights)


def test_translation_to_the_proxy_scale_round_trips(proxy: ProxyHarness) -> None:
    adapter = proxy.adapter()
    for canary in (0, 1, 5, 33, 50, 99, 100):
        weights = {"v1": 100 - canary, "v2": canary}
        set_and_verify(adapter, weights)
        native = proxy.native_weights()
        assert set(native) == {"v1", "v2"}
        if canary in (0, 100):
            drained = "v2" if canary == 0 else "v1"
            assert native[drained] == 0, native
        assert from_scale(native) == weights, native


def test_setting_the_same_weights_again_is_idempotent(proxy: ProxyHarness) -> None:
    adapter = proxy.adapter()
    weights = {"v1": 75, "v2": 25}
    set_and_verify(adapter, weights)
    native = dict(proxy.native_weights())
    set_and_verify(adapter, weights)
    assert dict(proxy.native_weights()) == native
    assert adapter.get_weights() == weights


@pytest.mark.parametrize(
    "bad",
    [{"v1": 50, "v2": 49}, {"v1": 100}, {"v1": 50, "v2": 50, "v3": 0}, {"v1": -5, "v2": 105}],
    ids=["sum-99", "missing-backend", "unknown-backend", "negative"],
)
def test_invalid_weights_change_nothing(proxy: ProxyHarness, bad: Weights) -> None:
    adapter = proxy.adapter()
    set_and_verify(adapter, {"v1": 80, "v2": 20})
    native = dict(proxy.native_weights())
    with pytest.raises(WeightsError):
        adapter.set_weights(bad)
    assert dict(proxy.native_weights()) == native
    assert adapter.get_weights() == {"v1": 80, "v2": 20}


@pytest.mark.parametrize(("name", "failure"), FAILURES, ids=[f"{n}-{f}" for n, f in FAILURES])
def test_a_proxy_failure_leaves_traffic_as_it_was(
    name: str, failure: str, tmp_path: Path, backends: Backends
) -> None:
    for proxy in _start(name, tmp_path, backends):
        adapter = proxy.adapter()
        before = {"v1": 80, "v2": 20}
        set_and_verify(adapter, before)
        expected = proxy.inject(failure)
        assert issubclass(expected, TrafficError)
        with pytest.raises(expected) as raised:
            adapter.set_weights({"v1": 20, "v2": 80})
        assert str(raised.value), "the error must say what failed"
        proxy.repair(failure)
        assert from_scale(proxy.native_weights()) == before
        assert adapter.get_weights() == before
        assert adapter.verify(before) is Verification.VERIFIED
        assert_serves(proxy, before)
        set_and_verify(adapter, {"v1": 20, "v2": 80})  # and it works again once repaired
