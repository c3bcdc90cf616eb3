"""Every kind of application write reaches the journal in its own transaction, and none fails
because of the capture (traps d1-d4, d8, d10, d12, d14, d16, d20 of the research notes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from triggers import install, journal
from triggers.schema import read_schema


def _app(tmp_path: Path, *ddl: str, name: str = "app.db") -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / name, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for statement in ddl:
        conn.execute(statement)
    return conn


def _log(conn: sqlite3.Connection, after: int = 0) -> list[tuple[str, str, tuple[journal.KeyValue, ...], object]]:
    """(table, op, key, old key) of every entry after ``after``, keys decoded."""
    return [(e.table, e.op, e.key, e.old_key) for e in journal.read(conn, after)]


USERS = "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT, n INT DEFAULT 0)"


@pytest.fixture
def users(tmp_path: Path) -> sqlite3.Connection:
    conn = _app(tmp_path, USERS)
    install.install_on(conn)
    return conn


def test_insert_update_delete(users: sqlite3.Connection) -> None:
    users.execute("INSERT INTO users (id, email, name) VALUES (1, 'a@x', 'A')")
    users.execute("UPDATE users SET name = 'B' WHERE id = 1")
    users.execute("DELETE FROM users WHERE id = 1")
    assert _log(users) == [("users", "I", (1,), None), ("users", "U", (1,), None), ("users", "D", (1,), None)]


def test_update_changing_the_primary_key_records_the_old_key(users: sqlite3.Connection) -> None:
    users.execute("INSERT INTO users (id, email) VALUES (1, 'a@x')")
    users.execute("UPDATE users SET id = 7 WHERE id = 1")
    assert _log(users, 1) == [("users", "U", (7,), (1,))]


def test_pk_change_visible_only_to_collation_is_still_recorded(tmp_path: Path) -> None:
    """'a' → 'A' under NOCASE: SQLite calls them equal, PostgreSQL will not; compared as encoded text.
    The key's REPLACE-victim trigger leaves the updated row out (it matches NEW under NOCASE, but is
    no victim of its own update): the U entry names both keys."""
    conn = _app(tmp_path, "CREATE TABLE t (k TEXT COLLATE NOCASE PRIMARY KEY, v)")
    install.install_on(conn)
    conn.execute("INSERT INTO t VALUES ('a', 1)")
    conn.execute("UPDATE t SET k = 'A'")
    assert _log(conn, 1) == [("t", "U", ("A",), ("a",))]


def test_replace_over_a_nocase_primary_key_journals_the_victim(tmp_path: Path) -> None:
    """Issue 14 item 3: REPLACE ('tag') deletes the row keyed 'Tag' under NOCASE (no DELETE trigger
    fires); the key's victim trigger names it, in bytes, before the new row's entry."""
    conn = _app(tmp_path, "CREATE TABLE t (k TEXT COLLATE NOCASE PRIMARY KEY, v) WITHOUT ROWID")
    install.install_on(conn)
    conn.execute("INSERT INTO t VALUES ('Tag', 1)")
    conn.execute("INSERT OR REPLACE INTO t VALUES ('tag', 2)")
    assert _log(conn, 1) == [("t", "R", ("Tag",), None), ("t", "I", ("tag",), None)]


def test_binary_primary_key_has_no_victim_trigger(tmp_path: Path) -> None:
    """A BINARY key conflicts only with the same bytes, which the new row's entry names: no extra trigger."""
    conn = _app(tmp_path, "CREATE TABLE t (k TEXT PRIMARY KEY, v) WITHOUT ROWID")
    report = install.install_on(conn)
    assert report.tables[0].unique_keys == ()
    assert len(report.tables[0].triggers) == 3


