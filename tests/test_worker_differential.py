"""Randomized differential test: random app transactions (every op kind) while the daemon applies
concurrently in a thread; after the final drain PostgreSQL equals SQLite row by row."""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest

from replicator.stream.worker import RunResult, Worker
from tests.test_apply_cases import app, cfg, check_same, drain, make_source

SCHEMA = """
CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, score REAL, note TEXT);
CREATE TABLE child (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE,
    code TEXT UNIQUE,
    qty INTEGER
);
CREATE TABLE tag (k TEXT NOT NULL, n INTEGER NOT NULL, label TEXT UNIQUE, PRIMARY KEY (k, n)) WITHOUT ROWID;
"""


def random_transaction(db: sqlite3.Connection, rng: random.Random) -> None:
    """One app transaction of 1-6 statements drawn from every kind of write the apply must handle."""
    db.execute("BEGIN IMMEDIATE")
    for _ in range(rng.randint(1, 6)):
        pid, cid = rng.randint(1, 40), rng.randint(1, 80)
        name, code, label = f"n{rng.randint(1, 50)}", f"c{rng.randint(1, 90)}", f"l{rng.randint(1, 30)}"
        with contextlib.suppress(sqlite3.IntegrityError):  # an FK refused it: the app's transaction goes on
            _statement(db, rng, pid, cid, name, code, label)
    if rng.random() < 0.1:
        db.execute("ROLLBACK")
    else:
        db.execute("COMMIT")


def _statement(
    db: sqlite3.Connection, rng: random.Random, pid: int, cid: int, name: str, code: str, label: str
) -> None:
    kind = rng.randrange(12)
    if kind == 0:
        db.execute("INSERT OR IGNORE INTO parent VALUES (?, ?, ?, ?)", (pid, name, rng.random(), None))
    elif kind == 1:
        db.execute("INSERT OR REPLACE INTO parent VALUES (?, ?, ?, ?)", (pid, name, rng.random(), "r"))
    elif kind == 2:
        db.execute(
            "INSERT INTO parent VALUES (?, ?, ?, 'u') ON CONFLICT (id) DO UPDATE SET score = excluded.score",
            (pid, name, rng.random()),
        )
    elif kind == 3:
        db.execute("UPDATE OR IGNORE parent SET id = ? WHERE id = ?", (rng.randint(1, 40), pid))  # PK change
    elif kind == 4:
        db.execute("DELETE FROM parent WHERE id = ?", (pid,))  # cascades to children (journaled)
    elif kind == 5:
        db.execute("UPDATE OR REPLACE parent SET name = ? WHERE id = ?", (name, pid))
    elif kind == 6:
        db.execute("INSERT OR REPLACE INTO child VALUES (?, ?, ?, ?)", (cid, pid, code, rng.randint(0, 9)))
    elif kind == 7:
        db.execute("UPDATE child SET qty = qty + 1 WHERE parent_id = ?", (pid,))
    elif kind == 8:
        db.execute("UPDATE OR IGNORE child SET id = ? WHERE id = ?", (rng.randint(1, 80), cid))
    elif kind == 9:
        db.execute("DELETE FROM child WHERE id = ?", (cid,))
    elif kind == 10:
        db.execute("INSERT OR REPLACE INTO tag VALUES (?, ?, ?)", (f"k{rng.randint(1, 4)}", rng.randint(1, 8), label))
    else:
        db.execute("UPDATE OR REPLACE tag SET label = ? WHERE k = ?", (label, f"k{rng.randint(1, 4)}"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_workload_converges_while_applying(tmp_path: Path, pg_dsn: str, seed: int) -> None:
    rng = random.Random(seed)
    path = make_source(tmp_path / "app.db", SCHEMA)
    drain(path, pg_dsn)
    worker = Worker(path, pg_dsn, cfg(batch_rows=rng.choice([1, 5, 17, 200])))
    results: list[RunResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(worker.run())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        db = app(path)
        db.execute("PRAGMA busy_timeout = 5000")
        for i in range(400):
            random_transaction(db, rng)
            if i % 50 == 0:
                time.sleep(0.05)
        time.sleep(0.3)
    finally:
        worker.stop()
        thread.join(timeout=120)
    assert not errors, errors
    assert results
    assert results[0].changes > 0
    drain(path, pg_dsn)
    counts = check_same(path, pg_dsn)
    assert sum(counts.values()) > 0
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        (checkpoints,) = conn.execute("SELECT count(*) FROM replicator.checkpoints").fetchone() or (0,)
        assert checkpoints > 2
