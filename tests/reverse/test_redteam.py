"""The rollback window attacked as a hostile app and operator would: odd keys and tables, session settings, big
and concurrent transactions, schema changes in PostgreSQL, refused values, a second migration after a rollback.

Each test states what must hold; a bug found and not fixed here is ``xfail(strict=True)`` with why."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from replicator import faults
from replicator.config import Config
from replicator.cutover.session import Options
from replicator.cutover.window import cutover
from replicator.errors import ReplicatorError
from replicator.load import snapshot as snapshot_mod
from replicator.load.options import SnapshotOptions
from replicator.reverse import finalize, loop
from replicator.reverse import rollback as window_rollback
from replicator.state import quarantine
from replicator.state.store import StateStore
from tests.support.compare import drain
from tests.support.daemon import cfg, conf
from tests.support.source import SCHEMA, make_source, writable
from triggers import fence, install

pytestmark = pytest.mark.e2e


def _cut(tmp_path: Path, dsn: str, schema: str = SCHEMA, rows: str = "", config: Config | None = None) -> Path:
    """A SQLite file with ``schema`` and ``rows``, migrated and cut over with the rollback window open."""
    src = make_source(tmp_path / "app.db", schema=schema, rows=rows)
    drain(src, dsn, config)
    options = Options(backup=False, certificate_path=tmp_path / "cert.json", accept_missing_constraints=True)
    cutover(src, dsn, config or cfg(), options)
    return src


PARENTS = "INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL); INSERT INTO child VALUES (10, 1, 'x', 'c10');"


def _rows(src: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def _on_postgres(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _journaled(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM replicator.reverse_journal").fetchone()
        assert row is not None
        return int(row[0])


def _run(src: Path, dsn: str, timeout_s: float = 30.0) -> loop.Result:
    """The reverse direction until the journal is empty. ``until_drained`` alone may stop early here: the
    horizon is the whole cluster's oldest writing transaction, and other tests write in other databases."""
    deadline = time.monotonic() + timeout_s
    total = loop.run(src, dsn, cfg(), until_drained=True)
    while _journaled(dsn) and time.monotonic() < deadline:
        time.sleep(0.05)
        more = loop.run(src, dsn, cfg(), until_drained=True)
        total = loop.Result(
            total.batches + more.batches,
            total.entries + more.entries,
            total.upserted + more.upserted,
            total.deleted + more.deleted,
            total.refused + more.refused,
            more.horizon,
        )
    return total


# --- batches --------------------------------------------------------------------------------------------------


def test_a_transaction_larger_than_a_batch_is_written_not_stalled(tmp_path: Path, pg_dsn: str) -> None:
    """One app transaction with more entries than a batch holds (5,000): the batch must take it whole. The
    horizon cut used to land *on* that transaction's id when it was not the first id after the position, so the
    batch came back empty, the daemon reported nothing to do, and the journal grew forever behind it."""
    src = _cut(tmp_path, pg_dsn, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);", "INSERT INTO t VALUES (1, 'a');")
    _on_postgres(pg_dsn, "SELECT pg_current_xact_id()")  # an id consumed: the big one is not the first after 1
    _on_postgres(pg_dsn, "INSERT INTO public.t SELECT g, 'x' FROM generate_series(2, 5200) g")
    result = _run(src, pg_dsn)
    assert result.entries == 5199
    assert _rows(src, "SELECT count(*) FROM t") == [(5200,)]


def test_a_transaction_open_in_another_database_does_not_hold_the_window_back(tmp_path: Path, pg_dsn: str) -> None:
    """The horizon was the snapshot's xmin, the oldest writing transaction of the whole cluster: one left open
    in another database (a batch job, an idle-in-transaction session) held the reverse direction back for as
    long as it lived: ``run --until-drained`` stopped with the journal full, rollback's catch-up before the
    fence did nothing (all of it then inside the outage) and ``rollback --dry-run`` reported differences."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    with psycopg.connect(conninfo.make_conninfo(pg_dsn, dbname="postgres")) as elsewhere:
        elsewhere.execute("SELECT pg_current_xact_id()")  # writing, in another database, until the end
        _on_postgres(
            pg_dsn, "INSERT INTO public.parent VALUES (3, 'c', 3)", "UPDATE public.parent SET score = 9 WHERE id = 1"
        )
        result = loop.run(src, pg_dsn, cfg(), until_drained=True)
        assert result.entries == 2
        assert _rows(src, "SELECT id, score FROM parent ORDER BY id") == [(1, 9.0), (2, None), (3, 3.0)]
        window_rollback.rollback(src, pg_dsn, cfg(), dry_run=True)
        elsewhere.rollback()


def test_a_transaction_open_in_this_database_holds_the_window_back(tmp_path: Path, pg_dsn: str) -> None:
    """Holds (the negative control of the test above): a writing transaction open in the target's own database
    may still write a migrated table, so the horizon stays below it."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    with psycopg.connect(pg_dsn) as app:
        app.execute("SELECT pg_current_xact_id()")
        _on_postgres(pg_dsn, "UPDATE public.parent SET score = 9 WHERE id = 1")
        assert loop.run(src, pg_dsn, cfg(), once=True).entries == 0
        app.execute("UPDATE public.parent SET score = 7 WHERE id = 2")
        app.commit()
    _run(src, pg_dsn)
    assert _rows(src, "SELECT id, score FROM parent ORDER BY id") == [(1, 9.0), (2, 7.0)]


