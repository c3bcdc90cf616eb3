"""Shared pieces of the reliability harness: the real daemon as a subprocess (tests.support.daemon's launcher,
small batches and fast retries), the load generator and the other commands as subprocesses, and a row-by-row
comparison that counts rows lost and rows doubled (not only the first five)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import msgspec
import psycopg
from psycopg import sql

from checkpoints import audit, store
from replicator.state.store import StateStore
from tests.support.compare import pg_canon, sqlite_canon
from tests.support.daemon import DaemonProcess
from triggers.schema import quote_ident

ROOT = Path(__file__).resolve().parents[2]
STATE = "replicator"


DAEMON_ENV: dict[str, str] = {
    "REPLICATOR_APPLY__BATCH_ROWS": "25",
    "REPLICATOR_APPLY__RETRY_MAX_WAIT_S": "1",
    "REPLICATOR_TARGET__CONNECT_TIMEOUT_S": "3",
}
"""Small batches and fast retries (tests wait less); tests.support.daemon adds the fast poll."""


def env(**extra: str) -> dict[str, str]:
    """The environment of the other processes (the load generator, cutover): the daemon's settings too, and,
    like the daemon's (:class:`tests.support.daemon.DaemonProcess`), none of the caller's ``REPLICATOR_*``."""
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")},
        "PYTHONPATH": str(ROOT),
        "REPLICATOR_FAILPOINTS": "",
        "REPLICATOR_APPLY__POLL_INTERVAL_S": "0.05",
        **DAEMON_ENV,
    }
    base.update(extra)
    return base


class Proc:
    """A subprocess in its own process group (SIGKILL takes any child with it), output to a log file."""

    def __init__(self, cmd: list[str], log_path: Path, environ: dict[str, str]) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, env=environ, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> int:
        """SIGKILL the whole group; returns the exit status (-9 if it was still running)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.wait(30)

    def term(self, timeout: float = 60) -> int:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.returncode is not None:
                self._log.close()

    def tail(self, chars: int = 3000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]


def daemon(source: Path, dsn: str, log_path: Path, *args: str, failpoints: str = "", **extra: str) -> DaemonProcess:
    """The daemon (tests.support.daemon's launcher) with the harness's settings, logging to ``log_path``."""
    return DaemonProcess(source, dsn, *args, env={**DAEMON_ENV, **extra}, failpoints=failpoints, log=log_path, cwd=ROOT)


def replicator(args: list[str], log_path: Path, failpoints: str = "", **extra: str) -> Proc:
    return Proc([sys.executable, "-m", "replicator", *args], log_path, env(REPLICATOR_FAILPOINTS=failpoints, **extra))


def loadgen(source: Path, log_path: Path, *, seconds: float, seed: int, tps: float, mode: str = "keep-open") -> Proc:
    """The load generator in its own process; ``mode``: how it reaches SQLite (``loadgen.MODES``)."""
    cmd = [sys.executable, "-m", "tests.reliability.loadgen", str(source), "--seconds", str(seconds)]
    return Proc([*cmd, "--seed", str(seed), "--tps", str(tps), "--mode", mode], log_path, env())


def deleted_files(pid: int, source: Path) -> list[str]:
    """The database, ``-wal`` or ``-shm`` files that process ``pid`` holds open although they were deleted
    (the app's last close removed them under it: it reads a WAL nobody writes any more)."""
    names = {str(source.resolve()) + suffix for suffix in ("", "-wal", "-shm")}
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed between the listing and the readlink
            target = os.readlink(fd)
            if target.endswith(" (deleted)") and target.removesuffix(" (deleted)") in names:
                held.add(target)
    return sorted(held)


def journal_head(source: Path) -> int:
    """The journal's head as a new connection sees it (the truth, whatever a stalled daemon still reads)."""
    with contextlib.closing(sqlite3.connect(source, timeout=30)) as s:
        (head,) = s.execute("SELECT coalesce(max(seq), 0) FROM _replicator_journal").fetchone()
    return int(head)


