"""How fast is ``profile_table``? One synthetic table, timed several ways.

    .venv/bin/python bench/profile_bench.py [--rows 1000000] [--repeat 3]

1. ``profile_table`` as shipped: rowid chunks, one category character per value counted in Python,
   TEXT read in bulk (see replicator/plan/profiler.py);
2. ``legacy_profile_table``: one SELECT, each value classified into a bit mask, then one
   ``count(*) FILTER`` per bit (the design before the chunked scan);
3. the first design: one ``count(*) FILTER (WHERE condition)`` per format, each re-testing the value;
4. the same written ``sum(condition)``, which SQLite evaluates without short-circuiting AND;
5. a plain read: ``for row in conn.execute('SELECT * FROM t'): pass`` (nothing classified);
6. a Python baseline: fetch every row and classify each value in Python (fewer rules).

The table mixes what apps store: integer keys, a foreign key, REAL money, names, CURRENT_TIMESTAMP
text, epoch-ms integers, JSON text, a 0/1 flag with NULLs. Prints rows/s, ns per cell and the
medians' ratios to the shipped profile.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from replicator.plan import formatsql, profile, profiler
from triggers import source
from triggers.schema import read_schema

COLUMNS = (
    "id INTEGER PRIMARY KEY, owner_id INTEGER, amount REAL, name TEXT, created TEXT, seen_ms INTEGER, data TEXT,"
    " flag BOOLEAN"
)


def build(path: Path, rows: int) -> None:
    rnd = random.Random(7)
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE t ({COLUMNS})")
    words = ["alpha", "Bravo", "charlie", "délta", "echo", "foxtrot", "日本"]

    def row(i: int) -> tuple[object, ...]:
        return (
            i,
            rnd.randrange(1, 5000),
            round(rnd.uniform(0, 500), 2),
            f"{rnd.choice(words)} {rnd.choice(words)} {i}",
            f"2024-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d} {rnd.randrange(24):02d}:11:12",
            1_700_000_000_000 + rnd.randrange(10**10),
            json.dumps({"k": i, "tags": [rnd.choice(words)]}) if i % 3 else None,
            rnd.choice([0, 1, None]),
        )

    batch = 50_000
    for start in range(1, rows + 1, batch):
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [row(i) for i in range(start, min(rows + 1, start + batch))],
        )
    conn.commit()
    conn.close()


_DT = re.compile(
    r"[0-9]{4}-[01][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9]:[0-6][0-9](\.[0-9]+)?(Z|[+-][0-2][0-9]:?[0-5][0-9])?"
)
_DEC = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)")


def python_baseline(path: Path) -> int:
    """Row by row in Python: what the profile would cost without aggregate SQL (a subset of the rules)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.text_factory = bytes
    counts: dict[tuple[int, str], int] = {}
    n = 0
    for row in conn.execute("SELECT * FROM t"):
        n += 1
        for i, v in enumerate(row):
            key = "null" if v is None else type(v).__name__
            counts[(i, key)] = counts.get((i, key), 0) + 1
            if isinstance(v, bytes):
                try:
                    text = v.decode()
                except UnicodeDecodeError:
                    continue
                if _DT.fullmatch(text):
                    counts[(i, "dt")] = counts.get((i, "dt"), 0) + 1
                elif _DEC.fullmatch(text):
                    counts[(i, "dec")] = counts.get((i, "dec"), 0) + 1
                elif text[:1] in "{[":
                    try:
                        json.loads(text)
                        counts[(i, "json")] = counts.get((i, "json"), 0) + 1
                    except ValueError:
                        pass
            elif isinstance(v, int) and v in (0, 1):
                counts[(i, "bool01")] = counts.get((i, "bool01"), 0) + 1
    conn.close()
    return n


def plain_read(path: Path) -> int:
    """Every row once, nothing done with it: the reference the requirement names."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    n = sum(1 for _ in conn.execute("SELECT * FROM t"))
    conn.close()
    return n


def _per_format_conditions() -> dict[str, str]:
    """Each format as one self-contained condition (the storage-class test included)."""
    conds: dict[str, list[str]] = {}
    for cls, group in (
        ("integer", formatsql.INTEGER_FORMATS),
        ("real", formatsql.REAL_FORMATS),
        ("text", {**formatsql.TEMPORAL_TEXT_FORMATS, **formatsql.OTHER_TEXT_FORMATS, **formatsql.ENCODING_FORMATS}),
    ):
        for name, cond in group.items():
            conds.setdefault(name, []).append(f"(typeof(@c) = '{cls}' AND {cond})")
    return {name: " OR ".join(parts) for name, parts in conds.items()}


def per_aggregate_variant(conn: sqlite3.Connection, wrap: str) -> None:
    """The first design: every aggregate re-tests its value (``wrap`` is the aggregate around a condition)."""
    table = read_schema(conn).table("t")
    conditions = _per_format_conditions()
    exprs = ["count(*)"]
    for col in table.columns:
        q = '"' + col.name + '"'
        exprs += [wrap.format(f"typeof({q}) = '{c}'") for c in profile.STORAGE_CLASSES]
        exprs += [wrap.format(conditions[f].replace("@c", q)) for f in profile.FORMATS]
    conn.create_function(formatsql.UTF8_FUNCTION, 1, formatsql.utf8_invalid, deterministic=True)
    conn.execute(f"SELECT {', '.join(exprs)} FROM t").fetchone()


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        started = time.perf_counter()
        build(path, args.rows)
        size_mb = path.stat().st_size / 2**20
        print(f"built {args.rows:,} rows x 8 columns ({size_mb:.0f} MB) in {time.perf_counter() - started:.1f} s")
        conn = source.connect(path)
        table = read_schema(conn).table("t")
        cells = args.rows * len(table.columns)
        results = {
            "profile_table (chunks)": timed(lambda: profiler.profile_table(conn, table), args.repeat),
            "legacy (bit mask)": timed(lambda: profiler.legacy_profile_table(conn, table), args.repeat),
            "FILTER per format": timed(lambda: per_aggregate_variant(conn, "count(*) FILTER (WHERE {})"), args.repeat),
            "sum(cond) per format": timed(lambda: per_aggregate_variant(conn, "sum({})"), args.repeat),
            "plain read": timed(lambda: plain_read(path), args.repeat),
            "python row by row": timed(lambda: python_baseline(path), 1),
        }
        shipped = results["profile_table (chunks)"]
        for label, t in results.items():
            rate = args.rows / t
            print(f"{label:24s} {t:7.2f} s {rate:11,.0f} rows/s {t * 1e9 / cells:6.0f} ns/cell  {t / shipped:4.1f}x")
        print(f"medians of {args.repeat} runs (python: 1 run, a subset of the rules)")
        conn.close()


if __name__ == "__main__":
    main()
