"""``replicator analyze``: what is about to be migrated, and what will bite, before anything is written.

The first step of every migration, and read-only by construction (``mode=ro``): it reads the schema
through the PRAGMAs, profiles every table chunk by chunk (``replicator.plan.profiler``) and counts
foreign-key orphans, spread over WORKERS read-only connections, and reads the file's own settings.
The result is one ``Report``
(``replicator.plan.analyze_report``) that is rendered for a terminal or written as JSON, with
``Finding``s from ``replicator.plan.analyze_checks``: each names the table and column, says what
PostgreSQL or the capture will do, and what the operator can do about it.
"""

from __future__ import annotations

import functools
import os
import queue
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO, cast

import msgspec

from replicator import log
from replicator.errors import ReplicatorError
from replicator.plan import chunkscan, profiler
from replicator.plan.analyze_checks import findings
from replicator.plan.analyze_report import (
    ColumnReport,
    ForeignKeyReport,
    Report,
    SourceInfo,
    TableReport,
)
from replicator.plan.profile import TableProfile
from triggers import source
from triggers.names import is_capture_trigger, is_tool_trigger
from triggers.schema import ForeignKey, Schema, Table, dependency_order, quote_ident, read_schema

__all__ = ["Report", "analyze", "render", "to_json", "write_json"]

#: Read-only connections that read the tables at the same time (SQLite steps without the GIL).
WORKERS = 2


def analyze(path: Path, *, busy_timeout_ms: int = source.DEFAULT_BUSY_TIMEOUT_MS) -> Report:
    """Read ``path`` (never writing to it) and build the report; each table is one short read.

    No read transaction spans the whole run: on a live database a long reader would hold back WAL
    checkpoints (or, in rollback-journal mode, block the app's commits) for minutes.
    """
    path = Path(path)
    started = time.perf_counter()
    logger = log.get("analyze", source=str(path))
    conn = source.connect(path, readonly=True, busy_timeout_ms=busy_timeout_ms)
    try:
        info = _source_info(conn, path)
        if info.journal_mode != "wal":
            logger.warning(
                "source is not in WAL mode: while a table is read the app's commits wait",
                journal_mode=info.journal_mode,
                hint="run analyze when the app is quiet, or switch the file to WAL first",
            )
        schema = read_schema(conn)
        sequences = _sequences(conn)
        profiles, orphans = _read_tables(conn, path, schema, busy_timeout_ms, logger)
        tables = []
        for table in schema.tables:
            fks = tuple(_foreign_key(table, fk, schema, orphans) for fk in table.foreign_keys)
            tables.append(_table_report(table, profiles[table.name], fks, sequences.get(table.name), schema))
    except sqlite3.Error as exc:
        raise source.translate(exc, path) from None
    finally:
        conn.close()
    order, cycles = dependency_order(schema.tables)
    report = Report(
        source=info,
        tables=tuple(tables),
        load_order=tuple(order),
        fk_cycles=tuple(tuple(c) for c in cycles),
        views=tuple(v.name for v in schema.views),
        virtual_tables=tuple(v.name for v in schema.virtual_tables),
        capture_installed=any(is_capture_trigger(t.name, t.table) for t in schema.triggers),
        findings=(),
        seconds=0.0,
        self_references=tuple(
            t.name for t in schema.tables if any(fk.ref_table.lower() == t.name.lower() for fk in t.foreign_keys)
        ),
        sequences=sequences,
        virtual_table_modules={v.name: v.module for v in schema.virtual_tables},
        shadow_tables=schema.shadow_tables,
    )
    report = msgspec.structs.replace(report, findings=findings(report), seconds=round(time.perf_counter() - started, 3))
    logger.info(
        "analyzed",
        tables=len(tables),
        rows=sum(t.rows for t in tables),
        errors=report.count("error"),
        warnings=report.count("warning"),
        seconds=report.seconds,
    )
    return report


#: The file's own settings, read in one statement from the pragma table-valued functions.
_SETTINGS_SQL = (
    "SELECT p.page_size, c.page_count, f.freelist_count, j.journal_mode, e.encoding, u.user_version,"
    " s.schema_version FROM pragma_page_size AS p, pragma_page_count AS c, pragma_freelist_count AS f,"
    " pragma_journal_mode AS j, pragma_encoding AS e, pragma_user_version AS u, pragma_schema_version AS s"
)


