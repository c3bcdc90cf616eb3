"""Which key each table is captured by: install's decision per table (a :class:`TableCapture`), or the
refusal naming every table that has none. Install and drift (a new table, online) both decide here.

* INTEGER PRIMARY KEY (the rowid alias): that column.
* Any other PRIMARY KEY, WITHOUT ROWID included: its columns, unless a PK column holds NULL (d8).
* No PK, or NULL in a PK column: the *no-key policy*, per table or the default:
  ``refuse`` (install fails naming every such table and the fix), ``rowid`` (key = rowid; stable
  only until a VACUUM or a table rebuild renumbers rowids, d5; ``triggers.drift`` flags these
  tables when ``schema_version`` moves with no schema text change, which is what VACUUM does) or
  ``snapshot-only`` (no triggers;
  the table is copied again at cutover). ``snapshot-only`` may also be chosen for a keyed table.
* Virtual tables (FTS...) cannot have triggers (d21) and are skipped with a note; their shadow
  tables too (the virtual table is re-created and rebuilt on the target side).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Literal, NamedTuple

import msgspec

from triggers.ddl import ROWID_NAMES, UniqueKey, rowid_name
from triggers.errors import SchemaUnsupported
from triggers.meta import Meta, Mode, TableCapture
from triggers.schema import Generated, Schema, Table, quote_ident, read_schema

Policy = Literal["refuse", "rowid", "snapshot-only"]
POLICIES: tuple[Policy, ...] = ("refuse", "rowid", "snapshot-only")


class Skipped(msgspec.Struct, frozen=True):
    name: str
    reason: str


def _has_null_key(conn: sqlite3.Connection, table: Table) -> bool:
    nullable = [c.name for c in table.columns if c.pk_position and not c.notnull]
    if table.without_rowid or table.rowid_alias or not nullable:
        return False
    where = " OR ".join(f"{quote_ident(c)} IS NULL" for c in nullable)
    sql = f"SELECT 1 FROM {quote_ident(table.name)} WHERE {where} LIMIT 1"  # noqa: S608 (quoted identifiers)
    return conn.execute(sql).fetchone() is not None


class UniqueKeys(NamedTuple):
    keys: tuple[UniqueKey, ...]
    """UNIQUE indexes whose REPLACE victims are journaled by them, as ((column, collation), ...)."""
    indirect: tuple[UniqueKey, ...]
    """Those of ``keys`` a write can change without naming their columns in SET: a partial index (its
    WHERE decides which rows it holds) or one over a generated column (computed from other columns)."""
    expressions: tuple[str, ...]
    """Names of the unique indexes on expressions, which victim capture cannot cover."""


def unique_keys(conn: sqlite3.Connection, table: Table) -> UniqueKeys:
    """UNIQUE indexes whose REPLACE victim can have another key than the new row, with collations.

    That is every secondary UNIQUE index, and the primary key itself when one of its columns compares
    with another collation than BINARY: under NOCASE or RTRIM, ``REPLACE ('tag')`` deletes the row
    keyed 'Tag', a key the new row's journal entry does not name (issue 14 item 3). A BINARY key
    conflicts only with the same bytes, which the new row's entry names already.
    """
    generated = {c.name for c in table.columns if c.generated is not Generated.NO}
    keys: list[UniqueKey] = []
    indirect: list[UniqueKey] = []
    expressions: list[str] = []
    for index in table.indexes:
        if not index.unique:
            continue
        info = conn.execute(f"PRAGMA index_xinfo({quote_ident(index.name)})").fetchall()
        parts = [(col, str(coll)) for _seq, cid, col, _desc, coll, key in info if key and cid != -2 and col]
        if any(cid == -2 for _seq, cid, _col, _desc, _coll, key in info if key):
            expressions.append(index.name)
            continue
        unique = tuple(parts)
        if not unique or _replaces_same_key(unique, table.primary_key):
            continue
        if unique not in keys:
            keys.append(unique)
        if (index.partial or any(col in generated for col, _ in unique)) and unique not in indirect:
            indirect.append(unique)
    return UniqueKeys(tuple(keys), tuple(k for k in keys if k in indirect), tuple(expressions))


def _replaces_same_key(unique: UniqueKey, primary_key: tuple[str, ...]) -> bool:
    """A conflict on this index deletes a row with exactly the new row's key bytes (already journaled)."""
    return tuple(c for c, _ in unique) == primary_key and all(coll.upper() == "BINARY" for _, coll in unique)


def null_key_scan(conn: sqlite3.Connection) -> dict[tuple[str, str], bool]:
    """Which tables hold NULL in a PK column (d8), keyed by (name, CREATE sql).

    This can scan whole tables, so install runs it in a plain read transaction *before* taking the
    write lock: app writers are never blocked by it. Inside the write transaction only tables
    created or altered in between are scanned again.
    """
    conn.execute("BEGIN")
    try:
        return {(t.name, t.sql): _has_null_key(conn, t) for t in read_schema(conn).tables}
    finally:
        conn.execute("COMMIT")


