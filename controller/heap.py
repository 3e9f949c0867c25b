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
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused", "settle"]


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
