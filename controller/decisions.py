"""The decision log: append-only JSON Lines in which an edit, a deletion or a cut shows.

One canonical JSON record per line (:func:`.record.canonical_json`). Each record holds ``hash``,
the SHA-256 of its canonical JSON without ``hash``, and ``prevHash``, the previous record's hash
(:data:`GENESIS` for the first). ``prevHash`` is hashed too, so each hash covers all history
before it and :meth:`DecisionLog.verify` names an edited, deleted, inserted or reordered line.
(It shows accidents and naive edits; it is no signature: who can write the file can re-hash.)

Cutting whole lines off the end leaves a valid chain, so every append also writes
``<name>.head`` (temp, fsync, rename, fsync of the directory): the record count and last hash.
A log holding fewer records than its head counts was truncated. Appends never stop for that
(the controller must still be able to roll back), but an append that finds the head disagreeing
with the log first moves it to ``<name>.head.mismatch``, and ``verify`` keeps reporting it.

A crash mid-append can leave a *torn* final line without its newline. A record counts only once
its newline is on disk, and the head moves only after that, so a torn line was never acted on.
``verify`` reports it apart from tampering; :meth:`DecisionLog.repair` drops it (never anything
else), as does the next append. A crash between the log's fsync and the head's rename leaves the
head one record behind: a crash artifact too, fixed by the next append or ``repair``.

Appends are safe across threads (a lock) and processes (``flock`` on the log, held from reading
the tail to updating the head); readers take a shared ``flock``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from trimtab.adapters.ownedfile import fsync_directory
from trimtab.slo.errors import TrimtabError

from .record import (
    GENESIS,
    Action,
    Decision,
    DecisionWeights,
    Finding,
    FindingKind,
    Gist,
    Link,
    VerifyResult,
    canonical_json,
    chain_findings,
    head_findings,
    new_id,
    parse_line,
    record_hash,
)

__all__ = [
    "GENESIS",
    "Action",
    "Decision",
    "DecisionLog",
    "DecisionLogError",
    "DecisionWeights",
    "Finding",
    "FindingKind",
    "VerifyResult",
    "new_id",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
_READ = 1 << 20  # bytes per read of a whole-log pass


class DecisionLogError(TrimtabError):
    """The decision log cannot be read or appended to; the message names the file and line."""


class DecisionLog:
    """An append-only, hash-chained decision log at ``path`` with its head file beside it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.suffix == ".head":
            raise ValueError(f"{self.path}: '.head' is the suffix of the head file")
        self.head_path = self.path.with_suffix(".head")
        self.mismatch_path = self.path.with_suffix(".head.mismatch")
        self._lock = threading.Lock()
        # What the latest decision per target said, as of a log of ``_indexed_size`` bytes: one
        # pass over the log, then kept up to date by this object's appends. Another writer (a
        # person's `trimtab pause` in another process) changes the size, and the next look
        # reads again.
        self._latest: dict[str, Gist] | None = None
        self._indexed_size = -1

    def append(self, decision: Decision) -> Decision:
        """Chain ``decision`` onto the log, fsync it, update the head; return it with
        ``prevHash`` and ``hash`` filled. Raises :class:`DecisionLogError` when the last record
        is unreadable (the log was damaged: nothing sensible can be chained onto it)."""
        return self.append_all([decision])[0]

    def append_all(self, decisions: Iterable[Decision]) -> list[Decision]:
        """Like :meth:`append` for many decisions at once, in order, with one write and one
        fsync: a cycle over many targets pays for durability once, not per target."""
        created = not self.path.exists()  # two creators both fsync the directory: harmless
        with self._lock, self._opened(create=True) as fd:
            self._drop_torn(fd)
            return self._append_locked(fd, decisions, created)

    def append_missing(self, decisions: Sequence[Decision]) -> list[Decision]:
        """:meth:`append_all` for those of ``decisions`` whose ids the log does not hold,
        looked for and appended under one lock; returns those appended.

        So two writers that both hold a decision record it once: a person's command that
        saved its move's intent (the decision inside) and then records it, and a controller
        that finds that intent first and records the decision before acting on it, as it
        does for an intent a stop kept out of the log."""
        created = not self.path.exists()
        with self._lock, self._opened(create=True) as fd:
            self._drop_torn(fd)
            held = self._holding(_lines_of(fd), {d.id for d in decisions})
            return self._append_locked(fd, [d for d in decisions if d.id not in held], created)

    def _append_locked(
        self, fd: int, decisions: Iterable[Decision], created: bool
    ) -> list[Decision]:
        """:meth:`append_all`'s work, the log open and locked as ``fd``."""
        last = _last_line(fd)
        if last is None and self._read_head() is None:
            # The head goes down before the first record: however many appends a crash
            # cuts short, the log is never left with records and no head (that would
            # read as a deleted head), only with a head behind.
            self._write_head(0, GENESIS)
        prev = GENESIS if last is None else self._hash_of(last)
        count = self._count(fd, last)
        indexed = self._latest is not None and os.fstat(fd).st_size == self._indexed_size
        sealed: list[Decision] = []
        pending = bytearray()
        for decision in decisions:
            record = decision.to_json()
            record["prevHash"] = prev
            record["hash"] = record_hash(record)
            pending += canonical_json(record) + b"\n"
            sealed.append(decision.sealed(prev, record["hash"]))
            prev = record["hash"]
        if not sealed:
            return []
        _write_all(fd, pending)
        os.fsync(fd)
        if indexed and self._latest is not None:
            self._latest.update((d.target, d.gist()) for d in sealed)
            self._indexed_size = os.fstat(fd).st_size
        if created:
            fsync_directory(self.path.parent)
        self._write_head(count + len(sealed), prev)
        return sealed

    def records(self, target: str | None = None) -> Iterator[Decision]:
        """Every complete record, oldest first; a torn final line is skipped (never committed).
        Reads a snapshot taken under a shared lock; nothing when the log does not exist.

        With ``target`` ("Rollout/checkout"), only its records: only the lines that hold its
        JSON text are decoded."""
        quoted = None if target is None else json.dumps(target).encode("ascii")
        for number, raw in enumerate(self._snapshot()[0], 1):
            if quoted is None:
                yield self._decoded(raw, number)
            elif quoted in raw and (found := self._decoded(raw, number)).target == target:
                yield found

    def find(self, decision_id: str) -> Decision | None:
        """The decision with this id, or ``None``.

        Only the lines holding the id's JSON text are decoded (``trimtab explain`` on a log of
        a million records reads it, and decodes one or two)."""
        quoted = json.dumps(decision_id).encode("ascii")
        for number, raw in enumerate(self._snapshot()[0], 1):
            if quoted in raw and (found := self._decoded(raw, number)).id == decision_id:
                return found
        return None

    def having(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are ids of records in the log: one pass over it, however many are
        asked about. (A controller that meets intents it has not seen uses
        :meth:`append_missing`, which looks and appends under one lock.)"""
        try:
            with self._opened(create=False, shared=True) as fd:
                return self._holding(_lines_of(fd), set(ids))
        except FileNotFoundError:
            return set()

    def _holding(self, lines: Iterable[bytes], wanted: set[str]) -> set[str]:
        """Which of ``wanted`` are ids of records among ``lines``: only a line whose ``"id"``
        field holds one of them is decoded, to make sure (a damaged line elsewhere is for
        ``verify`` to report)."""
        found: set[str] = set()
        if not wanted:
            return found
        texts = {json.dumps(i)[1:-1].encode("ascii"): i for i in wanted}
        for number, raw in enumerate(lines, 1):
            for text in _fields(raw, b'"id":"'):
                if text in texts and self._decoded(raw, number).id == texts[text]:
                    found.add(texts[text])
                    break
        return found

    def last(self, target: str) -> Decision | None:
        """The latest decision about ``target`` ("Rollout/checkout"), or ``None``: the log read
        from its end, decoding only the lines that hold the target's JSON text."""
        quoted = json.dumps(target).encode("ascii")
        lines = self._snapshot()[0]
        for number in range(len(lines), 0, -1):
            raw = lines[number - 1]
            if quoted in raw and (found := self._decoded(raw, number)).target == target:
                return found
        return None

    def said(self, targets: Iterable[str]) -> dict[str, Gist]:
        """What the latest decision about each of ``targets`` that has one said.

        Reads the log once and then follows this object's own appends (a cycle asks about every
        target: one pass, not one per target); reads again when the log's size says someone
        else wrote to it."""
        with self._lock:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if self._latest is None or size != self._indexed_size:
                self._latest, self._indexed_size = self._gists(), size
            known = self._latest
            return {t: known[t] for t in targets if t in known}

    def verify(self) -> VerifyResult:
        """Check every line's hash, the chain and the head; see :class:`FindingKind`."""
        if not self.path.exists():
            found = Finding(FindingKind.MISSING, None, f"{self.path} does not exist")
            return VerifyResult(self.path, 0, (found,))
        lines, torn, head = self._snapshot()
        findings: list[Finding] = []
        links: list[Link] = []
        for number, raw in enumerate(lines, 1):
            obj = parse_line(raw)
            if obj is None:
                findings.append(Finding(FindingKind.UNREADABLE, number, "not a decision record"))
                links.append(None)
                continue
            if record_hash(obj) != obj["hash"]:
                why = "its content does not match its hash: the record was edited"
                findings.append(Finding(FindingKind.EDITED, number, why))
            links.append((obj["hash"], obj["prevHash"]))
        findings += chain_findings(links)
        findings += head_findings(links, head)
        if self.mismatch_path.exists():
            why = f"an append found the head disagreeing with the log: see {self.mismatch_path}"
            findings.append(Finding(FindingKind.HEAD_MISMATCH, None, why))
        if torn:
            why = f"{torn} bytes without a newline: a write cut short by a crash; repair() drops it"
            findings.append(Finding(FindingKind.TORN, len(lines) + 1, why))
        order = sorted(findings, key=lambda f: (f.line or 0, f.kind.value))
        return VerifyResult(self.path, len(lines), tuple(order))

    def repair(self) -> int:
        """Drop a torn final line and bring a head one record behind up to date — crash
        artifacts only; never a complete record. Returns the number of bytes dropped."""
        if not self.path.exists():
            return 0
        with self._lock, self._opened(create=False) as fd:
            dropped = self._drop_torn(fd)
            last = _last_line(fd)
            head = self._read_head()
            if last is not None and head is not None:
                obj = parse_line(last)
                if obj is not None and obj["prevHash"] == head[1] and obj["hash"] != head[1]:
                    self._write_head(head[0] + 1, obj["hash"])
            return dropped

    def _gists(self) -> dict[str, Gist]:
        """The latest gist per target: each line's target is read from its text, and only
        each target's latest record is decoded as a decision (a standby that takes over reads
        the whole log: at 200,000 records, 6.6 s decoding every one). A line whose target
        cannot be read so is parsed as JSON. The log is read a chunk at a time, keeping each
        target's latest line: on a 114 MB log of 10,000 targets, the peak RSS grew by 12 MB,
        where reading it whole took 227 MB."""
        latest: dict[str, tuple[int, bytes]] = {}
        try:
            with self._opened(create=False, shared=True) as fd:
                for number, raw in enumerate(_lines_of(fd), 1):
                    texts = _fields(raw, b'"target":"')
                    if len(texts) == 1 and b"\\" not in texts[0]:
                        target = texts[0].decode("ascii", "replace")
                    else:  # none, several (a nested field of that name), or escapes
                        target = self._target(raw, number)
                    latest[target] = (number, raw)
        except FileNotFoundError:
            return {}
        return {t: self._decoded(raw, number).gist() for t, (number, raw) in latest.items()}

    def _target(self, raw: bytes, number: int) -> str:
        """The ``target`` of line ``number``, parsed as JSON; :class:`DecisionLogError` if it
        has none."""
        try:
            target = json.loads(raw)["target"]
        except (ValueError, KeyError, TypeError) as e:
            raise DecisionLogError(f"{self.path}:{number}: not a decision: {e}") from e
        if not isinstance(target, str):
            raise DecisionLogError(
                f"{self.path}:{number}: not a decision: a target of {type(target).__name__}"
            )
        return target

    def _decoded(self, raw: bytes, number: int) -> Decision:
        """Line ``number`` of the log as a decision; :class:`DecisionLogError` if it is not one."""
        try:
            return Decision.from_json(json.loads(raw.decode("utf-8")))
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise DecisionLogError(f"{self.path}:{number}: not a decision: {e}") from e

    @contextmanager
    def _opened(self, *, create: bool, shared: bool = False) -> Iterator[int]:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
        fd = os.open(self.path, os.O_RDONLY if shared else flags, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the flock

    def _snapshot(self) -> tuple[list[bytes], int, tuple[int, str] | None]:
        """Complete lines, the length of a torn tail, and the head — read under a shared lock."""
        try:
            with self._opened(create=False, shared=True) as fd:
                data = _read_all(fd)
                head = self._read_head()
        except FileNotFoundError:
            return [], 0, None
        lines = data.split(b"\n")
        tail = lines.pop()
        return lines, len(tail), head

    def _drop_torn(self, fd: int) -> int:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return 0
        keep = _rfind_newline(fd, size) + 1
        os.ftruncate(fd, keep)
        os.fsync(fd)
        log.warning("%s: dropped a torn final line (%d bytes)", self.path, size - keep)
        return size - keep

    def _hash_of(self, line: bytes) -> str:
        obj = parse_line(line)
        if obj is None:
            raise DecisionLogError(
                f"{self.path}: the last record is unreadable, so nothing can be chained onto it;"
                " run `trimtab history --verify`"
            )
        return str(obj["hash"])

    def _count(self, fd: int, last: bytes | None) -> int:
        """How many records the log holds: from the head when it is current (or behind after
        crashes), else counted; a head that disagrees is kept aside as evidence."""
        head = self._read_head()
        obj = None if last is None else parse_line(last)
        if head is not None and obj is not None:
            if head[1] == obj["hash"]:
                return head[0]
            if head[1] == obj["prevHash"]:
                return head[0] + 1
        lines = [line for line in _read_all(fd).split(b"\n") if line]
        if head is not None and 0 <= head[0] <= len(lines):
            named = GENESIS if head[0] == 0 else self._hash_of(lines[head[0] - 1])
            if named == head[1]:
                return len(lines)  # several crashes cut several head updates: still a chain
        if head is not None and not self.mismatch_path.exists():
            os.replace(self.head_path, self.mismatch_path)
            log.error("%s disagrees with %s; kept as %s", self.head_path, self.path.name,
                      self.mismatch_path.name)  # fmt: skip
        return _read_all(fd).count(b"\n")

    def _read_head(self) -> tuple[int, str] | None:
        """``(records, last hash)``; ``(-1, why)`` when unreadable; ``None`` when absent."""
        try:
            obj = json.loads(self.head_path.read_text(encoding="utf-8"))
            count, last = obj["count"], obj["hash"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            return (-1, str(e))
        ok = isinstance(count, int) and isinstance(last, str)
        return (count, last) if ok else (-1, "count and hash of the wrong type")

    def _write_head(self, count: int, last: str) -> None:
        tmp = self.head_path.with_name(f".{self.head_path.name}.tmp")  # only written under flock
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, json.dumps({"count": count, "hash": last}).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.head_path)
        fsync_directory(self.head_path.parent)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fields(raw: bytes, key: bytes) -> list[bytes]:
    """The text of each string field of a record line that ``key`` opens (``b'"id":"'``), as
    canonical JSON writes it (sorted keys, no spaces): at any depth, and up to the first quote
    (an escaped one included: a text with a backslash may be cut short). In JSON text a quote
    inside a string is escaped, so every match is a field."""
    found = []
    at = raw.find(key)
    while at >= 0:
        start = at + len(key)
        end = raw.find(b'"', start)
        if end < 0:
            break
        found.append(raw[start:end])
        at = raw.find(key, end + 1)
    return found


def _lines_of(fd: int) -> Iterator[bytes]:
    """The complete lines of the file ``fd``, without their newlines, read a chunk at a time
    (a log of 200,000 records is 114 MB: never held at once). A torn last line is left out."""
    offset, rest = 0, b""
    while chunk := os.pread(fd, _READ, offset):
        offset += len(chunk)
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    with os.fdopen(os.dup(fd), "rb") as file:
        return file.read()


def _rfind_newline(fd: int, end: int) -> int:
    """The offset of the last newline before ``end``, or -1."""
    while end > 0:
        start = max(0, end - _CHUNK)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found
        end = start
    return -1


def _last_line(fd: int) -> bytes | None:
    """The last complete line (the file ends with a newline), without it; ``None`` when empty."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    start = _rfind_newline(fd, size - 1) + 1
    return os.pread(fd, size - 1 - start, start)
