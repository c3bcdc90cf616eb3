"""The install record in ``_replicator_meta``: the source's id, the capture format and, per table, what
install decided (:class:`TableCapture`), with the exact trigger SQL that decision gives.

Install writes it in the same transaction as the triggers; drift, the fence, status, the snapshot and the
apply read it, so the triggers a table should have are always derived from one stored decision (installed
triggers are compared against :meth:`TableCapture.expected_sql` for upgrades and drift).
"""

from __future__ import annotations

import sqlite3
from typing import Literal

import msgspec

from triggers import names
from triggers.ddl import OPS, VICTIM_OPS, UniqueKey, trigger_name, trigger_sql, victim_trigger_sql
from triggers.schema import quote_ident

Mode = Literal["key", "rowid", "snapshot-only"]
TABLE_PREFIX = "table:"


class TableCapture(msgspec.Struct, frozen=True):
    """What install decided for one table; stored as JSON in ``_replicator_meta`` (``table:<name>``)."""

    name: str
    mode: Mode
    key_columns: tuple[str, ...] | None
    """Key columns in key order; None when the key is the rowid or nothing is captured."""
    rowid_alias: str | None
    rowid: str
    """The rowid spelling not shadowed by a column (``rowid``, ``_rowid_`` or ``oid``), the INTEGER PRIMARY
    KEY's name when a column shadows each of those, or "" when nothing reaches the rowid (a table keyed
    by its primary key then, which never uses it)."""
    columns: tuple[str, ...]
    """Column names at install time, in order: drift compares against them."""
    generation: int
    """Bumped each time this table's triggers are (re)created; journal rows carry it as ``gen``."""
    note: str = ""
    column_types: tuple[str, ...] = ()
    """Declared types, parallel to ``columns``: drift tells a rename from a drop plus an add by them."""
    stamp_time: bool = False
    """Triggers write ``ts_ms`` (one SQL function call per app statement, which makes SQLite journal the
    pages of each app statement inside a transaction; see triggers.ddl)."""
    unique_keys: tuple[UniqueKey, ...] = ()
    """UNIQUE indexes as ((column, collation), ...) whose REPLACE victims are journaled by them: the
    secondary ones, and the primary key when it has a non-BINARY collation (see :func:`triggers.keys.unique_keys`)."""
    without_rowid: bool = False
    """A WITHOUT ROWID table: its primary key, not a rowid, names a row (the victim triggers use it)."""
    indirect_keys: tuple[UniqueKey, ...] = ()
    """Those of ``unique_keys`` that an UPDATE can change without naming their columns (partial, or over
    a generated column): the BEFORE UPDATE victim trigger then fires on every UPDATE."""

    @property
    def identity(self) -> tuple[str, ...]:
        """SQL that names exactly one row: the rowid, or a WITHOUT ROWID table's primary key (NOT NULL
        there, unique under its collations); empty when a rowid table's rowid is hidden by columns."""
        if self.without_rowid:
            return tuple(quote_ident(c) for c in self.key_columns or ())
        return (self.rowid,) if self.rowid else ()

    @property
    def triggers(self) -> tuple[str, ...]:
        return tuple(self.expected_sql())

    def expected_sql(self) -> dict[str, str]:
        """Trigger name → the exact SQL install writes (sqlite_schema keeps it verbatim)."""
        if self.mode == "snapshot-only":
            return {}
        sql = {
            trigger_name(self.name, op): trigger_sql(
                self.name, op, self.key_columns, self.generation, rowid=self.rowid, stamp_time=self.stamp_time
            )
            for op in OPS
        }
        if self.unique_keys:
            for victim_op in VICTIM_OPS:
                sql[trigger_name(self.name, victim_op)] = victim_trigger_sql(
                    self.name,
                    victim_op,
                    self.key_columns,
                    self.unique_keys,
                    self.generation,
                    rowid=self.rowid,
                    identity=self.identity,
                    indirect=self.indirect_keys,
                )
        return sql


class Meta(msgspec.Struct, frozen=True):
    source_id: str
    format_version: int
    tables: dict[str, TableCapture]


def read_meta(conn: sqlite3.Connection) -> Meta | None:
    """The install record, or None when capture is not installed."""
    found = conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (names.META,)).fetchone()
    if found is None:
        return None
    values: dict[str, str] = {}
    tables: dict[str, TableCapture] = {}
    for key, value in conn.execute('SELECT key, value FROM "_replicator_meta"'):
        if key.startswith(TABLE_PREFIX):
            tables[key[len(TABLE_PREFIX) :]] = msgspec.json.decode(value, type=TableCapture)
        else:
            values[key] = value
    return Meta(
        source_id=values.get("source_id", ""),
        format_version=int(values.get("format_version", "0")),
        tables=tables,
    )


def put(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Write one entry of the record, in the caller's (install's) write transaction."""
    conn.execute('INSERT OR REPLACE INTO "_replicator_meta" (key, value) VALUES (?, ?)', (key, value))
