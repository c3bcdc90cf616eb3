"""The PostgreSQL side of the schema: DDL for create mode, reflection and mapping for existing mode.

Both modes produce the same :class:`SchemaPlan`: for each SQLite table, the PostgreSQL table it
loads into and, per column, the source name, target name and :class:`~replicator.values.targettype.TargetType`.
The loader only reads the plan, so it does not care who created the tables.

Create mode splits the DDL in two phases because that is what makes the load fast and safe: tables
with their primary key before the load; UNIQUE indexes, secondary and expression indexes, CHECKs
and foreign keys after it (FKs ``NOT VALID`` and ``DEFERRABLE INITIALLY IMMEDIATE``: SQLite
does not enforce FKs by default, so orphans may exist and are reported at cutover, when the FKs
are validated; DEFERRABLE lets the apply stage defer them inside a replayed transaction without
changing what the application sees). Each post-load statement runs in its own savepoint: one that
PostgreSQL refuses (existing rows that break a CHECK, say) becomes a warning, never a half-built
schema.

Generated columns, CHECKs and expression indexes go through :func:`sqlexpr.translate`, which knows
each column's kind on both sides (:func:`operand`) and accepts only expressions proved to compute
SQLite's value. A generated column it refuses stays a plain column (loaded and applied from
SQLite's computed value); a CHECK or index it refuses is dropped with a warning.

Every identifier goes through ``psycopg.sql.Identifier`` with its original case, unless
``identifiers = "downcase"``.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
import psycopg
import psycopg.errors
from psycopg import sql

from replicator import log
from replicator.config import ColumnOverride, Config, column_fix
from replicator.errors import WAIT_CUT_SHORT, TargetError, UsageError
from replicator.plan import sqlexpr, typemap
from replicator.plan.pgreflect import PgColumn, PgTable, target_type
from replicator.plan.profile import TableProfile
from replicator.values.decimals import RAILS, REAL15, SQLALCHEMY
from replicator.values.targettype import TargetType, UnsupportedType, copy_types, parse_type
from triggers.names import is_tool_trigger
from triggers.schema import Affinity, Column, Generated, Schema, Table, dependency_order

#: PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
MAX_IDENTIFIER_BYTES = 63


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
        for table in self.tables:
            if table.source == source:
                return table
        raise KeyError(source)


def target_name(name: str, identifiers: str) -> str:
    return name.lower() if identifiers == "downcase" else name


def short_name(*parts: str) -> str:
    """A generated object name within 63 bytes: a hash suffix keeps truncated names distinct."""
    name = "_".join(parts)
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    head = name.encode()[: MAX_IDENTIFIER_BYTES - 9].decode(errors="ignore")
    return f"{head}_{digest}"


def _truncated(name: str) -> str:
    return name.encode()[:MAX_IDENTIFIER_BYTES].decode(errors="ignore")


def check_identifiers(schema: Schema, identifiers: str) -> list[str]:
    """Refuse names that PostgreSQL would truncate into one another; warn about long ones.

    PostgreSQL cuts identifiers at 63 bytes, in DDL and in the app's queries alike, so a single long
    name still works; two names sharing their first 63 bytes become one, and the load would fail or
    write into the wrong column (pgloader#353). That is refused before anything is created.
    """
    warnings: list[str] = []
    collisions: list[str] = []

    def scan(kind: str, names: Sequence[str]) -> None:
        seen: dict[str, str] = {}
        for name in names:
            pg = _truncated(target_name(name, identifiers))
            if pg in seen:
                collisions.append(f"{kind} {seen[pg]!r} and {name!r}")
            seen[pg] = name
            if len(name.encode()) > MAX_IDENTIFIER_BYTES:
                warnings.append(f"{kind} name {name!r} is longer than 63 bytes: PostgreSQL truncates it")

    scan("table", [t.name for t in schema.tables])
    for table in schema.tables:
        scan(f"columns of {table.name!r}:", [c.name for c in table.columns])
    if collisions:
        raise UsageError(
            "names collide once PostgreSQL truncates them to 63 bytes: " + "; ".join(collisions),
            hint="rename one of each pair in SQLite; PostgreSQL cannot hold both names",
        )
    return warnings


# --------------------------------------------------------------------------------------------
# create mode


_NOW_PATTERNS = {
    "datetime": re.compile(
        r"^(CURRENT_TIMESTAMP|DATETIME\s*\(\s*'NOW'\s*(,\s*'(LOCALTIME|UTC)'\s*)?\))$",
        re.IGNORECASE,
    ),
    "date": re.compile(r"^(CURRENT_DATE|DATE\s*\(\s*'NOW'\s*(,\s*'(LOCALTIME|UTC)'\s*)?\))$", re.IGNORECASE),
    "time": re.compile(r"^(CURRENT_TIME|TIME\s*\(\s*'NOW'\s*(,\s*'(LOCALTIME|UTC)'\s*)?\))$", re.IGNORECASE),
    "epoch": re.compile(r"^UNIXEPOCH\s*\(\s*('NOW'\s*)?\)$", re.IGNORECASE),
}
_STRFTIME_NOW = re.compile(r"^STRFTIME\s*\(\s*'([^']*)'\s*,\s*'NOW'\s*(?:,\s*'(LOCALTIME|UTC)'\s*)?\)$", re.IGNORECASE)
#: strftime directives → to_char patterns (SQLite's %f is seconds with milliseconds, SS.SSS).
_TO_CHAR = {"%Y": "YYYY", "%m": "MM", "%d": "DD", "%H": "HH24", "%M": "MI", "%S": "SS", "%f": "SS.MS", "%j": "DDD"}


def _strftime_default(fmt: str, local: bool, chosen: TargetType) -> sql.Composable | None:
    """``strftime(fmt, 'now')``: the clock in the column's type, or the same text via to_char."""
    if fmt == "%s":
        return _now_default("epoch", local, chosen)
    has_date = all(d in fmt for d in ("%Y", "%m", "%d"))
    has_time = "%H" in fmt
    if chosen.name in ("timestamptz", "timestamp", "date"):
        if not has_date:
            return None
        return _now_default("datetime" if has_time else "date", local, chosen)
    if chosen.name not in ("text", "varchar"):
        return None
    pattern: list[str] = []
    i = 0
    while i < len(fmt):
        if fmt[i] == "%":
            directive = fmt[i : i + 2]
            if directive == "%%":
                pattern.append('"%"')
            elif directive in _TO_CHAR:
                pattern.append(_TO_CHAR[directive])
            else:
                return None
            i += 2
        else:
            pattern.append('"' + fmt[i].replace('"', '\\"') + '"')
            i += 1
    clock = sql.SQL("LOCALTIMESTAMP") if local else sql.SQL("(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')")
    return sql.SQL("to_char({}, {})").format(clock, sql.Literal("".join(pattern)))


def _strip_parens(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        try:
            tokens = sqlexpr.tokenize(text)
        except sqlexpr.Untranslatable:
            return text
        if tokens and sqlexpr.group_end(tokens, 0) == len(tokens):
            text = text[1:-1].strip()
        else:
            break
    return text


def _now_default(kind: str, local: bool, chosen: TargetType) -> sql.Composable | None:
    """SQLite's 'now' defaults are UTC text; give PostgreSQL the same instant in the column's type."""
    utc = sql.SQL("LOCALTIMESTAMP") if local else sql.SQL("(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')")
    name = chosen.name
    if kind == "epoch":
        if name in ("bigint", "integer", "numeric", "double precision"):
            return sql.SQL("(extract(epoch from CURRENT_TIMESTAMP))::bigint")
        if name in ("timestamptz", "timestamp"):  # epoch seconds read as an instant
            kind = "datetime"
        else:
            return None
    if kind == "date" and name in ("timestamptz", "timestamp"):
        day = sql.SQL("date_trunc('day', {})").format(utc)
        return sql.SQL("({} AT TIME ZONE 'UTC')").format(day) if name == "timestamptz" and not local else day
    if name == "timestamptz":
        return sql.SQL("CURRENT_TIMESTAMP") if kind != "time" else None
    if name == "timestamp":
        return utc if kind != "time" else None
    if name == "date":
        return sql.SQL("({})::date").format(utc) if kind != "time" else None
    if name == "time":
        return sql.SQL("({})::time").format(utc)
    if name in ("text", "varchar"):
        fmt = {"datetime": "YYYY-MM-DD HH24:MI:SS", "date": "YYYY-MM-DD"}.get(kind, "HH24:MI:SS")
        return sql.SQL("to_char({}, {})").format(utc, sql.Literal(fmt))
    return None


_CONSTANT_TOKENS = {"string", "number", "blob", "op", "ident"}


def translate_default(column: Column, chosen: TargetType) -> tuple[sql.Composable | None, str | None]:
    """The PostgreSQL default for a SQLite default: (expression or None, warning or None).

    Time functions map to PostgreSQL's clock (UTC, as SQLite's are). A constant is evaluated by
    SQLite itself, under the column's declared type (so ``'0'`` in an INTEGER column is 0, and
    ``"0"`` in double quotes is the string SQLite made of it), then converted like any loaded value:
    a default the target type cannot hold is dropped with a warning, never written as broken DDL.
    """
    text = column.default
    if text is None:
        return None, None
    body = _strip_parens(text)
    if body.upper() == "NULL":
        return None, None
    strftime = _STRFTIME_NOW.match(body)
    if strftime:
        expr = _strftime_default(strftime.group(1), (strftime.group(2) or "").upper() == "LOCALTIME", chosen)
        if expr is None:
            return None, f"default {text} has no equivalent for type {chosen.name}: dropped"
        return expr, None
    for kind, pattern in _NOW_PATTERNS.items():
        match = pattern.match(body)
        if match:
            expr = _now_default(kind, "LOCALTIME" in body.upper(), chosen)
            if expr is None:
                return None, f"default {text} has no equivalent for type {chosen.name}: dropped"
            return expr, None
    try:
        tokens = sqlexpr.tokenize(body)
    except sqlexpr.Untranslatable as exc:
        return None, f"default {text} cannot be read ({exc}): dropped"
    if any(t.kind not in _CONSTANT_TOKENS and not sqlexpr.is_word(t, "TRUE", "FALSE", "NULL") for t in tokens):
        return None, f"default {text} is an expression with no PostgreSQL translation: dropped"
    try:
        value = _evaluate_default(column, text)
    except sqlite3.Error as exc:
        return None, f"default {text} cannot be evaluated ({exc}): dropped"
    if value is None:
        return None, None
    try:
        converted = _convert_one(column, chosen, value)
    except Exception as exc:  # RowRefused or ValueRefused: the type cannot hold it
        return None, f"default {text} does not fit {chosen.name} ({_reason(exc)}): dropped"
    if converted is None:
        return None, None
    return sql.Literal(converted), None


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or exc)


def _evaluate_default(column: Column, text: str) -> Any:
    """What SQLite stores for ``DEFAULT text`` in a column of this declared type."""
    decl = column.declared_type.replace('"', "")
    try:
        return _evaluate(f"CREATE TABLE d (c {decl} DEFAULT {text}, z)")
    except sqlite3.Error:  # the PRAGMA drops the parentheses of DEFAULT (1 + 2)
        return _evaluate(f"CREATE TABLE d (c {decl} DEFAULT ({text}), z)")


def _evaluate(ddl: str) -> Any:
    mem = sqlite3.connect(":memory:")
    try:
        mem.execute(ddl)
        mem.execute("INSERT INTO d (z) VALUES (1)")
        return mem.execute("SELECT c FROM d").fetchone()[0]
    finally:
        mem.close()


def _convert_one(column: Column, chosen: TargetType, value: Any) -> Any:
    from replicator.values import convert

    return convert.convert_value("default", column.name, chosen, value)


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
    tables = [_with_post_load(schema.table(t.source), t, by_source, config) for t in tables]
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
    ddl = _parse_table(table)
    warnings: list[str] = []
    columns: list[ColumnPlan] = []
    col_names = {c.name: target_name(c.name, identifiers) for c in table.columns}
    for column in table.columns:
        override = overrides.get(column.name)
        if override is not None and override.skip:
            warnings.append(f"column {column.name!r} skipped by config")
            continue
        col_profile = _column_profile(profile, column.name)
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


def _has_null_keys(profile: TableProfile | None, column: Column, table: Table) -> bool:
    if profile is None or not profile.null_key_rows or column.name not in table.primary_key:
        return False
    col = _column_profile(profile, column.name)
    return bool(col and col.storage.get("null", 0)) and not column.notnull


def _column_profile(profile: TableProfile | None, name: str) -> Any:
    if profile is None:
        return None
    try:
        return profile.column(name)
    except KeyError:
        return None


def _parse_table(table: Table) -> sqlexpr.TableDDL | None:
    try:
        return sqlexpr.parse_create_table(table.sql)
    except sqlexpr.Untranslatable:
        return None


def _folded_columns(plan: TablePlan) -> dict[str, str]:
    """Source column name, lower-cased → target name: SQLite matches names in FK clauses ignoring case."""
    return {c.source.lower(): c.name for c in plan.columns if c.source is not None}


def _with_post_load(table: Table, plan: TablePlan, by_source: Mapping[str, TablePlan], config: Config) -> TablePlan:
    """Attach the UNIQUE/index/CHECK/FK statements, each translated or dropped with a warning."""
    schema_name = config.target.schema
    ident = sql.Identifier(schema_name, plan.name)
    col_names = {c.source: c.name for c in plan.columns if c.source is not None}
    ddl = _parse_table(table)
    operands = operands_of(table, plan.columns, ddl, generated=True)
    folded = _folded_columns(plan)
    statements: list[Statement] = []
    warnings = list(plan.warnings)
    if plan.primary_key and any(not c.notnull for c in plan.columns if c.name in plan.primary_key):
        name = short_name(plan.name, "pkey")
        stmt = sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
            sql.Identifier(name), ident, sql.SQL(", ").join(map(sql.Identifier, plan.primary_key))
        )
        statements.append(Statement("unique", plan.name, name, stmt.as_string(None)))
    dropped: list[NotCreated] = []

    def drop(kind: str, name: str, reason: str, said: str) -> None:
        warnings.append(said)
        dropped.append(NotCreated(kind, table.name, name, reason))

    for index in table.indexes:
        if index.origin == "pk":
            continue
        try:
            statements.append(
                _index_statement(plan, index, ident, col_names, operands, warnings, config.snapshot.identifiers)
            )
        except sqlexpr.Untranslatable as exc:
            kind = "unique index" if index.unique else "index"
            drop(kind, index.name, str(exc), f"index {index.name!r} not created: {exc}")
    for n, (check_name, tokens) in enumerate(ddl.checks if ddl else (), start=1):
        name = short_name(plan.name, check_name or f"check{n}")
        try:
            expr = sqlexpr.translate(tokens, operands, {sqlexpr.Kind.BOOL}, text_equality=True)
        except sqlexpr.Untranslatable as exc:
            drop("check", name, str(exc), f"CHECK {check_name or n} not created: {exc}")
            continue
        stmt = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({})").format(ident, sql.Identifier(name), expr)
        statements.append(Statement("check", plan.name, name, stmt.as_string(None)))
    for fk in table.foreign_keys:
        parent = by_source.get(fk.ref_table.lower())
        fk_name = short_name(plan.name, *(folded.get(c.lower(), c) for c in fk.columns), "fkey")
        if parent is None:
            why = f"the table it references, {fk.ref_table!r}, is not migrated"
            drop(
                "foreign key", fk_name, why, f"foreign key to {fk.ref_table!r} not created: that table is not migrated"
            )
            continue
        parent_cols = _folded_columns(parent)
        missing = [c for c in fk.columns if c.lower() not in folded] + [
            c for c in fk.ref_columns if c.lower() not in parent_cols
        ]
        if missing:
            why = f"column(s) {', '.join(missing)} skipped or unknown"
            drop("foreign key", fk_name, why, f"foreign key on {missing} not created: column skipped or unknown")
            continue
        child_cols = [folded[c.lower()] for c in fk.columns]
        name = short_name(plan.name, *child_cols, "fkey")
        ref_target = parent.name
        ref_cols = [parent_cols[c.lower()] for c in fk.ref_columns]
        stmt = sql.SQL(
            "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} {} ON UPDATE {} ON DELETE {} "
            "DEFERRABLE INITIALLY IMMEDIATE NOT VALID"
        ).format(
            ident,
            sql.Identifier(name),
            sql.SQL(", ").join(map(sql.Identifier, child_cols)),
            sql.Identifier(schema_name, ref_target),
            sql.SQL("({})").format(sql.SQL(", ").join(map(sql.Identifier, ref_cols))) if ref_cols else sql.SQL(""),
            sql.SQL(_fk_action(fk.on_update)),
            sql.SQL(_fk_action(fk.on_delete)),
        )
        statements.append(Statement("fk", plan.name, name, stmt.as_string(None)))
    return msgspec.structs.replace(plan, post_load=tuple(statements), warnings=tuple(warnings), dropped=tuple(dropped))


