"""``replicator cutover``: the maintenance-window command. Read :func:`cutover` top to bottom: the 7 steps.

1. **Preflight** (no writes blocked): we take the daemon's two locks (the lock file next to the
   source and the PostgreSQL advisory lock per source id). A running daemon holds both: it is asked
   to hand them over (``SIGUSR1`` to the pid in the lock file), finishes its batch, lets go and waits;
   when the cutover ends it starts again, and either resumes streaming (an abort) or finds the target
   cut over and exits 0, so one command does the window with the daemon left running as a service.
   The cutover drains with the same apply machinery itself. Then: capture installed, WAL mode, no
   drift, no interrupted re-snapshot owed, no unacknowledged quarantine (unless
   ``--accept-quarantine``, recorded), the checkpoint chain verifies, catch-up to a small backlog,
   a full verify passes (keys journaled since the compared position are in flight: the drain applies
   them). Then the backup (outside the outage) and the SQLite pre-pass: every table's count and
   checksum read in one SQLite read transaction at journal head H0, kept open so the freeze can read
   the rows *as they were at H0*.
2. **Freeze**: ``BEGIN IMMEDIATE`` on a connection we hold: the app's writers wait (busy timeout) or
   get SQLITE_BUSY; readers keep working (WAL). Stop seq S = journal head.
3. **Drain** to S with the apply :class:`~replicator.apply.batch.Writer`, then prove it: the chain verifies
   (no gap, no overlap, every link) and its head covers exactly S.
4. **Verify at the stop point**: the PostgreSQL side is the running per-table digests the apply
   maintains in each batch's transaction; the SQLite side is the pre-pass digest, adjusted for the
   keys journaled in (H0, S] (old rows read from the pre-pass transaction, new rows now). Cost:
   O(changed keys), not O(table). A mismatch is re-checked by a full read of both sides and, if
   real, reported by key (verify's bisection). ``snapshot-only`` tables (no key the journal could
   name) are copied again instead (:func:`copy_again`, in step 5's transaction): emptied, loaded from
   the frozen SQLite, then read whole on both sides.
5. **Finish PostgreSQL** in one transaction kept open: parked FKs restored, NOT VALID FKs
   validated (orphans reported by key), sequences past max(id) and SQLite's AUTOINCREMENT
   high-water, remaining post-load statements, the ``cutover`` checkpoint, phase DONE.
6. **Fence SQLite** in the held transaction (BEFORE triggers raising the fence message); commit
   SQLite, then PostgreSQL. The write outage ends here. Two databases cannot commit atomically
   without two-phase commit, which PostgreSQL disables by default (``max_prepared_transactions =
   0``), so a crash can fall between the commits. PostgreSQL first (the earlier order) left
   PostgreSQL DONE and SQLite writable and unfenced: the app kept writing to SQLite and those
   writes were never migrated, silently. SQLite first leaves SQLite fenced and PostgreSQL's finish
   rolled back: every app write is refused loudly, nothing is lost (the drained batches committed
   one by one before), ``status`` and ``run`` name the state, ``cutover`` run again finishes
   PostgreSQL and writes the certificate, and ``unfence`` goes back instead.
7. **Certificate** (JSON file and a row in the target), sealed with its SHA-256; ANALYZE (after the
   outage: statistics are not needed for correctness).

Any failure or Ctrl-C before step 6 commits rolls back the open PostgreSQL transaction and the
SQLite one (the app's writers proceed), records phase STREAMING with the reason, releases both
locks and says so; restarting ``replicator run`` resumes replication where the drain left it.
``--dry-run`` runs 1–5 and rolls back. ``--max-downtime`` bounds the freeze: every PostgreSQL
statement in it gets the remaining budget as ``statement_timeout``, and the fence is not committed
past the budget. Failpoints: ``cutover.after_<step>``, ``cutover.before_fence_commit`` and
``cutover.between_commits``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Final

import msgspec
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg import sql

from checkpoints import audit, store
from checkpoints.digest import RowEncoder
from checkpoints.model import Checkpoint, Kind, TableChange, next_checkpoint, tool_version
from replicator import faults, files, log, pg
from replicator.apply import batch as apply
from replicator.apply import dependents
from replicator.config import Config
from replicator.cutover import backup, signing
from replicator.cutover.certificate import Certificate, IndependentCheck, QuarantineEntry, TableProof
from replicator.errors import WAIT_CUT_SHORT, ReplicatorError, UsageError, VerificationFailed
from replicator.inspect import verify, verify_compare, verify_pg, verify_shape, verify_sides, verify_sqlite
from replicator.load import resnapshot, snapshot
from replicator.plan import pgschema, skips
from replicator.progress import Progress
from replicator.state import lock, phase, stateschema
from replicator.state import schema as runs
from replicator.state.phase import FINISH_HINT, INTERRUPTED_BETWEEN_COMMITS, ApplyState, Phase
from replicator.stream.session import ApplySession, skips_of
from replicator.values import quarantine
from triggers import drift, fence, journal
from triggers import source as sqlite_source
from triggers.install import Meta, read_meta
from triggers.schema import quote_ident

HANDOVER_TIMEOUT_S: Final = 60.0
"""How long cutover waits for a running daemon to finish its batch and release its locks."""
CATCHUP_RETRIES: Final = 5
"""Times in a row a catch-up batch is read again after a transient error (the app changed its rows meanwhile)."""
CATCHUP_BACKLOG: Final = 2_000
"""Preflight catches up until at most this many journal entries remain for the freeze to drain."""
FULL_RECHECK_FRACTION: Final = 0.25
"""A table with more changed keys than this fraction of its rows is re-read whole, not adjusted."""
_MODULUS: Final = 1 << 256


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


class Result(msgspec.Struct, frozen=True):
    dry_run: bool
    stop_seq: int
    steps: dict[str, float]
    write_outage_s: float
    tables: tuple[TableProof, ...]
    certificate: Certificate | None = None
    certificate_path: str | None = None
    warnings: tuple[str, ...] = ()
    not_created: tuple[pgschema.NotCreated, ...] = ()
    """What PostgreSQL lacks of SQLite's schema after this cutover (a dry run: would lack)."""


# --------------------------------------------------------------------------------------------
# the command


def cutover(source: Path, dsn: str, config: Config, options: Options, progress: Progress | None = None) -> Result:
    """Steps 1–7 (see the module docstring); raises CutoverAborted with the state things are in.
    ``progress`` follows the reads before the freeze: the preflight's full verify and the pre-pass."""
    clock = _Clock()
    key = signing.load_private(Path(config.signing.key)) if config.signing.key and not options.dry_run else None
    bounded = pg.with_lock_timeout(dsn, int(options.max_downtime_s * 1000))  # no lock wait outlasts the budget
    session = _Session.open(Path(source), bounded, config)
    session.progress = progress
    session.signing_key = key
    try:
        return _steps(session, clock, options)
    except BaseException as exc:
        waited = _lock_wait(session, exc, clock, options)
        if waited is None:
            raise
        raise waited from exc
    finally:
        session.close()


