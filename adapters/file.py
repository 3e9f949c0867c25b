"""The ``file`` traffic adapter: weights as a small JSON file, for GitOps pipelines and tools.

:class:`FileAdapter` implements :class:`~trimtab.slo.ports.TrafficAdapter` over one file it owns
(``route: {file: {path: weights.json}}``)::

    {
      "v1": 95,
      "v2": 5
    }

What a caller may rely on:

- **Stable text.** Keys sorted, two-space indent, one backend per line, a trailing newline: the
  same weights always give the same bytes, so a GitOps diff shows exactly the weights that
  moved. Setting the weights the file already holds writes nothing (no spurious change events
  for watchers or commits).
- **Atomic replacement.** The new text goes to a temporary file in the same directory, is
  flushed and fsync'd, renamed over the path (``os.replace``) and the directory is fsync'd: a
  reader sees the old file or the new one, never a partial one, and a crash leaves one of the
  two. The file keeps its permission bits; a new one gets ``0644`` less the umask.
- **Validation first.** :meth:`FileAdapter.set_weights` raises
  :class:`~trimtab.slo.traffic.WeightsError` for weights that are not integer percents summing
  to 100 over exactly the route's backends, and then nothing is written.
- **A file a person broke is reported, not repaired.** Invalid JSON, a value that is not an
  integer percent, a missing or unknown backend, a symlink or something other than a regular
  file at the path: :meth:`~FileAdapter.get_weights` and :meth:`~FileAdapter.verify` raise
  :class:`~trimtab.slo.traffic.PermanentTrafficError` naming the path, and the controller holds
  and alerts. trimtab overwrites the file only when it next sets weights.
- **A missing file.** Before the first write there are no weights. With ``initial`` weights,
  :meth:`~FileAdapter.get_weights` writes them (the route's starting point, so a tool reading
  the file has weights even while the controller holds at nominal) and returns them; with
  ``create=False`` it returns them without writing (dry runs change nothing). Without
  ``initial`` it raises :class:`~trimtab.slo.traffic.PermanentTrafficError`: a person must say
  where traffic starts. :meth:`~FileAdapter.verify` never writes: a missing file is PENDING.
- **Errors by cause.** Permission, read-only file system, a missing directory and the like are
  :class:`~trimtab.slo.traffic.PermanentTrafficError`; other OS errors (disk full, I/O errors,
  interrupted calls) are :class:`~trimtab.slo.traffic.TransientTrafficError`.

Verification is the file itself: VERIFIED when it holds exactly the weights, PENDING otherwise
(a person changed it since, or it does not exist yet). Whatever reads the file applies it on its
own schedule; that is outside what this adapter can see.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from trimtab.adapters.ownedfile import OwnedFile
from trimtab.slo.names import check_backend
from trimtab.slo.ports import Verification, Weights
from trimtab.slo.routes import FileRoute
from trimtab.slo.traffic import (
    PermanentTrafficError,
    WeightsError,
    validate_weights,
)

__all__ = ["FileAdapter", "render"]

MAX_BYTES = 64 * 1024  # far more than any route's weights; a bigger file is not ours


def render(weights: Mapping[str, int]) -> str:
    """The file's text for ``weights``: sorted keys, one per line, trailing newline.

    The text of ``json.dumps(weights, sort_keys=True, indent=2)``, written line by line:
    ``indent`` takes the json module's Python encoder, whose nested functions leave a
    reference cycle per call — 10,000 moves a cycle left 50 MB for the collector.
    """
    if not weights:
        return "{}\n"
    lines = (f"  {json.dumps(name)}: {json.dumps(weights[name])}" for name in sorted(weights))
    return "{\n" + ",\n".join(lines) + "\n}\n"


class _Missing(Exception):
    """The file does not exist (yet)."""


class FileAdapter:
    """A :class:`~trimtab.slo.ports.TrafficAdapter` writing ``{backend: weight}`` JSON to a file.

    ``backends`` are the route's backends (a Rollout's stable and canary, a Balance's pool);
    ``initial`` the weights a missing file starts from (see the module docstring), validated
    here: a ``WeightsError`` (``ValueError``) at construction, like invalid ``backends``.
    Nothing touches the file system until the first call. Thread-safe.

    A file is read again only when it changed (:meth:`OwnedFile.stamp`: its inode, size or
    times differ, or its last change is under 2 s old): a controller reads every route each
    cycle, and at 10,000 routes reading them all took 7 % of a steady cycle.
    """

    def __init__(
        self,
        route: FileRoute,
        backends: Sequence[str],
        *,
        initial: Weights | None = None,
        create: bool = True,
    ) -> None:
        names = list(backends)
        if not names:
            raise ValueError("the file adapter needs at least one backend")
        if len(set(names)) != len(names):
            raise ValueError(f"backends must be distinct, not {names}")
        for name in names:
            check_backend(name)
        self._file = OwnedFile(
            route.path,
            owner="the file adapter",
            what="the weights file",
            max_bytes=MAX_BYTES,
            too_big="; not a weights file",
            no_directory="; the file adapter creates the file, not its directory",
        )
        self.backends: tuple[str, ...] = tuple(names)
        self.initial = validate_weights(initial, names) if initial is not None else None
        self.create = create
        self._lock = threading.Lock()
        # The weights last read, in ``backends`` order, and the file's stamp then: a file
        # that has not changed is not read again (a controller reads every route each cycle).
        self._held: tuple[int, ...] = ()
        self._stamp: int | None = None

    @property
    def path(self) -> Path:
        """The weights file."""
        return self._file.path

    def __repr__(self) -> str:
        return f"FileAdapter({str(self.path)!r}, backends={list(self.backends)!r})"

    # ------------------------------------------------------------------------------- the port

    def get_weights(self) -> Weights:
        """The weights the file holds (or ``initial`` when it does not exist yet)."""
        with self._lock:
            try:
                return self._read()
            except _Missing:
                if self.initial is None:
                    raise PermanentTrafficError(
                        f"{self.path}: the weights file does not exist, and no initial weights "
                        "were given: create it with the weights traffic starts from"
                    ) from None
                if self.create:
                    self._write(render(self.initial))
                return dict(self.initial)

    def set_weights(self, weights: Weights) -> None:
        """Replace the file's weights atomically; write nothing if they are invalid or unchanged."""
        text = render(validate_weights(weights, self.backends))
        with self._lock:
            try:
                if self._read_text() == text:
                    return
            except (_Missing, PermanentTrafficError):
                pass  # absent, or broken by hand: replacing it is what was asked
            self._write(text)

    def verify(self, weights: Weights) -> Verification:
        """VERIFIED when the file holds exactly ``weights``; PENDING otherwise (or if missing)."""
        wanted = validate_weights(weights, self.backends)
        with self._lock:
            try:
                held = self._read()
            except _Missing:
                return Verification.PENDING
        return Verification.VERIFIED if held == wanted else Verification.PENDING

    # ------------------------------------------------------------------------------ internals

    def _read(self) -> dict[str, int]:
        stamp = self._file.stamp()  # before reading: a change after it shows the next time
        if stamp is not None and stamp == self._stamp:
            return dict(zip(self.backends, self._held, strict=True))
        self._stamp = None
        weights = self._parse(self._read_text())
        self._held, self._stamp = tuple(weights.values()), stamp
        return weights

    def _parse(self, text: str) -> dict[str, int]:
        try:
            data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
        except ValueError as exc:
            raise PermanentTrafficError(
                f"{self.path}: not valid weights JSON ({exc}); trimtab replaces it at the next "
                "change of weights"
            ) from None
        if not isinstance(data, dict):
            raise PermanentTrafficError(
                f"{self.path}: expected a JSON object of backend to percent, not "
                f"{type(data).__name__}"
            )
        try:
            return validate_weights(data, self.backends)
        except WeightsError as exc:
            raise PermanentTrafficError(f"{self.path}: {exc}") from None

    def _read_text(self) -> str:
        """The file's text; refuses symlinks, non-regular files and oversized files."""
        text = self._file.read_text()
        if text is None:
            raise _Missing
        return text

    def _write(self, text: str) -> None:
        self._stamp = None
        self._file.write_bytes(text.encode("utf-8"))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    repeated = sorted(key for key, count in Counter(k for k, _ in pairs).items() if count > 1)
    if repeated:
        raise ValueError(f"backend {repeated[0]!r} appears more than once")
    return dict(pairs)


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a weight")
