"""Cost on the app of the reverse capture in PostgreSQL (the rollback window's row triggers), against no
trigger and against the floor, with pgbench.

    .venv/bin/python bench/reverse_capture.py --dsn postgresql://postgres@127.0.0.1:5432/postgres --rows 1000000
    .venv/bin/python bench/reverse_capture.py --quick      # tiny sizes: a smoke run of the script, not a figure

Set-up (untimed, once): bench/cutover.py's base (``--rows`` orders over rows/10 accounts), migrated into a
fresh database and cut over (bench/rollback.py's ``cut_over``), so the tables, their keys, indexes and
foreign key are PostgreSQL's as replicator made them. Then, on those tables, three configurations:

* ``none``: no trigger (the reference);
* ``floor``: the cheapest trigger that journals a change: one plain ``AFTER INSERT OR UPDATE OR DELETE ...
  FOR EACH ROW`` PL/pgSQL trigger doing one ``INSERT`` of (table name, key) into a plain table without an
  index. No per-row capture can cost less: it pays a trigger call and a heap insert per row;
* ``capture``: replicator's reverse capture as :func:`replicator.state.reverse.install` puts it (``SECURITY
  DEFINER`` functions with a fixed ``search_path``, the key as JSON, the transaction id, the journal's
  identity key and index).

Workloads (pgbench custom scripts, ``--clients`` connections, ``--seconds`` each): ``update``, one UPDATE of a
random account per transaction; ``insert``, one INSERT into orders per transaction (its foreign key
checked); ``mixed``, one 100-row transaction (40 account UPDATEs, 40 order INSERTs, 20 order UPDATEs; each
client updates its own rows, so no two transactions deadlock). Every (workload, configuration) runs once per
round, configurations in alternating order from round to round, each run after switching the triggers,
emptying both journals, VACUUM of the two tables and a CHECKPOINT; after each run the journal is checked
to hold one entry per row written (none for ``none``). Reported: median tps of ``--rounds`` rounds, and the
time ratios capture/none (goal ≤ 1.2×, i.e. tps ≥ 0.83×) and capture/floor. ``--synchronous-commit off``
measures the CPU cost alone (no WAL flush per commit).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import cutover as cutover_bench  # bench/ is on sys.path when this file runs as a script
import psycopg
import structlog
from rollback import cleanup, cut_over

from replicator.plan.shape import TableShape
from replicator.state import reverse
from replicator.state.store import StateStore

SCHEMA = "replicator"
CONFIGS = ("none", "floor", "capture")
WORKLOADS = ("update", "insert", "mixed")
ROWS_PER_TXN = {"update": 1, "insert": 1, "mixed": 100}
QUICK = {"rows": 5_000, "rounds": 2, "seconds": 1, "clients": 2, "jobs": 1}

FLOOR = """
CREATE SCHEMA IF NOT EXISTS bench_floor;
CREATE TABLE IF NOT EXISTS bench_floor.j (tbl text NOT NULL, key bigint);
CREATE OR REPLACE FUNCTION bench_floor.journal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO bench_floor.j VALUES (TG_TABLE_NAME, OLD.id);
  ELSE
    INSERT INTO bench_floor.j VALUES (TG_TABLE_NAME, NEW.id);
  END IF;
  RETURN NULL;
END $$;
"""
FLOOR_TRIGGER = "bench_floor_journal"

UPDATE_ACCOUNT = (
    "\\set aid :client_id + 1 + :nclients * random(0, :accounts_per_client - 1)\n"
    "UPDATE accounts SET balance = balance + 1 WHERE id = :aid;\n"
)
INSERT_ORDER = (
    "\\set acc random(1, :naccounts)\n"
    "\\set amt random(1, 10000)\n"
    "INSERT INTO orders (account_id, amount, status) VALUES (:acc, :amt, 'new');\n"
)
UPDATE_ORDER = (
    "\\set oid :client_id + 1 + :nclients * random(0, :orders_per_client - 1)\n"
    "UPDATE orders SET status = 'paid', amount = amount + 1 WHERE id = :oid;\n"
)


def scripts() -> dict[str, str]:
    """pgbench scripts; a client's UPDATEs touch only its own rows (ids ≡ client_id mod nclients)."""
    mixed = ["BEGIN;\n"]
    for k in range(100):
        mixed.append((UPDATE_ACCOUNT, UPDATE_ACCOUNT, INSERT_ORDER, INSERT_ORDER, UPDATE_ORDER)[k % 5])
    mixed.append("COMMIT;\n")
    return {"update": UPDATE_ACCOUNT, "insert": INSERT_ORDER, "mixed": "".join(mixed)}


