"""How much does exact conversion cost? One realistic table, converted and COPYed, vs pass-through.

    REPLICATOR_BENCH_DSN=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/convert.py [--rows 200000] [--rounds 3]

The table is what a Prisma app leaves in SQLite (realworld.md §2): integer keys, text (some
non-ASCII), REAL money, epoch-millisecond datetimes, 0/1 booleans, JSON text, a blob. Measured,
medians of ``--rounds`` rounds:

1. ``convert`` alone: ``row_converter`` over rows already in memory, vs a pass-through row function
   (``tuple(row)``) — the converter's own cost per row and per value;
2. per column: ``value_converter`` ns per value, to see which type costs what;
3. end to end, SQLite read → binary COPY into PostgreSQL: with conversion into the Prisma types
   (bigint, integer, text, double precision, numeric(65,30), timestamp(3), boolean, jsonb, bytea), vs
   pass-through of the raw values into a table of the storage classes (bigint, text, float8, bytea).

Creates a scratch schema in the target database and drops it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from replicator.values.convert import row_converter
from replicator.values.targettype import TargetType, copy_types, parse_type, type_sql

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

#: (column, SQLite declared type, PostgreSQL target type, storage-class type for pass-through)
COLUMNS: Sequence[tuple[str, str, str, str]] = (
    ("id", "INTEGER PRIMARY KEY", "bigint", "bigint"),
    ("owner_id", "INTEGER", "integer", "bigint"),
    ("name", "TEXT", "text", "text"),
    ("email", "TEXT", "character varying(191)", "text"),
    ("ratio", "REAL", "double precision", "double precision"),
    ("balance", "DECIMAL", "numeric(65,30)", "double precision"),
    ("created_at", "DATETIME", "timestamp(3) without time zone", "bigint"),
    ("updated_at", "DATETIME", "timestamp(3) with time zone", "bigint"),
    ("active", "BOOLEAN", "boolean", "bigint"),
    ("settings", "JSONB", "jsonb", "text"),
    ("avatar", "BLOB", "bytea", "bytea"),
)


RAW_COPY = {"bigint": "int8", "text": "text", "double precision": "float8", "bytea": "bytea"}


def build(path: Path, rows: int) -> None:
    rnd = random.Random(7)
    words = ["alpha", "Bravo", "charlie", "délta", "echo", "foxtrot", "日本", "zulu"]
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE t ({', '.join(f'{c} {d}' for c, d, _, _ in COLUMNS)})")

    def row(i: int) -> tuple[object, ...]:
        created = 1_600_000_000_000 + rnd.randrange(10**11)
        return (
            i,
            rnd.randrange(1, 50_000),
            f"{rnd.choice(words)} {rnd.choice(words)} {i}",
            f"user{i}@example.com",
            rnd.random(),
            round(rnd.uniform(0, 10_000), 2),
            created,
            created + rnd.randrange(10**9),
            rnd.randrange(2),
            json.dumps({"theme": rnd.choice(words), "n": i, "tags": [rnd.choice(words)]}, separators=(",", ":"))
            if i % 4
            else None,
            rnd.randbytes(rnd.randrange(16, 64)) if i % 5 == 0 else None,
        )

    marks = ", ".join("?" for _ in COLUMNS)
    for start in range(1, rows + 1, 50_000):
        conn.executemany(
            f"INSERT INTO t VALUES ({marks})", [row(i) for i in range(start, min(rows + 1, start + 50_000))]
        )
    conn.commit()
    conn.close()


def read(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM t ORDER BY id").fetchall()


def identity(value: object) -> object:
    return value


def interleaved(
    rounds: int, runs: dict[str, Callable[[], object]], before: Callable[[], object] | None = None
) -> dict[str, float]:
    """Median seconds per variant; each round runs every variant once, so a load spike on a shared
    machine hits all variants of that round rather than one variant's every round."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            if before is not None:
                before()
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t) for label, t in times.items()}


def convert_all(
    convert: Callable[[tuple[object, ...]], tuple[object, ...]], rows: Iterable[tuple[object, ...]]
) -> None:
    for row in rows:
        convert(row)


def column_cost(rounds: int, cells: list[tuple[object, ...]], column: str, target: TargetType, wire: bool) -> float:
    """ns per value of one column's conversion inside a one-column row function, minus tuple(row)."""
    single = row_converter("t", [column], [target], wire=wire)
    times = interleaved(rounds, {"base": lambda: convert_all(tuple, cells), "conv": lambda: convert_all(single, cells)})
    return max(0.0, times["conv"] - times["base"]) / len(cells) * 1e9


