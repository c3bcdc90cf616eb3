"""``replicator rollback`` with the window open: go back to SQLite and lose nothing the app wrote on PostgreSQL.

In order (each step's failure leaves a state the next run finishes or undoes, named in the error):

1. **Catch up** (no outage): the reverse direction's batches until the journal is empty; entries an older
   running transaction (of any database in the cluster) holds above the horizon are waited for up to
   :data:`HELD_WAIT_S`, then left to step 4.
2. **Refused values**: a value the SQLite form cannot hold exactly was not written back
   (:mod:`~replicator.reverse.writeback`); while any is not acknowledged (``replicator quarantine ack``) going
   back would lose it, so rollback refuses, naming each. Checked again after the final drain (4): the app may
   write such a value until the fence, and the comparison after the drain does not read a row it did not write.
3. **Fence PostgreSQL** (:func:`replicator.state.reverse.fence`, one transaction, bounded by ``--max-downtime``):
   its commit waits for the app's transactions already writing, and from then on every app write on
   PostgreSQL fails with a message that says where the data went. The write outage starts here.
4. **Final drain**: every journal entry is now final; the last batches are written into SQLite.
   A value refused here (its transaction was still below the horizon at step 1) refuses the rollback as
   step 2 does, after PostgreSQL is un-fenced again.
5. **Prove**, in two parts so that the outage pays only for what changed. Before the fence (step 3), with
   the app still writing, an independent full comparison of every table (:func:`replicator.inspect.verify.verify`:
   what ``sqlite3`` returns against what PostgreSQL returns, read without the conversions the reverse apply
   used) names the keys that differ then: rows the app changed since the last batch, or real differences.
   After the final drain, those keys and every key the drain wrote are read again on both sides by the same
   reading (:func:`replicator.inspect.verify.compare_keys`); a table written whole, or with too many
   differences to name, is compared whole again. Nothing else can have changed: PostgreSQL's changes are all
   journaled, and only the drain wrote SQLite. A difference aborts: PostgreSQL is un-fenced again and the SQLite
   file stays fenced. The one difference allowed is an acknowledged refusal's key, which keeps the row SQLite
   had (the table's status is then ``acknowledged``).
   Then SQLite's AUTOINCREMENT counters are moved past the ids PostgreSQL gave (a deleted one is never reused).
6. **Close the window** in PostgreSQL (one transaction): the ``rollback`` checkpoint, the capture dropped, the
   window's row, the phase, and the **rollback certificate** (what was proved, sealed with its SHA-256) stored in
   the state schema (:func:`replicator.state.reverse.store_certificate`), its outage not measured yet.
   PostgreSQL stays fenced: the app runs on SQLite now.
7. **Un-fence SQLite**: the outage ends. The certificate is sealed again with the outage measured and stored
   in place of the first.
8. The certificate **file** (``<source>.rollback-certificate.json`` or ``--certificate``).

A crash after 6 loses no proof: the closed window has its stored certificate. ``rollback`` run again sees the
window closed by rollback, un-fences SQLite if a crash left it fenced, and writes the stored certificate to the
file (sealed as the close stored it: its outage ``null``, not measured, when the crash came before 7 ended); run
after a finished rollback it refuses as "already rolled back", naming the stored certificate, and writes it
again if the file is missing.

``--dry-run`` runs 1, 2, 4 and 5 without fencing anything (the app may write meanwhile: a row it changes
between the comparison and the recheck can show as a difference the real rollback would not have).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from checkpoints import store
from checkpoints.model import Kind, next_checkpoint
from replicator import faults, log, pg
from replicator.config import Config
from replicator.errors import ReplicatorError, VerificationFailed
from replicator.inspect import verify, verify_compare, verify_shape
from replicator.inspect.verify_shape import Key
from replicator.plan import sequences
from replicator.reverse import batch, loop
from replicator.reverse.rollback_certificate import (
    RollbackCertificate,
    StoredCertificateDamaged,
    TableProof,
    default_path,
    encode,
    kept,
    seal,
    verified,
    write_file,
)
from replicator.reverse.writer import REFUSED_ACTION, first_horizon
from replicator.state import reverse, stateschema
from replicator.state.phase import ApplyState, Phase
from replicator.state.quarantine import list_values
from replicator.state.store import StateStore
from replicator.values.quarantine import json_safe_dict
from triggers import fence
from triggers import source as sqlite_source
from triggers.schema import quote_ident

HELD_WAIT_S: Final = 30.0
"""How long the catch-up before the fence waits for writes an older running transaction holds back."""


class RollbackRefused(VerificationFailed):
    """Going back now would lose something (a refused value not acknowledged, or the sides differ)."""


class RefusedValues(RollbackRefused):
    """Values PostgreSQL holds were not written back and are not acknowledged: going back would lose them."""


class RollbackAborted(ReplicatorError):
    """A step failed; the message says the state things are in."""


class RollbackResult(msgspec.Struct, frozen=True):
    dry_run: bool
    drained_entries: int
    write_outage_s: float
    tables: tuple[TableProof, ...]
    certificate: RollbackCertificate | None = None
    certificate_path: str | None = None
    resumed: bool = False
    """A previous rollback had closed the window and crashed before un-fencing SQLite: this run un-fenced it and
    wrote the certificate that rollback stored (``write_outage_s`` is then 0.0: not measured)."""


def rollback(
    source: Path,
    dsn: str,
    config: Config,
    *,
    dry_run: bool = False,
    max_downtime_s: float = 30.0,
    certificate_path: Path | None = None,
) -> RollbackResult:
    bound = log.get("rollback", source=str(source))
    path = certificate_path or default_path(source)
    resumed = _finish_interrupted(source, dsn, config, path)
    if resumed is not None:
        return resumed
    with loop.opened(source, dsn, config) as session:
        drained = _catch_up(session, wait_s=HELD_WAIT_S)
        session.check_schema()
        _refuse_unacknowledged(session)
        _refuse_new_tables(session)
        if dry_run:  # the app still writes: what differed is compared again after one more catch-up
            rehearsed = _compare_whole(source, dsn, config, session)
            session.writer.watch()
            drained += _catch_up(session)
            _refuse_unacknowledged(session)
            proofs = _prove_changed(source, dsn, config, session, rehearsed)
            bound.info("rollback --dry-run: the sides are equal", tables=len(proofs))
            return RollbackResult(True, drained, 0.0, proofs)
        before = _compare_whole(source, dsn, config, session)  # outside the outage: O(tables)
        session.writer.watch()
        started = time.monotonic()
        _fence_postgres(session, dsn, max_downtime_s)
        try:
            faults.point("rollback.after_fence")
            drained += _catch_up(session, final=True)
            _refuse_unacknowledged(session)  # a value refused by the final drain
            session.check_schema()  # DDL is not fenced
            _refuse_new_tables(session)
            proofs = _prove_changed(source, dsn, config, session, before)  # inside it: O(changed keys)
            _carry_sequences(session)
            closing = _close_window(session, proofs)
        except BaseException as exc:
            _unfence_postgres(session)
            if isinstance(exc, RefusedValues):
                raise  # as before the fence: the same refusal, the same state, the same way out
            raise RollbackAborted(
                f"rollback aborted, nothing changed for the app: PostgreSQL writable again, SQLite still fenced "
                f"({exc.message if isinstance(exc, ReplicatorError) else exc!r})",
                hint="fix what is named and run `replicator rollback` again; `replicator run` keeps SQLite current",
            ) from exc
        faults.point("rollback.between_commits")
        fence.unfence_on(session.sconn, path=source)
        outage = round(time.monotonic() - started, 3)
        cert = seal(msgspec.structs.replace(closing, write_outage_s=outage))
        _store_measured(session, cert)
    write_file(path, cert)
    bound.warning("rolled back: the app writes to SQLite again", outage_s=outage, certificate=str(path))
    return RollbackResult(False, drained, outage, proofs, cert, str(path))


def _store_measured(session: loop.Session, cert: RollbackCertificate) -> None:
    """The certificate with the outage measured, in place of the one the close stored. The app already writes to
    SQLite: a failure here is logged, not raised, and the stored one (outage not measured) stays valid."""
    try:
        reverse.store_certificate(session.pconn, session.schema, cert.cutover_checkpoint, cert.sha256, encode(cert))
    except psycopg.Error as exc:
        session.log.error(
            "the rollback certificate with the measured outage was not stored; the state schema keeps the one the "
            "close stored (outage not measured)",
            error=str(exc),
        )


def _finish_interrupted(source: Path, dsn: str, config: Config, path: Path) -> RollbackResult | None:
    """A rollback closed the window and crashed before it ended: un-fence SQLite if it is still fenced (step 7)
    and write the certificate the close stored (step 8). Run after a finished rollback: the one-line refusal,
    naming the stored certificate (and writing it to ``path`` if no file is there)."""
    schema = config.target.state_schema
    with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as conn:
        window = reverse.read_window(conn, schema)
        if window is None or window.open:
            return None
        stored = reverse.read_certificate(conn, schema, window.cutover)
    if window.closed_how != "rollback":
        raise RollbackRefused(
            f"the rollback window was closed by {window.closed_how} at {window.closed_at}: PostgreSQL is the app's "
            "database for good",
            hint="going back now needs a new migration in the other direction",
        )
    status = fence.status(source, busy_timeout_ms=config.source.busy_timeout_ms)
    if not status.tables:
        raise RollbackRefused(
            f"already rolled back at {window.closed_at}: the SQLite file is writable{kept(stored, path)}",
            hint="nothing to do",
        )
    fence.unfence(source, busy_timeout_ms=config.source.busy_timeout_ms)
    bound = log.get("rollback", source=str(source))
    bound.warning("finished an interrupted rollback: SQLite un-fenced", closed_at=window.closed_at)
    if stored is None:  # a window closed by a release that wrote the certificate to a file only
        return RollbackResult(False, 0, 0.0, (), resumed=True)
    try:
        cert = verified(stored)
    except StoredCertificateDamaged as exc:
        raise StoredCertificateDamaged(
            f"finished an interrupted rollback (SQLite un-fenced, the app writes to SQLite again), but {exc.message}; "
            "not written",
            hint=f"the {schema}.{reverse.CERTIFICATES} row and the chain's `rollback` checkpoint are the evidence left",
        ) from None
    write_file(path, cert)
    bound.warning("rollback certificate written from the state schema", certificate=str(path))
    return RollbackResult(False, 0, 0.0, cert.tables, cert, str(path), resumed=True)


def _catch_up(session: loop.Session, *, final: bool = False, wait_s: float = 0.0) -> int:
    """Write back what is journaled. Before the fence: up to the horizon seen when it starts (an app committing
    all the time would otherwise keep it going; the final drain takes the rest), and with ``wait_s`` also the
    committed entries an older transaction still running holds above the horizon, for up to that long: the
    refusals named before the fence are then of PostgreSQL as it is. After the fence: everything."""
    target = None if final else _horizon(session)
    total = 0
    deadline = time.monotonic() + wait_s
    while True:
        entries, _up, _del, _ref, reached = session.step(final=final)
        total += entries
        if entries and (target is None or reached < target):
            continue
        if not session.held:
            return total
        if time.monotonic() >= deadline:
            if wait_s:
                session.log.warning(
                    "an older transaction still running holds PostgreSQL's last writes back; the final drain "
                    "takes them after the fence",
                    waited_s=wait_s,
                )
            return total
        time.sleep(loop.POLL_S)


def _horizon(session: loop.Session) -> int:
    """Where the catch-up before the fence stops: the batches' own horizon (other databases' transactions left
    out), not the snapshot's xmin, which one of them would hold below what the batches can already reach."""
    row = session.pconn.execute(batch.HORIZON).fetchone()
    assert row is not None
    return int(row[0])


