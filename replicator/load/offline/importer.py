"""``replicator import DIR --target DSN``: an export loaded through the snapshot's own COPY path.

An export is just another row source: the schema comes from the manifest's DDL (read back through
an in-memory SQLite, so the same :func:`triggers.schema.read_schema` describes it), the types from
the manifest's value profiles (so the plan equals what a direct snapshot of the file would choose),
and every row goes through :func:`replicator.load.snapshot.copy_rows`: the same converter, the same
binary COPY, the same checksum. A direct snapshot and export → import therefore give the same
tables and the same per-table checksums.

Order of work: the files' SHA-256s and the manifest's own checksum are verified before anything
touches PostgreSQL; a target holding rows is refused unless ``--replace``; tables load in dependency
order, one transaction each (``--single-transaction``: one for everything), and each table's row
count is checked against the manifest before its commit. Any error rolls back (that table, or
everything) and names the table and the line (and key) of the row. ``--dry-run`` does all of it in
one transaction and rolls it back at the end.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from replicator import faults, log, pg
from replicator.apply import dependents
from replicator.config import Config
from replicator.errors import TargetError
from replicator.load import snapshot
from replicator.load.offline.manifest import FETCH_ROWS, Manifest, TableEntry
from replicator.load.offline.reader import Reader, iter_rows
from replicator.load.offline.verifier import ExportError, check_files, read_manifest
from replicator.load.options import ImportOptions
from replicator.load.table import record_loaded
from replicator.plan import schemaplan
from replicator.progress import Progress
from replicator.state.identity import SourceIdentity
from replicator.state.store import StateStore
from triggers.schema import Schema, read_schema


class ImportResult(msgspec.Struct, frozen=True):
    run_id: int
    tables: tuple[snapshot.TableResult, ...]
    seconds: float
    dry_run: bool
    warnings: tuple[str, ...]
    plan: schemaplan.SchemaPlan
    sequences: dict[str, int]

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


_DDL: Final = re.compile(r"\s*CREATE\s+(UNIQUE\s+)?(TABLE|INDEX)\b", re.IGNORECASE)
#: What the manifest's DDL may not do in the in-memory database: touch files or settings (the
#: manifest is input, not trusted code; the statements are also checked to be CREATE TABLE / INDEX).
_DENIED: Final = frozenset(
    {
        sqlite3.SQLITE_ATTACH,
        sqlite3.SQLITE_DETACH,
        sqlite3.SQLITE_PRAGMA,
        sqlite3.SQLITE_CREATE_VTABLE,
        sqlite3.SQLITE_CREATE_TRIGGER,
        sqlite3.SQLITE_CREATE_VIEW,
    }
)


def _ddl_only(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    return sqlite3.SQLITE_DENY if action in _DENIED else sqlite3.SQLITE_OK


def schema_of(manifest: Manifest) -> Schema:
    """The exported schema, described by SQLite itself from the manifest's DDL."""
    mem = sqlite3.connect(":memory:")
    mem.set_authorizer(_ddl_only)
    try:
        for statement in manifest.schema:
            if not _DDL.match(statement):
                raise ExportError([f"the manifest's schema holds a statement that is not DDL: {statement[:60]!r}"])
            mem.execute(statement)
        mem.set_authorizer(None)
        return read_schema(mem)
    except sqlite3.Error as exc:
        raise ExportError([f"the manifest's schema DDL does not run in SQLite: {exc}"]) from None
    finally:
        mem.close()


def import_export(
    path: Path, dsn: str, config: Config, options: ImportOptions | None = None, progress: Progress | None = None
) -> ImportResult:
    """Verify the export's checksums, then load it; see the module docstring."""
    options = options or ImportOptions()
    replace, dry_run = options.replace, options.dry_run
    started = time.monotonic()
    bound = log.get("import")
    with Reader(path) as reader:
        manifest = read_manifest(reader)
        problems = check_files(reader, manifest)
        if problems:
            raise ExportError(problems)
        read = snapshot.SourceRead(
            schema=schema_of(manifest), profiles=manifest.profiles, sqlite_sequence=manifest.sqlite_sequence
        )
        identity = SourceIdentity(path=str(path.resolve()), id=f"export:{manifest.source.sha256[:16]}")
        state_schema = config.target.state_schema
        policy = options.policy(config)
        with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as pconn:
            state_store = StateStore(pconn, state_schema)
            state_store.ensure()
            state_store.mark_killed()
            plan = snapshot.build_plan(pconn, read, config, snapshot.resolve_mode(pconn, config, options.mode))
            snapshot.check_target(pconn, plan, replace=replace, can_resume=False)
            warnings = list(plan.warnings) + [f"{t.source}: {w}" for t in plan.tables for w in t.warnings]
            with pconn.transaction():
                run_id = state_store.start_run(command="import", mode=plan.mode, source=identity)
            job = _Job(reader, manifest, read, identity, state_schema, policy, run_id, progress)
            try:
                if dry_run or options.single_transaction:
                    with pconn.transaction():
                        plan, results, sequences = job.run(pconn, plan, replace, warnings)
                        if dry_run:
                            bound.info("dry run complete: rolling back", tables=len(results))
                            raise psycopg.Rollback()
                else:
                    plan, results, sequences = job.run(pconn, plan, replace, warnings)
                with pconn.transaction():
                    state_store.finish_run(
                        run_id,
                        status="dry-run" if dry_run else "ok",
                        rows=sum(r.rows for r in results),
                        quarantined=sum(r.quarantined for r in results),
                    )
            except BaseException as exc:
                _failed(state_store, run_id, exc)
                raise
    return ImportResult(
        run_id=run_id,
        tables=tuple(results),
        seconds=time.monotonic() - started,
        dry_run=dry_run,
        warnings=tuple(warnings),
        plan=plan,
        sequences=sequences,
    )


