"""One reverse batch written into the fenced SQLite file, exactly once, and its checkpoint in the chain.

**Exactly once across two databases.** The SQLite transaction that writes the batch's rows also records, in
``_replicator_meta``, the horizon it reached and the sealed ``reverse`` checkpoint that describes it (its
exact body bytes and hash). Then one PostgreSQL transaction appends that checkpoint, prunes the journal below
the horizon and records the window's position. A crash between the two commits leaves SQLite ahead of the
chain by exactly the recorded checkpoint, which :func:`settle` appends on the next start: the batch is never
applied twice and never recorded twice. A crash before the SQLite commit leaves nothing; the batch is re-read.

**Only we write.** The file stays fenced for everyone else: the batch's transaction is ``BEGIN IMMEDIATE``
(no other writer can hold the lock), drops the triggers of the tables it writes (the fence, the capture and
the app's own), writes, and creates them again SQL for SQL before it commits (:func:`triggers.fence.lifted`);
no other connection ever sees the file unfenced, and the rows land exactly as PostgreSQL holds them.

**Per key**, as the forward apply: the key's SQLite row (found by its PostgreSQL form, so a date-time key in
another spelling is found too) is updated in place (its rowid and key spelling kept), inserted when SQLite has
none, deleted when PostgreSQL has none. Two rows that trade a UNIQUE value within one batch would collide
half-way: then the batch's keys are deleted and their rows inserted afresh, under a savepoint.

**Values** are written in the storage form the app uses (:mod:`replicator.reverse.writeback`); a value the
form cannot hold exactly is refused with table, key and column, recorded in the quarantine (action
:data:`REFUSED_ACTION`), and its row is left as SQLite had it: ``rollback`` refuses until it is acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from checkpoints import store
from checkpoints.digest import TableDigest, kinds_from_types
from checkpoints.model import Checkpoint, Kind, Record, TableChange, next_checkpoint
from replicator import faults, log
from replicator.apply.keyforms import KeyForms
from replicator.apply.lookup import exact_keys
from replicator.errors import ReplicatorError
from replicator.plan.shape import TableShape
from replicator.reverse import writeback
from replicator.reverse.batch import KeyTuple, ReverseBatch, TableBatch
from replicator.state import quarantine, reverse
from replicator.state.store import StateStore
from replicator.values import convert, refusal
from replicator.values.quarantine import Refusal, make
from triggers import fence, journal, meta
from triggers.schema import Affinity, Generated, Schema, Table, quote_ident, read_schema

_KEY_AFFINITY: Final = {
    "smallint": Affinity.INTEGER,
    "integer": Affinity.INTEGER,
    "bigint": Affinity.INTEGER,
    "text": Affinity.TEXT,
    "varchar": Affinity.TEXT,
}
"""The affinity under which SQLite stores a key of this PostgreSQL type in that type's form."""
POSITION_KEY: Final = "reverse_position"
PENDING_KEY: Final = "reverse_pending"
REFUSED_ACTION: Final = reverse.REFUSED_ACTION
"""The quarantine action of a value the reverse apply refused (its row is not written back)."""
SAMPLE_ROWS: Final = 200


class ReverseError(ReplicatorError):
    """The reverse direction cannot go on as things are (a record that does not fit the chain, a damaged file)."""


class Written(msgspec.Struct, frozen=True):
    checkpoint: Checkpoint | None
    upserted: int
    deleted: int
    refused: int


def first_horizon(head: Checkpoint) -> int:
    """Where the next reverse batch starts: after the last reverse record, or at 1 after the cutover."""
    return head.seq_to + 1 if head.kind is Kind.REVERSE else 1


class Writer:
    """Writes reverse batches into the SQLite file on ``sconn`` (autocommit, writable), chain on ``pconn``."""

    def __init__(
        self,
        sconn: sqlite3.Connection,
        pconn: psycopg.Connection[Any],
        schema: str,
        shapes: Mapping[str, TableShape],
    ) -> None:
        self.sconn = sconn
        self.pconn = pconn
        self.schema = schema
        self.shapes = shapes
        self.log = log.get("reverse")
        self._writers: dict[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]] = {}
        self._forward: dict[str, convert.RowConverter] = {}
        self._keys: dict[str, KeyForms] = {}
        self._schema: Schema | None = None
        self._stored_positions: dict[str, tuple[int, ...]] = {}
        self.touched: dict[str, set[KeyTuple]] = {}
        """Per table, the SQLite keys (as SQLite holds them) of the rows written or deleted since
        :meth:`watch` (``rollback`` compares them again after its final drain)."""
        self.touched_whole: set[str] = set()
        """Tables written whole since :meth:`watch` (a TRUNCATE, a table without a key)."""

    def watch(self) -> None:
        """Start collecting the keys written from here on (forget those before)."""
        self.touched = {}
        self.touched_whole = set()

    # --- per table, built once ---------------------------------------------------------------------------

    def _table(self, t: TableShape) -> Table:
        """SQLite's own description of the table (affinities, generated columns), read once."""
        if self._schema is None:
            self._schema = read_schema(self.sconn)
        return self._schema.table(t.source)

    def _stored(self, t: TableShape) -> tuple[int, ...]:
        """Positions of the columns we write: SQLite computes its generated columns itself (and refuses a
        value for one); the comparison after the drain checks what it computed."""
        if t.source not in self._stored_positions:
            generated = {c.name for c in self._table(t).columns if c.generated is not Generated.NO}
            self._stored_positions[t.source] = tuple(i for i, c in enumerate(t.source_columns) if c not in generated)
        return self._stored_positions[t.source]

    def _writer(self, t: TableShape) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
        if t.source not in self._writers:
            columns = ", ".join(quote_ident(c) for c in t.source_columns)
            query = f"SELECT {columns} FROM {quote_ident(t.source)} ORDER BY rowid DESC LIMIT {int(SAMPLE_ROWS)}"  # noqa: S608
            try:
                samples = self.sconn.execute(query).fetchall()
            except sqlite3.OperationalError:  # WITHOUT ROWID: any rows will do
                fallback = f"SELECT {columns} FROM {quote_ident(t.source)} LIMIT {int(SAMPLE_ROWS)}"  # noqa: S608
                samples = self.sconn.execute(fallback).fetchall()
            affinity = {c.name: str(c.affinity) for c in self._table(t).columns}
            forms = writeback.learn_forms(t, samples, affinities=[affinity[c] for c in t.source_columns])
            self._writers[t.source] = writeback.row_writer(t.source, t, forms)
        return self._writers[t.source]

    def _forward_of(self, t: TableShape) -> convert.RowConverter:
        if t.source not in self._forward:
            self._forward[t.source] = convert.row_converter(t.source, t.source_columns, t.types)
        return self._forward[t.source]

    def _keys_as_stored(self, t: TableShape) -> bool:
        """Whether SQLite holds this table's keys exactly in their PostgreSQL form, so that a key read from
        PostgreSQL finds its row by ``=``: an integer key in a column of INTEGER affinity, a text key in one of
        TEXT affinity. Else (a column without a declared type holding the app's integers, planned as text: '2'
        in PostgreSQL, 2 in SQLite) the table's keys are read and converted to find the row: looked up as '2',
        the app's row was not found, a second row was inserted beside it and the update never reached it."""
        affinity = {c.name: c.affinity for c in self._table(t).columns}
        return exact_keys(t) and all(
            _KEY_AFFINITY.get(ty.name) == affinity.get(c) for c, ty in zip(t.key_source, t.key_types, strict=True)
        )

    def _keyforms(self, t: TableShape) -> KeyForms:
        if t.source not in self._keys:
            self._keys[t.source] = KeyForms(t, self.sconn, exact=self._keys_as_stored(t))
        return self._keys[t.source]

    # --- one batch -----------------------------------------------------------------------------------------

    def write(self, batch: ReverseBatch, head: Checkpoint) -> Written:
        """Write ``batch`` into SQLite and its checkpoint after ``head``; returns what was written."""
        if batch.empty:
            return Written(None, 0, 0, 0)
        prepared = [self._prepare(tb) for tb in batch.tables]
        refusals = [r for p in prepared for r in p.refusals]
        try:
            self.sconn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise ReverseError(
                f"the SQLite file is busy, the reverse batch waits: {exc}", hint="it is retried", transient=True
            ) from exc
        try:
            with fence.lifted(self.sconn, [p.table for p in prepared]):
                changes = {p.table: self._apply(p) for p in prepared}
            checkpoint = next_checkpoint(head, seq_to=batch.hi - 1, tables=changes, kind=Kind.REVERSE)
            record = Record.of(checkpoint)
            quarantined = [_quarantine_change(p, refusals) for p in prepared]
            pending = [record.hash, record.body.decode(), quarantined]
            meta.put(self.sconn, POSITION_KEY, str(batch.hi))
            meta.put(self.sconn, PENDING_KEY, msgspec.json.encode(pending).decode())
            faults.point("reverse.before_sqlite_commit")
            self.sconn.execute("COMMIT")
        except BaseException:
            if self.sconn.in_transaction:
                self.sconn.execute("ROLLBACK")
            raise
        faults.point("reverse.between_commits")
        self._commit_postgres(checkpoint, batch.hi, quarantined)
        upserted = sum(c.upserted for c in changes.values())
        deleted = sum(c.deleted for c in changes.values())
        self.log.info(
            "reverse batch written",
            checkpoint=checkpoint.number,
            entries=batch.entries,
            upserted=upserted,
            deleted=deleted,
            refused=len(refusals),
        )
        return Written(checkpoint, upserted, deleted, len(refusals))

    def _commit_postgres(self, checkpoint: Checkpoint, hi: int, quarantined: Sequence[QuarantineChange]) -> None:
        with self.pconn.transaction():
            store.append(self.pconn, checkpoint, self.schema)
            reverse.prune(self.pconn, self.schema, hi)
            reverse.record_applied(self.pconn, self.schema, hi)
            _replace_refusals(StateStore(self.pconn, self.schema), quarantined)
            faults.point("reverse.before_postgres_commit")

    # --- preparing: values converted outside the write lock --------------------------------------------------

    def _prepare(self, tb: TableBatch) -> _Prepared:
        t = self.shapes[tb.table]
        write = self._writer(t)
        refusals: list[Refusal] = []
        if tb.whole is not None:
            rows = [self._convert(t, write, row, refusals) for row in tb.whole]
            return _Prepared(
                tb.table, t, whole=[r for r in rows if r is not None], pg_whole=tb.whole, refusals=refusals
            )
        present: dict[KeyTuple, tuple[Any, ...]] = {}
        gone: list[KeyTuple] = []
        pg_rows: dict[KeyTuple, tuple[Any, ...]] = {}
        for key, row in tb.rows.items():
            if row is None:
                gone.append(key)
                continue
            converted = self._convert(t, write, row, refusals)
            if converted is not None:
                present[key] = converted
                pg_rows[key] = row
        return _Prepared(
            tb.table, t, present=present, gone=gone, pg_rows=pg_rows, refusals=refusals, named_keys=list(tb.rows)
        )

    def _convert(
        self,
        t: TableShape,
        write: Callable[[tuple[Any, ...]], tuple[Any, ...]],
        row: tuple[Any, ...],
        out: list[Refusal],
    ) -> tuple[Any, ...] | None:
        try:
            return write(row)
        except refusal.RowRefused as exc:
            key = _key_dict(t, [row[p] for p in t.key_positions])
            out.append(make(t.source, key, exc.column, exc.value, f"reverse apply: {exc.reason}"))
            return None

    # --- writing, inside the SQLite transaction ------------------------------------------------------------

    def _apply(self, p: _Prepared) -> TableChange:
        t = p.shape
        forward = self._forward_of(t)
        kinds = kinds_from_types(ty.name for ty in t.types)
        upserted, removed = TableDigest(kinds), TableDigest(kinds)
        if p.whole is not None:
            for row in self.sconn.execute(_select_all(t)):
                _add_forward(removed, forward, row)
            self.sconn.execute(f"DELETE FROM {quote_ident(t.source)}")  # noqa: S608 - quoted
            with _sqlite_refuses(t, [tuple(r[i] for i in t.key_positions) for r in p.whole]):
                self._insert(t, p.whole)
            upserted.add_rows(p.pg_whole or [])
            self.touched_whole.add(t.source)
            return TableChange.of(upserted, None, removed, restated="reload")
        keyforms = self._keyforms(t)
        width = len(t.source_columns)
        wanted = set(p.present) | set(p.gone)
        existing = keyforms.by_key(keyforms.rows_for(wanted), wanted) if wanted else {}
        deleted = TableDigest(kinds_from_types(ty.name for ty in t.key_types))
        self.sconn.execute("SAVEPOINT reverse_table")
        try:
            self._write_keys(t, p, existing, width)
        except sqlite3.IntegrityError:
            self.sconn.execute("ROLLBACK TO reverse_table")
            with _sqlite_refuses(t, list(p.present)):
                self._rewrite_keys(t, p, existing, width)
        self.sconn.execute("RELEASE reverse_table")
        for key in p.gone:
            if key in existing:
                deleted.add(key)
        for old in existing.values():
            _add_forward(removed, forward, old[:width])
        upserted.add_rows(list(p.pg_rows.values()))
        touched = self.touched.setdefault(t.source, set())
        touched.update(tuple(old[width:]) for old in existing.values())
        touched.update(tuple(row[i] for i in t.key_positions) for row in p.present.values())
        return TableChange.of(upserted, deleted, removed)

    def _write_keys(
        self, t: TableShape, p: _Prepared, existing: Mapping[KeyTuple, tuple[Any, ...]], width: int
    ) -> None:
        for key in p.gone:
            old = existing.get(key)
            if old is not None:
                self._delete(t, old[width:])
        inserts = []
        for key, row in p.present.items():
            old = existing.get(key)
            if old is None:
                inserts.append(row)
            else:
                self._update(t, row, old[width:])
        if inserts:
            self._insert(t, inserts)

    def _rewrite_keys(
        self, t: TableShape, p: _Prepared, existing: Mapping[KeyTuple, tuple[Any, ...]], width: int
    ) -> None:
        """Two rows traded a UNIQUE value: every named key's row deleted, then inserted afresh."""
        for old in existing.values():
            self._delete(t, old[width:])
        if p.present:
            self._insert(t, list(p.present.values()))

    def _delete(self, t: TableShape, key: Sequence[Any]) -> None:
        where, params = _key_where(t, key)
        self.sconn.execute(f"DELETE FROM {quote_ident(t.source)} WHERE {where}", params)  # noqa: S608 - quoted

    def _insert(self, t: TableShape, rows: Sequence[tuple[Any, ...]]) -> None:
        stored = self._stored(t)
        columns = ", ".join(quote_ident(t.source_columns[i]) for i in stored)
        marks = ", ".join("?" * len(stored))
        self.sconn.executemany(
            f"INSERT INTO {quote_ident(t.source)} ({columns}) VALUES ({marks})",  # noqa: S608 - quoted
            [[row[i] for i in stored] for row in rows],
        )

    def _update(self, t: TableShape, row: tuple[Any, ...], key: Sequence[Any]) -> None:
        keys = set(t.key_positions)
        sets = [i for i in self._stored(t) if i not in keys]
        if not sets:
            return
        assignments = ", ".join(f"{quote_ident(t.source_columns[i])} = ?" for i in sets)
        where, params = _key_where(t, key)
        self.sconn.execute(
            f"UPDATE {quote_ident(t.source)} SET {assignments} WHERE {where}",  # noqa: S608 - quoted
            [row[i] for i in sets] + params,
        )


class _Prepared(msgspec.Struct):
    table: str
    shape: TableShape
    present: dict[KeyTuple, tuple[Any, ...]] = msgspec.field(default_factory=dict)
    """Key (PostgreSQL form) → the row to write, in SQLite form."""
    gone: list[KeyTuple] = msgspec.field(default_factory=list)
    pg_rows: dict[KeyTuple, tuple[Any, ...]] = msgspec.field(default_factory=dict)
    """The rows as PostgreSQL holds them (digested into the checkpoint)."""
    whole: list[tuple[Any, ...]] | None = None
    pg_whole: list[tuple[Any, ...]] | None = None
    refusals: list[Refusal] = msgspec.field(default_factory=list)
    named_keys: list[KeyTuple] = msgspec.field(default_factory=list)


@contextlib.contextmanager
def _sqlite_refuses(t: TableShape, keys: Sequence[KeyTuple]) -> Iterator[None]:
    """A constraint of SQLite's refusing rows PostgreSQL holds, named (the batch is not written, nor any later).

    Why: PostgreSQL may hold rows SQLite cannot: two keys equal under SQLite's NOCASE collation ('a' and 'A'),
    a UNIQUE, CHECK or NOT NULL of SQLite's that PostgreSQL does not have. Raised bare, sqlite3's
    IntegrityError said nothing of which table, which rows or what to do, at every retry."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        shown = ", ".join(repr(k if len(k) != 1 else k[0]) for k in keys[:5]) + (", ..." if len(keys) > 5 else "")
        raise ReverseError(
            f"SQLite refuses rows PostgreSQL holds in table {t.source!r} ({exc}); the batch's keys: {shown}. "
            "Nothing of the batch was written",
            hint="SQLite has a constraint PostgreSQL does not (a NOCASE key, a UNIQUE, CHECK or NOT NULL): change "
            "those rows in PostgreSQL and the reverse direction resumes at this batch, or stay on PostgreSQL with "
            "`replicator finalize`",
        ) from exc


def _key_where(t: TableShape, key: Sequence[Any]) -> tuple[str, list[Any]]:
    where, params = journal.key_predicate(t.key_source, key)
    return where, list(params)


def _select_all(t: TableShape) -> str:
    columns = ", ".join(quote_ident(c) for c in t.source_columns)
    return f"SELECT {columns} FROM {quote_ident(t.source)}"  # noqa: S608 - quoted


def _add_forward(digest: TableDigest, forward: convert.RowConverter, row: Sequence[Any]) -> None:
    """An old SQLite row, digested as PostgreSQL held it (its forward conversion); a row the migration could
    not convert never reached PostgreSQL, so it is not part of the table's digest either."""
    try:
        digest.add(forward(tuple(row)))
    except refusal.RowRefused:
        return


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return str(value)


