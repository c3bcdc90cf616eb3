"""Apply one journal batch to PostgreSQL, state-based and exactly once.

The journal is key-only, so a batch is applied as *state*, never as a replay of operations:

1. In one SQLite read transaction: read the journal range ``after+1 .. seq_to`` and, for every key
   it names (new keys and the old keys of PK changes), the row as it is *now* (:func:`read_batch`).
2. In one PostgreSQL transaction (:meth:`replicator.apply.writer.Writer.write_batch`): binary-COPY the
   keys and the current rows into temp staging tables; ``DELETE`` every batch key; rewrite every row
   that conflicts with an incoming row on any UNIQUE index from SQLite's current state (deleted if
   SQLite no longer has it); refuse if two rows SQLite holds are equal on a UNIQUE index;
   ``INSERT ... SELECT`` the current rows; write the checkpoint and the per-table running digests; commit.

Why this is exact:

* A key whose row is gone stays deleted; a key whose row exists gets exactly SQLite's current row.
  Unique-key swaps inside a batch cannot collide: both rows are deleted before either is inserted.
* ``INSERT OR REPLACE`` deletes rows that conflict on a secondary UNIQUE key *without* a DELETE
  trigger (recursive_triggers is off; the victim triggers cover column indexes, not expression
  indexes), so the journal may never name them. A PostgreSQL row that conflicts with an incoming
  row is therefore looked up in SQLite (:func:`~replicator.apply.lookup.rows_for_target_keys`): gone,
  it is deleted; still there (it moved away from the value after the batch's range), it is written as
  it is now and a later entry rewrites it again. Never is a row SQLite still has deleted: if SQLite holds two rows
  that PostgreSQL finds equal on a UNIQUE index (lower() folds every letter there, ASCII only in
  SQLite; two spellings of one instant are one timestamp), the batch is refused with both keys and
  the index (:class:`~replicator.errors.UniqueCollision`).
* A batch may end before the visible journal end; rows then already hold values newer than
  ``seq_to``. The same keys come again in a later batch, which rewrites them: the state converges
  and is exact once the journal is drained.
* Foreign keys must not *act* (an ``ON DELETE CASCADE`` on a delete-then-reinsert would wipe the
  children): see :func:`~replicator.apply.foreignkeys.fk_mode` — ``session_replication_role = replica``
  where the role may set it, else the FKs are parked (dropped, definitions kept in the state schema)
  until cutover.
* A column PostgreSQL generates is never written (the plan's load columns exclude it). A SQLite
  generated column whose expression is not proved identical is a plain column in PostgreSQL: it is
  loaded, and rewritten here with SQLite's computed value like any other column.

The checkpoint row commits with the data, so PostgreSQL holds a batch if and only if it holds its
checkpoint; the journal is pruned only after that commit (the worker does it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from replicator import faults
from replicator.apply.lookup import KeyTuple, current_rows
from replicator.errors import UsageError
from replicator.plan.shape import TableShape
from triggers import journal

_VALUE_BYTES: Final = 16
"""Rough in-memory cost of a non-text value, for the batch byte bound."""


class TableRows(msgspec.Struct):
    """One table's part of a batch: every key the range names, and the current rows that exist."""

    keys: list[KeyTuple]
    rows: list[tuple[Any, ...]]
    """Loaded column values as SQLite holds them, followed by the key values."""
    last_seq: int
    bytes: int = 0


class Batch(msgspec.Struct):
    seq_from: int
    seq_to: int
    """Last journal seq covered: ``seq_from - 1`` for an empty batch."""
    head: int
    """The journal head the read transaction saw (``> seq_to`` means a backlog remains)."""
    entries: int
    tables: dict[str, TableRows]
    ignored: dict[str, int] = msgspec.field(default_factory=dict)
    """Entries of skipped tables per table: covered by the batch's checkpoint, never applied."""

    @property
    def empty(self) -> bool:
        return self.entries == 0

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables.values())


def read_batch(
    conn: sqlite3.Connection,
    after: int,
    targets: dict[str, TableShape],
    *,
    max_rows: int,
    max_bytes: int,
    ignore: frozenset[str] = frozenset(),
) -> Batch:
    """The next batch after ``after``, in one read transaction, bounded by entries and row bytes.

    When the rows for ``max_rows`` entries exceed ``max_bytes``, the range is halved (in the same
    transaction) until it fits or is one entry long: memory stays flat whatever the backlog.
    """
    with journal.read_transaction(conn) as head:
        if head <= after:
            return Batch(after + 1, after, head, 0, {})
        entries = journal.read_keys(conn, after, limit=max_rows)
        while True:
            tables = _read_rows(conn, entries, targets, ignore)
            size = sum(t.bytes for t in tables.values())
            if size <= max_bytes or entries.count <= 1:
                break
            entries = journal.read_keys(conn, after, limit=entries.count // 2)
        faults.point("apply.after_read")
        ignored = {t: n for t, n in entries.entries.items() if t in ignore}
        return Batch(after + 1, entries.seq_to, head, entries.count, tables, ignored)


def _read_rows(
    conn: sqlite3.Connection,
    entries: journal.KeyRange,
    targets: dict[str, TableShape],
    ignore: frozenset[str],
) -> dict[str, TableRows]:
    # skipped tables (replicator.plan.skips): consumed, never applied
    keys = {t: found for t, found in entries.keys.items() if t not in ignore}
    last = entries.last
    unknown = sorted(set(keys) - set(targets))
    if unknown:
        raise UsageError(
            f"the journal names table(s) the apply has no target for: {', '.join(unknown)}",
            hint="they were captured after the snapshot: `replicator run` picks new tables up online; "
            'or leave them out with [types."T"."*"] skip = true',
        )
    out: dict[str, TableRows] = {}
    for name, found in keys.items():
        ordered = _key_order(found)
        rows = current_rows(conn, targets[name], ordered)
        out[name] = TableRows(ordered, rows, last[name], _size(rows))
    return out


def _key_order(keys: Iterable[KeyTuple]) -> list[KeyTuple]:
    """The keys sorted when their values compare (a key column of one storage class), else in journal order.

    Sorted keys are read from SQLite in key order and staged in key order, so PostgreSQL's key delete
    walks the primary key index and the heap forward instead of jumping around: fewer pages touched
    and evicted per batch.
    """
    try:
        return sorted(keys)
    except TypeError:  # mixed storage classes (1 and 'a') or NULLs in one key column
        return list(keys)


_TEXT: Final = (str, bytes)


_SIZER: Final = msgspec.msgpack.Encoder()


_SIZE_CHUNK: Final = 1_000
"""Rows encoded at a time by :func:`_size`: a batch of wide rows encoded whole was one buffer as large as the
bound itself (32 MiB by default), allocated and freed per batch, on top of the rows."""


def _size(rows: list[tuple[Any, ...]]) -> int:
    """Roughly the bytes the rows hold: their msgpack length (text and blobs at their length, numbers
    at 1-9 bytes; 8x faster than a loop over the values), encoded ``_SIZE_CHUNK`` rows at a time, or,
    when text holds lone surrogates (not UTF-8 in SQLite) that msgpack refuses, a loop counting each
    non-text value as ``_VALUE_BYTES``."""
    encode = _SIZER.encode
    try:
        return sum(len(encode(rows[i : i + _SIZE_CHUNK])) for i in range(0, len(rows), _SIZE_CHUNK))
    except UnicodeEncodeError:
        pass
    total = 0
    for row in rows:
        for v in row:
            total += len(v) if isinstance(v, _TEXT) else _VALUE_BYTES  # a tuple: twice as fast as str | bytes
    return total