def _fk_action(action: str) -> str:
    upper = action.upper()
    return upper if upper in ("NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT") else "NO ACTION"


def _index_statement(
    plan: TablePlan,
    index: Any,
    ident: sql.Composable,
    col_names: Mapping[str, str],
    operands: Mapping[str, sqlexpr.Operand],
    warnings: list[str],
    identifiers: str,
) -> Statement:
    unique = sql.SQL("UNIQUE ") if index.unique else sql.SQL("")
    if index.origin == "u" or not index.sql:
        if None in index.columns:
            raise sqlexpr.Untranslatable("expression in an automatic index")
        if any(c not in col_names for c in index.columns):
            raise sqlexpr.Untranslatable("a column of it is skipped")
        name = short_name(plan.name, *[col_names[c] for c in index.columns], "key")
        keys: list[sql.Composable] = [sql.Identifier(col_names[c]) for c in index.columns]
        where: sql.Composable = sql.SQL("")
    else:
        name = short_name(target_name(index.name, identifiers))
        parsed = sqlexpr.parse_create_index(index.sql)
        keys = [_index_key(term, operands, index.name, warnings) for term in parsed.keys]
        where = sql.SQL("")
        if parsed.where:
            where = sql.SQL(" WHERE {}").format(sqlexpr.translate(parsed.where, operands, {sqlexpr.Kind.BOOL}))
    stmt = sql.SQL("CREATE {}INDEX {} ON {} ({}){}").format(
        unique, sql.Identifier(name), ident, sql.SQL(", ").join(keys), where
    )
    return Statement("unique" if index.unique else "index", plan.name, name, stmt.as_string(None))


