"""The wake-up signal: file events for speed, PRAGMA data_version as the truth and the safety net."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.source import make_db
from triggers.errors import SourceError
from triggers.watch import Watcher, refuse_network_wal


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_db(tmp_path / "app.db", "CREATE TABLE t (id INTEGER PRIMARY KEY)", wal=True)


def _commit_later(path: Path, delay: float, n: int = 1) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        conn = sqlite3.connect(path, isolation_level=None)
        for _ in range(n):
            conn.execute("INSERT INTO t DEFAULT VALUES")
        conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_file_events_wake_long_before_the_poll_interval(db: Path) -> None:
    with Watcher(db, poll_interval_s=10.0) as watcher:
        thread = _commit_later(db, 0.1)
        started = time.monotonic()
        assert watcher.wait(timeout=5.0) is True
        woke_after = time.monotonic() - started
        thread.join()
    assert woke_after < 1.0  # the 10 s poll did not have to run


def test_polling_alone_detects_commits(db: Path) -> None:
    with Watcher(db, poll_interval_s=0.05, file_events=False) as watcher:
        thread = _commit_later(db, 0.1)
        assert watcher.wait(timeout=5.0) is True
        thread.join()


def test_no_commit_means_no_wakeup(db: Path) -> None:
    with Watcher(db, poll_interval_s=0.05) as watcher:
        reader = sqlite3.connect(db)
        reader.execute("SELECT count(*) FROM t").fetchone()  # reads touch -shm, never wake us
        started = time.monotonic()
        assert watcher.wait(timeout=0.3) is False
        assert time.monotonic() - started >= 0.3


def test_many_commits_coalesce_into_one_signal(db: Path) -> None:
    with Watcher(db, poll_interval_s=0.05) as watcher:
        _commit_later(db, 0.0, n=200).join()
        assert watcher.wait(timeout=2.0) is True
        assert watcher.wait(timeout=0.2) is False


def test_commit_from_another_process(db: Path) -> None:
    script = (
        "import sqlite3, sys, time; time.sleep(0.2)\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('INSERT INTO t DEFAULT VALUES')"
    )
    with Watcher(db, poll_interval_s=5.0) as watcher:
        proc = subprocess.Popen([sys.executable, "-c", script, str(db)])
        assert watcher.wait(timeout=10.0) is True
        assert proc.wait(timeout=30) == 0


def test_waiting_threads_and_close_from_another_thread(db: Path) -> None:
    watcher = Watcher(db, poll_interval_s=0.02)
    results: list[bool] = []

    def wait() -> None:
        results.append(watcher.wait(timeout=3.0))

    waiters = [threading.Thread(target=wait) for _ in range(3)]
    for thread in waiters:
        thread.start()
    for _ in range(3):  # each commit is reported to exactly one waiter
        _commit_later(db, 0.2).join()
    for thread in waiters:
        thread.join(timeout=5)
    assert results == [True, True, True]
    watcher.close()
    watcher.close()  # idempotent
    with pytest.raises(SourceError, match="closed"):
        watcher.wait(timeout=0.1)


def test_network_filesystem_with_wal_is_refused() -> None:
    path = Path("/mnt/share/app.db")
    with pytest.raises(SourceError, match="network filesystem") as info:
        refuse_network_wal(path, "nfs4", "wal")
    assert "local filesystem" in info.value.hint
    refuse_network_wal(path, "nfs4", "delete")  # rollback journal: allowed
    refuse_network_wal(path, "ext4", "wal")
    refuse_network_wal(path, None, "wal")  # unknown: allowed


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        Watcher(tmp_path / "nope.db")


def test_rollback_journal_mode_database(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    make_db(path, "PRAGMA journal_mode=DELETE; CREATE TABLE t (id INTEGER PRIMARY KEY)")
    with Watcher(path, poll_interval_s=10.0) as watcher:
        thread = _commit_later(path, 0.1)
        started = time.monotonic()
        assert watcher.wait(timeout=5.0) is True
        assert time.monotonic() - started < 1.0  # woken by the file event, not the 10 s poll
        thread.join()
