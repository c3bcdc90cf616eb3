"""Update shapes the apply must get exactly right whatever path a row takes (delete + conflict
delete + insert through staging, a COPY straight into a table without a secondary UNIQUE index, or
an in-place UPDATE if one is ever added): no-op updates, non-indexed and indexed non-unique columns,
unique values swapped or handed over inside one batch, -0.0, key changes, REPLACE victims, and a
UNIQUE index only PostgreSQL has. Each is checked row by row, the running digest equal to the
table's digest."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.support.compare import check_same, drain
from tests.support.daemon import cfg
from tests.support.source import app, make_source

SCHEMA = """
CREATE TABLE item (
    id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, tag TEXT, note TEXT, score REAL, doc JSON
);
CREATE INDEX item_tag ON item (tag);
CREATE TABLE plain (id INTEGER PRIMARY KEY, v TEXT, n INTEGER);
CREATE INDEX plain_v ON plain (v);
"""
ROWS = """
INSERT INTO item VALUES (1, 'a', 't1', 'n1', 1.5, '{"k": 1}'), (2, 'b', 't2', 'n2', 0.0, NULL),
    (3, 'c', 't3', NULL, NULL, '[1, 2]'), (4, 'd', 't1', 'n4', 4.0, '{}');
INSERT INTO plain VALUES (1, 'x', 1), (2, 'y', 2), (3, 'z', 3);
"""


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_source(tmp_path / "app.db", SCHEMA, ROWS)


def test_noop_update(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    db.execute("UPDATE item SET note = note, tag = tag WHERE id IN (1, 3)")  # journaled, nothing changes
    db.execute("UPDATE item SET score = 2.5 WHERE id = 2")
    result = drain(src, pg_dsn)
    assert result.changes == 3
    check_same(src, pg_dsn)


def test_update_of_a_non_indexed_column(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    db.execute("UPDATE plain SET n = n + 10")
    db.execute("UPDATE item SET note = 'changed', score = 9 WHERE id = 2")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT sum(n) FROM plain").fetchone() == (36,)


def test_update_of_an_indexed_non_unique_column(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    db.execute("UPDATE item SET tag = 'moved', doc = '{\"k\": 2}' WHERE id IN (1, 4)")
    db.execute("UPDATE plain SET v = 'w' WHERE id = 2")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT id FROM item WHERE tag = 'moved' ORDER BY id").fetchall() == [(1,), (4,)]
        assert conn.execute("SELECT id FROM plain WHERE v = 'w'").fetchall() == [(2,)]


def test_unique_swap_next_to_in_place_rows(src: Path, pg_dsn: str) -> None:
    """Two rows swap their unique codes in one batch while others change in place: the swap takes
    the delete + insert path, the rest stays where it is."""
    drain(src, pg_dsn)
    db = app(src)
    db.execute("BEGIN")
    db.execute("UPDATE item SET code = 'tmp', note = 'swapped' WHERE id = 1")
    db.execute("UPDATE item SET code = 'a' WHERE id = 2")
    db.execute("UPDATE item SET code = 'b' WHERE id = 1")
    db.execute("UPDATE item SET note = 'kept', score = -1 WHERE id IN (3, 4)")
    db.execute("INSERT INTO item VALUES (5, 'e', 't5', NULL, NULL, NULL)")
    db.execute("COMMIT")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT id, code FROM item ORDER BY id").fetchall() == [
            (1, "b"),
            (2, "a"),
            (3, "c"),
            (4, "d"),
            (5, "e"),
        ]


def test_unique_value_moves_to_a_row_changed_in_place(src: Path, pg_dsn: str) -> None:
    """Row 1 gives its code up and row 4 takes it in the same batch, each also changing other columns."""
    drain(src, pg_dsn)
    db = app(src)
    db.execute("BEGIN")
    db.execute("UPDATE item SET code = 'a2', note = 'gave' WHERE id = 1")
    db.execute("UPDATE item SET code = 'a', note = 'took' WHERE id = 4")
    db.execute("UPDATE item SET note = 'same code' WHERE id = 2")
    db.execute("COMMIT")
    drain(src, pg_dsn, cfg(batch_rows=2))  # batch ends mid-way: converges later
    check_same(src, pg_dsn)


def test_negative_zero_and_key_changes(src: Path, pg_dsn: str) -> None:
    """0.0 -> -0.0 compares equal in SQL but is a change (byte-wise); a key change is delete + insert."""
    drain(src, pg_dsn)
    db = app(src)
    db.execute("UPDATE item SET score = -0.0 WHERE id = 2")
    db.execute("UPDATE item SET id = 40 WHERE id = 4")
    db.execute("UPDATE plain SET id = 30, n = 33 WHERE id = 3")
    db.execute("DELETE FROM plain WHERE id = 1")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_replace_victim_with_in_place_rows(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    db.execute("BEGIN")
    db.execute("UPDATE item SET note = 'in place' WHERE id = 1")
    db.execute("INSERT OR REPLACE INTO item VALUES (9, 'b', 't9', NULL, NULL, NULL)")  # replaces id 2
    db.execute("COMMIT")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_stricter_target_unique_index_fails_instead_of_deleting(src: Path, pg_dsn: str) -> None:
    """A UNIQUE index only PostgreSQL has, and two rows of one batch that SQLite holds with the same
    values there (one of them unchanged, a no-op update): the batch fails, no row is silently dropped."""
    drain(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE UNIQUE INDEX plain_v_n ON plain (v, n)")
    db = app(src)
    db.execute("BEGIN")
    db.execute("UPDATE plain SET v = v WHERE id = 1")  # (x, 1), unchanged
    db.execute("UPDATE plain SET v = 'x', n = 1 WHERE id = 2")  # (x, 1) too
    db.execute("COMMIT")
    with pytest.raises(Exception, match="plain"):
        drain(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT id, v, n FROM plain ORDER BY id").fetchall() == [
            (1, "x", 1),
            (2, "y", 2),
            (3, "z", 3),
        ]


def test_many_rows_mixed_batches(src: Path, pg_dsn: str) -> None:
    """A larger mix over several batches: updates of every kind, inserts, deletes, no-ops."""
    drain(src, pg_dsn)
    db = app(src)
    db.execute("BEGIN")
    for i in range(10, 400):
        db.execute("INSERT INTO item VALUES (?, ?, ?, ?, ?, ?)", (i, f"c{i}", f"t{i % 7}", None, i / 3, '{"i": 1}'))
        db.execute("INSERT INTO plain VALUES (?, ?, ?)", (i, f"v{i % 5}", i))
    db.execute("COMMIT")
    db.execute("UPDATE item SET score = score * 2 WHERE id % 3 = 0")
    db.execute("UPDATE item SET tag = 'x' WHERE id % 5 = 0")
    db.execute("UPDATE item SET code = code || '!' WHERE id % 7 = 0")
    db.execute("UPDATE item SET note = note WHERE id % 11 = 0")
    db.execute("UPDATE plain SET n = -n WHERE id % 2 = 0")
    db.execute("DELETE FROM plain WHERE id % 13 = 0")
    db.execute("DELETE FROM item WHERE id % 17 = 0")
    drain(src, pg_dsn, cfg(batch_rows=150))
    check_same(src, pg_dsn)
