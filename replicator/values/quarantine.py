"""Values PostgreSQL cannot hold exactly, kept aside instead of altered.

Policy (``snapshot.on_bad_value``): ``stop`` names the first refused value (table, key, column,
excerpt, reason) and leaves that table unchanged; ``quarantine`` loads the rest and records each
refused value here. **The whole row is skipped, not loaded with a NULL**: a NULL would be an
alteration the application cannot tell from a real NULL, and could violate NOT NULL or a foreign
key later. The original value is kept byte for byte (base64 of its SQLite representation) with its
storage class, so an operator can repair it in SQLite or load it by hand. Cutover refuses while any
row is not ``acknowledged``.

A row whose foreign key references a quarantined row is quarantined too (its parent is not in
PostgreSQL, where the key is enforced or validated at cutover), with the reason ``parent <table>
key <k> quarantined`` and the parent recorded (``parent_table``, ``parent_key``), so that fixing
the parent in SQLite releases it (:mod:`replicator.apply.dependents`). ``refs`` keeps the values
children reference (foreign keys may point at a column other than the key).

A table's quarantine rows are replaced in the same transaction that reloads the table, so they
always describe the rows currently missing from it.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import sql

EXCERPT_CHARS = 60


class Refusal(msgspec.Struct, frozen=True):
    """One value that was refused, with enough to find and fix it."""

    table: str
    key: dict[str, Any]
    """Primary-key column → SQLite value (rowid when the table has no primary key)."""
    column: str
    storage_class: str
    original: str
    """Base64 of the value's SQLite representation (UTF-8 text, blob bytes, decimal repr of numbers)."""
    reason: str
    parent: str | None = None
    """For a row quarantined because its parent is: the parent's table (source name)."""
    parent_key: dict[str, Any] | None = None
    """The parent's key, as ``key`` records keys."""
    refs: dict[str, Any] | None = None
    """Column → SQLite value (JSON-safe) of the row's columns that foreign keys reference, when any does."""

    def excerpt(self) -> str:
        raw = base64.b64decode(self.original)
        text = raw.decode("utf-8", errors="backslashreplace")
        if self.storage_class == "blob":
            text = "x'" + raw[: EXCERPT_CHARS // 2].hex() + ("…'" if len(raw) > EXCERPT_CHARS // 2 else "'")
            return text
        return repr(text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else ""))


def storage_class(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool | int):
        return "integer"
    if isinstance(value, float):
        return "real"
    if isinstance(value, bytes | bytearray | memoryview):
        return "blob"
    return "text"


def original_bytes(value: object) -> bytes:
    """The value as SQLite holds it: text as UTF-8 (invalid bytes restored), blob as is, numbers as repr."""
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, float):
        return (repr(value) if math.isfinite(value) else str(value)).encode()
    if isinstance(value, int):
        return str(value).encode()
    return str(value).encode("utf-8", errors="surrogateescape")


def make(table: str, key: dict[str, Any], column: str, value: object, reason: str) -> Refusal:
    return Refusal(
        table=table,
        key=json_safe_dict(key),
        column=column,
        storage_class=storage_class(value),
        original=base64.b64encode(original_bytes(value)).decode(),
        reason=reason,
    )


def json_safe_dict(values: dict[str, Any]) -> dict[str, Any]:
    """SQLite values as the quarantine records them (JSON: blobs as base64, text with invalid UTF-8 escaped)."""
    return {k: _json_safe(v) for k, v in values.items()}


def from_json_safe(value: Any) -> Any:
    """A recorded value back as SQLite holds it (blobs from base64); exact except for invalid UTF-8."""
    if isinstance(value, dict) and set(value) == {"base64"}:
        return base64.b64decode(value["base64"])
    return value


def _json_safe(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def replace_for_table(
    conn: psycopg.Connection[Any], schema_name: str, table: str, refusals: Sequence[Refusal], run_id: int | None
) -> None:
    """Drop the table's previous quarantine rows and write the new ones (in the load transaction)."""
    schema = sql.Identifier(schema_name)
    conn.execute(sql.SQL("DELETE FROM {}.quarantine WHERE table_name = %s").format(schema), (table,))
    insert(conn, schema_name, refusals, run_id, "row skipped")


def insert(
    conn: psycopg.Connection[Any], schema_name: str, refusals: Sequence[Refusal], run_id: int | None, action: str
) -> None:
    """Record ``refusals`` (the caller removed what they replace)."""
    if not refusals:
        return
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {}.quarantine (run_id, table_name, key, column_name, storage_class, original_base64, "
                "reason, action, parent_table, parent_key, refs) "
                "VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)"
            ).format(sql.Identifier(schema_name)),
            [
                (
                    *(run_id, r.table, json.dumps(r.key), r.column, r.storage_class, r.original, r.reason, action),
                    r.parent,
                    None if r.parent_key is None else json.dumps(r.parent_key),
                    None if r.refs is None else json.dumps(r.refs),
                )
                for r in refusals
            ],
        )


def unacknowledged(conn: psycopg.Connection[Any], schema_name: str) -> dict[str, int]:
    """Table → count of quarantined values nobody has acknowledged (cutover refuses while any)."""
    exists = conn.execute("SELECT to_regclass(%s)", (f'"{schema_name}".quarantine',)).fetchone()
    if not exists or exists[0] is None:
        return {}
    rows = conn.execute(
        sql.SQL("SELECT table_name, count(*) FROM {}.quarantine WHERE NOT acknowledged GROUP BY 1 ORDER BY 1").format(
            sql.Identifier(schema_name)
        )
    ).fetchall()
    return {str(t): int(n) for t, n in rows}


def acknowledge(conn: psycopg.Connection[Any], schema_name: str, table: str | None = None) -> int:
    """Mark quarantined values as seen (all, or one table's); returns how many changed."""
    query = sql.SQL(
        "UPDATE {}.quarantine SET acknowledged = true, acknowledged_at = now() WHERE NOT acknowledged"
    ).format(sql.Identifier(schema_name))
    where = sql.SQL(" AND table_name = %s") if table is not None else sql.SQL("")
    return conn.execute(query + where, (table,) if table is not None else None).rowcount


class QuarantinedValue(msgspec.Struct, frozen=True):
    """One refused value as an operator reviews it."""

    id: int
    table: str
    key: Any
    column: str
    storage_class: str
    original_base64: str
    reason: str
    action: str
    recorded_at: str
    acknowledged: bool


def list_values(
    conn: psycopg.Connection[Any], schema_name: str, table: str | None = None, limit: int = 1000
) -> list[QuarantinedValue]:
    """The quarantined values, oldest first, for review before cutover."""
    exists = conn.execute("SELECT to_regclass(%s)", (f'"{schema_name}".quarantine',)).fetchone()
    if not exists or exists[0] is None:
        return []
    where = sql.SQL("WHERE table_name = %s") if table is not None else sql.SQL("")
    query = sql.SQL(
        "SELECT id, table_name, key, column_name, storage_class, original_base64, reason, action,"
        " recorded_at, acknowledged FROM {}.quarantine {} ORDER BY id LIMIT %s"
    ).format(sql.Identifier(schema_name), where)
    params: tuple[Any, ...] = (table, limit) if table is not None else (limit,)
    return [
        QuarantinedValue(
            id=int(r[0]),
            table=str(r[1]),
            key=r[2],
            column=str(r[3]),
            storage_class=str(r[4]),
            original_base64=str(r[5]),
            reason=str(r[6]),
            action=str(r[7]),
            recorded_at=r[8].isoformat(),
            acknowledged=bool(r[9]),
        )
        for r in conn.execute(query, params).fetchall()
    ]
