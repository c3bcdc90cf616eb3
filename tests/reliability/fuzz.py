"""Differential fuzzing (issue 9, item 3): hypothesis generates schemas (column types, composite keys,
WITHOUT ROWID, UNIQUE keys, FKs with cascades) and operation sequences; after every drain PostgreSQL
equals SQLite row for row. In-process (capture, snapshot and apply through the library), one
PostgreSQL database per test, its schemas reset for every example."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from tests.test_apply_cases import cfg, check_same, drain, make_source
from triggers.schema import quote_ident

TYPES = ("INTEGER", "REAL", "TEXT", "BLOB")
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
SMALL_INT = st.integers(min_value=1, max_value=6)
KEY_TEXT = st.sampled_from(["a", "b", "c", "é", "a b", "Z"])


def value_of(kind: str) -> st.SearchStrategy[Any]:
    """Values whose storage class matches the declared type (a column keeps one class, as apps do)."""
    if kind == "INTEGER":
        return st.one_of(SMALL_INT, INT64)
    if kind == "REAL":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "TEXT":
        return st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12).map(
            lambda s: "s" + s
        )
    return st.binary(max_size=16)


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    unique: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[Column, ...]
    columns: tuple[Column, ...]
    without_rowid: bool
    parent: str | None = None
    """FK from column ``ref`` to ``parent``'s single-column key."""
    on_delete: str = "CASCADE"
    on_update: str = "CASCADE"

    @property
    def all(self) -> tuple[Column, ...]:
        ref = (Column("ref", "INTEGER"),) if self.parent is not None else ()
        return (*self.key, *ref, *self.columns)

    def ddl(self, parent: Table | None) -> str:
        cols = []
        rowid_alias = len(self.key) == 1 and self.key[0].kind == "INTEGER" and not self.without_rowid
        for c in self.key:
            cols.append(f"{quote_ident(c.name)} {c.kind}" + (" PRIMARY KEY" if rowid_alias else " NOT NULL"))
        if self.parent is not None and parent is not None:
            pk = parent.key[0]
            cols.append(
                f"ref {pk.kind} REFERENCES {quote_ident(parent.name)} ({quote_ident(pk.name)}) "
                f"ON DELETE {self.on_delete} ON UPDATE {self.on_update}"
            )
        for c in self.columns:
            cols.append(f"{quote_ident(c.name)} {c.kind}" + (" UNIQUE" if c.unique else ""))
        if not rowid_alias:
            cols.append(f"PRIMARY KEY ({', '.join(quote_ident(c.name) for c in self.key)})")
        tail = " WITHOUT ROWID" if self.without_rowid else ""
        return f"CREATE TABLE {quote_ident(self.name)} ({', '.join(cols)}){tail};"


@st.composite
def tables(draw: st.DrawFn, name: str, parent: Table | None) -> Table:
    shape = draw(st.sampled_from(["int", "text", "composite"]))
    if shape == "int":
        key: tuple[Column, ...] = (Column("id", "INTEGER"),)
    elif shape == "text":
        key = (Column("k", "TEXT"),)
    else:
        key = (Column("k", "TEXT"), Column("n", "INTEGER"))
    without_rowid = draw(st.booleans())  # an INTEGER key in a WITHOUT ROWID table is no rowid alias
    kinds = draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=3))
    unique_at = draw(st.none() | st.integers(0, len(kinds) - 1))
    columns = tuple(Column(f"c{i}", k, unique=i == unique_at) for i, k in enumerate(kinds))
    fk = parent is not None and len(parent.key) == 1 and parent.key[0].kind == "INTEGER" and draw(st.booleans())
    return Table(
        name,
        key,
        columns,
        without_rowid,
        parent.name if fk and parent is not None else None,
        draw(st.sampled_from(["CASCADE", "SET NULL", "NO ACTION"])),
        draw(st.sampled_from(["CASCADE", "NO ACTION"])),
    )


@st.composite
def schemas(draw: st.DrawFn) -> tuple[Table, ...]:
    first = draw(tables("t0", None))
    out = [first]
    for i in range(1, draw(st.integers(1, 3))):
        out.append(draw(tables(f"t{i}", first)))
    return tuple(out)


@dataclass
class Statement:
    sql: str
    params: tuple[Any, ...] = ()


def key_values(table: Table) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(*(SMALL_INT if c.kind == "INTEGER" else KEY_TEXT for c in table.key))


def row_values(table: Table) -> st.SearchStrategy[tuple[Any, ...]]:
    ref = (st.none() | SMALL_INT,) if table.parent is not None else ()
    return st.tuples(key_values(table), st.tuples(*ref, *(st.none() | value_of(c.kind) for c in table.columns)))


