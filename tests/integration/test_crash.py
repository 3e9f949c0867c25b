"""The crash test (DESIGN.md section 10): a rollout killed with SIGKILL at random points, again
and again, resumes every time without a double step and ends where an uninterrupted run ends.

The driver (``crash_driver.py``) runs a deterministic rollout, 0 → 10 → 50 → 100, with the file
adapter, a file-backed state store and decision log, and a fake clock persisted as a cycle
number, so each restarted process continues the same timeline. It logs every weights the file
held; the test compares that history with the steps, the final state with an uninterrupted
run's, and verifies the decision log.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trimtab.controller.decisions import DecisionLog
from trimtab.controller.record import CRASH_ARTIFACTS, FindingKind
from trimtab.controller.state import StateStore

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).with_name("crash_driver.py")
MOST_KILLS = 80  # kills until promoted; about 30 are needed
STEPS = [0, 10, 50, 100]  # the canary's weight: initial, then the spec's steps
TARGET = "Rollout/shop"


def start(directory: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(DRIVER), str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(directory: Path) -> None:
    """Run the driver until the rollout is promoted, without killing it."""
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def history(directory: Path) -> list[int]:
    """The canary weights the file held, in order, repeats collapsed."""
    held = [STEPS[0]]
    log = directory / "writes.jsonl"
    for line in log.read_text().splitlines() if log.exists() else []:
        canary = json.loads(line)["weights"]["v2"]
        if canary != held[-1]:
            held.append(canary)
    return held


def outcome(directory: Path) -> dict[str, object]:
    state = StateStore(directory / "state").load(TARGET)
    records = list(DecisionLog(directory / "decisions.jsonl").records())
    return {
        "weights": json.loads((directory / "weights.json").read_text()),
        "phase": state.phase,
        "step": state.step,
        "intent": state.intent,
        "applied": dict(state.applied or {}),
        # A kill between recording a move and saving its intent leaves the record of a move
        # never made, and the restart records it again (same time, same weights): compare the
        # distinct moves. Their times may differ by a cycle: a cycle run again after a kill
        # measures at the time of its shift, so the hold counts from the shift itself.
        "moves": list(
            dict.fromkeys(
                (str(d.action), d.weights.desired["v2"])
                for d in records
                if d.action in ("advance", "promote")
            )
        ),
    }


def test_a_rollout_killed_at_random_points_resumes_without_a_double_step(tmp_path: Path) -> None:
    reference = tmp_path / "uninterrupted"
    reference.mkdir()
    finish(reference)
    assert history(reference) == STEPS

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    kills = 0
    stages: set[int] = set()  # the canary weights that kills interrupted
    deadline = time.monotonic() + 60
    while not (crashed / "done").exists() and kills < MOST_KILLS and time.monotonic() < deadline:
        process = start(crashed)
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0, 0.008))  # a cycle takes a few milliseconds
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=30)
        if process.returncode == -signal.SIGKILL:
            kills += 1
        else:
            assert process.returncode == 0, process.stderr.read() if process.stderr else ""
        # Whatever a kill leaves, the log shows at most a crash artifact, never tampering.
        log = DecisionLog(crashed / "decisions.jsonl")
        verdict = log.verify()
        # The head is written before the first record: a kill never leaves records without one.
        allowed = set(CRASH_ARTIFACTS) | {FindingKind.MISSING}
        assert verdict.kinds() <= allowed, (seed, verdict.findings)
        held = history(crashed)
        assert held == STEPS[: len(held)], (seed, held)
        stages.add(held[-1])
    assert kills >= 15, f"only {kills} kills landed (seed {seed})"
    assert {10, 50} <= stages, f"kills at canary weights {sorted(stages)} only (seed {seed})"
    if not (crashed / "done").exists():
        finish(crashed)

    assert history(crashed) == STEPS, f"seed {seed}"
    assert outcome(crashed) == outcome(reference), f"seed {seed}"
    log = DecisionLog(crashed / "decisions.jsonl")
    before = log.verify()
    assert set(before.kinds()) <= CRASH_ARTIFACTS, (seed, before.findings)
    log.repair()
    assert log.verify().ok, (seed, log.verify().findings)
