"""``replicator verify``: both sides read, digested with the canonical encoding, compared per table.

What "the same" means (:func:`verify`, so also cutover's preflight and ``certificate --live``): the
**independent reading** of :mod:`replicator.inspect.proof`. Each SQLite value as ``sqlite3`` returns it and
each PostgreSQL value as psycopg returns it are brought to one canonical form under the column's
meaning (its PostgreSQL type and the storage format the plan recorded), without the converters the
snapshot and the apply use, so a conversion mistake in the load path shows as a difference instead of
being repeated on both sides. Canonical rows are hashed with :mod:`checkpoints.digest`'s encoding. A
table matches when the row counts and the order-independent digests are equal. A source row whose key
the load quarantined is counted apart (``refused``), never compared. Generated
columns are compared like the others, both kinds: a plain one holds what the load wrote, one that
PostgreSQL computes is read there and set against the value SQLite computes.

Consistency: PostgreSQL is read in one REPEATABLE READ READ ONLY transaction, SQLite in one read
transaction opened *after* it, so with the apply running, PostgreSQL is never ahead of the SQLite
view. When capture is installed and the last forward checkpoint (the cutover's, once the rollback window's
records follow it) says the apply stopped at seq A while the
SQLite view is at journal head H > A, the keys journaled in (A, H] are "in flight" if something will
apply them: a daemon alive and advancing (:func:`replicator.inspect.status.not_applying`: it holds the source's
lock, in CATCHUP or STREAMING, not stalled), checked after the comparison, or the caller itself
(cutover's preflight, which drains them). A table whose differing keys are all in flight then reports
``in-flight``, not a mismatch. After DONE, a rollback, an error, or with no daemon running, nothing
applies them: they are a mismatch, named by key, and the report says why (``not_applying``). After a
drain (cutover) A == H and every difference is real.

Here: the run (:func:`verify`), the positions each side is read at and the keys journaled since, those keys
compared on their own (:func:`compare_keys`: cutover's changed keys), and the report shown (:func:`render`,
:func:`to_json`). One module per other part: how a table is read (:mod:`replicator.inspect.verify_shape`:
the independent reading, and the load-path reading cutover's digests need), each side's reader
(:mod:`replicator.inspect.verify_sqlite`, :mod:`replicator.inspect.verify_pg`) and what both digest
(:mod:`replicator.inspect.verify_digest`), the two sides run next to each other
(:mod:`replicator.inspect.verify_sides`), one table compared, its differing keys found by bisection, and
what a run reports (:mod:`replicator.inspect.verify_compare`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
import psycopg

from checkpoints.digest import RowEncoder
from replicator import log, pg
from replicator.config import ColumnOverride, Config
from replicator.errors import UsageError
from replicator.inspect import status
from replicator.inspect.verify_compare import MAX_KEYS, Diff, TableVerify, VerifyReport, verify_table
from replicator.inspect.verify_digest import leaf_rows
from replicator.inspect.verify_pg import pg_by_key
from replicator.inspect.verify_shape import Key, Shape, independent_shape, source_rows, target_rows
from replicator.inspect.verify_sides import Parallel, choose, open_sides
from replicator.inspect.verify_sqlite import sqlite_by_key, with_text_fallback
from replicator.plan import existingmode, pgreflect, schemaplan
from replicator.plan.profile import TableProfile
from replicator.plan.profiler import profile_table
from replicator.progress import Progress
from replicator.state.store import StateStore
from replicator.values import refusal
from triggers import journal
from triggers import source as sqlite_source
from triggers.meta import read_meta
from triggers.schema import Schema, quote_ident, read_schema

_TEMPORAL: Final = frozenset({"timestamp", "timestamptz", "date"})


def plan_for(
    sconn: sqlite3.Connection, pconn: psycopg.Connection[Any], config: Config, schema: Schema
) -> schemaplan.SchemaPlan:
    """Map SQLite tables to the target's as they are now (existing-mode mapping: by name, PG types).

    Profiles are needed only to tell epoch seconds from milliseconds in integer-stored date-time
    columns; only those columns are profiled, so verify does not pay a profile scan per table.
    An ORM bookkeeping table (which existing mode leaves alone) is compared when the snapshot
    recorded loading it (create mode loads it).
    """
    loaded = StateStore(pconn, config.target.state_schema).loaded_tables()
    bookkeeping = {
        name: {**config.types.get(name, {}), "*": ColumnOverride()}
        for name in loaded
        if name.lower() in existingmode.MIGRATION_TABLES and "*" not in config.types.get(name, {})
    }
    if bookkeeping:
        config = msgspec.structs.replace(config, types={**config.types, **bookkeeping})
    reflected = pgreflect.reflect(pconn, config.target.schema)
    folded = {name.lower(): t for name, t in reflected.items()}
    profiles: dict[str, TableProfile] = {}
    for table in schema.tables:
        target = reflected.get(table.name) or folded.get(table.name.lower())
        if target is None:
            continue
        types = {c.name.lower(): c.target.name for c in target.columns if c.target is not None}
        temporal = tuple(
            c
            for c in table.columns
            if types.get(c.name.lower()) in _TEMPORAL and _holds_numbers(sconn, table.name, c.name)
        )
        if temporal:
            profiles[table.name] = profile_table(sconn, msgspec.structs.replace(table, columns=temporal))
    return existingmode.plan_existing(schema, reflected, profiles, config)


def _holds_numbers(conn: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether a date-time column stores any number (epoch): only then does its unit matter."""
    query = (
        f"SELECT EXISTS (SELECT 1 FROM {quote_ident(table)} "  # noqa: S608 - quote_ident
        f"WHERE typeof({quote_ident(column)}) IN ('integer', 'real'))"
    )
    return bool(conn.execute(query).fetchone()[0])