def statements(schema: tuple[Table, ...]) -> st.SearchStrategy[Statement]:
    """One app statement of any kind the apply must handle, on a drawn table."""

    @st.composite
    def one(draw: st.DrawFn) -> Statement:
        t = draw(st.sampled_from(schema))
        names = [c.name for c in t.all]
        cols = ", ".join(quote_ident(n) for n in names)
        marks = ", ".join("?" for _ in names)
        key, rest = draw(row_values(t))
        row = (*key, *rest)
        where = " AND ".join(f"{quote_ident(c.name)} = ?" for c in t.key)
        ident = quote_ident(t.name)
        non_key = [c for c in t.all if c not in t.key]
        kind = draw(st.sampled_from(["insert", "replace", "upsert", "update", "pk", "delete", "update_all", "ignore"]))
        if kind in ("insert", "replace", "ignore"):
            verb = {"insert": "INSERT", "replace": "INSERT OR REPLACE", "ignore": "INSERT OR IGNORE"}[kind]
            return Statement(f"{verb} INTO {ident} ({cols}) VALUES ({marks})", row)
        if kind == "upsert" and non_key:
            conflict = ", ".join(quote_ident(c.name) for c in t.key)
            sets = ", ".join(f"{quote_ident(c.name)} = excluded.{quote_ident(c.name)}" for c in non_key)
            return Statement(
                f"INSERT INTO {ident} ({cols}) VALUES ({marks}) ON CONFLICT ({conflict}) DO UPDATE SET {sets}", row
            )
        if kind == "update" and non_key:
            c = draw(st.sampled_from(non_key))
            value = draw(st.none() | (SMALL_INT if c.name == "ref" else value_of(c.kind)))
            verb = draw(st.sampled_from(["UPDATE", "UPDATE OR REPLACE"]))
            return Statement(f"{verb} {ident} SET {quote_ident(c.name)} = ? WHERE {where}", (value, *key))
        if kind == "pk":
            new = draw(key_values(t))
            sets = ", ".join(f"{quote_ident(c.name)} = ?" for c in t.key)
            verb = draw(st.sampled_from(["UPDATE OR IGNORE", "UPDATE OR REPLACE"]))
            return Statement(f"{verb} {ident} SET {sets} WHERE {where}", (*new, *key))
        if kind == "update_all" and non_key:
            c = draw(st.sampled_from(non_key))
            return Statement(f"UPDATE OR IGNORE {ident} SET {quote_ident(c.name)} = NULL")
        return Statement(f"DELETE FROM {ident} WHERE {where}", key)

    return one()


def settle(dsn: str, timeout: float = 5.0) -> None:
    """Wait until the previous worker's backend is gone (its advisory lock released). Before the grace in
    Worker._lock_target (finding 4) a worker started in the same millisecond refused to run."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
            ).fetchone()
            if not row or not row[0]:
                return
            time.sleep(0.005)


def apply_all(path: Path, dsn: str, batch_rows: int) -> None:
    settle(dsn)
    drain(path, dsn, cfg(batch_rows=batch_rows))


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS replicator CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


class Differential(RuleBasedStateMachine):
    """Set ``dsn`` on the class before running (one database per test; reset per example)."""

    dsn = ""
    examples = 0
    statements = 0
    checks = 0
    """Counters over a run (the report's figures)."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="replicator-fuzz-"))
        self.path = self.dir / "app.db"
        self.db: sqlite3.Connection | None = None
        self.schema: tuple[Table, ...] = ()
        self.batch_rows = 500

    @initialize(schema=schemas(), batch_rows=st.sampled_from([1, 3, 500]))
    def create(self, schema: tuple[Table, ...], batch_rows: int) -> None:
        reset(self.dsn)
        Differential.examples += 1
        self.schema, self.batch_rows = schema, batch_rows
        by_name = {t.name: t for t in schema}
        ddl = "\n".join(t.ddl(by_name.get(t.parent) if t.parent else None) for t in schema)
        make_source(self.path, ddl)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA foreign_keys = ON")
        apply_all(self.path, self.dsn, self.batch_rows)  # the snapshot

    @rule(data=st.data(), size=st.integers(1, 4), rollback=st.booleans())
    def transaction(self, data: st.DataObject, size: int, rollback: bool) -> None:
        assert self.db is not None
        self.db.execute("BEGIN")
        for _ in range(size):
            s = data.draw(statements(self.schema))
            Differential.statements += 1
            with contextlib.suppress(sqlite3.IntegrityError):  # refused by a constraint: the app goes on
                self.db.execute(s.sql, s.params)
        rolled = rollback and data.draw(st.integers(0, 9)) == 0
        self.db.execute("ROLLBACK" if rolled else "COMMIT")

    @precondition(lambda self: self.db is not None)
    @rule()
    def apply(self) -> None:
        apply_all(self.path, self.dsn, self.batch_rows)
        check_same(self.path, self.dsn)
        Differential.checks += 1

    def teardown(self) -> None:
        try:
            if self.db is not None:
                apply_all(self.path, self.dsn, self.batch_rows)
                check_same(self.path, self.dsn)
                Differential.checks += 1
        finally:
            if self.db is not None:
                self.db.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def run(dsn: str, *, max_examples: int, steps: int = 20, seed: int | None = None) -> None:
    """Run the machine (``hypothesis.stateful.run_state_machine_as_test``) against ``dsn``; raises the
    shrunk counterexample (its steps printed by hypothesis) on a difference."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    Differential.dsn = dsn
    Differential.examples = Differential.statements = Differential.checks = 0
    machine = Differential
    if seed is not None:
        from hypothesis import seed as with_seed

        machine = with_seed(seed)(Differential)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            database=None,
        ),
    )
