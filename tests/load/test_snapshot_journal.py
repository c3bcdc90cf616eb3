"""The snapshot and the journal: the mark, the genesis checkpoint, and the handoff to streaming.

The app writes through the whole snapshot (a writer thread, committing between the loader's
batches); afterwards the daemon streams from the recorded mark. Every row must then equal SQLite's:
nothing lost (an entry after the mark not applied), nothing doubled (a row loaded and inserted again).
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from checkpoints import audit, store
from checkpoints.digest import TableDigest, kinds_from_oids
from checkpoints.model import Kind
from replicator import config
from replicator.errors import TargetNotEmpty
from replicator.load import snapshot
from replicator.state.identity import source_identity
from replicator.state.store import StateStore
from replicator.stream.worker import Worker
from tests.support.compare import assert_same
from tests.support.source import AppThread, make_source
from triggers import install, journal

SCHEMA = """
CREATE TABLE customer (
    id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT, score REAL, born DATETIME, avatar BLOB
);
CREATE TABLE purchase (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customer (id),
    amount NUMERIC(10,2),
    meta JSON,
    at DATETIME NOT NULL
);
CREATE INDEX purchase_customer ON purchase (customer_id);
"""
ROWS = 3_000


def cfg() -> config.Config:
    return config.load(overrides={"apply": {"poll_interval_s": 0.05}}, environ={})


def customers(path: Path) -> Path:
    """``ROWS`` customers with a purchase each (seeded values), capture installed after them."""
    make_source(path, SCHEMA, capture=False)
    conn = sqlite3.connect(path, isolation_level=None)
    rnd = random.Random(5)
    conn.execute("BEGIN")
    for i in range(1, ROWS + 1):
        conn.execute(
            "INSERT INTO customer VALUES (?, ?, ?, ?, ?, ?)",
            (
                i,
                f"c{i}@example.com",
                f"name {i}",
                rnd.random() * 100,
                f"1990-01-{1 + i % 28:02d} 10:00:00",
                b"\x00" * 8,
            ),
        )
        conn.execute(
            "INSERT INTO purchase VALUES (?, ?, ?, ?, ?)",
            (i, i, f"{i % 997}.{i % 100:02d}", f'{{"k": {i}, "tags": ["a", "b"]}}', 1_700_000_000_000 + i),
        )
    conn.execute("COMMIT")
    conn.close()
    install.install(path)
    return path


class App(AppThread):
    """The live app: inserts, updates, deletes and key changes, one small transaction at a time."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.rnd = random.Random(11)
        self.next_id = ROWS + 1

    def transaction(self, conn: sqlite3.Connection) -> None:
        op = self.rnd.randrange(5)
        if op == 0:
            conn.execute(
                "INSERT INTO customer VALUES (?, ?, 'new', 1.5, '2024-01-01 00:00:00', X'01')",
                (self.next_id, f"n{self.next_id}@example.com"),
            )
            conn.execute(
                "INSERT INTO purchase VALUES (?, ?, '1.00', '{}', 1700000000000)", (self.next_id, self.next_id)
            )
            self.next_id += 1
        elif op == 1:
            conn.execute(
                "UPDATE customer SET score = score + 1, name = 'upd' WHERE id = ?", (self.rnd.randrange(1, ROWS),)
            )
        elif op == 2:
            victim = self.rnd.randrange(1, ROWS)
            conn.execute("DELETE FROM purchase WHERE customer_id = ?", (victim,))
        elif op == 3:
            conn.execute(
                "UPDATE purchase SET amount = '9.99', meta = '[1,2]' WHERE id = ?", (self.rnd.randrange(1, ROWS),)
            )
        else:  # a key change: journaled with its old key
            old = self.rnd.randrange(1, ROWS)
            conn.execute("UPDATE purchase SET id = ? WHERE id = ?", (self.next_id + 1_000_000, old))
            self.next_id += 1


