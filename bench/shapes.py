"""Generated SQLite databases for the benchmarks, one per *shape*.

    from bench.shapes import SHAPES
    shape = SHAPES["wide"]; counts = shape.build(path, rows=1_000_000, json_bytes=400)

* ``narrow`` (the original bench/snapshot.py database): users, orders, events and tags, ~500 bytes
  per row, no table above half the rows, JSON only as one short payload column.
* ``wide``: a SaaS-shaped database whose dominant table (80 % of the rows) is a wide ORM table,
  ``documents``, 17 columns as Django or Prisma write them on SQLite: a JSON object (``--json-bytes``
  long, nested: settings, flags, a list of line items with prices), two DATETIME texts with
  microseconds (``2024-03-05 06:07:08.123456``), a DATE, two BOOLEANs (0/1), a REAL, a 16-byte
  BLOB, a unique VARCHAR(36) (a UUID's text), a VARCHAR(255) title, a TEXT body; five secondary
  indexes and three foreign keys to the smaller tables ``tenants``, ``users`` and ``projects``.

Each shape also names its tables in storage-class types (``raw_tables``: bigint, float8, text,
bytea) and the statements that add their keys, indexes and FKs after the load (``raw_post``), for
the benchmarks' unconverted binary-COPY reference. Generation is one transaction of executemany
batches; repeated content (texts, JSON documents) comes from pools built once, so 1M wide rows take
seconds, not minutes.
"""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORDS = [
    *("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma", "omega"),
    *("order", "ship", "pay", "refund", "cart", "item", "stock", "price", "small", "large", "blue", "green"),
    *("red", "fast", "slow", "early", "late", "north", "south", "east", "west", "café", "naïve"),
]

RawTables = dict[str, list[tuple[str, str, str]]]
"""table → [(column, PostgreSQL storage type, COPY type)], primary key ``id`` first."""


@dataclass(frozen=True)
class Shape:
    """A generated database: its tables' shares of the rows and the raw reference's DDL."""

    name: str
    shares: dict[str, float]
    raw_tables: RawTables
    raw_post: tuple[str, ...]
    _build: Callable[..., dict[str, int]] = field(repr=False)

    def build(self, path: Path, rows: int, seed: int = 7, **options: Any) -> dict[str, int]:
        """Generate the database at ``path`` (rows in all tables together); returns rows per table."""
        return self._build(path, rows, seed, **options)


