"""The snapshot on the real-world SQLite files (``bench/snapshot.py --shape realworld``).

    REPLICATOR_BENCH_DSN=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/snapshot.py --shape realworld [--rounds 3] [--only abd] \\
            [--realworld ../shared/realworld] [--files chinook,sakila] [--scale 20]

Every ``*.db`` / ``*.sqlite`` file under ``--realworld`` (default ``$REPLICATOR_SHARED/realworld``,
else ``../shared/realworld``; provenance in its SOURCES.md): Chinook, Northwind, Sakila, pgloader's
test files, the Prisma / Django / SQLAlchemy / ActiveRecord probes. Each approach loads each file
into a fresh database (created and dropped per run), in its own process (peak RSS by ``wait4``),
rounds interleaved (round 1 runs every file and approach, then round 2, ...), medians per file:

a. ``replicator snapshot --mode create --on-bad-value quarantine`` (quarantine, not ``stop``:
   pgloader too skips the rows it cannot load and carries on; the rows each approach left in the
   target are counted after its run and printed, so a skipped row is visible, never hidden);
b. pgloader 3.6 with the same command file as the generated shapes (bench/snapshot.py);
d. the reference, **storage-class binary COPY**: the generated shapes' raw limit (rows streamed
   unconverted from sqlite3 through binary COPY) made to work on an arbitrary schema. Its tables get
   one column per SQLite column typed by the storage classes the column actually holds, found by one
   ``typeof()`` scan per table inside the timed run: only integers → bigint, only reals → float8,
   only text → text, only blobs → bytea, only NULLs → bigint if the declared type contains INT, else
   text; a column holding several classes → text, each value passed through ``str()`` (blobs as
   hex). No conversion, no plan, no checksums, no state. Text that is not UTF-8 is decoded with
   U+FFFD replacements (sqlite3 cannot hand it over otherwise). After every table: the primary
   keys, the indexes on plain columns (not partial, not on expressions), the foreign keys
   ``NOT VALID``, ``ANALYZE`` — each in its own statement; one PostgreSQL refuses on these types
   (e.g. an FK between a bigint and a text column) is skipped and the count printed as a note.
   This is *not* the converted-values reference the issue states for the wide shape (convert →
   binary COPY): converting arbitrary columns needs the replicator's plan, and a reference that
   runs our plan would measure our code against itself.

A file an approach refuses (non-zero exit, or a pgloader FATAL: pgloader exits 0 even then) is
reported with the reason in the table, for that approach only, and not run again in later rounds.
"rows in target" counts, after each run, the rows in the target's tables outside the replicator's
own schema: fewer than the source's rows means rows were skipped (pgloader's rejected batches,
our quarantine); the ``note:`` lines after the tables give pgloader's ERROR lines and the
reference's skipped statements. Ratios: (a) vs (b) is pgloader's time over ours (> 1: we are
faster); (a) vs (d) is the reference's time over ours (the issue asks ≥ 0.9×).

The files are small (kB to 5 MB), so start-up dominates each run: the table also shows a
generated one-table, one-row file (``(floor)``) as the fixed cost of each approach, and a combined
figure, the **sum of the per-file medians** over the files every approach loaded (not one run of
all files: each tool takes one source per run), and that sum less one floor per file, a rough
figure for the work beyond start-up (with one round, noise can push it below zero: then n/a).

``--scale N`` loads each file's ``N``× copy instead, written once into a temporary folder
(bench/realfiles.py ``scale_copy``: the rows again with shifted integer keys); a file whose keys
cannot be shifted (text keys) is reported as refused by the scaler, with the reason.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from realfiles import (  # bench/ is on sys.path when bench/snapshot.py runs as a script
    ScaleRefused,
    columns_of,
    default_realworld,
    foreign_keys,
    indexes_of,
    primary_key,
    q,
    realworld_files,
    ro_uri,
    row_count,
    scale_copy,
    user_tables,
)

ROOT = Path(__file__).resolve().parents[1]
APPROACHES = {"a": "replicator snapshot", "b": "pgloader 3.6", "d": "storage-class binary COPY (ref)"}
NOT_OURS = ("pg_catalog", "information_schema", "replicator")


# --- d: the storage-class binary COPY reference, run in a child process ---------------------------

CLASS_TYPES = {"integer": ("bigint", "int8"), "real": ("double precision", "float8"), "text": ("text", "text")}
CLASS_TYPES["blob"] = ("bytea", "bytea")


def storage_types(conn: sqlite3.Connection, table: str, columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(PostgreSQL type, COPY type) per column, from the classes it holds: one scan of the table."""
    classes = ("integer", "real", "text", "blob")
    probes = ", ".join(f"sum(typeof({q(c)}) = '{k}')" for c, _ in columns for k in classes)
    sums = conn.execute(f"SELECT {probes} FROM {q(table)}").fetchone()
    types = []
    for i, (_name, declared) in enumerate(columns):
        held = [k for j, k in enumerate(classes) if sums[i * 4 + j]]
        if len(held) == 1:
            types.append(CLASS_TYPES[held[0]])
        elif not held:
            types.append(CLASS_TYPES["integer" if "INT" in declared.upper() else "text"])
        else:
            types.append(CLASS_TYPES["text"])
    return types


