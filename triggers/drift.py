"""Schema drift: has the app changed its schema under the capture, and what does that mean per table?

Called every apply cycle, so the common case costs one ``PRAGMA schema_version`` (a header read).
Only when it moved do we read the schema and compare it with what install recorded in
``_replicator_meta``. What we report, and why it matters with a key-only journal:

* **triggers missing** on an existing table: the table was rebuilt (create-copy-drop-rename, the
  12-step ALTER, Alembic batch mode) and DROP TABLE took our triggers along (d13). Changes between
  the rebuild and now were not journaled: the table needs a re-snapshot, then a reinstall.
* **triggers stale**: present but their SQL differs from what install wrote, e.g. a key column was
  renamed and SQLite rewrote the trigger (d12). Capture still works; reinstall to refresh meta.
* **columns added / dropped / renamed**: no capture impact (triggers name key columns only), but the
  target schema must follow before the apply writes rows of the new shape.
* **table dropped / renamed**: a renamed table keeps our triggers, which still write the *old* name
  into the journal (E7b); reinstall, and treat the table as new on the target.
* **new tables**: not captured until install runs again. The daemon picks them up online
  (:mod:`replicator.load.resnapshot`); :func:`new_table_captures` says how install would capture each one
  under the no-key policy, so a table that cannot be captured by key is reported, not installed.
* **unique keys changed**: a secondary UNIQUE index was added or dropped, or became partial; the victim
  triggers must follow (between the index creation and the reinstall, REPLACE victims on it are not
  journaled).
* **rowid renumber risk**: VACUUM renumbers rowids of tables without an INTEGER PRIMARY KEY (d5) and
  bumps ``schema_version`` without changing any schema text. When the version moved but the schema
  text did not, VACUUM is suspected and every rowid-keyed table is flagged for re-snapshot. (If a
  VACUUM and a real DDL change fall between two checks, it cannot be told apart from DDL alone.)
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Collection, Mapping

import msgspec

from triggers.ddl import UniqueKey
from triggers.keys import Policy, capture_for, unique_keys
from triggers.meta import Meta, TableCapture, read_meta
from triggers.schema import Schema, read_schema


class SchemaMark(msgspec.Struct, frozen=True):
    """Where the last check left off: the schema cookie and a hash of all schema text."""

    version: int
    fingerprint: str


class TableDrift(msgspec.Struct, frozen=True):
    table: str
    triggers_missing: bool = False
    triggers_stale: bool = False
    dropped: bool = False
    renamed_to: str | None = None
    key_changed: bool = False
    columns_added: tuple[str, ...] = ()
    columns_dropped: tuple[str, ...] = ()
    columns_renamed: tuple[tuple[str, str], ...] = ()
    rowid_renumber_risk: bool = False
    unique_keys_changed: bool = False
    """A secondary UNIQUE index was added or dropped: reinstall so REPLACE victims are journaled by it."""

    @property
    def needs_resnapshot(self) -> bool:
        """Journal coverage was lost or keys may point at different rows: copy the table again."""
        return self.triggers_missing or self.key_changed or self.rowid_renumber_risk or self.renamed_to is not None

    @property
    def needs_reinstall(self) -> bool:
        return (
            self.triggers_missing
            or self.triggers_stale
            or self.key_changed
            or self.unique_keys_changed
            or self.renamed_to is not None
        )


class Drift(msgspec.Struct, frozen=True):
    changed: bool
    """False: schema_version did not move; nothing else was read."""
    mark: SchemaMark
    """Pass this to the next ``check``."""
    installed: bool = True
    tables: tuple[TableDrift, ...] = ()
    """Only tables with a difference."""
    new_tables: tuple[str, ...] = ()
    vacuum_suspected: bool = False

    @property
    def needs_resnapshot(self) -> tuple[str, ...]:
        return tuple(t.table for t in self.tables if t.needs_resnapshot)

    @property
    def needs_reinstall(self) -> bool:
        return bool(self.new_tables) or any(t.needs_reinstall or t.dropped for t in self.tables)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA schema_version").fetchone()[0])


def fingerprint(conn: sqlite3.Connection) -> str:
    digest = hashlib.sha256()
    for row in conn.execute("SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name"):
        digest.update(repr(tuple(row)).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def mark(conn: sqlite3.Connection) -> SchemaMark:
    """The current mark, read consistently (take it right after install, before the first check)."""
    conn.execute("BEGIN")
    try:
        return SchemaMark(schema_version(conn), fingerprint(conn))
    finally:
        conn.execute("COMMIT")


def check(conn: sqlite3.Connection, last: SchemaMark) -> Drift:
    """Compare the schema against the install record; cheap when ``schema_version`` has not moved."""
    version = schema_version(conn)
    if version == last.version:
        return Drift(changed=False, mark=last)
    conn.execute("BEGIN")
    try:
        version = schema_version(conn)
        now = SchemaMark(version, fingerprint(conn))
        meta = read_meta(conn)
        schema = read_schema(conn)
        triggers = {
            str(name): str(tbl)
            for name, tbl in conn.execute("SELECT name, tbl_name FROM sqlite_schema WHERE type = 'trigger'")
        }
        trigger_sql = {
            str(name): str(sql)
            for name, sql in conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger'")
        }
        uniques = {t.name: unique_keys(conn, t)[:2] for t in schema.tables}
    finally:
        conn.execute("COMMIT")
    if meta is None:
        return Drift(changed=True, mark=now, installed=False)
    vacuum = now.fingerprint == last.fingerprint
    tables, renamed_targets = _compare(meta, schema, triggers, trigger_sql, vacuum, uniques)
    new = tuple(
        sorted(
            t.name
            for t in schema.tables
            if t.name not in meta.tables and t.name not in renamed_targets  # read_schema left ours out
        )
    )
    return Drift(changed=True, mark=now, tables=tuple(tables), new_tables=new, vacuum_suspected=vacuum)


def new_table_captures(
    conn: sqlite3.Connection,
    names: Collection[str],
    *,
    default_policy: Policy,
    policies: Mapping[str, Policy],
) -> dict[str, TableCapture | str]:
    """How install would capture each of ``names`` now (tables it has no record of), or why it would
    refuse: the no-key policy decides, exactly as in ``capture install``. One read transaction; the
    NULL-in-key scan reads the table (a new table is usually small). Tables gone since are left out."""
    if not names:
        return {}
    conn.execute("BEGIN")
    try:
        schema = read_schema(conn)
        out: dict[str, TableCapture | str] = {}
        for table in schema.tables:
            if table.name in names:
                policy = policies.get(table.name, default_policy)
                out[table.name] = capture_for(conn, table, policy, table.name in policies, 1, {})
        return out
    finally:
        conn.execute("COMMIT")


def _compare(
    meta: Meta,
    schema: Schema,
    triggers: dict[str, str],
    trigger_sql: dict[str, str],
    vacuum: bool,
    uniques: dict[str, tuple[tuple[UniqueKey, ...], tuple[UniqueKey, ...]]],
) -> tuple[list[TableDrift], set[str]]:
    current = {t.name: t for t in schema.tables}
    result: list[TableDrift] = []
    renamed_targets: set[str] = set()
    for name, cap in sorted(meta.tables.items()):
        table = current.get(name)
        if table is None:
            moved = {triggers[n] for n in cap.triggers if n in triggers and triggers[n] != name}
            if moved:
                target = sorted(moved)[0]
                renamed_targets.add(target)
                result.append(TableDrift(name, renamed_to=target))
            else:
                result.append(TableDrift(name, dropped=True))
            continue
        columns = tuple(c.name for c in table.columns)
        types = tuple(c.declared_type for c in table.columns)
        added, dropped, renamed = column_changes(cap.columns, columns, cap.column_types or None, types)
        drift = TableDrift(
            name,
            triggers_missing=cap.mode != "snapshot-only" and any(triggers.get(n) != name for n in cap.triggers),
            key_changed=_key_changed(cap, table.primary_key, table.rowid_alias, dict(renamed)),
            columns_added=added,
            columns_dropped=dropped,
            columns_renamed=renamed,
            rowid_renumber_risk=vacuum and cap.mode == "rowid",
            unique_keys_changed=cap.mode != "snapshot-only"
            and uniques.get(name, ((), ())) != (cap.unique_keys, cap.indirect_keys),
        )
        expected = cap.expected_sql()
        if not drift.triggers_missing and any(trigger_sql.get(n) != sql for n, sql in expected.items()):
            drift = msgspec.structs.replace(drift, triggers_stale=True)
        if drift != TableDrift(name):
            result.append(drift)
    return result, renamed_targets


def _key_changed(
    cap: TableCapture, primary_key: tuple[str, ...], rowid_alias: str | None, renamed: dict[str, str]
) -> bool:
    """Did the key change? A key column renamed in place is the same key (SQLite rewrote our triggers)."""
    if cap.mode != "key" or cap.key_columns is None:
        return False
    if cap.rowid_alias:
        return rowid_alias is None
    return tuple(renamed.get(c, c) for c in cap.key_columns) != primary_key


def column_changes(
    old: tuple[str, ...],
    new: tuple[str, ...],
    old_types: tuple[str, ...] | None = None,
    new_types: tuple[str, ...] | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(added, dropped, renamed) between two column lists.

    RENAME COLUMN keeps the position and the declared type; ADD COLUMN appends; DROP COLUMN closes
    the gap. So a name that changed at the same position, with the same declared type (when types
    are known), where neither name exists on the other side, is a rename. A drop of column X plus an
    add of a column Y of the same type that slides into X's slot looks the same: reported as a rename.
    """
    old_set, new_set = set(old), set(new)
    ot = old_types if old_types is not None and len(old_types) == len(old) else None
    nt = new_types if new_types is not None and len(new_types) == len(new) else None

    def same_type(i: int) -> bool:
        return ot is None or nt is None or ot[i].upper() == nt[i].upper()

    renamed = tuple(
        (o, n)
        for i, (o, n) in enumerate(zip(old, new, strict=False))
        if o != n and o not in new_set and n not in old_set and same_type(i)
    )
    sources = {o for o, _ in renamed}
    targets = {n for _, n in renamed}
    added = tuple(c for c in new if c not in old_set and c not in targets)
    dropped = tuple(c for c in old if c not in new_set and c not in sources)
    return added, dropped, renamed


__all__ = [
    "Drift",
    "SchemaMark",
    "TableDrift",
    "check",
    "column_changes",
    "fingerprint",
    "mark",
    "new_table_captures",
]
