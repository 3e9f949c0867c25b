"""Per-target state that survives a crash: what a reconciler needs to resume without a double step.

One JSON file per target in ``stateDir`` (DESIGN.md section 10). :meth:`StateStore.save` writes a
temp file in the same directory, fsyncs it, renames it over the old file and fsyncs the
directory, so after a crash at any point the file holds either the old state or the new one,
never a mix and never nothing. A corrupt file raises :class:`StateError` naming it: state is
never silently reset, because a reset Rollout would start again from its first step.

Resuming without a double step: before acting, the reconciler saves an :class:`Intent` (the
weights, the decision id and the step they reach); after the adapter verifies them, it saves the
new ``step``/``applied`` and clears the intent. A restart that finds an intent compares it with
the adapter's actual weights instead of stepping again.

``version`` grows by one on every save; :meth:`StateStore.save` refuses a state whose version is
not the one on disk (:class:`StateConflict`), so a writer working from a stale read fails loudly.
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import re
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from trimtab.adapters.ownedfile import fsync_directory
from trimtab.slo.baseline import BaselineTrack
from trimtab.slo.errors import TrimtabError

__all__ = [
    "PHASES",
    "BaselineMemo",
    "Intent",
    "Override",
    "StateConflict",
    "StateError",
    "StateStore",
    "TargetState",
]

PHASES = ("Pending", "Progressing", "Paused", "Promoted", "RolledBack", "Balancing")
"""Rollout phases, and ``Balancing`` — the one phase of a Balance."""

_KEY = re.compile(r"^(Rollout|Balance)/([a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)$")
_FILE = re.compile(r"^(Rollout|Balance)\.([a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)\.json$")
_FORMAT = 1
_WRITERS = 16  # threads writing a batch of state files (their fsyncs are committed together)
_CHUNK = 16  # files a writer thread is handed at a time


class StateError(TrimtabError):
    """A state file cannot be read or written; the message names the file."""


class StateConflict(StateError):
    """The state on disk changed since it was read (its ``version`` moved on); ``targets`` are
    every target of the batch whose state did."""

    def __init__(self, message: str, targets: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.targets: tuple[str, ...] = tuple(targets)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: give a timezone (UTC)")
    return value.astimezone(UTC)


def _when(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


_WEIGHTS: dict[tuple[tuple[str, int], ...], dict[str, int]] = {}
_WEIGHTS_KEPT = 4096


def _weights(value: Mapping[str, int], where: str, top: int | None = None) -> dict[str, int]:
    """``value`` checked, as a read-only dict that equal weights share: a controller keeps
    every target's state (10,000 at scale), and most targets share a few splits."""
    for backend, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ValueError(f"{where}.{backend}: expected a non-negative integer, got {weight!r}")
        if top is not None and weight > top:
            raise ValueError(f"{where}.{backend}: at most {top}, got {weight}")
    key = tuple(value.items())
    kept = _WEIGHTS.get(key)
    if kept is None:
        if len(_WEIGHTS) >= _WEIGHTS_KEPT:
            _WEIGHTS.clear()
        kept = _WEIGHTS[key] = dict(value)
    return kept


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class Intent:
    """Weights about to be applied: saved before acting, cleared once the adapter verified them."""

    weights: Mapping[str, int]
    """What the adapter is being asked to serve."""
    decision_id: str
    """The decision that asked for them (``trimtab explain ID``)."""
    action: str
    """The decision's action: whether the move was toward risk (counts for the guardrails)."""
    at: datetime
    """When the intent was recorded; verification that takes too long is judged from here."""
    step: int | None = None
    """The Rollout step reached once verified (``None`` for a Balance or a step-less move)."""
    record: Mapping[str, Any] | None = None
    """The decision itself (its JSON, unsealed): the intent is saved before the decision is
    recorded, so a crash between the two leaves what the next process needs to record it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", _weights(self.weights, "intent.weights"))
        object.__setattr__(self, "action", str(self.action))
        object.__setattr__(self, "at", _utc(self.at))

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": dict(self.weights),
            "decisionId": self.decision_id,
            "action": self.action,
            "at": self.at.isoformat(),
            "step": self.step,
            "record": None if self.record is None else dict(self.record),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Intent:
        at = datetime.fromisoformat(data["at"])
        return cls(
            data["weights"],
            data["decisionId"],
            data["action"],
            at,
            data.get("step"),
            data.get("record"),
        )


@dataclass(frozen=True, slots=True)
class Override:
    """The last manual command (promote, abort, pause, resume) and who gave it."""

    command: str
    actor: str
    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _utc(self.at))

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command, "actor": self.actor, "at": self.at.isoformat()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Override:
        return cls(data["command"], data["actor"], datetime.fromisoformat(data["at"]))


@dataclass(frozen=True, slots=True)
class BaselineMemo:
    """The baseline test of a Rollout's step, carried between cycles (:mod:`trimtab.slo.baseline`).

    ``track.counts`` are counted from the start of the step that began at ``step_started_at``;
    ``at`` is when the data last counted ends. Saved with the state when the state is written
    for another reason: a restart that finds an older memo counts the data since it again, as
    one stretch — nothing is counted twice, and the test stays valid.
    """

    track: BaselineTrack
    step_started_at: datetime | None
    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_started_at", _when(self.step_started_at))
        object.__setattr__(self, "at", _utc(self.at))

    def to_json(self) -> dict[str, Any]:
        return {
            "track": self.track.to_json(),
            "stepStartedAt": _iso(self.step_started_at),
            "at": self.at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BaselineMemo:
        return cls(
            BaselineTrack.from_json(data["track"]),
            _dt(data["stepStartedAt"]),
            datetime.fromisoformat(data["at"]),
        )


_DATES = ("last_shift_at", "step_started_at", "no_data_since", "paused_at", "failure_at")
_CAMEL = {
    "phase": "phase", "step": "step", "applied": "applied", "intent": "intent",
    "last_shift_at": "lastShiftAt", "shift_times": "shiftTimes",
    "step_started_at": "stepStartedAt", "healthy_since": "healthySince",
    "failures": "failures", "failure_bad": "failureBad", "failure_at": "failureAt",
    "baseline": "baseline", "no_data_since": "noDataSince", "paused_at": "pausedAt",
    "paused_reason": "pausedReason", "drained": "drained",
    "actor_override": "actorOverride", "version": "version",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TargetState:
    """What one Rollout or Balance remembers between cycles and across restarts. Datetimes are
    timezone-aware (normalised to UTC); mappings are copies, to be treated as read-only."""

    phase: str = "Pending"
    """One of :data:`PHASES`: the Rollout phase, or ``Balancing``."""
    step: int = -1
    """Index of the Rollout step whose weights are applied and verified; -1 before the first."""
    applied: Mapping[str, int] | None = None
    """The last weights applied *and verified*; ``None`` until then. Anything else is drift."""
    intent: Intent | None = None
    """Weights being applied right now; set before acting, cleared after verifying."""
    last_shift_at: datetime | None = None
    """The last move toward risk (``minInterval``)."""
    shift_times: tuple[datetime, ...] = ()
    """Moves toward risk in the last hour (``maxShiftsPerHour``); older ones are dropped."""
    step_started_at: datetime | None = None
    """When the current step's weights were verified: its ``hold`` counts from here."""
    healthy_since: Mapping[str, datetime] = field(default_factory=dict)
    """Per backend, since when it was HEALTHY without a break (hold and ``restoreAfter``)."""
    failures: int = 0
    """DEGRADED (or baseline-regression) evaluations counted toward ``failureLimit``."""
    failure_bad: Mapping[str, float] = field(default_factory=dict)
    """Per SLO, the canary's bad events in its shortest DEGRADED window when the last failure
    was counted: a DEGRADED verdict on no new bad events is not counted again."""
    failure_at: datetime | None = None
    """When the last failure was counted."""
    baseline: BaselineMemo | None = None
    """The baseline test of the current step, as of the last save (see :class:`BaselineMemo`)."""
    no_data_since: datetime | None = None
    """Since when the measurements were UNKNOWN (``noData.rollbackAfter``); ``None`` with data."""
    paused_at: datetime | None = None
    """When the target paused; the pause timeout counts from here."""
    paused_reason: str | None = None
    """Why it paused: the manual command or the inconclusive analysis."""
    drained: Mapping[str, int] = field(default_factory=dict)
    """Balance: percent of each backend's nominal weight drained (0-100)."""
    actor_override: Override | None = None
    """The last manual command, kept so the controller does not undo it unannounced."""
    version: int = 0
    """Grows by one on every save (0: never saved); optimistic concurrency for the store."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.phase not in PHASES:
            raise ValueError(f"phase: expected one of {', '.join(PHASES)}, got {self.phase!r}")
        set_(self, "phase", str(self.phase))
        if self.step < -1 or self.failures < 0 or self.version < 0:
            raise ValueError("step is at least -1; failures and version are not negative")
        if self.applied is not None:
            set_(self, "applied", _weights(self.applied, "applied"))
        set_(self, "drained", _weights(self.drained, "drained", top=100))
        for name in _DATES:
            set_(self, name, _when(getattr(self, name)))
        set_(self, "shift_times", tuple(sorted(_utc(t) for t in self.shift_times)))
        set_(self, "healthy_since", {b: _utc(t) for b, t in self.healthy_since.items()})
        bad = {str(k): float(v) for k, v in self.failure_bad.items()}
        if not all(math.isfinite(v) and v >= 0 for v in bad.values()):
            raise ValueError("failure_bad: counts are finite and not negative")
        set_(self, "failure_bad", bad)

    @classmethod
    def initial(cls, target: str) -> TargetState:
        """The state of a target never seen before: ``Pending``, or ``Balancing`` for a Balance."""
        return cls(phase="Balancing" if target.startswith("Balance/") else "Pending")

    def with_(self, **changes: Any) -> TargetState:
        """A copy with ``changes`` (field names), validated like a new state."""
        return dataclasses.replace(self, **changes)

    def shifts_within(self, now: datetime, window: timedelta = timedelta(hours=1)) -> int:
        """How many moves toward risk happened in ``window`` before ``now``."""
        return sum(1 for t in self.shift_times if now - t < window)

    def with_shift(self, at: datetime, window: timedelta = timedelta(hours=1)) -> TargetState:
        """Record a move toward risk at ``at``, dropping shifts older than ``window``."""
        kept = tuple(t for t in self.shift_times if at - t < window)
        return self.with_(last_shift_at=at, shift_times=(*kept, at))

    def to_json(self) -> dict[str, Any]:
        """The state as JSON data, camelCase keys."""
        out: dict[str, Any] = {key: getattr(self, attr) for attr, key in _CAMEL.items()}
        out.update({_CAMEL[name]: _iso(getattr(self, name)) for name in _DATES})
        out["applied"] = None if self.applied is None else dict(self.applied)
        out["intent"] = None if self.intent is None else self.intent.to_json()
        out["shiftTimes"] = [t.isoformat() for t in self.shift_times]
        out["healthySince"] = {b: t.isoformat() for b, t in self.healthy_since.items()}
        out["drained"] = dict(self.drained)
        out["failureBad"] = dict(self.failure_bad)
        out["baseline"] = None if self.baseline is None else self.baseline.to_json()
        override = self.actor_override
        out["actorOverride"] = None if override is None else override.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TargetState:
        """The state :meth:`to_json` wrote; absent keys take their defaults, unknown keys fail."""
        unknown = set(data) - set(_CAMEL.values())
        if unknown:
            raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
        args = {attr: data[key] for attr, key in _CAMEL.items() if key in data}
        args.update({name: _dt(args[name]) for name in _DATES if name in args})
        if args.get("intent") is not None:
            args["intent"] = Intent.from_json(args["intent"])
        if args.get("baseline") is not None:
            args["baseline"] = BaselineMemo.from_json(args["baseline"])
        if args.get("actor_override") is not None:
            args["actor_override"] = Override.from_json(args["actor_override"])
        if "shift_times" in args:
            args["shift_times"] = tuple(datetime.fromisoformat(t) for t in args["shift_times"])
        if "healthy_since" in args:
            since = args["healthy_since"]
            args["healthy_since"] = {b: datetime.fromisoformat(t) for b, t in since.items()}
        return cls(**args)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _versioned(state: TargetState, version: int) -> TargetState:
    """``state`` at ``version``: a copy not validated again (``state`` was, when made)."""
    if version < 0:
        raise ValueError("version is not negative")
    copied = copy.copy(state)
    object.__setattr__(copied, "version", version)
    return copied


def _read(path: str) -> bytes:
    """The bytes of ``path``: ``Path.read_bytes`` without its buffered file object (a cycle
    reads every target's state; this takes half the time)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _write_files(files: Sequence[tuple[Path, bytes]]) -> None:
    """Replace each file with its bytes: a temp file beside it, fsync'd, renamed over it.
    Raises :class:`StateError` naming the file that failed."""
    for path, data in files:
        tmp = path.with_name(f".{path.name}.tmp")  # one writer at a time: under the flock
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:
            raise StateError(f"{path}: cannot save the state: {e}") from e


class StateStore:
    """Target states as ``<Kind>.<name>.json`` files in ``directory`` (``stateDir``)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        # The last state read or written per target, by a digest of its file's bytes: a file
        # that did not change is not parsed and validated again (a cycle reads every target's
        # state, and saving checks the version on disk). Other writers change the bytes.
        self._known: dict[str, tuple[bytes, TargetState]] = {}
        self._files: dict[str, str] = {}  # by target, the file's path: checked once

    def path(self, target: str) -> Path:
        """The file of ``target`` ("Rollout/checkout"); anything but ``Kind/name`` is refused,
        so no key can name a file outside the directory."""
        return Path(self._file(target))

    def _file(self, target: str) -> str:
        """:meth:`path` as a string, worked out once per target (a cycle loads every one)."""
        found = self._files.get(target)
        if found is not None:
            return found
        match = _KEY.fullmatch(target)
        if match is None:
            raise ValueError(
                f"invalid target {target!r}: expected Rollout/<name> or Balance/<name>, "
                "the name 1-63 lowercase letters, digits and '-'"
            )
        found = self._files[target] = os.path.join(self.directory, f"{match[1]}.{match[2]}.json")
        return found

    def load(self, target: str) -> TargetState:
        """The saved state of ``target``, or :meth:`TargetState.initial` if it has none.
        Raises :class:`StateError` (naming the file) when the file is unreadable or corrupt."""
        path = self._file(target)
        try:
            raw = _read(path)
        except FileNotFoundError:
            return TargetState.initial(target)
        except OSError as e:
            raise StateError(f"{path}: cannot read the state: {e}") from e
        digest = _digest(raw)
        known = self._known.get(target)
        if known is not None and known[0] == digest:
            return known[1]
        try:
            document = json.loads(raw.decode("utf-8"))
            if document.get("format") != _FORMAT or document.get("target") != target:
                raise ValueError(f"not a format-{_FORMAT} state file of {target}")
            state = TargetState.from_json(document["state"])
            self._known[target] = (digest, state)
            return state
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise StateError(
                f"{path}: corrupt state ({e}); trimtab does not reset it by itself: restore the "
                "file, or move it aside to start this target over"
            ) from e

    def save(self, target: str, state: TargetState, *, check: bool = True) -> TargetState:
        """Write ``state`` with its version raised by one, atomically and durably; return it.
        With ``check`` the version on disk must equal ``state.version`` (:class:`StateConflict`
        otherwise): the state was loaded, changed and saved by one writer at a time."""
        return self.save_all([(target, state)], check=check)[0]

    def save_all(
        self, states: Sequence[tuple[str, TargetState]], *, check: bool = True
    ) -> list[TargetState]:
        """:meth:`save` for many targets at once (each at most once); returns the saved states.

        Every file is written as :meth:`save` writes it — a temp file, fsync'd, renamed over the
        old one — and all are durable when this returns. What a batch saves on: the versions
        are all checked before anything is written (a conflict writes nothing, and
        :class:`StateConflict` names every target whose state moved on), the directory
        is fsync'd once after every rename, and the files are written by a few threads, whose
        fsyncs the file system commits together. A cycle over 10,000 targets so pays for a
        few journal commits, not for 20,000 in a row.

        An ``OSError`` raises :class:`StateError` naming the file; others of the batch may have
        been written, each whole: every file holds its old state or its new one, as after a
        crash.
        """
        if not states:
            return []
        paths = [self.path(target) for target, _ in states]
        if len(set(paths)) != len(paths):
            raise ValueError("save_all: a target appears twice")
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock, self._flock():
            if check:
                stale = []  # every one of them, so that a caller can set them all aside
                for (target, state), path in zip(states, paths, strict=True):
                    on_disk = self.load(target).version
                    if on_disk != state.version:
                        stale.append((target, path, on_disk, state.version))
                if stale:
                    _, path, on_disk, read = stale[0]
                    more = f" (and {len(stale) - 1} more)" if len(stale) > 1 else ""
                    raise StateConflict(
                        f"{path}: version {on_disk} on disk, but this state was read at "
                        f"version {read}; load it again{more}",
                        [target for target, *_ in stale],
                    )
            saved = [_versioned(state, state.version + 1) for _, state in states]
            if len(states) == 1:
                self._write(states[0][0], saved[0], paths[0])
            else:
                self._write_many([t for t, _ in states], saved, paths)
            try:
                fsync_directory(self.directory)
            except OSError as e:
                where = paths[0] if len(paths) == 1 else self.directory
                raise StateError(f"{where}: cannot save the state: {e}") from e
            return saved

    def _write_many(
        self, targets: Sequence[str], saved: Sequence[TargetState], paths: Sequence[Path]
    ) -> None:
        """:meth:`_write` for each: serialised in this thread, written by a few others (which
        hold the GIL only between system calls), a bounded number of files in flight."""
        workers = min(_WRITERS, len(paths))
        with ThreadPoolExecutor(workers, thread_name_prefix="trimtab-state") as pool:
            flying: deque[Future[None]] = deque()
            for start in range(0, len(paths), _CHUNK):
                files = [
                    (paths[i], self._document(targets[i], saved[i]))
                    for i in range(start, min(start + _CHUNK, len(paths)))
                ]
                flying.append(pool.submit(_write_files, files))
                if len(flying) >= 2 * workers:
                    flying.popleft().result()  # raises the first failure
            for future in flying:
                future.result()

    def _write(self, target: str, saved: TargetState, path: Path) -> None:
        """Write one state file: temp file, fsync, rename (the directory is the caller's)."""
        _write_files([(path, self._document(target, saved))])

    def _document(self, target: str, saved: TargetState) -> bytes:
        """The bytes of ``target``'s state file; :meth:`load` will know them."""
        document = {"format": _FORMAT, "target": target, "state": saved.to_json()}
        # One line: with ``indent`` the json module falls back from its C encoder to Python,
        # four times slower — most of what saving 10,000 states costs.
        data = json.dumps(document, sort_keys=True).encode("utf-8") + b"\n"
        self._known[target] = (_digest(data), saved)  # by content: right whether written or not
        return data

    def targets(self) -> list[str]:
        """The targets with a saved state, sorted."""
        if not self.directory.is_dir():
            return []
        found = (_FILE.fullmatch(p.name) for p in self.directory.iterdir())
        return sorted(f"{m[1]}/{m[2]}" for m in found if m)

    @contextmanager
    def _flock(self) -> Iterator[None]:
        """An exclusive ``flock`` on ``.lock``: one saver at a time across processes."""
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock
