"""Is ``replicator analyze`` as fast as reading every row once in Python? One realistic file, timed both ways.

    .venv/bin/python bench/analyze.py [--rows 1000000] [--repeat 3] [--db PATH] [--markdown]

The requirement: a full analysis of a 1M-row database is no slower than reading every row once in
Python. So in one run, on the same file and the same warm page cache, this times

(a) ``replicator.plan.analyze.analyze(path)``: the whole report (settings, schema, profiles, orphan counts,
    findings), as ``replicator analyze`` builds it;
(b) a plain full read: ``for row in conn.execute('SELECT * FROM t'): pass`` over every table, on a
    read-only connection with the default text decoder (nothing classified, nothing counted);

alternating a and b, and prints the medians and the ratio a/b as a markdown table (ratio <= 1 passes).

The file looks like an app's: ~500 B per row over four tables, with AUTOINCREMENT keys, foreign keys,
ISO-8601 text with offsets, ``CURRENT_TIMESTAMP`` text, dates, epoch seconds and epoch-ms integers,
0/1 flags and 't'/'f'/'true' flags, JSON objects and arrays, UUIDs, non-ASCII names, REAL money,
BLOBs and NULLs. ``--db PATH`` keeps the built file there and reuses it when it already has the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from replicator import log
from replicator.plan.analyze import analyze

SCHEMA = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at TIMESTAMP,
    is_active BOOLEAN NOT NULL DEFAULT 1,
    prefs TEXT,
    avatar BLOB,
    balance REAL,
    notes TEXT
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    public_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    total NUMERIC(10, 2),
    paid BOOLEAN,
    shipping TEXT,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    order_id INTEGER REFERENCES orders(id),
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT,
    raw BLOB,
    score REAL,
    processed INTEGER NOT NULL DEFAULT 0,
    day DATE
);
CREATE TABLE tags (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES tags(id),
    label TEXT NOT NULL,
    labels TEXT,
    weight REAL
);
CREATE VIEW open_orders AS SELECT * FROM orders WHERE status = 'open';
"""

#: Share of the rows per table (sums to 1).
SHARES = {"customers": 0.06, "orders": 0.25, "events": 0.64, "tags": 0.05}
WORDS = ["alpha", "Bravo", "charlie", "délta", "echo", "foxtrot", "golf", "hôtel", "india", "日本", "kilo", "lima"]
KINDS = ["view", "click", "add_to_cart", "checkout", "refund", "login", "logout"]
STATUSES = ["open", "paid", "shipped", "cancelled", "refunded"]
EPOCH = 1_600_000_000


def _text(rnd: random.Random, words: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(words))


def _iso(seconds: int, offset: str) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{seconds % 1000:03d}{offset}"


def _rows(table: str, n: int, parents: dict[str, int], rnd: random.Random) -> Iterator[tuple[object, ...]]:
    for i in range(1, n + 1):
        t = EPOCH + rnd.randrange(100_000_000)
        if table == "customers":
            yield (
                i,
                f"user{i}@example.com",
                _text(rnd, 2),
                _iso(t, rnd.choice(["+00:00", "Z", "+05:30", "-0800"])),
                rnd.choice([0, 1]),
                json.dumps({"lang": rnd.choice(["en", "fr", "ja"]), "theme": "dark", "news": rnd.random() < 0.5}),
                rnd.randbytes(rnd.randrange(100, 400)) if i % 4 else None,
                round(rnd.uniform(-100, 10_000), 2),
                _text(rnd, rnd.randrange(3, 30)) if i % 3 else None,
            )
        elif table == "orders":
            yield (
                i,
                rnd.randrange(1, parents["customers"] + 1),
                str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
                t * 1000 + rnd.randrange(1000),
                rnd.choice(STATUSES),
                round(rnd.uniform(1, 900), 2) if i % 10 else rnd.randrange(1, 900),
                rnd.choice(["t", "f", "true", None]),
                json.dumps(
                    {
                        "street": f"{rnd.randrange(1, 999)} {_text(rnd, 2)} street",
                        "city": _text(rnd, 1),
                        "zip": f"{rnd.randrange(10_000, 99_999)}",
                        "items": [
                            {"sku": rnd.randrange(10**6), "qty": rnd.randrange(1, 5)}
                            for _ in range(rnd.randrange(2, 12))
                        ],
                    }
                ),
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)),
            )
        elif table == "events":
            yield (
                i,
                rnd.randrange(1, parents["orders"] + 1) if i % 5 else None,
                t,
                rnd.choice(KINDS),
                json.dumps(
                    {
                        "path": f"/p/{rnd.randrange(10**6)}?ref={_text(rnd, 2)}",
                        "ua": _text(rnd, 16),
                        "session": uuid.UUID(int=rnd.getrandbits(128)).hex,
                        "n": [rnd.randrange(100) for _ in range(12)],
                    }
                ),
                rnd.randbytes(rnd.randrange(100, 700)) if i % 3 == 0 else None,
                rnd.random() * 100,
                rnd.choice([0, 1]),
                time.strftime("%Y-%m-%d", time.gmtime(t)),
            )
        else:
            yield (
                i,
                rnd.randrange(1, i) if i > 1 and i % 4 else None,
                f"{_text(rnd, 1)}-{i}",
                json.dumps([_text(rnd, 1) for _ in range(rnd.randrange(1, 20))]),
                rnd.random(),
            )


