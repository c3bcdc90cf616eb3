"""PostgreSQL's names for SQLite's: their case, and the 63 bytes PostgreSQL cuts every identifier to.

Why one place: the plan's names, the generated names of keys, indexes and constraints, existing mode's
match against the target's catalog and the sequence lookup after the load must all cut a name where
PostgreSQL does, or two of them disagree on it. Every identifier goes through ``psycopg.sql.Identifier``
with its original case, unless ``identifiers = "downcase"``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from replicator.errors import UsageError
from triggers.schema import Schema

#: PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
MAX_IDENTIFIER_BYTES = 63


def target_name(name: str, identifiers: str) -> str:
    return name.lower() if identifiers == "downcase" else name


def short_name(*parts: str) -> str:
    """A generated object name within 63 bytes: a hash suffix keeps truncated names distinct."""
    name = "_".join(parts)
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    head = name.encode()[: MAX_IDENTIFIER_BYTES - 9].decode(errors="ignore")
    return f"{head}_{digest}"


def truncated(name: str) -> str:
    """``name`` as PostgreSQL keeps it: its first 63 bytes."""
    return name.encode()[:MAX_IDENTIFIER_BYTES].decode(errors="ignore")


def check_identifiers(schema: Schema, identifiers: str) -> list[str]:
    """Refuse names that PostgreSQL would truncate into one another; warn about long ones.

    PostgreSQL cuts identifiers at 63 bytes, in DDL and in the app's queries alike, so a single long
    name still works; two names sharing their first 63 bytes become one, and the load would fail or
    write into the wrong column (pgloader#353). That is refused before anything is created.
    """
    warnings: list[str] = []
    collisions: list[str] = []

    def scan(kind: str, names: Sequence[str]) -> None:
        seen: dict[str, str] = {}
        for name in names:
            pg = truncated(target_name(name, identifiers))
            if pg in seen:
                collisions.append(f"{kind} {seen[pg]!r} and {name!r}")
            seen[pg] = name
            if len(name.encode()) > MAX_IDENTIFIER_BYTES:
                warnings.append(f"{kind} name {name!r} is longer than 63 bytes: PostgreSQL truncates it")

    scan("table", [t.name for t in schema.tables])
    for table in schema.tables:
        scan(f"columns of {table.name!r}:", [c.name for c in table.columns])
    if collisions:
        raise UsageError(
            "names collide once PostgreSQL truncates them to 63 bytes: " + "; ".join(collisions),
            hint="rename one of each pair in SQLite; PostgreSQL cannot hold both names",
        )
    return warnings
