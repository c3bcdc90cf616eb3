"""A load generator in its own process: random app transactions of every op kind against a SQLite file.

``python -m tests.reliability.loadgen DB --seconds N --seed S --tps T [--create ROWS] [--transactions M]
[--mode MODE] [--restart-every N]``

Transaction ``i`` draws from ``random.Random(f"{seed}:{i}")``, so the sequence of transactions is
deterministic by seed whatever the timing and whatever the mode (a transaction refused by SQLITE_BUSY is
retried with the same draw). ``--mode`` chooses how the app talks to SQLite (see :data:`MODES`): one
connection kept open (the default), a connection per transaction, restarts every N transactions, the
``sqlite3`` shell, or Django's deferred read-then-write transactions. The ops are the daemon's hard
cases: INSERT OR REPLACE (victims on a secondary UNIQUE), UPSERT, primary-key changes, cascading deletes
and key updates, a WITHOUT ROWID composite key, blobs.
``--create ROWS`` makes the schema with ROWS bulk rows (so a snapshot COPY takes a while) and installs
capture. The last stdout line is a JSON summary. Bounded: by ``--seconds`` and ``--transactions``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from tests.reliability.pacing import Stop, paced
from tests.support.workload import SCHEMA as DIFF_SCHEMA
from tests.support.workload import random_transaction

SCHEMA = (
    DIFF_SCHEMA
    + """
