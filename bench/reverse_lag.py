"""Reverse lag: how long after an app's commit on PostgreSQL the fenced SQLite file shows it, with
``replicator run`` running in the reverse direction after a cutover.

    .venv/bin/python bench/reverse_lag.py --dsn postgresql://postgres@127.0.0.1:5432/postgres --rows 1000000
    .venv/bin/python bench/reverse_lag.py --quick      # tiny sizes: a smoke run of the script, not a figure

Set-up (untimed, bench/rollback.py's ``cut_over``: bench/cutover.py's base, snapshot + catch-up, cutover with
the rollback window open), then ``python -m replicator run`` as a subprocess (the reverse direction; it
polls the journal every ``replicator.reverse.loop.POLL_S``). Per round, ``--clients`` app processes commit
``--rate`` transactions per second on PostgreSQL in all, each one UPDATE of an account setting
``name = 'ts:<ns>'``; every ``--sample-every``-th commit of a client goes to one of that client's probe
accounts (ids 1..``--probe-rows``, split between the clients, in turn), the others to a random account
above them. The client notes when each sampled commit was acknowledged (CLOCK_MONOTONIC, shared by the
processes). A probe process reads the probe accounts from the SQLite file, read-only, every ``--poll-ms``
ms and notes when each value first shows. A sample's lag: first shown in SQLite − commit acknowledged;
a sample overwritten by the next one on its row before the probe saw it (counted as ``superseded``) is
shown at the latest when that later value is (values on a row only grow, and the reverse apply goes in
commit order). After ``--seconds`` the clients stop and the probe waits up to ``--drain-timeout`` s for the
last samples.

Reported per round and as medians over ``--rounds``: p50/p95/p99/max lag (ms), the achieved rate, the
samples, the superseded and never-seen ones. Goal (issue 20): p99 ≤ 250 ms at 1,000 transactions/s.
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import multiprocessing
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import cutover as cutover_bench  # bench/ is on sys.path when this file runs as a script
import psycopg
import structlog
from rollback import Daemon, cleanup, cut_over

QUICK = {"rows": 5_000, "rounds": 1, "rate": 200, "seconds": 3.0, "clients": 2, "probe_rows": 50}


def app_client(
    dsn: str, rate: float, mine: list[int], accounts: int, sample_every: int, seconds: float, out: Any
) -> None:
    """One app connection: ``rate`` UPDATEs/s for ``seconds``; every ``sample_every``-th on a probe row of
    ``mine``, in turn. Puts (commits, [(row, value_ns, acknowledged_ns)], errors, elapsed_s)."""
    conn = psycopg.connect(dsn, autocommit=True)
    rng = random.Random(os.getpid())
    low = max(mine) + 1 if mine else 1
    samples: list[tuple[int, int, int]] = []
    commits = errors = 0
    interval = 1.0 / rate
    began = next_at = time.monotonic()
    while time.monotonic() - began < seconds:
        sampled = commits % sample_every == 0
        row = mine[(commits // sample_every) % len(mine)] if sampled else rng.randint(low, accounts)
        value = time.monotonic_ns()
        try:
            conn.execute("UPDATE accounts SET name = %s WHERE id = %s", (f"ts:{value}", row))
        except psycopg.Error:
            errors += 1
        else:
            if sampled:
                samples.append((row, value, time.monotonic_ns()))
            commits += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    elapsed = time.monotonic() - began
    conn.close()
    out.put((commits, samples, errors, elapsed))


def probe(path: str, rows: int, poll_s: float, stop: Any, done: Any, out: Any) -> None:
    """Read accounts 1..``rows`` from the SQLite file every ``poll_s``; note when each value first shows.

    After ``stop``, keeps polling until ``done`` (the parent saw every sample, or gave up). Puts
    {row: [(shown_ns, value_ns), ...]}."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    last: dict[int, int] = {}
    shown: dict[int, list[tuple[int, int]]] = {}
    while not done.is_set():
        rows_now = conn.execute("SELECT id, name FROM accounts WHERE id BETWEEN 1 AND ?", (rows,)).fetchall()
        now = time.monotonic_ns()
        for row, name in rows_now:
            if name.startswith("ts:"):
                value = int(name[3:])
                if last.get(row) != value:
                    last[row] = value
                    shown.setdefault(row, []).append((now, value))
        time.sleep(poll_s)
    conn.close()
    out.put(shown)


