"""The demo's application: a 12-table Prisma-style SQLite database and a writer that plays its backend.

Storage is what Prisma Client writes to SQLite: ``DATETIME`` columns hold unix milliseconds,
``BOOLEAN`` columns 0/1, ``JSONB`` columns JSON text, ids are cuid-like text (or AUTOINCREMENT
integers for the log tables), composite keys and ``ON DELETE CASCADE`` foreign keys as
``prisma migrate`` declares them.

Run as ``python -m replicator.demo.app DB --seconds N`` it is the live backend: small transactions
(sign-ups, AI usage logs, record edits, sync runs, upserts, deletes) at ``--rate`` per second, each
one retried on SQLITE_BUSY like an app's ORM would. When the file is fenced by a cutover its writes
fail with the fence message; the writer reports that and stops. Its last stdout line is a JSON
summary (``transactions``, ``fenced``, ``fence_message``...). ``--create --rows N`` builds the
database first.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from triggers import fence
from triggers import source as sqlite_source

SCHEMA = """
CREATE TABLE "organizations" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "slug" TEXT NOT NULL,
    "plan" TEXT NOT NULL DEFAULT 'FREE',
    "settings" JSONB,
    "isActive" BOOLEAN NOT NULL DEFAULT true,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL
);
CREATE UNIQUE INDEX "organizations_slug_key" ON "organizations"("slug");

CREATE TABLE "users" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "email" TEXT NOT NULL,
    "name" TEXT,
    "passwordHash" TEXT NOT NULL,
    "role" TEXT NOT NULL DEFAULT 'USER',
    "isActive" BOOLEAN NOT NULL DEFAULT true,
    "lastLoginAt" DATETIME,
    "preferences" JSONB,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL
);
CREATE UNIQUE INDEX "users_email_key" ON "users"("email");

CREATE TABLE "user_organizations" (
    "userId" TEXT NOT NULL,
    "organizationId" TEXT NOT NULL,
    "role" TEXT NOT NULL DEFAULT 'MEMBER',
    "joinedAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,

    PRIMARY KEY ("userId", "organizationId"),
    CONSTRAINT "user_organizations_userId_fkey" FOREIGN KEY ("userId") REFERENCES "users" ("id")
        ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "user_organizations_organizationId_fkey" FOREIGN KEY ("organizationId") REFERENCES "organizations" ("id")
        ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX "user_organizations_organizationId_idx" ON "user_organizations"("organizationId");

CREATE TABLE "ai_providers" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "baseUrl" TEXT,
    "models" JSONB NOT NULL,
    "isEnabled" BOOLEAN NOT NULL DEFAULT true,
    "costPer1kTokens" REAL NOT NULL DEFAULT 0,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL
);
CREATE UNIQUE INDEX "ai_providers_name_key" ON "ai_providers"("name");

CREATE TABLE "organization_ai_configs" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "organizationId" TEXT NOT NULL,
    "providerId" TEXT NOT NULL,
    "model" TEXT NOT NULL,
    "temperature" REAL NOT NULL DEFAULT 0.7,
    "maxTokens" INTEGER NOT NULL DEFAULT 1024,
    "isDefault" BOOLEAN NOT NULL DEFAULT false,
    "settings" JSONB,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    CONSTRAINT "organization_ai_configs_organizationId_fkey" FOREIGN KEY ("organizationId")
        REFERENCES "organizations" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "organization_ai_configs_providerId_fkey" FOREIGN KEY ("providerId")
        REFERENCES "ai_providers" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "organization_ai_configs_organizationId_providerId_key"
    ON "organization_ai_configs"("organizationId", "providerId");

