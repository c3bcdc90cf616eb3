"""Compare every row of a loaded PostgreSQL table with its SQLite source, under the documented mapping.

An oracle written independently of ``replicator.values`` (its converters and parsers): each side's value
is brought to one canonical Python value by plain standard-library rules (``Decimal(repr(float))`` for decimals,
``datetime.fromisoformat`` for text date-times read as UTC, epoch numbers by the column's format,
``json.loads`` for JSON...). Rows are compared as multisets of canonical tuples, so no ordering or
collation difference between the two databases can hide or invent a mismatch.

``drain`` + ``check_same`` is the tests' one drain-and-compare: apply the journal, then the rows, the
chain and the running digests must all agree.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from checkpoints import audit, store
from replicator import config, pg
from replicator.apply.digests import table_digest_of
from replicator.apply.tablestate import read_digests
from replicator.apply.targets import resolve_targets
from replicator.plan.schemaplan import SchemaPlan, TablePlan
from replicator.state.store import StateStore
from replicator.stream.worker import RunResult, Worker
from replicator.values.targettype import TargetType
from tests.support.daemon import cfg
from triggers.meta import read_meta
from triggers.schema import quote_ident

EPOCH = datetime(1970, 1, 1)
_TRUE = {1, "1", "t", "true", "y", "yes", "on"}
_FALSE = {0, "0", "f", "false", "n", "no", "off"}


class TableDiff(msgspec.Struct):
    table: str
    compared: int
    missing: list[tuple[Any, ...]]
    """Canonical SQLite rows absent from PostgreSQL."""
    extra: list[tuple[Any, ...]]
    """Canonical PostgreSQL rows absent from SQLite."""


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _instant_from_sqlite(value: Any, fmt: str | None) -> datetime:
    """SQLite date-time storage → naive UTC datetime (text without offset is UTC)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if fmt == "unix_ms" or (fmt != "unix_s" and abs(value) >= 10**11):
            return EPOCH + timedelta(milliseconds=value)
        return EPOCH + timedelta(seconds=value)
    text = str(value).strip().replace(" ", "T", 1)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return ("{}", tuple(sorted((k, _hashable(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("[]", tuple(_hashable(v) for v in value))
    if isinstance(value, Decimal):
        return value.normalize()
    return value


def json_canon(value: Any) -> Any:
    """JSON by value: key order, spacing and number spelling (1.5e1 vs 15) do not matter."""
    if isinstance(value, float):
        return Decimal(repr(value)).normalize()
    if isinstance(value, int):
        return Decimal(value).normalize()
    text = value.decode() if isinstance(value, bytes) else str(value)
    return _hashable(json.loads(text, parse_float=Decimal, parse_int=Decimal))


def sqlite_canon(t: TargetType) -> Callable[[Any], Any]:
    """How a SQLite value of a column mapped to ``t`` reads, canonically."""
    name = t.name

    def canon(v: Any) -> Any:
        if v is None:
            return None
        if name in ("smallint", "integer", "bigint"):
            return int(v) if not isinstance(v, str) else int(v.strip())
        if name in ("double precision", "real"):
            return float(v)
        if name == "numeric":
            if t.format == "real15" and not isinstance(v, str):  # Django: 15 digits, then decimal_places
                django = Context(prec=15).create_decimal_from_float(v)
                return django if t.scale is None else django.quantize(Decimal(1).scaleb(-t.scale))
            return Decimal(repr(v)) if isinstance(v, float) else Decimal(str(v).strip())
        if name == "interval":
            return timedelta(microseconds=v) if isinstance(v, int) else datetime.fromisoformat(v) - EPOCH
        if name == "inet":
            return ipaddress.ip_interface(v)
        if name == "cidr":
            return ipaddress.ip_network(v)
        if name in ("macaddr", "macaddr8"):
            digits = re.sub("[^0-9a-f]", "", v.lower())
            return digits[:6] + "fffe" + digits[6:] if name == "macaddr8" and len(digits) == 12 else digits
        if name == "timetz":
            clock = time.fromisoformat(v)
            return clock.replace(tzinfo=None), clock.utcoffset() or timedelta(0)
        if name in ("text", "varchar", "char", "enum", "citext"):
            text = _text(v)
            if t.strip_nul:
                text = text.replace("\x00", "")
            return text
        if name == "bytea":
            return bytes(v) if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape")
        if name == "boolean":
            key = v.lower() if isinstance(v, str) else v
            if key in _TRUE:
                return True
            if key in _FALSE:
                return False
            raise AssertionError(f"not a boolean: {v!r}")
        if name in ("timestamp", "timestamptz"):
            return _instant_from_sqlite(v, t.format)
        if name == "date":
            return _instant_from_sqlite(v, t.format).date()
        if name == "time":
            return time.fromisoformat(str(v))
        if name in ("json", "jsonb"):
            return json_canon(v)
        if name == "uuid":
            return uuid.UUID(bytes=v) if isinstance(v, bytes) else uuid.UUID(str(v))
        raise AssertionError(f"no canonical form for {name}")

    return canon


def pg_canon(t: TargetType) -> Callable[[Any], Any]:
    """How a value psycopg returns for a column of type ``t`` reads, canonically."""
    name = t.name

    def canon(v: Any) -> Any:
        if v is None:
            return None
        if name == "timestamptz":
            assert isinstance(v, datetime)
            assert v.tzinfo is not None
            return v.astimezone(UTC).replace(tzinfo=None)
        if name == "timestamp":
            assert isinstance(v, datetime)
            assert v.tzinfo is None
            return v
        if name == "date":
            assert isinstance(v, date)
            return v
        if name in ("json", "jsonb"):
            return json_canon(v)  # selected as ::text, so JSON null stays distinct from SQL NULL
        if name == "bytea":
            return bytes(v)
        if name == "numeric":
            return Decimal(v)
        if name in ("double precision", "real"):
            return float(v)
        if name == "uuid":
            return v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))
        if name == "char":
            return v.rstrip(" ")  # char(n) pads; the SQLite text had no padding to compare
        if name == "inet":
            return ipaddress.ip_interface(str(v))
        if name in ("macaddr", "macaddr8"):
            return str(v).replace(":", "")
        if name == "timetz":
            return v.replace(tzinfo=None), v.utcoffset()
        return v

    return canon


def _sqlite_rows(
    conn: sqlite3.Connection, table: TablePlan, exclude: set[tuple[Any, ...]]
) -> Iterable[tuple[Any, ...]]:
    cols = [c.source for c in table.compared_columns if c.source is not None]
    keys = list(table.key_source) or ["rowid"]
    query = f"SELECT {', '.join(quote_ident(c) for c in cols + keys)} FROM {quote_ident(table.source)}"
    previous = conn.text_factory
    conn.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
    try:
        for row in conn.execute(query):
            if tuple(row[len(cols) :]) in exclude:
                continue
            yield tuple(row[: len(cols)])
    finally:
        conn.text_factory = previous


def compare_table(
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    plan: SchemaPlan,
    table: TablePlan,
    *,
    exclude_keys: Iterable[tuple[Any, ...]] = (),
) -> TableDiff:
    """Every row of one table, both sides canonical; ``exclude_keys`` are quarantined source keys."""
    columns = table.compared_columns
    s_canon = [sqlite_canon(c.type) for c in columns]
    p_canon = [pg_canon(c.type) for c in columns]
    expected: Counter[tuple[Any, ...]] = Counter()
    for row in _sqlite_rows(sconn, table, set(exclude_keys)):
        expected[tuple(f(v) for f, v in zip(s_canon, row, strict=True))] += 1
    actual: Counter[tuple[Any, ...]] = Counter()
    selected = [
        sql.SQL("{}::text").format(sql.Identifier(c.name))
        if c.type.name in ("json", "jsonb")
        else sql.Identifier(c.name)
        for c in columns
    ]
    query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(selected), sql.Identifier(plan.schema, table.name))
    with pconn.cursor() as cur:
        for row in cur.execute(query):
            actual[tuple(f(v) for f, v in zip(p_canon, row, strict=True))] += 1
    missing = list((expected - actual).elements())
    extra = list((actual - expected).elements())
    return TableDiff(table.source, sum(expected.values()), missing[:5], extra[:5])


def assert_same(
    sqlite_path: Any,
    pconn: psycopg.Connection[Any],
    plan: SchemaPlan,
    *,
    exclude: dict[str, set[tuple[Any, ...]]] | None = None,
) -> dict[str, int]:
    """Assert every loaded table equals its source row for row; returns rows compared per table."""
    sconn = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    try:
        counts = {}
        problems = []
        for table in plan.tables:
            diff = compare_table(sconn, pconn, plan, table, exclude_keys=(exclude or {}).get(table.source, set()))
            counts[table.source] = diff.compared
            if diff.missing or diff.extra:
                problems.append(f"{table.source}: missing {diff.missing} extra {diff.extra}")
        assert not problems, "\n".join(problems)
        return counts
    finally:
        sconn.close()


# --- drain the journal, then compare ----------------------------------------------------------------


def drain(path: Path, dsn: str, conf: config.Config | None = None) -> RunResult:
    """Apply everything journaled so far (the snapshot first if there is none), in this process."""
    return Worker(path, dsn, conf or cfg()).run(until_drained=True)


def check_same(path: Path, dsn: str) -> dict[str, int]:
    """Row-by-row comparison, a verified chain, and running digests equal to the tables' digests
    (read on a connection set up as the replicator's own: enum labels and citext as text)."""
    with pg.connect(dsn, autocommit=True) as conn:
        plan = StateStore(conn, "replicator").load_plan()
        assert plan is not None
        counts = assert_same(path, conn, plan)
        assert audit.verify(store.records(conn)) == []
        meta = read_meta(sqlite3.connect(path))
        assert meta is not None
        targets, _ = resolve_targets(plan, meta)
        running = read_digests(StateStore(conn, "replicator"), list(targets))
        for name, t in targets.items():
            actual = table_digest_of(conn, t)
            assert running[name] == (actual.count, actual.hexdigest()), name
    return counts
