"""What every step of the cutover (:mod:`replicator.cutover.window`) is handed: the operator's options, the
locks and connections it holds, and from the preflight on the daemon's apply machinery on them.

Two objects, each whole from its constructor, so no step meets a field that is not there yet:

* :class:`Held`, opened first and closed last: both locks a daemon would hold (the lock file, asked of a
  running daemon, and the advisory lock), a PostgreSQL connection and a SQLite read connection, the
  capture's metadata. It also keeps the apply session once the preflight opens it, only to close it and
  to name the blocking sessions of a lock wait (:func:`replicator.cutover.freeze.lock_wait`).
* :class:`Session`, made by the preflight once the plan is read and the chain verified: the held resources
  with the apply session (plan, targets, skipped tables, writer, chain head) and what the proofs carry
  from step to step.

Also here: how the cutover stops (:class:`CutoverAborted` before the fence, which every step raises;
:class:`CertificateFailed` after it).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import IO, Any, Final

import msgspec
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from checkpoints import store
from checkpoints.model import Checkpoint
from replicator import log, pg
from replicator.apply.writer import Writer
from replicator.config import Config
from replicator.cutover.certificate import IndependentCheck
from replicator.errors import ReplicatorError, UsageError
from replicator.plan import schemaplan
from replicator.plan.shape import TableShape
from replicator.progress import Progress
from replicator.state import lock
from replicator.state.store import StateStore
from replicator.stream.session import ApplySession, skips_of
from triggers import source as sqlite_source
from triggers.meta import Meta, read_meta

HANDOVER_TIMEOUT_S: Final = 60.0
"""How long cutover waits for a running daemon to finish its batch and release its locks."""


class CutoverAborted(ReplicatorError):
    """Cutover stopped before the fence committed: nothing is fenced, replication can continue."""


class CutoverInterrupted(CutoverAborted):
    exit_code = 130


class CertificateFailed(ReplicatorError):
    """The cutover is complete (SQLite fenced, PostgreSQL DONE); only writing its certificate failed."""


class Options(msgspec.Struct, frozen=True):
    dry_run: bool = False
    max_downtime_s: float = 5.0
    accept_quarantine: bool = False
    accept_skipped_columns: bool = False
    """Required when config skips columns of migrated tables: their values are lost at cutover (recorded)."""
    accept_missing_constraints: bool = False
    """Required when a UNIQUE index, index, CHECK or FK of SQLite's is not in PostgreSQL (recorded)."""
    backup: bool = True
    backup_dir: Path | None = None
    certificate_path: Path | None = None
    operator: str = ""
    full_verify: bool = True
    """Run a full verify in the preflight (both sides read whole; outside the outage)."""
    rollback_window: bool = True
    """Install the reverse capture in PostgreSQL with the cutover (:mod:`replicator.state.reverse`), so that
    ``replicator run`` keeps the SQLite file current and ``rollback`` loses nothing."""


