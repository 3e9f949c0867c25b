"""Leader election with a file lock: one leader at a time, and a dead leader frees the lock."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from trimtab.controller.leader import FileLeaderLock, LeaderElector, NotLeaderError

HOLDER = textwrap.dedent(
    """
    import sys, time
    from trimtab.controller.leader import FileLeaderLock

    lock = FileLeaderLock(sys.argv[1])
    print("leader" if lock.try_acquire() else "standby", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "leader.lock"


@pytest.fixture
def holder(lock_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another controller process, holding the lock until it is killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "leader"
    yield proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def test_the_file_lock_is_a_leader_elector(lock_path: Path) -> None:
    elector: LeaderElector = FileLeaderLock(lock_path)
    assert isinstance(elector, LeaderElector)


def test_acquire_release_and_acquire_again(lock_path: Path) -> None:
    lock = FileLeaderLock(lock_path)
    assert not lock.is_leader
    assert lock.try_acquire()
    assert lock.is_leader
    assert lock.try_acquire()  # already leading: still True
    lock.release()
    assert not lock.is_leader
    lock.release()  # idempotent
    assert lock.try_acquire()
    lock.release()


def test_the_file_names_the_leader_for_humans(lock_path: Path) -> None:
    lock = FileLeaderLock(lock_path)
    assert lock.holder() is None
    assert lock.try_acquire()
    assert lock.holder() == f"pid={os.getpid()} host={socket.gethostname()}"
    lock.release()
    assert lock.holder() is None  # no departed leader left in the file


def test_two_locks_in_one_process_exclude_each_other(lock_path: Path) -> None:
    first, second = FileLeaderLock(lock_path), FileLeaderLock(lock_path)
    assert first.try_acquire()
    assert not second.try_acquire()
    assert not second.is_leader
    first.release()
    assert second.try_acquire()
    second.release()


def test_a_second_process_cannot_lead_while_the_first_holds_the_lock(
    lock_path: Path, holder: subprocess.Popen[str]
) -> None:
    lock = FileLeaderLock(lock_path)
    assert not lock.try_acquire()
    assert not lock.is_leader
    assert lock.holder() == f"pid={holder.pid} host={socket.gethostname()}"
    with pytest.raises(NotLeaderError, match=f"pid={holder.pid}"), lock:
        pass


def test_the_lock_is_free_once_the_leader_is_killed(
    lock_path: Path, holder: subprocess.Popen[str]
) -> None:
    lock = FileLeaderLock(lock_path)
    assert not lock.try_acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock.try_acquire()  # the kernel released the dead process's flock
    assert lock.holder() == f"pid={os.getpid()} host={socket.gethostname()}"
    lock.release()


def test_a_process_standing_by_while_this_one_leads(lock_path: Path) -> None:
    with FileLeaderLock(lock_path) as lock:
        assert lock.is_leader
        run = subprocess.run(
            [sys.executable, "-c", HOLDER.replace("time.sleep(60)", ""), str(lock_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert run.stdout.strip() == "standby"
    assert not lock.is_leader


def test_a_deleted_lock_file_is_lost_leadership(lock_path: Path) -> None:
    lock = FileLeaderLock(lock_path)
    assert lock.try_acquire()
    lock_path.unlink()
    assert not lock.is_leader  # a newcomer could lock a new file at the same path
    other = FileLeaderLock(lock_path)
    assert other.try_acquire()
    assert not lock.try_acquire()
    other.release()


def test_the_lock_is_not_inherited_by_child_processes(lock_path: Path) -> None:
    lock = FileLeaderLock(lock_path)
    assert lock.try_acquire()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], close_fds=False)
    try:
        lock.release()
        assert FileLeaderLock(lock_path).try_acquire()  # the child does not hold it
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
