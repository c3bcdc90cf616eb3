"""Apply one journal batch to PostgreSQL, state-based and exactly once.

The journal is key-only, so a batch is applied as *state*, never as a replay of operations:

1. In one SQLite read transaction: read the journal range ``after+1 .. seq_to`` and, for every key
   it names (new keys and the old keys of PK changes), the row as it is *now* (:func:`read_batch`).
2. In one PostgreSQL transaction (:func:`write_batch`): binary-COPY the keys and the current rows
   into temp staging tables; ``DELETE`` every batch key; rewrite every row that conflicts with an
   incoming row on any UNIQUE index from SQLite's current state (deleted if SQLite no longer has it);
   refuse if two rows SQLite holds are equal on a UNIQUE index; ``INSERT ... SELECT`` the current
   rows; write the checkpoint and the per-table running digests; commit.

Why this is exact:

* A key whose row is gone stays deleted; a key whose row exists gets exactly SQLite's current row.
  Unique-key swaps inside a batch cannot collide: both rows are deleted before either is inserted.
* ``INSERT OR REPLACE`` deletes rows that conflict on a secondary UNIQUE key *without* a DELETE
  trigger (recursive_triggers is off; the victim triggers cover column indexes, not expression
  indexes), so the journal may never name them. A PostgreSQL row that conflicts with an incoming
  row is therefore looked up in SQLite (:func:`rows_for_target_keys`): gone, it is deleted; still
  there (it moved away from the value after the batch's range), it is written as it is now and a
  later entry rewrites it again. Never is a row SQLite still has deleted: if SQLite holds two rows
  that PostgreSQL finds equal on a UNIQUE index (lower() folds every letter there, ASCII only in
  SQLite; two spellings of one instant are one timestamp), the batch is refused with both keys and
  the index (:class:`~replicator.errors.UniqueCollision`).
* A batch may end before the visible journal end; rows then already hold values newer than
  ``seq_to``. The same keys come again in a later batch, which rewrites them: the state converges
  and is exact once the journal is drained.
* Foreign keys must not *act* (an ``ON DELETE CASCADE`` on a delete-then-reinsert would wipe the
  children): see :func:`fk_mode` — ``session_replication_role = replica`` where the role may set
  it, else the FKs are parked (dropped, definitions kept in the state schema) until cutover.
* A column PostgreSQL generates is never written (the plan's load columns exclude it). A SQLite
  generated column whose expression is not proved identical is a plain column in PostgreSQL: it is
  loaded, and rewritten here with SQLite's computed value like any other column.

The checkpoint row commits with the data, so PostgreSQL holds a batch if and only if it holds its
checkpoint; the journal is pruned only after that commit (the worker does it).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import operator
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, Literal

import msgspec
import psycopg
import psycopg.errors
from psycopg import sql

from checkpoints import store
from checkpoints.digest import Kind, TableDigest, kinds_from_oids
from checkpoints.model import Checkpoint, TableChange, next_checkpoint
from replicator import faults, log, pg
from replicator.apply import dependents
from replicator.errors import WAIT_CUT_SHORT, BadValue, TargetError, UniqueCollision, UsageError, is_transient_pg
from replicator.plan.refusals import collision_message, duplicates_query, pg_message
from replicator.plan.schemaplan import SchemaPlan, TablePlan
from replicator.plan.shape import TableShape, table_shape, unread_key
from replicator.values import convert, quarantine
from replicator.values.readback import digest_exact
from triggers import journal
from triggers import source as sqlite_source
from triggers.install import Meta
from triggers.schema import quote_ident

KeyTuple = tuple[Any, ...]
FkMode = Literal["replica", "parked"]

READ_CHUNK: Final = 2_000
"""Keys per SQLite lookup statement (well under SQLITE_MAX_VARIABLE_NUMBER for any key width)."""
_VALUE_BYTES: Final = 16
"""Rough in-memory cost of a non-text value, for the batch byte bound."""


# --- what the apply needs per table ----------------------------------------------------------


TableTarget = TableShape
"""The apply's name for the shared table model (:mod:`replicator.plan.shape`), kept while the other issue-19
branches that still spell it merge; new code says ``TableShape``."""


def resolve_targets(
    plan: SchemaPlan, meta: Meta, skipped: Collection[str] = frozenset()
) -> tuple[dict[str, TableShape], dict[str, str]]:
    """Captured tables the apply can write, and the ones it cannot, each with the reason.

    A table captured by rowid has no column PostgreSQL could address its rows by: it is reported,
    never applied half-way. Snapshot-only tables are not journaled, and ``skipped`` ones (config skips
    them, or existing mode leaves an ORM's migration table out: :mod:`replicator.plan.skips`) are never
    applied: both are absent from both.
    """
    targets: dict[str, TableShape] = {}
    problems: dict[str, str] = {}
    for name, cap in meta.tables.items():
        if cap.mode == "snapshot-only" or name in skipped:
            continue
        try:
            table = plan.table(name)
        except KeyError:
            problems[name] = (
                "is captured but not in the target plan (created or captured after the snapshot and not picked up "
                "yet: `replicator run` picks it up online)"
            )
            continue
        if cap.mode == "rowid" or cap.key_columns is None:
            problems[name] = (
                "is captured by rowid, which PostgreSQL has no column for; set capture.tables."
                f"{name} = 'snapshot-only' (copied again at cutover) or give it a primary key"
            )
            continue
        targets[name] = _target(plan, table, cap.key_columns, problems)
    return {n: t for n, t in targets.items() if n not in problems}, problems


def _target(plan: SchemaPlan, table: TablePlan, key_columns: Sequence[str], problems: dict[str, str]) -> TableShape:
    """The table's shape keyed by its capture key (journal key order); a key column not loaded is a problem."""
    missing = unread_key(table, key_columns)
    if missing:
        problems[table.source] = f"key column(s) {', '.join(missing)} are not loaded into {table.name}"
    return table_shape(table, plan.schema, key_columns)


# --- reading a batch from SQLite -------------------------------------------------------------


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


def _size(rows: list[tuple[Any, ...]]) -> int:
    """Roughly the bytes the rows hold: their msgpack length (text and blobs at their length, numbers
    at 1-9 bytes; 8x faster than a loop over the values), or, when text holds lone surrogates (not
    UTF-8 in SQLite) that msgpack refuses, a loop counting each non-text value as ``_VALUE_BYTES``."""
    try:
        return len(_SIZER.encode(rows))
    except UnicodeEncodeError:
        pass
    total = 0
    for row in rows:
        for v in row:
            total += len(v) if isinstance(v, _TEXT) else _VALUE_BYTES  # a tuple: twice as fast as str | bytes
    return total


def current_rows(conn: sqlite3.Connection, target: TableShape, keys: Sequence[KeyTuple]) -> list[tuple[Any, ...]]:
    """The rows that exist now for ``keys``: loaded columns then key columns, exact SQLite values.

    Plain keys go through ``IN`` lists; a key holding NULL or text that is not UTF-8 is looked up
    alone with ``IS`` (journal.key_predicate), which matches exactly what the trigger recorded.
    """
    try:
        return _current_rows(conn, target, keys)
    except sqlite3.OperationalError as exc:
        if not sqlite_source.undecodable_text(exc):
            raise
    previous = conn.text_factory
    conn.text_factory = convert.decode_text
    try:
        return _current_rows(conn, target, keys)
    finally:
        conn.text_factory = previous


#: Key types whose PostgreSQL value is the SQLite value itself, so it finds the SQLite row directly.
_SAME_KEY_TYPES: Final = frozenset({"smallint", "integer", "bigint", "text", "varchar", "bytea"})


def rows_for_target_keys(
    conn: sqlite3.Connection, target: TableShape, keys: Collection[KeyTuple], convert_key: convert.RowConverter
) -> list[tuple[Any, ...]]:
    """SQLite's current rows for keys read from PostgreSQL (as :func:`current_rows` returns them).

    Keys of integer, text and bytea columns are looked up as they are. Other key types (a timestamp
    converted from text, say) have several SQLite spellings per value: the table's keys are read and
    converted to find them, a full read of the key column that only a UNIQUE conflict on such a
    table costs. One read transaction, unless the caller holds one (the cutover's frozen source).
    """
    with contextlib.nullcontext() if conn.in_transaction else journal.read_transaction(conn):
        if exact_keys(target):
            return current_rows(conn, target, list(keys))
        wanted = set(keys)
        names = ", ".join(quote_ident(c) for c in target.key_source)
        found: list[KeyTuple] = []
        for raw in conn.execute(f"SELECT {names} FROM {quote_ident(target.source)}"):  # noqa: S608 - quoted
            try:
                if convert_key(raw) in wanted:
                    found.append(tuple(raw))
            except convert.RowRefused:
                continue
        return current_rows(conn, target, found)


def exact_keys(target: TableShape) -> bool:
    """Every key column converts one SQLite value to one PostgreSQL value and back (no two spellings)."""
    return all(k.name in _SAME_KEY_TYPES and not k.strip_nul and not k.replace_bad_utf8 for k in target.key_types)


def _plain(key: KeyTuple) -> bool:
    for v in key:
        if v is None:
            return False
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def _current_rows(conn: sqlite3.Connection, target: TableShape, keys: Sequence[KeyTuple]) -> list[tuple[Any, ...]]:
    columns = ", ".join(quote_ident(c) for c in (*target.source_columns, *target.key_source))
    base = f"SELECT {columns} FROM {quote_ident(target.source)} WHERE "  # noqa: S608 - quoted identifiers
    width = len(target.key_source)
    plain: list[KeyTuple] = []
    slow: list[KeyTuple] = []
    for k in keys:
        (plain if _plain(k) else slow).append(k)
    rows: list[tuple[Any, ...]] = []
    step = max(1, READ_CHUNK // width)
    if width == 1:
        lhs = quote_ident(target.key_source[0])
        for i in range(0, len(plain), step):
            chunk = plain[i : i + step]
            marks = ",".join("?" * len(chunk))
            query = f"{base}{lhs} IN ({marks})"
            rows += conn.execute(query, [k[0] for k in chunk]).fetchall()
    else:
        lhs = "(" + ", ".join(quote_ident(c) for c in target.key_source) + ")"
        one = "(" + ",".join("?" * width) + ")"
        for i in range(0, len(plain), step):
            chunk = plain[i : i + step]
            params = [v for k in chunk for v in k]
            query = f"{base}{lhs} IN (VALUES {','.join([one] * len(chunk))})"
            rows += conn.execute(query, params).fetchall()
    for key in slow:
        where, params = journal.key_predicate(target.key_source, key)
        rows += conn.execute(base + where, params).fetchall()
    return _exactly(rows, keys, width, lookups=-(-len(plain) // step) + len(slow))


def _exactly(rows: list[tuple[Any, ...]], keys: Sequence[KeyTuple], width: int, lookups: int) -> list[tuple[Any, ...]]:
    """Only the rows whose key is one of ``keys`` byte for byte, each once.

    The lookups compare with the key columns' own collation (so the primary key index is used): under
    NOCASE or RTRIM the key 'Tag' also finds the row keyed 'tag'. That row belongs to the key 'tag'
    only: written for 'Tag' as well, it would be inserted twice, or in the batch that names only the
    REPLACE victim 'Tag'. Python compares text by code point, so set membership is exact for text
    (1 and 1.0 are one key to SQLite and to Python alike, and the journal reader keeps one of them).
    A row is found twice only by two lookup statements (chunks, or single-key lookups).
    """
    if width == 1:
        single = {k[0] for k in keys}
        rows = [row for row in rows if row[-1] in single]
    else:
        wanted = set(keys)
        rows = [row for row in rows if row[-width:] in wanted]
    if lookups > 1:
        unique: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for row in rows:
            unique.setdefault(row[-width:], row)
        rows = list(unique.values())
    return rows


# --- writing a batch to PostgreSQL -----------------------------------------------------------


class UniqueIndex(msgspec.Struct, frozen=True):
    name: str
    exprs: tuple[str, ...]
    """Each key column's definition as pg_get_indexdef prints it: a quoted column name or an expression."""
    predicate: str | None


class TableResult(msgspec.Struct, frozen=True):
    change: TableChange
    digest_count: int
    digest_hex: str
    conflicts: int
    """PostgreSQL rows removed because an incoming row conflicted with them on a UNIQUE key."""
    quarantined: int


class Applied(msgspec.Struct, frozen=True):
    checkpoint: Checkpoint
    tables: dict[str, TableResult]
    entries: int

    @property
    def rows_written(self) -> int:
        return sum(t.change.upserted for t in self.tables.values())


_Folded = tuple[TableDigest, set[KeyTuple]]
_WRITER_IDS = itertools.count(1)


def _digest_reads_json(cur: psycopg.Cursor[Any], types: Sequence[convert.TargetType]) -> None:
    """Row images read back by ``cur`` are only digested: their JSON documents are read as text
    (``JsonText``), canonicalised in C, instead of being parsed into Python objects first."""
    if any(t.name in ("json", "jsonb") for t in types):
        pg.json_as_text(cur)


def _fold_rows(rows: list[tuple[Any, ...]], kinds: list[Kind] | None, positions: tuple[int, ...]) -> _Folded:
    """The digest of row images (json columns by kind) and the set of their keys."""
    digest = TableDigest(kinds)
    digest.add_rows(rows)
    if len(positions) == 1:  # 5x faster than a tuple built from a generator per row
        (p,) = positions
        return digest, {(row[p],) for row in rows}
    key = operator.itemgetter(*positions)
    return digest, {key(row) for row in rows}


class _Pending(msgspec.Struct):
    """One table's statements are done; its digests may still be being computed."""

    removed: list[Future[_Folded]]
    added: Future[_Folded]
    conflicts: int
    quarantined: int

    def result(self, running: tuple[int, str] | None) -> TableResult:
        removed, removed_keys = TableDigest(), set()
        for future in self.removed:
            digest, keys = future.result()
            removed.merge(digest)
            removed_keys |= keys
        added, added_keys = self.added.result()
        deleted = TableDigest()
        deleted.add_rows(removed_keys - added_keys)
        total = TableDigest() if running is None else TableDigest.from_hex(running[0], running[1])
        total.subtract(removed)
        total.merge(added)
        return TableResult(
            change=TableChange.of(added, deleted, removed),
            digest_count=total.count,
            digest_hex=total.hexdigest(),
            conflicts=self.conflicts,
            quarantined=self.quarantined,
        )


class _Planned(msgspec.Struct):
    """One table's part of a batch, converted: what it writes and what it quarantines."""

    part: TableRows
    keys: list[KeyTuple]
    """The part's keys in PostgreSQL form (deleted, then the rows written)."""
    rows: list[tuple[Any, ...]]
    """SQLite's rows for them (every spelling of a key, :meth:`Writer._rows_of_every_spelling`)."""
    written: list[tuple[Any, ...]]
    refusals: list[quarantine.Refusal]
    waiting: list[tuple[str, dependents.Key]] = msgspec.field(default_factory=list)
    """Rows of other tables quarantined because one of these rows was: the batch re-evaluates them."""


def _key_dict(t: TableShape, key: Sequence[Any]) -> dependents.Key:
    """A key of ``t`` as the quarantine records keys."""
    return quarantine.json_safe_dict(dict(zip(t.key_source, key, strict=True)))


def _read_current(conn: sqlite3.Connection, t: TableShape, keys: Sequence[KeyTuple]) -> list[tuple[Any, ...]]:
    """:func:`current_rows` in one read transaction of its own (unless the caller holds one)."""
    with contextlib.nullcontext() if conn.in_transaction else journal.read_transaction(conn):
        return current_rows(conn, t, keys)


class Writer:
    """Applies batches over one PostgreSQL connection; holds per-connection staging tables.

    A new connection (after a reconnect) needs a new Writer: temp tables live in the session.
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        targets: dict[str, TableShape],
        *,
        state_schema: str,
        fk: FkMode,
        on_bad_value: str,
        source: sqlite3.Connection,
        plan: SchemaPlan | None = None,
    ) -> None:
        self.conn = conn
        self.source = source
        """SQLite, read (outside any batch's read transaction) for rows that conflict on a UNIQUE index."""
        self.targets = targets
        self.state_schema = state_schema
        self.fk = fk
        self.on_bad_value = on_bad_value
        self._staged: dict[str, tuple[sql.Identifier, sql.Identifier]] = {}
        self._uniques: dict[str, list[UniqueIndex]] = {}
        self._converters = {n: convert.row_converter(t.source, t.source_columns, t.types) for n, t in targets.items()}
        self._key_converters = {
            n: convert.row_converter(t.source, t.key_source, t.key_types) for n, t in targets.items()
        }
        self._quarantined: dict[str, bool] = {}
        self.plan = plan if plan is not None and on_bad_value == "quarantine" and plan.foreign_keys else None
        """Followed for the quarantine: a row whose parent is quarantined is quarantined too (:mod:`dependents`)."""
        self._rank = {name: i for i, name in enumerate(plan.order)} if plan is not None else {}
        self._follow: dependents.Follow | None = None
        self._id = next(_WRITER_IDS)
        self._digester = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replicator-digest")
        self._log = log.get("apply")

    # staging ---------------------------------------------------------------------------------

    def _staging(self, name: str) -> tuple[sql.Identifier, sql.Identifier]:
        """Temp tables shaped like the target (rows) and like its key (keys); emptied at each commit."""
        if name in self._staged:
            return self._staged[name]
        t = self.targets[name]
        n = f"{self._id}_{len(self._staged)}"
        rows, keys = sql.Identifier(f"_replicator_rows_{n}"), sql.Identifier(f"_replicator_keys_{n}")
        ident = sql.Identifier(t.schema, t.target)
        with self.conn.transaction():
            self.conn.execute(
                sql.SQL("CREATE TEMP TABLE {} ON COMMIT DELETE ROWS AS SELECT * FROM {} WITH NO DATA").format(
                    rows, ident
                )
            )
            self.conn.execute(
                sql.SQL("CREATE TEMP TABLE {} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA").format(
                    keys, sql.SQL(", ").join(map(sql.Identifier, t.key_target)), ident
                )
            )
        self._staged[name] = (rows, keys)
        self._uniques[name] = unique_indexes(self.conn, t)
        return rows, keys

    # one batch -------------------------------------------------------------------------------

    def write_batch(self, batch: Batch, prev: Checkpoint, extra: Any = None) -> Applied:
        """Apply ``batch`` and append its checkpoint in one transaction; returns what was written.

        ``extra(conn, applied)`` runs inside the transaction before commit (the worker records its
        phase there). Raises BadValue (policy stop) naming table, key and column; nothing is written.
        """
        for name in batch.tables:
            self._staging(name)
        if self.plan is not None:  # a batch may re-evaluate rows of any table that references another
            for fk in self.plan.foreign_keys:
                if fk.child in self.targets:
                    self._staging(fk.child)
        try:
            return self._write_batch(batch, prev, extra)
        except BaseException:
            self._follow = None  # what it held for the batch rolled back with it: read again
            raise

    def _write_batch(self, batch: Batch, prev: Checkpoint, extra: Any) -> Applied:
        results: dict[str, TableResult] = {}
        with self.conn.transaction():
            if self.fk == "replica":
                self.conn.execute("SET LOCAL session_replication_role = replica")
            # A batch's keys are few next to the table, and the staging tables have no statistics:
            # left alone the planner merge- or hash-joins them against a full scan of the target,
            # a cost that grows with the table (measured: 250 ms vs 30 ms for 11k keys in 370k rows).
            # Index nested loops cost O(keys log n) whatever the table size.
            self.conn.execute("SET LOCAL enable_mergejoin = off")
            self.conn.execute("SET LOCAL enable_hashjoin = off")
            planned = self._plan_batch(batch)
            digests = read_digests(self.conn, self.state_schema, list(planned))
            pending: dict[str, _Pending] = {}
            for name, work in planned.items():
                try:
                    pending[name] = self._write_table(name, work)
                except psycopg.Error as exc:
                    raise _write_error(name, self.targets[name].target, exc) from None
            for name, done in pending.items():  # the digests were computed while PostgreSQL worked
                results[name] = done.result(digests.get(name))
                self._log.debug(
                    "table applied",
                    table=name,
                    seq_from=batch.seq_from,
                    seq_to=batch.seq_to,
                    upserted=results[name].change.upserted,
                    deleted=results[name].change.deleted,
                )
            faults.point("apply.after_write")
            changes = {n: r.change for n, r in results.items()}
            cp = next_checkpoint(prev, seq_to=batch.seq_to, tables=changes, journal_head=batch.head)
            store.append(self.conn, cp, self.state_schema)
            for name, result in results.items():
                write_table_state(self.conn, self.state_schema, self.targets[name], result, planned[name].part.last_seq)
            applied = Applied(cp, results, batch.entries)
            if extra is not None:
                extra(self.conn, applied)
            faults.point("apply.before_commit")
        return applied

    def _write_table(self, name: str, work: _Planned) -> _Pending:
        t = self.targets[name]
        rows_tmp, keys_tmp = self._staged[name]
        ident = sql.Identifier(t.schema, t.target)
        part, rows, refusals = work.part, work.rows, work.refusals
        cols = sql.SQL(", ").join(map(sql.Identifier, t.target_columns))
        with self.conn.cursor() as cur:
            _digest_reads_json(cur, t.types)
            written = self._stage(cur, name, work.keys, rows, refusals, converted=work.written)
            removed = [self._delete_keys(cur, t, ident, keys_tmp)]
            conflicts, looked_up = 0, list[tuple[Any, ...]]()
            if self._uniques[name]:
                conflicts, looked_up = self._rewrite_conflicts(cur, name, ident, written, removed, refusals)
            exact = digest_exact(t.types)
            insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(ident, cols, cols, rows_tmp)
            if not exact:  # PostgreSQL may store these values differently: digest what it returns
                insert += sql.SQL(" RETURNING {}").format(cols)
            try:
                # a savepoint (cheaper than looking for equal staged rows in every batch): a unique violation
                # is then explained by _refuse_collisions, which reads the staging table
                with self.conn.transaction() if self._uniques[name] else contextlib.nullcontext():
                    cur.execute(insert, binary=not exact)
            except psycopg.errors.UniqueViolation:
                self._refuse_collisions(cur, name, [*rows, *looked_up])
                raise
            added = self._digester.submit(_fold_rows, written, None, t.key_positions) if exact else self._fold(cur, t)
        if name not in self._quarantined:  # asked once: only this writer adds rows while it streams
            self._quarantined[name] = has_quarantine(self.conn, self.state_schema, name)
        if refusals or self._quarantined[name]:
            width = len(t.source_columns)
            spelled = [] if rows is part.rows else rows  # other spellings of the batch's keys (their own keys)
            keys_named = [*part.keys, *(row[width:] for row in [*spelled, *looked_up])]
            record_refusals(self.conn, self.state_schema, name, t.key_source, keys_named, refusals)
            self._quarantined[name] = True
        return _Pending(removed, added, conflicts, len(refusals))

    def _stage(
        self,
        cur: psycopg.Cursor[Any],
        name: str,
        keys: Sequence[KeyTuple],
        rows: Sequence[tuple[Any, ...]],
        refusals: list[quarantine.Refusal],
        converted: list[tuple[Any, ...]] | None = None,
    ) -> list[tuple[Any, ...]]:
        """COPY keys (PostgreSQL form) and converted rows into the staging tables; returns the rows written.
        ``converted``: the rows to write, converted already (:meth:`_plan_table`); else ``rows`` are."""
        t = self.targets[name]
        rows_tmp, keys_tmp = self._staged[name]
        width = len(t.source_columns)
        with cur.copy(
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                keys_tmp, sql.SQL(", ").join(map(sql.Identifier, t.key_target))
            )
        ) as copy:
            copy.set_types(convert.copy_types(t.key_types))
            for key in keys:
                copy.write_row(key)
        convert_row = self._converters[name]
        written: list[tuple[Any, ...]] = []
        cols = sql.SQL(", ").join(map(sql.Identifier, t.target_columns))
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(rows_tmp, cols)) as copy:
            copy.set_types(convert.copy_types(t.types))
            if converted is not None:
                for values in converted:
                    copy.write_row(values)
                return converted
            for row in rows:
                try:
                    values = convert_row(row[:width])
                except convert.RowRefused as exc:
                    refusals.append(self._refused(t, row[width:], exc))
                    continue
                copy.write_row(values)
                written.append(values)
        return written

    # planning a batch: what each table writes and quarantines ---------------------------------

    def _plan_batch(self, batch: Batch) -> dict[str, _Planned]:
        """Each table's rows converted, the refused ones (and, following foreign keys, the ones whose parent
        is quarantined) set apart, before anything is written. Following foreign keys, parents come first,
        and a table gains the rows the batch must re-evaluate with a parent's: the ones waiting for a row
        the batch names (released when it is fixed), and the children in PostgreSQL of a row it quarantines."""
        if self.plan is None:
            return {name: self._plan_table(name, part, None) for name, part in batch.tables.items()}
        if self._follow is None:
            self._follow = dependents.Follow(self.plan, self.conn, self.state_schema)
        parts, planned = dict(batch.tables), dict[str, _Planned]()
        todo = set(parts)
        while todo:
            name = min(todo, key=lambda n: (self._rank.get(n, len(self._rank)), n))
            todo.discard(name)
            work = planned[name] = self._plan_table(name, parts[name], self._follow)
            for child, found in self._dependents_of(name, work).items():
                if self._add_rows(parts, child, found, batch.seq_to):
                    todo.add(child)
        return {name: planned[name] for name in sorted(planned, key=lambda n: self._rank.get(n, len(self._rank)))}

    def _plan_table(self, name: str, part: TableRows, follow: dependents.Follow | None) -> _Planned:
        t = self.targets[name]
        keys = self._convert_keys(name, part.keys)
        rows = part.rows if exact_keys(t) else self._rows_of_every_spelling(name, keys)
        width = len(t.source_columns)
        convert_row = self._converters[name]
        refusals: list[quarantine.Refusal] = []
        waiting: list[tuple[str, dependents.Key]] = []
        if follow is not None and follow.involved(name):
            named = {*part.keys, *(row[width:] for row in rows)}
            waiting = follow.release(name, [_key_dict(t, k) for k in named])
        if follow is None:
            written: list[tuple[Any, ...]] = []
            for row in rows:
                try:
                    written.append(convert_row(row[:width]))
                except convert.RowRefused as exc:
                    refusals.append(self._refused(t, row[width:], exc))
            return _Planned(part, keys, rows, written, refusals)
        good: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []
        for row in rows:
            try:
                good.append((row, convert_row(row[:width])))
            except convert.RowRefused as exc:
                refusals.append(follow.held.quarantined(name, row, self._refused(t, row[width:], exc)))
        good = follow.block(name, lambda row: dict(zip(t.key_source, row[width:], strict=True)), good, refusals)
        follow.settle(refusals)
        return _Planned(part, keys, rows, [values for _row, values in good], refusals, waiting)

    def _dependents_of(self, name: str, work: _Planned) -> dict[str, tuple[list[KeyTuple], list[tuple[Any, ...]]]]:
        """The rows to re-evaluate with ``name``'s, per table: their keys, and SQLite's current rows for them.

        The rows waiting for one the batch names (a key whose row is gone too: its entry leaves the
        quarantine), and the children in PostgreSQL of a row the batch quarantines."""
        assert self._follow is not None
        t = self.targets[name]
        width = len(t.source_columns)
        found: dict[str, tuple[list[KeyTuple], list[tuple[Any, ...]]]] = {}
        waiting: dict[str, list[KeyTuple]] = {}
        for child, key in work.waiting:
            target = self.targets.get(child)
            if target is not None and all(c in key for c in target.key_source):
                raw = tuple(quarantine.from_json_safe(key[c]) for c in target.key_source)
                waiting.setdefault(child, []).append(raw)
        for child, keys in waiting.items():
            found[child] = (keys, _read_current(self.source, self.targets[child], keys))
        if work.refusals:
            quarantined = {json.dumps(r.key, sort_keys=True) for r in work.refusals}
            rows = [row for row in work.rows if json.dumps(_key_dict(t, row[width:]), sort_keys=True) in quarantined]
            for child, pg_keys in self._follow.captured(self.conn, name, rows, self._key_target).items():
                target = self.targets[child]
                read = rows_for_target_keys(self.source, target, set(pg_keys), self._key_converters[child])
                keys, before = found.setdefault(child, ([], []))
                before.extend(read)
                keys.extend(tuple(row[len(target.source_columns) :]) for row in read)
        return found

    def _key_target(self, name: str) -> tuple[str, ...] | None:
        target = self.targets.get(name)
        return target.key_target if target is not None else None

    def _add_rows(
        self, parts: dict[str, TableRows], name: str, found: tuple[list[KeyTuple], list[tuple[Any, ...]]], seq: int
    ) -> bool:
        """Add keys and their rows (SQLite's, key last) to ``name``'s part of the batch; True if a key is new.
        A table the journal range does not name gets a part whose last_seq is the batch's end."""
        keys, rows = found
        part = parts.get(name) or TableRows([], [], seq)
        known = set(part.keys)
        new = [k for k in dict.fromkeys(keys) if k not in known]
        if not new:
            return False
        width = len(self.targets[name].key_source)
        fresh = set(new)
        parts[name] = TableRows(
            [*part.keys, *new], [*part.rows, *(r for r in rows if tuple(r[-width:]) in fresh)], part.last_seq
        )
        return True

    def _delete_keys(
        self, cur: psycopg.Cursor[Any], t: TableShape, ident: sql.Identifier, keys_tmp: sql.Identifier
    ) -> Future[_Folded]:
        """DELETE the staged keys, returning the removed row images to the digest thread."""
        join = sql.SQL(" AND ").join(
            sql.SQL("{}.{} = k.{}").format(ident, sql.Identifier(c), sql.Identifier(c)) for c in t.key_target
        )
        cur.execute(
            sql.SQL("DELETE FROM {} USING {} k WHERE {}").format(ident, keys_tmp, join) + _returning(ident, t),
            binary=True,
        )
        return self._fold(cur, t)

    def _rewrite_conflicts(
        self,
        cur: psycopg.Cursor[Any],
        name: str,
        ident: sql.Identifier,
        written: list[tuple[Any, ...]],
        removed: list[Future[_Folded]],
        refusals: list[quarantine.Refusal],
    ) -> tuple[int, list[tuple[Any, ...]]]:
        """Make room for the staged rows: rewrite every PostgreSQL row they conflict with on a UNIQUE index
        from SQLite's current state. Returns (rows SQLite no longer has, the SQLite rows looked up).

        SQLite's REPLACE deletes the rows conflicting on a UNIQUE index without a DELETE trigger (an
        expression index has no victim trigger at all), and a batch may end before the entry that
        moved a row away from a value. So a conflicting PostgreSQL row is looked up in SQLite now: a
        row that is gone is deleted; one that exists is written as it is now (a later entry names it
        again, so the state converges). Its new values may conflict with yet another row: repeat.
        A looked-up row that still holds the value is a collision, refused by _refuse_collisions.
        """
        t = self.targets[name]
        _rows_tmp, keys_tmp = self._staged[name]
        victims = 0
        looked_up: list[tuple[Any, ...]] = []
        seen: set[KeyTuple] = set()
        # a key seen twice was not deleted (a NULL in a nullable key): the INSERT reports the conflict
        while found := self._conflicting_keys(cur, name, ident) - seen:
            seen |= found
            rows = rows_for_target_keys(self.source, t, found, self._key_converters[name])
            width = len(t.source_columns)
            sqlite_keys = [row[width:] for row in rows]
            looked_up += rows
            cur.execute(sql.SQL("DELETE FROM {}").format(keys_tmp))
            still = self._convert_keys(name, sqlite_keys)
            written += self._stage(cur, name, [*found, *(k for k in still if k not in found)], rows, refusals)
            removed.append(self._delete_keys(cur, t, ident, keys_tmp))
            victims += len(found - set(still))
            self._log.debug("unique conflicts rewritten", table=name, found=len(found), gone=len(found - set(still)))
        return victims, looked_up

    def _conflicting_keys(self, cur: psycopg.Cursor[Any], name: str, ident: sql.Identifier) -> set[KeyTuple]:
        """Keys of the PostgreSQL rows that conflict with a staged row on any UNIQUE index."""
        t = self.targets[name]
        rows_tmp, _keys_tmp = self._staged[name]
        found: set[KeyTuple] = set()
        for index in self._uniques[name]:
            cur.execute(_conflict_select(ident, rows_tmp, index, t.key_target), binary=True)
            found.update(tuple(row) for row in cur.fetchall())
        return found

    def _refuse_collisions(self, cur: psycopg.Cursor[Any], name: str, staged: Sequence[tuple[Any, ...]]) -> None:
        """Refuse when two staged rows are equal on a UNIQUE index and SQLite holds both as staged: then
        they are distinct in SQLite (its own index accepted them) and PostgreSQL would have to lose
        one. Named with both keys and the index, instead of PostgreSQL's bare unique violation at the
        INSERT. Returns if no two staged rows are equal. ``staged``: the SQLite rows that were staged.

        The batch's rows were read before the rows _rewrite_conflicts looked up: if SQLite has
        changed either since (two rows swapping a value), the batch is retried, re-read (transient).
        """
        t = self.targets[name]
        rows_tmp, _keys_tmp = self._staged[name]
        for index in self._uniques[name]:
            cur.execute(duplicates_query(rows_tmp, index.exprs, index.predicate, t.key_target), binary=True)
            keys = {tuple(row) for row in cur.fetchall()}
            if len(keys) < 2:
                continue
            if self._by_key(name, staged, keys) != self._by_key(
                name, rows_for_target_keys(self.source, t, keys, self._key_converters[name]), keys
            ):
                raise TargetError(
                    f"rows of {t.source} changed in SQLite while a batch was applied (two rows swapping a value "
                    f"of unique index {index.name}); the batch is read again",
                    hint="nothing to do: the daemon retries",
                    transient=True,
                )
            raise UniqueCollision(
                collision_message(t.source, t.key_source, sorted(keys, key=repr)[:2], index.name, index.exprs)
                + "; the batch was not applied, so neither is lost",
                hint=(
                    "make the two values distinct as PostgreSQL compares them (its lower()/upper() fold every "
                    "letter, SQLite's only ASCII; date-time text is compared as the instant it names) and run "
                    f"again: the daemon resumes at this batch; or drop index {index.name} in PostgreSQL"
                ),
            )

    def _rows_of_every_spelling(self, name: str, keys: Sequence[KeyTuple]) -> list[tuple[Any, ...]]:
        """SQLite's current rows for the batch's keys in PostgreSQL form, whatever their SQLite spelling.

        A key column whose conversion is not one-to-one (date-time text: '2024-05-01 10:00:00' and
        '2024-05-01T10:00:00' name one instant) lets the batch's key name a PostgreSQL row that another
        spelling wrote. Deleting the key and inserting only the batch spelling's row would lose that
        row, silently: so every spelling's row is written back, and two spellings alive at once (two
        rows SQLite keeps apart, one key in PostgreSQL) are refused, both named. Costs a read of the
        table's keys per batch (:func:`rows_for_target_keys`), on such tables only.
        """
        t = self.targets[name]
        width = len(t.source_columns)
        rows = rows_for_target_keys(self.source, t, set(keys), self._key_converters[name])
        raw = [row[width:] for row in rows]
        spellings: dict[KeyTuple, list[KeyTuple]] = {}
        for converted, original in zip(self._convert_keys_of(name, raw), raw, strict=True):
            if converted is not None:
                spellings.setdefault(converted, []).append(tuple(original))
        for found in spellings.values():
            if len(found) > 1:
                raise UniqueCollision(
                    collision_message(t.source, t.key_source, found[:2], "primary key", t.key_source)
                    + "; the batch was not applied, so neither is lost",
                    hint="write the key in one spelling in SQLite (PostgreSQL compares date-time text as the "
                    "instant it names) and run again: the daemon resumes at this batch",
                )
        return rows

    def _by_key(
        self, name: str, rows: Iterable[tuple[Any, ...]], keys: set[KeyTuple]
    ) -> dict[KeyTuple, tuple[Any, ...]]:
        """SQLite rows (as read: loaded columns, then key) by their key in PostgreSQL form, for ``keys`` only."""
        width = len(self.targets[name].source_columns)
        out: dict[KeyTuple, tuple[Any, ...]] = {}
        for key, row in zip(self._convert_keys_of(name, [r[width:] for r in rows]), rows, strict=True):
            if key in keys:
                out[key] = tuple(row)
        return out

    def _fold(self, cur: psycopg.Cursor[Any], t: TableShape) -> Future[_Folded]:
        """Hand the returned row images to the digest thread, which hashes them while PostgreSQL works."""
        rows = cur.fetchall()
        assert cur.description is not None
        kinds = kinds_from_oids(d.type_code for d in cur.description)
        return self._digester.submit(_fold_rows, rows, kinds, t.key_positions)

    def close(self) -> None:
        """Stop the digest thread and drop this writer's staging tables (a rebuilt writer, after an
        ADD COLUMN, stages rows of the new shape on the same connection)."""
        self._digester.shutdown(wait=True)
        staged, self._staged = self._staged, {}
        if staged and not self.conn.closed:
            with contextlib.suppress(psycopg.Error), self.conn.transaction():
                for rows, keys in staged.values():
                    self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(rows, keys))

    def _convert_keys_of(self, name: str, keys: Sequence[KeyTuple]) -> list[KeyTuple | None]:
        """Each key in PostgreSQL form, None where its column type refuses it (positions kept)."""
        convert_key = self._key_converters[name]
        out: list[KeyTuple | None] = []
        for key in keys:
            try:
                out.append(convert_key(key))
            except convert.RowRefused:
                out.append(None)
        return out

    def _convert_keys(self, name: str, keys: Sequence[KeyTuple]) -> list[KeyTuple]:
        """Keys in PostgreSQL form; a key its column type refuses cannot be in PostgreSQL, so it is dropped."""
        return [k for k in self._convert_keys_of(name, keys) if k is not None]

    def _refused(self, t: TableShape, key: Sequence[Any], exc: convert.RowRefused) -> quarantine.Refusal:
        named = dict(zip(t.key_source, key, strict=True))
        if self.on_bad_value != "quarantine":
            shown = ", ".join(f"{k}={v!r}" for k, v in named.items())
            raise BadValue(
                f"refused value in {t.source} ({shown}) column {exc.column}: {exc.reason}; "
                f"value {convert.excerpt(exc.value)}; the batch was not applied",
                hint=(
                    f"fix the value in SQLite (the daemon resumes at this batch), override the type "
                    f"([types.{t.source}.{exc.column}] type = ...), or set snapshot.on_bad_value = 'quarantine'"
                ),
            )
        return quarantine.make(t.source, named, exc.column, exc.value, exc.reason)


def _returning(ident: sql.Identifier, t: TableShape) -> sql.Composed:
    return sql.SQL(" RETURNING {}").format(
        sql.SQL(", ").join(sql.SQL("{}.{}").format(ident, sql.Identifier(c)) for c in t.target_columns)
    )


def _index_terms(index: UniqueIndex) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """The index's key expressions, and its predicate as `` WHERE (p)`` and `` AND (p)`` (or nothing)."""
    exprs = sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(e)) for e in index.exprs)
    if index.predicate is None:
        return exprs, sql.SQL(""), sql.SQL("")
    return (
        exprs,
        sql.SQL(" WHERE ({})").format(sql.SQL(index.predicate)),
        sql.SQL(" AND ({})").format(sql.SQL(index.predicate)),
    )


