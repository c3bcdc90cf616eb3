"""How apps write (issue 14): the real daemon runs beside the load generator in one of its modes
(``loadgen.MODES``: a connection per transaction, restarts, the ``sqlite3`` shell, deferred transactions).

Mid-run, with the writer still going, the daemon must catch up with the journal head a new connection sees
and hold no deleted database, ``-wal`` or ``-shm`` file (an app's last close deletes those; a daemon still
reading them applies nothing more). After the writer stops, the same daemon (not a fresh drain, which would
hide a stall) must catch up again, and PostgreSQL must equal SQLite row for row with a chain that covers
the journal head exactly."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

import msgspec

from tests.reliability import harness, loadgen

CATCH_UP_S = 8.0
"""How long a daemon polling every 50 ms may take to reach a head it can see (a stall takes forever)."""
STALLED_S = 2.0
"""The end's wait once the daemon already stalled mid-run (keeps a failing test short)."""


class Outcome(msgspec.Struct):
    mode: str
    seconds: float = 0.0
    writer: dict[str, Any] = msgspec.field(default_factory=dict)
    """The load generator's JSON summary (transactions, busy_retries, restarts)."""
    caught_up_mid: bool = False
    held_mid: list[str] = msgspec.field(default_factory=list)
    """Deleted db/-wal/-shm files the daemon held open mid-run (the writer still going)."""
    held_end: list[str] = msgspec.field(default_factory=list)
    """... and once the writer stopped (its exit closed the app's last connection)."""
    caught_up_end: bool = False
    applied: int = 0
    journal_head: int = 0
    compared: int = 0
    lost: int = 0
    doubled: int = 0
    chain: list[str] = msgspec.field(default_factory=list)
    note: str = ""

    @property
    def passed(self) -> bool:
        return (
            self.caught_up_mid
            and self.caught_up_end
            and not self.held_mid
            and not self.held_end
            and not self.lost
            and not self.doubled
            and not self.chain
            and not self.note
            and int(self.writer.get("transactions", 0)) > 0
        )


def _caught_up(dsn: str, source: Path, timeout: float) -> tuple[bool, int, int]:
    """Waits until the daemon's chain covers the journal head seen now; (reached, applied, head)."""
    head = harness.journal_head(source)
    reached = harness.wait_for(lambda: harness.applied_seq(dsn) >= head, timeout, 0.1)
    return reached, harness.applied_seq(dsn), head


def beside(
    workdir: Path, dsn: str, mode: str, *, seconds: float = 6.0, tps: float = 25.0, seed: int = 5, rows: int = 200
) -> Outcome:
    """The daemon started on a new source, the writer in ``mode`` beside it for ``seconds``; see the module."""
    out = Outcome(mode)
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    source = loadgen.create(workdir / "app.db", rows, seed)
    daemon = harness.daemon(source, dsn, logs / "daemon.log")
    gen: harness.Proc | None = None
    try:
        if not harness.wait_for(lambda: harness.phase_of(dsn) == "STREAMING" or not daemon.alive(), 30, 0.1):
            out.note = f"the daemon did not reach STREAMING: {daemon.output(800)}"
            return out
        gen = harness.loadgen(source, logs / "loadgen.log", seconds=seconds, seed=seed, tps=tps, mode=mode)
        time.sleep(seconds / 2)
        out.caught_up_mid, out.applied, out.journal_head = _caught_up(dsn, source, CATCH_UP_S)
        out.held_mid = harness.deleted_files(daemon.pid, source)
        try:
            code = gen.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            code = gen.kill()
        if code != 0:
            out.note += f" writer exited {code}: {gen.tail(600)}"
        with contextlib.suppress(msgspec.DecodeError, IndexError):
            out.writer = msgspec.json.decode(gen.tail(400).strip().splitlines()[-1])
        wait = CATCH_UP_S if out.caught_up_mid else STALLED_S
        out.caught_up_end, out.applied, out.journal_head = _caught_up(dsn, source, wait)
        out.held_end = harness.deleted_files(daemon.pid, source)
        if not daemon.alive():
            out.note += f" daemon stopped by itself: {daemon.output(600)}"
    finally:
        if gen is not None:
            gen.kill()
        daemon.term(60)
    d = harness.diff(source, dsn)  # what the running daemon applied: no fresh drain, which would hide a stall
    out.compared, out.lost, out.doubled = d.compared, d.lost, d.doubled
    if d.examples:
        out.note += " " + "; ".join(d.examples)[:1000]
    out.chain = harness.chain_problems(dsn, source)
    if harness.phase_of(dsn) == "ERRORED":
        out.note += " phase ERRORED"
    out.seconds = round(time.monotonic() - started, 2)
    return out
