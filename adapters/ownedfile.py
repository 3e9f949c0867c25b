"""A file an adapter owns: read with care, replaced atomically, failures sorted by cause.

The ``file``, ``envoy`` and ``nginx`` adapters each own one file (weights JSON, an RDS file, an
upstream include) and need the same three things of it:

- **Reading** (:meth:`OwnedFile.read_bytes`): never through a symbolic link, only a regular
  file, at most ``max_bytes`` — a file that breaks these is not ours, and is reported rather
  than followed. A missing file is ``None``: what it means is the adapter's to say.
  :meth:`OwnedFile.stamp` tells, from one ``lstat``, that the file is as it was when last read
  (git's "racily clean" rule keeps a change within a timestamp's granularity from hiding).
- **Replacing** (:meth:`OwnedFile.write_bytes`): a hidden temporary file in the same directory
  (never matched by a ``*.conf`` or ``*.yaml`` glob), fsync'd, renamed over the path, the
  directory fsync'd: readers see the old file or the new one, and a crash leaves one of the two.
  The file keeps its permission bits; a new one gets ``0644`` less the umask. A symbolic link at
  the path, or a missing directory, is refused.
- **Failing by cause** (:meth:`OwnedFile.fail`): permissions, a read-only file system, a missing
  directory and the like will not pass by retrying — :class:`PermanentTrafficError`; other OS
  errors (disk full, I/O errors) may — :class:`TransientTrafficError`.

The one module adapters share (an exception to "adapters never import each other" in the
import-linter contracts): it knows no proxy. The controller's state store and decision log use
its :func:`fsync_directory` too.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import time
from pathlib import Path
from typing import NoReturn

from trimtab.slo.traffic import PermanentTrafficError, TransientTrafficError

__all__ = ["OwnedFile", "fsync_directory"]

NEW_FILE_MODE = 0o644
SETTLED_NS = 2_000_000_000  # a file changed this recently may change again, unseen by its times
PERMANENT_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EXDEV,
        errno.ENXIO,
    }
)


def fsync_directory(directory: Path) -> None:
    """Make a rename (or a new entry) in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OwnedFile:
    """The file at ``path``, owned by ``owner`` (``"the envoy adapter"``), which calls it
    ``what`` (``"the RDS file"``) in messages.

    ``too_big`` ends the message for a file over ``max_bytes``; ``no_directory`` the message for
    a missing directory (who creates what).
    """

    __slots__ = ("_where", "max_bytes", "no_directory", "owner", "too_big", "what")

    def __init__(
        self,
        path: Path | str,
        *,
        owner: str,
        what: str,
        max_bytes: int,
        too_big: str = "",
        no_directory: str = "",
    ) -> None:
        # The text, not a Path: a controller owns a file per target, and at 10,000 targets
        # their Paths took 4 MB.
        self._where = os.fspath(path)
        self.owner = owner
        self.what = what
        self.max_bytes = max_bytes
        self.too_big = too_big
        self.no_directory = no_directory

    @property
    def path(self) -> Path:
        return Path(self._where)

    def read_bytes(self) -> bytes | None:
        """The file's bytes, or ``None`` when it does not exist."""
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self._where, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP or self.path.is_symlink():
                raise self._symlink() from None
            self.fail("cannot read", exc)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PermanentTrafficError(f"{self.path}: is not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as stream:
                raw = stream.read(self.max_bytes + 1)
        except OSError as exc:
            self.fail("cannot read", exc)
        finally:
            os.close(fd)
        if len(raw) > self.max_bytes:
            raise PermanentTrafficError(
                f"{self.path}: larger than {self.max_bytes} bytes{self.too_big}"
            )
        return raw

    def stamp(self) -> int | None:
        """A number that changes whenever the file does, taken before reading it; ``None`` when
        it cannot tell (missing, not a regular file, or changed less than 2 s ago).

        A write gives the file a new inode (a rename) or a new modification and change time,
        but times are coarse (a few milliseconds on some file systems): two writes in one tick
        with the same size look alike. So, as git does for its index, a file whose last change
        is that recent has no stamp, and is read every time until it settles. The change time
        cannot be set by hand. The stamp is a hash of those fields (8 bytes per file kept):
        two states of one file share a stamp with odds of about one in 2**61.
        """
        try:
            seen = os.lstat(self._where)
        except OSError:
            return None
        if not stat.S_ISREG(seen.st_mode):
            return None
        if time.time_ns() - max(seen.st_mtime_ns, seen.st_ctime_ns) < SETTLED_NS:
            return None
        return hash((seen.st_dev, seen.st_ino, seen.st_size, seen.st_mtime_ns, seen.st_ctime_ns))

    def read_text(self) -> str | None:
        """:meth:`read_bytes` as UTF-8 text (``None`` when missing)."""
        raw = self.read_bytes()
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PermanentTrafficError(f"{self.path}: not UTF-8 text") from None

    def directory(self) -> Path:
        """The directory that holds the file; :class:`PermanentTrafficError` when missing."""
        directory = self.path.parent
        if not directory.is_dir():
            raise PermanentTrafficError(
                f"{self.path}: the directory {directory} does not exist{self.no_directory}"
            )
        return directory

    def write_bytes(self, data: bytes) -> None:
        """Replace the file with ``data`` atomically (see the module docstring)."""
        directory = self.directory()
        if self.path.is_symlink():
            raise self._symlink()
        try:
            mode: int | None = stat.S_IMODE(os.stat(self.path).st_mode)
        except FileNotFoundError:
            mode = None
        except OSError as exc:
            self.fail("cannot write", exc)
        temp = directory / f".{self.path.name}.{secrets.token_hex(6)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(temp, flags, NEW_FILE_MODE)
        except OSError as exc:
            self.fail("cannot write", exc)
        try:
            try:
                with os.fdopen(fd, "wb") as stream:
                    stream.write(data)
                    stream.flush()
                    if mode is not None:
                        os.fchmod(stream.fileno(), mode)
                    os.fsync(stream.fileno())
                os.replace(temp, self.path)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            fsync_directory(directory)
        except OSError as exc:
            self.fail("cannot write", exc)

    def fail(self, doing: str, exc: OSError) -> NoReturn:
        """Raise the error ``exc`` means: permanent or transient by its errno."""
        reason = exc.strerror or type(exc).__name__
        where = exc.filename if isinstance(exc.filename, str) else str(self.path)
        message = f"{self.path}: {doing} {self.what}: {reason}"
        if where != str(self.path):
            message += f" ({where})"
        if exc.errno in PERMANENT_ERRNOS:
            raise PermanentTrafficError(message) from exc
        raise TransientTrafficError(message) from exc

    def _symlink(self) -> PermanentTrafficError:
        return PermanentTrafficError(
            f"{self.path}: is a symbolic link; {self.owner} writes only a regular file it owns"
        )
