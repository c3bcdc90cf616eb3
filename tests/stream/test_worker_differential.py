"""Randomized differential test: random app transactions (every op kind) while the daemon applies
concurrently in a thread; after the final drain PostgreSQL equals SQLite row by row."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import psycopg
import pytest

from replicator.stream.worker import RunResult, Worker
from tests.support.compare import check_same, drain
from tests.support.daemon import cfg
from tests.support.source import app, make_source
from tests.support.workload import SCHEMA, random_transaction


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
