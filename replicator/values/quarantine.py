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

The rows recording them live in the state schema's ``quarantine`` table (:mod:`replicator.state.quarantine`),
replaced in the same transaction that reloads the table, so they always describe the rows currently missing
from it.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import msgspec

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
