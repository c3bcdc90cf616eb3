"""One table compared: both sides read whole, their digests set side by side, the differing keys found; and
what a run reports.

A table matches when the row counts and the order-independent digests are equal. Keys journaled after the
compared position (``pending``) that account for every difference make the table ``in-flight``, not a
mismatch (:mod:`replicator.inspect.verify` decides whether anything applies them).

Differing keys (``keys=True``, or keys in flight), by bisection over key ranges (as data-diff/reladiff do):
the first pass already splits the table into up to ``FANOUT`` key ranges (boundaries sampled from SQLite in
key order) and keeps a digest per range on each side, so it costs one scan. Ranges whose digests differ are
re-read with a range predicate (an index range scan), split again, until a range holds at most
``LEAF_ROWS`` rows; those rows are compared by key. A 1M-row table with 3 bad rows costs one full scan
plus ~3 × ``LEAF_ROWS`` rows. Ranges need the same order on both sides, which holds for integer and text
keys (SQLite ``COLLATE BINARY``, PostgreSQL ``COLLATE "C"``, Python code point order: all UTF-8 byte
order). Other keys (uuid, datetime, char...) and keyless tables are compared by hash buckets of the key:
the differing buckets' rows, every row's key and hash held in memory, so bounded by the table's size.

What a run reports: per table (:class:`TableVerify`) the rows and the canonical digest on each side, the
verdict, the rows the load refused and the differing keys when they were looked for; the run
(:class:`VerifyReport`) adds the positions it compared at and why journaled keys are not in flight
(:mod:`replicator.inspect.verify` shows it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Final, Literal, TypeAlias

import msgspec

from checkpoints.digest import RowEncoder
from replicator import log
from replicator.inspect import status
from replicator.inspect.proof_rule import Unreadable
from replicator.inspect.verify_digest import MODULUS, Keep, SideDigest, Span
from replicator.inspect.verify_pg import estimate_rows, pg_leaf, table_digest_pg
from replicator.inspect.verify_shape import FETCH_ROWS, Bound, Key, OnRows, Shape, key_converters
from replicator.inspect.verify_sides import Sides
from replicator.inspect.verify_sqlite import boundary_keys, sqlite_count, sqlite_leaf, table_digest_sqlite
from replicator.progress import Progress
from replicator.values import refusal

Status: TypeAlias = Literal["match", "mismatch", "in-flight"]
FANOUT: Final = 1_024
"""Key ranges per bisection level (the first level is computed during the full scan)."""
SUBFANOUT: Final = 32
LEAF_ROWS: Final = 2_000
"""A differing range with at most this many rows (on the larger side) is compared row by row."""
MAX_KEYS: Final = 100
BUCKET_ROWS: Final = 256
"""Unordered keys: rows per hash bucket on average (so a differing bucket is a small leaf)."""
MAX_BUCKETS: Final = 1 << 16


def _boundaries(sides: Sides, shape: Shape, lo: Bound, hi: Bound, count: int, fanout: int) -> list[tuple[Key, Key]]:
    """Up to ``fanout - 1`` split keys of [lo, hi), in key order, as (raw SQLite, converted) pairs.

    Taken from SQLite (every n-th key by ``row_number()``); keys its converter refuses are skipped.
    """
    step = max(1, -(-count // fanout))
    if count <= step:
        return []
    converters = key_converters(shape)
    found: list[tuple[Key, Key]] = []
    for raw in sides.sqlite(boundary_keys, shape, lo, hi, step).result():
        try:
            converted = tuple(c(v) for c, v in zip(converters, raw, strict=True))
        except (refusal.ValueRefused, Unreadable):
            continue
        if not found or converted > found[-1][1]:
            found.append((raw, converted))
    return found


class Diff:
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
        return same_count and (ours.sum - self.ours[1]) % MODULUS == (theirs.sum - self.theirs[1]) % MODULUS

    @property
    def full(self) -> bool:
        return len(self.missing) + len(self.extra) + len(self.different) >= self.limit

    def add(self, kind: Literal["missing", "extra", "different"], key: Key) -> None:
        if self.full:
            self.truncated = True
            return
        getattr(self, kind).append(key)


def _compare_leaf(
    sides: Sides,
    shape: Shape,
    lo: Bound,
    hi: Bound,
    converted: tuple[Bound, Bound],
    nulls: bool,
    diff: Diff,
    keep: Keep = None,
) -> None:
    """Compare the rows of one range (or hash buckets) by key on both sides, into ``diff``."""
    ours, theirs = sides.both(
        sqlite_leaf, (shape, lo, hi, nulls, keep), lambda: pg_leaf(sides.pconn, shape, *converted, nulls, keep)
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
    sides: Sides, shape: Shape, lo: tuple[Bound, Bound], hi: tuple[Bound, Bound], bounds: list[Key]
) -> tuple[SideDigest, SideDigest]:
    """Both sides' digests of [lo, hi) split at ``bounds``, read concurrently."""
    return sides.both(
        table_digest_sqlite,
        (shape, Span(lo[0], hi[0], bounds)),
        lambda: table_digest_pg(sides.pconn, shape, Span(lo[1], hi[1], bounds)),
    )


