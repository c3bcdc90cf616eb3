"""verify's reader of the SQLite side: the rows of a key range, of a leaf or of named keys, read in the
caller's read transaction as the shape reads them, and digested.

Key ranges are ``COLLATE BINARY`` (UTF-8 byte order, as PostgreSQL's ``COLLATE "C"`` and Python's code
point order). Text that is not UTF-8 is read again with the snapshot's fallback (surrogate escapes, the
convention :mod:`replicator.inspect.proof` reads). The functions that take the connection first run in
verify's child process too (:mod:`replicator.inspect.verify_sides`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from checkpoints.digest import RowEncoder
from replicator.inspect.verify_digest import WHOLE, Keep, SideDigest, Span, digest_rows, leaf_rows
from replicator.inspect.verify_shape import FETCH_ROWS, TEXT_TYPES, Bound, Key, OnRows, Shape, source_rows
from replicator.values import convert_text
from triggers import journal
from triggers import source as sqlite_source
from triggers.schema import quote_ident


def _sqlite_key_expr(shape: Shape) -> list[str]:
    return [
        f"{quote_ident(c)} COLLATE BINARY" if shape.types[p].name in TEXT_TYPES else quote_ident(c)
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


def with_text_fallback(conn: sqlite3.Connection, read: Callable[[], Any]) -> Any:
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
    span: Span = WHOLE,
    fetch_rows: int = FETCH_ROWS,
    on_rows: OnRows | None = None,
) -> SideDigest:
    """SQLite side: rows of ``span`` (default: the table) converted and digested, in the caller's read
    transaction. ``span.lo``/``span.hi`` are raw SQLite key values; ``span.bounds`` converted ones (see
    SideDigest). ``on_rows`` is told each fetched batch's size (progress)."""
    started = time.monotonic()
    where, params = _sqlite_where(shape, span.lo, span.hi)
    query = _sqlite_select(shape, where)
    to_rows = source_rows(shape)
    encoder = RowEncoder(shape.kinds)

    def read() -> SideDigest:
        rows = to_rows(_sqlite_fetch(conn, query, params, fetch_rows, on_rows))
        return digest_rows(rows, encoder, shape.key_positions, span)

    result: SideDigest = with_text_fallback(conn, read)
    result.seconds = time.monotonic() - started
    return result


def sqlite_count(conn: sqlite3.Connection, shape: Shape) -> int:
    (count,) = conn.execute(f"SELECT count(*) FROM {quote_ident(shape.source)}").fetchone()  # noqa: S608
    return int(count)


def boundary_keys(conn: sqlite3.Connection, shape: Shape, lo: Bound, hi: Bound, step: int) -> list[tuple[Any, ...]]:
    """Every ``step``-th key of [lo, hi) in key order (by ``row_number()``, NULL keys left out, not the first):
    the split points the bisection samples (:mod:`replicator.inspect.verify_compare`)."""
    cols = ", ".join(quote_ident(c) for c in shape.key_source)
    order = ", ".join(_sqlite_key_expr(shape))
    where, params = _sqlite_where(shape, lo, hi)
    nonnull = " AND ".join(f"{quote_ident(c)} IS NOT NULL" for c in shape.key_source)
    where = f"{where} AND {nonnull}" if where else f" WHERE {nonnull}"
    query = (
        f"SELECT {cols} FROM (SELECT {cols}, row_number() OVER (ORDER BY {order}) AS rn "  # noqa: S608 - quote_ident
        f"FROM {quote_ident(shape.source)}{where}) WHERE rn % ? = 1 AND rn > 1 ORDER BY rn"
    )
    rows: list[tuple[Any, ...]] = with_text_fallback(
        conn, lambda: [tuple(r) for r in conn.execute(query, [*params, step])]
    )
    return rows


def sqlite_leaf(
    conn: sqlite3.Connection, shape: Shape, lo: Bound, hi: Bound, nulls: bool, keep: Keep = None
) -> dict[bytes, tuple[Key, bytes]]:
    """SQLite side of a leaf: key → (key, row hash) for the rows of [lo, hi) (or the NULL keys)."""
    where, params = _sqlite_where(shape, lo, hi, nulls) if shape.key_positions else ("", [])
    query = _sqlite_select(shape, where)
    to_rows = source_rows(shape)
    encoder = RowEncoder(shape.kinds)
    found: dict[bytes, tuple[Key, bytes]] = with_text_fallback(
        conn, lambda: leaf_rows(to_rows(_sqlite_fetch(conn, query, params, FETCH_ROWS)), shape, encoder, keep)
    )
    return found


def sqlite_by_key(conn: sqlite3.Connection, shape: Shape, keys: Sequence[Key]) -> Iterator[Sequence[Any]]:
    """SQLite rows holding exactly ``keys`` (a NOCASE key's lookup can return another spelling: left out)."""
    width = len(shape.key_source)
    cols = ", ".join(quote_ident(c) for c in (*shape.source_columns, *shape.key_source))
    select = f"SELECT {cols} FROM {quote_ident(shape.source)} WHERE "  # noqa: S608 - quote_ident
    for key in keys:
        where, params = journal.key_predicate(shape.key_source, key)
        for row in conn.execute(select + where, params).fetchall():
            if journal.same_key(row[-width:], key):
                yield row[:-width]