def _conflict_select(
    ident: sql.Identifier, staged: sql.Identifier, index: UniqueIndex, key: Sequence[str]
) -> sql.Composed:
    """``SELECT key FROM t WHERE (e1, e2) IN (SELECT e1, e2 FROM staged WHERE pred) AND pred``.

    The index definitions come from pg_get_indexdef, so they are valid SQL for the target table;
    inside the subquery the same bare column names resolve to the staging table, which has the
    target's columns. NULLs never match ``IN``, exactly as a (NULLS DISTINCT) unique index allows them.
    """
    exprs, where, also = _index_terms(index)
    return sql.SQL("SELECT {} FROM {} WHERE ({}) IN (SELECT {} FROM {}{}){}").format(
        sql.SQL(", ").join(map(sql.Identifier, key)), ident, exprs, exprs, staged, where, also
    )


def unique_indexes(conn: psycopg.Connection[Any], t: TableShape) -> list[UniqueIndex]:
    """The target's valid UNIQUE indexes other than the one on exactly the capture key."""
    rows = conn.execute(
        "SELECT c.relname, i.indnkeyatts, pg_get_expr(i.indpred, i.indrelid), "
        "  array(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k) "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indisvalid ORDER BY c.relname",
        (sql.Identifier(t.schema, t.target).as_string(conn),),
    ).fetchall()
    key = {sql.Identifier(k).as_string(conn) for k in t.key_target} | set(t.key_target)
    out: list[UniqueIndex] = []
    for name, _n, predicate, exprs in rows:
        if predicate is None and len(exprs) == len(t.key_target) and set(exprs) <= key:
            continue  # the key delete already removed every row this index could conflict on
        out.append(UniqueIndex(str(name), tuple(str(e) for e in exprs), predicate))
    return out


