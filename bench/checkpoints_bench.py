"""How fast are the row digest and the checkpoint chain?

    .venv/bin/python bench/checkpoints_bench.py [--rows 1000000] [--chain 100000] [--dsn postgresql://...]

1. ``TableDigest.add_rows`` over small rows as psycopg returns them (int, text, float, bool,
   timestamptz), and over the same rows read back from PostgreSQL (with ``--dsn``): rows/s.
2. Building and sealing ``--chain`` checkpoints in memory, ``verify`` over them, export-file
   ``verify_file``: checkpoints/s.
3. With ``--dsn``: ``append`` in one transaction per checkpoint (what the apply path pays per batch),
   then ``verify_db``. The database is created and dropped by the script.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import tracemalloc
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, sql

from checkpoints import audit, exportfile, store
from checkpoints.digest import TableDigest, kinds_from_oids, table_digest
from checkpoints.model import Checkpoint, Record, TableChange, genesis, next_checkpoint


def rate(label: str, count: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    print(f"{label:<48} {count:>10,}  {elapsed:7.2f} s  {count / elapsed:>12,.0f} /s")


def small_rows(n: int) -> list[tuple[Any, ...]]:
    when = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    return [(i, f"user{i}@example.com", i * 0.25, i % 3 == 0, when + dt.timedelta(seconds=i)) for i in range(n)]


def bench_digest(n: int) -> None:
    rows = small_rows(n)
    started = time.perf_counter()
    table_digest(rows)
    rate("digest: int, text, float, bool, timestamptz", n, started)
    three = [(i, f"name{i}", Decimal(i) / 100) for i in range(n)]
    started = time.perf_counter()
    table_digest(three)
    rate("digest: int, text, numeric", n, started)
    jsons = [(i, {"id": i, "tags": ["a", "b"], "score": i / 7}) for i in range(n // 10)]
    started = time.perf_counter()
    table_digest(jsons, ["auto", "json"])
    rate("digest: int, jsonb (3 keys)", len(jsons), started)


def chain(n: int) -> list[Checkpoint]:
    change = TableChange(upserted=100, deleted=3, upserted_digest="ab" * 32, deleted_digest="cd" * 32)
    out = [genesis({"users": change, "orders": change}, seq_to=0, tool="bench")]
    for _ in range(n - 1):
        out.append(next_checkpoint(out[-1], seq_to=out[-1].seq_to + 100, tables={"users": change}, tool="bench"))
    return out


def bench_chain(n: int) -> None:
    started = time.perf_counter()
    built = chain(n)
    rate("chain: build and seal", n, started)
    records = [Record.of(c) for c in built]
    started = time.perf_counter()
    assert audit.verify(records) == []
    rate("chain: verify in memory", n, started)


def bench_pg(dsn: str, rows: int, n: int) -> None:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params: dict[str, Any] = conninfo.conninfo_to_dict(dsn)
    params["dbname"] = name
    try:
        with psycopg.connect(conninfo.make_conninfo(**params), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id bigint, email text, score double precision, ok boolean, at timestamptz)")
            with conn.cursor().copy("COPY t FROM STDIN") as copy:
                for row in small_rows(rows):
                    copy.write_row(row)
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute("SELECT * FROM t")
                assert cur.description is not None
                digest = TableDigest(kinds_from_oids(c.type_code for c in cur.description))
                digest.add_rows(cur)
            rate("digest: read back from PostgreSQL and hash", digest.count, started)
            assert digest == table_digest(small_rows(rows))

            store.ensure_schema(conn)
            built = chain(n)
            started = time.perf_counter()
            for checkpoint in built:
                with conn.transaction():
                    store.append(conn, checkpoint)
            rate("store: append, one transaction each", n, started)
            started = time.perf_counter()
            assert audit.verify_db(conn) == []
            rate("store: verify_db", n, started)
            tracemalloc.start()  # a second run: tracing slows allocation, so it is not timed
            assert audit.verify_db(conn) == []
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"{'verify_db peak Python memory':<48} {peak / n:>10,.0f} bytes per checkpoint")
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "chain.jsonl"
                started = time.perf_counter()
                exportfile.export(conn, path)
                rate("export", n, started)
                started = time.perf_counter()
                assert audit.verify_file(path) == []
                rate("verify_file", n, started)
                print(f"{'export size':<48} {path.stat().st_size / n:>10,.0f} bytes per checkpoint")
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chain", type=int, default=100_000)
    parser.add_argument("--db-chain", type=int, default=10_000, help="checkpoints appended to PostgreSQL")
    parser.add_argument("--dsn", default=None, help="admin DSN; creates and drops a scratch database")
    args = parser.parse_args()
    bench_digest(args.rows)
    bench_chain(args.chain)
    if args.dsn:
        bench_pg(args.dsn, args.rows, args.db_chain)


if __name__ == "__main__":
    main()
