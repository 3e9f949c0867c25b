"""The decision record and its hash-chained log: round trips, tampering, crashes, concurrency."""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from trimtab.controller import decisions
from trimtab.controller.decisions import (
    GENESIS,
    Action,
    Decision,
    DecisionLog,
    DecisionLogError,
    DecisionWeights,
    FindingKind,
    new_id,
)
from trimtab.controller.record import canonical_json, record_hash
from trimtab.slo.health import Level

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def decision(i: int = 0, **changes: Any) -> Decision:
    fields: dict[str, Any] = {
        "at": T0 + timedelta(seconds=30 * i),
        "target": "Rollout/checkout",
        "kind": "Rollout",
        "action": Action.ADVANCE,
        "phase": "Progressing",
        "weights": DecisionWeights({"v1": 95, "v2": 5}, {"v1": 75, "v2": 25}),
        "health": {
            "v1": {"checkout-errors": "HEALTHY"},
            "v2": {"checkout-errors": "HEALTHY"},
        },
        "reasons": [
            {
                "slo": "checkout-errors",
                "backend": "v2",
                "level": "HEALTHY",
                "value": 0.4,
                "threshold": 6.0,
                "window": "5m",
                "query": 'sum(rate(http_requests_total{code=~"5.."}[5m]))',
                "message": f"healthy for 2m (cycle {i})",
            }
        ],
        "guardrails": [
            {
                "name": "maxStep",
                "proposed": {"v1": 50, "v2": 50},
                "bounded": {"v1": 75, "v2": 25},
                "detail": "at most 20 points per shift",
            }
        ],
        "dry_run": False,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    fields.update(changes)
    return Decision(**fields)


@pytest.fixture
def log(tmp_path: Path) -> DecisionLog:
    return DecisionLog(tmp_path / "decisions.jsonl")


def fill(log: DecisionLog, n: int = 5) -> list[Decision]:
    return [log.append(decision(i)) for i in range(n)]


def lines_of(log: DecisionLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def rehash(line: bytes, **changes: Any) -> bytes:
    obj = json.loads(line)
    obj.update(changes)
    obj["hash"] = record_hash(obj)
    return canonical_json(obj) + b"\n"


# --- the record -------------------------------------------------------------------------------


def test_decision_round_trips_through_json() -> None:
    original = decision(weights=DecisionWeights({"v1": 95, "v2": 5}, {"v1": 75}, {"v1": 75}))
    assert Decision.from_json(original.to_json()) == original
    assert Decision.from_json(json.dumps(original.to_json())) == original


def test_json_keys_are_those_of_the_design_in_camel_case() -> None:
    data = decision().to_json()
    assert set(data) == {
        "id", "at", "target", "kind", "action", "phase", "cause", "weights", "health", "reasons",
        "guardrails", "dryRun", "actor", "traceId", "prevHash", "hash",
    }  # fmt: skip
    assert set(data["weights"]) == {"current", "desired", "applied"}
    assert data["dryRun"] is False
    assert data["actor"] == "controller"
    assert data["at"] == "2025-01-01T12:00:00+00:00"


def test_values_become_plain_json_at_construction() -> None:
    class Note:
        def to_json(self) -> dict[str, object]:
            return {"name": "minInterval", "proposed": {"v2": 50}}

    made = decision(
        reasons=[{"value": math.nan, "threshold": math.inf, "low": -math.inf, "seen": (1, 2)}],
        guardrails=[Note()],
        at=datetime(2025, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))),
    )
    assert made.reasons[0] == {"value": "NaN", "threshold": "+Inf", "low": "-Inf", "seen": [1, 2]}
    assert made.guardrails[0] == {"name": "minInterval", "proposed": {"v2": 50}}
    assert made.at == T0
    assert made.at.tzinfo is UTC
    json.dumps(made.to_json(), allow_nan=False)


def test_any_text_can_be_logged(log: DecisionLog) -> None:
    text = "zone \u00e9t\u00e9 \u2014 \U0001f680 \ud800"  # accents, an emoji, a lone surrogate
    written = log.append(decision(reasons=[{"message": text}]))
    assert list(log.records()) == [written]
    assert written.reasons[0]["message"] == text
    assert log.path.read_bytes().isascii()


