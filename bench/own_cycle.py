"""The controller's own CPU per cycle against a real Prometheus, on a fake clock.

The fleet and data of ``bench/footprint.py``: N Rollouts (``svc0`` … ``svcN-1``, v1 → v2 through
the ``file`` adapter) share the three SLOs of ``bench/batching.py``, whose series are backfilled
into a real Prometheus (the Debian package). Here the controller runs in this process, wired as
``trimtab run`` wires it (the Prometheus source, the file adapter, the state files and the
decision log, the telemetry, the collector settled and paused per cycle), and each cycle runs at
once, on a clock 30 s (the analysis interval) ahead of the last one.

So it measures, cycle by cycle, what ``footprint.py`` cannot separate from outside: this
process' CPU (``time.process_time``: the cycle and its HTTP threads, no ``/metrics`` scrapes),
Prometheus' CPU (``/proc/PID/stat``), the wall time, and the queries sent. A run takes about
two minutes at 10,000 targets, not ten.

The cycles' cost follows the windows. A Rollout's windows are clipped to the time since its
shift (cycle 0), rounded down to the 30 s interval, and a sample comes every 2 minutes. At 10,000
targets (1,429 Rollouts stay Pending: their canary is UNAVAILABLE):

- cycle 0 starts 8,571 Rollouts (a move each); cycle 1 records their first holds;
- cycles 2-5: the clipped windows (1 to 2.5 minutes) hold too few samples for most series to
  come back;
- cycle 6: the canaries' windows hold data, they are HEALTHY: each Rollout saves it;
- cycles 7-10: the 5m and 30m windows clip to the same window, up to 5m (one set of queries);
- cycles 11 and on, the middle of a step: the 5m windows whole (one set of queries with the
  Pending Rollouts'), the 30m ones clipped to more than 5m (a set of their own): half as many
  series again a cycle as in cycles 7-10, and most of a 30m hold is like this.

    .venv/bin/python bench/own_cycle.py --targets 10000 --cycles 16

Never run as a test: it prints figures and asserts nothing of them.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import batching
import footprint
from prometheus_client import CollectorRegistry
from trimtab.adapters.prometheus import PrometheusSource
from trimtab.controller import heap
from trimtab.controller.telemetry import Telemetry
from trimtab.controller.wiring import wire
from trimtab.slo import load_text, models

INTERVAL = 30.0  # the Rollouts' analysis interval (footprint.ROLLOUT)
MID_STEP = 11  # the first cycle whose clipped 30m windows are longer than 5m


def measure(count: int, cycles: int, prometheus: str, promtool: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="trimtab-own-cycle-"))
    server = None
    try:
        server, start = footprint.started_prometheus(
            count, workdir / "prometheus", prometheus, promtool
        )
        (workdir / "routes").mkdir()
        fleet = batching.SLO_YAML + "".join(footprint.ROLLOUT.format(i=i) for i in range(count))
        with heap.paused():
            config = load_text(fleet, str(workdir / "fleet.yaml"))
        del fleet
        source = PrometheusSource(models.PrometheusSource(url=server.url, timeout=60))
        wiring = wire(config, source, directory=workdir / "state", dry_run=False)
        telemetry = Telemetry(CollectorRegistry())
        telemetry.leading = True
        reconciler = telemetry.instrument(wiring.reconciler)
        heap.settle()
        heap.bound_arenas()

        shift = datetime.fromtimestamp(start + footprint.BEFORE, UTC)
        rows: list[tuple[int, float, float, float, int]] = []
        print("  cycle  since the shift  trimtab CPU  Prometheus CPU  wall     queries")
        for i in range(cycles):
            now = shift + timedelta(seconds=INTERVAL * i)
            sent, theirs = source.queries_sent, footprint.cpu_seconds(server.process.pid)
            mine, wall = time.process_time(), time.perf_counter()
            with heap.paused():
                telemetry.follow_cycle(lambda at=now: reconciler.stream(wiring.targets, at), _drop)
            row = (
                i,
                time.process_time() - mine,
                footprint.cpu_seconds(server.process.pid) - theirs,
                time.perf_counter() - wall,
                source.queries_sent - sent,
            )
            rows.append(row)
            print(
                f"  {i:5d}  {INTERVAL * i:13.0f} s  {row[1]:9.2f} s  {row[2]:12.2f} s  "
                f"{row[3]:5.2f} s  {row[4]:7d}"
            )
        for label, chosen in (
            ("steady (from cycle 2)", rows[2:]),
            (f"mid-step (from cycle {MID_STEP})", rows[MID_STEP:]),
        ):
            if chosen:
                print(
                    f"  {label}, median of {len(chosen)}: trimtab CPU "
                    f"{_median(chosen, 1)}, Prometheus CPU {_median(chosen, 2)}, wall "
                    f"{_median(chosen, 3)}"
                )
        source.close()
    finally:
        if server is not None:  # a run cut short leaves no Prometheus behind
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _drop(decision: object) -> None:
    """Each decision, let go of (``trimtab run`` prints the moves)."""


def _median(rows: list[tuple[int, float, float, float, int]], column: int) -> str:
    values = [row[column] for row in rows]
    return f"{statistics.median(values):.2f} s [{min(values):.2f}–{max(values):.2f}]"


if __name__ == "__main__":
    footprint.run(measure, cycles=16, doc=__doc__)
