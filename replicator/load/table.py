"""One table's load: one PostgreSQL transaction from TRUNCATE to the ``snapshot_tables`` row.

Atomicity per table: the emptying, the COPY, the count check against SQLite's own count (same read
transaction), the quarantine rows and the state row commit together, so a crash leaves a table either
loaded and recorded or untouched, and ``--resume`` reloads only the interrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from replicator import faults, log
from replicator.apply import dependents
from replicator.errors import ReplicatorError, TargetError, UniqueCollision
from replicator.load.context import LoadContext
from replicator.load.copyrows import Copied, RowPipe, copy_error, copy_rows, key_getter, read_layout
from replicator.load.results import TableResult
from replicator.load.source import _batches, _DecodeFallback, _select, strict_text
from replicator.plan import refusals
from replicator.plan.schemaplan import ForeignKey, SchemaPlan, TablePlan
from replicator.progress import Progress
from replicator.state.identity import SourceIdentity
from replicator.state.quarantine import replace_for_table
from replicator.state.store import StateStore
from replicator.values import convert_text
from triggers.schema import quote_ident

if TYPE_CHECKING:
    from replicator.load.share import Coprocessor


def load_table(
    ctx: LoadContext,
    plan: SchemaPlan,
    table: TablePlan,
    *,
    verify: bool = False,
    held: dependents.Held | None = None,
    shared: Coprocessor | None = None,
) -> TableResult:
    """Load one table in one PostgreSQL transaction; re-read once with the bytes fallback if needed.

    ``verify``: the table's types are a guess; raises ``_Unverified`` (nothing committed) if a row
    does not bear it out. ``held``: see :func:`copy_rows`. A table whose rows reference rows of its own
    quarantined *after* them (a tree read child first) is loaded again, those rows then known from the
    start; each pass knows more, so it ends (a forward-ordered tree takes one pass). ``shared``: the helper
    process converts some of the batches read here (a dominant table, :mod:`replicator.load.share`; not with
    ``held``, whose checks need every row here)."""
    bound = log.get("snapshot", table=table.source)
    how = _How(verify=verify, held=held, shared=shared)

    def load(text_factory: Callable[[bytes], str] | None) -> TableResult:
        return _load_table(ctx, plan, table, how, text_factory)

    def refusal(exc: psycopg.Error) -> ReplicatorError:
        if isinstance(exc, psycopg.errors.UniqueViolation):
            return unique_refusal(ctx, plan, table, exc)
        return copy_error(table, exc)

    while True:
        try:
            return _load_decoding(load, ctx.sconn, table, bound, refusal)
        except _Redo:
            bound.info("rows reference rows of their own table quarantined after them; loading the table again")


@dataclasses.dataclass(frozen=True)
class _How:
    """How one table is loaded, beyond the run's context (see :func:`load_table`)."""

    verify: bool
    held: dependents.Held | None
    shared: Coprocessor | None


def _load_decoding(
    load: Callable[[Callable[[bytes], str] | None], TableResult],
    sconn: sqlite3.Connection,
    table: TablePlan,
    bound: Any,
    refusal: Callable[[psycopg.Error], ReplicatorError],
) -> TableResult:
    try:
        return load(None)
    except psycopg.Error as exc:
        raise refusal(exc) from None
    except _DecodeFallback as exc:
        bound.warning("invalid UTF-8 in source text; re-reading the table with the bytes fallback", detail=str(exc))
        try:
            return load(convert_text.decode_text)
        except psycopg.Error as exc:
            raise refusal(exc) from None
        finally:
            sconn.text_factory = str


class _Redo(Exception):
    """Rows of a table reference rows of it quarantined later in the same pass: load it again."""


@contextlib.contextmanager
def _self_references(
    pconn: psycopg.Connection[Any], plan: SchemaPlan, held: dependents.Held | None, name: str
) -> Iterator[None]:
    """Around a table's COPY: raise ``_Redo`` when a loaded row references a row of its own table the
    pass quarantined after it (existing mode: the COPY fails on the app's key; create mode: found)."""
    if held is None:
        yield
        return
    held.fresh(name)  # what an earlier pass held is known from the start of this one
    try:
        yield
    except psycopg.errors.ForeignKeyViolation:
        if held.fresh(name):
            raise _Redo from None
        raise
    by_fk: dict[ForeignKey, list[tuple[Any, ...]]] = {}
    for fk, value in held.fresh(name):
        by_fk.setdefault(fk, []).append(value)
    if any(dependents.referencing(pconn, plan, fk, values, limit=1) for fk, values in by_fk.items()):
        raise _Redo


