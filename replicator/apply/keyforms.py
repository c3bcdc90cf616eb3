"""A table's keys in PostgreSQL form, and SQLite's current rows found by them, for the writer.

The journal names keys as SQLite holds them; PostgreSQL holds their converted form. Most key columns convert one
value to one value, but a date-time text key has several SQLite spellings of one PostgreSQL key, and a key read
from PostgreSQL (a row in the way on a UNIQUE index) must be found again in SQLite: one object per table keeps
the key converter and these lookups together (:class:`KeyForms`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from replicator.apply.lookup import KeyTuple, rows_for_target_keys
from replicator.errors import UniqueCollision
from replicator.plan.refusals import collision_message
from replicator.plan.shape import TableShape
from replicator.values import convert, refusal


class KeyForms:
    """One table's key conversion and the SQLite lookups by converted key."""

    def __init__(self, t: TableShape, source: sqlite3.Connection, *, exact: bool | None = None) -> None:
        self.t = t
        self.source = source
        """SQLite, read outside any batch's read transaction (each lookup opens its own)."""
        self.convert_key = convert.row_converter(t.source, t.key_source, t.key_types)
        self.exact = exact
        """Whether SQLite holds the keys in their PostgreSQL form (None: judged by the key types alone)."""

    def convert_each(self, keys: Sequence[KeyTuple]) -> list[KeyTuple | None]:
        """Each key in PostgreSQL form, None where its column type refuses it (positions kept)."""
        convert_key = self.convert_key
        out: list[KeyTuple | None] = []
        for key in keys:
            try:
                out.append(convert_key(key))
            except refusal.RowRefused:
                out.append(None)
        return out

    def convert(self, keys: Sequence[KeyTuple]) -> list[KeyTuple]:
        """Keys in PostgreSQL form; a key its column type refuses cannot be in PostgreSQL, so it is dropped."""
        return [k for k in self.convert_each(keys) if k is not None]

    def rows_for(self, keys: Collection[KeyTuple]) -> list[tuple[Any, ...]]:
        """SQLite's current rows for keys in PostgreSQL form (:func:`rows_for_target_keys`)."""
        return rows_for_target_keys(self.source, self.t, keys, self.convert_key, exact=self.exact)

    def rows_of_every_spelling(self, keys: Sequence[KeyTuple]) -> list[tuple[Any, ...]]:
        """SQLite's current rows for the batch's keys in PostgreSQL form, whatever their SQLite spelling.

        A key column whose conversion is not one-to-one (date-time text: '2024-05-01 10:00:00' and
        '2024-05-01T10:00:00' name one instant) lets the batch's key name a PostgreSQL row that another
        spelling wrote. Deleting the key and inserting only the batch spelling's row would lose that
        row, silently: so every spelling's row is written back, and two spellings alive at once (two
        rows SQLite keeps apart, one key in PostgreSQL) are refused, both named. Costs a read of the
        table's keys per batch (:func:`rows_for_target_keys`), on such tables only.
        """
        t = self.t
        width = len(t.source_columns)
        rows = self.rows_for(set(keys))
        raw = [row[width:] for row in rows]
        spellings: dict[KeyTuple, list[KeyTuple]] = {}
        for converted, original in zip(self.convert_each(raw), raw, strict=True):
            if converted is not None:
                spellings.setdefault(converted, []).append(tuple(original))
        for found in spellings.values():
            if len(found) > 1:
                raise UniqueCollision(
                    collision_message(t.source, t.key_source, found[:2], "primary key", t.key_source)
                    + "; the batch was not applied, so neither is lost",
                    hint="write the key in one spelling in SQLite (PostgreSQL compares date-time text as the "
                    "instant it names) and run again: the daemon resumes at this batch",
                )
        return rows

    def by_key(self, rows: Iterable[tuple[Any, ...]], keys: set[KeyTuple]) -> dict[KeyTuple, tuple[Any, ...]]:
        """SQLite rows (as read: loaded columns, then key) by their key in PostgreSQL form, for ``keys`` only."""
        width = len(self.t.source_columns)
        rows = list(rows)
        out: dict[KeyTuple, tuple[Any, ...]] = {}
        for key, row in zip(self.convert_each([r[width:] for r in rows]), rows, strict=True):
            if key in keys:
                out[key] = tuple(row)
        return out
