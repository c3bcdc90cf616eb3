"""Each applied table's row in the state schema (``apply_tables``): running digest, counters, last seq, error."""

from __future__ import annotations

from collections.abc import Sequence

from checkpoints.digest import TableDigest
from replicator.apply.digests import TableResult, table_digest_of
from replicator.plan.shape import TableShape
from replicator.state.store import StateStore


def read_digests(state_store: StateStore, tables: Sequence[str]) -> dict[str, tuple[int, str]]:
    rows = state_store.execute(
        "SELECT table_name, digest_count, digest FROM {schema}.apply_tables WHERE table_name = ANY(%s)",
        (list(tables),),
    ).fetchall()
    return {str(n): (int(c), str(d)) for n, c, d in rows}


def write_table_state(state_store: StateStore, t: TableShape, result: TableResult, last_seq: int) -> None:
    state_store.execute(
        "INSERT INTO {schema}.apply_tables AS a (table_name, target_table, digest_count, digest, upserted, deleted, "
        "conflicts, quarantined, last_seq, last_change_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now()) "
        "ON CONFLICT (table_name) DO UPDATE SET digest_count = EXCLUDED.digest_count, digest = EXCLUDED.digest, "
        "upserted = a.upserted + EXCLUDED.upserted, deleted = a.deleted + EXCLUDED.deleted, "
        "conflicts = a.conflicts + EXCLUDED.conflicts, quarantined = a.quarantined + EXCLUDED.quarantined, "
        "last_seq = EXCLUDED.last_seq, last_change_at = EXCLUDED.last_change_at",
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


def set_table_error(state_store: StateStore, table: str, target: str, error: str | None, hint: str | None) -> None:
    """Record (or clear, with None) a table's error: a table in error never disappears from status."""
    state_store.execute(
        "INSERT INTO {schema}.apply_tables AS a (table_name, target_table, digest_count, digest, error, hint) "
        "VALUES (%s, %s, 0, %s, %s, %s) ON CONFLICT (table_name) DO UPDATE SET error = EXCLUDED.error, "
        "hint = EXCLUDED.hint",
        (table, target, "0" * 64, error, hint),
    )


def clear_table_errors(state_store: StateStore) -> None:
    state_store.execute("UPDATE {schema}.apply_tables SET error = NULL, hint = NULL WHERE error IS NOT NULL")


def seed_digests(state_store: StateStore, targets: dict[str, TableShape]) -> list[str]:
    """Compute and store the running digest of every table that has none yet; returns their names."""
    have = read_digests(state_store, list(targets))
    seeded = []
    for name, t in targets.items():
        if name in have:
            continue
        digest = table_digest_of(state_store.conn, t)
        state_store.execute(
            "INSERT INTO {schema}.apply_tables (table_name, target_table, digest_count, digest) "
            "VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (table_name) DO UPDATE SET digest_count = EXCLUDED.digest_count, digest = EXCLUDED.digest",
            (name, t.target, digest.count, digest.hexdigest()),
        )
        seeded.append(name)
    return seeded


def restate_digest(state_store: StateStore, table: str, t: TableShape, digest: TableDigest) -> None:
    """A table reloaded whole (the online re-snapshot): its running digest restarts from the rows now in
    PostgreSQL, and an error it was parked with is cleared; the apply counters carry on."""
    state_store.execute(
        "INSERT INTO {schema}.apply_tables AS a (table_name, target_table, digest_count, digest) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (table_name) DO UPDATE SET "
        "target_table = EXCLUDED.target_table, digest_count = EXCLUDED.digest_count, "
        "digest = EXCLUDED.digest, error = NULL, hint = NULL",
        (table, t.target, digest.count, digest.hexdigest()),
    )
