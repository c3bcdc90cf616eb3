"""Resumable snapshots: interrupted at a random row, rerun with --resume; never two sources mixed."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator import config
from replicator.errors import TargetError, TargetNotEmpty, UsageError
from replicator.load import snapshot
from replicator.state.identity import source_identity
from replicator.state.store import StateStore
from tests.support.compare import assert_same
from tests.support.pgserver import fresh_database
from tests.support.snapshot import Interrupt
from tests.support.source import make_source
from triggers.schema import read_schema

#: One process: Ctrl-C here stops the one table being loaded (a parallel run is tested apart).
CFG = config.load(overrides={"snapshot": {"workers": 1}}, environ={})
PARALLEL = config.load(overrides={"snapshot": {"workers": 2, "helper_min_bytes": 0}}, environ={})
SIZES = {"author": 300, "book": 900, "review": 1500}


BOOKSHOP = """
        CREATE TABLE author (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, born DATE);
        CREATE TABLE book (id INTEGER PRIMARY KEY, author_id INTEGER REFERENCES author (id), title TEXT,
                           price REAL, cover BLOB);
        CREATE INDEX book_author ON book (author_id);
        CREATE TABLE review (id INTEGER PRIMARY KEY, book_id INTEGER REFERENCES book (id), stars INTEGER,
                             body TEXT, at DATETIME);
        """


def bookshop(path: Path) -> Path:
    """Authors, books and reviews (``SIZES`` rows, seeded values), without capture: a snapshot's source."""
    make_source(path, BOOKSHOP, capture=False)
    conn = sqlite3.connect(path, isolation_level=None)
    rnd = random.Random(3)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO author (name, born) VALUES (?, ?)",
        [(f"author {i}", f"19{i % 90 + 10}-0{i % 9 + 1}-1{i % 9}") for i in range(SIZES["author"])],
    )
    conn.executemany(
        "INSERT INTO book VALUES (?, ?, ?, ?, ?)",
        [(i, i % 300 + 1, f"title {i} ✓", rnd.random() * 50, rnd.randbytes(16)) for i in range(1, SIZES["book"] + 1)],
    )
    conn.executemany(
        "INSERT INTO review VALUES (?, ?, ?, ?, ?)",
        [(i, i % 900 + 1, i % 5, "x" * (i % 200), f"2023-05-0{i % 9 + 1}T12:00:00Z") for i in range(1, 1501)],
    )
    conn.execute("COMMIT")
    conn.close()
    return path


def loaded(pg: psycopg.Connection[Any]) -> dict[str, int]:
    return dict(pg.execute("SELECT table_name, rows FROM replicator.snapshot_tables").fetchall())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_interrupted_at_a_random_row_then_resumed(
    tmp_path: Path, pg_dsn: str, pg: Any, pg_server: str, seed: int
) -> None:
    path = bookshop(tmp_path / "app.db")
    at = random.Random(seed).randrange(1, sum(SIZES.values()))
    with pytest.raises(KeyboardInterrupt):
        snapshot.snapshot(path, pg_dsn, CFG, fetch_rows=37, progress=Interrupt(at))
    done = loaded(pg)
    order = ["author", "book", "review"]
    finished = [t for t in order if t in done]
    assert finished == order[: len(finished)]  # only whole tables are recorded
    assert all(done[t] == SIZES[t] for t in finished)
    interrupted = order[len(finished)]
    assert pg.execute(f"SELECT count(*) FROM {interrupted}").fetchone() == (0,)
    assert pg.execute("SELECT status, message FROM replicator.runs").fetchall() == [("failed", "interrupted")]

    if finished:  # a plain rerun refuses and names the tables that hold rows
        with pytest.raises(TargetNotEmpty, match=", ".join(finished)):
            snapshot.snapshot(path, pg_dsn, CFG)
    result = snapshot.snapshot(path, pg_dsn, CFG, resume=True)
    assert [t.table for t in result.tables if t.resumed] == finished
    assert result.plan is not None
    assert assert_same(path, pg, result.plan) == SIZES
    indexes = {r[0] for r in pg.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'").fetchall()}
    assert "book_author" in indexes
    assert pg.execute("SELECT nextval(pg_get_serial_sequence('author', 'id'))").fetchone() == (SIZES["author"] + 1,)

    # The checksums of a resumed snapshot equal those of one uninterrupted run.
    with fresh_database(pg_server) as other:
        whole = snapshot.snapshot(path, other, CFG)
    assert {t.table: t.checksum for t in result.tables} == {t.table: t.checksum for t in whole.tables}
    assert {t.table: t.checksum for t in result.tables} == dict(
        pg.execute("SELECT table_name, checksum FROM replicator.snapshot_tables").fetchall()
    )


def test_resume_refuses_another_source_file(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    first = bookshop(tmp_path / "a.db")
    second = bookshop(tmp_path / "b.db")
    with pytest.raises(KeyboardInterrupt):
        snapshot.snapshot(first, pg_dsn, CFG, fetch_rows=50, progress=Interrupt(SIZES["author"] + 100))
    with pytest.raises(UsageError, match=r"another source file: .*a\.db"):
        snapshot.snapshot(second, pg_dsn, CFG, resume=True)
    assert loaded(pg) == {"author": SIZES["author"]}
    result = snapshot.snapshot(second, pg_dsn, CFG, replace=True)
    assert result.rows == sum(SIZES.values())
    assert {s.source_id for s in StateStore(pg, "replicator").loaded_tables().values()} == {source_identity(second).id}


def test_resume_of_a_finished_snapshot_loads_nothing(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = bookshop(tmp_path / "app.db")
    first = snapshot.snapshot(path, pg_dsn, CFG)
    again = snapshot.snapshot(path, pg_dsn, CFG, resume=True)
    assert all(t.resumed for t in again.tables)
    assert [t.checksum for t in again.tables] == [t.checksum for t in first.tables]
    assert pg.execute("SELECT count(*) FROM review").fetchone() == (SIZES["review"],)


def test_resume_refuses_rows_it_did_not_load(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = bookshop(tmp_path / "app.db")
    with pytest.raises(KeyboardInterrupt):
        snapshot.snapshot(path, pg_dsn, CFG, fetch_rows=50, progress=Interrupt(SIZES["author"] + 100))
    pg.execute("INSERT INTO review (id) VALUES (1)")  # someone else's row
    with pytest.raises(TargetNotEmpty, match="no earlier snapshot of this source recorded: review"):
        snapshot.snapshot(path, pg_dsn, CFG, resume=True)


def test_parallel_run_interrupted_then_resumed(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """Two processes: the helper finishes (or rolls back) its own table; only whole tables are recorded."""
    path = bookshop(tmp_path / "app.db")
    with pytest.raises(KeyboardInterrupt):
        snapshot.snapshot(path, pg_dsn, PARALLEL, fetch_rows=37, progress=Interrupt(500))
    done = loaded(pg)
    assert all(done[t] == SIZES[t] for t in done)
    for table in set(SIZES) - set(done):
        assert pg.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    result = snapshot.snapshot(path, pg_dsn, PARALLEL, resume=True)
    assert {t.table for t in result.tables if t.resumed} == set(done)
    assert result.plan is not None
    assert assert_same(path, pg, result.plan) == SIZES


@pytest.mark.parametrize("cfg", [CFG, PARALLEL], ids=["one-process", "two-processes"])
def test_each_table_is_indexed_and_analyzed_after_its_load(tmp_path: Path, pg_dsn: str, pg: Any, cfg: Any) -> None:
    """Indexes, UNIQUE and ANALYZE follow each table's load (overlapping the other process's COPY);
    the FKs come last, NOT VALID, once every table they reference is there."""
    path = bookshop(tmp_path / "app.db")
    result = snapshot.snapshot(path, pg_dsn, cfg, mode="create")
    assert all(t.analyzed for t in result.tables)
    analyzed = dict(
        pg.execute(
            "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE schemaname = 'public'"
        ).fetchall()
    )
    assert analyzed == {"author": True, "book": True, "review": True}
    indexes = {r[0] for r in pg.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'").fetchall()}
    assert any("book_author" in i for i in indexes)
    assert any("UNIQUE" in i and "(name)" in i for i in indexes)
    fks = pg.execute(
        "SELECT conrelid::regclass::text, convalidated FROM pg_constraint WHERE contype = 'f'"
        " AND connamespace = 'public'::regnamespace ORDER BY 1"
    ).fetchall()
    assert fks == [("book", False), ("review", False)]
    assert result.plan is not None
    assert_same(path, pg, result.plan)


def test_tables_are_split_by_expected_cost_not_rows(tmp_path: Path) -> None:
    """A wide table with date-time text costs more per row than a narrow one: the two processes get
    about equal work (the benchmark's four tables: 2.45 s + 0.25 s against 2.08 s + 0.59 s)."""
    path = tmp_path / "costs.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE narrow (id INTEGER PRIMARY KEY, n INTEGER);
        CREATE TABLE wide (id INTEGER PRIMARY KEY, at DATETIME, body TEXT);
        CREATE TABLE small (id INTEGER PRIMARY KEY, n INTEGER);
        """
    )
    conn.executemany("INSERT INTO narrow VALUES (?, ?)", [(i, i) for i in range(3000)])
    conn.executemany("INSERT INTO wide VALUES (?, '2024-01-01 10:00:00', ?)", [(i, "x" * 400) for i in range(1000)])
    conn.executemany("INSERT INTO small VALUES (?, ?)", [(i, i) for i in range(2000)])
    conn.commit()
    schema = read_schema(conn)
    costs = snapshot.load_costs(conn, schema, ["narrow", "wide", "small"])
    profiling = snapshot.profile_costs(conn, schema)
    conn.close()
    assert profiling["wide"] > profiling["small"]  # the date-time column is proven value by value
    assert snapshot.split(profiling, helper_start=10**12)[1] == []  # a helper slow to start gets nothing
    assert costs["wide"] > costs["narrow"] > costs["small"]  # 1,000 wide rows outweigh 3,000 narrow ones
    mine, theirs = snapshot.split(costs)
    assert mine == ["wide"]
    assert sorted(theirs) == ["narrow", "small"]


def test_the_primary_key_is_built_after_the_load_and_a_collision_is_an_error(
    tmp_path: Path, pg_dsn: str, pg: Any
) -> None:
    """Create mode COPYs into key-less tables and adds each primary key over the loaded rows. Two
    SQLite keys that one narrower PostgreSQL type makes equal stop the snapshot, naming the table."""
    path = bookshop(tmp_path / "app.db")
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="create")
    keys = pg.execute(
        "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'p'"
        " AND connamespace = 'public'::regnamespace ORDER BY 1"
    ).fetchall()
    assert keys == [("author",), ("book",), ("review",)]
    assert result.plan is not None
    assert_same(path, pg, result.plan)

    narrow = tmp_path / "narrow.db"
    with sqlite3.connect(narrow) as conn:
        conn.execute("CREATE TABLE m (k TEXT PRIMARY KEY, v TEXT)")  # two spellings of one instant
        conn.executemany(
            "INSERT INTO m VALUES (?, ?)", [("2024-01-01T00:00:00Z", "a"), ("2024-01-01T01:00:00+01:00", "b")]
        )
    cfg = config.load(overrides={"types": {"m": {"k": {"type": "timestamptz"}}}}, environ={})
    with fresh_database(pg_dsn) as other, pytest.raises(TargetError, match="primary key of 'm' cannot be built"):
        snapshot.snapshot(narrow, other, cfg, mode="create")


def test_a_refused_unique_index_is_warned_about_once(tmp_path: Path, pg_dsn: str) -> None:
    """index_table tries a table's indexes right after its load; finish_target does not try again."""
    path = tmp_path / "dupes.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, at TEXT UNIQUE)")  # two spellings, one instant
        conn.executemany("INSERT INTO m VALUES (?, ?)", [(1, "2024-01-01T00:00:00Z"), (2, "2024-01-01T01:00:00+01:00")])
    cfg = config.load(overrides={"types": {"m": {"at": {"type": "timestamptz"}}}}, environ={})
    result = snapshot.snapshot(path, pg_dsn, cfg, mode="create")
    refused = [w for w in result.warnings if "not created" in w]
    assert len(refused) == 1, result.warnings
    assert "unique" in refused[0]
