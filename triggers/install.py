"""Install, remove and report the capture triggers in the application's live SQLite file.

Everything happens in one ``BEGIN IMMEDIATE`` transaction: the app sees the triggers appear (or
vanish) atomically between two of its own transactions, never half of them. Install is idempotent
and doubles as *reconcile*: a rerun re-creates missing or stale triggers (bumping that table's
generation), drops our triggers left on renamed tables and adopts new tables.

Which key a table is captured by:

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

The NULL-in-PK scan, which can read whole tables, runs in a read transaction *before* the write
lock is taken; under the lock install only reads the schema and writes DDL (measured: 5-25 ms on
the real-world files), well inside any app's busy timeout.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec
import structlog

from triggers import journal, names
from triggers.ddl import (
    FORMAT_VERSION,
    OPS,
    ROWID_NAMES,
    VICTIM_OPS,
    UniqueKey,
    drop_trigger_sql,
    journal_table_sql,
    meta_table_sql,
    rowid_name,
    trigger_name,
    trigger_sql,
    victim_trigger_sql,
    widen_journal_sql,
)
from triggers.errors import SchemaUnsupported
from triggers.schema import Generated, Schema, Table, quote_ident, read_schema
from triggers.source import DEFAULT_BUSY_TIMEOUT_MS, opened, translate

Policy = Literal["refuse", "rowid", "snapshot-only"]
Mode = Literal["key", "rowid", "snapshot-only"]
POLICIES: tuple[Policy, ...] = ("refuse", "rowid", "snapshot-only")
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
    secondary ones, and the primary key when it has a non-BINARY collation (see :func:`unique_keys`)."""
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


class Skipped(msgspec.Struct, frozen=True):
    name: str
    reason: str


class InstallReport(msgspec.Struct, frozen=True):
    source_id: str
    format_version: int
    tables: tuple[TableCapture, ...]
    skipped: tuple[Skipped, ...]
    changed: tuple[str, ...]
    """Tables whose triggers were created or re-created by this run (empty on an idempotent rerun)."""
    dropped_orphans: tuple[str, ...]
    schema_version: int


class RemoveReport(msgspec.Struct, frozen=True):
    removed: bool
    triggers_dropped: int
    journal_rows_dropped: int
    note: str = ""


TableState = Literal["captured", "snapshot-only", "triggers-missing", "triggers-stale", "dropped", "not-captured"]


class TableStatus(msgspec.Struct, frozen=True):
    name: str
    state: TableState
    mode: Mode | None
    generation: int | None
    note: str = ""


class Status(msgspec.Struct, frozen=True):
    installed: bool
    source_id: str | None
    format_version: int | None
    tables: tuple[TableStatus, ...]
    journal: journal.JournalStats | None
    schema_version: int


class Meta(msgspec.Struct, frozen=True):
    source_id: str
    format_version: int
    tables: dict[str, TableCapture]


# --- meta -------------------------------------------------------------------------------------


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