CREATE TABLE "ai_usage_logs" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "organizationId" TEXT NOT NULL,
    "userId" TEXT,
    "providerId" TEXT NOT NULL,
    "model" TEXT NOT NULL,
    "promptTokens" INTEGER NOT NULL,
    "completionTokens" INTEGER NOT NULL,
    "costUsd" REAL NOT NULL,
    "latencyMs" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL DEFAULT true,
    "errorMessage" TEXT,
    "metadata" JSONB,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "ai_usage_logs_organizationId_fkey" FOREIGN KEY ("organizationId")
        REFERENCES "organizations" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "ai_usage_logs_userId_fkey" FOREIGN KEY ("userId")
        REFERENCES "users" ("id") ON DELETE SET NULL ON UPDATE CASCADE,
    CONSTRAINT "ai_usage_logs_providerId_fkey" FOREIGN KEY ("providerId")
        REFERENCES "ai_providers" ("id") ON DELETE RESTRICT ON UPDATE CASCADE
);
CREATE INDEX "ai_usage_logs_organizationId_createdAt_idx" ON "ai_usage_logs"("organizationId", "createdAt");

CREATE TABLE "api_configurations" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "baseUrl" TEXT NOT NULL,
    "authType" TEXT NOT NULL DEFAULT 'API_KEY',
    "headers" JSONB,
    "rateLimitPerMin" INTEGER,
    "isActive" BOOLEAN NOT NULL DEFAULT true,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL
);
CREATE UNIQUE INDEX "api_configurations_name_key" ON "api_configurations"("name");

