"""Existing mode: the ORM's own PostgreSQL schema (as its migrations create it) receives the SQLite rows.

The DDL fixtures in tests/fixtures/orm_pg/ follow each ORM's documented PostgreSQL types. Every row is
compared back: instants identical to the microsecond (so to the millisecond), JSON equal by value,
decimals exact, enums by label.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from replicator import config
from replicator.config import ColumnOverride
from replicator.errors import UsageError
from replicator.load import snapshot
from tests.support.compare import assert_same
from tests.support.paths import FIXTURES

ORM_PG = FIXTURES / "orm_pg"
CFG = config.load(None, environ={})


def _with_types(types: dict[str, dict[str, ColumnOverride]]) -> config.Config:
    return msgspec.structs.replace(CFG, types=types)


def _apply(pg: psycopg.Connection[Any], fixture: str) -> None:
    pg.execute((ORM_PG / fixture).read_text())


@pytest.mark.parametrize("name", ["prisma7_small_unixms.db", "prisma7_small_iso8601.db", "prisma7_json_scalars.db"])
def test_prisma_schema_receives_every_row(name: str, realworld: Path, pg_dsn: str, pg: Any) -> None:
    _apply(pg, "prisma.sql")
    path = realworld / "orm-samples" / name
    result = snapshot.snapshot(path, pg_dsn, CFG)  # auto: the schema has tables, so existing mode
    assert result.mode == "existing"
    assert result.plan is not None
    counts = assert_same(path, pg, result.plan)
    assert counts["Account"] >= 3
    types = {c.name: c.type.name for c in result.plan.table("Account").columns}
    assert (types["createdAt"], types["balance"], types["role"]) == ("timestamp", "numeric", "enum")
    if name != "prisma7_json_scalars.db":
        # The unix-ms and ISO variants hold the same instant for the post: identical to the millisecond.
        published = pg.execute('SELECT "publishedAt" FROM "Post"').fetchone()[0]
        assert published.isoformat() == "2024-03-05T06:07:08.009000"
        big = pg.execute('SELECT balance FROM "Account" WHERE role = %s', ("ADMIN",)).fetchone()[0]
        assert big == Decimal("12345678901234567000")  # shortest repr of the double, not its binary expansion
        assert result.sequences["Post.id"] == 2
        next_id = pg.execute(
            'INSERT INTO "Post" (title, "accountId") SELECT \'n\', id FROM "Account" LIMIT 1 RETURNING id'
        )
        assert next_id.fetchone()[0] == 2
    else:
        settings = dict(pg.execute('SELECT email, settings::text FROM "Account"').fetchall())
        assert settings["j3@x"] == "null"  # JSON null, not SQL NULL
        assert settings["dbnull@x"] is None
        assert settings["j2@x"] == '"123"'
    # Defaults of the app's schema still work for rows the app inserts after cutover.
    row = pg.execute(
        "INSERT INTO \"Account\" (id, uid, email, \"updatedAt\") VALUES ('n', 'n', 'n@x', now()) "
        'RETURNING active, role::text, "createdAt" IS NOT NULL'
    ).fetchone()
    assert row == (True, "USER", True)


def test_django_schema_with_an_interval(realworld: Path, pg_dsn: str, pg: Any) -> None:
    _apply(pg, "django.sql")
    path = realworld / "orm-samples" / "django52_sample.db"
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="existing")
    assert result.plan is not None
    assert assert_same(path, pg, result.plan) == {"app_thing": 3}
    assert pg.execute("SELECT dur FROM app_thing WHERE id = 1").fetchone()[0] == timedelta(days=1, seconds=2)
    assert (
        pg.execute("SELECT uid::text FROM app_thing WHERE id = 1").fetchone()[0]
        == "256f0900-27a0-41bb-afeb-104a4c0760b6"
    )
    assert pg.execute("SELECT big FROM app_thing WHERE id = 1").fetchone()[0] == Decimal("123456789012345690000000")
    assert (
        pg.execute("SELECT created FROM app_thing WHERE id = 1")
        .fetchone()[0]
        .isoformat()
        .startswith("2024-03-05T06:07:08.009")
    )


def test_sqlalchemy_schema_enum_and_uuid(realworld: Path, pg_dsn: str, pg: Any) -> None:
    _apply(pg, "sqlalchemy.sql")
    path = realworld / "orm-samples" / "sqlalchemy21_sample.db"
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="existing")
    assert result.plan is not None
    assert assert_same(path, pg, result.plan) == {"t": 2}
    assert pg.execute("SELECT iv FROM t WHERE id = 1").fetchone()[0] == timedelta(days=1, seconds=2)
    assert pg.execute("SELECT color::text, big, data::text FROM t WHERE id = 1").fetchone() == (
        "GREEN",
        4611686018427387904,
        '{"a": 1, "\\u00fc": 2}',
    )
    assert pg.execute("SELECT data::text FROM t WHERE id = 2").fetchone()[0] == "null"


def test_activerecord_schema_case_and_extra_tables(realworld: Path, pg_dsn: str, pg: Any) -> None:
    _apply(pg, "activerecord.sql")
    path = realworld / "orm-samples" / "activerecord61_sample.db"
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="existing")
    assert result.plan is not None
    assert assert_same(path, pg, result.plan) == {"things": 2}
    assert result.sequences["things.id"] == 3
    assert any("ar_internal_metadata' is the ORM's migration bookkeeping" in w for w in result.warnings)
    assert pg.execute("SELECT count(*) FROM ar_internal_metadata").fetchone() == (0,)
    # Named in config, it loads like any table.
    cfg = _with_types({"ar_internal_metadata": {"*": ColumnOverride(skip=False)}})
    result = snapshot.snapshot(path, pg_dsn, cfg, mode="existing", replace=True)
    assert result.plan is not None
    assert assert_same(path, pg, result.plan) == {"ar_internal_metadata": 1, "things": 2}


def test_missing_columns_on_either_side_are_named(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    db = tmp_path / "app.db"
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE Users (id INTEGER PRIMARY KEY, Email TEXT, nickname TEXT)")
        conn.execute("INSERT INTO Users VALUES (1, 'a@x', 'a')")
    pg.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text, created_at timestamptz NOT NULL)")
    with pytest.raises(UsageError) as info:
        snapshot.snapshot(db, pg_dsn, CFG, mode="existing")
    assert "Users.nickname is missing" in info.value.message
    assert "users.created_at has no column" in info.value.message
    cfg = _with_types({"Users": {"nickname": ColumnOverride(skip=True), "created_at": ColumnOverride(skip=True)}})
    pg.execute("ALTER TABLE users ALTER created_at SET DEFAULT now()")
    result = snapshot.snapshot(db, pg_dsn, cfg, mode="existing")
    assert any("matched 'users' ignoring case" in w for w in result.warnings)
    assert any("Email matched 'email'" in w for w in result.warnings)
    assert pg.execute("SELECT id, email FROM users").fetchall() == [(1, "a@x")]


def test_replace_reloads_related_tables_and_orphans_are_named(realworld: Path, pg_dsn: str, pg: Any) -> None:
    _apply(pg, "prisma.sql")
    path = realworld / "orm-samples" / "prisma7_small_unixms.db"
    snapshot.snapshot(path, pg_dsn, CFG)
    result = snapshot.snapshot(path, pg_dsn, CFG, replace=True)  # Post references Account: one TRUNCATE
    assert {t.table: t.rows for t in result.tables} == {"Account": 3, "Post": 1}


def test_orphans_under_an_app_foreign_key_are_named(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    import sqlite3

    from replicator.errors import TargetError

    db = tmp_path / "orphans.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id))")
        conn.execute("INSERT INTO child VALUES (1, 42)")  # SQLite's FKs are off: an orphan
    pg.execute("CREATE TABLE parent (id bigint PRIMARY KEY)")
    pg.execute("CREATE TABLE child (id bigint PRIMARY KEY, parent_id bigint REFERENCES parent(id))")
    with pytest.raises(TargetError, match="loading child into child failed") as info:
        snapshot.snapshot(db, pg_dsn, CFG, mode="existing")
    assert "orphans" in info.value.hint
    assert pg.execute("SELECT count(*) FROM child").fetchone() == (0,)
    # Create mode keeps them: its foreign keys are NOT VALID until cutover validates them.
    pg.execute("DROP TABLE child; DROP TABLE parent")
    result = snapshot.snapshot(db, pg_dsn, CFG, mode="create")
    assert result.rows == 1


@pytest.mark.parametrize("policy", ["stop", "quarantine"])
def test_a_unique_collision_then_invalid_utf8_is_named_not_an_internal_error(
    tmp_path: Path, pg_dsn: str, pg: Any, policy: str
) -> None:
    """The app's UNIQUE index on lower(email) refuses two rows SQLite keeps distinct, early in the table,
    and a later row holds text that is not UTF-8: the refusal is named (the collision, or the bad value),
    never the load's internal signal to re-read the table with the bytes fallback."""
    import sqlite3

    from replicator.errors import ReplicatorError

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL)")
        conn.executemany("INSERT INTO users VALUES (?, ?)", [(i, f"user{i}@example.com") for i in range(1, 60_001)])
        conn.execute("UPDATE users SET email = 'USER1@example.com' WHERE id = 2")  # equal to row 1 under lower()
        conn.execute("UPDATE users SET email = CAST(x'66696c65966e616d65' AS TEXT) WHERE id = 59000")
    pg.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)")
    pg.execute("CREATE UNIQUE INDEX users_email ON users (lower(email))")
    cfg = msgspec.structs.replace(CFG, snapshot=msgspec.structs.replace(CFG.snapshot, on_bad_value=policy))
    with pytest.raises(ReplicatorError) as info:
        snapshot.snapshot(db, pg_dsn, cfg, mode="existing")
    if policy == "stop":  # the bad value stops the load first
        assert "refused value in users (id=59000) column email" in info.value.message
    else:  # it is quarantined; the collision is then named, both rows
        assert "(id=1) and (id=2)" in info.value.message
        assert "users_email" in info.value.message
    assert pg.execute("SELECT count(*) FROM users").fetchone() == (0,)
