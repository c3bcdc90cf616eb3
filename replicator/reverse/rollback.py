"""``replicator rollback`` with the window open: go back to SQLite and lose nothing the app wrote on PostgreSQL.

In order (each step's failure leaves a state the next run finishes or undoes, named in the error):

1. **Catch up** (no outage): the reverse direction's batches until the journal is empty; entries an older
   running transaction (of any database in the cluster) holds above the horizon are waited for up to
   :data:`HELD_WAIT_S`, then left to step 4.
2. **Refused values**: a value the SQLite form cannot hold exactly was not written back
   (:mod:`~replicator.reverse.writeback`); while any is not acknowledged (``replicator quarantine ack``) going
   back would lose it, so rollback refuses, naming each.
3. **Fence PostgreSQL** (:func:`replicator.state.reverse.fence`, one transaction, bounded by ``--max-downtime``):
   its commit waits for the app's transactions already writing, and from then on every app write on
   PostgreSQL fails with a message that says where the data went. The write outage starts here.
4. **Final drain**: every journal entry is now final; the last batches are written into SQLite.
   A value refused here (its transaction was still below the horizon at step 1) refuses the rollback as
   step 2 does, after PostgreSQL is un-fenced again.
5. **Prove**: an independent full comparison of every table (:func:`replicator.inspect.verify.verify`: what
   ``sqlite3`` returns against what PostgreSQL returns, read without the conversions the reverse apply used).
   A difference aborts: PostgreSQL is un-fenced again and the SQLite file stays fenced. The one difference
   allowed is an acknowledged refusal's: its key keeps the row SQLite had (verify leaves a quarantined key
   out of SQLite's side, so PostgreSQL's row shows as extra); a table that differs and holds such keys is
   compared again key by key, and passes (status ``acknowledged``) only when every differing key is one of
   them.
6. **Close the window** in PostgreSQL (one transaction): the ``rollback`` checkpoint, the capture dropped, the
   window's row and the phase. PostgreSQL stays fenced: the app runs on SQLite now.
7. **Un-fence SQLite**: the outage ends. A crash between 6 and 7 leaves both fenced; ``rollback`` run again
   sees the window closed by rollback and only un-fences.
8. The **rollback certificate**: what was proved, sealed with its SHA-256.

``--dry-run`` runs 1, 2, 4 (catch-up only) and 5 without fencing anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from checkpoints import store
from checkpoints.digest import RowEncoder
from checkpoints.model import Kind, next_checkpoint
from replicator import faults, files, log, pg
from replicator.config import Config
from replicator.errors import ReplicatorError, VerificationFailed
from replicator.inspect import verify, verify_shape
from replicator.inspect.proof_rule import Unreadable
from replicator.inspect.verify_compare import TableVerify
from replicator.plan.schemaplan import SchemaPlan
from replicator.reverse import loop
from replicator.reverse.writer import REFUSED_ACTION, first_horizon
from replicator.state import reverse
from replicator.state.phase import ApplyState, Phase
from replicator.state.quarantine import list_values
from replicator.state.store import StateStore
from replicator.values.quarantine import from_json_safe
from replicator.values.refusal import ValueRefused
from triggers import fence

HELD_WAIT_S: Final = 30.0
"""How long the catch-up before the fence waits for writes an older running transaction holds back."""


class RollbackRefused(VerificationFailed):
    """Going back now would lose something (a refused value not acknowledged, or the sides differ)."""


class RefusedValues(RollbackRefused):
    """Values PostgreSQL holds were not written back and are not acknowledged: going back would lose them."""


class RollbackAborted(ReplicatorError):
    """A step failed; the message says the state things are in."""


class TableProof(msgspec.Struct, frozen=True):
    table: str
    sqlite_rows: int
    postgres_rows: int
    status: str


class RollbackCertificate(msgspec.Struct, frozen=True):
    source: str
    target: str
    cutover_checkpoint: str
    window_opened_at: str
    rolled_back_at: str
    chain_head: str
    """The hash of the ``rollback`` checkpoint that closed the window."""
    tables: tuple[TableProof, ...]
    write_outage_s: float
    batches_in_window: int
    acknowledged_refusals: tuple[str, ...]
    sha256: str = ""


class RollbackResult(msgspec.Struct, frozen=True):
    dry_run: bool
    drained_entries: int
    write_outage_s: float
    tables: tuple[TableProof, ...]
    certificate: RollbackCertificate | None = None
    certificate_path: str | None = None
    resumed: bool = False
    """A previous rollback had closed the window and crashed before un-fencing SQLite: this run only un-fenced."""


def seal(cert: RollbackCertificate) -> RollbackCertificate:
    body = msgspec.json.encode(msgspec.structs.replace(cert, sha256=""), order="sorted")
    return msgspec.structs.replace(cert, sha256=hashlib.sha256(body).hexdigest())


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
    resumed = _finish_interrupted(source, dsn, config)
    if resumed is not None:
        return resumed
    with loop.opened(source, dsn, config) as session:
        drained = _catch_up(session, wait_s=HELD_WAIT_S)
        _refuse_unacknowledged(session)
        if dry_run:
            proofs = _prove(source, dsn, config, session)
            bound.info("rollback --dry-run: the sides are equal", tables=len(proofs))
            return RollbackResult(True, drained, 0.0, proofs)
        started = time.monotonic()
        _fence_postgres(session, dsn, max_downtime_s)
        try:
            faults.point("rollback.after_fence")
            drained += _catch_up(session, final=True)
            _refuse_unacknowledged(session)
            proofs = _prove(source, dsn, config, session)
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
        outage = time.monotonic() - started
    cert = seal(msgspec.structs.replace(closing, write_outage_s=round(outage, 3)))
    path = certificate_path or source.with_name(source.name + ".rollback-certificate.json")
    with files.writing(path, what="the rollback certificate", instead="its fields are in the log line below"):
        path.write_bytes(msgspec.json.format(msgspec.json.encode(cert), indent=2) + b"\n")
    bound.warning("rolled back: the app writes to SQLite again", outage_s=round(outage, 3), certificate=str(path))
    return RollbackResult(False, drained, round(outage, 3), proofs, cert, str(path))


def _finish_interrupted(source: Path, dsn: str, config: Config) -> RollbackResult | None:
    """A rollback closed the window and crashed before un-fencing SQLite: un-fence now (step 7 only)."""
    with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as conn:
        window = reverse.read_window(conn, config.target.state_schema)
    if window is None or window.open:
        return None
    if window.closed_how != "rollback":
        raise RollbackRefused(
            f"the rollback window was closed by {window.closed_how} at {window.closed_at}: PostgreSQL is the app's "
            "database for good",
            hint="going back now needs a new migration in the other direction",
        )
    status = fence.status(source, busy_timeout_ms=config.source.busy_timeout_ms)
    if not status.tables:
        raise RollbackRefused(
            f"already rolled back at {window.closed_at}: the SQLite file is writable", hint="nothing to do"
        )
    fence.unfence(source, busy_timeout_ms=config.source.busy_timeout_ms)
    log.get("rollback").warning("finished an interrupted rollback: SQLite un-fenced", closed_at=window.closed_at)
    return RollbackResult(False, 0, 0.0, (), resumed=True)


def _catch_up(session: loop.Session, *, final: bool = False, wait_s: float = 0.0) -> int:
    """Batches until one reads nothing; with ``wait_s``, also until no committed entry waits above the horizon,
    for up to that long: the refusals named before the fence and a dry run's proof are then of PostgreSQL as
    it is (a value changed there since is not named). Past it, the final drain takes them after the fence."""
    total = 0
    deadline = time.monotonic() + wait_s
    while True:
        entries, *_ = session.step(final=final)
        total += entries
        if entries:
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


def _fence_postgres(session: loop.Session, dsn: str, max_downtime_s: float) -> None:
    message = (
        f"this database was rolled back to SQLite at {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}; writes are fenced"
    )
    with pg.connect(pg.with_lock_timeout(dsn, int(max_downtime_s * 1000))) as conn:
        try:
            reverse.fence(conn, session.schema, list(session.shapes.values()), message)
            conn.commit()
        except psycopg.errors.LockNotAvailable as exc:
            raise RollbackAborted(
                f"the app's transactions kept PostgreSQL's tables locked for over {max_downtime_s:g} s: not fenced",
                hint="run rollback again at a quieter moment, or raise --max-downtime",
            ) from exc


def _unfence_postgres(session: loop.Session) -> None:
    try:
        with session.pconn.transaction():
            reverse.unfence(session.pconn, session.schema, list(session.shapes.values()))
    except psycopg.Error as exc:  # the abort's own message must still reach the operator
        session.log.error("could not un-fence PostgreSQL after an aborted rollback", error=str(exc))


def _prove(source: Path, dsn: str, config: Config, session: loop.Session) -> tuple[TableProof, ...]:
    state_store = StateStore(session.pconn, session.schema)
    plan = state_store.load_plan()
    report = verify.verify(source, dsn, config, tables=list(session.shapes), plan=plan, applied_by_caller=True)
    acknowledged = _acknowledged_keys(state_store, plan) if plan is not None else {}
    proofs = tuple(
        _reproved(source, dsn, config, plan, t, acknowledged[t.table])
        if plan is not None and t.status != "match" and t.table in acknowledged
        else TableProof(t.table, t.source_rows, t.target_rows, t.status)
        for t in report.tables
    )
    differing = [p for p in proofs if p.status not in ("match", "acknowledged")]
    if differing:
        listed = "; ".join(f"{p.table}: {p.status} ({p.sqlite_rows} vs {p.postgres_rows} rows)" for p in differing)
        raise RollbackRefused(
            f"SQLite and PostgreSQL differ after the drain in {len(differing)} table(s): {listed}",
            hint="`replicator verify --keys` names the rows; nothing was changed",
        )
    return proofs


def _acknowledged_keys(state_store: StateStore, plan: SchemaPlan) -> dict[str, list[list[Any]]]:
    """Per table, the keys (SQLite's key columns' values, as the quarantine records them) of the acknowledged
    values the reverse apply refused: their rows stay as SQLite had them."""
    key_columns = {t.source: t.key_source for t in plan.tables}
    out: dict[str, list[list[Any]]] = {}
    for v in list_values(state_store, limit=100_000):
        columns = key_columns.get(v.table, ())
        if v.action == REFUSED_ACTION and v.acknowledged and columns and all(c in v.key for c in columns):
            out.setdefault(v.table, []).append([from_json_safe(v.key[c]) for c in columns])
    return out


def _reproved(
    source: Path, dsn: str, config: Config, plan: SchemaPlan, differing: TableVerify, keys: Sequence[Sequence[Any]]
) -> TableProof:
    """A table that differs and holds acknowledged keys, compared again key by key: ``acknowledged`` when every
    differing key is one of them, else the mismatch it was. A key that cannot be matched stays a difference."""
    report = verify.verify(
        source, dsn, config, [differing.table], keys=True, max_keys=len(keys) + 1, plan=plan, applied_by_caller=True
    )
    (t,) = report.tables
    if t.status == "match":
        return TableProof(t.table, t.source_rows, t.target_rows, t.status)
    allowed = _encoded(plan, t.table, keys)
    named = [*t.missing, *t.extra, *t.different]
    if named and not t.keys_truncated and all(RowEncoder().encode(tuple(k)) in allowed for k in named):
        return TableProof(t.table, t.source_rows, t.target_rows, "acknowledged")
    return TableProof(t.table, t.source_rows, t.target_rows, differing.status)


def _encoded(plan: SchemaPlan, table: str, keys: Sequence[Sequence[Any]]) -> set[bytes]:
    """Recorded keys as verify names differing keys: converted by the independent reading, then encoded."""
    converters = verify_shape.key_converters(
        verify_shape.shape_of(plan.table(table), plan.schema, computed=True, independent=True)
    )
    out: set[bytes] = set()
    for raw in keys:
        try:
            out.add(RowEncoder().encode(tuple(c(v) for c, v in zip(converters, raw, strict=True))))
        except (ValueRefused, Unreadable, ValueError):
            continue  # unmatched: the key stays a difference
    return out


def _close_window(session: loop.Session, proofs: tuple[TableProof, ...]) -> RollbackCertificate:
    conn, schema = session.pconn, session.schema
    state_store = StateStore(conn, schema)
    acknowledged = tuple(
        f"{v.table} {v.key} {v.column}: {v.reason}"
        for v in list_values(state_store, limit=100_000)
        if v.action == REFUSED_ACTION
    )
    before = state_store.read_phase()
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
        faults.point("rollback.before_close_commit")
    window = session.window
    return RollbackCertificate(
        source=str(session.source),
        target=_target_of(conn),
        cutover_checkpoint=window.cutover,
        window_opened_at=window.opened_at,
        rolled_back_at=dt.datetime.now(dt.UTC).isoformat(),
        chain_head=closing.hash,
        tables=proofs,
        write_outage_s=0.0,
        batches_in_window=_reverse_batches(conn, schema),
        acknowledged_refusals=acknowledged,
    )


def _target_of(conn: psycopg.Connection[Any]) -> str:
    info = conn.info
    return f"{info.host}:{info.port}/{info.dbname}"


def _reverse_batches(conn: psycopg.Connection[Any], schema: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE kind = %s").format(sql.Identifier(schema, "checkpoints")),
        (str(Kind.REVERSE),),
    ).fetchone()
    return int(row[0]) if row else 0
