"""One table's profile in rowid chunks (the how: ``replicator.plan.profiler``'s docstring).

``chunks`` cuts the table, ``scan_chunk`` reads one chunk with one statement (``chunk_sql``: every
value's code from ``replicator.plan.category``, the bulk columns' text, the extremes the affinity
allows) and counts its string in Python, ``finish_profile`` adds the chunks up and reads the exact
extremes the guess missed. Chunks are independent: analyze scans them on several connections, the
snapshot shares a dominant table's chunks between its two processes. A chunk whose string SQLite
cannot hold (SQLITE_TOOBIG) is halved; one that cannot be raises ``TooBig``.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from typing import cast

import msgspec

from replicator.plan.category import (
    BLOB_CH,
    CATEGORIES,
    CODE_BASE,
    MAX_CHUNK_ROWS,
    PENDING_CH,
    bulk_text_counts,
    bulk_text_sql,
    category_code,
    code_sql,
    in_bulk,
)
from replicator.plan.formatsql import MAX_RESULT_COLUMNS
from replicator.plan.profile import (
    FORMATS,
    NO_PLAIN,
    STORAGE_CLASSES,
    STORAGE_ONLY,
    ColumnProfile,
    Plain,
    TableProfile,
)
from triggers import source
from triggers.schema import Affinity, Column, Table, quote_ident

#: Extremes read in the same scan, chosen by affinity (what the column almost always holds). Raw
#: ``min(c)`` is the least integer only when the column holds nothing but integers and NULLs; a
#: column whose values prove the guess wrong gets the exact aggregates in one more scan.
_EXACT = {
    "min_integer": "min(CASE WHEN typeof(@c) = 'integer' THEN @c END)",
    "max_integer": "max(CASE WHEN typeof(@c) = 'integer' THEN @c END)",
    "max_text_bytes": "max(CASE WHEN typeof(@c) = 'text' THEN length(CAST(@c AS BLOB)) END)",
    "max_blob_bytes": "max(CASE WHEN typeof(@c) = 'blob' THEN length(@c) END)",
}
_RAW_INTEGER = {"min_integer": "min(@c)", "max_integer": "max(@c)"}
_RAW_LENGTH = "max(length(CAST(@c AS BLOB)))"
_EXTREME_CLASS = {
    "min_integer": "integer",
    "max_integer": "integer",
    "max_text_bytes": "text",
    "max_blob_bytes": "blob",
}


class _Extreme(msgspec.Struct, frozen=True):
    """One aggregate of the scan: which extremes it yields, and the only classes under which it is exact."""

    sql: str
    names: tuple[str, ...]
    valid_if: frozenset[str]


def _extremes(column: Column, table: Table, plain: Plain = NO_PLAIN) -> list[_Extreme]:
    """The extremes one chunk statement reads for ``column`` (the rowid's come from its index);
    none for a column profiled by storage class only (its type choice reads no extreme)."""
    q = quote_ident(column.name)
    if column.name == table.rowid_alias or plain.get(column.name) == STORAGE_ONLY:
        return []
    if column.affinity is Affinity.INTEGER:
        ints = frozenset({"null", "integer"})
        return [_Extreme(sql.replace("@c", q), (name,), ints) for name, sql in _RAW_INTEGER.items()]
    if column.affinity is Affinity.TEXT:
        return [_Extreme(_RAW_LENGTH.replace("@c", q), ("max_text_bytes",), frozenset({"null", "text"}))]
    if column.affinity is Affinity.REAL:
        return []
    if column.affinity is Affinity.BLOB and column.declared_type.strip():  # declared BLOB
        return [_Extreme(f"max(length({q}))", ("max_blob_bytes",), frozenset({"null", "blob"}))]
    names = ["min_integer", "max_integer", "max_text_bytes"]
    if column.affinity is Affinity.BLOB:
        names.append("max_blob_bytes")
    return [_Extreme(_EXACT[n].replace("@c", q), (n,), frozenset(STORAGE_CLASSES)) for n in names]


#: SQLite's default SQLITE_MAX_FUNCTION_ARG is 127: ``char()`` takes the codes in groups.
CHAR_ARGS = 100
#: Rows per chunk aim at this many characters (one per value) in one ``group_concat``...
CHUNK_CHARS = 1_000_000
#: ... and at about this many bytes of row data (the bulk text of a chunk is at most that).
CHUNK_BYTES = 16 * 2**20
MIN_CHUNK_ROWS = 256
#: Beyond this many equal rowid ranges, chunk boundaries are found by stepping over the rowids.
MAX_CHUNKS = 1024
_FILE_BYTES_SQL = "SELECT p.page_size * c.page_count FROM pragma_page_size AS p, pragma_page_count AS c"


def rowid_name(table: Table) -> str | None:
    """A name that reaches the rowid in this table, or None (WITHOUT ROWID, or every alias shadowed)."""
    if table.without_rowid:
        return None
    if table.rowid_alias:
        return quote_ident(table.rowid_alias)
    names = {c.name.lower() for c in table.columns}
    return next((n for n in ("rowid", "_rowid_", "oid") if n not in names), None)


class Chunk(msgspec.Struct, frozen=True):
    """One statement's share of a table: rowids in ``[low, high]``, or the whole table when ``low`` is None."""

    table: str
    low: int | None = None
    high: int | None = None


def chunk_sql(
    table: Table,
    columns: Sequence[Column],
    *,
    ranged: bool,
    bulk: bool = True,
    null_keys: bool = True,
    plain: Plain = NO_PLAIN,
) -> tuple[str, list[_Extreme]]:
    """The statement for one chunk: the codes of every row as one string, each bulk column's text and
    JSON counts, then the extremes and the NULL-key count. ``bulk=False``: every value coded in SQL.
    Columns named in ``plain`` get their storage class only (see ``profile_table``)."""
    codes = [
        str(category_code("integer"))  # the rowid itself: always an integer
        if c.name == table.rowid_alias
        else code_sql(c, bulk=bulk and in_bulk(c, plain), plain=plain.get(c.name, frozenset()))
        for c in columns
    ]
    row = " || ".join(f"char({', '.join(codes[i : i + CHAR_ARGS])})" for i in range(0, len(codes), CHAR_ARGS))
    extremes = [e for c in columns for e in _extremes(c, table, plain) if e.sql]
    exprs = [f"group_concat({row}, '')"]
    if bulk:
        exprs += [sql for c in columns if in_bulk(c, plain) for sql in bulk_text_sql(c)]
    exprs += [e.sql for e in extremes]
    if null_keys and table.primary_key and not table.rowid_alias:
        exprs.append("sum(" + " OR ".join(f"{quote_ident(c)} IS NULL" for c in table.primary_key) + ")")
    where = ""
    if ranged:
        rowid = rowid_name(table)
        where = f" WHERE {rowid} BETWEEN ? AND ?"
    return f"SELECT {', '.join(exprs)} FROM main.{quote_ident(table.name)}{where}", extremes  # noqa: S608


def chunks(conn: sqlite3.Connection, table: Table) -> list[Chunk]:
    """Rowid ranges of about CHUNK_CHARS values and CHUNK_BYTES bytes each, or the whole table."""
    rowid = rowid_name(table)
    if rowid is None:
        return [Chunk(table.name)]
    try:
        return _chunks(conn, table, rowid)
    except sqlite3.Error as exc:
        raise source.translate(exc, database_path(conn)) from None


def _chunks(conn: sqlite3.Connection, table: Table, rowid: str) -> list[Chunk]:
    query = f"SELECT min({rowid}), max({rowid}) FROM main.{quote_ident(table.name)}"  # noqa: S608
    low, high = conn.execute(query).fetchone()
    if low is None:
        return [Chunk(table.name)]
    span = int(high) - int(low) + 1
    # Bytes per row: at most the whole file over this table's rowid span (other tables count too,
    # so this errs towards smaller chunks); the text of a chunk stays near CHUNK_BYTES.
    file_bytes = int(conn.execute(_FILE_BYTES_SQL).fetchone()[0])
    width = max(1, len(table.columns))

    def rows_per_chunk(rows: int) -> int:
        by_bytes = CHUNK_BYTES // max(1, file_bytes // max(1, rows))
        return max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, CHUNK_CHARS // width, by_bytes))

    per_chunk = rows_per_chunk(span)
    count = -(-span // per_chunk)
    if count <= MAX_CHUNKS:  # dense enough: equal rowid ranges, no extra read
        step = -(-span // count)
        bounds = [int(low) + i * step for i in range(count)] + [int(high) + 1]
    else:  # sparse rowids (or a huge table): exact boundaries, stepping over the rowids
        table_sql = f"main.{quote_ident(table.name)}"
        per_chunk = rows_per_chunk(int(conn.execute(f"SELECT count(*) FROM {table_sql}").fetchone()[0]))  # noqa: S608
        bounds = [int(low)]
        step_sql = f"SELECT {rowid} FROM {table_sql} WHERE {rowid} >= ? ORDER BY {rowid} LIMIT 1 OFFSET ?"  # noqa: S608
        while (row := conn.execute(step_sql, (bounds[-1], per_chunk)).fetchone()) is not None:
            bounds.append(int(row[0]))
        bounds.append(int(high) + 1)
    out = [Chunk(table.name, lo, hi - 1) for lo, hi in itertools.pairwise(bounds) if lo < hi]
    # Rows added beyond either end while we read belong to the first or the last chunk.
    out[0] = Chunk(table.name, -(2**63), out[0].high)
    out[-1] = Chunk(table.name, out[-1].low, 2**63 - 1)
    return out


class ChunkResult(msgspec.Struct):
    rows: int = 0
    null_key_rows: int = 0
    counts: list[dict[str, int]] = msgspec.field(default_factory=list)
    extremes: list[dict[str, int | None]] = msgspec.field(default_factory=list)


def _count_chars(text: str) -> dict[str, int]:
    """How often each character occurs, in as many C passes as there are distinct characters."""
    counts: dict[str, int] = {}
    while text:
        ch = text[0]
        n = text.count(ch)
        counts[ch] = n
        if n == len(text):
            break
        text = text.replace(ch, "")
    return counts


def _execute_chunk(conn: sqlite3.Connection, table: Table, chunk: Chunk, sql: str) -> tuple[object, ...] | None:
    """The chunk's one result row; None when it does not fit in one string (SQLITE_TOOBIG)."""
    params = () if chunk.low is None else (chunk.low, chunk.high)
    try:
        return tuple(conn.execute(sql, params).fetchone())
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_TOOBIG:
            raise source.translate(exc, database_path(conn)) from None
        return None


def column_groups(table: Table, plain: Plain = NO_PLAIN) -> list[list[Column]]:
    """The columns in groups whose statement stays under SQLite's 2000 result columns (one group mostly)."""
    groups: list[list[Column]] = [[]]
    used = 2
    for column in table.columns:
        cost = (3 if in_bulk(column, plain) else 0) + sum(1 for e in _extremes(column, table, plain) if e.sql)
        if groups[-1] and used + cost > MAX_RESULT_COLUMNS:
            groups.append([])
            used = 2
        groups[-1].append(column)
        used += cost
    return groups


def scan_chunk(conn: sqlite3.Connection, table: Table, chunk: Chunk, plain: Plain = NO_PLAIN) -> ChunkResult:
    """Read one chunk: per column, how many values of each category and the extremes the scan could take."""
    groups = column_groups(table, plain)
    parts = [_scan_group(conn, table, chunk, group, null_keys=i == 0, plain=plain) for i, group in enumerate(groups)]
    if any(part is None for part in parts):
        if chunk.low is None or chunk.high is None or chunk.low >= chunk.high:
            raise TooBig(table.name)
        # More rows or text in this range than one string holds (rowids or sizes guessed wrong): halve it.
        middle = chunk.low + (chunk.high - chunk.low) // 2
        halves = (Chunk(chunk.table, chunk.low, middle), Chunk(chunk.table, middle + 1, chunk.high))
        return combine([scan_chunk(conn, table, half, plain) for half in halves])
    found = [part for part in parts if part is not None]
    out = ChunkResult(rows=found[0].rows, null_key_rows=found[0].null_key_rows)
    for part in found:
        out.counts += part.counts
        out.extremes += part.extremes
    return out


def _scan_group(
    conn: sqlite3.Connection,
    table: Table,
    chunk: Chunk,
    columns: list[Column],
    *,
    null_keys: bool,
    plain: Plain = NO_PLAIN,
) -> ChunkResult | None:
    sql, _ = chunk_sql(table, columns, ranged=chunk.low is not None, null_keys=null_keys, plain=plain)
    result = _execute_chunk(conn, table, chunk, sql)
    if result is None:
        return None
    text = str(result[0] or "")
    width = len(columns)
    out = ChunkResult(rows=len(text) // width if width else 0)
    out.counts = [_count_chars(text[i::width]) for i in range(width)]
    values = iter(result[1:])
    exact: list[int] = []
    out.extremes = [{} for _ in columns]
    for i, column in enumerate(columns):
        if not in_bulk(column, plain):
            continue
        data, json, chars = next(values), next(values), next(values)
        pending = out.counts[i].pop(PENDING_CH, 0)
        if not pending:
            continue
        counts = bulk_text_counts(
            data if isinstance(data, bytes) else None,
            pending,
            int(cast(int, json or 0)),
            # a blob's length() would count too: trust the sum only when the chunk has none here
            chars if isinstance(chars, int) and BLOB_CH not in out.counts[i] else None,
            out.rows,
        )
        if counts is None:
            exact.append(i)
            continue
        for ch, n in counts.items():
            out.counts[i][ch] = out.counts[i].get(ch, 0) + n
    for i, column in enumerate(columns):
        for extreme in _extremes(column, table, plain):
            if extreme.sql:
                value = next(values)
                for name in extreme.names:
                    out.extremes[i][name] = value if isinstance(value, int) else None
    if null_keys and table.primary_key and not table.rowid_alias:
        out.null_key_rows = int(cast(int, next(values) or 0))
    if exact:
        # Text with a NUL or invalid UTF-8 in this chunk: these columns again, each value coded in SQL.
        again = _execute_chunk(conn, table, chunk, exact_sql(table, [columns[i] for i in exact], chunk))
        if again is None:
            return None
        codes = str(again[0] or "")
        for j, i in enumerate(exact):
            out.counts[i] = _count_chars(codes[j :: len(exact)])
    return out


def exact_sql(table: Table, columns: Sequence[Column], chunk: Chunk) -> str:
    """Every value of ``columns`` coded in SQL (a Python call per TEXT value)."""
    codes = [code_sql(c) for c in columns]
    row = " || ".join(f"char({', '.join(codes[i : i + CHAR_ARGS])})" for i in range(0, len(codes), CHAR_ARGS))
    exprs = [f"group_concat({row}, '')"]
    where = f" WHERE {rowid_name(table)} BETWEEN ? AND ?" if chunk.low is not None else ""
    return f"SELECT {', '.join(exprs)} FROM main.{quote_ident(table.name)}{where}"  # noqa: S608


def _merge_extreme(name: str, a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b) if name.startswith("min") else max(a, b)


def combine(results: Sequence[ChunkResult]) -> ChunkResult:
    """Several chunks of one table as one."""
    out = ChunkResult(rows=sum(r.rows for r in results), null_key_rows=sum(r.null_key_rows for r in results))
    width = max((len(r.counts) for r in results), default=0)
    for i in range(width):
        counts: dict[str, int] = {}
        extremes: dict[str, int | None] = {}
        for r in results:
            for ch, n in r.counts[i].items():
                counts[ch] = counts.get(ch, 0) + n
            for name, value in r.extremes[i].items():
                extremes[name] = _merge_extreme(name, extremes.get(name), value)
        out.counts.append(counts)
        out.extremes.append(extremes)
    return out


class TooBig(Exception):
    """A chunk that cannot be split further does not fit in one string (SQLITE_TOOBIG)."""


def finish_profile(
    conn: sqlite3.Connection, table: Table, results: Sequence[ChunkResult], plain: Plain = NO_PLAIN
) -> TableProfile:
    """Add up the chunks; columns whose values defeated the affinity guess get exact extremes in one scan."""
    columns = list(table.columns)
    total = combine(results)
    rows, null_keys = total.rows, total.null_key_rows
    merged: list[tuple[dict[str, int], dict[str, int], dict[str, int | None]]] = []
    missing: list[tuple[int, str]] = []
    for i, column in enumerate(columns):
        storage: dict[str, int] = {}
        formats: dict[str, int] = {}
        for ch, n in total.counts[i].items():
            cat = CATEGORIES[ord(ch) - CODE_BASE]
            storage[cat.storage] = storage.get(cat.storage, 0) + n
            for f in cat.formats:
                formats[f] = formats.get(f, 0) + n
        classes = frozenset(storage)
        extremes: dict[str, int | None] = {}
        taken = {
            name: extreme.valid_if
            for extreme in _extremes(column, table)
            for name in extreme.names
            if classes <= extreme.valid_if
        }
        for name in _EXACT:
            if _EXTREME_CLASS[name] not in storage or plain.get(column.name) == STORAGE_ONLY:
                extremes[name] = None
            elif column.name == table.rowid_alias:  # from the table's b-tree: two seeks
                bound = "min" if name == "min_integer" else "max"
                query = f"SELECT {bound}({quote_ident(column.name)}) FROM main.{quote_ident(table.name)}"  # noqa: S608
                try:
                    extremes[name] = int(conn.execute(query).fetchone()[0])
                except sqlite3.Error as exc:
                    raise source.translate(exc, database_path(conn)) from None
            elif name in taken:
                extremes[name] = total.extremes[i].get(name)
            else:
                missing.append((i, name))
        merged.append((storage, formats, extremes))
    if missing:
        exprs = [_EXACT[name].replace("@c", quote_ident(columns[i].name)) for i, name in missing]
        query = f"SELECT {', '.join(exprs)} FROM main.{quote_ident(table.name)}"  # noqa: S608
        try:
            exact = conn.execute(query).fetchone()
        except sqlite3.Error as exc:
            raise source.translate(exc, database_path(conn)) from None
        for (i, name), value in zip(missing, exact, strict=True):
            merged[i][2][name] = value if isinstance(value, int) else None
    profiles = tuple(
        ColumnProfile(
            name=column.name,
            storage=dict(sorted(storage.items(), key=lambda kv: STORAGE_CLASSES.index(kv[0]))),
            formats=dict(sorted(formats.items(), key=lambda kv: FORMATS.index(kv[0]))),
            min_integer=extremes["min_integer"],
            max_integer=extremes["max_integer"],
            max_text_bytes=extremes["max_text_bytes"],
            max_blob_bytes=extremes["max_blob_bytes"],
        )
        for column, (storage, formats, extremes) in zip(columns, merged, strict=True)
    )
    return TableProfile(name=table.name, rows=rows, columns=profiles, null_key_rows=null_keys)


def first_rows(conn: sqlite3.Connection, table: Table, rows: int) -> list[Chunk]:
    """One chunk of the ``rows`` lowest rowids (a sample; the whole table when it has no rowid)."""
    rowid = rowid_name(table)
    if rowid is None:
        return [Chunk(table.name)]
    try:
        (low,) = conn.execute(f"SELECT min({rowid}) FROM main.{quote_ident(table.name)}").fetchone()  # noqa: S608 - quoted
    except sqlite3.Error as exc:
        raise source.translate(exc, database_path(conn)) from None
    if low is None:
        return [Chunk(table.name)]
    return [Chunk(table.name, int(low), int(low) + rows - 1)]


def database_path(conn: sqlite3.Connection) -> str:
    for _seq, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return str(file)
    return "source"
