"""The SQLite source the tests replicate from, written the way apps write it."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from triggers import install

SCHEMA = """
CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, score REAL);
CREATE TABLE child (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES parent (id) ON DELETE CASCADE,
    label TEXT,
    code TEXT UNIQUE
);
CREATE TABLE pair (a TEXT NOT NULL, b INTEGER NOT NULL, v TEXT, PRIMARY KEY (a, b));
"""

ROWS = """
INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 2.25);
INSERT INTO child VALUES (10, 1, 'x', 'c10'), (11, 1, 'y', 'c11');
INSERT INTO pair VALUES ('k', 1, 'one'), ('k', 2, 'two');
"""
"""A few rows in each ``SCHEMA`` table: three parents (one score NULL), two children of parent 1, two pairs."""

FENCED = "writes are fenced"


def make_source(path: Path, schema: str = SCHEMA, rows: str = "", *, capture: bool = True) -> Path:
    """A WAL-mode file with ``schema`` and ``rows``; capture installed unless ``capture=False`` (a test of
    the install itself, or of a source that never had it)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = wal")
    conn.executescript(schema)
    if rows:
        conn.executescript(rows)
    conn.close()
    if capture:
        install.install(path)
    return path


def app(path: Path) -> sqlite3.Connection:
    """A connection as an app holds one: autocommit, foreign keys on."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def write(path: Path, statement: str, params: tuple[Any, ...] = ()) -> None:
    """One app write on its own connection, closed at once (a request, a cron job, a shell)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(statement, params)
    finally:
        db.close()


class AppThread(threading.Thread):
    """The live app in a thread of this process: ``transaction`` inside BEGIN IMMEDIATE ... COMMIT, again and
    again on one connection until ``stop`` is set (``pause_s`` between two). ``commits`` counts them; ``error``
    is what ended it early, for the test to surface."""

    def __init__(self, path: Path, *, pause_s: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.pause_s = pause_s
        self.stop = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None

    def transaction(self, conn: sqlite3.Connection) -> None:
        """The writes of one transaction (a subclass's)."""
        raise NotImplementedError

    def run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            while not self.stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                self.transaction(conn)
                conn.execute("COMMIT")
                self.commits += 1
                if self.pause_s:
                    time.sleep(self.pause_s)
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            conn.close()

    def wait_for_commits(self, total: int) -> None:
        """Until it has committed ``total`` transactions in all, or has ended."""
        while self.commits < total and self.is_alive():
            self.stop.wait(0.001)


def changes(source: Path) -> None:
    """A mix of inserts, updates, a delete, a REPLACE and a key change on the ``SCHEMA`` tables."""
    db = app(source)
    db.execute("PRAGMA foreign_keys = OFF")
    for i in range(5):
        db.execute("INSERT INTO parent VALUES (?, ?, ?)", (100 + i, f"p{i}", float(i)))
        db.execute("UPDATE parent SET score = ? WHERE id = 1", (float(i),))
        db.execute("INSERT INTO child VALUES (?, ?, 'l', ?)", (200 + i, 100 + i, f"c{i}"))
    db.execute("DELETE FROM parent WHERE id = 2")
    db.execute("INSERT OR REPLACE INTO parent VALUES (7, 'a', 0.0)")
    db.execute("UPDATE pair SET b = 9 WHERE a = 'k' AND b = 1")


def writable(path: Path) -> bool:
    """Whether the app can still write (False once cutover fenced the source; other errors raise)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("INSERT INTO pair (a, b, v) VALUES ('probe', ?, 'w')", (int(time.time() * 1e6),))
        return True
    except sqlite3.DatabaseError as exc:
        if FENCED not in str(exc):
            raise
        return False
    finally:
        db.close()


def make_db(path: Path, script: str, *rows: tuple[str, Sequence[Any]], wal: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if wal:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(script)
        for query, params in rows:
            conn.execute(query, params)
    finally:
        conn.close()
    return path


def sqlite_write(path: Path, script: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(script)
    finally:
        conn.close()
