"""Building the demo app's database: its schema and about the asked number of rows, the same for a seed."""

from __future__ import annotations

import random
import sqlite3
import string
from collections.abc import Callable
from pathlib import Path

from replicator.demo.database import SCHEMA, TABLES, connect
from replicator.demo.rows import (
    APIS,
    CATEGORIES,
    DAY_MS,
    FIELDS,
    INSERT_USAGE,
    PROVIDERS,
    STATUSES,
    cuid,
    jsonb,
    now_ms,
    sync_row,
    usage_row,
)


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
        INSERT_USAGE,
        [usage_row(rng, orgs, users, providers, when(90)) for _ in range(counts["ai_usage_logs"])],
    )
    conn.executemany(
        'INSERT INTO "sync_logs" ("organizationId", "mappingId", "status", "recordsRead", "recordsWritten", '
        '"errors", "startedAt", "finishedAt", "durationMs") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [sync_row(rng, orgs, mapping_ids, when(90)) for _ in range(counts["sync_logs"])],
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
                jsonb({"timezone": "UTC", "fiscalYearStart": rng.randint(1, 12), "features": ["ai", "sync"]}),
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
                None if i % 4 else jsonb({"theme": rng.choice(("dark", "light")), "digest": bool(i % 2)}),
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
                jsonb(models),
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
                 None if rng.random() < 0.5 else jsonb({"system": "You are a cost analyst."}), when(), when(30))
            )  # fmt: skip
    conn.executemany('INSERT INTO "organization_ai_configs" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', configs)
    apis = [cuid(rng) for _ in APIS]
    conn.executemany(
        'INSERT INTO "api_configurations" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [
            (a, name, f"https://{name}.example/api/v2", rng.choice(("API_KEY", "OAUTH2")),
             jsonb({"Accept": "application/json"}), rng.choice((None, 60, 600)), 1, when(), when())
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
                 jsonb({"fields": rng.sample(FIELDS, 4), "version": 1}), 1, when(), when(30))
            )  # fmt: skip
    conn.executemany('INSERT INTO "data_source_mappings" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', mappings)
    mapping_ids = [m[0] for m in mappings]
    conn.executemany(
        'INSERT INTO "field_configurations" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        [
            (cuid(rng), m, f, f"$.{f}", rng.choice(("STRING", "NUMBER", "DATE")), int(n < 2), int(rng.random() > 0.2),
             n, None if n % 3 else jsonb({"trim": True}), when(), when(30))
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
             jsonb({"costCode": f"{rng.randint(1, 99):02d}-{rng.randint(100, 999)}", "tags": rng.sample(FIELDS, 2)}),
             None if i % 3 == 0 else now - rng.randrange(30) * DAY_MS, start, now - rng.randrange(60) * DAY_MS)
        )  # fmt: skip
    conn.executemany('INSERT INTO "pfa_records" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', rows)
