"""Read the application's SQLite schema into typed, immutable descriptions.

Every later stage (analyze, DDL translation, capture triggers, apply) needs the same facts about a
table: its columns with declared type and affinity, which columns are generated, its primary key and
whether that key is the rowid alias, WITHOUT ROWID and STRICT flags, unique keys, foreign keys. They
come from the PRAGMAs, never from parsing ``CREATE TABLE`` text by hand, except for AUTOINCREMENT,
which no PRAGMA reports.
"""

from __future__ import annotations

import re
import sqlite3
from enum import StrEnum

import msgspec

from triggers.names import is_internal_table


class Affinity(StrEnum):
    INTEGER = "INTEGER"
    TEXT = "TEXT"
    BLOB = "BLOB"
    REAL = "REAL"
    NUMERIC = "NUMERIC"


class Generated(StrEnum):
    NO = "no"
    VIRTUAL = "virtual"
    STORED = "stored"


class Column(msgspec.Struct, frozen=True):
    name: str
    declared_type: str
    affinity: Affinity
    notnull: bool
    default: str | None
    """The default as SQL text exactly as SQLite keeps it (``CURRENT_TIMESTAMP``, ``'x'``, ``(datetime('now'))``)."""
    pk_position: int
    """1-based position in the primary key, 0 when not part of it."""
    generated: Generated = Generated.NO


class ForeignKey(msgspec.Struct, frozen=True):
    id: int
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    """Empty when the FK names only the parent table: it then references the parent's primary key."""
    on_update: str
    on_delete: str


class Index(msgspec.Struct, frozen=True):
    name: str
    unique: bool
    origin: str
    """``c`` for CREATE INDEX, ``u`` for a UNIQUE constraint, ``pk`` for the primary key."""
    partial: bool
    columns: tuple[str | None, ...]
    """Column names in key order; None stands for an expression."""
    sql: str | None
    collations: tuple[str, ...] = ()
    """Each key column's collation as SQLite compares it (``BINARY``, ``NOCASE``, ``RTRIM``...)."""


class Table(msgspec.Struct, frozen=True):
    name: str
    sql: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    rowid_alias: str | None
    """The ``INTEGER PRIMARY KEY`` column that *is* the rowid (stable across VACUUM), if any."""
    without_rowid: bool
    strict: bool
    autoincrement: bool
    foreign_keys: tuple[ForeignKey, ...]
    indexes: tuple[Index, ...]

    @property
    def stored_columns(self) -> tuple[Column, ...]:
        """Columns whose values are written on load and apply (generated ones are computed)."""
        return tuple(c for c in self.columns if c.generated is Generated.NO)

    @property
    def unique_keys(self) -> tuple[tuple[str, ...], ...]:
        """Every column set that SQLite enforces as unique, the primary key first."""
        keys: list[tuple[str, ...]] = []
        if self.primary_key:
            keys.append(self.primary_key)
        for index in self.indexes:
            if index.unique and not index.partial and index.origin != "pk" and None not in index.columns:
                cols = tuple(c for c in index.columns if c is not None)
                if cols not in keys:
                    keys.append(cols)
        return tuple(keys)


class VirtualTable(msgspec.Struct, frozen=True):
    name: str
    sql: str
    module: str


class Trigger(msgspec.Struct, frozen=True):
    name: str
    table: str
    sql: str


class View(msgspec.Struct, frozen=True):
    name: str
    sql: str


class Schema(msgspec.Struct, frozen=True):
    tables: tuple[Table, ...]
    virtual_tables: tuple[VirtualTable, ...]
    shadow_tables: tuple[str, ...]
    views: tuple[View, ...]
    triggers: tuple[Trigger, ...]
    schema_version: int

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)


def affinity(declared_type: str) -> Affinity:
    """SQLite's affinity rules, in the documented order (datatype3.html §3.1)."""
    upper = declared_type.upper()
    if "INT" in upper:
        return Affinity.INTEGER
    if "CHAR" in upper or "CLOB" in upper or "TEXT" in upper:
        return Affinity.TEXT
    if "BLOB" in upper or not upper.strip():
        return Affinity.BLOB
    if "REAL" in upper or "FLOA" in upper or "DOUB" in upper:
        return Affinity.REAL
    return Affinity.NUMERIC


def quote_ident(name: str) -> str:
    """Quote an identifier for SQLite text (PRAGMA arguments and DDL we generate)."""
    return '"' + name.replace('"', '""') + '"'


_AUTOINCREMENT = re.compile(r"\bAUTOINCREMENT\b", re.IGNORECASE)


def _columns(conn: sqlite3.Connection, name: str) -> list[Column]:
    rows = conn.execute(f"PRAGMA table_xinfo({quote_ident(name)})").fetchall()
    columns = []
    for _cid, col, decl, notnull, default, pk, hidden in rows:
        if hidden == 1:  # hidden columns of virtual tables
            continue
        generated = {2: Generated.VIRTUAL, 3: Generated.STORED}.get(hidden, Generated.NO)
        decl = decl or ""
        columns.append(
            Column(
                name=col,
                declared_type=decl,
                affinity=affinity(decl),
                notnull=bool(notnull),
                default=default,
                pk_position=int(pk),
                generated=generated,
            )
        )
    return columns