def text_of(rnd: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rnd.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def iso(rnd: random.Random) -> str:
    return f"20{rnd.randrange(15, 25)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d} " + (
        f"{rnd.randrange(24):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}"
    )


def _batches(make: Callable[[int], tuple[Any, ...]], n: int) -> Iterator[list[tuple[Any, ...]]]:
    for start in range(1, n + 1, 10_000):
        yield [make(i) for i in range(start, min(n, start + 9_999) + 1)]


def _open(path: Path, schema: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute("PRAGMA synchronous = off")
    conn.executescript(schema)
    conn.execute("BEGIN")
    return conn


def _close(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode = delete")
    conn.close()


# --- narrow ----------------------------------------------------------------------------------------

NARROW_SCHEMA = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at DATETIME NOT NULL,
    score REAL,
    active INTEGER NOT NULL DEFAULT 1,
    bio TEXT,
    avatar BLOB
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    status TEXT NOT NULL,
    total REAL NOT NULL,
    created_at DATETIME NOT NULL,
    shipped_at DATETIME,
    notes TEXT
);
CREATE INDEX orders_user ON orders (user_id);
CREATE INDEX orders_created ON orders (created_at);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    order_id INTEGER REFERENCES orders (id),
    kind TEXT NOT NULL,
    ts INTEGER NOT NULL,
    payload TEXT,
    digest BLOB
);
CREATE INDEX events_user_ts ON events (user_id, ts);
CREATE INDEX events_order ON events (order_id);
CREATE TABLE tags (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL REFERENCES events (id),
    label TEXT NOT NULL,
    weight REAL
);
CREATE UNIQUE INDEX tags_event_label ON tags (event_id, label);
"""

NARROW_RAW: RawTables = {
    "users": [
        ("id", "bigint", "int8"),
        ("email", "text", "text"),
        ("name", "text", "text"),
        ("created_at", "text", "text"),
        ("score", "double precision", "float8"),
        ("active", "bigint", "int8"),
        ("bio", "text", "text"),
        ("avatar", "bytea", "bytea"),
    ],
    "orders": [
        ("id", "bigint", "int8"),
        ("user_id", "bigint", "int8"),
        ("status", "text", "text"),
        ("total", "double precision", "float8"),
        ("created_at", "text", "text"),
        ("shipped_at", "text", "text"),
        ("notes", "text", "text"),
    ],
    "events": [
        ("id", "bigint", "int8"),
        ("user_id", "bigint", "int8"),
        ("order_id", "bigint", "int8"),
        ("kind", "text", "text"),
        ("ts", "bigint", "int8"),
        ("payload", "text", "text"),
        ("digest", "bytea", "bytea"),
    ],
    "tags": [
        ("id", "bigint", "int8"),
        ("event_id", "bigint", "int8"),
        ("label", "text", "text"),
        ("weight", "double precision", "float8"),
    ],
}
NARROW_POST = (
    "CREATE UNIQUE INDEX users_email ON users (email)",
    "CREATE INDEX orders_user ON orders (user_id)",
    "CREATE INDEX orders_created ON orders (created_at)",
    "CREATE INDEX events_user_ts ON events (user_id, ts)",
    "CREATE INDEX events_order ON events (order_id)",
    "CREATE UNIQUE INDEX tags_event_label ON tags (event_id, label)",
    "ALTER TABLE orders ADD FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID",
    "ALTER TABLE events ADD FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID",
    "ALTER TABLE events ADD FOREIGN KEY (order_id) REFERENCES orders (id) NOT VALID",
    "ALTER TABLE tags ADD FOREIGN KEY (event_id) REFERENCES events (id) NOT VALID",
    "ANALYZE",
)
NARROW_SHARES = {"users": 0.1, "orders": 0.25, "events": 0.5, "tags": 0.15}


def build_narrow(path: Path, rows: int, seed: int = 7) -> dict[str, int]:
    """The original bench database (in batches: memory stays flat at any size)."""
    rnd = random.Random(seed)
    counts = {name: max(1, int(rows * share)) for name, share in NARROW_SHARES.items()}
    conn = _open(path, NARROW_SCHEMA)
    statuses = ("new", "paid", "shipped", "cancelled", "refunded")
    kinds = ("view", "click", "add_to_cart", "purchase", "login", "logout")
    texts = [text_of(rnd, 700) for _ in range(4096)]
    users, orders, events = counts["users"], counts["orders"], counts["events"]
    for batch in _batches(
        lambda i: (
            i,
            f"user{i}@example.com",
            f"{rnd.choice(WORDS).title()} {rnd.choice(WORDS).title()} {i}",
            iso(rnd),
            round(rnd.uniform(0, 1000), 3),
            rnd.randrange(2),
            texts[i % 4096][: rnd.randrange(150, 450)],
            rnd.randbytes(64),
        ),
        users,
    ):
        conn.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
    for batch in _batches(
        lambda i: (
            i,
            rnd.randrange(1, users + 1),
            rnd.choice(statuses),
            round(rnd.uniform(1, 500), 2),
            iso(rnd),
            iso(rnd) if rnd.random() < 0.6 else None,
            texts[(i * 7) % 4096][: rnd.randrange(300, 650)] + f" #{i}",
        ),
        orders,
    ):
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
    for batch in _batches(
        lambda i: (
            i,
            rnd.randrange(1, users + 1),
            rnd.randrange(1, orders + 1) if rnd.random() < 0.5 else None,
            rnd.choice(kinds),
            1_600_000_000_000 + rnd.randrange(10**11),
            json.dumps(
                {"page": f"/p/{rnd.randrange(1000)}", "ref": texts[i % 4096][: rnd.randrange(300, 600)], "n": i}
            ),
            uuid.UUID(int=rnd.getrandbits(128)).bytes * 2,
        ),
        events,
    ):
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
    for batch in _batches(
        lambda i: (i, (i - 1) % events + 1, f"{rnd.choice(WORDS)}-{i}", rnd.random()),
        counts["tags"],
    ):
        conn.executemany("INSERT INTO tags VALUES (?, ?, ?, ?)", batch)
    _close(conn)
    return counts


# --- wide ------------------------------------------------------------------------------------------

WIDE_SCHEMA = """
CREATE TABLE tenants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    slug VARCHAR(64) NOT NULL UNIQUE,
    name VARCHAR(255) NOT NULL,
    plan VARCHAR(20) NOT NULL,
    created_at DATETIME NOT NULL
);
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id),
    email VARCHAR(254) NOT NULL UNIQUE,
    full_name VARCHAR(255) NOT NULL,
    is_staff BOOLEAN NOT NULL,
    date_joined DATETIME NOT NULL
);
CREATE INDEX users_tenant ON users (tenant_id);
CREATE TABLE projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id),
    name VARCHAR(255) NOT NULL,
    description TEXT NOT NULL,
    created_at DATETIME NOT NULL
);
CREATE INDEX projects_tenant ON projects (tenant_id);
CREATE TABLE documents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid VARCHAR(36) NOT NULL UNIQUE,
    tenant_id INTEGER NOT NULL REFERENCES tenants (id),
    owner_id INTEGER NOT NULL REFERENCES users (id),
    project_id INTEGER REFERENCES projects (id),
    title VARCHAR(255) NOT NULL,
    status VARCHAR(20) NOT NULL,
    body TEXT NOT NULL,
    metadata JSON NOT NULL CHECK (json_valid(metadata)),
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    due_date DATE,
    is_public BOOLEAN NOT NULL,
    is_archived BOOLEAN NOT NULL,
    score REAL,
    version INTEGER NOT NULL,
    checksum BLOB NOT NULL
);
CREATE INDEX documents_tenant_created ON documents (tenant_id, created_at);
CREATE INDEX documents_owner ON documents (owner_id);
CREATE INDEX documents_project ON documents (project_id);
CREATE INDEX documents_status ON documents (status);
CREATE INDEX documents_updated ON documents (updated_at);
"""

WIDE_SHARES = {"tenants": 0.02, "users": 0.1, "projects": 0.08, "documents": 0.8}

WIDE_RAW: RawTables = {
    "tenants": [
        ("id", "bigint", "int8"),
        ("slug", "text", "text"),
        ("name", "text", "text"),
        ("plan", "text", "text"),
        ("created_at", "text", "text"),
    ],
    "users": [
        ("id", "bigint", "int8"),
        ("tenant_id", "bigint", "int8"),
        ("email", "text", "text"),
        ("full_name", "text", "text"),
        ("is_staff", "bigint", "int8"),
        ("date_joined", "text", "text"),
    ],
    "projects": [
        ("id", "bigint", "int8"),
        ("tenant_id", "bigint", "int8"),
        ("name", "text", "text"),
        ("description", "text", "text"),
        ("created_at", "text", "text"),
    ],
    "documents": [
        ("id", "bigint", "int8"),
        ("uuid", "text", "text"),
        ("tenant_id", "bigint", "int8"),
        ("owner_id", "bigint", "int8"),
        ("project_id", "bigint", "int8"),
        ("title", "text", "text"),
        ("status", "text", "text"),
        ("body", "text", "text"),
        ("metadata", "text", "text"),
        ("created_at", "text", "text"),
        ("updated_at", "text", "text"),
        ("due_date", "text", "text"),
        ("is_public", "bigint", "int8"),
        ("is_archived", "bigint", "int8"),
        ("score", "double precision", "float8"),
        ("version", "bigint", "int8"),
        ("checksum", "bytea", "bytea"),
    ],
}
WIDE_POST = (
    "CREATE UNIQUE INDEX tenants_slug ON tenants (slug)",
    "CREATE UNIQUE INDEX users_email ON users (email)",
    "CREATE INDEX users_tenant ON users (tenant_id)",
    "CREATE INDEX projects_tenant ON projects (tenant_id)",
    "CREATE UNIQUE INDEX documents_uuid ON documents (uuid)",
    "CREATE INDEX documents_tenant_created ON documents (tenant_id, created_at)",
    "CREATE INDEX documents_owner ON documents (owner_id)",
    "CREATE INDEX documents_project ON documents (project_id)",
    "CREATE INDEX documents_status ON documents (status)",
    "CREATE INDEX documents_updated ON documents (updated_at)",
    "ALTER TABLE users ADD FOREIGN KEY (tenant_id) REFERENCES tenants (id) NOT VALID",
    "ALTER TABLE projects ADD FOREIGN KEY (tenant_id) REFERENCES tenants (id) NOT VALID",
    "ALTER TABLE documents ADD FOREIGN KEY (tenant_id) REFERENCES tenants (id) NOT VALID",
    "ALTER TABLE documents ADD FOREIGN KEY (owner_id) REFERENCES users (id) NOT VALID",
    "ALTER TABLE documents ADD FOREIGN KEY (project_id) REFERENCES projects (id) NOT VALID",
    "ANALYZE",
)

#: Distinct JSON documents and bodies generated per database; rows pick from these pools.
POOL = 4096


def iso_micros(rnd: random.Random) -> str:
    """A Django DateTimeField on SQLite: naive UTC text with microseconds."""
    return iso(rnd) + f".{rnd.randrange(1_000_000):06d}"


def metadata_doc(rnd: random.Random, size: int) -> str:
    """An ORM settings/line-items JSON object of about ``size`` bytes (at least ~200): nested objects,
    booleans, nulls, ints, floats (prices, ratios), non-ASCII text, and a list of line items that
    grows to the size asked."""
    doc: dict[str, Any] = {
        "schema": 3,
        "locale": rnd.choice(("en-US", "fr-FR", "de-DE", "ja-JP")),
        "theme": rnd.choice(("dark", "light", None)),
        "flags": {"beta": rnd.random() < 0.3, "emails": rnd.random() < 0.7, "sso": None},
        "ratio": round(rnd.random(), 4),
        "owner": {"name": f"{rnd.choice(WORDS).title()} {rnd.choice(WORDS).title()}", "team": rnd.randrange(50)},
        "tags": [rnd.choice(WORDS) for _ in range(rnd.randrange(1, 5))],
        "items": [],
    }
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    length = len(text)
    while length < size:
        item = {
            "sku": f"SKU-{rnd.randrange(10**6):06d}",
            "qty": rnd.randrange(1, 20),
            "price": round(rnd.uniform(1, 500), 2),
            "note": text_of(rnd, rnd.randrange(10, 40)),
        }
        doc["items"].append(item)
        length += len(json.dumps(item, ensure_ascii=False, separators=(",", ":"))) + 1
    return json.dumps(doc, ensure_ascii=False)


def _wide_counts(rows: int) -> dict[str, int]:
    return {name: max(1, int(rows * share)) for name, share in WIDE_SHARES.items()}


def document_maker(rnd: random.Random, counts: dict[str, int], json_bytes: int) -> Callable[[int], tuple[Any, ...]]:
    """The row maker of ``documents`` (17 values; ``id`` is the argument), pools built once."""
    docs = [metadata_doc(rnd, json_bytes) for _ in range(POOL)]
    bodies = [text_of(rnd, rnd.randrange(200, 1200)) for _ in range(POOL)]
    titles = [text_of(rnd, rnd.randrange(20, 120)).title() for _ in range(POOL)]
    statuses = ("draft", "review", "published", "archived")
    tenants, users, projects = counts["tenants"], counts["users"], counts["projects"]

    def make(i: int) -> tuple[Any, ...]:
        created = iso_micros(rnd)
        return (
            i,
            str(uuid.UUID(int=rnd.getrandbits(128))),
            rnd.randrange(1, tenants + 1),
            rnd.randrange(1, users + 1),
            rnd.randrange(1, projects + 1) if rnd.random() < 0.9 else None,
            titles[i % POOL],
            rnd.choice(statuses),
            bodies[(i * 7) % POOL],
            docs[(i * 13) % POOL],
            created,
            created if rnd.random() < 0.3 else iso_micros(rnd),
            created[:10] if rnd.random() < 0.6 else None,
            rnd.randrange(2),
            int(rnd.random() < 0.1),
            round(rnd.uniform(0, 100), 3) if rnd.random() < 0.8 else None,
            rnd.randrange(1, 40),
            rnd.randbytes(16),
        )

    return make


def build_wide(path: Path, rows: int, seed: int = 7, json_bytes: int = 400) -> dict[str, int]:
    """The wide SaaS database: ``documents`` holds 80 % of ``rows``, its JSON about ``json_bytes`` long."""
    rnd = random.Random(seed)
    counts = _wide_counts(rows)
    tenants, users, projects = counts["tenants"], counts["users"], counts["projects"]
    conn = _open(path, WIDE_SCHEMA)
    plans = ("free", "team", "business", "enterprise")
    for batch in _batches(
        lambda i: (i, f"tenant-{i}", f"{rnd.choice(WORDS).title()} Inc {i}", rnd.choice(plans), iso_micros(rnd)),
        tenants,
    ):
        conn.executemany("INSERT INTO tenants VALUES (?, ?, ?, ?, ?)", batch)
    for batch in _batches(
        lambda i: (
            i,
            rnd.randrange(1, tenants + 1),
            f"user{i}@example.com",
            f"{rnd.choice(WORDS).title()} {rnd.choice(WORDS).title()}",
            int(rnd.random() < 0.05),
            iso_micros(rnd),
        ),
        users,
    ):
        conn.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)", batch)
    for batch in _batches(
        lambda i: (i, rnd.randrange(1, tenants + 1), f"project {i}", text_of(rnd, 80), iso_micros(rnd)),
        projects,
    ):
        conn.executemany("INSERT INTO projects VALUES (?, ?, ?, ?, ?)", batch)
    make = document_maker(rnd, counts, json_bytes)
    placeholders = ", ".join("?" * 17)
    for batch in _batches(make, counts["documents"]):
        conn.executemany(f"INSERT INTO documents VALUES ({placeholders})", batch)
    _close(conn)
    return counts


SHAPES: dict[str, Shape] = {
    "narrow": Shape("narrow", NARROW_SHARES, NARROW_RAW, NARROW_POST, build_narrow),
    "wide": Shape("wide", WIDE_SHARES, WIDE_RAW, WIDE_POST, build_wide),
}
