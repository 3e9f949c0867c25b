"""The controller's own cost of one reconcile cycle at scale, and its memory.

N Rollouts (``svc0`` … ``svcN-1``, each v1 → v2) share two SLOs (an error ratio and a p95). The
metric source is in memory (``adapters.fake.ListMetricSource``: every backend healthy), the
traffic adapters are the in-library fakes (both keep no history of calls, as real ones keep
none), and state and the decision log are real files in a temp directory (written with fsync,
as in production). So the figures are everything the controller does in a cycle — plan the
queries, split the answers, judge, decide, record, save state, act and verify — without a
Prometheus (``bench/batching.py`` times that part).

Set up as ``trimtab run`` sets up: the configuration loads, and each cycle runs, with the garbage
collector paused, and what is alive once wired is frozen out of later collections
(``controller/heap.py``; ``--plain-gc`` leaves the collector as Python sets it). ``--telemetry``
runs each cycle through the controller's telemetry too (metrics and spans, as ``trimtab run``
does; no exporter), and times one ``/metrics`` scrape after the cycles (in production, on the
HTTP thread).

The first cycle starts every rollout (N decisions, N moves, 2N state writes: the intent, then
the verified weights); the second records each rollout's first hold and its healthy-since time
(N decisions, N state writes); the cycles after it are steady state (holds inside the step's
hold, which write nothing). Each target count runs in a fresh process, so its memory is its
own. Prints, per count: the time to load and validate the YAML and build the targets, the
first and second cycles, the steady cycles (wall time: median of ``--runs``, min–max; and the
median CPU time, less disturbed by other work on the machine; and the median of each cycle
over a reference loop timed just before it, see :func:`reference`), the RSS after loading and
after the cycles, and the peak RSS.

    .venv/bin/python bench/cycle.py --targets 1000 10000 --runs 5
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry
from trimtab.adapters.fake import FakeTrafficAdapter, ListMetricSource
from trimtab.controller import heap
from trimtab.controller.decisions import DecisionLog
from trimtab.controller.reconcile import Reconciler, ReconcilerConfig
from trimtab.controller.state import StateStore
from trimtab.controller.targets import targets
from trimtab.controller.telemetry import Telemetry
from trimtab.controller.wiring import policy_specs
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


def reference() -> float:
    """Seconds for a fixed pure-Python loop (2 million additions): this machine's speed at the
    moment. A VM's speed drifts (here by half from one minute to the next), so the steady cycles
    are also given in units of this loop, taken before each: those compare across runs."""
    started = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    return time.perf_counter() - started


def rss_mb() -> float:
    """The process's resident set now, in MB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(count: int, runs: int, *, telemetry: bool, plain_gc: bool) -> str:
    """One line of figures for ``count`` targets."""
    text = SLOS + "".join(ROLLOUT.format(i=i) for i in range(count))
    started = time.perf_counter()
    with nullcontext() if plain_gc else heap.paused():
        config = load_text(text, "bench.yaml")
    chosen, specs = targets(config), policy_specs(config)
    del config, text  # as trimtab run lets go of them once wired
    loading = time.perf_counter() - started
    loaded = rss_mb()
    table = {(slo, b): value for slo, value in HEALTHY.items() for b in ("v1", "v2")}
    source = ListMetricSource.constant(table, events=600.0, remember=0)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="trimtab-cycle-") as scratch:
        reconciler = Reconciler(
            ReconcilerConfig(
                source=source,
                adapters={
                    t.key: FakeTrafficAdapter({"v1": 100, "v2": 0}, remember=0) for t in chosen
                },
                states=StateStore(Path(scratch) / "state"),
                log=DecisionLog(Path(scratch) / "decisions.jsonl"),
                specs=specs,
            )
        )
        watch = Telemetry(CollectorRegistry(), span_processors=[]) if telemetry else None
        if watch is not None:
            reconciler = watch.instrument(reconciler)
        if not plain_gc:
            heap.settle()
        times, cpu, speed = [], [], []
        for run in range(runs + 2):
            if run >= 2:
                speed.append(reference())
            now = T0 + timedelta(seconds=30 * run)
            started, used = time.perf_counter(), time.process_time()
            with nullcontext() if plain_gc else heap.paused():
                if watch is None:
                    for _ in reconciler.stream(chosen, now):  # as `trimtab run` takes them
                        pass
                else:
                    watch.follow_cycle(lambda now=now: reconciler.stream(chosen, now), id)  # type: ignore[misc]
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - used)
        scrape = ""
        if watch is not None:
            started = time.perf_counter()
            exposed = sum(len(chunk) for chunk in watch.exposition_chunks())  # as /metrics does
            took = time.perf_counter() - started
            scrape = f"; one /metrics scrape {took:.2f} s, {exposed / 1e6:.0f} MB"
    first, second, steady = times[0], times[1], times[2:]
    loop = statistics.median(speed)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return (
        f"{count:6d} targets: load {loading:6.2f} s; first cycle (every rollout starts) "
        f"{first:6.2f} s; second {second:6.2f} s; steady median {statistics.median(steady):5.2f} s "
        f"[{min(steady):.2f}–{max(steady):.2f}] over {len(steady)} (CPU "
        f"{statistics.median(cpu[2:]):.2f} s; reference loop {loop:.2f} s, so "
        f"{statistics.median(s / r for s, r in zip(steady, speed, strict=True)):.2f} loops); "
        f"RSS {loaded:.0f} MB after loading, "
        f"{rss_mb():.0f} MB after the cycles, peak {peak:.0f} MB{scrape}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--telemetry", action="store_true", help="cycles through telemetry")
    parser.add_argument("--plain-gc", action="store_true", help="no collector pause or freeze")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        for count in args.targets:
            figures = measure(count, args.runs, telemetry=args.telemetry, plain_gc=args.plain_gc)
            print(figures, flush=True)
        return
    flags = [f for f in ("--telemetry", "--plain-gc") if getattr(args, f[2:].replace("-", "_"))]
    for count in args.targets:  # a fresh process per count: its peak RSS is its own
        argv = [sys.executable, __file__, "--in-process", "--targets", str(count), *flags]
        subprocess.run([*argv, "--runs", str(args.runs)], check=True)


if __name__ == "__main__":
    main()
