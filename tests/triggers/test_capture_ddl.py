"""The rendered DDL as text: the properties every app write depends on, checked without a database."""

from __future__ import annotations

import re
import sqlite3

import pytest

from triggers import ddl


@pytest.mark.parametrize("op", ddl.OPS)
@pytest.mark.parametrize("key", [("id",), ("a b", 'q"x', "ü"), None])
def test_trigger_bodies_call_no_sql_function(op: ddl.Op, key: tuple[str, ...] | None) -> None:
    """No function call: nothing that can raise (d10), nothing trusted_schema forbids (d21), and the
    per-statement cost of a function call in a trigger program is avoided."""
    sql = ddl.trigger_sql("t'x", op, key, 3, rowid="_rowid_")
    body = sql.split(" BEGIN ", 1)[1]
    calls = [c for c in re.findall(r"\b([A-Za-z_]+)\s*\(", body) if c.upper() != "VALUES"]
    assert calls == [], calls  # (the journal's column list and VALUES are not calls)
    assert "'t''x'" in body  # the table name literal is escaped
    assert "OR IGNORE" not in sql.upper()
    assert "WHEN" not in sql.upper()  # no-op UPDATEs are journaled, by design


def test_trigger_sql_executes_for_odd_names() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(ddl.journal_table_sql(3))
    conn.execute('CREATE TABLE "we""ird; DROP TABLE x" ("a b" TEXT, "c,d" INT, v, PRIMARY KEY ("a b", "c,d"))')
    for op in ddl.OPS:
        conn.execute(ddl.trigger_sql('we"ird; DROP TABLE x', op, ("a b", "c,d"), 1))
    conn.execute('INSERT INTO "we""ird; DROP TABLE x" VALUES (\'k\', 1, 2)')
    assert conn.execute('SELECT tbl, op, nk, k1, k2, k3 FROM "_replicator_journal"').fetchall() == [
        ('we"ird; DROP TABLE x', "I", 2, "k", 1, None)
    ]


def test_journal_ddl_has_no_constraint_but_the_rowid() -> None:
    sql = ddl.journal_table_sql(2).upper()
    for word in ("UNIQUE", "CHECK", "NOT NULL", "DEFAULT", "AUTOINCREMENT", "REFERENCES", "COLLATE"):
        assert word not in sql
    assert "SEQ INTEGER PRIMARY KEY" in sql
    assert ddl.widen_journal_sql(2, 4) == [
        'ALTER TABLE "_replicator_journal" ADD COLUMN k3',
        'ALTER TABLE "_replicator_journal" ADD COLUMN o3',
        'ALTER TABLE "_replicator_journal" ADD COLUMN k4',
        'ALTER TABLE "_replicator_journal" ADD COLUMN o4',
    ]


def test_names_are_deterministic_and_bad_arguments_refused() -> None:
    assert ddl.trigger_name("Order", "U") == "_replicator_upd_Order"
    assert ddl.trigger_sql("t", "I", ("id",), 1) == ddl.trigger_sql("t", "I", ("id",), 1)
    assert ddl.rowid_name(("rowid", "x")) == "_rowid_"
    with pytest.raises(ValueError, match="shadowed"):
        ddl.rowid_name(("ROWID", "_rowid_", "oid"))
    with pytest.raises(ValueError, match="generation"):
        ddl.trigger_sql("t", "I", ("id",), 0)
    with pytest.raises(ValueError, match="at least one column"):
        ddl.trigger_sql("t", "I", (), 1)
    with pytest.raises(ValueError, match="width"):
        ddl.journal_table_sql(0)


def test_victim_trigger_sql() -> None:
    sql = ddl.victim_trigger_sql("u", "RU", ("id",), ((("e", "NOCASE"),), (("f", "BINARY"), ("g", "BINARY"))), 2)
    assert sql.startswith('CREATE TRIGGER "_replicator_rup_u" BEFORE UPDATE OF "e", "f", "g" ON "u" WHEN (NOT (')
    assert '(NOT (OLD."e" IS NEW."e" COLLATE "NOCASE") AND EXISTS (' in sql  # unchanged values: no probe
    assert '"e" = NEW."e" COLLATE "NOCASE"' in sql
    assert '"f" = NEW."f" COLLATE "BINARY" AND "g" = NEW."g" COLLATE "BINARY"' in sql
    assert sql.count("INSERT INTO") == 2
    assert sql.count("EXISTS (SELECT 1 FROM") == 2  # the body runs only when some index holds NEW's values
    assert "IS OLD." not in sql  # no identity given: the updated row itself is not left out
    conn = sqlite3.connect(":memory:")
    conn.execute(ddl.journal_table_sql(1))
    conn.execute("CREATE TABLE u (id INTEGER PRIMARY KEY, e, f, g)")
    conn.execute(sql)
    conn.execute(ddl.victim_trigger_sql("u", "RI", None, ((("e", "NOCASE"),),), 1, rowid="rowid"))
    conn.execute("INSERT INTO u VALUES (1, 'A', 'f', 1)")
    conn.execute("INSERT INTO u VALUES (2, 'a', 'f', 2)")  # no UNIQUE here: both rows stay, R(1) is journaled
    assert conn.execute('SELECT op, k1 FROM "_replicator_journal"').fetchall() == [("R", 1)]
    with pytest.raises(ValueError, match="no unique key"):
        ddl.victim_trigger_sql("u", "RI", ("id",), (), 1)


def test_update_victim_trigger_leaves_the_updated_row_out() -> None:
    """The row an UPDATE rewrites is never its own REPLACE victim: left out by rowid, or by the primary
    key of a WITHOUT ROWID table, in the probe and in the body alike; an INSERT has no such row."""
    unique = ((("e", "BINARY"),),)
    by_rowid = ddl.victim_trigger_sql("u", "RU", ("id",), unique, 1, identity=("_rowid_",))
    assert by_rowid.count("AND NOT (_rowid_ IS OLD._rowid_)") == 2
    by_key = ddl.victim_trigger_sql("w", "RU", ("a", "b c"), unique, 1, identity=('"a"', '"b c"'))
    assert by_key.count('AND NOT ("a" IS OLD."a" AND "b c" IS OLD."b c")') == 2
    assert "OLD." not in ddl.victim_trigger_sql("u", "RI", ("id",), unique, 1, identity=("rowid",))
    indirect = ddl.victim_trigger_sql("u", "RU", ("id",), unique, 1, indirect=unique)
    assert indirect.startswith('CREATE TRIGGER "_replicator_rup_u" BEFORE UPDATE ON "u" WHEN EXISTS (')