def _source_info(conn: sqlite3.Connection, path: Path) -> SourceInfo:
    page_size, page_count, freelist, journal, encoding, user_version, version = conn.execute(_SETTINGS_SQL).fetchone()
    return SourceInfo(
        path=str(path),
        bytes=path.stat().st_size,
        page_size=int(page_size),
        page_count=int(page_count),
        freelist_count=int(freelist),
        journal_mode=str(journal).lower(),
        encoding=str(encoding),
        user_version=int(user_version),
        schema_version=int(version),
        sqlite_version=sqlite3.sqlite_version,
        filesystem=source.filesystem_type(path),
    )


def _sequences(conn: sqlite3.Connection) -> dict[str, int]:
    exists = conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_sequence'").fetchone()
    if not exists:
        return {}
    return {str(name): int(seq) for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence")}


def _parent(fk: ForeignKey, schema: Schema) -> Table | None:
    """The parent table, found as SQLite finds it (names are case-insensitive)."""
    for table in schema.tables:
        if table.name.lower() == fk.ref_table.lower():
            return table
    return None


def _is_unique(parent: Table, key: Sequence[str]) -> bool:
    wanted = {k.lower() for k in key}
    return any({c.lower() for c in unique} == wanted for unique in parent.unique_keys)


def _checkable_key(fk: ForeignKey, schema: Schema) -> tuple[Table | None, tuple[str, ...], bool]:
    """The parent, its key columns, and whether SQLite itself could check the FK (a unique parent key)."""
    parent = _parent(fk, schema)
    key = (fk.ref_columns or parent.primary_key) if parent else fk.ref_columns
    checkable = parent is not None and len(key) == len(fk.columns) and _is_unique(parent, key)
    return parent, key, checkable


def _foreign_key(table: Table, fk: ForeignKey, schema: Schema, orphans: dict[tuple[str, int], int]) -> ForeignKeyReport:
    """The FK with its parent key resolved and, where SQLite itself could check it, its orphan count."""
    parent, key, checkable = _checkable_key(fk, schema)
    return ForeignKeyReport(
        columns=fk.columns,
        ref_table=fk.ref_table,
        ref_columns=key,
        on_update=fk.on_update,
        on_delete=fk.on_delete,
        parent_exists=parent is not None,
        parent_key_unique=checkable,
        orphan_rows=orphans.get((table.name, fk.id)) if checkable else None,
    )


def orphan_sql(child: str, columns: Sequence[str], parent: Table, key: Sequence[str]) -> str:
    """Rows whose FK columns are all non-NULL (MATCH SIMPLE) and match no parent row.

    A parent keyed by its rowid is probed through a compact copy of its keys (``NOT IN`` a subquery
    SQLite materialises once): probing the table itself reads a random page of it per child row.
    Other keys keep ``NOT EXISTS``, whose comparison uses the parent column's collation as SQLite's
    own foreign-key check does.
    """
    present = " AND ".join(f"c.{quote_ident(col)} IS NOT NULL" for col in columns)
    if len(key) == 1 and parent.rowid_alias and key[0].lower() == parent.rowid_alias.lower():
        keys = f"SELECT {quote_ident(key[0])} FROM main.{quote_ident(parent.name)} LIMIT -1"  # noqa: S608
        missing = f"c.{quote_ident(columns[0])} NOT IN ({keys})"
    else:
        match = " AND ".join(f"p.{quote_ident(k)} = c.{quote_ident(col)}" for k, col in zip(key, columns, strict=True))
        missing = f"NOT EXISTS (SELECT 1 FROM main.{quote_ident(parent.name)} AS p WHERE {match})"  # noqa: S608
    return f"SELECT count(*) FROM main.{quote_ident(child)} AS c WHERE {present} AND {missing}"  # noqa: S608


def _count_orphans(
    conn: sqlite3.Connection, child: str, columns: Sequence[str], parent: Table, key: Sequence[str]
) -> int:
    return int(conn.execute(orphan_sql(child, columns, parent, key)).fetchone()[0])


def _read_tables(
    conn: sqlite3.Connection, path: Path, schema: Schema, busy_timeout_ms: int, logger: Any
) -> tuple[dict[str, TableProfile], dict[tuple[str, int], int]]:
    """Profile every table and count every FK's orphans, spread over WORKERS read-only connections.

    The work is cut into rowid chunks (``replicator.plan.chunkscan.chunks``) and orphan queries, biggest
    first, and handed to the next free connection: SQLite releases the GIL while it steps, so two
    connections keep two cores busy. Each piece is its own short read (no long read transaction).
    """
    tasks: list[tuple[int, Callable[[sqlite3.Connection], object], str]] = []
    parts: dict[str, list[chunkscan.Chunk]] = {t.name: chunkscan.chunks(conn, t) for t in schema.tables}
    for table in schema.tables:
        width = len(table.columns)
        for chunk in parts[table.name]:
            span = (chunk.high - chunk.low) if chunk.low is not None and chunk.high is not None else 0
            weight = min(span, chunkscan.CHUNK_CHARS) * width if span else chunkscan.CHUNK_CHARS
            tasks.append((weight, functools.partial(chunkscan.scan_chunk, table=table, chunk=chunk), table.name))
        for fk in table.foreign_keys:
            parent, key, checkable = _checkable_key(fk, schema)
            if parent is not None and checkable:
                count = functools.partial(_count_orphans, child=table.name, columns=fk.columns, parent=parent, key=key)
                tasks.append((chunkscan.CHUNK_CHARS, count, f"{table.name}#{fk.id}"))
    tasks.sort(key=lambda t: -t[0])
    workers = max(1, min(WORKERS, len(tasks)))
    pool_conns: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
    opened = [conn] + [source.connect(path, readonly=True, busy_timeout_ms=busy_timeout_ms) for _ in range(workers - 1)]
    for c in opened:
        profiler.register(c)
        pool_conns.put(c)

    def run(task: Callable[[sqlite3.Connection], object]) -> object:
        c = pool_conns.get()
        try:
            return task(c)
        finally:
            pool_conns.put(c)

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="analyze") as pool:
            futures = [(label, pool.submit(run, task)) for _, task, label in tasks]
            done = [(label, future.result()) for label, future in futures]
    finally:
        for c in opened[1:]:
            c.close()
    chunks: dict[str, list[chunkscan.ChunkResult]] = {t.name: [] for t in schema.tables}
    orphans: dict[tuple[str, int], int] = {}
    for label, result in done:
        if isinstance(result, chunkscan.ChunkResult):
            chunks[label].append(result)
        else:
            name, fk_id = label.rsplit("#", 1)
            orphans[(name, int(fk_id))] = int(cast(int, result))
    profiles = {t.name: chunkscan.finish_profile(conn, t, chunks[t.name]) for t in schema.tables}
    for name, prof in profiles.items():
        logger.debug("table analyzed", table=name, rows=prof.rows, chunks=len(parts[name]))
    return profiles, orphans