#: What an index key expression may compute (uniqueness is the only semantics an index adds).
_KEY_KINDS: Final = frozenset({sqlexpr.Kind.INT, sqlexpr.Kind.TEXT, sqlexpr.Kind.BOOL})


def _index_key(
    term: Sequence[sqlexpr.Token], operands: Mapping[str, sqlexpr.Operand], index: str, warnings: list[str]
) -> sql.Composable:
    tokens = list(term)
    order = ""
    if tokens and sqlexpr.is_word(tokens[-1], "ASC", "DESC"):
        order = " " + tokens.pop().text.upper()
    if len(tokens) >= 2 and sqlexpr.is_word(tokens[-2], "COLLATE"):
        collation = tokens[-1].value.upper()
        tokens = tokens[:-2]
        if collation != "BINARY":
            warnings.append(f"index {index!r}: COLLATE {collation} dropped (PostgreSQL compares case-sensitively)")
    folded = {k.lower(): v for k, v in operands.items()}
    if len(tokens) == 1 and tokens[0].kind in ("word", "ident") and tokens[0].value.lower() in folded:
        return sql.SQL("{}" + order).format(sql.Identifier(folded[tokens[0].value.lower()].name))
    return sql.SQL("({})" + order).format(sqlexpr.translate(tokens, operands, _KEY_KINDS))


