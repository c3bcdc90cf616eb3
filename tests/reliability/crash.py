"""The crash matrix: SIGKILL the real daemon at every commit boundary and at random times while a load
generator writes to the SQLite app in its own process; restart; at the end drain, compare row by row
and verify the checkpoint chain.

A *round* is one source file and one fresh PostgreSQL database, a load generator running throughout,
and a list of kills. Kinds of kill:

* a failpoint name from :data:`replicator.faults.NAMES` — armed with action ``crash`` (``os._exit``:
  no ``finally``, no flush, no rollback: what SIGKILL does), so the process dies exactly in that window;
  ``resnapshot.*`` are reached by adding a column to a table in SQLite (online re-snapshot),
  ``cutover.*`` by running ``replicator cutover`` with the daemon stopped;
* ``copy`` — SIGKILL while PostgreSQL reports a snapshot COPY in progress (``pg_stat_progress_copy``);
* ``table`` — SIGKILL once the snapshot committed its first table (``snapshot_tables``), before the genesis;
* ``random`` — SIGKILL after a random delay (seeded);
* the rollback window's (:mod:`tests.reliability.window`): after the round's cutover the app writes on
  PostgreSQL in its own process while the reverse direction (``replicator run`` after a cutover) is killed at
  each ``reverse.*`` failpoint and at a random time (``random-reverse``), then ``replicator rollback`` at each
  ``rollback.*`` failpoint, run again until it completes. They come last (after the cutover kills), and such a
  round ends with the completed rollback instead of a drain: SQLite equal to PostgreSQL row for row, the chain
  ending in its ``reverse`` batches and one ``rollback`` checkpoint, and the app writing to SQLite again.

A kill counts as *survived* when the chain still verifies after it, the next daemon starts and goes on
without stopping on an error, and the round ends with PostgreSQL equal to SQLite row for row (0 rows
lost, 0 doubled) and the chain head covering the journal head exactly (a window's kill: SQLite still fenced
after it, and the window's end as above).
(a ``random`` kill also requires that the daemon held no deleted ``-wal``/``-shm`` when killed: with the
``conn-per-txn`` writer every commit is the app's last close). The load generator's mode is
:func:`soak_writer` unless a round names one.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec

from replicator import faults
from replicator.state.store import StateStore
from tests.reliability import harness, loadgen, window
from tests.support.daemon import DaemonProcess
from tests.support.pgserver import fresh_database

CUTOVER_POINTS: Final = tuple(n for n in faults.NAMES if n.startswith("cutover."))
FINISHING: Final = "cutover.between_commits"
"""SQLite's fence committed, PostgreSQL's finish not: the kill leaves the file fenced, and cutover run again
finishes the migration, so it is the round's last kill (nothing streams after it)."""
SNAPSHOT_KINDS: Final = ("snapshot.copying", "snapshot.after_table", "snapshot.after_genesis")
STREAM_POINTS: Final = (
    "apply.after_read",
    "apply.after_write",
    "apply.before_commit",
    "apply.after_commit",
    "prune.after",
)
KNOWN_BUGS: Final[dict[str, str]] = {}
"""Windows where the harness found a bug not fixed yet: run in rounds of their own (they fail the round)."""
RESNAPSHOT_POINTS: Final = tuple(n for n in faults.NAMES if n.startswith("resnapshot."))
REVERSE_POINTS: Final = window.REVERSE_POINTS
ROLLBACK_POINTS: Final = window.ROLLBACK_POINTS
WINDOW_KINDS: Final = window.KINDS
"""The rollback window's kills: the reverse daemon's failpoints and a random time, then rollback's failpoints."""
ALL_KINDS: Final = (*SNAPSHOT_KINDS, *STREAM_POINTS, *RESNAPSHOT_POINTS, *CUTOVER_POINTS, "random", *WINDOW_KINDS)
"""Every kind once."""
PRUNE_OFTEN: Final = {"REPLICATOR_APPLY__PRUNE_MAX_ROWS": "200"}
"""The load generator never pauses long enough for the daemon's idle pruning (``apply.prune_idle_s``): the
matrix's daemons prune every 200 applied entries instead, so that kills land in and around pruning."""
KILL_TIMEOUT_S: Final = 20.0
"""How long a kill waits for its window (a failpoint to fire, a COPY to show) before it counts as not reached."""


