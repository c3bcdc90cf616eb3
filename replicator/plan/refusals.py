"""What PostgreSQL refused, said in one line: its own reason, or for a UNIQUE index the two rows it found equal.

Why one place: a post-load UNIQUE index that cannot be built, the snapshot's COPY into a unique key and the
apply's rewrite of a conflicting row all name the same thing the same way (the two SQLite keys and the
index's terms as PostgreSQL prints them), and every other refusal quotes PostgreSQL's primary message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from replicator.plan.schemaplan import Statement, TablePlan


def pg_message(exc: BaseException) -> str:
    """PostgreSQL's primary message for a failed statement (else the error's first line): the one line an
    operator's message quotes, without DETAIL or CONTEXT."""
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


def unique_collision(conn: psycopg.Connection[Any], schema: str, table: TablePlan, stmt: Statement) -> str | None:
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