def table_statement(
    plan: TablePlan, schema_name: str, *, with_generated: bool = True, with_pk: bool = True
) -> sql.Composed:
    """``CREATE TABLE`` with columns, NOT NULL, defaults, identity and (``with_pk``) the primary key."""
    parts: list[sql.Composable] = []
    for col in plan.columns:
        piece = sql.SQL("{} {}").format(sql.Identifier(col.name), typemap.render(col.type))
        if col.generated is not None and with_generated:
            piece = sql.SQL("{} GENERATED ALWAYS AS ({}) STORED").format(piece, sql.SQL(col.generated))
        elif col.identity:
            piece = sql.SQL("{} GENERATED BY DEFAULT AS IDENTITY").format(piece)
        elif col.default is not None:
            piece = sql.SQL("{} DEFAULT {}").format(piece, sql.SQL(col.default))
        if col.notnull:
            piece = sql.SQL("{} NOT NULL").format(piece)
        parts.append(piece)
    if with_pk and has_primary_key(plan):
        parts.append(_primary_key(plan))
    return sql.SQL("CREATE TABLE {} (\n    {}\n)").format(
        sql.Identifier(schema_name, plan.name), sql.SQL(",\n    ").join(parts)
    )


def has_primary_key(plan: TablePlan) -> bool:
    """A PRIMARY KEY constraint (NULL key values make it a UNIQUE index among the post-load steps)."""
    return bool(plan.primary_key) and all(c.notnull for c in plan.columns if c.name in plan.primary_key)