def _steps(session: _Session, clock: _Clock, options: Options) -> Result:
    """:func:`cutover` in order; raises CutoverAborted with the state things are in."""
    with clock.step("preflight"):
        quarantined = preflight(session, options)
    faults.point("cutover.after_preflight")
    backed_up = None
    if options.backup and not options.dry_run:
        with clock.step("backup"):
            backed_up = _backup(session, options)
    with clock.step("prepass"):
        prepass = Prepass.read(session)
    try:
        with clock.step("catchup"):  # what the app wrote during the pre-pass, so the freeze drains little
            drain(session, stop=None, budget=None, leave=0)
            prepass.advance()
            for _ in range(2):  # what the roll-forward let in, compared independently; each pass reads fewer keys
                caught_up = drain(session, stop=None, budget=None, leave=0)
                _prove_changed(session, caught_up.seq_to)
            drain(session, stop=None, budget=None, leave=0)  # and during the last comparison
        frozen = freeze(session, clock)
        try:
            finished = _frozen_steps(session, prepass, frozen, clock, options)
        except BaseException as exc:
            raise _abort(session, frozen, clock, exc) from exc
    finally:
        prepass.close()
    outage = frozen.outage()
    session.log.info("write outage ended", seconds=round(outage, 3), steps=clock.steps)
    if options.dry_run:
        _set_phase(session, Phase.STREAMING, frozen.stop_seq, "cutover --dry-run finished; nothing was changed")
        return Result(
            True,
            frozen.stop_seq,
            clock.steps,
            outage,
            finished.proofs,
            warnings=finished.warnings,
            not_created=finished.not_created,
        )
    try:
        return _after_fence(session, options, clock, frozen, finished, quarantined, backed_up)
    except BaseException as exc:  # the cutover itself is complete: say so, whatever failed after it
        cls = CutoverInterrupted if isinstance(exc, KeyboardInterrupt) else CertificateFailed
        raise cls(
            f"cutover is complete (SQLite fenced, PostgreSQL phase DONE, chain head #{finished.head.number}) "
            f"but writing the certificate failed: {exc.message if isinstance(exc, ReplicatorError) else repr(exc)}",
            hint="point the app at PostgreSQL; ANALYZE the tables; `replicator certificate` shows what was stored",
        ) from exc


def _quarantine_entries(session: _Session) -> tuple[QuarantineEntry, ...]:
    """Every quarantined value, for the certificate (reviewed and acknowledged, or accepted at cutover)."""
    values = quarantine.list_values(session.pconn, session.state_schema, limit=10_000_000)
    return tuple(QuarantineEntry(v.table, v.key, v.column, v.reason, v.action, v.acknowledged) for v in values)


def _lock_wait(session: _Session, exc: BaseException, clock: _Clock, options: Options) -> CutoverAborted | None:
    """A ``lock_timeout`` anywhere in ``exc``'s chain, as one line naming the step and the blocking sessions."""
    if isinstance(exc, CertificateFailed):
        return None
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, WAIT_CUT_SHORT):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    holders: list[str] = []
    if session.apply_session is not None:  # else it failed before the plan was read
        try:
            with pg.connect(session.dsn, autocommit=True, connect_timeout=session.config.target.connect_timeout_s) as c:
                holders = pg.blockers(c, [session.plan.schema, session.state_schema])
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


def _frozen_steps(session: _Session, prepass: Prepass, frozen: Frozen, clock: _Clock, options: Options) -> Finished:
    """Steps 2–6: everything that runs while the app's writers wait."""
    budget = _Budget(frozen, options.max_downtime_s, session.pconn)
    faults.point("cutover.after_freeze")
    with clock.step("drain"):
        head = drain(session, stop=frozen.stop_seq, budget=budget)
        prove_chain(session, head, frozen.stop_seq)
    faults.point("cutover.after_drain")
    budget.check("drain")
    with clock.step("verify"):
        proofs = verify_stop_point(session, prepass, frozen.stop_seq)
    faults.point("cutover.after_verify")
    budget.check("verify")
    try:
        with session.pconn.transaction(force_rollback=options.dry_run):
            if session.copied_tables():
                with clock.step("copy"):
                    proofs = _in_order(session, (*proofs, *copy_again(session, frozen, options)))
                budget.check("copying the snapshot-only tables")
            with clock.step("finish_pg"):
                finished = finish_postgres(session, head, frozen, proofs, options)
            faults.point("cutover.after_finish_pg")
            budget.check("finish PostgreSQL")
            if options.dry_run:
                frozen.rollback()
                return finished
            with clock.step("fence"):
                fence.fence_on(frozen.conn, frozen.frozen_wall, fence_where(session.dsn), path=session.source)
                faults.point("cutover.before_fence_commit")
                budget.check("fence")
            with clock.step("commit"):
                frozen.commit()  # SQLite first (module docstring, step 6); PostgreSQL commits as this block ends
                faults.point("cutover.between_commits")
    except psycopg.OperationalError:  # the connection broke, maybe during COMMIT: did PostgreSQL commit?
        if options.dry_run or not frozen.fenced or not _committed(session, frozen.stop_seq):
            raise
        session.log.warning("PostgreSQL committed though its acknowledgement was lost")
    budget.clear()
    return finished


def fence_where(dsn: str) -> str:
    """The fence message's second half: where the data went, so whoever meets a refused write knows where to
    look (user, host, port and database: never the password)."""
    return f"its data is now in {pg.describe(dsn)}"


def _after_fence(
    session: _Session,
    options: Options,
    clock: _Clock,
    frozen: Frozen,
    finished: Finished,
    quarantined: dict[str, int],
    backed_up: backup.BackupResult | None,
) -> Result:
    """Step 7, after the outage: ANALYZE, the certificate (file and target), the summary."""
    from replicator.cutover import certificate

    warnings = list(finished.warnings)
    with clock.step("analyze"):
        try:
            analyze(session)
        except psycopg.Error as exc:
            warnings.append(f"ANALYZE failed: {pgschema.pg_message(exc)}; run it by hand")
    with clock.step("certificate"):
        source_sha = _settled_sha256(session)
        cert = certificate.seal(
            Certificate(
                source_path=str(session.source.resolve()),
                source_id=session.meta.source_id,
                source_sha256=source_sha,
                target=pg.describe(session.dsn),
                stop_seq=frozen.stop_seq,
                chain_head=finished.head.number,
                chain_head_hash=finished.head.hash,
                tables=finished.proofs,
                steps=dict(clock.steps),
                frozen_at=_iso(frozen.frozen_wall),
                fenced_at=_iso(frozen.committed_wall or frozen.frozen_wall),
                write_outage_s=round(frozen.outage(), 4),
                tool=tool_version(),
                operator=options.operator or getpass.getuser(),
                accept_quarantine=options.accept_quarantine,
                quarantined=quarantined,
                backup=str(Path(backed_up.path).resolve()) if backed_up else None,
                backup_sha256=backed_up.manifest.sha256 if backed_up else None,
                sequences=finished.sequences,
                foreign_keys=finished.foreign_keys,
                skipped_tables=dict(sorted(session.skipped.items())),
                skipped_columns=skips.skipped_columns(session.config, session.plan),
                accept_skipped_columns=options.accept_skipped_columns,
                quarantine=_quarantine_entries(session),
                not_created=finished.not_created,
                accept_missing_constraints=options.accept_missing_constraints,
            )
        )
        if session.signing_key is not None:
            cert = signing.sign(cert, session.signing_key)
        path = options.certificate_path or session.source.with_name(session.source.name + ".cutover.json")
        unwritten: files.WriteFailed | None = None
        try:
            certificate.write_file(path, cert)
        except files.WriteFailed as exc:  # stored in the target all the same, then reported
            unwritten = exc
        try:
            with session.pconn.transaction():
                certificate.store(session.pconn, session.state_schema, cert)
        except psycopg.Error as exc:
            warnings.append(f"certificate not stored in the target ({pgschema.pg_message(exc)}); the file {path} is")
        if unwritten is not None:
            raise unwritten
    for w in warnings:
        session.log.warning(w)
    return Result(
        False,
        frozen.stop_seq,
        clock.steps,
        frozen.outage(),
        finished.proofs,
        cert,
        str(path),
        tuple(warnings),
        finished.not_created,
    )


