"""Leader election: only the leader acts; other controllers stand by (DESIGN.md section 10).

:class:`LeaderElector` is the port; :class:`FileLeaderLock` is the local implementation, an
exclusive non-blocking ``flock`` on a file in ``stateDir``. The kernel releases a ``flock`` when
the holder's last descriptor closes, so a process that dies (even by SIGKILL) frees the lock at
once: no lease to expire, no stale pid to guess about. A ``coordination.k8s.io`` Lease elector
for clusters implements the same protocol.

The lock file is never deleted: a waiter holding a descriptor on an unlinked file would lock a
file nobody else can see, and two leaders would follow. If someone deletes or replaces it
anyway, :attr:`FileLeaderLock.is_leader` notices (the path no longer names the locked file) and
reports the leadership as lost.

``flock`` is per open file description: the descriptor is not inherited by child processes
(Python opens it non-inheritable), but a bare ``fork()`` without ``exec`` would share the lock.
Locks on network file systems (NFS) are not reliable; keep ``stateDir`` on a local disk.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

from trimtab.slo.errors import TrimtabError

__all__ = ["FileLeaderLock", "LeaderElector", "NotLeaderError"]


class NotLeaderError(TrimtabError):
    """Another controller holds the leadership; the message names it when it can."""


@runtime_checkable
class LeaderElector(Protocol):
    """Decides which one of several controllers acts."""

    def try_acquire(self) -> bool:
        """Become the leader if nobody is; never blocks. True while this process leads."""
        ...

    def release(self) -> None:
        """Stop leading (idempotent)."""
        ...

    @property
    def is_leader(self) -> bool:
        """Whether this process leads now (a lost lease or lock reads False)."""
        ...


class FileLeaderLock:
    """Leadership as an exclusive ``flock`` on ``path``, held for as long as the process wants.

    The file's content — ``pid=123 host=node-1`` — is for humans (:meth:`holder`); the lock is
    what counts. Thread-safe. As a context manager it acquires or raises
    :class:`NotLeaderError`, and releases on exit.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True if this process holds it (now or already)."""
        with self._lock:
            if self._fd is not None:
                if self._still_ours(self._fd):
                    return True
                self._close()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                raise
            if not self._still_ours(fd):  # replaced between open and flock: try again later
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid={os.getpid()} host={socket.gethostname()}\n".encode(), 0)
            os.fsync(fd)
            self._fd = fd
            return True

    def release(self) -> None:
        """Give up leadership; another process may take it at once. Idempotent."""
        with self._lock:
            if self._fd is not None:
                # Empty the file first so that no-one reads a departed leader in it.
                if self._still_ours(self._fd):
                    os.ftruncate(self._fd, 0)
                self._close()

    @property
    def is_leader(self) -> bool:
        """True while the lock is held and ``path`` still names the locked file."""
        with self._lock:
            if self._fd is None:
                return False
            if self._still_ours(self._fd):
                return True
            self._close()  # the file was deleted or replaced: the lock guards nothing now
            return False

    def holder(self) -> str | None:
        """Who holds the lock, as written in the file (``pid=… host=…``), or ``None``."""
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return text or None

    def __enter__(self) -> FileLeaderLock:
        if not self.try_acquire():
            raise NotLeaderError(f"{self.path}: held by {self.holder() or 'another process'}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self._close()

    def _still_ours(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock
