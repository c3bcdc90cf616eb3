"""The shape of ``replicator analyze``'s report: what scripts read from ``--json`` and the checks consume.

Plain frozen msgspec Structs, so the JSON is the Struct (``report_version`` says which shape) and a
consumer can decode it back with ``msgspec.json.decode(data, type=Report)``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from replicator.plan.named import by_name
from triggers.schema import Affinity, Generated, Index

REPORT_VERSION = 1

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")


class Finding(msgspec.Struct, frozen=True):
    severity: Severity
    code: str
    """Stable identifier (``no_primary_key``, ``nul_in_text``...) for scripts and docs."""
    message: str
    hint: str = ""
    table: str | None = None
    column: str | None = None


class ColumnReport(msgspec.Struct, frozen=True):
    name: str
    declared_type: str
    affinity: Affinity
    notnull: bool
    default: str | None
    pk_position: int
    generated: Generated
    storage: dict[str, int]
    formats: dict[str, int]
    min_integer: int | None = None
    max_integer: int | None = None
    max_text_bytes: int | None = None
    max_blob_bytes: int | None = None


class ForeignKeyReport(msgspec.Struct, frozen=True):
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    """The parent columns; the parent's primary key when the FK names none."""
    on_update: str
    on_delete: str
    parent_exists: bool
    parent_key_unique: bool
    """PostgreSQL requires the parent columns to be a primary key or a unique constraint."""
    orphan_rows: int | None = None
    """Child rows whose key is all non-NULL and matches no parent row; None when it cannot be checked."""


class TableReport(msgspec.Struct, frozen=True):
    name: str
    rows: int
    primary_key: tuple[str, ...]
    rowid_alias: str | None
    without_rowid: bool
    strict: bool
    autoincrement: bool
    sequence: int | None
    """The ``sqlite_sequence`` value to carry over to the PostgreSQL identity, if the table has one."""
    null_key_rows: int
    columns: tuple[ColumnReport, ...]
    foreign_keys: tuple[ForeignKeyReport, ...]
    indexes: tuple[Index, ...]
    triggers: tuple[str, ...]
    """The application's own triggers on this table (ours, named by ``triggers.names``, are not listed)."""


class SourceInfo(msgspec.Struct, frozen=True):
    path: str
    bytes: int
    page_size: int
    page_count: int
    freelist_count: int
    journal_mode: str
    encoding: str
    user_version: int
    schema_version: int
    sqlite_version: str
    filesystem: str | None


class Report(msgspec.Struct, frozen=True):
    source: SourceInfo
    tables: tuple[TableReport, ...]
    load_order: tuple[str, ...]
    """Parents before children; tables in an FK cycle come last, in name order."""
    fk_cycles: tuple[tuple[str, ...], ...]
    views: tuple[str, ...]
    virtual_tables: tuple[str, ...]
    capture_installed: bool
    findings: tuple[Finding, ...]
    seconds: float
    report_version: int = REPORT_VERSION
    # Added within version 1 (a consumer of version 1 may find these absent in older reports):
    self_references: tuple[str, ...] = ()
    """Tables with a foreign key to themselves (not a cycle: they load in one pass, FKs come after)."""
    sequences: dict[str, int] = msgspec.field(default_factory=dict)
    """The whole ``sqlite_sequence`` table (name -> seq), including rows whose table no longer exists."""
    virtual_table_modules: dict[str, str] = msgspec.field(default_factory=dict)
    """The module of each virtual table (``fts5``, ``rtree``...)."""
    shadow_tables: tuple[str, ...] = ()
    """The tables a virtual table keeps its data in (``docs_data``...): not copied, like their owner."""

    def table(self, name: str) -> TableReport:
        return by_name(self.tables, name)

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity == severity)