def build(path: Path, rows: int) -> None:
    rnd = random.Random(20261125)
    counts = {table: max(1, int(rows * share)) for table, share in SHARES.items()}
    counts["events"] += rows - sum(counts.values())
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    for table, n in counts.items():
        source = _rows(table, n, counts, rnd)
        width = {"customers": 9, "orders": 9, "events": 9, "tags": 5}[table]
        insert = f"INSERT INTO {table} VALUES ({', '.join('?' * width)})"
        while batch := [row for _, row in zip(range(50_000), source, strict=False)]:
            conn.executemany(insert, batch)
    conn.commit()
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


def row_count(path: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return sum(int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in SHARES)
        finally:
            conn.close()
    except sqlite3.Error:
        return -1


def plain_read(path: Path) -> int:
    """Every row of every table once, as an app would read it: the reference analyze must not exceed."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    n = 0
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
        for table in tables:
            if table.startswith("sqlite_"):
                continue
            for _row in conn.execute(f'SELECT * FROM "{table}"'):
                n += 1
    finally:
        conn.close()
    return n


def run_analyze(path: Path) -> int:
    report = analyze(path)
    return sum(t.rows for t in report.tables)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def median_times(
    fns: dict[str, Callable[[], int]], repeat: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Round-robin so both see the same machine load; results must agree on the row count.

    Returns wall-clock seconds and CPU seconds (all threads of this process) per run.
    """
    times: dict[str, list[float]] = {label: [] for label in fns}
    cpu: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(repeat):
        seen = set()
        for label, fn in fns.items():
            started, cpu_started = time.perf_counter(), _cpu()
            seen.add(fn())
            times[label].append(time.perf_counter() - started)
            cpu[label].append(_cpu() - cpu_started)
        assert len(seen) == 1, f"row counts differ: {seen}"
    return times, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", type=Path, help="build the file here (kept, and reused when it has --rows rows)")
    args = parser.parse_args()
    log.configure(level="warning", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "analyze-bench.db"
        if row_count(path) != args.rows:
            for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                stale.unlink(missing_ok=True)
            started = time.perf_counter()
            build(path, args.rows)
            print(f"built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        size_mb = path.stat().st_size / 2**20
        plain_read(path)  # warm the page cache for both
        fns = {"analyze": lambda: run_analyze(path), "plain read": lambda: plain_read(path)}
        times, cpu = median_times(fns, args.repeat)
        a, b = statistics.median(times["analyze"]), statistics.median(times["plain read"])
        ca, cb = statistics.median(cpu["analyze"]), statistics.median(cpu["plain read"])
        print(f"{args.rows:,} rows in {len(SHARES)} tables, {size_mb:.0f} MB, SQLite {sqlite3.sqlite_version},")
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
        print()
        print("| measure | median wall s | runs wall s | rows/s | median CPU s |")
        print("|---|---:|---|---:|---:|")
        for label, ts in times.items():
            med = statistics.median(ts)
            runs = ", ".join(f"{t:.2f}" for t in ts)
            print(f"| {label} | {med:.2f} | {runs} | {args.rows / med:,.0f} | {statistics.median(cpu[label]):.2f} |")
        print(f"| **ratio analyze / plain read** | **{a / b:.2f}** | | | {ca / cb:.2f} |")


if __name__ == "__main__":
    main()