def test_insert_or_replace_over_a_secondary_unique_journals_the_victim(users: sqlite3.Connection) -> None:
    """d1: REPLACE deletes the row conflicting on email and fires no DELETE trigger. The BEFORE INSERT
    victim trigger journals it as R(1); the apply can also find it from I(2)'s current row's unique
    values (shown below), but only while row 2 keeps that email: the convergence test shows why R is
    needed."""
    users.execute("INSERT INTO users (id, email, name) VALUES (1, 'a@x', 'victim')")
    before = journal.head(users)
    users.execute("INSERT OR REPLACE INTO users (id, email, name) VALUES (2, 'a@x', 'winner')")
    log = _log(users, before)
    assert log == [("users", "R", (1,), None), ("users", "I", (2,), None)]
    assert users.execute("SELECT id FROM users").fetchall() == [(2,)]

    table = read_schema(users).table("users")
    where, params = journal.key_predicate(table.primary_key, log[1][2])
    current = users.execute(f"SELECT * FROM users WHERE {where}", params).fetchone()
    row = dict(zip([c.name for c in table.columns], current, strict=True))
    unique_values = {cols: tuple(row[c] for c in cols) for cols in table.unique_keys}
    assert unique_values == {("id",): (2,), ("email",): ("a@x",)}
    victim = {"id": 1, "email": "a@x", "name": "victim"}  # what the target still holds
    assert any(tuple(victim[c] for c in cols) == vals for cols, vals in unique_values.items() if cols != ("id",))


def test_insert_or_replace_on_the_primary_key(users: sqlite3.Connection) -> None:
    users.execute("INSERT INTO users (id, email) VALUES (1, 'a@x')")
    users.execute("INSERT OR REPLACE INTO users (id, email) VALUES (1, 'b@x')")
    assert _log(users) == [("users", "I", (1,), None), ("users", "I", (1,), None)]


def test_upsert_journals_an_update(users: sqlite3.Connection) -> None:
    users.execute("INSERT INTO users (id, email, n) VALUES (1, 'a@x', 1)")
    users.execute(
        "INSERT INTO users (id, email, n) VALUES (1, 'a@x', 1) ON CONFLICT (id) DO UPDATE SET n = n + excluded.n"
    )
    # BEFORE INSERT sees email 'a@x' taken by row 1: a (harmless) R(1) before the U(1)
    assert _log(users) == [("users", "I", (1,), None), ("users", "R", (1,), None), ("users", "U", (1,), None)]
    assert users.execute("SELECT n FROM users").fetchone() == (2,)


def test_insert_or_ignore_journals_only_what_was_inserted(users: sqlite3.Connection) -> None:
    users.execute("INSERT INTO users (id, email) VALUES (1, 'a@x')")
    users.execute("INSERT OR IGNORE INTO users (id, email) VALUES (1, 'zzz')")  # PK conflict: ignored
    users.execute("INSERT OR IGNORE INTO users (id, email) VALUES (2, 'a@x')")  # unique conflict: ignored
    users.execute("INSERT OR IGNORE INTO users (id, email) VALUES (3, 'c@x')")
    # the ignored unique conflict leaves a superset R(1): the apply rewrites row 1 as it is, harmless
    assert _log(users) == [("users", "I", (1,), None), ("users", "R", (1,), None), ("users", "I", (3,), None)]