def as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.hex() if isinstance(value, bytes) else str(value)


def copy_table(src: sqlite3.Connection, pg: psycopg.Connection[Any], table: str) -> None:
    columns = columns_of(src, table)
    types = storage_types(src, table, columns)
    mixed = [i for i, (t, _) in enumerate(types) if t == "text"]
    pairs = zip(columns, types, strict=True)
    defs = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for (c, _), (t, _) in pairs)
    pg.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(table), defs))
    names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns)
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(table), names)
    cursor = src.execute(f"SELECT {', '.join(q(c) for c, _ in columns)} FROM {q(table)}")
    with pg.transaction(), pg.cursor() as cur, cur.copy(copy_sql) as copy:
        copy.set_types([w for _, w in types])
        while batch := cursor.fetchmany(5_000):
            for row in batch:
                if mixed:
                    row = list(row)
                    for i in mixed:
                        row[i] = as_text(row[i])
                copy.write_row(row)


def post_statements(src: sqlite3.Connection, tables: list[str]) -> Iterator[sql.Composed]:
    """Keys, indexes and FKs after the rows, as the generated shapes' reference adds them."""
    ident = sql.Identifier
    for table in tables:
        if pk := primary_key(src, table):
            cols = sql.SQL(", ").join(map(ident, pk))
            yield sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(ident(table), cols)
        for index in indexes_of(src, table):
            if index.origin != "pk" and index.columns:
                unique = sql.SQL("UNIQUE " if index.unique else "")
                cols = sql.SQL(", ").join(map(ident, index.columns))
                yield sql.SQL("CREATE {}INDEX ON {} ({})").format(unique, ident(table), cols)
    for table in tables:
        for fk in foreign_keys(src, table):
            yield sql.SQL("ALTER TABLE {} ADD FOREIGN KEY ({}) REFERENCES {} ({}) NOT VALID").format(
                ident(fk.table),
                sql.SQL(", ").join(map(ident, fk.columns)),
                ident(fk.parent),
                sql.SQL(", ").join(map(ident, fk.parent_columns)),
            )
    yield sql.Composed([sql.SQL("ANALYZE")])


def load_reference(db: Path, dsn: str) -> int:
    """d: every table by storage-class binary COPY, then keys, indexes, FKs; returns statements skipped."""
    src = sqlite3.connect(ro_uri(db), uri=True)
    src.text_factory = lambda b: b.decode("utf-8", "replace")
    skipped = 0
    try:
        with psycopg.connect(dsn, autocommit=True) as pg:
            tables = user_tables(src)
            for table in tables:
                copy_table(src, pg, table)
            for statement in post_statements(src, tables):
                try:
                    pg.execute(statement)
                except psycopg.Error as e:
                    skipped += 1
                    print(f"skipped: {statement.as_string(pg)}: {str(e).splitlines()[0]}")
    finally:
        src.close()
    return skipped


# --- the runner --------------------------------------------------------------------------------------