class Held:
    """Both locks a daemon would hold, a PostgreSQL connection and a SQLite read connection."""

    def __init__(
        self,
        source: Path,
        dsn: str,
        config: Config,
        bound: Any,
        lock_file: IO[str],
        sconn: sqlite3.Connection,
        meta: Meta,
        pconn: psycopg.Connection[Any],
        progress: Progress | None,
        signing_key: Ed25519PrivateKey | None,
    ) -> None:
        self.source: Final = source
        self.dsn: Final = dsn
        self.config: Final = config
        self.state_schema: Final = config.target.state_schema
        self.log: Final = bound
        self.lock_file: Final = lock_file
        self.sconn: Final = sconn
        self.meta: Final = meta
        self.pconn: Final = pconn
        self.state_store: Final = StateStore(pconn, config.target.state_schema)
        """The state schema on :attr:`pconn`, the connection that holds the advisory lock and commits the finish."""
        self.progress: Final = progress
        """Follows the reads before the freeze: the preflight's full verify and the pre-pass."""
        self.signing_key: Final = signing_key
        """Loaded before anything is locked: a key that cannot be read stops the cutover before it starts."""
        self.applying: ApplySession | None = None
        """The daemon's apply machinery on our connection (:mod:`replicator.stream.session`) once the preflight
        opened it (:meth:`open_apply`); None before. Closed with the rest."""

    @classmethod
    def open(
        cls,
        source: Path,
        dsn: str,
        config: Config,
        progress: Progress | None = None,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> Held:
        if not source.exists():
            raise UsageError(f"source {source} does not exist", hint="pass --source path/to/app.db")
        bound = log.get("cutover", source=str(source))
        with contextlib.ExitStack() as undo:  # on any failure, what was taken is let go, newest first
            handle = _take_file_lock(source, bound)
            undo.callback(handle.close)
            sconn = sqlite_source.connect(source, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms)
            undo.callback(_close_quietly, sconn)
            meta = read_meta(sconn)
            if meta is None:
                raise UsageError(
                    f"capture is not installed in {source}", hint="cutover follows `capture install` and `run`"
                )
            pconn = pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s)
            undo.callback(_close_quietly, pconn)
            _take_advisory_lock(pconn, meta)
            undo.pop_all()
        return cls(source, dsn, config, bound, handle, sconn, meta, pconn, progress, signing_key)

    def open_apply(self) -> ApplySession:
        """The daemon's start-up, minus the snapshot: the same apply session, on our connection."""
        conn = self.pconn
        self.state_store.ensure()
        plan = self.state_store.load_plan()
        prev = store.latest(conn, schema=self.state_schema)
        if plan is None or prev is None:
            raise CutoverAborted(
                "the target holds no snapshot (no saved plan or no genesis checkpoint)",
                hint="run `replicator run` until it streams, then cut over",
            )
        self.applying = ApplySession(
            conn,
            self.sconn,
            self.meta,
            self.config,
            plan=plan,
            prev=prev,
            skip_reasons=skips_of(self.config, plan, self.meta),
            refuse=_refuse_unresolved,
        )
        return self.applying

    def close(self) -> None:
        if self.applying is not None:
            with contextlib.suppress(Exception):
                self.applying.close()
        _close_quietly(self.pconn)
        _close_quietly(self.sconn)
        self.lock_file.close()


def _close_quietly(conn: psycopg.Connection[Any] | sqlite3.Connection) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _take_file_lock(source: Path, bound: Any) -> IO[str]:
    """The daemon's lock file; a running daemon is asked to hand it over (it resumes if we abort)."""
    handle = lock.open_lock_file(source)
    if not lock.try_flock(handle):
        try:
            _ask_daemon(source, lock.lock_path(source), handle, bound)
        except BaseException:
            handle.close()
            raise
    return handle


def _ask_daemon(source: Path, path: Path, handle: IO[str], bound: Any) -> None:
    """Signal the daemon whose pid the lock file holds; wait until it has finished its batch and let go."""
    pid = lock.lock_holder(source)
    refused = f"a `replicator run` daemon{f' (pid {pid})' if pid else ''} holds {path}"
    if pid is None:
        raise CutoverAborted(
            f"{refused}, on another host or container, so it cannot be asked to hand over",
            hint="run cutover where the daemon runs (`docker compose exec replicator replicator cutover`), "
            "or stop the daemon (SIGTERM: it finishes its batch) and run cutover again",
        )
    try:
        os.kill(pid, lock.HANDOVER_SIGNAL)
    except ProcessLookupError:
        pass  # it exited just now: its lock goes with it
    except PermissionError:
        raise CutoverAborted(
            f"{refused}, and it runs as another user", hint="run cutover as the daemon's user, or stop it first"
        ) from None
    bound.info("asked the daemon for its locks", pid=pid)
    deadline = time.monotonic() + HANDOVER_TIMEOUT_S
    while not lock.try_flock(handle):
        if time.monotonic() > deadline:
            raise CutoverAborted(
                f"{refused} and did not hand it over within {HANDOVER_TIMEOUT_S:g}s",
                hint="see the daemon's log; stop it (SIGTERM) and run cutover again",
            )
        time.sleep(0.05)


