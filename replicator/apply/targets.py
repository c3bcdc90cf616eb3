"""Which captured tables the apply can write, each with the shape it writes by, and why the others cannot be.

A table the apply cannot address row by row (captured by rowid, or a key column the plan does not load) is
reported by name, never applied half-way.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from replicator.plan.schemaplan import SchemaPlan, TablePlan
from replicator.plan.shape import TableShape, table_shape, unread_key
from triggers.meta import Meta


def resolve_targets(
    plan: SchemaPlan, meta: Meta, skipped: Collection[str] = frozenset()
) -> tuple[dict[str, TableShape], dict[str, str]]:
    """Captured tables the apply can write, and the ones it cannot, each with the reason.

    A table captured by rowid has no column PostgreSQL could address its rows by: it is reported,
    never applied half-way. Snapshot-only tables are not journaled, and ``skipped`` ones (config skips
    them, or existing mode leaves an ORM's migration table out: :mod:`replicator.plan.skips`) are never
    applied: both are absent from both.
    """
    targets: dict[str, TableShape] = {}
    problems: dict[str, str] = {}
    for name, cap in meta.tables.items():
        if cap.mode == "snapshot-only" or name in skipped:
            continue
        try:
            table = plan.table(name)
        except KeyError:
            problems[name] = (
                "is captured but not in the target plan (created or captured after the snapshot and not picked up "
                "yet: `replicator run` picks it up online)"
            )
            continue
        if cap.mode == "rowid" or cap.key_columns is None:
            problems[name] = (
                "is captured by rowid, which PostgreSQL has no column for; set capture.tables."
                f"{name} = 'snapshot-only' (copied again at cutover) or give it a primary key"
            )
            continue
        targets[name] = _target(plan, table, cap.key_columns, problems)
    return {n: t for n, t in targets.items() if n not in problems}, problems


def _target(plan: SchemaPlan, table: TablePlan, key_columns: Sequence[str], problems: dict[str, str]) -> TableShape:
    """The table's shape keyed by its capture key (journal key order); a key column not loaded is a problem."""
    missing = unread_key(table, key_columns)
    if missing:
        problems[table.source] = f"key column(s) {', '.join(missing)} are not loaded into {table.name}"
    return table_shape(table, plan.schema, key_columns)
