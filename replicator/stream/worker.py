"""THE loop: ``replicator run``. Read it top to bottom: :meth:`Worker.run`, then :meth:`Worker._cycle`.

One cycle::

    wait for the wake-up (Watcher: file events + PRAGMA data_version poll)
    → check drift (one PRAGMA unless the schema moved)
    → redo any owed table reload (online re-snapshot, :mod:`replicator.load.resnapshot`)
    → read a batch (journal range + current rows, one SQLite read transaction)
    → apply it and append its checkpoint (one PostgreSQL transaction)
    → prune the journal up to what PostgreSQL committed
    → repeat

Exactly once: the checkpoint commits with the data; on (re)start and after every reconnect the
position is re-read from the checkpoint head, never from memory; the journal is pruned only after
the commit. Every window between those steps has a failpoint (:mod:`replicator.faults`).

Errors are absorbed only here: a transient one (connection loss, admin shutdown, serialization
failure, SQLite busy) is retried with capped exponential backoff and jitter, logged once when the
state changes and once on recovery; a terminal one sets phase ERRORED with its hint and stops.
SIGTERM/SIGINT finish (or roll back) the current batch and return normally.

Two daemons on one source are refused twice: a lock file next to the source, and a PostgreSQL
advisory lock keyed by the capture's source id held by the apply connection (:mod:`replicator.state.lock`).
At every (re)start the loop opens an apply session (:mod:`replicator.stream.session`, the one the cutover
drains with); schema drift is followed by :mod:`replicator.stream.drift`.

Two helper threads keep PostgreSQL busy without changing any of the above: the
:class:`~replicator.stream.prefetch.Prefetcher` reads batch N+1 (its own read transaction, its own
connection) while batch N is applied, and the :class:`~replicator.stream.prune.Pruner` deletes journal rows
behind the apply. The loop's thread alone writes to PostgreSQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import signal
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import msgspec
import psycopg

from checkpoints.model import Checkpoint
from replicator import faults, log, pg
from replicator.apply.batch import Batch, read_batch
from replicator.apply.writer import Applied
from replicator.config import Config
from replicator.errors import UsageError
from replicator.state import integrity, lock
from replicator.state.phase import ApplyState, Phase
from replicator.state.store import StateStore
from replicator.stream.drift import DriftFollower
from replicator.stream.handover import wait_for_cutover
from replicator.stream.metrics import SCRAPE_BUSY_MS, Metrics
from replicator.stream.prefetch import Prefetcher
from replicator.stream.prune import Pruner
from replicator.stream.retry import at_edge, backoff, transient
from replicator.stream.session import (
    AlreadyCutOver,
    ApplySession,
    CutoverUnfinished,
    WorkerError,
    WrongSource,
    open_for_daemon,
)
from triggers import drift, journal
from triggers import source as sqlite_source
from triggers.errors import CaptureNotInstalled
from triggers.meta import Meta, read_meta
from triggers.watch import Watcher

RATE_WINDOW_S = 10.0
SWITCH_INTERVAL_S = 0.001
"""The daemon's GIL switch interval: the reader and digest threads must not keep the loop's thread,
back from a PostgreSQL round trip, waiting the default 5 ms for the GIL at every statement."""


HEARTBEAT_MAX_S = 10.0
"""An idle daemon rewrites its phase row at least this often (and at least four times per
``status.stall_after_s``), so ``status`` tells an idle daemon from a stalled one by the row's age."""


class SchemaMoved(WorkerError):
    """A batch read failed because the schema changed after this cycle's drift check: the next cycle sees it."""

    transient = True


#: Refusals about *this invocation*, not the replication: they must not mark the target ERRORED
#: (the daemon that really owns the target may be fine and resume at any time).
REFUSALS = (AlreadyCutOver, CutoverUnfinished, WrongSource)


class RunResult(msgspec.Struct, frozen=True):
    batches: int
    changes: int
    applied_seq: int
    head_seq: int
    phase: Phase


def _hint(exc: BaseException) -> str:
    return str(getattr(exc, "hint", "")) or "see the log above; fix the cause and run again"


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "")) or str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class _Run:
    """What one :meth:`Worker.run` holds open for its whole life; the apply session is what a failure replaces."""

    sconn: sqlite3.Connection
    """Read-only: batches are read on it (and the writer reads conflicting rows on it)."""
    watcher: Watcher
    pruner: Pruner
    prefetch: Prefetcher
    follow: DriftFollower