def _refuse_new_tables(session: loop.Session) -> None:
    """A table the app created on PostgreSQL during the window is not carried back: going back would leave its
    rows behind, so rollback names it instead (before the fence, and again after it: DDL is not fenced)."""
    plan = session.plan
    known = [t.target for t in session.shapes.values()]
    if plan.schema == session.schema:
        known += list(stateschema.TABLES)
    created = reverse.tables_since_cutover(session.pconn, session.schema, plan.schema, known)
    if created:
        raise RollbackRefused(
            f"table(s) created or changed on PostgreSQL after the cutover that the rollback window does not carry "
            f"back: {', '.join(created)}; their rows would stay behind in PostgreSQL",
            hint="copy out what they hold and drop them (the app on SQLite does not know them), or stay on "
            "PostgreSQL with `replicator finalize`",
        )


def _refuse_unacknowledged(session: loop.Session) -> None:
    state_store = StateStore(session.pconn, session.schema)
    waiting = [v for v in list_values(state_store, limit=100_000) if v.action == REFUSED_ACTION and not v.acknowledged]
    if waiting:
        named = "; ".join(f"{v.table} {v.key} column {v.column}: {v.reason}" for v in waiting[:10])
        raise RefusedValues(
            f"{len(waiting)} value(s) PostgreSQL holds were not written back to SQLite, whose form cannot hold them "
            f"exactly: {named}",
            hint="change them in PostgreSQL to values SQLite's form holds, or accept losing them with "
            "`replicator quarantine ack`, then run rollback again",
        )


