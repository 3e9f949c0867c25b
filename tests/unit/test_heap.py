"""The controller's garbage-collector policy: paused while loading, long-lived objects frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from trimtab.controller import heap


@pytest.fixture(autouse=True)
def _collector_as_it_was() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_paused_inside_and_restored_after_even_on_error() -> None:
    gc.enable()
    with heap.paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), heap.paused():
        raise RuntimeError("a bad file")
    assert gc.isenabled()


def test_a_collector_turned_off_before_stays_off() -> None:
    gc.disable()
    with heap.paused():
        pass
    assert not gc.isenabled()


def test_settling_freezes_what_is_alive() -> None:
    gc.unfreeze()
    kept = [[] for _ in range(10)]
    heap.settle()
    assert gc.get_freeze_count() >= len(kept)
