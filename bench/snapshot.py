"""The snapshot against pgloader, batched INSERTs and the raw binary-COPY limit, in one run.

    REPLICATOR_BENCH_DSN=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/snapshot.py [--rows 1000000] [--rounds 3] [--slow-rounds 1]

A realistic database is generated once (``--db`` keeps it between runs): users, orders, events and
tags, ~500 bytes per row, text / integer / real / blob / datetime (ISO text and epoch ms) columns,
UNIQUE and secondary indexes and foreign keys. Each approach loads the whole file into a fresh
database (created and dropped per round), in its own process, so peak RSS is measured per approach
(``wait4``):

a. ``replicator snapshot`` (create mode: profile, plan, binary COPY with conversion and
   checksums, then indexes, NOT VALID FKs, sequences, ANALYZE);
b. ``pgloader sqlite://... pgsql://...`` (its defaults: schema, data, indexes, FKs, sequences);
c. a plain loop of psycopg ``executemany`` INSERTs of 1000 rows, then the same indexes;
d. the raw limit: rows read with sqlite3 and streamed unconverted through binary COPY into tables
   of the storage classes (bigint, float8, text, bytea), then the same indexes, FKs and ANALYZE.

Medians over ``--rounds`` (``--slow-rounds`` for c, which is slow), and the ratios the issue asks
for: a vs b (≥ 3×, must 2.5×), a vs c (≥ 10×), a vs d (≥ 0.9×), peak RSS of a (≤ 300 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parents[1]

SCHEMA = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at DATETIME NOT NULL,
    score REAL,
    active INTEGER NOT NULL DEFAULT 1,
    bio TEXT,
    avatar BLOB
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    status TEXT NOT NULL,
    total REAL NOT NULL,
    created_at DATETIME NOT NULL,
    shipped_at DATETIME,
    notes TEXT
);
CREATE INDEX orders_user ON orders (user_id);
CREATE INDEX orders_created ON orders (created_at);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    order_id INTEGER REFERENCES orders (id),
    kind TEXT NOT NULL,
    ts INTEGER NOT NULL,
    payload TEXT,
    digest BLOB
);
CREATE INDEX events_user_ts ON events (user_id, ts);
CREATE INDEX events_order ON events (order_id);
CREATE TABLE tags (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL REFERENCES events (id),
    label TEXT NOT NULL,
    weight REAL
);
CREATE UNIQUE INDEX tags_event_label ON tags (event_id, label);
"""

#: Share of the rows per table.
SHARES = {"users": 0.1, "orders": 0.25, "events": 0.5, "tags": 0.15}

#: The same tables in storage-class types, for c and d (PK before the load, the rest after).
RAW_TABLES = {
    "users": [
        ("id", "bigint", "int8"),
        ("email", "text", "text"),
        ("name", "text", "text"),
        ("created_at", "text", "text"),
        ("score", "double precision", "float8"),
        ("active", "bigint", "int8"),
        ("bio", "text", "text"),
        ("avatar", "bytea", "bytea"),
    ],
    "orders": [
        ("id", "bigint", "int8"),
        ("user_id", "bigint", "int8"),
        ("status", "text", "text"),
        ("total", "double precision", "float8"),
        ("created_at", "text", "text"),
        ("shipped_at", "text", "text"),
        ("notes", "text", "text"),
    ],
    "events": [
        ("id", "bigint", "int8"),
        ("user_id", "bigint", "int8"),
        ("order_id", "bigint", "int8"),
        ("kind", "text", "text"),
        ("ts", "bigint", "int8"),
        ("payload", "text", "text"),
        ("digest", "bytea", "bytea"),
    ],
    "tags": [
        ("id", "bigint", "int8"),
        ("event_id", "bigint", "int8"),
        ("label", "text", "text"),
        ("weight", "double precision", "float8"),
    ],
}
RAW_POST = (
    "CREATE UNIQUE INDEX users_email ON users (email)",
    "CREATE INDEX orders_user ON orders (user_id)",
    "CREATE INDEX orders_created ON orders (created_at)",
    "CREATE INDEX events_user_ts ON events (user_id, ts)",
    "CREATE INDEX events_order ON events (order_id)",
    "CREATE UNIQUE INDEX tags_event_label ON tags (event_id, label)",
    "ALTER TABLE orders ADD FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID",
    "ALTER TABLE events ADD FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID",
    "ALTER TABLE events ADD FOREIGN KEY (order_id) REFERENCES orders (id) NOT VALID",
    "ALTER TABLE tags ADD FOREIGN KEY (event_id) REFERENCES events (id) NOT VALID",
    "ANALYZE",
)

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "kappa",
    "lambda",
    "sigma",
    "omega",
    "order",
    "ship",
    "pay",
    "refund",
    "cart",
    "item",
    "stock",
    "price",
    "small",
    "large",
    "blue",
    "green",
    "red",
    "fast",
    "slow",
    "early",
    "late",
    "north",
    "south",
    "east",
    "west",
    "café",
    "naïve",
]


