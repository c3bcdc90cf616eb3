"""Counterexamples the reliability harness found, shrunk to plain tests (strict xfail until fixed:
each flips to a failure the day the bug is fixed, so the marker is removed then)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from replicator import faults
from replicator.cutover.session import CutoverAborted, Options
from replicator.cutover.window import cutover
from replicator.errors import ReplicatorError, UniqueCollision
from replicator.state import phase
from tests.reliability import harness
from tests.support.compare import check_same, drain
from tests.support.daemon import DaemonProcess, cfg
from tests.support.source import app, make_source
from tests.support.state import read_phase
from triggers.errors import CaptureError

RESNAPSHOT_WINDOWS = ["resnapshot.after_pending", "resnapshot.after_reinstall", "resnapshot.before_commit"]
"""Between the commits of an online re-snapshot: owed reload recorded, triggers reinstalled, reload."""


@pytest.mark.parametrize("window", RESNAPSHOT_WINDOWS)
def test_interrupted_resnapshot_after_add_column_is_redone(tmp_path: Path, pg_dsn: str, window: str) -> None:
    """Finding 1: the column was added in PostgreSQL and the triggers reinstalled, then the reload was lost;
    the restarted loop saw no drift (PostgreSQL kept NULL in parent.extra, SQLite has 'd')."""
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    drain(src, pg_dsn)
    app(src).execute("ALTER TABLE parent ADD COLUMN extra TEXT DEFAULT 'd'")
    faults.arm(window, "raise", times=1)  # one transient error in that window: the loop restarts as after a crash
    try:
        drain(src, pg_dsn, cfg(retry_max_wait_s=0.2))
        assert window not in faults.armed()  # the window was reached
    finally:
        faults.disarm_all()
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_cutover_after_a_batch_checkpoint(tmp_path: Path, pg_dsn: str) -> None:
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    drain(src, pg_dsn)
    app(src).execute("INSERT INTO parent VALUES (2, 'b', 2.0)")
    drain(src, pg_dsn)  # the chain head is a batch checkpoint now, as in every real migration
    # found by the crash matrix (every cutover aborted: 'the chain starts at N'); fixed in 91d6a63
    app(src).execute("INSERT INTO parent VALUES (3, 'c', 3.0)")
    result = cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    assert result.stop_seq > 0


@pytest.mark.parametrize("window", RESNAPSHOT_WINDOWS)
def test_interrupted_resnapshot_after_lost_trigger_is_redone(tmp_path: Path, pg_dsn: str, window: str) -> None:
    """Finding 1b: the same windows after a lost trigger: the change made while it was missing was never
    applied once the reload was interrupted (PostgreSQL kept score 1.5)."""
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    drain(src, pg_dsn)
    db = app(src)
    db.execute("DROP TRIGGER _replicator_upd_parent")  # an app migration that lost the trigger
    db.execute("UPDATE parent SET score = 9.5 WHERE id = 1")  # not journaled
    faults.arm(window, "raise", times=1)
    try:
        drain(src, pg_dsn, cfg(retry_max_wait_s=0.2))
        assert window not in faults.armed()  # the window was reached
    finally:
        faults.disarm_all()
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_killed_resnapshot_blocks_cutover_until_redone(tmp_path: Path, pg_dsn: str) -> None:
    """Finding 1, a real kill (os._exit) before the reload commits: cutover refuses while the reload is owed,
    the next daemon redoes it, then cutover goes through."""
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    drain(src, pg_dsn)
    db = app(src)
    db.execute("DROP TRIGGER _replicator_upd_parent")
    db.execute("UPDATE parent SET score = 9.5 WHERE id = 1")  # not journaled
    killed = DaemonProcess(src, pg_dsn, "--until-drained", failpoints="resnapshot.before_commit:crash", batch_rows=3)
    crashed = killed.wait(60)
    assert crashed.code == faults.CRASH_EXIT, crashed.log[-2000:]
    with pytest.raises(CutoverAborted, match="re-snapshot was interrupted"):
        cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    drain(src, pg_dsn)
    check_same(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    assert (tmp_path / "cert.json").exists()


@pytest.mark.soak
def test_back_to_back_runs_never_refuse_each_other(tmp_path: Path, pg_dsn: str) -> None:
    """Finding 4: a run started right after the previous one exited was refused ('another replicator is
    already applying', 2 in 300 under load) while the old backend still held the advisory lock; fixed by a
    short grace in Worker._lock_target. Racy by nature, so it loops (soak tier)."""
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    drain(src, pg_dsn)
    db = app(src)
    for i in range(300):
        db.execute("UPDATE parent SET score = ? WHERE id = 1", (float(i),))
        drain(src, pg_dsn)
    check_same(src, pg_dsn)


# --- issue 14: how apps write, and what they store -------------------------------------------------------


def converges_or_refuses(src: Path, dsn: str) -> None:
    """The differential fuzz's oracle, for one case: PostgreSQL equals SQLite after the drain, or the apply
    stopped ERRORED on an error of the project's hierarchy (a collision SQLite keeps apart). Never silence."""
    try:
        drain(src, dsn)
    except (ReplicatorError, CaptureError):
        state = read_phase(dsn)
        assert state is not None
        assert state.phase == phase.Phase.ERRORED
        return
    check_same(src, dsn)


def test_datetime_key_written_two_ways(tmp_path: Path, pg_dsn: str) -> None:
    """Found by the rich differential fuzz (shrunk by hand): a DATETIME primary key, 'T' and ' ' variants.
    Refused by name (both keys), and the row PostgreSQL already holds stays."""
    src = make_source(tmp_path / "app.db", "CREATE TABLE t0 (k DATETIME PRIMARY KEY NOT NULL, c0 INTEGER);")
    drain(src, pg_dsn)
    db = app(src)
    db.execute("INSERT INTO t0 VALUES ('2024-05-01T10:00:00', 1)")
    drain(src, pg_dsn)
    db.execute("INSERT INTO t0 VALUES ('2024-05-01 10:00:00', 2)")
    with pytest.raises(UniqueCollision, match=r"k='2024-05-01 10:00:00'\) and \(k='2024-05-01T10:00:00'\)"):
        drain(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT c0 FROM t0").fetchall() == [(1,)]  # the earlier row was not deleted
    db.execute("DELETE FROM t0 WHERE k = '2024-05-01 10:00:00'")  # the hint: one spelling
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_datetime_unique_written_two_ways(tmp_path: Path, pg_dsn: str) -> None:
    """The issue's case: UNIQUE (room, starts_at); the apply's conflict delete removes the earlier row."""
    schema = "CREATE TABLE booking (id INTEGER PRIMARY KEY, room TEXT, starts_at DATETIME, UNIQUE (room, starts_at));"
    src = make_source(tmp_path / "app.db", schema, "INSERT INTO booking VALUES (1, 'a', '2024-05-01 10:00:00');")
    drain(src, pg_dsn)
    app(src).execute("INSERT INTO booking VALUES (2, 'a', '2024-05-01T10:00:00')")
    converges_or_refuses(src, pg_dsn)


def test_lower_expression_unique_with_accents(tmp_path: Path, pg_dsn: str) -> None:
    """Issue 14 item 2a: SQLite's lower() folds ASCII only, and so does the index PostgreSQL gets
    (issue 15: ``translate(...)``), so 'émile' does not conflict with 'Émile' there either."""
    schema = "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); CREATE UNIQUE INDEX u ON users (lower(name));"
    src = make_source(tmp_path / "app.db", schema, "INSERT INTO users VALUES (1, 'Émile');")
    drain(src, pg_dsn)
    app(src).execute("INSERT INTO users VALUES (2, 'émile')")
    converges_or_refuses(src, pg_dsn)


def test_replace_over_a_nocase_key(tmp_path: Path, pg_dsn: str) -> None:
    schema = "CREATE TABLE tags (name TEXT COLLATE NOCASE PRIMARY KEY, n INTEGER) WITHOUT ROWID;"
    src = make_source(tmp_path / "app.db", schema, "INSERT INTO tags VALUES ('Straße', 1);")
    drain(src, pg_dsn)
    app(src).execute("INSERT OR REPLACE INTO tags VALUES ('STRASSE', 2), ('straße', 4)")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_replace_over_an_rtrim_key(tmp_path: Path, pg_dsn: str) -> None:
    schema = "CREATE TABLE t (k TEXT COLLATE RTRIM, n INTEGER, v TEXT, PRIMARY KEY (k, n));"
    src = make_source(tmp_path / "app.db", schema, "INSERT INTO t VALUES ('a', 1, 'one');")
    drain(src, pg_dsn)
    app(src).execute("INSERT OR REPLACE INTO t VALUES ('a  ', 1, 'two')")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_app_closing_its_last_connection_does_not_stall_the_daemon(tmp_path: Path, pg_dsn: str) -> None:
    """Found by the load generator's conn-per-txn mode: three open-write-close cycles of another process while
    the daemon streams; the daemon must apply them all and hold no deleted -wal/-shm."""
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    proc = harness.daemon(src, pg_dsn, tmp_path / "daemon.log")
    try:
        assert harness.wait_for(lambda: harness.phase_of(pg_dsn) == "STREAMING", 30, 0.1), proc.output(3000)
        for i in range(3):
            subprocess.run(
                [sys.executable, "-c", WRITE_ONCE, str(src), str(10 + i)], check=True, timeout=30, cwd=harness.ROOT
            )
        head = harness.journal_head(src)
        caught_up = harness.wait_for(lambda: harness.applied_seq(pg_dsn) >= head, 10, 0.1)
        held = harness.deleted_files(proc.pid, src)
    finally:
        proc.term(30)
    assert caught_up, f"the daemon applied up to {harness.applied_seq(pg_dsn)}, the journal head is {head}"
    assert held == []
    check_same(src, pg_dsn)


WRITE_ONCE = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("INSERT INTO parent VALUES (?, ?, 0.5)", (int(sys.argv[2]), "p" + sys.argv[2]))
db.close()
"""
"""An app process: open, one write, close (its last connection: SQLite checkpoints and deletes -wal/-shm)."""
