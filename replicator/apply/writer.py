"""Write one batch to PostgreSQL in one transaction, with its checkpoint: step 2 of :mod:`replicator.apply.batch`,
whose docstring says why the result is exact.

A :class:`Writer` holds what lives with one PostgreSQL session: its staging tables, the target's UNIQUE indexes,
the row converters, and the thread that computes the digests while PostgreSQL works.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import msgspec
import psycopg
import psycopg.errors
from psycopg import sql

from checkpoints import store
from checkpoints.digest import kinds_from_oids
from checkpoints.model import Checkpoint, next_checkpoint
from replicator import faults, log
from replicator.apply import dependents
from replicator.apply.batch import Batch, TableRows
from replicator.apply.digests import Folded, Pending, TableResult, digest_reads_json, fold_rows, written_digest
from replicator.apply.foreignkeys import FkMode
from replicator.apply.keyforms import KeyForms
from replicator.apply.lookup import KeyTuple, exact_keys, read_current
from replicator.apply.tablestate import read_digests, write_table_state
from replicator.apply.uniques import UniqueIndex, conflict_select, unique_indexes
from replicator.errors import BadValue, TargetError, UniqueCollision, refused_by_target
from replicator.plan.refusals import collision_message, duplicates_query, pg_message
from replicator.plan.schemaplan import SchemaPlan
from replicator.plan.shape import TableShape
from replicator.state.quarantine import has_quarantine, record_refusals
from replicator.state.store import StateStore
from replicator.values import convert, quarantine, refusal, targettype


class Applied(msgspec.Struct, frozen=True):
    checkpoint: Checkpoint
    tables: dict[str, TableResult]
    entries: int

    @property
    def rows_written(self) -> int:
        return sum(t.change.upserted for t in self.tables.values())


_WRITER_IDS = itertools.count(1)


class _Planned(msgspec.Struct):
    """One table's part of a batch, converted: what it writes and what it quarantines."""

    part: TableRows
    keys: list[KeyTuple]
    """The part's keys in PostgreSQL form (deleted, then the rows written)."""
    rows: list[tuple[Any, ...]]
    """SQLite's rows for them (every spelling of a key, :meth:`KeyForms.rows_of_every_spelling`)."""
    written: list[tuple[Any, ...]]
    refusals: list[quarantine.Refusal]
    waiting: list[tuple[str, dependents.Key]] = msgspec.field(default_factory=list)
    """Rows of other tables quarantined because one of these rows was: the batch re-evaluates them."""


def _key_dict(t: TableShape, key: Sequence[Any]) -> dependents.Key:
    """A key of ``t`` as the quarantine records keys."""
    return quarantine.json_safe_dict(dict(zip(t.key_source, key, strict=True)))


class _Written(msgspec.Struct):
    """One table's statements are done: the row images its DELETEs returned, and the rows it rewrote."""

    removed: list[Future[Folded]]
    conflicts: int
    looked_up: list[tuple[Any, ...]]
    """SQLite's rows for the PostgreSQL rows in the way on a UNIQUE index (:meth:`Writer._rewrite_conflicts`)."""


