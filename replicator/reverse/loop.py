"""The daemon's reverse direction: ``replicator run`` after a cutover keeps the fenced SQLite file current.

It holds the same two locks as the forward daemon (the lock file beside the source and the advisory lock keyed
by the capture's source id), so it never runs beside a forward daemon, a cutover or a ``rollback``; it resumes
from the chain's head after any stop (:func:`~replicator.reverse.writer.settle` first, for a crash between the
two commits), polls the reverse journal, and writes one batch at a time (:class:`~replicator.reverse.writer.Writer`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import psycopg

from checkpoints import store
from checkpoints.model import Checkpoint, Kind
from replicator import log, pg
from replicator.config import Config
from replicator.errors import UsageError
from replicator.inspect import window as window_status
from replicator.plan.shape import TableShape
from replicator.reverse.batch import DEFAULT_LIMIT, read_batch
from replicator.reverse.writer import ReverseError, Writer, first_horizon, settle
from replicator.state import lock, reverse
from replicator.state.store import StateStore
from replicator.stream.metrics import Metrics
from triggers import meta as capture_meta
from triggers import source as sqlite_source

POLL_S: Final = 0.05
"""How often an idle reverse direction looks at the journal (a few cheap queries): the lag's floor."""


class NoWindow(UsageError):
    """There is no open rollback window on this target."""


class Result(msgspec.Struct, frozen=True):
    batches: int
    entries: int
    upserted: int
    deleted: int
    refused: int
    horizon: int


class Session:
    """The locks, the two connections, the tables and the writer of one reverse run (the loop's, rollback's)."""

    def __init__(self, source: Path, dsn: str, config: Config) -> None:
        self.source = source
        self.config = config
        self.schema = config.target.state_schema
        self.log = log.get("reverse", source=str(source))
        self.held = False
        """The last batch read left committed entries above its horizon (an older transaction still runs):
        the journal is not drained yet, whatever that batch read."""
        self._stack = contextlib.ExitStack()
        try:
            self._open(dsn)
        except BaseException:
            self._stack.close()
            raise

    def _open(self, dsn: str) -> None:
        handle = self._stack.enter_context(contextlib.closing(lock.open_lock_file(self.source)))
        if not lock.try_flock(handle):
            raise ReverseError(
                f"another replicator run holds {lock.lock_path(self.source)}",
                hint="only one process may apply a source; stop the other one first",
            )
        self.sconn: sqlite3.Connection = self._stack.enter_context(
            contextlib.closing(
                sqlite_source.connect(self.source, readonly=False, busy_timeout_ms=self.config.source.busy_timeout_ms)
            )
        )
        self.sconn.isolation_level = None
        found = capture_meta.read_meta(self.sconn)
        if found is None:
            raise NoWindow(
                f"{self.source} has no capture record: it is not the file this target was migrated from",
                hint="pass the SQLite file the cutover fenced",
            )
        self.pconn: psycopg.Connection[Any] = self._stack.enter_context(
            pg.connect(dsn, autocommit=True, connect_timeout=self.config.target.connect_timeout_s)
        )
        pg.read_citext_as_text(self.pconn)
        if not lock.take_lock(self.pconn, found.source_id):
            raise ReverseError(
                "another replicator process holds this source's lock in PostgreSQL (a daemon, a cutover or a rollback)",
                hint="stop it first, or wait for it to finish",
            )
        state_store = StateStore(self.pconn, self.schema)
        state_store.ensure()
        window = reverse.read_window(self.pconn, self.schema)
        if window is None or not window.open:
            how = "" if window is None else f" (closed by {window.closed_how} at {window.closed_at})"
            raise NoWindow(
                f"this target has no open rollback window{how}",
                hint="the window opens with `replicator cutover` (without --no-rollback-window)",
            )
        self.window = window
        plan = state_store.load_plan()
        if plan is None:
            raise NoWindow("the target holds no saved plan", hint="is this the target that was cut over?")
        self.plan = plan
        every = reverse.shapes_of(plan)
        ordered = [*plan.order, *sorted(set(window.tables) - set(plan.order))]
        self.shapes: dict[str, TableShape] = {n: every[n] for n in ordered if n in window.tables and n in every}
        """The window's tables, parents first: the order apps write in, so the order rollback fences them in
        (fencing a child first waits for app transactions that hold the parent and then wait for the child)."""
        head = store.latest(self.pconn, schema=self.schema)
        if head is None or head.kind not in (Kind.CUTOVER, Kind.REVERSE):
            raise NoWindow(
                f"the chain's head is a {head.kind if head else 'nothing'} checkpoint, not the cutover's or a reverse "
                "batch's: the window is closed",
                hint="`replicator status` shows where the migration stands",
            )
        self.head: Checkpoint = settle(self.sconn, self.pconn, self.schema, head)
        self.writer = Writer(self.sconn, self.pconn, self.schema, self.shapes)

    def step(self, *, final: bool = False, limit: int = DEFAULT_LIMIT) -> tuple[int, int, int, int, int]:
        """One batch read and written: (entries, upserted, deleted, refused, horizon reached)."""
        lo = first_horizon(self.head)
        try:
            batch = read_batch(self.pconn, self.schema, self.shapes, lo, limit=limit, final=final)
        except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable):
            self.check_schema()  # names the change; anything else is raised as it came
            raise
        if not batch.empty:
            self.check_schema()
        written = self.writer.write(batch, self.head)
        if written.checkpoint is not None:
            self.head = written.checkpoint
        self.held = batch.held
        return batch.entries, written.upserted, written.deleted, written.refused, batch.hi

    def check_schema(self) -> None:
        """Refuse to go on when the app changed a migrated table's columns in PostgreSQL
        (:func:`~replicator.state.reverse.schema_changes`): before a batch is written, and in rollback."""
        changes = reverse.schema_changes(self.pconn, self.plan, self.shapes)
        if changes:
            raise ReverseError(
                f"PostgreSQL's tables changed during the rollback window: {'; '.join(changes)}; the reverse "
                "direction writes back the migrated columns only, so going on would leave values behind",
                hint="undo the change in PostgreSQL (drop a column you added once its values are not needed, add "
                "back one you dropped), or stay on PostgreSQL with `replicator finalize`",
            )

    def close(self) -> None:
        self._stack.close()


