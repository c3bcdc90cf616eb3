"""``replicator finalize``: end the rollback window and stay on PostgreSQL.

One PostgreSQL transaction: the ``finalize`` checkpoint seals the chain (nothing may follow it), the reverse
capture leaves every table (the app's writes cost nothing more), the journal is emptied and the window's row
says it closed. The SQLite file stays fenced: it is the record of the day of the cutover plus what the window
carried back, and nothing writes to it any more.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from checkpoints import store
from checkpoints.model import Kind, next_checkpoint
from replicator import log
from replicator.config import Config
from replicator.reverse import loop
from replicator.reverse.writer import first_horizon
from replicator.state import reverse


class Finalized(msgspec.Struct, frozen=True):
    checkpoint: int
    hash: str
    opened_at: str
    entries_dropped: int
    """Reverse journal entries not yet written back when the window closed: SQLite will never hold them (it is
    not the app's database any more)."""


def finalize(source: Path, dsn: str, config: Config) -> Finalized:
    with loop.opened(source, dsn, config) as session:
        conn, schema = session.pconn, session.schema
        stats = reverse.journal_stats(conn, schema)
        with conn.transaction():
            sealed = next_checkpoint(
                session.head, seq_to=first_horizon(session.head) - 1, tables={}, kind=Kind.FINALIZE
            )
            store.append(conn, sealed, schema)
            reverse.remove(conn, schema, list(session.shapes.values()))
            reverse.close(conn, schema, "finalize", f"finalized at checkpoint {sealed.number}: PostgreSQL for good")
        log.get("finalize", source=str(source)).info(
            "rollback window closed: PostgreSQL for good", checkpoint=sealed.number
        )
        return Finalized(sealed.number, sealed.hash, session.window.opened_at, stats.entries if stats else 0)
