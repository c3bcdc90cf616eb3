"""Each state-based apply case against real SQLite and PostgreSQL, compared row by row at the end."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from checkpoints.digest import JsonText, TableDigest, kinds_from_oids
from replicator import config, pg
from replicator.apply.tablestate import read_digests
from replicator.state import phase
from replicator.state.store import StateStore
from replicator.stream.worker import Worker
from replicator.values import readback
from tests.support.compare import check_same, drain
from tests.support.daemon import cfg
from tests.support.source import app, make_db, make_source
from tests.support.state import read_phase
from triggers import install, journal


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_source(
        tmp_path / "app.db",
        rows="""
        INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 2.25);
        INSERT INTO child VALUES (10, 1, 'x', 'c10'), (11, 1, 'y', 'c11'), (12, 2, 'z', 'c12');
        INSERT INTO pair VALUES ('k', 1, 'one'), ('k', 2, 'two');
        """,
    )


def test_snapshot_first_then_inserts_updates_deletes(src: Path, pg_dsn: str) -> None:
    first = drain(src, pg_dsn)
    assert first.changes == 0
    db = app(src)
    db.execute("INSERT INTO parent VALUES (4, 'd', 3.0)")
    db.execute("UPDATE parent SET score = 9.5 WHERE id = 1")
    db.execute("DELETE FROM child WHERE id = 12")
    db.execute("UPDATE pair SET v = 'uno' WHERE a = 'k' AND b = 1")
    result = drain(src, pg_dsn)
    assert result.changes == 4
    assert check_same(src, pg_dsn) == {"parent": 4, "child": 2, "pair": 2}
    state = read_phase(pg_dsn)
    assert state is not None
    assert state.phase is phase.Phase.STREAMING
    assert state.applied_seq == result.applied_seq
    sconn = sqlite3.connect(src)
    assert journal.stats(sconn).rows == 1  # pruned after the commit (the high-water row stays)


def test_primary_key_change(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    db.execute("UPDATE parent SET id = 100 WHERE id = 3")
    db.execute("UPDATE pair SET b = 7 WHERE a = 'k' AND b = 2")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM parent ORDER BY id")]
    assert ids == [1, 2, 100]


def test_unique_swap_inside_one_batch(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    db.execute("BEGIN")
    db.execute("UPDATE parent SET name = 'tmp' WHERE id = 1")
    db.execute("UPDATE parent SET name = 'a' WHERE id = 2")
    db.execute("UPDATE parent SET name = 'b' WHERE id = 1")
    db.execute("COMMIT")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_insert_or_replace_victim_on_secondary_unique(src: Path, pg_dsn: str) -> None:
    """REPLACE deletes the row that conflicts on `name` without a DELETE trigger: PG must lose it too."""
    drain(src, pg_dsn)
    db = app(src)
    db.execute("PRAGMA foreign_keys = OFF")  # the victim's children stay, as SQLite leaves them
    db.execute("INSERT OR REPLACE INTO parent (id, name, score) VALUES (50, 'a', 0.5)")
    rows = db.execute("SELECT id FROM parent WHERE name = 'a'").fetchall()
    assert rows == [(50,)]
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_replace_victim_changed_later_in_a_later_batch(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("INSERT OR REPLACE INTO child (id, parent_id, label, code) VALUES (20, 1, 'new', 'c11')")
    db.execute("INSERT INTO child VALUES (11, 2, 'back', 'c99')")  # the victim's key comes back, changed
    drain(src, pg_dsn, cfg(batch_rows=1))
    check_same(src, pg_dsn)


def test_upsert_and_insert_or_ignore(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    db.execute("INSERT INTO parent VALUES (1, 'a', 7.0) ON CONFLICT (id) DO UPDATE SET score = excluded.score")
    db.execute("INSERT OR IGNORE INTO parent VALUES (2, 'zz', 0.0)")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_cascade_never_fires_on_delete_then_reinsert(src: Path, pg_dsn: str) -> None:
    """Updating a parent deletes and re-inserts it in PostgreSQL: its ON DELETE CASCADE must not act."""
    drain(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        fks = conn.execute(
            "SELECT confdeltype FROM pg_constraint WHERE contype = 'f' AND conrelid = 'public.child'::regclass"
        ).fetchall()
        assert fks == [("c",)]  # ON DELETE CASCADE in PostgreSQL too
    db = app(src)
    db.execute("UPDATE parent SET score = 0 WHERE id = 1")
    drain(src, pg_dsn)
    assert check_same(src, pg_dsn)["child"] == 3
    db.execute("DELETE FROM parent WHERE id = 1")  # SQLite cascades (foreign_keys on): journaled child deletes
    drain(src, pg_dsn)
    assert check_same(src, pg_dsn)["child"] == 1


def test_parent_child_order_within_a_batch(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    db.execute("BEGIN")
    db.execute("INSERT INTO child VALUES (30, NULL, 'orphan-first', 'c30')")
    db.execute("INSERT INTO parent VALUES (9, 'nine', 0)")
    db.execute("UPDATE child SET parent_id = 9 WHERE id = 30")
    db.execute("DELETE FROM parent WHERE id = 2")
    db.execute("COMMIT")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_generated_columns_never_written(tmp_path: Path, pg_dsn: str) -> None:
    """b is generated in PostgreSQL too (a * 2 is proved): never written. c's substr() with a negative
    start is not proved: a plain column the apply writes with SQLite's value."""
    path = make_source(
        tmp_path / "gen.db",
        "CREATE TABLE g (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) STORED,"
        " c TEXT GENERATED ALWAYS AS (substr('héllo', -a)) VIRTUAL);",
        "INSERT INTO g (id, a) VALUES (1, 1), (2, 2);",
    )
    drain(path, pg_dsn)
    db = app(path)
    db.execute("UPDATE g SET a = 4 WHERE id = 1")
    db.execute("INSERT INTO g (id, a) VALUES (3, 3)")
    drain(path, pg_dsn)
    check_same(path, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        kinds = conn.execute(
            "SELECT column_name, is_generated FROM information_schema.columns WHERE table_name = 'g'"
        ).fetchall()
        assert dict(kinds) == {"id": "NEVER", "a": "NEVER", "b": "ALWAYS", "c": "NEVER"}
        assert conn.execute("SELECT a, b, c FROM g ORDER BY id").fetchall() == [
            (4, 8, "éllo"),
            (2, 4, "lo"),
            (3, 6, "llo"),
        ]


def test_batch_ending_before_journal_end_converges(src: Path, pg_dsn: str) -> None:
    """With one entry per batch, later keys already hold newer values mid-drain; the end state is exact."""
    drain(src, pg_dsn)
    db = app(src)
    for i in range(20):
        db.execute("UPDATE parent SET score = ? WHERE id = 1", (float(i),))
        db.execute("INSERT OR REPLACE INTO pair VALUES ('k', ?, ?)", (i % 3, f"v{i}"))
    result = drain(src, pg_dsn, cfg(batch_rows=1))
    assert result.batches == 40
    check_same(src, pg_dsn)


def test_batch_bytes_bound_splits_batches(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    for i in range(10):
        db.execute("INSERT INTO child VALUES (?, 1, ?, ?)", (100 + i, "x" * 10_000, f"big{i}"))
    result = drain(src, pg_dsn, cfg(batch_bytes=25_000))
    assert result.batches >= 4
    check_same(src, pg_dsn)


def test_bad_value_stop_names_table_key_column(tmp_path: Path, pg_dsn: str) -> None:
    path = make_source(
        tmp_path / "bad.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER);", "INSERT INTO t VALUES (1, 5);"
    )
    drain(path, pg_dsn)
    app(path).execute("UPDATE t SET n = 'not a number' WHERE id = 1")
    with pytest.raises(Exception, match=r"refused value in t \(id=1\) column n"):
        drain(path, pg_dsn)
    state = read_phase(pg_dsn)
    assert state is not None
    assert state.phase is phase.Phase.ERRORED
    assert "column n" in state.reason
    assert state.hint
    app(path).execute("UPDATE t SET n = 6 WHERE id = 1")  # the fix: the daemon resumes at that batch
    drain(path, pg_dsn)
    check_same(path, pg_dsn)


def test_bad_value_quarantine_skips_row_and_recovers(tmp_path: Path, pg_dsn: str) -> None:
    path = make_source(
        tmp_path / "q.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER);", "INSERT INTO t VALUES (1, 5);"
    )
    conf = config.load(overrides={"snapshot": {"on_bad_value": "quarantine"}}, environ={})
    drain(path, pg_dsn, conf)
    app(path).execute("UPDATE t SET n = 'oops' WHERE id = 1")
    drain(path, pg_dsn, conf)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
        assert conn.execute("SELECT column_name FROM replicator.quarantine").fetchall() == [("n",)]
    app(path).execute("UPDATE t SET n = 7 WHERE id = 1")
    drain(path, pg_dsn, conf)
    check_same(path, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM replicator.quarantine").fetchone() == (0,)


def test_table_skipped_by_config_is_passed_over(src: Path, pg_dsn: str) -> None:
    conf = config.load(
        overrides={"apply": {"poll_interval_s": 0.05}, "types": {"pair": {"*": {"skip": True}}}}, environ={}
    )
    drain(src, pg_dsn, conf)
    db = app(src)
    db.execute("UPDATE pair SET v = 'ignored' WHERE a = 'k' AND b = 1")
    db.execute("UPDATE parent SET score = 3.5 WHERE id = 2")
    result = drain(src, pg_dsn, conf)
    assert result.changes == 2
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.pair')").fetchone() == (None,)
        assert conn.execute("SELECT score FROM parent WHERE id = 2").fetchone() == (3.5,)


def test_running_digest_exact_for_every_type(tmp_path: Path, pg_dsn: str) -> None:
    """Digests taken from converted values must equal what PostgreSQL reads back, type by type."""
    path = make_source(
        tmp_path / "types.db",
        """CREATE TABLE t (
            id INTEGER PRIMARY KEY, i INTEGER, r REAL, n NUMERIC(10, 2), d DECIMAL(12, 4), s TEXT, v VARCHAR(20),
            c CHAR(5), b BLOB, f BOOLEAN, ts TIMESTAMP, dt DATETIME, day DATE, tm TIME, j JSON, u UUID, fl FLOAT
        );""",
        """INSERT INTO t VALUES (1, 1, 1.5, 12.5, 1.25, 'x', 'v', 'ab', x'00ff', 1, '2024-01-02 03:04:05',
            '2024-01-02T03:04:05Z', '2024-01-02', '10:11:12', '{"a": [1, 2.5]}',
            '123e4567-e89b-12d3-a456-426614174000', 0.1);""",
    )
    drain(path, pg_dsn)
    db = app(path)
    db.execute(
        """INSERT INTO t VALUES (2, -7, -0.0, 99.99, 0.0001, 'é', 'w', 'xyz', x'', 0, '1999-12-31 23:59:59.123',
        '2000-02-29 00:00:00+02:00', '1970-01-01', '00:00:00.5', '[{"b": null}]',
        '00000000-0000-0000-0000-000000000000', 1e300)"""
    )
    db.execute("UPDATE t SET r = 2.25, j = '{\"z\": 1}', s = 'y' WHERE id = 1")
    drain(path, pg_dsn)
    check_same(path, pg_dsn)  # includes running digest == digest of the table read back
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        plan = StateStore(conn, "replicator").load_plan()
    assert plan is not None
    exact = [c.source for c in plan.table("t").load_columns if c.type.name in readback.DIGEST_EXACT_TYPES]
    assert len(exact) >= 12, exact


def test_running_digest_from_converted_values(tmp_path: Path, pg_dsn: str) -> None:
    """A table of digest-exact types only: inserted rows are digested from the converted values."""
    path = make_source(
        tmp_path / "exact.db",
        """CREATE TABLE t (
            id INTEGER PRIMARY KEY, n NUMERIC(10, 2), s TEXT, v VARCHAR(20), b BLOB, f BOOLEAN,
            ts TIMESTAMP, dt DATETIME, day DATE, tm TIME, u UUID, fl DOUBLE
        );""",
        "INSERT INTO t VALUES (1, 1.5, 'a', 'b', x'01', 1, '2024-01-02 03:04:05', '2024-01-02T03:04:05Z', "
        "'2024-01-02', '10:11:12', '123e4567-e89b-12d3-a456-426614174000', 0.1);",
    )
    drain(path, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        plan = StateStore(conn, "replicator").load_plan()
    assert plan is not None
    assert readback.digest_exact([c.type for c in plan.table("t").load_columns])
    db = app(path)
    db.execute(
        "INSERT INTO t VALUES (2, -3.1, 'é', '', x'', 0, '1999-12-31 23:59:59.123', '2000-02-29 00:00:00+02:00', "
        "'1970-01-01', '00:00:00.5', '00000000-0000-0000-0000-000000000000', -0.0)"
    )
    db.execute("UPDATE t SET n = 7, dt = '2030-06-01 12:00:00', fl = 1e300 WHERE id = 1")
    drain(path, pg_dsn)
    check_same(path, pg_dsn)


def test_without_a_saved_plan_the_target_is_mapped_by_name(src: Path, pg_dsn: str) -> None:
    """A snapshot taken by another stage leaves no plan: the apply maps the target's own tables."""
    drain(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM replicator.apply_plan")
    app(src).execute("UPDATE parent SET name = 'renamed' WHERE id = 3")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        plan = StateStore(conn, "replicator").load_plan()
    assert plan is not None
    assert plan.mode == "existing"


def test_once_applies_at_most_one_batch(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    for i in range(5):
        db.execute("UPDATE parent SET score = ? WHERE id = 1", (float(i),))
    result = Worker(src, pg_dsn, cfg(batch_rows=2)).run(once=True)
    assert (result.batches, result.changes, result.applied_seq, result.head_seq) == (1, 2, 2, 5)


def test_sqlite_busy_is_transient_and_retried(tmp_path: Path, pg_dsn: str) -> None:
    """Rollback-journal mode: an app holding an EXCLUSIVE lock blocks our reads; we wait, then recover."""
    import threading
    import time

    path = tmp_path / "busy.db"
    make_db(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');")
    install.install(path)
    conf = config.load(
        overrides={"apply": {"poll_interval_s": 0.05, "retry_max_wait_s": 0.3}, "source": {"busy_timeout_ms": 50}},
        environ={},
    )
    drain(path, pg_dsn, conf)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("UPDATE t SET v = 'b' WHERE id = 1")
    db.execute("BEGIN EXCLUSIVE")
    released = threading.Timer(1.0, lambda: db.execute("COMMIT"))
    released.start()
    started = time.monotonic()
    result = drain(path, pg_dsn, conf)
    released.join()
    assert time.monotonic() - started >= 0.9
    assert result.changes == 1
    check_same(path, pg_dsn)


JSON_DOCS = [
    '{"b": 1, "a": [1.50, 1e2, 100.0, -0.0, 1e-7, 0.7548, "é\\n", null, true]}',
    "null",  # a JSON null document: digested like SQL NULL, on both sides
    '"null"',
    '{"a": 1, "a": 2, "k": {"z": [], "y": {}}}',
    "[12345678901234567890123, -1.5e300, 3.141592653589793]",
    '{"v": "1.0e5", "uuid": "3e4f5a6b-0000-1111-2222-333344445555"}',  # look like floats inside strings
]


def test_running_digests_of_json_tables_equal_the_parsed_reading(tmp_path: Path, pg_dsn: str) -> None:
    """The apply reads its JSON row images as text (``JsonText``, no Python objects): its running
    digests (and the snapshot's checksums they start from) must equal the digest of the table as
    psycopg's own loaders parse it (``json.loads``)."""
    inserts = ", ".join(f"({i}, '{d}', '{d}')" for i, d in enumerate(JSON_DOCS, 1))
    path = make_source(
        tmp_path / "docs.db",
        "CREATE TABLE docs (id INTEGER PRIMARY KEY, j JSON, jb JSONB);",
        f"INSERT INTO docs VALUES {inserts};",
    )
    drain(path, pg_dsn)
    db = app(path)
    db.execute('UPDATE docs SET j = \'{"x": 2.50}\', jb = \'[1e1, {"b": 0, "a": 0.0}]\' WHERE id = 1')
    db.execute("DELETE FROM docs WHERE id = 2")
    db.execute("INSERT INTO docs VALUES (9, '[null, 1E+2]', 'null'), (10, NULL, '{\"q\": -0}')")
    drain(path, pg_dsn)
    check_same(path, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert [t for (t,) in conn.execute("SELECT pg_typeof(jb)::text FROM docs LIMIT 1")] == ["jsonb"]
        running = read_digests(StateStore(conn, "replicator"), ["docs"])["docs"]
        assert running == _parsed_digest(conn)
        conn.execute("""UPDATE docs SET jb = '[10, {"a": 0.001, "b": 0}]' WHERE id = 1""")  # negative control
        assert running != _parsed_digest(conn)


def _parsed_digest(conn: psycopg.Connection[Any]) -> tuple[int, str]:
    """The digest of ``docs`` with psycopg's own loaders (parsed documents) and with the documents
    read as text (``pg.json_as_text``), text and binary formats alike: one digest."""
    found = set()
    for binary in (False, True):
        for as_text in (False, True):
            with conn.cursor(binary=binary) as cur:
                if as_text:
                    pg.json_as_text(cur)
                cur.execute("SELECT id, j, jb FROM docs")
                assert cur.description is not None
                digest = TableDigest(kinds_from_oids(d.type_code for d in cur.description))
                rows = cur.fetchall()
                kind = JsonText if as_text else dict
                assert any(isinstance(row[1], kind) for row in rows)
                assert any(isinstance(row[2], kind) for row in rows)
                digest.add_rows(rows)
                found.add((digest.count, digest.hexdigest()))
    assert len(found) == 1
    return found.pop()
