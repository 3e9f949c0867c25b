"""The controller's memory policy: the collector paused while loading, long-lived objects frozen,
the C allocator's arenas bounded."""

from __future__ import annotations

import gc
import platform
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


def test_arenas_are_bounded_on_glibc_unless_the_operator_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert heap.bound_arenas() is (platform.libc_ver()[0] == "glibc")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert heap.bound_arenas() is False
