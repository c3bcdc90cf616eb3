"""Schema drift under the running apply: rebuilt tables are re-snapshotted online, added columns are
followed in create mode, dropped columns stop the daemon with the fix; and FKs parked without privilege."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo, sql

from replicator import apply, phase, status
from replicator.worker import WorkerError
from tests.test_apply_cases import app, cfg, check_same, drain, make_source


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_source(
        tmp_path / "app.db",
        rows="""
        INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 2.25);
        INSERT INTO child VALUES (10, 1, 'x', 'c10'), (11, 1, 'y', 'c11'), (12, 2, 'z', 'c12');
        """,
    )


def rebuild_parent(path: Path) -> None:
    """The 12-step ALTER (create, copy, drop, rename): DROP TABLE takes our triggers along (d13)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA foreign_keys = OFF")
    db.executescript(
        """
        BEGIN;
        CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, score REAL);
        INSERT INTO parent_new SELECT * FROM parent;
        DROP TABLE parent;
        ALTER TABLE parent_new RENAME TO parent;
        COMMIT;
        """
    )
    db.execute("UPDATE parent SET score = 42 WHERE id = 1")  # not journaled: no triggers now
    db.execute("INSERT INTO parent VALUES (4, 'd', 4.0)")
    db.close()


def test_rebuilt_table_is_reinstalled_and_resnapshotted(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    rebuild_parent(src)
    drain(src, pg_dsn)
    check_same(src, pg_dsn)
    app(src).execute("UPDATE parent SET score = 7 WHERE id = 4")  # captured again
    result = drain(src, pg_dsn)
    assert result.changes == 1
    check_same(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT score FROM parent WHERE id = 4").fetchone() == (7.0,)
        kinds = [r[0] for r in conn.execute("SELECT kind FROM replicator.checkpoints ORDER BY number")]
    assert kinds[0] == "genesis"
    assert len(kinds) == 3  # genesis, the re-snapshot (empty range), the update


def test_added_column_followed_in_create_mode(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    db.execute("ALTER TABLE parent ADD COLUMN extra TEXT DEFAULT 'd'")
    db.execute("UPDATE parent SET extra = 'set' WHERE id = 2")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)
    db.execute("INSERT INTO parent VALUES (5, 'e', 5.0, 'five')")
    drain(src, pg_dsn)  # a restart does not add the column twice
    check_same(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT extra FROM parent ORDER BY id").fetchall() == [("d",), ("set",), ("d",), ("five",)]


def test_dropped_column_stops_with_the_fix_and_stays_in_status(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    app(src).execute("ALTER TABLE child DROP COLUMN label")
    with pytest.raises(WorkerError, match="label"):
        drain(src, pg_dsn)
    got = status.read_status(pg_dsn, cfg(), src)
    assert got.phase == "ERRORED"
    child = next(t for t in got.tables if t.table == "child")
    assert child.error is not None
    assert "label" in child.error
    assert child.hint


@pytest.fixture
def unprivileged_dsn(pg_dsn: str) -> Iterator[str]:
    """The test database owned by a role that may not set session_replication_role."""
    role = f"app_{uuid.uuid4().hex[:10]}"
    dbname = conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(str(dbname)), sql.Identifier(role)))
    yield conninfo.make_conninfo(pg_dsn, user=role)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_foreign_keys_parked_without_privilege_then_restored(src: Path, unprivileged_dsn: str) -> None:
    dsn = unprivileged_dsn
    drain(src, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert apply.fk_mode(conn) == "parked"
        assert conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'child'::regclass"
        ).fetchone() == (0,)
        parked = conn.execute("SELECT table_name, definition FROM replicator.parked_foreign_keys").fetchall()
    assert len(parked) == 1
    assert "ON DELETE CASCADE" in parked[0][1]
    app(src).execute("UPDATE parent SET score = 0 WHERE id = 1")  # delete + insert of a parent in PostgreSQL
    drain(src, dsn)
    assert check_same(src, dsn)["child"] == 3
    with psycopg.connect(dsn, autocommit=True) as conn:
        restored = apply.restore_foreign_keys(conn, "replicator", "public")
        assert [(r.table, r.error) for r in restored] == [("child", None)]
        row = conn.execute(
            "SELECT convalidated, confdeltype FROM pg_constraint WHERE contype = 'f' AND conrelid = 'child'::regclass"
        ).fetchone()
        assert row == (True, "c")
        state = phase.read(conn, "replicator")
        assert state is not None
        assert state.phase is phase.Phase.STREAMING


def test_added_column_while_the_daemon_runs(src: Path, pg_dsn: str) -> None:
    """The writer is rebuilt on the same connection: staging tables of the old shape must not collide."""
    import threading
    import time

    from replicator.worker import Worker

    drain(src, pg_dsn)
    worker = Worker(src, pg_dsn, cfg())
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        db = app(src)
        db.execute("UPDATE parent SET score = 1 WHERE id = 1")
        time.sleep(0.5)
        db.execute("ALTER TABLE parent ADD COLUMN extra INTEGER")
        db.execute("UPDATE parent SET extra = 5, score = 2 WHERE id = 1")
        time.sleep(0.5)
        db.execute("INSERT INTO parent VALUES (9, 'nine', 9.0, 9)")
        time.sleep(0.5)
    finally:
        worker.stop()
        thread.join(timeout=60)
    assert not errors, errors
    check_same(src, pg_dsn)
