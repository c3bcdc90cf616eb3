"""The app after a cutover, in its own process: random transactions on PostgreSQL during the rollback window.

``python -m tests.reliability.pgload DSN --seconds N --seed S --tps T [--transactions M] [--schema NAME]``

What an app does on the migrated tables of :mod:`tests.reliability.loadgen`'s schema once it runs on PostgreSQL:
upserts, updates, deletes, primary-key changes (a parent's cascades to its children through the foreign key,
a child's and a composite key's move the row), cascading deletes, events with PostgreSQL's own ids, and a
transaction it rolls back now and then. A connection per transaction (a per-request app). Each statement runs
under a savepoint: one that a constraint refuses (a UNIQUE, a foreign key) is the app's business and the
transaction goes on, as the SQLite load generator's suppressed IntegrityError.

Transaction ``i`` draws from ``random.Random(f"{seed}:{i}")``. A transaction refused by rollback's fence
(``read_only_sql_transaction``) or by a lock it lost to the fence is retried with the same draw after a pause,
and counted: the app goes on knocking, so a fence that went missing after a crash would let its writes in and
the final comparison would find them. The last stdout line is a JSON summary. Bounded by ``--seconds`` and
``--transactions``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from typing import Any, Final

import psycopg
from psycopg import sql

from tests.reliability.pacing import paced

RETRY_PAUSE_S: Final = 0.05
REFUSED: Final = (psycopg.errors.IntegrityError,)
"""A statement's refusal the app shrugs off (its savepoint is rolled back, the transaction goes on)."""
LOST_TO_FENCE: Final = (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable)
"""The transaction lost a lock to rollback's fence: nothing committed, the same draw again."""


class Summary:
    def __init__(self) -> None:
        self.transactions = 0
        self.fenced = 0
        """Attempts refused by rollback's fence (retried)."""
        self.lost_locks = 0
        self.seconds = 0.0

    def json(self) -> str:
        return json.dumps(
            {
                "transactions": self.transactions,
                "fenced": self.fenced,
                "lost_locks": self.lost_locks,
                "seconds": round(self.seconds, 3),
            }
        )