def _primary_key(plan: TablePlan) -> sql.Composed:
    return sql.SQL("CONSTRAINT {} PRIMARY KEY ({})").format(
        sql.Identifier(short_name(plan.name, "pkey")), sql.SQL(", ").join(map(sql.Identifier, plan.primary_key))
    )


def add_primary_key(conn: psycopg.Connection[Any], schema_name: str, plan: TablePlan) -> bool:
    """The deferred primary key of a loaded table (``create_tables(defer_pk=True)``); False if it exists.

    Built once over the loaded rows (a sort) instead of one B-tree insertion per COPYed row: 500k
    rows went in 0.80 s + 0.15 s for the key, against 1.34 s with the key in place. A refusal is
    an error, never a warning: without its key the table cannot be replicated.
    """
    if not has_primary_key(plan):
        return False
    name = short_name(plan.name, "pkey")
    exists = conn.execute(
        "SELECT 1 FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
        " WHERE n.nspname = %s AND c.conname = %s AND c.contype = 'p'",
        (schema_name, name),
    ).fetchone()
    if exists:
        return False
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD {}").format(sql.Identifier(schema_name, plan.name), _primary_key(plan))
            )
    except psycopg.Error as exc:
        raise TargetError(
            f"the primary key of {plan.name!r} cannot be built over the loaded rows: {pg_message(exc)}",
            hint="two SQLite keys became one PostgreSQL value (a narrower type in [types]?): fix the "
            "override or the rows, then rerun with --replace",
        ) from None
    return True


