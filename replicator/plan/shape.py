"""One table as the row-moving stages see it: its columns on both sides, their types, and its key.

Why one model: the apply (what to read in SQLite and write in PostgreSQL for a journaled key) and verify
(what to read on each side and compare) both resolve a :class:`~replicator.plan.schemaplan.TablePlan` into
the same things: the SQLite and PostgreSQL names of the table and of its loaded columns, the columns'
types, and where the key sits among them. They used to build two structs for it (``apply.TableTarget``,
``verify.Shape``); the key's positions were computed twice, one way in each. verify's own reading options
(key ranges, the independent reading, the quarantined keys) stay on its subclass, ``verify_shape.Shape``.

Here, in ``plan/``, because it is a view of the plan, and both ``apply/`` and ``inspect/`` import ``plan/``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from replicator.plan.schemaplan import ColumnPlan, TablePlan
from replicator.values.targettype import TargetType


class TableShape(msgspec.Struct, frozen=True):
    """One planned table resolved for reading and writing rows: SQLite names, PostgreSQL names, types, key."""

    source: str
    """SQLite table."""
    target: str
    """PostgreSQL table (in ``schema``)."""
    schema: str
    source_columns: tuple[str, ...]
    """SQLite columns read, in plan order (the loaded ones; with ``computed``, also those PostgreSQL generates)."""
    target_columns: tuple[str, ...]
    """The PostgreSQL column each of ``source_columns`` is written to or compared with."""
    types: tuple[TargetType, ...]
    key_source: tuple[str, ...]
    """SQLite key columns, in key order (the capture key for the apply, the plan's key for verify); empty:
    no usable key."""
    key_target: tuple[str, ...]
    key_positions: tuple[int, ...]
    """Where each key column sits among the columns read (so in a row read or converted)."""

    @property
    def key_types(self) -> tuple[TargetType, ...]:
        return tuple(self.types[p] for p in self.key_positions)


def read_columns(table: TablePlan, *, computed: bool = False) -> tuple[ColumnPlan, ...]:
    """The columns a shape reads: the loaded ones, or with ``computed`` every column SQLite has (those
    PostgreSQL generates too, which verify compares with SQLite's own value)."""
    return table.compared_columns if computed else table.load_columns


def unread_key(table: TablePlan, key: Sequence[str], *, computed: bool = False) -> list[str]:
    """The key columns that are not among the columns read (a shape over ``key`` would have no key)."""
    names = {c.source for c in read_columns(table, computed=computed)}
    return [k for k in key if k not in names]


def table_shape(
    table: TablePlan, schema: str, key: Sequence[str] | None = None, *, computed: bool = False
) -> TableShape:
    """The shape of a planned table: ``table_shape(plan.table(name), plan.schema)``.

    ``key``: the SQLite key columns (default: the plan's ``key_source``). A key with a column that is not
    read gives a shape without a key (whole rows then identify themselves): a caller for whom that is an
    error checks :func:`unread_key` first."""
    columns = read_columns(table, computed=computed)
    names = tuple(c.source for c in columns if c.source is not None)  # every column read has one
    wanted = tuple(table.key_source if key is None else key)
    positions = () if unread_key(table, wanted, computed=computed) else tuple(names.index(k) for k in wanted)
    return TableShape(
        source=table.source,
        target=table.name,
        schema=schema,
        source_columns=names,
        target_columns=tuple(c.name for c in columns),
        types=tuple(c.type for c in columns),
        key_source=tuple(names[p] for p in positions),
        key_target=tuple(columns[p].name for p in positions),
        key_positions=positions,
    )