def test_outer_conflict_clause_cannot_drop_journal_rows(users: sqlite3.Connection) -> None:
    """d2: UPDATE OR IGNORE / OR REPLACE override the trigger's conflict handling; the journal has no
    constraint that could conflict, so every row is still journaled."""
    users.executemany("INSERT INTO users (id, email) VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
    start = journal.head(users)
    users.execute("UPDATE OR IGNORE users SET name = 'x'")
    users.execute("UPDATE OR REPLACE users SET email = 'a' WHERE id = 2")  # deletes id 1 silently
    users.execute("UPDATE OR ROLLBACK users SET n = 5 WHERE id = 3")
    ops = [(op, key) for _t, op, key, _o in _log(users, start)]
    assert ops == [("U", (1,)), ("U", (2,)), ("U", (3,)), ("R", (1,)), ("U", (2,)), ("U", (3,))]


def test_cascaded_deletes_are_journaled(tmp_path: Path) -> None:
    conn = _app(
        tmp_path,
        "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
        "CREATE TABLE child (id INTEGER PRIMARY KEY, pid INT REFERENCES parent(id) ON DELETE CASCADE)",
    )
    install.install_on(conn)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("INSERT INTO parent VALUES (1)")
    conn.executemany("INSERT INTO child VALUES (?, 1)", [(10,), (11,)])
    start = journal.head(conn)
    conn.execute("DELETE FROM parent WHERE id = 1")
    assert sorted(_log(conn, start)) == [
        ("child", "D", (10,), None),
        ("child", "D", (11,), None),
        ("parent", "D", (1,), None),
    ]


def test_delete_without_where_journals_every_row(users: sqlite3.Connection) -> None:
    """d14: the truncate optimisation is off when the table has triggers."""
    users.executemany("INSERT INTO users (id, email) VALUES (?, ?)", [(i, f"{i}@x") for i in range(1, 101)])
    start = journal.head(users)
    users.execute("DELETE FROM users")
    log = _log(users, start)
    assert len(log) == 100
    assert {k for _t, op, k, _o in log if op == "D"} == {(i,) for i in range(1, 101)}


def test_noop_updates_are_journaled(users: sqlite3.Connection) -> None:
    """Documented choice: no-op UPDATEs are journaled (no WHEN filter); the state-based apply is idempotent."""
    users.execute("INSERT INTO users (id, email, name) VALUES (1, 'a', NULL)")
    users.execute("UPDATE users SET name = name")
    users.execute("UPDATE users SET name = NULL WHERE id = 1")
    assert [op for _t, op, _k, _o in _log(users, 1)] == ["U", "U"]


def test_odd_values_in_key_and_other_columns_never_fail_the_app_write(tmp_path: Path) -> None:
    """d10: a json_object() trigger would abort these writes; ours must not."""
    conn = _app(tmp_path, "CREATE TABLE t (k PRIMARY KEY, txt TEXT, num REAL, big BLOB, j TEXT)")
    install.install_on(conn)
    huge = b"\x00" * (8 * 1024 * 1024)
    rows = [
        (b"\x00blob-key", b"\x01blob in text column", "text in real", huge, "x\x00y"),
        (1e308, float("inf"), -0.0, "ünï" * 100_000, None),
        ("k\x00", 0.1, 10**18, None, b"\xff"),
    ]
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
    conn.execute("INSERT INTO t VALUES (CAST(x'ff00fe' AS TEXT), CAST(x'c3' AS TEXT), NULL, NULL, NULL)")
    conn.execute("UPDATE t SET txt = ? WHERE k = ?", (b"\xff" * 1000, b"\x00blob-key"))
    conn.execute("DELETE FROM t WHERE k = 1e308")
    keys = [e.key[0] for e in journal.read(conn, 0)]
    assert keys[:3] == [b"\x00blob-key", 1e308, "k\x00"]
    assert keys[3] == b"\xff\x00\xfe".decode("utf-8", "surrogateescape")
    assert keys[4:] == [b"\x00blob-key", 1e308]


def test_rollback_leaves_nothing_in_the_journal(users: sqlite3.Connection) -> None:
    users.execute("INSERT INTO users (id, email) VALUES (1, 'a')")
    head = journal.head(users)
    users.execute("BEGIN")
    users.execute("INSERT INTO users (id, email) VALUES (2, 'b')")
    users.execute("UPDATE users SET name = 'x'")
    users.execute("DELETE FROM users WHERE id = 1")
    users.execute("ROLLBACK")
    assert journal.head(users) == head
    assert journal.read(users, head) == []


def test_failed_statement_inside_a_transaction_journals_nothing_for_it(users: sqlite3.Connection) -> None:
    users.execute("INSERT INTO users (id, email) VALUES (1, 'a')")
    with pytest.raises(sqlite3.IntegrityError):
        users.execute("INSERT INTO users (id, email) VALUES (2, 'b'), (3, 'a')")  # 2nd row fails: statement undone
    assert _log(users) == [("users", "I", (1,), None)]


def test_app_alter_table_with_capture_installed(users: sqlite3.Connection) -> None:
    """d12: our triggers name only the key column, so ADD/DROP/RENAME COLUMN of others all work."""
    users.execute("INSERT INTO users (id, email, name) VALUES (1, 'a', 'A')")
    users.execute("ALTER TABLE users ADD COLUMN age INT")
    users.execute("ALTER TABLE users RENAME COLUMN name TO full_name")
    users.execute("ALTER TABLE users DROP COLUMN n")
    users.execute("ALTER TABLE users DROP COLUMN full_name")
    users.execute("UPDATE users SET age = 3 WHERE id = 1")
    users.execute("ALTER TABLE users RENAME COLUMN id TO user_id")  # the key itself: SQLite rewrites our triggers
    users.execute("INSERT INTO users (user_id, email) VALUES (2, 'b')")
    assert _log(users, 1) == [("users", "U", (1,), None), ("users", "I", (2,), None)]


def test_app_trigger_touching_updated_at_is_harmless(tmp_path: Path) -> None:
    """d16: firing order among triggers is undocumented; a key-only journal does not care."""
    conn = _app(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v, updated_at)",
    )
    install.install_on(conn)
    conn.execute(
        "CREATE TRIGGER touch AFTER UPDATE OF v ON t BEGIN UPDATE t SET updated_at = 'T2' WHERE id = NEW.id; END"
    )
    conn.execute("INSERT INTO t VALUES (1, 'a', 'T0')")
    conn.execute("UPDATE t SET v = 'b' WHERE id = 1")
    log = _log(conn, 1)
    assert {(op, k) for _t, op, k, _o in log} == {("U", (1,))}
    assert len(log) == 2  # the outer update and the nested one; the apply reads the final row once
    assert conn.execute("SELECT v, updated_at FROM t").fetchone() == ("b", "T2")


