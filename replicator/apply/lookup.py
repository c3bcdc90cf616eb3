"""SQLite's current rows for keys: the keys a batch names, or keys read from PostgreSQL.

The journal holds keys only, so the apply writes each key's row as it is *now*. Keys are looked up in chunks of
``IN`` lists over the key columns (their index), a key holding NULL or text that is not UTF-8 alone with ``IS``;
of what the lookups find only the rows whose key is the looked-up key byte for byte are kept (:func:`_exactly`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any, Final

from replicator.plan.shape import TableShape
from replicator.values import convert, convert_text, refusal
from triggers import journal
from triggers import source as sqlite_source
from triggers.schema import quote_ident

KeyTuple = tuple[Any, ...]


READ_CHUNK: Final = 2_000
"""Keys per SQLite lookup statement (well under SQLITE_MAX_VARIABLE_NUMBER for any key width)."""


def current_rows(conn: sqlite3.Connection, target: TableShape, keys: Sequence[KeyTuple]) -> list[tuple[Any, ...]]:
    """The rows that exist now for ``keys``: loaded columns then key columns, exact SQLite values.

    Plain keys go through ``IN`` lists; a key holding NULL or text that is not UTF-8 is looked up
    alone with ``IS`` (journal.key_predicate), which matches exactly what the trigger recorded.
    """
    try:
        return _current_rows(conn, target, keys)
    except sqlite3.OperationalError as exc:
        if not sqlite_source.undecodable_text(exc):
            raise
    previous = conn.text_factory
    conn.text_factory = convert_text.decode_text
    try:
        return _current_rows(conn, target, keys)
    finally:
        conn.text_factory = previous


#: Key types whose PostgreSQL value is the SQLite value itself, so it finds the SQLite row directly.
_SAME_KEY_TYPES: Final = frozenset({"smallint", "integer", "bigint", "text", "varchar", "bytea"})


def rows_for_target_keys(
    conn: sqlite3.Connection,
    target: TableShape,
    keys: Collection[KeyTuple],
    convert_key: convert.RowConverter,
    *,
    exact: bool | None = None,
) -> list[tuple[Any, ...]]:
    """SQLite's current rows for keys read from PostgreSQL (as :func:`current_rows` returns them).

    Keys of integer, text and bytea columns are looked up as they are. Other key types (a timestamp
    converted from text, say) have several SQLite spellings per value: the table's keys are read and
    converted to find them, a full read of the key column that only a UNIQUE conflict on such a
    table costs. One read transaction, unless the caller holds one (the cutover's frozen source).
    ``exact``: the caller knows better than the key types whether SQLite holds the keys in their PostgreSQL form
    (the reverse writer: by the columns' affinity).
    """
    with contextlib.nullcontext() if conn.in_transaction else journal.read_transaction(conn):
        if exact_keys(target) if exact is None else exact:
            return current_rows(conn, target, list(keys))
        wanted = set(keys)
        names = ", ".join(quote_ident(c) for c in target.key_source)
        found: list[KeyTuple] = []
        for raw in conn.execute(f"SELECT {names} FROM {quote_ident(target.source)}"):  # noqa: S608 - quoted
            try:
                if convert_key(raw) in wanted:
                    found.append(tuple(raw))
            except refusal.RowRefused:
                continue
        return current_rows(conn, target, found)


def exact_keys(target: TableShape) -> bool:
    """Every key column converts one SQLite value to one PostgreSQL value and back (no two spellings)."""
    return all(k.name in _SAME_KEY_TYPES and not k.strip_nul and not k.replace_bad_utf8 for k in target.key_types)


def read_current(conn: sqlite3.Connection, t: TableShape, keys: Sequence[KeyTuple]) -> list[tuple[Any, ...]]:
    """:func:`current_rows` in one read transaction of its own (unless the caller holds one)."""
    with contextlib.nullcontext() if conn.in_transaction else journal.read_transaction(conn):
        return current_rows(conn, t, keys)


def _plain(key: KeyTuple) -> bool:
    for v in key:
        if v is None:
            return False
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def _current_rows(conn: sqlite3.Connection, target: TableShape, keys: Sequence[KeyTuple]) -> list[tuple[Any, ...]]:
    columns = ", ".join(quote_ident(c) for c in (*target.source_columns, *target.key_source))
    base = f"SELECT {columns} FROM {quote_ident(target.source)} WHERE "  # noqa: S608 - quoted identifiers
    width = len(target.key_source)
    plain: list[KeyTuple] = []
    slow: list[KeyTuple] = []
    for k in keys:
        (plain if _plain(k) else slow).append(k)
    rows: list[tuple[Any, ...]] = []
    step = max(1, READ_CHUNK // width)
    if width == 1:
        lhs = quote_ident(target.key_source[0])
        for i in range(0, len(plain), step):
            chunk = plain[i : i + step]
            marks = ",".join("?" * len(chunk))
            query = f"{base}{lhs} IN ({marks})"
            rows += conn.execute(query, [k[0] for k in chunk]).fetchall()
    else:
        lhs = "(" + ", ".join(quote_ident(c) for c in target.key_source) + ")"
        one = "(" + ",".join("?" * width) + ")"
        for i in range(0, len(plain), step):
            chunk = plain[i : i + step]
            params = [v for k in chunk for v in k]
            query = f"{base}{lhs} IN (VALUES {','.join([one] * len(chunk))})"
            rows += conn.execute(query, params).fetchall()
    for key in slow:
        where, params = journal.key_predicate(target.key_source, key)
        rows += conn.execute(base + where, params).fetchall()
    return _exactly(rows, keys, width, lookups=-(-len(plain) // step) + len(slow))


def _exactly(rows: list[tuple[Any, ...]], keys: Sequence[KeyTuple], width: int, lookups: int) -> list[tuple[Any, ...]]:
    """Only the rows whose key is one of ``keys`` byte for byte, each once.

    The lookups compare with the key columns' own collation (so the primary key index is used): under
    NOCASE or RTRIM the key 'Tag' also finds the row keyed 'tag'. That row belongs to the key 'tag'
    only: written for 'Tag' as well, it would be inserted twice, or in the batch that names only the
    REPLACE victim 'Tag'. Python compares text by code point, so set membership is exact for text
    (1 and 1.0 are one key to SQLite and to Python alike, and the journal reader keeps one of them).
    A row is found twice only by two lookup statements (chunks, or single-key lookups).
    """
    if width == 1:
        single = {k[0] for k in keys}
        rows = [row for row in rows if row[-1] in single]
    else:
        wanted = set(keys)
        rows = [row for row in rows if row[-width:] in wanted]
    if lookups > 1:
        unique: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for row in rows:
            unique.setdefault(row[-width:], row)
        rows = list(unique.values())
    return rows
