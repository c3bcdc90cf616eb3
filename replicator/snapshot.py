"""The initial load: every SQLite table into PostgreSQL by binary COPY, one transaction per table.

Consistency: the SQLite side is read through one read-only connection inside one read transaction
(``BEGIN`` then a read as its first statement, d17), so every table comes from the same committed
state even while the app writes. The schema and the profiles are read inside it too.

Atomicity per table: TRUNCATE (when the table holds rows), COPY, the quarantine rows and the
``snapshot_tables`` row commit together, after a count check against SQLite's own count in the same
read transaction. A crash or a refused value leaves each table either fully loaded and recorded or
untouched; rerunning reloads it. This is the unit a later resumable/chunked snapshot grows from:
:func:`load_table` takes a plan and a row source and is independent of the run around it.

Speed: binary COPY with ``set_types`` (no text formatting on either side), rows streamed with
``fetchmany`` (memory bounded by ``fetch_rows``), one compiled row converter per table. Secondary
indexes, UNIQUE, CHECK and FK constraints are built after the load, then ANALYZE.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from replicator import convert, log, pg, pgschema, quarantine, state
from replicator.config import Config
from replicator.errors import BadValue, TargetError, TargetNotEmpty, UsageError, is_transient_pg
from replicator.profile import TableProfile, profile_table
from triggers import source as sqlite_source
from triggers.schema import Schema, quote_ident, read_schema

FETCH_ROWS = 5_000
_DECODE_ERROR = "Could not decode to UTF-8"


class TableResult(msgspec.Struct, frozen=True):
    table: str
    target: str
    rows: int
    quarantined: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float(self.rows)


class SnapshotResult(msgspec.Struct, frozen=True):
    mode: str
    run_id: int
    tables: tuple[TableResult, ...]
    warnings: tuple[str, ...]
    seconds: float
    sequences: dict[str, int] = msgspec.field(default_factory=dict)
    """``table.column`` → the next value its identity/serial sequence will give."""
    plan: pgschema.SchemaPlan | None = None
    """The plan that was loaded (types per column), for verification."""

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def quarantined(self) -> int:
        return sum(t.quarantined for t in self.tables)


class SourceRead(msgspec.Struct, frozen=True):
    """What one consistent read transaction on SQLite gives every later step."""

    schema: Schema
    profiles: dict[str, TableProfile]
    sqlite_sequence: dict[str, int]


def open_source(path: Path, config: Config) -> sqlite3.Connection:
    """Read-only connection with an open read transaction: all later reads see one snapshot."""
    conn = sqlite_source.connect(path, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # first read: the snapshot starts here
    return conn


def read_source(conn: sqlite3.Connection) -> SourceRead:
    schema = read_schema(conn)
    profiles = {t.name: profile_table(conn, t) for t in schema.tables}
    return SourceRead(schema=schema, profiles=profiles, sqlite_sequence=pgschema.read_sqlite_sequence(conn))


def resolve_mode(conn: psycopg.Connection[Any], config: Config, mode: str | None) -> str:
    """``auto``: create when the target schema has no tables, else load into the existing ones.

    Except when the tables are ours: if the last snapshot into this target ran in create mode
    (finished or not), auto stays in create mode, so a rerun after a refused value rebuilds the
    indexes and constraints that the failed run never reached (with ``--replace``).
    """
    chosen = mode or config.snapshot.mode
    if chosen != "auto":
        return chosen
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
        (config.target.schema,),
    ).fetchone()
    if not row or not row[0]:
        return "create"
    return "create" if state.last_snapshot_mode(conn, config.target.state_schema) == "create" else "existing"


def build_plan(
    conn: psycopg.Connection[Any] | None, read: SourceRead, config: Config, mode: str
) -> pgschema.SchemaPlan:
    if mode == "create":
        return pgschema.plan_create(read.schema, read.profiles, config)
    if conn is None:
        raise UsageError("existing mode needs the target", hint="pass --target")
    return pgschema.plan_existing(read.schema, pgschema.reflect(conn, config.target.schema), read.profiles, config)


def _existing_tables(conn: psycopg.Connection[Any], schema_name: str, names: Sequence[str]) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)",
        (schema_name, list(names)),
    ).fetchall()
    return sorted(r[0] for r in rows)


def _tables_with_rows(conn: psycopg.Connection[Any], schema_name: str, names: Sequence[str]) -> list[str]:
    found = []
    for name in names:
        row = conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(schema_name, name))
        ).fetchone()
        if row and row[0]:
            found.append(name)
    return found


def check_target(conn: psycopg.Connection[Any], plan: pgschema.SchemaPlan, *, replace: bool) -> None:
    """Refuse to overwrite data, naming the tables that hold rows, unless ``--replace``."""
    names = [t.name for t in plan.tables]
    existing = _existing_tables(conn, plan.schema, names)
    if plan.mode == "create" and existing and not replace:
        populated = _tables_with_rows(conn, plan.schema, existing)
        if populated:
            raise TargetNotEmpty(
                f"target tables already hold rows: {', '.join(populated)}",
                hint="pass --replace to drop and reload them, or point --target at an empty database",
            )
        raise UsageError(
            f"tables already exist in schema {plan.schema!r}: {', '.join(existing)}",
            hint="use --mode existing to load into them, or --replace to drop and recreate them",
        )
    if plan.mode == "existing" and not replace:
        populated = _tables_with_rows(conn, plan.schema, existing)
        if populated:
            raise TargetNotEmpty(
                f"target tables already hold rows: {', '.join(populated)}",
                hint="pass --replace to truncate and reload them, or point --target at an empty database",
            )


def _drop_tables(conn: psycopg.Connection[Any], schema_name: str, names: Sequence[str]) -> None:
    if names:
        conn.execute(
            sql.SQL("DROP TABLE {} CASCADE").format(sql.SQL(", ").join(sql.Identifier(schema_name, n) for n in names))
        )


def _truncate_all(conn: psycopg.Connection[Any], plan: pgschema.SchemaPlan) -> None:
    """``--replace`` in existing mode: empty every mapped table in one statement.

    One TRUNCATE over all of them is what foreign keys between them allow (a per-table TRUNCATE
    of a referenced parent is refused, and a DELETE would trip the children's rows). A table
    outside the plan that references one of them makes PostgreSQL refuse: that is reported.
    """
    populated = _tables_with_rows(conn, plan.schema, [t.name for t in plan.tables])
    if not populated:
        return
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("TRUNCATE {}").format(
                    sql.SQL(", ").join(sql.Identifier(plan.schema, t.name) for t in plan.tables)
                )
            )
    except psycopg.errors.FeatureNotSupported as exc:
        raise TargetError(
            f"cannot empty the target tables for --replace: {pgschema.pg_message(exc)}",
            hint="a table the SQLite file does not have references them; empty it first",
        ) from None


class _DecodeFallback(Exception):
    """sqlite3 met TEXT that is not UTF-8: the table is re-read with a bytes-tolerant text factory."""


def _select(table: str, columns: Sequence[str]) -> str:
    cols = ", ".join(quote_ident(c) for c in columns) or "NULL"
    return f"SELECT {cols} FROM {quote_ident(table)}"  # noqa: S608 - SQLite identifiers quoted by quote_ident


def _rows(conn: sqlite3.Connection, query: str, fetch_rows: int) -> Iterator[Sequence[Any]]:
    """Stream rows in batches of ``fetch_rows``; bounded memory whatever the table size."""
    try:
        cursor = conn.execute(query)
        while True:
            batch = cursor.fetchmany(fetch_rows)
            if not batch:
                return
            yield from batch
    except sqlite3.OperationalError as exc:
        if _DECODE_ERROR in str(exc):
            raise _DecodeFallback(str(exc)) from None
        raise sqlite_source.translate(exc, "source") from None


def load_table(
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    plan: pgschema.SchemaPlan,
    table: pgschema.TablePlan,
    *,
    policy: str,
    state_schema: str,
    source: state.SourceIdentity,
    run_id: int,
    fetch_rows: int = FETCH_ROWS,
) -> TableResult:
    """Load one table in one PostgreSQL transaction; re-read once with the bytes fallback if needed."""
    bound = log.get("snapshot", table=table.source)
    try:
        return _load_table(sconn, pconn, plan, table, policy, state_schema, source, run_id, fetch_rows, None)
    except psycopg.Error as exc:
        raise _copy_error(table, exc) from None
    except _DecodeFallback as exc:
        bound.warning("invalid UTF-8 in source text; re-reading the table with the bytes fallback", detail=str(exc))
        try:
            return _load_table(
                sconn, pconn, plan, table, policy, state_schema, source, run_id, fetch_rows, convert.decode_text
            )
        finally:
            sconn.text_factory = str


def _load_table(
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    plan: pgschema.SchemaPlan,
    table: pgschema.TablePlan,
    policy: str,
    state_schema: str,
    source: state.SourceIdentity,
    run_id: int,
    fetch_rows: int,
    text_factory: Callable[[bytes], str] | None,
) -> TableResult:
    bound = log.get("snapshot", table=table.source)
    started = time.monotonic()
    columns = table.load_columns
    source_cols = [c.source for c in columns if c.source is not None]
    key_cols = list(table.key_source) or ["rowid"]
    extra = [k for k in key_cols if k not in source_cols]
    positions = {name: i for i, name in enumerate(source_cols + extra)}
    width = len(source_cols)
    convert_row = convert.row_converter(table.source, source_cols, [c.type for c in columns])
    ident = sql.Identifier(plan.schema, table.name)
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        ident, sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
    )
    (source_count,) = sconn.execute(f"SELECT count(*) FROM {quote_ident(table.source)}").fetchone()  # noqa: S608
    refusals: list[quarantine.Refusal] = []
    written = 0
    if text_factory is not None:
        sconn.text_factory = text_factory
    with pconn.transaction():
        _empty_table(pconn, ident)
        with pconn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.set_types(convert.copy_types([c.type for c in columns]))
            for row in _rows(sconn, _select(table.source, source_cols + extra), fetch_rows):
                values = row[:width] if extra else row
                try:
                    copy.write_row(convert_row(values))
                except convert.RowRefused as exc:
                    key = {k: row[positions[k]] for k in key_cols}
                    if policy != "quarantine":
                        raise _stopped(table, key, exc) from None
                    refusals.append(quarantine.make(table.source, key, exc.column, exc.value, exc.reason))
                    continue
                written += 1
        row_count = pconn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
        loaded = int(row_count[0]) if row_count else -1
        if loaded != written or written + len(refusals) != source_count:
            raise TargetError(
                f"count check failed for {table.source!r}: SQLite has {source_count} rows, read "
                f"{written + len(refusals)}, PostgreSQL holds {loaded}",
                hint="nothing was committed for this table; rerun, and report it if it repeats",
            )
        quarantine.replace_for_table(pconn, state_schema, table.source, refusals, run_id)
        seconds = time.monotonic() - started
        state.record_table(
            pconn,
            state_schema,
            table=table.source,
            target_table=table.name,
            rows=written,
            quarantined=len(refusals),
            seconds=seconds,
            source=source,
            run_id=run_id,
        )
    if refusals:
        bound.warning("values quarantined; their rows were skipped", quarantined=len(refusals))
    bound.info("table loaded", rows=written, seconds=round(seconds, 3))
    return TableResult(table.source, table.name, written, len(refusals), seconds)


def _copy_error(table: pgschema.TablePlan, exc: psycopg.Error) -> TargetError:
    """PostgreSQL refused the table's rows: name the table and say what to do; nothing was committed."""
    message = f"loading {table.source} into {table.name} failed: {pgschema.pg_message(exc)}; nothing was committed"
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        hint = (
            "SQLite holds rows whose parent is missing (its foreign keys are off by default): fix the orphans, "
            "or load in create mode where foreign keys are created NOT VALID and checked at cutover"
        )
    elif isinstance(
        exc, psycopg.errors.UniqueViolation | psycopg.errors.CheckViolation | psycopg.errors.NotNullViolation
    ):
        hint = "the target schema is stricter than the SQLite data; fix the rows or relax the constraint"
    else:
        hint = "check the target table's definition against the SQLite table; rerun with -v for details"
    return TargetError(message, hint=hint, transient=is_transient_pg(exc))


def _empty_table(conn: psycopg.Connection[Any], ident: sql.Composable) -> None:
    """TRUNCATE when the table holds rows; DELETE when a foreign key forbids TRUNCATE."""
    row = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(ident)).fetchone()
    if not row or not row[0]:
        return
    try:
        with conn.transaction():
            conn.execute(sql.SQL("TRUNCATE {}").format(ident))
    except psycopg.errors.FeatureNotSupported:
        conn.execute(sql.SQL("DELETE FROM {}").format(ident))