class Kill(msgspec.Struct):
    kind: str
    hit: bool = False
    """The process died in the intended window (False: the window was not reached; the process was killed anyway)."""
    ok: bool = False
    """Survived: chain verified after it, the next start went on, the round ended equal."""
    seconds: float = 0.0
    note: str = ""
    held_deleted: list[str] = msgspec.field(default_factory=list)
    """Deleted db/-wal/-shm files the daemon held when killed: an app's last close removed them under it, so
    it read a WAL nobody writes any more (a stall, and its pruner wrote through the deleted file)."""


class Round(msgspec.Struct):
    seed: int
    kills: list[Kill]
    compared: int = 0
    lost: int = 0
    doubled: int = 0
    chain: list[str] = msgspec.field(default_factory=list)
    error: str = ""
    seconds: float = 0.0
    transactions: int = 0
    window_transactions: int = 0
    """The app's transactions on PostgreSQL during the rollback window (0: no window in the round)."""

    @property
    def passed(self) -> bool:
        return not self.error and not self.chain and self.lost == 0 and self.doubled == 0


def order(kinds: Sequence[str]) -> list[str]:
    """Snapshot kills first (they need a target without a genesis), cutover kills last, the rest as given; the
    rollback window's after the cutover (:func:`window.order`)."""
    first = [k for k in kinds if k in SNAPSHOT_KINDS]
    last = [k for k in kinds if k in CUTOVER_POINTS and k != FINISHING]
    final = [FINISHING] if FINISHING in kinds else []
    rest = [k for k in kinds if k not in SNAPSHOT_KINDS and k not in CUTOVER_POINTS and k not in WINDOW_KINDS]
    return first + rest + last + final + window.order([k for k in kinds if k in WINDOW_KINDS])


