"""A dominant table loaded by both processes: its rowid ranges read by either, or its batches dealt.

A database whose rows are mostly one table used to load that table in one process while the
other sat idle: conversion and checksums are Python, one core each. pgcopydb splits such a table
into key or ``ctid`` ranges that several connections COPY at once, each reading the *same*
source snapshot (``pg_export_snapshot`` / ``SET TRANSACTION SNAPSHOT``). SQLite cannot export a
snapshot here, but the helper can hold a *twin* of the main read transaction, proved to see the
same state (:mod:`replicator.load.twin`). Then the table's rowid ranges (:data:`RANGE_BATCHES` batches
each) are dealt: each goes to the helper while it can take one, which reads it from its twin and
sends back binary COPY tuples, else it is read and converted here. A row the app moves between
ranges cannot be read twice or missed: both transactions see the state at the journal mark.

Without a twin (the app committed inside the pairing window on every try), the split is of the
*work*, not the read: ranges read by the helper from a transaction of its own would be torn (a
REPLACE or a key change moving a row between ranges would load it twice or not at all). The main
process reads every row, in the read transaction that read the journal mark, and deals whole
batches to the helper whenever it is idle: ``marshal``, about half a microsecond a row to send,
against tens to convert and hash one.

Either way the helper runs the same :class:`replicator.load.copyrows.RowPipe` and sends back each batch
as binary COPY tuples, their digest sum and their refused values; the main process writes those
bytes into its own COPY. What does not change: one PostgreSQL transaction per table (TRUNCATE, COPY
``FREEZE``, the count check, the quarantine rows and the ``snapshot_tables`` row commit together),
so ``--resume`` still reloads an interrupted table whole; indexes and constraints after its last
row; the table's checksum (a sum of row hashes: it does not depend on which process hashed a row,
nor on row order); the first value refused in read order is the one reported (an error waits for
the batches and ranges before it). A table whose text SQLite cannot decode is re-read here with the
bytes fallback, its batches dealt; a WITHOUT ROWID table too (it has no rowid to range over).

Balance: the helper joins the shared tables once its own tables are done (it signals ``ready``);
until then, and for every batch beyond the :data:`DEPTH` it holds, the main process converts
locally. So both processes work until the last batch, whatever the cost model mispredicted. The
main process starts with its own whole tables and ends with the shared ones, and the split of
whole tables by estimated cost counts half the shared tables' cost on its side.

The profile that precedes the load (type choice) is shared the same way in spirit: a dominant
table's rowid chunks (``replicator.plan.chunkscan.chunks``) are split between the two processes with the
whole tables, each scanned in its process's read transaction like any table the helper profiles,
and merged with ``chunkscan.finish_profile``.
"""

from __future__ import annotations

import marshal
import queue as queue_module
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import msgspec
import psycopg
from psycopg.copy import Copy

from replicator import faults, log, pg
from replicator.config import Config
from replicator.errors import BadValue, TargetError
from replicator.load import twin
from replicator.load.copyrows import (
    SIGNATURE,
    TRAILER,
    Copied,
    Formatted,
    RowPipe,
    copy_statement,
    format_parts,
    key_getter,
    read_layout,
)
from replicator.load.costs import table_rows
from replicator.load.guess import _Unverified, plain_columns
from replicator.load.helper import Scanned, _Failure, _failure, helper_queues
from replicator.load.source import _batches, _DecodeFallback, strict_text
from replicator.plan import chunkscan, profiler, schemaplan
from replicator.plan.chunkscan import Chunk, ChunkResult
from replicator.plan.profile import TableProfile
from replicator.values import quarantine
from triggers.schema import Schema, Table, quote_ident

if TYPE_CHECKING:
    from replicator.load.helper import Helper

#: Batches the helper holds at most (one converting, one waiting): it never idles for want of work,
#: and what waits for it is bounded (``fetch_rows`` rows each).
DEPTH: Final = 2
_WAIT_S: Final = 0.2
#: Batches of ``fetch_rows`` per rowid range a process reads at once (with a twin read transaction):
#: small enough that the last range leaves the other process idle briefly, large enough to deal rarely.
RANGE_BATCHES: Final = 4
MAX_RANGES: Final = 4096
#: A batch larger than this (encoded) is converted where it was read.
MAX_DEAL_BYTES: Final = 64 * 2**20
#: psycopg's largest single put (``psycopg._copy_base.MAX_BUFFER_SIZE``, 128 kB): a larger buffer is sliced, copied.
_PUT_BYTES: Final = 128 * 1024