# --- the database --------------------------------------------------------------------------------


def _text(rnd: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rnd.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def _iso(rnd: random.Random) -> str:
    return f"20{rnd.randrange(15, 25)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d} " + (
        f"{rnd.randrange(24):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}"
    )


def build(path: Path, rows: int, seed: int = 7) -> dict[str, int]:
    """Generate the database (in batches: memory stays flat at any size)."""
    rnd = random.Random(seed)
    counts = {name: max(1, int(rows * share)) for name, share in SHARES.items()}
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute("PRAGMA synchronous = off")
    conn.executescript(SCHEMA)
    statuses = ("new", "paid", "shipped", "cancelled", "refunded")
    kinds = ("view", "click", "add_to_cart", "purchase", "login", "logout")
    texts = [_text(rnd, 700) for _ in range(4096)]

    def batches(make: Callable[[int], tuple[Any, ...]], n: int) -> Iterator[list[tuple[Any, ...]]]:
        for start in range(1, n + 1, 10_000):
            yield [make(i) for i in range(start, min(n, start + 9_999) + 1)]

    users, orders, events = counts["users"], counts["orders"], counts["events"]
    conn.execute("BEGIN")
    for batch in batches(
        lambda i: (
            i,
            f"user{i}@example.com",
            f"{rnd.choice(WORDS).title()} {rnd.choice(WORDS).title()} {i}",
            _iso(rnd),
            round(rnd.uniform(0, 1000), 3),
            rnd.randrange(2),
            texts[i % 4096][: rnd.randrange(150, 450)],
            rnd.randbytes(64),
        ),
        users,
    ):
        conn.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
    for batch in batches(
        lambda i: (
            i,
            rnd.randrange(1, users + 1),
            rnd.choice(statuses),
            round(rnd.uniform(1, 500), 2),
            _iso(rnd),
            _iso(rnd) if rnd.random() < 0.6 else None,
            texts[(i * 7) % 4096][: rnd.randrange(300, 650)] + f" #{i}",
        ),
        orders,
    ):
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
    for batch in batches(
        lambda i: (
            i,
            rnd.randrange(1, users + 1),
            rnd.randrange(1, orders + 1) if rnd.random() < 0.5 else None,
            rnd.choice(kinds),
            1_600_000_000_000 + rnd.randrange(10**11),
            json.dumps(
                {"page": f"/p/{rnd.randrange(1000)}", "ref": texts[i % 4096][: rnd.randrange(300, 600)], "n": i}
            ),
            uuid.UUID(int=rnd.getrandbits(128)).bytes * 2,
        ),
        events,
    ):
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
    for batch in batches(
        lambda i: (i, (i - 1) % events + 1, f"{rnd.choice(WORDS)}-{i}", rnd.random()),
        counts["tags"],
    ):
        conn.executemany("INSERT INTO tags VALUES (?, ?, ?, ?)", batch)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode = delete")
    conn.close()
    return counts


# --- c and d, run in a child process ----------------------------------------------------------------


def _raw_schema(conn: psycopg.Connection[Any]) -> None:
    for table, columns in RAW_TABLES.items():
        cols = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t, _ in columns]
        conn.execute(
            sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY (id))").format(sql.Identifier(table), sql.SQL(", ").join(cols))
        )


def _post(conn: psycopg.Connection[Any]) -> None:
    for statement in RAW_POST:
        conn.execute(sql.SQL(statement))


def _source_rows(db: Path, table: str, columns: Sequence[str]) -> Iterator[list[Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table}")
        while batch := cursor.fetchmany(5_000):
            yield batch
    finally:
        conn.close()


def load_executemany(db: Path, dsn: str) -> None:
    """c: batched executemany INSERTs of 1000 rows, one transaction per table, then the indexes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _raw_schema(conn)
        for table, columns in RAW_TABLES.items():
            names = [c for c, _, _ in columns]
            insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, names)),
                sql.SQL(", ").join(sql.Placeholder() * len(names)),
            )
            with conn.transaction(), conn.cursor() as cur:
                pending: list[Any] = []
                for batch in _source_rows(db, table, names):
                    pending.extend(batch)
                    while len(pending) >= 1000:
                        cur.executemany(insert, pending[:1000])
                        del pending[:1000]
                if pending:
                    cur.executemany(insert, pending)
        _post(conn)


def load_raw_copy(db: Path, dsn: str) -> None:
    """d: the limit: unconverted values through binary COPY, then the same indexes, FKs and ANALYZE."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _raw_schema(conn)
        for table, columns in RAW_TABLES.items():
            names = [c for c, _, _ in columns]
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
            )
            with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.set_types([w for _, _, w in columns])
                for batch in _source_rows(db, table, names):
                    for row in batch:
                        copy.write_row(row)
        _post(conn)


