"""The initial load: every SQLite table into PostgreSQL by binary COPY, one transaction per table.

Consistency with the journal. The main read transaction opens first (``BEGIN``, then a read as its
first statement: SQLite's BEGIN is deferred, d17); when capture is installed, the journal's
high-water mark is read in it before any row. What we chose, and why:

* ``snapshot.workers = 1``: every table comes from that one read transaction, so the snapshot and
  the mark describe exactly one state (the genesis digests are the state at ``seq_to``).
* ``snapshot.workers = 2`` (the default, create mode): a helper process loads about half the rows
  (largest tables first, balanced by size). On 2 cores this is what buys the speed (conversion and
  checksums are Python, one core each). The plan is made in the caller's transaction while the helper
  starts; then the main process opens the transaction the rows come from and the helper opens its
  *twin*, and ``PRAGMA data_version`` on a third connection proves no commit landed between them
  (:mod:`replicator.load.twin`): both read one state, the mark's, so every table is exactly the state at
  ``seq_to``, whichever process read it. A dominant table (``snapshot.split_rows`` rows or more, that
  no split of whole tables balances) is cut into rowid ranges that go to whichever process is free,
  into the one COPY of its one transaction (:mod:`replicator.load.share`).
* Without a twin (an app that committed inside the window on every try, or a schema changed since the
  plan), the planning transaction is the one the rows come from and the mark is read in it; the
  helper's whole tables each come from a read transaction of its own opened *after* the mark, and a
  dominant table is read by the main process alone and its batches dealt to the helper for
  conversion. That is exact too, because the apply is state-based: for every journaled key it re-reads
  the current row, so replaying entries between the mark and a table's later read point rewrites rows
  to the values they already have; nothing is lost (every change after a table's read is journaled
  after the mark) and nothing is doubled (a key is deleted before its current row is inserted). The
  genesis holds the digests of the rows loaded; the running digests the apply keeps start from them.
  Without capture, an app writing during such a snapshot means tables from slightly different
  moments: for one instant use ``workers = 1`` or stop the app. Existing mode loads one table at a
  time in the main transaction (the app's foreign keys are enforced, so parents must come first),
  sharing only the dominant tables' work.
* A resumed snapshot loads the remaining tables from a newer read transaction: the genesis takes
  the *oldest* mark of the tables it covers, by the same argument.

The price of the long main reader: WAL checkpoints cannot pass it while the snapshot runs, so the
``-wal`` file grows by what the app writes meanwhile (minutes at the measured rates).

Never disturbing the app: read-only connection, ``busy_timeout``, retries on SQLITE_BUSY in
``triggers.source``, no write and no lock beyond a reader's.

Atomicity per table: TRUNCATE (when the table holds rows), COPY, the quarantine rows and the
``snapshot_tables`` row (rows, checksum, mark) commit together, after a count check against SQLite's
own count in the same read transaction. A crash or Ctrl-C leaves each table either fully loaded and
recorded or untouched. ``--resume`` skips recorded tables (refusing another source file: the source
id is recorded per table) and reloads the interrupted one from scratch; ``--replace`` starts over.
The plan (types per column) is saved in the target at the start, so a resumed run loads with the
same types and skips the profile scan.

Checksums: while copying, every converted row is hashed with :mod:`checkpoints.digest` (the one
canonical row encoding, defined there), after bringing each value to what psycopg returns when the
row is read back (float4 rounding for ``real``, ``char(n)`` without padding, JSON as the document
its text spells, never parsed into Python objects): see :func:`digest_finisher`. So the snapshot's
checksums, ``verify`` and the checkpoints agree. The genesis checkpoint (``checkpoints.model.genesis``,
per-table counts and digests, ``seq_to`` = the mark) is appended with ``checkpoints.store.append`` in
the final transaction that records the mark.

Speed: binary COPY with ``set_types`` (no text formatting on either side), rows streamed with
``fetchmany`` (memory bounded by ``fetch_rows``), one compiled row converter per table. Indexes and
constraints are built over the loaded rows, never maintained row by row: in create mode each table's
primary key, UNIQUE, indexes and CHECKs right after its own load, then its ANALYZE (with two
processes, one indexes while the other copies); foreign keys (NOT VALID, validated at cutover),
sequences past the keys and the remaining ANALYZE after every table (:mod:`replicator.load.postload`).
Measured in ``bench/snapshot.py``.

Where it lives: this module is the entry (:func:`snapshot`, :func:`snapshot_from`, :func:`render`) and
keeps every public name of the load importable; each step has its module under ``replicator/load/``:
``options`` (what the command asked, made once), ``context`` (what a run's table loads share), ``run``
(setup, order, genesis), ``loader`` (tables here or with the helper), ``table`` (one table's transaction),
``copyrows`` (rows to binary COPY), ``checksum``, ``guess`` (sampled types and the full profile that replaces
a disproved guess), ``source`` (reading SQLite), ``target`` (mode, plan, refusals, tables created),
``postload``, ``helper`` (the second process), ``twin`` (its twin read transaction), ``costs`` (balancing the two),
``share`` (a dominant table loaded by both).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from checkpoints import store
from replicator import log, pg
from replicator.config import Config
from replicator.errors import UsageError
from replicator.load import run, twin
from replicator.load.context import FETCH_ROWS, LoadContext, LoadRun
from replicator.load.copyrows import (
    Copied,
    KeyOf,
    RowPipe,
    copy_error,
    copy_rows,
    copy_statement,
    key_getter,
    read_layout,
)
from replicator.load.costs import load_costs, profile_costs, split, table_rows
from replicator.load.guess import GUESS_SAMPLE_ROWS, _types_of, guess_profile, plain_columns, verifier
from replicator.load.helper import Helper, helper_queues, read_source_parallel
from replicator.load.options import SnapshotOptions, asked
from replicator.load.postload import finish_target, index_table
from replicator.load.results import SnapshotResult, TableResult
from replicator.load.source import SourceRead, open_source, read_source
from replicator.load.table import empty_table, load_table, truncate_table
from replicator.load.target import build_plan, check_target, only_tables, prepare_target, resolve_mode
from replicator.plan.sequences import read_sqlite_sequence
from replicator.progress import Progress
from replicator.state.identity import SourceIdentity, capture_identity, source_identity
from replicator.state.store import StateStore
from replicator.values.readback import Finisher, digest_finisher, digest_kinds
from triggers import journal
from triggers.meta import read_meta

# The public names of the load, importable from here as before the split (the CLI, import, the daemon,
# cutover and the tests use them); each lives in the module of its concern.
__all__ = [
    "FETCH_ROWS",
    "GUESS_SAMPLE_ROWS",
    "Copied",
    "Finisher",
    "Helper",
    "KeyOf",
    "LoadContext",
    "LoadRun",
    "RowPipe",
    "SnapshotResult",
    "SourceRead",
    "TableResult",
    "_types_of",
    "build_plan",
    "check_target",
    "copy_error",
    "copy_rows",
    "copy_statement",
    "digest_finisher",
    "digest_kinds",
    "empty_table",
    "finish_target",
    "guess_profile",
    "helper_queues",
    "index_table",
    "key_getter",
    "load_costs",
    "load_table",
    "only_tables",
    "open_source",
    "plain_columns",
    "prepare_target",
    "profile_costs",
    "read_layout",
    "read_source",
    "read_source_parallel",
    "render",
    "resolve_mode",
    "snapshot",
    "snapshot_from",
    "split",
    "table_rows",
    "truncate_table",
    "verifier",
]

# --- the run --------------------------------------------------------------------------------------


def snapshot(
    source: Path,
    dsn: str,
    config: Config,
    options: SnapshotOptions | None = None,
    *,
    progress: Progress | None = None,
    **keywords: Any,
) -> SnapshotResult:
    """Create (or map) the schema and load every table with its indexes and constraints, then foreign
    keys, sequences and ANALYZE (the module docstring says in which order and why).

    ``options`` (the command's), or its fields as ``keywords`` (``mode="existing"``): :mod:`replicator.load.options`.
    ``replace`` with ``tables`` on a target that streams (it has a checkpoint chain) reloads only those
    tables and keeps the chain and every other table's position (:func:`replicator.load.resnapshot.replace_tables`).
    """
    options = asked(SnapshotOptions, options, keywords)
    config = msgspec.structs.replace(config, target=msgspec.structs.replace(config.target, dsn=dsn))
    if options.on_bad_value is not None:
        config = msgspec.structs.replace(
            config, snapshot=msgspec.structs.replace(config.snapshot, on_bad_value=options.on_bad_value)
        )
    if options.replace and options.tables and not options.resume and _has_chain(dsn, config):
        from replicator.load import resnapshot  # it loads tables with this module

        return resnapshot.replace_tables(source, dsn, config, options.tables, mode=options.mode)
    identity = source_identity(source)
    sconn = open_source(source, config)
    helper: Helper | None = None
    try:
        helper = Helper(config, progress) if worth_a_helper(source, config) else None
        return snapshot_from(
            sconn, identity, dsn, config, options, progress=progress, helper=helper, source_path=source
        )
    finally:
        sconn.close()
        if helper is not None:
            helper.close()


def worth_a_helper(source: Path, config: Config) -> bool:
    """Two workers asked, and a source big enough to repay the helper's start (``snapshot.helper_min_bytes``)."""
    if config.snapshot.workers < 2:
        return False
    wal = source.with_name(source.name + "-wal")
    size = source.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return size >= config.snapshot.helper_min_bytes


def _has_chain(dsn: str, config: Config) -> bool:
    """Does the target hold a checkpoint chain (a snapshot with capture, maybe streaming since)?"""
    schema_name = config.target.state_schema
    with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as conn:
        return (
            StateStore(conn, schema_name).has_table("checkpoints")
            and store.latest(conn, schema=schema_name) is not None
        )


def snapshot_from(
    sconn: sqlite3.Connection,
    identity: SourceIdentity,
    dsn: str,
    config: Config,
    options: SnapshotOptions | None = None,
    *,
    progress: Progress | None = None,
    helper: Helper | None = None,
    source_path: Path | None = None,
    **keywords: Any,
) -> SnapshotResult:
    """The load from a source connection whose read transaction is already open (see open_source).

    The caller owns that transaction (the daemon opens it and reads the journal head too). When
    capture is installed, the journal's high-water mark is read in the transaction the rows come from,
    before any row: streaming starts right after it, and the genesis checkpoint records it. That is the
    caller's transaction, or with a helper a new one the helper holds a twin of (:func:`_loading`); the
    caller's transaction is then ended (ROLLBACK: it only read), and the caller still closes its connection.
    """
    options = asked(SnapshotOptions, options, keywords)
    if options.replace and options.resume:
        raise UsageError("--replace and --resume exclude each other", hint="pass one of them")
    started = time.monotonic()
    config = msgspec.structs.replace(config, target=msgspec.structs.replace(config.target, dsn=dsn))
    meta = read_meta(sconn)
    if meta is not None:
        identity = capture_identity(identity.path, meta.source_id)
    with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as pconn:
        parallel = (helper, source_path) if helper is not None and source_path is not None else None
        setup = run.setup(sconn, pconn, identity, config, options, parallel)
        with _loading(sconn, setup, config, parallel) as (sconn, setup):
            return _load_run(
                sconn, pconn, setup, identity, config, options, progress, parallel, meta is not None, started
            )


def _load_run(
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    setup: run.Setup,
    identity: SourceIdentity,
    config: Config,
    options: SnapshotOptions,
    progress: Progress | None,
    parallel: tuple[Helper, Path] | None,
    captured: bool,
    started: float,
) -> SnapshotResult:
    """The run itself, its rows read in ``sconn``: the journal mark is read there before any row."""
    mark = journal.head(sconn) if captured else None
    state_schema = config.target.state_schema
    bound = log.get("snapshot")
    plan = setup.plan
    warnings = list(plan.warnings) + [f"{t.source}: {w}" for t in plan.tables for w in t.warnings]
    with pconn.transaction():
        run_id = StateStore(pconn, state_schema).start_run(command="snapshot", mode=plan.mode, source=identity)
    ctx = LoadContext(
        sconn,
        pconn,
        LoadRun(state_schema, identity, run_id, options.policy(config), options.fetch_rows, mark),
        progress,
    )
    try:
        plan, results, sequences = run.load_tables(ctx, setup, config, options, warnings, parallel)
        seq_to, genesis_hash = run.finish_run(ctx, plan, results)
    except BaseException as exc:
        run.mark_failed(ctx.state_store, run_id, exc)
        raise
    loaded = SnapshotResult.of_run(plan, run_id, results, warnings, started)
    result = msgspec.structs.replace(loaded, sequences=sequences, snapshot_seq=seq_to, genesis_hash=genesis_hash)
    for warning in result.warnings:
        bound.warning("schema", detail=warning)
    return result


@contextlib.contextmanager
def _loading(
    sconn: sqlite3.Connection, setup: run.Setup, config: Config, parallel: tuple[Helper, Path] | None
) -> Iterator[tuple[sqlite3.Connection, run.Setup]]:
    """The read transaction the rows come from: with a helper, a new one it holds a twin of
    (:mod:`replicator.load.twin`), the planning one ended; else (or when no pair can be made) ``sconn``."""
    if parallel is None:
        yield sconn, setup
        return
    helper, path = parallel
    conn, pairing = twin.pair(sconn, path, config, helper)
    helper.twin = pairing.twin
    if conn is sconn:  # no pair, or the planning transaction's twin (rollback-journal mode)
        yield sconn, setup
        return
    sconn.execute("ROLLBACK")  # the plan is made; its transaction would only hold back WAL checkpoints
    try:
        read = msgspec.structs.replace(setup.read, sqlite_sequence=read_sqlite_sequence(conn))
        yield conn, msgspec.structs.replace(setup, read=read)
    finally:
        conn.close()


# --- progress and the summary ---------------------------------------------------------------------


def render(result: SnapshotResult) -> None:
    """The run summary like pgloader's: rows, seconds, rows/s and checksum per table, totals."""
    from rich.console import Console
    from rich.markup import escape  # app names are text, never markup ("[/x]" crashed rich)
    from rich.table import Table

    out = Table(title=f"snapshot ({result.mode} mode, run {result.run_id})")
    out.add_column("table")
    out.add_column("rows", justify="right")
    out.add_column("quarantined", justify="right")
    out.add_column("seconds", justify="right")
    out.add_column("rows/s", justify="right")
    out.add_column("checksum")
    for t in result.tables:
        seconds = "resumed" if t.resumed else f"{t.seconds:.2f}"
        rate = "" if t.resumed else f"{t.rows_per_second:,.0f}"
        out.add_row(escape(t.table), f"{t.rows:,}", f"{t.quarantined:,}", seconds, rate, t.checksum[:16])
    total_rate = result.rows / result.seconds if result.seconds else 0.0
    out.add_row(
        "total",
        f"{result.rows:,}",
        f"{result.quarantined:,}",
        f"{result.seconds:.2f}",
        f"{total_rate:,.0f}",
        "",
        style="bold",
    )
    console = Console()
    console.print(out)
    if result.snapshot_seq is not None:
        console.print(
            f"journal mark {result.snapshot_seq}: `replicator run` streams from entry {result.snapshot_seq + 1}"
            + (f" (genesis checkpoint {result.genesis_hash[:16]})" if result.genesis_hash else "")
        )
    if result.quarantined:
        console.print(
            f"[yellow]{result.quarantined} row(s) quarantined (skipped): see replicator.quarantine; "
            "cutover refuses until they are acknowledged[/yellow]"
        )
    if result.warnings:
        console.print(f"{len(result.warnings)} schema warning(s) logged; `replicator schema --print` lists them")