def _table_report(
    table: Table, prof: TableProfile, fks: tuple[ForeignKeyReport, ...], sequence: int | None, schema: Schema
) -> TableReport:
    columns = []
    for column in table.columns:
        p = prof.column(column.name)
        columns.append(
            ColumnReport(
                name=column.name,
                declared_type=column.declared_type,
                affinity=column.affinity,
                notnull=column.notnull,
                default=column.default,
                pk_position=column.pk_position,
                generated=column.generated,
                storage=p.storage,
                formats=p.formats,
                min_integer=p.min_integer,
                max_integer=p.max_integer,
                max_text_bytes=p.max_text_bytes,
                max_blob_bytes=p.max_blob_bytes,
            )
        )
    return TableReport(
        name=table.name,
        rows=prof.rows,
        primary_key=table.primary_key,
        rowid_alias=table.rowid_alias,
        without_rowid=table.without_rowid,
        strict=table.strict,
        autoincrement=table.autoincrement,
        sequence=sequence,
        null_key_rows=prof.null_key_rows,
        columns=tuple(columns),
        foreign_keys=fks,
        indexes=table.indexes,
        triggers=tuple(
            t.name for t in schema.triggers if t.table == table.name and not is_tool_trigger(t.name, t.table)
        ),
    )


def to_json(report: Report) -> str:
    """The report as indented JSON (field order is the Structs'; ``report_version`` names the shape)."""
    return msgspec.json.format(msgspec.json.encode(report), indent=2).decode()


def write_json(report: Report, path: Path) -> None:
    """Write the JSON report; a regular file is replaced atomically, anything else is written into.

    Atomic means a temp file in the same directory, then a rename, so a reader never sees half a
    report. A device, FIFO or ``/dev/stdout`` must never be renamed over (as root that would replace
    ``/dev/null`` with a file): those are written in place. A symlink keeps pointing where it did.
    """
    target = Path(path)
    text = to_json(report) + "\n"
    try:
        if target.exists() and not target.is_file():
            with target.open("w", encoding="utf-8") as handle:
                handle.write(text)
            return
        target = target.resolve() if target.is_symlink() else target
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ReplicatorError(
            f"cannot write the JSON report to {path}: {exc.strerror or exc}",
            hint="check that the directory exists and is writable",
        ) from None


def render(report: Report, stream: TextIO | None = None) -> None:
    """Print the report for a human: rich tables on a terminal, plain aligned text otherwise."""
    from replicator.plan.analyze_render import render as render_report

    render_report(report, stream or sys.stdout)
