"""Capture overhead on application writes, against no capture and against the floor; journal read throughput.

Same workload, same settings (WAL, synchronous=NORMAL), on a fresh file each round, in several variants;
ratios are of medians over ``--rounds`` rounds, every variant run in the same round, in alternating order.
The primary number is CPU time of this process (user + system: with synchronous=NORMAL in WAL there is
no fsync per commit, so it holds nearly all the cost and is robust to other processes competing for the
CPU); wall-clock ratios are printed too.

Variants: ``base`` (no trigger), ``capture`` (``install_on``) and ``floor``: the cheapest trigger that
writes one journal row per change, ``INSERT INTO j (k) VALUES (NEW.rowid)`` (OLD on delete; the key
columns on a WITHOUT ROWID table) into a plain rowid table. No capture can cost less than the floor: it
pays what any trigger that writes a row pays (the trigger's frame, a b-tree insert, one more page per
commit, and on INSERT into a table with a UNIQUE or PRIMARY KEY check the statement journal SQLite
opens for any statement that fires a trigger and may abort). ``--extra`` adds variants that show where
the capture's cost over the floor goes: ``no-victim`` (capture without its REPLACE-victim triggers),
``floor-victim`` (the floor plus capture's REPLACE-victim triggers), ``autoinc`` (an AUTOINCREMENT
journal), ``stamped`` (``install(stamp_time=True)``). ``--before CHECKOUT`` adds ``before``: the capture as
the replicator checked out at CHECKOUT installs it (e.g. ``git worktree add /tmp/main main``), replayed as
DDL, so two versions' triggers are measured in the same run.
Phases: INSERT, UPDATE (two non-key columns, by PK), "save" (every non-key column, the UNIQUE one
included with its own value, by PK: what an ORM's save() writes), DELETE (by PK), each in
autocommit (one transaction per statement) and in 100-statement transactions. Tables: ``indexed``
(INTEGER PK plus a UNIQUE and three secondary indexes), ``plain`` (INTEGER PK only) and ``textkey``
(a composite TEXT key, WITHOUT ROWID: the most expensive key to encode).

    .venv/bin/python bench/capture_overhead.py [--rounds 5] [--rows 3000] [--tx-rows 30000] [--extra no-victim,...]
        [--before /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from triggers import install, journal, names
from triggers.schema import quote_ident

TABLES = {
    "indexed": [
        "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT, n INT, created TEXT)",
        "CREATE INDEX t_name ON t (name)",
        "CREATE INDEX t_n ON t (n)",
        "CREATE INDEX t_created ON t (created)",
    ],
    "plain": ["CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT, name TEXT, n INT, created TEXT)"],
    "textkey": [
        "CREATE TABLE t (tenant TEXT, id TEXT, email TEXT, name TEXT, n INT, created TEXT,"
        " PRIMARY KEY (tenant, id)) WITHOUT ROWID"
    ],
}
PHASES = ("insert", "update", "save", "delete")


def open_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def statements(kind: str) -> dict[str, tuple[str, Callable[[int], tuple[object, ...]]]]:
    if kind == "textkey":
        return {
            "insert": (
                "INSERT INTO t VALUES ('acme', ?, ?, ?, ?, ?)",
                lambda i: (f"id-{i:08d}", f"u{i}@example.com", f"name {i % 97}", i, f"2026-01-01 {i % 24:02d}:00"),
            ),
            "update": (
                "UPDATE t SET n = n + 1, name = ? WHERE tenant = 'acme' AND id = ?",
                lambda i: (f"nm{i}", f"id-{i:08d}"),
            ),
            "save": (
                "UPDATE t SET email = ?, name = ?, n = ?, created = ? WHERE tenant = 'acme' AND id = ?",
                lambda i: (f"u{i}@example.com", f"sv{i}", i, "2026-01-02 00:00", f"id-{i:08d}"),
            ),
            "delete": ("DELETE FROM t WHERE tenant = 'acme' AND id = ?", lambda i: (f"id-{i:08d}",)),
        }
    return {
        "insert": (
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            lambda i: (i, f"u{i}@example.com", f"name {i % 97}", i, f"2026-01-01 {i % 24:02d}:00"),
        ),
        "update": ("UPDATE t SET n = n + 1, name = ? WHERE id = ?", lambda i: (f"nm{i}", i)),
        "save": (
            "UPDATE t SET email = ?, name = ?, n = ?, created = ? WHERE id = ?",
            lambda i: (f"u{i}@example.com", f"sv{i}", i, "2026-01-02 00:00", i),
        ),
        "delete": ("DELETE FROM t WHERE id = ?", lambda i: (i,)),
    }


AUTOINC_JOURNAL = (
    'CREATE TABLE "_replicator_journal" (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT, op TEXT, gen INTEGER,'
    " nk INTEGER, ts_ms INTEGER, k1, o1, k2, o2)"
)
FLOOR_EVENTS = (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD"))


def _floor(conn: sqlite3.Connection, kind: str) -> None:
    """The floor: one AFTER trigger per event writing one row, just the key, into a plain rowid table."""
    keys = ("tenant", "id") if kind == "textkey" else ("rowid",)
    cols = ", ".join(f"k{i}" for i in range(1, len(keys) + 1))
    conn.execute(f"CREATE TABLE j ({cols})")
    for event, row in FLOOR_EVENTS:
        refs = ", ".join(f"{row}.{k}" for k in keys)
        conn.execute(f"CREATE TRIGGER j_{event} AFTER {event} ON t BEGIN INSERT INTO j ({cols}) VALUES ({refs}); END")


VICTIM_TRIGGERS = tuple(names.capture_trigger_name("t", e) for e in ("rin", "rup"))
"""The capture's REPLACE-victim triggers on the bench table (BEFORE INSERT / BEFORE UPDATE OF)."""


