"""How the cutover compares a table's two sides, beyond the apply's running digests: the load path's shape
with the quarantine's keys left out, PostgreSQL read whole, the keys journaled since the preflight compared
read again by verify's independent reading, and a real difference reported by key.

Shared by the preflight, the pre-pass, the catch-up before the freeze and the stop point, each at its own
position: one reading of each kind, so the steps cannot come to compare a table differently.
"""

from __future__ import annotations

import sqlite3

import msgspec

from replicator.cutover.certificate import IndependentCheck
from replicator.cutover.session import Session
from replicator.errors import VerificationFailed
from replicator.inspect import verify, verify_compare, verify_pg, verify_shape
from triggers import journal


def independent_check(t: verify_compare.TableVerify, at: str, seq: int | None) -> IndependentCheck:
    return IndependentCheck(
        at, t.status, t.source_rows, t.source_digest, t.target_rows, t.target_digest, seq=seq, in_flight=t.in_flight
    )


def prove_changed(session: Session, applied: int) -> None:
    """Before the freeze: the keys journaled since the preflight compared, as far as the catch-up applied
    them, compared by the independent reading; abort (nothing fenced) naming any that differ. The stop
    point then reads only the keys journaled after ``applied``, so the outage pays for few."""
    now = session.open_again()
    try:
        now.execute("BEGIN")
        bad = changed_differ(session, now, applied)
    finally:
        now.close()
    if bad:
        report_keys(session, bad, "in rows changed since the preflight")
    if session.compared_at is not None:
        session.compared_at = max(session.compared_at, applied)


def changed_differ(session: Session, now: sqlite3.Connection, applied: int) -> list[str]:
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
            shape = verify_shape.independent_shape(session.state_store, session.plan, name)
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


def load_shape(session: Session, name: str, quarantined: dict[str, frozenset[str]] | None = None) -> verify_shape.Shape:
    """The load-path shape; with ``quarantined``, the SQLite side leaves the table's quarantined keys out."""
    shape = verify_shape.shape_of(session.plan.table(name), session.plan.schema)
    keys = (quarantined or {}).get(name)
    return msgspec.structs.replace(shape, quarantined=keys) if keys else shape


def quarantined_keys(session: Session) -> dict[str, frozenset[str]]:
    """The quarantine's keys per table, as the apply has left it so far (the caller's transaction)."""
    return verify_shape.quarantined_keys(session.state_store, session.plan.tables)


def pg_full(session: Session, name: str) -> tuple[int, str]:
    with session.pconn.transaction():
        side = verify_pg.table_digest_pg(session.pconn, load_shape(session, name))
    return side.count, side.hexdigest()


def report_keys(session: Session, tables: list[str], where: str = "at the stop point") -> None:
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
