"""The running digests: each batch's row images folded into digests and added to each table's running one.

The row images a batch's DELETEs return and the rows it writes are hashed on a thread of their own while
PostgreSQL works (:class:`Pending`). The running digest, kept per table (:mod:`replicator.apply.tablestate`), lets
the cutover verify at its stop point at a cost proportional to the changed keys; :func:`table_digest_of` reads a
whole target table, once, to seed it.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from checkpoints.digest import Kind, TableDigest, kinds_from_oids
from checkpoints.model import TableChange
from replicator import pg
from replicator.apply.lookup import KeyTuple
from replicator.plan.shape import TableShape
from replicator.values.readback import DIGEST_EXACT_TYPES, Finisher, digest_finisher, digest_kinds
from replicator.values.targettype import TargetType


class TableResult(msgspec.Struct, frozen=True):
    change: TableChange
    digest_count: int
    digest_hex: str
    conflicts: int
    """PostgreSQL rows removed because an incoming row conflicted with them on a UNIQUE key."""
    quarantined: int


Folded = tuple[TableDigest, set[KeyTuple]]


def digest_reads_json(cur: psycopg.Cursor[Any], types: Sequence[TargetType]) -> None:
    """Row images read back by ``cur`` are only digested: their JSON documents are read as text
    (``JsonText``), canonicalised in C, instead of being parsed into Python objects first."""
    if any(t.name in ("json", "jsonb") for t in types):
        pg.json_as_text(cur)


#: Types whose value PostgreSQL gives back is the converted value, or the converted value brought to it by
#: :func:`~replicator.values.readback.digest_finisher` (float4 rounding, char padding, JSON documents): the
#: normalisation the snapshot's checksums already rely on.
_FINISHABLE: Final = DIGEST_EXACT_TYPES | {"real", "char", "json", "jsonb"}


class WrittenDigest(msgspec.Struct, frozen=True):
    """How rows a batch writes are digested from their converted values, without reading them back."""

    kinds: list[Kind] | None
    finish: Finisher | None


def written_digest(types: Sequence[TargetType]) -> WrittenDigest | None:
    """How to digest converted rows of ``types`` as PostgreSQL will give them back, or None when a
    type's read-back value is not known from the converted one (an enum): the INSERT then returns
    the rows it stored and those are digested.

    Why: ``INSERT ... RETURNING`` sends every written row back over the wire, parsed again by psycopg
    (on a wide JSON table that was the largest part of a batch's INSERT)."""
    if not all(t.name in _FINISHABLE for t in types):
        return None
    finish = digest_finisher(types)
    return WrittenDigest(digest_kinds(types) if finish is not None else None, finish)


def fold_rows(
    rows: list[tuple[Any, ...]], kinds: list[Kind] | None, positions: tuple[int, ...], finish: Finisher | None = None
) -> Folded:
    """The digest of row images (json columns by kind) and the set of their keys; ``finish`` first
    brings converted rows to what PostgreSQL gives back (:mod:`replicator.values.readback`)."""
    if finish is not None:
        rows = [finish(row) for row in rows]
    digest = TableDigest(kinds)
    digest.add_rows(rows)
    if len(positions) == 1:  # 5x faster than a tuple built from a generator per row
        (p,) = positions
        return digest, {(row[p],) for row in rows}
    key = operator.itemgetter(*positions)
    return digest, {key(row) for row in rows}


class Pending(msgspec.Struct):
    """One table's statements are done; its digests may still be being computed."""

    removed: list[Future[Folded]]
    added: list[Future[Folded]]
    conflicts: int
    quarantined: int

    def result(self, running: tuple[int, str] | None) -> TableResult:
        removed, removed_keys = TableDigest(), set()
        for future in self.removed:
            digest, keys = future.result()
            removed.merge(digest)
            removed_keys |= keys
        added, added_keys = TableDigest(), set()
        for future in self.added:
            digest, keys = future.result()
            added.merge(digest)
            added_keys |= keys
        deleted = TableDigest()
        deleted.add_rows(removed_keys - added_keys)
        total = TableDigest() if running is None else TableDigest.from_hex(running[0], running[1])
        total.subtract(removed)
        total.merge(added)
        return TableResult(
            change=TableChange.of(added, deleted, removed),
            digest_count=total.count,
            digest_hex=total.hexdigest(),
            conflicts=self.conflicts,
            quarantined=self.quarantined,
        )


def table_digest_of(conn: psycopg.Connection[Any], t: TableShape) -> TableDigest:
    """The digest of a target table as PostgreSQL holds it now (seeds the running digest once)."""
    digest: TableDigest | None = None
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, t.target_columns)), sql.Identifier(t.schema, t.target)
    )
    with conn.transaction(), conn.cursor(name="replicator_digest_seed", binary=True) as cur:
        digest_reads_json(cur, t.types)
        cur.itersize = 5_000
        cur.execute(query)
        while True:
            rows = cur.fetchmany(5_000)
            if digest is None:
                assert cur.description is not None
                digest = TableDigest(kinds_from_oids(d.type_code for d in cur.description))
            if not rows:
                break
            digest.add_rows(rows)
    assert digest is not None
    return digest
