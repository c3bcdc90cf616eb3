"""Differential fuzzing (issue 9, item 3): hypothesis generates schemas (column types, composite keys,
WITHOUT ROWID, UNIQUE keys, FKs with cascades) and operation sequences; after every drain PostgreSQL
equals SQLite row for row. In-process (capture, snapshot and apply through the library), one
PostgreSQL database per test, its schemas reset for every example.

``rich`` examples (issue 14) add how app data really looks: NOCASE and RTRIM collated TEXT columns (keys
and UNIQUE columns too), expression UNIQUE indexes (``ON t(lower(c))``), non-ASCII text (accents, ß, CJK,
emoji, case pairs such as 'É'/'é') and date-time text variants in DATETIME columns ('2024-05-01
10:00:00', '...T10:00:00', fractions, 'Z', offsets). There, values distinct in SQLite may be equal in
PostgreSQL; the oracle then accepts one outcome besides equality: the apply stopped, phase ERRORED, with
one line naming both rows' keys and the index (:class:`UniqueCollision`, with a hint), *and* SQLite really
holds two rows that one unique index of PostgreSQL would take as equal (:func:`collisions`). A silent
difference is never accepted, nor a refusal that names neither row (PostgreSQL's bare unique violation)."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import re
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import psycopg
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from replicator.errors import ReplicatorError, UniqueCollision
from replicator.state import phase
from tests.support.compare import check_same, drain
from tests.support.daemon import cfg
from tests.support.source import make_source
from tests.support.state import read_phase
from triggers.errors import CaptureError
from triggers.schema import quote_ident

TYPES = ("INTEGER", "REAL", "TEXT", "BLOB")
RICH_TYPES = (*TYPES, "DATETIME")
COLLATIONS = ("", "NOCASE", "RTRIM")
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
SMALL_INT = st.integers(min_value=1, max_value=6)
KEY_TEXT = st.sampled_from(["a", "b", "c", "é", "a b", "Z"])
APP_TEXT: Final = (
    *("a", "A", "a ", "a  ", "b"),
    *("É", "é", "Émile", "émile", "ÉMILE"),
    *("ß", "ss", "SS", "Straße", "straße", "STRASSE"),
    *("日本", "日本 ", "🙂", "🙂 ", "ǅ", "ǆ", "ﬁ"),
)
"""Text as apps store it: case pairs SQLite folds (ASCII) and does not (the rest), trailing spaces (RTRIM),
ß (no single upper case), CJK, emoji, titlecase and ligatures."""
DATETIMES: Final = (
    "2024-05-01 10:00:00",
    "2024-05-01T10:00:00",
    "2024-05-01 10:00:00.000",
    "2024-05-01 10:00:00.5",
    "2024-05-01T10:00:00Z",
    "2024-05-01 10:00:00+00:00",
    "2024-05-01 12:00:00+02:00",
    "2024-05-01 10:00",
    "2024-05-02 09:30:00",
    "2024-05-01T10:00:00.123456Z",
)
"""The same instant written the ways apps write it (distinct text in SQLite, one timestamp in PostgreSQL)."""


def value_of(kind: str, rich: bool = False) -> st.SearchStrategy[Any]:
    """Values whose storage class matches the declared type (a column keeps one class, as apps do)."""
    if kind == "INTEGER":
        return st.one_of(SMALL_INT, INT64)
    if kind == "REAL":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "DATETIME":
        return st.sampled_from(DATETIMES)
    if kind == "TEXT":
        text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12).map(
            lambda s: "s" + s
        )
        return st.one_of(st.sampled_from(APP_TEXT), text) if rich else text
    return st.binary(max_size=16)


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    unique: bool = False
    collate: str = ""
    """NOCASE or RTRIM (TEXT columns of rich schemas), else SQLite's BINARY."""

    def ddl(self) -> str:
        return f"{quote_ident(self.name)} {self.kind}" + (f" COLLATE {self.collate}" if self.collate else "")


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
    lower_unique: str | None = None
    """A TEXT column under ``CREATE UNIQUE INDEX ... ON t(lower(col))`` (SQLite folds ASCII only)."""

    @property
    def all(self) -> tuple[Column, ...]:
        ref = (Column("ref", "INTEGER"),) if self.parent is not None else ()
        return (*self.key, *ref, *self.columns)

    def ddl(self, parent: Table | None) -> str:
        cols = []
        rowid_alias = len(self.key) == 1 and self.key[0].kind == "INTEGER" and not self.without_rowid
        for c in self.key:
            cols.append(c.ddl() + (" PRIMARY KEY" if rowid_alias else " NOT NULL"))
        if self.parent is not None and parent is not None:
            pk = parent.key[0]
            cols.append(
                f"ref {pk.kind} REFERENCES {quote_ident(parent.name)} ({quote_ident(pk.name)}) "
                f"ON DELETE {self.on_delete} ON UPDATE {self.on_update}"
            )
        for c in self.columns:
            cols.append(c.ddl() + (" UNIQUE" if c.unique else ""))
        if not rowid_alias:
            cols.append(f"PRIMARY KEY ({', '.join(quote_ident(c.name) for c in self.key)})")
        tail = " WITHOUT ROWID" if self.without_rowid else ""
        out = f"CREATE TABLE {quote_ident(self.name)} ({', '.join(cols)}){tail};"
        if self.lower_unique is not None:
            index = quote_ident(f"{self.name}_lower_{self.lower_unique}")
            term = f"lower({quote_ident(self.lower_unique)})"
            out += f"\nCREATE UNIQUE INDEX {index} ON {quote_ident(self.name)} ({term});"
        return out

    def unique_indexes(self) -> list[tuple[str, tuple[tuple[Column, bool], ...]]]:
        """(name, terms) of every unique index; a term is (column, wrapped in ``lower()``)."""
        out = [("primary key", tuple((c, False) for c in self.key))]
        out += [(f"UNIQUE ({c.name})", ((c, False),)) for c in self.columns if c.unique]
        if self.lower_unique is not None:
            (c,) = (c for c in self.all if c.name == self.lower_unique)
            out.append((f"{self.name}_lower_{self.lower_unique}", ((c, True),)))
        return out


