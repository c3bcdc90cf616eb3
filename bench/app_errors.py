"""App errors the tool causes: a Django-style writer beside the streaming daemon, counting failed requests.

    .venv/bin/python bench/app_errors.py --dsn postgresql://postgres@127.0.0.1:5432/postgres \\
        --seconds 600 --rate 200 --mode deferred

The writer is the app, in its own process: ``--rate`` requests a second, each on a new connection (Django's
default ``CONN_MAX_AGE = 0``), each one transaction that reads and then writes 1-3 rows: ``deferred``
(``BEGIN``, Django's and Python's default: the read takes a snapshot, the first write must upgrade it) or
``immediate`` (``BEGIN IMMEDIATE``, Django's ``transaction_mode = "IMMEDIATE"``). A request that fails
(``database is locked``: SQLITE_BUSY, or SQLITE_BUSY_SNAPSHOT when another connection committed between
its read and its write) is counted and not retried, as a web app would answer it with an error.

Per run: the same writer for ``--seconds`` with no daemon first (``--baseline-seconds``: proves the app
alone fails nothing), then beside ``replicator run`` with each ``--policy`` (config overrides for the
pruner: ``default``; ``eager`` = prune after every batch, what the daemon did before, about once a
second; ``rare`` = in big prunes of 100,000 entries; ``never`` = no prune while streaming). Reported:
failed requests (and per 10 minutes), the journal's and the ``-wal``'s largest size, and the daemon's
lag at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from triggers import install

SCHEMA = """
CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE, balance REAL);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customer (id), status TEXT NOT NULL,
    total REAL NOT NULL, created_at TEXT NOT NULL
);
CREATE INDEX orders_customer ON orders (customer_id);
"""

POLICIES: dict[str, dict[str, str]] = {
    "default": {},
    "eager": {"REPLICATOR_APPLY__PRUNE_IDLE_S": "0.001", "REPLICATOR_APPLY__PRUNE_MAX_ROWS": "2000"},
    "rare": {"REPLICATOR_APPLY__PRUNE_IDLE_S": "100000", "REPLICATOR_APPLY__PRUNE_MAX_ROWS": "100000"},
    "never": {"REPLICATOR_APPLY__PRUNE_IDLE_S": "100000", "REPLICATOR_APPLY__PRUNE_MAX_ROWS": "1000000000"},
}

WRITER = r"""
import json, random, sqlite3, sys, time
path, seconds, rate, mode, seed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
rng = random.Random(seed)
ok = failed = 0
kinds = {}
started = time.monotonic()
next_at = started
n_customers = 1000
while time.monotonic() - started < seconds:
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        conn.execute("BEGIN IMMEDIATE" if mode == "immediate" else "BEGIN")
        cid = rng.randint(1, n_customers)
        conn.execute("SELECT balance FROM customer WHERE id = ?", (cid,)).fetchone()
        conn.execute("SELECT count(*) FROM orders WHERE customer_id = ?", (cid,)).fetchone()
        time.sleep(0.002)  # the view's work between its read and its write
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.6:
                conn.execute(
                    "INSERT INTO orders (customer_id, status, total, created_at) VALUES (?, 'new', ?, ?)",
                    (cid, round(rng.random() * 100, 2), time.strftime("%Y-%m-%d %H:%M:%S")),
                )
            else:
                conn.execute("UPDATE customer SET balance = coalesce(balance, 0) + 1 WHERE id = ?", (cid,))
        conn.execute("COMMIT")
        ok += 1
    except sqlite3.OperationalError as exc:
        failed += 1
        kinds[str(exc)] = kinds.get(str(exc), 0) + 1
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    finally:
        conn.close()
    next_at += 1.0 / rate
    pause = next_at - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    else:
        next_at = time.monotonic()
print(json.dumps({"ok": ok, "failed": failed, "kinds": kinds, "seconds": time.monotonic() - started}))
"""


def build(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = wal")
    conn.executescript(SCHEMA)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO customer VALUES (?, ?, ?, ?)", [(i, f"c{i}", f"c{i}@example.com", 0.0) for i in range(1, 1001)]
    )
    conn.execute("COMMIT")
    conn.close()
    install.install(path)


def fresh_db(admin: str) -> str:
    name = f"bench_app_errors_{os.getpid()}_{random.randrange(1 << 30)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(admin, dbname=name)


def drop_db(admin: str, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def replicator(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "replicator", *args], env={**os.environ, **env}, stderr=subprocess.DEVNULL, **kw
    )


def sizes(path: Path) -> tuple[int, int]:
    """Journal rows (by its seq bounds, no scan) and the -wal's bytes."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        lo, hi = conn.execute("SELECT min(seq), max(seq) FROM _replicator_journal").fetchone()
    finally:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    return (0 if lo is None else hi - lo + 1), (wal.stat().st_size if wal.exists() else 0)


def one_run(admin: str, policy: str | None, seconds: float, rate: float, mode: str, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-app-errors-") as tmp:
        path = Path(tmp) / "app.db"
        build(path)
        dsn = fresh_db(admin)
        daemon = None
        try:
            if policy is not None:
                env = {"REPLICATOR_APPLY__POLL_INTERVAL_S": "0.05", **POLICIES[policy]}
                drained = replicator(["run", "--source", str(path), "--target", dsn, "--until-drained"], env)
                if drained.wait(300) != 0:
                    raise SystemExit("the snapshot failed")
                daemon = replicator(["run", "--source", str(path), "--target", dsn], env)
                time.sleep(2)
            writer = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(path), str(seconds), str(rate), mode, str(seed)],
                stdout=subprocess.PIPE,
            )
            journal_max = wal_max = 0
            while writer.poll() is None:
                rows, wal = sizes(path)
                journal_max, wal_max = max(journal_max, rows), max(wal_max, wal)
                time.sleep(1.0)
            out, _ = writer.communicate()
            result: dict[str, Any] = json.loads(out)
            result.update(policy=policy or "no daemon", mode=mode, journal_max=journal_max, wal_max=wal_max)
            result["per_10_min"] = round(result["failed"] * 600 / result["seconds"], 2)
            return result
        finally:
            if daemon is not None:
                daemon.terminate()
                daemon.wait(60)
            drop_db(admin, dsn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="an admin DSN: a fresh database is made for each run")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--baseline-seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--mode", choices=["deferred", "immediate"], action="append")
    parser.add_argument("--policy", choices=sorted(POLICIES), action="append")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for mode in args.mode or ["deferred"]:
        if args.baseline_seconds:
            print(json.dumps(one_run(args.dsn, None, args.baseline_seconds, args.rate, mode, args.seed)), flush=True)
        for policy in args.policy or ["default"]:
            print(json.dumps(one_run(args.dsn, policy, args.seconds, args.rate, mode, args.seed)), flush=True)


if __name__ == "__main__":
    main()
