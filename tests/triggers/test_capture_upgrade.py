"""Upgrading an installed capture: ``capture install`` replaces the old trigger bodies in one
transaction, and the entries the old triggers wrote still read, and apply, as before.

The old install is ``tests/fixtures/capture_format2.sql``: the exact schema objects, meta rows and journal
entries that ``triggers/install.py`` wrote before its REPLACE-victim triggers had a ``WHEN EXISTS`` probe
(and journaled the updated row itself on an ORM save). The journal layout did not change (format 2).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from replicator import config
from replicator.load import snapshot
from tests.support.compare import check_same, drain
from tests.support.paths import FIXTURES
from tests.support.source import app
from triggers import install, journal

FIXTURE = FIXTURES / "capture_format2.sql"
OLD_PENDING = [
    ("parent", "R", (1,), None),  # the old victim trigger named the saved row itself
    ("parent", "U", (1,), None),
    ("child", "R", (11,), None),
    ("child", "I", (13,), None),
    ("pair", "U", ("k", 3), ("k", 2)),
    ("tag", "R", ("t", 1), None),
    ("tag", "U", ("t", 2), None),
    ("parent", "D", (3,), None),
]
UPGRADED = ("child", "parent", "tag")
"""The tables with REPLACE-victim triggers: the only ones whose trigger SQL changed."""


def _old_install(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(FIXTURE.read_text(encoding="utf-8"))
    return conn


def _log(conn: sqlite3.Connection, after: int = 0) -> list[tuple[str, str, tuple[journal.KeyValue, ...], object]]:
    return [(e.table, e.op, e.key, e.old_key) for e in journal.read(conn, after)]


def _triggers(conn: sqlite3.Connection) -> dict[str, str]:
    return {str(n): str(s) for n, s in conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger'")}


def test_install_replaces_the_old_triggers_and_keeps_their_entries(tmp_path: Path) -> None:
    conn = _old_install(tmp_path / "app.db")
    assert _log(conn) == OLD_PENDING
    states = {t.name: t.state for t in install.status_on(conn).tables}
    assert states == {**dict.fromkeys(UPGRADED, "triggers-stale"), "pair": "captured"}
    keys_before = journal.read_keys(conn, 0)

    report = install.install_on(conn)

    assert sorted(report.changed) == list(UPGRADED)
    assert {t.name: t.generation for t in report.tables} == {"child": 2, "pair": 1, "parent": 2, "tag": 2}
    assert {t.name: t.state for t in install.status_on(conn).tables} == dict.fromkeys(states, "captured")
    assert _log(conn) == OLD_PENDING  # untouched, and read exactly as before
    assert journal.read_keys(conn, 0) == keys_before
    conn.execute("UPDATE parent SET name = 'a', score = 2.0 WHERE id = 1")  # the same save: one entry now
    conn.execute("INSERT OR REPLACE INTO child VALUES (14, 2, 'v', 'c10')")  # a victim is still journaled
    assert _log(conn, 8) == [("parent", "U", (1,), None), ("child", "R", (10,), None), ("child", "I", (14,), None)]
    assert [e.gen for e in journal.read(conn, 8)] == [2, 2, 2]
    assert install.install_on(conn).changed == ()  # idempotent from here on


class _FailingOnSecondCreate:
    """A connection whose second CREATE TRIGGER fails, as a crash or a full disk would mid-install."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._creates = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        if sql.startswith("CREATE TRIGGER"):
            self._creates += 1
            if self._creates == 2:
                raise sqlite3.OperationalError("disk I/O error (injected)")
        return self._conn.execute(sql, params)


def test_the_upgrade_is_one_transaction(tmp_path: Path) -> None:
    """Old triggers are dropped and new ones created in one transaction: a failure midway leaves the old
    install exactly as it was (never a table with its victim triggers dropped and not re-created)."""
    conn = _old_install(tmp_path / "app.db")
    before = _triggers(conn)
    meta = conn.execute('SELECT key, value FROM "_replicator_meta" ORDER BY key').fetchall()
    with pytest.raises(sqlite3.OperationalError, match="injected"):
        install.install_on(_FailingOnSecondCreate(conn))  # type: ignore[arg-type]
    assert not conn.in_transaction
    assert _triggers(conn) == before
    assert conn.execute('SELECT key, value FROM "_replicator_meta" ORDER BY key').fetchall() == meta
    assert _log(conn) == OLD_PENDING


@pytest.mark.parametrize("by", ["capture install", "the daemon"])
def test_entries_written_by_the_old_triggers_apply_after_the_upgrade(tmp_path: Path, pg_dsn: str, by: str) -> None:
    """Snapshot under the old triggers, app writes journaled by them, then the upgrade with those entries
    pending: by ``capture install``, or by the new daemon, which reconciles stale triggers when it starts.
    Writes under the new triggers follow; PostgreSQL ends equal to SQLite row by row."""
    path = tmp_path / "app.db"
    _old_install(path).close()
    snapshot.snapshot(path, pg_dsn, config.load(environ={}), mode="create")
    db = app(path)
    mark = journal.head(db)
    db.execute("UPDATE parent SET name = 'b', score = 0.5 WHERE id = 2")  # old trigger: R(2) for itself
    db.execute("PRAGMA foreign_keys = OFF")  # the victim's children stay, as SQLite leaves them
    db.execute("INSERT OR REPLACE INTO parent (id, name, score) VALUES (5, 'a', 9.0)")  # victim: 1
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("UPDATE OR REPLACE tag SET label = 'red', n = 7 WHERE k = 't' AND n = 2")  # key change
    db.execute("INSERT INTO tag VALUES ('t', 1, 'Blue')")
    assert ("parent", "R", (2,), None) in _log(db, mark)  # written by the old bodies
    if by == "capture install":
        assert sorted(install.install_on(db).changed) == list(UPGRADED)
    else:
        drain(path, pg_dsn)  # reinstalls at start, then applies the old entries
        check_same(path, pg_dsn)
    assert {t.state for t in install.status_on(db).tables} == {"captured"}
    start = journal.head(db)
    db.execute("UPDATE OR REPLACE tag SET label = 'BLUE' WHERE k = 't' AND n = 7")  # victim: ('t', 1)
    db.execute("UPDATE parent SET name = 'b', score = 0.25 WHERE id = 2")
    db.execute("INSERT OR REPLACE INTO child VALUES (15, 2, 'u', 'c12')")  # victim: 12
    assert _log(db, start) == [
        ("tag", "R", ("t", 1), None),
        ("tag", "U", ("t", 7), None),
        ("parent", "U", (2,), None),
        ("child", "R", (12,), None),
        ("child", "I", (15,), None),
    ]
    result = drain(path, pg_dsn)
    assert result.applied_seq == journal.head(db)
    assert check_same(path, pg_dsn) == {"child": 3, "pair": 2, "parent": 2, "tag": 1}