@st.composite
def tables(draw: st.DrawFn, name: str, parent: Table | None, rich: bool = False) -> Table:
    def collate(kind: str) -> str:
        return draw(st.sampled_from(COLLATIONS)) if rich and kind == "TEXT" else ""

    shape = draw(st.sampled_from(["int", "text", "composite"]))
    text_key = draw(st.sampled_from(["TEXT", "TEXT", "DATETIME"])) if rich else "TEXT"
    if shape == "int":
        key: tuple[Column, ...] = (Column("id", "INTEGER"),)
    elif shape == "text":
        key = (Column("k", text_key, collate=collate(text_key)),)
    else:
        key = (Column("k", text_key, collate=collate(text_key)), Column("n", "INTEGER"))
    without_rowid = draw(st.booleans())  # an INTEGER key in a WITHOUT ROWID table is no rowid alias
    kinds = draw(st.lists(st.sampled_from(RICH_TYPES if rich else TYPES), min_size=1, max_size=3))
    unique_at = draw(st.none() | st.integers(0, len(kinds) - 1))
    columns = tuple(Column(f"c{i}", k, unique=i == unique_at, collate=collate(k)) for i, k in enumerate(kinds))
    fk = parent is not None and len(parent.key) == 1 and parent.key[0].kind == "INTEGER" and draw(st.booleans())
    texts = [c.name for c in (*key, *columns) if c.kind == "TEXT"]
    lower_unique = draw(st.none() | st.sampled_from(texts)) if rich and texts else None
    return Table(
        name,
        key,
        columns,
        without_rowid,
        parent.name if fk and parent is not None else None,
        draw(st.sampled_from(["CASCADE", "SET NULL", "NO ACTION"])),
        draw(st.sampled_from(["CASCADE", "NO ACTION"])),
        lower_unique,
    )


@st.composite
def schemas(draw: st.DrawFn, rich: bool = False) -> tuple[Table, ...]:
    first = draw(tables("t0", None, rich))
    out = [first]
    for i in range(1, draw(st.integers(1, 3))):
        out.append(draw(tables(f"t{i}", first, rich)))
    return tuple(out)


@dataclass
class Statement:
    sql: str
    params: tuple[Any, ...] = ()


