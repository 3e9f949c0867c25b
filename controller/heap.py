"""The controller's long-lived objects, kept out of the cyclic garbage collector's way.

CPython's collector walks every tracked object it may free. A controller steering 10,000
targets holds millions of objects that live as long as it does — configuration models, targets,
adapters — and a full collection walks them all: about half a second, due every cycle or so at
that scale, and 18 of them while the configuration loads. Loading makes no cyclic garbage, so
:func:`paused` turns the collector off meanwhile; :func:`settle` moves everything alive once the
controller is wired into the permanent generation (``gc.freeze``), which collections skip.
Neither changes what is freed: only when the collector looks.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused", "settle"]


@contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside (for bulk loading, which makes no cyclic garbage)."""
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