def test_to_json_returns_copies_that_cannot_change_the_decision() -> None:
    made = decision()
    made.to_json()["reasons"][0]["value"] = 99
    assert made.reasons[0]["value"] == 0.4


def test_equal_health_and_weights_are_kept_once_and_each_decision_reads_its_own() -> None:
    sick = {"v1": {"checkout-errors": "HEALTHY"}, "v2": {"checkout-errors": "DEGRADED"}}
    a, b, c = decision(0), decision(1), decision(2, health=sick)
    assert a.health is b.health  # read-only values, equal: one object
    assert a.weights.current is b.weights.current
    assert c.health is not a.health
    assert c.health == sick
    assert a.health["v2"] == {"checkout-errors": "HEALTHY"}
    levels = decision(3, health={"v1": {"checkout-errors": Level.DEGRADED}})
    assert levels.health == {"v1": {"checkout-errors": "DEGRADED"}}
    copied = a.to_json()
    copied["health"]["v1"]["checkout-errors"] = "UNKNOWN"
    assert b.health["v1"]["checkout-errors"] == "HEALTHY"


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"at": datetime(2025, 1, 1)}, "naive"),
        ({"kind": "Deployment"}, "kind"),
        ({"target": "Balance/checkout"}, "target"),
        ({"target": "Rollout/"}, "target"),
        ({"action": "jump"}, "jump"),
        ({"health": {"v2": {"checkout-errors": "GREEN"}}}, "health"),
        ({"reasons": [{"value": object()}]}, "JSON"),
        ({"reasons": ["just a string"]}, "mapping"),
        ({"id": "has spaces in it"}, "id"),
        ({"hash": "abc"}, "SHA-256"),
        ({"actor": ""}, "actor"),
    ],
)
def test_invalid_decisions_are_refused(changes: dict[str, Any], complaint: str) -> None:
    with pytest.raises((ValueError, TypeError), match=complaint):
        decision(**changes)


def test_weights_are_non_negative_integers() -> None:
    with pytest.raises(ValueError, match="negative"):
        DecisionWeights({"v1": 100}, {"v1": -1})
    with pytest.raises(TypeError, match="integer"):
        DecisionWeights({"v1": 1.5}, {})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="integer"):
        DecisionWeights({"v1": True}, {})


def test_from_json_refuses_unknown_keys() -> None:
    data = decision().to_json() | {"token": "s3cret"}
    with pytest.raises(ValueError, match="token"):
        Decision.from_json(data)


def test_ids_sort_by_time_and_do_not_collide() -> None:
    first = new_id(T0, "00000000")
    assert first == "20250101T120000.000Z-00000000"
    later = [new_id(T0 + timedelta(milliseconds=ms)) for ms in (1, 999, 1000, 60_000)]
    assert sorted([*later, first]) == [first, *later]
    assert len({new_id(T0) for _ in range(20_000)}) == 20_000  # a cycle's, at 20,000 targets
    assert re.match(r"^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{16}$", decision().id)


# --- the chain --------------------------------------------------------------------------------


def test_a_fresh_chain_verifies_and_links_every_record(log: DecisionLog) -> None:
    written = fill(log)
    result = log.verify()
    assert result.ok
    assert result.records == 5
    assert written[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(written))
    assert list(log.records()) == written
    head = json.loads(log.head_path.read_text())
    assert head == {"count": 5, "hash": written[-1].hash}
    assert log.head_path.name == "decisions.head"


def test_append_returns_what_was_written(log: DecisionLog) -> None:
    appended = log.append(decision())
    assert appended.hash == record_hash(appended.to_json())
    assert Decision.from_json(lines_of(log)[0].decode()) == appended


def test_a_batch_is_one_write_chained_like_single_appends(log: DecisionLog) -> None:
    first = log.append(decision(0))
    batch = log.append_all(decision(i) for i in range(1, 51))
    assert log.append_all([]) == []
    assert batch[0].prev_hash == first.hash
    assert [d.hash for d in log.records()] == [first.hash, *(d.hash for d in batch)]
    assert log.verify().ok
    assert json.loads(log.head_path.read_text()) == {"count": 51, "hash": batch[-1].hash}