CREATE TABLE event (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_id INTEGER REFERENCES parent (id) ON DELETE SET NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    amount NUMERIC,
    payload BLOB
);
"""
)
TABLES = ("parent", "child", "tag", "event")


def create(path: Path, rows: int, seed: int = 0) -> Path:
    """The app's schema, ``rows`` bulk events (plus a few parents), capture installed."""
    from triggers import install

    rng = random.Random(f"create:{seed}")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = wal")
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO parent VALUES (?, ?, ?, ?)", [(i, f"n{i}", rng.random(), None) for i in range(1, 21)]
        )
        conn.executemany(
            "INSERT INTO event (parent_id, kind, at, amount, payload) VALUES (?, ?, ?, ?, ?)",
            [
                (
                    rng.choice([None, *range(1, 21)]),
                    rng.choice(["view", "buy", "refund"]),
                    f"2024-01-{1 + i % 28:02d} 12:{i % 60:02d}:00",
                    f"{rng.randint(0, 10**6)}.{rng.randint(0, 99):02d}",
                    rng.randbytes(rng.randint(0, 64)),
                )
                for i in range(rows)
            ],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    install.install(path)
    return path


def transaction(db: sqlite3.Connection, rng: random.Random) -> None:
    """One app transaction: the differential test's mix (REPLACE, UPSERT, PK changes, cascades) or events."""
    if rng.random() < 0.8:
        random_transaction(db, rng)
        return
    db.execute("BEGIN IMMEDIATE")
    pid = rng.randint(1, 40)
    kind = rng.randrange(4)
    if kind == 0:
        db.execute(
            "INSERT INTO event (parent_id, kind, at, amount, payload) VALUES "
            "((SELECT id FROM parent WHERE id = ?), 'buy', datetime('now'), ?, ?)",
            (pid, f"{rng.randint(0, 999)}.5", rng.randbytes(8)),
        )
    elif kind == 1:
        db.execute("UPDATE event SET amount = amount + 1 WHERE id IN (SELECT id FROM event ORDER BY random() LIMIT 3)")
    elif kind == 2:
        db.execute("DELETE FROM event WHERE id = (SELECT max(id) FROM event)")
    else:
        db.execute(
            "REPLACE INTO event (id, parent_id, kind, at) VALUES (?, NULL, 'view', '2024-02-02 00:00:00')", (pid,)
        )
    db.execute("COMMIT")


MODES: Final = {
    "keep-open": "one connection for the whole run (the default)",
    "conn-per-txn": "a new connection for every transaction, closed after it (a per-request app, a cron job)",
    "restarts": "one connection, closed every --restart-every transactions, then a pause (app restarts)",
    "shell": "every transaction piped into the sqlite3 command-line shell, one process each",
    "deferred": "Django's default: BEGIN (deferred), a read, then the writes; SQLITE_BUSY at the upgrade "
    "rolls back and retries the whole transaction",
}
RESTART_PAUSE_S: Final = 0.2
"""How long a restarting app stays away: long enough for a poll of the daemon to fall in the gap."""
THINK_S: Final = 0.005
"""Deferred mode: the app's work between its read and its first write (the window another writer commits in)."""
SHELL_DONE: Final = "replicator-loadgen-done"


class Busy(Exception):
    """SQLITE_BUSY past the timeout, nothing committed: the same draw again."""


class Fenced(Exception):
    """The cutover fenced the file: the app stops writing."""


def connect(path: Path, factory: type[sqlite3.Connection] = sqlite3.Connection) -> sqlite3.Connection:
    """The app's connection: autocommit (transactions are explicit), FKs on, a generous busy timeout."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30, factory=factory)
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA busy_timeout = 30000")
    return db


class DeferredConnection(sqlite3.Connection):
    """Turns the draw's ``BEGIN IMMEDIATE`` into what Django does: ``BEGIN`` (deferred) and a read first, so
    the first write upgrades a read transaction and gets SQLITE_BUSY at once (no busy handler) when another
    writer (the daemon pruning its journal) committed or holds the lock."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        if sql == "BEGIN IMMEDIATE":
            super().execute("BEGIN")
            super().execute("SELECT count(*), max(id) FROM parent").fetchone()
            time.sleep(THINK_S)
            return self.cursor()
        return super().execute(sql, parameters)


class Recorder(sqlite3.Connection):
    """Records the draw's statements instead of running them (the shell mode writes them as SQL text).
    Only ``execute`` is used by the draw, and no statement's outcome feeds back into it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self.statements.append((sql, tuple(parameters)))
        return self.cursor()


def literal(value: Any) -> str:
    """A parameter as SQL text, for the shell (no placeholders there)."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def script(statements: list[tuple[str, tuple[Any, ...]]]) -> str:
    """The draw as a shell script. ``BEGIN`` runs under ``.bail on`` (busy past the timeout: the process exits,
    nothing written, the draw is retried); the statements run with bail off, so a refused one leaves the
    transaction going, as the Python modes' suppressed IntegrityError does. The shell cannot bail again later
    (it counts earlier errors), so a sentinel after the end tells a finished transaction apart."""
    lines = [".timeout 30000", "PRAGMA foreign_keys = ON;", ".bail on"]
    for sql, params in statements:
        pieces = sql.split("?")  # the draw's SQL has ? only as placeholders
        text = pieces[0] + "".join(literal(v) + rest for v, rest in zip(params, pieces[1:], strict=True))
        lines.append(text + ";")
        if sql == "BEGIN IMMEDIATE":
            lines.append(".bail off")
    lines.append(f"SELECT '{SHELL_DONE}';")
    return "\n".join(lines) + "\n"


def shell_binary() -> str | None:
    return shutil.which("sqlite3")


class Writer:
    """How the app reaches SQLite; :meth:`write` runs one drawn transaction, raising :class:`Busy` (nothing
    committed, retry the draw) or :class:`Fenced` (stop)."""

    def __init__(self, path: Path, mode: str, restart_every: int) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
        self.path, self.mode, self.restart_every = path, mode, restart_every
        self.db: sqlite3.Connection | None = None
        self.committed = 0
        self.restarts = 0
        self.shell = shell_binary() if mode == "shell" else None
        if mode == "shell" and self.shell is None:
            raise FileNotFoundError("the sqlite3 command-line shell is not installed (apt-get install -y sqlite3)")

    def write(self, rng: random.Random) -> None:
        if self.mode == "shell":
            self._shell(rng)
        else:
            self._python(rng)
        self.committed += 1
        if self.mode == "restarts" and self.committed % self.restart_every == 0:
            self.close()  # the app's last connection: SQLite checkpoints and deletes -wal/-shm
            self.restarts += 1
            time.sleep(RESTART_PAUSE_S)

    def _python(self, rng: random.Random) -> None:
        if self.db is None:
            self.db = connect(self.path, DeferredConnection if self.mode == "deferred" else sqlite3.Connection)
        db = self.db
        try:
            transaction(db, rng)
        except sqlite3.DatabaseError as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if "fenced" in str(exc):  # the fence's OperationalError: stop writing, as the app would
                raise Fenced(str(exc)) from exc
            if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
                raise Busy(str(exc)) from exc  # busy past the timeout (a cutover's freeze) or at the upgrade
            raise
        finally:
            if self.mode == "conn-per-txn":
                self.close()

    def _shell(self, rng: random.Random) -> None:
        assert self.shell is not None
        recorder = sqlite3.connect(":memory:", factory=Recorder)
        try:
            transaction(recorder, rng)
            text = script(recorder.statements)
        finally:
            recorder.close()
        done = subprocess.run(
            [self.shell, str(self.path)], input=text, capture_output=True, text=True, timeout=120, check=False
        )
        errors = [line for line in done.stderr.splitlines() if line.strip()]
        if any("fenced" in line for line in errors):
            raise Fenced(errors[0])
        if SHELL_DONE not in done.stdout:  # BEGIN failed under .bail on: nothing written
            if any("locked" in line or "busy" in line for line in errors):
                raise Busy(errors[0])
            raise RuntimeError(f"sqlite3 exited {done.returncode}: {done.stderr.strip()[:500]}")
        unexpected = [line for line in errors if "constraint failed" not in line]
        if unexpected:  # a refused statement is the app's business; anything else is the harness's
            raise RuntimeError(f"sqlite3: {unexpected[0]}")

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


class Summary:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.transactions = 0
        self.busy_retries = 0
        """Transactions refused by SQLITE_BUSY and retried (deferred mode: mostly at the read-to-write upgrade)."""
        self.restarts = 0
        self.seconds = 0.0

    def json(self) -> str:
        return json.dumps(
            {
                "mode": self.mode,
                "transactions": self.transactions,
                "busy_retries": self.busy_retries,
                "restarts": self.restarts,
                "seconds": round(self.seconds, 3),
            }
        )


def run(
    path: Path,
    *,
    seconds: float,
    seed: int,
    tps: float,
    transactions: int | None = None,
    mode: str = "keep-open",
    restart_every: int = 25,
) -> Summary:
    """Write until ``seconds`` pass or ``transactions`` commit (or SIGTERM), paced at ``tps``."""
    summary = Summary(mode)
    writer = Writer(path, mode, restart_every)

    def attempt(i: int) -> bool:
        try:
            writer.write(random.Random(f"{seed}:{i}"))
        except Busy:
            summary.busy_retries += 1
            time.sleep(0.05)
            return False
        except Fenced:
            raise Stop from None
        return True

    try:
        done = paced(attempt, seconds=seconds, tps=tps, transactions=transactions)
        summary.transactions, summary.seconds = done.transactions, done.seconds
    finally:
        summary.restarts = writer.restarts
        writer.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.loadgen", description=__doc__)
    parser.add_argument("db", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tps", type=float, default=100.0, help="transactions per second (0: as fast as possible)")
    parser.add_argument("--transactions", type=int, default=None, help="stop after this many transactions")
    parser.add_argument("--create", type=int, default=None, metavar="ROWS", help="create the schema first")
    parser.add_argument(
        "--mode", choices=list(MODES), default="keep-open", help="; ".join(f"{k}: {v}" for k, v in MODES.items())
    )
    parser.add_argument("--restart-every", type=int, default=25, metavar="N", help="restarts: transactions per restart")
    args = parser.parse_args(argv)
    if args.create is not None:
        create(args.db, args.create, args.seed)
    summary = run(
        args.db,
        seconds=args.seconds,
        seed=args.seed,
        tps=args.tps,
        transactions=args.transactions,
        mode=args.mode,
        restart_every=args.restart_every,
    )
    print(summary.json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
