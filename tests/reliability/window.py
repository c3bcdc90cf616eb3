"""The rollback window in the crash matrix (issue 20): after the round's cutover the app writes on PostgreSQL
(:mod:`tests.reliability.pgload`, its own process) while the reverse direction (``replicator run`` after a
cutover, the real daemon as a subprocess) is killed at each ``reverse.*`` failpoint and at a random time and
started again each time; then ``replicator rollback`` is killed at each ``rollback.*`` failpoint, in the order a
rollback passes them, each run the rerun of the one before, and run once more to completion.

Kinds of kill here:

* a ``reverse.*`` failpoint — the daemon armed with action ``crash`` dies in that window of its batch's two
  commits (SQLite's, then PostgreSQL's);
* :data:`RANDOM` — SIGKILL of the reverse daemon after a random delay (seeded);
* a ``rollback.*`` failpoint — ``replicator rollback`` armed with ``crash`` dies after PostgreSQL's fence, before
  the window's closing commit, or between it and SQLite's un-fence.

A window kill counts as survived when the chain verifies after it and the SQLite file is still fenced for the app
(the crash matrix checks both), the next process goes on, and the round ends with the rollback completed:
SQLite equal to PostgreSQL row for row (0 lost, 0 doubled), the chain verified with its ``reverse`` batches and
exactly one ``rollback`` checkpoint at its head, PostgreSQL refusing writes, and the app writing to SQLite again.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec
import psycopg

from checkpoints import store
from checkpoints.model import Kind
from replicator import faults
from tests.reliability import harness

REVERSE_POINTS: Final = tuple(n for n in faults.NAMES if n.startswith("reverse."))
ROLLBACK_POINTS: Final = tuple(n for n in faults.NAMES if n.startswith("rollback."))
"""In the order a rollback passes them: each kill's run is the rerun of the one before."""
RANDOM: Final = "random-reverse"
"""SIGKILL of the reverse daemon after a random delay (not a failpoint)."""
KINDS: Final = (*REVERSE_POINTS, RANDOM, *ROLLBACK_POINTS)
WAIT_S: Final = 20.0
"""How long a reverse daemon may take to reach its failpoint (the app commits several times a second)."""
ROLLBACK_S: Final = 120.0
APP_WRITES_AFTER: Final = 20
"""Transactions the SQLite app commits after the completed rollback (the file must take them)."""


class Outcome(msgspec.Struct):
    hit: bool
    note: str = ""
    failed: bool = False
    """The process stopped on an error of its own, or the round's machinery could not go on."""


class End(msgspec.Struct):
    """The window's final checks."""

    compared: int = 0
    lost: int = 0
    doubled: int = 0
    chain: list[str] = msgspec.field(default_factory=list)
    errors: list[str] = msgspec.field(default_factory=list)
    app_transactions: int = 0
    """Transactions the app committed on PostgreSQL during the window."""


def order(kinds: list[str]) -> list[str]:
    """Reverse kills first (the window open), then rollback's in the order a rollback reaches them."""
    reverse = [k for k in kinds if k not in ROLLBACK_POINTS]
    return reverse + sorted((k for k in kinds if k in ROLLBACK_POINTS), key=ROLLBACK_POINTS.index)