def test_several_tables_in_one_transaction_and_cascades(tmp_path: Path, pg_dsn: str) -> None:
    """Holds: an FK ON DELETE CASCADE and a TRUNCATE ... CASCADE in PostgreSQL reach SQLite as deletes."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS + "INSERT INTO child VALUES (11, 2, 'y', 'c11');")
    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("INSERT INTO public.parent VALUES (3, 'c', 3)")
        conn.execute("INSERT INTO public.child VALUES (12, 3, 'z', 'c12')")
        conn.execute("DELETE FROM public.parent WHERE id = 1")  # cascades to child 10
    _run(src, pg_dsn)
    assert _rows(src, "SELECT id FROM child ORDER BY id") == [(11,), (12,)]
    _on_postgres(pg_dsn, "TRUNCATE public.parent CASCADE", "INSERT INTO public.parent VALUES (5, 'e', 5)")
    _run(src, pg_dsn)
    assert _rows(src, "SELECT id FROM parent") == [(5,)]
    assert _rows(src, "SELECT id FROM child") == []


# --- keys and tables ------------------------------------------------------------------------------------------


def test_a_float_key_is_captured_exactly_whatever_the_sessions_extra_float_digits(tmp_path: Path, pg_dsn: str) -> None:
    """The capture spells the key through ``jsonb_build_array``, whose float8 output follows the app session's
    ``extra_float_digits``: at 0 it rounds 0.30000000000000004 to 0.3, which names no row, and the update was
    lost without a word (the batch took the key for a row PostgreSQL no longer has)."""
    src = _cut(
        tmp_path,
        pg_dsn,
        "CREATE TABLE t (k REAL PRIMARY KEY, v TEXT);",
        "INSERT INTO t VALUES (0.30000000000000004, 'a');",
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("SET extra_float_digits = 0")
        conn.execute("UPDATE public.t SET v = 'b'")
    _run(src, pg_dsn)
    assert _rows(src, "SELECT k, v FROM t") == [(0.30000000000000004, "b")]


def test_key_spellings_under_the_apps_session_settings(tmp_path: Path, pg_dsn: str) -> None:
    """Holds: a timestamptz and a bytea key written by a session with another TimeZone, DateStyle,
    bytea_output = escape and an empty search_path are found and written back."""
    src = _cut(
        tmp_path,
        pg_dsn,
        "CREATE TABLE t (at TIMESTAMPTZ PRIMARY KEY, v TEXT); CREATE TABLE u (b BLOB PRIMARY KEY, v TEXT);",
        "INSERT INTO t VALUES ('2024-05-01T10:00:00+00:00', '1');"
        "INSERT INTO u VALUES (x'5c7830', 'a'), (x'00ff', 'b');",
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for setting in (
            "bytea_output = escape",
            "DateStyle = 'SQL, DMY'",
            "TimeZone = 'Asia/Kolkata'",
            "search_path = ''",
        ):
            conn.execute(f"SET {setting}")
        conn.execute("UPDATE public.t SET v = '2'")
        conn.execute("INSERT INTO public.t VALUES ('2024-06-01 12:00:00', 'n')")
        conn.execute("UPDATE public.u SET v = v || '!'")
    _run(src, pg_dsn)
    assert _rows(src, "SELECT at, v FROM t ORDER BY at") == [
        ("2024-05-01T10:00:00+00:00", "2"),
        ("2024-06-01T06:30:00+00:00", "n"),
    ]
    assert _rows(src, "SELECT b, v FROM u ORDER BY b") == [(b"\x00\xff", "b!"), (b"\\x0", "a!")]


def test_keys_in_other_spellings_without_rowid_and_composite(tmp_path: Path, pg_dsn: str) -> None:
    """Holds: a date-time text key in two spellings (the row keeps its own), a key that moves, a WITHOUT ROWID
    table, a composite key."""
    src = _cut(
        tmp_path,
        pg_dsn,
        "CREATE TABLE d (at DATETIME PRIMARY KEY, v TEXT);"
        "CREATE TABLE w (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID;"
        "CREATE TABLE c (a TEXT, b INTEGER, v TEXT, PRIMARY KEY (a, b));",
        "INSERT INTO d VALUES ('2024-05-01 10:00:00', '1'), ('2024-05-02T10:00:00', 'x'), ('2024-05-03 10:00:00', 'y');"
        "INSERT INTO w VALUES ('x', 1), ('y', 2); INSERT INTO c VALUES ('k', 1, 'one'), ('k', 2, 'two');",
    )
    _on_postgres(
        pg_dsn,
        "UPDATE public.d SET v = 'X' WHERE v = 'x'",
        "UPDATE public.d SET at = at + interval '1 hour' WHERE v = 'y'",
        "UPDATE public.w SET v = 5 WHERE k = 'y'",
        "DELETE FROM public.w WHERE k = 'x'",
        "UPDATE public.c SET b = 7 WHERE b = 2",
    )
    _run(src, pg_dsn)
    assert _rows(src, "SELECT at, v FROM d ORDER BY v") == [
        ("2024-05-01 10:00:00", "1"),
        ("2024-05-02T10:00:00", "X"),
        ("2024-05-03 11:00:00", "y"),
    ]
    assert _rows(src, "SELECT * FROM w") == [("y", 5)]
    assert _rows(src, "SELECT * FROM c ORDER BY b") == [("k", 1, "one"), ("k", 7, "two")]


def test_an_app_schema_with_a_not_null_domain_column(tmp_path: Path, pg_dsn: str) -> None:
    """Existing mode: the app's own PostgreSQL schema types a column with a NOT NULL domain. The batch typed its
    keys with ``jsonb_populate_record(NULL::table, ...)``, which builds the whole row, the other columns NULL:
    the domain refused that NULL, and every batch of the table failed ('domain ... does not allow null values')."""
    _on_postgres(
        pg_dsn,
        "CREATE DOMAIN public.quantity AS integer NOT NULL CHECK (VALUE >= 0)",
        "CREATE TABLE public.t (id bigint PRIMARY KEY, n public.quantity)",
    )
    src = _cut(
        tmp_path, pg_dsn, "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);", "INSERT INTO t VALUES (1, 5);"
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        plan = StateStore(conn, "replicator").load_plan()
        assert plan is not None
        assert plan.mode == "existing"
    _on_postgres(pg_dsn, "UPDATE public.t SET n = 6", "INSERT INTO public.t VALUES (2, 7)")
    _run(src, pg_dsn)
    assert _rows(src, "SELECT id, n FROM t ORDER BY id") == [(1, 6), (2, 7)]


def test_a_uuid_key_sqlite_stores_as_32_hex(tmp_path: Path, pg_dsn: str) -> None:
    """Holds: existing mode, a uuid primary key in PostgreSQL that SQLite stores as 32 hex digits: updated in
    place, deleted, and a new one written in the app's spelling."""
    _on_postgres(pg_dsn, "CREATE TABLE public.t (id uuid PRIMARY KEY, v text)")
    a, b, c = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210", "00000000000040008000000000000001"
    src = _cut(
        tmp_path,
        pg_dsn,
        "CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT);",
        f"INSERT INTO t VALUES ('{a}', 'a'), ('{b}', 'b');",
    )
    _on_postgres(
        pg_dsn,
        f"UPDATE public.t SET v = 'A' WHERE id = '{a}'",
        f"DELETE FROM public.t WHERE id = '{b}'",
        f"INSERT INTO public.t VALUES ('{c}', 'c')",
    )
    _run(src, pg_dsn)
    assert _rows(src, "SELECT id, v FROM t ORDER BY v") == [(a, "A"), (c, "c")]


