"""The key-only journal is enough: snapshot at a head, a random app workload, then a state-based
apply of the journal range converges a copy to the source exactly.

The target here is a second real SQLite file standing in for PostgreSQL (the PG apply is a later
issue); what is tested is the capture contract the apply relies on: every changed key is in the
journal, old keys of PK changes too, and REPLACE victims are found through unique keys (d1).
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from triggers import install, journal
from triggers.schema import Table, quote_ident, read_schema

DDL = [
    "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT)",
    "CREATE TABLE kv (ns TEXT, k BLOB, v, PRIMARY KEY (ns, k)) WITHOUT ROWID",
    "CREATE TABLE tags (name TEXT PRIMARY KEY COLLATE NOCASE, n REAL)",
    "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INT REFERENCES users(id) ON DELETE CASCADE, body)",
    "CREATE TABLE acct (tenant TEXT, id INT, handle TEXT COLLATE NOCASE UNIQUE, PRIMARY KEY (tenant, id))"
    " WITHOUT ROWID",
]


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _rows(conn: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    return sorted(
        conn.execute(f"SELECT * FROM {quote_ident(table)}").fetchall(),
        key=lambda r: [(type(v).__name__, v) for v in r],
    )


def _copy(src: sqlite3.Connection, dst: sqlite3.Connection, tables: list[Table]) -> int:
    """Snapshot: every row as of one read transaction, whose head is returned (d17)."""
    with journal.read_transaction(src) as head:
        for t in tables:
            rows = src.execute(f"SELECT * FROM {quote_ident(t.name)}").fetchall()
            marks = ", ".join("?" for _ in t.columns)
            dst.executemany(f"INSERT INTO {quote_ident(t.name)} VALUES ({marks})", rows)
    return head


def _apply(src: sqlite3.Connection, dst: sqlite3.Connection, tables: dict[str, Table], after: int) -> int:
    """State-based apply of (after, head]: delete touched keys, then write the current rows."""
    with journal.read_transaction(src) as head:
        entries = [e for e in journal.read(src, after, limit=1_000_000) if e.seq <= head]
        dst.execute("BEGIN")
        touched: dict[str, set[tuple[journal.KeyValue, ...]]] = {}
        for e in entries:
            keys = touched.setdefault(e.table, set())
            keys.add(e.key)
            if e.old_key is not None:
                keys.add(e.old_key)
        current: list[tuple[Table, tuple[journal.KeyValue, ...]]] = []
        for name, keys in touched.items():
            t = tables[name]
            for key in keys:
                where, params = journal.key_predicate(t.primary_key, key)
                dst.execute(f"DELETE FROM {quote_ident(name)} WHERE {where}", params)
                positions = [[c.name for c in t.columns].index(k) for k in t.primary_key]
                for row in src.execute(f"SELECT * FROM {quote_ident(name)} WHERE {where}", params):
                    if journal.same_key([row[p] for p in positions], key):  # NOCASE keys: exact only
                        current.append((t, row))
        for t, row in current:  # REPLACE victims: rows that conflict with a current row on a unique key
            values: dict[str, journal.KeyValue] = dict(zip([c.name for c in t.columns], row, strict=True))
            for cols in t.unique_keys:
                where, params = journal.key_predicate(cols, [values[c] for c in cols])
                dst.execute(f"DELETE FROM {quote_ident(t.name)} WHERE {where}", params)
        for t, row in current:
            marks = ", ".join("?" for _ in row)
            dst.execute(f"INSERT INTO {quote_ident(t.name)} VALUES ({marks})", row)
        dst.execute("COMMIT")
    return head


def _workload(conn: sqlite3.Connection, rng: random.Random, steps: int) -> None:
    ids = list(range(1, 40))
    emails = [f"u{i}@x" for i in range(30)]
    tags = ["a", "A", "b", "B", "c", "ü", "Ü"]
    handles = ["h", "H", "g", "G", "f"]
    for _ in range(steps):
        rollback = rng.random() < 0.1
        conn.execute("BEGIN")
        for _ in range(rng.randint(1, 5)):
            i, j = rng.choice(ids), rng.choice(ids)
            email = rng.choice(emails)
            op = rng.randrange(15)
            try:
                if op == 0:
                    conn.execute("INSERT INTO users VALUES (?, ?, ?)", (i, email, "n"))
                elif op == 1:
                    conn.execute("INSERT OR REPLACE INTO users VALUES (?, ?, ?)", (i, email, "r"))  # d1 victims
                elif op == 2:
                    conn.execute("UPDATE users SET id = ? WHERE id = ?", (j, i))  # PK change
                elif op == 3:
                    conn.execute("UPDATE OR REPLACE users SET email = ? WHERE id = ?", (email, i))
                elif op == 4:
                    conn.execute("DELETE FROM users WHERE id = ?", (i,))  # cascades to posts
                elif op == 5:
                    conn.execute(
                        "INSERT INTO users VALUES (?, ?, 'u') ON CONFLICT (id) DO UPDATE SET name = name || '+'",
                        (i, email),
                    )
                elif op == 6:
                    conn.execute("INSERT OR IGNORE INTO posts VALUES (?, ?, ?)", (i, j, rng.randbytes(3)))
                elif op == 7:
                    ns, k = rng.choice(["p", "q"]), rng.randbytes(1)
                    conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (ns, k, rng.random()))
                elif op == 8:
                    conn.execute("UPDATE kv SET k = ? WHERE ns = 'p' AND k = ?", (rng.randbytes(1), rng.randbytes(1)))
                elif op == 9:
                    conn.execute("INSERT OR REPLACE INTO tags VALUES (?, ?)", (rng.choice(tags), rng.random()))
                elif op == 10:
                    conn.execute("UPDATE tags SET name = ? WHERE name = ?", (rng.choice(tags), rng.choice(tags)))
                elif op == 11:
                    conn.execute("DELETE FROM kv WHERE v < 0.2")
                elif op == 12:
                    conn.execute("INSERT OR REPLACE INTO acct VALUES ('t', ?, ?)", (i % 8, rng.choice(handles)))
                elif op == 13:  # an ORM save: every column, the key and the unique one included
                    conn.execute(
                        "UPDATE OR REPLACE acct SET tenant = 't', id = ?, handle = ? WHERE tenant = 't' AND id = ?",
                        (j % 8, rng.choice(handles), i % 8),
                    )
                else:  # a save that keeps the unique value: the updated row is no victim of itself
                    conn.execute("UPDATE users SET email = email, name = ? WHERE id = ?", (rng.choice(tags), i))
            except sqlite3.IntegrityError:
                pass  # a statement failing is part of real life: it journals nothing
        conn.execute("ROLLBACK" if rollback else "COMMIT")


@pytest.mark.parametrize("seed", range(6))
def test_random_workload_converges_through_the_journal(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    src = _open(tmp_path / "app.db")
    for statement in DDL:
        src.execute(statement)
    _workload(src, rng, 30)  # history before capture exists
    install.install_on(src)
    _workload(src, rng, 40)  # writes racing the snapshot are fine: they are in the journal
    tables = {t.name: t for t in read_schema(src).tables}
    dst = _open(tmp_path / "target.db")
    dst.execute("PRAGMA foreign_keys=OFF")  # the apply writes a consistent end state, not each step
    for statement in DDL:
        dst.execute(statement)
    applied = _copy(src, dst, list(tables.values()))
    for _round in range(3):
        _workload(src, rng, 150)
        applied = _apply(src, dst, tables, applied)
        journal.prune(src, applied)
        for name in tables:
            assert _rows(dst, name) == _rows(src, name), f"{name} diverged (seed {seed})"
    assert journal.head(src) == applied
