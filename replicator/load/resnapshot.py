"""The online re-snapshot of one table, and the durable record that one is owed.

The daemon reloads a table when drift shows it lost journal coverage (a capture trigger missing after
a rebuild, the key changed, VACUUM renumbered rowids), in create mode when a column was added
(PostgreSQL's ``ADD COLUMN ... DEFAULT`` is not SQLite's: existing rows must be copied again), and when
a column was dropped (the running digest covers the remaining columns; existing mode first maps the
table again onto what the app's migration left in PostgreSQL, :func:`replan`, and holds the table, its
reload still owed, while PostgreSQL keeps the column). ``snapshot --replace --tables`` on a streaming
target reloads tables the same way (:func:`replace_tables`). Once
the capture triggers are reinstalled, drift no longer shows anything, so the reload that is still owed
is written down in PostgreSQL first (``{state}.resnapshot_pending``, through the
:class:`~replicator.state.store.StateStore`) and struck off by the reload's own transaction. Commits in
order, and what a crash (or a transient error, which restarts the loop the same way) right after each one
leaves::

    1. ADD COLUMN + saved plan (create mode only)   drift still shows the column (the install record
                                                     lacks it): found again; the plan already has it,
                                                     so nothing is added twice
    2. pending row(s)                                drift still shows (triggers not reinstalled yet):
                                                     found again, marked again (idempotent)
    3. triggers reinstalled (SQLite)                 no drift any more; the pending row makes the next
                                                     start reload the table
    4. reload + digest + checkpoint + pending row    done; journal entries from before the reload's read
       struck off (one PostgreSQL transaction)       are applied again later, harmless (state-based apply)

A crash before 2 leaves the drift visible; from 2 until 4 the row is there; 4 is atomic. The reload's
SQLite read starts after 3 committed, so every change made while coverage was missing is in it and
every later change is journaled. The reload is state-based (empty the table, copy it whole), so
redoing it is always safe. The worker redoes owed reloads at start-up and at every cycle, after the
drift check (which reinstalls triggers still missing) and before it applies a batch.

**A table created in SQLite after the snapshot** is picked up the same way (:func:`adopt`, then a
reload owed with the reason :data:`NEW_TABLE`). Step 1 is its plan: create mode plans it like the
snapshot does (``createmode.plan_create``, its own profile) and creates the PostgreSQL table; existing
mode maps it onto the table the app's migration created (``existingmode.plan_existing``) or refuses,
naming the fix. The table joins the saved plan in the same PostgreSQL transaction, so later runs,
``status``, ``verify`` and ``cutover`` see it. A crash after 1 leaves the table new in SQLite (no
install record): found again, and the plan already has it, so nothing is planned or created twice.
Steps 2-4 are the ones above (3 installs its triggers); the reload of a new table also builds its
indexes and constraints (create mode, after the copy, like the snapshot) and parks its foreign keys
when the role cannot disable them. A table the no-key policy keeps out of the journal
(``snapshot-only``) is planned and loaded once, like at the snapshot.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from checkpoints import store
from checkpoints.model import Checkpoint, TableChange, next_checkpoint
from replicator import faults, log, pg
from replicator.apply import dependents
from replicator.apply.digests import table_digest_of
from replicator.apply.foreignkeys import FkMode, fk_mode, park_foreign_keys
from replicator.apply.tablestate import restate_digest
from replicator.apply.targets import resolve_targets
from replicator.config import Config
from replicator.errors import ReplicatorError, UsageError
from replicator.load import snapshot
from replicator.load.postload import pending_post_load
from replicator.plan import constraints, createmode, ddl, existingmode, pgreflect, schemaplan, skips
from replicator.plan.profile import TableProfile
from replicator.plan.profiler import profile_table
from replicator.plan.shape import TableShape
from replicator.state import lock
from replicator.state.identity import source_identity
from replicator.state.store import StateStore
from triggers import drift
from triggers import source as sqlite_source
from triggers.meta import read_meta
from triggers.schema import Schema, read_schema

NEW_TABLE: Final = "new table"
"""The reason of an owed reload that picks up a table created in SQLite after the snapshot."""


class Reloaded(msgspec.Struct, frozen=True):
    checkpoint: Checkpoint
    rows: int
    warnings: tuple[str, ...] = ()
    """Indexes or constraints PostgreSQL refused (a new table's, create mode)."""
    loaded: snapshot.TableResult | None = None
    run_id: int = 0


class NotAdopted(ReplicatorError):
    """A new SQLite table cannot be applied as things are: the message names it, the hint says the fix."""


def is_new_table(reason: str) -> bool:
    return reason.startswith(NEW_TABLE)


def _table_exists(conn: psycopg.Connection[Any], schema_name: str, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (sql.Identifier(schema_name, name).as_string(conn),)).fetchone()
    return row is not None and row[0] is not None


def adopt(
    conn: psycopg.Connection[Any],
    sconn: sqlite3.Connection,
    *,
    plan: schemaplan.SchemaPlan,
    table: str,
    config: Config,
    state_schema: str,
) -> schemaplan.SchemaPlan:
    """Step 1 for a new SQLite table: plan it (create mode: and create it) and save the plan with it,
    in one PostgreSQL transaction; returns the new plan. Idempotent: a planned table is only checked.

    ``sconn`` is a read-only connection in autocommit mode (one read transaction is opened here).
    Raises :class:`NotAdopted` when the table cannot be applied (existing mode without a matching
    PostgreSQL table, a name taken by a table that is not ours).
    """
    try:
        planned = plan.table(table)
    except KeyError:
        planned = None
    if planned is not None:  # planned by an earlier attempt (a crash after step 1)
        if not _table_exists(conn, plan.schema, planned.name):
            if plan.mode != "create":
                raise _missing(table, planned.name, plan.schema)
            with conn.transaction():
                ddl.create_tables(conn, _only(plan, planned))
        return plan
    schema, profiles = _read_table(sconn, table)
    taken = {t.name: t.source for t in plan.tables}
    if plan.mode == "create":
        fresh = createmode.plan_create(schema, profiles, config).table(table)
        if fresh.name in taken or _table_exists(conn, plan.schema, fresh.name):
            owner = f"SQLite table {taken[fresh.name]!r}" if fresh.name in taken else "no table replicator created"
            raise NotAdopted(
                f"new table {table!r}: PostgreSQL table {plan.schema}.{fresh.name} already exists and holds {owner}",
                hint=f"drop or rename {plan.schema}.{fresh.name} in PostgreSQL (replicator creates it), "
                f'or leave {table!r} out with [types."{table}"."*"] skip = true; then restart `replicator run`',
            )
    else:
        fresh = _map_existing(conn, plan, schema, profiles, table, config, new=True)
        if fresh.name in taken:
            raise NotAdopted(
                f"new table {table!r} maps onto {plan.schema}.{fresh.name}, already loaded from {taken[fresh.name]!r}",
                hint=f'rename one of them, or leave {table!r} out with [types."{table}"."*"] skip = true',
            )
    with conn.transaction():
        if plan.mode == "create":
            created = ddl.create_tables(conn, _only(plan, fresh))
            fresh = ddl.without_generated(_only(plan, fresh), created.plain_generated).tables[0]
        new_plan = msgspec.structs.replace(plan, tables=(*plan.tables, fresh), order=(*plan.order, table))
        new_plan = dependents.adopted(new_plan, conn, schema, table)
        StateStore(conn, state_schema).save_plan(new_plan)
    bound = log.get("resnapshot", table=table)
    for warning in fresh.warnings:
        bound.warning("new table: schema", detail=warning)
    faults.point("newtable.after_plan")
    return new_plan


COLUMNS_DROPPED: Final = "column(s) dropped"
"""The reason of an owed reload after DROP COLUMN in SQLite: existing mode re-maps the table first (:func:`replan`)."""


def is_columns_dropped(reason: str) -> bool:
    return reason.startswith(COLUMNS_DROPPED)


def dropped_columns(sconn: sqlite3.Connection, plan: schemaplan.SchemaPlan, table: str) -> list[schemaplan.ColumnPlan]:
    """The table's planned columns SQLite no longer has (read now, not from the owed reason: a restart
    sees the same answer). ``sconn``: read-only, autocommit."""
    with _reading(sconn):
        current = {c.name for c in read_schema(sconn).table(table).columns}
    return [c for c in plan.table(table).columns if c.source is not None and c.source not in current]


def replan(
    conn: psycopg.Connection[Any],
    sconn: sqlite3.Connection,
    *,
    plan: schemaplan.SchemaPlan,
    table: str,
    config: Config,
    state_schema: str,
) -> schemaplan.SchemaPlan:
    """Existing mode, a table whose SQLite columns changed: map it again onto the PostgreSQL table as the
    app's migration left it, and save the plan; returns the new plan. Raises :class:`NotAdopted` (nothing
    saved) while the two do not match. Idempotent: a table that maps the same is saved unchanged."""
    schema, profiles = _read_table(sconn, table)
    fresh = _map_existing(conn, plan, schema, profiles, table, config, new=False)
    new_plan = msgspec.structs.replace(plan, tables=tuple(fresh if t.source == table else t for t in plan.tables))
    with conn.transaction():
        StateStore(conn, state_schema).save_plan(new_plan)
    return new_plan


@contextlib.contextmanager
def _reading(sconn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction on ``sconn`` (read-only, autocommit), so what is read in it agrees."""
    sconn.execute("BEGIN")
    try:
        yield
    finally:
        sconn.execute("COMMIT")


def _read_table(sconn: sqlite3.Connection, table: str) -> tuple[Schema, dict[str, TableProfile]]:
    """SQLite's schema as it is now and ``table``'s profile, the two read in one transaction: what a
    table is planned from again (a new table, a changed one, one ``snapshot --replace --tables`` reloads)."""
    with _reading(sconn):
        schema = read_schema(sconn)
        return schema, {table: profile_table(sconn, schema.table(table))}


def _map_existing(
    conn: psycopg.Connection[Any],
    plan: schemaplan.SchemaPlan,
    schema: Schema,
    profiles: dict[str, TableProfile],
    table: str,
    config: Config,
    *,
    new: bool,
) -> schemaplan.TablePlan:
    """Existing mode: ``table`` mapped onto the PostgreSQL table the app's migration left, or
    :class:`NotAdopted` naming the fix. ``new``: a table created after the snapshot (:func:`adopt`), whose
    missing PostgreSQL table has its own message; else a table mapped again (:func:`replan`)."""
    named = f"new table {table!r}" if new else f"table {table!r}"
    only = msgspec.structs.replace(schema, tables=(schema.table(table),))
    try:
        mapped = existingmode.plan_existing(only, pgreflect.reflect(conn, plan.schema), profiles, config)
    except UsageError as exc:
        if new and isinstance(exc, existingmode.SchemaMismatch) and table in exc.missing_tables:
            raise _missing(table, table, plan.schema) from None
        failed = "cannot be loaded into PostgreSQL" if new else "cannot be mapped again"
        raise NotAdopted(f"{named} {failed} (existing mode): {exc.message}", hint=exc.hint) from None
    if not mapped.tables:
        raise NotAdopted(
            f"{named} is left out by the existing-mode mapping: {'; '.join(mapped.warnings)}",
            hint=f'set [types."{table}"."*"] skip = true to leave it out (then restart `replicator run`)',
        )
    return mapped.tables[0]


def _only(plan: schemaplan.SchemaPlan, table: schemaplan.TablePlan) -> schemaplan.SchemaPlan:
    return schemaplan.SchemaPlan(mode=plan.mode, schema=plan.schema, tables=(table,), order=(table.source,))


def _missing(table: str, target: str, schema_name: str) -> NotAdopted:
    return NotAdopted(
        f"new table {table!r} has no table in PostgreSQL schema {schema_name!r} (existing mode: the target "
        "schema is the app's)",
        hint=f"create {schema_name}.{target} in PostgreSQL (the app's migration for PostgreSQL), then restart "
        "`replicator run`: it picks the table up online",
    )


def _post_load(conn: psycopg.Connection[Any], plan: schemaplan.SchemaPlan, table: schemaplan.TablePlan) -> list[str]:
    """The table's indexes and constraints not built yet (a redone reload finds some), after its rows."""
    return constraints.apply_post_load(conn, pending_post_load(conn, _only(plan, table)))


def reload(
    conn: psycopg.Connection[Any],
    *,
    source: Path,
    config: Config,
    plan: schemaplan.SchemaPlan,
    target: TableShape | None,
    prev: Checkpoint,
    fk: FkMode,
    state_schema: str,
    table_name: str | None = None,
    new_table: bool = False,
) -> Reloaded:
    """Reload one table from a fresh SQLite read transaction, with an empty-range checkpoint and the pending
    row struck off, in one PostgreSQL transaction.

    ``new_table``: the table was created in SQLite after the snapshot; its indexes and constraints are
    built after the copy (create mode), and with ``fk == "parked"`` its foreign keys are parked. ``target``
    None: a table not journaled (``snapshot-only``, named by ``table_name``): loaded, no running digest.
    """
    table = target.source if target is not None else table_name
    assert table is not None
    table_plan = plan.table(table)
    identity = source_identity(source)
    state_store = StateStore(conn, state_schema)
    warnings: list[str] = []
    sconn = snapshot.open_source(source, config)
    try:
        with conn.transaction():
            run_id = state_store.start_run(command="resnapshot", mode=plan.mode, source=identity)
        with conn.transaction():
            if fk == "replica":
                conn.execute("SET LOCAL session_replication_role = replica")
            elif new_table:  # existing mode: the app's FKs on it would refuse rows whose parent is not there yet
                park_foreign_keys(state_store, plan.schema, [table_plan.name])
            policy = config.snapshot.on_bad_value
            ctx = snapshot.LoadContext(sconn, conn, snapshot.LoadRun(state_schema, identity, run_id, policy))
            result = snapshot.load_table(
                ctx, plan, table_plan, held=dependents.seeded(plan, policy, state_store, [table])
            )
            if new_table and plan.mode == "create":
                warnings = _post_load(conn, plan, table_plan)
                if fk == "parked":
                    park_foreign_keys(state_store, plan.schema, [table_plan.name])
            if target is not None:
                digest = table_digest_of(conn, target)
                restate_digest(state_store, table, target, digest)
                change = TableChange.of(digest, restated="reload")
            else:
                change = TableChange(upserted=result.rows, upserted_digest=result.checksum, restated="reload")
            cp = next_checkpoint(prev, seq_to=prev.seq_to, tables={table: change})
            store.append(conn, cp, state_schema)
            state_store.finish_run(run_id, status="ok", rows=result.rows, quarantined=result.quarantined)
            state_store.clear_pending_reload(table)
            faults.point("resnapshot.before_commit")
    finally:
        sconn.close()
    return Reloaded(cp, result.rows, tuple(warnings), result, run_id)


def replace_tables(
    source: Path, dsn: str, config: Config, names: Sequence[str], *, mode: str | None = None
) -> snapshot.SnapshotResult:
    """``snapshot --replace --tables`` on a target that streams (a checkpoint chain exists): reload only these
    tables, each like the daemon's online re-snapshot (:func:`reload`: the table read in one SQLite read
    transaction after its capture was checked, an empty-range checkpoint appended to the chain). Every other
    table keeps its rows and the chain its position, so no journal entry is skipped; the entries since the
    head are applied by the next `replicator run` (state-based: harmless for the reloaded tables).

    Each table is planned again from SQLite as it is now: create mode drops and recreates it (foreign keys of
    other tables that pointed at it are put back as they were); existing mode maps it onto the PostgreSQL table
    the app's migration left (:func:`replan`). Refused while a daemon applies this source (stop it first).
    """
    started = time.monotonic()
    schema_name = config.target.state_schema
    sconn = sqlite_source.connect(source, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms)
    try:
        meta = read_meta(sconn)
        if meta is None:
            raise UsageError(f"capture is not installed in {source}", hint="run `replicator capture install` first")
        with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as conn:
            plan = StateStore(conn, schema_name).load_plan()
            head = store.latest(conn, schema=schema_name)
            if plan is None or head is None:
                raise UsageError(
                    "the target has no saved plan or no checkpoint chain", hint="run `replicator snapshot`"
                )
            if mode not in (None, "auto", plan.mode):
                raise UsageError(
                    f"--mode {mode}: the target was loaded in {plan.mode} mode", hint=f"pass --mode {plan.mode}"
                )
            snapshot.only_tables(plan, names)  # unknown names are refused by name
            if not lock.take_lock(conn, meta.source_id):
                raise UsageError(
                    "a `replicator run` is applying this source to the target",
                    hint="stop it, run this again, then restart `replicator run`",
                )
            results: list[snapshot.TableResult] = []
            warnings: list[str] = []
            run_id = 0
            for name in names:
                _check_captured(sconn, name)
                plan = _plan_again(conn, sconn, plan, name, config, schema_name)
                left_out = skips.skipped(config, plan, meta.tables)
                targets, problems = resolve_targets(plan, meta, left_out)
                if name in problems:
                    raise UsageError(f"table {name!r} {problems[name]}", hint="fix the capture policy, then run again")
                done = reload(
                    conn,
                    source=source,
                    config=config,
                    plan=plan,
                    target=targets.get(name),
                    prev=head,
                    fk=fk_mode(conn),
                    state_schema=schema_name,
                    table_name=name,
                    new_table=plan.mode == "create",
                )
                head, run_id = done.checkpoint, done.run_id
                warnings.extend(done.warnings)
                if done.loaded is not None:
                    results.append(done.loaded)
                log.get("resnapshot", table=name).info(
                    "table reloaded; the chain keeps its position", checkpoint=head.number, seq_to=head.seq_to
                )
    finally:
        sconn.close()
    return snapshot.SnapshotResult.of_run(plan, run_id, results, warnings, started)


def _check_captured(sconn: sqlite3.Connection, table: str) -> None:
    """The reload is only consistent with the journal if the table's changes are journaled from its read on."""
    found = drift.check(sconn, drift.SchemaMark(-1, ""))
    lost = [t for t in found.tables if t.table == table and (t.needs_resnapshot or t.dropped)]
    if lost or table in found.new_tables:
        raise UsageError(
            f"table {table!r} is not fully captured now (rebuilt, new or renamed since capture was installed)",
            hint="run `replicator run`: it re-snapshots such tables online",
        )


def _plan_again(
    conn: psycopg.Connection[Any],
    sconn: sqlite3.Connection,
    plan: schemaplan.SchemaPlan,
    table: str,
    config: Config,
    state_schema: str,
) -> schemaplan.SchemaPlan:
    """The table planned from SQLite as it is now and saved with the plan; create mode recreates it."""
    if plan.mode != "create":
        return replan(conn, sconn, plan=plan, table=table, config=config, state_schema=state_schema)
    schema, profiles = _read_table(sconn, table)
    old = plan.table(table)
    fresh = createmode.plan_create(schema, profiles, config).table(table)
    ident = sql.Identifier(plan.schema, old.name)
    with conn.transaction():
        referencing = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = to_regclass(%s) AND conrelid <> confrelid",
            (ident.as_string(conn),),
        ).fetchall()
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(ident))
        created = ddl.create_tables(conn, _only(plan, fresh))
        fresh = ddl.without_generated(_only(plan, fresh), created.plain_generated).tables[0]
        for owner, name, definition in referencing:  # dropped by CASCADE: put back (validated at cutover)
            unchecked = "" if str(definition).endswith("NOT VALID") else " NOT VALID"
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}{}").format(
                    sql.SQL(owner), sql.Identifier(name), sql.SQL(definition), sql.SQL(unchecked)
                )
            )
        new_plan = msgspec.structs.replace(plan, tables=tuple(fresh if t.source == table else t for t in plan.tables))
        StateStore(conn, state_schema).save_plan(new_plan)
    return new_plan
