"""The second core: a spawned helper process that profiles and loads its share of the tables.

On 2 cores the conversion and checksums (Python, one core each) are what bound the snapshot, so a helper
process takes about half the work: whole tables it loads from its own read transaction (why that is exact:
:mod:`replicator.load.snapshot`), part of the profiles, and the batches of a dominant table it converts
(:mod:`replicator.load.share`). Errors come back as data (:class:`_Failure`), progress through a queue.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import queue as queue_module
import sqlite3
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from replicator import log, pg
from replicator.apply import dependents
from replicator.config import Config
from replicator.errors import ReplicatorError, TargetError
from replicator.load import costs as cost_model
from replicator.load import twin as twin_module
from replicator.load.context import LoadContext, LoadRun
from replicator.load.costs import profile_costs, split
from replicator.load.guess import _Unverified, guess_profile
from replicator.load.postload import index_table
from replicator.load.results import TableResult
from replicator.load.source import SourceRead, _profiles, open_source
from replicator.load.table import load_table
from replicator.plan import schemaplan, sequences
from replicator.plan.chunkscan import Chunk, ChunkResult
from replicator.plan.profile import (
    TableProfile,
)
from replicator.progress import Progress
from triggers.schema import read_schema

if TYPE_CHECKING:
    from replicator.load.share import Coprocessor


#: Rowid chunks of dominant tables' profiles one process scanned, per table (None: one was too big).
Scanned = dict[str, list[ChunkResult] | None]


# --- the second core: a helper process that profiles and loads its share of the tables -------------


class _Failure(msgspec.Struct, frozen=True):
    """An error in the helper, carried back as data (our errors' constructors do not all pickle)."""

    kind: str
    message: str
    hint: str
    exit_code: int


_helper_queue: Any = None
_helper_work: Any = None
_helper_results: Any = None


def _init_helper(queue: Any, work: Any, results: Any, fmt: str, level: str) -> None:
    global _helper_queue, _helper_work, _helper_results  # one set per helper process, set once by the pool
    _helper_queue, _helper_work, _helper_results = queue, work, results
    log.configure(fmt, level)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="exit-with-parent", daemon=True).start()


def _exit_with(sentinel: int) -> None:
    """A main process killed outright (SIGKILL, OOM) leaves its helper blocked on a queue nobody
    feeds: the pool's or the shared tables'. It exits too, and PostgreSQL rolls back what it held."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def helper_queues() -> tuple[Any, Any]:
    """In the helper: the shared tables' batches in, their converted blocks out (:mod:`replicator.load.share`)."""
    return _helper_work, _helper_results


class _QueueProgress:
    """Progress events from the helper, relayed to the main process's bars or log lines."""

    def start(self, table: str, total: int) -> None:
        _helper_queue.put(("start", table, total, 0.0))

    def advance(self, table: str, rows: int) -> None:
        _helper_queue.put(("advance", table, rows, 0.0))

    def finish(self, table: str, rows: int, seconds: float) -> None:
        _helper_queue.put(("finish", table, rows, seconds))


def _failure(exc: BaseException) -> _Failure:
    if isinstance(exc, ReplicatorError):
        return _Failure(type(exc).__name__, exc.message, exc.hint, exc.exit_code)
    return _Failure(type(exc).__name__, str(exc), "rerun with -v and report it", 1)


def _raise(failure: _Failure) -> None:
    error = TargetError(failure.message, hint=failure.hint)
    error.exit_code = failure.exit_code
    raise error


class _LoadJob(msgspec.Struct, frozen=True):
    """One table for the helper to load: the run's constants travel whole (:class:`LoadRun`)."""

    path: str
    config: Config
    plan: schemaplan.SchemaPlan
    table: str
    run: LoadRun
    verify: bool = False


#: The _Failure kind of an _Unverified load in the helper (its message: the column).
_UNVERIFIED: Final = "unverified"


def _helper_profile(
    path: str, config: Config, names: list[str], create: bool, chunks: Sequence[Chunk] = ()
) -> tuple[dict[str, TableProfile], Scanned] | _Failure:
    """Profile ``names``, and scan ``chunks`` of dominant tables, in the helper's own read transaction
    (the type choice only; see the module doc)."""
    from replicator.load import share

    try:
        conn = open_source(Path(path), config)
        try:
            schema, create_config = read_schema(conn), config if create else None
            profiles, _ = _profiles(conn, schema, names, create_config, guess=False)
            return profiles, share.scan_chunks(conn, schema, chunks, create_config)
        finally:
            conn.close()
    except Exception as exc:
        return _failure(exc)


def _helper_load(job: _LoadJob) -> TableResult | _Failure:
    """Load one table over the helper's own PostgreSQL connection, from the twin of the main read
    transaction when there is one (:mod:`replicator.load.twin`), else from a read transaction of its own."""
    try:
        twin = twin_module.held()
        sconn = twin if twin is not None else open_source(Path(job.path), job.config)
        try:
            timeout = job.config.target.connect_timeout_s
            with pg.connect(job.config.target.dsn, autocommit=True, connect_timeout=timeout) as pconn:
                ctx = LoadContext(sconn, pconn, job.run, _QueueProgress())
                held = job.run.policy == "quarantine" and job.plan.foreign_keys
                result = load_table(
                    ctx,
                    job.plan,
                    job.plan.table(job.table),
                    verify=job.verify,
                    held=dependents.Held(job.plan) if held else None,
                )
                return index_table(pconn, job.plan, result)
        finally:
            if twin is None:
                sconn.close()
    except _Unverified as exc:
        return _Failure(kind=_UNVERIFIED, message=exc.column, hint="", exit_code=1)
    except Exception as exc:
        return _failure(exc)