def _write_error(table: str, target: str, exc: psycopg.Error) -> TargetError:
    if isinstance(exc, psycopg.errors.UniqueViolation):
        hint = (
            "a unique index the conflict check cannot evaluate (NULLS NOT DISTINCT, a NULL in the key, or an "
            "expression over generated columns) rejected a row; report it with the index definition"
        )
    elif isinstance(
        exc, psycopg.errors.ForeignKeyViolation | psycopg.errors.CheckViolation | psycopg.errors.NotNullViolation
    ):
        hint = "the target schema is stricter than the SQLite data; fix the row in SQLite or relax the constraint"
    else:
        hint = "check the target table against the SQLite table; the batch was rolled back and is retried on restart"
    return TargetError(
        f"applying to {target} (from {table}) failed: {pg_message(exc)}", hint=hint, transient=is_transient_pg(exc)
    )


# --- quarantine for the apply ---------------------------------------------------------------


def record_refusals(
    conn: psycopg.Connection[Any],
    schema_name: str,
    table: str,
    key_columns: Sequence[str],
    keys: Sequence[KeyTuple],
    refusals: Sequence[quarantine.Refusal],
) -> None:
    """Replace the quarantine rows of exactly these keys: a key fixed in SQLite leaves the quarantine."""

    target = sql.Identifier(schema_name, "quarantine")
    named = [json.dumps(quarantine.make(table, dict(zip(key_columns, k, strict=True)), "", None, "").key) for k in keys]
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE table_name = %s AND key = ANY(%s::jsonb[])").format(target), (table, named)
    )
    quarantine.insert(conn, schema_name, refusals, None, "row skipped by apply")


def has_quarantine(conn: psycopg.Connection[Any], schema_name: str, table: str) -> bool:
    """Whether the table has quarantine rows, acknowledged or not: a key the batch names leaves the
    quarantine when its row is written (acknowledged, it would still make verify and cutover leave the
    row out of SQLite's side while PostgreSQL holds it)."""
    row = conn.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE table_name = %s)").format(
            sql.Identifier(schema_name, "quarantine")
        ),
        (table,),
    ).fetchone()
    return bool(row and row[0])


# --- the apply's own state: plan, running digests, parked foreign keys ----------------------


def save_plan(conn: psycopg.Connection[Any], schema_name: str, plan: SchemaPlan) -> None:
    """Keep the plan the snapshot loaded with: the apply must convert exactly as it did."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.apply_plan (id, body) VALUES (1, %s) "
            "ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, saved_at = now()"
        ).format(sql.Identifier(schema_name)),
        (msgspec.json.encode(plan),),
    )


def load_plan(conn: psycopg.Connection[Any], schema_name: str) -> SchemaPlan | None:
    row = conn.execute(
        sql.SQL("SELECT body FROM {}.apply_plan WHERE id = 1").format(sql.Identifier(schema_name))
    ).fetchone()
    return None if row is None else msgspec.json.decode(bytes(row[0]), type=SchemaPlan)


def read_digests(conn: psycopg.Connection[Any], schema_name: str, tables: Sequence[str]) -> dict[str, tuple[int, str]]:
    rows = conn.execute(
        sql.SQL("SELECT table_name, digest_count, digest FROM {}.apply_tables WHERE table_name = ANY(%s)").format(
            sql.Identifier(schema_name)
        ),
        (list(tables),),
    ).fetchall()
    return {str(n): (int(c), str(d)) for n, c, d in rows}


def write_table_state(
    conn: psycopg.Connection[Any], schema_name: str, t: TableShape, result: TableResult, last_seq: int
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.apply_tables AS a (table_name, target_table, digest_count, digest, upserted, deleted, "
            "conflicts, quarantined, last_seq, last_change_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now()) "
            "ON CONFLICT (table_name) DO UPDATE SET digest_count = EXCLUDED.digest_count, digest = EXCLUDED.digest, "
            "upserted = a.upserted + EXCLUDED.upserted, deleted = a.deleted + EXCLUDED.deleted, "
            "conflicts = a.conflicts + EXCLUDED.conflicts, quarantined = a.quarantined + EXCLUDED.quarantined, "
            "last_seq = EXCLUDED.last_seq, last_change_at = EXCLUDED.last_change_at"
        ).format(sql.Identifier(schema_name)),
        (
            t.source,
            t.target,
            result.digest_count,
            result.digest_hex,
            result.change.upserted,
            result.change.deleted,
            result.conflicts,
            result.quarantined,
            last_seq,
        ),
    )


def set_table_error(
    conn: psycopg.Connection[Any], schema_name: str, table: str, target: str, error: str | None, hint: str | None
) -> None:
    """Record (or clear, with None) a table's error: a table in error never disappears from status."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.apply_tables AS a (table_name, target_table, digest_count, digest, error, hint) "
            "VALUES (%s, %s, 0, %s, %s, %s) ON CONFLICT (table_name) DO UPDATE SET error = EXCLUDED.error, "
            "hint = EXCLUDED.hint"
        ).format(sql.Identifier(schema_name)),
        (table, target, "0" * 64, error, hint),
    )


def clear_table_errors(conn: psycopg.Connection[Any], schema_name: str) -> None:
    conn.execute(
        sql.SQL("UPDATE {}.apply_tables SET error = NULL, hint = NULL WHERE error IS NOT NULL").format(
            sql.Identifier(schema_name)
        )
    )


def table_digest_of(conn: psycopg.Connection[Any], t: TableShape) -> TableDigest:
    """The digest of a target table as PostgreSQL holds it now (seeds the running digest once)."""
    digest: TableDigest | None = None
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, t.target_columns)), sql.Identifier(t.schema, t.target)
    )
    with conn.transaction(), conn.cursor(name="replicator_digest_seed", binary=True) as cur:
        _digest_reads_json(cur, t.types)
        cur.itersize = 5_000
        cur.execute(query)
        while True:
            rows = cur.fetchmany(5_000)
            if digest is None:
                assert cur.description is not None
                digest = TableDigest(kinds_from_oids(d.type_code for d in cur.description))
            if not rows:
                break
            digest.add_rows(rows)
    assert digest is not None
    return digest


def seed_digests(conn: psycopg.Connection[Any], schema_name: str, targets: dict[str, TableShape]) -> list[str]:
    """Compute and store the running digest of every table that has none yet; returns their names."""
    have = read_digests(conn, schema_name, list(targets))
    seeded = []
    for name, t in targets.items():
        if name in have:
            continue
        digest = table_digest_of(conn, t)
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.apply_tables (table_name, target_table, digest_count, digest) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (table_name) DO UPDATE SET digest_count = EXCLUDED.digest_count, digest = EXCLUDED.digest"
            ).format(sql.Identifier(schema_name)),
            (name, t.target, digest.count, digest.hexdigest()),
        )
        seeded.append(name)
    return seeded


