"""The ``file`` adapter on real files: stable text, atomic writes, a person's edits reported."""

from __future__ import annotations

import errno
import gc
import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from trimtab.adapters import ownedfile
from trimtab.adapters.file import FileAdapter, render
from trimtab.slo.ports import TrafficAdapter, Verification
from trimtab.slo.routes import FileRoute
from trimtab.slo.traffic import PermanentTrafficError, TransientTrafficError, WeightsError

BACKENDS = ["v1", "v2"]
START = {"v1": 100, "v2": 0}


def adapter(path: Path, backends: list[str] = BACKENDS, **kwargs: object) -> FileAdapter:
    return FileAdapter(FileRoute(path=str(path)), backends, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "weights.json"


def test_it_is_a_traffic_adapter(path: Path) -> None:
    port: TrafficAdapter = adapter(path)
    assert "weights.json" in repr(port)


def test_set_get_verify_round_trip(path: Path) -> None:
    route = adapter(path)
    route.set_weights({"v2": 5, "v1": 95})
    assert route.get_weights() == {"v1": 95, "v2": 5}
    assert route.verify({"v1": 95, "v2": 5}) is Verification.VERIFIED
    assert route.verify({"v1": 90, "v2": 10}) is Verification.PENDING
    assert json.loads(path.read_text()) == {"v1": 95, "v2": 5}


def test_text_is_stable_for_gitops_diffs(path: Path) -> None:
    adapter(path, ["zone-c", "zone-a", "zone-b"]).set_weights(
        {"zone-c": 33, "zone-b": 33, "zone-a": 34}
    )
    assert path.read_text() == '{\n  "zone-a": 34,\n  "zone-b": 33,\n  "zone-c": 33\n}\n'
    assert render({"b": 1, "a": 99}) == render({"a": 99, "b": 1})


@given(st.dictionaries(st.text(max_size=12), st.integers(0, 100), max_size=5))
def test_text_is_what_json_writes_with_an_indent(weights: dict[str, int]) -> None:
    assert render(weights) == json.dumps(weights, sort_keys=True, indent=2) + "\n"


def test_rendering_leaves_nothing_for_the_collector() -> None:
    """At 10,000 moves a cycle, with the collector paused, every cycle left behind would stay
    until the cycle ends (json's indenting encoder leaves one per call)."""
    gc.collect()
    gc.disable()
    try:
        for share in range(100):
            render({"v1": 100 - share, "v2": share})
        left = gc.collect()
    finally:
        gc.enable()
    assert left == 0


def test_setting_the_same_weights_again_writes_nothing(path: Path) -> None:
    route = adapter(path)
    route.set_weights({"v1": 75, "v2": 25})
    first = path.stat()
    route.set_weights({"v2": 25, "v1": 75})
    assert path.stat().st_ino == first.st_ino  # not replaced: watchers see no change
    assert path.stat().st_mtime_ns == first.st_mtime_ns
    route.set_weights({"v1": 50, "v2": 50})
    assert path.stat().st_ino != first.st_ino  # replaced by rename, never rewritten in place
    assert route.get_weights() == {"v1": 50, "v2": 50}


def test_no_temporary_files_are_left_behind(path: Path) -> None:
    route = adapter(path)
    for canary in range(0, 101, 5):
        route.set_weights({"v1": 100 - canary, "v2": canary})
    assert [p.name for p in path.parent.iterdir()] == ["weights.json"]


@pytest.mark.parametrize(
    "weights",
    [{"v1": 90, "v2": 5}, {"v1": 100}, {"v1": 95, "v2": 5, "v3": 0}, {"v1": 95.0, "v2": 5}],
)
def test_invalid_weights_write_nothing(path: Path, weights: dict[str, int]) -> None:
    route = adapter(path)
    with pytest.raises(WeightsError):
        route.set_weights(weights)
    assert not path.exists()
    route.set_weights({"v1": 80, "v2": 20})
    before = path.read_bytes()
    with pytest.raises(WeightsError):
        route.set_weights(weights)
    assert path.read_bytes() == before
    with pytest.raises(WeightsError):
        route.verify(weights)


# ---------------------------------------------------------------------- a person's edits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"{v1: 95, v2: 5}", "not valid weights JSON"),
        (b'{"v1": 95, "v2": 5', "not valid weights JSON"),
        (b"", "not valid weights JSON"),
        (b'{"v1": 95, "v1": 5}', "backend 'v1' appears more than once"),
        (b'{"v1": NaN, "v2": 5}', "NaN is not a weight"),
        (b'[["v1", 100]]', "expected a JSON object of backend to percent, not list"),
        (b'{"v1": 100}', "missing 'v2'"),
        (b'{"v1": 95, "v2": 5, "v3": 0}', "unknown 'v3'"),
        (b'{"v1": 95.0, "v2": 5}', "must be an integer from 0 to 100, not float 95.0"),
        (b'{"v1": "95", "v2": 5}', "not str '95'"),
        (b'{"v1": 90, "v2": 5}', "must sum to 100, not 95"),
        (b'{"v1": 95, "v2": 5}\xff', "not UTF-8"),
        (b" " * 70_000 + b'{"v1": 95, "v2": 5}', "larger than 65536 bytes"),
    ],
)
def test_a_file_a_person_broke_is_a_permanent_error_naming_the_path(
    path: Path, text: bytes, expected: str
) -> None:
    route = adapter(path)
    path.write_bytes(text)
    for call in (route.get_weights, lambda: route.verify({"v1": 95, "v2": 5})):
        with pytest.raises(PermanentTrafficError) as caught:
            call()
        assert str(path) in str(caught.value)
        assert expected in str(caught.value)
    assert path.read_bytes() == text  # reported, not repaired
    route.set_weights({"v1": 95, "v2": 5})  # the next change of weights replaces it
    assert route.get_weights() == {"v1": 95, "v2": 5}


