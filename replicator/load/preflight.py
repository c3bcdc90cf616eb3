"""``replicator analyze --mode existing``: every problem a snapshot into the app's own schema would
meet, found in one read-only pass.

A snapshot stops at the first problem, so a project with several (a Django app needed eight
attempts, one column each) learns them one run at a time. This maps the SQLite schema onto the
target's tables exactly as the snapshot does (:func:`replicator.plan.existingmode.map_existing`: every
schema problem, not the first), then converts every row of every mapped table with the snapshot's
own converter (:func:`replicator.values.convert.row_converter`) without writing anything, and reports each
column holding values the target cannot take exactly: how many rows, the first key, the reason and
the fix (the config setting that makes them load, when there is one, else quarantine or the data).

It reads the whole file once, in one read transaction, on a read-only connection: the cost of a
snapshot's read, without its writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from replicator import log, pg
from replicator.config import Config
from replicator.load import snapshot
from replicator.plan import existingmode, pgreflect, schemaplan
from replicator.plan.analyze_report import Finding
from replicator.values import convert, convert_text
from replicator.values.refusal import RowRefused, ValueRefused
from triggers.schema import quote_ident

FETCH_ROWS: Final = 5_000


class RefusedColumn(msgspec.Struct, frozen=True):
    """One column whose values the target refuses: how many rows, the first one, why, what to do."""

    table: str
    column: str
    rows: int
    first_key: dict[str, Any]
    reason: str
    fix: str


def check_existing(path: Path, dsn: str, config: Config) -> list[Finding]:
    """Every schema problem and every refused column of an existing-mode snapshot, as findings."""
    conn = snapshot.open_source(path, config)
    try:
        read = snapshot.read_source(conn)
        with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as pconn:
            reflected = pgreflect.reflect(pconn, config.target.schema)
        plan, problems = existingmode.map_existing(read.schema, reflected, read.profiles, config)
        conn.text_factory = convert_text.decode_text
        refused = [found for table in plan.tables for found in refused_columns(conn, table)]
    finally:
        conn.close()
    log.get("preflight", source=str(path)).info("checked", problems=len(problems), refused_columns=len(refused))
    findings = [Finding("error", "target_schema", problem) for problem in problems]
    findings += [
        Finding(
            "error",
            "refused_values",
            f"{r.rows} row(s) of {r.table}.{r.column} cannot be loaded: {r.reason} (first: {_key(r.first_key)})",
            hint=r.fix,
            table=r.table,
            column=r.column,
        )
        for r in refused
    ]
    return findings


def refused_columns(conn: sqlite3.Connection, table: schemaplan.TablePlan) -> list[RefusedColumn]:
    """Convert every row of ``table`` as the snapshot would; per column, the values it refuses.

    The row converter runs first (the snapshot's fast path); only a refused row is converted value
    by value, so that every bad column of it is counted, not only the first.
    """
    columns = table.load_columns
    names = [c.source for c in columns if c.source is not None]
    types = [c.type for c in columns]
    keys = list(table.key_source) or ["rowid"]
    convert_row = convert.row_converter(table.source, names, types, extra=True)
    singles = [convert.value_converter(t) for t in types]
    found: dict[str, RefusedColumn] = {}
    for row in _rows(conn, table.source, names + keys):
        try:
            convert_row(row)
            continue
        except RowRefused:
            pass
        key = dict(zip(keys, row[len(names) :], strict=True))
        for name, single, value in zip(names, singles, row, strict=False):
            try:
                single(value)
            except ValueRefused as exc:
                seen = found.get(name)
                if seen is not None:
                    found[name] = msgspec.structs.replace(seen, rows=seen.rows + 1)
                    continue
                refusal = RowRefused(table.source, name, value, exc.reason, exc.hint, exc.setting)
                fix = refusal.fixes or "fix the values in SQLite"
                found[name] = RefusedColumn(
                    table.source, name, 1, key, exc.reason, f"{fix}; or snapshot with --on-bad-value quarantine"
                )
    return list(found.values())


def _rows(conn: sqlite3.Connection, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    cursor = conn.execute(f"SELECT {', '.join(quote_ident(c) for c in columns)} FROM {quote_ident(table)}")  # noqa: S608 - quoted identifiers
    while batch := cursor.fetchmany(FETCH_ROWS):
        yield from batch


def _key(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in key.items())
