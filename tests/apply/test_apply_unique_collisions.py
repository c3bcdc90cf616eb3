"""UNIQUE indexes where values SQLite keeps distinct are equal in PostgreSQL (issue 14, item 2).

SQLite's lower() folds ASCII only, PostgreSQL's folds every letter; two spellings of one instant are
two texts in SQLite and one timestamp in PostgreSQL. The apply must never delete a PostgreSQL row
whose key SQLite still has: it stops, naming both keys and the index, and the daemon is ERRORED.
A row SQLite really removed (a REPLACE victim) is still removed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from checkpoints import store
from replicator import config
from replicator.apply.batch import read_batch
from replicator.apply.targets import resolve_targets
from replicator.apply.writer import Writer
from replicator.errors import TargetError, UniqueCollision
from replicator.load import snapshot
from replicator.state import phase
from replicator.state.store import StateStore
from replicator.stream.worker import Worker
from tests.support.cli import status_json
from tests.support.compare import check_same, drain
from tests.support.daemon import cfg
from tests.support.source import app, make_source
from tests.support.state import read_phase
from triggers.meta import read_meta

pytestmark = pytest.mark.e2e

USERS = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE UNIQUE INDEX users_lower ON users (lower(name));
"""
BOOKINGS = """
CREATE TABLE bookings (
    id INTEGER PRIMARY KEY, room INTEGER NOT NULL, starts_at DATETIME NOT NULL, UNIQUE (room, starts_at)
);
"""