FENCE_LOCK_WAIT_MS: Final = 100
"""How long one attempt to fence PostgreSQL waits for a table lock. Shorter than PostgreSQL's
``deadlock_timeout`` (1 s): an app transaction that holds one table and wants another would otherwise form a
deadlock with the fence, and one of the two would be aborted after a second. The attempt gives up first, the app
transactions go on, and the fence tries again until ``--max-downtime``."""


def _fence_postgres(session: loop.Session, dsn: str, max_downtime_s: float) -> None:
    """PostgreSQL's fence committed: it waits for the app transactions writing, never more than an attempt."""
    message = (
        f"this database was rolled back to SQLite at {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}; writes are fenced"
    )
    deadline = time.monotonic() + max_downtime_s
    attempts = 0
    with pg.connect(pg.with_lock_timeout(dsn, FENCE_LOCK_WAIT_MS)) as conn:
        while True:
            attempts += 1
            try:
                reverse.fence(conn, session.schema, list(session.shapes.values()), message)
                conn.commit()
                if attempts > 1:
                    session.log.info("PostgreSQL fenced", attempts=attempts)
                return
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
                conn.rollback()
                if time.monotonic() >= deadline:
                    raise RollbackAborted(
                        f"the app's transactions kept PostgreSQL's tables locked for {max_downtime_s:g} s "
                        f"({attempts} attempts): not fenced ({type(exc).__name__})",
                        hint="run rollback again at a quieter moment, or raise --max-downtime",
                    ) from exc


