"""One side's count and digest of a range of rows, and a leaf's rows by key: what each side's reader
(:mod:`replicator.inspect.verify_sqlite`, :mod:`replicator.inspect.verify_pg`) computes over the rows the
shape yields, the same way on both sides.

A row's hash is the SHA-256 of its canonical encoding (:mod:`checkpoints.digest`); a digest is their sum,
order-independent. Split per key range (``bounds``: index i covers [bounds[i-1], bounds[i]), the last slot
holds NULL keys) or per hash bucket of the key's encoding, so the bisection
(:mod:`replicator.inspect.verify_compare`) knows which ranges differ after one scan.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Final, TypeAlias

import msgspec

from checkpoints.digest import RowEncoder, TableDigest
from replicator.inspect.verify_shape import Bound, Key, Shape

MODULUS: Final = 1 << 256
_KEY_ENCODER: Final = RowEncoder()
Keep: TypeAlias = tuple[int, frozenset[int]] | None
"""Only the rows in these hash buckets: (bucket count, buckets)."""


class Span(msgspec.Struct, frozen=True):
    """Which rows of a table a side digests, and how it splits them: the key range [lo, hi) (None: open) and
    either split points ``bounds`` (a digest per sub-range) or ``buckets`` hash buckets. ``bounds`` are
    converted key values; ``lo``/``hi`` raw SQLite values on the SQLite side, converted ones on PostgreSQL's
    (both sides digest the same span, each bound as that side reads its key)."""

    lo: Bound = None
    hi: Bound = None
    bounds: Sequence[Key] | None = None
    buckets: int = 0


WHOLE: Final = Span()
"""The whole table, one digest."""


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
        return format(self.sum % MODULUS, "064x")

    def table_digest(self) -> TableDigest:
        return TableDigest.from_hex(self.count, self.hexdigest())


def _hash_slot(row: Sequence[Any], row_hash: int, key_positions: Sequence[int], buckets: int) -> int:
    """A bucket by the key's canonical encoding (the whole row's hash for a keyless table): the same
    on both sides, whatever order either database sorts the key in."""
    if not key_positions:
        return row_hash % buckets
    key = tuple([row[p] for p in key_positions])
    return int.from_bytes(hashlib.sha256(_KEY_ENCODER.encode(key)).digest()[:8], "big") % buckets


def digest_rows(
    rows: Iterable[tuple[Any, ...] | None], encoder: RowEncoder, key_positions: Sequence[int], span: Span
) -> SideDigest:
    """Count and digest ``rows``; per key range (``span.bounds``) or per hash bucket (``span.buckets``) too."""
    bounds, buckets = span.bounds, span.buckets
    encode, sha256, from_bytes = encoder.encode, hashlib.sha256, int.from_bytes
    total = count = refused = 0
    if bounds is None and not buckets:
        for row in rows:
            if row is None:
                refused += 1
                continue
            total += from_bytes(sha256(encode(row)).digest(), "big")
            count += 1
        return SideDigest(count, total % MODULUS, refused)
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
    return SideDigest(count, total % MODULUS, refused, counts, sums)


def leaf_rows(
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