def test_a_case_only_change_of_a_citext_key(tmp_path: Path, pg_dsn: str) -> None:
    """Existing mode, a citext primary key (SQLite: NOCASE): the app renames 'bob' to 'Bob'."""
    _on_postgres(
        pg_dsn,
        "CREATE EXTENSION IF NOT EXISTS citext",
        "CREATE TABLE public.users (name citext PRIMARY KEY, age integer)",
    )
    src = _cut(
        tmp_path,
        pg_dsn,
        "CREATE TABLE users (name TEXT COLLATE NOCASE PRIMARY KEY, age INTEGER);",
        "INSERT INTO users VALUES ('bob', 30), ('eve', 40);",
    )
    _on_postgres(pg_dsn, "UPDATE public.users SET name = 'Bob', age = 31 WHERE name = 'bob'")
    _run(src, pg_dsn)
    assert _rows(src, "SELECT name, age FROM users ORDER BY name") == [("Bob", 31), ("eve", 40)]


def test_a_key_sqlite_stores_as_an_integer_in_an_untyped_column_is_updated_not_duplicated(
    tmp_path: Path, pg_dsn: str
) -> None:
    """A key column without a declared type holds the app's integers; the plan makes it text ('2' in
    PostgreSQL). The writer looked the key up as the text '2', found nothing and inserted a second row: SQLite
    then held 2 and '2', the update never reached the app's row, and no rollback could ever pass."""
    src = _cut(
        tmp_path, pg_dsn, "CREATE TABLE t (k PRIMARY KEY, v);", "INSERT INTO t VALUES (1, 'a'), (2, 'b'), ('x', 'c');"
    )
    _on_postgres(pg_dsn, "UPDATE public.t SET v = 'B' WHERE k = '2'", "DELETE FROM public.t WHERE k = '1'")
    _run(src, pg_dsn)
    assert _rows(src, "SELECT k, typeof(k), v FROM t ORDER BY v") == [(2, "integer", "B"), ("x", "text", "c")]


