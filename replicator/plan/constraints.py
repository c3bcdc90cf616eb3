"""What create mode builds after the load: UNIQUE indexes, indexes, CHECKs and foreign keys.

Create mode splits the DDL in two phases because that is what makes the load fast and safe: tables
with their primary key before the load (:mod:`replicator.plan.ddl`); UNIQUE indexes, secondary and
expression indexes, CHECKs and foreign keys after it (FKs ``NOT VALID`` and ``DEFERRABLE INITIALLY
IMMEDIATE``: SQLite does not enforce FKs by default, so orphans may exist and are reported at cutover,
when :func:`validate_foreign_keys` validates them; DEFERRABLE lets the apply stage defer them inside a
replayed transaction without changing what the application sees). Each post-load statement runs in its
own savepoint: one that PostgreSQL refuses (existing rows that break a CHECK, say) becomes a warning and
a :class:`NotCreated` record, never a half-built schema. A CHECK or index :func:`sqlexpr.translate`
refuses is dropped with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
import psycopg
import psycopg.errors
from psycopg import sql

from replicator import log
from replicator.config import Config
from replicator.errors import WAIT_CUT_SHORT
from replicator.plan import sqlexpr
from replicator.plan.columns import operands_of, parse_table
from replicator.plan.pgnames import short_name, target_name
from replicator.plan.refusals import pg_message, unique_collision
from replicator.plan.schemaplan import NotCreated, SchemaPlan, Statement, TablePlan
from triggers.schema import Table


def _folded_columns(plan: TablePlan) -> dict[str, str]:
    """Source column name, lower-cased → target name: SQLite matches names in FK clauses ignoring case."""
    return {c.source.lower(): c.name for c in plan.columns if c.source is not None}


def with_post_load(table: Table, plan: TablePlan, by_source: Mapping[str, TablePlan], config: Config) -> TablePlan:
    """Attach the UNIQUE/index/CHECK/FK statements, each translated or dropped with a warning."""
    schema_name = config.target.schema
    ident = sql.Identifier(schema_name, plan.name)
    col_names = {c.source: c.name for c in plan.columns if c.source is not None}
    ddl = parse_table(table)
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


POST_LOAD_KINDS: Final = ("unique", "index", "check", "fk")
#: What one table's load can be followed by at once: nothing here reads another table.
TABLE_LOCAL_KINDS: Final = ("unique", "index", "check")


KIND_NAMES: Final = {"unique": "unique index", "index": "index", "check": "check", "fk": "foreign key"}


def apply_post_load(
    conn: psycopg.Connection[Any], plan: SchemaPlan, *, kinds: Sequence[str] = POST_LOAD_KINDS
) -> list[str]:
    """UNIQUE, indexes, CHECKs, then FKs; each in a savepoint, a refusal becomes a warning.

    ``kinds`` narrows it: the snapshot indexes each table as soon as it is loaded (``TABLE_LOCAL_KINDS``,
    on a plan narrowed to that table), overlapping the other process's COPY, and adds FKs last.
    """
    return [warning(n) for n in post_load_refusals(conn, plan, kinds=kinds)]


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
    """:func:`apply_post_load`, each refusal as a record (the cutover certifies them).

    ``tables`` (SQLite names) narrows it too. ``timeouts_abort``: a statement cut short by a lock or
    statement timeout is raised, not recorded (cutover's freeze: its budget is spent, and the abort names
    the session it waited for; a snapshot leaves the statement to the cutover instead).
    """
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
                        reason = unique_collision(conn, plan.schema, table, stmt) or reason
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
