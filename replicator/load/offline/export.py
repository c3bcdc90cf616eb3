"""``replicator export``: every table of a SQLite file to JSON Lines (format: ``manifest``, ``codec``).

Safety: all tables are read in one read transaction (one consistent state, the app keeps
writing); files are streamed (bounded memory), created mode 0600 in a temp directory that is
renamed to ``DIR`` only once complete and fsynced, so a directory named ``DIR`` is always a whole
export. ``--tar`` writes one uncompressed tar instead, by the same temp-then-rename rule.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Final

import msgspec

from replicator import __version__, files, log
from replicator.config import Config
from replicator.errors import UsageError
from replicator.load.offline.codec import encode_row, fallback_text
from replicator.load.offline.manifest import (
    FETCH_ROWS,
    FORMAT,
    MANIFEST,
    ForeignKeyInfo,
    Manifest,
    SourceFile,
    TableEntry,
)
from replicator.plan.profiler import profile_table
from replicator.progress import Progress
from triggers import source as sqlite_source
from triggers.schema import Schema, Table, dependency_order, quote_ident, read_schema

WRITE_BUFFER: Final = 1 << 20
OTHER_OUT: Final = "choose another --out"


def _file_name(index: int, table: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", table)[:80]
    return f"{index:04d}-{safe}.jsonl"


def _create(path: Path) -> IO[bytes]:
    """A new file, owner-only from its first byte (never created wider, then narrowed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


class _Written(msgspec.Struct):
    rows: int
    sha256: str


def _write_table(
    conn: sqlite3.Connection, table: Table, path: Path, columns: Sequence[str], progress: Progress | None = None
) -> _Written:
    """Stream one table to its file; re-read once with the bytes-tolerant text factory if needed."""
    try:
        return _write_rows(conn, table, path, columns, progress)
    except _Redo:
        log.get("export", table=table.name).warning("text that is not UTF-8: re-reading with the bytes fallback")
        path.unlink()
        conn.text_factory = fallback_text
        try:
            return _write_rows(conn, table, path, columns, progress)
        finally:
            conn.text_factory = str


class _Redo(Exception):
    pass


def _write_rows(
    conn: sqlite3.Connection, table: Table, path: Path, columns: Sequence[str], progress: Progress | None
) -> _Written:
    encoder = msgspec.json.Encoder()
    digest = hashlib.sha256()
    rows = 0
    cols = ", ".join(quote_ident(c) for c in columns) or "NULL"
    buffer = bytearray()
    with _create(path) as out:
        try:
            cursor = conn.execute(f"SELECT {cols} FROM {quote_ident(table.name)}")  # noqa: S608 - quoted
            while batch := cursor.fetchmany(FETCH_ROWS):
                for row in batch:
                    encoder.encode_into(encode_row(columns, row), buffer, len(buffer))
                    buffer += b"\n"
                rows += len(batch)
                if progress is not None:
                    progress.advance(table.name, rows)
                if len(buffer) >= WRITE_BUFFER:
                    digest.update(buffer)
                    out.write(buffer)
                    buffer.clear()
        except sqlite3.OperationalError as exc:
            if sqlite_source.undecodable_text(exc) and conn.text_factory is str:
                raise _Redo from None
            raise sqlite_source.translate(exc, "source") from None
        digest.update(buffer)
        out.write(buffer)
        out.flush()
        os.fsync(out.fileno())
    return _Written(rows, digest.hexdigest())


def _entry(table: Table, file: str, written: _Written) -> TableEntry:
    stored = table.columns  # generated columns too: a target that cannot compute one loads SQLite's values
    return TableEntry(
        name=table.name,
        file=file,
        rows=written.rows,
        sha256=written.sha256,
        columns=tuple(c.name for c in stored),
        declared=tuple(c.declared_type for c in stored),
        primary_key=table.primary_key,
        rowid_alias=table.rowid_alias,
        strict=table.strict,
        foreign_keys=tuple(ForeignKeyInfo(fk.columns, fk.ref_table, fk.ref_columns) for fk in table.foreign_keys),
    )


def _ddl(schema: Schema) -> tuple[str, ...]:
    tables = [t.sql for t in schema.tables]
    indexes = [i.sql for t in schema.tables for i in t.indexes if i.sql]
    return tuple(tables + indexes)


class ExportResult(msgspec.Struct, frozen=True):
    path: str
    manifest: Manifest


def export(
    source: Path, out: Path, config: Config, *, tar: bool = False, progress: Progress | None = None
) -> ExportResult:
    """Write the export of ``source`` to ``out`` (a directory, or a .tar file with ``tar``); ``progress``
    is told each table's rows as they are written."""
    from replicator.load import snapshot
    from replicator.plan import sequences

    started = time.monotonic()
    if out.exists():
        raise UsageError(f"{out} already exists", hint="choose a new --out path; an export never overwrites")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"directory {parent} does not exist", hint="create it first")
    bound = log.get("export")
    sqlite_source.check_file(source)  # missing, empty, not SQLite: one line before anything is read
    source_file = SourceFile(name=source.name, size=source.stat().st_size, sha256=sqlite_source.sha256(source))
    with files.writing(out, what="the export", instead=OTHER_OUT):
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))  # mode 0700
    try:
        conn = snapshot.open_source(source, config)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        schema = read_schema(conn)
        order, _cycles = dependency_order(schema.tables)
        entries = []
        for index, name in enumerate(order, start=1):
            table = schema.table(name)
            file = _file_name(index, name)
            began = time.monotonic()
            if progress is not None:
                (total,) = conn.execute(f"SELECT count(*) FROM {quote_ident(name)}").fetchone()  # noqa: S608
                progress.start(name, int(total))
            written = _write_table(conn, table, work / file, [c.name for c in table.columns], progress)
            if progress is not None:
                progress.finish(name, written.rows, time.monotonic() - began)
            entries.append(_entry(table, file, written))
            bound.info("table exported", table=name, rows=written.rows)
        manifest = Manifest(
            format=FORMAT,
            tool=f"replicator {__version__}",
            source=source_file,
            exported_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            schema=_ddl(schema),
            order=tuple(order),
            tables=tuple(entries),
            sqlite_sequence=sequences.read_sqlite_sequence(conn),
            profiles={t.name: profile_table(conn, t) for t in schema.tables},
            seconds=round(time.monotonic() - started, 3),
        )
        manifest = msgspec.structs.replace(manifest, checksum=manifest.computed_checksum())
        conn.execute("COMMIT")
        with _create(work / MANIFEST) as handle:
            handle.write(msgspec.json.format(msgspec.json.encode(manifest), indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        _publish(work, out, tar=tar)
    except sqlite3.Error as exc:  # a corrupt page found mid-read: one line, nothing left behind
        raise sqlite_source.translate(exc, source) from None
    except OSError as exc:  # a full disk, a quota, a file size limit: one line, nothing left behind
        raise files.write_error(exc, out, what="the export", instead=OTHER_OUT) from exc
    finally:
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
    bound.info("export written", path=str(out), tables=len(entries), rows=sum(e.rows for e in entries))
    return ExportResult(path=str(out), manifest=manifest)


def _publish(work: Path, out: Path, *, tar: bool) -> None:
    """Rename the finished export into place (fsynced first): never a half export under the final name."""
    if tar:
        partial = out.parent / f".{out.name}.partial"
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as archive:
                for path in sorted(work.iterdir()):
                    archive.add(path, arcname=path.name)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    else:
        files.fsync_path(work)
        os.rename(work, out)
    files.fsync_path(out.parent)