@dataclass
class Result:
    """One file and approach over the rounds: times, peaks, what the target held, or why it was refused."""

    seconds: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    loaded: int | None = None
    refused: str | None = None
    notes: set[str] = field(default_factory=set)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _child(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, int, int, str]:
    """Wall seconds, peak RSS (kB), exit code and output of one child process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        _pid, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0)
        return seconds, int(usage.ru_maxrss), os.waitstatus_to_exitcode(status), out.read().decode(errors="replace")


def _command_file() -> Path:
    return Path(tempfile.gettempdir()) / f"bench-realworld-{os.getpid()}.load"


def _pgloader_command(db: Path, dsn: str) -> Path:
    """bench/snapshot.py's pgloader options; the source as a quoted absolute path, the form pgloader
    parses for a name with a space ("my db.sqlite"; ``sqlite://`` + such a path is a parse error)."""
    command = _command_file()
    target = dsn.replace("postgresql://", "pgsql://", 1)
    command.write_text(
        f"LOAD DATABASE FROM '{db.resolve()}' INTO {target}\n"
        "WITH include drop, create tables, create indexes, reset sequences, foreign keys,\n"
        "     batch rows = 5000, prefetch rows = 5000;\n"
    )
    return command


def _argv(approach: str, db: Path, dsn: str) -> tuple[list[str], dict[str, str] | None]:
    if approach == "a":
        env = {**os.environ, "REPLICATOR_LOG__FORMAT": "json"}
        mode = ["--mode", "create", "--on-bad-value", "quarantine", "-q"]
        return [sys.executable, "-m", "replicator", "snapshot", "--source", str(db), "--target", dsn, *mode], env
    if approach == "b":
        return ["pgloader", "--quiet", str(_pgloader_command(db, dsn))], None
    return [sys.executable, __file__, "--inner-reference", str(db), dsn], None


def _why(approach: str, rc: int, output: str) -> str | None:
    """The reason a run failed, in one line, or None. pgloader exits 0 after a FATAL: read its log."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if approach == "b":
        fatal = [line for line in lines if " FATAL " in line or " ERROR " in line or "KABOOM" in line]
        if any(" FATAL " in line or "KABOOM" in line for line in fatal):
            return " / ".join(line.split(" ", 2)[-1] for line in fatal)[:300]
    if rc == 0:
        return None
    errors = [line for line in lines if "error" in line.lower()] or lines[-2:]
    return f"exit {rc}: " + " / ".join(errors[-2:])[:300]


def _notes(approach: str, output: str) -> set[str]:
    if approach == "b":
        return {line.split(" ERROR ", 1)[1][:120] for line in output.splitlines() if " ERROR " in line}
    if approach == "d":
        return {line[:160] for line in output.splitlines() if line.startswith("skipped:")}
    return set()


def _target_rows(dsn: str) -> int:
    """Rows in the target's tables outside the catalogs and the replicator's own schema."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT schemaname, relname FROM pg_stat_user_tables WHERE schemaname <> ALL(%s)", (list(NOT_OURS),)
        ).fetchall()
        query = sql.SQL("SELECT count(*) FROM {}.{}")
        counts = [conn.execute(query.format(sql.Identifier(s), sql.Identifier(t))).fetchone() for s, t in tables]
        return sum(c[0] for c in counts if c)