def test_triggers_work_with_trusted_schema_off(users: sqlite3.Connection, tmp_path: Path) -> None:
    """d21: only innocuous built-ins in the trigger bodies."""
    app = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    app.execute("PRAGMA trusted_schema = OFF")
    app.execute("INSERT INTO users (id, email) VALUES (9, 'z')")
    assert _log(users) == [("users", "I", (9,), None)]


def test_without_rowid_table_by_primary_key(tmp_path: Path) -> None:
    conn = _app(tmp_path, "CREATE TABLE kv (ns TEXT, k TEXT, v, PRIMARY KEY (ns, k)) WITHOUT ROWID")
    install.install_on(conn)
    conn.execute("INSERT INTO kv VALUES ('a', 'b', 1)")
    conn.execute("UPDATE kv SET k = 'c' WHERE ns = 'a'")
    conn.execute("DELETE FROM kv")
    assert _log(conn) == [
        ("kv", "I", ("a", "b"), None),
        ("kv", "U", ("a", "c"), ("a", "b")),
        ("kv", "D", ("a", "c"), None),
    ]


def test_rowid_policy_with_a_column_named_rowid(tmp_path: Path) -> None:
    conn = _app(tmp_path, "CREATE TABLE log (rowid TEXT, msg TEXT)")
    report = install.install_on(conn, default_policy="rowid")
    assert report.tables[0].mode == "rowid"
    assert report.tables[0].rowid == "_rowid_"
    conn.execute("INSERT INTO log VALUES ('not-a-rowid', 'm')")
    conn.execute("UPDATE log SET msg = 'n'")
    assert _log(conn) == [("log", "I", (1,), None), ("log", "U", (1,), None)]


def test_each_app_transaction_lands_atomically(users: sqlite3.Connection) -> None:
    users.execute("BEGIN")
    for i in range(50):
        users.execute("INSERT INTO users (id, email) VALUES (?, ?)", (i + 1, str(i)))
    reader = sqlite3.connect(users.execute("PRAGMA database_list").fetchone()[2], isolation_level=None)
    assert journal.head(reader) == 0  # uncommitted: invisible to other connections
    users.execute("COMMIT")
    assert journal.head(reader) == 50


def test_replace_victim_is_journaled_even_when_the_winner_changes_again(users: sqlite3.Connection) -> None:
    """Why victims are journaled at write time: after this transaction no current row holds 'a@x',
    so an apply searching victims by the winner's unique values would keep row 1 forever."""
    users.execute("INSERT INTO users (id, email) VALUES (1, 'a@x')")
    start = journal.head(users)
    users.execute("BEGIN")
    users.execute("INSERT OR REPLACE INTO users (id, email) VALUES (2, 'a@x')")
    users.execute("UPDATE users SET email = 'b@x' WHERE id = 2")
    users.execute("COMMIT")
    keys = {(op, key) for _t, op, key, _o in _log(users, start)}
    assert ("R", (1,)) in keys
    assert users.execute("SELECT id, email FROM users").fetchall() == [(2, "b@x")]


