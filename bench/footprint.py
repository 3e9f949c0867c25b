"""``trimtab run`` at scale, as a user runs it: its cycle time and its memory, from outside.

N Rollouts (``svc0`` … ``svcN-1``, each v1 → v2 through the ``file`` adapter) share the three
SLOs of ``bench/batching.py`` (an error ratio, a slow-request ratio, a p95). Their series are
backfilled into a real Prometheus (the Debian package), from 17 minutes ago to 15 minutes ahead
(a sample every 2 minutes), so the windows the controller asks for hold data while it runs. Then
the ``trimtab run`` console script runs against it — the whole process: the CLI, the wiring,
the Prometheus source, the decision log and state files, ``/metrics`` — and this script watches
it from outside:

- its resident memory, every 0.2 s (``VmRSS``), and the kernel's high-water mark (``VmHWM``);
- each cycle's duration, from the controller's own ``trimtab_cycle_duration_seconds`` on
  ``/metrics``, scraped every 5 s as a Prometheus might (a scrape at 10,000 targets is 10 MB of
  text: every second, it took a fifth of the controller's time); the first cycle starts every
  rollout, the second records their first holds, the ones after it are steady: holds that
  write nothing;
- the CPU time of the controller and of Prometheus per steady cycle (``/proc/PID/stat``): on
  2 cores shared, how much of a cycle's wait is each one's work;
- one scrape of ``/metrics``.

What ``bench/cycle.py`` measures in-process with fakes, this measures with a real source and
real files. The first cycle writes 20,000 state files and a file per route at 10,000 targets.

A Rollout's windows are clipped to the time since its last shift, and a sample comes every
2 minutes: in the first three cycles most windows hold no data, and the controller's memory
grows as they fill (at 10,000 targets, until about the 11th cycle). Ask for 16 cycles to see
the steady peak and the cycles of the middle of a step (5 minutes after the shift, the clipped
30m windows outgrow the 5m ones and are asked for on their own: half as many series again a
cycle); 5 show the first cycle times.

    .venv/bin/python bench/footprint.py --targets 10000 --cycles 16

Never run as a test: it prints figures and asserts nothing of them.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import batching
import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from servers import PrometheusServer, backfill, free_port  # noqa: E402

BEFORE, AHEAD = 17 * 60, 15 * 60  # seconds of data before the start and after it
SCRAPE_EVERY = 5.0  # seconds between two looks at /metrics

ROLLOUT = """---
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {{name: svc{i}}}
spec:
  slos: [{{name: errors, params: {{service: svc{i}}}}}, {{name: slow, params: {{service: svc{i}}}}},
         {{name: p95, params: {{service: svc{i}}}}}]
  stable: v1
  canary: v2
  route: {{file: {{path: routes/w{i}.json}}}}
  steps: [{{weight: 10, hold: 30m}}, {{weight: 100}}]
  analysis: {{interval: 30s, baseline: true}}
"""

CONTROLLER = """---
apiVersion: trimtab.dev/v1alpha1
kind: Controller
spec:
  metrics: {{prometheus: {{url: "{url}", timeout: 60s}}}}
  stateDir: {state}
  listen: 127.0.0.1:{port}
"""


def status(pid: int) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of ``pid``, in MB."""
    found = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as lines:
        for line in lines:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(rest.split()[0]) / 1024
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time ``pid`` has used so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cycles(url: str) -> tuple[int, float]:
    """How many cycles the controller finished, and their total seconds (its own histogram)."""
    text = httpx.get(url, timeout=60).text
    count, total = 0, 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "trimtab_cycle_duration_seconds_count":
                count = int(sample.value)
            elif sample.name == "trimtab_cycle_duration_seconds_sum":
                total = sample.value
    return count, total


def started_prometheus(
    count: int, directory: Path, prometheus: str, promtool: str
) -> tuple[PrometheusServer, int]:
    """A Prometheus in ``directory`` holding ``count`` services' series, from :data:`BEFORE`
    seconds ago to :data:`AHEAD` seconds ahead; returns it and the time its data starts."""
    server = PrometheusServer(prometheus, directory)
    start = int(time.time()) - BEFORE
    batching.START, batching.SAMPLES = start, (BEFORE + AHEAD) // batching.STEP + 1
    began = time.perf_counter()
    backfill(promtool, "\n".join(batching.openmetrics(count)) + "\n", server.storage)
    server.start()
    ready = time.perf_counter() - began
    print(f"{count} targets: backfilled and started Prometheus in {ready:.0f} s")
    return server, start