# --------------------------------------------------------------------------------------------
# the session: locks, connections, the apply machinery


class _Session:
    """Both locks a daemon would hold, a PostgreSQL connection and a SQLite read connection."""

    def __init__(self, source: Path, dsn: str, config: Config) -> None:
        self.source, self.dsn, self.config = source, dsn, config
        self.state_schema = config.target.state_schema
        self.log = log.get("cutover", source=str(source))
        self._lock_file: IO[str] | None = None
        self.pconn: psycopg.Connection[Any]
        self.sconn: sqlite3.Connection
        self.meta: Meta
        self.apply_session: ApplySession | None = None
        """The daemon's apply machinery on our connection (:mod:`replicator.stream.session`), from the
        preflight on: plan, targets, skipped tables, writer, chain head (the properties below)."""
        self.verified: Checkpoint
        """The chain head the preflight verified the whole chain up to."""
        self.progress: Progress | None = None
        self.independent: dict[str, IndependentCheck] = {}
        """Per table, the preflight's comparison by the independent reading (the certificate's verdict rests on it)."""
        self.compared_at: int | None = None
        """The applied position the preflight's full verify compared at; None without it. The stop point
        compares the keys journaled after it by the same reading."""
        self.signing_key: Ed25519PrivateKey | None = None
        """Loaded before anything is locked: a key that cannot be read stops the cutover before it starts."""
        self.running: dict[str, tuple[int, str]] = {}
        """Per journaled table, the apply's running count and checksum at the stop point (the chain adds up to it)."""

    @classmethod
    def open(cls, source: Path, dsn: str, config: Config) -> _Session:
        if not source.exists():
            raise UsageError(f"source {source} does not exist", hint="pass --source path/to/app.db")
        session = cls(source, dsn, config)
        try:
            session._take_file_lock()
            session.sconn = sqlite_source.connect(source, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms)
            meta = read_meta(session.sconn)
            if meta is None:
                raise UsageError(
                    f"capture is not installed in {source}", hint="cutover follows `capture install` and `run`"
                )
            session.meta = meta
            session.pconn = pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s)
            session._take_advisory_lock()
        except BaseException:
            session.close()
            raise
        return session

    def _take_file_lock(self) -> None:
        """The daemon's lock file; a running daemon is asked to hand it over (it resumes if we abort)."""
        handle = lock.open_lock_file(self.source)
        if not lock.try_flock(handle):
            try:
                self._ask_daemon(lock.lock_path(self.source), handle)
            except BaseException:
                handle.close()
                raise
        self._lock_file = handle

    def _ask_daemon(self, path: Path, handle: IO[str]) -> None:
        """Signal the daemon whose pid the lock file holds; wait until it has finished its batch and let go."""
        pid = lock.lock_holder(self.source)
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
        self.log.info("asked the daemon for its locks", pid=pid)
        deadline = time.monotonic() + HANDOVER_TIMEOUT_S
        while not lock.try_flock(handle):
            if time.monotonic() > deadline:
                raise CutoverAborted(
                    f"{refused} and did not hand it over within {HANDOVER_TIMEOUT_S:g}s",
                    hint="see the daemon's log; stop it (SIGTERM) and run cutover again",
                )
            time.sleep(0.05)

    def _take_advisory_lock(self) -> None:
        # with take_lock's grace: the backend of a daemon stopped just now may still hold it
        if not lock.take_lock(self.pconn, self.meta.source_id):
            raise CutoverAborted(
                f"another replicator is applying source {self.meta.source_id} to this target",
                hint="stop `replicator run` (see pg_stat_activity, application_name=replicator) and run cutover again",
            )

    def prepare_apply(self) -> None:
        """The daemon's start-up, minus the snapshot: the same apply session, on our connection."""
        conn = self.pconn
        stateschema.ensure(conn, self.state_schema)
        plan = apply.load_plan(conn, self.state_schema)
        prev = store.latest(conn, schema=self.state_schema)
        if plan is None or prev is None:
            raise CutoverAborted(
                "the target holds no snapshot (no saved plan or no genesis checkpoint)",
                hint="run `replicator run` until it streams, then cut over",
            )
        self.apply_session = ApplySession(
            conn,
            self.sconn,
            self.meta,
            self.config,
            plan=plan,
            prev=prev,
            skip_reasons=skips_of(self.config, plan, self.meta),
            refuse=_refuse_unresolved,
        )

    def _applying(self) -> ApplySession:
        assert self.apply_session is not None, "the preflight opens the apply session (prepare_apply)"
        return self.apply_session

    @property
    def plan(self) -> pgschema.SchemaPlan:
        return self._applying().plan

    @property
    def prev(self) -> Checkpoint:
        """The chain head; every drained batch moves it."""
        return self._applying().prev

    @prev.setter
    def prev(self, head: Checkpoint) -> None:
        self._applying().prev = head

    @property
    def targets(self) -> dict[str, apply.TableTarget]:
        return self._applying().targets

    @property
    def skipped(self) -> dict[str, str]:
        """Captured tables the migration leaves out (:mod:`replicator.plan.skips`), with the reason."""
        return self._applying().skip_reasons

    @property
    def writer(self) -> apply.Writer:
        return self._applying().writer

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

    def close(self) -> None:
        if self.apply_session is not None:
            with contextlib.suppress(Exception):
                self.apply_session.close()
        for conn in (getattr(self, "pconn", None), getattr(self, "sconn", None)):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        if self._lock_file is not None:
            self._lock_file.close()


def _refuse_unresolved(problems: dict[str, str]) -> None:
    if problems:
        listed = "; ".join(f"{n} {why}" for n, why in sorted(problems.items()))
        raise CutoverAborted(
            f"cannot apply table(s): {listed}",
            hint="run `replicator run` until it streams (it picks up new tables and reports what it cannot "
            "apply in `replicator status`), or fix the capture policy; then cut over",
        )


# --------------------------------------------------------------------------------------------
# step 1: preflight


