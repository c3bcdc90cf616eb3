"""Outages (issue 9, item 2): PostgreSQL unreachable mid-stream, PostgreSQL gone during a batch, the SQLite
write lock held by the app, a full disk under ``replicator export``. Each scenario runs the real daemon
(or command) as a subprocess against a real SQLite app and a real PostgreSQL, and returns an
:class:`Outcome`: did it retry, did ``status`` show it, did it recover by itself, was anything lost."""

from __future__ import annotations

import contextlib
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import msgspec

from replicator import config as config_mod
from replicator.inspect.status import Status, read_status
from tests.reliability import harness, loadgen
from tests.reliability.proxy import Proxy
from tests.support.daemon import DaemonProcess

RETRY_LINE: Final = "transient error; retrying with backoff"
RECOVERED_LINE: Final = '"recovered"'


class Outcome(msgspec.Struct):
    name: str
    seconds: float = 0.0
    retried: bool = False
    """The daemon logged the transient error and kept running (its process stayed up)."""
    status_showed: bool = False
    """``replicator status`` showed the trouble while it lasted (daemon not holding its lock, or lag growing)."""
    recovered: bool = False
    """The daemon went on by itself afterwards (a "recovered" line, and it caught up)."""
    lost: int = 0
    doubled: int = 0
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.retried and self.status_showed and self.recovered and not self.lost and not self.doubled


def _status(dsn: str, source: Path) -> Status:
    return read_status(dsn, config_mod.load(environ={}), source)


def _caught_up(dsn: str, source: Path) -> bool:
    st = _status(dsn, source)
    return st.changes_behind == 0 and bool(st.daemon_running)


def _finish(out: Outcome, source: Path, dsn: str, daemon: DaemonProcess, logs: Path) -> None:
    """Stop the daemon (SIGTERM), drain what is left, compare row by row, verify the chain."""
    code = daemon.term(60)
    if code != 0:
        out.note += f" daemon exit {code}"
    harness.drain(source, dsn, logs / "drain.log")
    d = harness.diff(source, dsn)
    out.lost, out.doubled = d.lost, d.doubled
    if d.examples:
        out.note += " " + "; ".join(d.examples)[:1000]
    problems = harness.chain_problems(dsn, source)
    if problems:
        out.note += f" chain: {problems}"
        out.lost = max(out.lost, 1)


def _setup(workdir: Path, dsn: str, seed: int) -> tuple[Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    source = loadgen.create(workdir / "app.db", 500, seed)
    harness.drain(source, dsn, logs / "snapshot.log")  # the snapshot, straight to PostgreSQL
    return source, logs


def postgres_unreachable(workdir: Path, dsn: str, *, seconds: float, seed: int = 1) -> Outcome:
    """The daemon reaches PostgreSQL through a proxy; the proxy drops everything and refuses for ``seconds``."""
    out = Outcome(f"PostgreSQL unreachable {seconds:g} s mid-stream")
    started = time.monotonic()
    source, logs = _setup(workdir, dsn, seed)
    with Proxy.to_dsn(dsn).running() as proxy:
        daemon = harness.daemon(source, proxy.dsn(dsn), logs / "daemon.log")
        gen = harness.loadgen(source, logs / "loadgen.log", seconds=seconds + 30, seed=seed, tps=40)
        try:
            harness.wait_for(lambda: _caught_up(dsn, source), 20, 0.1)
            time.sleep(0.5)
            proxy.outage()
            cut = time.monotonic()
            seen_behind = seen_down = False
            while time.monotonic() - cut < seconds:
                st = _status(dsn, source)  # status reads PostgreSQL directly: the operator's view
                seen_down = seen_down or st.daemon_running is False
                seen_behind = seen_behind or (st.changes_behind or 0) > 0
                time.sleep(min(1.0, max(0.05, seconds - (time.monotonic() - cut))))
            out.status_showed = seen_down and seen_behind
            out.retried = daemon.alive() and RETRY_LINE in daemon.output(10**7)
            proxy.resume()
            gen.term(30)
            out.recovered = harness.wait_for(lambda: _caught_up(dsn, source), 60, 0.2)
            out.recovered = out.recovered and RECOVERED_LINE in daemon.output(10**7)
        finally:
            gen.kill()
            _finish(out, source, dsn, daemon, logs)
    out.seconds = round(time.monotonic() - started, 2)
    return out


def postgres_gone_during_batch(
    workdir: Path, dsn: str, *, times: int = 3, down_s: float = 2.0, seed: int = 2
) -> Outcome:
    """Connections cut while the apply connection is inside a batch's transaction (what a server restart does
    to the client), refused ``down_s`` seconds, then accepted again; ``times`` times."""
    out = Outcome(f"PostgreSQL gone during a batch ×{times}")
    started = time.monotonic()
    source, logs = _setup(workdir, dsn, seed)
    cuts = 0
    with Proxy.to_dsn(dsn).running() as proxy, harness.connect(dsn) as admin:
        daemon = harness.daemon(source, proxy.dsn(dsn), logs / "daemon.log", REPLICATOR_APPLY__BATCH_ROWS="200")
        gen = harness.loadgen(source, logs / "loadgen.log", seconds=60, seed=seed, tps=0)
        try:

            def in_batch() -> bool:
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'replicator' AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
                ).fetchone()
                return bool(row and row[0])

            showed = False
            for _ in range(times):
                if not harness.wait_for(in_batch, 20, 0.001):
                    break
                proxy.outage()
                cuts += 1
                time.sleep(down_s / 2)
                showed = showed or _status(dsn, source).daemon_running is False
                time.sleep(down_s / 2)
                proxy.resume()
                time.sleep(1.0)
            out.status_showed = showed
            out.retried = cuts == times and daemon.alive() and RETRY_LINE in daemon.output(10**7)
            gen.term(30)
            out.recovered = harness.wait_for(lambda: _caught_up(dsn, source), 60, 0.2)
            out.recovered = out.recovered and RECOVERED_LINE in daemon.output(10**7)
            out.note = f"cut {cuts} times inside a batch"
        finally:
            gen.kill()
            _finish(out, source, dsn, daemon, logs)
    out.seconds = round(time.monotonic() - started, 2)
    return out


