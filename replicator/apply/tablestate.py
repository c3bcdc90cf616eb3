"""Each applied table's row in the state schema (``apply_tables``): running digest, counters, last seq, error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from replicator.apply.digests import TableResult, table_digest_of
from replicator.plan.shape import TableShape


def read_digests(conn: psycopg.Connection[Any], schema_name: str, tables: Sequence[str]) -> dict[str, tuple[int, str]]:
    rows = conn.execute(
        sql.SQL("SELECT table_name, digest_count, digest FROM {}.apply_tables WHERE table_name = ANY(%s)").format(
            sql.Identifier(schema_name)
        ),
        (list(tables),),
    ).fetchall()
    return {str(n): (int(c), str(d)) for n, c, d in rows}


def write_table_state(
    conn: psycopg.Connection[Any], schema_name: str, t: TableShape, result: TableResult, last_seq: int
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.apply_tables AS a (table_name, target_table, digest_count, digest, upserted, deleted, "
            "conflicts, quarantined, last_seq, last_change_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now()) "
            "ON CONFLICT (table_name) DO UPDATE SET digest_count = EXCLUDED.digest_count, digest = EXCLUDED.digest, "
            "upserted = a.upserted + EXCLUDED.upserted, deleted = a.deleted + EXCLUDED.deleted, "
            "conflicts = a.conflicts + EXCLUDED.conflicts, quarantined = a.quarantined + EXCLUDED.quarantined, "
            "last_seq = EXCLUDED.last_seq, last_change_at = EXCLUDED.last_change_at"
        ).format(sql.Identifier(schema_name)),
        (
            t.source,
            t.target,
            result.digest_count,
            result.digest_hex,
            result.change.upserted,
            result.change.deleted,
            result.conflicts,
            result.quarantined,
            last_seq,
        ),
    )


def set_table_error(
    conn: psycopg.Connection[Any], schema_name: str, table: str, target: str, error: str | None, hint: str | None
) -> None:
    """Record (or clear, with None) a table's error: a table in error never disappears from status."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.apply_tables AS a (table_name, target_table, digest_count, digest, error, hint) "
            "VALUES (%s, %s, 0, %s, %s, %s) ON CONFLICT (table_name) DO UPDATE SET error = EXCLUDED.error, "
            "hint = EXCLUDED.hint"
        ).format(sql.Identifier(schema_name)),
        (table, target, "0" * 64, error, hint),
    )


def clear_table_errors(conn: psycopg.Connection[Any], schema_name: str) -> None:
    conn.execute(
        sql.SQL("UPDATE {}.apply_tables SET error = NULL, hint = NULL WHERE error IS NOT NULL").format(
            sql.Identifier(schema_name)
        )
    )


def seed_digests(conn: psycopg.Connection[Any], schema_name: str, targets: dict[str, TableShape]) -> list[str]:
    """Compute and store the running digest of every table that has none yet; returns their names."""
    have = read_digests(conn, schema_name, list(targets))
    seeded = []
    for name, t in targets.items():
        if name in have:
            continue
        digest = table_digest_of(conn, t)
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.apply_tables (table_name, target_table, digest_count, digest) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (table_name) DO UPDATE SET digest_count = EXCLUDED.digest_count, digest = EXCLUDED.digest"
            ).format(sql.Identifier(schema_name)),
            (name, t.target, digest.count, digest.hexdigest()),
        )
        seeded.append(name)
    return seeded