def _unfence_postgres(session: loop.Session) -> None:
    try:
        with session.pconn.transaction():
            reverse.unfence(session.pconn, session.schema, list(session.shapes.values()))
    except psycopg.Error as exc:  # the abort's own message must still reach the operator
        session.log.error("could not un-fence PostgreSQL after an aborted rollback", error=str(exc))


class Compared(msgspec.Struct):
    """The full comparison made before the fence, while the app still wrote on PostgreSQL."""

    report: verify_compare.VerifyReport
    keys: dict[str, set[Key]]
    """Per table, the keys that differed then (rows the app changed after the last batch, or a real
    difference): compared again after the final drain."""
    whole: list[str]
    """Tables whose differing keys could not all be named (too many): compared whole again."""


def _compare_whole(source: Path, dsn: str, config: Config, session: loop.Session) -> Compared:
    """Every table compared by the independent reading (:func:`replicator.inspect.verify.verify`), naming the
    differing keys. The app may be writing on PostgreSQL meanwhile, so a difference here is not yet a failure:
    the row is either journaled since the last batch (the final drain writes it back) or really different,
    and both are compared again after the drain."""
    plan = StateStore(session.pconn, session.schema).load_plan()
    report = verify.verify(
        source, dsn, config, tables=list(session.shapes), keys=True, plan=plan, applied_by_caller=True
    )
    keys: dict[str, set[Key]] = {}
    whole: list[str] = []
    for t in report.tables:
        if t.match:
            continue
        if t.keys_truncated or not t.key_columns:
            whole.append(t.table)
        keys[t.table] = {tuple(k) for k in (*t.missing, *t.extra, *t.different)}
    return Compared(report, keys, whole)