def _applied_through(state_store: StateStore) -> int | None:
    """The SQLite journal seq PostgreSQL holds everything through: the last forward checkpoint's seq_to
    (after the cutover, the cutover's: the rollback window's records count PostgreSQL transaction ids), read
    in the caller's transaction; None without checkpoints."""
    from checkpoints import store

    if not state_store.has_table("checkpoints"):
        return None
    with state_store.conn.transaction():  # a savepoint: a damaged head must not abort the read transaction
        head = store.last_forward(state_store.conn, schema=state_store.schema_name)
    return head.seq_to if head is not None else None


def _pending_keys(sconn: sqlite3.Connection, after: int, head: int) -> dict[str, list[tuple[Any, ...]]]:
    """Raw SQLite keys journaled in (after, head], per table (old keys of key changes included)."""
    pending: dict[str, list[tuple[Any, ...]]] = {}
    position = after
    while position < head:
        entries = journal.read(sconn, position)
        if not entries:
            break
        for entry in entries:
            if entry.seq > head:
                return pending
            pending.setdefault(entry.table, []).append(entry.key)
            if entry.old_key is not None:
                pending[entry.table].append(entry.old_key)
        position = entries[-1].seq
    return pending


def _sqlite_position(conn: sqlite3.Connection, applied: int | None) -> tuple[int | None, dict[str, list[Key]]]:
    """The journal head in this read transaction, and the keys journaled after ``applied``."""
    head = journal.head(conn) if journal.exists(conn) else None
    if head is None or applied is None or head <= applied:
        return head, {}
    return head, _pending_keys(conn, applied, head)


def key_marker(key: Key) -> tuple[tuple[str, Any], ...]:
    """A raw SQLite key as a set member that keeps 1 and 1.0 (and 1 and '1') apart, as SQLite does."""
    return tuple((type(v).__name__, v) for v in key)