def _ready() -> None:
    """Nothing: the first task a helper runs, so that it is started (and imported) early."""


class Helper:
    """One spawned process beside the main one; progress comes back through a queue, and the batches
    of shared tables go and come back through two more (:mod:`replicator.load.share`)."""

    def __init__(self, config: Config, progress: Progress | None) -> None:
        context = multiprocessing.get_context("spawn")
        self.queue = context.Queue()
        self.work = context.Queue()
        self.results = context.Queue()
        self.progress = progress
        self.config = config
        self._coprocessor: Coprocessor | None = None
        self._exiting: threading.Thread | None = None
        level = config.log.level
        fmt = "json" if config.log.format == "auto" and not sys.stderr.isatty() else config.log.format
        self.pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=context,
            initializer=_init_helper,
            initargs=(self.queue, self.work, self.results, fmt, level),
        )
        self.started = self.pool.submit(_ready)  # start the process now: it imports while this one plans
        self.twin = False
        """The helper holds a twin of the main read transaction (:mod:`replicator.load.twin`)."""

    def coprocessor(self, config: Config | None = None) -> Coprocessor:
        """The helper's conversion loop for shared tables, queued after the tasks submitted so far
        (``config``: the run's, with the target's DSN; the first call's is kept)."""
        if self._coprocessor is None:
            from replicator.load.share import Coprocessor

            self._coprocessor = Coprocessor(self, config or self.config)
        return self._coprocessor

    def finish(self) -> None:
        """The main process needs the helper no more: let it exit while the post-load steps run.

        The pool is shut down with ``wait=True`` in a thread of ours that :meth:`close` joins, not with
        ``wait=False``: that leaves the pool's manager thread running unjoined (a later ``shutdown`` no
        longer knows it), and at interpreter exit CPython's atexit hook writes to its wake-up pipe while
        it closes it: ``OSError: [Errno 9] Bad file descriptor`` printed after a snapshot that succeeded."""
        if self._coprocessor is not None:
            self._coprocessor.stop()
        if self._exiting is None:
            self._exiting = threading.Thread(target=self.pool.shutdown, name="helper-exit", daemon=True)
            self._exiting.start()

    def close(self) -> None:
        # A helper still starting when the work is done (a tiny source) must finish starting first:
        # shut down mid-spawn, it fails to unpickle its queue and prints a traceback.
        wait([self.started], timeout=30)
        if self._coprocessor is not None:
            self._coprocessor.stop()  # after an error too: its loop waits for this
        if self._exiting is None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        else:
            self._exiting.join()
        self.drain()
        self.queue.close()
        for channel in (self.work, self.results):  # what a failed load left unread must not block our exit
            channel.cancel_join_thread()
            channel.close()

    def drain(self) -> None:
        """Relay the helper's progress events (called from the main process's own progress calls)."""
        while True:
            try:
                event, table, value, seconds = self.queue.get_nowait()
            except queue_module.Empty:
                return
            if self.progress is None:
                continue
            if event == "start":
                self.progress.start(table, value)
            elif event == "advance":
                self.progress.advance(table, value)
            else:
                self.progress.finish(table, value, seconds)

    def wait(self, futures: Sequence[Future[Any]]) -> None:
        pending = set(futures)
        while pending:
            _done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            self.drain()


class _Relay:
    """The main process's progress, draining the helper's events as it goes."""

    def __init__(self, progress: Progress | None, helper: Helper) -> None:
        self.progress = progress
        self.helper = helper

    def start(self, table: str, total: int) -> None:
        if self.progress is not None:
            self.progress.start(table, total)
        self.helper.drain()

    def advance(self, table: str, rows: int) -> None:
        if self.progress is not None:
            self.progress.advance(table, rows)
        self.helper.drain()

    def finish(self, table: str, rows: int, seconds: float) -> None:
        if self.progress is not None:
            self.progress.finish(table, rows, seconds)
        self.helper.drain()


def read_source_parallel(
    conn: sqlite3.Connection, path: Path, config: Config, helper: Helper, *, create: bool
) -> SourceRead:
    """read_source with the profiles split between this process and the helper.

    Guesses (create mode) cost a sample each and are made here; only the tables that need a full
    profile are split, so a schema the guesses cover never waits for the helper to start.
    """
    schema = read_schema(conn)
    create_config = config if create else None
    guesses = {
        t.name: guess_profile(conn, t, create_config) if create_config is not None else None for t in schema.tables
    }
    profiles = {name: guess for name, guess in guesses.items() if guess is not None}
    costs = {name: cost for name, cost in profile_costs(conn, schema).items() if name not in profiles}
    from replicator.load import share

    pieces = share.profile_pieces(conn, schema, costs, config.snapshot.split_rows)
    mine, theirs = split(pieces, cost_model.HELPER_START_NS)
    their_tables, their_chunks = share.whole_and_chunks(theirs)
    future = (
        helper.pool.submit(_helper_profile, str(path), config, their_tables, create, their_chunks) if theirs else None
    )
    my_tables, my_chunks = share.whole_and_chunks(mine)
    measured, _ = _profiles(conn, schema, my_tables, create_config, guess=False)
    profiles.update(measured)
    scanned = [share.scan_chunks(conn, schema, my_chunks, create_config)]
    if future is not None:
        helper.wait([future])
        other = future.result()
        if isinstance(other, _Failure):
            _raise(other)
        else:
            profiles.update(other[0])
            scanned.append(other[1])
    profiles.update(share.finish_profiles(conn, schema, scanned, create_config))
    return SourceRead(
        schema=schema,
        profiles=profiles,
        sqlite_sequence=sequences.read_sqlite_sequence(conn),
        guessed=frozenset(name for name, guess in guesses.items() if guess is not None),
    )