def test_a_nocase_key_postgres_holds_twice_is_refused_by_name(tmp_path: Path, pg_dsn: str) -> None:
    """SQLite's key is COLLATE NOCASE, PostgreSQL's is not: the app inserts 'A' beside 'a'. SQLite cannot hold
    both; the reverse apply must say so (table, what collides, what to do), not raise sqlite3's bare
    IntegrityError at every retry."""
    src = _cut(
        tmp_path,
        pg_dsn,
        "CREATE TABLE t (k TEXT COLLATE NOCASE PRIMARY KEY, v TEXT);",
        "INSERT INTO t VALUES ('a', '1');",
    )
    _on_postgres(pg_dsn, "INSERT INTO public.t VALUES ('A', '2')")
    with pytest.raises(ReplicatorError, match=r"(?s)\bt\b.*UNIQUE.*") as refused:
        _run(src, pg_dsn)
    assert refused.value.hint
    assert _rows(src, "SELECT * FROM t") == [("a", "1")]  # nothing half-written
    assert fence.status(src).fenced


def test_a_column_sqlite_generates_is_not_written(tmp_path: Path, pg_dsn: str) -> None:
    """A VIRTUAL column PostgreSQL cannot compute (printf) is loaded as a plain column. The writer wrote every
    SQLite column back, that one too: 'cannot UPDATE generated column', at every retry."""
    src = _cut(
        tmp_path,
        pg_dsn,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, "
        "b TEXT GENERATED ALWAYS AS (upper(a) || printf('%05d', id)) VIRTUAL, "
        "c INTEGER GENERATED ALWAYS AS (length(a)) STORED);",
        "INSERT INTO t (id, a) VALUES (1, 'x'), (2, 'y');",
    )
    _on_postgres(pg_dsn, "UPDATE public.t SET a = 'qq' WHERE id = 1", "INSERT INTO public.t (id, a) VALUES (3, 'z')")
    _run(src, pg_dsn)
    assert _rows(src, "SELECT id, a, b, c FROM t ORDER BY id") == [
        (1, "qq", "QQ00001", 2),
        (2, "y", "Y00002", 1),
        (3, "z", "Z00003", 1),
    ]


def test_app_triggers_do_not_rewrite_the_rows_and_stay(tmp_path: Path, pg_dsn: str) -> None:
    """Holds: a Sakila-like ``last_update`` trigger does not stamp the rows written back, and is still there."""
    src = _cut(
        tmp_path,
        pg_dsn,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, last_update TEXT);"
        "CREATE TRIGGER t_stamp AFTER UPDATE ON t BEGIN "
        "UPDATE t SET last_update = 'by trigger' WHERE id = NEW.id; END;",
        "INSERT INTO t VALUES (1, 'a', '2020-01-01 00:00:00');",
    )
    _on_postgres(pg_dsn, "UPDATE public.t SET v = 'b', last_update = '2024-01-01 00:00:00'")
    _run(src, pg_dsn)
    assert _rows(src, "SELECT * FROM t") == [(1, "b", "2024-01-01 00:00:00")]
    assert _rows(src, "SELECT name FROM sqlite_schema WHERE name = 't_stamp'") == [("t_stamp",)]


