"""Batched versus one-query-per-target measurement against a real Prometheus.

N targets (Rollouts ``svc0`` … ``svcN-1``, each with v1 and v2) share three SLOs: an error ratio,
a slow-request ratio and a p95. Synthetic series for every service are backfilled into a real
Prometheus (the Debian package), then one measurement cycle is timed both ways:

- batched: one ``PrometheusSource.query`` for every target's requests (the controller's way);
- per target: one ``query`` per target, as a controller without batching would send.

At large N the per-target way is timed on a sample of targets and extrapolated linearly (said so
in the output). Figures are medians over ``--runs`` cycles, with min and max for the noise.

    .venv/bin/python bench/batching.py --targets 1000 10000 --runs 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from servers import PrometheusServer, backfill  # noqa: E402
from trimtab.adapters.prometheus import PrometheusSource  # noqa: E402
from trimtab.controller.targets import Target, requests_for  # noqa: E402
from trimtab.slo import load_text, models  # noqa: E402

START = 1_767_225_600  # 2026-01-01T00:00:00Z
STEP = 120
SAMPLES = 17  # 32 minutes
AT = datetime.fromtimestamp(START + STEP * (SAMPLES - 1), UTC)
BOUNDS = ("0.1", "0.25", "1", "2.5", "+Inf")

SLO_YAML = """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: fleet
  objective: 99.9
  backendLabel: version
  minEvents: 10
  indicator:
    errorRatio:
      errors: http_requests_total{service="{{service}}", code="500"}
      total: http_requests_total{service="{{service}}"}
  health:
    degraded: {burnRate: 6, windows: [5m, 30m]}
    unavailable: {burnRate: 14.4, windows: [5m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: slow}
spec:
  service: fleet
  objective: 99
  backendLabel: version
  minEvents: 10
  indicator:
    latency:
      histogram: http_request_duration_seconds
      selector: '{service="{{service}}"}'
      threshold: 250ms
  health:
    degraded: {burnRate: 6, windows: [5m, 30m]}
    unavailable: {burnRate: 14.4, windows: [5m]}
---
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: p95}
spec:
  service: fleet
  backendLabel: version
  minEvents: 10
  indicator:
    quantile:
      histogram: http_request_duration_seconds
      selector: '{service="{{service}}"}'
      quantile: 0.95
  health:
    degraded: {above: 250ms, windows: [5m]}
    unavailable: {above: 1s, windows: [5m]}
"""
SLOS = load_text(SLO_YAML, "bench.yaml").slos


def openmetrics(services: int) -> Iterator[str]:
    """Counters and a histogram per service and version; every 7th service's v2 is bad."""
    yield "# TYPE http_requests counter"
    for s in range(services):
        for version in ("v1", "v2"):
            bad = version == "v2" and s % 7 == 0
            for code, rate in (("200", 9.0 if bad else 10.0), ("500", 1.0 if bad else 0.001)):
                labels = f'service="svc{s}",version="{version}",code="{code}"'
                for i in range(SAMPLES):
                    yield f"http_requests_total{{{labels}}} {rate * STEP * i:g} {START + STEP * i}"
    yield "# TYPE http_request_duration_seconds histogram"
    for s in range(services):
        for version in ("v1", "v2"):
            slow = version == "v2" and s % 7 == 0
            labels = f'service="svc{s}",version="{version}"'
            for bound in BOUNDS:
                # slow: 80 % of requests take 1-2.5 s (p95 about 2.4 s)
                share = 1.0 if not slow or bound in ("2.5", "+Inf") else 0.2
                for i in range(SAMPLES):
                    value = 10.0 * share * STEP * i
                    line = f'http_request_duration_seconds_bucket{{{labels},le="{bound}"}}'
                    yield f"{line} {value:g} {START + STEP * i}"
            for i in range(SAMPLES):
                line = f"http_request_duration_seconds_count{{{labels}}}"
                yield f"{line} {10.0 * STEP * i:g} {START + STEP * i}"
    yield "# EOF"


def targets(count: int) -> list[Target]:
    """``count`` Rollouts, each using the three SLOs with its own ``service``."""
    return [
        Target(
            "Rollout",
            f"svc{i}",
            ("v1", "v2"),
            tuple((slo, (("service", f"svc{i}"),)) for slo in SLOS.values()),
            True,
        )
        for i in range(count)
    ]


def timed_cycle(source: PrometheusSource, chosen: Sequence[Target]) -> tuple[float, int, int]:
    """(seconds, queries, UNAVAILABLE verdicts) of one batched cycle over ``chosen``."""
    requests = [r for t in chosen for r in requests_for(t)]
    before = source.queries_sent
    started = time.perf_counter()
    measurements = source.query(requests, AT)
    elapsed = time.perf_counter() - started
    bad = sum(
        measurements[r].health(b).level.name == "UNAVAILABLE"
        for r in requests
        for b in ("v1", "v2")
    )
    return elapsed, source.queries_sent - before, bad


def per_target_cycle(source: PrometheusSource, chosen: Sequence[Target]) -> tuple[float, int, int]:
    total_time, total_queries, total_bad = 0.0, 0, 0
    for target in chosen:
        elapsed, queries, bad = timed_cycle(source, [target])
        total_time += elapsed
        total_queries += queries
        total_bad += bad
    return total_time, total_queries, total_bad


def summary(values: Sequence[float]) -> str:
    return (
        f"median {statistics.median(values):8.3f}  (min {min(values):.3f}, max {max(values):.3f})"
    )


def bench(count: int, runs: int, sample: int, prometheus: str, promtool: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="trimtab-bench-"))
    try:
        server = PrometheusServer(prometheus, workdir)
        started = time.perf_counter()
        backfill(promtool, "\n".join(openmetrics(count)) + "\n", server.storage)
        server.start()
        ready = time.perf_counter() - started
        print(f"\n{count} targets × 3 SLOs: backfilled and started in {ready:.1f}s")
        chosen = targets(count)
        with PrometheusSource(models.PrometheusSource(url=server.url, timeout=120.0)) as source:
            timed_cycle(source, chosen[:10])  # warm Prometheus' caches a little
            batched = [timed_cycle(source, chosen) for _ in range(runs)]
            subset = chosen[: min(sample, count)]
            single = [per_target_cycle(source, subset) for _ in range(runs)]
        scale = count / len(subset)
        walls = summary([b[0] for b in batched])
        print(f"  batched     : {batched[0][1]:6d} queries/cycle  wall s {walls}")
        note = "" if scale == 1 else f"  (timed on {len(subset)} targets, ×{scale:g} extrapolated)"
        print(
            f"  per target  : {round(single[0][1] * scale):6d} queries/cycle  wall s "
            f"{summary([s[0] * scale for s in single])}{note}"
        )
        expected_bad = 3 * len(range(0, count, 7))
        print(f"  UNAVAILABLE verdicts (batched): {batched[0][2]} (expected {expected_bad})")
        if batched[0][2] != expected_bad:
            raise SystemExit("batched verdicts differ from the data's truth")
        server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--targets", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--per-target-sample", type=int, default=1000)
    args = parser.parse_args()
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        raise SystemExit("needs prometheus and promtool (Debian package prometheus)")
    for count in args.targets:
        bench(count, args.runs, args.per_target_sample, prometheus, promtool)


if __name__ == "__main__":
    main()
