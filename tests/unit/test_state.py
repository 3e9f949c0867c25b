"""Per-target state: round trips, crash-safe saves, corrupt files and hostile target keys."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from trimtab.controller.state import (
    BaselineMemo,
    Intent,
    Override,
    StateConflict,
    StateError,
    StateStore,
    TargetState,
)
from trimtab.slo.baseline import BaselineTrack

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
TARGET = "Rollout/checkout"


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


def busy_state() -> TargetState:
    """A state with every field set away from its default."""
    return TargetState(
        phase="Paused",
        step=2,
        applied={"v1": 75, "v2": 25},
        intent=Intent({"v1": 50, "v2": 50}, "20250101T120000.000Z-00c0ffee", "advance", T0, 3),
        last_shift_at=T0 - timedelta(minutes=5),
        shift_times=(T0 - timedelta(minutes=40), T0 - timedelta(minutes=5)),
        step_started_at=T0 - timedelta(minutes=5),
        healthy_since={"v2": T0 - timedelta(minutes=4)},
        failures=1,
        failure_bad={"checkout-errors": 4.5},
        failure_at=T0 - timedelta(seconds=30),
        baseline=BaselineMemo(
            BaselineTrack((3, 900, 4, 8100), (1.5, -0.25), 2), T0 - timedelta(minutes=5), T0
        ),
        no_data_since=T0 - timedelta(seconds=30),
        paused_at=T0,
        paused_reason="paused by alice",
        drained={"v1": 0},
        actor_override=Override("pause", "alice", T0),
        version=0,
    )


def test_a_target_never_seen_starts_before_its_first_step(store: StateStore) -> None:
    assert store.load(TARGET) == TargetState(phase="Pending", step=-1)
    assert store.load("Balance/zones").phase == "Balancing"
    assert store.targets() == []


def test_state_round_trips_through_json_and_the_store(store: StateStore) -> None:
    state = busy_state()
    assert TargetState.from_json(json.loads(json.dumps(state.to_json()))) == state
    saved = store.save(TARGET, state)
    assert saved == state.with_(version=1)
    assert store.load(TARGET) == saved
    assert store.targets() == [TARGET]


def test_every_field_survives_the_round_trip() -> None:
    state, default = busy_state(), TargetState()
    changed = [k for k in state.to_json() if state.to_json()[k] != default.to_json()[k]]
    assert set(changed) == set(state.to_json()) - {"version"}


@pytest.mark.parametrize(
    "track",
    [
        {"counts": [1, 2, 3], "logTerms": [], "started": 0},
        {"counts": [1, 2, 3, -4], "logTerms": [], "started": 0},
        {"counts": [1, 2, 3, 4], "logTerms": [0.5], "started": 0},
        {"counts": [1, 2, 3, 4], "logTerms": [], "started": 1},
        {"counts": [1, 2, 3, 4], "logTerms": ["x"], "started": 1},
        {"counts": [1, 2, 3, 4], "logTerms": [float("nan")], "started": 1},
        "a track",
    ],
)
def test_a_corrupt_baseline_track_is_a_corrupt_state(store: StateStore, track: object) -> None:
    saved = store.save(TARGET, busy_state())
    data = json.loads(store.path(TARGET).read_text())
    data["state"]["baseline"]["track"] = track
    store.path(TARGET).write_text(json.dumps(data))
    with pytest.raises(StateError, match="corrupt state"):
        store.load(TARGET)
    assert saved.baseline is not None


def test_json_keys_are_camel_case() -> None:
    keys = set(TargetState().to_json())
    assert {"lastShiftAt", "shiftTimes", "healthySince", "actorOverride"} <= keys
    assert not any("_" in k for k in keys)


def test_every_save_raises_the_version_and_stale_writers_are_refused(store: StateStore) -> None:
    first = store.save(TARGET, TargetState())
    second = store.save(TARGET, first.with_(step=0))
    assert (first.version, second.version) == (1, 2)
    with pytest.raises(StateConflict, match="version 2 on disk"):
        store.save(TARGET, first.with_(step=1))  # written from a stale read
    assert store.load(TARGET).step == 0
    assert store.save(TARGET, first.with_(step=1), check=False).version == 2


def test_states_are_validated() -> None:
    with pytest.raises(ValueError, match="phase"):
        TargetState(phase="Running")
    with pytest.raises(ValueError, match="naive"):
        TargetState(paused_at=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="at most 100"):
        TargetState(drained={"zone-a": 150})
    with pytest.raises(ValueError, match="non-negative"):
        TargetState(applied={"v1": -5})
    with pytest.raises(ValueError, match="step"):
        TargetState(step=-2)
    with pytest.raises(ValueError, match="unknown keys: token"):
        TargetState.from_json({"token": "s3cret"})


def test_shifts_older_than_the_window_are_dropped() -> None:
    state = TargetState()
    for minutes in (0, 20, 50, 70):
        state = state.with_shift(T0 + timedelta(minutes=minutes))
    assert state.last_shift_at == T0 + timedelta(minutes=70)
    assert state.shift_times == tuple(T0 + timedelta(minutes=m) for m in (20, 50, 70))
    assert state.shifts_within(T0 + timedelta(minutes=75)) == 3
    assert state.shifts_within(T0 + timedelta(minutes=115)) == 1


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"\x00\x00\x00", b"[]", b'{"format": 1, "target": "Rollout/checkout"}',
     b'{"format": 1, "target": "Rollout/other", "state": {}}',
     b'{"format": 1, "target": "Rollout/checkout", "state": {"phase": "Running"}}'],
    ids=["empty", "cut", "zeros", "list", "no-state", "other-target", "bad-phase"],
)  # fmt: skip
def test_a_corrupt_file_raises_naming_it_and_is_never_reset(
    store: StateStore, content: bytes
) -> None:
    path = store.path(TARGET)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(StateError, match=str(path)):
        store.load(TARGET)
    with pytest.raises(StateError, match="corrupt"):
        store.save(TARGET, TargetState())
    assert path.read_bytes() == content


@pytest.mark.parametrize(
    "target",
    ["../etc/passwd", "Rollout/../../etc", "Rollout/a/b", "Rollout/..", "Deployment/checkout",
     "Rollout/Checkout", "Rollout/", "/Rollout/checkout", "Rollout/checkout\n", "Rollout\\x",
     "Rollout/" + "a" * 64],
)  # fmt: skip
def test_target_keys_cannot_escape_the_state_directory(store: StateStore, target: str) -> None:
    with pytest.raises(ValueError, match="invalid target"):
        store.path(target)
    with pytest.raises(ValueError, match="invalid target"):
        store.save(target, TargetState())


def test_target_keys_map_to_plain_file_names(store: StateStore) -> None:
    assert store.path("Rollout/checkout").name == "Rollout.checkout.json"
    assert store.path("Balance/zone-a-2").parent == store.directory


def next_state(state: TargetState) -> TargetState:
    i = state.step + 1
    return state.with_(
        step=i,
        failures=i % 7,
        applied={"v1": 100 - i % 101, "v2": i % 101},
        paused_reason="x" * (i * 997 % 40_000),  # some saves span many pages
    )


def consistent(state: TargetState) -> bool:
    """Whether ``state`` is one the saver wrote whole (not a mix of two, not empty)."""
    return state.version == state.step + 1 and state == next_state(
        state.with_(step=state.step - 1)
    ).with_(version=state.version)


def saver(directory: Path) -> tuple[int, int]:
    """Fork a process that saves states forever and reports each saved step on a pipe.
    (A fork, not an exec: it shares the imports, so killing it 30 times stays fast.)"""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            store = StateStore(directory)
            state = store.load(TARGET)
            while True:
                state = store.save(TARGET, next_state(state))
                os.write(write, f"{state.step}\n".encode())
        finally:
            os._exit(1)
    os.close(write)
    return pid, read


def test_a_process_killed_mid_save_leaves_the_old_or_the_new_state(store: StateStore) -> None:
    rng = random.Random(20250101)
    store.save(TARGET, next_state(TargetState()))
    for _ in range(30):
        pid, pipe = saver(store.directory)
        with os.fdopen(pipe, "rb") as progress:
            progress.readline()  # it is saving
            time.sleep(rng.uniform(0, 0.03))
            os.kill(pid, signal.SIGKILL)
            printed = [int(n) for n in progress.read().split()]
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status)
        assert os.WTERMSIG(status) == signal.SIGKILL
        state = store.load(TARGET)
        assert consistent(state), f"a torn state at step {state.step}"
        if printed:  # the last save reported done, or the one after it (saved, not yet printed)
            assert state.step in (printed[-1], printed[-1] + 1)
    assert store.load(TARGET).step > 30
    assert store.targets() == [TARGET]  # temp files are not states


def test_saves_leave_no_temp_file_behind(store: StateStore) -> None:
    state = TargetState()
    for step in range(5):
        state = store.save(TARGET, state.with_(step=step))
    names = sorted(p.name for p in store.directory.iterdir())
    assert names == [".lock", "Rollout.checkout.json"]


def test_the_state_file_is_readable_json(store: StateStore) -> None:
    store.save(TARGET, busy_state())
    document: dict[str, Any] = json.loads(store.path(TARGET).read_text())
    assert document["format"] == 1
    assert document["target"] == TARGET
    assert document["state"]["intent"]["decisionId"] == "20250101T120000.000Z-00c0ffee"