def _bisect(
    sides: Sides,
    shape: Shape,
    lo: tuple[Bound, Bound],
    hi: tuple[Bound, Bound],
    ours: SideDigest,
    theirs: SideDigest,
    bounds: list[tuple[Key, Key]],
    diff: Diff,
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
        if ours.counts[i] == theirs.counts[i] and ours.sums[i] % MODULUS == theirs.sums[i] % MODULUS:
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


def _find_keys(
    sides: Sides,
    shape: Shape,
    ours: SideDigest,
    theirs: SideDigest,
    bounds: list[tuple[Key, Key]] | None,
    buckets: int,
    diff: Diff,
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
        hashed = Span(buckets=buckets)
        ours, theirs = sides.both(
            table_digest_sqlite, (shape, hashed), lambda: table_digest_pg(sides.pconn, shape, hashed)
        )
    slots = frozenset(i for i in range(buckets) if ours.counts[i] != theirs.counts[i] or ours.sums[i] != theirs.sums[i])
    _compare_leaf(sides, shape, None, None, whole, False, diff, (buckets, slots))


def _in_flight(shape: Shape, keys: Sequence[tuple[Any, ...]]) -> set[bytes]:
    converters = key_converters(shape)
    out: set[bytes] = set()
    for raw in keys:
        try:
            out.add(RowEncoder().encode(tuple(c(v) for c, v in zip(converters, raw, strict=True))))
        except (refusal.ValueRefused, ValueError):
            continue
    return out


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


def verify_table(
    sides: Sides,
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
        count = sides.sqlite(sqlite_count, shape).result()
        if ranged:
            bounds = _boundaries(sides, shape, None, None, count, FANOUT)
        else:
            buckets = max(1, min(MAX_BUCKETS, count // BUCKET_ROWS))
    span = Span(bounds=[b[1] for b in bounds] if ranged else None, buckets=buckets)
    shown = TableProgress(progress, shape.source, count if want else estimate_rows(sides.pconn, shape))
    ours, theirs = sides.both(
        table_digest_sqlite,
        (shape, span, FETCH_ROWS, shown.side("sqlite") if sides.parallel != "process" else None),
        lambda: table_digest_pg(sides.pconn, shape, span, on_rows=shown.side("pg")),
    )
    shown.finish(max(ours.count + ours.refused, theirs.count))
    same = ours.count == theirs.count and ours.sum == theirs.sum
    # Keys in flight can all differ without a real mismatch: room for them on top of the cap.
    diff = Diff(max_keys + len(pending or ()))
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
    """The last forward checkpoint's ``seq_to`` (a SQLite journal seq; after the cutover, the cutover's) in the
    PostgreSQL view compared (None: no checkpoints)."""
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
