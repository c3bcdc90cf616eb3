"""The schema plan: for each SQLite table, the PostgreSQL table it loads into and how.

Both modes produce the same :class:`SchemaPlan` (:mod:`replicator.plan.createmode` decides the tables,
:mod:`replicator.plan.existingmode` maps onto the ones the app's migrations created): per column, the
source name, target name and :class:`~replicator.values.convert.TargetType`. The loader only reads the
plan, so it does not care who created the tables. The plan is saved in the target: these structs are
also its stored form.
"""

from __future__ import annotations

import msgspec

from replicator.plan.named import by_name
from replicator.values.targettype import TargetType


class ColumnPlan(msgspec.Struct, frozen=True):
    source: str | None
    """SQLite column name; None for a target column the source does not have (existing mode, skipped)."""
    name: str
    """PostgreSQL column name."""
    type: TargetType
    notnull: bool = False
    identity: bool = False
    default: str | None = None
    """Rendered PostgreSQL default expression (create mode)."""
    generated: str | None = None
    """Rendered ``GENERATED ALWAYS AS`` expression (``(target)`` in existing mode: the app's own): such a
    column is never written on load or apply, and verify compares it with SQLite's value."""
    reason: str = ""

    @property
    def loaded(self) -> bool:
        return self.source is not None and self.generated is None


class Statement(msgspec.Struct, frozen=True):
    kind: str
    """``schema``, ``table``, ``unique``, ``index``, ``check``, ``fk``."""
    table: str
    name: str
    sql: str


class NotCreated(msgspec.Struct, frozen=True):
    """A schema object of SQLite's the migration did not create in PostgreSQL: after the cutover the app runs
    without it there (a UNIQUE that no longer refuses duplicates, a CHECK that no longer checks), so the
    cutover asks for ``--accept-missing-constraints`` and the certificate lists each one."""

    kind: str
    """``unique index``, ``index``, ``check`` or ``foreign key``."""
    table: str
    """The SQLite table."""
    name: str
    """The PostgreSQL name the object was to have."""
    reason: str
    """PostgreSQL's refusal (for a UNIQUE collision, the two rows) or why it was never attempted."""


class TablePlan(msgspec.Struct, frozen=True):
    source: str
    name: str
    columns: tuple[ColumnPlan, ...]
    primary_key: tuple[str, ...] = ()
    """PostgreSQL names of the primary-key columns (create mode)."""
    key_source: tuple[str, ...] = ()
    """SQLite columns that identify a row in messages and the quarantine (PK, else rowid)."""
    autoincrement: bool = False
    post_load: tuple[Statement, ...] = ()
    warnings: tuple[str, ...] = ()
    dropped: tuple[NotCreated, ...] = ()
    """UNIQUE/indexes/CHECKs/FKs of SQLite's the plan has no statement for (untranslatable, or naming a table
    or column not migrated): each is also among ``warnings``. A plan saved before this field has none."""
    guessed: bool = False
    """Types chosen from a sample (``snapshot.guess_profile``): its load must verify every row. Kept
    in the saved plan so that a resumed snapshot verifies the tables the interrupted one left."""

    @property
    def load_columns(self) -> tuple[ColumnPlan, ...]:
        return tuple(c for c in self.columns if c.loaded)

    @property
    def compared_columns(self) -> tuple[ColumnPlan, ...]:
        """Columns with a SQLite column to compare against: the loaded ones and those PostgreSQL computes."""
        return tuple(c for c in self.columns if c.source is not None)


class ForeignKey(msgspec.Struct, frozen=True):
    """A foreign key between two planned tables, in SQLite names: PostgreSQL's own (existing mode) or
    the one the load creates (create mode). The quarantine follows it (:mod:`replicator.apply.dependents`)."""

    name: str
    child: str
    columns: tuple[str, ...]
    parent: str
    ref_columns: tuple[str, ...]


class SchemaPlan(msgspec.Struct, frozen=True):
    mode: str
    schema: str
    tables: tuple[TablePlan, ...]
    order: tuple[str, ...]
    """Source table names, parents first."""
    warnings: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    """Saved with the plan: the apply quarantines the children of quarantined rows by them too."""

    def table(self, source: str) -> TablePlan:
        return by_name(self.tables, source, attr="source")