def pg_rows(dsn: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def assert_refused_and_errored(path: Path, dsn: str, index: str) -> None:
    """The drain stops with one line naming both keys and the index; status says ERRORED and exits 1."""
    with pytest.raises(UniqueCollision) as raised:
        drain(path, dsn)
    message = raised.value.message
    assert "\n" not in message
    assert "id=1" in message, message
    assert "id=2" in message, message
    assert index in message, message
    assert raised.value.hint
    state = read_phase(dsn)
    assert state is not None
    assert state.phase is phase.Phase.ERRORED
    code, got = status_json(path, dsn)
    assert code == 1
    assert got["phase"] == "ERRORED"
    assert index in str(got["reason"])
    assert got["hint"]


def test_lower_expression_index_keeps_both_rows_sqlite_keeps_apart(tmp_path: Path, pg_dsn: str) -> None:
    """PostgreSQL's index on lower() folds ASCII letters only, as SQLite's does (replicator.plan.sqlexpr): the
    rows SQLite keeps apart are apart in PostgreSQL too, and nothing collides."""
    path = make_source(tmp_path / "a.db", USERS, "INSERT INTO users VALUES (1, 'Émile');")
    drain(path, pg_dsn)
    db = app(path)
    db.execute("INSERT INTO users VALUES (2, 'émile')")  # lower() in SQLite: 'Émile' and 'émile', distinct
    assert db.execute("SELECT count(*) FROM users").fetchone() == (2,)
    drain(path, pg_dsn)
    assert pg_rows(pg_dsn, "SELECT id, name FROM users ORDER BY id") == [(1, "Émile"), (2, "émile")]
    check_same(path, pg_dsn)


def test_two_spellings_of_one_instant_never_delete_a_row_sqlite_keeps(tmp_path: Path, pg_dsn: str) -> None:
    path = make_source(tmp_path / "b.db", BOOKINGS, "INSERT INTO bookings VALUES (1, 7, '2024-05-01 10:00:00');")
    drain(path, pg_dsn)
    types = pg_rows(
        pg_dsn,
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'bookings' AND column_name = 'starts_at'",
    )
    assert types == [("timestamp without time zone",)]
    db = app(path)
    db.execute("INSERT INTO bookings VALUES (2, 7, '2024-05-01T10:00:00')")  # distinct text in SQLite
    assert_refused_and_errored(path, pg_dsn, "bookings_room_starts_at_key")
    assert [r[0] for r in pg_rows(pg_dsn, "SELECT id FROM bookings ORDER BY id")] == [1]


def test_collision_inside_one_batch_names_both_keys(tmp_path: Path, pg_dsn: str) -> None:
    """Both rows new in the same batch: the refusal names both, not PostgreSQL's bare unique violation."""
    path = make_source(tmp_path / "c.db", BOOKINGS, "INSERT INTO bookings VALUES (3, 9, '2024-05-02 10:00:00');")
    drain(path, pg_dsn)
    db = app(path)
    db.execute("BEGIN")
    db.execute("INSERT INTO bookings VALUES (1, 7, '2024-05-01 10:00:00')")
    db.execute("INSERT INTO bookings VALUES (2, 7, '2024-05-01T10:00:00')")
    db.execute("COMMIT")
    assert_refused_and_errored(path, pg_dsn, "bookings_room_starts_at_key")
    assert pg_rows(pg_dsn, "SELECT id FROM bookings ORDER BY id") == [(3,)]


def test_fixing_the_row_in_sqlite_lets_the_daemon_resume(tmp_path: Path, pg_dsn: str) -> None:
    """The hint works word for word: make the values distinct as PostgreSQL compares them, run again."""
    path = make_source(tmp_path / "d.db", BOOKINGS, "INSERT INTO bookings VALUES (1, 7, '2024-05-01 10:00:00');")
    drain(path, pg_dsn)
    db = app(path)
    db.execute("INSERT INTO bookings VALUES (2, 7, '2024-05-01T10:00:00')")
    with pytest.raises(UniqueCollision):
        drain(path, pg_dsn)
    db.execute("UPDATE bookings SET starts_at = '2024-05-01 11:00:00' WHERE id = 2")
    drain(path, pg_dsn)
    check_same(path, pg_dsn)


def test_replace_victim_of_an_expression_index_is_still_deleted(tmp_path: Path, pg_dsn: str) -> None:
    """SQLite's REPLACE deletes the row equal under lower() (no trigger journals it): PostgreSQL loses it too."""
    path = make_source(tmp_path / "e.db", USERS, "INSERT INTO users VALUES (1, 'Bob'), (3, 'Ann');")
    drain(path, pg_dsn)
    db = app(path)
    db.execute("INSERT OR REPLACE INTO users VALUES (2, 'bob')")
    assert db.execute("SELECT id FROM users ORDER BY id").fetchall() == [(2,), (3,)]
    drain(path, pg_dsn)
    check_same(path, pg_dsn)
    assert pg_rows(pg_dsn, "SELECT id, name FROM users ORDER BY id") == [(2, "bob"), (3, "Ann")]


def test_replace_victim_of_a_column_index_is_still_deleted(tmp_path: Path, pg_dsn: str) -> None:
    path = make_source(tmp_path / "f.db", BOOKINGS, "INSERT INTO bookings VALUES (1, 7, '2024-05-01 10:00:00');")
    drain(path, pg_dsn)
    db = app(path)
    db.execute("INSERT OR REPLACE INTO bookings VALUES (2, 7, '2024-05-01 10:00:00')")
    drain(path, pg_dsn)
    check_same(path, pg_dsn)
    assert [r[0] for r in pg_rows(pg_dsn, "SELECT id FROM bookings")] == [2]


def test_a_row_that_moved_away_later_is_rewritten_not_lost(tmp_path: Path, pg_dsn: str) -> None:
    """A batch ends before the entry that moved the old holder of a value away: that row is rewritten
    from SQLite's current state in the same transaction, never deleted, and the state converges."""
    path = make_source(tmp_path / "g.db", USERS, "INSERT INTO users VALUES (1, 'x'), (2, 'y');")
    drain(path, pg_dsn)
    db = app(path)
    db.execute("UPDATE users SET name = 'y2' WHERE id = 2")  # seq 1: key 2, whose current name will be 'x'
    db.execute("UPDATE users SET name = 'z' WHERE id = 1")  # seq 2: key 1 moves away from 'x'
    db.execute("UPDATE users SET name = 'X' WHERE id = 2")  # seq 3: key 2 takes 'x' (as lower() sees it)
    first = drain(path, pg_dsn, cfg(batch_rows=1, batch_bytes=1 << 20))
    assert first.changes == 3
    check_same(path, pg_dsn)
    assert pg_rows(pg_dsn, "SELECT id, name FROM users ORDER BY id") == [(1, "z"), (2, "X")]


SLOTS = """
CREATE TABLE slots (day DATE PRIMARY KEY, label TEXT NOT NULL);
CREATE UNIQUE INDEX slots_label ON slots (lower(label));
"""


def test_a_converted_key_is_found_in_sqlite_by_its_converted_value(tmp_path: Path, pg_dsn: str) -> None:
    """A date key read back from PostgreSQL is not SQLite's text: the lookup converts SQLite's keys to find
    it. The REPLACE victim (gone in SQLite) is deleted, the row SQLite keeps is not."""
    path = make_source(
        tmp_path / "s.db", SLOTS, "INSERT INTO slots VALUES ('2024-05-01', 'Bob'), ('2024-05-03', 'ZOË');"
    )
    drain(path, pg_dsn)
    assert pg_rows(
        pg_dsn, "SELECT data_type FROM information_schema.columns WHERE table_name = 'slots' AND column_name = 'day'"
    ) == [("date",)]
    db = app(path)
    db.execute("INSERT OR REPLACE INTO slots VALUES ('2024-05-02', 'bob')")
    drain(path, pg_dsn)
    check_same(path, pg_dsn)
    db.execute("INSERT INTO slots VALUES ('2024-05-04', 'zoë')")  # apart from 'ZOË' under both lower()s
    drain(path, pg_dsn)
    check_same(path, pg_dsn)


@pytest.mark.parametrize(
    ("schema", "rows", "table", "index"),
    [
        (
            BOOKINGS,
            "INSERT INTO bookings VALUES (1, 7, '2024-05-01 10:00:00'), (2, 7, '2024-05-01T10:00:00');",
            "bookings",
            "bookings_room_starts_at_key",
        ),
    ],
)
def test_snapshot_names_both_rows_a_unique_index_cannot_hold(
    tmp_path: Path, pg_dsn: str, schema: str, rows: str, table: str, index: str
) -> None:
    """Both rows already in SQLite: the snapshot loads both and says which two rows kept the index out."""
    path = make_source(tmp_path / "snap.db", schema, rows)
    result = snapshot.snapshot(path, pg_dsn, config.load(environ={}), mode="create")
    refused = [w for w in result.warnings if "not created" in w]
    assert len(refused) == 1, result.warnings
    assert f"rows {table} (id=1) and (id=2) are distinct in SQLite but equal in PostgreSQL" in refused[0]
    assert f"unique index {index}" in refused[0]
    assert [r[0] for r in pg_rows(pg_dsn, f"SELECT id FROM {table} ORDER BY id")] == [1, 2]


def test_rows_postgresql_normalises_take_the_same_path(tmp_path: Path, pg_dsn: str) -> None:
    """A json column: the inserted rows are digested from what PostgreSQL returns (not the converted
    values), inside the savepoint that lets a collision be named."""
    schema = USERS.replace("name TEXT NOT NULL", "name TEXT NOT NULL, prefs JSON")
    path = make_source(tmp_path / "j.db", schema, """INSERT INTO users VALUES (1, 'Bob', '{"b": 1, "a": 2}');""")
    drain(path, pg_dsn)
    assert pg_rows(
        pg_dsn, "SELECT data_type FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'prefs'"
    ) == [("json",)]
    db = app(path)
    db.execute("""INSERT OR REPLACE INTO users VALUES (2, 'bob', '{"z": [1,  2]}')""")
    db.execute("""INSERT INTO users VALUES (3, 'ÉLODIE', '{}')""")
    drain(path, pg_dsn)
    check_same(path, pg_dsn)
    db.execute("""INSERT INTO users VALUES (4, 'élodie', '{}')""")  # apart from 'ÉLODIE' under both lower()s
    drain(path, pg_dsn)
    check_same(path, pg_dsn)


def test_two_rows_swapping_a_value_while_the_batch_is_applied_is_retried_not_refused(
    tmp_path: Path, pg_dsn: str
) -> None:
    """The batch holds key 2 at 'x' (read first); the row PostgreSQL has at 'x' (key 1) is looked up
    later, after the app swapped the value back to it. Both staged rows hold 'x', but SQLite never held
    both at once: the batch is retried (transient), not refused, and the state converges."""
    path = make_source(tmp_path / "w.db", USERS, "INSERT INTO users VALUES (1, 'x'), (2, 'y');")
    drain(path, pg_dsn)
    db = app(path)
    db.execute("UPDATE users SET name = 'y' WHERE id = 2")  # seq 1: key 2 (its current name will be 'x')
    db.execute("UPDATE users SET name = 'w' WHERE id = 1")  # seq 2: key 1 leaves 'x'
    db.execute("UPDATE users SET name = 'x' WHERE id = 2")  # seq 3: key 2 takes 'x'
    with psycopg.connect(pg_dsn, autocommit=True) as pconn, sqlite3.connect(path, isolation_level=None) as sconn:
        plan = StateStore(pconn, "replicator").load_plan()
        meta = read_meta(sconn)
        assert plan is not None
        assert meta is not None
        targets, _ = resolve_targets(plan, meta)
        prev = store.latest(pconn, schema="replicator")
        assert prev is not None
        batch = read_batch(sconn, prev.seq_to, targets, max_rows=1, max_bytes=1 << 20)
        assert batch.tables["users"].rows == [(2, "x", 2)]
        db.execute("BEGIN")  # the swap back, after the batch was read
        db.execute("UPDATE users SET name = 'tmp' WHERE id = 2")
        db.execute("UPDATE users SET name = 'x' WHERE id = 1")
        db.execute("COMMIT")
        writer = Writer(StateStore(pconn, "replicator"), targets, fk="replica", on_bad_value="stop", source=sconn)
        try:
            with pytest.raises(TargetError) as raised:
                writer.write_batch(batch, prev)
        finally:
            writer.close()
        assert not isinstance(raised.value, UniqueCollision)
        assert raised.value.transient
    assert pg_rows(pg_dsn, "SELECT id, name FROM users ORDER BY id") == [(1, "x"), (2, "y")]  # rolled back
    drain(path, pg_dsn)
    check_same(path, pg_dsn)


def test_existing_mode_snapshot_names_both_rows_the_apps_index_cannot_hold(tmp_path: Path, pg_dsn: str) -> None:
    """Existing mode: the app's own migration built the index on PostgreSQL's lower(), which folds every letter,
    so 'Émile' and 'émile' (apart under SQLite's ASCII-only lower()) are equal there. The snapshot must refuse
    in one line naming both rows and the index, with nothing committed."""
    path = make_source(tmp_path / "x.db", USERS, "INSERT INTO users VALUES (1, 'Émile'), (2, 'émile');")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL)")
        conn.execute("CREATE UNIQUE INDEX users_lower ON users (lower(name))")
    with pytest.raises(UniqueCollision) as refused:
        snapshot.snapshot(path, pg_dsn, config.load(environ={}), mode="existing")
    message = refused.value.message
    assert "\n" not in message
    assert "rows users (id=1) and (id=2) are distinct in SQLite but equal in PostgreSQL" in message, message
    assert "unique index users_lower (lower(name))" in message, message
    assert refused.value.hint
    assert pg_rows(pg_dsn, "SELECT count(*) FROM users") == [(0,)]  # nothing committed
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # the app's index is still there, unchanged
        defined = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'users_lower'").fetchall()
    assert defined == [("CREATE UNIQUE INDEX users_lower ON public.users USING btree (lower(name))",)]


