"""How the long-running commands stop: SIGTERM — what a container runtime, systemd or
Kubernetes sends — is taken like Ctrl-C, so ``trimtab run`` and ``trimtab demo`` leave the way an
interrupted one does (the leader lock released, children stopped, the cycle under way finished)
instead of dying where they stand."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["interrupt_on_sigterm"]


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` in the main thread. Elsewhere
    (signals are the main thread's) it changes nothing."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
