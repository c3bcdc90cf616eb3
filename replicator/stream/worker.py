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
advisory lock keyed by the capture's source id held by the apply connection.

Two helper threads keep PostgreSQL busy without changing any of the above: the
:class:`~replicator.stream.prefetch.Prefetcher` reads batch N+1 (its own read transaction, its own
connection) while batch N is applied, and the :class:`~replicator.stream.prune.Pruner` deletes journal rows
behind the apply. The loop's thread alone writes to PostgreSQL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import signal
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Final, TypeVar

import msgspec
import psycopg
from psycopg import sql
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from checkpoints import ledger, store
from checkpoints.errors import CheckpointError
from checkpoints.model import Checkpoint, Kind, TableChange, genesis, next_checkpoint
from replicator import faults, log, pg
from replicator.apply import batch as apply
from replicator.apply import dependents
from replicator.config import Config
from replicator.errors import ReplicatorError, UsageError, is_transient_pg
from replicator.load import resnapshot, snapshot
from replicator.plan import pgreflect, pgschema, skips, typemap
from replicator.state import integrity, lock, phase, stateschema
from replicator.state import schema as state
from replicator.state.phase import ApplyState, Phase
from replicator.stream.metrics import SCRAPE_BUSY_MS, Metrics
from replicator.stream.prefetch import Prefetcher
from replicator.stream.prune import Pruner
from triggers import drift, fence, journal
from triggers import source as sqlite_source
from triggers.errors import CaptureError, CaptureNotInstalled
from triggers.install import Meta, TableCapture, install_on, read_meta
from triggers.watch import Watcher

RATE_WINDOW_S = 10.0
SWITCH_INTERVAL_S = 0.001
"""The daemon's GIL switch interval: the reader and digest threads must not keep the loop's thread,
back from a PostgreSQL round trip, waiting the default 5 ms for the GIL at every statement."""


HEARTBEAT_MAX_S = 10.0
"""An idle daemon rewrites its phase row at least this often (and at least four times per
``status.stall_after_s``), so ``status`` tells an idle daemon from a stalled one by the row's age."""


class WorkerError(ReplicatorError):
    """A terminal condition the loop stops on (phase ERRORED)."""


class AlreadyCutOver(WorkerError):
    """The chain ends in a cutover checkpoint: replication is finished, nothing may be applied.

    Not an ERRORED condition: the phase stays DONE, so ``status`` keeps telling the truth. ``run``
    exits 0 when the SQLite file is fenced as the cutover left it, so that a service manager with
    ``Restart=on-failure`` leaves the daemon down after the window; 2 when it is writable again.
    """

    exit_code = 2


class CutoverUnfinished(WorkerError):
    """SQLite is fenced but the chain has no cutover checkpoint: a cutover died between its two commits."""

    exit_code = 2


class SchemaMoved(WorkerError):
    """A batch read failed because the schema changed after this cycle's drift check: the next cycle sees it."""

    transient = True


class WrongSource(UsageError):
    """The target was loaded from another SQLite file: this run is refused, the target stays healthy."""


#: Refusals about *this invocation*, not the replication: they must not mark the target ERRORED
#: (the daemon that really owns the target may be fine and resume at any time).
REFUSALS = (AlreadyCutOver, CutoverUnfinished, WrongSource)


class RunResult(msgspec.Struct, frozen=True):
    batches: int
    changes: int
    applied_seq: int
    head_seq: int
    phase: Phase


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ReplicatorError | CaptureError):
        return exc.transient
    if isinstance(exc, psycopg.Error):
        return is_transient_pg(exc)
    return False


T = TypeVar("T")


def at_edge(open_: Callable[[], T], max_wait_s: float) -> T:
    """Open a resource, retrying transient failures (SQLite busy, connection refused) with capped
    exponential backoff and jitter: tenacity at the I/O edges only, the predicate the transient flag."""
    for attempt in Retrying(
        retry=retry_if_exception(_transient),
        wait=wait_random_exponential(multiplier=0.2, max=max_wait_s),
        stop=stop_after_delay(max_wait_s * 4),
        reraise=True,
    ):
        with attempt:
            try:
                return open_()
            except sqlite3.Error as exc:
                raise sqlite_source.translate(exc, "source") from exc
    raise AssertionError("unreachable")