def test_appending_without_a_head_counts_the_records_again(log: DecisionLog) -> None:
    fill(log)
    log.head_path.unlink()
    log.append(decision(5))
    assert json.loads(log.head_path.read_text())["count"] == 6
    assert log.verify().ok


def test_find_and_last(log: DecisionLog) -> None:
    written = fill(log, 3)
    other = log.append(decision(9, target="Balance/zones", kind="Balance", action="drain"))
    assert log.find(written[1].id) == written[1]
    assert log.find("20990101T000000.000Z-deadbeef") is None
    assert log.last("Rollout/checkout") == written[2]
    assert log.last("Balance/zones") == other
    assert log.last("Rollout/nothing") is None


def test_find_and_last_decode_only_the_records_they_are_after(log: DecisionLog) -> None:
    """Another record naming the id or the target in its text is read and passed over; a
    damaged record elsewhere is not decoded at all (`trimtab verify` is what reports it)."""
    written = fill(log, 3)
    mention = f"see {written[1].id} about Rollout/checkout"
    other = log.append(
        decision(
            9,
            target="Balance/zones",
            kind="Balance",
            action="drain",
            reasons=[{"message": mention}],
        )
    )
    assert log.find(written[1].id) == written[1]
    assert log.last("Rollout/checkout") == written[2]
    assert list(log.records("Rollout/checkout")) == written
    assert list(log.records("Balance/zones")) == [other]
    lines = lines_of(log)
    log.path.write_bytes(b"not a decision\n" + b"".join(lines[1:]))
    assert log.find(written[1].id) == written[1]
    assert log.last("Balance/zones") == other
    assert list(log.records("Balance/zones")) == [other]
    broken = json.dumps({"id": written[0].id, "broken": True}).encode() + b"\n"
    log.path.write_bytes(broken + b"".join(lines[1:]))
    with pytest.raises(DecisionLogError, match=r"decisions.jsonl:1: not a decision"):
        log.find(written[0].id)  # the record it is after is the damaged one: said so


