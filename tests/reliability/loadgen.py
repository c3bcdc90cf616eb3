"""A load generator in its own process: random app transactions of every op kind against a SQLite file.

``python -m tests.reliability.loadgen DB --seconds N --seed S --tps T [--create ROWS] [--transactions M]``

Transaction ``i`` draws from ``random.Random(f"{seed}:{i}")``, so the sequence of transactions is
deterministic by seed whatever the timing (a transaction refused by SQLITE_BUSY is retried with the
same draw). The ops are the daemon's hard cases: INSERT OR REPLACE (victims on a secondary UNIQUE),
UPSERT, primary-key changes, cascading deletes and key updates, a WITHOUT ROWID composite key, blobs.
``--create ROWS`` makes the schema with ROWS bulk rows (so a snapshot COPY takes a while) and installs
capture. The last stdout line is a JSON summary. Bounded: by ``--seconds`` and ``--transactions``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path
from types import FrameType

from tests.test_worker_differential import SCHEMA as DIFF_SCHEMA
from tests.test_worker_differential import random_transaction

SCHEMA = (
    DIFF_SCHEMA
    + """
CREATE TABLE event (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id INTEGER REFERENCES parent (id) ON DELETE SET NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    amount NUMERIC,
    payload BLOB
);
"""
)
TABLES = ("parent", "child", "tag", "event")


def create(path: Path, rows: int, seed: int = 0) -> Path:
    """The app's schema, ``rows`` bulk events (plus a few parents), capture installed."""
    from triggers import install

    rng = random.Random(f"create:{seed}")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = wal")
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO parent VALUES (?, ?, ?, ?)", [(i, f"n{i}", rng.random(), None) for i in range(1, 21)]
        )
        conn.executemany(
            "INSERT INTO event (parent_id, kind, at, amount, payload) VALUES (?, ?, ?, ?, ?)",
            [
                (
                    rng.choice([None, *range(1, 21)]),
                    rng.choice(["view", "buy", "refund"]),
                    f"2024-01-{1 + i % 28:02d} 12:{i % 60:02d}:00",
                    f"{rng.randint(0, 10**6)}.{rng.randint(0, 99):02d}",
                    rng.randbytes(rng.randint(0, 64)),
                )
                for i in range(rows)
            ],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    install.install(path)
    return path


def transaction(db: sqlite3.Connection, rng: random.Random) -> None:
    """One app transaction: the differential test's mix (REPLACE, UPSERT, PK changes, cascades) or events."""
    if rng.random() < 0.8:
        random_transaction(db, rng)
        return
    db.execute("BEGIN IMMEDIATE")
    pid = rng.randint(1, 40)
    kind = rng.randrange(4)
    if kind == 0:
        db.execute(
            "INSERT INTO event (parent_id, kind, at, amount, payload) VALUES "
            "((SELECT id FROM parent WHERE id = ?), 'buy', datetime('now'), ?, ?)",
            (pid, f"{rng.randint(0, 999)}.5", rng.randbytes(8)),
        )
    elif kind == 1:
        db.execute("UPDATE event SET amount = amount + 1 WHERE id IN (SELECT id FROM event ORDER BY random() LIMIT 3)")
    elif kind == 2:
        db.execute("DELETE FROM event WHERE id = (SELECT max(id) FROM event)")
    else:
        db.execute(
            "REPLACE INTO event (id, parent_id, kind, at) VALUES (?, NULL, 'view', '2024-02-02 00:00:00')", (pid,)
        )
    db.execute("COMMIT")


class Summary:
    def __init__(self) -> None:
        self.transactions = 0
        self.busy_retries = 0
        self.seconds = 0.0

    def json(self) -> str:
        return json.dumps(
            {"transactions": self.transactions, "busy_retries": self.busy_retries, "seconds": round(self.seconds, 3)}
        )


def run(path: Path, *, seconds: float, seed: int, tps: float, transactions: int | None = None) -> Summary:
    """Write until ``seconds`` pass or ``transactions`` commit (or SIGTERM), paced at ``tps``."""
    stop = False

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    with contextlib.suppress(ValueError):  # not the main thread (called from a test)
        signal.signal(signal.SIGTERM, on_term)
    summary = Summary()
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA busy_timeout = 30000")
    started = time.monotonic()
    deadline = started + seconds
    limit = transactions if transactions is not None else 10**9
    interval = 1.0 / tps if tps > 0 else 0.0
    i = 0
    try:
        while not stop and i < limit and time.monotonic() < deadline:
            rng = random.Random(f"{seed}:{i}")
            try:
                transaction(db, rng)
            except sqlite3.OperationalError as exc:  # busy past the timeout (a cutover's freeze): same draw again
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if db.in_transaction:
                    db.execute("ROLLBACK")
                summary.busy_retries += 1
                time.sleep(0.05)
                continue
            except sqlite3.DatabaseError as exc:  # fenced by a cutover: stop writing, as the app would
                if "fenced" in str(exc):
                    break
                raise
            i += 1
            summary.transactions = i
            if interval:
                sleep = started + i * interval - time.monotonic()
                if sleep > 0:
                    time.sleep(min(sleep, max(0.0, deadline - time.monotonic())))
    finally:
        summary.seconds = time.monotonic() - started
        db.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.loadgen", description=__doc__)
    parser.add_argument("db", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tps", type=float, default=100.0, help="transactions per second (0: as fast as possible)")
    parser.add_argument("--transactions", type=int, default=None, help="stop after this many transactions")
    parser.add_argument("--create", type=int, default=None, metavar="ROWS", help="create the schema first")
    args = parser.parse_args(argv)
    if args.create is not None:
        create(args.db, args.create, args.seed)
    summary = run(args.db, seconds=args.seconds, seed=args.seed, tps=args.tps, transactions=args.transactions)
    print(summary.json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