def test_victims_under_index_collation_partial_and_expression_indexes(tmp_path: Path) -> None:
    conn = _app(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, e TEXT, f TEXT, g INT)",
        "CREATE UNIQUE INDEX t_e ON t (e COLLATE NOCASE)",
        "CREATE UNIQUE INDEX t_fg ON t (f, g) WHERE g > 0",
        "CREATE UNIQUE INDEX t_lower ON t (lower(f))",
    )
    report = install.install_on(conn)
    cap = report.tables[0]
    assert cap.unique_keys == ((("e", "NOCASE"),), (("f", "BINARY"), ("g", "BINARY")))
    assert "t_lower" in cap.note
    conn.execute("INSERT INTO t VALUES (1, 'Mail', 'x', 1)")
    start = journal.head(conn)
    conn.execute("INSERT OR REPLACE INTO t VALUES (2, 'MAIL', 'y', 1)")  # NOCASE conflict: 1 is the victim
    assert ("t", "R", (1,), None) in _log(conn, start)
    assert conn.execute("SELECT id FROM t").fetchall() == [(2,)]
    start = journal.head(conn)
    conn.execute("INSERT OR REPLACE INTO t VALUES (3, 'other', 'y', 1)")  # partial (f, g) conflict with 2
    assert ("t", "R", (2,), None) in _log(conn, start)


def test_victim_triggers_only_watch_unique_columns_on_update(users: sqlite3.Connection) -> None:
    users.execute("INSERT INTO users (id, email, name) VALUES (1, 'a', 'x')")
    start = journal.head(users)
    users.execute("UPDATE users SET name = 'y'")  # not a unique column: the BEFORE UPDATE OF trigger stays quiet
    assert [op for _t, op, _k, _o in _log(users, start)] == ["U"]


def test_saving_every_column_journals_the_update_once(users: sqlite3.Connection) -> None:
    """An ORM's save() writes every column, unique ones included: the BEFORE UPDATE OF trigger fires,
    but the row being updated is no victim of its own update, so only its U entry is journaled."""
    users.execute("INSERT INTO users (id, email, name) VALUES (1, 'a@x', 'A')")
    start = journal.head(users)
    users.execute("UPDATE users SET email = 'a@x', name = 'B', n = 1 WHERE id = 1")
    assert _log(users, start) == [("users", "U", (1,), None)]


def test_update_or_replace_over_many_rows_journals_each_victim(users: sqlite3.Connection) -> None:
    """Each row updated to the same email deletes the one before it: every victim is journaled, by rowid."""
    users.executemany("INSERT INTO users (id, email) VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
    start = journal.head(users)
    users.execute("UPDATE OR REPLACE users SET email = 'z'")
    assert users.execute("SELECT id FROM users").fetchall() == [(3,)]
    log = _log(users, start)
    assert [(op, key) for _t, op, key, _o in log if op == "R"] == [("R", (1,)), ("R", (2,))]


def test_without_rowid_update_victims_leave_the_updated_row_out(tmp_path: Path) -> None:
    """A WITHOUT ROWID table names the updated row by its primary key (NOT NULL there, unique)."""
    conn = _app(
        tmp_path,
        "CREATE TABLE acct (tenant TEXT, id INT, handle TEXT COLLATE NOCASE UNIQUE, PRIMARY KEY (tenant, id))"
        " WITHOUT ROWID",
    )
    install.install_on(conn)
    conn.executemany("INSERT INTO acct VALUES ('a', ?, ?)", [(1, "x"), (2, "y")])
    start = journal.head(conn)
    conn.execute("UPDATE acct SET handle = 'Y' WHERE id = 2")  # its own value, under NOCASE: no victim
    conn.execute("UPDATE acct SET id = 3, handle = 'y' WHERE id = 2")  # key change, same handle
    conn.execute("UPDATE OR REPLACE acct SET handle = 'X' WHERE id = 3")  # deletes ('a', 1)
    assert _log(conn, start) == [
        ("acct", "U", ("a", 2), None),
        ("acct", "U", ("a", 3), ("a", 2)),
        ("acct", "R", ("a", 1), None),
        ("acct", "U", ("a", 3), None),
    ]
    assert conn.execute("SELECT tenant, id, handle FROM acct").fetchall() == [("a", 3, "X")]


def test_with_the_rowid_hidden_the_updated_row_stays_a_harmless_candidate(tmp_path: Path) -> None:
    """Columns named rowid, _rowid_ and oid hide the rowid, and a nullable TEXT key cannot name one row
    exactly (two NULL keys may exist): a partial index, probed on every UPDATE, names the updated row too."""
    conn = _app(
        tmp_path,
        "CREATE TABLE h (rowid, _rowid_, oid, k TEXT PRIMARY KEY, e TEXT, n INT)",
        "CREATE UNIQUE INDEX h_e ON h (e) WHERE n > 0",
    )
    cap = install.install_on(conn).tables[0]
    assert (cap.rowid, cap.identity, cap.indirect_keys) == ("", (), ((("e", "BINARY"),),))
    conn.execute("INSERT INTO h (k, e, n) VALUES ('k', 'e', 1)")
    start = journal.head(conn)
    conn.execute("UPDATE h SET n = 2 WHERE k = 'k'")
    assert _log(conn, start) == [("h", "R", ("k",), None), ("h", "U", ("k",), None)]


def test_update_or_replace_into_a_partial_unique_index_journals_the_victim(tmp_path: Path) -> None:
    """The row joins the partial index by a column of its WHERE, not of the index: UPDATE OF the indexed
    columns would not fire, so the victim trigger watches every UPDATE."""
    conn = _app(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT, active INT)",
        "CREATE UNIQUE INDEX t_email ON t (email) WHERE active = 1",
    )
    install.install_on(conn)
    conn.executemany("INSERT INTO t VALUES (?, 'a', ?)", [(3, 1), (5, 0)])
    start = journal.head(conn)
    conn.execute("UPDATE OR REPLACE t SET active = 1 WHERE id = 5")  # deletes row 3
    assert conn.execute("SELECT id FROM t").fetchall() == [(5,)]
    assert _log(conn, start) == [("t", "R", (3,), None), ("t", "U", (5,), None)]


