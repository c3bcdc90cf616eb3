"""Tables created in SQLite while `replicator run` streams (issue 7, drift): picked up online like a rebuilt
table is re-snapshotted, or reported per table without stopping the daemon. Real SQLite files, the real
PostgreSQL; every end state is compared row by row (tests.support.compare) with the chain audited."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from checkpoints import audit, store
from replicator import config, faults
from replicator.apply.foreignkeys import restore_foreign_keys
from replicator.inspect import status, verify
from replicator.state.store import StateStore
from tests.support.cli import caught_up
from tests.support.compare import check_same, drain
from tests.support.daemon import Daemon, DaemonProcess, conf, eventually, wait_for
from tests.support.source import app, make_source, write
from triggers import drift, install
from triggers.meta import read_meta


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_source(
        tmp_path / "app.db",
        rows="""
        INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 2.25);
        INSERT INTO child VALUES (10, 1, 'x', 'c10'), (11, 1, 'y', 'c11'), (12, 2, 'z', 'c12');
        """,
    )


TAG = """
CREATE TABLE tag (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES parent (id),
    label TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL DEFAULT 0,
    payload BLOB
);
INSERT INTO tag (id, parent_id, label, created_at, payload) VALUES
    (1, 1, 'one', 1700000000000, x'00ff'), (2, NULL, 'two', 1700000000001, NULL);
"""

REBUILD_PARENT = """
CREATE TABLE parent_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, score REAL);
INSERT INTO parent_new SELECT * FROM parent;
DROP TABLE parent;
ALTER TABLE parent_new RENAME TO parent;
"""


def migrate(path: Path, script: str) -> None:
    """One migration transaction, the way `prisma migrate` runs one (foreign keys off for the rebuild)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA foreign_keys = OFF")
    db.executescript(f"BEGIN;\n{script}\nCOMMIT;")
    db.close()


