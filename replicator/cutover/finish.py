"""Step 5, finish PostgreSQL, and what steps 6 and 7 ask of it: in the one transaction the fence commit waits
for, parked foreign keys restored and every NOT VALID one validated (orphans named by key), sequences past
SQLite's, the post-load statements still owed, the ``cutover`` checkpoint and phase DONE; then where the
fence message points, whether a COMMIT whose acknowledgement was lost went through, and ANALYZE.

Also the schema objects PostgreSQL would lack (:func:`refuse_not_created`): the preflight refuses them
before the freeze, and the finish again, for those a row written since made PostgreSQL refuse.
"""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from psycopg import sql

from checkpoints import store
from checkpoints.model import Checkpoint, Kind, TableChange, next_checkpoint
from replicator import pg
from replicator.apply.foreignkeys import restore_foreign_keys
from replicator.cutover.certificate import TableProof
from replicator.cutover.freeze import Frozen
from replicator.cutover.session import CutoverAborted, Options, Session
from replicator.plan import constraints, schemaplan, sequences
from replicator.reverse.writer import forget_position
from replicator.state import reverse
from replicator.state.phase import ApplyState, Phase


class Finished(msgspec.Struct, frozen=True):
    head: Checkpoint
    proofs: tuple[TableProof, ...]
    sequences: dict[str, int]
    foreign_keys: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    not_created: tuple[schemaplan.NotCreated, ...] = ()


def finish_postgres(
    session: Session, head: Checkpoint, frozen: Frozen, proofs: tuple[TableProof, ...], options: Options
) -> Finished:
    conn, schema = session.pconn, session.state_schema
    restored = restore_foreign_keys(session.state_store, session.plan.schema)
    checks = constraints.validate_foreign_keys(conn, session.plan.schema)
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
    synced = sequences.sync_sequences(conn, session.plan, sequences.read_sqlite_sequence(frozen.conn))
    refused = _remaining_post_load(conn, session.plan)
    not_created = (*dropped(session.plan), *refused)
    if not options.accept_missing_constraints:  # refused since the preflight tried them: new rows collide
        refuse_not_created(list(not_created))
    cut = next_checkpoint(head, seq_to=frozen.stop_seq, tables=_restated(session, proofs), kind=Kind.CUTOVER)
    store.append(conn, cut, schema)
    if options.rollback_window:  # in the cutover's transaction: no app write on PostgreSQL escapes it
        reverse.install(conn, schema, list(reverse.shapes_of(session.plan).values()), cut.hash)
    forget_position(frozen.conn)  # an earlier window's position (in SQLite's held transaction): this one starts anew
    session.state_store.write_phase(ApplyState(phase=Phase.DONE, applied_seq=frozen.stop_seq, head_seq=frozen.stop_seq))
    fks = tuple(f"{table}.{name}" for table, name, _error in results)
    warnings = tuple(constraints.warning(n) for n in refused)
    return Finished(cut, proofs, synced, fks, warnings, not_created)


def _restated(session: Session, proofs: tuple[TableProof, ...]) -> dict[str, TableChange]:
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


def _remaining_post_load(conn: psycopg.Connection[Any], plan: schemaplan.SchemaPlan) -> list[schemaplan.NotCreated]:
    """UNIQUE/indexes/CHECKs/FKs the snapshot could not create yet (e.g. refused then, fixable now); what
    PostgreSQL still refuses is returned, for the certificate."""
    missing = constraints.missing_post_load(conn, plan)
    if not any(t.post_load for t in missing.tables):
        return []
    return constraints.post_load_refusals(conn, missing, timeouts_abort=True)


def committed(session: Session, stop: int) -> bool:
    """Asked on a new connection: is the cutover checkpoint for ``stop`` the chain's head?"""
    try:
        with pg.connect(session.dsn, autocommit=True, connect_timeout=session.config.target.connect_timeout_s) as c:
            head = store.latest(c, schema=session.state_schema)
    except psycopg.Error:
        return False  # unknown: treated as not committed, and said so in the abort message
    return head is not None and head.kind is Kind.CUTOVER and head.seq_to == stop


def analyze(session: Session) -> None:
    for t in session.plan.tables:
        session.pconn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(session.plan.schema, t.name)))


def fence_where(dsn: str) -> str:
    """The fence message's second half: where the data went, so whoever meets a refused write knows where to
    look (user, host, port and database: never the password)."""
    return f"its data is now in {pg.describe(dsn)}"


def dropped(plan: schemaplan.SchemaPlan) -> list[schemaplan.NotCreated]:
    """What the plan never had a statement for (untranslatable; naming a table or column not migrated)."""
    return [n for t in plan.tables for n in t.dropped]


def refuse_not_created(missing: list[schemaplan.NotCreated]) -> None:
    """Without ``--accept-missing-constraints``, one line naming each object PostgreSQL would lack, and why."""
    if missing:
        listed = "; ".join(f"{n.kind} {n.name} on {n.table}: {n.reason}" for n in missing)
        raise CutoverAborted(
            f"PostgreSQL would run the app without {len(missing)} schema object(s) of SQLite's: {listed}",
            hint="fix the rows or the schema in SQLite and let them replicate, or pass --accept-missing-constraints "
            "(recorded in the certificate)",
        )
