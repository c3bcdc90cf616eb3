"""The steps of one snapshot run around the loads: setup, the load order, the genesis checkpoint, failure.

:func:`replicator.load.snapshot.snapshot_from` calls them in order; each runs in its own transaction(s) so
a crash between them leaves the target resumable (``--resume``) or replaceable (``--replace``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from checkpoints import store
from checkpoints.digest import EMPTY
from checkpoints.model import TableChange, genesis
from replicator import faults, log
from replicator.apply import dependents
from replicator.config import Config
from replicator.errors import TargetNotEmpty, UsageError
from replicator.load.context import LoadContext
from replicator.load.costs import table_rows
from replicator.load.helper import Helper, read_source_parallel
from replicator.load.loader import Loader
from replicator.load.options import SnapshotOptions
from replicator.load.postload import finish_target
from replicator.load.results import TableResult
from replicator.load.source import SourceRead, read_source
from replicator.load.target import build_plan, check_target, only_tables, prepare_target, resolve_mode, save_plan
from replicator.plan.schemaplan import SchemaPlan
from replicator.plan.sequences import read_sqlite_sequence
from replicator.state import reverse
from replicator.state.identity import SourceIdentity
from replicator.state.store import StateStore, TableState
from triggers.schema import read_schema


class Setup(msgspec.Struct):
    """The plan the run loads with, the source read that made it, what earlier runs loaded."""

    plan: SchemaPlan
    read: SourceRead
    loaded: dict[str, TableState]
    reused_plan: bool


def setup(
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    identity: SourceIdentity,
    config: Config,
    options: SnapshotOptions,
    parallel: tuple[Helper, Path] | None = None,
) -> Setup:
    """The plan and what earlier runs loaded; refuses another source's state and a non-empty target."""
    state_store = StateStore(pconn, config.target.state_schema)
    state_store.ensure()
    state_store.mark_killed()
    replace, resume = options.replace, options.resume
    loaded = {} if replace else state_store.loaded_tables()
    if resume:
        _same_source(state_store, identity, loaded)
    saved = state_store.load_plan() if resume and state_store.last_snapshot_source() else None
    if saved is not None:
        read = SourceRead(schema=read_schema(sconn), profiles={}, sqlite_sequence=read_sqlite_sequence(sconn))
        plan = saved
    else:
        resolved = resolve_mode(pconn, config, options.mode)
        create = config if resolved == "create" else None
        read = (
            read_source(sconn, create)
            if parallel is None
            else read_source_parallel(sconn, parallel[1], config, parallel[0], create=create is not None)
        )
        plan = build_plan(pconn, read, config, resolved)
        if read.guessed:
            guessed = tuple(msgspec.structs.replace(t, guessed=t.source in read.guessed) for t in plan.tables)
            plan = msgspec.structs.replace(plan, tables=guessed)
    if options.tables:
        plan = only_tables(plan, options.tables)
    check_target(pconn, plan, replace=replace, resume=resume, loaded=[s.target_table for s in loaded.values()])
    if not replace and not resume:
        head = store.latest(pconn, schema=state_store.schema_name)
        if head is not None:
            raise TargetNotEmpty(
                f"the target already holds a checkpoint chain (head {head.number}) from an earlier snapshot",
                hint="pass --replace to start the migration over (the chain is cleared), or --resume",
            )
    return Setup(plan=plan, read=read, loaded=loaded, reused_plan=saved is not None)


def load_tables(
    ctx: LoadContext,
    setup: Setup,
    config: Config,
    options: SnapshotOptions,
    warnings: list[str],
    parallel: tuple[Helper, Path] | None,
) -> tuple[SchemaPlan, list[TableResult], dict[str, int]]:
    """Prepare the target, load what is left to load, then what ``index_table`` left: the plan loaded
    (a disproved guess may have changed a table's types), each table's result, the sequences."""
    pconn = ctx.pconn
    if options.replace and not setup.reused_plan:  # a new migration: an earlier rollback window's objects go
        with pconn.transaction():
            previous = ctx.state_store.load_plan()
            shapes = {**reverse.shapes_of(setup.plan), **(reverse.shapes_of(previous) if previous else {})}
            reverse.forget(pconn, ctx.state_store.schema_name, list(shapes.values()))
    plan = prepare_target(pconn, setup.plan, replace=options.replace, reuse=setup.reused_plan, warnings=warnings)
    with pconn.transaction():
        save_plan(ctx.state_store, plan, replace=options.replace)
    bound = log.get("snapshot")
    bound.info(
        "snapshot started", mode=plan.mode, tables=len(plan.tables), run_id=ctx.run.run_id, journal_mark=ctx.run.mark
    )
    done = {
        name: _resumed(setup.loaded[name])
        for name in plan.order
        if options.resume and name in setup.loaded and setup.loaded[name].source_id == ctx.run.source.id
    }
    for name in done:
        bound.info("table already loaded; skipped", table=name, rows=done[name].rows)
    todo = [name for name in plan.order if name not in done]
    load = Loader(ctx, plan, config, setup.read)
    if load.held is not None and done:  # resumed: what the earlier run quarantined is held
        with pconn.transaction():
            dependents.seed(load.held, ctx.state_store, list(done))
    done.update(_load(load, todo, setup.read, config, parallel))
    plan = load.plan  # a disproved guess may have changed a table's types
    results = [done[name] for name in plan.order]
    warnings.extend(w for r in results for w in r.warnings)
    analyzed = frozenset(r.table for r in results if r.analyzed)
    return plan, results, finish_target(pconn, plan, setup.read, warnings, analyzed)