class Worker:
    """The apply daemon for one source and one target. ``stop()`` may be called from any thread."""

    def __init__(self, source: Path, dsn: str, config: Config, *, metrics: Metrics | None = None) -> None:
        self.source = Path(source)
        self.dsn = dsn
        self.config = config
        self.metrics = metrics
        self.state_schema = config.target.state_schema
        self._stop = threading.Event()
        self.handed_over = False
        """Stopped because a cutover asked for the locks (SIGUSR1, :func:`hand_over`), not to end."""
        self._signalled: str | None = None
        """The signal that asked us to stop, logged by the loop (a handler must not log: see :meth:`_signals`)."""
        self._log = log.get("worker", source=str(self.source))
        self._lag = journal.LagTracker()
        self._rate: deque[tuple[float, int]] = deque()
        self._phase = Phase.INIT
        self._changes = 0
        self._batches = 0
        self._pconn: psycopg.Connection[Any] | None = None
        """The target connection, from connect until a failure (the session's once it is open): what ``up``
        reports and what an idle phase change is written on, the first snapshot's included."""
        self._session: ApplySession | None = None
        """The apply session; None before the first start and between a failure and the next start."""
        self._known: Checkpoint | None = None
        """The chain head the last session ended on (the live session's ``prev`` is the current one)."""
        self._applied = 0
        self._head = 0
        self._persisted_head = -1
        self._root = ""
        """Hash of the chain's first record, stored in each anchor (:mod:`replicator.state.integrity`)."""
        self._progress_at = time.monotonic()
        """When a batch last committed or a read found nothing to apply: what a stall is measured from."""
        self._written_at = 0.0
        self._heartbeat_s = min(HEARTBEAT_MAX_S, config.status.stall_after_s / 4)
        if metrics is not None:
            metrics.watch_progress(self._stalled_for, config.status.stall_after_s)
            metrics.watch_daemon(lambda: self._phase.value, lambda: self._pconn is not None, self._checkpoint_at)
            metrics.watch_journal(self._journal_reading(journal.size), self._journal_reading(journal.page_bytes))

    # --- public -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish or roll back the current batch, then return from :meth:`run`."""
        self._stop.set()

    def run(self, *, once: bool = False, until_drained: bool = False) -> RunResult:
        """Run until stopped (or one batch with ``once``, or until the journal is drained)."""
        with (
            self._signals(),
            self._file_lock(),
            self._serving(),
            self._connected(readonly=True) as sconn,
            self._connected(readonly=False) as wconn,
        ):
            meta = read_meta(sconn)
            if meta is None:
                raise CaptureNotInstalled(
                    f"capture is not installed in {self.source}",
                    hint="run `replicator capture install --source ...` first, then `replicator run`",
                )
            watcher = at_edge(lambda: Watcher(self.source, self.config.apply.poll_interval_s), self._max_wait)
            pruner = Pruner(
                lambda: self._open_source(readonly=False),
                idle_s=self.config.apply.prune_idle_s,
                max_rows=self.config.apply.prune_max_rows,
            )
            prefetch = Prefetcher(self._open_source(readonly=True))
            follow = DriftFollower(self.source, self.config, sconn, wconn, meta, self._log)
            try:
                return self._loop(
                    _Run(sconn, watcher, pruner, prefetch, follow), once=once, until_drained=until_drained
                )
            finally:
                prefetch.close()
                pruner.close()
                watcher.close()
                self._close_pg()

    # --- the loop -------------------------------------------------------------------------------

    def _loop(self, run: _Run, *, once: bool, until_drained: bool) -> RunResult:
        failing: BaseException | None = None
        attempt = 0
        while not self._stop.is_set():
            try:
                if self._session is None:
                    self._session = self._start(run)
                progressed, drained = self._cycle(run, self._session)
                if failing is not None:
                    self._log.info("recovered", after_errors=attempt, error=_message(failing))
                    failing, attempt = None, 0
                if once or (until_drained and drained):
                    break
                if not progressed:
                    self._idle(run.watcher)
            except Exception as raw:
                run.prefetch.discard()
                exc = sqlite_source.translate(raw, self.source) if isinstance(raw, sqlite3.Error) else raw
                if not transient(exc):
                    if not isinstance(exc, REFUSALS):
                        self._errored(exc)
                    if exc is raw:
                        raise
                    raise exc from raw
                attempt += 1
                if self.metrics is not None:
                    self.metrics.errors.labels(kind=type(exc).__name__).inc()
                if failing is None or type(failing) is not type(exc):
                    self._log.warning("transient error; retrying with backoff", error=_message(exc), hint=_hint(exc))
                failing = exc
                self._close_pg()
                self._stop.wait(backoff(attempt, self.config.apply.retry_max_wait_s))
        if self.handed_over:
            self._log.info("a cutover asked for the locks: the current batch is finished, waiting for it")
        elif self._signalled is not None:
            self._log.info("signal received: the current batch is finished, stopping", signal=self._signalled)
        return RunResult(self._batches, self._changes, self._applied, self._head, self._phase)

    def _cycle(self, run: _Run, live: ApplySession) -> tuple[bool, bool]:
        """One pass: drift, one batch, checkpoint, prune. Returns (applied something, drained)."""
        if run.follow.check(live):
            run.prefetch.discard()  # read with the old tables' shape
        if run.follow.owed():  # after the drift check: the reloads read SQLite with the
            run.prefetch.discard()  # triggers back in place
            run.follow.reload_pending(live)
        started = time.perf_counter()
        try:
            batch = run.prefetch.take(self._applied) or self._read(run.sconn, self._applied, live, run.follow)
        except SchemaMoved:  # e.g. DROP COLUMN between the drift check and the read: check again at once
            run.prefetch.discard()
            return True, False
        if not batch.empty:  # read the next batch while PostgreSQL applies this one
            run.prefetch.start(lambda conn: self._read(conn, batch.seq_to, live, run.follow), batch.seq_to)
        journal.check_head(batch.head, self._applied, seen=self._head)  # the journal never goes back
        self._head = batch.head
        self._lag.observe(batch.head)
        if batch.empty:
            self._progress_at = time.monotonic()
            self._set_phase(Phase.STREAMING)
            return False, True
        bound = self._log.bind(seq_from=batch.seq_from, seq_to=batch.seq_to)
        next_phase = Phase.CATCHUP if batch.head > batch.seq_to else Phase.STREAMING
        applied = live.writer.write_batch(batch, live.prev, extra=self._record(batch, next_phase, live))
        faults.point("apply.after_commit")
        live.prev = applied.checkpoint
        self._applied = batch.seq_to
        self._phase = next_phase
        self._progress_at = self._written_at = time.monotonic()
        self._prune(run.pruner, live)
        seconds = time.perf_counter() - started
        self._account(batch, applied, seconds)
        bound.info(
            "batch applied",
            entries=batch.entries,
            rows=applied.rows_written,
            tables=len(batch.tables),
            checkpoint=applied.checkpoint.number,
            seconds=round(seconds, 4),
            behind=batch.head - batch.seq_to,
            **({"ignored": sum(batch.ignored.values())} if batch.ignored else {}),
        )
        return True, batch.head <= batch.seq_to

    def _read(self, conn: sqlite3.Connection, after: int, live: ApplySession, follow: DriftFollower) -> Batch:
        """One batch; held tables' entries pass by unapplied like skipped ones (their reload is owed)."""
        cfg = self.config.apply
        ignore = live.skipped | frozenset(follow.held)
        try:
            return read_batch(
                conn, after, live.targets, max_rows=cfg.batch_rows, max_bytes=cfg.batch_bytes, ignore=ignore
            )
        except sqlite3.OperationalError:
            if drift.schema_version(conn) == follow.mark.version:
                raise
            raise SchemaMoved("the SQLite schema changed under the batch read", hint="checked again at once") from None

    def _idle(self, watcher: Watcher) -> None:
        """Wait for the next commit in SQLite, waking at least every poll interval to see a stop."""
        deadline = time.monotonic() + self.config.apply.poll_interval_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            if watcher.wait(min(0.2, self.config.apply.poll_interval_s)):
                return

    # --- start-up -------------------------------------------------------------------------------

    def _start(self, run: _Run) -> ApplySession:
        """Connect, take the advisory lock, snapshot if needed, resolve tables, resume from the head."""
        conn = self._connect()
        self._pconn = conn
        meta = run.follow.meta
        self._lock_target(conn, meta)
        live, self._root = open_for_daemon(
            conn,
            run.sconn,
            meta,
            self.source,
            self.dsn,
            self.config,
            self._log,
            lambda: self._set_phase(Phase.SNAPSHOT),
        )
        try:
            self._applied = live.prev.seq_to
            run.follow.resume(live)
            self._log.info(
                "resuming",
                checkpoint=live.prev.number,
                applied_seq=live.prev.seq_to,
                fk_mode=live.fk,
                tables=len(live.targets),
            )
            self._prune(run.pruner, live)
        except BaseException:  # not ours yet: _close_pg would not see its writer
            with contextlib.suppress(Exception):
                live.close()
            raise
        return live

    def _connect(self) -> psycopg.Connection[Any]:
        timeout = self.config.target.connect_timeout_s
        return at_edge(lambda: pg.connect(self.dsn, autocommit=True, connect_timeout=timeout), self._max_wait)

    def _open_source(self, *, readonly: bool) -> sqlite3.Connection:
        busy = self.config.source.busy_timeout_ms
        return at_edge(
            lambda: sqlite_source.connect(self.source, readonly=readonly, busy_timeout_ms=busy), self._max_wait
        )

    @property
    def _max_wait(self) -> float:
        return self.config.apply.retry_max_wait_s

    def _lock_target(self, conn: psycopg.Connection[Any], meta: Meta) -> None:
        """Take the advisory lock (with :func:`~replicator.state.lock.take_lock`'s grace for a daemon that
        has just exited)."""
        if lock.take_lock(conn, meta.source_id, stop=self._stop):
            return
        raise WorkerError(
            f"another replicator is already applying source {meta.source_id} to this target",
            hint="stop the other `replicator run` (see pg_stat_activity, application_name=replicator) first",
        )

    # --- bookkeeping ----------------------------------------------------------------------------

    def _record(self, batch: Batch, next_phase: Phase, live: ApplySession) -> Any:
        def record(state_store: StateStore, applied: Applied) -> None:
            state_store.write_phase(self._state(next_phase, batch.seq_to, batch.head, applied.entries))
            skipped = {t: n for t, n in batch.ignored.items() if t in live.skipped}  # not a held table's
            if skipped:
                state_store.count_ignored(skipped, batch.seq_to, live.skip_reasons)

        return record

    def _state(self, current: Phase, applied_seq: int, head: int, entries: int = 0, **error: Any) -> ApplyState:
        now = time.time()
        self._rate.append((now, entries))
        while self._rate and now - self._rate[0][0] > RATE_WINDOW_S:
            self._rate.popleft()
        span = max(now - self._rate[0][0], 1.0) if self._rate else 1.0
        rate = sum(n for _, n in self._rate) / span
        lag = self._lag.lag_s(applied_seq, now)
        import datetime as dt

        behind = dt.datetime.fromtimestamp(now - lag, dt.UTC) if head > applied_seq else None
        return ApplyState(
            phase=current, applied_seq=applied_seq, head_seq=head, rate=rate, behind_since=behind, **error
        )

    def _set_phase(self, new: Phase) -> None:
        """Persist a phase change (idle transitions only; batches record theirs in their transaction)."""
        if new == self._phase and new != Phase.STREAMING:
            return
        beat_due = time.monotonic() - self._written_at >= self._heartbeat_s
        if new == self._phase and self._persisted_head == self._head and not beat_due:
            return
        conn = self._pconn
        if conn is None:
            return
        with conn.transaction():
            StateStore(conn, self.state_schema).write_phase(self._state(new, self._applied, self._head))
        self._written_at = time.monotonic()
        if new != self._phase:
            self._log.info("phase", phase=str(new))
        self._phase = new
        self._persisted_head = self._head

    def _errored(self, exc: BaseException) -> None:
        """Record ERRORED with the reason and hint on a fresh connection (the current one may be broken)."""
        self._log.error("stopped", error=_message(exc), hint=_hint(exc), kind=type(exc).__name__)
        self._phase = Phase.ERRORED
        try:
            with pg.connect(self.dsn, autocommit=True, connect_timeout=self.config.target.connect_timeout_s) as conn:
                state_store = StateStore(conn, self.state_schema)
                state_store.ensure()
                applied, head = self._applied, self._head
                recorded = None if self._chain_head() is not None else state_store.read_phase()
                if recorded is not None:  # refused before resuming: keep what the row says was applied and seen
                    applied, head = max(applied, recorded.applied_seq), max(head, recorded.head_seq)
                state_store.write_phase(
                    self._state(
                        Phase.ERRORED,
                        applied,
                        head,
                        reason=_message(exc)[:2000],
                        hint=_hint(exc)[:2000],
                        retryable=False,
                    ),
                )
        except Exception as inner:  # the original error matters more than this bookkeeping
            self._log.warning("could not record ERRORED in the target", error=str(inner))

    def _prune(self, pruner: Pruner, live: ApplySession) -> None:
        """Ask the pruner to delete journal rows up to what PostgreSQL has committed (and anchor it)."""
        pruner.request(self._applied, integrity.anchor_for(live.prev, self._root))
        if pruner.error is not None:
            raise pruner.error

    def _stalled_for(self) -> float:
        """Seconds without progress while entries wait (0 when none wait): the metrics' stall measure."""
        return time.monotonic() - self._progress_at if self._head > self._applied else 0.0

    def _checkpoint_at(self) -> float | None:
        """When the chain head this daemon knows was written (UNIX time); None before it read one."""
        prev = self._chain_head()
        return None if prev is None else dt.datetime.fromisoformat(prev.at).timestamp()

    def _chain_head(self) -> Checkpoint | None:
        """The chain head this daemon knows: the live session's, else the last one's; None before any start."""
        return self._session.prev if self._session is not None else self._known

    def _journal_reading(self, read: Callable[[sqlite3.Connection], T]) -> Callable[[], T]:
        """``read`` on a connection of its own (metrics are read in the HTTP server's thread), which
        waits for no lock longer than a scrape can afford."""

        def reading() -> T:
            conn = sqlite_source.connect(self.source, readonly=True, busy_timeout_ms=SCRAPE_BUSY_MS, check=False)
            try:
                return read(conn)
            finally:
                conn.close()

        return reading

    def _account(self, batch: Batch, applied: Applied, seconds: float) -> None:
        self._batches += 1
        self._changes += batch.entries
        if self.metrics is not None:
            self.metrics.observe_batch(batch.entries, seconds, batch.head - batch.seq_to, self._lag.lag_s(batch.seq_to))

    # --- resources ------------------------------------------------------------------------------

    def _close_pg(self) -> None:
        live, self._session = self._session, None
        if live is not None:
            self._known = live.prev
            live.close()
        conn, self._pconn = self._pconn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _connected(self, *, readonly: bool) -> contextlib.closing[sqlite3.Connection]:
        """A connection to the source, closed on the way out: read-only for every read; the read-write one is
        used only to prune the journal and reinstall triggers."""
        return contextlib.closing(self._open_source(readonly=readonly))

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        handle = lock.open_lock_file(self.source)
        try:
            if not lock.try_flock(handle):
                raise WorkerError(
                    f"another replicator run holds {lock.lock_path(self.source)}",
                    hint="only one daemon may apply a source; stop the other one first",
                )
            lock.write_holder(handle)  # who to ask for a hand-over (cutover)
            try:
                yield
            finally:
                lock.clear_holder(handle)
        finally:
            handle.close()

    @contextlib.contextmanager
    def _serving(self) -> Iterator[None]:
        """The /metrics endpoint (``metrics.port``), bound once the lock is ours: a second daemon is
        refused as one, never as a port clash; a port taken by anything else is one line, exit 2."""
        if self.metrics is None or self.config.metrics.port is None:
            yield
            return
        stop = self.metrics.serve(self.config.metrics.port, self.config.metrics.host)
        try:
            yield
        finally:
            stop()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT request a stop; only the main thread may install handlers (tests run us in threads).

        A handler runs in the main thread between two bytecodes, wherever it is: it only records the signal
        and sets the stop event. It must not log: a log line written while the main thread was inside the
        logger's own write (holding its lock) deadlocked the daemon, deaf to every later SIGTERM (seen in
        test_sigterm_mid_stream_exits_zero). The loop logs the stop once it has finished its batch."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            self._signalled = signal.Signals(signum).name
            self.stop()

        def hand_over(_signum: int, _frame: FrameType | None) -> None:
            self.handed_over = True
            self.stop()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[lock.HANDOVER_SIGNAL] = signal.signal(lock.HANDOVER_SIGNAL, hand_over)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def run(
    source: Path,
    dsn: str,
    config: Config,
    *,
    once: bool = False,
    until_drained: bool = False,
    metrics: Metrics | None = None,
) -> RunResult:
    """``replicator run``: the library entry point the CLI calls.

    A cutover started while this daemon runs asks it for its locks
    (:data:`~replicator.state.lock.HANDOVER_SIGNAL`): the daemon finishes its batch, releases them, waits for
    the cutover to end, and starts again, which either resumes streaming (the cutover aborted) or finds the
    target cut over and returns (the CLI exits 0).
    """
    if not Path(source).exists():
        raise UsageError(f"source {source} does not exist", hint="pass --source path/to/app.db")
    if threading.current_thread() is threading.main_thread():  # a hand-over asked for before the loop runs
        signal.signal(lock.HANDOVER_SIGNAL, signal.SIG_IGN)  # must not kill us (its default action)
    while True:
        worker = Worker(Path(source), dsn, config, metrics=metrics)
        result = worker.run(once=once, until_drained=until_drained)
        if not worker.handed_over or not wait_for_cutover(Path(source)):
            return result