def _key_dict(t: TableShape, key: Sequence[Any]) -> dict[str, Any]:
    """A key (PostgreSQL form) as the quarantine names it: SQLite column → value."""
    return {c: _json_safe(v) for c, v in zip(t.key_source, key, strict=True)}


class QuarantineChange(msgspec.Struct, frozen=True):
    """One table's reverse refusals after a batch: the keys it named (as the quarantine spells them) and the
    values it refused among them. Kept in the SQLite file's pending record with the checkpoint, so that
    :func:`settle` records them too when a crash fell between the two commits."""

    table: str
    named: list[str]
    refusals: list[Refusal]
    whole: bool = False
    """The table was written whole: every earlier refusal of it is replaced, whatever its key."""


def _quarantine_change(p: _Prepared, refusals: Sequence[Refusal]) -> QuarantineChange:
    named = [json.dumps(make(p.table, _key_dict(p.shape, k), "", None, "").key) for k in p.named_keys]
    return QuarantineChange(p.table, named, [r for r in refusals if r.table == p.table], whole=p.whole is not None)


def _replace_refusals(state_store: StateStore, changes: Sequence[QuarantineChange]) -> None:
    """The reverse apply's quarantine rows of exactly the named keys replaced: a key written back leaves it."""
    for change in changes:
        if change.whole:  # a table written whole: its earlier refusals are all replaced by this batch's
            state_store.conn.execute(
                sql.SQL("DELETE FROM {} WHERE table_name = %s AND action = %s").format(state_store.table("quarantine")),
                (change.table, REFUSED_ACTION),
            )
        elif change.named:
            state_store.conn.execute(
                sql.SQL("DELETE FROM {} WHERE table_name = %s AND action = %s AND key = ANY(%s::jsonb[])").format(
                    state_store.table("quarantine")
                ),
                (change.table, REFUSED_ACTION, change.named),
            )
        else:
            continue
        quarantine.insert(state_store, change.refusals, None, REFUSED_ACTION)