def preflight(session: _Session, options: Options) -> dict[str, int]:
    """Every check that can refuse before writes are blocked; returns the quarantine counts accepted."""
    bound = session.log.bind(step="preflight")
    mode = str(session.sconn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if mode != "wal":
        raise CutoverAborted(
            f"the source is in {mode!r} journal mode, not WAL",
            hint="in rollback-journal mode the fence commit would have to wait for every reader (and block new "
            "ones); switch once with `PRAGMA journal_mode=WAL` while the app is stopped, then cut over",
        )
    found = drift.check(session.sconn, drift.SchemaMark(-1, ""))
    if found.changed and (not found.installed or found.tables or found.new_tables):
        what = ", ".join([*(t.table for t in found.tables), *(f"{n} (new, not captured)" for n in found.new_tables)])
        raise CutoverAborted(
            f"the SQLite schema drifted since capture was installed: {what or 'capture removed'}",
            hint="run `replicator run` (it follows or reports drift) until it streams, then cut over",
        )
    state = phase.read(session.pconn, session.state_schema)
    fenced = fence.status_on(session.sconn)
    if state is not None and state.phase == Phase.DONE:
        if not fenced.fenced:
            raise CutoverAborted(
                "this target was cut over, but the SQLite file is not fenced (unfenced since?): "
                "app writes to it since then are not in PostgreSQL",
                hint="if the app went back to SQLite, run `replicator rollback`; else run `replicator fence`",
            )
        raise CutoverAborted("this target was already cut over", hint="see `replicator certificate`")
    if fenced.tables:
        bound.warning("completing a cutover interrupted between its two commits", fenced_at=fenced.at)
    if state is not None and state.phase == Phase.ERRORED:
        raise CutoverAborted(
            f"the daemon stopped on an error: {state.reason}", hint=state.hint or "fix it and run `replicator run`"
        )
    session.prepare_apply()
    owed = resnapshot.pending(session.pconn, session.state_schema)
    if owed:
        raise CutoverAborted(
            f"an online re-snapshot was interrupted and is still owed: {', '.join(sorted(owed))}",
            hint="run `replicator run` (it redoes the re-snapshot first) until it streams, then cut over",
        )
    findings = audit.verify(store.records(session.pconn, schema=session.state_schema))
    if findings:
        raise VerificationFailed(
            f"the checkpoint chain does not verify: {findings[0]}", hint="run `replicator checkpoints verify`"
        )
    session.verified = session.prev
    left_out = skips.skipped_columns(session.config, session.plan)
    if left_out and not options.accept_skipped_columns:
        raise CutoverAborted(
            f"config skips columns whose values are not in PostgreSQL: {', '.join(left_out)}",
            hint="pass --accept-skipped-columns (recorded in the certificate), or remove `skip = true` and "
            "reload the table with `replicator snapshot --replace --tables T`",
        )
    if not options.accept_missing_constraints:
        _refuse_not_created(_dropped(session.plan) + pgschema.would_refuse(session.pconn, session.plan))
    quarantined = quarantine.unacknowledged(session.pconn, session.state_schema)
    if quarantined and not options.accept_quarantine:
        listed = ", ".join(f"{t}: {n}" for t, n in quarantined.items())
        raise CutoverAborted(
            f"quarantined values nobody acknowledged ({listed}): those rows are not in PostgreSQL",
            hint="review them with `replicator quarantine list`, then acknowledge them with "
            "`replicator quarantine ack`, or pass --accept-quarantine (recorded in the certificate)",
        )
    caught_up = drain(session, stop=None, budget=None, leave=CATCHUP_BACKLOG)
    bound.info("caught up", applied_seq=caught_up.seq_to)
    if options.full_verify:
        _full_verify(session, bound)
    return quarantined if options.accept_quarantine else {}


def _full_verify(session: _Session, bound: Any) -> None:
    """The preflight's full verify: every journaled table compared by the independent reading; its per-table
    result and position are what the certificate records and where the catch-up comparisons start."""
    journaled = session.journaled_tables()
    if journaled:  # snapshot-only tables may differ: they are copied again in the freeze
        report = verify.verify(  # the drain below applies what was journaled since: in flight without a daemon
            session.source,
            session.dsn,
            session.config,
            journaled,
            plan=session.plan,
            applied_by_caller=True,
            progress=session.progress,
        )
        if not report.match:
            _report_keys(session, list(report.mismatched), "in the preflight's full verify")
        session.independent = {t.table: _independent(t, "preflight", report.applied_through) for t in report.tables}
        session.compared_at = report.applied_through
        bound.info("full verify passed", tables=len(report.tables), seconds=report.seconds)


def _dropped(plan: pgschema.SchemaPlan) -> list[pgschema.NotCreated]:
    """What the plan never had a statement for (untranslatable; naming a table or column not migrated)."""
    return [n for t in plan.tables for n in t.dropped]


def _refuse_not_created(missing: list[pgschema.NotCreated]) -> None:
    """Without ``--accept-missing-constraints``, one line naming each object PostgreSQL would lack, and why."""
    if missing:
        listed = "; ".join(f"{n.kind} {n.name} on {n.table}: {n.reason}" for n in missing)
        raise CutoverAborted(
            f"PostgreSQL would run the app without {len(missing)} schema object(s) of SQLite's: {listed}",
            hint="fix the rows or the schema in SQLite and let them replicate, or pass --accept-missing-constraints "
            "(recorded in the certificate)",
        )


def _independent(t: verify_compare.TableVerify, at: str, seq: int | None) -> IndependentCheck:
    return IndependentCheck(
        at, t.status, t.source_rows, t.source_digest, t.target_rows, t.target_digest, seq=seq, in_flight=t.in_flight
    )


def _backup(session: _Session, options: Options) -> backup.BackupResult:
    out = options.backup_dir or session.source.parent / "replicator-backups"
    return backup.backup(session.source, out, busy_timeout_ms=session.config.source.busy_timeout_ms)


# --------------------------------------------------------------------------------------------
# the SQLite pre-pass (before the freeze)


class Prepass:
    """Counts and digests of every table at journal head H0, and the open read transaction they came from."""

    def __init__(
        self,
        session: _Session,
        conn: sqlite3.Connection,
        head: int,
        digests: dict[str, tuple[int, int]],
        quarantined: dict[str, frozenset[str]],
    ):
        self.session, self.conn, self.head, self.digests = session, conn, head, digests
        self.quarantined = quarantined
        """The quarantine's keys per table the digests leave out: a table whose set changed since (a
        parent fixed releases its dependents; one quarantined takes them) is read again whole."""

    @classmethod
    def read(cls, session: _Session) -> Prepass:
        """SQLite at H0 in this thread; PostgreSQL checked against its running digests in another."""
        names = session.journaled_tables()  # snapshot-only tables are copied again, then proven
        counts = apply.read_digests(session.pconn, session.state_schema, names)  # the progress bars' totals
        quarantined = _quarantined(session)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cutover-pg-prepass") as pool:
            pg_check = pool.submit(_pg_inconsistent, session)
            conn = _open_again(session)
            try:
                conn.execute("BEGIN")
                head = journal.head(conn)
                digests = {}
                for name in names:
                    shown = verify_compare.TableProgress(session.progress, name, counts.get(name, (0, ""))[0])
                    shape = _shape(session, name, quarantined)
                    side = verify_sqlite.table_digest_sqlite(conn, shape, on_rows=shown.side("sqlite"))
                    shown.finish(side.count + side.refused)
                    digests[name] = (side.count, side.sum)
                bad = pg_check.result()
            except BaseException:
                conn.close()
                raise
        if bad:
            conn.close()
            _report_keys(session, bad, "in the pre-pass (PostgreSQL against its running digests)")
        session.log.info("pre-pass read", journal_head=head, tables=len(digests))
        return cls(session, conn, head, digests, quarantined)

    def advance(self) -> None:
        """Roll the pre-pass forward to the current head: re-read only the keys journaled since."""
        session = self.session
        conn = _open_again(session)
        try:
            conn.execute("BEGIN")
            head = journal.head(conn)
            changed = verify._pending_keys(conn, self.head, head) if head > self.head else {}
            quarantined = _quarantined(session)
            moved = {n for n in self.digests if quarantined.get(n) != self.quarantined.get(n)}
            for name in sorted(moved | set(changed)):
                if name in self.digests:
                    keys = changed.get(name)
                    self.digests[name], _how = _sqlite_at_stop(session, self, conn, name, keys, quarantined)
        except BaseException:
            conn.close()
            raise
        self.conn.close()
        self.conn, self.head, self.quarantined = conn, head, quarantined

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------------------------
# step 2: freeze


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


def freeze(session: _Session, clock: _Clock) -> Frozen:
    """BEGIN IMMEDIATE (waits for the app's current writer) and read the stop seq."""
    conn = _open_again(session, readonly=False)
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


class _Budget:
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


# --------------------------------------------------------------------------------------------
# step 3: drain and prove


def drain(session: _Session, *, stop: int | None, budget: _Budget | None, leave: int = 0) -> Checkpoint:
    """Apply batches until the journal is applied through ``stop`` (frozen) or within ``leave`` of its head."""
    cfg = session.config.apply
    skipped = frozenset(session.skipped)
    retries = 0
    while True:
        batch = apply.read_batch(
            session.sconn,
            session.prev.seq_to,
            session.targets,
            max_rows=cfg.batch_rows,
            max_bytes=cfg.batch_bytes,
            ignore=skipped,
        )
        if stop is not None and batch.head != stop:
            raise CutoverAborted(
                f"the journal head moved during the freeze ({stop} → {batch.head})",
                hint="another connection wrote despite the lock; report this",
            )
        if batch.empty:
            return session.prev
        current = Phase.CUTOVER if stop is not None else Phase.CATCHUP
        try:
            applied = session.writer.write_batch(batch, session.prev, extra=_record(session, batch, current))
        except ReplicatorError as exc:
            # Before the freeze the app still writes: a batch can meet rows it changed since they were read
            # (two rows swapping a unique value). Its transaction rolled back whole, so read it again, as the
            # daemon would. In the freeze nothing writes: a transient error there is not a race; it aborts.
            # Not a failpoint's raise (a test's crash stand-in must end the cutover) nor a lost connection
            # (the batch cannot be read again on it).
            if (
                stop is not None
                or not exc.transient
                or isinstance(exc, faults.FailpointHit)
                or session.pconn.broken
                or retries >= CATCHUP_RETRIES
            ):
                raise
            retries += 1
            session.log.warning("catch-up batch read again", error=exc.message, attempt=retries)
            time.sleep(0.05 * retries)
            continue
        retries = 0
        session.prev = applied.checkpoint
        if budget is not None:
            budget.check("a drain batch")
        if stop is None and batch.head - batch.seq_to <= leave:
            return session.prev


def _record(
    session: _Session, batch: apply.Batch, current: Phase
) -> Callable[[psycopg.Connection[Any], apply.Applied], None]:
    def record(conn: psycopg.Connection[Any], applied: apply.Applied) -> None:
        phase.write(
            conn, session.state_schema, ApplyState(phase=current, applied_seq=batch.seq_to, head_seq=batch.head)
        )
        if batch.ignored:
            skips.count_ignored(conn, session.state_schema, batch.ignored, batch.seq_to, session.skipped)

    return record


def prove_chain(session: _Session, head: Checkpoint, stop: int) -> None:
    """Every seq ≤ stop is covered by exactly one checkpoint: the chain verifies and its head is at stop.

    The preflight verified the whole chain up to ``session.verified``; here the records from that one
    on are verified (links, hashes, contiguous seq ranges), and it must still be the record verified.
    """
    base = session.verified
    records = list(store.iter_records(session.pconn, since=base.number - 1, schema=session.state_schema))
    if not records or records[0].number != base.number or records[0].hash != base.hash:
        raise VerificationFailed(
            f"checkpoint {base.number} changed since the preflight verified it",
            hint="run `replicator checkpoints verify`",
        )
    findings = [
        f
        for f in audit.verify(records)
        # the list starts at base on purpose: its missing predecessors are not a finding
        if not (
            f.number == base.number
            and f.problem in (audit.Problem.BROKEN_LINK, audit.Problem.BAD_ROOT, audit.Problem.DELETED)
        )
    ]
    if findings:
        raise VerificationFailed(f"the checkpoint chain does not verify after the drain: {findings[0]}", hint="")
    if head.seq_to != stop or records[-1].number != head.number:
        raise VerificationFailed(
            f"the chain head #{head.number} covers seq {head.seq_to}, not the stop seq {stop}",
            hint="run `replicator checkpoints verify`",
        )


# --------------------------------------------------------------------------------------------
# step 4: verify at the stop point


def verify_stop_point(session: _Session, prepass: Prepass, stop: int) -> tuple[TableProof, ...]:
    """Counts and checksums of every journaled table equal on both sides at ``stop``; else abort naming keys.

    Snapshot-only tables are proven by :func:`copy_again`, after they are copied from the frozen SQLite."""
    names = session.journaled_tables()
    running = session.running = apply.read_digests(session.pconn, session.state_schema, names)
    changed = verify._pending_keys(session.sconn, prepass.head, stop) if stop > prepass.head else {}
    now = _open_again(session)
    try:
        now.execute("BEGIN")
        quarantined = _quarantined(session)
        sqlite_side = {
            name: _sqlite_at_stop(session, prepass, now, name, changed.get(name), quarantined) for name in names
        }
        bad = _changed_differ(session, now, stop)
    finally:
        now.close()
    proofs = []
    for name in names:
        (s_rows, s_sum), how = sqlite_side[name]
        s_digest = format(s_sum % _MODULUS, "064x")
        p_rows, p_digest = running.get(name, (-1, ""))
        if (p_rows, p_digest) != (s_rows, s_digest):  # not journaled, or a type read back unlike it is written
            side = _pg_full(session, name)
            p_rows, p_digest = side
            how = how if name in running else "full"
        proofs.append(
            TableProof(
                name,
                session.plan.table(name).name,
                *(s_rows, s_digest, p_rows, p_digest, how),
                independent=session.independent.get(name),
            )
        )
        if (p_rows, p_digest) != (s_rows, s_digest) and name not in bad:
            bad.append(name)
    if bad:
        _report_keys(session, bad)
    session.log.info("stop point verified", tables=len(proofs), changed=sorted(changed))
    return tuple(proofs)


def _prove_changed(session: _Session, applied: int) -> None:
    """Before the freeze: the keys journaled since the preflight compared, as far as the catch-up applied
    them, compared by the independent reading; abort (nothing fenced) naming any that differ. The stop
    point then reads only the keys journaled after ``applied``, so the outage pays for few."""
    now = _open_again(session)
    try:
        now.execute("BEGIN")
        bad = _changed_differ(session, now, applied)
    finally:
        now.close()
    if bad:
        _report_keys(session, bad, "in rows changed since the preflight")
    if session.compared_at is not None:
        session.compared_at = max(session.compared_at, applied)


def _changed_differ(session: _Session, now: sqlite3.Connection, applied: int) -> list[str]:
    """Tables whose rows journaled in (``session.compared_at``, ``applied``] differ by the independent reading.

    The cutover's own drains applied those rows after the preflight compared, and the stop point's
    digests are the load path's: they agree with any conversion mistake. Only the changed keys are read,
    in ``now``'s read transaction, with PostgreSQL at ``applied`` (only the cutover applies: it holds the
    locks). A key journaled again after ``applied`` is in flight and left to the next call (the stop
    point's, where nothing is). A table whose journal key is not its compared key is compared whole."""
    if session.compared_at is None or applied <= session.compared_at:
        return []
    changed = verify._pending_keys(now, session.compared_at, applied)
    head = journal.head(now)
    again = verify._pending_keys(now, applied, head) if head is not None and head > applied else {}
    bad, whole = [], []
    with session.pconn.transaction():
        for name, journaled in changed.items():
            if name not in session.independent:  # compared whole when copied again (snapshot-only), or skipped
                continue
            flying = {verify.key_marker(k) for k in again.get(name, ())}
            keys = [k for k in journaled if verify.key_marker(k) not in flying]
            shape = verify_shape.independent_shape(session.pconn, session.state_schema, session.plan, name)
            cap = session.meta.tables.get(name)
            if cap is None or not shape.key_positions or tuple(cap.key_columns or ()) != shape.key_source:
                whole.append(name)
            elif keys and verify.compare_keys(now, session.pconn, shape, keys):
                bad.append(name)
    if whole:
        report = verify.verify(
            session.source, session.dsn, session.config, whole, plan=session.plan, applied_by_caller=True
        )
        bad += report.mismatched
    session.log.info("changed rows compared independently", tables=sorted(changed), differing=bad, whole=whole)
    return bad


def _shape(session: _Session, name: str, quarantined: dict[str, frozenset[str]] | None = None) -> verify_shape.Shape:
    """The load-path shape; with ``quarantined``, the SQLite side leaves the table's quarantined keys out."""
    shape = verify_shape.shape_of(session.plan.table(name), session.plan.schema)
    keys = (quarantined or {}).get(name)
    return msgspec.structs.replace(shape, quarantined=keys) if keys else shape


def _quarantined(session: _Session) -> dict[str, frozenset[str]]:
    """The quarantine's keys per table, as the apply has left it so far (the caller's transaction)."""
    return verify_shape.quarantined_keys(session.pconn, session.state_schema, session.plan.tables)


def _sqlite_at_stop(
    session: _Session,
    prepass: Prepass,
    now: sqlite3.Connection,
    name: str,
    keys: list[tuple[Any, ...]] | None,
    quarantined: dict[str, frozenset[str]],
) -> tuple[tuple[int, int], str]:
    """The SQLite side at the stop point: the pre-pass, adjusted by the changed keys, or re-read (also when
    the table's quarantined keys changed since the pre-pass: that changes rows no key names)."""
    base = prepass.digests[name]
    shape = _shape(session, name, quarantined)
    whole = quarantined.get(name) != prepass.quarantined.get(name)
    if name not in session.targets or whole:  # not journaled (snapshot-only): read it whole
        side = verify_sqlite.table_digest_sqlite(now, shape)
        return (side.count, side.sum), "full"
    if not keys:
        return base, "prepass"
    cap = session.meta.tables.get(name)
    if cap is None or cap.key_columns is None or len(set(keys)) > max(1, base[0]) * FULL_RECHECK_FRACTION:
        side = verify_sqlite.table_digest_sqlite(now, shape)
        return (side.count, side.sum), "full"
    try:
        old = _rows_by_key(prepass.conn, shape, cap.key_columns, keys)
        new = _rows_by_key(now, shape, cap.key_columns, keys)
    except (sqlite3.OperationalError, UnicodeDecodeError):  # text that is not UTF-8: the full read handles it
        side = verify_sqlite.table_digest_sqlite(now, shape)
        return (side.count, side.sum), "full"
    count, total = base
    count += new[0] - old[0]
    total += new[1] - old[1]
    return (count, total % _MODULUS), "incremental"


def _rows_by_key(
    conn: sqlite3.Connection, shape: verify_shape.Shape, key_columns: tuple[str, ...], keys: list[tuple[Any, ...]]
) -> tuple[int, int]:
    """Count and digest sum of the rows holding ``keys`` in this connection's read transaction."""
    to_rows = verify_shape.source_rows(shape)
    encoder = RowEncoder(shape.kinds)
    cols = ", ".join(quote_ident(c) for c in shape.source_columns) or "NULL"
    keyed = ", ".join(quote_ident(c) for c in key_columns)
    seen: set[tuple[Any, ...]] = set()
    count = total = 0
    for key in keys:
        marker = tuple((type(v).__name__, v) for v in key)
        if marker in seen:
            continue
        seen.add(marker)
        where, params = journal.key_predicate(key_columns, key)
        query = f"SELECT {cols}, {keyed} FROM {quote_ident(shape.source)} WHERE {where}"  # noqa: S608 - quote_ident
        raw = [r for r in conn.execute(query, params).fetchall() if journal.same_key(r[-len(key_columns) :], key)]
        for row in to_rows([r[: len(r) - len(key_columns)] for r in raw]):
            if row is None:
                continue
            count += 1
            total += int.from_bytes(hashlib.sha256(encoder.encode(row)).digest(), "big")
    return count, total


def _pg_inconsistent(session: _Session) -> list[str]:
    """Tables whose rows in PostgreSQL no longer add up to the running digest: written by someone else.

    Nothing applies meanwhile (we hold the daemon's lock), so from here to the stop point PostgreSQL
    changes only through the drain, whose batches keep the running digests exact."""
    with pg.connect(session.dsn, autocommit=True, connect_timeout=session.config.target.connect_timeout_s) as conn:
        running = apply.read_digests(conn, session.state_schema, list(session.targets))
        bad = []
        for name, target in session.targets.items():
            digest = apply.table_digest_of(conn, target)
            if running.get(name) != (digest.count, digest.hexdigest()):
                bad.append(name)
    return bad


def _pg_full(session: _Session, name: str) -> tuple[int, str]:
    with session.pconn.transaction():
        side = verify_pg.table_digest_pg(session.pconn, _shape(session, name))
    return side.count, side.hexdigest()


def _report_keys(session: _Session, tables: list[str], where: str = "at the stop point") -> None:
    """A real difference: find the keys (verify's bisection) and abort naming them."""
    report = verify.verify(  # the cutover holds the apply locks: keys journaled past its drains are in flight
        session.source, session.dsn, session.config, tables, keys=True, plan=session.plan, applied_by_caller=True
    )
    parts = []
    for t in report.tables:
        keys = [*(f"missing {k}" for k in t.missing), *(f"extra {k}" for k in t.extra)]
        keys += [f"different {k}" for k in t.different]
        parts.append(f"{t.table} ({t.source_rows} vs {t.target_rows} rows; {', '.join(keys[:10]) or 'no key'})")
    raise VerificationFailed(
        f"tables differ {where}: {'; '.join(parts)}",
        hint="nothing was fenced; fix PostgreSQL (or re-snapshot the table) and cut over again",
    )


def copy_again(session: _Session, frozen: Frozen, options: Options) -> tuple[TableProof, ...]:
    """Every ``snapshot-only`` table (no key the journal could name) emptied and loaded again from the frozen
    SQLite, then proven whole: both sides read in full, SQLite through the held write transaction (no write
    can reach it). Runs in the PostgreSQL transaction the fence commit waits for: an abort (or ``--dry-run``)
    leaves PostgreSQL's copy as it was. Foreign keys do not act on the reload (``session_replication_role``
    = replica, or parked here and restored and validated by :func:`finish_postgres`)."""
    conn, names = session.pconn, session.copied_tables()
    tables = [session.plan.table(n) for n in names]
    identity = runs.source_identity(session.source)
    run_id = runs.start_run(conn, session.state_schema, command="cutover-copy", mode=session.plan.mode, source=identity)
    row = conn.execute("SELECT current_setting('session_replication_role')").fetchone()
    role = str(row[0]) if row else "origin"
    if session.writer.fk == "replica":
        conn.execute("SET LOCAL session_replication_role = replica")
    else:
        apply.park_foreign_keys(conn, session.state_schema, session.plan.schema, [t.name for t in tables])
    proofs, rows, refused, bad = [], 0, 0, []
    policy = session.config.snapshot.on_bad_value
    held = dependents.seeded(session.plan, policy, conn, session.state_schema, names)
    ctx = snapshot.LoadContext(frozen.conn, conn, snapshot.LoadRun(session.state_schema, identity, run_id, policy))
    for table in tables:
        result = snapshot.load_table(ctx, session.plan, table, held=held)
        if result.quarantined and not options.accept_quarantine:
            raise CutoverAborted(
                f"{result.quarantined} row(s) of snapshot-only table {table.source!r} hold values PostgreSQL cannot "
                "hold exactly (quarantined): those rows would be missing",
                hint="fix them in SQLite, or pass --accept-quarantine (recorded in the certificate)",
            )
        rows, refused = rows + result.rows, refused + result.quarantined
        shape = _shape(session, table.source, _quarantined(session))
        ours = verify_sqlite.table_digest_sqlite(frozen.conn, shape)
        theirs = verify_pg.table_digest_pg(conn, shape)
        independent = verify_compare.verify_table(
            verify_sides.Sides(frozen.conn, conn, None, "off"),
            verify_shape.independent_shape(conn, session.state_schema, session.plan, table.source),
        )
        proofs.append(
            TableProof(
                table.source,
                table.name,
                *(ours.count, ours.hexdigest(), theirs.count, theirs.hexdigest(), "copied"),
                independent=_independent(independent, "copied", None),
            )
        )
        # A keyless table's quarantined rows are missing for the independent reading too (it cannot leave
        # them out by key): accepted with the quarantine, as the rows are.
        if (ours.count, ours.hexdigest()) != (theirs.count, theirs.hexdigest()) or not (
            independent.match or (result.quarantined and not table.key_source)
        ):
            bad.append(table.source)
    if session.writer.fk == "replica":
        conn.execute("SELECT set_config('session_replication_role', %s, true)", (role,))
    runs.finish_run(conn, session.state_schema, run_id, status="ok", rows=rows, quarantined=refused)
    if bad:
        raise VerificationFailed(
            f"snapshot-only table(s) differ right after they were copied again: {', '.join(bad)}",
            hint="nothing was fenced; rerun with -v and report it",
        )
    session.log.info("snapshot-only tables copied again", tables=names, rows=rows)
    return tuple(proofs)


def _in_order(session: _Session, proofs: tuple[TableProof, ...]) -> tuple[TableProof, ...]:
    """The proofs in the plan's table order (the certificate lists tables the same way every time)."""
    order = {name: i for i, name in enumerate(session.certified_tables())}
    return tuple(sorted(proofs, key=lambda p: order.get(p.table, len(order))))


# --------------------------------------------------------------------------------------------
# step 5: finish PostgreSQL (inside the transaction the fence commit waits for)


class Finished(msgspec.Struct, frozen=True):
    head: Checkpoint
    proofs: tuple[TableProof, ...]
    sequences: dict[str, int]
    foreign_keys: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    not_created: tuple[pgschema.NotCreated, ...] = ()


def finish_postgres(
    session: _Session, head: Checkpoint, frozen: Frozen, proofs: tuple[TableProof, ...], options: Options
) -> Finished:
    conn, schema = session.pconn, session.state_schema
    restored = apply.restore_foreign_keys(conn, schema, session.plan.schema)
    checks = pgschema.validate_foreign_keys(conn, session.plan.schema)
    results = [(c.table, c.name, c.error) for c in restored] + [(c.table, c.name, c.error) for c in checks]
    broken = [
        f"{table}.{name}: {error} (orphans: {_orphans(conn, session.plan.schema, table, name)})"
        for table, name, error in results
        if error is not None
    ]
    if broken:
        raise CutoverAborted(
            "foreign key(s) do not hold in PostgreSQL: " + "; ".join(broken),
            hint="the orphans exist in SQLite too (it does not enforce FKs): fix them there, let them replicate, "
            "cut over again",
        )
    sequences = pgschema.sync_sequences(conn, session.plan, pgschema.read_sqlite_sequence(frozen.conn))
    refused = _remaining_post_load(conn, session.plan)
    not_created = (*_dropped(session.plan), *refused)
    if not options.accept_missing_constraints:  # refused since the preflight tried them: new rows collide
        _refuse_not_created(list(not_created))
    cut = next_checkpoint(head, seq_to=frozen.stop_seq, tables=_restated(session, proofs), kind=Kind.CUTOVER)
    store.append(conn, cut, schema)
    phase.write(conn, schema, ApplyState(phase=Phase.DONE, applied_seq=frozen.stop_seq, head_seq=frozen.stop_seq))
    fks = tuple(f"{table}.{name}" for table, name, _error in results)
    warnings = tuple(pgschema.warning(n) for n in refused)
    return Finished(cut, proofs, sequences, fks, warnings, not_created)


def _restated(session: _Session, proofs: tuple[TableProof, ...]) -> dict[str, TableChange]:
    """What the cutover checkpoint records, so the chain adds up to the certificate (:mod:`checkpoints.ledger`):
    each snapshot-only table emptied and copied again, and each table whose certified checksum is a full read
    that reads its values otherwise than the apply's running checksum (same rows: the ledger checks the count)."""
    out = {}
    for p in proofs:
        if p.how == "copied":
            out[p.table] = TableChange(upserted=p.pg_rows, upserted_digest=p.pg_digest, restated="reload")
        elif session.running.get(p.table) != (p.pg_rows, p.pg_digest):
            out[p.table] = TableChange(upserted=p.pg_rows, upserted_digest=p.pg_digest, restated="read")
    return out


def _orphans(conn: psycopg.Connection[Any], schema_name: str, table: str, name: str, limit: int = 10) -> str:
    """The first orphan keys of a foreign key, as ``(col)=(value)`` text."""
    row = conn.execute(
        "SELECT c.conrelid, c.confrelid, c.conkey, c.confkey FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s AND c.conname = %s "
        "AND c.conrelid = %s::regclass",
        (schema_name, name, sql.Identifier(schema_name, table).as_string(conn)),
    ).fetchone()
    if row is None:
        return "constraint not found"
    rel, frel, keys, fkeys = row

    def names(relid: int, nums: list[int]) -> list[str]:
        got = conn.execute(
            "SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s AND attnum = ANY(%s)", (relid, nums)
        ).fetchall()
        by_num = dict(got)
        return [str(by_num[n]) for n in nums]

    child, parent = names(rel, list(keys)), names(frel, list(fkeys))
    fref = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s",
        (frel,),
    ).fetchone()
    assert fref is not None
    match = sql.SQL(" AND ").join(
        sql.SQL("p.{} = c.{}").format(sql.Identifier(p), sql.Identifier(c)) for p, c in zip(parent, child, strict=True)
    )
    not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in child)
    query = sql.SQL(
        "SELECT DISTINCT {} FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {}) LIMIT {}"
    ).format(
        sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(c)) for c in child),
        sql.Identifier(schema_name, table),
        not_null,
        sql.Identifier(str(fref[0]), str(fref[1])),
        match,
        sql.Literal(limit),
    )
    with conn.transaction():
        found = conn.execute(query).fetchall()
    return ", ".join(f"({', '.join(child)})=({', '.join(map(str, r))})" for r in found) or "none found"


