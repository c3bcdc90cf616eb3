"""Identity and serial sequences after the load: past every loaded key, and past SQLite's AUTOINCREMENT.

Why: the app inserts into PostgreSQL after the cutover; a sequence left at 1 would hand out ids the
load already wrote, and an AUTOINCREMENT table must never reuse an id SQLite gave out, even a deleted one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from replicator.plan.pgnames import truncated
from replicator.plan.schemaplan import SchemaPlan


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
            seq = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (qualified, truncated(col.name))).fetchone()
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