def copy_rows(
    conn: psycopg.Connection[tuple[object, ...]],
    table: sql.Composable,
    types: list[str],
    rows: Iterable[Sequence[object]],
) -> None:
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(table)) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dsn", default=os.environ.get("REPLICATOR_BENCH_DSN", os.environ.get("REPLICATOR_TEST_DSN", DEFAULT_DSN))
    )
    args = parser.parse_args()
    n, rounds = args.rows, args.rounds
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} (client and PostgreSQL share them)")

    targets: list[TargetType] = [parse_type(pg) for _, _, pg, _ in COLUMNS]
    names = [c for c, _, _, _ in COLUMNS]
    convert = row_converter("t", names, targets)
    convert_wire = row_converter("t", names, targets, wire=True)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        build(path, n)
        rows = read(path)

        # 1. the converter alone
        identities = [identity] * len(COLUMNS)
        memory = interleaved(
            rounds,
            {
                "pass-through (tuple(row))": lambda: convert_all(tuple, rows),
                "pass-through, one identity call per value": lambda: convert_all(
                    lambda row: tuple([f(v) for f, v in zip(identities, row, strict=True)]), rows
                ),
                "row_converter": lambda: convert_all(convert, rows),
                "row_converter(wire=True)": lambda: convert_all(convert_wire, rows),
            },
        )
        print(f"\n{n:,} rows x {len(COLUMNS)} columns, medians of {rounds} interleaved rounds\n")
        print(f"{'in memory':<48}{'rows/s':>12}{'µs/row':>10}{'ns/value':>10}")
        for label, seconds in memory.items():
            print(
                f"{label:<48}{n / seconds:>12,.0f}{seconds / n * 1e6:>10.2f}{seconds / n / len(COLUMNS) * 1e9:>10.0f}"
            )

        # 2. per column, inside a one-column row function (fast paths inlined), minus tuple(row)
        print(f"\n{'column':<12}{'target':<34}{'ns/value':>10}{'wire':>10}")
        for i, (column, _, pg_type, _) in enumerate(COLUMNS):
            costs = [column_cost(rounds, [(row[i],) for row in rows], column, targets[i], w) for w in (False, True)]
            print(f"{column:<12}{pg_type:<34}{costs[0]:>10.0f}{costs[1]:>10.0f}")

        # 3. end to end: SQLite read -> (convert) -> binary COPY
        schema = f"bench_convert_{os.getpid()}"
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            try:
                typed = sql.Identifier(schema, "typed")
                raw = sql.Identifier(schema, "raw")
                typed_columns = [
                    sql.SQL("{} {}").format(sql.Identifier(c), type_sql(t)) for c, t in zip(names, targets, strict=True)
                ]
                raw_columns = [sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(s)) for c, _, _, s in COLUMNS]
                conn.execute(sql.SQL("CREATE TABLE {} ({})").format(typed, sql.SQL(", ").join(typed_columns)))
                conn.execute(sql.SQL("CREATE TABLE {} ({})").format(raw, sql.SQL(", ").join(raw_columns)))
                raw_types = [RAW_COPY[s] for *_, s in COLUMNS]
                value_types, wire_types = copy_types(targets), copy_types(targets, wire=True)
                converted = [convert(row) for row in rows]
                converted_wire = [convert_wire(row) for row in rows]

                def sqlite_rows() -> Iterable[tuple[object, ...]]:
                    with sqlite3.connect(path) as src:
                        yield from src.execute("SELECT * FROM t ORDER BY id")

                def truncate() -> None:
                    conn.execute(sql.SQL("TRUNCATE {}, {}").format(typed, raw))

                def copying(
                    table: sql.Identifier, types: list[str], source: Callable[[], Iterable[Sequence[object]]]
                ) -> Callable[[], None]:
                    return lambda: copy_rows(conn, table, types, source())

                timings = interleaved(
                    rounds,
                    {
                        "SQLite → COPY, pass-through (raw classes)": copying(raw, raw_types, sqlite_rows),
                        "SQLite → convert → COPY": copying(typed, value_types, lambda: map(convert, sqlite_rows())),
                        "SQLite → convert(wire) → COPY": copying(
                            typed, wire_types, lambda: map(convert_wire, sqlite_rows())
                        ),
                        "memory → COPY, pass-through (raw classes)": copying(raw, raw_types, lambda: rows),
                        "memory → COPY, already-converted values": copying(typed, value_types, lambda: converted),
                        "memory → convert → COPY": copying(typed, value_types, lambda: map(convert, rows)),
                        "memory → COPY, already-converted wire values": copying(
                            typed, wire_types, lambda: converted_wire
                        ),
                        "memory → convert(wire) → COPY": copying(typed, wire_types, lambda: map(convert_wire, rows)),
                    },
                    truncate,
                )
                results = list(timings.items())
            finally:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

        raw_e2e, raw_mem = results[0][1], results[3][1]
        typed_of = {"memory → convert → COPY": results[4][1], "memory → convert(wire) → COPY": results[6][1]}
        print(f"\n{'binary COPY':<48}{'rows/s':>12}{'vs raw':>10}{'vs typed':>10}")
        for label, seconds in results:
            against_raw = (raw_e2e if label.startswith("SQLite") else raw_mem) / seconds
            typed_seconds = typed_of.get(label)
            against_typed = f"{typed_seconds / seconds:>10.2f}" if typed_seconds else f"{'':>10}"
            print(f"{label:<48}{n / seconds:>12,.0f}{against_raw:>10.2f}{against_typed}")
        print(
            "\nvs raw: pass-through, the same rows COPYed unconverted into columns of their storage classes"
            "\n        (bigint/float8/text/bytea: no datetime, numeric or jsonb work on either side);"
            "\nvs typed: the same already-converted values COPYed into the typed table (identical server work)."
        )


if __name__ == "__main__":
    main()