def applied_seq(dsn: str) -> int:
    """How far the target's chain reaches (0 before the genesis)."""
    with connect(dsn) as conn:
        row = conn.execute(f"SELECT to_regclass('{STATE}.checkpoints')").fetchone()
        head = store.latest(conn) if row and row[0] else None
    return head.seq_to if head is not None else 0


def phase_of(dsn: str) -> str:
    """The daemon's phase as the target records it (``NONE`` before any daemon ran)."""
    with connect(dsn) as conn:
        state = StateStore(conn, STATE).read_phase()
    return str(state.phase) if state is not None else "NONE"


def drain(source: Path, dsn: str, log_path: Path, timeout: float = 120) -> None:
    """``replicator run --until-drained`` to the end; raises with the log tail if it fails."""
    proc = daemon(source, dsn, log_path, "--until-drained", REPLICATOR_APPLY__BATCH_ROWS="500")
    try:
        code = proc.wait(timeout).code
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"drain did not finish in {timeout}s:\n{proc.output(3000)}") from None
    if code != 0:
        raise AssertionError(f"drain exited {code}:\n{proc.output(3000)}")


class Diff(msgspec.Struct):
    compared: int = 0
    lost: int = 0
    """Rows in SQLite that PostgreSQL lacks (or holds with other values)."""
    doubled: int = 0
    """Rows in PostgreSQL that SQLite lacks (applied twice, resurrected, or stale values)."""
    examples: list[str] = msgspec.field(default_factory=list)


def diff(source: Path, dsn: str) -> Diff:
    """Every table row by row under the documented mapping (tests.support.compare's canonical values), counted."""
    out = Diff()
    with psycopg.connect(dsn, autocommit=True) as pconn:
        plan = StateStore(pconn, STATE).load_plan()
        assert plan is not None, "no saved plan in the target"
        sconn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        sconn.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
        try:
            for table in plan.tables:
                cols = table.load_columns
                s_canon = [sqlite_canon(c.type) for c in cols]
                p_canon = [pg_canon(c.type) for c in cols]
                names = ", ".join(quote_ident(c.source) for c in cols if c.source is not None)
                expected: Counter[tuple[Any, ...]] = Counter(
                    tuple(f(v) for f, v in zip(s_canon, row, strict=True))
                    for row in sconn.execute(f"SELECT {names} FROM {quote_ident(table.source)}")
                )
                selected = sql.SQL(", ").join(
                    sql.SQL("{}::text").format(sql.Identifier(c.name))
                    if c.type.name in ("json", "jsonb")
                    else sql.Identifier(c.name)
                    for c in cols
                )
                query = sql.SQL("SELECT {} FROM {}").format(selected, sql.Identifier(plan.schema, table.name))
                actual: Counter[tuple[Any, ...]] = Counter(
                    tuple(f(v) for f, v in zip(p_canon, row, strict=True)) for row in pconn.execute(query)
                )
                missing, extra = expected - actual, actual - expected
                out.compared += sum(expected.values())
                out.lost += sum(missing.values())
                out.doubled += sum(extra.values())
                if missing or extra:
                    out.examples.append(f"{table.source}: lost {list(missing)[:3]} extra {list(extra)[:3]}")
        finally:
            sconn.close()
    return out


def chain_problems(dsn: str, source: Path | None = None) -> list[str]:
    """Findings of the chain audit; with ``source``: the head must cover the journal's head exactly."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        problems = [f"{f.problem} at {f.number}: {f.detail}" for f in audit.verify(store.records(conn))]
        if source is not None:
            head = store.latest(conn)
            with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as s:
                (journal_head,) = s.execute("SELECT coalesce(max(seq), 0) FROM _replicator_journal").fetchone()
            if head is None or head.seq_to != journal_head:
                problems.append(f"chain head covers {head.seq_to if head else None}, journal head is {journal_head}")
    return problems


@contextlib.contextmanager
def connect(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        yield conn


def wait_for(predicate: Any, timeout: float, interval: float = 0.005) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds pass (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
