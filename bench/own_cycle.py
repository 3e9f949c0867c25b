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
four minutes at 10,000 targets, not ten.

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

With ``--replay``, the same cycles run a second time with the controller on its own: DESIGN.md
section 12 asks for a cycle under 2 s from *one controller on 2 cores*, and here Prometheus
shares those 2 cores, evaluating its queries while the controller decodes the answers (each
slows the other). So the first run notes each cycle's queries and, once the cycle is timed, asks
Prometheus for them again and keeps the answers. Then a new process (a fresh heap, as
``trimtab run`` starts with) runs the cycles again, from new state files, against a small HTTP
server in a process of its own that answers each query with the answer Prometheus gave: the
same decisions, the same queries and bodies over real HTTP (uncompressed: Prometheus gzips,
which costs the controller about 0.01 s a cycle to undo), and nothing else working on the
machine. It prints the same table, with the answering server's CPU beside the controller's.

This VM's speed drifts: the same recorded cycle took 2.0 s of CPU at one moment and 2.4-3.2 s
ten minutes later. So before each cycle ``bench/cycle.py``'s reference loop (2 million additions)
is timed, the ``loop`` column, and the summaries give the controller's CPU in loops too: that
figure compares across runs and moments where seconds do not.

    .venv/bin/python bench/own_cycle.py --targets 10000 --cycles 16            # ~4 minutes
    .venv/bin/python bench/own_cycle.py --targets 10000 --cycles 16 --replay   # ~7 minutes

Never run as a test: it prints figures and asserts nothing of them.
"""

from __future__ import annotations

import argparse
import http.server
import multiprocessing
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import batching
import footprint
import httpx
from cycle import reference
from prometheus_client import CollectorRegistry
from trimtab.adapters.prometheus import PrometheusSource
from trimtab.controller import heap
from trimtab.controller.telemetry import Telemetry
from trimtab.controller.wiring import wire
from trimtab.slo import load_text, models

INTERVAL = 30.0  # the Rollouts' analysis interval (footprint.ROLLOUT)
MID_STEP = 11  # the first cycle whose clipped 30m windows are longer than 5m

Answers = dict[tuple[str, str], tuple[int, bytes]]  # (query, time) -> (HTTP status, body)
_FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept-Encoding": "identity"}


class _Noting(httpx.BaseTransport):
    """HTTP as usual, noting each request's form (its query and time) on the way."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.forms: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.forms.append(request.content)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()

    def keep(self, answers: Answers, asking: httpx.Client) -> None:
        """Ask again for the queries noted since the last call, keeping each new answer (after
        a cycle is timed)."""
        for form in self.forms:
            fields = parse_qs(form.decode())
            key = (fields["query"][0], fields["time"][0])
            if key not in answers:
                sent = asking.post("/api/v1/query", content=form, headers=_FORM)
                answers[key] = (sent.status_code, sent.content)
        self.forms.clear()


def measure(count: int, cycles: int, prometheus: str, promtool: str, replay: bool) -> None:
    """The cycles against a real Prometheus; with ``replay``, again with the controller alone."""
    workdir = Path(tempfile.mkdtemp(prefix="trimtab-own-cycle-"))
    server = None
    try:
        server, start = footprint.started_prometheus(
            count, workdir / "prometheus", prometheus, promtool
        )
        noting = _Noting() if replay else None
        answers: Answers = {}
        print("  with Prometheus on the same 2 cores")
        with httpx.Client(base_url=server.url, timeout=60) as asking:
            _run(
                count,
                cycles,
                workdir / "live",
                server.url,
                start,
                server.process.pid,
                "Prometheus CPU",
                noting,
                None if noting is None else lambda: noting.keep(answers, asking),
            )
        server.stop()
        if replay:
            stored = workdir / "answers.pickle"
            stored.write_bytes(pickle.dumps(answers, protocol=pickle.HIGHEST_PROTOCOL))
            del answers
            command = [sys.executable, __file__, "--answers", str(stored), "--start", str(start)]
            command += ["--targets", str(count), "--cycles", str(cycles)]
            subprocess.run(command, check=True)
    finally:
        if server is not None:  # a run cut short leaves no Prometheus behind
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def replayed(count: int, cycles: int, stored: Path, start: int) -> None:
    """The cycles again, in this new process, against the answers kept in ``stored``."""
    port = footprint.free_port()
    answering = multiprocessing.get_context("fork").Process(
        target=_answer, args=(stored, port), daemon=True
    )
    answering.start()  # before the fleet is loaded: the server's process holds only answers
    workdir = Path(tempfile.mkdtemp(prefix="trimtab-own-cycle-replay-"))
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(url, answering)
        print("  alone: the answers Prometheus gave, from a server in a process of its own")
        assert answering.pid is not None
        _run(count, cycles, workdir, url, start, answering.pid, "server CPU", None, None)
    finally:
        answering.terminate()
        answering.join()
        shutil.rmtree(workdir, ignore_errors=True)