def test_a_snapshot_only_table_is_written_whole(tmp_path: Path, pg_dsn: str) -> None:
    """Holds: a table without a key ('snapshot-only') is copied back whole, duplicates kept."""
    src = make_source(
        tmp_path / "app.db",
        "CREATE TABLE t (a TEXT, b INTEGER);",
        "INSERT INTO t VALUES ('x', 1), ('x', 1);",
        capture=False,
    )
    install.install(src, default_policy="snapshot-only")
    config = conf(capture={"no_key_policy": "snapshot-only"})
    drain(src, pg_dsn, config)
    cutover(src, pg_dsn, config, Options(backup=False, certificate_path=tmp_path / "cert.json"))
    _on_postgres(pg_dsn, "INSERT INTO public.t VALUES ('y', 2)", "UPDATE public.t SET b = 3 WHERE a = 'y'")
    window_rollback.rollback(src, pg_dsn, config)
    assert sorted(_rows(src, "SELECT a, b FROM t")) == [("x", 1), ("x", 1), ("y", 3)]


# --- schema changes in PostgreSQL during the window -----------------------------------------------------------


def test_a_column_added_in_postgres_is_refused_not_dropped(tmp_path: Path, pg_dsn: str) -> None:
    """An ORM migration adds a column on PostgreSQL and the app fills it. SQLite has nowhere to put it: rollback
    used to prove the *planned* columns equal and go back, losing the column's values without a word."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    _on_postgres(
        pg_dsn,
        "ALTER TABLE public.parent ADD COLUMN nickname text",
        "UPDATE public.parent SET nickname = 'important', score = 2 WHERE id = 1",
    )
    with pytest.raises(ReplicatorError, match=r"(?s)parent.*nickname"):
        window_rollback.rollback(src, pg_dsn, cfg())
    assert not writable(src)
    _on_postgres(pg_dsn, "INSERT INTO public.parent (id, name) VALUES (9, 'app still writes')")


def test_a_column_dropped_in_postgres_is_refused_by_name(tmp_path: Path, pg_dsn: str) -> None:
    """A column dropped on PostgreSQL: the batch's SELECT failed with psycopg's bare UndefinedColumn."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    _on_postgres(pg_dsn, "ALTER TABLE public.child DROP COLUMN label", "UPDATE public.child SET code = 'q'")
    with pytest.raises(ReplicatorError, match=r"(?s)child.*label"):
        _run(src, pg_dsn)
    assert _rows(src, "SELECT * FROM child") == [(10, 1, "x", "c10")]