class Matrix:
    """One round: a source, a fresh target, a load generator, the kills, the final check."""

    def __init__(self, workdir: Path, dsn: str, seed: int, *, tps: float = 40.0, writer: str = "keep-open") -> None:
        self.dir = workdir
        self.writer = writer
        """The load generator's mode (``loadgen.MODES``): ``conn-per-txn`` is the churn writer."""
        self.dsn = dsn
        self.seed = seed
        self.rng = random.Random(f"matrix:{seed}")
        self.source = workdir / "app.db"
        self.tps = tps
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._n = 0
        self._columns = 0
        self.finished = False
        """A kill between the commits was followed by a cutover that finished the migration."""
        self.window: window.Window | None = None
        """The rollback window's app and kills, once the round's cutover finished."""

    def _log(self, what: str) -> Path:
        self._n += 1
        return self.logs / f"{self._n:03d}-{what}.log"

    # --- kills ---------------------------------------------------------------------------------

    def kill(self, kind: str) -> Kill:
        started = time.monotonic()
        result = Kill(kind)
        failed = False
        try:
            if kind in CUTOVER_POINTS:
                self._cutover(kind, result)
            elif kind in WINDOW_KINDS:
                failed = self._in_window(kind, result)
            elif kind == "random":
                proc = harness.daemon(self.source, self.dsn, self._log("random"), **PRUNE_OFTEN)
                time.sleep(self.rng.uniform(0.05, 2.5))
                self._died(proc, result, expect_alive=True)
                result.hit = True
            else:
                self._failpoint(kind, result)
            problems = harness.chain_problems(self.dsn) if self._has_chain() else []
            if problems:
                result.note += f"chain after kill: {problems}"
            stopped = failed or result.note.startswith("daemon stopped")
            result.ok = not problems and not stopped and not result.held_deleted
        except Exception as exc:  # recorded, the round goes on and fails at the end
            result.note += f"harness: {type(exc).__name__}: {exc}"
        result.seconds = round(time.monotonic() - started, 3)
        return result

    def _died(self, proc: DaemonProcess, result: Kill, *, expect_alive: bool) -> None:
        """SIGKILL ``proc``; a daemon that already exited on its own stopped on an error."""
        code = proc.poll()
        if code is None:
            with contextlib.suppress(OSError):  # it died between the poll and the look
                result.held_deleted = harness.deleted_files(proc.pid, self.source)
            if result.held_deleted:
                result.note += f"daemon held deleted files: {result.held_deleted} "
            proc.kill()
        elif expect_alive:
            result.note += f"daemon stopped by itself (exit {code}): {proc.output(600)}"

    def _failpoint(self, name: str, result: Kill) -> None:
        proc = harness.daemon(self.source, self.dsn, self._log(name), failpoints=f"{name}:crash", **PRUNE_OFTEN)
        if name in RESNAPSHOT_POINTS:
            self._add_column(proc)
        try:
            code = proc.wait(KILL_TIMEOUT_S).code
        except subprocess.TimeoutExpired:
            proc.kill()
            result.note = "window not reached; killed"
            return
        if code == faults.CRASH_EXIT:
            result.hit = True
        else:
            result.note = f"daemon stopped by itself (exit {code}): {proc.output(600)}"

    def _add_column(self, proc: DaemonProcess) -> None:
        """Once the daemon streams, add a column with a default in SQLite: create mode re-snapshots the table."""
        harness.wait_for(lambda: self._phase() in ("STREAMING", "CATCHUP") or not proc.alive(), 15, 0.05)
        self._columns += 1
        with contextlib.closing(sqlite3.connect(self.source, timeout=30, isolation_level=None)) as db:
            db.execute(f"ALTER TABLE event ADD COLUMN x{self._columns} TEXT DEFAULT 'd{self._columns}'")

    def _cutover(self, name: str, result: Kill) -> None:
        """The daemon is down (killed by the previous kill); cutover crashes in its step; the app stays writable."""
        if not self._has_genesis():  # a kill in the snapshot came last: cutover needs a target that streams
            harness.drain(self.source, self.dsn, self._log("snapshot"))
        proc = harness.replicator(self._cutover_args(), self._log(name), failpoints=f"{name}:crash")
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            result.note = "cutover did not reach the step in 90 s; killed"
            return
        if code == faults.CRASH_EXIT:
            result.hit = True
        else:
            result.note = f"cutover exited {code} before the step: {proc.tail(400)}"
        if name == FINISHING:
            self._finish(result)
        elif not writable(self.source):
            result.note += " SQLite left fenced after the crash"
            result.hit = False

    def _finish(self, result: Kill) -> None:
        """Killed between the two commits: the file must be fenced (no write lost), and cutover again finishes."""
        if writable(self.source):
            result.note += " SQLite writable after a kill between the commits: app writes would be lost"
            result.hit = False
            return
        proc = harness.replicator(self._cutover_args(), self._log("cutover-again"))
        code = proc.wait(120)
        if code != 0:
            result.note += f" cutover run again exited {code}: {proc.tail(400)}"
        self.finished = code == 0

    def _cutover_args(self) -> list[str]:
        args = ["cutover", "--source", str(self.source), "--target", self.dsn, "--no-backup", "--skip-full-verify"]
        return [*args, "--max-downtime", "60s", "--certificate", str(self.dir / "cert.json"), "--log-format", "json"]

    # --- the rollback window -------------------------------------------------------------------

    def _open_window(self) -> str:
        """The round's cutover (unless a kill between its commits was followed by one that finished it), then
        the app on PostgreSQL. Returns what went wrong ("" when the window is open)."""
        if not self.finished:
            if not self._has_genesis():  # no kill before: the snapshot first (cutover needs a streaming target)
                harness.drain(self.source, self.dsn, self._log("snapshot"))
            proc = harness.replicator(self._cutover_args(), self._log("cutover"))
            code = proc.wait(120)
            if code != 0:
                return f"cutover before the window exited {code}: {proc.tail(600)}"
            self.finished = True
        self.window = window.Window(self.source, self.dsn, self.dir, self._log, self.seed, self.tps / 2)
        return ""

    def _in_window(self, kind: str, result: Kill) -> bool:
        """A kill in the rollback window; True when the process stopped on its own error or SQLite was left
        writable while the window is open (the app could write there and lose it at the next batch)."""
        assert self.window is not None
        got = self.window.kill(kind)
        result.hit, result.note = got.hit, got.note
        if got.hit and writable(self.source):
            result.note += " SQLite writable after a kill in the window"
            return True
        return got.failed

    # --- state ---------------------------------------------------------------------------------

    def _has_chain(self) -> bool:
        with harness.connect(self.dsn) as conn:
            row = conn.execute("SELECT to_regclass('replicator.checkpoints')").fetchone()
            return bool(row and row[0])

    def _has_genesis(self) -> bool:
        if not self._has_chain():
            return False
        with harness.connect(self.dsn) as conn:
            row = conn.execute("SELECT count(*) FROM replicator.checkpoints").fetchone()
            return bool(row and row[0])

    def _phase(self) -> str:
        with harness.connect(self.dsn) as conn:
            state = StateStore(conn, harness.STATE).read_phase()
        return str(state.phase) if state is not None else "NONE"

    # --- the round -----------------------------------------------------------------------------

    def run(self, kinds: Sequence[str], *, rows: int) -> Round:
        started = time.monotonic()
        out = Round(self.seed, [])
        loadgen.create(self.source, rows, self.seed)
        gen = harness.loadgen(
            self.source, self.logs / "loadgen.log", seconds=1800, seed=self.seed, tps=self.tps, mode=self.writer
        )
        try:
            for kind in order(kinds):
                if kind in WINDOW_KINDS and self.window is None:
                    out.error = self._open_window()
                    if out.error:
                        break
                out.kills.append(self.kill(kind))
                if gen.poll() is not None and not self.finished:  # a finished cutover fences the writer out
                    out.error = f"load generator stopped: {gen.tail(600)}"
                    break
        except Exception as exc:
            out.error = f"{type(exc).__name__}: {exc}"[:3000]
        finally:
            code = gen.term(30)
        if code not in (0, -15) and not out.error:
            out.error = f"load generator exited {code}: {gen.tail(600)}"
        with contextlib.suppress(Exception):
            out.transactions = int(msgspec.json.decode(gen.tail(300).strip().splitlines()[-1])["transactions"])
        try:
            if self.window is not None:
                self._end_window(self.window, out)
            else:
                self._end_forward(out)
        except Exception as exc:
            out.error = f"{type(exc).__name__}: {exc}"[:3000]
        finally:
            if self.window is not None:
                self.window.close()
        if not out.passed:
            for k in out.kills:
                k.ok = False
        out.seconds = round(time.monotonic() - started, 2)
        return out

    def _end_forward(self, out: Round) -> None:
        """Drain, compare row by row, verify the chain up to the journal's head."""
        harness.drain(self.source, self.dsn, self._log("drain"))
        d = harness.diff(self.source, self.dsn)
        out.compared, out.lost, out.doubled = d.compared, d.lost, d.doubled
        if d.examples:
            out.error = "; ".join(d.examples)[:2000]
        out.chain = harness.chain_problems(self.dsn, self.source)
        state = self._phase()
        if state == "ERRORED":
            out.error += " phase ERRORED after the drain"

    def _end_window(self, win: window.Window, out: Round) -> None:
        """The rollback run to completion and the window's final checks (:meth:`window.Window.finish`)."""
        end = win.finish()
        out.compared, out.lost, out.doubled, out.chain = end.compared, end.lost, end.doubled, end.chain
        out.window_transactions = end.app_transactions
        if end.errors:
            out.error = (out.error + " " + "; ".join(end.errors)).strip()[:3000]