class Window:
    """The app on PostgreSQL, the reverse daemon's and rollback's kills, the final checks."""

    def __init__(
        self, source: Path, dsn: str, workdir: Path, log: Callable[[str], Path], seed: int, tps: float
    ) -> None:
        self.source = source
        self.dsn = dsn
        self.dir = workdir
        self.log = log
        self.seed = seed
        self.rng = random.Random(f"window:{seed}")
        cmd = [sys.executable, "-m", "tests.reliability.pgload", dsn, "--seconds", "1800"]
        cmd += ["--seed", str(seed), "--tps", str(tps)]
        self.app = harness.Proc(cmd, workdir / "logs" / "pgload.log", harness.env())

    def kill(self, kind: str) -> Outcome:
        if kind in REVERSE_POINTS:
            return self._reverse(kind)
        if kind == RANDOM:
            return self._random()
        return self._rollback(kind)

    def _reverse(self, name: str) -> Outcome:
        proc = harness.daemon(self.source, self.dsn, self.log(name), failpoints=f"{name}:crash")
        try:
            code = proc.wait(WAIT_S).code
        except subprocess.TimeoutExpired:
            proc.kill()
            return Outcome(False, "window not reached; killed")
        if code == faults.CRASH_EXIT:
            return Outcome(True)
        return Outcome(False, f"daemon stopped by itself (exit {code}): {proc.output(600)}", failed=True)

    def _random(self) -> Outcome:
        proc = harness.daemon(self.source, self.dsn, self.log(RANDOM))
        time.sleep(self.rng.uniform(0.5, 3.0))
        code = proc.poll()
        if code is not None:
            return Outcome(False, f"daemon stopped by itself (exit {code}): {proc.output(600)}", failed=True)
        proc.kill()
        return Outcome(True)

    def _rollback_args(self) -> list[str]:
        args = ["rollback", "--source", str(self.source), "--target", self.dsn, "--max-downtime", "60"]
        return [*args, "--certificate", str(self.dir / "rollback-cert.json"), "--log-format", "json"]

    def _rollback(self, name: str) -> Outcome:
        proc = harness.replicator(self._rollback_args(), self.log(name), failpoints=f"{name}:crash")
        try:
            code = proc.wait(ROLLBACK_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return Outcome(False, f"rollback did not reach the step in {ROLLBACK_S:g} s; killed", failed=True)
        if code == faults.CRASH_EXIT:
            return Outcome(True)
        return Outcome(False, f"rollback exited {code} before the step: {proc.tail(600)}", failed=True)

    # --- the end ---------------------------------------------------------------------------------

    def finish(self) -> End:
        """Rollback run again to completion; the app stopped; both sides compared; the app back on SQLite."""
        end = End()
        proc = harness.replicator(self._rollback_args(), self.log("rollback"))
        try:
            code = proc.wait(ROLLBACK_S)
        except subprocess.TimeoutExpired:
            code = proc.kill()
        if code != 0:
            end.errors.append(f"rollback run again exited {code}: {proc.tail(800)}")
        time.sleep(0.3)  # the app knocks at the fence a few more times: nothing may get through
        self._stop_app(end)
        d = harness.diff(self.source, self.dsn)  # counted even when the rollback failed
        end.compared, end.lost, end.doubled = d.compared, d.lost, d.doubled
        end.errors += d.examples
        end.chain = chain_problems(self.dsn)
        if code == 0:
            if not postgres_fenced(self.dsn):
                end.errors.append("PostgreSQL takes writes after the rollback")
            end.errors += self._app_on_sqlite()
        return end

    def _stop_app(self, end: End) -> None:
        code = self.app.term(30)
        if code not in (0, -15):
            end.errors.append(f"the app on PostgreSQL exited {code}: {self.app.tail(600)}")
            return
        with contextlib.suppress(Exception):
            end.app_transactions = int(msgspec.json.decode(self.app.tail(300).strip().splitlines()[-1])["transactions"])
        if end.app_transactions == 0:
            end.errors.append(f"the app committed nothing on PostgreSQL: {self.app.tail(600)}")

    def close(self) -> None:
        """Stop the app if :meth:`finish` did not (the round failed before it)."""
        if self.app.poll() is None:
            self.app.term(30)

    def _app_on_sqlite(self) -> list[str]:
        """The SQLite app commits :data:`APP_WRITES_AFTER` transactions (refused by a fence left behind)."""
        cmd = [sys.executable, "-m", "tests.reliability.loadgen", str(self.source), "--seconds", "60"]
        cmd += ["--seed", str(self.seed + 1), "--tps", "0", "--transactions", str(APP_WRITES_AFTER)]
        proc = harness.Proc(cmd, self.log("sqlite-app-after"), harness.env())
        code = proc.wait(90)
        if code != 0:
            return [f"the app on SQLite after the rollback exited {code}: {proc.tail(600)}"]
        with contextlib.suppress(Exception):
            done = int(msgspec.json.decode(proc.tail(300).strip().splitlines()[-1])["transactions"])
            if done == APP_WRITES_AFTER:
                return []
        return [f"the app on SQLite after the rollback did not commit its writes: {proc.tail(600)}"]


def chain_problems(dsn: str) -> list[str]:
    """The chain audit's findings, and the window's shape: after the cutover only ``reverse`` batches, then
    exactly one ``rollback`` checkpoint, at the head."""
    problems = harness.chain_problems(dsn)
    with harness.connect(dsn) as conn:
        kinds = [c.kind for c in store.read(conn, schema=harness.STATE)]
    if Kind.CUTOVER not in kinds:
        return [*problems, f"no cutover checkpoint in the chain: {kinds}"]
    after = kinds[kinds.index(Kind.CUTOVER) + 1 :]
    if not after or after[-1] is not Kind.ROLLBACK or after.count(Kind.ROLLBACK) != 1:
        problems.append(f"the window's checkpoints do not end in one rollback checkpoint: {after}")
    if Kind.REVERSE not in after:
        problems.append("no reverse batch in the chain: the app's writes on PostgreSQL were not carried back")
    if any(k not in (Kind.REVERSE, Kind.ROLLBACK) for k in after):
        problems.append(f"other checkpoints in the window: {after}")
    return problems


def postgres_fenced(dsn: str) -> bool:
    """After the rollback PostgreSQL refuses the app's writes (the app runs on SQLite now)."""
    with harness.connect(dsn) as conn:
        try:
            conn.execute("UPDATE public.parent SET note = note WHERE id = -1")
        except psycopg.errors.ReadOnlySqlTransaction:
            return True
    return False