class Writer:
    """Applies batches over one PostgreSQL connection; holds per-connection staging tables.

    A new connection (after a reconnect) needs a new Writer: temp tables live in the session.
    """

    def __init__(
        self,
        state_store: StateStore,
        targets: dict[str, TableShape],
        *,
        fk: FkMode,
        on_bad_value: str,
        source: sqlite3.Connection,
        plan: SchemaPlan | None = None,
    ) -> None:
        self.state_store = state_store
        """The rows, the checkpoint and the tables' state commit together: one connection, one transaction."""
        self.conn = state_store.conn
        self.source = source
        """SQLite, read (outside any batch's read transaction) for rows that conflict on a UNIQUE index."""
        self.targets = targets
        self.fk = fk
        self.on_bad_value = on_bad_value
        self._staged: dict[str, tuple[sql.Identifier, sql.Identifier]] = {}
        self._uniques: dict[str, list[UniqueIndex]] = {}
        self._converters = {n: convert.row_converter(t.source, t.source_columns, t.types) for n, t in targets.items()}
        self._keys = {n: KeyForms(t, source) for n, t in targets.items()}
        self._written_digest = {n: written_digest(t.types) for n, t in targets.items()}
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

        ``extra(state_store, applied)`` runs inside the transaction before commit (the worker records its
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
            digests = read_digests(self.state_store, list(planned))
            pending: dict[str, Pending] = {}
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
            store.append(self.conn, cp, self.state_store.schema_name)
            for name, result in results.items():
                write_table_state(self.state_store, self.targets[name], result, planned[name].part.last_seq)
            applied = Applied(cp, results, batch.entries)
            if extra is not None:
                extra(self.state_store, applied)
            faults.point("apply.before_commit")
        return applied

    def _write_table(self, name: str, work: _Planned) -> Pending:
        t = self.targets[name]
        exact = self._written_digest[name]
        added: list[Future[Folded]] = []
        if exact is not None:  # hashed on the digest thread while PostgreSQL writes them
            added.append(self._digester.submit(fold_rows, work.written, exact.kinds, t.key_positions, exact.finish))
        with self.conn.cursor() as cur:
            digest_reads_json(cur, t.types)
            done = None
            if exact is not None and all(u.immediate for u in self._uniques[name]):
                done = self._write_direct(cur, name, work)
            if done is None:
                done = self._write_staged(cur, name, work, added)
        part, rows, refusals = work.part, work.rows, work.refusals
        if name not in self._quarantined:  # asked once: only this writer adds rows while it streams
            self._quarantined[name] = has_quarantine(self.state_store, name)
        if refusals or self._quarantined[name]:
            width = len(t.source_columns)
            spelled = [] if rows is part.rows else rows  # other spellings of the batch's keys (their own keys)
            keys_named = [*part.keys, *(row[width:] for row in [*spelled, *done.looked_up])]
            record_refusals(self.state_store, name, t.key_source, keys_named, refusals)
            self._quarantined[name] = True
        return Pending(done.removed, added, done.conflicts, len(refusals))

    def _write_direct(self, cur: psycopg.Cursor[Any], name: str, work: _Planned) -> _Written | None:
        """DELETE the keys, then COPY the rows straight into the table: no staging table, no INSERT ... SELECT
        and no conflict query. Only for rows digested from their converted values (nothing read back).

        A row in the way on a UNIQUE index (checked at once: the caller makes sure no index defers it to
        COMMIT) fails the COPY: then everything here is rolled back to a savepoint and None returned, for
        :meth:`_write_staged` to make room first. Such a row is rare (a REPLACE victim no trigger names, a
        row a later batch moves away), so the query that looks for them in every batch is saved."""
        t = self.targets[name]
        ident = sql.Identifier(t.schema, t.target)
        keys_tmp = self._staged[name][1]
        cols = sql.SQL(", ").join(map(sql.Identifier, t.target_columns))
        uniques = bool(self._uniques[name])
        try:
            with self.conn.transaction() if uniques else contextlib.nullcontext():
                self._stage_keys(cur, name, work.keys)
                removed = self._delete_keys(cur, t, ident, keys_tmp)
                with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(ident, cols)) as copy:
                    copy.set_types(targettype.copy_types(t.types))
                    for values in work.written:
                        copy.write_row(values)
        except psycopg.errors.UniqueViolation:
            if not uniques:
                raise
            self._log.debug("unique conflict: batch rows staged", table=name)
            return None
        return _Written([removed], 0, [])

    def _write_staged(
        self, cur: psycopg.Cursor[Any], name: str, work: _Planned, added: list[Future[Folded]]
    ) -> _Written:
        """Stage keys and rows, DELETE the keys, make room on UNIQUE indexes (:meth:`_rewrite_conflicts`), then
        INSERT the staged rows; a type read back (``exact`` None) has them returned and digested from there."""
        t = self.targets[name]
        rows_tmp, keys_tmp = self._staged[name]
        ident = sql.Identifier(t.schema, t.target)
        cols = sql.SQL(", ").join(map(sql.Identifier, t.target_columns))
        self._stage(cur, name, work.keys, work.rows, work.refusals, converted=work.written)
        removed = [self._delete_keys(cur, t, ident, keys_tmp)]
        conflicts, looked_up, more = 0, list[tuple[Any, ...]](), list[tuple[Any, ...]]()
        if self._uniques[name]:
            conflicts, looked_up, more = self._rewrite_conflicts(cur, name, ident, removed, work.refusals)
        exact = self._written_digest[name]
        insert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(ident, cols, cols, rows_tmp)
        if exact is None:  # PostgreSQL's value is not known from the converted one: digest what it returns
            insert += sql.SQL(" RETURNING {}").format(cols)
        try:
            # a savepoint (cheaper than looking for equal staged rows in every batch): a unique violation
            # is then explained by _refuse_collisions, which reads the staging table
            with self.conn.transaction() if self._uniques[name] else contextlib.nullcontext():
                cur.execute(insert, binary=exact is None)
        except psycopg.errors.UniqueViolation:
            self._refuse_collisions(cur, name, [*work.rows, *looked_up])
            raise
        if exact is None:
            added.append(self._fold(cur, t))
        elif more:
            added.append(self._digester.submit(fold_rows, more, exact.kinds, t.key_positions, exact.finish))
        return _Written(removed, conflicts, looked_up)

    def _stage_keys(self, cur: psycopg.Cursor[Any], name: str, keys: Sequence[KeyTuple]) -> None:
        """COPY keys (PostgreSQL form) into the key staging table."""
        t = self.targets[name]
        with cur.copy(
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                self._staged[name][1], sql.SQL(", ").join(map(sql.Identifier, t.key_target))
            )
        ) as copy:
            copy.set_types(targettype.copy_types(t.key_types))
            for key in keys:
                copy.write_row(key)

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
        rows_tmp = self._staged[name][0]
        width = len(t.source_columns)
        self._stage_keys(cur, name, keys)
        convert_row = self._converters[name]
        written: list[tuple[Any, ...]] = []
        cols = sql.SQL(", ").join(map(sql.Identifier, t.target_columns))
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(rows_tmp, cols)) as copy:
            copy.set_types(targettype.copy_types(t.types))
            if converted is not None:
                for values in converted:
                    copy.write_row(values)
                return converted
            for row in rows:
                try:
                    values = convert_row(row[:width])
                except refusal.RowRefused as exc:
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
            self._follow = dependents.Follow(self.plan, self.state_store)
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
        keys = self._keys[name].convert(part.keys)
        rows = part.rows if exact_keys(t) else self._keys[name].rows_of_every_spelling(keys)
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
                except refusal.RowRefused as exc:
                    refusals.append(self._refused(t, row[width:], exc))
            return _Planned(part, keys, rows, written, refusals)
        good: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []
        for row in rows:
            try:
                good.append((row, convert_row(row[:width])))
            except refusal.RowRefused as exc:
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
            found[child] = (keys, read_current(self.source, self.targets[child], keys))
        if work.refusals:
            quarantined = {json.dumps(r.key, sort_keys=True) for r in work.refusals}
            rows = [row for row in work.rows if json.dumps(_key_dict(t, row[width:]), sort_keys=True) in quarantined]
            for child, pg_keys in self._follow.captured(self.conn, name, rows, self._key_target).items():
                target = self.targets[child]
                read = self._keys[child].rows_for(set(pg_keys))
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
    ) -> Future[Folded]:
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
        removed: list[Future[Folded]],
        refusals: list[quarantine.Refusal],
    ) -> tuple[int, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Make room for the staged rows: rewrite every PostgreSQL row they conflict with on a UNIQUE index
        from SQLite's current state. Returns (rows SQLite no longer has, the SQLite rows looked up, the rows
        staged for them).

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
        written: list[tuple[Any, ...]] = []
        seen: set[KeyTuple] = set()
        # a key seen twice was not deleted (a NULL in a nullable key): the INSERT reports the conflict
        while found := self._conflicting_keys(cur, name, ident) - seen:
            seen |= found
            rows = self._keys[name].rows_for(found)
            width = len(t.source_columns)
            sqlite_keys = [row[width:] for row in rows]
            looked_up += rows
            cur.execute(sql.SQL("DELETE FROM {}").format(keys_tmp))
            still = self._keys[name].convert(sqlite_keys)
            written += self._stage(cur, name, [*found, *(k for k in still if k not in found)], rows, refusals)
            removed.append(self._delete_keys(cur, t, ident, keys_tmp))
            victims += len(found - set(still))
            self._log.debug("unique conflicts rewritten", table=name, found=len(found), gone=len(found - set(still)))
        return victims, looked_up, written

    def _conflicting_keys(self, cur: psycopg.Cursor[Any], name: str, ident: sql.Identifier) -> set[KeyTuple]:
        """Keys of the PostgreSQL rows that conflict with a staged row on any UNIQUE index."""
        t = self.targets[name]
        rows_tmp, _keys_tmp = self._staged[name]
        found: set[KeyTuple] = set()
        for index in self._uniques[name]:
            cur.execute(conflict_select(ident, rows_tmp, index, t.key_target), binary=True)
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
            forms = self._keys[name]
            if forms.by_key(staged, keys) != forms.by_key(forms.rows_for(keys), keys):
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

    def _fold(self, cur: psycopg.Cursor[Any], t: TableShape) -> Future[Folded]:
        """Hand the returned row images to the digest thread, which hashes them while PostgreSQL works."""
        rows = cur.fetchall()
        assert cur.description is not None
        kinds = kinds_from_oids(d.type_code for d in cur.description)
        return self._digester.submit(fold_rows, rows, kinds, t.key_positions)

    def close(self) -> None:
        """Stop the digest thread and drop this writer's staging tables (a rebuilt writer, after an
        ADD COLUMN, stages rows of the new shape on the same connection)."""
        self._digester.shutdown(wait=True)
        staged, self._staged = self._staged, {}
        if staged and not self.conn.closed:
            with contextlib.suppress(psycopg.Error), self.conn.transaction():
                for rows, keys in staged.values():
                    self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(rows, keys))

    def _refused(self, t: TableShape, key: Sequence[Any], exc: refusal.RowRefused) -> quarantine.Refusal:
        named = dict(zip(t.key_source, key, strict=True))
        if self.on_bad_value != "quarantine":
            raise BadValue(
                f"{exc.stopped_at(t.source, named)}; the batch was not applied",
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


def _write_error(table: str, target: str, exc: psycopg.Error) -> TargetError:
    return refused_by_target(
        f"applying to {target} (from {table}) failed: {pg_message(exc)}",
        exc,
        [
            (
                psycopg.errors.UniqueViolation,
                "a unique index the conflict check cannot evaluate (NULLS NOT DISTINCT, a NULL in the key, or an "
                "expression over generated columns) rejected a row; report it with the index definition",
            ),
            (
                (psycopg.errors.ForeignKeyViolation, psycopg.errors.CheckViolation, psycopg.errors.NotNullViolation),
                "the target schema is stricter than the SQLite data; fix the row in SQLite or relax the constraint",
            ),
        ],
        "check the target table against the SQLite table; the batch was rolled back and is retried on restart",
    )
