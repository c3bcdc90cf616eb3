"""``replicator verify-export``, and the checks every ``import`` runs first (manifest, files, SHA-256s).

``verify-export`` checks every file is present and matches its SHA-256 and row count, that every
row has exactly the table's columns with values of a legal form (and the storage class STRICT
tables and rowid aliases require), that primary keys are unique and non-null, and that every
foreign key has a parent (each orphan reported: table, key, referenced table). Keys are checked in
a scratch SQLite file on disk, so memory stays bounded whatever the export's size.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from replicator.errors import VerificationFailed
from replicator.load.offline.manifest import FETCH_ROWS, FORMAT, MANIFEST, Manifest, TableEntry
from replicator.load.offline.reader import BadRow, Reader, iter_rows
from triggers.schema import quote_ident

MAX_REPORTED: Final = 100
"""Orphans and bad rows listed per check before the rest is only counted."""


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


def read_manifest(reader: Reader) -> Manifest:
    """The export's manifest, refused (``ExportError``) when missing, malformed, edited, of another format, or
    with a dependency order that does not list exactly its tables."""
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