def _with_db(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


def run_once(approach: str, db: Path, admin_dsn: str, result: Result) -> None:
    """One run into a fresh database, added to ``result`` (or its refusal recorded)."""
    name = f"bench_realworld_{approach}_{os.getpid()}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _with_db(admin_dsn, name)
    try:
        argv, env = _argv(approach, db, dsn)
        seconds, peak, rc, output = _child(argv, env)
        if reason := _why(approach, rc, output):
            result.refused = reason
            return
        result.seconds.append(seconds)
        result.peaks.append(peak)
        result.loaded = _target_rows(dsn)
        result.notes |= _notes(approach, output)
    finally:
        _command_file().unlink(missing_ok=True)
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass(frozen=True)
class Source:
    label: str
    path: Path
    rows: int
    refused: str | None = None
    """Why --scale could not copy it (then no approach runs)."""


FLOOR = "(floor: 1 table, 1 row)"


def _floor(scratch: Path) -> Path:
    path = scratch / "floor.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        conn.execute("INSERT INTO t VALUES (1, 'x')")
    conn.close()
    return path


def sources(folder: Path, only: Sequence[str], scale: int, scratch: Path) -> list[Source]:
    """The files to load (``only``: substrings of their paths), scaled when asked, and the floor file."""
    found = [Source(FLOOR, _floor(scratch), 1)]
    for path in realworld_files(folder):
        label = str(path.relative_to(folder))
        if only and not any(o in label for o in only):
            continue
        if scale == 1:
            found.append(Source(label, path, row_count(path)))
            continue
        dest = scratch / f"{path.stem.replace(' ', '_')}.x{scale}{path.suffix}"
        try:
            scale_copy(path, dest, scale)
            found.append(Source(f"{label} ×{scale}", dest, row_count(dest)))
        except ScaleRefused as e:
            found.append(Source(f"{label} ×{scale}", path, row_count(path), f"--scale refused: {e}"))
    return found


def run_rounds(files: list[Source], approaches: str, rounds: int, dsn: str) -> dict[tuple[str, str], Result]:
    """Round after round, every file and approach in turn (a busy machine hurts every approach alike);
    an approach that refused a file is not asked again."""
    results = {(f.label, a): Result(refused=f.refused) for f in files for a in approaches}
    for n in range(rounds):
        for source in files:
            for approach in approaches:
                result = results[source.label, approach]
                if result.refused:
                    continue
                run_once(approach, source.path, dsn, result)
                shown = f"refused: {result.refused}" if result.refused else f"{result.seconds[-1]:.2f}s"
                print(f"  round {n + 1} {source.label} ({approach}): {shown}", flush=True)
    return results


def _row(source: Source, approach: str, result: Result) -> str:
    head = f"| {source.label} | {source.rows:,} | ({approach}) {APPROACHES[approach]} |"
    if result.refused:
        return f"{head} – | refused: {result.refused.replace('|', '/')} | | | |"
    rate = source.rows / result.median
    loaded = f"{result.loaded:,}" if result.loaded is not None else "?"
    peak = max(result.peaks) / 1024
    return f"{head} {len(result.seconds)} | {result.median:.2f} | {rate:,.0f} | {peak:.0f} | {loaded} |"


def report(files: list[Source], approaches: str, results: dict[tuple[str, str], Result]) -> None:
    print("\n| file | source rows | approach | rounds | median s | rows/s | peak RSS MB | rows in target |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for source in files:
        if source.refused:  # by --scale: no approach ran
            print(f"| {source.label} | {source.rows:,} | – | – | {source.refused} | | | |")
            continue
        for approach in approaches:
            print(_row(source, approach, results[source.label, approach]))
    if "a" in approaches:
        others = [o for o in "bd" if o in approaches]
        print("\n| file | " + " | ".join(f"(a) vs ({o})" for o in others) + " |")
        print("| --- |" + " ---: |" * len(others))
        for source in files:
            a = results[source.label, "a"]
            cells = [_ratio(a, results[source.label, o]) for o in others]
            print(f"| {source.label} | " + " | ".join(cells) + " |")
    _combined(files, approaches, results)
    for (label, approach), result in results.items():
        for note in sorted(result.notes):
            print(f"note: {label} ({approach}): {note}")


def _ratio(a: Result, other: Result) -> str:
    if not a.seconds or not other.seconds:
        return "–"
    return f"{other.median / a.median:.2f}×"


def _loaded_by(files: list[Source], results: dict[tuple[str, str], Result], approaches: str) -> list[Source]:
    return [f for f in files if f.label != FLOOR and all(results[f.label, a].seconds for a in approaches)]


def _total(files: list[Source], approach: str, results: dict[tuple[str, str], Result]) -> tuple[float, float]:
    """The sum of the per-file medians, and that sum less one start-up (the floor's median) per file."""
    total = sum(results[f.label, approach].median for f in files)
    floor = results[FLOOR, approach]
    return total, (total - len(files) * floor.median if floor.seconds else float("nan"))


def _combined(files: list[Source], approaches: str, results: dict[tuple[str, str], Result]) -> None:
    """Sums of the per-file medians over the files every approach loaded; then each ratio over the files
    both of its approaches loaded (so a file pgloader refuses still counts in (a) vs (d))."""
    if real := _loaded_by(files, results, approaches):
        rows = sum(f.rows for f in real)
        print(f"\ncombined: sum of the per-file medians, the {len(real)} files every approach loaded ({rows:,} rows)")
        print("| approach | total s | rows/s | total less the floor per file, s | peak RSS MB |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for approach in approaches:
            total, beyond = _total(real, approach, results)
            peak = max(max(results[f.label, approach].peaks) for f in real) / 1024
            label = f"({approach}) {APPROACHES[approach]}"
            print(f"| {label} | {total:.2f} | {rows / total:,.0f} | {beyond:.2f} | {peak:.0f} |")
    for other in (o for o in "bd" if "a" in approaches and o in approaches):
        pair = _loaded_by(files, results, "a" + other)
        if not pair:
            continue
        (a_total, a_beyond), (o_total, o_beyond) = _total(pair, "a", results), _total(pair, other, results)
        ratio = f"{o_beyond / a_beyond:.2f}×" if a_beyond > 0 and o_beyond > 0 else "n/a, within noise"
        rows = sum(f.rows for f in pair)
        print(f"(a) vs ({other}) combined over the {len(pair)} files both loaded ({rows:,} rows): ", end="")
        print(f"{o_total / a_total:.2f}× (less the floor per file: {ratio})")


def main(args: argparse.Namespace) -> None:
    """``bench/snapshot.py --shape realworld``: ``args`` carries rounds, only, dsn, realworld, files, scale."""
    folder = args.realworld or default_realworld()
    if not folder.is_dir():
        raise SystemExit(f"no real-world files at {folder} (set REPLICATOR_SHARED or pass --realworld)")
    approaches = "".join(a for a in args.only if a in APPROACHES)
    if skipped := "".join(a for a in args.only if a not in APPROACHES):
        print(f"not run on the real-world files: {skipped} (only {', '.join(APPROACHES)})")
    with tempfile.TemporaryDirectory(prefix="bench-realworld-") as scratch:
        only = [f for f in (args.files or "").split(",") if f]
        files = sources(folder, only, args.scale, Path(scratch))
        print(f"{len(files) - 1} files from {folder} (+ the floor file), scale ×{args.scale}, rounds {args.rounds}")
        results = run_rounds(files, approaches, args.rounds, args.dsn)
        report(files, approaches, results)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--inner-reference":
        print(f"skipped {load_reference(Path(sys.argv[2]), sys.argv[3])} statement(s)")
    else:
        raise SystemExit("run through bench/snapshot.py --shape realworld")
