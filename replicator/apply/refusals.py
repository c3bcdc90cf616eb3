"""The quarantine as the apply keeps it: the quarantine rows of a batch's keys are replaced with the batch's refusals,
so a key fixed in SQLite leaves the quarantine when its row is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from replicator.apply.lookup import KeyTuple
from replicator.values import quarantine


def record_refusals(
    conn: psycopg.Connection[Any],
    schema_name: str,
    table: str,
    key_columns: Sequence[str],
    keys: Sequence[KeyTuple],
    refusals: Sequence[quarantine.Refusal],
) -> None:
    """Replace the quarantine rows of exactly these keys: a key fixed in SQLite leaves the quarantine."""

    target = sql.Identifier(schema_name, "quarantine")
    named = [json.dumps(quarantine.make(table, dict(zip(key_columns, k, strict=True)), "", None, "").key) for k in keys]
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE table_name = %s AND key = ANY(%s::jsonb[])").format(target), (table, named)
    )
    quarantine.insert(conn, schema_name, refusals, None, "row skipped by apply")


def has_quarantine(conn: psycopg.Connection[Any], schema_name: str, table: str) -> bool:
    """Whether the table has quarantine rows, acknowledged or not: a key the batch names leaves the
    quarantine when its row is written (acknowledged, it would still make verify and cutover leave the
    row out of SQLite's side while PostgreSQL holds it)."""
    row = conn.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE table_name = %s)").format(
            sql.Identifier(schema_name, "quarantine")
        ),
        (table,),
    ).fetchone()
    return bool(row and row[0])