def _load(
    load: Loader, todo: Sequence[str], read: SourceRead, config: Config, parallel: tuple[Helper, Path] | None
) -> dict[str, TableResult]:
    """The tables here, or with the helper: existing mode shares only the dominant tables' conversion
    (enforced FKs need parents first, all loaded here); create mode gives it whole tables too."""
    if parallel is None:
        return {name: load.here(name) for name in todo}
    helper, path = parallel
    if load.plan.mode != "create":
        from replicator.load.share import dominant_tables

        rows = table_rows(load.ctx.sconn, read.schema, todo, read.profiles)
        load.share(dominant_tables(rows, config.snapshot.split_rows), helper)
        done = {name: load.here(name) for name in todo}
        helper.finish()
        return done
    done = load.shared(todo, read, helper, path)
    helper.finish()  # the helper's work is done: let it exit meanwhile
    done.update(load.dependents())
    return done


def _same_source(state_store: StateStore, identity: SourceIdentity, loaded: dict[str, TableState]) -> None:
    """``--resume`` never mixes two source files: every recorded table and the last run must be this one."""
    others = sorted({(s.source_path, s.source_id) for s in loaded.values() if s.source_id != identity.id})
    last = state_store.last_snapshot_source()
    if not others and last is not None and last != identity.id:
        others = [("(the last snapshot run)", last)]
    if others:
        shown = ", ".join(f"{path} (id {sid})" for path, sid in others)
        raise UsageError(
            f"the target holds a snapshot of another source file: {shown}; this is {identity.path} (id {identity.id})",
            hint="resume with the same file, or pass --replace to reload everything from this one",
        )


def _resumed(done: TableState) -> TableResult:
    return TableResult(
        table=done.table_name,
        target=done.target_table,
        rows=done.rows,
        quarantined=done.quarantined,
        seconds=0.0,
        checksum=done.checksum or EMPTY,
        resumed=True,
    )


def mark_failed(state_store: StateStore, run_id: int, exc: BaseException) -> None:
    """Record the failure (Ctrl-C included) without hiding the original error if that fails too."""
    message = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)[:1000]
    try:
        with state_store.conn.transaction():
            state_store.finish_run(run_id, status="failed", message=message)
    except psycopg.Error:
        log.get("snapshot").warning("could not record the failed run", run_id=run_id)


def finish_run(ctx: LoadContext, plan: SchemaPlan, results: Sequence[TableResult]) -> tuple[int | None, str | None]:
    """One transaction: the genesis checkpoint (capture installed), the mark, the run's end.

    The genesis covers every table with its count and checksum; its ``seq_to`` is the oldest mark a
    loaded table was read at (a resumed run's earlier tables), so streaming replays from there.
    """
    pconn, state_store, mark = ctx.pconn, ctx.state_store, ctx.run.mark
    loaded = state_store.loaded_tables()
    rows = sum(r.rows for r in results)
    quarantined = sum(r.quarantined for r in results)
    seq_to: int | None = None
    genesis_hash: str | None = None
    with pconn.transaction():
        if mark is not None:
            marks = [loaded[name].snapshot_seq for name in plan.order if name in loaded]
            unmarked = [name for name in plan.order if name in loaded and loaded[name].snapshot_seq is None]
            if unmarked:
                raise UsageError(
                    f"table(s) {', '.join(unmarked)} were loaded before capture was installed: changes since are lost",
                    hint="pass --replace to reload every table now that capture is installed",
                )
            seq_to = min([m for m in marks if m is not None] + [mark])
            head = store.latest(pconn, schema=state_store.schema_name)
            if head is None:
                tables = {
                    name: TableChange(upserted=loaded[name].rows, upserted_digest=loaded[name].checksum or EMPTY)
                    for name in plan.order
                    if name in loaded
                }
                checkpoint = genesis(tables, seq_to=seq_to)
                store.append(pconn, checkpoint, state_store.schema_name)
                faults.point("snapshot.after_genesis")
                genesis_hash = checkpoint.hash
            else:
                genesis_hash = None if head.number != 1 else head.hash
                seq_to = None if head.number != 1 else head.seq_to
        state_store.record_mark(
            source=ctx.run.source, snapshot_seq=seq_to, genesis_hash=genesis_hash, run_id=ctx.run.run_id
        )
        state_store.finish_run(ctx.run.run_id, status="ok", rows=rows, quarantined=quarantined)
    if mark is not None:
        log.get("snapshot").info("journal mark recorded", snapshot_seq=seq_to, genesis=genesis_hash)
    return seq_to, genesis_hash
