"""What the values in each column actually are, measured in SQL, chunk by chunk: ``profile_table``.

SQLite lets any column hold any storage class, so the declared type proves nothing: analyze reports
this profile (``replicator.plan.profile``) to the operator, and the schema translation picks
PostgreSQL types from it.

CONTRACT (shared by analyze and schema translation; extend, do not rename):
``profile_table(conn, table) -> TableProfile``: every value's storage class (``typeof``), formats
(FORMATS) and extremes, measured with aggregate SQL over the whole table, never by fetching rows
into Python one at a time.

How (measured in ``bench/analyze.py`` and ``bench/profile_bench.py``), one module per part:

* ``chunkscan``: the table is read in rowid chunks (``chunks``: equal rowid ranges, or boundaries
  found by stepping when rowids are sparse; one chunk for WITHOUT ROWID tables), one statement per
  chunk. Several connections can read chunks at once (``replicator.plan.analyze``). Extremes are
  plain ``min``/``max`` where the affinity says what the column holds; a column whose values prove
  the guess wrong gets the exact ``CASE typeof`` aggregates in one more statement. SQLite caps a
  result row at 2000 columns: wider tables take one statement per column group.
* ``category``: each value becomes ONE character naming its category (storage class plus formats;
  the CATEGORIES are disjoint), computed by dispatching once on ``typeof`` and testing only that
  class's formats; a row becomes ``char(code1, code2, ...)`` and the chunk one ``group_concat`` of
  them, which Python counts per column with ``str.count``. One aggregate step per row instead of one
  ``count(*) FILTER`` per format (the first design, kept as ``legacy_profile_table`` over
  ``formatsql``, the formats as SQL conditions).
* TEXT values of columns that may hold text (``is_bulk``) are not classified in SQL: the chunk
  hands Python their bytes joined by NULs. One ``count`` proves no value holds a NUL, one
  ``decode`` that all are valid UTF-8 (which SQLite cannot test), and then the cheapest proof that
  fits classifies them: a JSON column counts first characters (SQLite's ``json_valid`` is summed in
  the same statement), one regex matches a column that has a single format throughout, one search
  shows that no value starts like a format; otherwise each distinct value is classified once.
  A chunk with a NUL or invalid UTF-8 is coded again value by value (``replicator_text_class``).

Runs in whatever transaction the caller holds (one point in time, as the snapshot does); in
autocommit every statement is its own short read.
"""

from __future__ import annotations

import sqlite3
import time

from replicator import log
from replicator.plan.category import TEXT_FUNCTION, text_class
from replicator.plan.chunkscan import TooBig, chunks, database_path, finish_profile, first_rows, scan_chunk
from replicator.plan.formatsql import (
    COLUMNS_PER_SCAN,
    PER_COLUMN,
    UTF8_FUNCTION,
    column_profile,
    scan_sql,
    utf8_invalid,
)
from replicator.plan.profile import NO_PLAIN, ColumnProfile, Plain, TableProfile
from triggers import source
from triggers.schema import Table, read_schema


def register(conn: sqlite3.Connection) -> None:
    """The Python functions the scans call (per connection)."""
    conn.create_function(TEXT_FUNCTION, 1, text_class, deterministic=True)
    conn.create_function(UTF8_FUNCTION, 1, utf8_invalid, deterministic=True)


def profile_table(
    conn: sqlite3.Connection, table: Table | str, *, plain: Plain = NO_PLAIN, sample: int | None = None
) -> TableProfile:
    """Measure every column of ``table``: one statement per rowid chunk, counted in Python.

    ``table`` is a ``triggers.schema.Table`` (or a name, read from the schema). Runs in whatever
    transaction the caller holds (one point in time); in autocommit each chunk is its own short read.
    ``plain`` names columns whose values of some storage classes are counted by class only, without
    formats (so a text class in it means no NUL or UTF-8 counts either; a column plain in every
    class gets no extremes either): create mode's type choice
    for a TEXT or BLOB column reads nothing else, nor does an INTEGER column's for its numbers, and
    proving every value's formats is most of a profile's cost (``typemap.plain_classes``).
    ``sample``: only the rows among the first ``sample`` rowids (the snapshot's guess, which its
    load then verifies row by row; see ``replicator.load.snapshot.guess_profile``).
    """
    if isinstance(table, str):
        table = read_schema(conn).table(table)
    logger = log.get("profile", table=table.name)
    started = time.perf_counter()
    register(conn)
    parts = chunks(conn, table) if sample is None else first_rows(conn, table, sample)
    try:
        results = [scan_chunk(conn, table, part, plain) for part in parts]
    except TooBig:
        return legacy_profile_table(conn, table)
    prof = finish_profile(conn, table, results, plain)
    logger.debug(
        "profiled", rows=prof.rows, columns=len(table.columns), chunks=len(parts), seconds=time.perf_counter() - started
    )
    return prof


def legacy_profile_table(conn: sqlite3.Connection, table: Table) -> TableProfile:
    """The aggregate-per-format scan (``scan_sql``): no string per chunk, for a WITHOUT ROWID table too big for one."""
    register(conn)
    columns = list(table.columns)
    parts = [columns[i : i + COLUMNS_PER_SCAN] for i in range(0, len(columns), COLUMNS_PER_SCAN)] or [[]]
    profiles: list[ColumnProfile] = []
    rows = null_key_rows = 0
    for part in parts:
        try:
            result = conn.execute(scan_sql(table, part)).fetchone()
        except sqlite3.Error as exc:
            raise source.translate(exc, database_path(conn)) from None
        rows, null_key_rows = int(result[0]), int(result[1] or 0)
        for i, col in enumerate(part):
            start = 2 + i * PER_COLUMN
            profiles.append(column_profile(col.name, result[start : start + PER_COLUMN]))
    return TableProfile(name=table.name, rows=rows, columns=tuple(profiles), null_key_rows=null_key_rows)
