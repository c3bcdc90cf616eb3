"""Tables the migration leaves out on purpose (replicator.plan.skips) and snapshot-only tables at cutover.

Real SQLite files (the Prisma probe from shared/realworld, copied) and the real PostgreSQL:

* existing mode with Prisma: ``_prisma_migrations`` is captured by ``capture install`` (run before the
  snapshot, as the runbook says) but left out of the plan; the daemon streams, the app's writes to it are
  consumed and counted as ignored, status shows it as skipped (not as an error), cutover certifies the rest;
* a table skipped by config, the same;
* a ``snapshot-only`` table changed after the snapshot is exact in PostgreSQL after cutover (copied again
  while SQLite is frozen); a dry run leaves PostgreSQL's copy as it was.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from checkpoints import audit, store
from replicator import config
from replicator.cli.main import cli
from replicator.cutover import certificate
from replicator.cutover.session import CutoverAborted, Options
from replicator.cutover.window import cutover
from replicator.inspect import status
from replicator.state import phase
from replicator.state.store import StateStore
from tests.support.compare import assert_same
from tests.support.daemon import Daemon, wait_for
from tests.support.paths import FIXTURES
from tests.support.source import app, make_db, make_source, sqlite_write
from tests.support.state import read_phase
from triggers import install
from triggers.meta import read_meta

pytestmark = pytest.mark.e2e

PRISMA_PG = FIXTURES / "orm_pg" / "prisma.sql"

# What `prisma migrate` creates in a SQLite database (prisma-engines, sqlite flavour of the migrations table).
PRISMA_MIGRATIONS_SQLITE = """
CREATE TABLE "_prisma_migrations" (
    "id"                    TEXT PRIMARY KEY NOT NULL,
    "checksum"              TEXT NOT NULL,
    "finished_at"           DATETIME,
    "migration_name"        TEXT NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        DATETIME,
    "started_at"            DATETIME NOT NULL DEFAULT current_timestamp,
    "applied_steps_count"   INTEGER UNSIGNED NOT NULL DEFAULT 0
);
INSERT INTO "_prisma_migrations" VALUES
    ('0b6a1f5e-8a7c-4d2e-9f00-000000000001', 'aa11', 1709618828009, '20240305060708_init', NULL, NULL,
     1709618828000, 1);
