"""Drift detection: cheap when nothing moved, precise per table when the app changed its schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from triggers import drift, install, journal


@pytest.fixture
def app(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
    conn.execute("CREATE TABLE other (k TEXT PRIMARY KEY, v)")
    conn.executemany("INSERT INTO t VALUES (?, 'a', 'b')", [(i,) for i in range(1, 6)])
    install.install_on(conn)
    return conn


def _only(d: drift.Drift, table: str) -> drift.TableDrift:
    found = [t for t in d.tables if t.table == table]
    assert len(found) == 1, d
    return found[0]


def test_no_change_costs_one_pragma(app: sqlite3.Connection) -> None:
    mark = drift.mark(app)
    app.execute("INSERT INTO t VALUES (10, 'x', 'y')")  # data, not schema
    result = drift.check(app, mark)
    assert result.changed is False
    assert result.mark == mark
    assert result.needs_resnapshot == ()
    assert result.needs_reinstall is False


def test_columns_added_dropped_renamed(app: sqlite3.Connection) -> None:
    mark = drift.mark(app)
    app.execute("ALTER TABLE t ADD COLUMN c INT")
    app.execute("ALTER TABLE t RENAME COLUMN a TO a2")
    app.execute("ALTER TABLE t DROP COLUMN b")
    result = drift.check(app, mark)
    t = _only(result, "t")
    assert (t.columns_added, t.columns_dropped, t.columns_renamed) == (("c",), ("b",), (("a", "a2"),))
    assert not t.triggers_missing
    assert not t.triggers_stale
    assert not t.needs_resnapshot
    assert result.new_tables == ()
    assert result.vacuum_suspected is False
    assert drift.check(app, result.mark).changed is False  # the new mark is the new baseline


def test_renaming_the_key_column_is_not_a_key_change(app: sqlite3.Connection) -> None:
    mark = drift.mark(app)
    app.execute("ALTER TABLE other RENAME COLUMN k TO key2")
    other = _only(drift.check(app, mark), "other")
    assert other.columns_renamed == (("k", "key2"),)
    assert other.triggers_stale  # SQLite rewrote NEW."k" in our triggers: reinstall to refresh
    assert not other.key_changed
    assert other.needs_reinstall
    assert not other.needs_resnapshot


def test_rebuild_migration_drops_our_triggers_and_is_detected(app: sqlite3.Connection) -> None:
    """d13: create-copy-drop-rename, the way Alembic batch mode and the 12-step ALTER do it."""
    mark = drift.mark(app)
    app.executescript(
        "BEGIN;"
        "CREATE TABLE t_new (id INTEGER PRIMARY KEY, a TEXT NOT NULL, b TEXT);"
        "INSERT INTO t_new SELECT id, a, b FROM t;"
        "DROP TABLE t;"
        "ALTER TABLE t_new RENAME TO t;"
        "COMMIT;"
    )
    head = journal.head(app)
    app.execute("INSERT INTO t VALUES (99, 'lost', 'x')")
    assert journal.head(app) == head  # the trap: this write was not journaled
    result = drift.check(app, mark)
    t = _only(result, "t")
    assert t.triggers_missing
    assert t.needs_resnapshot
    assert result.needs_resnapshot == ("t",)
    assert result.needs_reinstall
    assert result.new_tables == ()


def test_table_renamed_and_dropped(app: sqlite3.Connection) -> None:
    mark = drift.mark(app)
    app.execute("ALTER TABLE t RENAME TO t_renamed")
    app.execute("DROP TABLE other")
    result = drift.check(app, mark)
    assert _only(result, "t").renamed_to == "t_renamed"
    assert _only(result, "other").dropped
    assert result.new_tables == ()  # the renamed table is not reported as new
    assert "t" in result.needs_resnapshot


def test_new_tables_are_reported(app: sqlite3.Connection) -> None:
    mark = drift.mark(app)
    app.execute("CREATE TABLE fresh (id INTEGER PRIMARY KEY)")
    app.execute("CREATE INDEX t_a ON t (a)")
    result = drift.check(app, mark)
    assert result.new_tables == ("fresh",)
    assert result.tables == ()
    assert result.needs_reinstall


def test_primary_key_changed_by_a_rebuild(app: sqlite3.Connection) -> None:
    mark = drift.mark(app)
    app.executescript(
        "BEGIN; CREATE TABLE o2 (k TEXT, v, PRIMARY KEY (k, v)); INSERT INTO o2 SELECT * FROM other;"
        " DROP TABLE other; ALTER TABLE o2 RENAME TO other; COMMIT;"
    )
    other = _only(drift.check(app, mark), "other")
    assert other.key_changed
    assert other.triggers_missing


def test_vacuum_is_suspected_and_rowid_tables_flagged(tmp_path: Path) -> None:
    """d5: VACUUM renumbers the rowids of a table without INTEGER PRIMARY KEY; it bumps schema_version."""
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    conn.execute("CREATE TABLE logs (msg TEXT)")
    conn.execute("CREATE TABLE keyed (id INTEGER PRIMARY KEY, msg TEXT)")
    conn.executemany("INSERT INTO logs VALUES (?)", [(str(i),) for i in range(5)])
    conn.execute("DELETE FROM logs WHERE msg IN ('0', '2')")
    install.install_on(conn, default_policy="rowid")
    before = conn.execute("SELECT rowid, msg FROM logs ORDER BY rowid").fetchall()
    mark = drift.mark(conn)
    conn.execute("VACUUM")
    after = conn.execute("SELECT rowid, msg FROM logs ORDER BY rowid").fetchall()
    assert [m for _r, m in before] == [m for _r, m in after]
    assert [r for r, _m in before] != [r for r, _m in after]  # renumbered: why rowid keys are unstable
    result = drift.check(conn, mark)
    assert result.changed
    assert result.vacuum_suspected
    logs = _only(result, "logs")
    assert logs.rowid_renumber_risk
    assert result.needs_resnapshot == ("logs",)
    assert all(t.table != "keyed" for t in result.tables)


def test_reinstall_clears_drift(app: sqlite3.Connection) -> None:
    app.executescript(
        "BEGIN; CREATE TABLE t2 (id INTEGER PRIMARY KEY, a, b); INSERT INTO t2 SELECT * FROM t;"
        " DROP TABLE t; ALTER TABLE t2 RENAME TO t; COMMIT;"
    )
    install.install_on(app)
    mark = drift.mark(app)
    app.execute("CREATE TABLE unrelated_view_source (id INTEGER PRIMARY KEY)")
    result = drift.check(app, mark)
    assert result.tables == ()
    assert result.new_tables == ("unrelated_view_source",)


def test_not_installed(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    mark = drift.mark(conn)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    result = drift.check(conn, mark)
    assert result.changed
    assert result.installed is False


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (("a", "b"), ("a", "b", "c"), (("c",), (), ())),
        (("a", "b", "c"), ("a", "c"), ((), ("b",), ())),
        (("a", "b", "c"), ("a", "x", "c"), ((), (), (("b", "x"),))),
        (("a", "b", "c"), ("a", "c", "d"), (("d",), ("b",), ())),
        (("a", "b"), ("b", "a"), ((), (), ())),
    ],
)
def test_column_changes(
    old: tuple[str, ...], new: tuple[str, ...], expected: tuple[tuple[str, ...], tuple[str, ...], tuple[object, ...]]
) -> None:
    assert drift.column_changes(old, new) == expected


def test_column_changes_uses_declared_types_to_tell_a_rename_from_drop_plus_add() -> None:
    assert drift.column_changes(("a", "b"), ("a", "c"), ("TEXT", "TEXT"), ("TEXT", "INT")) == (("c",), ("b",), ())
    assert drift.column_changes(("a", "b"), ("a", "c"), ("TEXT", "TEXT"), ("TEXT", "text")) == ((), (), (("b", "c"),))


def test_unique_index_added_needs_reinstall(app: sqlite3.Connection) -> None:
    mark = drift.mark(app)
    app.execute("CREATE UNIQUE INDEX o_v ON other (v)")
    t = _only(drift.check(app, mark), "other")
    assert t.unique_keys_changed
    assert t.needs_reinstall
    assert not t.needs_resnapshot
    install.install_on(app)
    mark = drift.mark(app)
    app.execute("DROP INDEX o_v")
    assert _only(drift.check(app, mark), "other").unique_keys_changed


def test_unique_index_made_partial_needs_reinstall(app: sqlite3.Connection) -> None:
    """Same columns, now partial: its WHERE columns must make the victim trigger fire on every UPDATE."""
    app.execute("CREATE UNIQUE INDEX o_v ON other (v)")
    install.install_on(app)
    mark = drift.mark(app)
    app.execute("DROP INDEX o_v")
    app.execute("CREATE UNIQUE INDEX o_v ON other (v) WHERE v > 0")
    t = _only(drift.check(app, mark), "other")
    assert t.unique_keys_changed
    tables = {cap.name: cap for cap in install.install_on(app).tables}
    assert tables["other"].indirect_keys == ((("v", "BINARY"),),)