def sqlite_write_lock(workdir: Path, dsn: str, *, seconds: float, seed: int = 3) -> Outcome:
    """An app connection holds SQLite's write lock (BEGIN IMMEDIATE) for ``seconds`` while the daemon runs."""
    out = Outcome(f"SQLite write lock held {seconds:g} s")
    started = time.monotonic()
    source, logs = _setup(workdir, dsn, seed)
    daemon = harness.daemon(source, dsn, logs / "daemon.log", REPLICATOR_SOURCE__BUSY_TIMEOUT_MS="200")
    gen = harness.loadgen(source, logs / "loadgen.log", seconds=seconds + 30, seed=seed, tps=40)
    try:
        harness.wait_for(lambda: _caught_up(dsn, source), 20, 0.1)
        time.sleep(0.5)
        with contextlib.closing(sqlite3.connect(source, isolation_level=None, timeout=30)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            holder.execute("UPDATE parent SET note = 'held' WHERE id = 1")
            locked = time.monotonic()
            behind, phases, answered, running, polls = 0, set(), 0, 0, 0
            while time.monotonic() - locked < seconds:
                st = _status(dsn, source)  # WAL: status still reads the journal while the lock is held
                polls += 1
                answered += st.journal_head is not None
                running += bool(st.daemon_running)
                behind = max(behind, st.changes_behind or 0)
                phases.add(st.phase)
                time.sleep(0.5)
            holder.execute("COMMIT")
        # The app's other writers wait on the same lock, so the journal does not grow: what status must show
        # is a daemon still holding its lock, not ERRORED, with the journal readable.
        out.status_showed = polls > 0 and answered == polls and running == polls and "ERRORED" not in phases
        out.retried = daemon.alive()
        out.note = (
            f"status during the lock: phases {sorted(phases)}, daemon running {running}/{polls}, behind <= {behind}"
        )
        gen.term(30)
        out.recovered = harness.wait_for(lambda: _caught_up(dsn, source), 60, 0.2)
    finally:
        gen.kill()
        _finish(out, source, dsn, daemon, logs)
    out.seconds = round(time.monotonic() - started, 2)
    return out


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal, as on a full disk (ENOSPC)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


class ExportOutcome(msgspec.Struct):
    name: str
    exit_code: int
    error_lines: list[str]
    leftovers: list[str]

    @property
    def passed(self) -> bool:
        return self.exit_code == 1 and len(self.error_lines) == 1 and not self.leftovers


def export_disk_full(workdir: Path, *, limit: int = 64 * 1024, tar: bool = False, seed: int = 4) -> ExportOutcome:
    """``replicator export`` with a file-size limit (RLIMIT_FSIZE) below the export's size: one error
    line, exit 1, no directory or tar and no partial work left behind."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "app.db"
    if not source.exists():
        loadgen.create(source, 4000, seed)
    outdir = workdir / "exports"
    outdir.mkdir(exist_ok=True)
    target = outdir / ("exp.tar" if tar else "exp")
    cmd = [sys.executable, "-m", "replicator", "export", "-q", "--source", str(source), "--out", str(target)]
    done = subprocess.run(
        [*cmd, *(["--tar"] if tar else [])],
        capture_output=True,
        text=True,
        timeout=120,
        env=harness.env(),
        preexec_fn=lambda: _limit_file_size(limit),
        check=False,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if len(errors) != len(lines):
        errors = lines  # anything besides the one error line counts against it
    return ExportOutcome(
        f"export with a full disk ({'tar' if tar else 'directory'})",
        done.returncode,
        errors,
        sorted(p.name for p in outdir.iterdir()),
    )