def capture_for(
    conn: sqlite3.Connection,
    table: Table,
    policy: Policy,
    explicit: bool,
    generation: int,
    null_keys: Mapping[tuple[str, str], bool],
    stamp_time: bool = False,
) -> TableCapture | str:
    """The capture decision for one table, or the refusal text when the policy is ``refuse``."""
    columns = tuple(c.name for c in table.columns)
    rowid = _rowid_spelling(table, columns)

    uniques = unique_keys(conn, table)

    def make(mode: Mode, key_columns: tuple[str, ...] | None, note: str = "") -> TableCapture:
        if uniques.expressions and mode != "snapshot-only":
            gap = "REPLACE victims on expression unique index(es) " + ", ".join(uniques.expressions)
            gap += " are not journaled"
            note = f"{note}; {gap}" if note else gap
        return TableCapture(
            name=table.name,
            mode=mode,
            key_columns=key_columns,
            rowid_alias=table.rowid_alias,
            rowid=rowid,
            columns=columns,
            generation=generation,
            note=note,
            column_types=tuple(c.declared_type for c in table.columns),
            stamp_time=stamp_time and mode != "snapshot-only",
            unique_keys=uniques.keys if mode != "snapshot-only" else (),
            indirect_keys=uniques.indirect if mode != "snapshot-only" else (),
            without_rowid=table.without_rowid,
        )

    if explicit and policy == "snapshot-only":
        return make("snapshot-only", None, "snapshot-only by config")
    if table.rowid_alias:
        return make("key", (table.rowid_alias,))
    problem = ""
    if not table.primary_key:
        problem = "has no primary key"
    elif null_keys[(table.name, table.sql)] if (table.name, table.sql) in null_keys else _has_null_key(conn, table):
        problem = "has NULL values in primary key columns " + ", ".join(table.primary_key)
    if not problem:
        note = ""
        if not table.without_rowid and any(c.pk_position and not c.notnull for c in table.columns):
            note = "PK columns allow NULL (d8): a NULL key written later cannot be told apart"
        return make("key", table.primary_key, note)
    if policy == "snapshot-only":
        return make("snapshot-only", None, problem)
    if not rowid:
        return (
            f"{problem}, and columns named rowid, _rowid_ and oid hide its rowid (the 'rowid' policy cannot "
            "key it: use 'snapshot-only')"
        )
    if policy == "rowid":
        return make("rowid", None, f"{problem}; keyed by rowid, which VACUUM or a table rebuild renumbers")
    return problem


def _rowid_spelling(table: Table, columns: tuple[str, ...]) -> str:
    """How a trigger names the rowid: the first alias no column shadows, else the INTEGER PRIMARY KEY
    (which is the rowid), else "" (a column is named each of rowid, _rowid_ and oid: unreachable)."""
    if table.without_rowid:
        return "rowid"  # never used: such a table always has a primary key
    taken = {name.lower() for name in columns}
    if all(name in taken for name in ROWID_NAMES):
        return quote_ident(table.rowid_alias) if table.rowid_alias else ""
    return rowid_name(columns)


def refusal(problems: dict[str, str]) -> SchemaUnsupported:
    listed = "; ".join(f"{quote_ident(name)} {why}" for name, why in sorted(problems.items()))
    return SchemaUnsupported(
        f"{len(problems)} table(s) cannot be captured by key: {listed}",
        hint="add a primary key, or set capture.no_key_policy (or capture.tables.<name>) to "
        "'rowid' (unstable across VACUUM) or 'snapshot-only' (copied again at cutover)",
    )


def decide(
    conn: sqlite3.Connection,
    schema: Schema,
    meta: Meta | None,
    default_policy: Policy,
    policies: Mapping[str, Policy],
    null_keys: Mapping[tuple[str, str], bool],
    stamp_time: bool = False,
    exclude: frozenset[str] = frozenset(),
) -> tuple[list[TableCapture], list[Skipped], dict[str, str]]:
    decisions: list[TableCapture] = []
    problems: dict[str, str] = {}
    skipped = [
        Skipped(v.name, f"virtual table ({v.module or 'unknown module'}): cannot have triggers")
        for v in schema.virtual_tables
    ]
    skipped += [Skipped(name, "shadow table of a virtual table") for name in schema.shadow_tables]
    for table in schema.tables:
        previous = meta.tables.get(table.name) if meta else None
        if table.name in exclude and previous is None:
            skipped.append(Skipped(table.name, "left uncaptured by the caller"))
            continue
        generation = previous.generation if previous else 1
        explicit = table.name in policies
        policy = policies.get(table.name, default_policy)
        decision = capture_for(conn, table, policy, explicit, generation, null_keys, stamp_time)
        if isinstance(decision, str):
            problems[table.name] = decision
        else:
            decisions.append(decision)
    return decisions, skipped, problems