def _count_check(table: TablePlan, source_count: int, copied: Copied) -> None:
    """The table was emptied in the load's transaction: COPY's count is the table's."""
    if copied.server_rows != copied.written or copied.read != source_count:
        raise TargetError(
            f"count check failed for {table.source!r}: SQLite has {source_count} rows, read "
            f"{copied.read}, PostgreSQL holds {copied.server_rows}",
            hint="nothing was committed for this table; rerun, and report it if it repeats",
        )


def _load_table(
    ctx: LoadContext,
    plan: SchemaPlan,
    table: TablePlan,
    how: _How,
    text_factory: Callable[[bytes], str] | None,
) -> TableResult:
    started = time.monotonic()
    sconn, pconn, progress = ctx.sconn, ctx.pconn, ctx.progress
    (source_count,) = sconn.execute(f"SELECT count(*) FROM {quote_ident(table.source)}").fetchone()  # noqa: S608
    if progress is not None:
        progress.start(table.source, int(source_count))
    if text_factory is not None:
        sconn.text_factory = text_factory
    with pconn.transaction():
        copied = _copy_table(ctx, plan, table, how, int(source_count))
        _count_check(table, int(source_count), copied)
        seconds = record_loaded(ctx.state_store, table, copied, started, ctx.run.source, ctx.run.run_id, ctx.run.mark)
    faults.point("snapshot.after_table")  # this table committed with its state row, the next not begun
    _loaded(table, copied, seconds, progress, shared=how.shared is not None)
    return TableResult(
        table.source,
        table.name,
        copied.written,
        len(copied.refusals),
        seconds,
        copied.checksum,
        helper_rows=copied.helper_rows,
        helper_ranges=copied.helper_ranges,
    )


def record_loaded(
    store: StateStore,
    table: TablePlan,
    copied: Copied,
    started: float,
    source: SourceIdentity,
    run_id: int,
    snapshot_seq: int | None,
) -> float:
    """Record a table loaded, in the transaction that loaded it: its refused rows and its state row (so a
    crash can never leave "loaded" for rows that are not there); returns the seconds since ``started``.
    The snapshot and the offline import both record a table this way."""
    replace_for_table(store, table.source, copied.refusals, run_id)
    seconds = time.monotonic() - started
    store.record_table(
        table=table.source,
        target_table=table.name,
        rows=copied.written,
        quarantined=len(copied.refusals),
        seconds=seconds,
        source=source,
        run_id=run_id,
        checksum=copied.checksum,
        snapshot_seq=snapshot_seq,
    )
    return seconds


def _copy_table(ctx: LoadContext, plan: SchemaPlan, table: TablePlan, how: _How, rows: int) -> Copied:
    """Empty the table and COPY its rows into it, in the caller's transaction (here or shared with the helper);
    ``rows``: SQLite's count in the same read transaction."""
    pconn, progress = ctx.pconn, ctx.progress
    source_cols, extra = read_layout(table)
    ident = sql.Identifier(plan.schema, table.name)

    def on_batch(read: int) -> None:
        if progress is not None:
            progress.advance(table.source, read)

    freeze = truncate_table(pconn, ident) if plan.mode == "create" else empty_table(pconn, ident)
    select = _select(table.source, source_cols + extra)
    batches = _batches(ctx.sconn, select, ctx.run.fetch_rows)
    strict = strict_text(ctx.sconn)  # False on the bytes-fallback re-read (see load_table)
    with _self_references(pconn, plan, how.held, table.source):
        if how.shared is None or how.held is not None:
            pipe = RowPipe(
                table,
                key_of=key_getter(table),
                policy=ctx.run.policy,
                verify=how.verify,
                extra=bool(extra),
                strict_text=strict,
            )
            return copy_rows(pconn, plan.schema, pipe, batches, on_batch=on_batch, freeze=freeze, held=how.held)
        return how.shared.copy(
            pconn,
            plan.schema,
            table,
            batches,
            policy=ctx.run.policy,
            on_batch=on_batch,
            freeze=freeze,
            verify=how.verify,
            strict_text=strict,
            ranged=how.shared.ranged(ctx.sconn, table.source, select, ctx.run.fetch_rows, rows),
        )


def _loaded(table: TablePlan, copied: Copied, seconds: float, progress: Progress | None, *, shared: bool) -> None:
    """Report a committed table: quarantined rows, progress, the log line."""
    bound = log.get("snapshot", table=table.source)
    if copied.refusals:
        bound.warning("values quarantined; their rows were skipped", quarantined=len(copied.refusals))
    if progress is not None:
        progress.finish(table.source, copied.written, seconds)
    bound.info(
        "table loaded",
        rows=copied.written,
        seconds=round(seconds, 3),
        checksum=copied.checksum[:16],
        **({"helper_rows": copied.helper_rows, "helper_ranges": copied.helper_ranges} if shared else {}),
    )


