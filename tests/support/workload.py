"""Random app transactions drawing every kind of write the apply must handle (the differential test and
the reliability load generator share them)."""

from __future__ import annotations

import contextlib
import random
import sqlite3

SCHEMA = """
CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, score REAL, note TEXT);
CREATE TABLE child (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE,
    code TEXT UNIQUE,
    qty INTEGER
);
CREATE TABLE tag (k TEXT NOT NULL, n INTEGER NOT NULL, label TEXT UNIQUE, PRIMARY KEY (k, n)) WITHOUT ROWID;
"""


def random_transaction(db: sqlite3.Connection, rng: random.Random) -> None:
    """One app transaction of 1-6 statements drawn from every kind of write the apply must handle."""
    db.execute("BEGIN IMMEDIATE")
    for _ in range(rng.randint(1, 6)):
        pid, cid = rng.randint(1, 40), rng.randint(1, 80)
        name, code, label = f"n{rng.randint(1, 50)}", f"c{rng.randint(1, 90)}", f"l{rng.randint(1, 30)}"
        with contextlib.suppress(sqlite3.IntegrityError):  # an FK refused it: the app's transaction goes on
            _statement(db, rng, pid, cid, name, code, label)
    if rng.random() < 0.1:
        db.execute("ROLLBACK")
    else:
        db.execute("COMMIT")


def _statement(
    db: sqlite3.Connection, rng: random.Random, pid: int, cid: int, name: str, code: str, label: str
) -> None:
    kind = rng.randrange(12)
    if kind == 0:
        db.execute("INSERT OR IGNORE INTO parent VALUES (?, ?, ?, ?)", (pid, name, rng.random(), None))
    elif kind == 1:
        db.execute("INSERT OR REPLACE INTO parent VALUES (?, ?, ?, ?)", (pid, name, rng.random(), "r"))
    elif kind == 2:
        db.execute(
            "INSERT INTO parent VALUES (?, ?, ?, 'u') ON CONFLICT (id) DO UPDATE SET score = excluded.score",
            (pid, name, rng.random()),
        )
    elif kind == 3:
        db.execute("UPDATE OR IGNORE parent SET id = ? WHERE id = ?", (rng.randint(1, 40), pid))  # PK change
    elif kind == 4:
        db.execute("DELETE FROM parent WHERE id = ?", (pid,))  # cascades to children (journaled)
    elif kind == 5:
        db.execute("UPDATE OR REPLACE parent SET name = ? WHERE id = ?", (name, pid))
    elif kind == 6:
        db.execute("INSERT OR REPLACE INTO child VALUES (?, ?, ?, ?)", (cid, pid, code, rng.randint(0, 9)))
    elif kind == 7:
        db.execute("UPDATE child SET qty = qty + 1 WHERE parent_id = ?", (pid,))
    elif kind == 8:
        db.execute("UPDATE OR IGNORE child SET id = ? WHERE id = ?", (rng.randint(1, 80), cid))
    elif kind == 9:
        db.execute("DELETE FROM child WHERE id = ?", (cid,))
    elif kind == 10:
        db.execute("INSERT OR REPLACE INTO tag VALUES (?, ?, ?)", (f"k{rng.randint(1, 4)}", rng.randint(1, 8), label))
    else:
        db.execute("UPDATE OR REPLACE tag SET label = ? WHERE k = ?", (label, f"k{rng.randint(1, 4)}"))