def render_script(plan: SchemaPlan) -> str:
    """The whole DDL as one SQL script (``replicator schema --print``), warnings as comments."""
    lines = [f"-- replicator schema ({plan.mode} mode) into schema {plan.schema}"]
    lines += [f"-- WARNING: {w}" for w in plan.warnings]
    lines.append(sql.SQL("CREATE SCHEMA IF NOT EXISTS {};").format(sql.Identifier(plan.schema)).as_string(None))
    ordered = [plan.table(n) for n in plan.order]
    for table in ordered:
        lines.append("")
        lines += [f"-- WARNING {table.source}: {w}" for w in table.warnings]
        for col in table.columns:
            if col.reason:
                rendered = typemap.render(col.type).as_string(None)
                stored = f", stored as {col.type.format}" if col.type.format in ("unix_ms", "unix_s") else ""
                lines.append(f"-- {table.source}.{col.source}: {rendered} ({col.reason}{stored})")
        lines.append(table_statement(table, plan.schema).as_string(None) + ";")
    lines.append("")
    lines.append("-- after the load: unique keys, indexes, checks, then foreign keys (validated at cutover)")
    for kind in ("unique", "index", "check", "fk"):
        for table in ordered:
            lines += [s.sql + ";" for s in table.post_load if s.kind == kind]
    return "\n".join(lines) + "\n"


class Created(msgspec.Struct, frozen=True):
    warnings: tuple[str, ...]
    plain_generated: tuple[str, ...]
    """Tables whose generated columns PostgreSQL refused: created as plain columns, loaded from SQLite."""


def create_tables(conn: psycopg.Connection[Any], plan: SchemaPlan, *, defer_pk: bool = False) -> Created:
    """Create the schema and every table in one transaction; a refused generated column falls back.

    ``defer_pk``: without their primary keys, which ``add_primary_key`` builds after the load.
    """
    warnings: list[str] = []
    plain: list[str] = []
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(plan.schema)))
        for name in plan.order:
            table = plan.table(name)
            try:
                with conn.transaction():
                    conn.execute(table_statement(table, plan.schema, with_pk=not defer_pk))
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                    raise TargetError(
                        f"cannot create table {table.name!r}: {pg_message(exc)}",
                        hint=f"grant the role USAGE, CREATE ON SCHEMA {plan.schema} (see docs/least-privilege.md)",
                    ) from None
                if not any(c.generated for c in table.columns):
                    raise TargetError(
                        f"cannot create table {table.name!r}: {pg_message(exc)}",
                        hint="override the column type in config ([types.T.c] type = ...) and rerun",
                    ) from None
                warnings.append(
                    f"table {table.name!r}: generated column(s) rejected by PostgreSQL ({pg_message(exc)}); "
                    "created as plain columns loaded with SQLite's values"
                )
                conn.execute(table_statement(table, plan.schema, with_generated=False, with_pk=not defer_pk))
                plain.append(table.name)
    return Created(warnings=tuple(warnings), plain_generated=tuple(plain))


def without_generated(plan: SchemaPlan, tables: Sequence[str]) -> SchemaPlan:
    """The plan after PostgreSQL refused some generated expressions: those columns are loaded."""
    new = []
    for table in plan.tables:
        if table.name in tables:
            table = msgspec.structs.replace(
                table, columns=tuple(msgspec.structs.replace(c, generated=None) for c in table.columns)
            )
        new.append(table)
    return msgspec.structs.replace(plan, tables=tuple(new))


def pg_message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return str(primary or str(exc).strip().splitlines()[0])


def duplicates_query(
    table: sql.Composable, exprs: Sequence[str], predicate: str | None, key: Sequence[str]
) -> sql.Composed:
    """The keys of the first group of ``table``'s rows that are equal on a unique index's terms (none: no rows).

    ``exprs`` and ``predicate`` as pg_get_indexdef and pg_get_expr print them. Rows with a NULL in a
    term are left out: a (NULLS DISTINCT) unique index allows those.
    """
    terms = sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(e)) for e in exprs)
    where = sql.SQL(" AND ").join(sql.SQL("({}) IS NOT NULL").format(sql.SQL(e)) for e in exprs)
    if predicate is not None:
        where = sql.SQL("({}) AND {}").format(sql.SQL(predicate), where)
    return sql.SQL(
        "SELECT {} FROM {} WHERE {} AND ({}) IN (SELECT {} FROM {} WHERE {} GROUP BY {} HAVING count(*) > 1 LIMIT 1)"
    ).format(sql.SQL(", ").join(map(sql.Identifier, key)), table, where, terms, terms, table, where, terms)


def collision_message(
    table: str, key_names: Sequence[str], keys: Sequence[Sequence[Any]], index: str, exprs: Sequence[str]
) -> str:
    """'rows t (id=1) and (id=2) are distinct in SQLite but equal in PostgreSQL on unique index i (e)'."""
    named = sorted(", ".join(f"{c}={_shown(v)}" for c, v in zip(key_names, k, strict=True)) for k in keys)
    return (
        f"rows {table} ({named[0]}) and ({named[1]}) are distinct in SQLite but equal in PostgreSQL on unique "
        f"index {index} ({', '.join(exprs)})"
    )


def _shown(value: Any) -> str:
    """A key value as a message shows it: Python literals as such, a date or a uuid as its quoted text."""
    return repr(value) if value is None or isinstance(value, str | int | float | bytes) else repr(str(value))