INSTALL_FROM = """
import sys
sys.path.insert(0, sys.argv[1])
import triggers
assert triggers.__file__.startswith(sys.argv[1]), triggers.__file__
from triggers import install
install.install(sys.argv[2])
"""


def installed_by(checkout: Path, kind: str) -> list[str]:
    """The capture DDL (journal, meta table, triggers) that the replicator checked out at ``checkout``
    installs on this table, in order: the ``before`` variant replays it, so the triggers of two versions
    are measured in the same run."""
    with tempfile.TemporaryDirectory(prefix="capture-before-") as tmp:
        path = Path(tmp) / "before.db"
        conn = sqlite3.connect(path)
        for ddl in TABLES[kind]:
            conn.execute(ddl)
        conn.close()
        subprocess.run(
            [sys.executable, "-c", INSTALL_FROM, str(checkout.resolve()), str(path)], check=True, capture_output=True
        )
        conn = sqlite3.connect(path)
        rows = conn.execute(
            "SELECT sql FROM sqlite_schema WHERE name LIKE '\\_replicator\\_%' ESCAPE '\\' AND sql IS NOT NULL"
            " ORDER BY type = 'trigger', rowid"
        ).fetchall()
        conn.close()
    return [str(sql) for (sql,) in rows]


def setup(conn: sqlite3.Connection, kind: str, variant: str, before: Mapping[str, Sequence[str]]) -> None:
    """Put one variant's triggers on the bench table ``t`` (variants: see the module doc); ``before`` maps
    each table kind to the DDL of :func:`installed_by`, for the ``before`` variant."""
    if variant == "base":
        return
    if variant == "before":
        for statement in before[kind]:
            conn.execute(statement)
        return
    if variant == "floor":
        _floor(conn, kind)
        return
    install.install_on(conn, stamp_time=variant == "stamped")
    if variant == "autoinc":  # the same triggers, writing into an AUTOINCREMENT journal
        conn.execute('DROP TABLE "_replicator_journal"')
        conn.execute(AUTOINC_JOURNAL)
    if variant not in ("no-victim", "floor-victim"):
        return
    triggers = [str(n) for (n,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'trigger'")]
    for name in triggers:
        if (name in VICTIM_TRIGGERS) == (variant == "no-victim"):
            conn.execute(f"DROP TRIGGER {quote_ident(name)}")
    if variant == "floor-victim":
        _floor(conn, kind)


def run_once(
    directory: Path, kind: str, variant: str, rows: int, per_tx: int, before: Mapping[str, Sequence[str]]
) -> dict[str, tuple[float, float]]:
    """(CPU seconds, wall seconds) per phase for one fresh database in one variant (see the module doc)."""
    path = directory / f"{kind}-{variant}-{per_tx}-{time.monotonic_ns()}.db"
    conn = open_db(path)
    for ddl in TABLES[kind]:
        conn.execute(ddl)
    setup(conn, kind, variant, before)
    timings: dict[str, tuple[float, float]] = {}
    for phase in PHASES:
        sql, params = statements(kind)[phase]
        order = range(rows - 1, -1, -1) if phase in ("update", "save") else range(rows)
        started, cpu = time.perf_counter(), time.process_time()
        if per_tx == 1:
            for i in order:
                conn.execute(sql, params(i))
        else:
            batch: list[int] = []
            for i in order:
                batch.append(i)
                if len(batch) == per_tx:
                    conn.execute("BEGIN")
                    for j in batch:
                        conn.execute(sql, params(j))
                    conn.execute("COMMIT")
                    batch.clear()
            if batch:
                conn.execute("BEGIN")
                for j in batch:
                    conn.execute(sql, params(j))
                conn.execute("COMMIT")
        timings[phase] = (time.process_time() - cpu, time.perf_counter() - started)
    _check_journaled(conn, variant, rows)
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return timings


def _check_journaled(conn: sqlite3.Connection, variant: str, rows: int) -> None:
    if variant == "base":
        return
    table = "j" if variant in ("floor", "floor-victim") else '"_replicator_journal"'
    (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    writes = len(PHASES) * rows
    assert count >= writes, f"{variant}: every write must be journaled ({count} rows for {writes} writes)"
    # No write here conflicts: one entry each (``before`` may journal a save twice, R and U).
    assert count == writes or variant == "before", f"{variant}: {count} journal rows for {writes} writes"


class Row(NamedTuple):
    kind: str
    mode: str
    phase: str
    base: float
    """rows/s without capture (CPU)"""
    capture: float
    """rows/s with capture (CPU)"""
    cpu: dict[str, float]
    """each variant's median CPU time over base's"""
    wall: float
    """capture's median wall time over base's"""


def overhead(
    directory: Path,
    rounds: int,
    rows: int,
    tx_rows: int,
    extra: list[str],
    before: Path | None = None,
    kinds: Sequence[str] = tuple(TABLES),
) -> list[Row]:
    """One row per (table, mode, op): medians of ``rounds`` rounds, each running every variant once."""
    variants = ["base", "floor", "capture", *extra]
    replay = {kind: installed_by(before, kind) for kind in kinds} if before else {}
    results: list[Row] = []
    for kind in kinds:
        for mode, per_tx, n in (("autocommit", 1, rows), ("tx100", 100, tx_rows)):
            cpu: dict[str, dict[str, list[float]]] = {v: {p: [] for p in PHASES} for v in variants}
            wall: dict[str, dict[str, list[float]]] = {v: {p: [] for p in PHASES} for v in variants}
            for r in range(rounds):
                order = variants if r % 2 == 0 else list(reversed(variants))
                for variant in order:
                    for phase, (c, w) in run_once(directory, kind, variant, n, per_tx, replay).items():
                        cpu[variant][phase].append(c)
                        wall[variant][phase].append(w)
            for phase in PHASES:
                med = {v: statistics.median(cpu[v][phase]) for v in variants}
                walls = {v: statistics.median(wall[v][phase]) for v in ("base", "capture")}
                ratios = {v: med[v] / med["base"] for v in variants}
                results.append(
                    Row(
                        kind, mode, phase, n / med["base"], n / med["capture"], ratios, walls["capture"] / walls["base"]
                    )
                )
    return results


def read_throughput(directory: Path, entries: int, rounds: int) -> tuple[float, float]:
    """(entries/s read as Entry structs, entries/s read and canonically text-encoded), medians."""
    path = directory / "journal.db"
    conn = open_db(path)
    conn.execute("CREATE TABLE t (tenant TEXT, id INTEGER, v, PRIMARY KEY (tenant, id)) WITHOUT ROWID")
    install.install_on(conn)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES ('acme', ?, 'x')", ((i,) for i in range(entries)))
    conn.execute("COMMIT")
    raw, encoded = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        after, count = 0, 0
        while batch := journal.read(conn, after, limit=10_000):
            count += len(batch)
            after = batch[-1].seq
        raw.append(count / (time.perf_counter() - started))
        started = time.perf_counter()
        after, count = 0, 0
        while batch := journal.read(conn, after, limit=10_000):
            for entry in batch:
                journal.encode_key(entry.key)
            count += len(batch)
            after = batch[-1].seq
        encoded.append(count / (time.perf_counter() - started))
    conn.close()
    return statistics.median(raw), statistics.median(encoded)


EXTRA = ("no-victim", "floor-victim", "autoinc", "stamped")


def _print(results: list[Row], extra: list[str], rounds: int) -> None:
    print(f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=NORMAL, medians of {rounds} rounds (CPU time)\n")
    cells = "".join(f" {v} ×base |" for v in extra)
    print(
        "| table | mode | op | rows/s without | rows/s with | capture ×base | capture ×floor | floor ×base |"
        f" capture ×base (wall) |{cells}"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(extra))
    for row in results:
        c = row.cpu
        more = "".join(f" {c[v]:.2f}× |" for v in extra)
        print(
            f"| {row.kind} | {row.mode} | {row.phase} | {row.base:,.0f} | {row.capture:,.0f} | {c['capture']:.2f}× |"
            f" {c['capture'] / c['floor']:.2f}× | {c['floor']:.2f}× | {row.wall:.2f}× |{more}"
        )
    print()
    for kind in dict.fromkeys(r.kind for r in results):
        mine = [r for r in results if r.kind == kind]
        worst = max(mine, key=lambda r: r.cpu["capture"])
        floor = max(r.cpu["capture"] / r.cpu["floor"] for r in mine)
        print(
            f"worst on {kind}: {worst.cpu['capture']:.2f}× no capture ({worst.mode} {worst.phase}),"
            f" {floor:.2f}× the floor"
        )
        if "before" in extra:
            old = max(mine, key=lambda r: r.cpu["before"])
            print(f"  before: {old.cpu['before']:.2f}× no capture ({old.mode} {old.phase})")
    print("(target ≤ 1.15×, must ≤ 1.30× no capture on indexed)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=3_000, help="rows per phase in autocommit mode")
    parser.add_argument("--tx-rows", type=int, default=30_000, help="rows per phase in 100-statement transactions")
    parser.add_argument("--journal-entries", type=int, default=200_000, help="0: skip the read throughput")
    parser.add_argument("--extra", default="", help=f"comma-separated extra variants: {', '.join(EXTRA)}")
    parser.add_argument("--tables", default=",".join(TABLES), help="comma-separated: " + ", ".join(TABLES))
    parser.add_argument(
        "--before", type=Path, help="also measure the capture a replicator checkout installs (e.g. a worktree of main)"
    )
    parser.add_argument("--autoincrement", action="store_true", help="same as --extra autoinc")
    parser.add_argument("--stamp-time", action="store_true", help="same as --extra stamped")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # no line per install
    if args.rounds < 3:
        parser.error("--rounds must be >= 3 (medians)")
    extra = [v for v in args.extra.split(",") if v]
    extra += (["autoinc"] if args.autoincrement else []) + (["stamped"] if args.stamp_time else [])
    if unknown := sorted(set(extra) - set(EXTRA)):
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(EXTRA)}")
    if args.before:
        extra.append("before")
    kinds = [k for k in args.tables.split(",") if k]
    if unknown := sorted(set(kinds) - set(TABLES)):
        parser.error(f"unknown table(s) {', '.join(unknown)}; choose from {', '.join(TABLES)}")
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        directory = Path(tmp)
        results = overhead(directory, args.rounds, args.rows, args.tx_rows, extra, args.before, kinds)
        _print(results, extra, args.rounds)
        if args.journal_entries:
            raw, encoded = read_throughput(directory, args.journal_entries, args.rounds)
            print("| journal read (2-column key) | per second |")
            print("|---|---:|")
            print(f"| entries read (Entry structs, pages of 10,000) | {raw:,.0f} |")
            print(f"| entries read and keys text-encoded | {encoded:,.0f} |")


if __name__ == "__main__":
    main()