"""


def conf(**sections: dict[str, Any]) -> config.Config:
    overrides: dict[str, Any] = {"apply": {"poll_interval_s": 0.05}}
    overrides.update(sections)
    return config.load(overrides=overrides, environ={})


def opts(tmp_path: Path, **kw: Any) -> Options:
    return Options(backup_dir=tmp_path / "backups", certificate_path=tmp_path / "cert.json", **kw)


def drained(dsn: str, path: Path, c: config.Config) -> bool:
    got = status.read_status(dsn, c, path)
    return got.phase == "STREAMING" and got.changes_behind == 0


def journal_rows(path: Path, table: str) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute('SELECT count(*) FROM "_replicator_journal" WHERE tbl = ?', (table,)).fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def prisma_app(realworld: Path, tmp_path: Path, pg: psycopg.Connection[Any]) -> Path:
    """The Prisma probe with Prisma's migrations table, WAL, capture installed; the target as Prisma's
    PostgreSQL migration (`prisma migrate deploy`) creates it, its own migration recorded."""
    path = tmp_path / "dev.db"
    shutil.copyfile(realworld / "orm-samples" / "prisma7_small_unixms.db", path)
    path.chmod(0o644)
    # WAL and capture installed before the snapshot: the mode is not known yet, so every table is captured
    make_source(path, PRISMA_MIGRATIONS_SQLITE)
    pg.execute(PRISMA_PG.read_text())
    pg.execute(
        'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, finished_at, applied_steps_count) '
        "VALUES ('pg-0', 'bb22', '0_init', now(), 1)"
    )
    return path


def test_prisma_existing_mode_streams_and_cuts_over_with_its_migrations_table_skipped(
    prisma_app: Path, pg_dsn: str, tmp_path: Path
) -> None:
    path = prisma_app
    meta = read_meta(sqlite3.connect(path))
    assert meta is not None
    assert "_prisma_migrations" in meta.tables  # captured: the daemon must tolerate it
    c = conf(snapshot={"mode": "existing"})
    app = sqlite3.connect(path, isolation_level=None)
    with Daemon(path, pg_dsn, c) as daemon:  # takes the snapshot itself (existing mode), then streams
        wait_for(lambda: drained(pg_dsn, path, c) or bool(daemon.errors), timeout=60)
        assert not daemon.errors
        app.execute("BEGIN")
        app.execute(
            'INSERT INTO "Account" (id, uid, email, active, balance, "bigCount", hits, role, "createdAt", "updatedAt") '
            "VALUES ('acc-new', 'uid-new', 'new@x', 1, 12.5, 3, 0, 'ADMIN', 1709618828009, 1709618828009)"
        )
        app.execute('INSERT INTO "Post" (title, "accountId", "publishedAt") VALUES (\'new post\', \'acc-new\', NULL)')
        # `prisma migrate deploy` run against the SQLite file while replicating: Prisma records it here.
        app.execute(
            'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, applied_steps_count) '
            "VALUES ('0b6a1f5e-8a7c-4d2e-9f00-000000000002', 'cc33', '20240306000000_more', 1709700000000, 0)"
        )
        app.execute("COMMIT")
        app.execute(
            'UPDATE "_prisma_migrations" SET finished_at = 1709700000100, applied_steps_count = 1 '
            "WHERE migration_name = '20240306000000_more'"
        )
        app.execute("UPDATE \"Account\" SET hits = hits + 1, ratio = 0.25 WHERE id = 'acc-new'")
        app.execute("DELETE FROM \"Post\" WHERE title = 'new post'")
        wait_for(lambda: drained(pg_dsn, path, c) or bool(daemon.errors), timeout=60)
        assert not daemon.errors
        got = status.read_status(pg_dsn, c, path)
        assert got.phase == "STREAMING"
        assert all(t.error is None for t in got.tables), [(t.table, t.error) for t in got.tables]
        assert "_prisma_migrations" not in {t.table for t in got.tables}
        (skipped,) = got.skipped
        assert skipped.table == "_prisma_migrations"
        assert "migration bookkeeping" in skipped.reason
        assert skipped.ignored == 2  # both writes consumed, neither applied
    assert not daemon.errors
    # The CLI shows it as skipped, with the reason, and does not fail.
    runner = CliRunner()
    shown = runner.invoke(cli, ["status", "--source", str(path), "--target", pg_dsn], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    shown_text = " ".join(shown.output.split())
    assert "_prisma_migrations skipped: the ORM's migration bookkeeping" in shown_text
    assert "2 journal entries ignored" in shown_text
    assert journal_rows(path, "_prisma_migrations") == 0  # pruned like any applied entry

    app.execute(
        "UPDATE \"_prisma_migrations\" SET logs = 'after the daemon stopped' "
        "WHERE migration_name = '20240305060708_init'"
    )
    app.execute("UPDATE \"Account\" SET hits = 7 WHERE id = 'acc-new'")
    result = cutover(path, pg_dsn, c, opts(tmp_path))
    assert result.certificate is not None
    cert = result.certificate
    assert certificate.seal_ok(cert)
    assert {t.table for t in cert.tables} == {"Account", "Post"}
    # The certificate tells what the migration left out: the skipped table, with its reason.
    assert list(cert.skipped_tables) == ["_prisma_migrations"]
    assert "migration bookkeeping" in cert.skipped_tables["_prisma_migrations"]
    assert "skipped table _prisma_migrations: " in certificate.render(cert)
    assert all((t.sqlite_rows, t.sqlite_digest) == (t.pg_rows, t.pg_digest) for t in cert.tables)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        plan = StateStore(conn, "replicator").load_plan()
        assert plan is not None
        assert "_prisma_migrations" not in {t.source for t in plan.tables}
        assert assert_same(path, conn, plan) == {"Account": 4, "Post": 1}
        assert audit.verify(store.records(conn)) == []
        # PostgreSQL's own migration history is untouched: SQLite's rows describe another history.
        assert conn.execute('SELECT migration_name FROM "_prisma_migrations"').fetchall() == [("0_init",)]
        ignored = conn.execute("SELECT ignored FROM replicator.skipped_tables").fetchall()
        assert ignored == [(3,)]  # and the one the cutover's drain consumed
    with pytest.raises(sqlite3.DatabaseError, match="writes are fenced"):
        app.execute("INSERT INTO \"_prisma_migrations\" (id, checksum, migration_name) VALUES ('x', 'y', 'z')")
    app.close()


def test_config_skipped_table_is_consumed_counted_and_shown_as_skipped(tmp_path: Path, pg_dsn: str) -> None:
    path = tmp_path / "app.db"
    make_source(
        path,
        """
        CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE scratch (id INTEGER PRIMARY KEY, v TEXT);
        INSERT INTO item VALUES (1, 'a'), (2, 'b');
        INSERT INTO scratch VALUES (1, 'x');
        """,
    )
    db = app(path)
    c = conf(types={"scratch": {"*": {"skip": True}}})
    with Daemon(path, pg_dsn, c) as daemon:
        wait_for(lambda: drained(pg_dsn, path, c) or bool(daemon.errors), timeout=60)
        db.execute("INSERT INTO scratch VALUES (2, 'y')")
        db.execute("UPDATE item SET name = 'A' WHERE id = 1")
        db.execute("DELETE FROM scratch WHERE id = 1")
        wait_for(lambda: drained(pg_dsn, path, c) or bool(daemon.errors), timeout=60)
        assert not daemon.errors
        got = status.read_status(pg_dsn, c, path)
    assert [(s.table, s.ignored) for s in got.skipped] == [("scratch", 2)]
    assert got.skipped[0].reason == 'skipped by config ([types."scratch"."*"] skip = true)'
    assert {t.table for t in got.tables} == {"item"}
    result = cutover(path, pg_dsn, c, opts(tmp_path, backup=False))
    assert result.certificate is not None
    assert [t.table for t in result.certificate.tables] == ["item"]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.scratch')").fetchone() == (None,)
        assert conn.execute("SELECT id, name FROM item ORDER BY id").fetchall() == [(1, "A"), (2, "b")]
    db.close()


def _snapshot_only_source(path: Path) -> Path:
    make_source(
        path,
        """
        CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
        CREATE TABLE audit (at INTEGER NOT NULL, msg TEXT, item_id INTEGER REFERENCES item (id));
        INSERT INTO item VALUES (1, 'a'), (2, 'b');
        INSERT INTO audit VALUES (100, 'created a', 1), (101, 'created b', 2), (102, 'dup', 2), (102, 'dup', 2);
        """,
        capture=False,
    )
    install.install(path, default_policy="snapshot-only")
    return path


def _pg_audit(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT at, msg, item_id FROM audit ORDER BY 1, 2, 3").fetchall()


def _sqlite_audit(path: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT at, msg, item_id FROM audit ORDER BY 1, 2, 3").fetchall()
    finally:
        db.close()


@pytest.mark.parametrize("role", ["privileged", "unprivileged"])
def test_snapshot_only_table_changed_after_the_snapshot_is_copied_again_at_cutover(
    tmp_path: Path,
    pg_dsn: str,
    unprivileged_dsn: str,
    role: str,
) -> None:
    dsn = pg_dsn if role == "privileged" else unprivileged_dsn
    path = _snapshot_only_source(tmp_path / "app.db")
    meta = read_meta(sqlite3.connect(path))
    assert meta is not None
    assert meta.tables["audit"].mode == "snapshot-only"
    c = conf(capture={"no_key_policy": "snapshot-only"})
    with Daemon(path, dsn, c) as daemon:
        wait_for(lambda: drained(dsn, path, c) or bool(daemon.errors), timeout=60)
        assert not daemon.errors
    snapshotted = _pg_audit(dsn)
    assert len(snapshotted) == 4
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("INSERT INTO item VALUES (3, 'c')")
    db.execute("INSERT INTO audit VALUES (103, 'created c', 3), (104, NULL, NULL)")
    db.execute("UPDATE audit SET msg = 'renamed a' WHERE at = 100")
    db.execute("DELETE FROM audit WHERE at = 101")
    db.execute("DELETE FROM item WHERE id = 1")  # audit's row for item 1 stays: SQLite does not enforce FKs here
    db.execute("UPDATE audit SET item_id = 2 WHERE at = 100")

    dry = cutover(path, dsn, c, opts(tmp_path, dry_run=True, backup=False))
    assert dry.dry_run
    assert _pg_audit(dsn) == snapshotted  # rolled back with the rest
    assert {t.table: t.how for t in dry.tables}["audit"] == "copied"

    result = cutover(path, dsn, c, opts(tmp_path, backup=False))
    assert result.certificate is not None
    proofs = {t.table: t for t in result.certificate.tables}
    assert sorted(proofs) == ["audit", "item"]
    audit_proof = proofs["audit"]
    assert audit_proof.how == "copied"
    assert (audit_proof.sqlite_rows, audit_proof.sqlite_digest) == (audit_proof.pg_rows, audit_proof.pg_digest)
    assert audit_proof.sqlite_rows == 5
    assert "copy" in result.certificate.steps
    assert _pg_audit(dsn) == _sqlite_audit(path)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT id, name FROM item ORDER BY id").fetchall() == [(2, "b"), (3, "c")]
        # The app's foreign keys hold (validated at cutover) and act again after it.
        fks = conn.execute(
            "SELECT conname, convalidated FROM pg_constraint WHERE contype = 'f' AND conrelid = 'audit'::regclass"
        ).fetchall()
        assert [v for _n, v in fks] == [True]
        assert conn.execute("SELECT current_setting('session_replication_role')").fetchone() == ("origin",)
    assert certificate.live_check(result.certificate, path, dsn, c) == []


def test_a_snapshot_only_copy_that_fails_aborts_at_copy_and_rolls_back(tmp_path: Path, pg_dsn: str) -> None:
    path = _snapshot_only_source(tmp_path / "app.db")
    c = conf(capture={"no_key_policy": "snapshot-only"})
    with Daemon(path, pg_dsn, c) as daemon:
        wait_for(lambda: drained(pg_dsn, path, c) or bool(daemon.errors), timeout=60)
        assert not daemon.errors
    snapshotted = _pg_audit(pg_dsn)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("INSERT INTO audit VALUES (105, 'nul' || char(0) || 'byte', 2)")  # PostgreSQL text cannot hold it
    db.execute("INSERT INTO item VALUES (4, 'd')")
    with pytest.raises(CutoverAborted, match="cutover aborted at copy") as info:
        cutover(path, pg_dsn, c, opts(tmp_path, backup=False))
    assert "audit" in info.value.message
    assert _pg_audit(pg_dsn) == snapshotted  # the copy was rolled back with the finishing transaction
    db.execute("INSERT INTO item VALUES (5, 'e')")  # not fenced
    st = read_phase(pg_dsn)
    assert st is not None
    assert st.phase == phase.Phase.STREAMING
    assert "cutover aborted at copy" in st.reason
    db.close()


def test_capture_status_hint_and_new_table_note(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    make_db(path, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    install.install(path)
    sqlite_write(
        path,
        "CREATE TABLE fresh (id INTEGER PRIMARY KEY);"
        "CREATE TABLE t2 (id INTEGER PRIMARY KEY); DROP TABLE t; ALTER TABLE t2 RENAME TO t;",
    )
    result = CliRunner().invoke(cli, ["capture", "status", "--source", str(path)], catch_exceptions=False)
    out = " ".join(result.output.split())
    assert result.exit_code != 0
    assert "fresh (new since install: `replicator run` picks it up online)" in out
    assert "re-snapshots a rebuilt table online" in out
    assert "install` again and re-snapshot" not in out
