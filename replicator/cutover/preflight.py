"""Step 1, the preflight: every check that can refuse before the app's writes are blocked, in the order that
names the cause first (the source's journal mode and schema, the target's phase, the apply session the daemon
would open, the chain, the options the operator must accept), then a catch-up to a small backlog and a full
verify. Its result is the :class:`~replicator.cutover.session.Session` every later step runs on: it exists
only once the plan is read and the chain verified.
"""

from __future__ import annotations

from typing import Any, Final

from checkpoints import audit, store
from replicator.cutover.comparison import independent_check, report_keys
from replicator.cutover.drain import drain
from replicator.cutover.finish import dropped, refuse_not_created
from replicator.cutover.session import CutoverAborted, Held, Options, Session
from replicator.errors import VerificationFailed
from replicator.inspect import verify
from replicator.plan import constraints, skips
from replicator.state import reverse
from replicator.state.phase import Phase
from replicator.state.quarantine import unacknowledged
from triggers import drift, fence

CATCHUP_BACKLOG: Final = 2_000
"""Preflight catches up until at most this many journal entries remain for the freeze to drain."""


def preflight(held: Held, options: Options) -> tuple[Session, dict[str, int]]:
    """Every check that can refuse before writes are blocked; returns the session, with the apply machinery
    open and the chain verified, and the quarantine counts accepted."""
    bound = held.log.bind(step="preflight")
    _refuse_source_or_target(held, bound)
    applying = held.open_apply()
    owed = held.state_store.pending_reloads()
    if owed:
        raise CutoverAborted(
            f"an online re-snapshot was interrupted and is still owed: {', '.join(sorted(owed))}",
            hint="run `replicator run` (it redoes the re-snapshot first) until it streams, then cut over",
        )
    findings = audit.verify(store.records(held.pconn, schema=held.state_schema))
    if findings:
        raise VerificationFailed(
            f"the checkpoint chain does not verify: {findings[0]}", hint="run `replicator checkpoints verify`"
        )
    session = Session(held, applying)  # verified: the chain head is the one just verified
    if options.rollback_window and not options.dry_run:
        not_owned = reverse.not_owned(session.pconn, list(reverse.shapes_of(session.plan).values()))
        if not_owned:
            raise CutoverAborted(
                f"the rollback window needs this role to own the migrated tables (its capture and fence triggers "
                f"fire in every session, replica mode included): not owned: {', '.join(not_owned[:10])}",
                hint="grant this role membership in the tables' owner (docs/least-privilege.md), or cut over with "
                "--no-rollback-window (then rollback needs an unchanged PostgreSQL)",
            )
    left_out = skips.skipped_columns(session.config, session.plan)
    if left_out and not options.accept_skipped_columns:
        raise CutoverAborted(
            f"config skips columns whose values are not in PostgreSQL: {', '.join(left_out)}",
            hint="pass --accept-skipped-columns (recorded in the certificate), or remove `skip = true` and "
            "reload the table with `replicator snapshot --replace --tables T`",
        )
    if not options.accept_missing_constraints:
        refuse_not_created(dropped(session.plan) + constraints.would_refuse(session.pconn, session.plan))
    quarantined = unacknowledged(session.state_store)
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
    return session, (quarantined if options.accept_quarantine else {})


def _refuse_source_or_target(held: Held, bound: Any) -> None:
    """The checks before the apply session opens: the source in WAL mode with the schema capture was installed
    on, the target neither cut over nor stopped on an error (a cutover interrupted between its commits is
    completed)."""
    mode = str(held.sconn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if mode != "wal":
        raise CutoverAborted(
            f"the source is in {mode!r} journal mode, not WAL",
            hint="in rollback-journal mode the fence commit would have to wait for every reader (and block new "
            "ones); switch once with `PRAGMA journal_mode=WAL` while the app is stopped, then cut over",
        )
    found = drift.check(held.sconn, drift.SchemaMark(-1, ""))
    if found.changed and (not found.installed or found.tables or found.new_tables):
        what = ", ".join([*(t.table for t in found.tables), *(f"{n} (new, not captured)" for n in found.new_tables)])
        raise CutoverAborted(
            f"the SQLite schema drifted since capture was installed: {what or 'capture removed'}",
            hint="run `replicator run` (it follows or reports drift) until it streams, then cut over",
        )
    state = held.state_store.read_phase()
    fenced = fence.status_on(held.sconn)
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


def _full_verify(session: Session, bound: Any) -> None:
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
            report_keys(session, list(report.mismatched), "in the preflight's full verify")
        session.independent = {
            t.table: independent_check(t, "preflight", report.applied_through) for t in report.tables
        }
        session.compared_at = report.applied_through
        bound.info("full verify passed", tables=len(report.tables), seconds=report.seconds)
