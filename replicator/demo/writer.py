"""The demo app's live backend: small write transactions at a steady rate until the file is fenced."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from replicator.demo.database import connect
from replicator.demo.rows import FIELDS, INSERT_USAGE, STATUSES, cuid, jsonb, now_ms, usage_row
from triggers import fence
from triggers import source as sqlite_source


class Writer:
    """The backend's write traffic: one small transaction per request, Prisma-style values."""

    def __init__(self, path: Path, seed: int) -> None:
        self.conn = connect(path)
        self.rng = random.Random(seed)
        self.transactions = 0
        self.by_kind: dict[str, int] = {}
        self.busy_retries = 0
        c = self.conn
        self.orgs = [r[0] for r in c.execute('SELECT "id" FROM "organizations"')]
        self.users = [r[0] for r in c.execute('SELECT "id" FROM "users" ORDER BY random() LIMIT 2000')]
        self.providers = [r[0] for r in c.execute('SELECT "id" FROM "ai_providers"')]
        self.mappings = [r[0] for r in c.execute('SELECT "id" FROM "data_source_mappings"')]
        self.pfa = [r[0] for r in c.execute('SELECT "id" FROM "pfa_records" ORDER BY random() LIMIT 5000')]
        self.running_syncs: list[int] = []
        self.ops: list[tuple[Callable[[], None], int]] = [
            (self.log_ai_usage, 35),
            (self.edit_pfa_record, 25),
            (self.sign_up, 8),
            (self.login, 10),
            (self.sync_run, 10),
            (self.upsert_field, 5),
            (self.prune_sync_logs, 3),
            (self.leave_organization, 2),
            (self.update_settings, 2),
        ]

    def step(self) -> str:
        op = self.rng.choices([o for o, _ in self.ops], weights=[w for _, w in self.ops])[0]
        while True:
            try:
                op()
                break
            except sqlite3.OperationalError as exc:  # SQLITE_BUSY after the busy timeout: retry, as an ORM would
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                if not sqlite_source.busy(exc):
                    raise
                self.busy_retries += 1
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        self.transactions += 1
        self.by_kind[op.__name__] = self.by_kind.get(op.__name__, 0) + 1
        return op.__name__

    def log_ai_usage(self) -> None:
        row = usage_row(self.rng, self.orgs, self.users, self.providers, now_ms())
        self.conn.execute(INSERT_USAGE, row)

    def edit_pfa_record(self) -> None:
        rid = self.rng.choice(self.pfa)
        self.conn.execute(
            'UPDATE "pfa_records" SET "status" = ?, "amount" = ?, "isForecast" = ?, "data" = ?, "updatedAt" = ? '
            'WHERE "id" = ?',
            (
                self.rng.choice(STATUSES),
                round(self.rng.uniform(10, 250_000), 2),
                int(self.rng.random() < 0.2),
                jsonb({"costCode": f"{self.rng.randint(1, 99):02d}-{self.rng.randint(100, 999)}", "edited": True}),
                now_ms(),
                rid,
            ),
        )

    def sign_up(self) -> None:
        uid, now = cuid(self.rng), now_ms()
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(
            'INSERT INTO "users" ("id", "email", "name", "passwordHash", "role", "isActive", "preferences", '
            '"createdAt", "updatedAt") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
            (uid, f"{uid}@example.com", "New User", "$2b$10$" + uid * 2, "USER", 1, jsonb({"theme": "dark"}), now, now),
        )
        self.conn.execute(
            'INSERT INTO "user_organizations" VALUES (?, ?, ?, ?)', (uid, self.rng.choice(self.orgs), "MEMBER", now)
        )
        self.conn.execute("COMMIT")
        self.users.append(uid)

    def login(self) -> None:
        now = now_ms()
        self.conn.execute(
            'UPDATE "users" SET "lastLoginAt" = ?, "updatedAt" = ? WHERE "id" = ?',
            (now, now, self.rng.choice(self.users)),
        )

    def sync_run(self) -> None:
        """Start a sync (INSERT), or finish one: write its records and close its log (one transaction)."""
        now = now_ms()
        if not self.running_syncs or self.rng.random() < 0.5:
            cur = self.conn.execute(
                'INSERT INTO "sync_logs" ("organizationId", "mappingId", "status", "startedAt") VALUES (?, ?, ?, ?)',
                (self.rng.choice(self.orgs), self.rng.choice(self.mappings), "RUNNING", now),
            )
            self.running_syncs.append(int(cur.lastrowid or 0))
            return
        sid = self.running_syncs.pop(0)
        self.conn.execute("BEGIN IMMEDIATE")
        picked = self.rng.sample(self.pfa, 3)
        for rid in picked:
            self.conn.execute(
                'UPDATE "pfa_records" SET "syncedAt" = ?, "updatedAt" = ? WHERE "id" = ?', (now, now, rid)
            )
        self.conn.execute(
            'UPDATE "sync_logs" SET "status" = ?, "recordsRead" = ?, "recordsWritten" = ?, "finishedAt" = ?, '
            '"durationMs" = ? - "startedAt" WHERE "id" = ?',
            ("SUCCESS", 3, 3, now, now, sid),
        )
        self.conn.execute("COMMIT")

    def upsert_field(self) -> None:
        """Prisma's ``upsert``: INSERT ... ON CONFLICT DO UPDATE on the compound unique key."""
        now = now_ms()
        self.conn.execute(
            'INSERT INTO "field_configurations" ("id", "mappingId", "fieldName", "sourcePath", "isVisible", '
            '"displayOrder", "createdAt", "updatedAt") VALUES (?, ?, ?, ?, ?, ?, ?, ?) '
            'ON CONFLICT ("mappingId", "fieldName") DO UPDATE SET "isVisible" = excluded."isVisible", '
            '"displayOrder" = excluded."displayOrder", "updatedAt" = excluded."updatedAt"',
            (cuid(self.rng), self.rng.choice(self.mappings), self.rng.choice(FIELDS), "$.x",
             int(self.rng.random() < 0.5), self.rng.randint(0, 9), now, now),
        )  # fmt: skip

    def prune_sync_logs(self) -> None:
        self.conn.execute(
            'DELETE FROM "sync_logs" WHERE "id" IN (SELECT "id" FROM "sync_logs" WHERE "status" != ? '
            'ORDER BY "id" LIMIT 5)',
            ("RUNNING",),
        )

    def leave_organization(self) -> None:
        self.conn.execute(
            'DELETE FROM "user_organizations" WHERE "userId" = ? AND "role" = ?',
            (self.rng.choice(self.users), "MEMBER"),
        )

    def update_settings(self) -> None:
        self.conn.execute(
            'UPDATE "organizations" SET "settings" = ?, "updatedAt" = ? WHERE "id" = ?',
            (jsonb({"timezone": "UTC", "features": ["ai", "sync", "forecast"]}), now_ms(), self.rng.choice(self.orgs)),
        )


