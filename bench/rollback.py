"""Write outage of ``replicator rollback`` (PostgreSQL fenced → SQLite un-fenced) on a large database under app load.

    .venv/bin/python bench/rollback.py --dsn postgresql://postgres@127.0.0.1:5432/postgres --rows 1000000
    .venv/bin/python bench/rollback.py --quick      # tiny sizes: a smoke run of the script, not a figure

Per round (untimed set-up, bench/cutover.py's base and steps): copy the base SQLite file (``--rows`` rows,
capture installed), a fresh PostgreSQL database, snapshot + catch-up (``replicator run --until-drained``),
``replicator cutover`` (rollback window open, SQLite fenced). Then the app moves to PostgreSQL: a writer
process commits ``--rate`` transactions per second there (each: one INSERT into orders and one UPDATE of a
random account, like bench/cutover.py's app), counting commits, fenced refusals (SQLSTATE 25006) and other
errors by SQLSTATE, and its longest wait for one transaction. For ``--window`` seconds ``replicator run``
(the reverse direction, a subprocess) carries PostgreSQL's changes back into the fenced SQLite file; it is
stopped (SIGTERM: rollback takes the same locks) and ``rollback`` runs in this process
(:func:`replicator.reverse.rollback.rollback`, the code ``replicator rollback`` runs), the app still writing.
A probe process tries one write on the SQLite file every ``--probe-ms`` ms from the rollback's start until
one succeeds.

Reported per round and as medians over ``--rounds``:

* ``outage_s``: the rollback's own ``RollbackResult.write_outage_s`` (from the start of PostgreSQL's fence,
  its lock wait included, to SQLite un-fenced);
* ``app_outage_s``: the same seen from the app's side, the app writer's first fenced refusal on PostgreSQL
  → the probe's first successful write on SQLite (CLOCK_MONOTONIC, shared by the processes);
* ``app_gap_s``: the app's last successful commit on PostgreSQL → the probe's first write on SQLite: what the
  app lives through, its transactions blocked behind the fence's table locks included;
* the seconds of each step of the rollback (wrappers around its module's step functions; before the fence:
  ``catch_up``, ``compare_whole``; in the outage: ``fence`` (lock wait + commit), ``final_drain``, ``prove``,
  ``close_window``, ``unfence_sqlite``);
* rows carried back (journal entries written back by the daemon during the window, and by the rollback),
  the certificate (sha256, tables proved, reverse batches in the window), the app's counts.

Target (issue 20): outage ≤ 2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cutover as cutover_bench  # bench/ is on sys.path when this file runs as a script
import psycopg
import structlog

FENCED_PG = "25006"
QUICK = {"rows": 2_000, "rounds": 1, "rate": 100, "window": 1.0}


# ---------------------------------------------------------------- set-up shared with reverse_lag / reverse_capture


def cut_over(base: Path, work: Path, admin: str, n: int) -> tuple[Path, str, float]:
    """A copy of the base migrated into a fresh database and cut over (window open): (source, dsn, seconds)."""
    source = work / f"round{n}.db"
    shutil.copy(base, source)
    dsn = cutover_bench.fresh_db(admin, n)
    started = time.monotonic()
    done = cutover_bench.replicator("run", "--source", str(source), "--target", dsn, "--until-drained")
    assert done.returncode == 0, done.stderr[-2000:]
    args = ["cutover", "--source", str(source), "--target", dsn, "--json", "--no-backup", "--skip-full-verify"]
    done = cutover_bench.replicator(*args, "--certificate", str(work / f"cutover{n}.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    return source, dsn, time.monotonic() - started


def cleanup(admin: str, source: Path, dsn: str) -> None:
    cutover_bench.drop_db(admin, dsn)
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(str(source) + suffix).unlink(missing_ok=True)


class Daemon:
    """``replicator run`` as its own process (the reverse direction after a cutover), logging to a file."""

    def __init__(self, source: Path, dsn: str, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
        cmd = [sys.executable, "-m", "replicator", "run", "--source", str(source), "--target", dsn]
        self.log_path = log_path
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            [*cmd, "--log-format", "json"], stdout=self._log, stderr=subprocess.STDOUT, env=env, text=True
        )

    def wait_started(self, timeout_s: float = 60.0) -> None:
        """Until it logged that the reverse direction started (its locks held, the window read)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "reverse direction started" in self.log_path.read_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"replicator run did not start: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> int:
        """SIGTERM (it finishes the batch in hand); the entries it wrote back, from its last line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._log.close()
        text = self.log_path.read_text()
        assert code == 0, text[-2000:]
        found = re.search(r"reverse: (\d+) change\(s\)", text)
        return int(found.group(1)) if found else 0


# ---------------------------------------------------------------- the app and the probe


def pg_writer(dsn: str, rate: int, stop: Any, out: Any) -> None:
    """The app on PostgreSQL: ``rate`` txn/s (INSERT + UPDATE) until ``stop``; outcomes by SQLSTATE."""
    conn = psycopg.connect(dsn)
    row = conn.execute("SELECT max(id) FROM accounts").fetchone()
    conn.commit()
    accounts = int(row[0]) if row else 1
    rng = random.Random(os.getpid())
    committed = fenced = 0
    errors: dict[str, int] = {}
    worst = 0.0
    first_fenced: float | None = None
    last_commit: float | None = None
    interval = 1.0 / rate
    began = next_at = time.monotonic()
    while not stop.is_set():
        started = time.monotonic()
        try:
            conn.execute(
                "INSERT INTO orders (account_id, amount, status) VALUES (%s, %s, 'new')",
                (rng.randint(1, accounts), rng.randint(1, 10_000)),
            )
            conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (rng.randint(1, accounts),))
            conn.commit()
            committed += 1
            last_commit = time.monotonic()
        except psycopg.Error as exc:
            if conn.closed:
                conn = psycopg.connect(dsn)
            else:
                conn.rollback()
            state = exc.sqlstate or type(exc).__name__
            if state == FENCED_PG:
                fenced += 1
                first_fenced = first_fenced or time.monotonic()
            else:
                errors[state] = errors.get(state, 0) + 1
        worst = max(worst, time.monotonic() - started)
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    elapsed = time.monotonic() - began
    conn.close()
    out.put(
        {
            "committed": committed,
            "fenced": fenced,
            "other": errors,
            "worst_wait_s": round(worst, 3),
            "achieved_rate": round((committed + fenced + sum(errors.values())) / elapsed, 1),
            "first_fenced": first_fenced,
            "last_commit": last_commit,
        }
    )


def sqlite_probe(path: str, interval_s: float, stop: Any, out: Any) -> None:
    """One write attempt on the SQLite file every ``interval_s`` until one succeeds: when the app could write.

    A refused write fails when SQLite prepares it (the fence's triggers name a missing table), before any lock;
    a read first, since a connection refused a write keeps its old schema until it reads (triggers/fence.py)."""
    from triggers import fence

    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    attempts = 0
    first_write: float | None = None
    other = ""
    while not stop.is_set():
        attempts += 1
        try:
            conn.execute("SELECT balance FROM accounts WHERE id = 1").fetchone()
            conn.execute("UPDATE accounts SET balance = balance WHERE id = 1")
            first_write = time.monotonic()
            break
        except sqlite3.Error as exc:
            if not fence.refused(exc):
                other = str(exc)
        time.sleep(interval_s)
    conn.close()
    out.put({"first_write": first_write, "attempts": attempts, "other_error": other})


# ---------------------------------------------------------------- the rollback, its steps timed


@contextlib.contextmanager
def timed_steps() -> Iterator[tuple[dict[str, float], dict[str, float]]]:
    """Seconds of each rollback step (and when each ended): its module's step functions wrapped while open."""
    from replicator.reverse import rollback as rb
    from triggers import fence as sqlite_fence  # the module rollback calls unfence_on from

    steps: dict[str, float] = {}
    marks: dict[str, float] = {}

    def wrap(fn: Callable[..., Any], name: Callable[[dict[str, Any]], str]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            step = name(kwargs)
            started = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                marks[step + "_end"] = time.monotonic()
                steps[step] = steps.get(step, 0.0) + marks[step + "_end"] - started

        return timed

    named = {
        "_catch_up": lambda kw: "final_drain" if kw.get("final") else "catch_up",
        "_compare_whole": lambda kw: "compare_whole",
        "_fence_postgres": lambda kw: "fence",
        "_prove_changed": lambda kw: "prove",
        "_close_window": lambda kw: "close_window",
    }
    originals = {attr: getattr(rb, attr) for attr in named}
    unfence_on = sqlite_fence.unfence_on
    for attr, name in named.items():
        setattr(rb, attr, wrap(originals[attr], name))
    setattr(sqlite_fence, "unfence_on", wrap(unfence_on, lambda kw: "unfence_sqlite"))  # noqa: B010
    try:
        yield steps, marks
    finally:
        for attr, fn in originals.items():
            setattr(rb, attr, fn)
        setattr(sqlite_fence, "unfence_on", unfence_on)  # noqa: B010


def run_rollback(source: Path, dsn: str, cert: Path) -> tuple[Any, dict[str, float], dict[str, float]]:
    from replicator import config
    from replicator.reverse import rollback as rb

    cfg = config.load(environ={})
    with timed_steps() as (steps, marks):
        result = rb.rollback(source, dsn, cfg, certificate_path=cert)
    return result, steps, marks


def one_round(base: Path, work: Path, admin: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    source, dsn, setup_s = cut_over(base, work, admin, n)
    try:
        out: Any = multiprocessing.Queue()
        stop = multiprocessing.Event()
        app = multiprocessing.Process(target=pg_writer, args=(dsn, args.rate, stop, out))
        daemon = Daemon(source, dsn, work / f"daemon{n}.log")
        daemon.wait_started()
        app.start()
        time.sleep(args.window)
        carried_by_daemon = daemon.stop()
        probe_out: Any = multiprocessing.Queue()
        probe_stop = multiprocessing.Event()
        probe_args = (str(source), args.probe_ms / 1000, probe_stop, probe_out)
        probe = multiprocessing.Process(target=sqlite_probe, args=probe_args)
        probe.start()
        started = time.monotonic()
        result, steps, marks = run_rollback(source, dsn, work / f"rollback{n}.json")
        wall = time.monotonic() - started
        time.sleep(0.5)
        stop.set()
        probe_stop.set()
        counts = out.get(timeout=60)
        seen = probe_out.get(timeout=60)
        app.join()
        probe.join()
        cert = result.certificate
        app_outage = (
            seen["first_write"] - counts["first_fenced"] if seen["first_write"] and counts["first_fenced"] else None
        )
        gap = seen["first_write"] - counts["last_commit"] if seen["first_write"] and counts["last_commit"] else None
        fence_end, unfenced = marks.get("fence_end"), marks.get("unfence_sqlite_end")
        return {
            "setup_s": round(setup_s, 3),
            "rollback_wall_s": round(wall, 3),
            "outage_s": result.write_outage_s,
            "app_outage_s": None if app_outage is None else round(app_outage, 3),
            "app_gap_s": None if gap is None else round(gap, 3),
            "after_fence_commit_s": round(unfenced - fence_end, 3) if fence_end and unfenced else None,
            "steps": {k: round(v, 4) for k, v in steps.items()},
            "carried_back": {"by_daemon": carried_by_daemon, "by_rollback": result.drained_entries},
            "certificate": None
            if cert is None
            else {
                "path": result.certificate_path,
                "sha256": cert.sha256,
                "tables": {t.table: [t.sqlite_rows, t.postgres_rows, t.status] for t in cert.tables},
                "batches_in_window": cert.batches_in_window,
            },
            "app": {k: v for k, v in counts.items() if k not in ("first_fenced", "last_commit")},
            "probe": {"attempts": seen["attempts"], "other_error": seen["other_error"]},
        }
    finally:
        cleanup(admin, source, dsn)


def median(rounds: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rounds if r[key] is not None]
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dsn", default=os.environ.get("REPLICATOR_TEST_DSN", "postgresql://postgres@127.0.0.1/postgres")
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=500, help="app transactions per second on PostgreSQL")
    parser.add_argument("--window", type=float, default=5.0, help="seconds of app load in the window before rollback")
    parser.add_argument("--probe-ms", type=float, default=2.0, help="the SQLite probe's interval between attempts")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: a smoke run, not a figure")
    if parser.parse_known_args()[0].quick:  # tiny defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp:
        work = Path(tmp)
        base = work / "base.db"
        started = time.monotonic()
        cutover_bench.build_base(base, args.rows)
        built = time.monotonic() - started
        print(f"base: {args.rows:,} rows, {base.stat().st_size / 1e6:.0f} MB, built in {built:.1f}s")
        rounds = []
        for n in range(args.rounds):
            r = one_round(base, work, args.dsn, n, args)
            steps = ", ".join(f"{k} {v:.3f}" for k, v in r["steps"].items())
            print(
                f"round {n + 1}: outage {r['outage_s']:.3f}s (app side {r['app_outage_s']}s, "
                f"gap {r['app_gap_s']}s); {steps}; carried back {r['carried_back']}"
            )
            print(f"  app on PostgreSQL: {r['app']}; probe: {r['probe']}")
            rounds.append(r)
    names = list(dict.fromkeys(k for r in rounds for k in r["steps"]))
    summary = {
        "benchmark": "rollback",
        "rows": args.rows,
        "rate": args.rate,
        "rounds": len(rounds),
        "outage_s": median(rounds, "outage_s"),
        "app_outage_s": median(rounds, "app_outage_s"),
        "app_gap_s": median(rounds, "app_gap_s"),
        "after_fence_commit_s": median(rounds, "after_fence_commit_s"),
        "steps_s": {k: round(statistics.median(r["steps"].get(k, 0.0) for r in rounds), 4) for k in names},
        "target_s": 2.0,
        "per_round": rounds,
    }
    print(json.dumps(summary, indent=2))
    print(
        f"rollback write outage, median of {len(rounds)}: {summary['outage_s']}s (rollback's own), "
        f"{summary['app_outage_s']}s (app side: first fenced on PostgreSQL → first SQLite write), "
        f"{summary['app_gap_s']}s (app's last PostgreSQL commit → first SQLite write); target ≤ 2 s"
    )


if __name__ == "__main__":
    main()
