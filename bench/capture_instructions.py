"""Capture overhead counted in instructions: deterministic, for a machine too noisy for CPU time.

The workload, tables and variants of ``bench/capture_overhead.py`` (imported from it), each variant run
once under valgrind's callgrind. Every instruction of the process between two phase markers is counted:
SQLite's work and Python's statement loop, as the app would run them. The kernel's work is not (the WAL
writes of each commit, one more page with any journal): autocommit ratios here are lower than in CPU
time. Variants a few percent apart, which CPU time on a shared machine cannot tell apart, can be
compared here; the result does not change from run to run (the b-trees are smaller than in the CPU
bench: fewer rows, valgrind runs about 50 times slower).

    .venv/bin/python bench/capture_instructions.py [--rows 2000] [--tx-rows 6000] [--extra no-victim,...]
        [--before /path/to/other/checkout] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.capture_overhead import EXTRA, PHASES, TABLES, installed_by, open_db, setup, statements

MARK = "-- phase;"
"""Passed to ``sqlite3.complete_statement`` between phases: callgrind dumps a part on each call."""


def child(kind: str, variant: str, per_tx: int, rows: int, before: str) -> None:
    """Run under callgrind: set up one variant, then each phase between two markers."""
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    replay = {kind: json.loads(Path(before).read_text())} if before else {}
    with tempfile.TemporaryDirectory(prefix="capture-instr-") as tmp:
        conn = open_db(Path(tmp) / "x.db")
        for ddl in TABLES[kind]:
            conn.execute(ddl)
        setup(conn, kind, variant, replay)
        for phase in PHASES:
            sql, params = statements(kind)[phase]
            order = list(range(rows - 1, -1, -1) if phase in ("update", "save") else range(rows))
            sqlite3.complete_statement(MARK)
            for start in range(0, rows, per_tx):
                if per_tx > 1:
                    conn.execute("BEGIN")
                for i in order[start : start + per_tx]:
                    conn.execute(sql, params(i))
                if per_tx > 1:
                    conn.execute("COMMIT")
        sqlite3.complete_statement(MARK)
        conn.close()


def measure(kind: str, variant: str, per_tx: int, rows: int, before: str) -> dict[str, float]:
    """Instructions per row of each phase, for one variant."""
    with tempfile.TemporaryDirectory(prefix="capture-cg-") as tmp:
        out = Path(tmp) / "cg.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            "--dump-before=sqlite3_complete",
            sys.executable,
            __file__,
            "--child",
            kind,
            variant,
            str(per_tx),
            str(rows),
            before,
        ]
        subprocess.run(command, check=True, capture_output=True)
        totals = {}
        for part in range(2, 2 + len(PHASES)):  # part 1: start-up and setup, up to the first marker
            text = Path(f"{out}.{part}").read_text()
            line = next(x for x in text.splitlines() if x.startswith(("totals:", "summary:")))
            totals[PHASES[part - 2]] = int(line.split()[1]) / rows
        return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000, help="rows per phase in autocommit mode")
    parser.add_argument("--tx-rows", type=int, default=6_000, help="rows per phase in 100-statement transactions")
    parser.add_argument("--extra", default="", help=f"comma-separated extra variants: {', '.join(EXTRA)}")
    parser.add_argument("--before", type=Path, help="also count the capture a replicator checkout installs")
    parser.add_argument("--jobs", type=int, default=2, help="valgrind processes at once")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, variant, per_tx, rows, before = args.child
        child(kind, variant, int(per_tx), int(rows), before)
        return
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed")
    extra = [v for v in args.extra.split(",") if v] + (["before"] if args.before else [])
    variants = ["base", "floor", "capture", *extra]
    with tempfile.TemporaryDirectory(prefix="capture-before-") as tmp:
        replays = {}
        for kind in TABLES:
            replays[kind] = str(Path(tmp) / f"{kind}.json") if args.before else ""
            if args.before:
                Path(replays[kind]).write_text(json.dumps(installed_by(args.before, kind)))
        jobs = [
            (kind, mode, per_tx, n, variant)
            for kind in TABLES
            for mode, per_tx, n in (("autocommit", 1, args.rows), ("tx100", 100, args.tx_rows))
            for variant in variants
        ]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            counted = list(pool.map(lambda j: measure(j[0], j[4], j[2], j[3], replays[j[0]]), jobs))
    results = {(j[0], j[1], j[4]): c for j, c in zip(jobs, counted, strict=True)}
    _print(results, extra)


def _print(results: dict[tuple[str, str, str], dict[str, float]], extra: list[str]) -> None:
    print(f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=NORMAL: instructions per row (callgrind)\n")
    cells = "".join(f" {v} ×base |" for v in extra)
    head = "| table | mode | op | instr/row without | instr/row with | capture ×base | capture ×floor | floor ×base |"
    print(head + cells)
    print("|---|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(extra))
    for kind in TABLES:
        for mode in ("autocommit", "tx100"):
            for phase in PHASES:
                c = {v: results[(kind, mode, v)][phase] for v in ("base", "floor", "capture", *extra)}
                more = "".join(f" {c[v] / c['base']:.3f}× |" for v in extra)
                ratios = f" {c['capture'] / c['base']:.3f}× | {c['capture'] / c['floor']:.3f}× |"
                ratios += f" {c['floor'] / c['base']:.3f}× |"
                print(f"| {kind} | {mode} | {phase} | {c['base']:,.0f} | {c['capture']:,.0f} |{ratios}{more}")


if __name__ == "__main__":
    main()