def writable(path: Path) -> bool:
    """The app can still write (no fence left behind by a crashed cutover)."""
    with contextlib.closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as db:
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("UPDATE parent SET note = note WHERE id = -1")
            db.execute("ROLLBACK")
            return True
        except sqlite3.DatabaseError as exc:
            if "fenced" in str(exc):
                return False
            raise


def run_round(
    workdir: Path, admin_dsn: str, kinds: Sequence[str], *, seed: int, rows: int = 3000, writer: str | None = None
) -> Round:
    """One round in a fresh database of ``admin_dsn``'s server (dropped afterwards); ``writer``: the load
    generator's mode, by default :func:`soak_writer`."""
    workdir.mkdir(parents=True, exist_ok=True)
    with fresh_database(admin_dsn) as dsn:
        return Matrix(workdir, dsn, seed, writer=writer or soak_writer()).run(kinds, rows=rows)


def soak_writer() -> str:
    """``REPLICATOR_SOAK_WRITER`` (a ``loadgen.MODES`` name, e.g. ``conn-per-txn``), else ``keep-open``."""
    mode = os.environ.get("REPLICATOR_SOAK_WRITER") or "keep-open"
    if mode not in loadgen.MODES:
        raise ValueError(f"REPLICATOR_SOAK_WRITER={mode!r}: one of {', '.join(loadgen.MODES)}")
    return mode


def plan(kills: int, seed: int, per_round: int = 32) -> list[list[str]]:
    """``kills`` kills in rounds of at most ``per_round``: every kind at least once per full round (snapshot,
    cutover and rollback-window kinds once per round), the rest streaming failpoints and random times, seeded.
    :data:`KNOWN_BUGS` windows are left out (see :func:`known_bug_rounds`)."""
    rng = random.Random(f"plan:{seed}")
    rounds: list[list[str]] = []
    left = kills
    kinds = [k for k in ALL_KINDS if k not in KNOWN_BUGS]
    while left > 0:
        size = min(per_round, left)
        base = kinds[:size]
        fill = [rng.choice([*STREAM_POINTS, "random", "random"]) for _ in range(size - len(base))]
        rounds.append(base + fill)
        left -= size
    return rounds


def known_bug_rounds() -> list[list[str]]:
    """One round per known-bug window (so its failure does not hide the other kills' results)."""
    return [[kind] for kind in KNOWN_BUGS]