def read_position(sconn: sqlite3.Connection) -> tuple[int | None, Record | None, list[QuarantineChange]]:
    """SQLite's side of the position: the horizon its last reverse batch reached, that batch's record and its
    quarantine changes (none in a record written before they were kept there)."""
    rows = dict(
        sconn.execute(
            'SELECT key, value FROM "_replicator_meta" WHERE key IN (?, ?)', (POSITION_KEY, PENDING_KEY)
        ).fetchall()
    )
    position = int(rows[POSITION_KEY]) if POSITION_KEY in rows else None
    record = None
    quarantined: list[QuarantineChange] = []
    if PENDING_KEY in rows:
        hash_, body, *rest = msgspec.json.decode(rows[PENDING_KEY])
        record = Record(number=0, hash=hash_, body=body.encode())
        quarantined = msgspec.convert(rest[0], list[QuarantineChange]) if rest else []
    return position, record, quarantined


def forget_position(sconn: sqlite3.Connection) -> None:
    """Remove the reverse position from the SQLite file, in the caller's write transaction (the cutover's).

    Why: a cutover opens a new window on a new chain. A position left by an earlier window (rolled back, then
    migrated again with ``snapshot --replace``) names horizons and a record of a chain that no longer exists,
    and :func:`settle` would take it for a restored or edited file: the new window's daemon, rollback and
    finalize would all refuse, with no way out."""
    sconn.execute('DELETE FROM "_replicator_meta" WHERE key IN (?, ?)', (POSITION_KEY, PENDING_KEY))