# --- foreign keys during replication ---------------------------------------------------------


def fk_mode(conn: psycopg.Connection[Any]) -> FkMode:
    """``replica`` if this role may ``SET session_replication_role`` (then FK triggers, cascades
    included, do not fire inside apply transactions); otherwise ``parked``: FKs must be absent."""
    try:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
        return "replica"
    except psycopg.errors.InsufficientPrivilege:
        return "parked"


def park_foreign_keys(
    conn: psycopg.Connection[Any], schema_name: str, target_schema: str, tables: Sequence[str]
) -> list[str]:
    """Record, then drop, every FK on or referencing ``tables`` (one transaction); returns their names.

    Without the privilege to disable FK triggers, an FK would cascade or refuse on the
    delete-then-insert of a batch. The definitions are kept so cutover recreates them NOT VALID and
    then VALIDATEs (:func:`restore_foreign_keys`).
    """
    rows = conn.execute(
        "SELECT DISTINCT c.conrelid::regclass::text, cl.relname, c.conname, pg_get_constraintdef(c.oid) "
        "FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace "
        "LEFT JOIN pg_class rf ON rf.oid = c.confrelid LEFT JOIN pg_namespace rn ON rn.oid = rf.relnamespace "
        "WHERE c.contype = 'f' AND ((n.nspname = %s AND cl.relname = ANY(%s)) "
        "OR (rn.nspname = %s AND rf.relname = ANY(%s))) ORDER BY 2, 3",
        (target_schema, list(tables), target_schema, list(tables)),
    ).fetchall()
    names = []
    with conn.transaction():
        for _qualified, table, name, definition in rows:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.parked_foreign_keys (table_name, constraint_name, definition) VALUES (%s, %s, %s) "
                    "ON CONFLICT DO NOTHING"
                ).format(sql.Identifier(schema_name)),
                (table, name, definition),
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(target_schema, table), sql.Identifier(name)
                )
            )
            names.append(f"{table}.{name}")
    return names