@contextlib.contextmanager
def opened(source: Path, dsn: str, config: Config) -> Iterator[Session]:
    session = Session(source, dsn, config)
    try:
        yield session
    finally:
        session.close()


def run(
    source: Path,
    dsn: str,
    config: Config,
    *,
    once: bool = False,
    until_drained: bool = False,
    stop: threading.Event | None = None,
    metrics: Metrics | None = None,
) -> Result:
    """Apply the reverse journal to the SQLite file until stopped (``once``: one batch; ``until_drained``:
    until a read finds nothing and no committed entry waits above its horizon: writes an older transaction
    holds back are waited for, not left behind). ``metrics``: the reverse lag and journal gauges, served on
    ``metrics.port`` once the locks are ours (as the forward daemon does)."""
    totals = [0, 0, 0, 0, 0, 0]
    with opened(source, dsn, config) as session, _serving(session, dsn, metrics):
        session.log.info("reverse direction started", head=session.head.number, window_opened=session.window.opened_at)
        while stop is None or not stop.is_set():
            entries, upserted, deleted, refused, horizon = session.step()
            if entries:
                for i, n in enumerate((1, entries, upserted, deleted, refused)):
                    totals[i] += n
            totals[5] = horizon
            if once or (until_drained and not entries and not session.held):
                break
            if not entries:
                if stop is not None:
                    stop.wait(POLL_S)
                else:
                    time.sleep(POLL_S)
    return Result(*totals)


@contextlib.contextmanager
def _serving(session: Session, dsn: str, metrics: Metrics | None) -> Iterator[None]:
    """The /metrics endpoint while the loop runs: the reverse journal read at each scrape, on a connection of
    its own (the scrape runs in the HTTP server's thread)."""
    port = session.config.metrics.port
    if metrics is None or port is None:
        yield
        return

    def reading() -> tuple[int, float] | None:
        with pg.connect(dsn, autocommit=True, connect_timeout=session.config.target.connect_timeout_s) as conn:
            stats = reverse.journal_stats(conn, session.schema)
        return None if stats is None else (stats.entries, window_status.lag(stats))

    metrics.watch_reverse(reading)
    metrics.up.set(1)
    stop = metrics.serve(port, session.config.metrics.host)
    try:
        yield
    finally:
        metrics.up.set(0)
        stop()
