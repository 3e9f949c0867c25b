"""Weight shifts under load on every real proxy: zero failed requests, the split follows.

Two clients run through the proxy while the adapter shifts weights 20 times: one opens a new
connection per request, one keeps a connection alive and retries an idempotent GET once when
the proxy closed that connection under it (what a well-behaved HTTP client does; NGINX's
reload closes idle keep-alive connections). Neither may see a failed request. Between shifts,
once the adapter verified the weights, each phase counts at least :data:`PHASE_REQUESTS`
answers; the share of each backend must be within :data:`PHASE_TOLERANCE` points of its
weight in every phase, and within :data:`TOTAL_TOLERANCE` over all phases together.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from proxies import HARNESSES, Backends, ProxyHarness, connect
from test_adapter_contract import _start, set_and_verify

pytestmark = pytest.mark.integration

SHIFTS = [{"v1": 100 - c, "v2": c} for c in (10, 25, 50, 75, 100, 50, 0, 5, 95, 30) * 2]
PHASE_REQUESTS = 200
# Random balancing: 200 requests at p = 0.5 have a standard deviation of 3.5 points.
PHASE_TOLERANCE = 15
TOTAL_TOLERANCE = 3
PHASE_TIMEOUT = 30.0


@dataclass
class Tally:
    """What the clients saw: answers per phase and every failure."""

    phase: int = -1  # -1: between phases (shifting), answers not counted for a split
    answers: dict[int, Counter[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, phase: int, body: str) -> None:
        with self.lock:
            if phase >= 0 and phase == self.phase:
                self.answers.setdefault(phase, Counter())[body] += 1

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def counted(self, phase: int) -> int:
        with self.lock:
            return sum(self.answers.get(phase, Counter()).values())


def _new_connection_client(url: str, tally: Tally, stop: threading.Event) -> None:
    while not stop.is_set():
        phase = tally.phase
        connection = connect(url)
        try:
            connection.request("GET", "/", headers={"Connection": "close"})
            response = connection.getresponse()
            body = response.read().decode()
            if response.status != 200:
                tally.fail(f"new connection: status {response.status}")
            else:
                tally.record(phase, body)
        except (OSError, http.client.HTTPException) as error:
            tally.fail(f"new connection: {error!r}")
        finally:
            connection.close()


def _keep_alive_client(url: str, tally: Tally, stop: threading.Event) -> None:
    connection = connect(url)
    while not stop.is_set():
        phase = tally.phase
        for attempt in (1, 2):  # one retry of an idempotent GET on a connection closed under it
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                body = response.read().decode()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
                connection.close()
                connection = connect(url)
                if attempt == 2:
                    tally.fail(f"keep-alive after a retry: {error!r}")
                continue
            except (OSError, http.client.HTTPException) as error:
                tally.fail(f"keep-alive: {error!r}")
                connection.close()
                connection = connect(url)
                break
            if response.status != 200:
                tally.fail(f"keep-alive: status {response.status}")
            else:
                tally.record(phase, body)
            break
    connection.close()


@pytest.fixture(params=sorted(HARNESSES))
def proxy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProxyHarness]:
    backends = Backends().start()
    try:
        yield from _start(request.param, tmp_path, backends)
    finally:
        backends.stop()


def test_shifts_under_load_lose_no_request(proxy: ProxyHarness) -> None:
    adapter = proxy.adapter()
    tally = Tally()
    stop = threading.Event()
    clients = [
        threading.Thread(target=client, args=(proxy.url, tally, stop), daemon=True)
        for client in (_new_connection_client, _keep_alive_client)
    ]
    for client in clients:
        client.start()
    try:
        for phase, weights in enumerate(SHIFTS):
            tally.phase = -1
            set_and_verify(adapter, weights)
            tally.phase = phase
            deadline = time.monotonic() + PHASE_TIMEOUT
            while tally.counted(phase) < PHASE_REQUESTS:
                assert time.monotonic() < deadline, f"phase {phase}: too few answers"
                time.sleep(0.01)
    finally:
        tally.phase = -1
        stop.set()
        for client in clients:
            client.join(10)

    assert tally.failures == []
    expected: dict[str, float] = dict.fromkeys(("v1", "v2"), 0.0)
    observed: Counter[str] = Counter()
    for phase, weights in enumerate(SHIFTS):
        answers = tally.answers[phase]
        total = sum(answers.values())
        assert set(answers) <= set(weights), answers
        for backend, percent in weights.items():
            share = 100 * answers[backend] / total
            assert share == pytest.approx(percent, abs=PHASE_TOLERANCE), (phase, weights, answers)
            expected[backend] += percent * total / 100
            observed[backend] += answers[backend]
    grand = sum(observed.values())
    for backend in expected:
        assert 100 * observed[backend] / grand == pytest.approx(
            100 * expected[backend] / grand, abs=TOTAL_TOLERANCE
        )