def _failed(state_store: StateStore, run_id: int, exc: BaseException) -> None:
    try:
        with state_store.conn.transaction():
            state_store.finish_run(run_id, status="failed", message=str(exc)[:1000] or "interrupted")
    except psycopg.Error:
        log.get("import").warning("could not record the failed run", run_id=run_id)


class _Job(msgspec.Struct):
    reader: Reader
    manifest: Manifest
    read: snapshot.SourceRead
    identity: SourceIdentity
    state_schema: str
    policy: str
    run_id: int
    progress: Progress | None

    def run(
        self, pconn: psycopg.Connection[Any], plan: schemaplan.SchemaPlan, replace: bool, warnings: list[str]
    ) -> tuple[schemaplan.SchemaPlan, list[snapshot.TableResult], dict[str, int]]:
        plan = snapshot.prepare_target(pconn, plan, replace=replace, reuse=False, warnings=warnings)
        if replace:
            StateStore(pconn, self.state_schema).forget_tables()
        parents = dependents.Held(plan) if self.policy == "quarantine" and plan.foreign_keys else None
        results = [self.load(pconn, plan, plan.table(name), parents) for name in plan.order]
        sequences = snapshot.finish_target(pconn, plan, self.read, warnings)
        return plan, results, sequences

    def load(
        self,
        pconn: psycopg.Connection[Any],
        plan: schemaplan.SchemaPlan,
        table: schemaplan.TablePlan,
        parents: dependents.Held | None = None,
    ) -> snapshot.TableResult:
        """One table in one transaction (a savepoint under --single-transaction), count-checked."""
        started = time.monotonic()
        entry = self.manifest.table(table.source)
        columns = [c.source for c in table.load_columns if c.source is not None]
        key_cols = [k for k in table.key_source if k in entry.columns]
        if self.progress is not None:
            self.progress.start(table.source, entry.rows)

        def key_of(row: Sequence[Any]) -> dict[str, Any]:
            key = {k: row[columns.index(k)] for k in key_cols if k in columns}
            return {**key, "line": row[-1]}

        def on_batch(done: int) -> None:
            if self.progress is not None:
                self.progress.advance(table.source, done)

        ident = sql.Identifier(plan.schema, table.name)
        try:
            with pconn.transaction():
                snapshot.empty_table(pconn, ident)
                pipe = snapshot.RowPipe(table, key_of=key_of, policy=self.policy, verify=False, extra=True)
                batches = _batches(self.reader, entry, columns)
                copied = snapshot.copy_rows(pconn, plan.schema, pipe, batches, on_batch=on_batch, held=parents)
                held = copied.server_rows  # emptied in this transaction: COPY's count is the table's
                if copied.read != entry.rows or held != copied.written:
                    raise TargetError(
                        f"count check failed for {table.source!r}: the manifest says {entry.rows} rows, the file "
                        f"gave {copied.read}, PostgreSQL holds {held}; rolled back",
                        hint="run `replicator verify-export` on the export",
                    )
                store = StateStore(pconn, self.state_schema)
                seconds = record_loaded(store, table, copied, started, self.identity, self.run_id, None)
        except psycopg.Error as exc:
            raise snapshot.copy_error(table, exc) from None
        faults.point("import.after_table")  # this table committed, the run not finished
        if self.progress is not None:
            self.progress.finish(table.source, copied.written, seconds)
        log.get("import", table=table.source).info("table imported", rows=copied.written, seconds=round(seconds, 3))
        return snapshot.TableResult(
            table.source, table.name, copied.written, len(copied.refusals), seconds, copied.checksum
        )


def _batches(reader: Reader, entry: TableEntry, columns: Sequence[str]) -> Iterator[list[list[Any]]]:
    """Rows of the load columns, each followed by its line number (for messages), in batches."""
    batch: list[list[Any]] = []
    for number, values in iter_rows(reader, entry, columns):
        values.append(number)
        batch.append(values)
        if len(batch) >= FETCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def render(result: ImportResult) -> None:
    """The same summary as a snapshot's, marked as a dry run when nothing was committed."""
    summary = snapshot.SnapshotResult(
        mode=result.plan.mode,
        run_id=result.run_id,
        tables=result.tables,
        warnings=result.warnings,
        seconds=result.seconds,
    )
    snapshot.render(summary)
    if result.dry_run:
        from rich.console import Console

        Console().print("[yellow]dry run: everything was rolled back; nothing was committed[/yellow]")