class App:
    """Statements on the schema's tables; ``t(name)`` is the qualified table."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema

    def t(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    def transaction(self, rng: random.Random) -> None:
        """One app transaction of 1-5 statements on a fresh connection; 10% are rolled back."""
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as conn, conn.transaction():
            for _ in range(rng.randint(1, 5)):
                query, params = self.statement(rng)
                with contextlib.suppress(*REFUSED), conn.transaction():  # a savepoint
                    conn.execute(query, params)
            if rng.random() < 0.1:
                raise psycopg.Rollback  # the outer block rolls back and swallows it

    def statement(self, rng: random.Random) -> tuple[sql.Composed, tuple[Any, ...]]:
        pid, cid = rng.randint(1, 40), rng.randint(1, 80)
        kind = rng.randrange(14)
        if kind < 4:
            return self._parent(kind, rng, pid)
        if kind < 8:
            return self._child(kind - 4, rng, pid, cid)
        if kind < 10:
            return self._tag(kind - 8, rng)
        return self._event(kind - 10, rng, pid)

    def _parent(self, kind: int, rng: random.Random, pid: int) -> tuple[sql.Composed, tuple[Any, ...]]:
        parent = self.t("parent")
        if kind == 0:
            q = (
                "INSERT INTO {} (id, name, score, note) VALUES (%s, %s, %s, 'pg') "
                "ON CONFLICT (id) DO UPDATE SET score = excluded.score, note = excluded.note"
            )
            return sql.SQL(q).format(parent), (pid, f"p{rng.randint(1, 60)}", rng.random())
        if kind == 1:
            q = "UPDATE {} SET score = %s, note = %s WHERE id = %s"
            return sql.SQL(q).format(parent), (rng.random(), f"u{rng.randint(1, 9)}", pid)
        if kind == 2:  # a key change: ON UPDATE CASCADE moves the children with it
            return sql.SQL("UPDATE {} SET id = %s WHERE id = %s").format(parent), (rng.randint(1, 45), pid)
        return sql.SQL("DELETE FROM {} WHERE id = %s").format(parent), (pid,)  # cascades, sets events' NULL

    def _child(self, kind: int, rng: random.Random, pid: int, cid: int) -> tuple[sql.Composed, tuple[Any, ...]]:
        child = self.t("child")
        if kind == 0:
            q = (
                "INSERT INTO {} (id, parent_id, code, qty) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET qty = excluded.qty"
            )
            return sql.SQL(q).format(child), (cid, pid, f"g{rng.randint(1, 90)}", rng.randint(0, 9))
        if kind == 1:
            return sql.SQL("UPDATE {} SET qty = coalesce(qty, 0) + 1 WHERE parent_id = %s").format(child), (pid,)
        if kind == 2:
            return sql.SQL("UPDATE {} SET id = %s WHERE id = %s").format(child), (rng.randint(1, 90), cid)
        return sql.SQL("DELETE FROM {} WHERE id = %s").format(child), (cid,)

    def _tag(self, kind: int, rng: random.Random) -> tuple[sql.Composed, tuple[Any, ...]]:
        tag = self.t("tag")
        k, n = f"k{rng.randint(1, 4)}", rng.randint(1, 8)
        if kind == 0:
            q = "INSERT INTO {} (k, n, label) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
            return sql.SQL(q).format(tag), (k, n, f"m{rng.randint(1, 30)}")
        # the composite key moves (the WITHOUT ROWID table's row is found by its new key in SQLite)
        return sql.SQL("UPDATE {} SET n = %s WHERE k = %s AND n = %s").format(tag), (rng.randint(1, 8), k, n)

    def _event(self, kind: int, rng: random.Random, pid: int) -> tuple[sql.Composed, tuple[Any, ...]]:
        event, parent = self.t("event"), self.t("parent")
        if kind == 0:  # PostgreSQL gives the id (the sequence cutover carried past SQLite's)
            day = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            at = f"{day} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
            q = (
                "INSERT INTO {} (parent_id, kind, at, amount, payload) "
                "VALUES ((SELECT id FROM {} WHERE id = %s), 'pg', %s, %s, %s)"
            )
            return sql.SQL(q).format(event, parent), (pid, at, f"{rng.randint(0, 999)}.25", rng.randbytes(8))
        if kind == 1:
            q = "UPDATE {} SET amount = amount + 1 WHERE id IN (SELECT id FROM {} ORDER BY id DESC LIMIT 3)"
            return sql.SQL(q).format(event, event), ()
        if kind == 2:
            return sql.SQL("DELETE FROM {} WHERE id = (SELECT max(id) FROM {})").format(event, event), ()
        return sql.SQL("DELETE FROM {} WHERE parent_id = %s").format(event), (pid,)


def run(dsn: str, *, seconds: float, seed: int, tps: float, transactions: int | None, schema: str) -> Summary:
    """Write until ``seconds`` pass or ``transactions`` commit (or SIGTERM), paced at ``tps``."""
    app = App(dsn, schema)
    summary = Summary()

    def attempt(i: int) -> bool:
        try:
            app.transaction(random.Random(f"{seed}:{i}"))
        except psycopg.errors.ReadOnlySqlTransaction:
            summary.fenced += 1
        except LOST_TO_FENCE:
            summary.lost_locks += 1
        else:
            return True
        time.sleep(RETRY_PAUSE_S)
        return False

    done = paced(attempt, seconds=seconds, tps=tps, transactions=transactions)
    summary.transactions, summary.seconds = done.transactions, done.seconds
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.pgload", description=__doc__)
    parser.add_argument("dsn")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tps", type=float, default=20.0, help="transactions per second (0: as fast as possible)")
    parser.add_argument("--transactions", type=int, default=None, help="stop after this many transactions")
    parser.add_argument("--schema", default="public", help="the schema the migrated tables are in")
    args = parser.parse_args(argv)
    summary = run(
        args.dsn,
        seconds=args.seconds,
        seed=args.seed,
        tps=args.tps,
        transactions=args.transactions,
        schema=args.schema,
    )
    print(summary.json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