def planned(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        plan = StateStore(conn, "replicator").load_plan()
    assert plan is not None
    return {t.source for t in plan.tables}


def table_status(dsn: str, path: Path, c: config.Config | None = None) -> tuple[str, dict[str, status.TableStatus]]:
    got = status.read_status(dsn, c or conf(), path)
    return got.phase, {t.table: t for t in got.tables}


def verified(path: Path, dsn: str, c: config.Config | None = None) -> None:
    report = verify.verify(path, dsn, c or conf(), keys=True)
    assert report.match, report.mismatched
    assert {t.status for t in report.tables} == {"match"}, [(t.table, t.status) for t in report.tables]


def test_new_table_and_rebuild_in_one_migration_while_running(src: Path, pg_dsn: str) -> None:
    """The reproduction: before, the reinstall captured `tag`, resolve_targets refused it as 'captured but
    not in the target plan' and the daemon stopped ERRORED with the rebuilt table's reload still owed,
    and every restart refused the same way."""
    drain(src, pg_dsn)
    with Daemon(src, pg_dsn) as daemon:
        db = app(src)
        db.execute("UPDATE parent SET score = 0.5 WHERE id = 1")
        migrate(src, TAG + REBUILD_PARENT)
        db.execute("UPDATE parent SET score = 42 WHERE id = 2")  # maybe before the reinstall: not journaled
        db.execute("INSERT INTO tag (id, parent_id, label) VALUES (3, 2, 'three')")
        wait_for(lambda: "tag" in planned(pg_dsn))
        db.execute("UPDATE tag SET label = 'uno' WHERE id = 1")
        db.execute("DELETE FROM tag WHERE id = 2")
        db.execute("INSERT INTO tag (id, label) VALUES (4, 'four')")
        db.execute("INSERT INTO parent VALUES (5, 'e', 5.0)")
        wait_for(lambda: app(src).execute("SELECT max(seq) FROM _replicator_journal").fetchone()[0] is not None)
        time.sleep(1.0)
    assert not daemon.errors, daemon.errors
    drain(src, pg_dsn)
    counts = check_same(src, pg_dsn)
    assert counts["tag"] == 3
    assert counts["parent"] == 4
    verified(src, pg_dsn)
    phase, tables = table_status(pg_dsn, src)
    assert phase == "STREAMING"
    assert tables["tag"].error is None
    assert tables["tag"].rows == 3
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        # built like the snapshot builds a table: key, unique index, FK (NOT VALID until cutover), types
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'tag'").fetchone() == (2,)
        fk = conn.execute("SELECT convalidated FROM pg_constraint WHERE contype = 'f' AND conrelid = 'tag'::regclass")
        assert fk.fetchall() == [(False,)]
        rows = conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'tag'")
        types = {str(name): str(kind) for name, kind in rows.fetchall()}
        assert types["payload"] == "bytea"
        assert types["id"] == "bigint"
        assert StateStore(conn, "replicator").pending_reloads() == {}
    found = drift.check(sqlite3.connect(src), drift.SchemaMark(-1, ""))
    assert not found.tables
    assert not found.new_tables  # what cutover's preflight asks


def test_rows_written_during_the_pick_up_converge(src: Path, pg_dsn: str) -> None:
    """A writer in its own thread keeps changing the new table (and an old one) across the pick-up: no lost or
    doubled change, whatever the interleaving with the install and the copy."""
    drain(src, pg_dsn)
    migrate(src, TAG)  # rows created before the daemon sees the table
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        rng = random.Random(7)
        db = app(src)
        db.execute("PRAGMA foreign_keys = OFF")
        n = 100
        while not stop.is_set():
            n += 1
            op = rng.random()
            if op < 0.5:
                db.execute("INSERT INTO tag (id, parent_id, label) VALUES (?, 1, ?)", (n, f"t{n}"))
            elif op < 0.8:
                db.execute(
                    "UPDATE tag SET created_at = ? WHERE id = (SELECT id FROM tag ORDER BY random() LIMIT 1)", (n,)
                )
            elif op < 0.9:
                db.execute("DELETE FROM tag WHERE id = (SELECT id FROM tag ORDER BY random() LIMIT 1)")
            else:
                db.execute("UPDATE parent SET score = ? WHERE id = 3", (float(n),))
            written.append(n)
            time.sleep(0.002)

    thread = threading.Thread(target=writer)
    with Daemon(src, pg_dsn) as daemon:
        thread.start()
        try:
            wait_for(lambda: "tag" in planned(pg_dsn))
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join(timeout=30)
        time.sleep(0.5)
    assert not daemon.errors, daemon.errors
    assert len(written) > 50
    drain(src, pg_dsn)
    check_same(src, pg_dsn)
    verified(src, pg_dsn)


def test_table_created_while_the_daemon_was_stopped(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    migrate(src, TAG)
    drain(src, pg_dsn)
    assert check_same(src, pg_dsn)["tag"] == 2
    app(src).execute("INSERT INTO tag (id, label) VALUES (9, 'nine')")
    assert drain(src, pg_dsn).changes == 1  # captured from now on
    assert check_same(src, pg_dsn)["tag"] == 3


def test_capture_install_run_by_hand_is_picked_up_too(src: Path, pg_dsn: str) -> None:
    """The old advice was `capture install` again: then the next start refused ('captured but not in the target
    plan'). The captured table the plan lacks is now picked up like a new one."""
    drain(src, pg_dsn)
    migrate(src, TAG)
    install.install(src)
    app(src).execute("INSERT INTO tag (id, label) VALUES (9, 'nine')")
    drain(src, pg_dsn)
    assert check_same(src, pg_dsn)["tag"] == 3


def test_stamp_time_survives_the_reinstall(tmp_path: Path, pg_dsn: str) -> None:
    path = tmp_path / "app.db"
    make_source(path, "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT)", capture=False)
    install.install(path, stamp_time=True)
    drain(path, pg_dsn)
    migrate(path, "CREATE TABLE extra (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO extra VALUES (1, 'a');")
    drain(path, pg_dsn)
    meta = read_meta(sqlite3.connect(path))
    assert meta is not None
    assert {n: (c.stamp_time, c.generation) for n, c in meta.tables.items()} == {
        "parent": (True, 1),  # not rewritten without ts_ms (it was: every drift reinstall dropped --stamp-time)
        "extra": (True, 1),
    }
    check_same(path, pg_dsn)


def test_keyless_new_table_is_reported_and_the_daemon_keeps_going(src: Path, pg_dsn: str) -> None:
    """no_key_policy 'refuse' (the default): the table is left uncaptured, its error stays in status, the rebuild
    in the same migration and every other change still apply; cutover's drift check refuses. With the policy
    changed to 'snapshot-only' the next start creates and loads it."""
    drain(src, pg_dsn)
    with Daemon(src, pg_dsn) as daemon:
        migrate(src, "CREATE TABLE log (at INTEGER, line TEXT); INSERT INTO log VALUES (1, 'x');" + REBUILD_PARENT)
        db = app(src)
        wait_for(lambda: table_status(pg_dsn, src)[1].get("log") is not None)
        db.execute("UPDATE parent SET score = 8 WHERE id = 3")
        db.execute("INSERT INTO log VALUES (2, 'y')")
        time.sleep(1.0)
    assert not daemon.errors, daemon.errors
    phase, tables = table_status(pg_dsn, src)
    assert phase == "STREAMING"
    assert tables["log"].error is not None
    assert "no primary key" in tables["log"].error
    assert tables["log"].hint is not None
    assert "snapshot-only" in tables["log"].hint
    check_same(src, pg_dsn)  # every planned table equal; `log` is not planned
    assert "log" not in planned(pg_dsn)
    meta = read_meta(sqlite3.connect(src))
    assert meta is not None
    assert "log" not in meta.tables
    assert drift.check(sqlite3.connect(src), drift.SchemaMark(-1, "")).new_tables == ("log",)
    drain(src, pg_dsn)  # a restart reports it again (errors are cleared at start, re-raised by the drift check)
    assert table_status(pg_dsn, src)[1]["log"].error is not None

    relaxed = conf(capture={"no_key_policy": "snapshot-only"})
    drain(src, pg_dsn, relaxed)
    _phase, tables = table_status(pg_dsn, src, relaxed)
    assert "log" in planned(pg_dsn)
    assert tables["log"].error is None
    assert check_same(src, pg_dsn)["log"] == 2


def test_rowid_policy_new_table_is_reported(src: Path, pg_dsn: str) -> None:
    c = conf(capture={"no_key_policy": "rowid"})
    drain(src, pg_dsn, c)
    migrate(src, "CREATE TABLE log (at INTEGER, line TEXT); INSERT INTO log VALUES (1, 'x');")
    app(src).execute("UPDATE parent SET score = 8 WHERE id = 3")
    drain(src, pg_dsn, c)
    _phase, tables = table_status(pg_dsn, src, c)
    assert tables["log"].error is not None
    assert "rowid" in tables["log"].error
    check_same(src, pg_dsn)


def test_new_table_skipped_by_config_stays_skipped(src: Path, pg_dsn: str) -> None:
    c = conf(types={"tag": {"*": {"skip": True}}})
    drain(src, pg_dsn, c)
    migrate(src, TAG)
    app(src).execute("INSERT INTO tag (id, label) VALUES (9, 'nine')")
    app(src).execute("UPDATE parent SET score = 8 WHERE id = 3")
    drain(src, pg_dsn, c)
    assert "tag" not in planned(pg_dsn)
    _phase, tables = table_status(pg_dsn, src, c)
    assert "tag" not in tables
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.tag')").fetchone() == (None,)
    check_same(src, pg_dsn)


def test_create_mode_name_taken_by_a_foreign_table(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE tag (something text)")
    migrate(src, TAG)
    app(src).execute("UPDATE parent SET score = 8 WHERE id = 3")
    drain(src, pg_dsn)
    _phase, tables = table_status(pg_dsn, src)
    assert tables["tag"].error is not None
    assert "already exists" in tables["tag"].error
    check_same(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # left alone
        assert conn.execute("SELECT count(*) FROM tag").fetchone() == (0,)


# --- existing mode ---------------------------------------------------------------------------------

PG_SCHEMA = """
CREATE TABLE parent (id bigint PRIMARY KEY, name text NOT NULL UNIQUE, score double precision);
CREATE TABLE child (id bigint PRIMARY KEY, parent_id bigint REFERENCES parent (id) ON DELETE CASCADE,
                    label text, code text UNIQUE);
CREATE TABLE pair (a text NOT NULL, b bigint NOT NULL, v text, PRIMARY KEY (a, b));
"""


def test_existing_mode_new_table_errors_until_postgres_has_it(src: Path, pg_dsn: str) -> None:
    c = conf(snapshot={"mode": "existing"})
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(PG_SCHEMA)
    drain(src, pg_dsn, c)
    with Daemon(src, pg_dsn, c) as daemon:
        migrate(src, "CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO note VALUES (1, 'n1');")
        wait_for(lambda: table_status(pg_dsn, src, c)[1].get("note") is not None)
        app(src).execute("UPDATE parent SET score = 8 WHERE id = 3")
        app(src).execute("INSERT INTO note VALUES (2, 'n2')")
        time.sleep(1.0)
    assert not daemon.errors, daemon.errors
    phase, tables = table_status(pg_dsn, src, c)
    assert phase == "STREAMING"
    note = tables["note"]
    assert note.error is not None
    assert "no table in PostgreSQL" in note.error
    assert note.hint is not None
    assert "public.note" in note.hint
    check_same(src, pg_dsn)

    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the app's PostgreSQL migration
        conn.execute("CREATE TABLE note (id bigint PRIMARY KEY, body text)")
    app(src).execute("INSERT INTO note VALUES (3, 'n3')")
    drain(src, pg_dsn, c)
    assert check_same(src, pg_dsn)["note"] == 3
    assert table_status(pg_dsn, src, c)[1]["note"].error is None
    app(src).execute("UPDATE note SET body = 'changed' WHERE id = 1")
    assert drain(src, pg_dsn, c).changes == 1
    check_same(src, pg_dsn)


def test_existing_mode_uses_the_table_the_app_created(src: Path, pg_dsn: str) -> None:
    c = conf(snapshot={"mode": "existing"})
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(PG_SCHEMA)
    drain(src, pg_dsn, c)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE note (id bigint PRIMARY KEY, body text, at timestamptz)")
    migrate(
        src,
        "CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT, at INTEGER);"
        "INSERT INTO note VALUES (1, 'n1', 1700000000000);",
    )
    with Daemon(src, pg_dsn, c) as daemon:
        wait_for(lambda: "note" in planned(pg_dsn))
        app(src).execute("INSERT INTO note VALUES (2, 'n2', 1700000000123)")
        time.sleep(1.0)
    assert not daemon.errors, daemon.errors
    assert check_same(src, pg_dsn)["note"] == 2
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        got = conn.execute("SELECT extract(epoch FROM at) * 1000 FROM note ORDER BY id").fetchall()
    assert [int(r[0]) for r in got] == [1700000000000, 1700000000123]  # unix ms detected, as at the snapshot


# --- a kill in the middle of the pick-up ------------------------------------------------------------


@pytest.fixture
def no_failpoints() -> Iterator[None]:
    faults.disarm_all()
    yield
    faults.disarm_all()


@pytest.mark.e2e
@pytest.mark.parametrize(
    "point",
    ["newtable.after_plan", "resnapshot.after_pending", "resnapshot.after_reinstall", "resnapshot.before_commit"],
)
def test_kill_while_picking_up_a_new_table(src: Path, pg_dsn: str, point: str, no_failpoints: None) -> None:
    """SIGKILL-equivalent (os._exit) between any two commits of the pick-up; the restart converges exactly."""
    drain(src, pg_dsn)
    migrate(src, TAG)
    db = app(src)
    db.execute("UPDATE parent SET score = 1 WHERE id = 1")
    crashed = DaemonProcess(src, pg_dsn, "--until-drained", failpoints=f"{point}:crash", batch_rows=3).wait(120)
    assert crashed.code == faults.CRASH_EXIT, crashed.log[-3000:]
    assert f"failpoint {point}: crash" in crashed.log
    db.execute("INSERT INTO tag (id, label) VALUES (5, 'five')")  # journaled or not, depending on the window
    db.execute("UPDATE tag SET label = 'uno' WHERE id = 1")
    resumed = DaemonProcess(src, pg_dsn, "--until-drained", batch_rows=3).wait(120)
    assert resumed.code == 0, resumed.log[-3000:]
    db.execute("DELETE FROM tag WHERE id = 2")  # captured after the restart
    drain(src, pg_dsn)
    assert check_same(src, pg_dsn)["tag"] == 2
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert StateStore(conn, "replicator").pending_reloads() == {}
        assert audit.verify(store.records(conn)) == []
        chain = store.read(conn)
        head = sqlite3.connect(src).execute("SELECT max(seq) FROM _replicator_journal").fetchone()[0]
        assert chain[-1].seq_to == head
        assert sum(cp.seq_to - cp.seq_from + 1 for cp in chain[1:]) == head - chain[0].seq_to
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'tag'").fetchone() == (2,)


def test_new_table_foreign_keys_parked_without_privilege(src: Path, unprivileged_dsn: str) -> None:
    """A role that may not disable FK triggers: the new table's FK is built after its copy, then parked like
    the snapshot's FKs, and restored (validated) at cutover."""
    dsn = unprivileged_dsn
    drain(src, dsn)
    migrate(src, TAG)
    app(src).execute("INSERT INTO tag (id, parent_id, label) VALUES (3, 3, 'three')")
    drain(src, dsn)
    app(src).execute("UPDATE parent SET score = 0 WHERE id = 1")  # delete + insert of a referenced parent
    app(src).execute("UPDATE tag SET parent_id = 2 WHERE id = 1")
    drain(src, dsn)
    assert check_same(src, dsn)["tag"] == 3
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'tag'::regclass"
        ).fetchone() == (0,)
        parked = conn.execute("SELECT table_name FROM replicator.parked_foreign_keys ORDER BY 1").fetchall()
        assert parked == [("child",), ("tag",)]
        restored = restore_foreign_keys(StateStore(conn, "replicator"), "public")
        assert sorted((r.table, r.error) for r in restored) == [("child", None), ("tag", None)]


def test_cutover_certifies_the_new_table(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    """Cutover refuses while a new table is in error, and after the pick-up certifies it like any table:
    proven at the stop point, its identity sequence set past max(id)."""
    from replicator.cutover.session import CutoverAborted, Options
    from replicator.cutover.window import cutover

    options = Options(backup_dir=tmp_path / "backups", certificate_path=tmp_path / "cert.json")
    drain(src, pg_dsn)
    migrate(src, "CREATE TABLE log (at INTEGER, line TEXT); INSERT INTO log VALUES (1, 'x');")
    drain(src, pg_dsn)
    with pytest.raises(CutoverAborted, match="log"):
        cutover(src, pg_dsn, conf(), options)
    migrate(src, "DROP TABLE log;" + TAG)
    app(src).execute("INSERT INTO tag (id, label) VALUES (7, 'seven')")
    drain(src, pg_dsn)
    result = cutover(src, pg_dsn, conf(), options)
    proof = {t.table: t for t in result.tables}
    assert proof["tag"].sqlite_rows == proof["tag"].pg_rows == 3
    assert proof["tag"].sqlite_digest == proof["tag"].pg_digest
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO tag (label) VALUES ('after cutover')")  # the sequence is past max(id)
        assert conn.execute("SELECT max(id) FROM tag").fetchone() == (8,)


# --- a keyless and a keyed table in one migration (issue 14 item 5) ------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("policy", ["refuse", "rowid", "snapshot-only"])
def test_keyless_and_keyed_new_tables_in_one_migration(src: Path, pg_dsn: str, policy: str) -> None:
    """The reproduction: a keyless `log` created in the same migration transaction as a keyed `tag`, while
    `replicator run` streams in its own process, stopped the whole daemon (ERRORED: the keyed table's online
    load opened the file with open(), which dropped the daemon's SQLite locks, and the migration's connection
    closing deleted the WAL under it: issue 14 item 1). Now `log` follows `capture.no_key_policy` (refuse and
    rowid: left uncaptured, its error and fix in status; snapshot-only: loaded), `tag` is picked up, and the
    other tables keep replicating through the app's own short-lived connections."""
    env = {"REPLICATOR_CAPTURE__NO_KEY_POLICY": policy}
    c = conf(capture={"no_key_policy": policy})
    with DaemonProcess(src, pg_dsn, env=env) as daemon:
        eventually(lambda: caught_up(src, pg_dsn, env), daemon)
        write(src, "UPDATE parent SET score = 1 WHERE id = 1")
        migrate(src, "CREATE TABLE log (at INTEGER, line TEXT); INSERT INTO log VALUES (1, 'x');" + TAG)
        write(src, "INSERT INTO tag (id, parent_id, label) VALUES (3, 2, 'three')")
        eventually(lambda: "tag" in planned(pg_dsn) and caught_up(src, pg_dsn, env), daemon)
        write(src, "UPDATE tag SET label = 'uno' WHERE id = 1")
        if policy != "snapshot-only":  # a snapshot-only table is not journaled: copied again at cutover
            write(src, "INSERT INTO log VALUES (2, 'y')")
        write(src, "UPDATE parent SET score = 8 WHERE id = 3")
        write(src, "DELETE FROM child WHERE id = 12")
        eventually(lambda: caught_up(src, pg_dsn, env), daemon)
        assert daemon.stop().code == 0, daemon.output()
    phase, tables = table_status(pg_dsn, src, c)
    assert phase == "STREAMING"
    assert tables["tag"].error is None
    counts = check_same(src, pg_dsn)
    assert counts["tag"] == 3
    assert counts["child"] == 2
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT score FROM parent WHERE id = 3").fetchone() == (8.0,)
        assert conn.execute("SELECT label FROM tag WHERE id = 1").fetchone() == ("uno",)
    meta = read_meta(sqlite3.connect(src))
    assert meta is not None
    if policy == "snapshot-only":
        assert "log" in planned(pg_dsn)
        assert meta.tables["log"].mode == "snapshot-only"
        verified(src, pg_dsn, c)  # `log` too: loaded when picked up; cutover copies it again
    else:
        assert "log" not in planned(pg_dsn)
        assert "log" not in meta.tables
        assert tables["log"].error is not None
        assert tables["log"].hint is not None
        assert "snapshot-only" in tables["log"].hint