def _prove_changed(
    source: Path, dsn: str, config: Config, session: loop.Session, before: Compared
) -> tuple[TableProof, ...]:
    """After the fence and the final drain: the keys that differed before and every key the drain wrote, read
    again on both sides by the independent reading (:func:`replicator.inspect.verify.compare_keys`); tables
    written whole, or with too many differences to name, read whole again. Nothing else changed on either side
    since the full comparison (PostgreSQL's changes are all journaled, and only the drain wrote SQLite)."""
    state_store = StateStore(session.pconn, session.schema)
    plan = state_store.load_plan()
    assert plan is not None
    accepted = _acknowledged(state_store)
    whole = sorted(set(before.whole) | (session.writer.touched_whole & set(session.shapes)))
    differing: list[str] = []
    lost: set[str] = set()  # tables where only acknowledged refusals differ: SQLite keeps its row there
    reader = sqlite_source.connect(source, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms)
    try:
        reader.execute("BEGIN")
        with session.pconn.transaction():
            for name in sorted(session.shapes):
                if name in whole:
                    continue
                keys = before.keys.get(name, set()) | session.writer.touched.get(name, set())
                if not keys:
                    continue
                shape = verify_shape.independent_shape(state_store, plan, name)
                found = verify.compare_keys(reader, session.pconn, shape, sorted(keys, key=repr))
                if _unaccepted(found, shape.key_source, accepted.get(name, set())):
                    differing.append(name)
                elif found:
                    lost.add(name)
            counted = _counts(reader, session, [n for n in sorted(session.shapes) if n not in whole])
    finally:
        reader.close()
    proofs = {p.table: p for p in counted}
    if whole:
        again = verify.verify(source, dsn, config, tables=whole, keys=True, plan=plan, applied_by_caller=True)
        proofs.update({p.table: p for p in _proofs(again)})
        for t in again.tables:
            named = (*t.missing, *t.extra, *t.different)
            if not t.match and (t.keys_truncated or _unaccepted(named, t.key_columns, accepted.get(t.table, set()))):
                differing.append(t.table)
            elif not t.match:
                lost.add(t.table)
    if differing:
        raise RollbackRefused(
            f"SQLite and PostgreSQL differ after the drain in {len(differing)} table(s): {', '.join(differing)}",
            hint="`replicator verify --keys` names the rows; nothing was changed",
        )
    return tuple(
        msgspec.structs.replace(p, status="acknowledged" if p.table in lost else "match") for p in proofs.values()
    )


def _counts(reader: sqlite3.Connection, session: loop.Session, names: Sequence[str]) -> list[TableProof]:
    """Each table's rows on both sides now (both are still: PostgreSQL fenced, SQLite written by us only), for
    the certificate: the full comparison's counts were taken while the app still wrote."""
    out = []
    for name in names:
        t = session.shapes[name]
        mine = reader.execute(f"SELECT count(*) FROM {quote_ident(t.source)}").fetchone()  # noqa: S608 - quoted
        theirs = session.pconn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t.schema, t.target))
        ).fetchone()
        assert mine is not None
        assert theirs is not None
        out.append(TableProof(name, int(mine[0]), int(theirs[0]), "match"))
    return out


