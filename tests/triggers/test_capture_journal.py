"""Reading, heading and pruning the journal, against a live app writer."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from triggers import install, journal
from triggers.errors import CaptureError


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
    assert [e.key for e in page] == [(i,) for i in range(11, 16)]
    assert all(e.op == "I" and e.table == "t" and e.gen == 1 for e in page)


def test_seq_never_repeats_after_pruning_everything(app: sqlite3.Connection) -> None:
    """d6 without AUTOINCREMENT: prune keeps the high-water row, so max(seq)+1 never goes back."""
    _fill(app, 3)
    assert journal.prune(app, 3) == 2  # seq 3 stays as the high-water row
    assert journal.read(app, 3) == []
    assert journal.head(app) == 3
    _fill(app, 1, start=100)
    assert [e.seq for e in journal.read(app, 3)] == [4]
    assert journal.prune(app, 4) == 1
    assert journal.head(app) == 4


def test_hand_deleted_journal_rows_are_detected(app: sqlite3.Connection) -> None:
    _fill(app, 5)
    journal.prune(app, 5)
    app.execute('DELETE FROM "_replicator_journal"')  # an operator "cleaning up"
    with pytest.raises(CaptureError, match="deleted by hand"):
        journal.head(app)


def test_update_keeps_old_key_only_when_the_key_changed(app: sqlite3.Connection) -> None:
    _fill(app, 2)
    app.execute("UPDATE t SET v = 'y' WHERE id = 1")
    app.execute("UPDATE t SET id = 10 WHERE id = 2")
    assert [(e.op, e.key, e.old_key) for e in journal.read(app, 2)] == [("U", (1,), None), ("U", (10,), (2,))]


def test_lag_tracker_measures_from_first_sight() -> None:
    lag = journal.LagTracker()
    assert lag.lag_s(0, now=100.0) == 0.0
    lag.observe(10, at=100.0)
    lag.observe(10, at=101.0)  # the same head seen again: the first sight counts
    lag.observe(25, at=102.0)
    assert lag.lag_s(0, now=105.0) == 5.0
    assert lag.lag_s(10, now=105.0) == 3.0
    assert lag.lag_s(25, now=105.0) == 0.0


def test_prune_only_deletes_applied_entries_in_chunks(app: sqlite3.Connection) -> None:
    _fill(app, 1000)
    assert journal.prune(app, 0) == 0
    assert journal.prune(app, 777, chunk=100) == 777
    assert [e.seq for e in journal.read(app, 0, limit=3)] == [778, 779, 780]
    assert journal.prune(app, 777) == 0  # rerun is a no-op
    assert journal.prune(app, 5000) == 222  # everything but the high-water row 1000
    assert [e.seq for e in journal.read(app, 0)] == [1000]
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


def test_journal_read_in_batches_returns_every_entry_once(app: sqlite3.Connection) -> None:
    """Correctness only: speed is bench/capture_overhead.py's (a timed assertion failed on a loaded CI)."""
    _fill(app, 50_000)
    after, seqs = 0, list[int]()
    while batch := journal.read(app, after, limit=10_000):
        seqs.extend(e.seq for e in batch)
        after = batch[-1].seq
    assert seqs == sorted(set(seqs))
    assert len(seqs) == 50_000


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


def _grouped(
    entries: list[journal.Entry],
) -> tuple[dict[str, list[tuple[object, ...]]], dict[str, int], dict[str, int]]:
    keys: dict[str, dict[tuple[object, ...], None]] = {}
    last: dict[str, int] = {}
    counts: dict[str, int] = {}
    for e in entries:
        found = keys.setdefault(e.table, {})
        found[e.key] = None
        if e.old_key is not None:
            found[e.old_key] = None
        last[e.table] = e.seq
        counts[e.table] = counts.get(e.table, 0) + 1
    return {t: list(k) for t, k in keys.items()}, last, counts


def _typed(keys: dict[str, list[tuple[object, ...]]]) -> dict[str, list[tuple[tuple[type, object], ...]]]:
    return {t: [tuple((type(v), v) for v in k) for k in ks] for t, ks in keys.items()}


@pytest.mark.parametrize("bad_utf8", [False, True])
def test_read_keys_groups_exactly_like_read(tmp_path: Path, bad_utf8: bool) -> None:
    """The apply's grouped reader names the same keys as read(): old keys only when an UPDATE changed the
    key exactly (1 -> 1.0 and 'a' -> 'A' under NOCASE are changes), composite keys, NULLs, and pages
    holding text that is not UTF-8 (the slow path)."""
    conn = sqlite3.connect(tmp_path / "k.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE one (id PRIMARY KEY, v)")
    conn.execute("CREATE TABLE ci (name TEXT COLLATE NOCASE PRIMARY KEY, v)")
    conn.execute("CREATE TABLE two (a, b, v, PRIMARY KEY (a, b))")
    install.install_on(conn)
    conn.execute("INSERT INTO one VALUES (1, 'x'), ('k', 'y'), (NULL, 'z'), (2.5, 'w')")
    conn.execute("UPDATE one SET v = 'x2' WHERE id = 1")
    conn.execute("UPDATE one SET id = 1.0 WHERE id = 1 AND typeof(id) = 'integer'")
    conn.execute("UPDATE one SET id = 7 WHERE id = 'k'")
    conn.execute("INSERT INTO ci VALUES ('abc', 1)")
    conn.execute("UPDATE ci SET name = 'ABC' WHERE name = 'abc'")
    conn.execute("UPDATE ci SET v = 2")
    conn.execute("INSERT INTO two VALUES (1, 'a', 0), (1, 'b', 0)")
    conn.execute("UPDATE two SET v = 1 WHERE a = 1 AND b = 'a'")
    conn.execute("UPDATE two SET b = 'c' WHERE a = 1 AND b = 'b'")
    conn.execute("DELETE FROM two WHERE b = 'a'")
    if bad_utf8:
        conn.execute("INSERT INTO one VALUES (CAST(X'FF61' AS TEXT), 'bad')")
    entries = journal.read(conn, 0, limit=1000)
    for after, limit in [(0, 1000), (0, 3), (4, 5), (len(entries), 10)]:
        page = [e for e in entries if e.seq > after][:limit]
        got = journal.read_keys(conn, after, limit)
        keys, last, counts = _grouped(page)
        assert _typed({t: list(k) for t, k in got.keys.items()}) == _typed(keys)
        assert got.last == last
        assert got.entries == counts
        assert got.count == len(page)
        assert got.seq_to == (page[-1].seq if page else after)