class RestoredFk(msgspec.Struct, frozen=True):
    table: str
    name: str
    error: str | None = None


def restore_foreign_keys(conn: psycopg.Connection[Any], schema_name: str, target_schema: str) -> list[RestoredFk]:
    """Cutover: re-add each parked FK ``NOT VALID``, then ``VALIDATE`` it; each in its own savepoint."""
    rows = conn.execute(
        sql.SQL("SELECT table_name, constraint_name, definition FROM {}.parked_foreign_keys ORDER BY 1, 2").format(
            sql.Identifier(schema_name)
        )
    ).fetchall()
    out = []
    for table, name, definition in rows:
        ident = sql.Identifier(target_schema, table)
        text = str(definition).removesuffix(" NOT VALID")
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
                        ident, sql.Identifier(name), sql.SQL(text)
                    )
                )
                conn.execute(
                    sql.SQL("DELETE FROM {}.parked_foreign_keys WHERE table_name = %s AND constraint_name = %s").format(
                        sql.Identifier(schema_name)
                    ),
                    (table, name),
                )
        except WAIT_CUT_SHORT:
            raise  # a lock wait past the budget is not a broken key: the caller names the blocking session
        except psycopg.Error as exc:
            out.append(RestoredFk(table, name, pg_message(exc)))
            continue
        try:
            with conn.transaction():
                conn.execute(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(ident, sql.Identifier(name)))
            out.append(RestoredFk(table, name))
        except WAIT_CUT_SHORT:
            raise
        except psycopg.Error as exc:
            out.append(RestoredFk(table, name, pg_message(exc)))
    return out
