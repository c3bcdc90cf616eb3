"""Step 2, the freeze, and what bounds it: the held write transaction (``BEGIN IMMEDIATE``: the app's writers
wait on their busy timeout, readers go on), the ``--max-downtime`` budget every PostgreSQL statement in it
runs under, and a lock wait cut short by that budget told as one line naming the blocking sessions.

The outage is measured here, from the moment the write lock is held to the fence's commit (or the
rollback that lets the writers go): that is what the certificate records and ``--max-downtime`` bounds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import time
from typing import Any

import psycopg
from psycopg import sql

from replicator import pg
from replicator.cutover.clock import Clock
from replicator.cutover.session import CertificateFailed, CutoverAborted, Held, Options, Session
from replicator.errors import WAIT_CUT_SHORT, ReplicatorError
from triggers import journal
from triggers import source as sqlite_source


class Frozen:
    """The held write transaction: the app's writers wait until :meth:`commit` or :meth:`rollback`."""

    def __init__(self, conn: sqlite3.Connection, stop_seq: int, started: float, wall: dt.datetime) -> None:
        self.conn, self.stop_seq, self.started, self.frozen_wall = conn, stop_seq, started, wall
        self.committed_wall: dt.datetime | None = None
        """When the fence committed; the fence message names the freeze time (no write was accepted after it)."""
        self.ended: float | None = None

    def outage(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    @property
    def fenced(self) -> bool:
        """SQLite's fence committed: from then on nothing can be undone on the SQLite side."""
        return self.committed_wall is not None

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        self.ended = time.perf_counter()
        self.committed_wall = dt.datetime.now(dt.UTC)
        self.conn.close()

    def rollback(self) -> None:
        if self.ended is None:
            with contextlib.suppress(sqlite3.Error):
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
            self.ended = time.perf_counter()
            self.conn.close()


def freeze(session: Session, clock: Clock) -> Frozen:
    """BEGIN IMMEDIATE (waits for the app's current writer) and read the stop seq."""
    conn = session.open_again(readonly=False)
    with clock.step("freeze"):
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            conn.close()
            raise sqlite_source.translate(exc, session.source) from None
        started = time.perf_counter()
        stop = journal.head(conn)
    session.log.info("writes frozen", stop_seq=stop)
    return Frozen(conn, stop, started, dt.datetime.now(dt.UTC))


class Budget:
    """``--max-downtime``: statement_timeout for the remaining budget; a check between steps."""

    def __init__(self, frozen: Frozen, max_s: float, conn: psycopg.Connection[Any]) -> None:
        self.frozen, self.max_s, self.conn = frozen, max_s, conn
        self.arm()

    def remaining_ms(self) -> int:
        return max(1, int((self.max_s - self.frozen.outage()) * 1000))

    def arm(self) -> None:
        self.conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(self.remaining_ms())))

    def check(self, after: str) -> None:
        if self.frozen.outage() > self.max_s:
            raise CutoverAborted(
                f"the freeze would exceed --max-downtime {self.max_s:g}s "
                f"(at {self.frozen.outage():.2f}s after {after})",
                hint="cut over at a quieter moment, after `replicator run` caught up, or raise --max-downtime",
            )
        self.arm()

    def clear(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.execute("SET statement_timeout = 0")


def lock_wait(held: Held, exc: BaseException, clock: Clock, options: Options) -> CutoverAborted | None:
    """A ``lock_timeout`` anywhere in ``exc``'s chain, as one line naming the step and the blocking sessions."""
    if isinstance(exc, CertificateFailed):
        return None
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, WAIT_CUT_SHORT):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    holders: list[str] = []
    if held.applying is not None:  # else it failed before the plan was read
        try:
            with pg.connect(held.dsn, autocommit=True, connect_timeout=held.config.target.connect_timeout_s) as c:
                holders = pg.blockers(c, [held.applying.plan.schema, held.state_schema])
        except (psycopg.Error, ReplicatorError):
            holders = []
    who = "; ".join(holders) if holders else "a session that has since let go"
    step = clock.current or "preflight"
    where = (
        str(exc)
        if isinstance(exc, CutoverAborted)
        else f"cutover aborted at {step}: SQLite is not fenced, nothing was changed"
    )
    pids = " ".join(h.split()[1] for h in holders)
    return CutoverAborted(
        f"{where}; waited more than --max-downtime {options.max_downtime_s:g}s for a lock on a target table: {who}",
        hint=(f"end or wait for session(s) {pids} (SELECT pg_terminate_backend(pid)), then " if pids else "")
        + "run cutover again",
    )
