"""``replicator analyze``: what is about to be migrated, and what will bite, before anything is written.

The first step of every migration, and read-only by construction (``mode=ro``): it reads the schema
through the PRAGMAs, profiles every table in one aggregate scan (``replicator.profile``), counts
foreign-key orphans and reads the file's own settings. The result is one ``Report``
(``replicator.analyze_report``) that is rendered for a terminal or written as JSON, with
``Finding``s from ``replicator.analyze_checks``: each names the table and column, says what
PostgreSQL or the capture will do, and what the operator can do about it.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import msgspec

from replicator import log
from replicator.analyze_checks import findings
from replicator.analyze_report import (
    ColumnReport,
    ForeignKeyReport,
    Report,
    SourceInfo,
    TableReport,
)
from replicator.errors import ReplicatorError
from replicator.profile import TableProfile, profile_table
from triggers import source
from triggers.schema import ForeignKey, Schema, Table, dependency_order, is_internal, quote_ident, read_schema

__all__ = ["Report", "analyze", "render", "to_json", "write_json"]

#: A table that takes longer than this to read is logged at info level (progress on big files).
SLOW_TABLE_SECONDS = 2.0


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
        tables = []
        for table in schema.tables:
            table_started = time.perf_counter()
            prof = profile_table(conn, table)
            fks = tuple(_foreign_key(conn, table, fk, schema) for fk in table.foreign_keys)
            tables.append(_table_report(table, prof, fks, sequences.get(table.name), schema))
            seconds = round(time.perf_counter() - table_started, 3)
            # Big tables take a while: say so, so a long run shows progress; small ones stay quiet.
            emit = logger.info if seconds >= SLOW_TABLE_SECONDS else logger.debug
            emit("table analyzed", table=table.name, rows=prof.rows, seconds=seconds)
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
        capture_installed=any(is_internal(t.name) for t in schema.triggers),
        findings=(),
        seconds=0.0,
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


def _foreign_key(conn: sqlite3.Connection, table: Table, fk: ForeignKey, schema: Schema) -> ForeignKeyReport:
    """The FK with its parent key resolved and, where SQLite itself could check it, its orphan count."""
    parent = _parent(fk, schema)
    key = (fk.ref_columns or parent.primary_key) if parent else fk.ref_columns
    checkable = parent is not None and len(key) == len(fk.columns) and _is_unique(parent, key)
    return ForeignKeyReport(
        columns=fk.columns,
        ref_table=fk.ref_table,
        ref_columns=key,
        on_update=fk.on_update,
        on_delete=fk.on_delete,
        parent_exists=parent is not None,
        parent_key_unique=checkable,
        orphan_rows=_count_orphans(conn, table.name, fk.columns, parent.name, key) if parent and checkable else None,
    )


def _count_orphans(
    conn: sqlite3.Connection, child: str, columns: Sequence[str], parent: str, key: Sequence[str]
) -> int:
    """Rows whose FK columns are all non-NULL (MATCH SIMPLE) and match no parent row (an index probe each)."""
    present = " AND ".join(f"c.{quote_ident(col)} IS NOT NULL" for col in columns)
    match = " AND ".join(f"p.{quote_ident(k)} = c.{quote_ident(col)}" for k, col in zip(key, columns, strict=True))
    query = (
        f"SELECT count(*) FROM main.{quote_ident(child)} AS c WHERE {present}"  # noqa: S608 (quoted names)
        f" AND NOT EXISTS (SELECT 1 FROM main.{quote_ident(parent)} AS p WHERE {match})"
    )
    return int(conn.execute(query).fetchone()[0])


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
        triggers=tuple(t.name for t in schema.triggers if t.table == table.name and not is_internal(t.name)),
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
    from replicator.analyze_render import render as render_report

    render_report(report, stream or sys.stdout)
