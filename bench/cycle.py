"""The controller's own cost of one reconcile cycle at scale, and its memory.

N Rollouts (``svc0`` … ``svcN-1``, each v1 → v2) share two SLOs (an error ratio and a p95). The
metric source is in memory (``adapters.fake.ListMetricSource``: every backend healthy), the
traffic adapters are the in-library fakes, and state and the decision log are real files in a
temp directory (written with fsync, as in production). So the figures are everything the
controller does in a cycle — plan the queries, split the answers, judge, decide, record,
save state, act and verify — without a Prometheus (``bench/batching.py`` times that part).

The first cycle starts every rollout (N decisions, N moves, N state writes); the cycles after
it are steady state (holds inside the step's hold). Prints per-cycle wall time (median of
``--runs`` steady cycles, min–max) and the process's peak RSS.

    .venv/bin/python bench/cycle.py --targets 1000 10000 --runs 5
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trimtab.adapters.fake import FakeTrafficAdapter, ListMetricSource
from trimtab.controller.decisions import DecisionLog
from trimtab.controller.reconcile import Reconciler, ReconcilerConfig
from trimtab.controller.state import StateStore
from trimtab.controller.targets import targets
from trimtab.slo import load_text

SLOS = """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: fleet
  objective: 99.9
  backendLabel: version
  indicator:
    errorRatio:
      errors: http_requests_total{service="{{service}}", code="500"}
      total: http_requests_total{service="{{service}}"}
  health:
    degraded: {burnRate: 6, windows: [5m, 30m]}
    unavailable: {burnRate: 14.4, windows: [1m, 5m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: p95}
spec:
  service: fleet
  backendLabel: version
  indicator:
    quantile: {histogram: http_request_seconds, selector: '{service="{{service}}"}', quantile: 0.95}
  health: {degraded: {above: 250ms, windows: [5m]}, unavailable: {above: 1s, windows: [5m]}}
"""

ROLLOUT = """
---
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {{name: svc{i}}}
spec:
  slos: [{{name: errors, params: {{service: svc{i}}}}}, {{name: p95, params: {{service: svc{i}}}}}]
  stable: v1
  canary: v2
  route: {{file: {{path: w{i}.json}}}}
  steps: [{{weight: 10, hold: 30m}}, {{weight: 100}}]
  analysis: {{interval: 30s, baseline: true}}
"""

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HEALTHY = {"errors": 0.0002, "p95": 0.08}


def measure(count: int, runs: int) -> tuple[float, list[float]]:
    config = load_text(SLOS + "".join(ROLLOUT.format(i=i) for i in range(count)), "bench.yaml")
    chosen = targets(config)
    table = {(slo, b): value for slo, value in HEALTHY.items() for b in ("v1", "v2")}
    source = ListMetricSource.constant(table, events=600.0)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="trimtab-cycle-") as scratch:
        reconciler = Reconciler(
            ReconcilerConfig(
                source=source,
                adapters={t.key: FakeTrafficAdapter({"v1": 100, "v2": 0}) for t in chosen},
                states=StateStore(Path(scratch) / "state"),
                log=DecisionLog(Path(scratch) / "decisions.jsonl"),
                specs={f"Rollout/{n}": r for n, r in config.rollouts.items()},
            )
        )
        started = time.perf_counter()
        reconciler.cycle(chosen, T0)
        first = time.perf_counter() - started
        steady = []
        for run in range(1, runs + 1):
            started = time.perf_counter()
            reconciler.cycle(chosen, T0 + timedelta(seconds=30 * run))
            steady.append(time.perf_counter() - started)
    return first, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for count in args.targets:
        first, steady = measure(count, args.runs)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        spread = f"[{min(steady):.2f}–{max(steady):.2f}]"
        print(
            f"{count:6d} targets: first cycle (every rollout starts) {first:6.2f} s; steady "
            f"cycle median {statistics.median(steady):5.2f} s {spread} over {len(steady)}; "
            f"peak RSS so far {rss:.0f} MB"
        )


if __name__ == "__main__":
    main()
