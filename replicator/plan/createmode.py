"""Create mode: every SQLite table's PostgreSQL definition, decided by replicator.

Each column's type comes from :func:`typemap.choose` (its profile, the config's override, whether it is
a key), its default from :func:`defaults.translate_default`; the post-load statements (UNIQUE, indexes,
CHECKs, FKs) from :func:`constraints.with_post_load`. A SQLite generated column becomes a PostgreSQL one
only when :func:`sqlexpr.translate` proves the expression identical; otherwise it stays a plain column
(loaded and applied from SQLite's computed value). Views, virtual tables and the app's triggers are not
migrated: the plan warns about each.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from replicator.config import ColumnOverride, Config
from replicator.plan import sqlexpr, typemap
from replicator.plan.columns import column_profile, operand, operands_of, parse_table
from replicator.plan.constraints import with_post_load
from replicator.plan.defaults import translate_default
from replicator.plan.pgnames import check_identifiers, target_name
from replicator.plan.profile import TableProfile
from replicator.plan.schemaplan import ColumnPlan, SchemaPlan, TablePlan
from triggers.names import is_tool_trigger
from triggers.schema import Column, Generated, Schema, Table, dependency_order


def _key_columns(table: Table, referenced: Mapping[str, set[str]]) -> set[str]:
    """Lower-cased names of the columns in a PK, an FK, or pointed at by another table's FK."""
    keys = {c.lower() for c in table.primary_key} | referenced.get(table.name.lower(), set())
    for fk in table.foreign_keys:
        keys.update(c.lower() for c in fk.columns)
    return keys


def _referenced(schema: Schema) -> dict[str, set[str]]:
    """Parent columns that foreign keys point at: they must keep the type their children get."""
    by_name = {t.name.lower(): t for t in schema.tables}
    out: dict[str, set[str]] = {}
    for table in schema.tables:
        for fk in table.foreign_keys:
            parent = by_name.get(fk.ref_table.lower())
            if parent is not None:
                cols = fk.ref_columns or parent.primary_key
                out.setdefault(parent.name.lower(), set()).update(c.lower() for c in cols)
    return out


def plan_create(
    schema: Schema,
    profiles: Mapping[str, TableProfile],
    config: Config,
) -> SchemaPlan:
    """Decide every table's PostgreSQL definition: columns, types, defaults, PK and post-load DDL."""
    identifiers = config.snapshot.identifiers
    warnings = check_identifiers(schema, identifiers)
    referenced = _referenced(schema)
    order, cycles = dependency_order(schema.tables)
    if cycles:
        warnings.append(f"foreign-key cycles {cycles}: load order is by name; FKs are created after the load")
    tables = []
    for table in schema.tables:
        overrides = config.types.get(table.name, {})
        if overrides.get("*", ColumnOverride()).skip:
            continue
        tables.append(_plan_table(schema, table, profiles.get(table.name), overrides, config, referenced))
    by_source = {t.source.lower(): t for t in tables}
    tables = [with_post_load(schema.table(t.source), t, by_source, config) for t in tables]
    for virtual in schema.virtual_tables:
        warnings.append(f"virtual table {virtual.name!r} ({virtual.module}) is not migrated: recreate it in PostgreSQL")
    if schema.views:
        listed = ", ".join(v.name for v in schema.views)
        warnings.append(f"{len(schema.views)} view(s) not migrated (SQLite view SQL is not portable): {listed}")
    app_triggers = [t for t in schema.triggers if not is_tool_trigger(t.name, t.table)]  # ours: capture, fence
    if app_triggers:
        listed = ", ".join(t.name for t in app_triggers)
        warnings.append(f"{len(app_triggers)} trigger(s) not migrated (rewrite them in PL/pgSQL): {listed}")
    kept = {t.source for t in tables}
    return SchemaPlan(
        mode="create",
        schema=config.target.schema,
        tables=tuple(tables),
        order=tuple(n for n in order if n in kept),
        warnings=tuple(warnings),
    )


