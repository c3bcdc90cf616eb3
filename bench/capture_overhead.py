"""Capture overhead on application writes, and journal read throughput.

Same workload, same settings (WAL, synchronous=NORMAL), on a fresh file each round, with and without
the capture triggers; ratios are of medians over ``--rounds`` rounds, both variants run in the same
round, in alternating order. The primary number is CPU time of this process (user + system:
with synchronous=NORMAL in WAL there is no fsync per commit, so it holds nearly all the cost and is
robust to other processes competing for the CPU); wall-clock ratios are printed too.
``--autoincrement`` adds a variant whose journal uses AUTOINCREMENT, ``--stamp-time`` one whose
triggers also write a timestamp (``install(stamp_time=True)``), to show what each would cost.
Phases: INSERT, UPDATE (non-key columns, by PK), DELETE (by PK), each in
autocommit (one transaction per statement) and in 100-statement transactions. Tables: ``indexed``
(INTEGER PK plus a UNIQUE and three secondary indexes), ``plain`` (INTEGER PK only) and ``textkey``
(a composite TEXT key, WITHOUT ROWID: the most expensive key to encode).

    .venv/bin/python bench/capture_overhead.py [--rounds 5] [--rows 3000] [--tx-rows 30000]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from triggers import install, journal

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
PHASES = ("insert", "update", "delete")


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _statements(kind: str) -> dict[str, tuple[str, Callable[[int], tuple[object, ...]]]]:
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
            "delete": ("DELETE FROM t WHERE tenant = 'acme' AND id = ?", lambda i: (f"id-{i:08d}",)),
        }
    return {
        "insert": (
            "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
            lambda i: (i, f"u{i}@example.com", f"name {i % 97}", i, f"2026-01-01 {i % 24:02d}:00"),
        ),
        "update": ("UPDATE t SET n = n + 1, name = ? WHERE id = ?", lambda i: (f"nm{i}", i)),
        "delete": ("DELETE FROM t WHERE id = ?", lambda i: (i,)),
    }


AUTOINC_JOURNAL = (
    'CREATE TABLE "_replicator_journal" (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT, op TEXT, gen INTEGER,'
    " nk INTEGER, ts_ms INTEGER, k1, o1, k2, o2)"
)


def run_once(directory: Path, kind: str, variant: str, rows: int, per_tx: int) -> dict[str, tuple[float, float]]:
    """(CPU seconds, wall seconds) per phase for one fresh database; variant base|capture|autoinc|stamped."""
    path = directory / f"{kind}-{variant}-{per_tx}-{time.monotonic_ns()}.db"
    conn = _open(path)
    for ddl in TABLES[kind]:
        conn.execute(ddl)
    capture = variant != "base"
    if variant == "autoinc":
        conn.execute(AUTOINC_JOURNAL)  # install keeps an existing journal (CREATE TABLE IF NOT EXISTS)
    if capture:
        install.install_on(conn, stamp_time=variant == "stamped")
    timings: dict[str, tuple[float, float]] = {}
    for phase in PHASES:
        sql, params = _statements(kind)[phase]
        order = range(rows) if phase != "update" else range(rows - 1, -1, -1)
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
    if capture:
        assert journal.head(conn) == 3 * rows, "every write must be journaled"
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return timings


Row = tuple[str, str, str, float, float, float, float, dict[str, float]]


def overhead(directory: Path, rounds: int, rows: int, tx_rows: int, extra: list[str]) -> list[Row]:
    """Per (table, mode, op): base rows/s, capture rows/s, CPU ratio, wall ratio, extra variants' CPU ratios."""
    variants = ["base", "capture", *extra]
    results: list[Row] = []
    for kind in TABLES:
        for mode, per_tx, n in (("autocommit", 1, rows), ("tx100", 100, tx_rows)):
            cpu: dict[str, dict[str, list[float]]] = {v: {p: [] for p in PHASES} for v in variants}
            wall: dict[str, dict[str, list[float]]] = {v: {p: [] for p in PHASES} for v in variants}
            for r in range(rounds):
                order = variants if r % 2 == 0 else list(reversed(variants))
                for variant in order:
                    for phase, (c, w) in run_once(directory, kind, variant, n, per_tx).items():
                        cpu[variant][phase].append(c)
                        wall[variant][phase].append(w)
            for phase in PHASES:
                base_cpu = statistics.median(cpu["base"][phase])
                cap_cpu = statistics.median(cpu["capture"][phase])
                base_wall = statistics.median(wall["base"][phase])
                cap_wall = statistics.median(wall["capture"][phase])
                others = {v: statistics.median(cpu[v][phase]) / base_cpu for v in extra}
                results.append(
                    (kind, mode, phase, n / base_cpu, n / cap_cpu, cap_cpu / base_cpu, cap_wall / base_wall, others)
                )
    return results


def read_throughput(directory: Path, entries: int, rounds: int) -> tuple[float, float]:
    """(entries/s read as Entry structs, entries/s read and canonically text-encoded), medians."""
    path = directory / "journal.db"
    conn = _open(path)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=3_000, help="rows per phase in autocommit mode")
    parser.add_argument("--tx-rows", type=int, default=30_000, help="rows per phase in 100-statement transactions")
    parser.add_argument("--journal-entries", type=int, default=200_000)
    parser.add_argument("--autoincrement", action="store_true", help="also measure an AUTOINCREMENT journal")
    parser.add_argument("--stamp-time", action="store_true", help="also measure triggers that write ts_ms")
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("--rounds must be >= 3 (medians)")
    with tempfile.TemporaryDirectory(prefix="capture-bench-") as tmp:
        directory = Path(tmp)
        extra = (["autoinc"] if args.autoincrement else []) + (["stamped"] if args.stamp_time else [])
        results = overhead(directory, args.rounds, args.rows, args.tx_rows, extra)
        raw, encoded = read_throughput(directory, args.journal_entries, args.rounds)
    print(f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=NORMAL, medians of {args.rounds} rounds\n")
    titles = {"autoinc": " AUTOINCREMENT journal (CPU) |", "stamped": " with stamp_time (CPU) |"}
    auto_head = "".join(titles[v] for v in extra)
    auto_rule = "---:|" * len(extra)
    head = "| table | mode | op | rows/s without (CPU) | rows/s with (CPU) | overhead (CPU) | overhead (wall) |"
    print(head + auto_head)
    print(f"|---|---|---|---:|---:|---:|---:|{auto_rule}")
    for kind, mode, phase, base, cap, ratio, wall, others in results:
        cells = "".join(f" {others[v]:.2f}× |" for v in extra)
        print(f"| {kind} | {mode} | {phase} | {base:,.0f} | {cap:,.0f} | {ratio:.2f}× | {wall:.2f}× |{cells}")
    for kind in TABLES:
        worst = max(r[5] for r in results if r[0] == kind)
        print(f"\nworst CPU overhead on {kind}: {worst:.2f}×", end="")
    print("  (target ≤ 1.15×, must ≤ 1.30× on indexed)\n")
    print("| journal read (2-column key) | per second |")
    print("|---|---:|")
    print(f"| entries read (Entry structs, pages of 10,000) | {raw:,.0f} |")
    print(f"| entries read and keys text-encoded | {encoded:,.0f} |")


if __name__ == "__main__":
    main()
