"""The plan the snapshot loaded with, saved in the target (``apply_plan``): whatever reads rows after the load
(the apply, the cutover, the certificate, the rollback) converts exactly as the load did.
"""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from psycopg import sql

from replicator.plan.schemaplan import SchemaPlan


def save_plan(conn: psycopg.Connection[Any], schema_name: str, plan: SchemaPlan) -> None:
    """Keep the plan the snapshot loaded with: the apply must convert exactly as it did."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.apply_plan (id, body) VALUES (1, %s) "
            "ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, saved_at = now()"
        ).format(sql.Identifier(schema_name)),
        (msgspec.json.encode(plan),),
    )


def load_plan(conn: psycopg.Connection[Any], schema_name: str) -> SchemaPlan | None:
    row = conn.execute(
        sql.SQL("SELECT body FROM {}.apply_plan WHERE id = 1").format(sql.Identifier(schema_name))
    ).fetchone()
    return None if row is None else msgspec.json.decode(bytes(row[0]), type=SchemaPlan)
