"""The real-world SQLite files for bench/realworld.py: finding them, reading any schema, scaling one up.

:func:`scale_copy` writes an ``N``× copy of a file for ``--scale``: every row again ``N - 1`` times,
each copy's key columns shifted by ``k * stride``. The key columns are the primary keys, both ends
of every foreign key and the integer columns of UNIQUE indexes; one stride for the whole file,
larger than the spread of any key column, keeps every key unique and every foreign key pointing
into its own copy (a child's ``x + k * stride`` is its parent's ``x + k * stride``). This is only
right when those keys are integers: a file with a text key (Northwind's ``CustomerID``, Prisma's
cuid ids), a UNIQUE index with no integer column (Django's ``uid``) or on an expression, or a
virtual table is refused with the reason rather than copied wrongly (a text suffix would break the
declared lengths and the values the app wrote). Triggers are dropped while copying and put back
(the SOURCES.md load of Sakila does the same: its triggers rewrite ``last_update``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]


def default_realworld() -> Path:
    shared = os.environ.get("REPLICATOR_SHARED")
    return Path(shared) / "realworld" if shared else ROOT.parent / "shared" / "realworld"


def realworld_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in {".db", ".sqlite"})


# --- reading an arbitrary SQLite schema -------------------------------------------------------------


def ro_uri(path: Path) -> str:
    """A read-only SQLite URI for ``path`` (spaces and ``?`` in a name, as in "my db.sqlite", escaped)."""
    return f"file:{quote(str(path.resolve()))}?mode=ro"


def q(name: str) -> str:
    """A SQLite identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def user_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows]


def columns_of(conn: sqlite3.Connection, table: str) -> list[tuple[str, str]]:
    """(name, declared type) of the columns SELECT * returns (generated ones included)."""
    rows = conn.execute(f"PRAGMA table_xinfo({q(table)})").fetchall()
    return [(r[1], r[2] or "") for r in rows if r[6] != 1]


def primary_key(conn: sqlite3.Connection, table: str) -> list[str]:
    rows = conn.execute(f"PRAGMA table_info({q(table)})").fetchall()
    return [r[1] for r in sorted((r for r in rows if r[5] > 0), key=lambda r: r[5])]


@dataclass(frozen=True)
class Index:
    name: str
    unique: bool
    origin: str
    columns: list[str] | None
    """None for an index on an expression or the rowid."""


def indexes_of(conn: sqlite3.Connection, table: str) -> list[Index]:
    found = []
    for _seq, name, unique, origin, partial in conn.execute(f"PRAGMA index_list({q(table)})").fetchall():
        if partial:
            continue
        info = conn.execute(f"PRAGMA index_info({q(name)})").fetchall()
        plain = all(r[1] >= 0 and r[2] is not None for r in info)
        found.append(Index(name, bool(unique), origin, [r[2] for r in info] if plain else None))
    return found


@dataclass(frozen=True)
class ForeignKey:
    table: str
    columns: list[str]
    parent: str
    parent_columns: list[str]


def foreign_keys(conn: sqlite3.Connection, table: str) -> list[ForeignKey]:
    groups: dict[int, list[Any]] = {}
    for row in conn.execute(f"PRAGMA foreign_key_list({q(table)})").fetchall():
        groups.setdefault(row[0], []).append(row)
    keys = []
    for rows in groups.values():
        parent = rows[0][2]
        targets = [r[4] for r in rows]
        if any(t is None for t in targets):  # REFERENCES parent: its primary key
            targets = primary_key(conn, parent)
        keys.append(ForeignKey(table, [r[3] for r in rows], parent, targets))
    return keys


def row_count(db: Path) -> int:
    conn = sqlite3.connect(ro_uri(db), uri=True)
    try:
        return sum(conn.execute(f"SELECT count(*) FROM {q(t)}").fetchone()[0] for t in user_tables(conn))
    finally:
        conn.close()


# --- --scale: an N× copy with new keys ---------------------------------------------------------------


class ScaleRefused(Exception):
    """This file's keys cannot be offset (the message says which and why)."""


Uniques = list[tuple[str, list[str]]]
"""(table, columns) of each primary key and UNIQUE index."""


