"""Reading, heading and pruning the journal, against a live app writer."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from triggers import install, journal


def _app(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v)")
    return conn


@pytest.fixture
def app(tmp_path: Path) -> sqlite3.Connection:
    conn = _app(tmp_path / "app.db")
    install.install_on(conn)
    return conn


def _fill(conn: sqlite3.Connection, n: int, start: int = 1) -> None:
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(start, start + n)])
    conn.execute("COMMIT")


def test_head_and_read_in_order_with_limit(app: sqlite3.Connection) -> None:
    assert journal.head(app) == 0
    assert journal.read(app, 0) == []
    _fill(app, 25)
    assert journal.head(app) == 25
    page = journal.read(app, 10, limit=5)
    assert [e.seq for e in page] == [11, 12, 13, 14, 15]
    assert [journal.decode_key(e.key) for e in page] == [(i,) for i in range(11, 16)]
    assert all(e.op == "I" and e.table == "t" and e.gen == 1 and e.ts_ms > 0 for e in page)


def test_seq_never_repeats_after_pruning_everything(app: sqlite3.Connection) -> None:
    """d6: AUTOINCREMENT; and head() stays at the last seq when the journal is empty."""
    _fill(app, 3)
    assert journal.prune(app, 3) == 3
    assert journal.read(app, 0) == []
    assert journal.head(app) == 3
    _fill(app, 1, start=100)
    assert [e.seq for e in journal.read(app, 0)] == [4]


def test_prune_only_deletes_applied_entries_in_chunks(app: sqlite3.Connection) -> None:
    _fill(app, 1000)
    assert journal.prune(app, 0) == 0
    assert journal.prune(app, 777, chunk=100) == 777
    assert [e.seq for e in journal.read(app, 0, limit=3)] == [778, 779, 780]
    assert journal.prune(app, 777) == 0  # rerun is a no-op
    with pytest.raises(ValueError, match="chunk"):
        journal.prune(app, 900, chunk=0)


def test_read_transaction_pins_head_and_rows_together(app: sqlite3.Connection, tmp_path: Path) -> None:
    """d17: the head is read as the first statement, so the snapshot starts there."""
    _fill(app, 5)
    reader = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    with journal.read_transaction(reader) as head:
        assert head == 5
        _fill(app, 5, start=50)  # commits while the reader's snapshot is open
        assert [e.seq for e in journal.read(reader, 0)] == [1, 2, 3, 4, 5]
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (5,)
    assert not reader.in_transaction
    assert journal.head(reader) == 10


def test_journal_read_throughput_is_reasonable(app: sqlite3.Connection) -> None:
    _fill(app, 50_000)
    started = time.perf_counter()
    after, total = 0, 0
    while batch := journal.read(app, after, limit=10_000):
        total += len(batch)
        after = batch[-1].seq
    elapsed = time.perf_counter() - started
    assert total == 50_000
    assert total / elapsed > 50_000  # keys per second; measured ~1M/s in bench/capture_overhead.py


def test_pruning_never_makes_an_app_writer_see_locked(tmp_path: Path) -> None:
    """Chunked short write transactions: an app writer with a normal busy_timeout just waits briefly."""
    path = tmp_path / "app.db"
    setup = _app(path)
    install.install_on(setup)
    _fill(setup, 60_000)
    errors: list[BaseException] = []
    waits: list[float] = []
    stop = threading.Event()

    def writer() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=2.0)
        i = 1_000_000
        try:
            while not stop.is_set():
                started = time.perf_counter()
                conn.execute("INSERT INTO t VALUES (?, 'w')", (i,))
                waits.append(time.perf_counter() - started)
                i += 1
                time.sleep(0.0005)  # a busy app, not a 100% duty-cycle writer (that would starve anyone)
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    while len(waits) < 5 and thread.is_alive():
        time.sleep(0.001)
    pruner = sqlite3.connect(path, isolation_level=None)
    try:
        deleted = journal.prune(pruner, 60_000, chunk=500)
        during = len(waits)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert deleted == 60_000
    assert during > 10  # the app kept writing while we pruned
    assert max(waits) < 1.0  # one app write waited at most about one chunk
    remaining = journal.read(pruner, 0, limit=10)
    assert remaining
    assert remaining[0].seq > 60_000
