"""Write outage of ``replicator cutover`` (freeze → fence committed) on a large database under app load.

    .venv/bin/python bench/cutover.py --dsn postgresql://postgres@127.0.0.1:5432/postgres --rows 1000000

Per round (untimed set-up): copy the base SQLite file (``--rows`` rows, capture installed, WAL), a
fresh PostgreSQL database, snapshot + catch-up with ``replicator run --until-drained``. Then an app
writer in a separate process commits ``--rate`` transactions per second (each: one INSERT and one
UPDATE of a random row, ``BEGIN IMMEDIATE``, busy timeout 30 s) while ``replicator cutover`` runs
in another process (preflight full verify skipped unless ``--full-verify``: it precedes the freeze
and does not touch the outage). Reported: the outage and the seconds of each step (medians over
``--rounds``), the writer's committed/fenced/other counts and its longest wait for a commit.
Targets (issue 8): outage ≤ 5 s, stretch ≤ 2 s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from triggers import install

SCHEMA = """
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL, balance REAL, created_at TEXT NOT NULL
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT, account_id INTEGER NOT NULL REFERENCES accounts (id),
    amount INTEGER NOT NULL, status TEXT NOT NULL
);
CREATE INDEX orders_account ON orders (account_id);
"""
FENCED = "writes are fenced"


def build_base(path: Path, rows: int) -> None:
    """``rows`` orders over rows/10 accounts; WAL; capture installed."""
    rng = random.Random(7)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = wal")
    conn.executescript(SCHEMA)
    accounts = max(1, rows // 10)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO accounts VALUES (?, ?, ?, ?, ?)",
        (
            (i, f"a{i}@example.com", f"name {i % 997}", rng.random() * 1000, "2024-01-01 10:00:00")
            for i in range(1, accounts + 1)
        ),
    )
    conn.executemany(
        "INSERT INTO orders (account_id, amount, status) VALUES (?, ?, ?)",
        (
            (rng.randint(1, accounts), rng.randint(1, 10_000), rng.choice(("new", "paid")))
            for _ in range(rows - accounts)
        ),
    )
    conn.execute("COMMIT")
    conn.close()
    install.install(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # one self-contained file to copy per round
    conn.close()


def writer(path: str, rate: int, stop: Any, out: Any) -> None:
    """The app: ``rate`` txn/s until ``stop`` is set; counts outcomes and the longest wait for one."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    (accounts,) = conn.execute("SELECT max(id) FROM accounts").fetchone()
    rng = random.Random(os.getpid())
    committed = fenced = other = 0
    worst = 0.0
    first_fenced: float | None = None
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        started = time.monotonic()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO orders (account_id, amount, status) VALUES (?, ?, 'new')",
                (rng.randint(1, accounts), rng.randint(1, 10_000)),
            )
            conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = ?", (rng.randint(1, accounts),))
            conn.execute("COMMIT")
            committed += 1
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if FENCED in str(exc):
                fenced += 1
                first_fenced = first_fenced or time.time()
            else:
                other += 1
        worst = max(worst, time.monotonic() - started)
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    out.put({"committed": committed, "fenced": fenced, "other": other, "worst_wait_s": round(worst, 3)})


def fresh_db(admin: str, n: int) -> str:
    name = f"bench_cutover_{os.getpid()}_{n}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(admin, dbname=name)


def drop_db(admin: str, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))


def replicator(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    cmd = [sys.executable, "-m", "replicator", *args, "--log-format", "json", "-q"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


def one_round(
    base: Path, work: Path, admin: str, n: int, rate: int, warm_s: float, full_verify: bool
) -> dict[str, Any]:
    source = work / f"round{n}.db"
    shutil.copy(base, source)
    dsn = fresh_db(admin, n)
    try:
        started = time.monotonic()
        done = replicator("run", "--source", str(source), "--target", dsn, "--until-drained")
        assert done.returncode == 0, done.stderr[-2000:]
        setup_s = time.monotonic() - started
        out: Any = multiprocessing.Queue()
        stop = multiprocessing.Event()
        app = multiprocessing.Process(target=writer, args=(str(source), rate, stop, out))
        app.start()
        time.sleep(warm_s)
        args = ["cutover", "--source", str(source), "--target", dsn, "--json"]
        args += ["--backup-dir", str(work / f"backups{n}"), "--certificate", str(work / f"cert{n}.json")]
        if not full_verify:
            args.append("--skip-full-verify")
        started = time.monotonic()
        done = replicator(*args)
        wall = time.monotonic() - started
        time.sleep(1.0)
        stop.set()
        counts = out.get(timeout=60)
        app.join()
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout)
        return {
            "setup_s": setup_s,
            "wall_s": wall,
            "outage_s": result["write_outage_s"],
            "steps": result["steps"],
            "app": counts,
        }
    finally:
        drop_db(admin, dsn)
        source.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dsn", default=os.environ.get("REPLICATOR_TEST_DSN", "postgresql://postgres@127.0.0.1/postgres")
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=500, help="app transactions per second before the freeze")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warm", type=float, default=3.0, help="seconds of app load before cutover starts")
    parser.add_argument("--full-verify", action="store_true", help="keep the preflight's full verify")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cutover-") as tmp:
        work = Path(tmp)
        base = work / "base.db"
        started = time.monotonic()
        build_base(base, args.rows)
        print(
            f"base: {args.rows:,} rows, {base.stat().st_size / 1e6:.0f} MB, built in {time.monotonic() - started:.1f}s"
        )
        rounds = []
        for n in range(args.rounds):
            r = one_round(base, work, args.dsn, n, args.rate, args.warm, args.full_verify)
            steps = ", ".join(f"{k} {v:.3f}" for k, v in r["steps"].items())
            timing = f"outage {r['outage_s']:.3f}s (wall {r['wall_s']:.1f}s, setup {r['setup_s']:.1f}s)"
            print(f"round {n + 1}: {timing}; {steps}")
            print(f"  app writer: {r['app']} (worst_wait_s: its longest wait for one transaction)")
            rounds.append(r)
    print(f"\nmedian write outage over {len(rounds)} round(s): {statistics.median(r['outage_s'] for r in rounds):.3f}s")
    names = list(rounds[0]["steps"])
    for name in names:
        print(f"  {name:<12} {statistics.median(r['steps'].get(name, 0.0) for r in rounds):8.3f}s")
    in_outage = ("drain", "verify", "finish_pg", "fence", "commit")
    print("  (in the outage: " + ", ".join(in_outage) + "; freeze is mostly the wait for the write lock, before it)")


if __name__ == "__main__":
    main()