def _remaining_post_load(conn: psycopg.Connection[Any], plan: pgschema.SchemaPlan) -> list[pgschema.NotCreated]:
    """UNIQUE/indexes/CHECKs/FKs the snapshot could not create yet (e.g. refused then, fixable now); what
    PostgreSQL still refuses is returned, for the certificate."""
    missing = pgschema.missing_post_load(conn, plan)
    if not any(t.post_load for t in missing.tables):
        return []
    return pgschema.post_load_refusals(conn, missing, timeouts_abort=True)


def _committed(session: _Session, stop: int) -> bool:
    """Asked on a new connection: is the cutover checkpoint for ``stop`` the chain's head?"""
    try:
        with pg.connect(session.dsn, autocommit=True, connect_timeout=session.config.target.connect_timeout_s) as c:
            head = store.latest(c, schema=session.state_schema)
    except psycopg.Error:
        return False  # unknown: treated as not committed, and said so in the abort message
    return head is not None and head.kind is Kind.CUTOVER and head.seq_to == stop


def analyze(session: _Session) -> None:
    for t in session.plan.tables:
        session.pconn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(session.plan.schema, t.name)))


# --------------------------------------------------------------------------------------------
# failure before the fence committed


def _set_phase(session: _Session, current: Phase, stop: int, reason: str, hint: str = "") -> None:
    with contextlib.suppress(Exception):
        session.pconn.execute("SET statement_timeout = 0")
        with session.pconn.transaction():
            state = ApplyState(
                phase=current, applied_seq=session.prev.seq_to, head_seq=stop, reason=reason[:2000], hint=hint
            )
            phase.write(session.pconn, session.state_schema, state)


