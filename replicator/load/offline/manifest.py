"""What an export holds: the layout of its directory and the manifest that describes it.

Layout of ``DIR``::

    manifest.json            what follows, with a SHA-256 per file
    0001-<table>.jsonl       one JSON object per row, keys = the table's columns in order
    ...                      (one file per table, parents before children)

``manifest.json``: format version, tool version, the source file's name, size and SHA-256 (the
main file's bytes as read when the export started; the WAL is not part of it), the schema DDL
(tables and indexes, as SQLite holds it), the dependency order, per table its file, row count,
the file's SHA-256, columns, primary key and foreign keys, the value profiles (so ``import`` picks
the same PostgreSQL types as a direct snapshot would) and ``sqlite_sequence``, and the export time.
The manifest carries its own checksum, so an edited manifest is detected.
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from replicator.plan.named import by_name
from replicator.plan.profile import TableProfile

FORMAT: Final = 1
MANIFEST: Final = "manifest.json"
FETCH_ROWS: Final = 5_000
"""Rows per batch on every side of the format: fetched from SQLite by export, handled per batch by
verify-export and import."""


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
        return by_name(self.tables, name)