def _stopped(table: pgschema.TablePlan, key: dict[str, Any], exc: convert.RowRefused) -> BadValue:
    shown = ", ".join(f"{k}={v!r}" for k, v in key.items())
    return BadValue(
        f"refused value in {table.source} ({shown}) column {exc.column}: {exc.reason}; "
        f"value {convert.excerpt(exc.value)}; nothing was written to {table.name}",
        hint=(
            f"fix the value in SQLite, override the type ([types.{table.source}.{exc.column}] type = ...), "
            "or use --on-bad-value quarantine to skip and record such rows; rerun with --replace"
        ),
    )


def snapshot(
    source: Path,
    dsn: str,
    config: Config,
    *,
    mode: str | None = None,
    on_bad_value: str | None = None,
    replace: bool = False,
    fetch_rows: int = FETCH_ROWS,
) -> SnapshotResult:
    """Create (or map) the schema, load every table, then indexes, constraints, sequences, ANALYZE."""
    identity = state.source_identity(source)
    sconn = open_source(source, config)
    try:
        return snapshot_from(
            sconn,
            identity,
            dsn,
            config,
            mode=mode,
            on_bad_value=on_bad_value,
            replace=replace,
            fetch_rows=fetch_rows,
        )
    finally:
        sconn.close()


def snapshot_from(
    sconn: sqlite3.Connection,
    identity: state.SourceIdentity,
    dsn: str,
    config: Config,
    *,
    mode: str | None = None,
    on_bad_value: str | None = None,
    replace: bool = False,
    fetch_rows: int = FETCH_ROWS,
) -> SnapshotResult:
    """The load from a source connection whose read transaction is already open (see open_source).

    The caller owns that transaction: the capture stage opens it, reads the journal's high-water
    mark as its first statement, then calls this, so the snapshot and the mark describe one state.
    """
    started = time.monotonic()
    policy = on_bad_value or config.snapshot.on_bad_value
    state_schema = config.target.state_schema
    read = read_source(sconn)
    with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as pconn:
        chosen = resolve_mode(pconn, config, mode)
        plan = build_plan(pconn, read, config, chosen)
        check_target(pconn, plan, replace=replace)
        warnings = list(plan.warnings) + [f"{t.source}: {w}" for t in plan.tables for w in t.warnings]
        with pconn.transaction():
            state.ensure(pconn, state_schema)
            run_id = state.start_run(pconn, state_schema, command="snapshot", mode=chosen, source=identity)
        try:
            plan = _prepare_target(pconn, plan, replace=replace, warnings=warnings)
            log.get("snapshot").info("snapshot started", mode=chosen, tables=len(plan.tables), run_id=run_id)
            results = [
                load_table(
                    sconn,
                    pconn,
                    plan,
                    plan.table(name),
                    policy=policy,
                    state_schema=state_schema,
                    source=identity,
                    run_id=run_id,
                    fetch_rows=fetch_rows,
                )
                for name in plan.order
            ]
            sequences = _finish_target(pconn, plan, read, warnings)
        except Exception as exc:
            with pconn.transaction():
                state.finish_run(pconn, state_schema, run_id, status="failed", message=str(exc)[:1000])
            raise
        result = SnapshotResult(
            mode=chosen,
            run_id=run_id,
            tables=tuple(results),
            warnings=tuple(warnings),
            seconds=time.monotonic() - started,
            sequences=sequences,
            plan=plan,
        )
        with pconn.transaction():
            state.finish_run(pconn, state_schema, run_id, status="ok", rows=result.rows, quarantined=result.quarantined)
    for warning in result.warnings:
        log.get("snapshot").warning("schema", detail=warning)
    return result