def _abort(session: _Session, frozen: Frozen, clock: _Clock, exc: BaseException) -> BaseException:
    """Roll back, release the app's writers, record STREAMING with the reason; the error to raise."""
    if frozen.fenced:  # SQLite's fence committed, PostgreSQL's finishing transaction did not
        reason = str(getattr(exc, "message", "")) or str(exc) or type(exc).__name__
        _set_phase(session, Phase.STREAMING, frozen.stop_seq, f"{INTERRUPTED_BETWEEN_COMMITS}: {reason}", FINISH_HINT)
        return CutoverAborted(
            f"{INTERRUPTED_BETWEEN_COMMITS} ({reason}): SQLite is fenced (the app's writes are refused, nothing "
            f"is lost) and PostgreSQL's finishing work was rolled back (batches through seq {frozen.stop_seq} stay)",
            hint=FINISH_HINT,
        )
    frozen.rollback()
    with contextlib.suppress(Exception):
        if session.pconn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            session.pconn.rollback()
    interrupted = isinstance(exc, KeyboardInterrupt)
    reason = "interrupted (Ctrl-C)" if interrupted else str(getattr(exc, "message", "")) or str(exc)
    step = clock.current or "freeze"
    _set_phase(
        session,
        Phase.STREAMING,
        frozen.stop_seq,
        f"cutover aborted at {step}: {reason}",
        "restart `replicator run`; fix the cause and run cutover again",
    )
    state = (
        f"after {frozen.outage():.2f}s frozen: SQLite is NOT fenced and writable again, PostgreSQL's finishing "
        f"work was rolled back (replicated batches through seq {session.prev.seq_to} stay), both locks released"
    )
    session.log.warning("cutover aborted", step=step, reason=reason, outage_s=round(frozen.outage(), 3))
    hint = getattr(exc, "hint", "") or "see the log above"
    cls = CutoverInterrupted if interrupted else CutoverAborted
    error = cls(f"cutover aborted at {step} ({reason}); {state}", hint=f"{hint}; restart `replicator run`")
    if isinstance(exc, ReplicatorError):
        error.exit_code = exc.exit_code
    return error


