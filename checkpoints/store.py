"""The checkpoint chain in PostgreSQL: one table in the replicator's state schema.

``append`` runs in the caller's transaction and never commits: the apply path writes a batch and its
checkpoint in one transaction, so PostgreSQL holds a batch if and only if it holds its checkpoint.

Each row keeps the exact canonical body bytes (``bytea``, so no server encoding or jsonb
normalisation can alter them) and its hash; ``kind``, ``seq_from``, ``seq_to``, ``prev_hash`` and
``at`` are copies for SQL queries (the audit checks all but ``at`` against the body; readers decode
the body, never trust a copy). Two writers are fenced twice over: ``append`` locks the head row and
refuses a checkpoint that does not extend it (number, prev_hash, journal range), and the primary
key refuses a second checkpoint with the same number; ``append`` also holds the chain to its grammar
(:data:`checkpoints.model.FOLLOWERS`: nothing but the rollback window after the cutover, nothing after a
rollback or finalize). A maintenance ``compact`` takes a table lock,
so appends wait for it rather than fail.

In psql: ``SELECT number, kind, seq_to, convert_from(body, 'UTF8')::jsonb FROM replicator.checkpoints``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, Final

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg.pq import TransactionStatus

from checkpoints.errors import ChainBroken, CheckpointError, CheckpointNotFound, NoChainTable, WriterConflict
from checkpoints.model import (
    REVERSE_KINDS,
    ZERO_HASH,
    Checkpoint,
    Kind,
    Record,
    check_follows,
    encode_body,
    hash_body,
    seq_from_after,
)

DEFAULT_SCHEMA: Final = "replicator"
TABLE: Final = "checkpoints"

STREAM_CHUNK: Final = 1_000
"""Rows per round trip when streaming the chain."""

#: Columns that copy a body field, for SQL; the audit compares each with the body.
COPIED_COLUMNS: Final = ("kind", "seq_from", "seq_to", "prev_hash")

_CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    number bigint PRIMARY KEY CHECK (number > 0),
    kind text NOT NULL,
    seq_from bigint NOT NULL,
    seq_to bigint NOT NULL,
    at timestamptz NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    body bytea NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(TABLE))


def ensure_schema(conn: psycopg.Connection[Any], schema: str = DEFAULT_SCHEMA) -> None:
    """Create the state schema and the checkpoints table if absent (idempotent)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        cur.execute(sql.SQL(_CREATE).format(table=_table(schema)))


def _missing_table(schema: str) -> NoChainTable:
    return NoChainTable(
        f"there is no checkpoint table {schema}.{TABLE} in this database",
        hint="check --target and the state schema, or run the snapshot first: it writes the genesis checkpoint",
    )


def _in_transaction(conn: psycopg.Connection[Any]) -> bool:
    return not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE


def append(conn: psycopg.Connection[Any], checkpoint: Checkpoint, schema: str = DEFAULT_SCHEMA) -> None:
    """Add ``checkpoint`` at the head, in the caller's open transaction; never commits.

    Raises WriterConflict if it does not extend the current head (another writer got there first or
    this one's view is stale): the caller's transaction then fails, and the batch with it.
    """
    if not _in_transaction(conn):
        raise CheckpointError(
            "append needs the caller's transaction",
            hint="call it inside conn.transaction() together with the batch it records",
        )
    body = encode_body(checkpoint)
    if not checkpoint.hash or hash_body(body) != checkpoint.hash:
        raise CheckpointError(
            f"checkpoint {checkpoint.number} is not sealed: its hash does not match its fields",
            hint="build it with checkpoints.model.genesis() or next_checkpoint()",
        )
    table = _table(schema)
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT number, hash, body FROM {} ORDER BY number DESC LIMIT 1 FOR UPDATE").format(table)
            )
            head = cur.fetchone()
            found = None if head is None else Record(number=int(head[0]), hash=str(head[1]), body=bytes(head[2]))
            _check_extends(checkpoint, None if found is None else _head_of(found))
            _insert(cur, table, checkpoint, body)
    except psycopg.errors.UniqueViolation:
        raise WriterConflict(
            f"checkpoint {checkpoint.number} already exists: another writer appended first",
            hint="only one replicator may apply to a target; stop the other one, then restart this one",
        ) from None
    except psycopg.errors.UndefinedTable:
        raise _missing_table(schema) from None