def _prepare_target(
    pconn: psycopg.Connection[Any], plan: pgschema.SchemaPlan, *, replace: bool, warnings: list[str]
) -> pgschema.SchemaPlan:
    """Existing mode: empty the tables for --replace. Create mode: (re)create the tables."""
    if plan.mode == "existing":
        if replace:
            with pconn.transaction():
                _truncate_all(pconn, plan)
        return plan
    if replace:
        with pconn.transaction():
            _drop_tables(pconn, plan.schema, _existing_tables(pconn, plan.schema, [t.name for t in plan.tables]))
    created = pgschema.create_tables(pconn, plan)
    warnings.extend(created.warnings)
    return pgschema.without_generated(plan, created.plain_generated)


def _finish_target(
    pconn: psycopg.Connection[Any], plan: pgschema.SchemaPlan, read: SourceRead, warnings: list[str]
) -> dict[str, int]:
    """After every table: indexes and constraints (create mode), sequences past the keys, ANALYZE."""
    if plan.mode == "create":
        warnings.extend(pgschema.apply_post_load(pconn, plan))
    sequences = pgschema.sync_sequences(pconn, plan, read.sqlite_sequence)
    for table in plan.tables:
        pconn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(plan.schema, table.name)))
    return sequences


def render(result: SnapshotResult) -> None:
    """The run summary: rows, seconds and rows/s per table, quarantined counts, totals."""
    from rich.console import Console
    from rich.table import Table

    out = Table(title=f"snapshot ({result.mode} mode, run {result.run_id})")
    out.add_column("table")
    out.add_column("rows", justify="right")
    out.add_column("quarantined", justify="right")
    out.add_column("seconds", justify="right")
    out.add_column("rows/s", justify="right")
    for t in result.tables:
        out.add_row(t.table, f"{t.rows:,}", f"{t.quarantined:,}", f"{t.seconds:.2f}", f"{t.rows_per_second:,.0f}")
    total_rate = result.rows / result.seconds if result.seconds else 0.0
    out.add_row(
        "total",
        f"{result.rows:,}",
        f"{result.quarantined:,}",
        f"{result.seconds:.2f}",
        f"{total_rate:,.0f}",
        style="bold",
    )
    console = Console()
    console.print(out)
    if result.quarantined:
        console.print(
            f"[yellow]{result.quarantined} row(s) quarantined (skipped): see replicator.quarantine; "
            "cutover refuses until they are acknowledged[/yellow]"
        )
    if result.warnings:
        console.print(f"{len(result.warnings)} schema warning(s) logged; `replicator schema --print` lists them")
