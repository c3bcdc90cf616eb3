"""The quarantine table (``quarantine``): the rows the load and the apply refused, kept aside with their values.

What a refusal is, and why the whole row is skipped, is :mod:`replicator.values.quarantine`'s; this module
reads and writes the rows that record them, in the caller's transaction: the load replaces a table's rows in
the transaction that reloads the table, the apply those of a batch's keys in the batch's, so they always
describe the rows missing from PostgreSQL. Cutover refuses while any row is not ``acknowledged``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec
from psycopg import sql

from replicator.state.store import StateStore
from replicator.values.quarantine import Refusal, make


def replace_for_table(state_store: StateStore, table: str, refusals: Sequence[Refusal], run_id: int | None) -> None:
    """Drop the table's previous quarantine rows and write the new ones (in the load transaction)."""
    state_store.execute("DELETE FROM {schema}.quarantine WHERE table_name = %s", (table,))
    insert(state_store, refusals, run_id, "row skipped")


def insert(state_store: StateStore, refusals: Sequence[Refusal], run_id: int | None, action: str) -> None:
    """Record ``refusals`` (the caller removed what they replace)."""
    if not refusals:
        return
    with state_store.conn.cursor() as cur:
        cur.executemany(
            state_store.query(
                "INSERT INTO {schema}.quarantine (run_id, table_name, key, column_name, storage_class, "
                "original_base64, reason, action, parent_table, parent_key, refs) "
                "VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)"
            ),
            [
                (
                    *(run_id, r.table, json.dumps(r.key), r.column, r.storage_class, r.original, r.reason, action),
                    r.parent,
                    None if r.parent_key is None else json.dumps(r.parent_key),
                    None if r.refs is None else json.dumps(r.refs),
                )
                for r in refusals
            ],
        )


def record_refusals(
    state_store: StateStore,
    table: str,
    key_columns: Sequence[str],
    keys: Sequence[tuple[Any, ...]],
    refusals: Sequence[Refusal],
) -> None:
    """The apply's: replace the quarantine rows of exactly these keys (a batch's), so a key fixed in SQLite
    leaves the quarantine when its row is written."""

    target = state_store.table("quarantine")
    named = [json.dumps(make(table, dict(zip(key_columns, k, strict=True)), "", None, "").key) for k in keys]
    state_store.conn.execute(
        sql.SQL("DELETE FROM {} WHERE table_name = %s AND key = ANY(%s::jsonb[])").format(target), (table, named)
    )
    insert(state_store, refusals, None, "row skipped by apply")


def has_quarantine(state_store: StateStore, table: str) -> bool:
    """Whether the table has quarantine rows, acknowledged or not: a key the batch names leaves the
    quarantine when its row is written (acknowledged, it would still make verify and cutover leave the
    row out of SQLite's side while PostgreSQL holds it)."""
    row = state_store.conn.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE table_name = %s)").format(state_store.table("quarantine")),
        (table,),
    ).fetchone()
    return bool(row and row[0])


def unacknowledged(state_store: StateStore) -> dict[str, int]:
    """Table → count of quarantined values nobody has acknowledged (cutover refuses while any)."""
    if not state_store.has_table("quarantine"):
        return {}
    rows = state_store.execute(
        "SELECT table_name, count(*) FROM {schema}.quarantine WHERE NOT acknowledged GROUP BY 1 ORDER BY 1"
    ).fetchall()
    return {str(t): int(n) for t, n in rows}


def acknowledge(state_store: StateStore, table: str | None = None) -> int:
    """Mark quarantined values as seen (all, or one table's); returns how many changed."""
    query = state_store.query(
        "UPDATE {schema}.quarantine SET acknowledged = true, acknowledged_at = now() WHERE NOT acknowledged"
    )
    where = sql.SQL(" AND table_name = %s") if table is not None else sql.SQL("")
    return state_store.conn.execute(query + where, (table,) if table is not None else None).rowcount


class QuarantinedValue(msgspec.Struct, frozen=True):
    """One refused value as an operator reviews it."""

    id: int
    table: str
    key: Any
    column: str
    storage_class: str
    original_base64: str
    reason: str
    action: str
    recorded_at: str
    acknowledged: bool


def list_values(state_store: StateStore, table: str | None = None, limit: int = 1000) -> list[QuarantinedValue]:
    """The quarantined values, oldest first, for review before cutover."""
    if not state_store.has_table("quarantine"):
        return []
    where = sql.SQL("WHERE table_name = %s") if table is not None else sql.SQL("")
    query = sql.SQL(
        "SELECT id, table_name, key, column_name, storage_class, original_base64, reason, action,"
        " recorded_at, acknowledged FROM {}.quarantine {} ORDER BY id LIMIT %s"
    ).format(state_store.schema, where)
    params: tuple[Any, ...] = (table, limit) if table is not None else (limit,)
    return [
        QuarantinedValue(
            id=int(r[0]),
            table=str(r[1]),
            key=r[2],
            column=str(r[3]),
            storage_class=str(r[4]),
            original_base64=str(r[5]),
            reason=str(r[6]),
            action=str(r[7]),
            recorded_at=r[8].isoformat(),
            acknowledged=bool(r[9]),
        )
        for r in state_store.conn.execute(query, params).fetchall()
    ]
