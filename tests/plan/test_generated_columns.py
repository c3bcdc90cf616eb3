"""Generated columns end to end (issue 15, item 1), through the CLI on a real SQLite file and PostgreSQL.

A generated column is computed by PostgreSQL only when its expression is on the proved allow-list
(``replicator.plan.sqlexpr``); every other one is a plain column holding SQLite's computed value, loaded by
the snapshot and rewritten by the apply. Either way ``verify`` compares it: the negative controls
plant a wrong value in each kind and expect exit 3.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cli import Ran, run_cli
from tests.support.source import make_db

TABLE = """
CREATE TABLE g (
    id INTEGER PRIMARY KEY,
    h TEXT,
    a INTEGER,
    b INTEGER,
    tail TEXT GENERATED ALWAYS AS (substr(h, -2)) VIRTUAL,
    up TEXT GENERATED ALWAYS AS (upper(h)) STORED,
    mx INT GENERATED ALWAYS AS (max(a, b)) VIRTUAL,
    total INTEGER GENERATED ALWAYS AS (a + b) STORED
)
"""
COLUMNS = "id, h, a, b, tail, up, mx, total"


def _write(path: Path, statement: str, params: tuple[Any, ...] = ()) -> None:
    """One app write: its own connection and a deferred transaction, as an app does it."""
    conn = sqlite3.connect(path, isolation_level="DEFERRED", timeout=10)
    try:
        conn.execute(statement, params)
        conn.commit()
    finally:
        conn.close()


def _cli(tmp: Path, *args: str) -> Ran:
    return run_cli(*args, cwd=tmp)


def _sqlite_rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT {COLUMNS} FROM g ORDER BY id").fetchall()
    finally:
        conn.close()


def _pg_rows(pg: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return pg.execute(f"SELECT {COLUMNS} FROM g ORDER BY id").fetchall()


def _generated_in_pg(pg: psycopg.Connection[Any]) -> dict[str, str]:
    rows = pg.execute(
        "SELECT column_name, is_generated FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = 'g'"
    ).fetchall()
    return {name: kind for name, kind in rows}


@pytest.fixture
def migrated(tmp_path: Path, pg_dsn: str, pg: psycopg.Connection[Any]) -> Path:
    """Snapshot, app writes (insert, update of the inputs, delete), run: PostgreSQL caught up."""
    path = tmp_path / "app.db"
    make_db(path, TABLE, wal=True)
    _write(path, "INSERT INTO g (id, h, a, b) VALUES (1, 'héllo', 1, NULL)")
    _write(path, "INSERT INTO g (id, h, a, b) VALUES (2, 'ÉTÉ straße', -5, 3)")
    _write(path, "INSERT INTO g (id, h, a, b) VALUES (3, NULL, NULL, NULL)")
    assert (ran := _cli(tmp_path, "capture", "install", "-q", "--source", str(path))).code == 0, ran
    assert (ran := _cli(tmp_path, "snapshot", "-q", "--source", str(path), "--target", pg_dsn)).code == 0, ran
    _write(path, "INSERT INTO g (id, h, a, b) VALUES (4, 'ıi', -9223372036854775807, 7)")
    _write(path, "UPDATE g SET h = 'Ωmega', b = 2 WHERE id = 1")
    _write(path, "UPDATE g SET a = NULL WHERE id = 2")
    _write(path, "DELETE FROM g WHERE id = 3")
    ran = _cli(tmp_path, "run", "-q", "--until-drained", "--source", str(path), "--target", pg_dsn)
    assert ran.code == 0, ran
    return path


def test_issue_values_are_sqlites_in_postgresql_and_verify_matches(
    migrated: Path, pg_dsn: str, pg: psycopg.Connection[Any]
) -> None:
    rows = _sqlite_rows(migrated)
    # SQLite's own values (substr from the end, ASCII-only upper, scalar max is NULL with a NULL).
    assert rows[0][4:] == ("ga", "ΩMEGA", 2, 3)
    assert rows[1][4:] == ("ße", "ÉTÉ STRAßE", None, None)
    assert _pg_rows(pg) == rows
    kinds = _generated_in_pg(pg)
    # Not proved identical: plain columns loaded from SQLite. Proved: computed by PostgreSQL.
    assert (kinds["tail"], kinds["mx"]) == ("NEVER", "NEVER")
    assert (kinds["up"], kinds["total"]) == ("ALWAYS", "ALWAYS")
    ran = _cli(migrated.parent, "verify", "--source", str(migrated), "--target", pg_dsn)
    assert ran.code == 0, ran


def test_a_wrong_value_in_a_plain_generated_column_is_a_mismatch(
    migrated: Path, pg_dsn: str, pg: psycopg.Connection[Any]
) -> None:
    pg.execute("UPDATE g SET tail = 'lo' WHERE id = 1")
    ran = _cli(migrated.parent, "verify", "--source", str(migrated), "--target", pg_dsn, "--keys")
    assert ran.code == 3, ran
    assert "1" in ran.out


def test_a_postgresql_generated_column_computed_differently_is_a_mismatch(
    migrated: Path, pg_dsn: str, pg: psycopg.Connection[Any]
) -> None:
    pg.execute("ALTER TABLE g DROP COLUMN total")
    pg.execute("ALTER TABLE g ADD COLUMN total bigint GENERATED ALWAYS AS (a + b + 1) STORED")
    ran = _cli(migrated.parent, "verify", "--source", str(migrated), "--target", pg_dsn)
    assert ran.code == 3, ran
