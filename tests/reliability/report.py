"""The reliability figures (issue 9, item 6): run the crash matrix, the outages, the bad inputs and the
differential fuzzing, then print one markdown table (the README's "Reliability" section carries it).

``python -m tests.reliability.report [--kills N] [--outage-s S] [--lock-s S] [--examples M] [--json FILE]``

Needs a PostgreSQL (``REPLICATOR_TEST_DSN``, else Docker or the embedded one, as the tests); every round
runs in a fresh database that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from replicator import log
from tests.reliability import crash, fuzz, outages
from tests.support.pgserver import fresh_database, server_dsn

WINDOWS = {
    "snapshot.copying": "snapshot: mid-COPY",
    "snapshot.after_table": "snapshot: between tables",
    "random": "random time",
    "random-reverse": "rollback window: reverse direction at a random time",
}


class Row(msgspec.Struct):
    what: str
    tried: int
    survived: int
    note: str = ""


class Figures(msgspec.Struct):
    started: str
    seconds: float = 0.0
    rows: list[Row] = msgspec.field(default_factory=list)
    kills_tried: int = 0
    kills_survived: int = 0
    kills_in_window: int = 0
    rows_lost: int = 0
    rows_doubled: int = 0
    rows_compared: int = 0
    app_transactions: int = 0
    failures: list[str] = msgspec.field(default_factory=list)


@contextlib.contextmanager
def admin_dsn() -> Iterator[str]:
    dsn = os.environ.get("REPLICATOR_TEST_DSN")
    if dsn:
        yield dsn
        return
    with server_dsn() as found:
        yield found


def crash_figures(fig: Figures, admin: str, work: Path, kills: int, jobs: int, seed: int, known_bugs: bool) -> None:
    rounds = crash.plan(kills, seed)
    bug_rounds = crash.known_bug_rounds() if known_bugs else []
    plans = [*rounds, *bug_rounds]

    def one(i: int) -> crash.Round:
        return crash.run_round(work / f"round{i:03d}", admin, plans[i], seed=seed * 1000 + i)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, range(len(plans))))
    regular, bugs = results[: len(rounds)], results[len(rounds) :]
    per: dict[str, list[crash.Kill]] = {}
    for r in regular:
        for k in r.kills:
            per.setdefault(k.kind, []).append(k)
        fig.rows_lost += r.lost
        fig.rows_doubled += r.doubled
        fig.rows_compared += r.compared
        fig.app_transactions += r.transactions + r.window_transactions
        if not r.passed:
            fig.failures.append(f"round seed {r.seed}: {r.error[:500]} {r.chain}")
    for kind in [k for k in crash.ALL_KINDS if k in per]:
        ks = per[kind]
        missed = len([k for k in ks if not k.hit])
        note = f"{len(ks) - missed} in the window" + (f", {missed} not reached (killed anyway)" if missed else "")
        fig.rows.append(Row(f"SIGKILL: {WINDOWS.get(kind, kind)}", len(ks), sum(k.ok for k in ks), note))
    every = [k for ks in per.values() for k in ks]
    fig.kills_tried, fig.kills_survived = len(every), sum(k.ok for k in every)
    fig.kills_in_window = sum(k.hit for k in every)
    fig.rows.append(
        Row(
            "**SIGKILL total**",
            fig.kills_tried,
            fig.kills_survived,
            f"{len(regular)} rounds, {fig.app_transactions} app transactions, {fig.rows_compared} rows compared: "
            f"**{fig.rows_lost} lost, {fig.rows_doubled} doubled**",
        )
    )
    for kinds, r in zip(bug_rounds, bugs, strict=True):
        for k in r.kills:
            fig.rows.append(
                Row(
                    f"SIGKILL: {k.kind} (known bug)",
                    1,
                    int(k.ok),
                    f"{crash.KNOWN_BUGS.get(kinds[0], '')}; {r.lost} lost, {r.doubled} doubled",
                )
            )


def outage_figures(fig: Figures, admin: str, work: Path, outage_s: float, lock_s: float, cuts: int) -> None:
    scenarios: list[tuple[str, Any]] = [
        ("pg", lambda d: outages.postgres_unreachable(work / "pg", d, seconds=outage_s)),
        ("batch", lambda d: outages.postgres_gone_during_batch(work / "batch", d, times=cuts)),
        ("lock", lambda d: outages.sqlite_write_lock(work / "lock", d, seconds=lock_s)),
    ]
    for _name, scenario in scenarios:
        with fresh_database(admin) as dsn:
            out: outages.Outcome = scenario(dsn)
        notes = [
            "retried" if out.retried else "NOT retried",
            "status showed it" if out.status_showed else "status did NOT show it",
            "recovered by itself" if out.recovered else "did NOT recover",
            f"{out.lost} lost, {out.doubled} doubled",
        ]
        fig.rows.append(Row(f"outage: {out.name}", 1, int(out.passed), ", ".join(notes)))
        if not out.passed:
            fig.failures.append(f"{out.name}: {out}")
    for tar in (False, True):
        e = outages.export_disk_full(work / f"export-{tar}", tar=tar)
        note = f"exit {e.exit_code}, {len(e.error_lines)} error line, leftovers {e.leftovers or 'none'}"
        if e.error_lines:
            note += f": `{e.error_lines[0][:90]}`"
        fig.rows.append(Row(f"bad input: {e.name}", 1, int(e.passed), note))


def fuzz_figures(fig: Figures, admin: str, examples: int, seed: int) -> None:
    with fresh_database(admin) as dsn:
        try:
            fuzz.run(dsn, max_examples=examples, steps=25, seed=seed)
            ok = True
        except Exception as exc:
            ok = False
            fig.failures.append(f"fuzz: {type(exc).__name__}: {str(exc)[:2000]}")
    d = fuzz.Differential
    fig.rows.append(
        Row(
            "differential fuzz: generated schemas × op sequences",
            d.examples,
            d.examples if ok else d.examples - 1,
            f"{d.statements} statements, {d.checks} row-by-row comparisons after a drain",
        )
    )


def table(fig: Figures) -> str:
    lines = [
        "| what | tried | survived | notes |",
        "| --- | ---: | ---: | --- |",
        *(f"| {r.what} | {r.tried} | {r.survived} | {r.note} |" for r in fig.rows),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.report", description=__doc__)
    parser.add_argument("--kills", type=int, default=30, help="SIGKILLs in the crash matrix (soak: 200)")
    parser.add_argument("--outage-s", type=float, default=5.0, help="PostgreSQL unreachable for (soak: 60)")
    parser.add_argument("--lock-s", type=float, default=3.0, help="SQLite write lock held for (soak: 10)")
    parser.add_argument("--cuts", type=int, default=3, help="connections cut inside a batch")
    parser.add_argument("--examples", type=int, default=20, help="differential fuzzing examples")
    parser.add_argument("--jobs", type=int, default=2, help="crash rounds in parallel")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", default="crash,outages,fuzz", help="comma-separated parts to run")
    parser.add_argument("--no-known-bugs", action="store_true", help="skip the rounds of known-bug windows")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    log.configure("json", "warning", sys.stderr)  # in-process runs (fuzz, capture install): only trouble, on stderr
    bugs = not args.no_known_bugs
    started = time.monotonic()
    fig = Figures(started=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    with admin_dsn() as admin, tempfile.TemporaryDirectory(prefix="replicator-reliability-") as tmp:
        work = Path(tmp)
        parts_to_run: list[tuple[str, Callable[[], None]]] = [
            ("crash", lambda: crash_figures(fig, admin, work / "crash", args.kills, args.jobs, args.seed, bugs)),
            ("outages", lambda: outage_figures(fig, admin, work / "outages", args.outage_s, args.lock_s, args.cuts)),
            ("fuzz", lambda: fuzz_figures(fig, admin, args.examples, args.seed)),
        ]
        for part, run in parts_to_run:
            if part in parts:
                try:
                    run()
                except Exception:
                    fig.failures.append(f"{part}: {traceback.format_exc()[-2000:]}")
    fig.seconds = round(time.monotonic() - started, 1)
    print(table(fig))
    command = " ".join(["python -m tests.reliability.report", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n{fig.started}, {fig.seconds:.0f} s, `{command}`")
    for failure in fig.failures:
        print(f"\nFAILED: {failure}", file=sys.stderr)
    if args.json is not None:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(fig)))
    return 1 if fig.failures else 0


if __name__ == "__main__":
    sys.exit(main())
