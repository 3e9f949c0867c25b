"""The decision record and its chain: values, JSON, hashes and the rules that judge a chain.

A :class:`Decision` is written *before* it is acted on (DESIGN.md sections 5 and 6) and carries
everything behind it: health per backend and SLO, the reasons (query, value, threshold, window),
the guardrails that changed the proposal, ``dryRun`` and the actor. Values are normalised to
plain JSON data on construction, so what is logged is exactly what the caller holds.

No field holds a secret, and none may be added for one: Prometheus credentials travel in
headers, never in the PromQL that a reason quotes.

Ids look like ``20250101T120000.123Z-1f2e3d4c``: the decision's UTC time to the millisecond and
32 random bits. They sort by time; ties within a millisecond order arbitrarily (the log's order
is authoritative).

Pure: :func:`record_hash`, :func:`chain_findings` and :func:`head_findings` are the chain's
rules; :mod:`.decisions` does the file I/O around them (its docstring describes the format).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, StrEnum
from functools import lru_cache
from pathlib import Path
from random import getrandbits
from typing import Any, NamedTuple, TypeVar

from trimtab.slo.health import Level

__all__ = [
    "CRASH_ARTIFACTS",
    "GENESIS",
    "KINDS",
    "LEVELS",
    "Action",
    "Decision",
    "DecisionWeights",
    "Finding",
    "FindingKind",
    "Gist",
    "Link",
    "VerifyResult",
    "canonical_json",
    "chain_findings",
    "head_findings",
    "new_id",
    "parse_line",
    "record_hash",
]

_V = TypeVar("_V")

KINDS = ("Rollout", "Balance")
"""The kinds of target a decision is about."""
LEVELS = frozenset(level.name for level in Level)
"""The health levels a decision reports (``trimtab.slo.health.Level`` names)."""
GENESIS = "0" * 64
"""The ``prevHash`` of the first record."""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


class Action(StrEnum):
    """What a decision does (DESIGN.md section 9; ``resume`` and ``abort`` are manual)."""

    NONE = "none"
    HOLD = "hold"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    DRAIN = "drain"
    RESTORE = "restore"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"


def new_id(at: datetime, token: str | None = None) -> str:
    """A decision id for time ``at``; ``token`` (default: 16 random hex digits) makes it unique.

    A cycle's decisions share their time: at 10,000 targets, 8 random hex digits gave two of
    them the same id in about one cycle in 90, and a restart finds an intent's decision in the
    log by its id. The digits need not be unpredictable: they come from ``random`` (seeded
    from the OS, again in a forked child), not a system call per id as ``secrets`` makes.
    """
    token = f"{getrandbits(64):016x}" if token is None else token
    return f"{_stamp(at if at.tzinfo is UTC else _utc(at, 'at'))}-{token}"


@lru_cache(maxsize=16)
def _stamp(at: datetime) -> str:
    """The time part of an id (a cycle's decisions share their time: formatted once)."""
    return f"{at:%Y%m%dT%H%M%S}.{at.microsecond // 1000:03d}Z"


def _utc(value: datetime, where: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{where}: a naive datetime; give a timezone (UTC)")
    return value.astimezone(UTC)


_AS_IS = frozenset({str, int, bool, type(None)})  # exactly these types (not enums) are JSON data


def _plain(value: object, where: str) -> Any:
    """``value`` as plain JSON data; non-finite floats become ``"NaN"``/``"+Inf"``/``"-Inf"``
    (as Prometheus writes them), enums their value or name, datetimes ISO 8601 in UTC."""
    kind = type(value)
    if kind in _AS_IS:  # the common cases first: a decision holds mostly strings and dicts
        return value
    if kind is dict:
        return _plain_mapping(value, where)  # type: ignore[arg-type]
    if kind is float and math.isfinite(value):  # type: ignore[arg-type]
        return value
    if isinstance(value, StrEnum):
        return str(value.value)
    if isinstance(value, Enum):
        return value.name
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if isinstance(value, datetime):
        return _utc(value, where).isoformat()
    if isinstance(value, Mapping):
        return _plain_mapping(value, where)
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return _plain(to_json(), where)
    raise TypeError(f"{where}: {type(value).__name__} is not JSON data")


def _plain_mapping(value: Mapping[Any, object], where: str) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for k, v in value.items():
        if type(k) is not str and not isinstance(k, str):
            raise TypeError(f"{where}: keys must be strings")
        plain[k] = v if type(v) in _AS_IS else _plain(v, f"{where}.{k}")
    return plain


def _health(value: object) -> dict[str, dict[str, str]]:
    """``health`` as plain data: backend → SLO → level name (a :class:`Level` becomes its name)."""
    if type(value) is not dict and not isinstance(value, Mapping):
        raise TypeError("health: a mapping of backend to {slo: level}")
    health: dict[str, dict[str, str]] = {}
    for backend, levels in value.items():
        if not isinstance(backend, str):
            raise TypeError("health: keys must be strings")
        if type(levels) is not dict and not isinstance(levels, Mapping):
            raise ValueError(f"health.{backend}: levels are {', '.join(sorted(LEVELS))}")
        row = _plain_mapping(levels, f"health.{backend}")
        if not all(type(level) is str and level in LEVELS for level in row.values()):
            raise ValueError(f"health.{backend}: levels are {', '.join(sorted(LEVELS))}")
        health[backend] = row
    return _kept(("health", tuple((b, tuple(r.items())) for b, r in health.items())), health)


_KEPT: dict[object, Any] = {}
_KEPT_MOST = 4096


def _kept(key: object, value: _V) -> _V:
    """One object for equal read-only values: most decisions of a cycle report the same health
    and weights, and the log keeps every target's latest decision (10,000 at scale)."""
    kept = _KEPT.get(key)
    if kept is not None:
        return kept  # type: ignore[no-any-return]
    if len(_KEPT) >= _KEPT_MOST:
        _KEPT.clear()
    _KEPT[key] = value
    return value


def _copy(value: Any) -> Any:
    """A copy of plain JSON data (what :func:`_plain` returns): new dicts and lists, the same
    scalars — ``copy.deepcopy`` without its bookkeeping."""
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    return value


def _weights(value: Mapping[str, int], where: str) -> dict[str, int]:
    weights = dict(value)
    for backend, weight in weights.items():
        if (type(weight) is not int or type(backend) is not str) and (
            not isinstance(backend, str) or isinstance(weight, bool) or not isinstance(weight, int)
        ):
            raise TypeError(f"{where}: weights map backend names to integer percent")
        if weight < 0:
            raise ValueError(f"{where}.{backend}: negative weight {weight}")
    return _kept(("weights", tuple(weights.items())), weights)


class Gist(NamedTuple):
    """What a decision says, without the evidence behind it: a decision whose gist equals the
    last one's about the same target says nothing new (a hold with the same cause, health and
    weights, however its wording moves on). The log keeps the latest gist per target: at 10,000
    targets, whole decisions (reasons quote their queries) took 24 MB; gists share their parts.
    """

    action: Action
    cause: str | None
    health: Mapping[str, Mapping[str, str]]
    desired: Mapping[str, int]
    dry_run: bool
    messages: tuple[object, ...]  # the reasons' messages, when no cause names the rule


@dataclass(frozen=True, slots=True)
class DecisionWeights:
    """The route's weights: read before deciding, wanted, and applied (``None`` until acted)."""

    current: Mapping[str, int]
    desired: Mapping[str, int]
    applied: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        given = self.current
        current = _weights(given, "weights.current")
        object.__setattr__(self, "current", current)
        # Equal weights are kept once (most decisions hold: all three are the same): the
        # mappings are read-only, and to_json copies them.
        for name in ("desired", "applied"):
            value = getattr(self, name)
            if value is None or value is given or value == current:
                object.__setattr__(self, name, None if value is None else current)
            else:
                object.__setattr__(self, name, _weights(value, f"weights.{name}"))

    def to_json(self) -> dict[str, dict[str, int] | None]:
        applied = None if self.applied is None else dict(self.applied)
        return {"current": dict(self.current), "desired": dict(self.desired), "applied": applied}


_KEYS = {
    "id": "id", "at": "at", "target": "target", "kind": "kind", "action": "action",
    "phase": "phase", "cause": "cause", "weights": "weights", "health": "health",
    "reasons": "reasons",
    "guardrails": "guardrails", "dry_run": "dryRun", "actor": "actor", "trace_id": "traceId",
    "prev_hash": "prevHash", "hash": "hash",
}  # fmt: skip


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """One decision about one target (DESIGN.md section 6). Values are normalised to plain JSON
    data on construction, so what is logged is exactly what the caller sees."""

    id: str = ""  # empty: a new id from ``at``
    at: datetime
    target: str  # "Rollout/checkout"
    kind: str  # "Rollout" | "Balance"
    action: Action
    weights: DecisionWeights
    health: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # backend → slo → level
    reasons: Sequence[Mapping[str, Any]] = ()  # slo, backend, level, value, threshold, window…
    guardrails: Sequence[Mapping[str, Any]] = ()  # name, proposed, bounded, detail
    dry_run: bool
    actor: str = "controller"  # or the person behind a manual command
    trace_id: str | None = None
    phase: str | None = None  # the Rollout's phase after this decision
    cause: str | None = None  # the rule behind it: a controller.causes.Cause value (runbooks/)
    prev_hash: str | None = None  # filled by DecisionLog.append
    hash: str | None = None  # filled by DecisionLog.append

    def __post_init__(self) -> None:
        # Written for speed as well as checks: a cycle builds one per target (10,000 at scale).
        set_ = object.__setattr__
        if self.at.tzinfo is not UTC:
            set_(self, "at", _utc(self.at, "at"))
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.target.startswith(f"{self.kind}/") or self.target == f"{self.kind}/":
            raise ValueError(f"target: expected '{self.kind}/<name>', got {self.target!r}")
        if type(self.action) is not Action:
            set_(self, "action", Action(self.action))
        set_(self, "id", self.id or new_id(self.at))
        if not _ID.fullmatch(self.id):
            raise ValueError(f"id: {self.id!r} is not a decision id")
        if not self.actor:
            raise ValueError("actor: required (controller or a person)")
        set_(self, "health", _health(self.health))
        for name in ("reasons", "guardrails"):
            items = []
            for i, item in enumerate(getattr(self, name)):
                plain = _plain(item, f"{name}[{i}]")
                if type(plain) is not dict:
                    raise TypeError(f"{name}: each entry is a mapping")
                items.append(plain)
            set_(self, name, tuple(items))
        for name in ("prev_hash", "hash"):
            value = getattr(self, name)
            if value is not None and not _HASH.fullmatch(value):
                raise ValueError(f"{name}: not a SHA-256 hex digest")

    def to_json(self) -> dict[str, Any]:
        """The record as JSON data, camelCase (``dryRun``, ``traceId``, ``prevHash``)."""
        values: dict[str, Any] = {
            "at": self.at.isoformat(),
            "action": self.action.value,
            "weights": self.weights.to_json(),
            "health": _copy(dict(self.health)),
            "reasons": [_copy(r) for r in self.reasons],
            "guardrails": [_copy(g) for g in self.guardrails],
        }
        return {key: values.get(attr, getattr(self, attr)) for attr, key in _KEYS.items()}

    def gist(self) -> Gist:
        """What this decision says (see :class:`Gist`)."""
        messages = () if self.cause is not None else tuple(r.get("message") for r in self.reasons)
        return Gist(
            self.action, self.cause, self.health, self.weights.desired, self.dry_run, messages
        )

    def sealed(self, prev_hash: str, digest: str) -> Decision:
        """This decision chained into a log: ``prev_hash`` set, and ``hash`` to ``digest``.
        Its other values were normalised when it was made: shared, not normalised again."""
        for name, value in (("prev_hash", prev_hash), ("hash", digest)):
            if not _HASH.fullmatch(value):
                raise ValueError(f"{name}: not a SHA-256 hex digest")
        chained = copy.copy(self)
        object.__setattr__(chained, "prev_hash", prev_hash)
        object.__setattr__(chained, "hash", digest)
        return chained

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> Decision:
        """The decision :meth:`to_json` wrote. Unknown keys are an error."""
        obj = json.loads(data) if isinstance(data, str) else data
        if not isinstance(obj, Mapping):
            raise ValueError("a decision is a JSON object")
        unknown = set(obj) - set(_KEYS.values())
        if unknown:
            raise ValueError(f"unknown keys in a decision: {', '.join(sorted(unknown))}")
        args = {attr: obj[key] for attr, key in _KEYS.items() if key in obj}
        args["at"] = datetime.fromisoformat(obj["at"])
        weights = obj["weights"]
        args["weights"] = DecisionWeights(
            weights["current"], weights["desired"], weights.get("applied")
        )
        return cls(**args)


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The one byte form of a record: sorted keys, no spaces, ASCII (``\\u`` escapes, so that
    no string — not even a lone surrogate — can fail to encode)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("ascii")


def record_hash(obj: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a record's canonical JSON without its own ``hash``."""
    return hashlib.sha256(canonical_json({k: v for k, v in obj.items() if k != "hash"})).hexdigest()


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """A log line as a JSON object with a well-formed hash and prevHash, or ``None``."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(obj, dict):
        return None
    ok = all(isinstance(obj.get(k), str) and _HASH.fullmatch(obj[k]) for k in ("hash", "prevHash"))
    return obj if ok else None


class FindingKind(StrEnum):
    """What :meth:`DecisionLog.verify` found. ``TORN`` and ``HEAD_BEHIND`` are crash artifacts."""

    MISSING = "missing"  # no log file
    UNREADABLE = "unreadable"  # a line is not a record
    EDITED = "edited"  # a record does not match its own hash
    DELETED = "deleted"  # a record's predecessor is absent
    INSERTED = "inserted"  # lines that are not part of the chain
    REORDERED = "reordered"  # records out of chain order
    TRUNCATED = "truncated"  # whole records cut from the end (the head counts more)
    HEAD_MISMATCH = "head-mismatch"  # the head names a hash the log does not have there
    HEAD_MISSING = "head-missing"  # records but no head: truncation cannot be checked
    TORN = "torn"  # a final line without its newline: a write interrupted by a crash
    HEAD_BEHIND = "head-behind"  # the last record written, the head not yet: a crash


CRASH_ARTIFACTS = frozenset({FindingKind.TORN, FindingKind.HEAD_BEHIND})


@dataclass(frozen=True)
class Finding:
    """One thing :meth:`DecisionLog.verify` found, and where."""

    kind: FindingKind
    line: int | None  # 1-based line of the log, when one is to blame
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on a log: ``ok`` when nothing was found; ``tampered`` when something other
    than a crash artifact was."""

    path: Path
    records: int  # complete lines
    findings: tuple[Finding, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def tampered(self) -> bool:
        return any(f.kind not in CRASH_ARTIFACTS for f in self.findings)

    @property
    def torn(self) -> bool:
        return any(f.kind is FindingKind.TORN for f in self.findings)

    def kinds(self) -> set[FindingKind]:
        return {f.kind for f in self.findings}


Link = tuple[str, str] | None  # (hash, prevHash) of a readable line, None for an unreadable one


def chain_findings(links: Sequence[Link]) -> list[Finding]:
    """Name where the chain breaks: a whole chain out of order is one REORDERED finding."""
    hash_of = {i: lk[0] for i, lk in enumerate(links, 1) if lk}
    line_of = {h: i for i, h in hash_of.items()}
    breaks = []
    for i, lk in enumerate(links, 1):
        before = GENESIS if i == 1 else hash_of.get(i - 1)
        if lk and before is not None and lk[1] != before:
            breaks.append((i, lk[1]))
    if not breaks:
        return []
    successor = {lk[1]: i for i, lk in enumerate(links, 1) if lk}
    order: list[int] = []
    current = GENESIS
    while current in successor and len(order) < len(links):
        order.append(successor[current])
        current = hash_of[order[-1]]
    if len(order) == len(links) == len(set(order)):
        moved = [line for position, line in enumerate(order, 1) if position != line]
        names = ", ".join(map(str, sorted(moved)))
        return [Finding(FindingKind.REORDERED, min(moved), f"lines {names} are out of order")]
    first = {h: i for i, h in sorted(hash_of.items(), reverse=True)}
    found = []
    for i, prev in breaks:
        j = line_of.get(prev)
        if first[hash_of[i]] < i:
            why = f"a copy of line {first[hash_of[i]]}"
            found.append(Finding(FindingKind.INSERTED, i, why))
        elif prev == GENESIS:
            found.append(Finding(FindingKind.REORDERED, i, "claims to be the first record"))
        elif j is None:
            why = f"the record before it is missing (deleted, or line {i - 1} edited and re-hashed)"
            found.append(Finding(FindingKind.DELETED, i, why))
        elif j >= i:
            found.append(Finding(FindingKind.REORDERED, i, f"belongs after line {j}"))
        else:
            why = f"follows line {j}, not {i - 1}: lines {j + 1}-{i - 1} do not belong there"
            found.append(Finding(FindingKind.INSERTED, i, why))
    return found


def head_findings(links: Sequence[Link], head: tuple[int, str] | None) -> list[Finding]:
    """Compare the head file (records, last hash) with the log."""
    n = len(links)
    if head is None:
        return [] if n == 0 else [Finding(FindingKind.HEAD_MISSING, None, "no head file")]
    count, last = head
    if count < 0:
        return [Finding(FindingKind.HEAD_MISMATCH, None, f"unreadable head file: {last}")]
    if count > n:
        why = f"the head counts {count} records, the log holds {n}: {count - n} cut from the end"
        return [Finding(FindingKind.TRUNCATED, None, why)]
    at_count = GENESIS if count == 0 else (links[count - 1] or ("?", ""))[0]
    if at_count != last:
        why = f"the head names a hash that record {count} does not have"
        return [Finding(FindingKind.HEAD_MISMATCH, count or None, why)]
    if count < n:
        # Records chained on after the record the head names: appends whose head update a crash
        # cut off (two crashes in a row leave it two behind). Truncation makes the head *ahead*.
        why = (
            f"{n - count} record(s) written after the head's last update (a crash between "
            "writing and updating the head); the next append fixes it"
        )
        return [Finding(FindingKind.HEAD_BEHIND, count + 1, why)]
    return []