def _hint(exc: BaseException) -> str:
    return str(getattr(exc, "hint", "")) or "see the log above; fix the cause and run again"


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "")) or str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


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
        self._log = log.get("worker", source=str(self.source))
        self._lag = journal.LagTracker()
        self._rate: deque[tuple[float, int]] = deque()
        self._phase = Phase.INIT
        self._errors = 0
        self._changes = 0
        self._batches = 0
        self._skip_reasons: dict[str, str] = skips.skipped(config, None, config.types)
        self._skipped = frozenset(self._skip_reasons)
        self._held = {}
        """Tables the migration leaves out (:mod:`replicator.plan.skips`): their journal entries are passed over."""
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
        with self._signals(), self._file_lock(), self._serving(), self._source() as sconn, self._writer_conn() as wconn:
            meta = read_meta(sconn)
            if meta is None:
                raise CaptureNotInstalled(
                    f"capture is not installed in {self.source}",
                    hint="run `replicator capture install --source ...` first, then `replicator run`",
                )
            self._meta = meta
            self._sconn, self._wconn = sconn, wconn
            watcher = at_edge(lambda: Watcher(self.source, self.config.apply.poll_interval_s), self._max_wait)
            self._pruner = Pruner(
                lambda: self._open_source(readonly=False),
                idle_s=self.config.apply.prune_idle_s,
                max_rows=self.config.apply.prune_max_rows,
            )
            self._prefetch = Prefetcher(self._open_source(readonly=True))
            try:
                return self._loop(watcher, once=once, until_drained=until_drained)
            finally:
                self._prefetch.close()
                self._pruner.close()
                watcher.close()
                self._close_pg()

    # --- the loop -------------------------------------------------------------------------------

    def _loop(self, watcher: Watcher, *, once: bool, until_drained: bool) -> RunResult:
        failing: BaseException | None = None
        attempt = 0
        while not self._stop.is_set():
            try:
                if self._pconn is None:
                    self._start()
                progressed, drained = self._cycle()
                if failing is not None:
                    self._log.info("recovered", after_errors=attempt, error=_message(failing))
                    failing, attempt = None, 0
                if once or (until_drained and drained):
                    break
                if not progressed:
                    self._idle(watcher)
            except Exception as raw:
                self._prefetch.discard()
                exc = sqlite_source.translate(raw, self.source) if isinstance(raw, sqlite3.Error) else raw
                if not _transient(exc):
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
        return RunResult(self._batches, self._changes, self._applied, self._head, self._phase)

    def _cycle(self) -> tuple[bool, bool]:
        """One pass: drift, one batch, checkpoint, prune. Returns (applied something, drained)."""
        if self._check_drift():
            self._prefetch.discard()  # read with the old tables' shape
        if set(self._pending) - set(self._held):  # after the drift check: the reloads read SQLite with the
            self._prefetch.discard()  # triggers back in place
            self._reload_pending()
        started = time.perf_counter()
        try:
            batch = self._prefetch.take(self._applied) or self._read(self._sconn, self._applied)
        except SchemaMoved:  # e.g. DROP COLUMN between the drift check and the read: check again at once
            self._prefetch.discard()
            return True, False
        if not batch.empty:  # read the next batch while PostgreSQL applies this one
            self._prefetch.start(lambda conn: self._read(conn, batch.seq_to), batch.seq_to)
        journal.check_head(batch.head, self._applied, seen=self._head)  # the journal never goes back
        self._head = batch.head
        self._lag.observe(batch.head)
        if batch.empty:
            self._progress_at = time.monotonic()
            self._set_phase(Phase.STREAMING)
            return False, True
        bound = self._log.bind(seq_from=batch.seq_from, seq_to=batch.seq_to)
        next_phase = Phase.CATCHUP if batch.head > batch.seq_to else Phase.STREAMING
        applied = self._writer.write_batch(batch, self._prev, extra=self._record(batch, next_phase))
        faults.point("apply.after_commit")
        self._prev = applied.checkpoint
        self._applied = batch.seq_to
        self._phase = next_phase
        self._progress_at = self._written_at = time.monotonic()
        self._prune()
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

    def _read(self, conn: sqlite3.Connection, after: int) -> apply.Batch:
        """One batch; held tables' entries pass by unapplied like skipped ones (their reload is owed)."""
        cfg = self.config.apply
        ignore = self._skipped | frozenset(self._held)
        try:
            return apply.read_batch(
                conn, after, self._targets, max_rows=cfg.batch_rows, max_bytes=cfg.batch_bytes, ignore=ignore
            )
        except sqlite3.OperationalError:
            if drift.schema_version(conn) == self._mark.version:
                raise
            raise SchemaMoved("the SQLite schema changed under the batch read", hint="checked again at once") from None

    def _idle(self, watcher: Watcher) -> None:
        """Wait for the next commit in SQLite, waking at least every poll interval to see a stop."""
        deadline = time.monotonic() + self.config.apply.poll_interval_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            if watcher.wait(min(0.2, self.config.apply.poll_interval_s)):
                return

    # --- start-up -------------------------------------------------------------------------------

    def _refuse_after_cutover(self, prev: Checkpoint | None) -> None:
        """A cut-over target applies nothing; say which of the two cutover states it is in, truthfully."""
        fenced = bool(fence.status(self.source, busy_timeout_ms=self.config.source.busy_timeout_ms).tables)
        if prev is not None and prev.kind is Kind.CUTOVER:
            if fenced:
                error = AlreadyCutOver(
                    f"this target was cut over at {prev.at} (checkpoint {prev.number}): replication is finished "
                    "and the old SQLite file is fenced",
                    hint="nothing to run; `replicator certificate` shows the cutover, `replicator rollback` goes back",
                )
                error.exit_code = 0
                raise error
            raise AlreadyCutOver(
                f"this target was cut over at {prev.at} (checkpoint {prev.number}), and the SQLite file is "
                "writable again (rolled back or unfenced): nothing more is applied to this target",
                hint="to migrate again: `replicator snapshot --replace`, then `replicator run`",
            )
        if prev is not None and fenced:
            raise CutoverUnfinished(
                f"{phase.INTERRUPTED_BETWEEN_COMMITS}: the SQLite file is fenced but PostgreSQL has no cutover "
                "checkpoint, so nothing is left to replicate",
                hint=phase.FINISH_HINT,
            )

    def _start(self) -> None:
        """Connect, take the advisory lock, snapshot if needed, resolve tables, resume from the head."""
        conn = self._connect()
        self._pconn = conn
        self._lock_target(conn)
        pgreflect.warm()
        stateschema.ensure(conn, self.state_schema)
        prev = self._latest(conn)
        self._refuse_after_cutover(prev)
        if prev is None:
            self._set_phase(Phase.SNAPSHOT)
            prev = self._snapshot_first(conn)
        else:
            self._check_same_source(conn)
            self._check_integrity(conn, prev)
        self._root = integrity.chain_root(conn, self.state_schema) or prev.hash
        plan = self._plan(conn)
        self._plan_obj = plan
        self._update_skips(conn, force=True)
        self._targets, problems = apply.resolve_targets(plan, self._meta, self._skipped)
        problems = self._fatal(problems)
        if problems:
            with conn.transaction():
                for name, why in problems.items():
                    apply.set_table_error(conn, self.state_schema, name, name, why, "see the message")
            listed = "; ".join(f"{n} {why}" for n, why in sorted(problems.items()))
            raise WorkerError(f"cannot apply table(s): {listed}", hint="fix the capture policy or the plan, then rerun")
        fk = apply.fk_mode(conn)
        if fk == "parked":
            parked = apply.park_foreign_keys(
                conn, self.state_schema, plan.schema, [t.target for t in self._targets.values()]
            )
            if parked:
                self._log.warning("foreign keys parked until cutover (no privilege for replica role)", fks=parked)
        with conn.transaction():
            seeded = apply.seed_digests(conn, self.state_schema, self._targets)
            prev = self._restate(conn, prev, seeded)
            # errors recorded by an earlier run are re-raised by this run's first drift check if still true
            apply.clear_table_errors(conn, self.state_schema)
        if seeded:
            self._log.info("running digests seeded from the target", tables=seeded)
        self._writer = apply.Writer(
            conn,
            self._targets,
            state_schema=self.state_schema,
            fk=fk,
            on_bad_value=self.config.snapshot.on_bad_value,
            source=self._sconn,
            plan=self._plan_obj,
        )
        self._prev = prev
        self._applied = prev.seq_to
        self._mark = drift.SchemaMark(-1, "")
        self._pending = resnapshot.pending(conn, self.state_schema)
        self._held = {}  # tried again at every start (the hint says: fix it, then restart)
        if self._pending:
            self._log.warning("an interrupted online re-snapshot is redone", tables=sorted(self._pending))
        self._log.info(
            "resuming", checkpoint=prev.number, applied_seq=prev.seq_to, fk_mode=fk, tables=len(self._targets)
        )
        self._prune()

    def _restate(self, conn: psycopg.Connection[Any], prev: Checkpoint, seeded: list[str]) -> Checkpoint:
        """Tables whose running checksum was just seeded by reading PostgreSQL: where that reading differs from
        what the chain adds up to (the snapshot's checksum reads some types otherwise), a checkpoint restates
        them (``read``: same rows, so the count must agree), and the chain keeps adding up (checkpoints.ledger)."""
        if not seeded or prev.kind is Kind.CUTOVER:
            return prev
        book = ledger.add_up(store.iter_records(conn, schema=self.state_schema))
        running = apply.read_digests(conn, self.state_schema, seeded)
        changes = {
            name: TableChange(upserted=rows, upserted_digest=digest, restated="read")
            for name, (rows, digest) in sorted(running.items())
            if (f := book.tables.get(name)) is None or (f.rows, f.digest) != (rows, digest)
        }
        if not changes:
            return prev
        cp = next_checkpoint(prev, seq_to=prev.seq_to, tables=changes)
        store.append(conn, cp, self.state_schema)
        self._log.info("checksums restated in the chain", tables=sorted(changes), checkpoint=cp.number)
        return cp

    def _check_integrity(self, conn: psycopg.Connection[Any], prev: Checkpoint) -> None:
        """Refuse to resume on a chain or journal changed by hand (:mod:`replicator.state.integrity`): the
        anchor kept in SQLite, the phase row (read before anything here rewrites it), then the journal
        above the head. The whole segment from the anchor to the head is verified: a start is rare."""
        anchor = integrity.read_anchor(self._sconn)
        recorded = integrity.for_chain(conn, self.state_schema, phase.read(conn, self.state_schema))
        integrity.refuse(integrity.chain_findings(conn, self.state_schema, anchor=anchor, state=recorded, head=prev))
        with journal.read_transaction(self._sconn):
            journal.check_range(self._sconn, prev.seq_to, seen=recorded.head_seq if recorded else 0)

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

    def _lock_target(self, conn: psycopg.Connection[Any]) -> None:
        """Take the advisory lock (with :func:`~replicator.state.lock.take_lock`'s grace for a daemon that
        has just exited)."""
        if lock.take_lock(conn, self._meta.source_id, stop=self._stop):
            return
        raise WorkerError(
            f"another replicator is already applying source {self._meta.source_id} to this target",
            hint="stop the other `replicator run` (see pg_stat_activity, application_name=replicator) first",
        )

    def _check_same_source(self, conn: psycopg.Connection[Any]) -> None:
        """Refuse to apply this file's journal to a target loaded from another file (its positions mean nothing)."""
        if conn.execute("SELECT to_regclass(%s)", (f"{self.state_schema}.runs",)).fetchone() == (None,):
            return
        row = conn.execute(
            sql.SQL(
                "SELECT source_path, source_id FROM {}.runs WHERE command = 'snapshot' AND status = 'ok' "
                "ORDER BY id DESC LIMIT 1"
            ).format(sql.Identifier(self.state_schema))
        ).fetchone()
        if row is None:
            return
        ours = {f"capture:{self._meta.source_id}", state.source_identity(self.source).id}
        if str(row[1]) not in ours:
            raise WrongSource(
                f"the target was loaded from another source file: {row[0]} (id {row[1]}); "
                f"this is {self.source} (capture source id {self._meta.source_id})",
                hint="run against the file the target was snapshotted from, "
                "or reload the target from this one with `replicator snapshot --replace`",
            )

    def _latest(self, conn: psycopg.Connection[Any]) -> Checkpoint | None:
        try:
            return store.latest(conn, schema=self.state_schema)
        except CheckpointError as exc:
            if "there is no checkpoint table" in exc.message:
                return None
            raise

    def _snapshot_first(self, conn: psycopg.Connection[Any]) -> Checkpoint:
        """No genesis: load the snapshot now, in one SQLite read transaction with the journal head."""
        identity = state.source_identity(self.source)
        sconn = snapshot.open_source(self.source, self.config)
        try:
            head = journal.head(sconn)  # same read transaction as every row the snapshot loads
            retry = state.last_snapshot_mode(conn, self.state_schema) is not None
            self._log.info("no snapshot in the target: taking it first", journal_head=head, replace=retry)
            result = snapshot.snapshot_from(sconn, identity, self.dsn, self.config, replace=retry)
        finally:
            sconn.close()
        assert result.plan is not None
        with conn.transaction():
            apply.save_plan(conn, self.state_schema, result.plan)
            existing = self._latest(conn)
            if existing is not None:  # the snapshot stage wrote its own genesis
                return existing
            left_out = skips.skipped(self.config, result.plan, self._meta.tables)
            targets, _ = apply.resolve_targets(result.plan, self._meta, left_out)
            tables = {}
            for name, t in targets.items():
                digest = apply.table_digest_of(conn, t)
                tables[name] = TableChange.of(digest)
            cp = genesis(tables, seq_to=head)
            store.append(conn, cp, self.state_schema)
            faults.point("snapshot.after_genesis")
        return cp

    def _plan(self, conn: psycopg.Connection[Any]) -> pgschema.SchemaPlan:
        """The plan the snapshot loaded with; rebuilt from the target (and saved) when none was kept."""
        plan = apply.load_plan(conn, self.state_schema)
        if plan is not None:
            return plan
        self._sconn.execute("BEGIN")
        try:
            read = snapshot.read_source(self._sconn)
        finally:
            self._sconn.execute("COMMIT")
        plan = pgschema.plan_existing(
            read.schema, pgreflect.reflect(conn, self.config.target.schema), read.profiles, self.config
        )
        plan = dependents.with_foreign_keys(plan, conn, read.schema, self.state_schema)
        with conn.transaction():
            apply.save_plan(conn, self.state_schema, plan)
        self._log.warning(
            "no saved plan: mapped the target tables by name",
            hint="the snapshot stage should save its plan (replicator.apply.batch.save_plan) so formats match exactly",
        )
        return plan

    # --- drift ----------------------------------------------------------------------------------

    def _check_drift(self) -> bool:
        """Every cycle: one PRAGMA, unless the schema moved; then act per table, loudly, or stop."""
        found = drift.check(self._sconn, self._mark)
        self._mark = found.mark
        if not found.changed:
            return False
        if not found.installed:
            raise WorkerError("the capture was removed from the source", hint="install it again and re-snapshot")
        meta = read_meta(self._sconn)  # `capture install` may have run meanwhile
        if meta is not None:
            self._meta = meta
        self._update_skips(self._pconn_or_fail(), found.new_tables)
        reload: dict[str, str] = {}
        refresh = [t.table for t in found.tables if self._table_drift(t, reload)]
        left_out = self._new_tables(found.new_tables, reload)
        if reload:  # owed durably before the reinstall hides the drift (ordering: replicator.load.resnapshot)
            assert self._pconn is not None
            with self._pconn.transaction():
                resnapshot.mark(self._pconn, self.state_schema, reload.items())
            self._pending.update(reload)
            faults.point("resnapshot.after_pending")
        if reload or refresh or any(t.needs_reinstall for t in found.tables) or set(found.new_tables) - set(left_out):
            report = install_on(
                self._wconn,
                default_policy=self.config.capture.no_key_policy,
                policies=self.config.capture.tables,
                path=self.source,
                stamp_time=any(c.stamp_time for c in self._meta.tables.values()),
                exclude=left_out,
            )
            self._log.warning("capture triggers reinstalled", changed=list(report.changed))
            meta = read_meta(self._sconn)
            assert meta is not None
            self._meta = meta
            self._mark = drift.mark(self._sconn)
            faults.point("resnapshot.after_reinstall")
        return True

    def _table_drift(self, t: drift.TableDrift, reload: dict[str, str]) -> bool:
        """Fail the table, or add it to ``reload`` (table → reason) for an online re-snapshot. True: only the
        capture record is behind (the plan already has the table's new columns): reinstall to refresh it."""
        name = t.table
        if t.dropped or t.renamed_to is not None:
            what = "dropped" if t.dropped else f"renamed to {t.renamed_to!r}"
            self._fail_table(
                name,
                f"table {name!r} was {what} in SQLite",
                "drop or rename it in PostgreSQL to match, "
                "reinstall capture and re-snapshot (replicator snapshot --replace); never silently skipped",
            )
        sources = self._planned_sources(name)  # none: not applied (skipped, or not picked up yet): nothing to follow
        renamed = [(a, b) for a, b in t.columns_renamed if sources and (a in sources or b not in sources)]
        if renamed:
            cols = ", ".join(f"{a}->{b}" for a, b in renamed)
            self._fail_table(
                name,
                f"columns of {name!r} were renamed in SQLite: {cols}",
                "rename them in PostgreSQL too (existing mode), then "
                f"`replicator snapshot --replace --tables {name}` and restart `replicator run`",
            )
        dropped = [c for c in t.columns_dropped if c in sources]
        if dropped:
            self._drop_columns(name, dropped)
            reload[name] = f"{resnapshot.COLUMNS_DROPPED}: " + ", ".join(dropped)
        if t.columns_added and sources:
            self._add_columns(name, t.columns_added)
            reload[name] = "column(s) added: " + ", ".join(t.columns_added)
        if t.needs_resnapshot and name not in reload:
            self._log.warning(
                "table lost journal coverage: re-snapshotting it online",
                table=name,
                triggers_missing=t.triggers_missing,
                key_changed=t.key_changed,
            )
            reload[name] = "lost journal coverage"
        return bool(t.columns_added or t.columns_dropped or t.columns_renamed) and name not in reload

    def _planned_sources(self, table: str) -> set[str]:
        """The table's SQLite columns the plan loads (none for a table the plan lacks)."""
        try:
            return {c.source for c in self._plan_obj.table(table).columns if c.source is not None}
        except KeyError:
            return set()

    def _drop_columns(self, table: str, columns: list[str]) -> None:
        """DROP COLUMN, followed online. Create mode (the tool owns the PostgreSQL table): dropped there too
        and the plan saved without them, in one transaction. Existing mode (the app's migration owns it): the
        owed reload maps the table again first (:meth:`_reload_pending`). Either way the table is reloaded:
        its running digest covers the remaining columns only."""
        if self._plan_obj.mode != "create":
            return
        reason = f"{resnapshot.COLUMNS_DROPPED}: " + ", ".join(columns)
        old = self._plan_obj.table(table)
        gone = [c for c in old.columns if c.source in columns]
        ident = sql.Identifier(self._plan_obj.schema, old.name)
        new_table = msgspec.structs.replace(old, columns=tuple(c for c in old.columns if c.source not in columns))
        pconn = self._pconn_or_fail()
        with pconn.transaction():
            for col in gone:
                pconn.execute(
                    sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(ident, sql.Identifier(col.name))
                )
            self._plan_obj = msgspec.structs.replace(
                self._plan_obj, tables=tuple(new_table if t.source == table else t for t in self._plan_obj.tables)
            )
            apply.save_plan(pconn, self.state_schema, self._plan_obj)
            # owed in the same commit: after it the plan lacks the columns, and a restart could not tell
            # this table's (stale) running digest from one `snapshot --replace --tables` already renewed
            resnapshot.mark(pconn, self.state_schema, [(table, reason)])
        self._pending[table] = reason
        self._log.warning("column(s) dropped in PostgreSQL", table=table, columns=[c.name for c in gone])
        self._rebuild_writer()

    def _new_tables(self, new: tuple[str, ...], reload: dict[str, str]) -> list[str]:
        """Tables created in SQLite after the snapshot (and captured tables the plan lacks, after a manual
        `capture install`): each is planned (create mode: created) and its load owed in ``reload``, like a
        rebuilt table's (:mod:`replicator.load.resnapshot`); or it is left uncaptured with its error in status
        (cutover refuses while it is). Returns the tables left out. Skipped tables (:mod:`replicator.plan.skips`:
        by config, or an ORM's migration table in existing mode) stay skipped: captured like at install,
        their journal entries consumed, never applied."""
        cfg = self.config.capture
        planned = {t.source for t in self._plan_obj.tables}
        unplanned = sorted(n for n in self._meta.tables if n not in planned and n not in self._skipped)
        fresh = [n for n in new if n not in self._skipped]
        decisions: dict[str, TableCapture | str] = {
            **{n: self._meta.tables[n] for n in unplanned},
            **drift.new_table_captures(self._sconn, fresh, default_policy=cfg.no_key_policy, policies=cfg.tables),
        }
        left_out: list[str] = []
        for name, decision in decisions.items():
            problem: resnapshot.NotAdopted | None = None
            if isinstance(decision, str):
                problem = resnapshot.NotAdopted(
                    f"new table {name!r} {decision}: not captured (capture.no_key_policy is 'refuse')",
                    hint=f"add a primary key to it, or set capture.tables.{name} (or capture.no_key_policy) to "
                    "'snapshot-only'; then restart `replicator run`",
                )
            elif decision.mode == "rowid":
                problem = resnapshot.NotAdopted(
                    f"new table {name!r} {decision.note.split(';')[0] or 'has no usable key'}: captured by rowid, "
                    "which PostgreSQL has no column for",
                    hint=f"add a primary key to it, or set capture.tables.{name} = 'snapshot-only'; "
                    "then restart `replicator run`",
                )
            else:
                try:
                    self._plan_obj = resnapshot.adopt(
                        self._pconn_or_fail(),
                        self._sconn,
                        plan=self._plan_obj,
                        table=name,
                        config=self.config,
                        state_schema=self.state_schema,
                    )
                except resnapshot.NotAdopted as exc:
                    problem = exc
            if problem is None:
                assert not isinstance(decision, str)
                reload[name] = resnapshot.NEW_TABLE + (" (snapshot-only)" if decision.mode == "snapshot-only" else "")
                self._log.warning("new table in SQLite: picking it up online", table=name, capture=decision.mode)
            elif name in unplanned:  # captured already: its journal entries would have nowhere to go
                self._fail_table(name, f"captured table not in the plan: {problem.message}", problem.hint)
            else:
                self._table_error(name, name, problem.message, problem.hint)
                self._log.error(
                    "new table in SQLite is not applied", table=name, error=problem.message, hint=problem.hint
                )
                left_out.append(name)
        return left_out

    def _update_skips(self, conn: psycopg.Connection[Any], new: Iterable[str] = (), *, force: bool = False) -> None:
        """Which captured (or ``new``) tables the migration leaves out; recorded for status when that changed."""
        reasons = skips.skipped(self.config, self._plan_obj, {*self._meta.tables, *self.config.types, *new})
        if reasons == self._skip_reasons and not force:
            return
        with conn.transaction():
            skips.record(conn, self.state_schema, reasons)
        captured = sorted(n for n in reasons if n in self._meta.tables)
        if captured:
            self._log.info("skipped tables: their journal entries are consumed, never applied", tables=captured)
        self._skip_reasons, self._skipped = reasons, frozenset(reasons)

    def _fatal(self, problems: dict[str, str]) -> dict[str, str]:
        """Problems that stop the apply: a captured table the plan lacks is picked up by the drift check."""
        planned = {t.source for t in self._plan_obj.tables} if hasattr(self, "_plan_obj") else set()
        return {n: why for n, why in problems.items() if n in planned}

    def _pconn_or_fail(self) -> psycopg.Connection[Any]:
        assert self._pconn is not None
        return self._pconn

    def _table_error(self, table: str, target: str, message: str, hint: str) -> None:
        """Record a table's error for status (a table in error never disappears from it)."""
        with self._pconn_or_fail().transaction():
            apply.set_table_error(self._pconn_or_fail(), self.state_schema, table, target, message, hint)

    def _fail_table(self, table: str, message: str, hint: str) -> None:
        target = self._targets[table].target if table in self._targets else table
        self._table_error(table, target, message, hint)
        raise WorkerError(message, hint=hint)

    def _add_columns(self, table: str, columns: tuple[str, ...]) -> None:
        """ADD COLUMN: create mode adds it in PostgreSQL (then the table is re-snapshotted); existing mode stops."""
        if self._plan_obj.mode != "create":
            self._fail_table(
                table,
                f"column(s) {', '.join(columns)} added to {table!r} in SQLite",
                f"add them to {self._targets[table].target if table in self._targets else table} in "
                "PostgreSQL (the app's migration), then restart `replicator run`",
            )
        assert self._pconn is not None
        self._sconn.execute("BEGIN")
        try:
            read = snapshot.read_source(self._sconn)
        finally:
            self._sconn.execute("COMMIT")
        fresh = pgschema.plan_create(read.schema, read.profiles, self.config).table(table)
        old = self._plan_obj.table(table)
        have = {c.name for c in old.columns}
        added = [c for c in fresh.columns if c.name not in have]
        with self._pconn.transaction():
            for col in added:
                self._pconn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        sql.Identifier(self._plan_obj.schema, old.name),
                        sql.Identifier(col.name),
                        typemap.render(col.type),
                    )
                )
            new_table = msgspec.structs.replace(old, columns=old.columns + tuple(added))
            self._plan_obj = msgspec.structs.replace(
                self._plan_obj, tables=tuple(new_table if t.source == table else t for t in self._plan_obj.tables)
            )
            apply.save_plan(self._pconn, self.state_schema, self._plan_obj)
        self._log.warning("column(s) added in PostgreSQL", table=table, columns=[c.name for c in added])
        self._rebuild_writer()

    def _rebuild_writer(self) -> None:
        assert self._pconn is not None
        self._targets, problems = apply.resolve_targets(self._plan_obj, self._meta, self._skipped)
        problems = self._fatal(problems)
        if problems:
            raise WorkerError("; ".join(f"{n} {w}" for n, w in problems.items()), hint="fix the capture policy")
        self._writer.close()
        self._writer = apply.Writer(
            self._pconn,
            self._targets,
            state_schema=self.state_schema,
            fk=self._writer.fk,
            on_bad_value=self.config.snapshot.on_bad_value,
            source=self._sconn,
            plan=self._plan_obj,
        )

    def _reload_pending(self) -> None:
        """Redo every owed table reload (see :mod:`replicator.load.resnapshot`), each in one PostgreSQL transaction."""
        assert self._pconn is not None
        conn = self._pconn
        self._rebuild_writer()
        planned = {t.source for t in self._plan_obj.tables}
        for table, reason in list(self._pending.items()):
            target = self._targets.get(table)
            cap = self._meta.tables.get(table)
            solo = cap is not None and cap.mode == "snapshot-only" and table in planned and table not in self._skipped
            if target is None and not solo:  # no longer applied (config skips it now): nothing to reload into
                with conn.transaction():
                    resnapshot.clear(conn, self.state_schema, table)
                self._pending.pop(table)
                self._log.warning("owed re-snapshot dropped: the table is not applied", table=table)
                continue
            if table in self._held:
                continue
            if resnapshot.is_columns_dropped(reason) and self._plan_obj.mode != "create" and not self._replan(table):
                continue
            target = self._targets.get(table)
            new = resnapshot.is_new_table(reason)
            done = resnapshot.reload(
                conn,
                source=self.source,
                config=self.config,
                plan=self._plan_obj,
                target=target,
                prev=self._prev,
                fk=self._writer.fk,
                state_schema=self.state_schema,
                table_name=table,
                new_table=new,
            )
            self._prev = done.checkpoint
            self._pending.pop(table)
            self._log.warning(
                "new table picked up online" if new else "table re-snapshotted online",
                table=table,
                reason=reason,
                rows=done.rows,
                checkpoint=done.checkpoint.number,
                **({"refused": list(done.warnings)} if done.warnings else {}),
            )

    def _replan(self, table: str) -> bool:
        """Existing mode, before the reload owed for a DROP COLUMN: map the table again onto PostgreSQL. While
        PostgreSQL still has the column the table is held (its journal entries pass by unapplied, the reload
        stays owed, ``status`` shows the error and the fix); the other tables go on. False: held."""
        conn = self._pconn_or_fail()
        gone = resnapshot.dropped_columns(self._sconn, self._plan_obj, table)
        try:
            self._plan_obj = resnapshot.replan(
                conn, self._sconn, plan=self._plan_obj, table=table, config=self.config, state_schema=self.state_schema
            )
        except resnapshot.NotAdopted as exc:
            message, hint = exc.message, exc.hint
            if gone:
                target = self._plan_obj.table(table).name
                drop = sql.SQL("ALTER TABLE {} ").format(sql.Identifier(self._plan_obj.schema, target)) + sql.SQL(
                    ", "
                ).join(sql.SQL("DROP COLUMN {}").format(sql.Identifier(c.name)) for c in gone)
                cols = ", ".join(c.source or c.name for c in gone)
                message = f"column(s) {cols} dropped from {table!r} in SQLite are still in PostgreSQL: table held"
                hint = (
                    f"run `{drop.as_string(conn)}` in PostgreSQL (existing mode: the app's migration owns its schema), "
                    "then restart `replicator run`; the table is reloaded online"
                )
            self._held[table] = message
            self._table_error(table, self._plan_obj.table(table).name, message, hint)
            self._log.error("table held: not applied until fixed", table=table, error=message, hint=hint)
            return False
        self._log.warning("table mapped again onto PostgreSQL", table=table, dropped=[c.name for c in gone])
        self._rebuild_writer()
        return True

    # --- bookkeeping ----------------------------------------------------------------------------

    def _record(self, batch: apply.Batch, next_phase: Phase) -> Any:
        def record(conn: psycopg.Connection[Any], applied: apply.Applied) -> None:
            phase.write(conn, self.state_schema, self._state(next_phase, batch.seq_to, batch.head, applied.entries))
            skipped = {t: n for t, n in batch.ignored.items() if t in self._skipped}  # not a held table's
            if skipped:
                skips.count_ignored(conn, self.state_schema, skipped, batch.seq_to, self._skip_reasons)

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
            phase.write(conn, self.state_schema, self._state(new, getattr(self, "_applied", 0), self._head))
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
                stateschema.ensure(conn, self.state_schema)
                applied, head = self._applied, self._head
                recorded = None if hasattr(self, "_prev") else phase.read(conn, self.state_schema)
                if recorded is not None:  # refused before resuming: keep what the row says was applied and seen
                    applied, head = max(applied, recorded.applied_seq), max(head, recorded.head_seq)
                phase.write(
                    conn,
                    self.state_schema,
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

    def _prune(self) -> None:
        """Ask the pruner to delete journal rows up to what PostgreSQL has committed (and anchor it)."""
        self._pruner.request(self._applied, integrity.anchor_for(self._prev, self._root))
        if self._pruner.error is not None:
            raise self._pruner.error

    def _stalled_for(self) -> float:
        """Seconds without progress while entries wait (0 when none wait): the metrics' stall measure."""
        return time.monotonic() - self._progress_at if self._head > self._applied else 0.0

    def _checkpoint_at(self) -> float | None:
        """When the chain head this daemon knows was written (UNIX time); None before it read one."""
        prev: Checkpoint | None = getattr(self, "_prev", None)
        return None if prev is None else dt.datetime.fromisoformat(prev.at).timestamp()

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

    def _account(self, batch: apply.Batch, applied: apply.Applied, seconds: float) -> None:
        self._batches += 1
        self._changes += batch.entries
        if self.metrics is not None:
            self.metrics.observe_batch(batch.entries, seconds, batch.head - batch.seq_to, self._lag.lag_s(batch.seq_to))

    # --- resources ------------------------------------------------------------------------------

    _pconn: psycopg.Connection[Any] | None = None
    _prev: Checkpoint
    _writer: apply.Writer
    _targets: dict[str, apply.TableTarget]
    _plan_obj: pgschema.SchemaPlan
    _mark: drift.SchemaMark
    _pending: dict[str, str]
    """Owed table reloads (table → reason), as recorded in PostgreSQL."""
    _held: dict[str, str]
    """Owed reloads that cannot run until the user fixes something (table → why); not applied meanwhile."""
    _meta: Meta
    _sconn: sqlite3.Connection
    _wconn: sqlite3.Connection
    _pruner: Pruner
    _prefetch: Prefetcher
    _head = 0
    _applied = 0
    _persisted_head = -1
    _root = ""
    """Hash of the chain's first record, stored in each anchor (:mod:`replicator.state.integrity`)."""

    def _close_pg(self) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()
        conn, self._pconn = self._pconn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def _source(self) -> Iterator[sqlite3.Connection]:
        conn = self._open_source(readonly=True)
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _writer_conn(self) -> Iterator[sqlite3.Connection]:
        """Read-write connection used only to prune the journal and reinstall triggers."""
        conn = self._open_source(readonly=False)
        try:
            yield conn
        finally:
            conn.close()

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
        """SIGTERM/SIGINT request a stop; only the main thread may install handlers (tests run us in threads)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            self._log.info("signal received: finishing the current batch", signal=signal.Signals(signum).name)
            self.stop()

        def hand_over(_signum: int, _frame: FrameType | None) -> None:
            self._log.info("a cutover asked for the locks: finishing the current batch, then waiting for it")
            self.handed_over = True
            self.stop()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[lock.HANDOVER_SIGNAL] = signal.signal(lock.HANDOVER_SIGNAL, hand_over)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def backoff(attempt: int, cap_s: float) -> float:
    """Capped exponential backoff with jitter: 0.2 s, 0.4 s, 0.8 s... at most ``cap_s``, times U(0.5, 1)."""
    return float(min(cap_s, 0.2 * 2 ** min(attempt - 1, 30)) * random.uniform(0.5, 1.0))


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
        if not worker.handed_over or not _wait_for_cutover(Path(source)):
            return result


HANDOVER_WAIT_S: Final = 60.0
"""How long a daemon that handed over waits for the cutover to take the lock before it resumes."""


def _wait_for_cutover(source: Path) -> bool:
    """After a hand-over: wait until a cutover has held the lock file and let it go. False: stopped by a signal.

    Two phases, so that the daemon does not take its lock straight back before the cutover has it: first
    until someone else holds it (at most :data:`HANDOVER_WAIT_S`: a cutover that never came), then until it
    is free again (the cutover ended, whatever way).
    """
    stop = threading.Event()
    on_signal = _stop_on_signals(stop)
    log_ = log.get("worker", source=str(source))
    try:
        with lock.open_lock_file(source) as handle:
            deadline = time.monotonic() + HANDOVER_WAIT_S
            while not lock.held_elsewhere(handle) and time.monotonic() < deadline:
                if stop.wait(0.05):
                    return False
            log_.info("waiting for the cutover to end")
            while lock.held_elsewhere(handle):
                if stop.wait(0.2):
                    return False
        log_.info("the cutover ended: starting again")
        return True
    finally:
        on_signal()


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT set ``stop`` (main thread only); returns what restores the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {
        s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT, lock.HANDOVER_SIGNAL)
    }

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore
