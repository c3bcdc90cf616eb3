"""REPLACE and UPSERT over keys with a non-BINARY collation (issue 14 item 3), end to end.

Under ``COLLATE NOCASE`` (ASCII only) or ``COLLATE RTRIM`` two keys that differ in bytes conflict in
SQLite: ``INSERT OR REPLACE ('tag')`` deletes the row keyed 'Tag' without firing a DELETE trigger
(recursive_triggers is off), and PostgreSQL, which compares bytes, would keep both rows. Each test:
snapshot by the daemon, the app writes through a new connection per write (as a per-request app does),
the daemon applies, then PostgreSQL is compared with SQLite row by row (tests.support.compare).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.support.compare import check_same, drain
from tests.support.daemon import cfg
from tests.support.source import make_source, write

KEYS = ("Tag", "Straße", "alpha", "Zeta ", "mixed Case")
"""NOCASE folds ASCII letters only: 'Straße' and 'STRAßE' are equal, 'ß' itself is untouched."""


def source(tmp_path: Path, schema: str, rows: list[tuple[Any, ...]], table: str) -> Path:
    path = make_source(tmp_path / "app.db", schema)
    for row in rows:
        marks = ", ".join("?" * len(row))
        write(path, f"INSERT INTO {table} VALUES ({marks})", row)
    return path


def rows_of(path: Path, table: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
    finally:
        conn.close()


@pytest.mark.parametrize("without_rowid", [True, False], ids=["without-rowid", "rowid"])
@pytest.mark.parametrize("batch_rows", [1, 10_000], ids=["one-entry-batches", "one-batch"])
def test_replace_over_nocase_primary_key(tmp_path: Path, pg_dsn: str, without_rowid: bool, batch_rows: int) -> None:
    suffix = " WITHOUT ROWID" if without_rowid else ""
    path = source(
        tmp_path,
        f"CREATE TABLE tags (name TEXT COLLATE NOCASE PRIMARY KEY, n INT){suffix};",
        [(k, i) for i, k in enumerate(KEYS)],
        "tags",
    )
    drain(path, pg_dsn)
    write(path, "INSERT OR REPLACE INTO tags VALUES ('tag', 4)")
    write(path, "REPLACE INTO tags VALUES ('STRAßE', 5)")
    write(path, "INSERT OR REPLACE INTO tags VALUES ('MIXED CASE', 6), ('Mixed case', 7)")
    write(path, "INSERT INTO tags VALUES ('omega', 8)")
    write(path, "UPDATE OR REPLACE tags SET name = 'ALPHA' WHERE name = 'omega'")  # the update's victim
    assert rows_of(path, "tags") == sorted([("tag", 4), ("STRAßE", 5), ("Mixed case", 7), ("ALPHA", 8), ("Zeta ", 3)])
    drain(path, pg_dsn, cfg(batch_rows=batch_rows))
    assert check_same(path, pg_dsn) == {"tags": 5}


def test_replace_over_composite_nocase_rtrim_key(tmp_path: Path, pg_dsn: str) -> None:
    path = source(
        tmp_path,
        "CREATE TABLE m (a TEXT COLLATE NOCASE, b TEXT COLLATE RTRIM, v INT, PRIMARY KEY (a, b)) WITHOUT ROWID;",
        [("X", "b", 1), ("y", "c  ", 2), ("Z", "d", 3)],
        "m",
    )
    drain(path, pg_dsn)
    write(path, "INSERT OR REPLACE INTO m VALUES ('x', 'b  ', 10)")  # both columns differ in bytes
    write(path, "INSERT OR REPLACE INTO m VALUES ('Y', 'c', 20)")
    write(path, "INSERT OR REPLACE INTO m VALUES ('z', 'd', 30)")
    assert rows_of(path, "m") == [("Y", "c", 20), ("x", "b  ", 10), ("z", "d", 30)]
    drain(path, pg_dsn, cfg(batch_rows=1))
    assert check_same(path, pg_dsn) == {"m": 3}


def test_replace_over_nocase_unique_column(tmp_path: Path, pg_dsn: str) -> None:
    """A rowid table whose secondary UNIQUE column is NOCASE: the victim has another id."""
    path = source(
        tmp_path,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT COLLATE NOCASE UNIQUE, name TEXT);",
        [(1, "Ann@x.org", "ann"), (2, "bob@x.org ", "bob")],
        "users",
    )
    drain(path, pg_dsn)
    write(path, "INSERT OR REPLACE INTO users VALUES (3, 'ann@X.ORG', 'ann2')")
    write(path, "INSERT OR REPLACE INTO users VALUES (2, 'BOB@x.org ', 'bob2')")
    assert rows_of(path, "users") == [(2, "BOB@x.org ", "bob2"), (3, "ann@X.ORG", "ann2")]
    drain(path, pg_dsn)
    assert check_same(path, pg_dsn) == {"users": 2}


def test_replace_over_nocase_unique_index_on_the_key_columns(tmp_path: Path, pg_dsn: str) -> None:
    """The PK compares bytes, a UNIQUE index on the same column compares NOCASE: the victim differs in bytes."""
    path = source(
        tmp_path,
        "CREATE TABLE slugs (slug TEXT PRIMARY KEY, n INT) WITHOUT ROWID;"
        "CREATE UNIQUE INDEX slugs_ci ON slugs (slug COLLATE NOCASE);",
        [("Home", 1), ("about", 2)],
        "slugs",
    )
    drain(path, pg_dsn)
    write(path, "INSERT OR REPLACE INTO slugs VALUES ('home', 3)")
    assert rows_of(path, "slugs") == [("about", 2), ("home", 3)]
    drain(path, pg_dsn)
    assert check_same(path, pg_dsn) == {"slugs": 2}


def test_upsert_over_nocase_primary_key(tmp_path: Path, pg_dsn: str) -> None:
    """UPSERT updates the existing row in place (its key keeps its bytes) unless the SET changes the key."""
    path = source(
        tmp_path,
        "CREATE TABLE tags (name TEXT COLLATE NOCASE PRIMARY KEY, n INT) WITHOUT ROWID;",
        [(k, i) for i, k in enumerate(KEYS)],
        "tags",
    )
    drain(path, pg_dsn)
    write(path, "INSERT INTO tags VALUES ('tag', 40) ON CONFLICT (name) DO UPDATE SET n = excluded.n")
    write(path, "INSERT INTO tags VALUES ('STRASSE', 1) ON CONFLICT DO NOTHING")  # no conflict: 'ß' is not 'SS'
    write(
        path,
        "INSERT INTO tags VALUES ('ALPHA', 50) ON CONFLICT (name) DO UPDATE SET name = excluded.name, n = excluded.n",
    )
    # no conflict either: NOCASE keeps the trailing space of 'Zeta '
    write(path, "INSERT INTO tags VALUES ('zeta', 60) ON CONFLICT DO UPDATE SET n = excluded.n")
    assert rows_of(path, "tags") == sorted(
        [("Tag", 40), ("Straße", 1), ("STRASSE", 1), ("ALPHA", 50), ("Zeta ", 3), ("zeta", 60), ("mixed Case", 4)]
    )
    drain(path, pg_dsn, cfg(batch_rows=1))
    assert check_same(path, pg_dsn) == {"tags": 7}


def test_replace_with_recursive_triggers_on(tmp_path: Path, pg_dsn: str) -> None:
    """With recursive_triggers on, SQLite fires our DELETE trigger for the victim too: still exact."""
    path = source(
        tmp_path,
        "CREATE TABLE tags (name TEXT COLLATE NOCASE PRIMARY KEY, n INT) WITHOUT ROWID;",
        [("Tag", 1)],
        "tags",
    )
    drain(path, pg_dsn)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA recursive_triggers = ON")
    with conn:
        conn.execute("INSERT OR REPLACE INTO tags VALUES ('TAG', 2)")
    conn.close()
    drain(path, pg_dsn)
    assert check_same(path, pg_dsn) == {"tags": 1}