def key_value(column: Column, rich: bool) -> st.SearchStrategy[Any]:
    if column.kind == "INTEGER":
        return SMALL_INT
    if column.kind == "DATETIME":
        return st.sampled_from(DATETIMES)
    return st.sampled_from(APP_TEXT) if rich else KEY_TEXT


def key_values(table: Table, rich: bool = False) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(*(key_value(c, rich) for c in table.key))


def row_values(table: Table, rich: bool = False) -> st.SearchStrategy[tuple[Any, ...]]:
    ref = (st.none() | SMALL_INT,) if table.parent is not None else ()
    rest = (st.none() | value_of(c.kind, rich) for c in table.columns)
    return st.tuples(key_values(table, rich), st.tuples(*ref, *rest))


def statements(schema: tuple[Table, ...], rich: bool = False) -> st.SearchStrategy[Statement]:
    """One app statement of any kind the apply must handle, on a drawn table."""

    @st.composite
    def one(draw: st.DrawFn) -> Statement:
        t = draw(st.sampled_from(schema))
        names = [c.name for c in t.all]
        cols = ", ".join(quote_ident(n) for n in names)
        marks = ", ".join("?" for _ in names)
        key, rest = draw(row_values(t, rich))
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
            value = draw(st.none() | (SMALL_INT if c.name == "ref" else value_of(c.kind, rich)))
            verb = draw(st.sampled_from(["UPDATE", "UPDATE OR REPLACE"]))
            return Statement(f"{verb} {ident} SET {quote_ident(c.name)} = ? WHERE {where}", (value, *key))
        if kind == "pk":
            new = draw(key_values(t, rich))
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


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def pg_forms(column: Column, lowered: bool, value: Any) -> set[Any]:
    """The values PostgreSQL may compare ``value`` as, under the index term: ``lower()`` folds ASCII letters
    only, as SQLite's does (the index is created on ``translate(...)``); a date-time text becomes a
    timestamp, its offset either applied (timestamptz) or dropped (timestamp)."""
    if not isinstance(value, str):
        return {value}
    if lowered:
        return {value.translate(_ASCII_LOWER)}
    if column.kind == "DATETIME":
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return {value}
        if parsed.tzinfo is None:
            return {parsed}
        return {parsed.replace(tzinfo=None), parsed.astimezone(dt.UTC).replace(tzinfo=None)}
    return {value}


def collisions(path: Path, schema: tuple[Table, ...]) -> list[str]:
    """Pairs of rows SQLite holds as distinct that a unique index of PostgreSQL could take as equal
    (the only reason a refusal may replace equality)."""
    found: list[str] = []
    with contextlib.closing(sqlite3.connect(path)) as db:
        for t in schema:
            for index, terms in t.unique_indexes():
                names = ", ".join(quote_ident(c.name) for c, _ in terms)
                seen: dict[tuple[Any, ...], tuple[Any, ...]] = {}
                for row in db.execute(f"SELECT DISTINCT {names} FROM {quote_ident(t.name)}"):
                    if any(v is None for v in row):
                        continue  # NULLs never conflict, in either database
                    forms = (pg_forms(c, low, v) for (c, low), v in zip(terms, row, strict=True))
                    for form in itertools.product(*forms):
                        other = seen.setdefault(form, row)
                        if other != row:
                            found.append(f"{t.name} {index}: {other!r} and {row!r}")
    return found


NAMED_COLLISION: Final = re.compile(r"rows \S+ \(.+\) and \(.+\) are distinct in SQLite but equal in PostgreSQL on \w")
"""The refusal's line (``refusals.collision_message``): both rows' keys, then the index or the primary key."""


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS replicator CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