def _check_extends(checkpoint: Checkpoint, head: Checkpoint | None) -> None:
    if head is None:
        if checkpoint.number != 1 or checkpoint.kind is not Kind.GENESIS or checkpoint.prev_hash != ZERO_HASH:
            raise WriterConflict(
                f"the chain is empty, so checkpoint {checkpoint.number} ({checkpoint.kind}) cannot start it",
                hint="the first checkpoint is the snapshot's genesis; rerun the snapshot",
            )
        return
    if checkpoint.number != head.number + 1 or checkpoint.prev_hash != head.link_hash:
        raise WriterConflict(
            f"checkpoint {checkpoint.number} does not extend the head, checkpoint {head.number}",
            hint="another writer is appending to this target, or this process resumed from a stale head; "
            "stop the other writer and restart",
        )
    check_follows(head, checkpoint.kind)
    seq_from = seq_from_after(head, checkpoint.kind)
    if checkpoint.seq_from != seq_from or checkpoint.seq_to < checkpoint.seq_from - 1:
        opens = checkpoint.kind in REVERSE_KINDS and head.kind not in REVERSE_KINDS
        where = (
            f"the reverse journal starts at 1 after the cutover checkpoint {head.number}"
            if opens
            else f"the head ends at {head.seq_to}"
        )
        raise CheckpointError(
            f"checkpoint {checkpoint.number} ({checkpoint.kind}) covers journal entries "
            f"{checkpoint.seq_from}..{checkpoint.seq_to}, but {where}",
            hint="a batch must start right after the previous one; build it with checkpoints.model.next_checkpoint()",
        )


def _insert(cur: psycopg.Cursor[Any], table: sql.Composed, checkpoint: Checkpoint, body: bytes) -> None:
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (number, kind, seq_from, seq_to, at, prev_hash, hash, body)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(table),
        (
            checkpoint.number,
            str(checkpoint.kind),
            checkpoint.seq_from,
            checkpoint.seq_to,
            dt.datetime.fromisoformat(checkpoint.at),
            checkpoint.prev_hash,
            checkpoint.hash,
            body,
        ),
    )


def _select(schema: str, where: sql.Composable, limit: int | None, *, newest_first: bool = False) -> sql.Composed:
    query = sql.SQL("SELECT number, hash, body, {} FROM {} {} ORDER BY number {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in COPIED_COLUMNS),
        _table(schema),
        where,
        sql.SQL("DESC" if newest_first else "ASC"),
    )
    if limit is not None:
        query = sql.SQL("{} LIMIT {}").format(query, sql.Literal(limit))
    return query


def _record(row: tuple[Any, ...]) -> Record:
    number, hash, body, *copies = row
    return Record(
        number=int(number), hash=str(hash), body=bytes(body), columns=dict(zip(COPIED_COLUMNS, copies, strict=True))
    )


