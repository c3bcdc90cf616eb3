"""The demo app's values, as Prisma Client writes them to SQLite, and the rows both the seed and the live
writer insert (an AI usage log, a sync run), so a seeded row and a live one are made the same way.
"""

from __future__ import annotations

import json
import random
import string
import time
from typing import Any

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


def jsonb(value: Any) -> str:
    """A ``Json`` value as Prisma stores it in SQLite: JSON text (here compact, keys sorted)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


INSERT_USAGE = (
    'INSERT INTO "ai_usage_logs" ("organizationId", "userId", "providerId", "model", "promptTokens", '
    '"completionTokens", "costUsd", "latencyMs", "success", "errorMessage", "metadata", "createdAt") '
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""The statement a :func:`usage_row` is inserted with, by the seed and by the live writer."""


def usage_row(rng: random.Random, orgs: list[str], users: list[str], providers: list[str], at: int) -> tuple[Any, ...]:
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
        jsonb({"feature": rng.choice(("summary", "forecast", "chat")), "cached": rng.random() < 0.2}),
        at,
    )


def sync_row(rng: random.Random, orgs: list[str], mappings: list[str], at: int) -> tuple[Any, ...]:
    read = rng.randint(0, 5000)
    failed = rng.random() < 0.05
    duration = rng.randint(200, 120_000)
    return (
        rng.choice(orgs),
        rng.choice(mappings),
        "FAILED" if failed else "SUCCESS",
        read,
        0 if failed else read - rng.randint(0, min(read, 20)),
        jsonb([{"code": "HTTP_502", "at": at}]) if failed else None,
        at,
        at + duration,
        duration,
    )