class WaitForApp:
    """Progress hook: after each loaded batch, let the app commit a few times (forces interleaving)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.batches = 0

    def start(self, table: str, total: int) -> None:
        pass

    def advance(self, table: str, rows: int) -> None:
        self.batches += 1
        self.app.wait_for_commits(self.app.commits + 3)

    def finish(self, table: str, rows: int, seconds: float) -> None:
        pass


def read_back_digests(conn: psycopg.Connection[Any], plan: Any) -> dict[str, tuple[int, str]]:
    """Each target table's digest as psycopg reads it back (binary), json columns parsed."""
    out = {}
    for table in plan.tables:
        cols = [c.name for c in table.load_columns]
        query = psycopg.sql.SQL("SELECT {} FROM {}").format(
            psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, cols)),
            psycopg.sql.Identifier(plan.schema, table.name),
        )
        with conn.cursor(binary=True) as cur:
            cur.execute(query)
            assert cur.description is not None
            digest = TableDigest(kinds_from_oids(d.type_code for d in cur.description))
            digest.add_rows(cur.fetchall())
        out[table.source] = (digest.count, digest.hexdigest())
    return out


def test_mark_genesis_and_handoff_under_concurrent_writes(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = customers(tmp_path / "app.db")
    app = App(path)
    app.start()
    app.wait_for_commits(5)  # the journal has entries before the snapshot starts
    hook = WaitForApp(app)
    try:
        result = snapshot.snapshot(path, pg_dsn, cfg(), fetch_rows=250, progress=hook)
    finally:
        app.stop.set()
        app.join()
    assert app.error is None
    assert hook.batches >= 20
    assert app.commits >= 60
    assert result.snapshot_seq is not None
    assert result.genesis_hash is not None

    # The mark is the journal head of the read transaction: entries after it were not loaded.
    with sqlite3.connect(path) as sconn:
        head = journal.head(sconn)
    assert 0 < result.snapshot_seq < head

    # The genesis: checkpoint 1, seq_to = the mark, per-table counts and checksums equal to what
    # PostgreSQL holds, read back (so snapshot checksums, verify and the checkpoints agree).
    chain = store.read(pg, schema="replicator")
    assert len(chain) == 1
    first = chain[0]
    assert first.kind is Kind.GENESIS
    assert first.seq_to == result.snapshot_seq
    assert first.hash == result.genesis_hash
    assert result.plan is not None
    back = read_back_digests(pg, result.plan)
    assert {n: (c.upserted, c.upserted_digest) for n, c in first.tables.items()} == back
    assert {t.table: (t.rows, t.checksum) for t in result.tables} == back
    mark = StateStore(pg, "replicator").read_mark()
    assert mark is not None
    assert mark.snapshot_seq == result.snapshot_seq
    assert mark.genesis_hash == first.hash
    recorded = pg.execute("SELECT table_name, checksum, snapshot_seq FROM replicator.snapshot_tables").fetchall()
    assert {r[0]: (r[1], r[2]) for r in recorded} == {n: (back[n][1], result.snapshot_seq) for n in back}

    # The handoff: the daemon streams from the mark; afterwards every row equals SQLite's.
    run = Worker(path, pg_dsn, cfg()).run(until_drained=True)
    assert run.applied_seq == head
    assert_same(path, pg, result.plan)
    assert audit.verify(store.records(pg)) == []
    chain = store.read(pg, schema="replicator")
    assert chain[0].hash == first.hash
    assert chain[1].seq_from == result.snapshot_seq + 1


def test_without_capture_no_genesis_and_no_mark(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = tmp_path / "plain.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');")
    result = snapshot.snapshot(path, pg_dsn, cfg())
    assert result.snapshot_seq is None
    assert result.genesis_hash is None
    assert pg.execute("SELECT count(*) FROM replicator.checkpoints").fetchone() == (0,)
    mark = StateStore(pg, "replicator").read_mark()
    assert mark is not None
    assert mark.snapshot_seq is None
    assert mark.source_id == source_identity(path).id
    assert result.tables[0].checksum == read_back_digests(pg, result.plan)["t"][1]


def test_replace_starts_a_new_chain_and_a_plain_rerun_is_refused(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = customers(tmp_path / "app.db")
    first = snapshot.snapshot(path, pg_dsn, cfg())
    with pytest.raises(TargetNotEmpty, match=r"customer, purchase"):
        snapshot.snapshot(path, pg_dsn, cfg())
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM purchase WHERE id <= 10")
    second = snapshot.snapshot(path, pg_dsn, cfg(), replace=True)
    assert second.snapshot_seq is not None
    assert first.snapshot_seq is not None
    assert second.snapshot_seq > first.snapshot_seq
    chain = store.read(pg, schema="replicator")
    assert [c.number for c in chain] == [1]
    assert chain[0].hash == second.genesis_hash != first.genesis_hash
    assert chain[0].tables["purchase"].upserted == ROWS - 10
