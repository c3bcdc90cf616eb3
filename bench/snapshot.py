"""The snapshot against pgloader, batched INSERTs and the raw binary-COPY limit, in one run.

    REPLICATOR_BENCH_DSN=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/snapshot.py [--rows 1000000] [--rounds 3] [--slow-rounds 1] \\
            [--shape narrow|wide] [--json-bytes 400]

A realistic database is generated once (``--db`` keeps it between runs), of the ``--shape`` asked
(bench/shapes.py). ``narrow``: users, orders, events and tags, ~500 bytes per row, text / integer /
real / blob / datetime (ISO text and epoch ms) columns, UNIQUE and secondary indexes and foreign
keys. ``wide``: a SaaS database whose 17-column ORM table ``documents`` holds 80 % of the rows, with
a JSON object of ``--json-bytes`` per row, microsecond DATETIME texts, a DATE, BOOLEANs, a 16-byte
BLOB and a unique UUID text, five secondary indexes and three foreign keys. Each approach loads the
whole file into a fresh database (created and dropped per round), in its own process, so peak RSS
is measured per approach (``wait4``):

a. ``replicator snapshot`` (create mode: profile, plan, binary COPY with conversion and
   checksums, then indexes, NOT VALID FKs, sequences, ANALYZE);
b. ``pgloader sqlite://... pgsql://...`` (its defaults: schema, data, indexes, FKs, sequences);
c. a plain loop of psycopg ``executemany`` INSERTs of 1000 rows, then the same indexes;
d. the raw limit: rows read with sqlite3 and streamed unconverted through binary COPY into tables
   of the storage classes (bigint, float8, text, bytea), then the same indexes, FKs and ANALYZE.

Medians over ``--rounds`` (``--slow-rounds`` for c, which is slow), and the ratios the issue asks
for: a vs b (≥ 3×, must 2.5×), a vs c (≥ 10×), a vs d (≥ 0.9×), peak RSS of a (≤ 300 MB).

``--shape realworld`` runs a, b and a reference that works on any schema on each real-world SQLite
file instead (bench/realworld.py: ``--realworld``, ``--files``, ``--scale``; its docstring says what
its reference is and how the small files' start-up is reported).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from shapes import SHAPES, Shape  # bench/ is on sys.path when this file runs as a script

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT = Path(__file__).resolve().parents[1]

# --- c and d, run in a child process ----------------------------------------------------------------


def _raw_schema(conn: psycopg.Connection[Any], shape: Shape) -> None:
    for table, columns in shape.raw_tables.items():
        cols = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t, _ in columns]
        conn.execute(
            sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY (id))").format(sql.Identifier(table), sql.SQL(", ").join(cols))
        )


def _post(conn: psycopg.Connection[Any], shape: Shape) -> None:
    for statement in shape.raw_post:
        conn.execute(sql.SQL(statement))


def _source_rows(db: Path, table: str, columns: Sequence[str]) -> Iterator[list[Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table}")
        while batch := cursor.fetchmany(5_000):
            yield batch
    finally:
        conn.close()


def load_executemany(db: Path, dsn: str, shape: Shape) -> None:
    """c: batched executemany INSERTs of 1000 rows, one transaction per table, then the indexes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _raw_schema(conn, shape)
        for table, columns in shape.raw_tables.items():
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
        _post(conn, shape)


def load_raw_copy(db: Path, dsn: str, shape: Shape) -> None:
    """d: the limit: unconverted values through binary COPY, then the same indexes, FKs and ANALYZE."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _raw_schema(conn, shape)
        for table, columns in shape.raw_tables.items():
            names = [c for c, _, _ in columns]
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
            )
            with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.set_types([w for _, _, w in columns])
                for batch in _source_rows(db, table, names):
                    for row in batch:
                        copy.write_row(row)
        _post(conn, shape)


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


def run_round(approach: str, db: Path, admin_dsn: str, round_no: int, shape: Shape) -> tuple[float, int]:
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
        inner = ["--inner", approach, "--db", str(db), "--dsn", dsn, "--shape", shape.name]
        return _measure([python, __file__, *inner])
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


def compile_bytecode() -> None:
    """Compile every module the measured processes import, as ``pip install`` of a wheel leaves them.

    Where ``PYTHONDONTWRITEBYTECODE`` is set (it is on these machines), each process would otherwise
    compile the replicator's ~300 modules again, about 0.25 s: a cost no installed copy pays."""
    import compileall
    import sysconfig

    root = Path(__file__).resolve().parent.parent
    for folder in [root / "replicator", root / "checkpoints", root / "triggers", Path(sysconfig.get_path("purelib"))]:
        compileall.compile_dir(folder, quiet=2, workers=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow-rounds", type=int, default=1, help="rounds for c (executemany)")
    parser.add_argument("--only", default="abcd", help="approaches to run, e.g. 'ad'")
    parser.add_argument("--db", type=Path, default=None, help="keep/reuse the generated database here")
    parser.add_argument("--dsn", default=os.environ.get("REPLICATOR_BENCH_DSN", DEFAULT_DSN))
    shapes = [*sorted(SHAPES), "realworld"]
    parser.add_argument("--shape", choices=shapes, default="narrow", help="bench/shapes.py, or bench/realworld.py")
    parser.add_argument("--json-bytes", type=int, default=400, help="wide shape: size of each row's JSON document")
    parser.add_argument("--realworld", type=Path, help="realworld shape: the folder ($REPLICATOR_SHARED/realworld)")
    parser.add_argument("--files", help="realworld shape: only files whose path holds one of these (comma-separated)")
    parser.add_argument("--scale", type=int, default=1, help="realworld shape: each file's rows N times, new keys")
    parser.add_argument("--inner", choices=["c", "d"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner is None:
        compile_bytecode()
    if args.shape == "realworld":
        import realworld  # bench/realworld.py: every file, a reference that works on any schema

        realworld.main(args)
        return
    shape = SHAPES[args.shape]
    if args.inner:
        (load_executemany if args.inner == "c" else load_raw_copy)(args.db, args.dsn, shape)
        return
    scratch = tempfile.TemporaryDirectory(prefix="bench-snapshot-")
    db = args.db or Path(scratch.name) / f"bench-{shape.name}.db"
    if not db.exists():
        started = time.perf_counter()
        options = {"json_bytes": args.json_bytes} if shape.name == "wide" else {}
        counts = shape.build(db, args.rows, **options)
        print(f"generated {db} ({db.stat().st_size / 1e6:.0f} MB, {counts}) in {time.perf_counter() - started:.1f}s")
    size = db.stat().st_size
    conn = sqlite3.connect(db)
    total = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in shape.shares)
    conn.close()
    print(f"{total:,} rows, {size / 1e6:.0f} MB ({size / total:.0f} B/row), rounds {args.rounds}")
    times: dict[str, list[float]] = {a: [] for a in args.only}
    peaks: dict[str, list[int]] = {a: [] for a in args.only}
    for n in range(max(args.rounds, args.slow_rounds)):  # interleaved: a busy machine hurts every approach alike
        for approach in args.only:
            if n >= (args.slow_rounds if approach == "c" else args.rounds):
                continue
            seconds, peak = run_round(approach, db, args.dsn, n, shape)
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