def iter_records(
    conn: psycopg.Connection[Any],
    *,
    since: int | None = None,
    until: int | None = None,
    limit: int | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> Iterator[Record]:
    """Stored records numbered above ``since`` and up to ``until``, in number order, undecoded, streamed.

    What the audit and the export read: rows arrive in chunks, so a long chain is never all in memory.
    """
    if limit is not None and limit < 0:
        raise CheckpointError(f"limit {limit} is negative", hint="pass --limit 1 or more")
    conditions: list[sql.Composable] = []
    params: list[int] = []
    if since is not None:
        conditions.append(sql.SQL("number > %s"))
        params.append(since)
    if until is not None:
        conditions.append(sql.SQL("number <= %s"))
        params.append(until)
    where = sql.SQL("WHERE {}").format(sql.SQL(" AND ").join(conditions)) if conditions else sql.SQL("")
    try:
        with conn.cursor() as cur:
            for row in cur.stream(_select(schema, where, limit), params, size=STREAM_CHUNK):
                yield _record(row)
    except psycopg.errors.UndefinedTable:
        raise _missing_table(schema) from None


def records(conn: psycopg.Connection[Any], *, schema: str = DEFAULT_SCHEMA) -> list[Record]:
    return list(iter_records(conn, schema=schema))


def _decode(record: Record) -> Checkpoint:
    try:
        return record.decode()
    except CheckpointError as exc:
        raise ChainBroken(f"checkpoint {record.number} is damaged: {exc.message}", hint=exc.hint) from None


def read(
    conn: psycopg.Connection[Any],
    since: int | None = None,
    limit: int | None = None,
    *,
    until: int | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> list[Checkpoint]:
    """Checkpoints numbered above ``since`` and up to ``until`` (None: no bound), at most ``limit``."""
    return [_decode(r) for r in iter_records(conn, since=since, until=until, limit=limit, schema=schema)]


def latest(conn: psycopg.Connection[Any], *, schema: str = DEFAULT_SCHEMA) -> Checkpoint | None:
    """The head of the chain, where a restarted apply resumes; None before the snapshot's genesis."""
    try:
        with conn.cursor() as cur:
            cur.execute(_select(schema, sql.SQL(""), 1, newest_first=True))
            row = cur.fetchone()
    except psycopg.errors.UndefinedTable:
        raise _missing_table(schema) from None
    return None if row is None else _head_of(_record(row))


def last_forward(conn: psycopg.Connection[Any], *, schema: str = DEFAULT_SCHEMA) -> Checkpoint | None:
    """The newest checkpoint of the forward direction (any kind but the rollback window's): where SQLite's
    journal stands for this chain; None before the genesis.

    Why not :func:`latest`: after the cutover the chain goes on with the window's records, whose ranges are
    PostgreSQL transaction-id horizons, not SQLite journal seqs. Whatever compares a position with SQLite's
    journal (the phase row, the journal's head, the keys journaled since) needs this record: the head
    itself before the cutover, the cutover checkpoint after it. One query, walking back from the head over
    the window's records only. The record is checked as the head is (its hash, its number) and its body
    must say it is a forward kind: the ``kind`` column is only a copy."""
    kinds = sorted(str(k) for k in REVERSE_KINDS)
    try:
        with conn.cursor() as cur:
            cur.execute(_select(schema, sql.SQL("WHERE kind <> ALL(%s)"), 1, newest_first=True), (kinds,))
            row = cur.fetchone()
    except psycopg.errors.UndefinedTable:
        raise _missing_table(schema) from None
    if row is None:
        return None
    checkpoint = _head_of(_record(row), "the last forward checkpoint")
    if checkpoint.kind in REVERSE_KINDS:
        raise ChainBroken(
            f"checkpoint {checkpoint.number} is filed as a {row[3]} checkpoint but its body is a {checkpoint.kind} "
            "one: the kind column was edited by hand",
            hint="run 'replicator checkpoints verify' to see every finding; do not resume until the chain verifies",
        )
    return checkpoint


def _head_of(record: Record, what: str = "the head checkpoint") -> Checkpoint:
    """The head record (or another one read alone, ``what``) decoded, refused unless it is what it claims: its own
    hash, in its own place.

    A record whose body names another number was swapped or renumbered by hand; building on it
    would collide with the real checkpoint of that number and be blamed on another writer.
    """
    checkpoint = _decode(record)
    hint = "run 'replicator checkpoints verify' to see every finding; do not resume until the chain verifies"
    if hash_body(record.body) != record.hash:
        raise ChainBroken(f"{what} {record.number} does not match its hash", hint=hint)
    if checkpoint.number != record.number:
        raise ChainBroken(
            f"checkpoint {record.number} holds the body of checkpoint {checkpoint.number}: "
            "checkpoints were swapped or renumbered by hand",
            hint=hint,
        )
    return checkpoint


def started_at(conn: psycopg.Connection[Any], *, schema: str = DEFAULT_SCHEMA) -> dt.datetime | None:
    """When the chain's first stored record was written (PostgreSQL's clock); None for an empty chain."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT written_at FROM {} ORDER BY number LIMIT 1").format(_table(schema)))
            row = cur.fetchone()
    except psycopg.errors.UndefinedTable:
        raise _missing_table(schema) from None
    return None if row is None else row[0]


def bounds(conn: psycopg.Connection[Any], *, schema: str = DEFAULT_SCHEMA) -> tuple[int | None, int | None]:
    """The lowest and highest stored checkpoint numbers; (None, None) for an empty chain."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT min(number), max(number) FROM {}").format(_table(schema)))
            row = cur.fetchone()
    except psycopg.errors.UndefinedTable:
        raise _missing_table(schema) from None
    return (None, None) if row is None else (row[0], row[1])


def get(conn: psycopg.Connection[Any], number: int, *, schema: str = DEFAULT_SCHEMA) -> Checkpoint:
    """Checkpoint ``number``; CheckpointNotFound names the range that exists."""
    found = list(iter_records(conn, since=number - 1, limit=1, schema=schema))
    if found and found[0].number == number:
        return _decode(found[0])
    low, high = bounds(conn, schema=schema)
    span = f"it holds {low}..{high}" if low is not None else "it is empty"
    raise CheckpointNotFound(f"there is no checkpoint {number}: {span}", hint="see 'replicator checkpoints list'")


def replace_prefix(
    conn: psycopg.Connection[Any], upto: int, compaction: Checkpoint, *, schema: str = DEFAULT_SCHEMA
) -> int:
    """Delete checkpoints numbered up to ``upto`` and insert ``compaction`` in their place (caller's txn).

    Only the audit's ``compact`` calls this, after verifying the chain under a table lock.
    """
    if not _in_transaction(conn):
        raise CheckpointError("replace_prefix needs the caller's transaction", hint="call it via compaction.compact")
    table = _table(schema)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DELETE FROM {} WHERE number <= %s").format(table), (upto,))
        removed = cur.rowcount
        _insert(cur, table, compaction, encode_body(compaction))
    return removed


def lock(conn: psycopg.Connection[Any], *, schema: str = DEFAULT_SCHEMA) -> None:
    """Hold off appends until the caller's transaction ends (they wait, they do not fail)."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(_table(schema)))
    except psycopg.errors.UndefinedTable:
        raise _missing_table(schema) from None
