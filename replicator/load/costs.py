"""How long a table takes to profile or to load, estimated, to split the work between two processes.

Only balance depends on these numbers, never correctness: a wrong estimate makes one process wait for the
other (a dominant table's batches are dealt as the helper asks for them, :mod:`replicator.load.share`,
which evens out the rest). The constants were fitted on the benchmark database (``bench/snapshot.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Hashable, Mapping, Sequence
from typing import Final, TypeVar

from replicator.plan import typemap
from replicator.plan.profile import (
    TableProfile,
)
from triggers.schema import Schema, Table, quote_ident

K = TypeVar("K", bound=Hashable)


def split(sizes: Mapping[K, int], helper_start: int = 0, main_start: int = 0) -> tuple[list[K], list[K]]:
    """Largest first, each to the lighter side: (main process's tables, helper's tables).

    ``helper_start``: work the helper has before its first table (starting its interpreter);
    ``main_start``: the main process's part of the shared tables (it reads them).
    """
    sides: tuple[list[K], list[K]] = ([], [])
    weight = [main_start, helper_start]
    for name in sorted(sizes, key=lambda n: (-sizes[n], str(n))):
        side = 0 if weight[0] <= weight[1] else 1
        sides[side].append(name)
        weight[side] += sizes[name] + 1
    return sides


#: The cost model of one table's load, fitted on the benchmark database (bench/snapshot.py, 2 cores):
#: per row (read, convert, checksum, write), per date-time text value (parsed), per stored byte.
ROW_COST_NS: Final = 1_500
DATETIME_TEXT_COST_NS: Final = 1_800
BYTE_COST_NS: Final = 6


def load_costs(
    conn: sqlite3.Connection,
    schema: Schema,
    names: Sequence[str],
    profiles: Mapping[str, TableProfile] | None = None,
) -> dict[str, int]:
    """Each table's expected load time in ns, to split the tables between the two processes.

    Rows alone balance badly: a row of a wide text table costs several narrow ones, and every
    date-time text is parsed. Bytes per row are sampled from the table's first rows.
    """
    costs = {}
    rows = table_rows(conn, schema, names, profiles)
    for name in names:
        table = schema.table(name)
        per_row = ROW_COST_NS + _dated(table) * DATETIME_TEXT_COST_NS + _row_bytes(conn, table) * BYTE_COST_NS
        costs[name] = rows[name] * per_row
    return costs


def table_rows(
    conn: sqlite3.Connection, schema: Schema, names: Sequence[str], profiles: Mapping[str, TableProfile] | None = None
) -> dict[str, int]:
    """Each table's rows, as the profile counted them, else estimated (for balancing only)."""
    return {
        name: profiles[name].rows if profiles and name in profiles else row_estimate(conn, schema.table(name))
        for name in names
    }


#: The profile's cost model (same fit): per row and column coded in SQL, per date-time column
#: proven by a regex; the helper first spends about this long starting (spawn, imports).
PROFILE_COLUMN_NS: Final = 150
PROFILE_DATETIME_NS: Final = 750
HELPER_START_NS: Final = 300_000_000


def profile_costs(conn: sqlite3.Connection, schema: Schema) -> dict[str, int]:
    """Each table's expected profile time in ns: the two processes profile in parallel, and the load
    waits for both (the plan needs every table's types)."""
    return {
        t.name: row_estimate(conn, t) * (len(t.columns) * PROFILE_COLUMN_NS + _dated(t) * PROFILE_DATETIME_NS)
        for t in schema.tables
    }


def _dated(table: Table) -> int:
    """Columns of a date-time family (their text values are parsed on load and proven on profile)."""
    return sum(
        1
        for c in table.columns
        if typemap.family(typemap.parse_declared(c.declared_type), c.affinity) in ("timestamp", "date")
    )


def _row_bytes(conn: sqlite3.Connection, table: Table, sample: int = 256) -> int:
    """Average bytes of a row's values among the table's first ``sample`` rows (a few page reads)."""
    if not table.columns:
        return 0
    lengths = " + ".join(f"ifnull(length(CAST({quote_ident(c.name)} AS BLOB)), 0)" for c in table.columns)
    query = f"SELECT avg({lengths}) FROM (SELECT * FROM main.{quote_ident(table.name)} LIMIT ?)"  # noqa: S608
    try:
        (average,) = conn.execute(query, (sample,)).fetchone()
    except sqlite3.Error:
        return 0
    return int(average or 0)


def row_estimate(conn: sqlite3.Connection, table: Table) -> int:
    """Rows, for balancing only: max(rowid) is an index seek; count(*) for WITHOUT ROWID tables and
    where a column is named rowid (max(rowid) would read that column, which may hold text)."""
    name = quote_ident(table.name)
    if table.without_rowid or any(c.name.lower() == "rowid" for c in table.columns):
        row = conn.execute(f"SELECT count(*) FROM {name}").fetchone()  # noqa: S608 - quoted
    else:
        row = conn.execute(f"SELECT max(rowid) FROM {name}").fetchone()  # noqa: S608 - quoted
    return int(row[0] or 0)
