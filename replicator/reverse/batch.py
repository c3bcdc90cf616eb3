"""One reverse batch: the journal entries of a range of PostgreSQL transactions, and the rows they name as
PostgreSQL holds them now, read in one ``REPEATABLE READ`` snapshot.

Why state-based, as the forward apply: the journal holds keys, so a batch writes each key's *current* row
(or deletes it where PostgreSQL no longer has one). Entries whose effect a later batch also carries are
rewritten to the values they already have, so a batch re-read after a crash converges.

Why the range is of transaction ids (:mod:`replicator.state.reverse`): a snapshot's ``xmin`` is the oldest
transaction still running, so the entries of every transaction below it are final. A batch takes the entries
of the transactions in ``[lo, hi)``, with ``hi`` that ``xmin`` (or less, to bound the batch's size); after
``rollback``'s fence has committed no app transaction can still write an entry, so the final drain takes
everything up to the snapshot's ``xmax``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from replicator import pg
from replicator.plan.shape import TableShape
from replicator.state import reverse

KeyTuple = tuple[Any, ...]

DEFAULT_LIMIT: Final = 5_000
"""Journal entries per batch, about (a transaction's entries are never split)."""


HORIZON: Final = """
SELECT coalesce(min(x::text::bigint), max(pg_snapshot_xmax(s)::text::bigint))
FROM (SELECT pg_current_snapshot() AS s) snap
LEFT JOIN LATERAL pg_snapshot_xip(snap.s) AS x ON NOT EXISTS (
    SELECT 1 FROM pg_stat_activity a
    WHERE a.backend_xid = x::xid AND a.datname IS DISTINCT FROM current_database()
) AND NOT EXISTS (
    SELECT 1 FROM pg_prepared_xacts p WHERE p.transaction = x::xid AND p.database IS DISTINCT FROM current_database()
)
"""
"""The first transaction id whose journal entries may not be final yet: the oldest transaction this
snapshot sees running, leaving out those running in *another* database of the cluster (transaction ids are
the cluster's, and a long transaction elsewhere, a report, another app, a test next door, would otherwise
hold the reverse direction back without ever writing an entry here); with none, the snapshot's ``xmax``. A
transaction that ended between the snapshot and the look at ``pg_stat_activity`` is not found there and so
counts as this database's: the horizon can only come out lower than needed, never higher. Where
``pg_stat_activity`` hides other users' sessions (no ``pg_read_all_stats``), their transactions count as ours,
the same safe way."""

FINAL_HORIZON: Final = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
"""After rollback's fence no app transaction can still write an entry: everything the snapshot sees is final."""


class TableBatch(msgspec.Struct):
    """What one table's entries name: keys (PostgreSQL form) and each key's row now (None: deleted)."""

    table: str
    entries: int
    rows: dict[KeyTuple, tuple[Any, ...] | None]
    """Per journaled key: the row (``shape.target_columns`` order, as psycopg reads it in binary, JSON as
    :class:`~checkpoints.digest.JsonText`), or None where PostgreSQL holds no row for it now."""
    whole: list[tuple[Any, ...]] | None = None
    """Set when the table is to be written whole (a TRUNCATE, or a table without a key): every row now."""


class ReverseBatch(msgspec.Struct):
    lo: int
    """First transaction id covered (inclusive)."""
    hi: int
    """First transaction id not covered: entries of transactions below it are final and in this batch."""
    entries: int
    tables: list[TableBatch]
    held: bool = False
    """Committed entries at or above ``hi`` exist: a transaction older than theirs is still running (in any
    database of the cluster: transaction ids are the cluster's) and holds the horizon below them. A batch
    that read nothing is then not the end of the journal, only a wait."""

    @property
    def empty(self) -> bool:
        return self.entries == 0


def read_batch(
    conn: psycopg.Connection[Any],
    schema: str,
    shapes: Mapping[str, TableShape],
    lo: int,
    *,
    limit: int = DEFAULT_LIMIT,
    final: bool = False,
) -> ReverseBatch:
    """The entries of transactions ``lo`` .. below the horizon, and their rows, in one snapshot.

    ``conn`` is in autocommit mode; this opens and ends its own read-only transaction. ``final``: the app's
    writes are fenced (rollback), so the horizon is the snapshot's ``xmax`` and the batch is not cut short."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        return _read(conn, schema, shapes, lo, limit, final)
    finally:
        conn.execute("COMMIT")


def _read(
    conn: psycopg.Connection[Any], schema: str, shapes: Mapping[str, TableShape], lo: int, limit: int, final: bool
) -> ReverseBatch:
    row = conn.execute(FINAL_HORIZON if final else HORIZON).fetchone()
    assert row is not None
    hi = max(lo, int(row[0]))
    journal = reverse.journal(schema)
    if not final:
        hi = _cut(conn, journal, lo, hi, limit)
    counts: dict[str, int] = {}
    wholes: set[str] = set()
    for tbl, op, n in conn.execute(
        sql.SQL("SELECT tbl, op, count(*) FROM {} WHERE xid >= %s AND xid < %s GROUP BY tbl, op").format(journal),
        (lo, hi),
    ):
        counts[tbl] = counts.get(tbl, 0) + int(n)
        if op == "T":
            wholes.add(tbl)
    tables = [_table(conn, schema, shapes[name], lo, hi, counts[name], name in wholes) for name in sorted(counts)]
    held = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE xid >= %s)").format(journal), (hi,)).fetchone()
    return ReverseBatch(lo, hi, sum(counts.values()), tables, held=bool(held and held[0]))


def _cut(conn: psycopg.Connection[Any], journal: sql.Identifier, lo: int, hi: int, limit: int) -> int:
    """The horizon that bounds the batch to about ``limit`` entries without splitting a transaction.

    The entry at position ``limit`` (in xid order) names the first transaction left out; when that is the
    batch's first transaction (one transaction with more entries than ``limit``), the batch is that transaction
    whole. Comparing with ``lo`` instead would give an empty batch whenever the big transaction's id lies above
    ``lo``, and the reader would never get past it."""
    cut = conn.execute(
        sql.SQL("SELECT xid FROM {} WHERE xid >= %s AND xid < %s ORDER BY xid OFFSET %s LIMIT 1").format(journal),
        (lo, hi, limit),
    ).fetchone()
    if cut is None:
        return hi
    first = conn.execute(sql.SQL("SELECT min(xid) FROM {} WHERE xid >= %s").format(journal), (lo,)).fetchone()
    assert first is not None  # the cut is an entry at or above lo
    return max(int(cut[0]), int(first[0]) + 1)


def _key_types(conn: psycopg.Connection[Any], t: TableShape) -> list[tuple[str, str]]:
    """The key columns and their PostgreSQL types as SQL text (``format_type``: qualified where needed).

    Why the key columns' types alone: the journal's keys are typed by ``jsonb_to_record`` with exactly these
    columns. ``jsonb_populate_record(NULL::table, ...)`` typed them as the whole row, every other column NULL,
    which a NOT NULL domain on any column refused: every batch of that table failed."""
    rows = conn.execute(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attname = ANY(%s) AND NOT a.attisdropped",
        (sql.Identifier(t.schema, t.target).as_string(conn), list(t.key_target)),
    ).fetchall()
    types = {str(name): str(ty) for name, ty in rows}
    return [(c, types.get(c, "text")) for c in t.key_target]  # one dropped: the join names it (UndefinedColumn)


def _table(
    conn: psycopg.Connection[Any], schema: str, t: TableShape, lo: int, hi: int, entries: int, whole: bool
) -> TableBatch:
    columns = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in t.target_columns)
    relation = sql.Identifier(t.schema, t.target)
    if whole or not t.key_target:
        with conn.cursor(binary=True) as cur:
            pg.json_as_text(cur)
            rows = cur.execute(sql.SQL("SELECT {} FROM {} t").format(columns, relation)).fetchall()
        return TableBatch(t.source, entries, {}, whole=rows)
    keys = sql.SQL(", ").join(sql.SQL("k.{}").format(sql.Identifier(c)) for c in t.key_target)
    built = sql.SQL(", ").join(
        sql.SQL("{}, j.key -> {}").format(sql.Literal(c), sql.Literal(i)) for i, c in enumerate(t.key_target)
    )
    on = sql.SQL(" AND ").join(sql.SQL("t.{c} = k.{c}").format(c=sql.Identifier(c)) for c in t.key_target)
    typed = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(ty)) for c, ty in _key_types(conn, t))
    query = sql.SQL(
        "SELECT {keys}, t.ctid IS NOT NULL, {columns} FROM "
        "(SELECT DISTINCT key FROM {journal} WHERE tbl = %s AND xid >= %s AND xid < %s "
        "AND key IS NOT NULL) j "
        "CROSS JOIN LATERAL pg_catalog.jsonb_to_record(pg_catalog.jsonb_build_object({built})) AS k({typed}) "
        "LEFT JOIN {relation} t ON {on}"
    ).format(
        keys=keys, columns=columns, journal=reverse.journal(schema), built=built, typed=typed, relation=relation, on=on
    )
    width = len(t.key_target)
    out: dict[KeyTuple, tuple[Any, ...] | None] = {}
    with conn.cursor(binary=True) as cur:
        pg.json_as_text(cur)
        for found in cur.execute(query, (t.source, lo, hi)):
            key = tuple(found[:width])
            row = tuple(found[width + 1 :]) if found[width] else None
            out[key] = row if row is not None and _own_key(t, key, row) else None
    return TableBatch(t.source, entries, out)


def _own_key(t: TableShape, key: KeyTuple, row: tuple[Any, ...]) -> bool:
    """Whether the row the join found is the journaled key's own, not another key's that PostgreSQL's ``=`` also
    matches: a citext key 'bob' finds the row renamed 'Bob'. That row is its new key's (journaled too); for
    'bob' there is no row any more, and taking 'Bob''s row for it wrote it back twice, under both keys."""
    return tuple(row[p] for p in t.key_positions) == key
