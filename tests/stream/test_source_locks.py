"""The daemon beside apps that close their last connection: restarts, cron jobs, per-request writers.

POSIX drops every lock a process holds on a file when it closes *any* descriptor of that file, SQLite's
own included (SQLite's "How To Corrupt An SQLite Database File", 2.2). A daemon that opened the app's
file with ``open()`` while it held SQLite connections lost its locks; the app's last close then believed
it was alone and deleted ``-wal``/``-shm`` under the daemon, which stalled for good while ``status``
said STREAMING. These tests write from another process the way such apps do and check that every
change arrives and that the daemon never holds a deleted file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from tests.support.compare import check_same, drain
from tests.support.daemon import DaemonProcess
from tests.support.source import make_source

pytestmark = pytest.mark.e2e

SCHEMA = """
CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT NOT NULL, n INTEGER);
"""

#: One process; every cycle opens the file, writes one transaction and closes it, so each close is the
#: app's last (nothing else of the app's is open): SQLite checkpoints and deletes -wal and -shm then.
WRITER = textwrap.dedent(
    """
    import sqlite3, sys, time
    path, start, count, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    def write(i):
        conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            if mode == "deferred":  # Django's default: read first, upgrade to a write lock later
                conn.execute("BEGIN")
                conn.execute("SELECT count(*) FROM note").fetchone()
            else:
                conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO note (id, body, n) VALUES (?, ?, ?)", (i, f"écrit {i}", i))
            conn.execute("UPDATE note SET n = n + 1 WHERE id = ?", (i - 1,))
            conn.execute("COMMIT")
        except sqlite3.OperationalError:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
    for i in range(start, start + count):
        for attempt in range(50):  # a deferred upgrade can meet SQLITE_BUSY: the app's request is retried
            try:
                write(i)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                time.sleep(0.05)
        else:
            raise SystemExit(f"transaction {i} kept failing")
        time.sleep(0.01)
    """
)


def deleted_files(pid: int) -> list[str]:
    """What the process holds open that has been unlinked (``/proc/PID/fd`` links end in ' (deleted)')."""
    held = []
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.endswith(" (deleted)"):
            held.append(target)
    return held


def pg_rows(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM note").fetchone()
    assert row is not None
    return int(row[0])


def wait_for_rows(dsn: str, expected: int, proc: DaemonProcess, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    seen = pg_rows(dsn)
    while seen < expected and time.monotonic() < deadline:
        assert proc.alive(), "the daemon stopped"
        time.sleep(0.2)
        seen = pg_rows(dsn)
    return seen


@pytest.mark.parametrize("mode", ["immediate", "deferred"])
def test_connection_per_write_app_keeps_streaming(tmp_path: Path, pg_dsn: str, mode: str) -> None:
    source = make_source(tmp_path / "app.db", SCHEMA, "INSERT INTO note VALUES (0, 'zéro', 0);")
    drain(source, pg_dsn)  # snapshot + genesis, in this process, before the daemon starts
    proc = DaemonProcess(source, pg_dsn, json_log=False)
    try:
        proc.wait_streaming(pg_dsn)  # the daemon is up and has opened the file
        writer = [sys.executable, "-c", WRITER, str(source)]
        for start in (1, 51):  # two app "restarts" of 50 open-write-close cycles each: 100 cycles
            subprocess.run([*writer, str(start), "50", mode], check=True, timeout=120)
            assert deleted_files(proc.pid) == []
        assert wait_for_rows(pg_dsn, 101, proc) == 101
        assert deleted_files(proc.pid) == []
    finally:
        stopped = proc.stop(60)
    assert stopped.code == 0, stopped.log[-2000:]
    drain(source, pg_dsn)
    check_same(source, pg_dsn)


def test_shell_sessions_and_another_process_vacuum(tmp_path: Path, pg_dsn: str) -> None:
    """The sqlite3 shell (one process per session, its close the last) and a VACUUM from another process."""
    shell = shutil.which("sqlite3")
    if shell is None:
        pytest.skip("the sqlite3 command-line shell is not installed (apt-get install sqlite3)")
    source = make_source(tmp_path / "app.db", SCHEMA, "INSERT INTO note VALUES (0, 'zéro', 0);")
    drain(source, pg_dsn)
    proc = DaemonProcess(source, pg_dsn, json_log=False)
    try:
        proc.wait_streaming(pg_dsn)
        for i in range(1, 21):
            sql = f"INSERT INTO note VALUES ({i}, 'shell {i}', {i}); UPDATE note SET n = n * 2 WHERE id = {i - 1};"
            subprocess.run([shell, str(source), sql], check=True, timeout=30)
            if i % 5 == 0:
                subprocess.run([shell, str(source), "DELETE FROM note WHERE id = 1; VACUUM;"], check=True, timeout=30)
                subprocess.run([sys.executable, "-c", WRITER, str(source), str(100 + i), "3", "deferred"], check=True)
        assert wait_for_rows(pg_dsn, 20 + 12, proc) == 32
        assert deleted_files(proc.pid) == []
    finally:
        stopped = proc.stop(60)
    assert stopped.code == 0, stopped.log[-2000:]
    drain(source, pg_dsn)
    check_same(source, pg_dsn)


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_a_held_write_lock_survives_every_check_of_the_file(tmp_path: Path, journal_mode: str) -> None:
    """Cutover's freeze holds BEGIN IMMEDIATE while it identifies the source: the lock must hold throughout.

    In rollback-journal mode that lock is a POSIX lock on the database file itself, the one an ``open()``
    and ``close()`` of the file would have dropped.
    """
    from replicator.state.identity import source_identity
    from triggers import source as sqlite_source

    path = make_source(tmp_path / "app.db", SCHEMA)
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute(f"PRAGMA journal_mode = {journal_mode}")
    setup.close()
    identity = source_identity(path)
    freeze = sqlite_source.connect(path, readonly=False)
    freeze.execute("BEGIN IMMEDIATE")
    try:
        sqlite_source.check_file(path)
        assert source_identity(path) == identity
        other = sqlite_source.connect(path, readonly=True)  # a second connection: still no raw open
        other.close()
        probe = [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0);"
            " c.execute('INSERT INTO note VALUES (1, 1, 1)'); c.commit()",
            str(path),
        ]
        result = subprocess.run(probe, capture_output=True, timeout=30)
        assert result.returncode != 0, "another process wrote through the held lock"
        assert b"database is locked" in result.stderr, result.stderr.decode()
    finally:
        freeze.execute("ROLLBACK")
        freeze.close()
    assert sqlite_source.live_connections(path) == 0


def test_a_connection_collected_while_another_opens_does_not_deadlock(tmp_path: Path) -> None:
    """The hang of a CI run: a connection left in a reference cycle is finalized whenever the garbage
    collector runs, which may be inside ``_open_tracked`` on the thread that holds ``_LOCK``; its
    finalizer takes ``_LOCK`` too. Reproduced deterministically: collect such a connection while holding
    the lock. With a plain Lock the thread waits for itself forever."""
    import gc
    import threading

    from triggers import source

    db = tmp_path / "app.db"
    sqlite3.connect(db).execute("CREATE TABLE t (id INTEGER PRIMARY KEY)").connection.close()
    finished = threading.Event()

    def collect_inside_the_lock() -> None:
        conn = source.connect(db)
        holder: list[object] = [conn]
        holder.append(holder)  # a cycle: only the collector frees it, whenever it runs
        del conn, holder
        with source._LOCK:
            gc.collect()  # the dead connection's finalizer runs here, on the thread holding the lock
        finished.set()

    was_enabled = gc.isenabled()
    gc.disable()  # the collection must happen inside the lock, not before
    try:
        worker = threading.Thread(target=collect_inside_the_lock, daemon=True)
        worker.start()
        worker.join(timeout=10)
    finally:
        if was_enabled:
            gc.enable()
    assert finished.is_set(), "a finalizer waited for the lock its own thread held"
    assert source._LIVE.get(source._file_key(db.stat())) is None  # and it was counted out


def _write_from_another_process(path: Path) -> subprocess.CompletedProcess[bytes]:
    probe = [
        sys.executable,
        "-c",
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0);"
        " c.execute('INSERT INTO note VALUES (2, 2, 2)'); c.commit()",
        str(path),
    ]
    return subprocess.run(probe, capture_output=True, timeout=30, check=False)


def test_hashing_the_file_keeps_a_held_lock(tmp_path: Path) -> None:
    """Cutover hashes the fenced file for its certificate while its own connections are open: the hash must
    not drop this process's locks (rollback-journal mode: the write lock is a POSIX lock on the file itself).
    The negative control is the plain open()/close() it replaced, after which another process writes."""
    from triggers import source as sqlite_source

    path = make_source(tmp_path / "app.db", SCHEMA)
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = delete")
    setup.close()
    held = sqlite_source.connect(path, readonly=False)
    held.execute("BEGIN IMMEDIATE")
    try:
        digest = sqlite_source.sha256(path)
        locked = _write_from_another_process(path)
        assert locked.returncode != 0, "another process wrote through the held lock"
        assert b"database is locked" in locked.stderr, locked.stderr.decode()
        with path.open("rb") as handle:  # the negative control: a raw open and close in this process
            raw = hashlib.sha256(handle.read()).hexdigest()
        assert _write_from_another_process(path).returncode == 0, "the raw close was expected to drop the lock"
    finally:
        held.rollback()
        held.close()
    assert digest == raw
