"""Install, remove and report the capture triggers in the application's live SQLite file.

Everything happens in one ``BEGIN IMMEDIATE`` transaction: the app sees the triggers appear (or
vanish) atomically between two of its own transactions, never half of them. Install is idempotent
and doubles as *reconcile*: a rerun re-creates missing or stale triggers (bumping that table's
generation), drops our triggers left on renamed tables and adopts new tables. Which key each table
is captured by is decided in :mod:`triggers.keys`; what install records per table, in :mod:`triggers.meta`.

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
from typing import Literal

import msgspec
import structlog

from triggers import journal, names
from triggers.ddl import FORMAT_VERSION, drop_trigger_sql, journal_table_sql, meta_table_sql, widen_journal_sql
from triggers.errors import SchemaUnsupported
from triggers.keys import POLICIES, Policy, Skipped, decide, null_key_scan, refusal
from triggers.meta import TABLE_PREFIX, Meta, Mode, TableCapture, put, read_meta
from triggers.schema import quote_ident, read_schema
from triggers.source import DEFAULT_BUSY_TIMEOUT_MS, opened, translate


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
        decisions, skipped, problems = decide(
            conn, schema, meta, default_policy, policies, null_keys, stamp_time, frozenset(exclude)
        )
        if problems:
            raise refusal(problems)
        needed = max([len(d.key_columns or ("rowid",)) for d in decisions if d.mode != "snapshot-only"] + [1])
        if meta is None:
            conn.execute(meta_table_sql())
            conn.execute(journal_table_sql(needed))
            put(conn, "source_id", secrets.token_hex(16))
            put(conn, "format_version", str(FORMAT_VERSION))
            put(conn, "installed_at_ms", str(int(time.time() * 1000)))
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
            put(conn, TABLE_PREFIX + current.name, msgspec.json.encode(current).decode())
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
    "InstallReport",
    "RemoveReport",
    "Status",
    "TableStatus",
    "install",
    "install_on",
    "remove",
    "remove_on",
    "status",
    "status_on",
]
