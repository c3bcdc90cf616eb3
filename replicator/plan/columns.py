"""A planned column as :func:`sqlexpr.translate` sees it, a column's profile, a table's parsed ``CREATE TABLE``.

Generated columns, CHECKs and expression indexes go through :func:`sqlexpr.translate`, which knows each
column's kind on both sides (:func:`operand`) and accepts only expressions proved to compute SQLite's
value. Create mode's table plan (generated columns) and its post-load statements (CHECKs, indexes) both
read them from here; existing mode reads a column's profile for its storage format.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from replicator.plan import sqlexpr
from replicator.plan.profile import TableProfile
from replicator.plan.schemaplan import ColumnPlan
from triggers.schema import Affinity, Column, Generated, Table


def operand(column: Column, plan: ColumnPlan, collation: str = "BINARY") -> sqlexpr.Operand:
    """What a planned column's values are on both sides, for :func:`sqlexpr.translate`.

    INT: SQLite INTEGER affinity planned as bigint (the load refuses any value that is not a 64-bit
    integer); TEXT: TEXT affinity planned as text/varchar, written unaltered (no strip_nul or
    replace_bad_utf8). Anything else can only be tested for NULL."""
    t = plan.type
    if t.strip_nul or t.replace_bad_utf8:
        return sqlexpr.Operand(plan.name, sqlexpr.Kind.OTHER, f"column {column.name!r} (its text is altered on load)")
    if t.name == "bigint" and column.affinity is Affinity.INTEGER:
        return sqlexpr.Operand(plan.name, sqlexpr.Kind.INT)
    if t.name in ("text", "varchar") and column.affinity is Affinity.TEXT:
        return sqlexpr.Operand(plan.name, sqlexpr.Kind.TEXT, collation=collation)
    declared = column.declared_type or "no type"
    return sqlexpr.Operand(plan.name, sqlexpr.Kind.OTHER, f"column {column.name!r} ({declared} planned as {t.name})")


def operands_of(
    table: Table, columns: Sequence[ColumnPlan], ddl: sqlexpr.TableDDL | None, *, generated: bool
) -> dict[str, sqlexpr.Operand]:
    """Every planned column as an operand; ``generated=False`` keeps SQLite's generated columns out
    (PostgreSQL computes no generated column from another)."""
    by_name = {c.name: c for c in table.columns}
    collations = ddl.collations if ddl else {}
    out: dict[str, sqlexpr.Operand] = {}
    for plan in columns:
        column = by_name.get(plan.source or "")
        if column is None:
            continue
        if column.generated is not Generated.NO and not generated:
            why = f"generated column {column.name!r} (PostgreSQL computes no generated column from another)"
            out[column.name] = sqlexpr.Operand(plan.name, sqlexpr.Kind.OTHER, why)
        else:
            out[column.name] = operand(column, plan, collations.get(column.name, "BINARY"))
    return out


def column_profile(profile: TableProfile | None, name: str) -> Any:
    if profile is None:
        return None
    try:
        return profile.column(name)
    except KeyError:
        return None


def parse_table(table: Table) -> sqlexpr.TableDDL | None:
    try:
        return sqlexpr.parse_create_table(table.sql)
    except sqlexpr.Untranslatable:
        return None
