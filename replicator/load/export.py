"""The offline path: ``export`` a SQLite file to JSON Lines, ``verify-export`` it, (``import`` reads it).

Why an export at all: some targets cannot be reached from the app's host, and some operators want
an artefact they can checksum, archive and inspect before anything touches PostgreSQL. The export
is therefore exact (every SQLite value round-trips with its storage class) and self-describing.

Layout of ``DIR``::

    manifest.json            what follows, with a SHA-256 per file
    0001-<table>.jsonl       one JSON object per row, keys = the table's columns in order
    ...                      (one file per table, parents before children)

Values (msgspec JSON; a JSON object as a value is always one of the tagged forms below):

========================  ===========================================================
SQLite value              JSON
========================  ===========================================================
NULL                      ``null``
INTEGER                   integer, exact at any size
REAL                      number in Python's shortest round-trip repr (``0.1``, ``1e+16``,
                          ``1.0`` stays a real); ``{"$real": "inf"}`` / ``"-inf"`` for
                          infinities, which JSON cannot spell
TEXT (valid UTF-8)        string; NUL and every other character escaped by JSON as needed
TEXT (not valid UTF-8)    ``{"$bytes_text": base64 of the exact bytes}``
BLOB                      ``{"$blob": base64}``
========================  ===========================================================

``manifest.json``: format version, tool version, the source file's name, size and SHA-256 (the
main file's bytes as read when the export started; the WAL is not part of it), the schema DDL
(tables and indexes, as SQLite holds it), the dependency order, per table its file, row count,
the file's SHA-256, columns, primary key and foreign keys, the value profiles (so ``import`` picks
the same PostgreSQL types as a direct snapshot would) and ``sqlite_sequence``, and the export time.

Safety: all tables are read in one read transaction (one consistent state, the app keeps
writing); files are streamed (bounded memory), created mode 0600 in a temp directory that is
renamed to ``DIR`` only once complete and fsynced, so a directory named ``DIR`` is always a whole
export. ``--tar`` writes one uncompressed tar instead, by the same temp-then-rename rule.

``verify-export`` checks every file is present and matches its SHA-256 and row count, that every
row has exactly the table's columns with values of a legal form (and the storage class STRICT
tables and rowid aliases require), that primary keys are unique and non-null, and that every
foreign key has a parent (each orphan reported: table, key, referenced table). Keys are checked in
a scratch SQLite file on disk, so memory stays bounded whatever the export's size.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import msgspec

from replicator import __version__, files, log
from replicator.config import Config
from replicator.errors import ReplicatorError, UsageError, VerificationFailed
from replicator.plan.profile import TableProfile, profile_table
from replicator.progress import Progress
from triggers import source as sqlite_source
from triggers.schema import Schema, Table, dependency_order, quote_ident, read_schema

FORMAT: Final = 1
MANIFEST: Final = "manifest.json"
FETCH_ROWS: Final = 5_000
WRITE_BUFFER: Final = 1 << 20
_HASH_CHUNK: Final = 1 << 20
MAX_REPORTED: Final = 100
OTHER_OUT: Final = "choose another --out"
"""Orphans and bad rows listed per check before the rest is only counted."""


# --- the manifest -------------------------------------------------------------------------------


class SourceFile(msgspec.Struct, frozen=True):
    name: str
    size: int
    sha256: str


class ForeignKeyInfo(msgspec.Struct, frozen=True):
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    """Empty: the parent's primary key."""


class TableEntry(msgspec.Struct, frozen=True):
    name: str
    file: str
    rows: int
    sha256: str
    columns: tuple[str, ...]
    declared: tuple[str, ...]
    """Declared types, in column order (STRICT tables check storage classes against them)."""
    primary_key: tuple[str, ...]
    rowid_alias: str | None
    strict: bool
    foreign_keys: tuple[ForeignKeyInfo, ...]


class Manifest(msgspec.Struct, frozen=True):
    format: int
    tool: str
    source: SourceFile
    exported_at: str
    schema: tuple[str, ...]
    """CREATE TABLE then CREATE INDEX statements, as SQLite stores them."""
    order: tuple[str, ...]
    tables: tuple[TableEntry, ...]
    sqlite_sequence: dict[str, int]
    profiles: dict[str, TableProfile]
    seconds: float = 0.0
    checksum: str = ""
    """SHA-256 of this manifest's canonical JSON with ``checksum`` empty: an edited manifest is detected."""

    def computed_checksum(self) -> str:
        return hashlib.sha256(msgspec.json.encode(msgspec.structs.replace(self, checksum=""))).hexdigest()

    def table(self, name: str) -> TableEntry:
        for entry in self.tables:
            if entry.name == name:
                return entry
        raise KeyError(name)