def compare_keys(
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    shape: Shape,
    keys: Sequence[Key],
    max_keys: int = MAX_KEYS,
) -> list[Key]:
    """The rows of ``keys`` (raw SQLite key values, as journaled: columns ``shape.key_source``) compared on
    both sides by ``shape``'s reading; returns the keys missing, extra or different (at most ``max_keys``).

    Cutover's stop point runs it by the independent reading over the keys the app changed after the
    preflight compared whole tables: the cutover's own drains applied them, and the load path's digests
    would agree with any conversion mistake there. Reads in the callers' transactions; PostgreSQL is
    looked up by the load's key converters, which only locates rows (a wrong one finds none or another
    key: missing or extra)."""
    seen: dict[tuple[tuple[str, Any], ...], Key] = {}
    for key in keys:
        seen.setdefault(key_marker(key), key)
    unique = list(seen.values())
    encoder = RowEncoder(shape.kinds)
    to_rows = source_rows(shape)
    ours: dict[bytes, tuple[Key, bytes]] = with_text_fallback(
        sconn, lambda: leaf_rows(to_rows(sqlite_by_key(sconn, shape, unique)), shape, encoder)
    )
    theirs = leaf_rows(target_rows(shape, pg_by_key(pconn, shape, unique)), shape, encoder)
    diff = Diff(max_keys)
    for ident, (key, row_hash) in sorted(ours.items(), key=lambda item: item[0]):
        other = theirs.get(ident)
        if other is None or other[1] != row_hash:
            diff.add("missing" if other is None else "different", key)
    for ident, (key, _) in sorted(theirs.items(), key=lambda item: item[0]):
        if ident not in ours:
            diff.add("extra", key)
    return [*diff.missing, *diff.extra, *diff.different]


def _compare(
    source: Path | str,
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    mode: Parallel,
    config: Config,
    plan: schemaplan.SchemaPlan,
    names: Sequence[str],
    applied: int | None,
    keys: bool,
    max_keys: int,
    progress: Progress | None,
) -> tuple[int | None, list[TableVerify]]:
    results = []
    with open_sides(source, sconn, pconn, mode, config.source.busy_timeout_ms) as sides:
        # Every row is read in the read transaction this call runs in (the child's, in process mode).
        head, pending = sides.sqlite(_sqlite_position, applied).result()
        for name in names:
            shape = independent_shape(StateStore(pconn, config.target.state_schema), plan, name)
            found = verify_table(
                sides, shape, keys=keys, max_keys=max_keys, pending=pending.get(name), progress=progress
            )
            results.append(found)
    return head, results


def verify(
    source: Path | str,
    dsn: str,
    config: Config,
    tables: Sequence[str] | None = None,
    keys: bool = False,
    max_keys: int = MAX_KEYS,
    *,
    plan: schemaplan.SchemaPlan | None = None,
    parallel: Parallel | Literal["auto"] = "auto",
    applied_by_caller: bool = False,
    progress: Progress | None = None,
) -> VerifyReport:
    """Compare every (or each named) table of ``source`` with the target; see the module docstring.

    ``plan`` (cutover passes the one it holds) defaults to mapping SQLite onto the target by name.
    ``parallel``: how the two sides overlap (see :class:`~replicator.inspect.verify_sides.Sides`); measured in
    bench/verify.py.
    ``applied_by_caller``: the caller holds the apply locks and drains the journal itself (cutover's
    preflight), so keys journaled after the compared position are in flight without a daemon.
    ``progress``: one task per table, its rows read.
    """
    started = time.monotonic()
    with pg.connect(dsn, connect_timeout=config.target.connect_timeout_s) as pconn:
        pconn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        applied = _applied_through(StateStore(pconn, config.target.state_schema))  # the PG snapshot is taken here
        sconn = sqlite_source.connect(source, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms)
        try:
            sconn.execute("BEGIN")
            sconn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # the SQLite snapshot starts here
            schema = read_schema(sconn)
            chosen = plan or plan_for(sconn, pconn, config, schema)
            names = _selected(chosen, tables)
            mode = choose(parallel, source)
            try:
                head, results = _compare(
                    source, sconn, pconn, mode, config, chosen, names, applied, keys, max_keys, progress
                )
            except BrokenProcessPool as exc:  # the child could not start (no importable __main__...)
                log.get("verify").warning("verify child process failed; comparing in this process", error=str(exc))
                head, results = _compare(
                    source, sconn, pconn, "off", config, chosen, names, applied, keys, max_keys, progress
                )
            meta = read_meta(sconn) if head is not None else None
        finally:
            sconn.close()
        pconn.rollback()
        idle = None
        if meta is not None and head is not None and not applied_by_caller and any(t.in_flight for t in results):
            idle = _not_applying(pconn, config, meta.source_id, head)
        if idle is not None:
            results = [msgspec.structs.replace(t, status="mismatch") if t.status == "in-flight" else t for t in results]
    report = VerifyReport(
        source=str(source),
        target=pg.describe(dsn),
        tables=tuple(results),
        seconds=round(time.monotonic() - started, 3),
        journal_head=head,
        applied_through=applied,
        not_applying=idle,
    )
    log.get("verify").info(
        "verify finished", tables=len(results), mismatched=list(report.mismatched), seconds=report.seconds
    )
    return report


