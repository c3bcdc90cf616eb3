"""The snapshot reads one consistent SQLite state while the app keeps writing (WAL, one read transaction)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from replicator import config
from replicator.load import snapshot
from replicator.state.identity import source_identity

CFG = config.load(None, environ={})


def test_writes_committed_after_the_read_transaction_starts_are_not_loaded(
    tmp_path: Path, pg_dsn: str, pg: Any
) -> None:
    path = tmp_path / "live.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = wal")
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total NUMERIC(10,2))")
        conn.execute("CREATE TABLE lines (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders(id))")
        conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i * 1.5) for i in range(1, 101)])
        conn.executemany("INSERT INTO lines VALUES (?, ?)", [(i, i) for i in range(1, 101)])
    reader = snapshot.open_source(path, CFG)
    try:
        writer = sqlite3.connect(path)
        with writer:  # the app commits while the snapshot's read transaction is open
            writer.execute("INSERT INTO orders VALUES (101, 9.99)")
            writer.execute("INSERT INTO lines VALUES (101, 101)")
            writer.execute("DELETE FROM lines WHERE id = 1")
        writer.close()
        result = snapshot.snapshot_from(reader, source_identity(path), pg_dsn, CFG, fetch_rows=7)
    finally:
        reader.close()
    assert {t.table: t.rows for t in result.tables} == {"orders": 100, "lines": 100}
    assert pg.execute("SELECT max(id), min(id) FROM lines").fetchone() == (100, 1)
    assert pg.execute("SELECT sum(total) FROM orders").fetchone()[0] == sum(i * 15 for i in range(1, 101)) / 10