def test_said_is_each_targets_latest_gist_and_decodes_only_those(
    log: DecisionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = fill(log, 3)
    other = log.append(decision(9, target="Balance/zones", kind="Balance", action="drain"))
    decoded: list[object] = []
    from_json = Decision.from_json

    def counted(data: Any) -> Decision:
        decoded.append(data)
        return from_json(data)

    monkeypatch.setattr(Decision, "from_json", counted)
    asked = ["Rollout/checkout", "Balance/zones", "Rollout/nothing"]
    assert log.said(asked) == {"Rollout/checkout": written[2].gist(), "Balance/zones": other.gist()}
    assert len(decoded) == 2  # the latest of each target, not the four records
    newer = DecisionLog(log.path).append(decision(10, action="advance"))  # another writer
    assert log.said(asked)["Rollout/checkout"] == newer.gist()
    log.path.write_bytes(b"not json\n" + b"".join(lines_of(log)[1:]))
    with pytest.raises(DecisionLogError, match=r"decisions.jsonl:1: not a decision"):
        log.said(asked)


def test_said_reads_each_lines_target_where_another_field_has_that_name(log: DecisionLog) -> None:
    """A record's target is read from its text; a line with another ``target`` field (a
    reason's, here) is parsed as JSON."""
    mine = log.append(decision(0))
    confusing = {"message": "x", "target": "Rollout/checkout"}
    theirs = log.append(
        decision(1, target="Balance/zones", kind="Balance", action="drain", reasons=[confusing])
    )
    fresh = DecisionLog(log.path)
    assert fresh.said(["Rollout/checkout", "Balance/zones"]) == {
        "Rollout/checkout": mine.gist(),
        "Balance/zones": theirs.gist(),
    }


def test_having_names_the_ids_the_log_holds_in_one_pass(log: DecisionLog) -> None:
    written = fill(log, 4)
    absent = "20990101T000000.000Z-deadbeef"
    assert log.having([written[0].id, written[3].id, absent]) == {written[0].id, written[3].id}
    assert log.having([]) == set()
    # An id that appears in another field (here an SLO named like it) is not a record's.
    named = log.append(decision(7, health={"v1": {written[1].id: "HEALTHY"}}))
    assert log.having([written[1].id]) == {written[1].id}
    assert log.having([absent, named.id]) == {named.id}
    log.path.write_bytes(log.path.read_bytes() + b"not json\n")
    assert log.having([absent]) == set()  # a damaged line elsewhere: for verify to report
    damaged = json.dumps({"broken": True, "id": absent}, separators=(",", ":")).encode() + b"\n"
    log.path.write_bytes(log.path.read_bytes() + damaged)
    with pytest.raises(DecisionLogError, match=":7:"):
        log.having([absent])  # the line that holds the id is not a decision: said so


def test_whole_log_passes_read_it_a_chunk_at_a_time(
    log: DecisionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """said, having and append_missing read the log in chunks (a large log is never held at
    once): lines that straddle chunks are whole, and a torn last line is left out."""
    written = fill(log, 3)
    other = log.append(decision(9, target="Balance/zones", kind="Balance", action="drain"))
    monkeypatch.setattr(decisions, "_READ", 37)  # a record is some 700 bytes
    with log.path.open("ab") as torn:
        torn.write(canonical_json(decision(10, target="Balance/torn", kind="Balance").to_json()))
    fresh = DecisionLog(log.path)
    asked = ["Rollout/checkout", "Balance/zones", "Balance/torn"]
    assert fresh.said(asked) == {
        "Rollout/checkout": written[2].gist(),
        "Balance/zones": other.gist(),
    }
    assert fresh.having([written[1].id, other.id]) == {written[1].id, other.id}
    assert fresh.append_missing([decision(0, id=written[0].id)]) == []


def test_append_missing_records_only_the_decisions_the_log_lacks(log: DecisionLog) -> None:
    """A person's command and a controller that both hold a decision record it once."""
    held = log.append(decision(0))
    lacking = [decision(1), decision(2)]
    other = DecisionLog(log.path)  # another process
    appended = other.append_missing([decision(0, id=held.id), lacking[0]])
    assert [d.id for d in appended] == [lacking[0].id]
    assert appended[0].hash is not None
    assert [d.id for d in log.append_missing([*lacking, decision(0, id=held.id)])] == [
        lacking[1].id
    ]
    assert log.append_missing(lacking) == []
    assert [d.id for d in log.records()] == [held.id, lacking[0].id, lacking[1].id]
    assert log.verify().ok
    last = log.last("Rollout/checkout")
    assert last is not None
    assert last.id == lacking[1].id
    assert log.said(["Rollout/checkout"]) == {"Rollout/checkout": last.gist()}


def test_a_sealed_decision_is_the_record_as_written(log: DecisionLog) -> None:
    made = decision(0, weights=DecisionWeights({"v1": 90, "v2": 10}, {"v1": 90, "v2": 10}))
    sealed = log.append(made)
    assert sealed.prev_hash == GENESIS
    assert sealed == Decision.from_json(lines_of(log)[0].decode())
    assert made.hash is None  # the decision appended is left as it was
    with pytest.raises(ValueError, match="SHA-256"):
        made.sealed(GENESIS, "not a hash")


def _edit(lines: list[bytes]) -> list[bytes]:
    lines[2] = lines[2].replace(b'"action":"advance"', b'"action":"rollback"')
    return lines


def _edit_and_rehash(lines: list[bytes]) -> list[bytes]:
    lines[2] = rehash(lines[2], action="rollback")
    return lines


def _delete_middle(lines: list[bytes]) -> list[bytes]:
    del lines[2]
    return lines


def _delete_first(lines: list[bytes]) -> list[bytes]:
    del lines[0]
    return lines


def _swap(lines: list[bytes]) -> list[bytes]:
    lines[1], lines[2] = lines[2], lines[1]
    return lines


def _duplicate(lines: list[bytes]) -> list[bytes]:
    lines.insert(2, lines[1])
    return lines


def _garble(lines: list[bytes]) -> list[bytes]:
    lines[1] = b'{"not": "a record"}\n'
    return lines


def _cut_tail(lines: list[bytes]) -> list[bytes]:
    return lines[:-2]


@pytest.mark.parametrize(
    ("mutate", "kind", "line"),
    [
        (_edit, FindingKind.EDITED, 3),
        (_edit_and_rehash, FindingKind.DELETED, 4),  # the next record no longer follows it
        (_delete_middle, FindingKind.DELETED, 3),
        (_delete_first, FindingKind.DELETED, 1),
        (_swap, FindingKind.REORDERED, 2),
        (_duplicate, FindingKind.INSERTED, 3),
        (_garble, FindingKind.UNREADABLE, 2),
        (_cut_tail, FindingKind.TRUNCATED, None),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_tampering_is_detected_and_named(
    log: DecisionLog, mutate: Callable[[list[bytes]], list[bytes]], kind: FindingKind, line: int
) -> None:
    fill(log)
    log.path.write_bytes(b"".join(mutate(lines_of(log))))
    result = log.verify()
    assert result.tampered
    assert (kind, line) in [(f.kind, f.line) for f in result.findings], result.findings
    assert not result.torn


def test_a_reorder_is_one_finding_naming_the_moved_lines(log: DecisionLog) -> None:
    fill(log)
    log.path.write_bytes(b"".join(_swap(lines_of(log))))
    (finding,) = log.verify().findings
    assert finding.kind is FindingKind.REORDERED
    assert "lines 2, 3" in finding.message


def test_the_head_file_is_what_catches_whole_lines_cut_from_the_end(log: DecisionLog) -> None:
    fill(log)
    log.path.write_bytes(b"".join(lines_of(log)[:-1]))
    assert log.verify().kinds() == {FindingKind.TRUNCATED}
    log.head_path.unlink()  # without the head, the shorter chain is self-consistent
    assert log.verify().kinds() == {FindingKind.HEAD_MISSING}


def test_appends_cut_short_before_the_first_head_update_leave_a_head_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_head = DecisionLog._write_head

    def killed_after_the_records(self: DecisionLog, count: int, last: str) -> None:
        if count > 0:
            raise KeyboardInterrupt  # the process dies between the records and the head
        write_head(self, count, last)

    monkeypatch.setattr(DecisionLog, "_write_head", killed_after_the_records)
    for i in range(2):  # two processes in a row, each cut short
        with pytest.raises(KeyboardInterrupt):
            DecisionLog(tmp_path / "decisions.jsonl").append(decision(i))
    monkeypatch.undo()
    log = DecisionLog(tmp_path / "decisions.jsonl")
    verdict = log.verify()
    assert verdict.records == 2
    assert verdict.kinds() == {FindingKind.HEAD_BEHIND}  # a crash artifact, not a lost head
    log.append(decision(2))
    assert log.verify().ok


@pytest.mark.parametrize("damage", ["cut the tail", "delete the log"])
def test_appending_after_damage_keeps_the_evidence(log: DecisionLog, damage: str) -> None:
    fill(log)
    if damage == "cut the tail":
        log.path.write_bytes(b"".join(lines_of(log)[:-2]))
    else:
        log.path.unlink()
    log.append(decision(9))  # the controller can still record (and roll back)
    result = log.verify()
    assert result.tampered
    assert [f.kind for f in result.findings] == [FindingKind.HEAD_MISMATCH]
    assert "head.mismatch" in result.findings[0].message
    assert json.loads(log.mismatch_path.read_text())["count"] == 5


def test_a_head_naming_another_hash_is_a_mismatch(log: DecisionLog) -> None:
    fill(log)
    log.head_path.write_text(json.dumps({"count": 5, "hash": "f" * 64}))
    assert log.verify().kinds() == {FindingKind.HEAD_MISMATCH}
    log.head_path.write_text("{ broken")
    assert log.verify().kinds() == {FindingKind.HEAD_MISMATCH}


def test_a_missing_log_is_reported(log: DecisionLog) -> None:
    assert log.verify().kinds() == {FindingKind.MISSING}
    fill(log, 2)
    log.path.unlink()
    result = log.verify()
    assert result.kinds() == {FindingKind.MISSING}
    assert result.tampered
    assert list(log.records()) == []


# --- crashes ----------------------------------------------------------------------------------


def torn(log: DecisionLog) -> int:
    """Leave what a crash in the middle of the next append's write would."""
    line = canonical_json(decision(99).to_json())
    with log.path.open("ab") as file:
        file.write(line[: len(line) // 2])
    return len(line) // 2


def test_a_torn_final_line_is_a_crash_not_tampering_and_repair_drops_it(log: DecisionLog) -> None:
    written = fill(log)
    before = log.path.read_bytes()
    size = torn(log)
    result = log.verify()
    assert result.kinds() == {FindingKind.TORN}
    assert result.torn
    assert not result.tampered
    assert result.records == 5
    assert result.findings[0].line == 6
    assert list(log.records()) == written  # never committed, never read
    assert log.repair() == size
    assert log.path.read_bytes() == before
    assert log.verify().ok
    assert log.repair() == 0


def test_the_next_append_drops_a_torn_line_first(log: DecisionLog) -> None:
    fill(log)
    torn(log)
    log.append(decision(6))
    result = log.verify()
    assert result.ok, result.findings
    assert result.records == 6


def test_repair_never_drops_a_complete_line(log: DecisionLog) -> None:
    fill(log)
    log.path.write_bytes(b"".join(_delete_middle(lines_of(log))))
    tampered = log.path.read_bytes()
    assert log.repair() == 0
    assert log.path.read_bytes() == tampered
    assert log.verify().tampered


def test_a_head_one_record_behind_is_a_crash_artifact(log: DecisionLog) -> None:
    written = fill(log)
    log.head_path.write_text(json.dumps({"count": 4, "hash": written[3].hash}))
    result = log.verify()
    assert result.kinds() == {FindingKind.HEAD_BEHIND}
    assert not result.tampered
    log.repair()
    assert log.verify().ok
    log.head_path.write_text(json.dumps({"count": 4, "hash": written[3].hash}))
    log.append(decision(5))  # the count continues from the record on disk, not the stale head
    assert json.loads(log.head_path.read_text())["count"] == 6
    assert log.verify().ok


def test_nothing_is_chained_onto_an_unreadable_last_record(log: DecisionLog) -> None:
    fill(log, 2)
    with log.path.open("ab") as file:
        file.write(b"garbage\n")
    with pytest.raises(DecisionLogError, match="unreadable"):
        log.append(decision(3))
    with pytest.raises(DecisionLogError, match=":3: not a decision"):
        list(log.records())


# --- concurrency ------------------------------------------------------------------------------


def test_threads_append_into_one_chain(log: DecisionLog) -> None:
    def work(n: int) -> None:
        for i in range(25):
            log.append(decision(i, actor=f"thread-{n}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = log.verify()
    assert result.ok, result.findings
    assert result.records == 100


APPENDER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    from trimtab.controller.decisions import Decision, DecisionLog, DecisionWeights

    path, go, actor = sys.argv[1:4]
    log = DecisionLog(path)
    while not Path(go).exists():
        time.sleep(0.001)
    for i in range(200):
        log.append(Decision(
            at=datetime.now(UTC), target="Rollout/checkout", kind="Rollout", action="hold",
            weights=DecisionWeights({"v1": 100, "v2": 0}, {"v1": 100, "v2": 0}),
            reasons=[{"message": str(i)}], dry_run=False, actor=actor,
        ))
    """
)


def test_two_processes_append_400_records_into_one_valid_chain(log: DecisionLog) -> None:
    go = log.path.parent / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(log.path), str(go), actor])
        for actor in ("alice", "bob")
    ]
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    result = log.verify()
    assert result.ok, result.findings
    assert result.records == 400
    records = list(log.records())
    assert len({r.id for r in records}) == 400
    for actor in ("alice", "bob"):
        mine = [int(r.reasons[0]["message"]) for r in records if r.actor == actor]
        assert mine == list(range(200))


def test_a_head_several_records_behind_is_a_crash_artifact_the_next_append_fixes(
    log: DecisionLog,
) -> None:
    sealed = fill(log, 3)
    log._write_head(1, sealed[0].hash or "")  # two crashes in a row cut two head updates
    result = log.verify()
    assert result.kinds() == {FindingKind.HEAD_BEHIND}
    assert not result.tampered
    log.append(decision(9))
    assert log.verify().ok
    assert not log.mismatch_path.exists()