def _foreign_keys(conn: sqlite3.Connection, name: str) -> tuple[ForeignKey, ...]:
    rows = conn.execute(f"PRAGMA foreign_key_list({quote_ident(name)})").fetchall()
    grouped: dict[int, list[tuple[int, str, str, str | None, str, str]]] = {}
    for fk_id, seq, ref_table, col, ref_col, on_update, on_delete, _match in rows:
        grouped.setdefault(fk_id, []).append((seq, ref_table, col, ref_col, on_update, on_delete))
    fks = []
    for fk_id, parts in sorted(grouped.items()):
        parts.sort()
        ref_cols = tuple(p[3] for p in parts if p[3] is not None)
        fks.append(
            ForeignKey(
                id=fk_id,
                columns=tuple(p[2] for p in parts),
                ref_table=parts[0][1],
                ref_columns=ref_cols if len(ref_cols) == len(parts) else (),
                on_update=parts[0][4],
                on_delete=parts[0][5],
            )
        )
    return tuple(fks)


def _indexes(conn: sqlite3.Connection, name: str) -> tuple[Index, ...]:
    sql_by_name = dict(
        conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = ?", (name,))
    )
    indexes = []
    for _seq, idx_name, unique, origin, partial in conn.execute(f"PRAGMA index_list({quote_ident(name)})"):
        cols = conn.execute(f"PRAGMA index_xinfo({quote_ident(idx_name)})").fetchall()
        key_cols = tuple(
            (None if cid == -2 else ("rowid" if cid == -1 and col is None else col))
            for _seqno, cid, col, _desc, _coll, key in cols
            if key
        )
        indexes.append(
            Index(
                name=idx_name,
                unique=bool(unique),
                origin=origin,
                partial=bool(partial),
                columns=key_cols,
                sql=sql_by_name.get(idx_name),
                collations=tuple(str(coll) for _seqno, _cid, _col, _desc, coll, key in cols if key),
            )
        )
    return tuple(sorted(indexes, key=lambda i: i.name))


def read_table(conn: sqlite3.Connection, name: str, sql: str, *, without_rowid: bool, strict: bool) -> Table:
    columns = _columns(conn, name)
    pk = tuple(c.name for c in sorted((c for c in columns if c.pk_position), key=lambda c: c.pk_position))
    rowid_alias = None
    if len(pk) == 1 and not without_rowid:
        col = next(c for c in columns if c.name == pk[0])
        # Only a column declared exactly INTEGER aliases the rowid ("INT PRIMARY KEY" does not),
        # and "INTEGER PRIMARY KEY DESC" does not either; SQLite reports that through index_list:
        # a rowid alias has no automatic pk index.
        has_pk_index = any(i.origin == "pk" for i in _indexes(conn, name))
        if col.declared_type.upper() == "INTEGER" and not has_pk_index:
            rowid_alias = col.name
    return Table(
        name=name,
        sql=sql,
        columns=tuple(columns),
        primary_key=pk,
        rowid_alias=rowid_alias,
        without_rowid=without_rowid,
        strict=strict,
        autoincrement=bool(_AUTOINCREMENT.search(sql or "")),
        foreign_keys=_foreign_keys(conn, name),
        indexes=_indexes(conn, name),
    )


def read_schema(conn: sqlite3.Connection) -> Schema:
    """Describe every table, virtual table, view and trigger of the ``main`` database."""
    kinds = {
        row[1]: (row[2], bool(row[4]), bool(row[5]))
        for row in conn.execute("PRAGMA main.table_list")
        # schema, name, type, ncol, wr, strict
    }
    tables: list[Table] = []
    virtual: list[VirtualTable] = []
    shadow: list[str] = []
    views: list[View] = []
    triggers: list[Trigger] = []
    entries = conn.execute(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name"
    ).fetchall()
    for kind, name, tbl_name, sql in entries:
        if kind == "table":
            if is_internal_table(name):  # ours or SQLite's: exact names (triggers.names)
                continue
            table_type, wr, strict = kinds.get(name, ("table", False, False))
            if table_type == "virtual":
                match = re.search(r"USING\s+(\w+)", sql, re.IGNORECASE)
                virtual.append(VirtualTable(name=name, sql=sql, module=match.group(1) if match else ""))
            elif table_type == "shadow":
                shadow.append(name)
            else:
                tables.append(read_table(conn, name, sql, without_rowid=wr, strict=strict))
        elif kind == "view":
            views.append(View(name=name, sql=sql))
        elif kind == "trigger":
            triggers.append(Trigger(name=name, table=tbl_name, sql=sql))
    (version,) = conn.execute("PRAGMA schema_version").fetchone()
    return Schema(
        tables=tuple(tables),
        virtual_tables=tuple(virtual),
        shadow_tables=tuple(shadow),
        views=tuple(views),
        triggers=tuple(triggers),
        schema_version=int(version),
    )


def dependency_order(tables: tuple[Table, ...]) -> tuple[list[str], list[list[str]]]:
    """Parents before children (Kahn's algorithm, stable by name); cycles reported, not fatal.

    Returns the load order and the list of cycles found (each a list of table names). Tables in a
    cycle are appended in name order: FKs are created after the load, so order is an optimisation.
    """
    names = {t.name for t in tables}
    parents: dict[str, set[str]] = {
        t.name: {fk.ref_table for fk in t.foreign_keys if fk.ref_table in names and fk.ref_table != t.name}
        for t in tables
    }
    order: list[str] = []
    remaining = dict(parents)
    while True:
        ready = sorted(n for n, deps in remaining.items() if not deps - set(order))
        if not ready:
            break
        order.extend(ready)
        for n in ready:
            del remaining[n]
    cycles = _cycles({n: d for n, d in remaining.items()}) if remaining else []
    order.extend(sorted(remaining))
    return order, cycles


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result