def _unique_collision(conn: psycopg.Connection[Any], schema: str, table: TablePlan, stmt: Statement) -> str | None:
    """Why a UNIQUE index could not be built, naming two rows it found equal; None if that cannot be said.

    The index is built without UNIQUE in a savepoint that is rolled back, only to read its terms back
    from PostgreSQL as the apply does (pg_get_indexdef): this runs only after the build failed.
    """
    if not table.primary_key or not stmt.sql.startswith("CREATE UNIQUE INDEX "):
        return None
    names = table.key_source if len(table.key_source) == len(table.primary_key) else table.primary_key
    found: tuple[Any, ...] | None = None
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(sql.SQL("CREATE INDEX " + stmt.sql.removeprefix("CREATE UNIQUE INDEX ")))
            exprs, predicate = conn.execute(
                "SELECT array(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k),"
                " pg_get_expr(i.indpred, i.indrelid) FROM pg_index i WHERE i.indexrelid = %s::regclass",
                (sql.Identifier(schema, stmt.name).as_string(conn),),
            ).fetchone() or ([], None)
            rows = conn.execute(
                duplicates_query(sql.Identifier(schema, table.name), exprs, predicate, table.primary_key)
            ).fetchall()
            found = (rows, exprs) if len(rows) > 1 else None
    except psycopg.Error:
        return None
    if found is None:
        return None
    keys, exprs = found
    return collision_message(table.source, names, keys, stmt.name, exprs)


POST_LOAD_KINDS: Final = ("unique", "index", "check", "fk")
#: What one table's load can be followed by at once: nothing here reads another table.
TABLE_LOCAL_KINDS: Final = ("unique", "index", "check")


KIND_NAMES: Final = {"unique": "unique index", "index": "index", "check": "check", "fk": "foreign key"}


def apply_post_load(
    conn: psycopg.Connection[Any],
    plan: SchemaPlan,
    *,
    kinds: Sequence[str] = POST_LOAD_KINDS,
    tables: Sequence[str] | None = None,
    timeouts_abort: bool = False,
) -> list[str]:
    """UNIQUE, indexes, CHECKs, then FKs; each in a savepoint, a refusal becomes a warning.

    ``tables`` (SQLite names) and ``kinds`` narrow it: the snapshot indexes each table as soon as it
    is loaded (``TABLE_LOCAL_KINDS``), overlapping the other process's COPY, and adds FKs last.
    ``timeouts_abort``: a statement cut short by a lock or statement timeout is raised, not warned about
    (cutover's freeze: its budget is spent, and the abort names the session it waited for; a snapshot
    leaves the statement to the cutover instead).
    """
    refused = post_load_refusals(conn, plan, kinds=kinds, tables=tables, timeouts_abort=timeouts_abort)
    return [warning(n) for n in refused]


def warning(refused: NotCreated) -> str:
    """A refused post-load statement as the snapshot's warning says it."""
    kind = next((k for k, v in KIND_NAMES.items() if v == refused.kind), refused.kind)
    return f"{kind} {refused.name!r} on {refused.table!r} not created: {refused.reason}"


def post_load_refusals(
    conn: psycopg.Connection[Any],
    plan: SchemaPlan,
    *,
    kinds: Sequence[str] = POST_LOAD_KINDS,
    tables: Sequence[str] | None = None,
    timeouts_abort: bool = False,
) -> list[NotCreated]:
    """:func:`apply_post_load`, each refusal as a record (the cutover certifies them)."""
    refused: list[NotCreated] = []
    ordered = [plan.table(n) for n in plan.order if tables is None or n in tables]
    for kind in kinds:
        for table in ordered:
            for stmt in table.post_load:
                if stmt.kind != kind:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL(stmt.sql))
                except psycopg.Error as exc:
                    if timeouts_abort and isinstance(exc, WAIT_CUT_SHORT):
                        raise
                    reason = pg_message(exc)
                    if isinstance(exc, psycopg.errors.UniqueViolation):
                        reason = _unique_collision(conn, plan.schema, table, stmt) or reason
                    refused.append(NotCreated(KIND_NAMES.get(kind, kind), table.source, stmt.name, reason))
                    log.get("pgschema", table=table.name).warning(
                        "post-load statement refused", name=stmt.name, kind=kind
                    )
    return refused


def missing_post_load(conn: psycopg.Connection[Any], plan: SchemaPlan) -> SchemaPlan:
    """The plan narrowed to the post-load statements whose object PostgreSQL does not hold (refused, or
    not reached by an interrupted snapshot)."""
    have = {
        str(r[0])
        for r in conn.execute(
            "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s "
            "UNION SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
            (plan.schema, plan.schema),
        )
    }
    tables = [
        msgspec.structs.replace(t, post_load=tuple(s for s in t.post_load if s.name not in have)) for t in plan.tables
    ]
    return msgspec.structs.replace(plan, tables=tuple(tables))