class Differential(RuleBasedStateMachine):
    """Set ``dsn`` on the class before running (one database per test; reset per example)."""

    dsn = ""
    rich = False
    """Draw issue 14's app data (collations, expression indexes, non-ASCII, date-time variants)."""
    examples = 0
    statements = 0
    checks = 0
    refusals = 0
    """Counters over a run (the report's figures)."""
    refused_with: ClassVar[list[str]] = []
    """The accepted refusals' lines."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="replicator-fuzz-"))
        self.path = self.dir / "app.db"
        self.db: sqlite3.Connection | None = None
        self.schema: tuple[Table, ...] = ()
        self.batch_rows = 500
        self.refused = False
        """The apply refused a collision (a correct end of the example: nothing more is checked)."""

    @initialize(data=st.data(), batch_rows=st.sampled_from([1, 3, 500]))
    def create(self, data: st.DataObject, batch_rows: int) -> None:
        reset(self.dsn)
        Differential.examples += 1
        schema = data.draw(schemas(self.rich), label="schema")
        self.schema, self.batch_rows = schema, batch_rows
        by_name = {t.name: t for t in schema}
        ddl = "\n".join(t.ddl(by_name.get(t.parent) if t.parent else None) for t in schema)
        make_source(self.path, ddl)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA foreign_keys = ON")
        self.drain_and_check(compare=False)  # the snapshot

    def drain_and_check(self, *, compare: bool = True) -> None:
        """Drain, then PostgreSQL equals SQLite; or the apply refused a collision SQLite really holds."""
        try:
            apply_all(self.path, self.dsn, self.batch_rows)
        except (ReplicatorError, CaptureError) as exc:
            self.accept_refusal(exc)
            return
        if compare:
            check_same(self.path, self.dsn)
            Differential.checks += 1

    def accept_refusal(self, exc: ReplicatorError | CaptureError) -> None:
        """A refusal is correct only for a real collision, stopped ERRORED, said in one line with a hint."""
        found = collisions(self.path, self.schema)
        state = read_phase(self.dsn)
        message = str(getattr(exc, "message", exc))
        if not found or state is None or state.phase != phase.Phase.ERRORED or "\n" in message:
            raise AssertionError(
                f"{type(exc).__name__}: {message} (phase {state.phase if state else None}; "
                f"collisions in SQLite: {found or 'none'})"
            ) from exc
        if not getattr(exc, "hint", ""):
            raise AssertionError(f"refusal without a hint: {message}") from exc
        if not isinstance(exc, UniqueCollision) or not NAMED_COLLISION.search(message):
            raise AssertionError(f"refusal naming neither row nor the index: {type(exc).__name__}: {message}") from exc
        self.refused = True
        Differential.refusals += 1
        Differential.refused_with.append(f"{type(exc).__name__}: {message}")

    @precondition(lambda self: not self.refused)
    @rule(data=st.data(), size=st.integers(1, 4), rollback=st.booleans())
    def transaction(self, data: st.DataObject, size: int, rollback: bool) -> None:
        assert self.db is not None
        self.db.execute("BEGIN")
        for _ in range(size):
            s = data.draw(statements(self.schema, self.rich))
            Differential.statements += 1
            with contextlib.suppress(sqlite3.IntegrityError):  # refused by a constraint: the app goes on
                self.db.execute(s.sql, s.params)
        rolled = rollback and data.draw(st.integers(0, 9)) == 0
        self.db.execute("ROLLBACK" if rolled else "COMMIT")

    @precondition(lambda self: self.db is not None and not self.refused)
    @rule()
    def apply(self) -> None:
        self.drain_and_check()

    @precondition(lambda self: self.refused)
    @rule()
    def refused_already(self) -> None:
        """The example ended at its refusal; hypothesis still takes its remaining steps, and a step needs a
        rule whose precondition holds (without one: InvalidDefinition, the run stopped on the harness)."""

    def teardown(self) -> None:
        try:
            if self.db is not None and not self.refused:
                self.drain_and_check()
        finally:
            if self.db is not None:
                self.db.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def run(
    dsn: str, *, max_examples: int, steps: int = 20, seed: int | None = None, rich: bool = False, shrink: bool = True
) -> None:
    """Run the machine (``hypothesis.stateful.run_state_machine_as_test``) against ``dsn``; raises the
    shrunk counterexample (its steps printed by hypothesis) on a difference. ``rich``: issue 14's app data;
    ``shrink=False`` reports the first failing example as found (shrinking one can take minutes)."""
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.stateful import run_state_machine_as_test

    Differential.dsn, Differential.rich = dsn, rich
    Differential.examples = Differential.statements = Differential.checks = Differential.refusals = 0
    Differential.refused_with = []
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
            phases=list(Phase) if shrink else [Phase.explicit, Phase.reuse, Phase.generate],
        ),
    )
