"""The source lock's file half (:mod:`replicator.state.lock`), which the daemon and the cutover share: one
holder at a time, the holder's pid and host recorded for a hand-over and cleared when it lets go.

The advisory half is exercised against PostgreSQL by test_cutover.py (a held lock refuses, a daemon that just
exited is waited for) and test_status.py (a running daemon is seen through it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from replicator.state import lock


def test_a_second_holder_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    source = tmp_path / "app.db"
    first, second = lock.open_lock_file(source), lock.open_lock_file(source)
    try:
        assert lock.try_flock(first)
        assert not lock.try_flock(second)  # flock is per open file: two handles conflict even in one process
        assert lock.held_elsewhere(second)
        first.close()
        assert not lock.held_elsewhere(second)  # and held_elsewhere let it go again
        assert lock.try_flock(second)
    finally:
        first.close()
        second.close()


def test_the_holder_is_recorded_and_cleared(tmp_path: Path) -> None:
    source = tmp_path / "app.db"
    with lock.open_lock_file(source) as handle:
        assert lock.try_flock(handle)
        lock.write_holder(handle)
        assert lock.lock_path(source).read_text() == f"{os.getpid()} {socket.gethostname()}\n"
        assert lock.lock_holder(source) is None  # ourselves: never signalled
        lock.clear_holder(handle)
        assert lock.lock_path(source).read_text() == ""


def test_lock_holder_names_only_a_live_replicator_on_this_host(tmp_path: Path) -> None:
    source = tmp_path / "app.db"
    path = lock.lock_path(source)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # alive, not a replicator
    try:
        path.write_text(f"{other.pid} {socket.gethostname()}\n")
        assert lock.lock_holder(source) is None
    finally:
        other.kill()
        other.wait()
    replicator = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "replicator"])
    try:
        _until_cmdline_has(replicator.pid, b"replicator")  # seen once as not yet: under load, an older argv
        path.write_text(f"{replicator.pid} {socket.gethostname()}\n")
        assert lock.lock_holder(source) == replicator.pid
        path.write_text(f"{replicator.pid} another-host\n")
        assert lock.lock_holder(source) is None
    finally:
        replicator.kill()
        replicator.wait()
    path.write_text(f"{replicator.pid} {socket.gethostname()}\n")  # gone now
    assert lock.lock_holder(source) is None


def test_keys_differ_per_source_and_fit_a_signed_bigint() -> None:
    keys = {lock.lock_key(f"source-{i}") for i in range(1000)}
    assert len(keys) == 1000
    assert all(-(1 << 63) <= k < (1 << 63) for k in keys)
    assert all((k & 0xFFFF_FFFF_FFFF_FFFF) >> 32 == lock.LOCK_NAMESPACE for k in keys)


def _until_cmdline_has(pid: int, word: bytes, timeout_s: float = 10.0) -> None:
    """Wait until the kernel shows the process's new argv (the test's precondition, not what it checks)."""
    deadline = time.monotonic() + timeout_s
    while word not in Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, f"process {pid} never showed {word!r} in its command line"
        time.sleep(0.01)
