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


def given_ids(conn: psycopg.Connection[Any], plan: SchemaPlan) -> dict[str, int]:
    """Per AUTOINCREMENT table (SQLite name), the last id its PostgreSQL sequence gave (tables whose sequence
    never gave one are left out): the other direction of :func:`sync_sequences`, for a rollback."""
    given: dict[str, int] = {}
    for table in plan.tables:
        key = [c.name for c in table.columns if table.key_source == (c.source,)]  # the INTEGER PRIMARY KEY's
        if not table.autoincrement or len(key) != 1:
            continue
        qualified = sql.Identifier(plan.schema, table.name).as_string(conn)
        row = conn.execute(
            "SELECT pg_catalog.pg_sequence_last_value(pg_get_serial_sequence(%s, %s)::regclass)",
            (qualified, truncated(key[0])),
        ).fetchone()
        if row is not None and row[0] is not None:
            given[table.source] = int(row[0])
    return given


def carry_to_sqlite(conn: sqlite3.Connection, given: Mapping[str, int]) -> None:
    """Move SQLite's AUTOINCREMENT counters (``sqlite_sequence``) up to ``given``, never down, in one write
    transaction on ``conn`` (autocommit mode).

    Why: AUTOINCREMENT promises that an id is never given twice, even after its row is deleted. After a rollback
    window PostgreSQL has given ids whose rows the app deleted there; they never reached SQLite, whose counter
    would give them again. Only forward: running it twice, or after SQLite's own inserts, changes nothing."""
    if not given:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name, last in given.items():
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (name,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, last))
            elif int(row[0]) < last:
                conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (last, name))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
