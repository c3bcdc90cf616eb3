"""verify's reader of the PostgreSQL side: the rows of a key range, of a leaf or of named keys, streamed
through a binary server-side cursor in the caller's transaction, as the shape reads them, and digested.

Key ranges are ``COLLATE "C"`` (the order SQLite's ``COLLATE BINARY`` gives). Columns the independent
reading takes as PostgreSQL's text output (:func:`replicator.inspect.proof.text_output`) are read as
``::text``; the load-path reading reads enum and char(n) so, and JSON documents as their text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from checkpoints.digest import RowEncoder
from replicator import pg
from replicator.inspect import proof
from replicator.inspect.verify_digest import WHOLE, Keep, SideDigest, Span, digest_rows, leaf_rows
from replicator.inspect.verify_shape import (
    FETCH_ROWS,
    TEXT_TYPES,
    Bound,
    Key,
    OnRows,
    Shape,
    key_converters,
    target_rows,
)
from replicator.values import refusal


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
        sql.SQL('{} COLLATE "C"').format(sql.Identifier(c)) if shape.types[p].name in TEXT_TYPES else sql.Identifier(c)
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
    span: Span = WHOLE,
    *,
    fetch_rows: int = FETCH_ROWS,
    on_rows: OnRows | None = None,
) -> SideDigest:
    """PostgreSQL side: rows of ``span`` digested as psycopg returns them, in the caller's transaction
    (a server-side cursor needs one). The span's key values are converted ones."""
    started = time.monotonic()
    where, params = _pg_where(shape, span.lo, span.hi)
    rows = target_rows(shape, _pg_fetch(conn, shape, where, params, fetch_rows, on_rows))
    result = digest_rows(rows, RowEncoder(shape.kinds), shape.key_positions, span)
    result.seconds = time.monotonic() - started
    return result


def pg_leaf(
    conn: psycopg.Connection[Any], shape: Shape, lo: Bound, hi: Bound, nulls: bool, keep: Keep = None
) -> dict[bytes, tuple[Key, bytes]]:
    """PostgreSQL side of a leaf: key → (key, row hash) for the rows of [lo, hi) (converted key values), or
    the NULL keys."""
    where, params = _pg_where(shape, lo, hi, nulls) if shape.key_positions else (sql.SQL(""), [])
    encoder = RowEncoder(shape.kinds)
    return leaf_rows(target_rows(shape, _pg_fetch(conn, shape, where, params, FETCH_ROWS)), shape, encoder, keep)


KEYS_PER_QUERY: Final = 500
"""Keys per PostgreSQL lookup in :func:`pg_by_key` (one ``IN`` list each)."""


def pg_by_key(conn: psycopg.Connection[Any], shape: Shape, keys: Sequence[Key]) -> Iterator[tuple[Any, ...]]:
    """PostgreSQL rows whose key is one of ``keys`` (raw SQLite values, converted as the load converts keys)."""
    located = msgspec.structs.replace(shape, independent=False)
    converters = key_converters(located)
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


def estimate_rows(conn: psycopg.Connection[Any], shape: Shape) -> int:
    """PostgreSQL's estimate of the table's rows (``reltuples``, no scan): a progress bar's total."""
    row = conn.execute(
        "SELECT greatest(c.reltuples, 0)::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (shape.schema, shape.target),
    ).fetchone()
    return int(row[0]) if row else 0