def would_refuse(conn: psycopg.Connection[Any], plan: SchemaPlan) -> list[NotCreated]:
    """The post-load statements PostgreSQL still lacks and would refuse now, tried in a transaction that is
    rolled back (cutover's preflight: it refuses before the freeze what it would otherwise leave out)."""
    missing = missing_post_load(conn, plan)
    if not any(t.post_load for t in missing.tables):
        return []
    with conn.transaction(force_rollback=True):
        return post_load_refusals(conn, missing, timeouts_abort=True)


# --------------------------------------------------------------------------------------------
# existing mode


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
#: How each ORM reads a decimal column's REALs from SQLite (``TargetType.format``, decimals.app_decimal).
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
    name = _truncated(name)
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
            or typemap.detect_format(native, _column_profile(profile, column.name)),
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


# --------------------------------------------------------------------------------------------
# after the load


def sync_sequences(
    conn: psycopg.Connection[Any], plan: SchemaPlan, sqlite_sequence: Mapping[str, int]
) -> dict[str, int]:
    """Set every identity/serial sequence past the loaded keys, so the app can insert after cutover.

    For AUTOINCREMENT tables SQLite never reuses an id up to ``sqlite_sequence.seq`` even after
    deletes; the sequence starts after the larger of that and max(id).
    """
    result: dict[str, int] = {}
    for table in plan.tables:
        qualified = sql.Identifier(plan.schema, table.name).as_string(conn)
        for col in table.columns:
            seq = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (qualified, _truncated(col.name))).fetchone()
            if not seq or seq[0] is None:
                continue
            row = conn.execute(
                sql.SQL("SELECT max({}) FROM {}").format(
                    sql.Identifier(col.name), sql.Identifier(plan.schema, table.name)
                )
            ).fetchone()
            top = int(row[0]) if row and row[0] is not None else 0
            if table.autoincrement:
                top = max(top, sqlite_sequence.get(table.source, 0))
            if top >= 1:
                conn.execute("SELECT setval(%s, %s, true)", (seq[0], top))
            else:
                conn.execute("SELECT setval(%s, 1, false)", (seq[0],))
            result[f"{table.name}.{col.name}"] = top + 1
    return result


def read_sqlite_sequence(conn: sqlite3.Connection) -> dict[str, int]:
    try:
        return {str(name): int(seq) for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence")}
    except sqlite3.Error:
        return {}


def apply_schema(dsn: str, plan: SchemaPlan, *, replace: bool = False) -> list[str]:
    """``replicator schema --target``: create every table, index and constraint, without data."""
    from replicator import pg

    with pg.connect(dsn, autocommit=True) as conn:
        names = [t.name for t in plan.tables]
        existing = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s) ORDER BY 1",
            (plan.schema, names),
        ).fetchall()
        if existing and not replace:
            raise UsageError(
                f"tables already exist in schema {plan.schema!r}: {', '.join(r[0] for r in existing)}",
                hint="pass --replace to drop and recreate them, or use snapshot --mode existing",
            )
        if existing:
            conn.execute(
                sql.SQL("DROP TABLE {} CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(plan.schema, r[0]) for r in existing)
                )
            )
        created = create_tables(conn, plan)
        plan = without_generated(plan, created.plain_generated)
        return list(created.warnings) + apply_post_load(conn, plan)


class FkCheck(msgspec.Struct, frozen=True):
    table: str
    name: str
    error: str | None = None
    """None when the constraint validated; else PostgreSQL's reason (orphan rows)."""


def validate_foreign_keys(conn: psycopg.Connection[Any], schema_name: str) -> list[FkCheck]:
    """Validate every NOT VALID foreign key of the schema (cutover), each in its own savepoint.

    The load created them NOT VALID because SQLite does not enforce foreign keys by default; here
    each is checked against the data, and an orphan is reported by constraint, not fixed.
    """
    rows = conn.execute(
        "SELECT c.conrelid::regclass::text, cl.relname, c.conname FROM pg_constraint c "
        "JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace n ON n.oid = c.connamespace "
        "WHERE c.contype = 'f' AND NOT c.convalidated AND n.nspname = %s ORDER BY 2, 3",
        (schema_name,),
    ).fetchall()
    checks: list[FkCheck] = []
    for _qualified, table, name in rows:
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                        sql.Identifier(schema_name, table), sql.Identifier(name)
                    )
                )
            checks.append(FkCheck(table=table, name=name))
        except WAIT_CUT_SHORT:
            raise  # a lock wait past the budget is not an orphan: the caller names the blocking session
        except psycopg.Error as exc:
            checks.append(FkCheck(table=table, name=name, error=pg_message(exc)))
    return checks
