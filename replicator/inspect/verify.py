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

The **load-path reading** (``shape_of(..., independent=False)``: each SQLite row converted by the
table's ``row_converter``, exactly what the snapshot and the apply write) remains for the digests that
must equal the ones the load keeps: cutover's pre-pass and stop point against the apply's running
digests, and the certificate's per-side records. There, with the snapshot's own normalisation
(:mod:`replicator.values.readback`), ``real`` (float4) values are rounded to float4 on the SQLite side,
``char(n)`` is compared without its padding, enums as text, and JSON columns as the documents they hold
(kind ``json``: the converted text, ``JsonText``, against psycopg's parsed value).

Consistency: PostgreSQL is read in one REPEATABLE READ READ ONLY transaction, SQLite in one read
transaction opened *after* it, so with the apply running, PostgreSQL is never ahead of the SQLite
view. When capture is installed and the latest checkpoint says the apply stopped at seq A while the
SQLite view is at journal head H > A, the keys journaled in (A, H] are "in flight" if something will
apply them: a daemon alive and advancing (:func:`replicator.inspect.status.not_applying`: it holds the source's
lock, in CATCHUP or STREAMING, not stalled), checked after the comparison, or the caller itself
(cutover's preflight, which drains them). A table whose differing keys are all in flight then reports
``in-flight``, not a mismatch. After DONE, a rollback, an error, or with no daemon running, nothing
applies them: they are a mismatch, named by key, and the report says why (``not_applying``). After a
drain (cutover) A == H and every difference is real.

Both sides run concurrently (two threads: sqlite3 and libpq release the GIL while they fetch; the
Python encoding of one side overlaps the other's I/O). Measured in ``bench/verify.py``.

Differing keys (``keys=True``), by bisection over key ranges (as data-diff/reladiff do): the first
pass already splits the table into up to ``FANOUT`` key ranges (boundaries taken from SQLite in key
order) and keeps a digest per range on each side, so it costs one scan. Ranges whose digests
differ are re-read with a range predicate (an index range scan), split again, until a range holds
at most ``LEAF_ROWS`` rows; those rows are compared by key. A 1M-row table with 3 bad rows costs
one full scan plus ~3 × ``LEAF_ROWS`` rows. Ranges need the same order on both sides, which holds
for integer and text keys (SQLite ``COLLATE BINARY``, PostgreSQL ``COLLATE "C"``, Python code
point order: all UTF-8 byte order). Other keys (uuid, datetime, char...) and keyless tables are
compared as one leaf: every row's key and hash held in memory, so bounded by the table's size.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import multiprocessing
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, TypeVar

import msgspec
import psycopg
from psycopg import sql

from checkpoints.digest import Kind, RowEncoder, TableDigest
from replicator import log, pg
from replicator.config import ColumnOverride, Config
from replicator.errors import UsageError
from replicator.inspect import proof, status
from replicator.plan import existingmode, pgreflect, profiler, schemaplan
from replicator.plan.profile import TableProfile
from replicator.plan.shape import TableShape, table_shape
from replicator.progress import Progress
from replicator.state import schema as state
from replicator.values import convert, convert_text, fastpath, quarantine, readback, refusal
from triggers import journal
from triggers import source as sqlite_source
from triggers.meta import read_meta
from triggers.schema import Schema, quote_ident, read_schema

FETCH_ROWS: Final = 5_000
FANOUT: Final = 1_024
"""Key ranges per bisection level (the first level is computed during the full scan)."""
SUBFANOUT: Final = 32
LEAF_ROWS: Final = 2_000
"""A differing range with at most this many rows (on the larger side) is compared row by row."""
MAX_KEYS: Final = 100
PROCESS_MIN_BYTES: Final = 32 << 20
_ORDERED_TYPES: Final = frozenset({"smallint", "integer", "bigint", "text", "varchar"})
_TEXT_TYPES: Final = frozenset({"text", "varchar"})
_TEMPORAL: Final = frozenset({"timestamp", "timestamptz", "date"})
_MODULUS: Final = 1 << 256
BUCKET_ROWS: Final = 256
"""Unordered keys: rows per hash bucket on average (so a differing bucket is a small leaf)."""
MAX_BUCKETS: Final = 1 << 16
_KEY_ENCODER: Final = RowEncoder()

T = TypeVar("T")
U = TypeVar("U")
OnRows: TypeAlias = Callable[[int], None]
"""Told the size of each batch a side fetched (progress)."""
Status: TypeAlias = Literal["match", "mismatch", "in-flight"]
Key: TypeAlias = tuple[Any, ...]
Bound: TypeAlias = Key | None


class TableVerify(msgspec.Struct, frozen=True):
    """One table compared: counts and canonical digests on both sides, and what differs."""

    table: str
    target: str
    source_rows: int
    target_rows: int
    source_digest: str
    target_digest: str
    status: Status
    refused: int = 0
    """Source rows the converter refuses (quarantined at snapshot): not in PostgreSQL, not compared."""
    key_columns: tuple[str, ...] = ()
    """SQLite key columns the keys below are given in; empty for a keyless table (whole rows then)."""
    missing: tuple[Key, ...] = ()
    """Keys in SQLite that PostgreSQL lacks."""
    extra: tuple[Key, ...] = ()
    """Keys in PostgreSQL that SQLite lacks."""
    different: tuple[Key, ...] = ()
    """Keys on both sides whose rows differ."""
    keys_truncated: bool = False
    """More differing keys exist than ``max_keys``."""
    in_flight: int = 0
    """Differing keys journaled after the applied position (they converge only if something applies them:
    see ``VerifyReport.not_applying``)."""
    seconds: float = 0.0

    @property
    def match(self) -> bool:
        return self.status == "match"


class VerifyReport(msgspec.Struct, frozen=True):
    source: str
    target: str
    tables: tuple[TableVerify, ...]
    seconds: float
    journal_head: int | None = None
    """The capture journal's head in the SQLite view compared (None: capture not installed)."""
    applied_through: int | None = None
    """The latest checkpoint's ``seq_to`` in the PostgreSQL view compared (None: no checkpoints)."""
    not_applying: status.NotApplying | None = None
    """Why keys journaled after ``applied_through`` are not in flight (nothing applies them); None when
    a daemon is applying the journal or no differing key was journaled since."""

    @property
    def match(self) -> bool:
        """No table differs (``in-flight`` tables do not count: they converge as the apply runs)."""
        return all(t.status != "mismatch" for t in self.tables)

    @property
    def rows(self) -> int:
        return sum(t.source_rows for t in self.tables)

    @property
    def mismatched(self) -> tuple[str, ...]:
        return tuple(t.table for t in self.tables if t.status == "mismatch")


# --------------------------------------------------------------------------------------------
# table shape: columns, keys, value normalisation


class Shape(TableShape, frozen=True):
    """How verify reads one table on both sides: the shared table model (:class:`TableShape`: names,
    columns, types, key) and verify's own reading options; built once from its TablePlan."""

    ordered: bool
    """Key ranges mean the same rows on both sides (integer/text key columns)."""
    independent: bool = False
    """Read for the independent comparison (:mod:`replicator.inspect.proof`), not through the load's converters."""
    quarantined: frozenset[str] = frozenset()
    """The keys the load quarantined (:func:`_quarantine_ident`): left out, counted as refused. The
    load-path reading leaves out the rows its converter refuses anyway; the set adds the rows
    quarantined because their parent is (:mod:`replicator.apply.dependents`)."""

    @property
    def kinds(self) -> list[Kind]:
        if self.independent:  # canonical rows hold only plain values
            return ["native"] * len(self.types)
        return readback.digest_kinds(self.types)


def shape_of(
    table: schemaplan.TablePlan, schema_name: str, *, computed: bool = False, independent: bool = False
) -> Shape:
    """The read shape of a planned table: ``shape_of(plan.table(name), plan.schema)``.

    ``computed``: also the columns PostgreSQL generates, read on both sides (SQLite computes its own
    value): verify compares them. Without it, the loaded columns the running digests cover (cutover's
    stop point and the certificate compare with those). ``independent``: for the comparison the load
    path cannot bias (verify, cutover's preflight, ``certificate --live``). Keyed by the plan's key; a
    key column not read leaves the table keyless (whole rows compared)."""
    table_model = table_shape(table, schema_name, computed=computed)
    key_types = [t.name for t in table_model.key_types]
    return Shape(
        **msgspec.structs.asdict(table_model),
        ordered=bool(key_types) and all(t in _ORDERED_TYPES for t in key_types),
        independent=independent,
    )


def source_rows(shape: Shape) -> Callable[[Iterable[Sequence[Any]]], Iterator[tuple[Any, ...] | None]]:
    """SQLite rows → canonical Python rows (converted as loaded, or read independently); refused rows become None."""
    if shape.independent:
        return _independent_source_rows(shape)
    convert_row = convert.row_converter(shape.source, shape.source_columns, shape.types)
    finish = readback.digest_finisher(shape.types)  # the snapshot's and the apply's normalisation
    skip, positions = shape.quarantined, shape.key_positions

    def rows(raw: Iterable[Sequence[Any]]) -> Iterator[tuple[Any, ...] | None]:
        for row in raw:
            if skip and _quarantine_ident([row[p] for p in positions]) in skip:
                yield None  # a row the converter takes whose parent is quarantined (replicator.apply.dependents)
                continue
            try:
                values = convert_row(row)
            except refusal.RowRefused:
                yield None
                continue
            yield finish(values) if finish is not None else values

    return rows


# --------------------------------------------------------------------------------------------
# the independent reading (replicator.inspect.proof): no converter of the load path is called


def _independent_source_rows(shape: Shape) -> Callable[[Iterable[Sequence[Any]]], Iterator[tuple[Any, ...] | None]]:
    """SQLite rows → canonical rows (:func:`replicator.inspect.proof.source_row`); quarantined keys become None."""
    read = proof.source_row(shape.types)
    skip, positions = shape.quarantined, shape.key_positions

    def rows(raw: Iterable[Sequence[Any]]) -> Iterator[tuple[Any, ...] | None]:
        for row in raw:
            if skip and _quarantine_ident([row[p] for p in positions]) in skip:
                yield None
                continue
            yield read(row)

    return rows


def _target_rows(shape: Shape, rows: Iterable[tuple[Any, ...]]) -> Iterable[tuple[Any, ...]]:
    """PostgreSQL rows as the shape compares them: canonical (independent), or as psycopg returns them."""
    if not shape.independent:
        return rows
    return map(proof.target_row(shape.types), rows)


def _quarantine_ident(key: Sequence[Any]) -> str:
    """A raw SQLite key as the quarantine records it (``quarantine.make``'s JSON-safe values), as one string."""
    return json.dumps(list(quarantine.make("", {str(i): v for i, v in enumerate(key)}, "", None, "").key.values()))


def _quarantined(pconn: psycopg.Connection[Any], state_schema: str, table: schemaplan.TablePlan) -> frozenset[str]:
    """The keys of ``table`` the load quarantined (read in the caller's transaction).

    Only keyed tables: a keyless table's quarantine names rowids, which verify does not read, so its
    quarantined rows count as missing in PostgreSQL (they are)."""
    if not table.key_source:
        return frozenset()
    return quarantined_keys(pconn, state_schema, [table]).get(table.source, frozenset())


def quarantined_keys(
    pconn: psycopg.Connection[Any], state_schema: str, tables: Sequence[schemaplan.TablePlan]
) -> dict[str, frozenset[str]]:
    """Per keyed table, the keys the quarantine holds (as :func:`_quarantine_ident` spells them)."""
    ident = sql.Identifier(state_schema, "quarantine")
    found = pconn.execute("SELECT to_regclass(%s)", (ident.as_string(pconn),)).fetchone()
    if not found or found[0] is None:
        return {}
    keyed = {t.source: t.key_source for t in tables if t.key_source}
    out: dict[str, set[str]] = {}
    query = sql.SQL("SELECT table_name, key FROM {} WHERE table_name = ANY(%s)").format(ident)
    for name, k in pconn.execute(query, (list(keyed),)).fetchall():
        columns = keyed[str(name)]
        if all(c in k for c in columns):
            out.setdefault(str(name), set()).add(json.dumps([k[c] for c in columns]))
    return {name: frozenset(keys) for name, keys in out.items()}


def independent_shape(
    pconn: psycopg.Connection[Any], state_schema: str, plan: schemaplan.SchemaPlan, name: str
) -> Shape:
    """The shape verify compares ``name`` with: the independent reading, without the quarantined keys."""
    table = plan.table(name)
    shape = shape_of(table, plan.schema, computed=True, independent=True)
    return msgspec.structs.replace(shape, quarantined=_quarantined(pconn, state_schema, table))


# --------------------------------------------------------------------------------------------
# one side's digest over a key range, split into sub-ranges


class SideDigest(msgspec.Struct):
    """One side's count and digest over a range, and per sub-range (``bounds``) when asked."""

    count: int
    sum: int
    refused: int = 0
    counts: list[int] = msgspec.field(default_factory=list)
    """Per sub-range: index i covers [bounds[i-1], bounds[i]), the last entry holds NULL keys; or per
    hash bucket (see ``_hash_slot``)."""
    sums: list[int] = msgspec.field(default_factory=list)
    seconds: float = 0.0

    def hexdigest(self) -> str:
        return format(self.sum % _MODULUS, "064x")

    def table_digest(self) -> TableDigest:
        return TableDigest.from_hex(self.count, self.hexdigest())


def _hash_slot(row: Sequence[Any], row_hash: int, key_positions: Sequence[int], buckets: int) -> int:
    """A bucket by the key's canonical encoding (the whole row's hash for a keyless table): the same
    on both sides, whatever order either database sorts the key in."""
    if not key_positions:
        return row_hash % buckets
    key = tuple([row[p] for p in key_positions])
    return int.from_bytes(hashlib.sha256(_KEY_ENCODER.encode(key)).digest()[:8], "big") % buckets


def _digest_rows(
    rows: Iterable[tuple[Any, ...] | None],
    encoder: RowEncoder,
    key_positions: Sequence[int],
    bounds: Sequence[Key] | None,
    buckets: int = 0,
) -> SideDigest:
    """Count and digest ``rows``; per key range (``bounds``) or per hash bucket (``buckets``) too."""
    encode, sha256, from_bytes = encoder.encode, hashlib.sha256, int.from_bytes
    total = count = refused = 0
    if bounds is None and not buckets:
        for row in rows:
            if row is None:
                refused += 1
                continue
            total += from_bytes(sha256(encode(row)).digest(), "big")
            count += 1
        return SideDigest(count, total % _MODULUS, refused)
    slots = buckets if bounds is None else len(bounds) + 2
    counts, sums = [0] * slots, [0] * slots
    null_slot = slots - 1
    where = bisect.bisect_right
    for row in rows:
        if row is None:
            refused += 1
            continue
        h = from_bytes(sha256(encode(row)).digest(), "big")
        if bounds is None:
            slot = _hash_slot(row, h, key_positions, buckets)
        else:
            key = tuple([row[p] for p in key_positions])
            try:
                slot = null_slot if None in key else where(bounds, key)
            except TypeError:  # an unreadable key value (a text marker in an integer key): found by hash
                slot = null_slot
        counts[slot] += 1
        sums[slot] += h
        total += h
        count += 1
    return SideDigest(count, total % _MODULUS, refused, counts, sums)


def _sqlite_key_expr(shape: Shape) -> list[str]:
    return [
        f"{quote_ident(c)} COLLATE BINARY" if shape.types[p].name in _TEXT_TYPES else quote_ident(c)
        for c, p in zip(shape.key_source, shape.key_positions, strict=True)
    ]


def _row_value(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"


def _sqlite_where(shape: Shape, lo: Bound, hi: Bound, nulls: bool = False) -> tuple[str, list[Any]]:
    """SQLite predicate for the key range [lo, hi) (bounds as raw SQLite values), or NULL keys."""
    if nulls:
        return " WHERE " + " OR ".join(f"{quote_ident(c)} IS NULL" for c in shape.key_source), []
    parts: list[str] = []
    params: list[Any] = []
    expr = _row_value(_sqlite_key_expr(shape))
    for op, bound in ((">=", lo), ("<", hi)):
        if bound is not None:
            parts.append(f"{expr} {op} {_row_value(['?'] * len(bound))}")
            params.extend(bound)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def _sqlite_select(shape: Shape, where: str = "") -> str:
    cols = ", ".join(quote_ident(c) for c in shape.source_columns) or "NULL"
    return f"SELECT {cols} FROM {quote_ident(shape.source)}{where}"  # noqa: S608 - quote_ident


def _sqlite_fetch(
    conn: sqlite3.Connection, query: str, params: Sequence[Any], fetch_rows: int, on_rows: OnRows | None = None
) -> Iterator[Sequence[Any]]:
    cursor = conn.execute(query, params)
    while batch := cursor.fetchmany(fetch_rows):
        if on_rows is not None:
            on_rows(len(batch))
        yield from batch


def _with_text_fallback(conn: sqlite3.Connection, read: Callable[[], Any]) -> Any:
    """Run ``read``; if SQLite holds text that is not UTF-8, run it again with the snapshot's fallback."""
    try:
        return read()
    except sqlite3.OperationalError as exc:
        if not sqlite_source.undecodable_text(exc):
            raise sqlite_source.translate(exc, "source") from None
    conn.text_factory = convert_text.decode_text
    try:
        return read()
    finally:
        conn.text_factory = str


def table_digest_sqlite(
    conn: sqlite3.Connection,
    shape: Shape,
    lo: Bound = None,
    hi: Bound = None,
    bounds: Sequence[Key] | None = None,
    buckets: int = 0,
    fetch_rows: int = FETCH_ROWS,
    on_rows: OnRows | None = None,
) -> SideDigest:
    """SQLite side: rows of [lo, hi) (default: the table) converted and digested, in the caller's read
    transaction. ``lo``/``hi`` are raw SQLite key values; ``bounds`` converted ones (see SideDigest).
    ``on_rows`` is told each fetched batch's size (progress)."""
    started = time.monotonic()
    where, params = _sqlite_where(shape, lo, hi)
    query = _sqlite_select(shape, where)
    to_rows = source_rows(shape)
    encoder = RowEncoder(shape.kinds)

    def read() -> SideDigest:
        rows = to_rows(_sqlite_fetch(conn, query, params, fetch_rows, on_rows))
        return _digest_rows(rows, encoder, shape.key_positions, bounds, buckets)

    result: SideDigest = _with_text_fallback(conn, read)
    result.seconds = time.monotonic() - started
    return result


def _pg_columns(shape: Shape) -> sql.Composable:
    """enum and char(n) are read as text: labels, and values without char's blank padding."""
    parts = []
    for name, t in zip(shape.target_columns, shape.types, strict=True):
        ident = sql.Identifier(name)
        as_text = proof.text_output(t) if shape.independent else t.name in ("enum", "char")
        parts.append(sql.SQL("{}::text").format(ident) if as_text else ident)
    return sql.SQL(", ").join(parts) if parts else sql.SQL("NULL")


def _pg_where(shape: Shape, lo: Bound, hi: Bound, nulls: bool = False) -> tuple[sql.Composable, list[Any]]:
    if nulls:
        return sql.SQL(" WHERE ") + sql.SQL(" OR ").join(
            sql.SQL("{} IS NULL").format(sql.Identifier(c)) for c in shape.key_target
        ), []
    keys = [
        sql.SQL('{} COLLATE "C"').format(sql.Identifier(c)) if shape.types[p].name in _TEXT_TYPES else sql.Identifier(c)
        for c, p in zip(shape.key_target, shape.key_positions, strict=True)
    ]
    expr = keys[0] if len(keys) == 1 else sql.SQL("({})").format(sql.SQL(", ").join(keys))
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for op, bound in ((">=", lo), ("<", hi)):
        if bound is not None:
            marks = sql.SQL(", ").join([sql.Placeholder()] * len(bound))
            value = marks if len(bound) == 1 else sql.SQL("({})").format(marks)
            parts.append(sql.SQL("{} {} {}").format(expr, sql.SQL(op), value))
            params.extend(bound)
    if not parts:
        return sql.SQL(""), []
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), params


_QUOTED_IDENTIFIER = re.compile(r'"(?:[^"]|"")*"')


def _percent_safe(conn: psycopg.Connection[Any], query: sql.Composable) -> sql.SQL:
    """With parameters, psycopg reads ``%`` inside a quoted identifier (a table named ``a%s``) as a
    placeholder (psycopg2#825, same in psycopg 3): double it there. The queries here hold no literals."""
    return sql.SQL(_QUOTED_IDENTIFIER.sub(lambda m: m[0].replace("%", "%%"), query.as_string(conn)))


def _pg_fetch(
    conn: psycopg.Connection[Any],
    shape: Shape,
    where: sql.Composable,
    params: Sequence[Any],
    fetch_rows: int,
    on_rows: OnRows | None = None,
) -> Iterator[tuple[Any, ...]]:
    """Stream rows through a binary server-side cursor (memory bounded by ``fetch_rows``)."""
    query = sql.SQL("SELECT {} FROM {}").format(_pg_columns(shape), sql.Identifier(shape.schema, shape.target)) + where
    with conn.cursor(name="replicator_verify", binary=True) as cur:
        if not shape.independent:  # rows only digested: JSON documents as their text (independent: ::text)
            pg.json_as_text(cur)
        cur.itersize = fetch_rows
        cur.execute(_percent_safe(conn, query) if params else query, params or None)
        while batch := cur.fetchmany(fetch_rows):
            if on_rows is not None:
                on_rows(len(batch))
            yield from batch


def table_digest_pg(
    conn: psycopg.Connection[Any],
    shape: Shape,
    *,
    lo: Bound = None,
    hi: Bound = None,
    bounds: Sequence[Key] | None = None,
    buckets: int = 0,
    fetch_rows: int = FETCH_ROWS,
    on_rows: OnRows | None = None,
) -> SideDigest:
    """PostgreSQL side: rows of [lo, hi) digested as psycopg returns them, in the caller's transaction
    (a server-side cursor needs one). ``lo``/``hi``/``bounds`` are converted key values."""
    started = time.monotonic()
    where, params = _pg_where(shape, lo, hi)
    rows = _target_rows(shape, _pg_fetch(conn, shape, where, params, fetch_rows, on_rows))
    result = _digest_rows(rows, RowEncoder(shape.kinds), shape.key_positions, bounds, buckets)
    result.seconds = time.monotonic() - started
    return result


# --------------------------------------------------------------------------------------------
# bisection


Parallel: TypeAlias = Literal["process", "thread", "off"]

_CHILD: sqlite3.Connection | None = None
"""The SQLite connection of a verify child process; its one read transaction spans the whole run."""


def _child_open(path: str, busy_timeout_ms: int) -> None:
    """Child initializer: open the source and start the read transaction every later call reads in."""
    global _CHILD
    conn = sqlite_source.connect(path, readonly=True, busy_timeout_ms=busy_timeout_ms)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    _CHILD = conn


def _in_child(fn: Callable[..., T], *args: Any) -> T:
    assert _CHILD is not None, "verify child process was not initialised"
    return fn(_CHILD, *args)


def _run_now(fn: Callable[..., T], conn: sqlite3.Connection, *args: Any) -> Future[T]:
    future: Future[T] = Future()
    try:
        future.set_result(fn(conn, *args))
    except BaseException as exc:
        future.set_exception(exc)
    return future


class _Sides:
    """Runs each SQLite-side call (``fn(conn, *args)``) next to a PostgreSQL-side call.

    ``process``: in one child process holding the SQLite read transaction (true parallelism: the
    encoding of both sides is Python code, which threads would serialise on the GIL);
    ``thread``: in one thread, on the caller's connection; ``off``: one after the other.
    """

    def __init__(
        self, sconn: sqlite3.Connection, pconn: psycopg.Connection[Any], pool: Executor | None, parallel: Parallel
    ) -> None:
        self.sconn, self.pconn, self.pool, self.parallel = sconn, pconn, pool, parallel

    def sqlite(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self.pool is None:
            return _run_now(fn, self.sconn, *args)
        if self.parallel == "process":
            return self.pool.submit(_in_child, fn, *args)
        return self.pool.submit(fn, self.sconn, *args)

    def both(self, fn: Callable[..., T], args: Sequence[Any], on_pg: Callable[[], U]) -> tuple[T, U]:
        future = self.sqlite(fn, *args)
        theirs = on_pg()
        return future.result(), theirs


def _process_context() -> multiprocessing.context.BaseContext:
    """A fresh interpreter, never a plain fork: a forked child would inherit SQLite's in-process lock
    bookkeeping for this very file (the caller's connections, cutover's write lock) and could read
    without a real lock. The fork server is spawned once per process, then forks cheaply."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["replicator.inspect.verify"])
        return context
    return multiprocessing.get_context("spawn")


def _choose(parallel: Parallel | Literal["auto"], source: Path | str) -> Parallel:
    """``auto``: a child process for files of ``PROCESS_MIN_BYTES`` and more (it costs ~1 s to start
    the first time); below that both sides run one after the other (threads gain nothing, measured)."""
    if parallel != "auto":
        return parallel
    return "process" if Path(source).stat().st_size >= PROCESS_MIN_BYTES else "off"


@contextmanager
def _sides(
    source: Path | str,
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    parallel: Parallel,
    busy_timeout_ms: int,
) -> Iterator[_Sides]:
    if parallel == "off":
        yield _Sides(sconn, pconn, None, parallel)
        return
    pool: Executor
    if parallel == "process":
        pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=_process_context(),
            initializer=_child_open,
            initargs=(str(Path(source).resolve()), busy_timeout_ms),
        )
    else:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-sqlite")
    with pool:
        yield _Sides(sconn, pconn, pool, parallel)


def _key_converters(shape: Shape) -> list[fastpath.Converter]:
    """Raw SQLite key values → the values rows are compared by (raise ValueRefused / proof.Unreadable)."""
    if shape.independent:
        return [proof.key_value(shape.types[p]) for p in shape.key_positions]
    return [convert.value_converter(shape.types[p]) for p in shape.key_positions]


def _boundaries(sides: _Sides, shape: Shape, lo: Bound, hi: Bound, count: int, fanout: int) -> list[tuple[Key, Key]]:
    """Up to ``fanout - 1`` split keys of [lo, hi), in key order, as (raw SQLite, converted) pairs.

    Taken from SQLite (every n-th key by ``row_number()``); keys its converter refuses are skipped.
    """
    step = max(1, -(-count // fanout))
    if count <= step:
        return []
    cols = ", ".join(quote_ident(c) for c in shape.key_source)
    order = ", ".join(_sqlite_key_expr(shape))
    where, params = _sqlite_where(shape, lo, hi)
    nonnull = " AND ".join(f"{quote_ident(c)} IS NOT NULL" for c in shape.key_source)
    where = f"{where} AND {nonnull}" if where else f" WHERE {nonnull}"
    query = (
        f"SELECT {cols} FROM (SELECT {cols}, row_number() OVER (ORDER BY {order}) AS rn "  # noqa: S608 - quote_ident
        f"FROM {quote_ident(shape.source)}{where}) WHERE rn % ? = 1 AND rn > 1 ORDER BY rn"
    )
    converters = _key_converters(shape)
    found: list[tuple[Key, Key]] = []
    for raw in sides.sqlite(_boundary_rows, query, [*params, step]).result():
        try:
            converted = tuple(c(v) for c, v in zip(converters, raw, strict=True))
        except (refusal.ValueRefused, proof.Unreadable):
            continue
        if not found or converted > found[-1][1]:
            found.append((raw, converted))
    return found


def _boundary_rows(conn: sqlite3.Connection, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = _with_text_fallback(conn, lambda: [tuple(r) for r in conn.execute(query, params)])
    return rows


class _Diff:
    """Differing keys found so far, capped at ``limit`` in total."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reset()

    def reset(self) -> None:
        self.missing: list[Key] = []
        self.extra: list[Key] = []
        self.different: list[Key] = []
        self.truncated = False
        self.ours = [0, 0]
        """Count and hash sum of every differing SQLite row found (past the cap too)."""
        self.theirs = [0, 0]

    def account(self, ours: bytes | None, theirs: bytes | None) -> None:
        for side, row_hash in ((self.ours, ours), (self.theirs, theirs)):
            if row_hash is not None:
                side[0] += 1
                side[1] += int.from_bytes(row_hash, "big")

    def explains(self, ours: SideDigest, theirs: SideDigest) -> bool:
        """Whether the rows found account for the whole difference: both sides agree without them."""
        same_count = ours.count - self.ours[0] == theirs.count - self.theirs[0]
        return same_count and (ours.sum - self.ours[1]) % _MODULUS == (theirs.sum - self.theirs[1]) % _MODULUS

    @property
    def full(self) -> bool:
        return len(self.missing) + len(self.extra) + len(self.different) >= self.limit

    def add(self, kind: Literal["missing", "extra", "different"], key: Key) -> None:
        if self.full:
            self.truncated = True
            return
        getattr(self, kind).append(key)


Keep: TypeAlias = tuple[int, frozenset[int]] | None
"""Only the rows in these hash buckets: (bucket count, buckets)."""


def _leaf_rows(
    rows: Iterable[tuple[Any, ...] | None], shape: Shape, encoder: RowEncoder, keep: Keep = None
) -> dict[bytes, tuple[Key, bytes]]:
    """key encoding → (key, row hash); for a keyless range the whole row is the key (multiset)."""
    out: dict[bytes, tuple[Key, bytes]] = {}
    seen: Counter[bytes] = Counter()
    positions = shape.key_positions
    for row in rows:
        if row is None:
            continue
        if keep is not None and positions and _hash_slot(row, 0, positions, keep[0]) not in keep[1]:
            continue  # decided by the key alone: the row is not encoded
        row_hash = hashlib.sha256(encoder.encode(row)).digest()
        if keep is not None and not positions and int.from_bytes(row_hash, "big") % keep[0] not in keep[1]:
            continue
        if positions:
            key = tuple([row[p] for p in positions])
            ident = _KEY_ENCODER.encode(key)
        else:
            key, ident = row, row_hash
        seen[ident] += 1
        if seen[ident] > 1:  # a duplicate key (NULL keys, keyless rows): count each copy
            ident = ident + b"#" + str(seen[ident]).encode()
        out[ident] = (key, row_hash)
    return out


def _sqlite_leaf(
    conn: sqlite3.Connection, shape: Shape, lo: Bound, hi: Bound, nulls: bool, keep: Keep = None
) -> dict[bytes, tuple[Key, bytes]]:
    """SQLite side of a leaf: key → (key, row hash) for the rows of [lo, hi) (or the NULL keys)."""
    where, params = _sqlite_where(shape, lo, hi, nulls) if shape.key_positions else ("", [])
    query = _sqlite_select(shape, where)
    to_rows = source_rows(shape)
    encoder = RowEncoder(shape.kinds)
    found: dict[bytes, tuple[Key, bytes]] = _with_text_fallback(
        conn, lambda: _leaf_rows(to_rows(_sqlite_fetch(conn, query, params, FETCH_ROWS)), shape, encoder, keep)
    )
    return found


def _compare_leaf(
    sides: _Sides,
    shape: Shape,
    lo: Bound,
    hi: Bound,
    converted: tuple[Bound, Bound],
    nulls: bool,
    diff: _Diff,
    keep: Keep = None,
) -> None:
    """Compare the rows of one range (or hash buckets) by key on both sides, into ``diff``."""
    encoder = RowEncoder(shape.kinds)
    pwhere, pparams = _pg_where(shape, *converted, nulls) if shape.key_positions else (sql.SQL(""), [])
    ours, theirs = sides.both(
        _sqlite_leaf,
        (shape, lo, hi, nulls, keep),
        lambda: _leaf_rows(
            _target_rows(shape, _pg_fetch(sides.pconn, shape, pwhere, pparams, FETCH_ROWS)), shape, encoder, keep
        ),
    )
    for ident, (key, row_hash) in sorted(ours.items(), key=lambda item: item[0]):
        other = theirs.get(ident)
        if other is None:
            diff.add("missing", key)
            diff.account(row_hash, None)
        elif other[1] != row_hash:
            diff.add("different", key)
            diff.account(row_hash, other[1])
    for ident, (key, their_hash) in sorted(theirs.items(), key=lambda item: item[0]):
        if ident not in ours:
            diff.add("extra", key)
            diff.account(None, their_hash)


def _range_digests(
    sides: _Sides, shape: Shape, lo: tuple[Bound, Bound], hi: tuple[Bound, Bound], bounds: list[Key]
) -> tuple[SideDigest, SideDigest]:
    """Both sides' digests of [lo, hi) split at ``bounds``, read concurrently."""
    return sides.both(
        table_digest_sqlite,
        (shape, lo[0], hi[0], bounds),
        lambda: table_digest_pg(sides.pconn, shape, lo=lo[1], hi=hi[1], bounds=bounds),
    )


def _bisect(
    sides: _Sides,
    shape: Shape,
    lo: tuple[Bound, Bound],
    hi: tuple[Bound, Bound],
    ours: SideDigest,
    theirs: SideDigest,
    bounds: list[tuple[Key, Key]],
    diff: _Diff,
) -> None:
    """Recurse into every sub-range whose digests differ; compare small ranges row by row."""
    edges_raw: list[Bound] = [lo[0], *(b[0] for b in bounds), hi[0]]
    edges_conv: list[Bound] = [lo[1], *(b[1] for b in bounds), hi[1]]
    null_slot = len(bounds) + 1
    if ours.counts[null_slot] != theirs.counts[null_slot] or ours.sums[null_slot] != theirs.sums[null_slot]:
        _compare_leaf(sides, shape, None, None, (None, None), True, diff)
    for i in range(len(bounds) + 1):
        if diff.full:
            diff.truncated = True
            return
        if ours.counts[i] == theirs.counts[i] and ours.sums[i] % _MODULUS == theirs.sums[i] % _MODULUS:
            continue
        sub_lo, sub_hi = (edges_raw[i], edges_conv[i]), (edges_raw[i + 1], edges_conv[i + 1])
        size = max(ours.counts[i], theirs.counts[i])
        sub_bounds = (
            _boundaries(sides, shape, sub_lo[0], sub_hi[0], ours.counts[i], SUBFANOUT) if size > LEAF_ROWS else []
        )
        if not sub_bounds:
            _compare_leaf(sides, shape, sub_lo[0], sub_hi[0], (sub_lo[1], sub_hi[1]), False, diff)
            continue
        sub_ours, sub_theirs = _range_digests(sides, shape, sub_lo, sub_hi, [b[1] for b in sub_bounds])
        _bisect(sides, shape, sub_lo, sub_hi, sub_ours, sub_theirs, sub_bounds, diff)


# --------------------------------------------------------------------------------------------
# the run


def plan_for(
    sconn: sqlite3.Connection, pconn: psycopg.Connection[Any], config: Config, schema: Schema
) -> schemaplan.SchemaPlan:
    """Map SQLite tables to the target's as they are now (existing-mode mapping: by name, PG types).

    Profiles are needed only to tell epoch seconds from milliseconds in integer-stored date-time
    columns; only those columns are profiled, so verify does not pay a profile scan per table.
    An ORM bookkeeping table (which existing mode leaves alone) is compared when the snapshot
    recorded loading it (create mode loads it).
    """
    loaded = state.loaded_tables(pconn, config.target.state_schema)
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
            profiles[table.name] = profiler.profile_table(sconn, msgspec.structs.replace(table, columns=temporal))
    return existingmode.plan_existing(schema, reflected, profiles, config)


def _holds_numbers(conn: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether a date-time column stores any number (epoch): only then does its unit matter."""
    query = (
        f"SELECT EXISTS (SELECT 1 FROM {quote_ident(table)} "  # noqa: S608 - quote_ident
        f"WHERE typeof({quote_ident(column)}) IN ('integer', 'real'))"
    )
    return bool(conn.execute(query).fetchone()[0])


def _applied_through(pconn: psycopg.Connection[Any], state_schema: str) -> int | None:
    """The latest checkpoint's seq_to, read in the caller's transaction; None without checkpoints."""
    from checkpoints import store

    exists = pconn.execute(
        "SELECT to_regclass(%s)", (sql.Identifier(state_schema, "checkpoints").as_string(pconn),)
    ).fetchone()
    if not exists or exists[0] is None:
        return None
    with pconn.transaction():  # a savepoint: a damaged head must not abort the read transaction
        head = store.latest(pconn, schema=state_schema)
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


def _in_flight(shape: Shape, keys: Sequence[tuple[Any, ...]]) -> set[bytes]:
    converters = _key_converters(shape)
    out: set[bytes] = set()
    for raw in keys:
        try:
            out.add(RowEncoder().encode(tuple(c(v) for c, v in zip(converters, raw, strict=True))))
        except (refusal.ValueRefused, ValueError):
            continue
    return out


def _sqlite_count(conn: sqlite3.Connection, shape: Shape) -> int:
    (count,) = conn.execute(f"SELECT count(*) FROM {quote_ident(shape.source)}").fetchone()  # noqa: S608
    return int(count)


def _sqlite_position(conn: sqlite3.Connection, applied: int | None) -> tuple[int | None, dict[str, list[Key]]]:
    """The journal head in this read transaction, and the keys journaled after ``applied``."""
    head = journal.head(conn) if journal.exists(conn) else None
    if head is None or applied is None or head <= applied:
        return head, {}
    return head, _pending_keys(conn, applied, head)


def _find_keys(
    sides: _Sides,
    shape: Shape,
    ours: SideDigest,
    theirs: SideDigest,
    bounds: list[tuple[Key, Key]] | None,
    buckets: int,
    diff: _Diff,
) -> None:
    """The differing keys: bisection over key ranges, or the differing hash buckets compared."""
    whole = (None, None)
    if bounds is not None:
        _bisect(sides, shape, whole, whole, ours, theirs, bounds, diff)
        if diff.truncated or diff.explains(ours, theirs):
            return
        # The ranges did not isolate every difference: a key column whose SQLite storage orders
        # unlike its converted values (integers in a text key). Compare by hash buckets instead.
        log.get("verify", table=shape.source).warning("key ranges differ between the sides; comparing by hash")
        diff.reset()
        buckets = max(1, min(MAX_BUCKETS, ours.count // BUCKET_ROWS))
        ours, theirs = sides.both(
            table_digest_sqlite,
            (shape, None, None, None, buckets),
            lambda: table_digest_pg(sides.pconn, shape, buckets=buckets),
        )
    slots = frozenset(i for i in range(buckets) if ours.counts[i] != theirs.counts[i] or ours.sums[i] != theirs.sums[i])
    _compare_leaf(sides, shape, None, None, whole, False, diff, (buckets, slots))


KEYS_PER_QUERY: Final = 500
"""Keys per PostgreSQL lookup in :func:`compare_keys` (one ``IN`` list each)."""


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
    ours: dict[bytes, tuple[Key, bytes]] = _with_text_fallback(
        sconn, lambda: _leaf_rows(to_rows(_sqlite_by_key(sconn, shape, unique)), shape, encoder)
    )
    theirs = _leaf_rows(_target_rows(shape, _pg_by_key(pconn, shape, unique)), shape, encoder)
    diff = _Diff(max_keys)
    for ident, (key, row_hash) in sorted(ours.items(), key=lambda item: item[0]):
        other = theirs.get(ident)
        if other is None or other[1] != row_hash:
            diff.add("missing" if other is None else "different", key)
    for ident, (key, _) in sorted(theirs.items(), key=lambda item: item[0]):
        if ident not in ours:
            diff.add("extra", key)
    return [*diff.missing, *diff.extra, *diff.different]


def key_marker(key: Key) -> tuple[tuple[str, Any], ...]:
    """A raw SQLite key as a set member that keeps 1 and 1.0 (and 1 and '1') apart, as SQLite does."""
    return tuple((type(v).__name__, v) for v in key)


def _sqlite_by_key(conn: sqlite3.Connection, shape: Shape, keys: Sequence[Key]) -> Iterator[Sequence[Any]]:
    """SQLite rows holding exactly ``keys`` (a NOCASE key's lookup can return another spelling: left out)."""
    width = len(shape.key_source)
    cols = ", ".join(quote_ident(c) for c in (*shape.source_columns, *shape.key_source))
    select = f"SELECT {cols} FROM {quote_ident(shape.source)} WHERE "  # noqa: S608 - quote_ident
    for key in keys:
        where, params = journal.key_predicate(shape.key_source, key)
        for row in conn.execute(select + where, params).fetchall():
            if journal.same_key(row[-width:], key):
                yield row[:-width]


def _pg_by_key(conn: psycopg.Connection[Any], shape: Shape, keys: Sequence[Key]) -> Iterator[tuple[Any, ...]]:
    """PostgreSQL rows whose key is one of ``keys`` (raw SQLite values, converted as the load converts keys)."""
    located = msgspec.structs.replace(shape, independent=False)
    converters = _key_converters(located)
    wanted: list[Key] = []
    for raw in keys:
        try:
            wanted.append(tuple(c(v) for c, v in zip(converters, raw, strict=True)))
        except (refusal.ValueRefused, ValueError):
            continue  # a key the load refuses has no row in PostgreSQL; SQLite's row (if any) is then missing
    columns = [sql.Identifier(c) for c in shape.key_target]
    expr = columns[0] if len(columns) == 1 else sql.SQL("({})").format(sql.SQL(", ").join(columns))
    one = sql.SQL(", ").join([sql.Placeholder()] * len(columns))
    one = one if len(columns) == 1 else sql.SQL("({})").format(one)
    for start in range(0, len(wanted), KEYS_PER_QUERY):
        chunk = wanted[start : start + KEYS_PER_QUERY]
        where = sql.SQL(" WHERE {} IN ({})").format(expr, sql.SQL(", ").join([one] * len(chunk)))
        yield from _pg_fetch(conn, shape, where, [v for key in chunk for v in key], FETCH_ROWS)


class TableProgress:
    """One table's progress while both sides read it whole: the rows of the side that got furthest.

    (Run one after the other, the bar fills with SQLite's rows and stays full while PostgreSQL reads;
    in a child process the SQLite side cannot report, and PostgreSQL's rows move the bar.)
    """

    def __init__(self, progress: Progress | None, table: str, total: int) -> None:
        self.progress, self.table = progress, table
        self.read = {"sqlite": 0, "pg": 0}
        self.started = time.monotonic()
        if progress is not None:
            progress.start(table, total)

    def side(self, name: str) -> OnRows | None:
        if self.progress is None:
            return None
        progress = self.progress

        def add(rows: int) -> None:
            self.read[name] += rows
            progress.advance(self.table, max(self.read.values()))

        return add

    def finish(self, rows: int) -> None:
        if self.progress is not None:
            self.progress.finish(self.table, rows, time.monotonic() - self.started)


def estimate_rows(conn: psycopg.Connection[Any], shape: Shape) -> int:
    """PostgreSQL's estimate of the table's rows (``reltuples``, no scan): a progress bar's total."""
    row = conn.execute(
        "SELECT greatest(c.reltuples, 0)::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (shape.schema, shape.target),
    ).fetchone()
    return int(row[0]) if row else 0


def verify_table(
    sides: _Sides,
    shape: Shape,
    *,
    keys: bool = False,
    max_keys: int = MAX_KEYS,
    pending: Sequence[tuple[Any, ...]] | None = None,
    progress: Progress | None = None,
) -> TableVerify:
    """Compare one table; with ``keys`` (or rows in flight) find the differing keys by bisection.
    ``progress`` follows the full read of both sides (the bisection after it re-reads little)."""
    started = time.monotonic()
    bound = log.get("verify", table=shape.source)
    want = keys or bool(pending)
    ranged = want and shape.ordered
    bounds: list[tuple[Key, Key]] = []
    buckets = 0
    if want:
        count = sides.sqlite(_sqlite_count, shape).result()
        if ranged:
            bounds = _boundaries(sides, shape, None, None, count, FANOUT)
        else:
            buckets = max(1, min(MAX_BUCKETS, count // BUCKET_ROWS))
    conv = [b[1] for b in bounds] if ranged else None
    shown = TableProgress(progress, shape.source, count if want else estimate_rows(sides.pconn, shape))
    ours, theirs = sides.both(
        table_digest_sqlite,
        (shape, None, None, conv, buckets, FETCH_ROWS, shown.side("sqlite") if sides.parallel != "process" else None),
        lambda: table_digest_pg(sides.pconn, shape, bounds=conv, buckets=buckets, on_rows=shown.side("pg")),
    )
    shown.finish(max(ours.count + ours.refused, theirs.count))
    same = ours.count == theirs.count and ours.sum == theirs.sum
    # Keys in flight can all differ without a real mismatch: room for them on top of the cap.
    diff = _Diff(max_keys + len(pending or ()))
    if not same and want:
        _find_keys(sides, shape, ours, theirs, bounds if ranged else None, buckets, diff)
    status: Status = "match" if same else "mismatch"
    flying = 0
    if not same and pending and shape.key_positions and not diff.truncated:
        journaled = _in_flight(shape, pending)
        differing = diff.missing + diff.extra + diff.different
        flying = sum(1 for k in differing if RowEncoder().encode(k) in journaled)
        if differing and flying == len(differing):
            status = "in-flight"
    result = TableVerify(
        table=shape.source,
        target=shape.target,
        source_rows=ours.count,
        target_rows=theirs.count,
        source_digest=ours.hexdigest(),
        target_digest=theirs.hexdigest(),
        status=status,
        refused=ours.refused,
        key_columns=shape.key_source,
        missing=tuple(diff.missing),  # found only with ``keys`` or keys journaled since: named either way
        extra=tuple(diff.extra),
        different=tuple(diff.different),
        keys_truncated=diff.truncated,
        in_flight=flying,
        seconds=round(time.monotonic() - started, 3),
    )
    bound.info(
        "table verified",
        status=status,
        rows=ours.count,
        target_rows=theirs.count,
        sqlite_s=round(ours.seconds, 3),
        pg_s=round(theirs.seconds, 3),
        seconds=result.seconds,
    )
    return result


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
    with _sides(source, sconn, pconn, mode, config.source.busy_timeout_ms) as sides:
        # Every row is read in the read transaction this call runs in (the child's, in process mode).
        head, pending = sides.sqlite(_sqlite_position, applied).result()
        for name in names:
            shape = independent_shape(pconn, config.target.state_schema, plan, name)
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
    ``parallel``: how the two sides overlap (see ``_Sides``); measured in bench/verify.py.
    ``applied_by_caller``: the caller holds the apply locks and drains the journal itself (cutover's
    preflight), so keys journaled after the compared position are in flight without a daemon.
    ``progress``: one task per table, its rows read.
    """
    started = time.monotonic()
    with pg.connect(dsn, connect_timeout=config.target.connect_timeout_s) as pconn:
        pconn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        applied = _applied_through(pconn, config.target.state_schema)  # the PG snapshot is taken here
        sconn = sqlite_source.connect(source, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms)
        try:
            sconn.execute("BEGIN")
            sconn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # the SQLite snapshot starts here
            schema = read_schema(sconn)
            chosen = plan or plan_for(sconn, pconn, config, schema)
            names = _selected(chosen, tables)
            mode = _choose(parallel, source)
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
    try:
        return status.not_applying(pconn, config.target.state_schema, source_id, head, config.status.stall_after_s)
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
