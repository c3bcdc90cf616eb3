"""Foreign keys while the apply streams: they must not *act*.

A batch deletes its keys, then inserts their current rows: an FK would cascade on it (an ``ON DELETE CASCADE``
wipes the children) or refuse it. :func:`fk_mode` chooses ``session_replication_role = replica`` where the role
may set it; otherwise the FKs are parked (:func:`park_foreign_keys`: dropped, their definitions kept in the state
schema) until the cutover restores them (:func:`restore_foreign_keys`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec
import psycopg
import psycopg.errors
from psycopg import sql

from replicator.errors import WAIT_CUT_SHORT
from replicator.plan.refusals import pg_message
from replicator.state.store import StateStore

FkMode = Literal["replica", "parked"]


def fk_mode(conn: psycopg.Connection[Any]) -> FkMode:
    """``replica`` if this role may ``SET session_replication_role`` (then FK triggers, cascades
    included, do not fire inside apply transactions); otherwise ``parked``: FKs must be absent."""
    try:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
        return "replica"
    except psycopg.errors.InsufficientPrivilege:
        return "parked"


def park_foreign_keys(state_store: StateStore, target_schema: str, tables: Sequence[str]) -> list[str]:
    """Record, then drop, every FK on or referencing ``tables`` (one transaction); returns their names.

    Without the privilege to disable FK triggers, an FK would cascade or refuse on the
    delete-then-insert of a batch. The definitions are kept so cutover recreates them NOT VALID and
    then VALIDATEs (:func:`restore_foreign_keys`).
    """
    conn = state_store.conn
    rows = conn.execute(
        "SELECT DISTINCT c.conrelid::regclass::text, cl.relname, c.conname, pg_get_constraintdef(c.oid) "
        "FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace "
        "LEFT JOIN pg_class rf ON rf.oid = c.confrelid LEFT JOIN pg_namespace rn ON rn.oid = rf.relnamespace "
        "WHERE c.contype = 'f' AND ((n.nspname = %s AND cl.relname = ANY(%s)) "
        "OR (rn.nspname = %s AND rf.relname = ANY(%s))) ORDER BY 2, 3",
        (target_schema, list(tables), target_schema, list(tables)),
    ).fetchall()
    names = []
    with conn.transaction():
        for _qualified, table, name, definition in rows:
            state_store.execute(
                "INSERT INTO {schema}.parked_foreign_keys (table_name, constraint_name, definition) "
                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (table, name, definition),
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(target_schema, table), sql.Identifier(name)
                )
            )
            names.append(f"{table}.{name}")
    return names


class RestoredFk(msgspec.Struct, frozen=True):
    table: str
    name: str
    error: str | None = None


def restore_foreign_keys(state_store: StateStore, target_schema: str) -> list[RestoredFk]:
    """Cutover: re-add each parked FK ``NOT VALID``, then ``VALIDATE`` it; each in its own savepoint."""
    conn = state_store.conn
    rows = state_store.execute(
        "SELECT table_name, constraint_name, definition FROM {schema}.parked_foreign_keys ORDER BY 1, 2"
    ).fetchall()
    out = []
    for table, name, definition in rows:
        ident = sql.Identifier(target_schema, table)
        text = str(definition).removesuffix(" NOT VALID")
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
                        ident, sql.Identifier(name), sql.SQL(text)
                    )
                )
                state_store.execute(
                    "DELETE FROM {schema}.parked_foreign_keys WHERE table_name = %s AND constraint_name = %s",
                    (table, name),
                )
        except WAIT_CUT_SHORT:
            raise  # a lock wait past the budget is not a broken key: the caller names the blocking session
        except psycopg.Error as exc:
            out.append(RestoredFk(table, name, pg_message(exc)))
            continue
        try:
            with conn.transaction():
                conn.execute(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(ident, sql.Identifier(name)))
            out.append(RestoredFk(table, name))
        except WAIT_CUT_SHORT:
            raise
        except psycopg.Error as exc:
            out.append(RestoredFk(table, name, pg_message(exc)))
    return out