def run_writer(path: Path, seconds: float, rate: float, seed: int, stop_when_fenced: bool = True) -> dict[str, Any]:
    """Write for ``seconds`` at about ``rate`` transactions per second, or until fenced; return the summary."""
    stop = {"flag": False}

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    writer = Writer(path, seed)
    started = time.monotonic()
    deadline = started + seconds
    fenced, fence_message, first_fenced_at = 0, "", None
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = started
    print(json.dumps({"event": "started", "pid": _pid()}), flush=True)
    while not stop["flag"] and time.monotonic() < deadline:
        try:
            writer.step()
        except sqlite3.DatabaseError as exc:
            if not fence.refused(exc):
                raise
            fenced += 1
            if not fence_message:
                fence_message, first_fenced_at = str(exc), time.monotonic()
                print(json.dumps({"event": "fenced", "message": fence_message}), flush=True)
            if stop_when_fenced and fenced >= 3:
                break
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.monotonic()
    writer.conn.close()
    elapsed = time.monotonic() - started
    return {
        "event": "summary",
        "transactions": writer.transactions,
        "by_kind": writer.by_kind,
        "busy_retries": writer.busy_retries,
        "fenced": fenced,
        "fence_message": fence_message,
        "seconds": round(elapsed, 3),
        "fenced_after_s": None if first_fenced_at is None else round(first_fenced_at - started, 3),
    }


def _pid() -> int:
    import os

    return os.getpid()
