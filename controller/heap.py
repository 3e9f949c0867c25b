"""The controller's long-lived objects, kept out of the cyclic garbage collector's way.

CPython's collector walks every tracked object it may free. A controller steering 10,000
targets holds millions of objects that live as long as it does — configuration models, targets,
adapters — and a full collection walks them all: about half a second, due every cycle or so at
that scale, and 18 of them while the configuration loads. Loading makes no cyclic garbage, so
:func:`paused` turns the collector off meanwhile; :func:`settle` moves everything alive once the
controller is wired into the permanent generation (``gc.freeze``), which collections skip.

A cycle is paused too. At 10,000 targets it builds about a million objects that die when it
ends (measurements, verdicts, decisions); alive across the cycle's young collections, they were
promoted and set off 3–4 full collections per cycle, about 0.5 s of a 3 s cycle. What little
cyclic garbage a cycle leaves is collected after it, as the collector resumes.
None of this changes what is freed: only when the collector looks.

The C allocator is bounded too (:func:`bound_arenas`). glibc's malloc gives each thread that
allocates its own arena, up to eight per core, and memory freed in one is not reused by
another: with the cycle on the scheduler's thread, ``/metrics`` on the server's and the metric
source's workers, a controller at 10,000 targets peaked at 187 MB, and at 171 MB with two.
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["bound_arenas", "paused", "settle"]

_M_ARENA_MAX = -8  # glibc's <malloc.h>
ARENAS = 2


@contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside: loading, and each cycle (both make little or no cyclic
    garbage, and much that dies young)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def settle() -> None:
    """Collect once, then keep what is alive out of later collections (call once wired)."""
    gc.collect()
    gc.freeze()


def bound_arenas(most: int = ARENAS) -> bool:
    """Let glibc's malloc use at most ``most`` arenas, unless ``MALLOC_ARENA_MAX`` says how many
    already; call before the controller starts its threads. Returns whether the bound was set
    (not on a C library without ``mallopt``: macOS has none, musl's does nothing)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # the operator's setting, read by glibc at start
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, most))