def lags(samples: list[tuple[int, int, int]], shown: dict[int, list[tuple[int, int]]]) -> tuple[list[float], int, int]:
    """(lag in ms of each sample seen, superseded samples, samples never seen)."""
    out: list[float] = []
    superseded = unseen = 0
    for row, value, acknowledged in samples:
        seen = shown.get(row, [])
        values = [v for _, v in seen]
        i = bisect.bisect_left(values, value)  # the first value shown on the row that is this one or later
        if i == len(values):
            unseen += 1
            continue
        superseded += values[i] != value
        out.append((seen[i][0] - acknowledged) / 1e6)
    return out, superseded, unseen


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def one_round(source: Path, dsn: str, accounts: int, args: argparse.Namespace) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    out: Any = ctx.Queue()
    shown_out: Any = ctx.Queue()
    stop, done = ctx.Event(), ctx.Event()
    watcher = ctx.Process(target=probe, args=(str(source), args.probe_rows, args.poll_ms / 1000, stop, done, shown_out))
    watcher.start()
    time.sleep(0.2)
    split = [list(range(1 + c, args.probe_rows + 1, args.clients)) for c in range(args.clients)]
    clients = [
        ctx.Process(
            target=app_client,
            args=(dsn, args.rate / args.clients, split[c], accounts, args.sample_every, args.seconds, out),
        )
        for c in range(args.clients)
    ]
    for c in clients:
        c.start()
    results = [out.get(timeout=args.seconds + 120) for _ in clients]
    for c in clients:
        c.join()
    stop.set()
    samples = [s for r in results for s in r[1]]
    # The probe polls on until the last sample of every probe row shows (or the drain timeout passes).
    final: dict[int, int] = {}
    for row, value, _ in samples:
        final[row] = max(final.get(row, 0), value)
    deadline = time.monotonic() + args.drain_timeout
    reader = sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None)
    while time.monotonic() < deadline:
        now = dict(reader.execute("SELECT id, name FROM accounts WHERE id BETWEEN 1 AND ?", (args.probe_rows,)))
        if all(now.get(row, "").startswith("ts:") and int(now[row][3:]) >= v for row, v in final.items()):
            break
        time.sleep(0.05)
    reader.close()
    time.sleep(0.05)
    done.set()
    shown = shown_out.get(timeout=60)
    watcher.join()
    measured, superseded, unseen = lags(samples, shown)
    commits = sum(r[0] for r in results)
    elapsed = max(r[3] for r in results)
    return {
        "commits": commits,
        "errors": sum(r[2] for r in results),
        "achieved_rate": round(commits / elapsed, 1),
        "samples": len(samples),
        "superseded": superseded,
        "unseen": unseen,
        "p50_ms": round(percentile(measured, 50), 1) if measured else None,
        "p95_ms": round(percentile(measured, 95), 1) if measured else None,
        "p99_ms": round(percentile(measured, 99), 1) if measured else None,
        "max_ms": round(max(measured), 1) if measured else None,
        "min_ms": round(min(measured), 1) if measured else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dsn", default=os.environ.get("REPLICATOR_TEST_DSN", "postgresql://postgres@127.0.0.1/postgres")
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0, help="app transactions per second, all clients")
    parser.add_argument("--clients", type=int, default=4, help="app processes (one connection each)")
    parser.add_argument("--seconds", type=float, default=30.0, help="app load per round")
    parser.add_argument("--sample-every", type=int, default=10, help="every Nth commit of a client is a sample")
    parser.add_argument("--probe-rows", type=int, default=200, help="accounts 1..N carry the samples")
    parser.add_argument("--poll-ms", type=float, default=1.0, help="the SQLite probe's interval")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to wait for the last samples")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one short round: a smoke run, not a figure")
    if parser.parse_known_args()[0].quick:  # tiny defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
    args = parser.parse_args()
    accounts = max(1, args.rows // 10)
    if args.probe_rows + args.clients >= accounts:
        parser.error(f"--probe-rows must leave accounts for the other commits ({accounts} accounts)")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with tempfile.TemporaryDirectory(prefix="bench-reverse-lag-") as tmp:
        work = Path(tmp)
        base = work / "base.db"
        started = time.monotonic()
        cutover_bench.build_base(base, args.rows)
        print(f"base: {args.rows:,} rows, built in {time.monotonic() - started:.1f}s")
        source, dsn, setup_s = cut_over(base, work, args.dsn, 0)
        print(f"migrated and cut over in {setup_s:.1f}s")
        daemon = Daemon(source, dsn, work / "daemon.log")
        try:
            daemon.wait_started()
            rounds = []
            for n in range(args.rounds):
                r = one_round(source, dsn, accounts, args)
                print(f"round {n + 1}: {r}")
                rounds.append(r)
                time.sleep(1.0)
            carried = daemon.stop()
        finally:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
            cleanup(args.dsn, source, dsn)

    def med(key: str) -> float | None:
        values = [r[key] for r in rounds if r[key] is not None]
        return round(statistics.median(values), 1) if values else None

    summary = {
        "benchmark": "reverse_lag",
        "rows": args.rows,
        "rate": args.rate,
        "clients": args.clients,
        "rounds": len(rounds),
        "achieved_rate": med("achieved_rate"),
        "p50_ms": med("p50_ms"),
        "p95_ms": med("p95_ms"),
        "p99_ms": med("p99_ms"),
        "max_ms": med("max_ms"),
        "carried_back_by_daemon": carried,
        "goal_p99_ms": 250,
        "per_round": rounds,
    }
    print(json.dumps(summary, indent=2))
    print(
        f"reverse lag, median of {len(rounds)} round(s) at {summary['achieved_rate']} txn/s achieved: "
        f"p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms, p99 {summary['p99_ms']} ms (goal p99 ≤ 250 ms)"
    )


if __name__ == "__main__":
    main()