def settle(sconn: sqlite3.Connection, pconn: psycopg.Connection[Any], schema: str, head: Checkpoint) -> Checkpoint:
    """Bring the chain level with SQLite after a crash between the two commits; returns the head.

    SQLite ahead by exactly its recorded batch: that record is appended (it was built on this head). Level:
    nothing to do. Anything else (SQLite behind the chain, or ahead by a record that does not extend the
    head) means one side was restored or edited: refused, naming both positions."""
    position, record, quarantined = read_position(sconn)
    expected = first_horizon(head)
    if position is None or position == expected:
        return head
    if record is not None and position > expected:
        checkpoint = record.decode()
        if (
            checkpoint.kind is Kind.REVERSE
            and checkpoint.prev_hash == head.link_hash
            and checkpoint.seq_to + 1 == position
        ):
            with pconn.transaction():
                store.append(pconn, checkpoint, schema)
                reverse.prune(pconn, schema, position)
                reverse.record_applied(pconn, schema, position)
                _replace_refusals(StateStore(pconn, schema), quarantined)
            log.get("reverse").warning(
                "reverse checkpoint recovered from the SQLite file (a crash fell between the two commits)",
                checkpoint=checkpoint.number,
            )
            return checkpoint
    raise ReverseError(
        f"the SQLite file's reverse position ({position}) does not match the chain's (next {expected}, head "
        f"#{head.number}): one side was restored or edited",
        hint="do not go on: restore the matching pair, or close the window with `replicator finalize` and "
        "migrate again",
    )