def test_a_table_recreated_in_postgres_during_the_window_is_refused(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ORM migration drops and re-creates a table with the same columns: the capture trigger went with the
    old table, so the new one's rows were never journaled, and those written after rollback's full comparison
    were left behind without a word (the columns matched the plan)."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    fence_postgres = window_rollback._fence_postgres

    def recreate_first(session: loop.Session, dsn: str, max_downtime_s: float) -> None:
        _on_postgres(
            pg_dsn,
            "DROP TABLE public.child",
            "CREATE TABLE public.child (id bigint PRIMARY KEY, parent_id bigint, label text, code text)",
            "INSERT INTO public.child VALUES (10, 1, 'x', 'c10'), (20, 2, 'new', 'c20')",
        )
        fence_postgres(session, dsn, max_downtime_s)

    monkeypatch.setattr(window_rollback, "_fence_postgres", recreate_first)
    with pytest.raises(ReplicatorError, match=r"(?s)child.*capture"):
        window_rollback.rollback(src, pg_dsn, cfg())
    assert not writable(src)


def test_a_table_created_in_postgres_during_the_window_stops_rollback(tmp_path: Path, pg_dsn: str) -> None:
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    _on_postgres(
        pg_dsn,
        "CREATE TABLE public.invoices (id int PRIMARY KEY, total numeric)",
        "INSERT INTO public.invoices VALUES (1, 9.5)",
    )
    with pytest.raises(ReplicatorError, match="invoices"):
        window_rollback.rollback(src, pg_dsn, cfg())


def test_an_app_session_in_replica_mode_is_still_journaled_and_fenced(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SET session_replication_role = replica`` (bulk loaders, pg_restore-like tools, an app connected as a
    superuser) turns off ordinary triggers: the capture did not journal such a write, so one made after
    rollback's full comparison and before its fence was lost without a word, and the fence itself let such a
    session write after the rollback. Both triggers must fire in every mode (ENABLE ALWAYS)."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    fence_postgres = window_rollback._fence_postgres

    def replica_write_first(session: loop.Session, dsn: str, max_downtime_s: float) -> None:
        _on_postgres(
            pg_dsn, "SET session_replication_role = replica", "UPDATE public.parent SET score = 8 WHERE id = 2"
        )
        fence_postgres(session, dsn, max_downtime_s)

    monkeypatch.setattr(window_rollback, "_fence_postgres", replica_write_first)
    window_rollback.rollback(src, pg_dsn, cfg())
    assert _rows(src, "SELECT id, score FROM parent ORDER BY id") == [(1, 1.5), (2, 8.0)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="rolled back to SQLite"):
        _on_postgres(pg_dsn, "SET session_replication_role = replica", "INSERT INTO public.parent VALUES (9, 'z', 1)")


# --- refused values -------------------------------------------------------------------------------------------


def test_a_value_refused_in_the_final_drain_stops_rollback_by_name(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app writes a value SQLite's form cannot hold (NaN into a REAL) after rollback's check of the refused
    values and before the fence: the final drain refuses it. Rollback must stop and name it, as it does for one
    refused earlier (it only ever checked before the fence)."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    fence_postgres = window_rollback._fence_postgres

    def app_writes_first(session: loop.Session, dsn: str, max_downtime_s: float) -> None:
        _on_postgres(pg_dsn, "UPDATE public.parent SET score = 'NaN' WHERE id = 1")
        fence_postgres(session, dsn, max_downtime_s)

    monkeypatch.setattr(window_rollback, "_fence_postgres", app_writes_first)
    with pytest.raises(ReplicatorError, match="not written back"):
        window_rollback.rollback(src, pg_dsn, cfg())
    assert not writable(src)
    _on_postgres(pg_dsn, "UPDATE public.parent SET score = 1 WHERE id = 2")  # PostgreSQL writable again


def test_an_acknowledged_refusal_lets_rollback_proceed(tmp_path: Path, pg_dsn: str) -> None:
    """Holds: rollback refuses while a refused value is not acknowledged, then goes back keeping SQLite's row."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    _on_postgres(pg_dsn, "UPDATE public.parent SET score = 'NaN' WHERE id = 1")
    with pytest.raises(ReplicatorError, match="not written back"):  # before the fence, or after the final drain
        window_rollback.rollback(src, pg_dsn, cfg())
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert quarantine.acknowledge(StateStore(conn, "replicator")) == 1
    window_rollback.rollback(src, pg_dsn, cfg())
    assert _rows(src, "SELECT id, score FROM parent ORDER BY id") == [(1, 1.5), (2, None)]  # the loss accepted


def test_an_acknowledged_refusal_on_a_date_time_key(tmp_path: Path, pg_dsn: str) -> None:
    """The acknowledged key must be recognised when the key is a date-time (the quarantine records PostgreSQL's
    value, the proof compares SQLite's spelling)."""
    src = _cut(
        tmp_path,
        pg_dsn,
        "CREATE TABLE t (at DATETIME PRIMARY KEY, v REAL);",
        "INSERT INTO t VALUES ('2024-05-01 10:00:00', 1.5), ('2024-05-02 10:00:00', 2.5);",
    )
    _on_postgres(pg_dsn, "UPDATE public.t SET v = 'NaN' WHERE v = 1.5")
    with pytest.raises(ReplicatorError, match="not written back"):  # before the fence, or after the final drain
        window_rollback.rollback(src, pg_dsn, cfg())
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert quarantine.acknowledge(StateStore(conn, "replicator")) == 1
    window_rollback.rollback(src, pg_dsn, cfg())
    assert _rows(src, "SELECT at, v FROM t ORDER BY at") == [("2024-05-01 10:00:00", 1.5), ("2024-05-02 10:00:00", 2.5)]


def test_a_refusal_survives_a_crash_between_the_two_commits(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch with a refused value is committed in SQLite, then the process dies before PostgreSQL's commit:
    settle() appends the batch's checkpoint from the SQLite file, but the refusal was recorded only in the
    PostgreSQL transaction that never committed. Rollback must still name the value (and wait for its
    acknowledgement), not go on or fail with an unexplained difference."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    _on_postgres(pg_dsn, "UPDATE public.parent SET score = 'NaN' WHERE id = 1")

    class Crash(Exception):
        pass

    def crash_between_commits(name: str) -> None:
        if name == "reverse.between_commits":
            raise Crash(name)

    with monkeypatch.context() as patched:
        patched.setattr(faults, "point", crash_between_commits)
        with pytest.raises(Crash):
            _run(src, pg_dsn)
    _run(src, pg_dsn)  # settles
    with pytest.raises(ReplicatorError, match="not written back"):
        window_rollback.rollback(src, pg_dsn, cfg())


def test_a_value_refused_in_a_table_written_whole_is_quarantined(tmp_path: Path, pg_dsn: str) -> None:
    """A TRUNCATE makes the batch write the table whole. A value refused there was left out of the rewrite and
    out of the quarantine too (its keys were only replaced for keyed batches): SQLite lost the row, nothing
    named it, and rollback failed on an unexplained difference with nothing to acknowledge."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    _on_postgres(
        pg_dsn,
        "TRUNCATE public.parent CASCADE",
        "INSERT INTO public.parent VALUES (1, 'a', 'NaN'), (2, 'b', 2)",
    )
    _run(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        refused = [v for v in quarantine.list_values(StateStore(conn, "replicator")) if v.table == "parent"]
    assert [(v.key, v.column) for v in refused] == [({"id": 1}, "score")]
    with pytest.raises(ReplicatorError, match="not written back"):
        window_rollback.rollback(src, pg_dsn, cfg())


# --- the window's life ----------------------------------------------------------------------------------------


def test_a_second_window_after_a_rollback_and_a_new_migration(tmp_path: Path, pg_dsn: str) -> None:
    """Rolled back, then migrated again (snapshot --replace, run, cutover): the first window's position stayed
    in the SQLite file, so the second window's daemon, rollback and finalize all refused ('one side was restored
    or edited'), with no way out."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    _on_postgres(pg_dsn, "UPDATE public.parent SET score = 3 WHERE id = 1")
    window_rollback.rollback(src, pg_dsn, cfg())
    snapshot_mod.snapshot(src, pg_dsn, cfg(), SnapshotOptions(replace=True))
    drain(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert2.json"))
    _on_postgres(pg_dsn, "UPDATE public.parent SET score = 4 WHERE id = 1")
    _run(src, pg_dsn)
    assert _rows(src, "SELECT id, score FROM parent ORDER BY id") == [(1, 4.0), (2, None)]
    window_rollback.rollback(src, pg_dsn, cfg())
    assert writable(src)


def test_migrating_again_in_existing_mode_after_a_rollback(tmp_path: Path, pg_dsn: str) -> None:
    """After a rollback the phase says 'start over with snapshot --replace'. In existing mode (the app's ORM owns
    PostgreSQL's schema) that empties the tables with TRUNCATE, which the rollback's fence refused: the new
    migration failed on a bare ReadOnlySqlTransaction. In create mode the tables are dropped, fence and all."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    _on_postgres(pg_dsn, "UPDATE public.parent SET score = 3 WHERE id = 1")
    window_rollback.rollback(src, pg_dsn, cfg())
    snapshot_mod.snapshot(src, pg_dsn, cfg(), SnapshotOptions(replace=True, mode="existing"))
    drain(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert2.json"))
    _on_postgres(pg_dsn, "UPDATE public.parent SET score = 4 WHERE id = 1")
    _run(src, pg_dsn)
    assert _rows(src, "SELECT id, score FROM parent ORDER BY id") == [(1, 4.0), (2, None)]


def test_autoincrement_after_rollback_never_reuses_an_id_postgres_gave(tmp_path: Path, pg_dsn: str) -> None:
    """AUTOINCREMENT promises an id is never reused. PostgreSQL gave 3 and 4 and the app deleted 4: after the
    rollback SQLite's counter stood at 3 and the next insert took 4 again."""
    src = _cut(
        tmp_path,
        pg_dsn,
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);",
        "INSERT INTO t (v) VALUES ('a'), ('b');",
    )
    _on_postgres(pg_dsn, "INSERT INTO public.t (v) VALUES ('c'), ('d')", "DELETE FROM public.t WHERE v = 'd'")
    window_rollback.rollback(src, pg_dsn, cfg())
    conn = sqlite3.connect(src, isolation_level=None)
    try:
        conn.execute("INSERT INTO t (v) VALUES ('after')")
        assert conn.execute("SELECT id FROM t WHERE v = 'after'").fetchone() == (5,)
    finally:
        conn.close()


def test_rollback_while_the_app_writes_across_tables_loses_nothing(tmp_path: Path, pg_dsn: str) -> None:
    """Three app threads write parent then child in one transaction, all touching one hot row, while rollback
    runs. Every transaction that committed is in SQLite (the hot row's sum says no update was lost), the others
    were refused by the fence with its message. The fence used to lock the tables in name order (child first),
    deadlock with such transactions and fail with psycopg's bare DeadlockDetected."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    committed: list[int] = []
    fenced: list[str] = []
    stop = threading.Event()

    def app(n: int) -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for i in range(1, 100_000):
                if stop.is_set():
                    return
                k = 1000 * (n + 1) + i
                try:
                    with conn.transaction():
                        conn.execute("INSERT INTO public.parent VALUES (%s, %s, 1)", (k, f"n{k}"))
                        conn.execute("UPDATE public.parent SET score = score + 1 WHERE id = 1")
                        conn.execute("INSERT INTO public.child VALUES (%s, %s, 'l', %s)", (k, k, f"c{k}"))
                    committed.append(k)
                except psycopg.errors.ReadOnlySqlTransaction as exc:
                    fenced.append(str(exc))
                    time.sleep(0.01)

    threads = [threading.Thread(target=app, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        window_rollback.rollback(src, pg_dsn, cfg())
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert committed
    assert {r[0] for r in _rows(src, "SELECT id FROM parent WHERE id >= 1000")} == set(committed)
    assert {r[0] for r in _rows(src, "SELECT id FROM child WHERE id >= 1000")} == set(committed)
    assert _rows(src, "SELECT score FROM parent WHERE id = 1") == [(1.5 + len(committed),)]
    assert fenced
    assert all("rolled back to SQLite" in m for m in fenced)


def test_rollback_and_a_daemon_at_once_finalize_then_rollback_rollback_twice(tmp_path: Path, pg_dsn: str) -> None:
    """Holds: rollback beside a running reverse daemon is refused (the lock); finalize then rollback is refused;
    a second rollback says it is done."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    stop = threading.Event()
    daemon = threading.Thread(target=lambda: loop.run(src, pg_dsn, cfg(), stop=stop))
    daemon.start()
    try:
        time.sleep(0.5)
        with pytest.raises(ReplicatorError, match="another replicator"):
            window_rollback.rollback(src, pg_dsn, cfg())
    finally:
        stop.set()
        daemon.join(30)
    window_rollback.rollback(src, pg_dsn, cfg())
    with pytest.raises(window_rollback.RollbackRefused, match="already rolled back"):
        window_rollback.rollback(src, pg_dsn, cfg())
    with pytest.raises(loop.NoWindow):
        finalize.finalize(src, pg_dsn, cfg())


def test_finalize_then_rollback_is_refused(tmp_path: Path, pg_dsn: str) -> None:
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    finalize.finalize(src, pg_dsn, cfg())
    with pytest.raises(window_rollback.RollbackRefused, match="closed by finalize"):
        window_rollback.rollback(src, pg_dsn, cfg())
    assert not writable(src)


@pytest.fixture
def app_role(pg_dsn: str) -> Iterator[str]:
    """A login role with rights on the app's tables only: none on the state schema."""
    role = f"app_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    yield conninfo.make_conninfo(pg_dsn, user=role)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_an_app_role_without_rights_on_the_state_schema_still_journals(
    tmp_path: Path, pg_dsn: str, app_role: str
) -> None:
    """Holds: SECURITY DEFINER capture journals the writes of a role that may not touch the state schema, and
    the fence refuses it afterwards with its message."""
    src = _cut(tmp_path, pg_dsn, rows=PARENTS)
    role = sql.Identifier(str(conninfo.conninfo_to_dict(app_role)["user"]))
    _on_postgres(
        pg_dsn,
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role).as_string(None),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO {}")
        .format(role)
        .as_string(None),
        "REVOKE ALL ON SCHEMA replicator FROM PUBLIC",
    )
    with psycopg.connect(app_role, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT 1 FROM replicator.reverse_journal")
        conn.execute("INSERT INTO public.parent VALUES (3, 'c', 2)")
        conn.execute("TRUNCATE public.child")
    window_rollback.rollback(src, pg_dsn, cfg())
    assert _rows(src, "SELECT id FROM parent ORDER BY id") == [(1,), (2,), (3,)]
    assert _rows(src, "SELECT id FROM child") == []
    with (
        psycopg.connect(app_role, autocommit=True) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="rolled back to SQLite"),
    ):
        conn.execute("INSERT INTO public.parent VALUES (4, 'd', 2)")
