"""Write fencing of the old SQLite file: every kind of write from any connection fails with the
message, reads work, hostile names are quoted, fencing is idempotent and joins the caller's write
transaction, and unfence restores sqlite_schema row for row."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from triggers import fence, install, names
from triggers.schema import quote_ident

WEIRD = ["select", "my table", 'qu"ote', "it's", "ünïcødé 表", "[br]", "a.b", "Order"]
AT = datetime(2026, 11, 25, 21, 0, 0, tzinfo=UTC)


def _app(path: Path, *ddl: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in ddl:
        conn.execute(statement)
    return conn


def _schema_rows(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT type, name, tbl_name, rootpage, sql FROM sqlite_schema ORDER BY type, name").fetchall()


def _weird_app(path: Path) -> sqlite3.Connection:
    conn = _app(path)
    for name in WEIRD:
        conn.execute(f"CREATE TABLE {quote_ident(name)} (id INTEGER PRIMARY KEY, {quote_ident(name)} TEXT UNIQUE)")
        conn.execute(f"INSERT INTO {quote_ident(name)} VALUES (1, 'one')")
    return conn


WRITES = [
    "INSERT INTO {t} VALUES (2, 'two')",
    "INSERT OR IGNORE INTO {t} VALUES (3, 'three')",
    "INSERT OR REPLACE INTO {t} VALUES (1, 'uno')",
    "REPLACE INTO {t} VALUES (1, 'uno')",
    "INSERT INTO {t} VALUES (1, 'one') ON CONFLICT (id) DO UPDATE SET {c} = 'upserted'",
    "INSERT INTO {t} VALUES (1, 'one') ON CONFLICT DO NOTHING",
    "UPDATE {t} SET {c} = 'changed'",
    "UPDATE OR IGNORE {t} SET {c} = 'changed' WHERE id = 1",
    "DELETE FROM {t}",
    "DELETE FROM {t} WHERE id = 1",
]


@pytest.mark.parametrize("name", WEIRD)
@pytest.mark.parametrize("write", WRITES)
def test_every_write_on_every_hostile_name_is_refused_with_the_message(tmp_path: Path, name: str, write: str) -> None:
    path = tmp_path / "app.db"
    _weird_app(path).close()
    report = fence.fence(path, at=AT)
    assert set(report.tables) == set(WEIRD)
    assert report.at == "2026-11-25T21:00:00Z"
    other = sqlite3.connect(path, isolation_level=None)  # any connection, opened after the fence
    with pytest.raises(
        sqlite3.OperationalError, match="migrated to PostgreSQL at 2026-11-25T21:00:00Z; writes are fenced"
    ) as refused:
        other.execute(write.format(t=quote_ident(name), c=quote_ident(name)))
    assert refused.value.sqlite_errorcode == sqlite3.SQLITE_ERROR  # not SQLITE_CONSTRAINT: ORMs retry those
    assert other.execute(f"SELECT id, {quote_ident(name)} FROM {quote_ident(name)}").fetchall() == [(1, "one")]


def test_connection_open_before_the_fence_is_fenced_too(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    app = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    app.execute("INSERT INTO t VALUES (1, 'a')")
    app.execute("SELECT * FROM t").fetchall()  # statements prepared before the fence are re-prepared
    fence.fence(path, at=AT, message_extra="the app now uses postgresql://db/app")
    with pytest.raises(sqlite3.OperationalError, match="writes are fenced; the app now uses postgresql://db/app"):
        app.execute("INSERT INTO t VALUES (2, 'b')")
    assert app.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_a_separate_process_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)").close()
    fence.fence(path, at=AT)
    code = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "try:\n    c.execute('INSERT INTO t VALUES (1, 2)')\nexcept sqlite3.OperationalError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert "writes are fenced" in out.stdout


def test_fk_cascade_into_a_child_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _app(
        path,
        "CREATE TABLE p (id INTEGER PRIMARY KEY)",
        "CREATE TABLE c (id INTEGER PRIMARY KEY, p INTEGER REFERENCES p ON DELETE CASCADE)",
        "INSERT INTO p VALUES (1)",
        "INSERT INTO c VALUES (1, 1)",
    ).close()
    fence.fence(path, at=AT)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(sqlite3.OperationalError, match="fenced"):
        conn.execute("DELETE FROM p")
    assert conn.execute("SELECT count(*) FROM c").fetchone() == (1,)


def test_unfence_restores_sqlite_schema_row_for_row_and_writability(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _weird_app(path)
    conn.execute("CREATE VIEW v AS SELECT * FROM " + quote_ident("select"))
    conn.execute("CREATE TRIGGER app_t AFTER INSERT ON " + quote_ident("Order") + " BEGIN SELECT 1; END")
    before = _schema_rows(conn)
    report = fence.fence(path, at=AT)
    assert report.recorded_in == names.FENCE_TABLE
    assert len(report.created) == 3 * len(WEIRD)
    assert _schema_rows(conn) != before
    assert fence.is_fenced(conn)
    undone = fence.unfence(path)
    assert len(undone.dropped) == 3 * len(WEIRD)
    assert undone.record_removed
    assert undone.was_fenced_at == "2026-11-25T21:00:00Z"
    assert _schema_rows(conn) == before
    assert not fence.is_fenced(conn)
    for name in WEIRD:
        conn.execute(f"INSERT INTO {quote_ident(name)} VALUES (2, 'two')")
    assert fence.unfence(path).dropped == ()  # unfencing an unfenced file is a no-op


def test_fence_is_idempotent_and_keeps_its_time(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    first = fence.fence(path, at=AT)
    schema = _schema_rows(conn)
    again = fence.fence(path)  # no time given: the existing fence's time is kept
    assert again.created == ()
    assert again.at == first.at
    assert _schema_rows(conn) == schema
    conn.execute("CREATE TABLE later (id INTEGER PRIMARY KEY)")  # DDL is not fenced (documented)
    status = fence.status_on(conn)
    assert not status.fenced
    assert status.unfenced_tables == ("later",)
    third = fence.fence(path)
    assert sorted(third.created) == [fence.trigger_name("later", e) for e in ("del", "ins", "upd")]
    assert fence.is_fenced(conn)


def test_fence_joins_the_callers_write_transaction(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY)").close()
    cutover = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, isolation_level=None)
    cutover.execute("BEGIN IMMEDIATE")
    fence.fence_on(cutover, AT)
    assert cutover.in_transaction  # the caller still owns the transaction
    assert not fence.is_fenced(other)  # not visible before the caller commits
    cutover.execute("ROLLBACK")
    assert not fence.is_fenced(cutover)
    other.execute("INSERT INTO t VALUES (1)")
    cutover.execute("BEGIN IMMEDIATE")
    fence.fence_on(cutover, AT)
    cutover.execute("COMMIT")
    assert fence.is_fenced(other)
    with pytest.raises(sqlite3.OperationalError, match="fenced"):
        other.execute("INSERT INTO t VALUES (2)")


def test_with_capture_installed_the_fence_is_recorded_in_meta(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    install.install(path)
    before = _schema_rows(conn)
    report = fence.fence(path, at=AT)
    assert report.recorded_in == "_replicator_meta"
    assert conn.execute("SELECT value FROM _replicator_meta WHERE key = 'fenced_at'").fetchone() == (report.at,)
    with pytest.raises(sqlite3.OperationalError, match="fenced"):
        conn.execute("INSERT INTO t VALUES (1, 1)")
    assert conn.execute("SELECT count(*) FROM _replicator_journal WHERE tbl = 't'").fetchone() == (0,)
    fence.unfence(path)
    assert _schema_rows(conn) == before
    assert conn.execute("SELECT count(*) FROM _replicator_meta WHERE key LIKE 'fence%'").fetchone() == (0,)
    conn.execute("INSERT INTO t VALUES (1, 1)")
    assert conn.execute("SELECT count(*) FROM _replicator_journal WHERE tbl = 't'").fetchone() == (1,)


def test_capture_reinstall_keeps_the_fence(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    install.install(path)
    fence.fence(path, at=AT)
    install.install(path)
    assert fence.is_fenced(conn)


def test_virtual_tables_are_reported_not_fenced(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    try:
        conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY)", "CREATE VIRTUAL TABLE docs USING fts5(body)")
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no FTS5")
    report = fence.fence(path, at=AT)
    assert report.tables == ("t",)
    assert report.not_fenced == ("docs",)
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("INSERT INTO t VALUES (1)")


def test_message_with_quotes_is_escaped(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    fence.fence(path, at=AT, message_extra="ask O'Brien; '); DROP TABLE t; --")
    with pytest.raises(sqlite3.OperationalError, match=r"ask O'Brien; '\); DROP TABLE t; --"):
        conn.execute("INSERT INTO t VALUES (1)")
    assert conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 't'").fetchone() == (1,)


def test_capture_remove_keeps_the_fence_and_its_time(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    install.install(path)
    fence.fence(path, at=AT)
    install.remove(path)  # drops _replicator_meta, where the fence was recorded
    status = fence.status_on(conn)
    assert status.fenced
    assert status.at == "2026-11-25T21:00:00Z"
    with pytest.raises(sqlite3.OperationalError, match="fenced"):
        conn.execute("INSERT INTO t VALUES (1, 1)")
    assert len(fence.unfence(path).dropped) == 3
    conn.execute("SELECT count(*) FROM t").fetchone()  # a refused connection re-reads the schema when it next reads
    conn.execute("INSERT INTO t VALUES (1, 1)")


def test_cli_fence_and_unfence_say_what_they_did(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from replicator.cli.main import cli

    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    runner = CliRunner()
    assert "  fence " in runner.invoke(cli, ["--help"]).stdout  # documented: status names when to use it
    done = runner.invoke(cli, ["fence", "--source", str(path), "--message", "use postgresql://db/app"])
    assert done.exit_code == 0, done.output
    assert "fenced 1 table(s)" in done.stdout
    with pytest.raises(sqlite3.OperationalError, match="use postgresql://db/app"):
        conn.execute("INSERT INTO t VALUES (1)")
    undone = runner.invoke(cli, ["unfence", "--source", str(path)])
    assert undone.exit_code == 0, undone.output
    assert "dropped 3 fence trigger(s); writes work again" in undone.stdout
    with pytest.raises(sqlite3.OperationalError, match="fenced"):  # its schema is as of its refused write...
        conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("SELECT count(*) FROM t").fetchone()  # ...until it reads once (a new connection never sees it)
    conn.execute("INSERT INTO t VALUES (1)")
    again = runner.invoke(cli, ["unfence", "--source", str(path)])
    assert "was not fenced; nothing changed" in again.stdout
    missing = runner.invoke(cli, ["unfence", "--source", str(tmp_path / "nope.db")])
    assert missing.exit_code == 2


def test_ddl_on_a_fenced_file_does_what_the_docs_say(tmp_path: Path) -> None:
    """The decision the README and the module docstring record: a change that makes SQLite re-check the
    triggers (RENAME of a table or column, DROP COLUMN) fails with the fence message, so an ORM's migration
    fails loudly; CREATE, CREATE INDEX, ADD COLUMN, DROP TABLE and VACUUM write no row and still run."""
    path = tmp_path / "app.db"
    _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)", "CREATE TABLE u (id INTEGER PRIMARY KEY)").close()
    fence.fence(path, at=AT)
    conn = sqlite3.connect(path, isolation_level=None)
    for refused in ("ALTER TABLE t RENAME TO t2", "ALTER TABLE t RENAME COLUMN v TO w", "ALTER TABLE t DROP COLUMN v"):
        with pytest.raises(sqlite3.OperationalError, match="writes are fenced"):
            conn.execute(refused)
    for allowed in (
        "CREATE TABLE later (id INTEGER PRIMARY KEY)",
        "CREATE INDEX t_v ON t (v)",
        "ALTER TABLE t ADD COLUMN x",
        "DROP TABLE u",
        "VACUUM",
    ):
        conn.execute(allowed)
    with pytest.raises(sqlite3.OperationalError, match="writes are fenced"):
        conn.execute("INSERT INTO t (id) VALUES (2)")  # the table keeps its fence through the allowed DDL
    assert fence.status_on(conn).unfenced_tables == ("later",)