def _plan_table(
    schema: Schema,
    table: Table,
    profile: TableProfile | None,
    overrides: Mapping[str, ColumnOverride],
    config: Config,
    referenced: Mapping[str, set[str]],
) -> TablePlan:
    identifiers = config.snapshot.identifiers
    keys = _key_columns(table, referenced)
    ddl = parse_table(table)
    warnings: list[str] = []
    columns: list[ColumnPlan] = []
    col_names = {c.name: target_name(c.name, identifiers) for c in table.columns}
    for column in table.columns:
        override = overrides.get(column.name)
        if override is not None and override.skip:
            warnings.append(f"column {column.name!r} skipped by config")
            continue
        col_profile = column_profile(profile, column.name)
        choice = typemap.choose(
            column,
            col_profile,
            override,
            rowid_alias=column.name == table.rowid_alias,
            key=column.name.lower() in keys,
        )
        warnings.extend(f"column {column.name!r}: {w}" for w in choice.warnings)
        default_sql: str | None = None
        if column.default is not None and not choice.identity:
            expr, warning = translate_default(column, choice.target)
            if warning:
                warnings.append(f"column {column.name!r}: {warning}")
            if expr is not None:
                default_sql = expr.as_string(None)
        if ddl and column.name in ddl.collations and ddl.collations[column.name] != "BINARY":
            warnings.append(
                f"column {column.name!r}: COLLATE {ddl.collations[column.name]} is not carried over "
                "(PostgreSQL compares case-sensitively; consider citext or lower() indexes)"
            )
        notnull = column.notnull or column.name in table.primary_key
        columns.append(
            ColumnPlan(
                source=column.name,
                name=col_names[column.name],
                type=choice.target,
                notnull=notnull and not _has_null_keys(profile, column, table),
                identity=choice.identity,
                default=default_sql,
                reason=choice.reason,
            )
        )
    operands = operands_of(table, columns, ddl, generated=False)
    by_name = {c.name: c for c in table.columns}
    columns = [_with_generated(by_name[c.source or ""], ddl, c, operands, warnings) for c in columns]
    primary_key = tuple(col_names[c] for c in table.primary_key if c in col_names)
    if profile is not None and profile.null_key_rows and primary_key:
        warnings.append(
            f"{profile.null_key_rows} row(s) have NULL in the primary key: created as a UNIQUE index, not a PRIMARY KEY"
        )
    return TablePlan(
        source=table.name,
        name=target_name(table.name, identifiers),
        columns=tuple(columns),
        primary_key=primary_key,
        key_source=table.primary_key,
        autoincrement=table.autoincrement,
        warnings=tuple(warnings),
    )


def _with_generated(
    column: Column,
    ddl: sqlexpr.TableDDL | None,
    plan: ColumnPlan,
    operands: Mapping[str, sqlexpr.Operand],
    warnings: list[str],
) -> ColumnPlan:
    """A SQLite generated column becomes a PostgreSQL one only if its expression is proved identical;
    otherwise it stays a plain column that the snapshot loads and the apply rewrites from SQLite's value."""
    if column.generated is Generated.NO:
        return plan
    tokens = ddl.generated.get(column.name) if ddl else None
    try:
        if tokens is None:
            raise sqlexpr.Untranslatable("expression not found in CREATE TABLE")
        kind = operand(column, plan).kind
        if kind is sqlexpr.Kind.OTHER:
            raise sqlexpr.Untranslatable(f"the column is planned as {plan.type.name}, not bigint or text")
        expr = sqlexpr.translate(tokens, operands, {kind}).as_string(None)
    except sqlexpr.Untranslatable as exc:
        warnings.append(
            f"generated column {column.name!r}: {exc}; created as a plain column holding SQLite's values "
            "(loaded, and kept current by the apply)"
        )
        return plan
    return msgspec.structs.replace(plan, generated=expr)


def _has_null_keys(profile: TableProfile | None, column: Column, table: Table) -> bool:
    if profile is None or not profile.null_key_rows or column.name not in table.primary_key:
        return False
    col = column_profile(profile, column.name)
    return bool(col and col.storage.get("null", 0)) and not column.notnull