@pytest.mark.parametrize("kind", ["VIRTUAL", "STORED"])
def test_update_or_replace_through_a_generated_unique_column_journals_the_victim(tmp_path: Path, kind: str) -> None:
    """A UNIQUE generated column changes when its inputs do; no UPDATE names it in SET."""
    conn = _app(tmp_path, f"CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT AS (lower(a)) {kind} UNIQUE)")
    install.install_on(conn)
    conn.executemany("INSERT INTO t (id, a) VALUES (?, ?)", [(1, "x"), (2, "y")])
    start = journal.head(conn)
    conn.execute("UPDATE OR REPLACE t SET a = 'X' WHERE id = 2")  # b becomes 'x': deletes row 1
    assert conn.execute("SELECT id, b FROM t").fetchall() == [(2, "x")]
    assert _log(conn, start) == [("t", "R", (1,), None), ("t", "U", (2,), None)]


def test_lastrowid_and_rowcount_seen_by_the_app_are_unchanged(users: sqlite3.Connection) -> None:
    """ORMs read lastrowid and rowcount after each write: our journal INSERTs must not leak into them."""
    users.execute("INSERT INTO users (id, email) VALUES (500, 'seed')")
    users.execute("INSERT INTO users (email) VALUES ('x')")  # journal seq 2, victim probe included
    cur = users.execute("INSERT INTO users (email) VALUES ('y')")
    assert cur.lastrowid == 502
    assert users.execute("SELECT last_insert_rowid()").fetchone() == (502,)
    cur = users.execute("UPDATE users SET name = 'n' WHERE id >= 501")
    assert cur.rowcount == 2
    assert users.execute("SELECT changes()").fetchone() == (2,)
    cur = users.execute("DELETE FROM users")
    assert cur.rowcount == 3


def test_rows_cascade_deleted_by_a_replace_are_journaled(tmp_path: Path) -> None:
    """A REPLACE victim's FK children go by ON DELETE CASCADE; those child deletes fire our triggers."""
    conn = _app(
        tmp_path,
        "CREATE TABLE p (id INTEGER PRIMARY KEY, email TEXT UNIQUE)",
        "CREATE TABLE ch (id INTEGER PRIMARY KEY, pid INT REFERENCES p(id) ON DELETE CASCADE)",
    )
    install.install_on(conn)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("INSERT INTO p VALUES (1, 'a')")
    conn.execute("INSERT INTO ch VALUES (10, 1)")
    start = journal.head(conn)
    conn.execute("INSERT OR REPLACE INTO p VALUES (2, 'a')")
    assert _log(conn, start) == [("p", "R", (1,), None), ("ch", "D", (10,), None), ("p", "I", (2,), None)]
    assert conn.execute("SELECT count(*) FROM ch").fetchone() == (0,)
