"""A deterministic rollout driven to promotion, cycle after cycle, for ``test_crash.py``.

``python crash_driver.py DIR`` reconciles one Rollout with the file adapter on ``DIR/weights.json``,
a constant healthy metric source, a state store in ``DIR/state`` and a decision log in
``DIR/decisions.jsonl``, on a fake clock: cycle ``n`` runs at ``T0 + 30 s × n``. ``n`` lives in
``DIR/cycle`` (written temp + fsync + rename after the cycle), so a process killed mid-cycle is
followed by one that runs the same cycle again, at the same time, and the timeline goes on.

Every file state is logged to ``DIR/writes.jsonl`` (one fsync'd JSON line each): the weights the
file holds when a process starts (``start``), and the weights of every successful
``set_weights`` (``wrote``). A write whose ``wrote`` line a kill prevented is seen by the next
``start``, so the log holds every weights the file ever held, in order.

The process prints ``ready`` once set up (imports are slow; the test times its kill from here),
and exits 0 once the rollout is Promoted, after writing ``DIR/done``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trimtab.adapters.fake import ListMetricSource
from trimtab.adapters.file import FileAdapter
from trimtab.controller.decisions import DecisionLog
from trimtab.controller.reconcile import Reconciler, ReconcilerConfig
from trimtab.controller.state import StateStore
from trimtab.controller.targets import targets
from trimtab.slo import load_text
from trimtab.slo.ports import Verification, Weights
from trimtab.slo.routes import FileRoute

CONFIG = """
apiVersion: trimtab.dev/v1alpha1
kind: SLO
metadata: {name: errors}
spec:
  service: shop
  objective: 99.9
  backendLabel: version
  minEvents: 10
  indicator:
    errorRatio: {errors: 'req_total{code="500"}', total: req_total}
---
apiVersion: trimtab.dev/v1alpha1
kind: Rollout
metadata: {name: shop}
spec:
  slos: [{name: errors}]
  stable: v1
  canary: v2
  route: {file: {path: weights.json}}
  steps: [{weight: 10, hold: 6m}, {weight: 50, hold: 6m}, {weight: 100}]
  analysis: {interval: 30s, baseline: false}
  guardrails: {maxStep: 50, minInterval: 1m, maxShiftsPerHour: 12}
"""
T0 = datetime(2026, 1, 1, tzinfo=UTC)
INTERVAL = timedelta(seconds=30)
INITIAL = {"v1": 100, "v2": 0}
HEALTHY = 0.0001


def _append(path: Path, entry: dict[str, object]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, json.dumps(entry, sort_keys=True).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class LoggedAdapter:
    """The file adapter, with every successful write logged after it happened."""

    def __init__(self, inner: FileAdapter, log: Path) -> None:
        self.inner = inner
        self.log = log

    def get_weights(self) -> Weights:
        return self.inner.get_weights()

    def set_weights(self, weights: Weights) -> None:
        self.inner.set_weights(weights)
        _append(self.log, {"event": "wrote", "weights": dict(weights)})

    def verify(self, weights: Weights) -> Verification:
        return self.inner.verify(weights)


def main(directory: Path) -> int:
    config = load_text(CONFIG, "crash.yaml")
    target = targets(config)[0]
    weights_file = directory / "weights.json"
    writes = directory / "writes.jsonl"
    counter = directory / "cycle"
    if weights_file.exists():
        seen = json.loads(weights_file.read_text())
        _append(writes, {"event": "start", "weights": seen})
    adapter = LoggedAdapter(
        FileAdapter(FileRoute(path=str(weights_file)), ["v1", "v2"], initial=INITIAL), writes
    )
    states = StateStore(directory / "state")
    reconciler = Reconciler(
        ReconcilerConfig(
            source=ListMetricSource.constant({"v1": HEALTHY, "v2": HEALTHY}),
            adapters={target.key: adapter},
            states=states,
            log=DecisionLog(directory / "decisions.jsonl"),
            specs={target.key: config.rollouts["shop"].spec},
            sleep=lambda _: None,
        )
    )
    print("ready", flush=True)
    while True:
        cycle = int(counter.read_text()) if counter.exists() else 0
        state = states.load(target.key)
        if state.phase == "Promoted" and state.intent is None:  # promoted and applied
            _replace(directory / "done", f"{cycle}\n")
            return 0
        if cycle > 1000:
            print("no promotion after 1000 cycles", file=sys.stderr)
            return 1
        reconciler.cycle([target], T0 + cycle * INTERVAL)
        _replace(counter, f"{cycle + 1}\n")
        time.sleep(0.003)  # kills land at varied points of the cycles (a cycle takes ~1-2 ms)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