class Block(msgspec.Struct, frozen=True):
    """One batch converted: binary COPY tuples (no header, no trailer), what they sum to, what was refused."""

    session: int
    seq: int
    rows: int
    """Rows read (written ones and refused ones)."""
    data: bytes = b""
    digest_sum: int = 0
    refusals: list[quarantine.Refusal] = []
    error: tuple[str, str, str] | None = None
    """(kind, message, hint): ``unverified`` (message: the column), ``bad_value``, ``decode``, ``failed``."""
    last: bool = True
    """The last block of its batch or range (a range the helper reads comes back in several)."""


class Ranges(msgspec.Struct, frozen=True):
    """A shared table's rowid ranges, each read whole by the process it is dealt to: with a twin
    (:mod:`replicator.load.twin`) the helper reads the same state, so no row is read twice or missed."""

    query: str
    """The table's SELECT with ``WHERE <rowid> BETWEEN ? AND ?``."""
    bounds: list[tuple[int, int]]
    fetch_rows: int


def ranges_of(conn: sqlite3.Connection, table: Table, select: str, fetch_rows: int, rows: int) -> Ranges | None:
    """Equal rowid ranges of about :data:`RANGE_BATCHES` batches each, or None (WITHOUT ROWID, one range).

    ``rows``: the table's count, already read in this transaction. Equal steps between the smallest and
    largest rowid cost two b-tree descents (each in its own subquery: with a ``count(*)`` or together in
    one SELECT, SQLite scans the whole table, 1.5 s for the wide benchmark's 800k rows); sparse rowids
    make ranges of uneven rows, which the dealing evens out (a range goes to whichever process is free)."""
    rowid = chunkscan.rowid_name(table)
    if rowid is None:
        return None
    name = quote_ident(table.name)
    query = f"SELECT (SELECT min({rowid}) FROM {name}), (SELECT max({rowid}) FROM {name})"  # noqa: S608
    low, high = conn.execute(query).fetchone()
    if low is None:
        return None
    span = int(high) - int(low) + 1
    count = min(MAX_RANGES, span, -(-int(rows) // (RANGE_BATCHES * fetch_rows)))
    if count < 2:
        return None
    starts = [int(low) + i * span // count for i in range(count)]  # strictly increasing, within [low, high]
    bounds = [(start, end - 1) for start, end in zip(starts, [*starts[1:], int(high) + 1], strict=True)]
    bounds[0], bounds[-1] = (-(2**63), bounds[0][1]), (bounds[-1][0], 2**63 - 1)
    return Ranges(f"{select} WHERE {rowid} BETWEEN ? AND ?", bounds, fetch_rows)


def range_batches(conn: sqlite3.Connection, ranges: Ranges, low: int, high: int) -> Iterator[list[Any]]:
    """One range's rows in batches of ``fetch_rows`` (a text SQLite cannot decode: :class:`_DecodeFallback`)."""
    return _batches(conn, ranges.query, ranges.fetch_rows, (low, high))


def format_block(cursor: psycopg.Cursor[Any], types: Sequence[str], pipe: RowPipe, rows: Sequence[Any]) -> Block:
    """:func:`~replicator.load.copyrows.format_parts` as one block the helper sends (its tuples joined)."""
    done = format_parts(cursor, types, pipe, rows)
    return Block(0, 0, len(rows), b"".join(done.parts), done.digest_sum, done.refusals)


def _error_of(exc: BaseException) -> tuple[str, str, str]:
    if isinstance(exc, _Unverified):
        return ("unverified", exc.column, "")
    if isinstance(exc, _DecodeFallback):
        return ("decode", str(exc), "")
    if isinstance(exc, BadValue):
        return ("bad_value", exc.message, exc.hint)
    failure = _failure(exc)
    return ("failed", failure.message, failure.hint)


def _raise_error(table: schemaplan.TablePlan, error: tuple[str, str, str]) -> BaseException:
    kind, message, hint = error
    if kind == "unverified":
        return _Unverified(table.source, message)
    if kind == "bad_value":
        return BadValue(message, hint=hint)
    if kind == "decode":  # the main process re-reads the table with the bytes fallback, unshared by ranges
        return _DecodeFallback(message)
    return TargetError(f"the helper process failed converting {table.source}: {message}", hint=hint)


# --- the helper process's side ------------------------------------------------------------------


class _Session:
    """The helper's state for one shared table: its pipe, built from the plan the main process sent.

    ``strict``: the main process reads the table strictly (:func:`replicator.load.source.strict_text`; not
    on its bytes-fallback re-read), so the batches it deals hold no lone surrogate; with ``ranges`` the rows
    come from the twin instead, which must read strictly too for the pipe to skip the check."""

    def __init__(
        self,
        session: int,
        table: schemaplan.TablePlan,
        verify: bool,
        policy: str,
        ranges: Ranges | None,
        strict: bool,
    ) -> None:
        self.session = session
        self.ranges = ranges
        self.pipe: RowPipe | None = None
        self.error: tuple[str, str, str] | None = None
        if ranges is not None:
            held = twin.held()
            strict = strict and held is not None and strict_text(held)
        try:
            _, extra = read_layout(table)
            self.pipe = RowPipe(
                table, key_of=key_getter(table), policy=policy, verify=verify, extra=bool(extra), strict_text=strict
            )
        except Exception as exc:  # answered with each batch
            self.error = _error_of(exc)

    def convert(self, cursor: psycopg.Cursor[Any], seq: int, rows: Sequence[Any]) -> Block:
        if self.pipe is None:
            return Block(self.session, seq, len(rows), error=self.error)
        try:
            block = format_block(cursor, self.pipe.copy_types, self.pipe, rows)
        except Exception as exc:
            return Block(self.session, seq, len(rows), error=_error_of(exc))
        return msgspec.structs.replace(block, session=self.session, seq=seq)

    def convert_range(self, cursor: psycopg.Cursor[Any], seq: int, low: int, high: int) -> Iterator[Block]:
        """Read one rowid range from the twin read transaction and convert it, a block per batch."""
        conn = twin.held()
        if conn is None or self.ranges is None:
            yield Block(self.session, seq, 0, error=("failed", "the helper holds no twin read transaction", ""))
            return
        try:
            for batch in range_batches(conn, self.ranges, low, high):
                block = self.convert(cursor, seq, batch)
                yield msgspec.structs.replace(block, last=block.error is not None)
                if block.error is not None:
                    return
        except Exception as exc:
            yield Block(self.session, seq, 0, error=_error_of(exc))
            return
        yield Block(self.session, seq, 0)


def coprocess(config: Config) -> _Failure | None:
    """The helper's conversion loop for shared tables, until the main process sends ``stop``.

    Runs in the helper after its own tables (the pool runs tasks in order). Its PostgreSQL
    connection only lends COPY formatting the dumpers a loading connection has; nothing is sent.
    """
    work, results = helper_queues()
    results.cancel_join_thread()  # a main process that stopped reading must not block our exit
    try:
        timeout = config.target.connect_timeout_s
        with pg.connect(config.target.dsn, autocommit=True, connect_timeout=timeout) as pconn, pconn.cursor() as cur:
            results.put(("ready",))
            current: _Session | None = None
            while True:
                message = work.get()
                if message[0] == "stop":
                    return None
                if message[0] == "table":
                    current = _Session(*message[1:])
                    continue
                assert current is not None  # a table's batches follow its "table" message
                assert current.session == message[1]
                if message[0] == "range":
                    for block in current.convert_range(cur, *message[2:]):
                        results.put(block)
                    continue
                results.put(current.convert(cur, message[2], marshal.loads(message[3])))
    except Exception as exc:
        return _failure(exc)


# --- the main process's side --------------------------------------------------------------------


class Coprocessor:
    """The main process's end: deals batches of a shared table to the helper, collects its blocks."""

    def __init__(self, helper: Helper, config: Config) -> None:
        self.helper = helper
        self.future = helper.pool.submit(coprocess, config)
        self.ready = False
        self.stopped = False
        self.session = 0
        self.inflight: set[int] = set()
        self.schema: Schema | None = None
        """The source schema (the loader's), to find a shared table's rowid ranges."""

    def ranged(
        self, conn: sqlite3.Connection, table: str, select: str, fetch_rows: int, rows: int
    ) -> tuple[sqlite3.Connection, Ranges] | None:
        """``table``'s rowid ranges when the helper can read them itself: it holds a twin of ``conn``'s
        read transaction, the table has a rowid, and its text decodes (the bytes fallback is read here)."""
        if not self.helper.twin or self.schema is None or conn.text_factory is not str:
            return None
        ranges = ranges_of(conn, self.schema.table(table), select, fetch_rows, rows)
        return None if ranges is None else (conn, ranges)

    def stop(self) -> None:
        """No more shared tables: the helper's loop returns (idempotent)."""
        if not self.stopped:
            self.stopped = True
            self.helper.work.put(("stop",))

    def copy(
        self,
        pconn: psycopg.Connection[Any],
        schema_name: str,
        table: schemaplan.TablePlan,
        batches: Iterable[Sequence[Sequence[Any]]],
        *,
        policy: str,
        on_batch: Callable[[int], None],
        freeze: bool,
        verify: bool,
        strict_text: bool = False,
        ranged: tuple[sqlite3.Connection, Ranges] | None = None,
    ) -> Copied:
        """What :func:`replicator.load.copyrows.copy_rows` does, the batches converted here or in the helper.

        ``ranged`` (the helper holds a twin of ``conn``'s read transaction): rowid ranges are dealt
        instead of batches, and the helper reads its ranges itself; ``batches`` is then not read.
        ``strict_text``: ``batches`` and ``conn`` read text strictly (``RowPipe``), here and in the helper."""
        _, extra = read_layout(table)
        pipe = RowPipe(
            table, key_of=key_getter(table), policy=policy, verify=verify, extra=bool(extra), strict_text=strict_text
        )
        self.session += 1
        self.inflight = set()
        ranges = ranged[1] if ranged else None
        self.helper.work.put(("table", self.session, table, verify, policy, ranges, strict_text))
        load = _SharedLoad(self, table, on_batch)
        with pconn.cursor() as cur, pconn.cursor() as local:
            try:
                with cur.copy(copy_statement(schema_name, table, freeze=freeze)) as copy:
                    copy.write(SIGNATURE)
                    if ranged is None:
                        load.run(copy, local, pipe, batches)
                    else:
                        load.run_ranges(copy, local, pipe, *ranged)
                    copy.write(TRAILER)
            except psycopg.Error:
                if pipe.missed:
                    raise pipe.unverified() from None
                raise
            server_rows = cur.rowcount
        refusals = [r for seq in sorted(load.refusals) for r in load.refusals[seq]]
        return Copied(
            written=load.read - len(refusals),
            read=load.read,
            refusals=refusals,
            digest_sum=load.total,
            server_rows=server_rows,
            helper_rows=load.helper_rows,
            helper_ranges=load.helper_ranges,
        )

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the helper's loop runs (tests: to make the helper's part certain, not likely).

        ``ready`` is the first message the helper sends, so no block is consumed here."""
        deadline = time.monotonic() + timeout
        while not self.ready and time.monotonic() < deadline:
            try:
                self.ready = self.helper.results.get(timeout=_WAIT_S) == ("ready",)
            except queue_module.Empty:
                self._check_alive()
        return self.ready

    def can_take(self) -> bool:
        if not self.ready or self.stopped or len(self.inflight) >= DEPTH:
            return False
        if self.future.done():  # the loop ended early (it could not connect...): convert here
            self.stopped = True
            log.get("snapshot").warning("the helper stopped converting shared tables", detail=self._ended())
            return False
        return True

    def send(self, seq: int, rows: Sequence[Any]) -> bool:
        """Deal one batch to the helper; False when a value cannot travel (then it is converted here)."""
        try:
            payload = marshal.dumps(cast(Any, rows))
        except ValueError:
            return False
        if len(payload) > MAX_DEAL_BYTES:  # a batch of huge values: not worth a third copy in memory
            return False
        self.helper.work.put(("rows", self.session, seq, payload))
        self.inflight.add(seq)
        return True

    def send_range(self, seq: int, low: int, high: int) -> None:
        """Deal one rowid range: the helper reads it from its twin read transaction."""
        self.helper.work.put(("range", self.session, seq, low, high))
        self.inflight.add(seq)

    def received(self, *, block: bool) -> Iterator[Block]:
        """The current table's blocks that arrived (``block``: at least one, unless none is due)."""
        while True:
            try:
                message = self.helper.results.get(timeout=_WAIT_S) if block else self.helper.results.get_nowait()
            except queue_module.Empty:
                if not block:
                    return
                self._check_alive()
                continue
            if isinstance(message, tuple):  # ("ready",)
                self.ready = True
                continue
            if message.session != self.session or message.seq not in self.inflight:
                continue  # a block of a table whose load was abandoned
            if message.last:
                self.inflight.discard(message.seq)
            yield message
            block = False

    def _check_alive(self) -> None:
        self.helper.drain()
        if self.future.done():
            raise TargetError(
                f"the helper process stopped while converting a shared table: {self._ended()}",
                hint="rerun with --resume; set snapshot.split_rows = 0 to keep every table in one process",
            )

    def _ended(self) -> str:
        outcome = self.future.exception() or self.future.result()
        return outcome.message if isinstance(outcome, _Failure) else str(outcome or "its loop returned")


class _SharedLoad:
    """One shared table's COPY: deals, converts, writes blocks, keeps the totals."""

    def __init__(self, copro: Coprocessor, table: schemaplan.TablePlan, on_batch: Callable[[int], None]) -> None:
        self.copro, self.table, self.on_batch = copro, table, on_batch
        self.read = self.total = self.helper_rows = self.helper_ranges = 0
        self.refusals: dict[int, list[quarantine.Refusal]] = {}
        self.copy: Copy | None = None

    def run(self, copy: Copy, local: psycopg.Cursor[Any], pipe: RowPipe, batches: Iterable[Sequence[Any]]) -> None:
        self.copy = copy
        types = pipe.copy_types
        copro = self.copro
        for seq, batch in enumerate(batches):
            for block in copro.received(block=False):
                self._write(block)
            if copro.can_take() and copro.send(seq, batch):
                continue
            try:
                done = format_parts(local, types, pipe, batch)
            except (BadValue, _Unverified) as exc:
                raise self._earliest(seq, exc) from None
            self._write_here(seq, len(batch), done)
        while copro.inflight:
            for block in copro.received(block=True):
                self._write(block)

    def run_ranges(
        self, copy: Copy, local: psycopg.Cursor[Any], pipe: RowPipe, conn: sqlite3.Connection, ranges: Ranges
    ) -> None:
        """Each range to the helper while it can take one, else read and converted here."""
        self.copy = copy
        types = pipe.copy_types
        copro = self.copro
        for seq, (low, high) in enumerate(ranges.bounds):
            self._collect()
            if copro.can_take():
                copro.send_range(seq, low, high)
                self.helper_ranges += 1
                continue
            for batch in range_batches(conn, ranges, low, high):
                try:
                    done = format_parts(local, types, pipe, batch)
                except (BadValue, _Unverified) as exc:
                    raise self._earliest(seq, exc) from None
                self._write_here(seq, len(batch), done)
                self._collect()
        while copro.inflight:
            for block in copro.received(block=True):
                self._write(block)

    def _collect(self) -> None:
        for block in self.copro.received(block=False):
            self._write(block)

    def _write(self, block: Block) -> None:
        """A block from the helper: written in views of at most psycopg's largest put (it would copy each
        slice of a larger buffer)."""
        if block.error is not None:
            raise self._earliest(block.seq, _raise_error(self.table, block.error))
        assert self.copy is not None
        view = memoryview(block.data)
        for start in range(0, len(view), _PUT_BYTES):
            self.copy.write(view[start : start + _PUT_BYTES])
        self._count(block.seq, block.rows, block.digest_sum, block.refusals)
        self.helper_rows += block.rows

    def _write_here(self, seq: int, rows: int, done: Formatted) -> None:
        """A batch converted here: the formatter's buffers as they are."""
        assert self.copy is not None
        for part in done.parts:
            self.copy.write(part)
        self._count(seq, rows, done.digest_sum, done.refusals)

    def _count(self, seq: int, rows: int, digest_sum: int, refusals: list[quarantine.Refusal]) -> None:
        self.read += rows
        self.total += digest_sum
        if refusals:
            self.refusals.setdefault(seq, []).extend(refusals)
        faults.point("snapshot.copying")  # rows streamed, nothing committed
        self.on_batch(self.read)

    def _earliest(self, seq: int, exc: BaseException) -> BaseException:
        """The error of the first batch in read order: the helper's earlier batches are awaited."""
        errors = {seq: exc}
        while any(s < seq for s in self.copro.inflight):
            for block in self.copro.received(block=True):
                if block.error is not None:
                    errors[block.seq] = _raise_error(self.table, block.error)
        return errors[min(errors)]


# --- the profile of a dominant table: its rowid chunks scanned by both processes ---------------------


def profile_pieces(
    conn: sqlite3.Connection, schema: Schema, costs: Mapping[str, int], split_rows: int
) -> dict[str | Chunk, int]:
    """What the two processes share of the profiles: whole tables, and the rowid chunks of each
    dominant one (``split_rows``), so that a dominant table's profile is not one process's alone.

    Like a whole table profiled in the helper, a chunk is scanned in the scanning process's own
    read transaction: the profile only chooses types, and the load (from the mark's transaction)
    refuses, by name, a value a type cannot hold."""
    rows = table_rows(conn, schema, list(costs)) if split_rows > 0 else {}
    pieces: dict[str | Chunk, int] = {}
    for name, cost in costs.items():
        parts = chunkscan.chunks(conn, schema.table(name)) if rows.get(name, 0) >= split_rows > 0 else []
        if len(parts) > 1:
            pieces.update({part: cost // len(parts) for part in parts})
        else:
            pieces[name] = cost
    return pieces


def whole_and_chunks(pieces: Iterable[str | Chunk]) -> tuple[list[str], list[Chunk]]:
    chosen = list(pieces)
    return [p for p in chosen if isinstance(p, str)], [p for p in chosen if isinstance(p, Chunk)]


def scan_chunks(conn: sqlite3.Connection, schema: Schema, parts: Sequence[Chunk], create: Config | None) -> Scanned:
    """Scan one process's chunks; a table one of whose chunks is too big for a string gets None."""
    profiler.register(conn)
    out: Scanned = {}
    for part in parts:
        results = out.setdefault(part.table, [])
        if results is None:
            continue
        table = schema.table(part.table)
        try:
            results.append(chunkscan.scan_chunk(conn, table, part, plain_columns(table, create)))
        except chunkscan.TooBig:
            out[part.table] = None
    return out


def finish_profiles(
    conn: sqlite3.Connection, schema: Schema, scanned: Sequence[Scanned], create: Config | None
) -> dict[str, TableProfile]:
    """The chunked tables' profiles from both processes' chunks (a table with a chunk too big: in full here)."""
    merged: dict[str, list[ChunkResult] | None] = {}
    for part in scanned:
        for name, results in part.items():
            have = merged.setdefault(name, [])
            merged[name] = None if have is None or results is None else have + results
    out = {}
    for name, results in merged.items():
        table = schema.table(name)
        plain = plain_columns(table, create)
        if results is None:
            out[name] = profiler.profile_table(conn, table, plain=plain)
        else:
            out[name] = chunkscan.finish_profile(conn, table, results, plain)
            log.get("profile", table=name).debug("profiled", rows=out[name].rows, chunks=len(results), shared=True)
    return out


def dominant_tables(rows: Mapping[str, int], split_rows: int, costs: Mapping[str, int] | None = None) -> list[str]:
    """The tables both processes convert, largest first: at least ``split_rows`` rows (0: none).

    With ``costs`` (the helper loads whole tables too), only a table that costs more than all the
    others together: any other mix the split of whole tables balances, without the main process
    reading for the helper. Without (the helper is otherwise idle), every such table."""
    if split_rows <= 0:
        return []
    big = sorted((n for n, r in rows.items() if r >= split_rows), key=lambda n: (-rows[n], n))
    if costs is None:
        return big
    total = sum(costs.values())
    return [n for n in big if costs[n] * 2 > total]
