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
3. **Drain** to S with the apply :class:`~replicator.apply.writer.Writer`, then prove it: the chain verifies
   (no gap, no overlap, every link) and its head covers exactly S.
4. **Verify at the stop point**: the PostgreSQL side is the running per-table digests the apply
   maintains in each batch's transaction; the SQLite side is the pre-pass digest, adjusted for the
   keys journaled in (H0, S] (old rows read from the pre-pass transaction, new rows now). Cost:
   O(changed keys), not O(table). A mismatch is re-checked by a full read of both sides and, if
   real, reported by key (verify's bisection). ``snapshot-only`` tables (no key the journal could
   name) are copied again instead (:func:`~replicator.cutover.stoppoint.copy_again`, in step 5's
   transaction): emptied, loaded from the frozen SQLite, then read whole on both sides.
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

This module is the entry and the order of the steps (and what happens on failure, and step 7); each step's
work is a module of its own, named after what it holds: :mod:`~replicator.cutover.session` (the options,
the locks and connections, the apply session), :mod:`~replicator.cutover.preflight` (1),
:mod:`~replicator.cutover.prepass` (the pre-pass and the SQLite side adjusted from it),
:mod:`~replicator.cutover.freeze` (2, the ``--max-downtime`` budget, a lock wait cut short),
:mod:`~replicator.cutover.drain` (3 and the catch-up), :mod:`~replicator.cutover.comparison` and
:mod:`~replicator.cutover.stoppoint` (4), :mod:`~replicator.cutover.finish` (5, and what 6 asks of
PostgreSQL), :mod:`~replicator.cutover.clock` (the seconds per step).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import sqlite3
from pathlib import Path

import msgspec
import psycopg

from checkpoints.model import tool_version
from replicator import faults, files, pg
from replicator.config import Config
from replicator.cutover import backup, signing
from replicator.cutover.certificate import Certificate, QuarantineEntry, TableProof
from replicator.cutover.clock import Clock
from replicator.cutover.comparison import prove_changed
from replicator.cutover.drain import drain, prove_chain
from replicator.cutover.finish import Finished, analyze, committed, fence_where, finish_postgres
from replicator.cutover.freeze import Budget, Frozen, freeze, lock_wait
from replicator.cutover.preflight import preflight
from replicator.cutover.prepass import Prepass
from replicator.cutover.session import (
    CertificateFailed,
    CutoverAborted,
    CutoverInterrupted,
    Held,
    Options,
    Session,
)
from replicator.cutover.stoppoint import copy_again, in_order, verify_stop_point
from replicator.errors import ReplicatorError
from replicator.plan import refusals, schemaplan, skips
from replicator.progress import Progress
from replicator.state.phase import FINISH_HINT, INTERRUPTED_BETWEEN_COMMITS, ApplyState, Phase
from replicator.state.quarantine import list_values
from triggers import fence
from triggers import source as sqlite_source


class Result(msgspec.Struct, frozen=True):
    dry_run: bool
    stop_seq: int
    steps: dict[str, float]
    write_outage_s: float
    tables: tuple[TableProof, ...]
    certificate: Certificate | None = None
    certificate_path: str | None = None
    warnings: tuple[str, ...] = ()
    not_created: tuple[schemaplan.NotCreated, ...] = ()
    """What PostgreSQL lacks of SQLite's schema after this cutover (a dry run: would lack)."""


# --------------------------------------------------------------------------------------------
# the command


def cutover(source: Path, dsn: str, config: Config, options: Options, progress: Progress | None = None) -> Result:
    """Steps 1–7 (see the module docstring); raises CutoverAborted with the state things are in.
    ``progress`` follows the reads before the freeze: the preflight's full verify and the pre-pass."""
    clock = Clock()
    key = signing.load_private(Path(config.signing.key)) if config.signing.key and not options.dry_run else None
    bounded = pg.with_lock_timeout(dsn, int(options.max_downtime_s * 1000))  # no lock wait outlasts the budget
    held = Held.open(Path(source), bounded, config, progress=progress, signing_key=key)
    try:
        return _steps(held, clock, options)
    except BaseException as exc:
        waited = lock_wait(held, exc, clock, options)
        if waited is None:
            raise
        raise waited from exc
    finally:
        held.close()


def _steps(held: Held, clock: Clock, options: Options) -> Result:
    """:func:`cutover` in order; raises CutoverAborted with the state things are in."""
    with clock.step("preflight"):
        session, quarantined = preflight(held, options)
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
                prove_changed(session, caught_up.seq_to)
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


def _quarantine_entries(session: Session) -> tuple[QuarantineEntry, ...]:
    """Every quarantined value, for the certificate (reviewed and acknowledged, or accepted at cutover)."""
    values = list_values(session.state_store, limit=10_000_000)
    return tuple(QuarantineEntry(v.table, v.key, v.column, v.reason, v.action, v.acknowledged) for v in values)


def _frozen_steps(session: Session, prepass: Prepass, frozen: Frozen, clock: Clock, options: Options) -> Finished:
    """Steps 2–6: everything that runs while the app's writers wait."""
    budget = Budget(frozen, options.max_downtime_s, session.pconn)
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
                    proofs = in_order(session, (*proofs, *copy_again(session, frozen, options)))
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
        if options.dry_run or not frozen.fenced or not committed(session, frozen.stop_seq):
            raise
        session.log.warning("PostgreSQL committed though its acknowledgement was lost")
    budget.clear()
    return finished


def _after_fence(
    session: Session,
    options: Options,
    clock: Clock,
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
            warnings.append(f"ANALYZE failed: {refusals.pg_message(exc)}; run it by hand")
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
                certificate.store(session.state_store, cert)
        except psycopg.Error as exc:
            warnings.append(f"certificate not stored in the target ({refusals.pg_message(exc)}); the file {path} is")
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


def _backup(session: Session, options: Options) -> backup.BackupResult:
    out = options.backup_dir or session.source.parent / "replicator-backups"
    return backup.backup(session.source, out, busy_timeout_ms=session.config.source.busy_timeout_ms)


# --------------------------------------------------------------------------------------------
# failure before the fence committed


def _set_phase(session: Session, current: Phase, stop: int, reason: str, hint: str = "") -> None:
    with contextlib.suppress(Exception):
        session.pconn.execute("SET statement_timeout = 0")
        with session.pconn.transaction():
            state = ApplyState(
                phase=current, applied_seq=session.prev.seq_to, head_seq=stop, reason=reason[:2000], hint=hint
            )
            session.state_store.write_phase(state)


def _abort(session: Session, frozen: Frozen, clock: Clock, exc: BaseException) -> BaseException:
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


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _settled_sha256(session: Session) -> str:
    """SHA-256 of the fenced file after folding the WAL into it (nothing can write it any more); read without
    dropping this process's SQLite locks on it (the session's connections are still open)."""
    with (
        contextlib.closing(session.open_again(readonly=False)) as conn,
        contextlib.suppress(sqlite3.Error),
    ):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sqlite_source.sha256(session.source)