def unique_refusal(
    ctx: LoadContext, plan: SchemaPlan, table: TablePlan, exc: psycopg.errors.UniqueViolation
) -> ReplicatorError:
    """A UNIQUE index of the target refused the table's rows: name two rows it finds equal, and the index.

    In existing mode the index is the app's own (on PostgreSQL's lower(), which folds every letter, or over
    a date-time column where two spellings are one instant): rows SQLite keeps distinct collide, and
    PostgreSQL's message names neither. So the rows are copied again with that index dropped, in a
    transaction that is rolled back (the index with it), and grouped on the index's terms as the apply
    does (:func:`refusals.duplicates_query`). PostgreSQL's own message when that cannot be said.
    """
    sconn, pconn = ctx.sconn, ctx.pconn
    name = exc.diag.constraint_name
    by_source = {c.source: c.name for c in table.columns if c.source is not None}
    key = table.primary_key or tuple(by_source.get(k, "") for k in table.key_source)  # existing mode: the PG names
    if not name or not key or "" in key:
        return copy_error(table, exc)
    ident = sql.Identifier(plan.schema, table.name)
    source_cols, extra = read_layout(table)
    try:
        with pconn.transaction(force_rollback=True):
            found = pconn.execute(
                "SELECT array(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k),"
                " pg_get_expr(i.indpred, i.indrelid), c.conname FROM pg_index i LEFT JOIN pg_constraint c"
                " ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid WHERE i.indexrelid = %s::regclass",
                (sql.Identifier(plan.schema, name).as_string(pconn),),
            ).fetchone()
            if found is None:
                return copy_error(table, exc)
            exprs, predicate, constraint = found
            if constraint is not None:
                pconn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {} CASCADE").format(ident, sql.Identifier(name)))
            else:
                pconn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(plan.schema, name)))
            empty_table(pconn, ident)
            batches = _batches(sconn, _select(table.source, source_cols + extra), ctx.run.fetch_rows)
            pipe = RowPipe(
                table,
                key_of=key_getter(table),
                policy=ctx.run.policy,
                verify=False,
                extra=bool(extra),
                strict_text=strict_text(sconn),
            )
            copy_rows(pconn, plan.schema, pipe, batches)
            keys = pconn.execute(refusals.duplicates_query(ident, exprs, predicate, key)).fetchall()
    except psycopg.Error:  # another constraint refused the copy without the index: PostgreSQL's own message
        return copy_error(table, exc)
    if len(set(keys)) < 2:  # the key itself collided: PostgreSQL would show one key twice
        return copy_error(table, exc)
    names = table.key_source if len(table.key_source) == len(key) else key
    return UniqueCollision(
        refusals.collision_message(table.source, names, keys[:2], name, exprs) + "; nothing was committed",
        hint=(
            "make the two values distinct as PostgreSQL compares them (its lower()/upper() fold every letter, "
            f"SQLite's only ASCII; date-time text is compared as the instant it names), or drop index {name} "
            "in PostgreSQL, then run the snapshot again"
        ),
    )


def empty_table(conn: psycopg.Connection[Any], ident: sql.Composable) -> bool:
    """TRUNCATE when the table holds rows; DELETE when a foreign key forbids TRUNCATE.

    True when it was truncated in the caller's transaction and is a plain table (``COPY ... FREEZE``
    may follow; PostgreSQL refuses it for a partitioned table).
    """
    row = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(ident)).fetchone()
    if not row or not row[0]:
        return False
    # An app's table (existing mode) may be partitioned: PostgreSQL refuses COPY FREEZE into one.
    kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (ident.as_string(conn),)).fetchone()
    return truncate_table(conn, ident) and kind is not None and kind[0] == "r"


def truncate_table(conn: psycopg.Connection[Any], ident: sql.Composable) -> bool:
    """TRUNCATE (in a savepoint), else DELETE when a foreign key forbids it; True if truncated.

    Create mode truncates even an empty table: it costs a catalog update and lets the COPY freeze.
    """
    try:
        with conn.transaction():
            conn.execute(sql.SQL("TRUNCATE {}").format(ident))
    except psycopg.errors.FeatureNotSupported:
        conn.execute(sql.SQL("DELETE FROM {}").format(ident))
        return False
    return True