def test_existing_mode_snapshot_names_both_rows_a_unique_constraint_cannot_hold(tmp_path: Path, pg_dsn: str) -> None:
    """The same over a UNIQUE constraint (Django's unique_together) on a timestamp column: two spellings of one
    instant. The constraint is put back with the rolled-back transaction, and one fix lets the snapshot load."""
    path = make_source(
        tmp_path / "y.db",
        BOOKINGS,
        "INSERT INTO bookings VALUES (1, 7, '2024-05-01 10:00:00'), (2, 7, '2024-05-01T10:00:00');",
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bookings (id bigint PRIMARY KEY, room bigint NOT NULL, starts_at timestamp NOT NULL,"
            " CONSTRAINT bookings_slot UNIQUE (room, starts_at))"
        )
    with pytest.raises(
        UniqueCollision, match=r"rows bookings \(id=1\) and \(id=2\) .* bookings_slot \(room, starts_at\)"
    ):
        snapshot.snapshot(path, pg_dsn, config.load(environ={}), mode="existing")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM bookings").fetchone() == (0,)
        kept = conn.execute("SELECT contype FROM pg_constraint WHERE conname = 'bookings_slot'").fetchall()
    assert kept == [("u",)]
    app(path).execute("UPDATE bookings SET starts_at = '2024-05-01 11:00:00' WHERE id = 2")
    snapshot.snapshot(path, pg_dsn, config.load(environ={}), mode="existing")
    assert pg_rows(pg_dsn, "SELECT id FROM bookings ORDER BY id") == [(1,), (2,)]


def test_existing_mode_snapshot_names_the_key_two_spellings_share(tmp_path: Path, pg_dsn: str) -> None:
    """A date-time primary key written two ways: one key in PostgreSQL, so the refusal names that key (PostgreSQL's
    detail) and the constraint, in one line, with nothing committed."""
    path = make_source(
        tmp_path / "k.db",
        "CREATE TABLE slots (at DATETIME PRIMARY KEY NOT NULL, label TEXT);",
        "INSERT INTO slots VALUES ('2024-05-01 10:00:00', 'a'), ('2024-05-01T10:00:00', 'b');",
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE slots (at timestamp PRIMARY KEY, label text)")
    with pytest.raises(TargetError) as refused:
        snapshot.snapshot(path, pg_dsn, config.load(environ={}), mode="existing")
    message = refused.value.message
    assert "\n" not in message
    assert 'unique constraint "slots_pkey" (Key (at)=(2024-05-01 10:00:00) already exists)' in message, message
    assert pg_rows(pg_dsn, "SELECT count(*) FROM slots") == [(0,)]


def test_existing_mode_apply_keeps_the_row_the_apps_lower_index_would_lose(tmp_path: Path, pg_dsn: str) -> None:
    """Issue 14 item 2a where it still bites: the app's own PostgreSQL index on lower(), which folds 'É'. The
    apply stops naming both keys and the index; 'Émile' is never deleted; status says ERRORED, exits 1."""
    path = make_source(tmp_path / "e.db", USERS, "INSERT INTO users VALUES (1, 'Émile');")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL)")
        conn.execute("CREATE UNIQUE INDEX users_lower ON users (lower(name))")
    existing = config.load(overrides={"apply": {"poll_interval_s": 0.05}, "snapshot": {"mode": "existing"}}, environ={})
    drain(path, pg_dsn, existing)
    app(path).execute("INSERT INTO users VALUES (2, 'émile')")
    with pytest.raises(UniqueCollision) as refused:
        drain(path, pg_dsn, existing)
    assert "rows users (id=1) and (id=2) are distinct in SQLite but equal in PostgreSQL" in refused.value.message
    assert "unique index users_lower (lower(name))" in refused.value.message
    assert pg_rows(pg_dsn, "SELECT id, name FROM users") == [(1, "Émile")]
    code, got = status_json(path, pg_dsn)
    assert code == 1
    assert got["phase"] == "ERRORED"


def test_a_unique_constraint_checked_at_commit_still_has_its_row_rewritten(tmp_path: Path, pg_dsn: str) -> None:
    """A target UNIQUE constraint DEFERRABLE INITIALLY DEFERRED: PostgreSQL checks it at COMMIT, by a trigger
    that ``session_replication_role = replica`` turns off, so nothing would ever refuse a row written into its
    way. A row that moves away only in a later batch is still found in the way and rewritten from SQLite in
    the same batch: no checkpoint ever holds two rows equal on the constraint."""
    path = make_source(
        tmp_path / "h.db",
        "CREATE TABLE codes (id INTEGER PRIMARY KEY, code TEXT NOT NULL);",
        "INSERT INTO codes VALUES (1, 'x'), (2, 'y');",
    )
    drain(path, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE codes ADD CONSTRAINT codes_code UNIQUE (code) DEFERRABLE INITIALLY DEFERRED")
    db = app(path)
    db.execute("UPDATE codes SET code = 'y2' WHERE id = 2")  # seq 1: key 2, whose current code will be 'x'
    db.execute("UPDATE codes SET code = 'z' WHERE id = 1")  # seq 2: key 1 moves away from 'x'
    db.execute("UPDATE codes SET code = 'x' WHERE id = 2")  # seq 3: key 2 takes 'x'
    one = Worker(path, pg_dsn, cfg(batch_rows=1, batch_bytes=1 << 20)).run(once=True)
    assert (one.batches, one.applied_seq) == (1, 1)
    assert pg_rows(pg_dsn, "SELECT id, code FROM codes ORDER BY id") == [(1, "z"), (2, "x")]
    drain(path, pg_dsn)
    check_same(path, pg_dsn)