def _take_advisory_lock(pconn: psycopg.Connection[Any], meta: Meta) -> None:
    # with take_lock's grace: the backend of a daemon stopped just now may still hold it
    if not lock.take_lock(pconn, meta.source_id):
        raise CutoverAborted(
            f"another replicator is applying source {meta.source_id} to this target",
            hint="stop `replicator run` (see pg_stat_activity, application_name=replicator) and run cutover again",
        )


def _refuse_unresolved(problems: dict[str, str]) -> None:
    if problems:
        listed = "; ".join(f"{n} {why}" for n, why in sorted(problems.items()))
        raise CutoverAborted(
            f"cannot apply table(s): {listed}",
            hint="run `replicator run` until it streams (it picks up new tables and reports what it cannot "
            "apply in `replicator status`), or fix the capture policy; then cut over",
        )


class Session:
    """The cutover from the preflight on: what :class:`Held` holds, the apply session on it, and what the
    proofs carry from one step to the next. Made once the preflight verified the chain."""

    def __init__(self, held: Held, applying: ApplySession) -> None:
        self.held: Final = held
        # Held's fields, copied for the steps to read directly: none of them changes once opened (Final).
        self.source, self.dsn, self.config, self.state_schema = held.source, held.dsn, held.config, held.state_schema
        self.log, self.pconn, self.sconn, self.meta = held.log, held.pconn, held.sconn, held.meta
        self.state_store = held.state_store
        self.progress, self.signing_key = held.progress, held.signing_key
        self.applying: Final = applying
        """The daemon's apply machinery on our connection: plan, targets, skipped tables, writer, chain head
        (the properties below)."""
        self.verified: Final[Checkpoint] = applying.prev
        """The chain head the preflight verified the whole chain up to."""
        self.independent: dict[str, IndependentCheck] = {}
        """Per table, the preflight's comparison by the independent reading (the certificate's verdict rests on it)."""
        self.compared_at: int | None = None
        """The applied position the preflight's full verify compared at; None without it. The stop point
        compares the keys journaled after it by the same reading."""
        self.running: dict[str, tuple[int, str]] = {}
        """Per journaled table, the apply's running count and checksum at the stop point (the chain adds up to it);
        empty before the stop point."""

    @property
    def plan(self) -> schemaplan.SchemaPlan:
        return self.applying.plan

    @property
    def prev(self) -> Checkpoint:
        """The chain head; every drained batch moves it."""
        return self.applying.prev

    @prev.setter
    def prev(self, head: Checkpoint) -> None:
        self.applying.prev = head

    @property
    def targets(self) -> dict[str, TableShape]:
        return self.applying.targets

    @property
    def skipped(self) -> dict[str, str]:
        """Captured tables the migration leaves out (:mod:`replicator.plan.skips`), with the reason."""
        return self.applying.skip_reasons

    @property
    def writer(self) -> Writer:
        return self.applying.writer

    def certified_tables(self) -> list[str]:
        """Every planned table the migration moves (skipped ones excluded)."""
        return [t.source for t in self.plan.tables if t.source not in self.skipped]

    def copied_tables(self) -> list[str]:
        """Planned tables captured ``snapshot-only``: not journaled, so copied again while SQLite is frozen."""
        return [
            n
            for n in self.certified_tables()
            if n not in self.targets and (cap := self.meta.tables.get(n)) is not None and cap.mode == "snapshot-only"
        ]

    def journaled_tables(self) -> list[str]:
        """Certified tables whose PostgreSQL rows the journal keeps current (proven at the stop point)."""
        copied = set(self.copied_tables())
        return [n for n in self.certified_tables() if n not in copied]

    def open_again(self, *, readonly: bool = True) -> sqlite3.Connection:
        """Another connection to the source, already checked when the session opened it: the file-shape
        check is skipped (under a live app's checkpoints it can race; a false alarm must not abort the freeze)."""
        busy = self.config.source.busy_timeout_ms
        return sqlite_source.connect(self.source, readonly=readonly, busy_timeout_ms=busy, check=False)
