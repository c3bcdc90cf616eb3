"""Existing mode: the SQLite schema mapped onto the tables the app's own migrations created.

Each SQLite table and column is matched by name against the target's catalog (:mod:`pgreflect`); the
app's migrations decide every type, config may only say how SQLite stores the values. Every problem
(a column missing on either side, a type that cannot be written) is named with its fix, in one refusal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import msgspec

from replicator.config import ColumnOverride, Config, column_fix
from replicator.errors import UsageError
from replicator.plan import typemap
from replicator.plan.columns import column_profile
from replicator.plan.pgnames import truncated
from replicator.plan.pgreflect import PgColumn, PgTable, target_type
from replicator.plan.profile import TableProfile
from replicator.plan.schemaplan import ColumnPlan, SchemaPlan, TablePlan
from replicator.values.decimals import RAILS, REAL15, SQLALCHEMY
from replicator.values.targettype import TargetType, UnsupportedType, copy_types, parse_type
from triggers.schema import Column, Generated, Schema, Table, dependency_order

#: Tables in which an ORM records the migrations it applied. In existing mode the target's own
#: migrations (``prisma migrate deploy``, ``manage.py migrate``...) wrote them: SQLite's rows describe
#: another history and would collide, so they are not loaded unless config names the table. A generic
#: name such as ``migrations`` is left out on purpose: it may be an application table.
MIGRATION_TABLES = frozenset(
    {
        "_prisma_migrations",
        "django_migrations",
        "schema_migrations",
        "ar_internal_metadata",
        "alembic_version",
        "knex_migrations",
        "knex_migrations_lock",
        "sequelizemeta",
        "__efmigrationshistory",
        "flyway_schema_history",
        "goose_db_version",
        "typeorm_migrations",
    }
)


#: The bookkeeping table that marks a schema made by an ORM's migrations, in the order they are tried.
ORM_MARKERS: Final = (
    ("django_migrations", "django"),
    ("ar_internal_metadata", "rails"),
    ("alembic_version", "sqlalchemy"),
)
#: How each ORM reads a decimal column's REALs from SQLite (``TargetType.format``, formats.app_decimal).
ORM_DECIMAL_READERS: Final = {"django": REAL15, "sqlalchemy": SQLALCHEMY, "rails": RAILS}


def decimal_reader(pg_tables: Sequence[str], orm: str) -> str | None:
    """The numeric reader of an app-created schema: config's ``[snapshot] orm``, or with ``auto`` the ORM
    whose migration table the target holds (Alembic is SQLAlchemy's). None: the shortest round-trip decimal."""
    if orm == "auto":
        names = {name.lower() for name in pg_tables}
        orm = next((name for marker, name in ORM_MARKERS if marker in names), "none")
    return ORM_DECIMAL_READERS.get(orm)


def _match(name: str, candidates: Sequence[str]) -> tuple[str | None, bool]:
    """Exact name first (as PostgreSQL truncates it to 63 bytes), then a unique case-insensitive match (reported)."""
    if name in candidates:
        return name, False
    name = truncated(name)
    if name in candidates:
        return name, False
    folded = [c for c in candidates if c.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0], True
    return None, False


def _same_wire(a: TargetType, b: TargetType) -> bool:
    """Values of type ``a`` can be COPYed (binary) into a column of type ``b``."""
    return all(copy_types([a], wire=w) == copy_types([b], wire=w) for w in (False, True)) and (
        a.name != "enum" or a.enum_labels == b.enum_labels
    )


def _column_type(
    table: Table,
    column: Column,
    pg_col: PgColumn,
    override: ColumnOverride | None,
    *,
    reader: str | None,
) -> tuple[TargetType | None, str | None]:
    """The type to convert one column's values to, or (None, the problem and its fix).

    The app's migrations decide the column's type; config may say how SQLite stores the values
    (``format``), alter text (``strip_nul``...), or leave the column out (``skip``). A ``type``
    override is honoured when its values have the column's binary form (``text`` for a
    ``varchar`` column, ``numeric(20,6)`` for ``numeric``): anything else would write another
    type's bytes into the column.
    """
    where = f"{table.name}.{column.name}"
    skip = column_fix(table.name, column.name, "skip = true")
    try:
        native = target_type(pg_col)
    except UnsupportedType:
        return None, (
            f"column {where}: target type {pg_col.type_text} cannot be loaded; {skip} to leave it out "
            "(its values are not moved: cutover then needs --accept-skipped-columns), or give it a "
            "supported type in the app's migrations (docs/types.md)"
        )
    if override is None or not override.type:
        chosen = native
    else:
        try:
            chosen = parse_type(override.type)
        except UnsupportedType:
            return None, f"column {where}: override type = {override.type!r} is not a type replicator writes"
        if not _same_wire(chosen, native):
            return None, (
                f"column {where}: override type = {override.type!r} cannot be written into the target's "
                f'{pg_col.type_text} column; remove type from [types."{table.name}"."{column.name}"] '
                "(in existing mode the app's migrations decide the type; format says how SQLite stores it)"
            )
        chosen = msgspec.structs.replace(chosen, enum_name=native.enum_name, enum_labels=native.enum_labels)
    if reader and chosen.name == "numeric" and not (override and override.format):
        chosen = msgspec.structs.replace(chosen, format=reader)
    return chosen, None


class SchemaMismatch(UsageError):
    """The app's PostgreSQL schema does not match the SQLite schema: every problem in one refusal. Names the
    SQLite tables with no PostgreSQL table at all, so a caller that treats those apart (the online load of a
    new table) tells them by this attribute, not by the message."""

    def __init__(self, message: str, *, hint: str, missing_tables: Sequence[str]) -> None:
        super().__init__(message, hint=hint)
        self.missing_tables = tuple(missing_tables)


def plan_existing(
    schema: Schema,
    pg_tables: Mapping[str, PgTable],
    profiles: Mapping[str, TableProfile],
    config: Config,
) -> SchemaPlan:
    """Map each SQLite table and column to the app-created PostgreSQL ones, by name.

    A case-insensitive match is accepted and reported (Prisma keeps ``"createdAt"``; Django lower-cases).
    A column missing on either side is an error naming every one of them, unless config skips it:
    loading a table without a column the app expects is a silent data loss. Every problem is named
    in the one refusal, each with its fix (:func:`map_existing` returns them instead).
    """
    plan, problems, missing = _map_existing(schema, pg_tables, profiles, config)
    if problems:
        raise SchemaMismatch(
            f"the target schema does not match the SQLite schema ({len(problems)} problem(s)): " + "; ".join(problems),
            hint="each problem names its fix; fix them all, then rerun (nothing was written)",
            missing_tables=missing,
        )
    return plan


def map_existing(
    schema: Schema,
    pg_tables: Mapping[str, PgTable],
    profiles: Mapping[str, TableProfile],
    config: Config,
) -> tuple[SchemaPlan, list[str]]:
    """:func:`plan_existing`'s mapping and its problems: the plan holds every column that maps."""
    plan, problems, _missing = _map_existing(schema, pg_tables, profiles, config)
    return plan, problems


def _map_existing(
    schema: Schema,
    pg_tables: Mapping[str, PgTable],
    profiles: Mapping[str, TableProfile],
    config: Config,
) -> tuple[SchemaPlan, list[str], list[str]]:
    """:func:`map_existing`, plus the SQLite tables that have no PostgreSQL table at all."""
    warnings: list[str] = []
    problems: list[str] = []
    missing: list[str] = []
    tables: list[TablePlan] = []
    order, _cycles = dependency_order(schema.tables)
    reader = decimal_reader(list(pg_tables), config.snapshot.orm)
    kept: list[str] = []
    for table in schema.tables:
        overrides = config.types.get(table.name, {})
        if overrides.get("*", ColumnOverride()).skip:
            continue
        if table.name.lower() in MIGRATION_TABLES and "*" not in overrides:
            warnings.append(
                f"table {table.name!r} is the ORM's migration bookkeeping: not loaded (the target's own "
                f'migrations filled it); set [types."{table.name}"."*"] skip = false to load it anyway'
            )
            continue
        pg_name, folded = _match(table.name, list(pg_tables))
        if pg_name is None:
            twins = [repr(c) for c in pg_tables if c.lower() == table.name.lower()]
            if len(twins) <= 1:
                missing.append(table.name)
            problems.append(
                f"table {table.name!r} matches {' and '.join(twins)} ignoring case (ambiguous)"
                if len(twins) > 1
                else f"table {table.name!r} has no table in target schema {config.target.schema!r}"
            )
            continue
        if folded:
            warnings.append(f"table {table.name!r} matched {pg_name!r} ignoring case")
        pg_table = pg_tables[pg_name]
        plan = _map_table(table, pg_table, profiles.get(table.name), overrides, problems, warnings, reader=reader)
        tables.append(plan)
        kept.append(table.name)
    mapped = SchemaPlan(
        mode="existing",
        schema=config.target.schema,
        tables=tuple(tables),
        order=tuple(n for n in order if n in kept),
        warnings=tuple(warnings),
    )
    return mapped, problems, missing


def _map_table(
    table: Table,
    pg_table: PgTable,
    profile: TableProfile | None,
    overrides: Mapping[str, ColumnOverride],
    problems: list[str],
    warnings: list[str],
    *,
    reader: str | None = None,
) -> TablePlan:
    pg_by_name = {c.name: c for c in pg_table.columns}
    used: set[str] = set()
    columns: list[ColumnPlan] = []
    for column in table.columns:
        override = overrides.get(column.name)
        if override is not None and override.skip:
            continue
        name, folded = _match(column.name, list(pg_by_name))
        if name is None:
            twins = [repr(c) for c in pg_by_name if c.lower() == column.name.lower()]
            if len(twins) > 1:
                problems.append(f"column {table.name}.{column.name} matches {' and '.join(twins)} ignoring case")
            elif column.generated is Generated.NO:
                problems.append(
                    f"column {table.name}.{column.name} is missing in {pg_table.name!r}; run the app's "
                    f"migrations first, or {column_fix(table.name, column.name, 'skip = true')} to leave it out"
                )
            continue
        if folded:
            warnings.append(f"column {table.name}.{column.name} matched {name!r} ignoring case")
        used.add(name)
        pg_col = pg_by_name[name]
        native, problem = _column_type(table, column, pg_col, override, reader=reader)
        if native is None:
            problems.append(problem or f"column {table.name}.{column.name}")
            continue
        chosen = msgspec.structs.replace(
            native,
            format=(override.format if override and override.format else None)
            or typemap.detect_format(native, column_profile(profile, column.name)),
            strip_nul=bool(override and override.strip_nul),
            replace_bad_utf8=bool(override and override.replace_bad_utf8),
        )
        columns.append(
            ColumnPlan(
                source=column.name,
                name=name,
                type=chosen,
                notnull=pg_col.notnull,
                identity=pg_col.identity,
                generated="(target)" if pg_col.generated else None,
                reason=f"target column {pg_col.type_text}",
            )
        )
    for pg_col in pg_table.columns:
        if pg_col.name in used or pg_col.generated:
            continue
        override = overrides.get(pg_col.name)
        if override is not None and override.skip:
            continue
        if pg_col.has_default or pg_col.identity or not pg_col.notnull:
            fill = "the app's default" if pg_col.has_default or pg_col.identity else "NULL"
            fix = column_fix(table.name, pg_col.name, "skip = true") + f" to load the table without it ({fill})"
        else:
            fix = "it is NOT NULL without a default: give it one in the app's migrations"
        problems.append(
            f"target column {pg_table.name}.{pg_col.name} has no column in SQLite table {table.name!r}; {fix}"
        )
    return TablePlan(
        source=table.name,
        name=pg_table.name,
        columns=tuple(columns),
        key_source=table.primary_key,
        autoincrement=table.autoincrement,
    )
