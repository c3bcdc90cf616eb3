"""A checkpoint chain built straight through ``checkpoints.store``, as the apply path appends it."""

from __future__ import annotations

from typing import Any

import psycopg

from checkpoints import store
from checkpoints.digest import table_digest
from checkpoints.model import Checkpoint, TableChange, genesis, next_checkpoint

SCHEMA = "replicator"


def batch_tables(step: int) -> dict[str, TableChange]:
    upserts = table_digest([(step, f"user{step}"), (step + 1, f"user{step + 1}")])
    deletes = table_digest([(step - 1,)])
    return {"users": TableChange.of(upserts, deletes)}


def build_chain(conn: psycopg.Connection[Any], length: int, schema: str = SCHEMA) -> list[Checkpoint]:
    """Genesis plus batches, each appended in its own transaction as the apply path does."""
    store.ensure_schema(conn, schema)
    snapshot = table_digest([(i, f"user{i}") for i in range(100)])
    chain = [
        genesis(
            {"users": TableChange.of(snapshot)},
            seq_to=10,
            tool="test",
        )
    ]
    with conn.transaction():
        store.append(conn, chain[0], schema)
    for step in range(2, length + 1):
        checkpoint = next_checkpoint(chain[-1], seq_to=chain[-1].seq_to + 5, tables=batch_tables(step), tool="test")
        with conn.transaction():
            store.append(conn, checkpoint, schema)
        chain.append(checkpoint)
    return chain