def command_line(doc: str, cycles: int) -> argparse.ArgumentParser:
    """The options of a bench that measures ``--cycles`` cycles for each ``--targets`` count
    (a bench may add its own)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[10000])
    parser.add_argument("--cycles", type=int, default=cycles, help="cycles (the first too)")
    return parser


def prometheus_tools() -> tuple[str, str]:
    """The paths of ``prometheus`` and ``promtool``; exits saying what to install without."""
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        raise SystemExit("needs prometheus and promtool (Debian package prometheus)")
    return prometheus, promtool


def run(measure: Callable[[int, int, str, str], None], *, cycles: int, doc: str) -> None:
    """The command line of a bench that runs ``measure(count, cycles, prometheus, promtool)``
    for each ``--targets`` count."""
    args = command_line(doc, cycles).parse_args()
    prometheus, promtool = prometheus_tools()
    for count in args.targets:
        measure(count, args.cycles, prometheus, promtool)


def measure(count: int, wanted: int, prometheus: str, promtool: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="trimtab-footprint-"))
    server = None
    try:
        server, _ = started_prometheus(count, workdir / "prometheus", prometheus, promtool)
        config = workdir / "config"
        (config / "routes").mkdir(parents=True)
        port = free_port()
        text = batching.SLO_YAML + "".join(ROLLOUT.format(i=i) for i in range(count))
        text += CONTROLLER.format(url=server.url, state=workdir / "state", port=port)
        (config / "fleet.yaml").write_text(text)
        metrics = f"http://127.0.0.1:{port}/metrics"
        trimtab = str(Path(sys.executable).parent / "trimtab")
        samples: list[float] = []
        with open(workdir / "out.log", "w") as out:
            began = time.perf_counter()
            process = subprocess.Popen([trimtab, "run", "-f", str(config)], stdout=out, stderr=out)
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set() and process.poll() is None:
                    try:
                        samples.append(status(process.pid)["VmRSS"])
                    except (OSError, KeyError):
                        return
                    stop.wait(0.2)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            seen: list[tuple[int, float]] = []
            # (cycles done, the controller's CPU seconds, Prometheus') at each poll that saw
            # a cycle end
            spent: list[tuple[int, float, float]] = []
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"trimtab run exited: see {workdir / 'out.log'}")
                try:
                    done = cycles(metrics)
                except httpx.HTTPError:
                    time.sleep(1)
                    continue
                if not seen or done[0] != seen[-1][0]:
                    seen.append(done)
                    spent.append(
                        (done[0], cpu_seconds(process.pid), cpu_seconds(server.process.pid))
                    )
                    if len(seen) == 1:
                        up = time.perf_counter() - began
                        print(f"  up and serving /metrics after {up:.1f} s (loaded and wired)")
                if done[0] >= wanted:
                    break
                time.sleep(SCRAPE_EVERY)
            took, used = time.perf_counter(), cpu_seconds(process.pid)
            size = len(httpx.get(metrics, timeout=60).content)
            scrape = time.perf_counter() - took
            scrape_cpu = cpu_seconds(process.pid) - used
            peak = status(process.pid)["VmHWM"]
            stop.set()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        if seen[0][0] != 0:
            seen.insert(0, (0, 0.0))
        # Per cycle, from the histogram's count and sum as polled (each poll sees at most a
        # cycle more: they start 30 s apart, and the poll comes every 5 s).
        durations = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(seen)]
        steady = durations[2:]
        print(f"  first cycle (every rollout starts) {durations[0]:.2f} s")
        if len(durations) > 1:
            print(f"  second cycle (every rollout records its first hold) {durations[1]:.2f} s")
        if steady:
            print(
                f"  steady cycles: median {statistics.median(steady):.2f} s "
                f"[{min(steady):.2f}–{max(steady):.2f}] over {len(steady)}"
            )
            # Their cost follows the windows: the clipped ones grow a cycle at a time, and
            # hold samples (one every 2 minutes) or not by where they fall.
            print("  each steady cycle, in order: " + " ".join(f"{d:.2f}" for d in steady) + " s")
        # CPU per steady cycle, from the first poll after the second cycle to the last poll
        # (a cycle starts every 30 s; in between, /metrics is scraped every 5 s).
        calm = [s for s in spent if s[0] >= 2]
        if len(calm) > 1 and calm[-1][0] > calm[0][0]:
            n = calm[-1][0] - calm[0][0]
            mine, theirs = calm[-1][1] - calm[0][1], calm[-1][2] - calm[0][2]
            print(
                f"  CPU per steady cycle over {n}: trimtab {mine / n:.2f} s (with its /metrics "
                f"scraped every {SCRAPE_EVERY:g} s), Prometheus {theirs / n:.2f} s"
            )
        print(
            f"  RSS: median {statistics.median(samples):.0f} MB while running, last "
            f"{samples[-1]:.0f} MB, peak (VmHWM) {peak:.0f} MB"
        )
        print(
            f"  one /metrics scrape {scrape:.2f} s ({scrape_cpu:.2f} s of trimtab's CPU), "
            f"{size / 1e6:.1f} MB"
        )
    finally:
        if server is not None:  # a run cut short leaves no Prometheus behind
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    run(measure, cycles=5, doc=__doc__)