def _not_applying(
    pconn: psycopg.Connection[Any], config: Config, source_id: str, head: int
) -> status.NotApplying | None:
    """Whether a daemon applies the journal *now*, after the comparison (a fresh read: the lock is live, and
    a daemon that stopped while we compared no longer makes anything converge)."""
    state_store = StateStore(pconn, config.target.state_schema)
    try:
        return status.not_applying(state_store, source_id, head, config.status.stall_after_s)
    finally:
        pconn.rollback()


def _selected(plan: schemaplan.SchemaPlan, tables: Sequence[str] | None) -> list[str]:
    known = [t.source for t in plan.tables]
    if not tables:
        return [n for n in plan.order if n in known] or known
    unknown = [t for t in tables if t not in known]
    if unknown:
        raise UsageError(
            f"no such table to verify: {', '.join(unknown)}",
            hint=f"name SQLite tables; known: {', '.join(sorted(known)[:20])}",
        )
    return list(dict.fromkeys(tables))


# --------------------------------------------------------------------------------------------
# output


def to_json(report: VerifyReport) -> str:
    data = msgspec.to_builtins(report, enc_hook=_enc_hook)
    data["match"] = report.match
    for table, result in zip(data["tables"], report.tables, strict=True):
        table["match"] = result.match
    return json.dumps(data, ensure_ascii=False, indent=2)


def _enc_hook(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _key_text(key: Key) -> str:
    return ", ".join(refusal.excerpt(v) for v in key)


def render(report: VerifyReport, *, keys: bool = False) -> None:
    """Per table: rows and digest prefix on each side and the verdict; then the differing keys."""
    from rich.console import Console
    from rich.markup import escape  # app names are text, never markup ("[/x]" crashed rich)
    from rich.table import Table

    out = Table(title=f"verify {report.source} against {report.target}")
    for column, justify in (("table", "left"), ("SQLite rows", "right"), ("PostgreSQL rows", "right")):
        out.add_column(column, justify=justify)  # type: ignore[arg-type]
    out.add_column("SQLite digest")
    out.add_column("PostgreSQL digest")
    out.add_column("result")
    styles = {"match": "green", "mismatch": "bold red", "in-flight": "yellow"}
    for t in report.tables:
        note = f" ({t.refused} refused)" if t.refused else ""
        out.add_row(
            escape(t.table),
            f"{t.source_rows:,}",
            f"{t.target_rows:,}",
            t.source_digest[:16],
            t.target_digest[:16],
            f"[{styles[t.status]}]{t.status}[/]{note}",
        )
    console = Console()
    console.print(out)
    for t in report.tables:
        if not (t.missing or t.extra or t.different):
            continue
        cols = ", ".join(t.key_columns) if t.key_columns else "whole row"
        console.print(f"[bold]{escape(t.table)}[/] differing keys ({escape(cols)}):")
        for label, found in (
            ("missing in PostgreSQL", t.missing),
            ("extra in PostgreSQL", t.extra),
            ("different", t.different),
        ):
            for key in found:
                console.print(f"  {label}: {escape(_key_text(key))}")
        if t.keys_truncated:
            console.print("  … more (raise --max-keys)")
    if report.journal_head is not None and report.applied_through is not None:
        console.print(f"journal head {report.journal_head}, applied through {report.applied_through}")
    if report.not_applying is not None:
        console.print(f"keys journaled since are not in flight: {escape(report.not_applying.reason)}", highlight=False)
    verdict = "[green]match[/]" if report.match else f"[bold red]MISMATCH[/] in {escape(', '.join(report.mismatched))}"
    console.print(f"{report.rows:,} rows in {len(report.tables)} table(s), {report.seconds:.2f}s: {verdict}")
    if not report.match and not keys and not keys_listed(report):
        console.print("rerun with --keys to list the differing keys")


def keys_listed(report: VerifyReport) -> bool:
    """Whether every mismatched table's differing keys are in the report (``--keys``, or journaled keys)."""
    return all(t.missing or t.extra or t.different for t in report.tables if t.status == "mismatch")