# --------------------------------------------------------------------------------------------
# small helpers


class _Clock:
    """Seconds per step, in order; ``current`` names the step running (for the abort message)."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self.current: str | None = None
        """The innermost step running, else the last one that ran (a failure between steps follows it)."""
        self._running: list[str] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._running.append(name)
        self.current = name
        started = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.steps[name] = round(self.steps.get(name, 0.0) + time.perf_counter() - started, 4)
            self._running.remove(name)
            self.current = self._running[-1] if self._running else name


def _open_again(session: _Session, *, readonly: bool = True) -> sqlite3.Connection:
    """Another connection to the source, already checked when the session opened it: the file-shape
    check is skipped (under a live app's checkpoints it can race; a false alarm must not abort the freeze)."""
    busy = session.config.source.busy_timeout_ms
    return sqlite_source.connect(session.source, readonly=readonly, busy_timeout_ms=busy, check=False)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _settled_sha256(session: _Session) -> str:
    """SHA-256 of the fenced file after folding the WAL into it (nothing can write it any more); read without
    dropping this process's SQLite locks on it (the session's connections are still open)."""
    with (
        contextlib.closing(_open_again(session, readonly=False)) as conn,
        contextlib.suppress(sqlite3.Error),
    ):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sqlite_source.sha256(session.source)
