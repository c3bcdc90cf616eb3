"""install / remove / status on real SQLite files: one transaction, idempotent, every identifier
quoted, explicit policies for keyless tables, the app's schema restored exactly by remove."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import realworld_files
from triggers import install, journal
from triggers.errors import CaptureNotInstalled, SchemaUnsupported, SourceBusy
from triggers.names import JOURNAL
from triggers.schema import quote_ident, read_schema


def _app(path: Path, *ddl: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for statement in ddl:
        conn.execute(statement)
    return conn


def _schema_rows(conn: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
    return [
        (str(t), str(n), str(tb), str(s))
        for t, n, tb, s in conn.execute(
            "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name"
        )
    ]


WEIRD = ["select", "my table", 'qu"ote', "it's", "ünïcødé 表", "[br]", "a.b", "Order"]


def test_install_remove_restores_the_schema_exactly(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(
        path,
        "CREATE TABLE counter (id INTEGER PRIMARY KEY AUTOINCREMENT, n)",  # the app already has sqlite_sequence
        "CREATE TABLE t (a TEXT PRIMARY KEY, b)",
        "CREATE INDEX t_b ON t (b)",
        "CREATE VIEW v AS SELECT * FROM t",
        "CREATE TRIGGER app_trigger AFTER INSERT ON t BEGIN UPDATE counter SET n = n + 1; END",
    )
    conn.execute("INSERT INTO counter (n) VALUES (0)")
    before = _schema_rows(conn)
    sequence_before = conn.execute("SELECT * FROM sqlite_sequence").fetchall()
    install.install(path)
    conn.execute("INSERT INTO t VALUES ('x', 1)")
    assert _schema_rows(conn) != before
    report = install.remove(path)
    assert report.removed
    assert report.triggers_dropped == 6
    assert report.journal_rows_dropped == 2
    assert report.note == ""
    assert _schema_rows(conn) == before
    assert conn.execute("SELECT * FROM sqlite_sequence").fetchall() == sequence_before
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_remove_leaves_no_sqlite_sequence_behind(tmp_path: Path) -> None:
    """No AUTOINCREMENT on the journal, so remove leaves nothing, not even sqlite_sequence."""
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)", "CREATE TABLE w (a, b, c, PRIMARY KEY (a, b, c))")
    before = _schema_rows(conn)
    install.install(path)
    conn.execute("INSERT INTO t VALUES (1, 1)")
    conn.execute("INSERT INTO w VALUES (1, 2, 3)")
    report = install.remove(path)
    assert report.note == ""
    assert _schema_rows(conn) == before
    assert install.remove(path).note == "capture was not installed"


def test_install_is_idempotent_and_deterministic(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE a (id INTEGER PRIMARY KEY)", "CREATE TABLE b (x TEXT PRIMARY KEY)")
    first = install.install(path)
    schema_after_first = _schema_rows(conn)
    version = conn.execute("PRAGMA schema_version").fetchone()
    second = install.install(path)
    assert first.changed == ("a", "b")
    assert second.changed == ()
    assert second.source_id == first.source_id
    assert _schema_rows(conn) == schema_after_first
    assert conn.execute("PRAGMA schema_version").fetchone() == version  # nothing was rewritten
    names = sorted(n for _t, n, _tb, _s in schema_after_first if n.startswith("_replicator_") and _t == "trigger")
    assert names == sorted(f"_replicator_{op}_{t}" for t in ("a", "b") for op in ("del", "ins", "upd"))


@pytest.mark.parametrize("name", WEIRD)
def test_odd_identifiers_are_quoted_everywhere(tmp_path: Path, name: str) -> None:
    path = tmp_path / "app.db"
    col = name + " col"
    conn = _app(
        path,
        f"CREATE TABLE {quote_ident(name)} ({quote_ident(col)} TEXT, {quote_ident(name)} INT, v,"
        f" PRIMARY KEY ({quote_ident(col)}, {quote_ident(name)}))",
    )
    install.install(path)
    conn.execute(f"INSERT INTO {quote_ident(name)} VALUES ('k''1', 2, 'x')")
    conn.execute(f"UPDATE {quote_ident(name)} SET {quote_ident(name)} = 3")
    entries = journal.read(conn, 0)
    assert [(e.table, e.op) for e in entries] == [(name, "I"), (name, "U")]
    assert entries[1].key == ("k'1", 3)
    assert entries[1].old_key == ("k'1", 2)
    where, params = journal.key_predicate((col, name), entries[1].key)
    assert conn.execute(f"SELECT v FROM {quote_ident(name)} WHERE {where}", params).fetchone() == ("x",)
    assert install.status(path).tables[0].state == "captured"
    install.remove(path)
    assert conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'").fetchone() == (0,)


def test_refuse_names_every_keyless_table_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(
        path,
        "CREATE TABLE ok (id INTEGER PRIMARY KEY)",
        "CREATE TABLE nopk (a, b)",
        "CREATE TABLE nullpk (a TEXT PRIMARY KEY, b)",
    )
    conn.execute("INSERT INTO nullpk VALUES (NULL, 1)")  # d8: allowed in a rowid table
    before = _schema_rows(conn)
    with pytest.raises(SchemaUnsupported) as info:
        install.install(path)
    assert '"nopk" has no primary key' in info.value.message
    assert '"nullpk" has NULL values in primary key columns a' in info.value.message
    assert "snapshot-only" in info.value.hint
    assert "rowid" in info.value.hint
    assert _schema_rows(conn) == before  # nothing half-installed


def test_rowid_and_snapshot_only_policies(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE nopk (a, b)", "CREATE TABLE big (id INTEGER PRIMARY KEY, v)", "CREATE TABLE x (a)")
    report = install.install(path, default_policy="rowid", policies={"big": "snapshot-only", "x": "snapshot-only"})
    modes = {t.name: t.mode for t in report.tables}
    assert modes == {"nopk": "rowid", "big": "snapshot-only", "x": "snapshot-only"}
    assert "VACUUM" in next(t.note for t in report.tables if t.name == "nopk")
    conn.execute("INSERT INTO nopk VALUES (1, 2)")
    conn.execute("INSERT INTO big VALUES (1, 2)")
    assert [(e.table, e.key) for e in journal.read(conn, 0)] == [("nopk", (1,))]
    states = {t.name: t.state for t in install.status(path).tables}
    assert states == {"big": "snapshot-only", "nopk": "captured", "x": "snapshot-only"}
    # switching a table from snapshot-only to captured later is a reconcile
    again = install.install(path, default_policy="rowid", policies={"x": "snapshot-only"})
    assert again.changed == ("big",)
    assert {t.name: t.mode for t in again.tables}["big"] == "key"


def test_unknown_policy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _app(path, "CREATE TABLE t (a)")
    with pytest.raises(SchemaUnsupported, match="unknown no-key policy"):
        install.install(path, policies={"t": "guess"})  # type: ignore[dict-item]


def test_virtual_and_shadow_tables_are_skipped_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE docs (id INTEGER PRIMARY KEY, body)", "CREATE VIRTUAL TABLE fts USING fts5(body)")
    report = install.install(path)
    assert [t.name for t in report.tables] == ["docs"]
    skipped = {s.name: s.reason for s in report.skipped}
    assert "cannot have triggers" in skipped["fts"]
    assert {n for n in skipped if n.startswith("fts_")} == {
        "fts_config",
        "fts_content",
        "fts_data",
        "fts_docsize",
        "fts_idx",
    }
    conn.execute("INSERT INTO fts VALUES ('hello')")  # the app's FTS writes still work


def test_status_reports_journal_size_and_backlog(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    assert install.status(path).installed is False
    install.install(path)
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
    status = install.status(path)
    assert status.installed
    assert status.format_version == 2
    assert len(status.source_id or "") == 32
    assert status.journal is not None
    assert (status.journal.rows, status.journal.first_seq, status.journal.head) == (10, 1, 10)
    assert (status.journal.pruned_through, status.journal.pending) == (0, 10)
    journal.prune(conn, 10)
    after = install.status(path).journal
    assert after is not None
    assert (after.rows, after.head, after.pruned_through, after.pending) == (1, 10, 9, 1)
    conn.execute("CREATE TABLE later (id INTEGER PRIMARY KEY)")
    assert {t.name: t.state for t in install.status(path).tables}["later"] == "not-captured"


def test_stamp_time_gives_status_a_lag_in_seconds(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    install.install(path)
    conn.execute("INSERT INTO t VALUES (1)")
    assert journal.read(conn, 0)[0].ts_ms is None
    assert install.status(path).journal is not None
    assert install.status(path).journal.lag_s is None  # type: ignore[union-attr]
    report = install.install(path, stamp_time=True)
    assert report.changed == ("t",)  # the triggers were re-created with the stamp
    assert report.tables[0].generation == 2
    conn.execute("INSERT INTO t VALUES (2)")
    stamped = journal.read(conn, 1)[0]
    assert stamped.ts_ms is not None
    assert abs(stamped.ts_ms / 1000 - time.time()) < 5
    time.sleep(0.05)
    stats = install.status(path).journal
    assert stats is not None
    assert stats.lag_s is not None
    assert stats.lag_s >= 0.04


def test_journal_has_no_constraint_but_its_rowid_primary_key(tmp_path: Path) -> None:
    """d2: nothing an outer OR IGNORE/OR REPLACE could resolve against; keys in untyped columns."""
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY)", "CREATE TABLE c (a, b, PRIMARY KEY (a, b))")
    install.install(path)
    info = conn.execute(f"PRAGMA table_info({quote_ident(JOURNAL)})").fetchall()
    assert [(name, decl, notnull, default, pk) for _cid, name, decl, notnull, default, pk in info] == [
        ("seq", "INTEGER", 0, None, 1),
        ("tbl", "TEXT", 0, None, 0),
        ("op", "TEXT", 0, None, 0),
        ("gen", "INTEGER", 0, None, 0),
        ("nk", "INTEGER", 0, None, 0),
        ("ts_ms", "INTEGER", 0, None, 0),
        ("k1", "", 0, None, 0),
        ("o1", "", 0, None, 0),
        ("k2", "", 0, None, 0),
        ("o2", "", 0, None, 0),
    ]
    assert conn.execute(f"PRAGMA index_list({quote_ident(JOURNAL)})").fetchall() == []
    sql = conn.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (JOURNAL,)).fetchone()[0]
    assert "CHECK" not in sql.upper()
    assert "UNIQUE" not in sql.upper()
    assert read_schema(conn).tables == read_schema(conn).tables  # our tables are internal: not in the app schema
    assert all(not t.name.startswith("_replicator_") for t in read_schema(conn).tables)


def test_reading_the_journal_before_install_says_what_to_do(tmp_path: Path) -> None:
    conn = _app(tmp_path / "app.db", "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    with pytest.raises(CaptureNotInstalled, match="not installed"):
        journal.read(conn, 0)


def test_reinstall_after_a_rebuild_bumps_the_generation(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    install.install(path)
    conn.executescript(
        "BEGIN; CREATE TABLE t_new (id INTEGER PRIMARY KEY, v, w); INSERT INTO t_new SELECT id, v, NULL FROM t;"
        " DROP TABLE t; ALTER TABLE t_new RENAME TO t; COMMIT;"
    )
    assert {t.name: t.state for t in install.status(path).tables}["t"] == "triggers-missing"
    report = install.install(path)
    assert report.changed == ("t",)
    assert report.tables[0].generation == 2
    conn.execute("INSERT INTO t VALUES (1, 1, 1)")
    assert [e.gen for e in journal.read(conn, 0)] == [2]


def test_install_drops_our_triggers_left_on_a_renamed_table(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    install.install(path)
    conn.execute("ALTER TABLE t RENAME TO t2")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    report = install.install(path)
    assert set(report.changed) == {"t", "t2"}
    conn.execute("INSERT INTO t2 VALUES (1)")
    conn.execute("INSERT INTO t VALUES (5)")
    assert sorted((e.table, e.key) for e in journal.read(conn, 0)) == [("t", (5,)), ("t2", (1,))]


# --- real files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source", realworld_files(), ids=lambda p: p.name)
def test_install_on_real_world_files(tmp_path: Path, source: Path, realworld: Path) -> None:
    path = tmp_path / source.name
    shutil.copyfile(source, path)
    path.chmod(0o644)
    conn = sqlite3.connect(path, isolation_level=None)
    before = _schema_rows(conn)
    had_sequence = any(n == "sqlite_sequence" for _t, n, _tb, _s in before)
    try:
        report = install.install(path)
    except SchemaUnsupported as exc:
        refused = exc.message
        report = install.install(path, default_policy="rowid")
        assert "cannot be captured by key" in refused
    captured = [t for t in report.tables if t.mode != "snapshot-only"]
    assert captured, "every real file has at least one capturable table"
    touched, nonempty = 0, 0
    for cap in captured:
        table = quote_ident(cap.name)
        key_cols = cap.key_columns or (cap.rowid,)
        select_key = ", ".join(c if c == cap.rowid and cap.key_columns is None else quote_ident(c) for c in key_cols)
        row = conn.execute(f"SELECT {select_key} FROM {table} LIMIT 1").fetchone()
        if row is None:
            continue
        nonempty += 1
        start = journal.head(conn)
        where, params = journal.key_predicate(key_cols, row) if cap.key_columns else (f"{cap.rowid} = ?", list(row))
        first_col = quote_ident(cap.columns[0])
        conn.execute(f"UPDATE {table} SET {first_col} = {first_col} WHERE {where}", params)
        mine = [e for e in journal.read(conn, start) if e.table == cap.name]
        assert mine, f"no journal entry for {cap.name}"
        assert mine[0].key == tuple(row)
        touched += 1
    assert touched == nonempty
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    install.remove(path)
    after = _schema_rows(conn)
    if not had_sequence:
        after = [r for r in after if r[1] != "sqlite_sequence"]
    assert after == before


def test_sakila_app_triggers_and_ours_coexist(tmp_path: Path, realworld: Path) -> None:
    source = realworld / "sakila" / "sakila.db"
    if not source.exists():
        pytest.skip("sakila not present")
    path = tmp_path / "sakila.db"
    shutil.copyfile(source, path)
    path.chmod(0o644)
    conn = sqlite3.connect(path, isolation_level=None)
    app_triggers = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'").fetchone()[0]
    assert app_triggers > 0
    try:
        install.install(path)
    except SchemaUnsupported:
        install.install(path, default_policy="rowid")
    start = journal.head(conn)
    conn.execute("INSERT INTO actor (first_name, last_name, last_update) VALUES ('ADA', 'LOVELACE', 'then')")
    (actor_id,) = conn.execute("SELECT max(actor_id) FROM actor").fetchone()
    entries = [(e.table, e.op, e.key) for e in journal.read(conn, start)]
    # ours for the INSERT, and for the app trigger's own UPDATE that stamps last_update (in either order)
    # (actor_trigger_ai's UPDATE fires actor_trigger_au, whose UPDATE is journaled too)
    assert set(entries) == {("actor", "I", (actor_id,)), ("actor", "U", (actor_id,))}
    assert conn.execute("SELECT last_update != 'then' FROM actor WHERE actor_id = ?", (actor_id,)).fetchone() == (1,)


# --- concurrency --------------------------------------------------------------------------------


def _assert_suffix_journaled(conn: sqlite3.Connection, total: int) -> int:
    """Writes committed after install are all journaled, earlier ones none: a contiguous id suffix."""
    keys = [e.key[0] for e in journal.read(conn, 0, limit=1_000_000)]
    assert keys, "the writer finished before install committed: make it slower"
    first = keys[0]
    assert isinstance(first, int)
    assert keys == list(range(first, total + 1))
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (total,)
    return first


def test_install_while_an_app_thread_writes(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)").close()
    errors: list[BaseException] = []
    total = 400

    def writer() -> None:
        app = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        try:
            for i in range(1, total + 1):
                app.execute("INSERT INTO t VALUES (?, 'x')", (i,))
                time.sleep(0.001)
        except BaseException as exc:
            errors.append(exc)
        finally:
            app.close()

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.1)
    install.install(path)
    thread.join()
    assert errors == []
    first = _assert_suffix_journaled(sqlite3.connect(path), total)
    assert 1 < first <= total


def test_install_while_an_app_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)").close()
    total = 400
    script = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5.0)\n"
        f"for i in range(1, {total} + 1):\n"
        "    c.execute('BEGIN'); c.execute('INSERT INTO t VALUES (?, ?)', (i, 'x')); c.execute('COMMIT')\n"
        "    time.sleep(0.001)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stderr=subprocess.PIPE, text=True)
    # Install once the app has written (its interpreter may take longer than any fixed sleep to start on a
    # loaded machine: a sleep let the install land before the first insert, and `first` was 1).
    deadline = time.monotonic() + 60
    while _rows(path) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    install.install(path)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    first = _assert_suffix_journaled(sqlite3.connect(path), total)
    assert 1 < first <= total


def test_install_waits_then_reports_a_busy_database_clearly(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    app = _app(path, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    app.execute("BEGIN IMMEDIATE")  # an app transaction holding the write lock
    app.execute("INSERT INTO t VALUES (1)")
    started = time.monotonic()
    with pytest.raises(SourceBusy) as info:
        install.install(path, busy_timeout_ms=200)
    assert time.monotonic() - started >= 0.2  # it waited for the app first
    assert info.value.transient
    assert "retry" in info.value.hint
    app.execute("COMMIT")
    assert install.install(path).changed == ("t",)
    assert read_schema(app).table("t").name == "t"


def _rows(path: Path) -> int:
    """Rows the app committed so far, read on a connection of its own (closed again at once)."""
    conn = sqlite3.connect(path, timeout=5.0)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    finally:
        conn.close()