def _acknowledged(state_store: StateStore) -> dict[str, set[str]]:
    """Per table, the keys whose PostgreSQL change the operator accepted losing (``quarantine ack`` of a value
    the reverse apply refused): SQLite keeps its own row there, so that row may differ, and only it."""
    out: dict[str, set[str]] = {}
    for v in list_values(state_store, limit=1_000_000):
        if v.action == REFUSED_ACTION and v.acknowledged and isinstance(v.key, dict):
            out.setdefault(v.table, set()).add(_marker(v.key))
    return out


def _marker(key: dict[str, Any]) -> str:
    return json.dumps({str(k): v for k, v in sorted(key.items())}, default=str)


def _unaccepted(keys: Sequence[Key], columns: Sequence[str], accepted: set[str]) -> list[Key]:
    """The differing keys that are not an acknowledged refusal (keys compared as the quarantine records them)."""
    return [k for k in keys if _marker(json_safe_dict(dict(zip(columns, k, strict=False)))) not in accepted]


def _proofs(report: verify_compare.VerifyReport) -> tuple[TableProof, ...]:
    return tuple(TableProof(t.table, t.source_rows, t.target_rows, t.status) for t in report.tables)


def _carry_sequences(session: loop.Session) -> None:
    """SQLite's AUTOINCREMENT counters past every id PostgreSQL gave in the window (:func:`sequences.carry_to_sqlite`).

    Here, after the final drain and before the window closes: PostgreSQL is fenced, so no id is given any more,
    and the counters only move forward, so a rollback run again after a failure does it again harmlessly."""
    plan = StateStore(session.pconn, session.schema).load_plan()
    assert plan is not None
    sequences.carry_to_sqlite(session.sconn, sequences.given_ids(session.pconn, plan))


def _close_window(session: loop.Session, proofs: tuple[TableProof, ...]) -> RollbackCertificate:
    """The window closed and its sealed certificate stored, in one transaction: a closed window always has the
    proof of what was carried back, whatever happens to the process after the commit."""
    conn, schema = session.pconn, session.schema
    state_store = StateStore(conn, schema)
    acknowledged = tuple(
        f"{v.table} {v.key} {v.column}: {v.reason}"
        for v in list_values(state_store, limit=100_000)
        if v.action == REFUSED_ACTION
    )
    before = state_store.read_phase()
    window = session.window
    with conn.transaction():
        closing = next_checkpoint(session.head, seq_to=first_horizon(session.head) - 1, tables={}, kind=Kind.ROLLBACK)
        store.append(conn, closing, schema)
        reverse.remove(conn, schema, list(session.shapes.values()), keep_fence=True)
        message = f"rolled back to SQLite at checkpoint {closing.number}"
        reverse.close(conn, schema, "rollback", message)
        state_store.write_phase(
            ApplyState(
                phase=Phase.ERRORED,
                reason="rolled back after cutover: the SQLite file is the source of truth again (nothing lost: "
                "PostgreSQL's writes were carried back)",
                hint="to migrate again: `replicator snapshot --replace`, `replicator run`, then cut over",
                applied_seq=before.applied_seq if before is not None else 0,
                head_seq=before.head_seq if before is not None else 0,
            )
        )
        cert = seal(
            RollbackCertificate(
                source=str(session.source),
                target=_target_of(conn),
                cutover_checkpoint=window.cutover,
                window_opened_at=window.opened_at,
                rolled_back_at=dt.datetime.now(dt.UTC).isoformat(),
                chain_head=closing.hash,
                tables=proofs,
                write_outage_s=None,  # measured after SQLite's un-fence, then stored again
                batches_in_window=_reverse_batches(conn, schema),
                acknowledged_refusals=acknowledged,
            )
        )
        reverse.store_certificate(conn, schema, window.cutover, cert.sha256, encode(cert))
        faults.point("rollback.before_close_commit")
    return cert


def _target_of(conn: psycopg.Connection[Any]) -> str:
    info = conn.info
    return f"{info.host}:{info.port}/{info.dbname}"


def _reverse_batches(conn: psycopg.Connection[Any], schema: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE kind = %s").format(sql.Identifier(schema, "checkpoints")),
        (str(Kind.REVERSE),),
    ).fetchone()
    return int(row[0]) if row else 0