def _key_columns(conn: sqlite3.Connection, tables: list[str]) -> tuple[dict[str, set[str]], Uniques]:
    """Columns that must be integer keys (PKs, both ends of FKs) per table, and each table's UNIQUE groups."""
    keys: dict[str, set[str]] = {t: set(primary_key(conn, t)) for t in tables}
    uniques: Uniques = []
    for table in tables:
        for fk in foreign_keys(conn, table):
            keys[table].update(fk.columns)
            if fk.parent in keys:  # a missing parent table: nothing to keep in step
                keys[fk.parent].update(fk.parent_columns)
        if pk := primary_key(conn, table):
            uniques.append((table, pk))
        for index in indexes_of(conn, table):
            if index.unique and index.columns is None:
                raise ScaleRefused(f"{table}: a UNIQUE index ({index.name}) on an expression")
            if index.unique and index.columns:
                uniques.append((table, index.columns))
    return keys, uniques


def _integer_only(conn: sqlite3.Connection, table: str, column: str) -> bool:
    sql = f"SELECT count(*) FROM {q(table)} WHERE {q(column)} IS NOT NULL AND typeof({q(column)}) <> 'integer'"
    return bool(conn.execute(sql).fetchone()[0] == 0)


def offset_plan(conn: sqlite3.Connection) -> tuple[dict[str, set[str]], int]:
    """The columns each copy shifts, per table, and the stride; raises ScaleRefused if no stride can work."""
    if conn.execute("SELECT count(*) FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL%'").fetchone()[0]:
        raise ScaleRefused("a virtual table (its rows live in shadow tables)")
    tables = user_tables(conn)
    keys, uniques = _key_columns(conn, tables)
    for table in tables:
        for column in sorted(keys[table]):
            if not _integer_only(conn, table, column):
                raise ScaleRefused(f"key {table}.{column} holds non-integer values: a copy would need new text keys")
    shifted = {t: set(keys[t]) for t in tables}
    for table, columns in uniques:
        shifted[table].update(c for c in columns if _integer_only(conn, table, c))
        if not shifted[table] & set(columns):
            raise ScaleRefused(f"UNIQUE ({', '.join(columns)}) on {table} has no integer column to shift")
    spread = 0
    for table, shifts in shifted.items():
        for column in shifts:
            low, high = conn.execute(f"SELECT min({q(column)}), max({q(column)}) FROM {q(table)}").fetchone()
            if low is not None:
                spread = max(spread, high - low)
    return shifted, spread + 1


def scale_copy(source: Path, dest: Path, factor: int) -> dict[str, int]:
    """Write ``dest``: ``source`` with every table's rows ``factor`` times (see the module docstring);
    returns the rows per table. Raises ScaleRefused (and leaves no ``dest``) when the keys are not integers."""
    shutil.copyfile(source, dest)
    os.chmod(dest, 0o644)
    conn = sqlite3.connect(f"file:{quote(str(dest.resolve()))}", uri=True, isolation_level=None)
    try:
        shifted, stride = offset_plan(conn)
        _check_range(conn, shifted, stride * (factor - 1))
        conn.execute("ATTACH DATABASE ? AS orig", (ro_uri(source),))
        triggers = [r[0] for r in conn.execute("SELECT sql FROM main.sqlite_master WHERE type = 'trigger'")]
        names = [r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'trigger'")]
        conn.execute("BEGIN")
        for name in names:
            conn.execute(f"DROP TRIGGER main.{q(name)}")
        for k in range(1, factor):
            for table, columns in shifted.items():
                _copy_once(conn, table, columns, k * stride)
        for statement in triggers:
            conn.execute(statement)
        conn.execute("COMMIT")
        return {t: conn.execute(f"SELECT count(*) FROM main.{q(t)}").fetchone()[0] for t in shifted}
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        conn.close()


def _check_range(conn: sqlite3.Connection, shifted: dict[str, set[str]], largest: int) -> None:
    for table, columns in shifted.items():
        for column in columns:
            high = conn.execute(f"SELECT max({q(column)}) FROM {q(table)}").fetchone()[0]
            if high is not None and high + largest >= 2**63:
                raise ScaleRefused(f"{table}.{column} would pass the 64-bit range")


def _copy_once(conn: sqlite3.Connection, table: str, shifted: set[str], offset: int) -> None:
    columns = [r[1] for r in conn.execute(f"PRAGMA main.table_xinfo({q(table)})") if r[6] == 0]
    values = [f"{q(c)} + {offset}" if c in shifted else q(c) for c in columns]
    names = ", ".join(map(q, columns))
    conn.execute(f"INSERT INTO main.{q(table)} ({names}) SELECT {', '.join(values)} FROM orig.{q(table)}")
