"""Step 4, verify at the stop point: every certified table's count and checksum equal on both sides at the stop
seq S, or the cutover aborts naming the keys that differ.

A journaled table is proven from what is already known: PostgreSQL's side is the apply's running digest,
SQLite's the pre-pass adjusted by the keys journaled since (:mod:`replicator.cutover.prepass`), and those
keys are read again by the independent reading. A ``snapshot-only`` table, which the journal cannot
follow, is copied again from the frozen SQLite instead (:func:`copy_again`) and read whole on both sides.
"""

from __future__ import annotations

from replicator.apply import dependents
from replicator.apply.foreignkeys import park_foreign_keys
from replicator.apply.tablestate import read_digests
from replicator.cutover.certificate import TableProof
from replicator.cutover.comparison import (
    changed_differ,
    independent_check,
    load_shape,
    pg_full,
    quarantined_keys,
    report_keys,
)
from replicator.cutover.freeze import Frozen
from replicator.cutover.prepass import MODULUS, Prepass, sqlite_at_stop
from replicator.cutover.session import CutoverAborted, Options, Session
from replicator.errors import VerificationFailed
from replicator.inspect import verify, verify_compare, verify_pg, verify_shape, verify_sides, verify_sqlite
from replicator.load import snapshot
from replicator.state.identity import source_identity


def verify_stop_point(session: Session, prepass: Prepass, stop: int) -> tuple[TableProof, ...]:
    """Counts and checksums of every journaled table equal on both sides at ``stop``; else abort naming keys.

    Snapshot-only tables are proven by :func:`copy_again`, after they are copied from the frozen SQLite."""
    names = session.journaled_tables()
    running = session.running = read_digests(session.state_store, names)
    changed = verify._pending_keys(session.sconn, prepass.head, stop) if stop > prepass.head else {}
    now = session.open_again()
    try:
        now.execute("BEGIN")
        quarantined = quarantined_keys(session)
        sqlite_side = {
            name: sqlite_at_stop(session, prepass, now, name, changed.get(name), quarantined) for name in names
        }
        bad = changed_differ(session, now, stop)
    finally:
        now.close()
    proofs = []
    for name in names:
        (s_rows, s_sum), how = sqlite_side[name]
        s_digest = format(s_sum % MODULUS, "064x")
        p_rows, p_digest = running.get(name, (-1, ""))
        if (p_rows, p_digest) != (s_rows, s_digest):  # not journaled, or a type read back unlike it is written
            side = pg_full(session, name)
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
        report_keys(session, bad)
    session.log.info("stop point verified", tables=len(proofs), changed=sorted(changed))
    return tuple(proofs)


def copy_again(session: Session, frozen: Frozen, options: Options) -> tuple[TableProof, ...]:
    """Every ``snapshot-only`` table (no key the journal could name) emptied and loaded again from the frozen
    SQLite, then proven whole: both sides read in full, SQLite through the held write transaction (no write
    can reach it). Runs in the PostgreSQL transaction the fence commit waits for: an abort (or ``--dry-run``)
    leaves PostgreSQL's copy as it was. Foreign keys do not act on the reload (``session_replication_role``
    = replica, or parked here and restored and validated by :func:`finish_postgres`)."""
    conn, state_store, names = session.pconn, session.state_store, session.copied_tables()
    tables = [session.plan.table(n) for n in names]
    identity = source_identity(session.source)
    run_id = state_store.start_run(command="cutover-copy", mode=session.plan.mode, source=identity)
    row = conn.execute("SELECT current_setting('session_replication_role')").fetchone()
    role = str(row[0]) if row else "origin"
    if session.writer.fk == "replica":
        conn.execute("SET LOCAL session_replication_role = replica")
    else:
        park_foreign_keys(state_store, session.plan.schema, [t.name for t in tables])
    proofs, rows, refused, bad = [], 0, 0, []
    policy = session.config.snapshot.on_bad_value
    held = dependents.seeded(session.plan, policy, state_store, names)
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
        shape = load_shape(session, table.source, quarantined_keys(session))
        ours = verify_sqlite.table_digest_sqlite(frozen.conn, shape)
        theirs = verify_pg.table_digest_pg(conn, shape)
        independent = verify_compare.verify_table(
            verify_sides.Sides(frozen.conn, conn, None, "off"),
            verify_shape.independent_shape(state_store, session.plan, table.source),
        )
        proofs.append(
            TableProof(
                table.source,
                table.name,
                *(ours.count, ours.hexdigest(), theirs.count, theirs.hexdigest(), "copied"),
                independent=independent_check(independent, "copied", None),
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
    state_store.finish_run(run_id, status="ok", rows=rows, quarantined=refused)
    if bad:
        raise VerificationFailed(
            f"snapshot-only table(s) differ right after they were copied again: {', '.join(bad)}",
            hint="nothing was fenced; rerun with -v and report it",
        )
    session.log.info("snapshot-only tables copied again", tables=names, rows=rows)
    return tuple(proofs)


def in_order(session: Session, proofs: tuple[TableProof, ...]) -> tuple[TableProof, ...]:
    """The proofs in the plan's table order (the certificate lists tables the same way every time)."""
    order = {name: i for i, name in enumerate(session.certified_tables())}
    return tuple(sorted(proofs, key=lambda p: order.get(p.table, len(order))))