# --- the runner ------------------------------------------------------------------------------------


def _with_db(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


def _measure(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (kB) of one child process; its output is kept only on failure."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        _pid, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        if child.returncode != 0:
            out.seek(0)
            raise RuntimeError(f"{argv[0]} failed ({child.returncode}):\n{out.read().decode()[-3000:]}")
    return seconds, int(usage.ru_maxrss)


def run_round(approach: str, db: Path, admin_dsn: str, round_no: int) -> tuple[float, int]:
    name = f"bench_snapshot_{approach}_{os.getpid()}_{round_no}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _with_db(admin_dsn, name)
    python = sys.executable
    try:
        if approach == "a":
            env = {**os.environ, "REPLICATOR_LOG__FORMAT": "json"}
            argv = [python, "-m", "replicator", "snapshot", "--source", str(db), "--target", dsn, "-q"]
            return _measure(argv, env)
        if approach == "b":
            return _measure(["pgloader", "--quiet", str(_pgloader_command(db, dsn))])
        return _measure([python, __file__, "--inner", approach, "--db", str(db), "--dsn", dsn])
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _pgloader_command(db: Path, dsn: str) -> Path:
    """pgloader's SQLite defaults plus smaller batches: with its defaults (25k-row batches) pgloader
    3.6.7 exhausts its 1 GB SBCL heap on this database (~500 B/row) and dies."""
    command = Path(tempfile.gettempdir()) / f"bench-snapshot-{os.getpid()}.load"
    target = dsn.replace("postgresql://", "pgsql://", 1)
    command.write_text(
        f"LOAD DATABASE FROM sqlite://{db} INTO {target}\n"
        "WITH include drop, create tables, create indexes, reset sequences, foreign keys,\n"
        "     batch rows = 5000, prefetch rows = 5000;\n"
    )
    return command


LABELS = {
    "a": "replicator snapshot",
    "b": "pgloader 3.6",
    "c": "executemany, 1000-row batches",
    "d": "raw binary COPY (limit)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow-rounds", type=int, default=1, help="rounds for c (executemany)")
    parser.add_argument("--only", default="abcd", help="approaches to run, e.g. 'ad'")
    parser.add_argument("--db", type=Path, default=None, help="keep/reuse the generated database here")
    parser.add_argument("--dsn", default=os.environ.get("REPLICATOR_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--inner", choices=["c", "d"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        (load_executemany if args.inner == "c" else load_raw_copy)(args.db, args.dsn)
        return
    scratch = tempfile.TemporaryDirectory(prefix="bench-snapshot-")
    db = args.db or Path(scratch.name) / "bench.db"
    if not db.exists():
        started = time.perf_counter()
        counts = build(db, args.rows)
        print(f"generated {db} ({db.stat().st_size / 1e6:.0f} MB, {counts}) in {time.perf_counter() - started:.1f}s")
    size = db.stat().st_size
    conn = sqlite3.connect(db)
    total = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in SHARES)
    conn.close()
    print(f"{total:,} rows, {size / 1e6:.0f} MB ({size / total:.0f} B/row), rounds {args.rounds}")
    times: dict[str, list[float]] = {a: [] for a in args.only}
    peaks: dict[str, list[int]] = {a: [] for a in args.only}
    for n in range(max(args.rounds, args.slow_rounds)):  # interleaved: a busy machine hurts every approach alike
        for approach in args.only:
            if n >= (args.slow_rounds if approach == "c" else args.rounds):
                continue
            seconds, peak = run_round(approach, db, args.dsn, n)
            times[approach].append(seconds)
            peaks[approach].append(peak)
            print(f"  {approach} round {n + 1}: {seconds:.2f}s, peak RSS {peak / 1024:.0f} MB", flush=True)
    results = {a: (statistics.median(times[a]), max(peaks[a]), len(times[a])) for a in args.only}
    print()
    print("| approach | rounds | median s | rows/s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for approach, (seconds, peak, rounds) in results.items():
        rate = total / seconds
        print(f"| ({approach}) {LABELS[approach]} | {rounds} | {seconds:.2f} | {rate:,.0f} | {peak / 1024:.0f} |")
    if "a" in results:
        a = results["a"][0]
        for other, target in (("b", "≥ 3× (must 2.5×)"), ("c", "≥ 10×")):
            if other in results:
                print(f"(a) vs ({other}): {results[other][0] / a:.2f}× faster (target {target})")
        if "d" in results:
            print(f"(a) vs (d): {results['d'][0] / a:.2f}× of the raw limit (target ≥ 0.9×)")


if __name__ == "__main__":
    main()
