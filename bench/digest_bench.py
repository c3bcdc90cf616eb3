"""Conversion + checksum of one table, per process, without PostgreSQL in the loop.

    .venv/bin/python bench/digest_bench.py [--shape wide] [--rows 250000] [--json-bytes 400] \\
        [--table documents] [--rounds 3] [--profile out.html]

What the snapshot's ``copy_rows`` does per row minus the COPY itself: the table's ``row_converter``,
the checksum's finisher and ``RowEncoder`` + SHA-256 (the very functions, built from the create-mode
plan of the generated database, bench/shapes.py). Rows are read from SQLite into memory first, so
only the Python work is timed. Also timed: the digest of the same rows as PostgreSQL returns them
(psycopg values, JSON parsed: what the apply digests for its row images and verify's load-path
reading for the PostgreSQL side): psycopg's JSON loader (this version's) and ``TableDigest``.
``PYTHONPATH=DIR`` runs another version's code (``git archive <commit> replicator checkpoints
triggers | tar -x -C DIR``) on the same database, for before/after in one sitting.

Prints rows/s of CPU time (this process's), medians of ``--rounds``. ``--profile``: a pyinstrument
profile of one convert + checksum pass (pyinstrument must be installed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shapes import SHAPES  # bench/ is on sys.path when this file runs as a script

from checkpoints.digest import RowEncoder, TableDigest, kinds_from_types
from replicator import config, pg
from replicator.load import snapshot
from replicator.plan import createmode, profiler, schemaplan
from replicator.values import convert
from triggers import source as sqlite_source
from triggers.schema import read_schema


def plan_table(path: Path, name: str) -> schemaplan.TablePlan:
    sconn = sqlite_source.connect(path)
    try:
        schema = read_schema(sconn)
        profiles = {name: profiler.profile_table(sconn, schema.table(name))}
        return createmode.plan_create(schema, profiles, config.load(None, environ={})).table(name)
    finally:
        sconn.close()


def read_rows(path: Path, table: schemaplan.TablePlan) -> list[tuple[Any, ...]]:
    columns = ", ".join(f'"{c.source}"' for c in table.load_columns if c.source is not None)
    sconn = sqlite_source.connect(path)
    try:
        return sconn.execute(f'SELECT {columns} FROM "{table.source}"').fetchall()
    finally:
        sconn.close()


def snapshot_pass(table: schemaplan.TablePlan) -> Callable[[Sequence[tuple[Any, ...]]], int]:
    """copy_rows' per-row work (snapshot.py), without the COPY: returns the checksum sum."""
    columns = table.load_columns
    types = [c.type for c in columns]
    source_cols = [c.source for c in columns if c.source is not None]
    convert_row = convert.row_converter(table.source, source_cols, types, extra=False)
    finish = snapshot.digest_finisher(types)
    encode = RowEncoder(snapshot.digest_kinds(types)).encode
    sha256, from_bytes = hashlib.sha256, int.from_bytes

    def run(rows: Sequence[tuple[Any, ...]]) -> int:
        total = 0
        for row in rows:
            out = convert_row(row)
            total += from_bytes(sha256(encode(finish(out) if finish else out)).digest(), "big")
        return total

    return run


def convert_only(table: schemaplan.TablePlan) -> Callable[[Sequence[tuple[Any, ...]]], int]:
    columns = table.load_columns
    types = [c.type for c in columns]
    source_cols = [c.source for c in columns if c.source is not None]
    convert_row = convert.row_converter(table.source, source_cols, types, extra=False)

    def run(rows: Sequence[tuple[Any, ...]]) -> int:
        for row in rows:
            convert_row(row)
        return 0

    return run


def pg_images(table: schemaplan.TablePlan, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows as PostgreSQL sends them for this table's types: converted values, JSON as the text's
    bytes (json's binary form). Exact for tables without real (float4) or char(n)."""
    types = [c.type for c in table.load_columns]
    convert_row = convert.row_converter(table.source, [c.source or "" for c in table.load_columns], types)
    json_at = [i for i, t in enumerate(types) if t.name in ("json", "jsonb")]
    out = []
    for row in rows:
        values = list(convert_row(row))
        for i in json_at:
            if values[i] is not None:
                values[i] = values[i].obj.encode()  # type: ignore[attr-defined]
        out.append(tuple(values))
    return out


def apply_pass(table: schemaplan.TablePlan) -> Callable[[Sequence[tuple[Any, ...]]], int]:
    """What the apply does with returned row images: psycopg's loader for the JSON columns (this
    version's: ``JsonText`` where replicator.pg has ``json_as_text``, else ``json.loads``), then the
    digest (``_fold_rows``: TableDigest with the kinds of the columns' types)."""
    types = [c.type for c in table.load_columns]
    kinds = kinds_from_types(t.name for t in types)
    json_at = [i for i, t in enumerate(types) if t.name in ("json", "jsonb")]
    load: Callable[[bytes], Any] = json.loads
    if hasattr(pg, "json_as_text"):
        from checkpoints.digest import JsonText  # type: ignore[attr-defined]

        load = JsonText

    def run(rows: Sequence[tuple[Any, ...]]) -> int:
        digest = TableDigest(kinds)
        for row in rows:
            values = list(row)
            for i in json_at:
                if values[i] is not None:
                    values[i] = load(values[i])
            digest.add(values)
        return digest.count

    return run


def timed(run: Callable[[Sequence[tuple[Any, ...]]], int], rows: Sequence[tuple[Any, ...]], rounds: int) -> float:
    """Median CPU seconds of this process (on a shared machine, wall time measures the neighbours)."""
    times = []
    for _ in range(rounds):
        started = time.process_time()
        run(rows)
        times.append(time.process_time() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="wide")
    parser.add_argument("--rows", type=int, default=250_000, help="rows of the whole generated database")
    parser.add_argument("--json-bytes", type=int, default=400)
    parser.add_argument("--table", default="documents")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", type=Path, default=None, help="keep/reuse the generated database here")
    parser.add_argument("--profile", type=Path, default=None, help="write a pyinstrument HTML profile here")
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    scratch = tempfile.TemporaryDirectory(prefix="bench-digest-")
    db = args.db or Path(scratch.name) / f"{shape.name}.db"
    if not db.exists():
        shape.build(db, args.rows, **({"json_bytes": args.json_bytes} if shape.name == "wide" else {}))
    print(f"code: {Path(convert.__file__).parents[1]}")
    table = plan_table(db, args.table)
    rows = read_rows(db, table)
    print(
        f"{args.table}: {len(rows):,} rows, {len(table.load_columns)} columns: "
        + ", ".join(f"{c.name} {c.type.name}" for c in table.load_columns)
    )
    if args.profile:
        from pyinstrument import Profiler

        with Profiler(interval=0.0005) as profiler:
            snapshot_pass(table)(rows)
        args.profile.write_text(profiler.output_html())
        print(profiler.output_text(unicode=False, color=False, show_all=False))
    images = pg_images(table, rows)
    for label, run, data in (
        ("convert only", convert_only(table), rows),
        ("convert + checksum (snapshot)", snapshot_pass(table), rows),
        ("digest of psycopg row images (apply)", apply_pass(table), images),
    ):
        seconds = timed(run, data, args.rounds)
        print(f"  {label:40} {seconds:6.2f} CPU s  {len(data) / seconds:>10,.0f} rows/s")


if __name__ == "__main__":
    main()