class ExportResult(msgspec.Struct, frozen=True):
    path: str
    manifest: Manifest


# --- values ---------------------------------------------------------------------------------------


class _BadText(bytes):
    """TEXT whose bytes are not UTF-8, as the fallback text factory returns it."""


def _fallback_text(data: bytes) -> str | _BadText:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _BadText(data)


_INF: Final = float("inf")


def _tag(value: Any) -> Any:
    """A value that JSON cannot carry as itself, in its tagged form (see the module docstring)."""
    if type(value) is bytes:
        return {"$blob": base64.b64encode(value).decode("ascii")}
    if type(value) is _BadText:
        return {"$bytes_text": base64.b64encode(value).decode("ascii")}
    if type(value) is float:
        if value == _INF:
            return {"$real": "inf"}
        if value == -_INF:
            return {"$real": "-inf"}
        raise ValueError("NaN is not a SQLite value")  # SQLite stores NaN as NULL
    raise TypeError(f"not a SQLite value: {type(value).__name__}")


_PLAIN: Final = frozenset({int, str, type(None)})


def encode_row(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """One row as the JSON object written to the file."""
    return {
        c: v if type(v) in _PLAIN or (type(v) is float and -_INF < v < _INF) else _tag(v)
        for c, v in zip(columns, row, strict=True)
    }


class BadValue(ValueError):
    """A JSON value that no SQLite value encodes to."""


def decode_value(value: Any) -> Any:
    """A JSON value back to the SQLite value (text that was not UTF-8 comes back as surrogates,
    exactly as the snapshot's fallback reader gives it, so the converter treats both alike)."""
    if type(value) is not dict:
        if value is True or value is False or isinstance(value, list):
            raise BadValue(f"{type(value).__name__} is not a SQLite value")
        return value
    if len(value) != 1:
        raise BadValue(f"object with keys {sorted(value)} is not a tagged value")
    ((tag, payload),) = value.items()
    if not isinstance(payload, str):
        raise BadValue(f"{tag} payload is not a string")
    if tag == "$real" and payload in ("inf", "-inf"):
        return float(payload)
    try:
        raw = base64.b64decode(payload, validate=True)
    except ValueError:
        raise BadValue(f"{tag} payload is not base64") from None
    if tag == "$blob":
        return raw
    if tag == "$bytes_text":
        return raw.decode("utf-8", "surrogateescape")
    raise BadValue(f"unknown tag {tag!r}")


# --- writing ----------------------------------------------------------------------------------------


def _file_name(index: int, table: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", table)[:80]
    return f"{index:04d}-{safe}.jsonl"


def _create(path: Path) -> IO[bytes]:
    """A new file, owner-only from its first byte (never created wider, then narrowed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
        conn.text_factory = _fallback_text
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


def export(
    source: Path, out: Path, config: Config, *, tar: bool = False, progress: Progress | None = None
) -> ExportResult:
    """Write the export of ``source`` to ``out`` (a directory, or a .tar file with ``tar``); ``progress``
    is told each table's rows as they are written."""
    from replicator.load import snapshot
    from replicator.plan.sequences import read_sqlite_sequence

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
            sqlite_sequence=read_sqlite_sequence(conn),
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
        _fsync_dir(work)
        os.rename(work, out)
    _fsync_dir(out.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ----------------------------------------------------------------------------------------


class ExportError(VerificationFailed):
    """The export is damaged or inconsistent (exit 3); ``problems`` lists every finding."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5]) + (
            f"; and {len(self.problems) - 5} more" if len(self.problems) > 5 else ""
        )
        super().__init__(
            f"export does not verify: {shown}",
            hint="do not import it; export again from the SQLite file (or restore the damaged file)",
        )


class Reader:
    """Files of an export, from a directory or a tar, as binary streams."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        if path.is_file():
            try:
                self._tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by __exit__
            except tarfile.TarError as exc:
                raise UsageError(f"{path} is neither an export directory nor a tar: {exc}", hint="") from None
        elif not path.is_dir():
            raise UsageError(f"no export at {path}", hint="pass the directory (or .tar) that export wrote")

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tar is not None:
            self._tar.close()

    def names(self) -> set[str]:
        if self._tar is not None:
            return {m.name for m in self._tar.getmembers() if m.isfile()}
        return {p.name for p in self.path.iterdir() if p.is_file()}

    def open(self, name: str) -> IO[bytes]:
        if self._tar is not None:
            handle = self._tar.extractfile(name)
            if handle is None:
                raise FileNotFoundError(name)
            return handle
        return (self.path / name).open("rb")

    def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        with self.open(name) as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def lines(self, name: str) -> Iterator[bytes]:
        with self.open(name) as handle:
            yield from handle


def read_manifest(reader: Reader) -> Manifest:
    try:
        with reader.open(MANIFEST) as handle:
            manifest = msgspec.json.decode(handle.read(), type=Manifest)
    except (FileNotFoundError, KeyError):
        raise ExportError([f"{MANIFEST} is missing"]) from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ExportError([f"{MANIFEST} is not a valid manifest: {exc}"]) from None
    if manifest.checksum != manifest.computed_checksum():
        raise ExportError([f"{MANIFEST} was edited: its checksum does not match its content"])
    if manifest.format != FORMAT:
        raise ExportError([f"{MANIFEST} has format {manifest.format}; this replicator reads {FORMAT}"])
    names = [t.name for t in manifest.tables]
    if sorted(names) != sorted(manifest.order) or len(set(names)) != len(names):
        raise ExportError([f"{MANIFEST}: the dependency order does not list exactly the tables"])
    return manifest


def check_files(reader: Reader, manifest: Manifest) -> list[str]:
    """Every file present, none unexpected, each matching its SHA-256."""
    problems: list[str] = []
    present = reader.names()
    expected = {t.file for t in manifest.tables}
    for entry in manifest.tables:
        if entry.file not in present:
            problems.append(f"file {entry.file} of table {entry.name} is missing")
        elif reader.sha256(entry.file) != entry.sha256:
            problems.append(f"file {entry.file} of table {entry.name} does not match its SHA-256 (changed or damaged)")
    for extra in sorted(present - expected - {MANIFEST}):
        problems.append(f"unexpected file {extra} (not in the manifest)")
    return problems


def iter_rows(
    reader: Reader, entry: TableEntry, columns: Sequence[str] | None = None
) -> Iterator[tuple[int, list[Any]]]:
    """(line number, SQLite values in ``columns`` order) for every row; raises BadRow on a bad line."""
    wanted = list(columns if columns is not None else entry.columns)
    expected = set(entry.columns)
    decoder = msgspec.json.Decoder(dict[str, Any])
    for number, line in enumerate(reader.lines(entry.file), start=1):
        try:
            obj = decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise BadRow(entry.name, number, f"not a JSON object: {exc}") from None
        if obj.keys() != expected:
            missing = sorted(expected - obj.keys())
            extra = sorted(obj.keys() - expected)
            raise BadRow(entry.name, number, f"columns differ (missing {missing}, unexpected {extra})")
        try:
            yield number, [decode_value(obj[c]) for c in wanted]
        except BadValue as exc:
            raise BadRow(entry.name, number, str(exc)) from None


class BadRow(ReplicatorError):
    """A line of a table file that is not a row of that table."""

    exit_code = 3

    def __init__(self, table: str, line: int, reason: str) -> None:
        self.table, self.line, self.reason = table, line, reason
        super().__init__(f"{table} line {line}: {reason}", hint="the export is damaged; export again")


# --- verify-export ------------------------------------------------------------------------------------


class VerifyExportReport(msgspec.Struct, frozen=True):
    path: str
    tables: int
    rows: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


_STRICT_TYPES: Final = {"INT": int, "INTEGER": int, "REAL": float, "TEXT": str, "BLOB": bytes}


def _storage_check(entry: TableEntry) -> Callable[[list[Any]], str | None]:
    """The storage classes a row must have: a rowid alias is an integer, STRICT columns their type."""
    checks: list[tuple[int, type, str]] = []
    for i, (name, declared) in enumerate(zip(entry.columns, entry.declared, strict=True)):
        if name == entry.rowid_alias:
            checks.append((i, int, name))
        elif entry.strict and declared.upper() in _STRICT_TYPES:
            checks.append((i, _STRICT_TYPES[declared.upper()], name))

    def check(values: list[Any]) -> str | None:
        for i, kind, name in checks:
            value = values[i]
            if value is None:
                if name == entry.rowid_alias:
                    return f"rowid alias {name} is NULL"
                continue
            if kind is float and type(value) is int:
                continue  # STRICT REAL stores an integer as a real; JSON prints 2.0 as 2.0, but be lenient
            if kind is str and isinstance(value, str):
                continue
            if type(value) is not kind:
                return f"column {name} holds {type(value).__name__}, its type allows {kind.__name__} only"
        return None

    return check


def _key_columns(manifest: Manifest, entry: TableEntry) -> list[str]:
    """Columns of ``entry`` the key checks need: its PK, its FK columns, columns other tables reference."""
    wanted = list(entry.primary_key)
    for fk in entry.foreign_keys:
        wanted += fk.columns
    for other in manifest.tables:
        for fk in other.foreign_keys:
            if fk.ref_table.lower() == entry.name.lower():
                wanted += fk.ref_columns or entry.primary_key
    by_lower = {c.lower(): c for c in entry.columns}
    out: list[str] = []
    for name in wanted:
        actual = by_lower.get(name.lower())
        if actual is not None and actual not in out:
            out.append(actual)
    return out


def verify_export(path: Path) -> VerifyExportReport:
    """Check an export completely (see the module docstring); never raises for a finding, reports it."""
    with Reader(path) as reader:
        try:
            manifest = read_manifest(reader)
        except ExportError as exc:
            return VerifyExportReport(str(path), 0, 0, tuple(exc.problems))
        problems = check_files(reader, manifest)
        damaged = {p.split()[1] for p in problems if p.startswith("file ")}
        with tempfile.TemporaryDirectory(prefix="replicator-verify-") as scratch:
            keys = sqlite3.connect(Path(scratch) / "keys.db", isolation_level=None)
            keys.execute("PRAGMA journal_mode = OFF")
            keys.execute("PRAGMA synchronous = OFF")
            try:
                rows = 0
                for entry in manifest.tables:
                    if entry.file in damaged:
                        continue
                    rows += _scan_table(reader, manifest, entry, keys, problems)
                problems += _orphans(manifest, keys, damaged)
            finally:
                keys.close()
    return VerifyExportReport(str(path), len(manifest.tables), rows, tuple(problems))


#: The scratch table's column type per affinity: constants, never the manifest's own text (untrusted).
_AFFINITY_SQL: Final = {"INTEGER": " INTEGER", "TEXT": " TEXT", "BLOB": "", "REAL": " REAL", "NUMERIC": " NUMERIC"}


def affinity(declared: str) -> str:
    """SQLite's column affinity of a declared type (the five rules of section 3.1 of its datatype doc),
    so key comparisons in the scratch database convert values exactly as the source's columns did."""
    upper = declared.upper()
    if "INT" in upper:
        return "INTEGER"
    if "CHAR" in upper or "CLOB" in upper or "TEXT" in upper:
        return "TEXT"
    if "BLOB" in upper or not upper.strip():
        return "BLOB"
    if "REAL" in upper or "FLOA" in upper or "DOUB" in upper:
        return "REAL"
    return "NUMERIC"


def _scratch_name(table: str) -> str:
    return quote_ident("k_" + table.lower())


def _scan_table(
    reader: Reader, manifest: Manifest, entry: TableEntry, keys: sqlite3.Connection, problems: list[str]
) -> int:
    """One pass over a table file: row shapes, storage classes, count, and its keys into the scratch db."""
    key_cols = _key_columns(manifest, entry)
    declared = dict(zip(entry.columns, entry.declared, strict=True))
    name = _scratch_name(entry.name)
    defs = ", ".join(quote_ident(c) + _AFFINITY_SQL[affinity(declared[c])] for c in key_cols) or quote_ident("dummy")
    keys.execute(f"CREATE TABLE {name} (line INTEGER, {defs})")
    positions = [entry.columns.index(c) for c in key_cols]
    pk_positions = [entry.columns.index(c) for c in entry.primary_key if c in entry.columns]
    check = _storage_check(entry)
    insert = f"INSERT INTO {name} VALUES ({', '.join('?' * (len(key_cols) + 1))})" if key_cols else None  # noqa: S608
    count = 0
    bad = 0
    batch: list[list[Any]] = []
    keys.execute("BEGIN")
    try:
        for number, values in iter_rows(reader, entry):
            count += 1
            why = check(values)
            if why is None and any(values[p] is None for p in pk_positions):
                why = "primary key holds NULL"
            if why is not None:
                bad += 1
                if bad <= MAX_REPORTED:
                    problems.append(f"{entry.name} line {number}: {why}")
            if insert is not None:
                batch.append([number] + [_key_value(values[p]) for p in positions])
                if len(batch) >= FETCH_ROWS:
                    keys.executemany(insert, batch)
                    batch.clear()
    except BadRow as exc:
        problems.append(exc.message)
        keys.execute("ROLLBACK")
        return count
    if insert is not None and batch:
        keys.executemany(insert, batch)
    keys.execute("COMMIT")
    if bad > MAX_REPORTED:
        problems.append(f"{entry.name}: {bad - MAX_REPORTED} more bad row(s) not listed")
    if count != entry.rows:
        problems.append(f"{entry.name}: the manifest says {entry.rows} rows, the file holds {count}")
    if entry.primary_key:
        pk = ", ".join(quote_ident(c) for c in entry.primary_key)
        dupes = keys.execute(
            f"SELECT {pk}, count(*) FROM {name} GROUP BY {pk} HAVING count(*) > 1 LIMIT {MAX_REPORTED}"  # noqa: S608
        ).fetchall()
        for dupe in dupes:
            problems.append(f"{entry.name}: primary key {_shown(dupe[:-1])} appears {dupe[-1]} times")
    return count


def _key_value(value: Any) -> Any:
    """Text that was not UTF-8 (surrogates) goes into the scratch db as its exact bytes."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape")
    return value


def _shown(values: Sequence[Any]) -> str:
    return "(" + ", ".join(repr(v) for v in values) + ")"


def _orphans(manifest: Manifest, keys: sqlite3.Connection, damaged: set[str]) -> list[str]:
    """Child rows whose foreign key (all columns non-NULL) has no parent row: one finding per orphan."""
    problems: list[str] = []
    by_lower = {t.name.lower(): t for t in manifest.tables}
    for child in manifest.tables:
        if child.file in damaged:
            continue
        for fk in child.foreign_keys:
            parent = by_lower.get(fk.ref_table.lower())
            if parent is None:
                problems.append(f"{child.name}: foreign key references table {fk.ref_table}, which is not exported")
                continue
            if parent.file in damaged:
                continue
            ref = fk.ref_columns or parent.primary_key
            if len(ref) != len(fk.columns):
                problems.append(f"{child.name}: foreign key {fk.columns} → {parent.name} has no matching key columns")
                continue
            cols = [_actual(child, c) for c in fk.columns]
            pcols = [_actual(parent, c) for c in ref]
            key = [_actual(child, c) for c in child.primary_key] or ["line"]
            match = " AND ".join(f"p.{quote_ident(p)} = c.{quote_ident(c)}" for c, p in zip(cols, pcols, strict=True))
            notnull = " AND ".join(f"c.{quote_ident(c)} IS NOT NULL" for c in cols)
            selected = ", ".join("c." + quote_ident(k) for k in [*key, *cols])
            query = (
                f"SELECT {selected} "  # noqa: S608 - quoted identifiers only
                f"FROM {_scratch_name(child.name)} c WHERE {notnull} AND NOT EXISTS "
                f"(SELECT 1 FROM {_scratch_name(parent.name)} p WHERE {match}) ORDER BY 1"
            )
            found = keys.execute(query).fetchall()
            for row in found[:MAX_REPORTED]:
                shown_key = ", ".join(f"{k}={v!r}" for k, v in zip(key, row, strict=False))
                value = _shown(row[len(key) :])
                problems.append(
                    f"orphan in {child.name} ({shown_key}): {', '.join(cols)} = {value} has no row in {parent.name}"
                )
            if len(found) > MAX_REPORTED:
                problems.append(f"{child.name}: {len(found) - MAX_REPORTED} more orphan(s) of {parent.name}")
    return problems


def _actual(entry: TableEntry, name: str) -> str:
    for column in entry.columns:
        if column.lower() == name.lower():
            return column
    return name
