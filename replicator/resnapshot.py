"""The online re-snapshot of one table, and the durable record that one is owed.

The daemon reloads a table when drift shows it lost journal coverage (a capture trigger missing after
a rebuild, the key changed, VACUUM renumbered rowids) or, in create mode, when a column was added
(PostgreSQL's ``ADD COLUMN ... DEFAULT`` is not SQLite's: existing rows must be copied again). Once
the capture triggers are reinstalled, drift no longer shows anything, so the reload that is still owed
is written down in PostgreSQL first (``{state}.resnapshot_pending``) and struck off by the reload's
own transaction. Commits in order, and what a crash (or a transient error, which restarts the loop
the same way) right after each one leaves::

    1. ADD COLUMN + saved plan (create mode only)   drift still shows the column (the install record
                                                     lacks it): found again; the plan already has it,
                                                     so nothing is added twice
    2. pending row(s)                                drift still shows (triggers not reinstalled yet):
                                                     found again, marked again (idempotent)
    3. triggers reinstalled (SQLite)                 no drift any more; the pending row makes the next
                                                     start reload the table
    4. reload + digest + checkpoint + pending row    done; journal entries from before the reload's read
       struck off (one PostgreSQL transaction)       are applied again later, harmless (state-based apply)

A crash before 2 leaves the drift visible; from 2 until 4 the row is there; 4 is atomic. The reload's
SQLite read starts after 3 committed, so every change made while coverage was missing is in it and
every later change is journaled. The reload is state-based (empty the table, copy it whole), so
redoing it is always safe. The worker redoes owed reloads at start-up and at every cycle, after the
drift check (which reinstalls triggers still missing) and before it applies a batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from checkpoints import store
from checkpoints.model import Checkpoint, TableChange, next_checkpoint
from replicator import apply, faults, pgschema, snapshot, state
from replicator.config import Config

_DDL: Final = """CREATE TABLE IF NOT EXISTS {schema}.resnapshot_pending (
    table_name text PRIMARY KEY,
    reason text NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
)"""


class Reloaded(msgspec.Struct, frozen=True):
    checkpoint: Checkpoint
    rows: int


def ensure(conn: psycopg.Connection[Any], schema_name: str) -> None:
    conn.execute(sql.SQL(_DDL).format(schema=sql.Identifier(schema_name)))


def mark(conn: psycopg.Connection[Any], schema_name: str, tables: Iterable[tuple[str, str]]) -> None:
    """Record (table, reason) reloads as owed; call in a transaction that commits before the triggers are
    reinstalled."""
    for table, reason in tables:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.resnapshot_pending (table_name, reason) VALUES (%s, %s) "
                "ON CONFLICT (table_name) DO UPDATE SET reason = EXCLUDED.reason"
            ).format(sql.Identifier(schema_name)),
            (table, reason),
        )


def clear(conn: psycopg.Connection[Any], schema_name: str, table: str) -> None:
    conn.execute(
        sql.SQL("DELETE FROM {}.resnapshot_pending WHERE table_name = %s").format(sql.Identifier(schema_name)),
        (table,),
    )


def pending(conn: psycopg.Connection[Any], schema_name: str) -> dict[str, str]:
    """Owed reloads: table → reason, oldest first."""
    rows = conn.execute(
        sql.SQL("SELECT table_name, reason FROM {}.resnapshot_pending ORDER BY since, table_name").format(
            sql.Identifier(schema_name)
        )
    ).fetchall()
    return {str(t): str(r) for t, r in rows}


def reload(
    conn: psycopg.Connection[Any],
    *,
    source: Path,
    config: Config,
    plan: pgschema.SchemaPlan,
    target: apply.TableTarget,
    prev: Checkpoint,
    fk: apply.FkMode,
    state_schema: str,
) -> Reloaded:
    """Reload one table from a fresh SQLite read transaction, with an empty-range checkpoint and the pending
    row struck off, in one PostgreSQL transaction."""
    table = target.source
    identity = state.source_identity(source)
    sconn = snapshot.open_source(source, config)
    try:
        with conn.transaction():
            run_id = state.start_run(conn, state_schema, command="resnapshot", mode=plan.mode, source=identity)
        with conn.transaction():
            if fk == "replica":
                conn.execute("SET LOCAL session_replication_role = replica")
            result = snapshot.load_table(
                sconn,
                conn,
                plan,
                plan.table(table),
                policy=config.snapshot.on_bad_value,
                state_schema=state_schema,
                source=identity,
                run_id=run_id,
            )
            digest = apply.table_digest_of(conn, target)
            conn.execute(
                sql.SQL(
                    "UPDATE {}.apply_tables SET digest_count = %s, digest = %s, error = NULL, hint = NULL "
                    "WHERE table_name = %s"
                ).format(sql.Identifier(state_schema)),
                (digest.count, digest.hexdigest(), table),
            )
            cp = next_checkpoint(prev, seq_to=prev.seq_to, tables={table: TableChange.of(digest)})
            store.append(conn, cp, state_schema)
            state.finish_run(conn, state_schema, run_id, status="ok", rows=result.rows, quarantined=result.quarantined)
            clear(conn, state_schema, table)
            faults.point("resnapshot.before_commit")
    finally:
        sconn.close()
    return Reloaded(cp, result.rows)
