"""What the values in each column actually are, measured in SQL (one scan per table).

SQLite lets any column hold any storage class, so the declared type proves nothing: analyze reports
this profile to the operator, and the schema translation picks PostgreSQL types from it.

CONTRACT (shared by analyze and schema translation; extend, do not rename):
``profile_table(conn, table) -> TableProfile`` reads the table once with aggregate SQL
(``sum(typeof(c) = 'integer')`` etc.), never row by row in Python.
"""

from __future__ import annotations

import msgspec

#: Value formats detected per column (keys of ColumnProfile.formats):
FORMATS = (
    "unix_s",  # integer or real within a plausible epoch-seconds range (1970..2100)
    "unix_ms",  # integer within a plausible epoch-milliseconds range (1970..2100)
    "iso8601_tz",  # text 'YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)' (space separator accepted)
    "iso8601",  # text 'YYYY-MM-DDTHH:MM:SS[.fff]' without offset
    "sql_datetime",  # text 'YYYY-MM-DD HH:MM:SS[.fff]' (SQLite's CURRENT_TIMESTAMP form)
    "date",  # text 'YYYY-MM-DD'
    "bool01",  # integer 0 or 1
    "bool_text",  # text in t/f/true/false/yes/no (any case)
    "json_object",  # text json_valid and starting with '{'
    "json_array",  # text json_valid and starting with '['
    "uuid",  # text 8-4-4-4-12 hex
    "decimal_text",  # text that is a plain decimal number
    "nul_text",  # text containing a NUL character (PostgreSQL text cannot hold it)
    "invalid_utf8",  # text that is not valid UTF-8
)


class ColumnProfile(msgspec.Struct, frozen=True):
    name: str
    storage: dict[str, int]
    """Histogram of ``typeof()``: keys among null, integer, real, text, blob (absent = 0)."""
    formats: dict[str, int]
    """Counts per detected format (see FORMATS); a value may count in several (1 is unix_s? no: bool01)."""
    min_integer: int | None = None
    max_integer: int | None = None
    max_text_bytes: int | None = None
    max_blob_bytes: int | None = None


class TableProfile(msgspec.Struct, frozen=True):
    name: str
    rows: int
    columns: tuple[ColumnProfile, ...]
    null_key_rows: int = 0
    """Rows with a NULL in any primary-key column (allowed by SQLite outside INTEGER PRIMARY KEY)."""

    def column(self, name: str) -> ColumnProfile:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)
