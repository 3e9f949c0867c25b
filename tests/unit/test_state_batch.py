"""Saving many states at once, and reading states that did not change without parsing them."""

from __future__ import annotations

from pathlib import Path

import pytest
from trimtab.controller.state import StateConflict, StateError, StateStore, TargetState

TARGETS = [f"Rollout/svc{i}" for i in range(40)]  # more than one writer thread's share


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


def test_a_batch_saves_every_state_with_its_version_raised(store: StateStore) -> None:
    saved = store.save_all([(t, TargetState(step=i)) for i, t in enumerate(TARGETS)])
    assert [s.version for s in saved] == [1] * len(TARGETS)
    again = StateStore(store.directory)  # another process: nothing remembered
    assert [again.load(t) for t in TARGETS] == saved
    saved = store.save_all([(t, s.with_(failures=1)) for t, s in zip(TARGETS, saved, strict=True)])
    assert {s.version for s in saved} == {2}
    assert sorted(p.name for p in store.directory.iterdir() if p.name.startswith(".")) == [".lock"]
    assert store.targets() == sorted(TARGETS)


def test_a_conflict_anywhere_in_a_batch_writes_nothing(store: StateStore) -> None:
    saved = store.save_all([(t, TargetState()) for t in TARGETS])
    someone = StateStore(store.directory)
    someone.save(TARGETS[25], saved[25].with_(step=3))
    someone.save(TARGETS[33], saved[33].with_(step=2))
    before = {t: store.path(t).read_bytes() for t in TARGETS}
    with pytest.raises(StateConflict, match=r"svc25.*\(and 1 more\)") as caught:
        store.save_all([(t, s.with_(step=1)) for t, s in zip(TARGETS, saved, strict=True)])
    assert caught.value.targets == (TARGETS[25], TARGETS[33])  # every one, to set them aside
    assert {t: store.path(t).read_bytes() for t in TARGETS} == before


def test_a_batch_names_a_target_once(store: StateStore) -> None:
    with pytest.raises(ValueError, match="twice"):
        store.save_all([(TARGETS[0], TargetState()), (TARGETS[0], TargetState(step=1))])


def test_a_file_that_cannot_be_written_fails_the_batch_naming_it(store: StateStore) -> None:
    store.directory.mkdir(parents=True)
    blocked = store.path(TARGETS[7])
    (blocked.parent / f".{blocked.name}.tmp").mkdir()  # the temp file cannot be opened
    with pytest.raises(StateError, match="svc7"):
        store.save_all([(t, TargetState(step=2)) for t in TARGETS])
    assert store.load(TARGETS[7]) == TargetState()  # never saved
    assert {store.load(t).step for t in TARGETS} == {-1, 2}  # each old or new, whole


def test_a_state_another_writer_changed_is_read_again(store: StateStore) -> None:
    mine = store.save(TARGETS[0], TargetState(step=0))
    assert store.load(TARGETS[0]) == mine
    theirs = StateStore(store.directory).save(TARGETS[0], mine.with_(step=1))
    assert store.load(TARGETS[0]) == theirs
    assert store.save(TARGETS[0], theirs.with_(step=2)).version == 3


def test_a_remembered_state_whose_file_was_damaged_is_not_trusted(store: StateStore) -> None:
    store.save(TARGETS[0], TargetState(step=1))
    store.load(TARGETS[0])
    path = store.path(TARGETS[0])
    path.write_bytes(path.read_bytes().replace(b'"step": 1', b'"step": "one"'))
    with pytest.raises(StateError, match="corrupt"):
        store.load(TARGETS[0])