CREATE TABLE "organization_api_credentials" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "organizationId" TEXT NOT NULL,
    "apiConfigurationId" TEXT NOT NULL,
    "encryptedKey" TEXT NOT NULL,
    "isValid" BOOLEAN NOT NULL DEFAULT true,
    "expiresAt" DATETIME,
    "lastUsedAt" DATETIME,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    CONSTRAINT "organization_api_credentials_organizationId_fkey" FOREIGN KEY ("organizationId")
        REFERENCES "organizations" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "organization_api_credentials_apiConfigurationId_fkey" FOREIGN KEY ("apiConfigurationId")
        REFERENCES "api_configurations" ("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "organization_api_credentials_organizationId_apiConfigurationId_key"
    ON "organization_api_credentials"("organizationId", "apiConfigurationId");

CREATE TABLE "data_source_mappings" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "organizationId" TEXT NOT NULL,
    "apiConfigurationId" TEXT NOT NULL,
    "sourceEntity" TEXT NOT NULL,
    "targetEntity" TEXT NOT NULL,
    "mapping" JSONB NOT NULL,
    "isActive" BOOLEAN NOT NULL DEFAULT true,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    CONSTRAINT "data_source_mappings_organizationId_fkey" FOREIGN KEY ("organizationId")
        REFERENCES "organizations" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "data_source_mappings_apiConfigurationId_fkey" FOREIGN KEY ("apiConfigurationId")
        REFERENCES "api_configurations" ("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX "data_source_mappings_organizationId_idx" ON "data_source_mappings"("organizationId");

CREATE TABLE "field_configurations" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "mappingId" TEXT NOT NULL,
    "fieldName" TEXT NOT NULL,
    "sourcePath" TEXT NOT NULL,
    "dataType" TEXT NOT NULL DEFAULT 'STRING',
    "isRequired" BOOLEAN NOT NULL DEFAULT false,
    "isVisible" BOOLEAN NOT NULL DEFAULT true,
    "displayOrder" INTEGER NOT NULL DEFAULT 0,
    "transform" JSONB,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    CONSTRAINT "field_configurations_mappingId_fkey" FOREIGN KEY ("mappingId")
        REFERENCES "data_source_mappings" ("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "field_configurations_mappingId_fieldName_key" ON "field_configurations"("mappingId", "fieldName");

CREATE TABLE "pfa_records" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "organizationId" TEXT NOT NULL,
    "mappingId" TEXT,
    "externalId" TEXT NOT NULL,
    "category" TEXT NOT NULL,
    "status" TEXT NOT NULL DEFAULT 'ACTIVE',
    "amount" REAL NOT NULL DEFAULT 0,
    "quantity" INTEGER NOT NULL DEFAULT 1,
    "periodStart" DATETIME NOT NULL,
    "periodEnd" DATETIME,
    "isForecast" BOOLEAN NOT NULL DEFAULT false,
    "isDiscontinued" BOOLEAN NOT NULL DEFAULT false,
    "data" JSONB,
    "syncedAt" DATETIME,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    CONSTRAINT "pfa_records_organizationId_fkey" FOREIGN KEY ("organizationId")
        REFERENCES "organizations" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "pfa_records_mappingId_fkey" FOREIGN KEY ("mappingId")
        REFERENCES "data_source_mappings" ("id") ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "pfa_records_organizationId_externalId_key" ON "pfa_records"("organizationId", "externalId");
CREATE INDEX "pfa_records_organizationId_status_idx" ON "pfa_records"("organizationId", "status");

CREATE TABLE "sync_logs" (
    "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    "organizationId" TEXT NOT NULL,
    "mappingId" TEXT,
    "status" TEXT NOT NULL DEFAULT 'RUNNING',
    "recordsRead" INTEGER NOT NULL DEFAULT 0,
    "recordsWritten" INTEGER NOT NULL DEFAULT 0,
    "errors" JSONB,
    "startedAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "finishedAt" DATETIME,
    "durationMs" INTEGER,
    CONSTRAINT "sync_logs_organizationId_fkey" FOREIGN KEY ("organizationId")
        REFERENCES "organizations" ("id") ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT "sync_logs_mappingId_fkey" FOREIGN KEY ("mappingId")
        REFERENCES "data_source_mappings" ("id") ON DELETE SET NULL ON UPDATE CASCADE
);
CREATE INDEX "sync_logs_organizationId_startedAt_idx" ON "sync_logs"("organizationId", "startedAt");
"""

TABLES = (
    "users",
    "organizations",
    "user_organizations",
    "ai_providers",
    "organization_ai_configs",
    "ai_usage_logs",
    "api_configurations",
    "organization_api_credentials",
    "data_source_mappings",
    "field_configurations",
    "pfa_records",
    "sync_logs",
)
PROVIDERS = (
    ("openai", "OPENAI", ["gpt-4o", "gpt-4o-mini"], 0.005),
    ("anthropic", "ANTHROPIC", ["claude-sonnet", "claude-haiku"], 0.003),
    ("google", "GOOGLE", ["gemini-pro", "gemini-flash"], 0.0025),
    ("local", "OLLAMA", ["llama-3-8b"], 0.0),
)
APIS = ("procore", "quickbooks", "sap", "salesforce", "netsuite", "primavera")
CATEGORIES = ("EQUIPMENT", "LABOR", "MATERIAL", "SUBCONTRACT", "RENTAL", "OVERHEAD")
STATUSES = ("ACTIVE", "PENDING", "APPROVED", "CLOSED")
FIELDS = ("name", "amount", "category", "period", "status", "owner", "vendor", "notes")
DAY_MS = 86_400_000


def now_ms() -> int:
    """Prisma stores DateTime in SQLite as unix milliseconds."""
    return int(time.time() * 1000)


def cuid(rng: random.Random) -> str:
    """A cuid-shaped id (Prisma's ``@default(cuid())``): 'c' and 24 base-36 characters."""
    return "c" + "".join(rng.choices(string.ascii_lowercase + string.digits, k=24))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def connect(path: Path | str, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """How the app opens its file: autocommit (explicit BEGINs), foreign keys on, a busy timeout."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def plan_counts(rows: int) -> dict[str, int]:
    """Rows per table for about ``rows`` in total (the activity tables take most of them)."""
    rows = max(rows, 200)
    orgs = max(5, rows // 500)
    users = max(10, rows // 40)
    mappings = orgs * 3
    counts = {
        "organizations": orgs,
        "users": users,
        "user_organizations": users,  # every user in one org, some in a second
        "ai_providers": len(PROVIDERS),
        "organization_ai_configs": orgs * 2,
        "api_configurations": len(APIS),
        "organization_api_credentials": orgs * 2,
        "data_source_mappings": mappings,
        "field_configurations": mappings * 6,
    }
    rest = max(rows - sum(counts.values()), 60)
    counts["pfa_records"] = rest * 45 // 100
    counts["ai_usage_logs"] = rest * 40 // 100
    counts["sync_logs"] = rest - counts["pfa_records"] - counts["ai_usage_logs"]
    return counts


def create(path: Path, rows: int, seed: int = 7) -> dict[str, int]:
    """Create the database at ``path`` (WAL mode, as a server app runs it) with about ``rows`` rows."""
    rng = random.Random(seed)
    counts = plan_counts(rows)
    conn = connect(path)
    try:
        conn.execute("PRAGMA journal_mode = wal")
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        _seed(conn, rng, counts, now_ms())
        conn.execute("COMMIT")
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in TABLES}  # noqa: S608
    finally:
        conn.close()


def _seed(conn: sqlite3.Connection, rng: random.Random, counts: dict[str, int], now: int) -> None:
    """The demo app's rows, table by table in FK order; one generator (``rng``) in one fixed order, so a seed
    gives the same database every time."""

    def when(days: int = 365) -> int:
        return now - rng.randrange(days * DAY_MS)

    orgs, users = _seed_accounts(conn, rng, counts, when)
    providers, apis = _seed_integrations(conn, rng, orgs, now, when)
    mapping_ids = _seed_mappings(conn, rng, orgs, apis, when)
    _insert_pfa(conn, rng, orgs, mapping_ids, counts["pfa_records"], now)
    conn.executemany(
        'INSERT INTO "ai_usage_logs" ("organizationId", "userId", "providerId", "model", "promptTokens", '
        '"completionTokens", "costUsd", "latencyMs", "success", "errorMessage", "metadata", "createdAt") '
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [_usage_row(rng, orgs, users, providers, when(90)) for _ in range(counts["ai_usage_logs"])],
    )
    conn.executemany(
        'INSERT INTO "sync_logs" ("organizationId", "mappingId", "status", "recordsRead", "recordsWritten", '
        '"errors", "startedAt", "finishedAt", "durationMs") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [_sync_row(rng, orgs, mapping_ids, when(90)) for _ in range(counts["sync_logs"])],
    )


def _seed_accounts(
    conn: sqlite3.Connection, rng: random.Random, counts: dict[str, int], when: Callable[..., int]
) -> tuple[list[str], list[str]]:
    """Organizations, users and their memberships."""
    orgs = [cuid(rng) for _ in range(counts["organizations"])]
    conn.executemany(
        'INSERT INTO "organizations" VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
        [
            (
                o,
                f"Org {i}",
                f"org-{i}",
                rng.choice(("FREE", "TEAM", "ENTERPRISE")),
                _json({"timezone": "UTC", "fiscalYearStart": rng.randint(1, 12), "features": ["ai", "sync"]}),
                int(rng.random() > 0.05),
                when(),
                when(30),
            )
            for i, o in enumerate(orgs)
        ],
    )
    users = [cuid(rng) for _ in range(counts["users"])]
    conn.executemany(
        'INSERT INTO "users" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [
            (
                u,
                f"user{i}@example.com",
                None if i % 17 == 0 else f"User {i}",
                "$2b$10$" + "".join(rng.choices(string.ascii_letters + string.digits, k=53)),
                "ADMIN" if i % 25 == 0 else "USER",
                int(rng.random() > 0.03),
                None if i % 9 == 0 else when(30),
                None if i % 4 else _json({"theme": rng.choice(("dark", "light")), "digest": bool(i % 2)}),
                when(),
                when(30),
            )
            for i, u in enumerate(users)
        ],
    )
    members = {(u, orgs[i % len(orgs)]) for i, u in enumerate(users)}
    while len(members) < counts["user_organizations"] + len(users) // 5:
        members.add((rng.choice(users), rng.choice(orgs)))
    conn.executemany(
        'INSERT INTO "user_organizations" VALUES (?, ?, ?, ?)',
        [(u, o, rng.choice(("OWNER", "ADMIN", "MEMBER", "MEMBER")), when()) for u, o in sorted(members)],
    )
    return orgs, users


def _seed_integrations(
    conn: sqlite3.Connection, rng: random.Random, orgs: list[str], now: int, when: Callable[..., int]
) -> tuple[list[str], list[str]]:
    """AI providers and each organization's AI configs; external APIs and their credentials."""
    providers = [cuid(rng) for _ in PROVIDERS]
    conn.executemany(
        'INSERT INTO "ai_providers" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [
            (
                p,
                name,
                kind,
                None if kind == "OLLAMA" else f"https://api.{name}.example",
                _json(models),
                1,
                cost,
                when(),
                when(),
            )
            for p, (name, kind, models, cost) in zip(providers, PROVIDERS, strict=True)
        ],
    )
    configs = []
    for o in orgs:
        for j, p in enumerate(rng.sample(providers, 2)):
            model = PROVIDERS[providers.index(p)][2][0]
            configs.append(
                (cuid(rng), o, p, model, round(rng.uniform(0, 1), 2), rng.choice((512, 1024, 4096)), int(j == 0),
                 None if rng.random() < 0.5 else _json({"system": "You are a cost analyst."}), when(), when(30))
            )  # fmt: skip
    conn.executemany('INSERT INTO "organization_ai_configs" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', configs)
    apis = [cuid(rng) for _ in APIS]
    conn.executemany(
        'INSERT INTO "api_configurations" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [
            (a, name, f"https://{name}.example/api/v2", rng.choice(("API_KEY", "OAUTH2")),
             _json({"Accept": "application/json"}), rng.choice((None, 60, 600)), 1, when(), when())
            for a, name in zip(apis, APIS, strict=True)
        ],
    )  # fmt: skip
    creds = []
    for o in orgs:
        for a in rng.sample(apis, 2):
            creds.append(
                (cuid(rng), o, a, "enc:" + "".join(rng.choices(string.hexdigits, k=48)), int(rng.random() > 0.1),
                 None if rng.random() < 0.6 else now + rng.randrange(365) * DAY_MS, when(7), when(), when(30))
            )  # fmt: skip
    conn.executemany('INSERT INTO "organization_api_credentials" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', creds)
    return providers, apis


def _seed_mappings(
    conn: sqlite3.Connection, rng: random.Random, orgs: list[str], apis: list[str], when: Callable[..., int]
) -> list[str]:
    """Each organization's data-source mappings and their field configurations."""
    mappings = []
    for o in orgs:
        for k in range(3):
            mappings.append(
                (cuid(rng), o, rng.choice(apis), ("project", "cost_item", "vendor")[k], ("pfa", "pfa", "vendor")[k],
                 _json({"fields": rng.sample(FIELDS, 4), "version": 1}), 1, when(), when(30))
            )  # fmt: skip
    conn.executemany('INSERT INTO "data_source_mappings" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', mappings)
    mapping_ids = [m[0] for m in mappings]
    conn.executemany(
        'INSERT INTO "field_configurations" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [
            (cuid(rng), m, f, f"$.{f}", rng.choice(("STRING", "NUMBER", "DATE")), int(n < 2), int(rng.random() > 0.2),
             n, None if n % 3 else _json({"trim": True}), when(), when(30))
            for m in mapping_ids
            for n, f in enumerate(rng.sample(FIELDS, 6))
        ],
    )  # fmt: skip
    return mapping_ids


def _insert_pfa(
    conn: sqlite3.Connection, rng: random.Random, orgs: list[str], mappings: list[str], count: int, now: int
) -> None:
    rows = []
    for i in range(count):
        start = now - rng.randrange(720) * DAY_MS
        rows.append(
            (cuid(rng), orgs[i % len(orgs)], None if i % 11 == 0 else rng.choice(mappings), f"EXT-{i:07d}",
             rng.choice(CATEGORIES), rng.choice(STATUSES), round(rng.uniform(10, 250_000), 2), rng.randint(1, 40),
             start, None if i % 5 == 0 else start + rng.randint(1, 180) * DAY_MS, int(i % 7 == 0), int(i % 13 == 0),
             _json({"costCode": f"{rng.randint(1, 99):02d}-{rng.randint(100, 999)}", "tags": rng.sample(FIELDS, 2)}),
             None if i % 3 == 0 else now - rng.randrange(30) * DAY_MS, start, now - rng.randrange(60) * DAY_MS)
        )  # fmt: skip
    conn.executemany('INSERT INTO "pfa_records" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', rows)


def _usage_row(rng: random.Random, orgs: list[str], users: list[str], providers: list[str], at: int) -> tuple[Any, ...]:
    ok = rng.random() > 0.04
    prompt = rng.randint(20, 4000)
    return (
        rng.choice(orgs),
        None if rng.random() < 0.1 else rng.choice(users),
        rng.choice(providers),
        rng.choice(("gpt-4o", "claude-sonnet", "gemini-flash", "llama-3-8b")),
        prompt,
        rng.randint(0, 1200) if ok else 0,
        round(prompt * 0.000003, 6),
        rng.randint(120, 9000),
        int(ok),
        None if ok else rng.choice(("rate limited", "timeout after 30s", "context length exceeded")),
        _json({"feature": rng.choice(("summary", "forecast", "chat")), "cached": rng.random() < 0.2}),
        at,
    )


def _sync_row(rng: random.Random, orgs: list[str], mappings: list[str], at: int) -> tuple[Any, ...]:
    read = rng.randint(0, 5000)
    failed = rng.random() < 0.05
    duration = rng.randint(200, 120_000)
    return (
        rng.choice(orgs),
        rng.choice(mappings),
        "FAILED" if failed else "SUCCESS",
        read,
        0 if failed else read - rng.randint(0, min(read, 20)),
        _json([{"code": "HTTP_502", "at": at}]) if failed else None,
        at,
        at + duration,
        duration,
    )


# --- the live backend --------------------------------------------------------------------------------


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
        row = _usage_row(self.rng, self.orgs, self.users, self.providers, now_ms())
        self.conn.execute(
            'INSERT INTO "ai_usage_logs" ("organizationId", "userId", "providerId", "model", "promptTokens", '
            '"completionTokens", "costUsd", "latencyMs", "success", "errorMessage", "metadata", "createdAt") '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )

    def edit_pfa_record(self) -> None:
        rid = self.rng.choice(self.pfa)
        self.conn.execute(
            'UPDATE "pfa_records" SET "status" = ?, "amount" = ?, "isForecast" = ?, "data" = ?, "updatedAt" = ? '
            'WHERE "id" = ?',
            (
                self.rng.choice(STATUSES),
                round(self.rng.uniform(10, 250_000), 2),
                int(self.rng.random() < 0.2),
                _json({"costCode": f"{self.rng.randint(1, 99):02d}-{self.rng.randint(100, 999)}", "edited": True}),
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
            (uid, f"{uid}@example.com", "New User", "$2b$10$" + uid * 2, "USER", 1, _json({"theme": "dark"}), now, now),
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
            (_json({"timezone": "UTC", "features": ["ai", "sync", "forecast"]}), now_ms(), self.rng.choice(self.orgs)),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m replicator.demo.app", description="The replicator demo's live app: writes to DB."
    )
    parser.add_argument("db", type=Path, help="the app's SQLite file")
    parser.add_argument("--seconds", type=float, default=30.0, help="write for this long (default 30)")
    parser.add_argument("--rate", type=float, default=100.0, help="transactions per second (default 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--create", action="store_true", help="create the database first (it must not exist)")
    parser.add_argument("--rows", type=int, default=50_000, help="rows in total with --create (default 50000)")
    parser.add_argument("--keep-writing", action="store_true", help="keep trying after the file is fenced")
    args = parser.parse_args(argv)
    if args.create:
        if args.db.exists():
            print(f"error: {args.db} exists — pass a new path with --create", file=sys.stderr)
            return 2
        counts = create(args.db, args.rows)
        print(json.dumps({"event": "created", "rows": sum(counts.values()), "tables": counts}), flush=True)
    elif not args.db.is_file():
        print(f"error: {args.db} does not exist — pass --create to make it", file=sys.stderr)
        return 2
    if args.seconds > 0:
        summary = run_writer(args.db, args.seconds, args.rate, args.seed, stop_when_fenced=not args.keep_writing)
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
