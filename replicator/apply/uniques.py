"""The target's UNIQUE indexes a batch must make room on, and the statement that finds the rows an incoming row
conflicts with on one of them (:meth:`replicator.apply.writer.Writer._rewrite_conflicts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from replicator.plan.shape import TableShape


class UniqueIndex(msgspec.Struct, frozen=True):
    name: str
    exprs: tuple[str, ...]
    """Each key column's definition as pg_get_indexdef prints it: a quoted column name or an expression."""
    predicate: str | None
    immediate: bool = True
    """Checked at each statement; False for a constraint DEFERRABLE (PostgreSQL may check it at COMMIT)."""


def unique_indexes(conn: psycopg.Connection[Any], t: TableShape) -> list[UniqueIndex]:
    """The target's valid UNIQUE indexes other than the one on exactly the capture key."""
    rows = conn.execute(
        "SELECT c.relname, i.indimmediate, pg_get_expr(i.indpred, i.indrelid), "
        "  array(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k) "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indisvalid ORDER BY c.relname",
        (sql.Identifier(t.schema, t.target).as_string(conn),),
    ).fetchall()
    key = {sql.Identifier(k).as_string(conn) for k in t.key_target} | set(t.key_target)
    out: list[UniqueIndex] = []
    for name, immediate, predicate, exprs in rows:
        if predicate is None and len(exprs) == len(t.key_target) and set(exprs) <= key:
            continue  # the key delete already removed every row this index could conflict on
        out.append(UniqueIndex(str(name), tuple(str(e) for e in exprs), predicate, bool(immediate)))
    return out


def _index_terms(index: UniqueIndex) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """The index's key expressions, and its predicate as `` WHERE (p)`` and `` AND (p)`` (or nothing)."""
    exprs = sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(e)) for e in index.exprs)
    if index.predicate is None:
        return exprs, sql.SQL(""), sql.SQL("")
    return (
        exprs,
        sql.SQL(" WHERE ({})").format(sql.SQL(index.predicate)),
        sql.SQL(" AND ({})").format(sql.SQL(index.predicate)),
    )


def conflict_select(
    ident: sql.Identifier, staged: sql.Identifier, index: UniqueIndex, key: Sequence[str]
) -> sql.Composed:
    """``SELECT key FROM t WHERE (e1, e2) IN (SELECT e1, e2 FROM staged WHERE pred) AND pred``.

    The index definitions come from pg_get_indexdef, so they are valid SQL for the target table;
    inside the subquery the same bare column names resolve to the staging table, which has the
    target's columns. NULLs never match ``IN``, exactly as a (NULLS DISTINCT) unique index allows them.
    """
    exprs, where, also = _index_terms(index)
    return sql.SQL("SELECT {} FROM {} WHERE ({}) IN (SELECT {} FROM {}{}){}").format(
        sql.SQL(", ").join(map(sql.Identifier, key)), ident, exprs, exprs, staged, where, also
    )