def _put(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute('INSERT OR REPLACE INTO "_replicator_meta" (key, value) VALUES (?, ?)', (key, value))


# --- decisions --------------------------------------------------------------------------------


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


def _capture_for(
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


def _refusal(problems: dict[str, str]) -> SchemaUnsupported:
    listed = "; ".join(f"{quote_ident(name)} {why}" for name, why in sorted(problems.items()))
    return SchemaUnsupported(
        f"{len(problems)} table(s) cannot be captured by key: {listed}",
        hint="add a primary key, or set capture.no_key_policy (or capture.tables.<name>) to "
        "'rowid' (unstable across VACUUM) or 'snapshot-only' (copied again at cutover)",
    )


# --- transactions -----------------------------------------------------------------------------


@contextmanager
def _write_transaction(conn: sqlite3.Connection, path: Path | str) -> Iterator[None]:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise translate(exc, path) from None
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def _read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One consistent view of meta, schema and journal (a deferred BEGIN; the first read pins it)."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _our_triggers(conn: sqlite3.Connection, meta: Meta | None) -> dict[str, tuple[str, str]]:
    """Every capture trigger we own: name → (table it sits on, its SQL).

    Ours by :func:`triggers.names.is_capture_trigger`: named for the table it sits on, or for a table
    ``meta`` records (renamed since). Never the app's triggers that merely share our prefix, and
    never the write fence (a capture reinstall must not drop it)."""
    former = meta.tables.keys() if meta is not None else ()
    rows = conn.execute("SELECT name, tbl_name, sql FROM sqlite_schema WHERE type = 'trigger'").fetchall()
    return {str(n): (str(t), str(s)) for n, t, s in rows if names.is_capture_trigger(str(n), str(t), former)}


def _refuse_name_collisions(conn: sqlite3.Connection) -> None:
    """Before a first install: an app table with our journal's or meta table's name (SQLite ignores
    ASCII case) would be written into as if it were ours."""
    rows = conn.execute("SELECT name FROM sqlite_schema WHERE type IN ('table', 'view')").fetchall()
    taken = sorted(str(n) for (n,) in rows if names.fold(str(n)) in (names.JOURNAL, names.META))
    if taken:
        raise SchemaUnsupported(
            f"the app has a table named {', '.join(map(quote_ident, taken))}: replicator keeps its change "
            "journal and its record under these names",
            hint="rename that table (ALTER TABLE ... RENAME TO ...), then install capture",
        )


def install_on(
    conn: sqlite3.Connection,
    *,
    default_policy: Policy = "refuse",
    policies: Mapping[str, Policy] | None = None,
    path: Path | str = "source",
    stamp_time: bool = False,
    exclude: Collection[str] = (),
) -> InstallReport:
    """Install or reconcile capture on an open read-write connection in autocommit mode.

    ``stamp_time`` makes the triggers write a statement timestamp (``ts_ms``) for lag in seconds,
    at the cost of one SQL function call per app statement (see triggers.ddl; bench/capture_overhead.py
    measures it: ``--extra stamped``).
    ``exclude``: tables not captured yet to leave uncaptured (reported as skipped; the daemon passes
    new tables it cannot apply, so their refusal does not block the reinstall of the others).
    """
    policies = dict(policies or {})
    for name, policy in [("default", default_policy), *policies.items()]:
        if policy not in POLICIES:
            raise SchemaUnsupported(
                f"unknown no-key policy {policy!r} for {name}", hint="use refuse|rowid|snapshot-only"
            )
    logger = structlog.get_logger().bind(component="capture.install", source=str(path))
    null_keys = null_key_scan(conn)
    with _write_transaction(conn, path):
        schema = read_schema(conn)
        meta = read_meta(conn)
        if meta is None:
            _refuse_name_collisions(conn)
        if meta is not None and meta.format_version != FORMAT_VERSION:
            raise SchemaUnsupported(
                f"capture format {meta.format_version} is installed; this replicator writes format {FORMAT_VERSION}",
                hint="drain the journal, then `replicator capture remove` and install again",
            )
        decisions, skipped, problems = _decide(
            conn, schema, meta, default_policy, policies, null_keys, stamp_time, frozenset(exclude)
        )
        if problems:
            raise _refusal(problems)
        needed = max([len(d.key_columns or ("rowid",)) for d in decisions if d.mode != "snapshot-only"] + [1])
        if meta is None:
            conn.execute(meta_table_sql())
            conn.execute(journal_table_sql(needed))
            _put(conn, "source_id", secrets.token_hex(16))
            _put(conn, "format_version", str(FORMAT_VERSION))
            _put(conn, "installed_at_ms", str(int(time.time() * 1000)))
        for statement in widen_journal_sql(journal.width(conn), needed):
            conn.execute(statement)
        changed, orphans = _apply_triggers(conn, decisions, meta)
        result_meta = read_meta(conn)
        assert result_meta is not None
        (version,) = conn.execute("PRAGMA schema_version").fetchone()
    report = InstallReport(
        source_id=result_meta.source_id,
        format_version=FORMAT_VERSION,
        tables=tuple(result_meta.tables[d.name] for d in decisions),
        skipped=tuple(skipped),
        changed=tuple(changed),
        dropped_orphans=tuple(orphans),
        schema_version=int(version),
    )
    logger.info(
        "capture installed",
        tables=len(report.tables),
        changed=len(changed),
        skipped=len(skipped),
        orphans_dropped=len(orphans),
    )
    return report


def _decide(
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
        decision = _capture_for(conn, table, policy, explicit, generation, null_keys, stamp_time)
        if isinstance(decision, str):
            problems[table.name] = decision
        else:
            decisions.append(decision)
    return decisions, skipped, problems


def _apply_triggers(
    conn: sqlite3.Connection, decisions: list[TableCapture], meta: Meta | None
) -> tuple[list[str], list[str]]:
    """Create what is missing or different, drop what is not ours any more; update meta rows."""
    existing = _our_triggers(conn, meta)
    wanted: set[str] = set()
    changed: list[str] = []
    for decision in decisions:
        previous = meta.tables.get(decision.name) if meta else None
        current = decision
        expected = current.expected_sql()
        same_shape = previous is not None and (previous.mode, previous.key_columns, previous.rowid) == (
            current.mode,
            current.key_columns,
            current.rowid,
        )
        intact = all(existing.get(n) == (current.name, sql) for n, sql in expected.items())
        if not (same_shape and intact):
            if previous is not None and expected:
                current = msgspec.structs.replace(current, generation=previous.generation + 1)
                expected = current.expected_sql()
            for name in current.triggers:
                conn.execute(drop_trigger_sql(name))
            for sql in expected.values():
                conn.execute(sql)
            changed.append(current.name)
        wanted.update(expected)
        if previous != current:
            _put(conn, TABLE_PREFIX + current.name, msgspec.json.encode(current).decode())
    orphans = sorted(name for name in _our_triggers(conn, meta) if name not in wanted)
    for name in orphans:
        conn.execute(drop_trigger_sql(name))
    decided = {d.name for d in decisions}
    for gone in sorted(set(meta.tables) - decided if meta else set()):
        conn.execute('DELETE FROM "_replicator_meta" WHERE key = ?', (TABLE_PREFIX + gone,))
    return changed, orphans


def install(
    path: Path | str,
    *,
    default_policy: Policy = "refuse",
    policies: Mapping[str, Policy] | None = None,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    stamp_time: bool = False,
) -> InstallReport:
    """Install (or reconcile) capture in the SQLite file at ``path``; see the module docstring."""
    from triggers.watch import check_wal_location

    with opened(path, readonly=False, busy_timeout_ms=busy_timeout_ms) as conn:
        check_wal_location(Path(path), conn)
        return install_on(conn, default_policy=default_policy, policies=policies, path=path, stamp_time=stamp_time)


# --- remove -----------------------------------------------------------------------------------


def remove_on(conn: sqlite3.Connection, *, path: Path | str = "source") -> RemoveReport:
    """Drop our triggers, journal and meta table: the app's schema is left exactly as before install
    (the journal has no AUTOINCREMENT, so not even a ``sqlite_sequence`` table is left behind)."""
    with _write_transaction(conn, path):
        meta = read_meta(conn)
        triggers = _our_triggers(conn, meta)
        for name in triggers:
            conn.execute(drop_trigger_sql(name))
        rows = 0
        if journal.exists(conn):
            rows = int(conn.execute('SELECT count(*) FROM "_replicator_journal"').fetchone()[0])
            conn.execute('DROP TABLE "_replicator_journal"')
        conn.execute('DROP TABLE IF EXISTS "_replicator_meta"')
    note = "" if meta is not None or triggers else "capture was not installed"
    structlog.get_logger().bind(component="capture.remove", source=str(path)).info(
        "capture removed", triggers=len(triggers), journal_rows=rows
    )
    return RemoveReport(
        removed=meta is not None or bool(triggers), triggers_dropped=len(triggers), journal_rows_dropped=rows, note=note
    )


def remove(path: Path | str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> RemoveReport:
    with opened(path, readonly=False, busy_timeout_ms=busy_timeout_ms) as conn:
        return remove_on(conn, path=path)


# --- status -----------------------------------------------------------------------------------


def status_on(conn: sqlite3.Connection) -> Status:
    """Per-table capture state and journal size/backlog, read in one read transaction."""
    with _read_transaction(conn):
        meta = read_meta(conn)
        schema = read_schema(conn)
        if meta is None:
            return Status(False, None, None, (), None, schema.schema_version)
        existing = _our_triggers(conn, meta)
        present = {t.name for t in schema.tables}
        tables: list[TableStatus] = []
        for name, cap in sorted(meta.tables.items()):
            tables.append(TableStatus(name, _state(cap, present, existing), cap.mode, cap.generation, cap.note))
        for table in schema.tables:
            if table.name not in meta.tables:
                tables.append(
                    TableStatus(
                        table.name, "not-captured", None, None, "new since install: `replicator run` picks it up online"
                    )
                )
        stats = journal.stats(conn) if journal.exists(conn) else None
        return Status(True, meta.source_id, meta.format_version, tuple(tables), stats, schema.schema_version)


def _state(cap: TableCapture, present: set[str], existing: dict[str, tuple[str, str]]) -> TableState:
    if cap.name not in present:
        return "dropped"
    if cap.mode == "snapshot-only":
        return "snapshot-only"
    expected = cap.expected_sql()
    if any(n not in existing or existing[n][0] != cap.name for n in expected):
        return "triggers-missing"
    if any(existing[n][1] != sql for n, sql in expected.items()):
        return "triggers-stale"
    return "captured"


def status(path: Path | str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Status:
    with opened(path, busy_timeout_ms=busy_timeout_ms) as conn:
        return status_on(conn)


__all__ = [
    "POLICIES",
    "InstallReport",
    "Meta",
    "Policy",
    "RemoveReport",
    "Skipped",
    "Status",
    "TableCapture",
    "TableStatus",
    "install",
    "install_on",
    "read_meta",
    "remove",
    "remove_on",
    "status",
    "status_on",
]