def _run(
    count: int,
    cycles: int,
    workdir: Path,
    url: str,
    start: int,
    other: int,
    other_name: str,
    transport: httpx.BaseTransport | None,
    after_cycle: Callable[[], None] | None,
) -> None:
    """Wire the fleet as ``trimtab run`` does and time ``cycles`` cycles, printing each, with
    the CPU of process ``other`` (the source's) beside the controller's."""
    (workdir / "routes").mkdir(parents=True)
    fleet = batching.SLO_YAML + "".join(footprint.ROLLOUT.format(i=i) for i in range(count))
    with heap.paused():
        config = load_text(fleet, str(workdir / "fleet.yaml"))
    del fleet
    source = PrometheusSource(models.PrometheusSource(url=url, timeout=60), transport=transport)
    wiring = wire(config, source, directory=workdir / "state", dry_run=False)
    telemetry = Telemetry(CollectorRegistry())
    telemetry.leading = True
    reconciler = telemetry.instrument(wiring.reconciler)
    heap.settle()
    heap.bound_arenas()

    shift = datetime.fromtimestamp(start + footprint.BEFORE, UTC)
    rows: list[tuple[int, float, float, float, int, float]] = []
    print(f"  cycle  since the shift  trimtab CPU  {other_name:>14}  wall     queries  loop")
    for i in range(cycles):
        now = shift + timedelta(seconds=INTERVAL * i)
        loop = statistics.median(reference() for _ in range(3))  # the machine's speed now
        sent, theirs = source.queries_sent, footprint.cpu_seconds(other)
        mine, wall = time.process_time(), time.perf_counter()
        with heap.paused():
            telemetry.follow_cycle(lambda at=now: reconciler.stream(wiring.targets, at), _drop)
        row = (
            i,
            time.process_time() - mine,
            footprint.cpu_seconds(other) - theirs,
            time.perf_counter() - wall,
            source.queries_sent - sent,
            loop,
        )
        rows.append(row)
        print(
            f"  {i:5d}  {INTERVAL * i:13.0f} s  {row[1]:9.2f} s  {row[2]:12.2f} s  "
            f"{row[3]:5.2f} s  {row[4]:7d}  {loop * 1000:3.0f} ms",
            flush=True,
        )
        if after_cycle is not None:
            after_cycle()
    for label, chosen in (
        ("steady (from cycle 2)", rows[2:]),
        (f"mid-step (from cycle {MID_STEP})", rows[MID_STEP:]),
    ):
        if chosen:
            print(
                f"  {label}, median of {len(chosen)}: trimtab CPU "
                f"{_median(chosen, 1)}, {other_name} {_median(chosen, 2)}, wall "
                f"{_median(chosen, 3)}; trimtab CPU in reference loops "
                f"{statistics.median(row[1] / row[5] for row in chosen):.1f} (loop "
                f"{_median(chosen, 5, 'ms')})"
            )
    source.close()


def _answer(stored: Path, port: int) -> None:
    """Serve ``POST /api/v1/query`` on ``port`` from the answers in ``stored`` (a query not
    kept answers 404, which the controller reports as a failed query)."""
    answers: Answers = pickle.loads(stored.read_bytes())

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Prometheus does

        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            key = (form.get("query", [""])[0], form.get("time", [""])[0])
            status, body = answers.get(key, (404, b'{"status":"error","error":"not kept"}'))
            if status == 404:
                print(f"not kept: {key[0][:80]} at {key[1]}", file=sys.stderr, flush=True)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: one line per query would be most of the output."""

    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _wait_for(url: str, answering: multiprocessing.process.BaseProcess) -> None:
    for _ in range(600):  # the server loads some 200 MB of answers first
        if not answering.is_alive():
            raise SystemExit("the answering server did not start")
        try:
            httpx.get(url, timeout=1)  # any answer (501: no GET) says it listens
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the answering server did not answer within a minute")


def _drop(decision: object) -> None:
    """Each decision, let go of (``trimtab run`` prints the moves)."""


def _median(
    rows: list[tuple[int, float, float, float, int, float]], column: int, unit: str = "s"
) -> str:
    scale = 1000 if unit == "ms" else 1
    values = [row[column] * scale for row in rows]
    digits = 0 if unit == "ms" else 2
    return (
        f"{statistics.median(values):.{digits}f} {unit} "
        f"[{min(values):.{digits}f}–{max(values):.{digits}f}]"
    )


def main() -> None:
    parser = footprint.command_line(__doc__ or "", cycles=16)
    parser.add_argument(
        "--replay", action="store_true", help="then run the cycles again, the controller alone"
    )
    parser.add_argument("--answers", type=Path, help=argparse.SUPPRESS)  # the replay's process
    parser.add_argument("--start", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.answers is not None:
        replayed(args.targets[0], args.cycles, args.answers, args.start)
        return
    prometheus, promtool = footprint.prometheus_tools()
    for count in args.targets:
        measure(count, args.cycles, prometheus, promtool, args.replay)


if __name__ == "__main__":
    main()
