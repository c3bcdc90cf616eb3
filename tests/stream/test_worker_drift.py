"""Schema drift under the running apply: rebuilt tables are re-snapshotted online, added columns are
followed in create mode, dropped columns are followed online (existing mode: that table is held until
PostgreSQL drops it too), renamed columns stop the daemon with a fix that works as printed, `snapshot --replace
--tables` keeps every other table's position; and FKs parked without privilege."""

from __future__ import annotations

import re
import shlex
import sqlite3
import time
from pathlib import Path

import psycopg
import pytest

from replicator.apply.foreignkeys import fk_mode, restore_foreign_keys
from replicator.inspect import status
from replicator.state import phase
from replicator.state.store import StateStore
from replicator.stream.session import WorkerError
from tests.support.cli import caught_up, cli, status_json
from tests.support.compare import check_same, drain
from tests.support.daemon import Daemon, DaemonProcess, cfg, eventually
from tests.support.source import app, make_source, write


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


def test_renamed_column_stops_with_the_fix_and_stays_in_status(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    app(src).execute("ALTER TABLE child RENAME COLUMN label TO title")
    with pytest.raises(WorkerError, match="label"):
        drain(src, pg_dsn)
    got = status.read_status(pg_dsn, cfg(), src)
    assert got.phase == "ERRORED"
    child = next(t for t in got.tables if t.table == "child")
    assert child.error is not None
    assert "label" in child.error
    assert child.hint


def test_foreign_keys_parked_without_privilege_then_restored(src: Path, unprivileged_dsn: str) -> None:
    dsn = unprivileged_dsn
    drain(src, dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert fk_mode(conn) == "parked"
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
        restored = restore_foreign_keys(StateStore(conn, "replicator"), "public")
        assert [(r.table, r.error) for r in restored] == [("child", None)]
        row = conn.execute(
            "SELECT convalidated, confdeltype FROM pg_constraint WHERE contype = 'f' AND conrelid = 'child'::regclass"
        ).fetchone()
        assert row == (True, "c")
        state = StateStore(conn, "replicator").read_phase()
        assert state is not None
        assert state.phase is phase.Phase.STREAMING


def test_added_column_while_the_daemon_runs(src: Path, pg_dsn: str) -> None:
    """The writer is rebuilt on the same connection: staging tables of the old shape must not collide."""
    drain(src, pg_dsn)
    with Daemon(src, pg_dsn, cfg()) as daemon:
        db = app(src)
        db.execute("UPDATE parent SET score = 1 WHERE id = 1")
        time.sleep(0.5)
        db.execute("ALTER TABLE parent ADD COLUMN extra INTEGER")
        db.execute("UPDATE parent SET extra = 5, score = 2 WHERE id = 1")
        time.sleep(0.5)
        db.execute("INSERT INTO parent VALUES (9, 'nine', 9.0, 9)")
        time.sleep(0.5)
    assert not daemon.errors, daemon.errors
    check_same(src, pg_dsn)


# --- DROP COLUMN while `replicator run` streams, the way apps write (issue 14 item 6) ---------------


def app_writes(path: Path, n: int) -> None:
    """Changes to several tables, each through its own connection."""
    write(path, "INSERT INTO parent VALUES (?, ?, ?)", (100 + n, f"p{n}", float(n)))
    write(path, "INSERT INTO child (id, parent_id, code) VALUES (?, 1, ?)", (100 + n, f"c{100 + n}"))
    write(path, "UPDATE pair SET v = ? WHERE a = 'k' AND b = 1", (f"v{n}",))


def assert_converged(source: Path, dsn: str, env: dict[str, str] | None = None) -> None:
    """PostgreSQL equals SQLite by `replicator verify` and row by row; `status` exits 0 with nothing behind."""
    verified = cli(source, dsn, "verify", env=env)
    assert verified.code == 0, verified
    code, got = status_json(source, dsn, env)
    assert code == 0, got
    assert got["phase"] == "STREAMING"
    assert got["changes_behind"] == 0
    assert all(t["error"] is None for t in got["tables"]), got["tables"]
    check_same(source, dsn)


def pg_columns(dsn: str, table: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()
    return [str(r[0]) for r in rows]


@pytest.fixture
def three(tmp_path: Path) -> Path:
    return make_source(
        tmp_path / "app.db",
        rows="""
        INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 2.25);
        INSERT INTO child VALUES (10, 1, 'x', 'c10'), (11, 1, 'y', 'c11'), (12, 2, 'z', 'c12');
        INSERT INTO pair VALUES ('k', 1, 'one'), ('k', 2, 'two');
        """,
    )


@pytest.mark.e2e
def test_dropped_column_followed_online_in_create_mode(three: Path, pg_dsn: str) -> None:
    """The reproduction: DROP COLUMN stopped the whole daemon (ERRORED) and its hint did not clear it. In create
    mode the tool owns the PostgreSQL table: the column is dropped there too, the table reloaded online, and
    the changes to the other tables made meanwhile arrive."""
    with DaemonProcess(three, pg_dsn) as daemon:
        eventually(lambda: caught_up(three, pg_dsn), daemon)
        for n in range(5):
            app_writes(three, n)
        write(three, "ALTER TABLE child DROP COLUMN label")
        write(three, "UPDATE child SET code = 'changed' WHERE id = 10")
        for n in range(5, 10):
            app_writes(three, n)  # pending in every table while the daemon follows the drop
        eventually(lambda: caught_up(three, pg_dsn) and "label" not in pg_columns(pg_dsn, "child"), daemon)
        assert_converged(three, pg_dsn)
        write(three, "INSERT INTO child VALUES (999, 2, 'late')")  # captured with the new shape
        eventually(lambda: caught_up(three, pg_dsn), daemon)
        assert daemon.stop().code == 0, daemon.output()
    assert pg_columns(pg_dsn, "child") == ["id", "parent_id", "code"]
    assert_converged(three, pg_dsn)
    counts = check_same(three, pg_dsn)
    assert counts == {"parent": 13, "child": 14, "pair": 2}


EXISTING = {"REPLICATOR_SNAPSHOT__MODE": "existing"}


@pytest.mark.e2e
def test_dropped_column_holds_only_that_table_in_existing_mode(three: Path, pg_dsn: str) -> None:
    """Existing mode: the app's migration owns the PostgreSQL schema. While PostgreSQL still has the column the
    table is held (its error and the fix in `status`), every other table keeps streaming; the hint, followed
    word for word, clears it: the SQL it prints, then a restart of `replicator run`."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(PG_SCHEMA)
    with DaemonProcess(three, pg_dsn, env=EXISTING) as daemon:
        eventually(lambda: caught_up(three, pg_dsn, EXISTING), daemon)
        app_writes(three, 0)
        write(three, "ALTER TABLE child DROP COLUMN label")
        write(three, "UPDATE child SET code = 'changed' WHERE id = 10")
        for n in range(1, 6):
            app_writes(three, n)

        def held() -> bool:
            _code, got = status_json(three, pg_dsn, EXISTING)
            return any(t["table"] == "child" and t["error"] for t in got["tables"])

        eventually(lambda: held() and caught_up(three, pg_dsn, EXISTING), daemon)
        _code, got = status_json(three, pg_dsn, EXISTING)
        child = next(t for t in got["tables"] if t["table"] == "child")
        assert "label" in child["error"]
        with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the other tables kept streaming
            assert conn.execute("SELECT count(*) FROM parent").fetchone() == (9,)
            assert conn.execute("SELECT v FROM pair WHERE a = 'k' AND b = 1").fetchone() == ("v5",)
        hint = str(child["hint"])
        assert cli(three, pg_dsn, "verify", env=EXISTING).code != 0  # the schemas differ: verify refuses
        assert daemon.stop().code == 0, daemon.output()

    statement = re.fullmatch(r"run `([^`]+)` in PostgreSQL .*then restart `replicator run`.*", hint)
    assert statement is not None, hint
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(statement.group(1))
    write(three, "UPDATE child SET code = 'again' WHERE id = 11")
    with DaemonProcess(three, pg_dsn, env=EXISTING) as daemon:
        eventually(lambda: caught_up(three, pg_dsn, EXISTING) and not held(), daemon)
        assert daemon.stop().code == 0, daemon.output()
    assert pg_columns(pg_dsn, "child") == ["id", "parent_id", "code"]
    assert_converged(three, pg_dsn, EXISTING)


PG_SCHEMA = """
CREATE TABLE parent (id bigint PRIMARY KEY, name text NOT NULL UNIQUE, score double precision);
CREATE TABLE child (id bigint PRIMARY KEY, parent_id bigint REFERENCES parent (id) ON DELETE CASCADE,
                    label text, code text UNIQUE);
CREATE TABLE pair (a text NOT NULL, b bigint NOT NULL, v text, PRIMARY KEY (a, b));
"""


@pytest.mark.e2e
def test_snapshot_replace_tables_keeps_the_other_tables_positions(three: Path, pg_dsn: str) -> None:
    """The reproduction: `snapshot --replace --tables child` started a new genesis at the journal head, so a
    change pending in another table was skipped (`status` 0 behind, `verify` MISMATCH). Now it reloads child
    only, appends a checkpoint for the reload, and the pending change is applied by the next run."""
    with DaemonProcess(three, pg_dsn) as daemon:
        eventually(lambda: caught_up(three, pg_dsn), daemon)
        app_writes(three, 0)
        eventually(lambda: caught_up(three, pg_dsn), daemon)
        assert daemon.stop().code == 0, daemon.output()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        chain = conn.execute("SELECT number, kind, hash FROM replicator.checkpoints ORDER BY number").fetchall()
    write(three, "UPDATE parent SET score = 77 WHERE id = 1")  # pending: no daemon runs
    write(three, "UPDATE child SET label = 'pending' WHERE id = 11")
    reloaded = cli(three, pg_dsn, "snapshot", "--replace", "--tables", "child")
    assert reloaded.code == 0, reloaded
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        after = conn.execute("SELECT number, kind, hash FROM replicator.checkpoints ORDER BY number").fetchall()
        assert conn.execute("SELECT score FROM parent WHERE id = 1").fetchone() == (1.5,)  # not applied yet
        assert conn.execute("SELECT label FROM child WHERE id = 11").fetchone() == ("pending",)  # reloaded
    assert after[: len(chain)] == chain  # the same genesis and history
    assert len(after) == len(chain) + 1
    code, got = status_json(three, pg_dsn)
    assert code == 0
    assert got["changes_behind"] == 2  # both changes still to apply: nothing skipped
    with DaemonProcess(three, pg_dsn) as daemon:
        eventually(lambda: caught_up(three, pg_dsn), daemon)
        assert daemon.stop().code == 0, daemon.output()
    assert_converged(three, pg_dsn)


@pytest.mark.e2e
def test_snapshot_replace_tables_is_refused_while_the_daemon_applies(three: Path, pg_dsn: str) -> None:
    """Beside a running daemon the reload would race its batches: refused in one line, nothing reloaded, the
    chain and every table's position unchanged, and the daemon goes on applying."""
    with DaemonProcess(three, pg_dsn) as daemon:
        eventually(lambda: caught_up(three, pg_dsn), daemon)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            chain = conn.execute("SELECT number, hash FROM replicator.checkpoints ORDER BY number").fetchall()
        refused = cli(three, pg_dsn, "snapshot", "--replace", "--tables", "child")
        assert refused.code == 2, refused
        assert len(refused.lines) == 1, refused
        assert "a `replicator run` is applying this source" in refused.lines[0]
        assert "stop it" in refused.lines[0]
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            after = conn.execute("SELECT number, hash FROM replicator.checkpoints ORDER BY number").fetchall()
        assert after == chain  # the daemon was caught up and the app idle: no reload checkpoint, no batch
        app_writes(three, 0)
        eventually(lambda: caught_up(three, pg_dsn), daemon)
        assert daemon.stop().code == 0, daemon.output()
    assert_converged(three, pg_dsn)


@pytest.mark.e2e
def test_renamed_column_hint_followed_word_for_word(three: Path, pg_dsn: str) -> None:
    """A renamed column still stops the daemon; the hint's command, run as printed (with the source and target
    in the environment), then a restart, brings it back with every table equal."""
    with DaemonProcess(three, pg_dsn) as daemon:
        eventually(lambda: caught_up(three, pg_dsn), daemon)
        write(three, "ALTER TABLE child RENAME COLUMN label TO title")
        write(three, "UPDATE parent SET score = 5 WHERE id = 2")
        assert daemon.wait().code != 0
    code, got = status_json(three, pg_dsn)
    assert code == 1
    assert got["phase"] == "ERRORED"
    commands = re.findall(r"`(replicator [^`]+)`", got["hint"])
    assert commands[-1] == "replicator run", got["hint"]
    for command in commands[:-1]:
        ran = cli(three, pg_dsn, *shlex.split(command)[1:])
        assert ran.code == 0, (command, ran)
    write(three, "UPDATE child SET title = 'renamed' WHERE id = 10")
    with DaemonProcess(three, pg_dsn) as daemon:
        eventually(lambda: caught_up(three, pg_dsn), daemon)
        assert daemon.stop().code == 0, daemon.output()
    assert "title" in pg_columns(pg_dsn, "child")
    assert_converged(three, pg_dsn)
