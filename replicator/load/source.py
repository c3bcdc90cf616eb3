"""Reading SQLite for the snapshot: one read transaction, the schema and profiles, rows in bounded batches.

Every later step reads in the transaction :func:`open_source` opens, so the schema, the profiles, the
journal mark and every row describe one state of the file (see :mod:`replicator.load.snapshot`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from replicator.config import Config
from replicator.load.guess import guess_profile, plain_columns
from replicator.plan import sequences
from replicator.plan.profile import (
    TableProfile,
)
from replicator.plan.profiler import profile_table
from triggers import source as sqlite_source
from triggers.schema import Schema, quote_ident, read_schema

_DECODE_ERROR = "Could not decode to UTF-8"


class SourceRead(msgspec.Struct, frozen=True):
    """What one consistent read transaction on SQLite gives every later step."""

    schema: Schema
    profiles: dict[str, TableProfile]
    sqlite_sequence: dict[str, int]
    guessed: frozenset[str] = frozenset()
    """Tables whose profile is a sample (``guess_profile``): their load verifies every row."""


def open_source(path: Path, config: Config) -> sqlite3.Connection:
    """Read-only connection with an open read transaction: all later reads see one snapshot."""
    conn = sqlite_source.connect(path, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # first read: the snapshot starts here
    return conn


def read_source(conn: sqlite3.Connection, create: Config | None = None, *, guess: bool = True) -> SourceRead:
    """The schema and every table's profile; ``create``: only what create mode's type choice needs
    (``plain_columns``), with that config's overrides. Without it every column is fully profiled."""
    schema = read_schema(conn)
    profiles, guessed = _profiles(conn, schema, [t.name for t in schema.tables], create, guess=guess)
    return SourceRead(
        schema=schema, profiles=profiles, sqlite_sequence=sequences.read_sqlite_sequence(conn), guessed=guessed
    )


def _profiles(
    conn: sqlite3.Connection, schema: Schema, names: Sequence[str], create: Config | None, *, guess: bool = True
) -> tuple[dict[str, TableProfile], frozenset[str]]:
    """Each table's profile: a verified guess where one is possible (create mode), else measured."""
    profiles: dict[str, TableProfile] = {}
    guessed: set[str] = set()
    for name in names:
        table = schema.table(name)
        guessed_profile = guess_profile(conn, table, create) if create is not None and guess else None
        if guessed_profile is not None:
            profiles[name] = guessed_profile
            guessed.add(name)
        else:
            profiles[name] = profile_table(conn, table, plain=plain_columns(table, create))
    return profiles, frozenset(guessed)


# --- reading SQLite -----------------------------------------------------------------------------


def strict_text(conn: sqlite3.Connection) -> bool:
    """Whether every text ``conn`` reads now is valid UTF-8, so its rows' converter may skip the check for a
    lone surrogate (``RowPipe(strict_text=)``): its text factory is sqlite3's own ``str``, a strict decode
    that raises (:class:`_DecodeFallback`) rather than yield one. The bytes fallback
    (``convert_text.decode_text``) turns invalid bytes into surrogates, which the check must catch."""
    return conn.text_factory is str


class _DecodeFallback(Exception):
    """sqlite3 met TEXT that is not UTF-8: the table is re-read with a bytes-tolerant text factory."""


def _select(table: str, columns: Sequence[str]) -> str:
    cols = ", ".join(quote_ident(c) for c in columns) or "NULL"
    return f"SELECT {cols} FROM {quote_ident(table)}"  # noqa: S608 - SQLite identifiers quoted by quote_ident


def _batches(
    conn: sqlite3.Connection, query: str, fetch_rows: int, parameters: Sequence[Any] = ()
) -> Iterator[list[Any]]:
    """Stream rows in batches of ``fetch_rows``; bounded memory whatever the table size."""
    try:
        cursor = conn.execute(query, parameters)
        while True:
            batch = cursor.fetchmany(fetch_rows)
            if not batch:
                return
            yield batch
    except sqlite3.OperationalError as exc:
        if _DECODE_ERROR in str(exc):
            raise _DecodeFallback(str(exc)) from None
        raise sqlite_source.translate(exc, "source") from None