def test_a_valid_edit_by_a_person_is_read_back_and_fails_verification(path: Path) -> None:
    route = adapter(path)
    route.set_weights({"v1": 75, "v2": 25})
    path.write_text('{"v1": 100, "v2": 0}')  # someone pulled the canary by hand
    assert route.get_weights() == {"v1": 100, "v2": 0}
    assert route.verify({"v1": 75, "v2": 25}) is Verification.PENDING


# ------------------------------------------------------------- reading only what changed


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths read from disk, in order (the adapter's reads, counted)."""
    seen: list[str] = []
    read_bytes = ownedfile.OwnedFile.read_bytes

    def counted(self: ownedfile.OwnedFile) -> bytes | None:
        seen.append(str(self.path))
        return read_bytes(self)

    monkeypatch.setattr(ownedfile.OwnedFile, "read_bytes", counted)
    return seen


def settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files count as settled 10 ms after their last change (2 s in use), and this waits 30."""
    monkeypatch.setattr(ownedfile, "SETTLED_NS", 10_000_000)
    time.sleep(0.03)


def test_a_settled_file_is_read_once_until_it_changes(
    path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    route = adapter(path)
    route.set_weights({"v1": 90, "v2": 10})
    settle(monkeypatch)
    reads.clear()
    assert [route.get_weights() for _ in range(3)] == [{"v1": 90, "v2": 10}] * 3
    assert route.verify({"v1": 90, "v2": 10}) is Verification.VERIFIED
    assert len(reads) == 1
    path.write_text('{"v1": 10, "v2": 90}')  # the same size, in place: a person's edit
    assert route.get_weights() == {"v1": 10, "v2": 90}
    assert len(reads) == 2


def test_a_recent_change_is_read_every_time(path: Path, reads: list[str]) -> None:
    """Within a timestamp's granularity, a second edit of the same size could look like the
    first: a file changed under 2 s ago is never taken as unchanged."""
    route = adapter(path)
    path.write_text('{"v1": 90, "v2": 10}')
    assert route.get_weights() == {"v1": 90, "v2": 10}
    path.write_text('{"v1": 10, "v2": 90}')
    assert route.get_weights() == {"v1": 10, "v2": 90}
    assert route.get_weights() == {"v1": 10, "v2": 90}
    assert len(reads) == 3


def test_an_edit_that_restores_the_modification_time_is_seen(
    path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    route = adapter(path)
    path.write_text('{"v1": 90, "v2": 10}')
    settle(monkeypatch)
    assert route.get_weights() == {"v1": 90, "v2": 10}
    before = path.stat()
    path.write_text('{"v1": 10, "v2": 90}')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the change time moves on
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    settle(monkeypatch)
    assert route.get_weights() == {"v1": 10, "v2": 90}


def test_a_file_replaced_by_another_is_seen(
    path: Path, tmp_path: Path, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    route = adapter(path)
    path.write_text('{"v1": 90, "v2": 10}')
    other = tmp_path / "other.json"
    other.write_text('{"v1": 10, "v2": 90}')
    settle(monkeypatch)
    assert route.get_weights() == {"v1": 90, "v2": 10}
    os.replace(other, path)  # another inode, older times
    assert route.get_weights() == {"v1": 10, "v2": 90}
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(PermanentTrafficError, match="symbolic link"):
        route.get_weights()


# -------------------------------------------------------------------------- a missing file


def test_a_missing_file_without_initial_weights_is_permanent(path: Path) -> None:
    route = adapter(path)
    with pytest.raises(PermanentTrafficError, match="does not exist") as caught:
        route.get_weights()
    assert str(path) in str(caught.value)
    assert route.verify(START) is Verification.PENDING
    assert not path.exists()


def test_initial_weights_are_written_on_first_read(path: Path) -> None:
    route = adapter(path, initial=START)
    assert route.get_weights() == START
    assert json.loads(path.read_text()) == START
    assert route.verify(START) is Verification.VERIFIED


def test_initial_weights_without_create_are_read_but_never_written(path: Path) -> None:
    route = adapter(path, initial=START, create=False)
    assert route.get_weights() == START
    assert not path.exists()
    assert route.verify(START) is Verification.PENDING  # verify never writes


def test_initial_weights_do_not_override_an_existing_file(path: Path) -> None:
    path.write_text('{"v1": 50, "v2": 50}')
    assert adapter(path, initial=START).get_weights() == {"v1": 50, "v2": 50}


@pytest.mark.parametrize(
    ("backends", "initial"),
    [([], None), (["v1", "v1"], None), (["v1", "v2;drop"], None), (BACKENDS, {"v1": 100})],
)
def test_bad_construction_is_a_value_error(
    path: Path, backends: list[str], initial: dict[str, int] | None
) -> None:
    with pytest.raises(ValueError):
        adapter(path, backends, initial=initial)


# ------------------------------------------------------------------- what is at the path


def test_a_symlink_is_refused_and_its_target_untouched(path: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text('{"v1": 100, "v2": 0}')
    path.symlink_to(target)
    route = adapter(path)
    with pytest.raises(PermanentTrafficError, match="symbolic link"):
        route.get_weights()
    with pytest.raises(PermanentTrafficError, match="symbolic link"):
        route.set_weights({"v1": 50, "v2": 50})
    assert target.read_text() == '{"v1": 100, "v2": 0}'
    assert path.is_symlink()


def test_a_directory_at_the_path_is_refused(path: Path) -> None:
    path.mkdir()
    with pytest.raises(PermanentTrafficError, match=r"not a regular file|Is a directory"):
        adapter(path).get_weights()
    with pytest.raises(PermanentTrafficError):
        adapter(path).set_weights(START)


def test_a_missing_directory_is_permanent(tmp_path: Path) -> None:
    route = adapter(tmp_path / "nowhere" / "weights.json")
    with pytest.raises(PermanentTrafficError, match="does not exist"):
        route.set_weights(START)


def test_the_file_keeps_its_permissions(path: Path) -> None:
    route = adapter(path)
    route.set_weights(START)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~umask
    path.chmod(0o600)
    route.set_weights({"v1": 50, "v2": 50})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.EIO, TransientTrafficError),
        (errno.ENOSPC, TransientTrafficError),
        (errno.EACCES, PermanentTrafficError),
        (errno.EROFS, PermanentTrafficError),
    ],
)
def test_os_errors_are_classified_and_the_temporary_file_removed(
    path: Path, monkeypatch: pytest.MonkeyPatch, code: int, kind: type[Exception]
) -> None:
    def replace(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code))

    route = adapter(path)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(kind, match=os.strerror(code)) as caught:
        route.set_weights(START)
    assert str(path) in str(caught.value)
    assert list(path.parent.iterdir()) == []


# ------------------------------------------------------------------------------ concurrency


def test_concurrent_readers_never_see_a_partial_file(path: Path) -> None:
    route = adapter(path, ["a", "b", "c"])
    splits = [{"a": i % 101, "b": 100 - i % 101, "c": 0} for i in range(500)]
    # Long and short texts alternate, so a torn read would show as invalid JSON.
    splits = [{"a": 100, "b": 0, "c": 0} if i % 2 else s for i, s in enumerate(splits)]
    route.set_weights(splits[0])
    written = {json.dumps(s, sort_keys=True) for s in splits}
    done = threading.Event()
    problems: list[str] = []
    reads = [0, 0]

    def raw_reader() -> None:
        while not done.is_set():
            text = path.read_text()
            try:
                seen = json.loads(text)
            except ValueError:
                problems.append(f"partial file: {text!r}")
                continue
            if json.dumps(seen, sort_keys=True) not in written:
                problems.append(f"weights never written: {seen}")
            reads[0] += 1

    def port_reader() -> None:
        other = adapter(path, ["a", "b", "c"])  # another adapter, as another process would
        while not done.is_set():
            try:
                other.get_weights()
            except Exception as exc:
                problems.append(repr(exc))
            reads[1] += 1

    threads = [threading.Thread(target=raw_reader), threading.Thread(target=port_reader)]
    for thread in threads:
        thread.start()
    try:
        for split in splits:
            route.set_weights(split)
    finally:
        done.set()
        for thread in threads:
            thread.join(10)
    assert problems == []
    assert reads[0] > 0
    assert reads[1] > 0
    assert route.get_weights() == splits[-1]
    assert [p.name for p in path.parent.iterdir()] == ["weights.json"]


def test_concurrent_writers_in_one_process_leave_one_complete_file(path: Path) -> None:
    route = adapter(path)
    errors: list[BaseException] = []

    def write(canary: int) -> None:
        try:
            for _ in range(5):
                route.set_weights({"v1": 100 - canary, "v2": canary})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c,)) for c in range(0, 100, 10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert route.get_weights()["v2"] in range(0, 100, 10)
    assert [p.name for p in path.parent.iterdir()] == ["weights.json"]