def pgbench_variables(rows: int, clients: int) -> dict[str, int]:
    """The scripts' ``-D`` variables for bench/cutover.py's base of ``rows`` (accounts: a tenth), split by client."""
    accounts = max(1, rows // 10)
    return {
        "naccounts": accounts,
        "nclients": clients,
        "accounts_per_client": accounts // clients,
        "orders_per_client": (rows - accounts) // clients,
    }


def find_pgbench(given: str | None) -> str | None:
    if given:
        return given
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    return candidates[-1] if candidates else None


def shapes_and_cutover(conn: psycopg.Connection[Any]) -> tuple[list[TableShape], str]:
    plan = StateStore(conn, SCHEMA).load_plan()
    window = reverse.read_window(conn, SCHEMA)
    if plan is None or window is None or not window.open:
        raise RuntimeError("the cutover opened no rollback window")
    shapes = reverse.shapes_of(plan)
    return [shapes[name] for name in window.tables], window.cutover


def configure(dsn: str, config: str) -> None:
    """Put ``config``'s triggers on the tables (and only them); empty both journals; VACUUM; CHECKPOINT."""
    with psycopg.connect(dsn) as conn:
        shapes, cutover_hash = shapes_and_cutover(conn)
        conn.execute(FLOOR)
        reverse.remove(conn, SCHEMA, shapes, keep_fence=True)
        for t in shapes:
            conn.execute(f'DROP TRIGGER IF EXISTS {FLOOR_TRIGGER} ON "{t.schema}"."{t.target}"')
        if config == "floor":
            for t in shapes:
                if t.key_target != ("id",):  # the floor's function journals NEW.id / OLD.id
                    raise RuntimeError(f"{t.target}: key {t.key_target}, the floor journals id")
                conn.execute(
                    f'CREATE TRIGGER {FLOOR_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON "{t.schema}"."{t.target}" '
                    "FOR EACH ROW EXECUTE FUNCTION bench_floor.journal()"
                )
        elif config == "capture":
            reverse.install(conn, SCHEMA, shapes, cutover_hash)
        conn.execute(f"TRUNCATE {SCHEMA}.reverse_journal, bench_floor.j")
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM accounts, orders")
        conn.execute("CHECKPOINT")
        triggers = {
            name
            for (name,) in conn.execute(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN "
                "('accounts'::regclass, 'orders'::regclass)"
            )
        }
    expected = {
        "none": set(),
        "floor": {FLOOR_TRIGGER},
        "capture": {*reverse.CAPTURE_TRIGGERS, reverse.TRUNCATE_TRIGGER},
    }
    if triggers != expected[config]:
        raise RuntimeError(f"{config}: triggers {sorted(triggers)} on the tables")


def journaled(dsn: str) -> tuple[int, int]:
    """(entries in the reverse journal, rows in the floor's journal)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT (SELECT count(*) FROM {SCHEMA}.reverse_journal), (SELECT count(*) FROM bench_floor.j)"
        )
        capture, floor = row.fetchone() or (0, 0)
    return int(capture), int(floor)


def pgbench(
    binary: str, dsn: str, script: Path, variables: dict[str, int], args: argparse.Namespace
) -> dict[str, float]:
    """One pgbench run; its tps (without connection time), transactions processed and failed."""
    cmd = [binary, "-n", "-f", str(script), "-c", str(args.clients), "-j", str(args.jobs), "-T", str(args.seconds)]
    for name, value in variables.items():
        cmd += ["-D", f"{name}={value}"]
    env = dict(os.environ)
    if args.synchronous_commit != "on":
        env["PGOPTIONS"] = f"-c synchronous_commit={args.synchronous_commit}"
    done = subprocess.run([*cmd, dsn], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed: {done.stderr[-2000:]}{done.stdout[-2000:]}")
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    processed = re.search(r"number of transactions actually processed: (\d+)", done.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    if tps is None or processed is None:
        raise RuntimeError(f"pgbench printed no tps: {done.stdout[-2000:]}")
    return {
        "tps": float(tps.group(1)),
        "processed": int(processed.group(1)),
        "failed": int(failed.group(1)) if failed else 0,
    }


def check_journal(dsn: str, config: str, workload: str, result: dict[str, float], clients: int) -> None:
    """One journal entry per row written (no key moves here), in the configuration's journal only."""
    capture, floor = journaled(dsn)
    rows = ROWS_PER_TXN[workload]
    written = int(result["processed"]) * rows
    got = {"none": 0, "floor": floor, "capture": capture}[config]
    other = capture + floor - got
    want = 0 if config == "none" else written
    slack = clients * rows  # transactions still running when pgbench's clock ran out
    if other != 0 or abs(got - want) > slack:
        raise RuntimeError(f"{config}/{workload}: journal {got} (the other journal {other}), {written} rows written")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dsn", default=os.environ.get("REPLICATOR_TEST_DSN", "postgresql://postgres@127.0.0.1/postgres")
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10, help="pgbench -T of each run")
    parser.add_argument("--clients", type=int, default=4, help="pgbench -c")
    parser.add_argument("--jobs", type=int, default=2, help="pgbench -j")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS))
    parser.add_argument("--synchronous-commit", choices=("on", "off"), default="on", help="the app's setting")
    parser.add_argument("--pgbench", help="the pgbench binary (default: on PATH, else /usr/lib/postgresql/*/bin)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, short runs: a smoke run, not a figure")
    if parser.parse_known_args()[0].quick:  # tiny defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
    args = parser.parse_args()
    binary = find_pgbench(args.pgbench)
    if binary is None:
        parser.error("pgbench not found: `apt-get install -y postgresql-15` ships it (or pass --pgbench)")
    workloads = [w for w in args.workloads.split(",") if w]
    if unknown := sorted(set(workloads) - set(WORKLOADS)):
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    variables = pgbench_variables(args.rows, args.clients)
    if min(variables.values()) < 1:
        parser.error("--rows too small for --clients")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    tps: dict[str, dict[str, list[float]]] = {w: {c: [] for c in CONFIGS} for w in workloads}
    with tempfile.TemporaryDirectory(prefix="bench-reverse-capture-") as tmp:
        work = Path(tmp)
        base = work / "base.db"
        started = time.monotonic()
        cutover_bench.build_base(base, args.rows)
        print(f"base: {args.rows:,} rows, built in {time.monotonic() - started:.1f}s")
        source, dsn, setup_s = cut_over(base, work, args.dsn, 0)
        print(
            f"migrated and cut over in {setup_s:.1f}s; pgbench {binary}, {args.clients} clients, {args.seconds}s runs"
        )
        files = {}
        for name, text in scripts().items():
            files[name] = work / f"{name}.sql"
            files[name].write_text(text)
        try:
            for r in range(args.rounds):
                order = CONFIGS if r % 2 == 0 else tuple(reversed(CONFIGS))
                for workload in workloads:
                    for config in order:
                        configure(dsn, config)
                        result = pgbench(binary, dsn, files[workload], variables, args)
                        check_journal(dsn, config, workload, result, args.clients)
                        tps[workload][config].append(result["tps"])
                        print(f"round {r + 1} {workload:<6} {config:<7} {result}")
        finally:
            cleanup(args.dsn, source, dsn)
    summary: dict[str, Any] = {
        "benchmark": "reverse_capture",
        "rows": args.rows,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "clients": args.clients,
        "synchronous_commit": args.synchronous_commit,
        "workloads": {},
    }
    for workload in workloads:
        med = {c: statistics.median(tps[workload][c]) for c in CONFIGS}
        summary["workloads"][workload] = {
            "tps": {c: round(v, 1) for c, v in med.items()},
            "rows_per_txn": ROWS_PER_TXN[workload],
            "time_capture_over_none": round(med["none"] / med["capture"], 3),
            "time_capture_over_floor": round(med["floor"] / med["capture"], 3),
            "time_floor_over_none": round(med["none"] / med["floor"], 3),
            "per_round_tps": tps[workload],
        }
    print(json.dumps(summary, indent=2))
    for workload, w in summary["workloads"].items():
        t = w["tps"]
        print(
            f"{workload}: tps none {t['none']:,.0f}, floor {t['floor']:,.0f}, capture {t['capture']:,.0f}; "
            f"time capture/none {w['time_capture_over_none']:.2f}× (goal ≤ 1.2×), "
            f"capture/floor {w['time_capture_over_floor']:.2f}×"
        )


if __name__ == "__main__":
    main()
