"""What the values in each column actually are: the profile a scan measures (``replicator.plan.profiler``).

SQLite lets any column hold any storage class, so the declared type proves nothing: analyze reports
this profile to the operator, and the schema translation picks PostgreSQL types from it.

CONTRACT (shared by analyze and schema translation; extend, do not rename):
``profiler.profile_table(conn, table) -> TableProfile``: every value's storage class (``typeof``), formats
(FORMATS) and extremes, measured with aggregate SQL over the whole table, never by fetching rows
into Python one at a time. This module holds what the contract names: the formats, the storage
classes and the two structs, which everything that reads a profile imports without the scan.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from replicator.plan.named import by_name

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
    "nul_text",  # text containing a NUL character (PostgreSQL text cannot hold it); such text has no other format
    "invalid_utf8",  # text that is not valid UTF-8
    # Extensions (appended; the names above are the contract):
    "bool01_text",  # text '0' or '1' (Northwind's Discontinued, Sakila's active)
    "uuid_hex32",  # text of exactly 32 hex digits: a UUID without dashes (Django, SQLAlchemy Uuid)
)

#: Formats that describe an instant or a date; they are mutually exclusive for one value.
TEMPORAL_FORMATS = ("unix_s", "unix_ms", "iso8601_tz", "iso8601", "sql_datetime", "date")
STORAGE_CLASSES = ("null", "integer", "real", "text", "blob")

#: Epoch bounds. The lower bound (1973-03-03) is not 1970 because small integers are far more often
#: ids, counters, flags and years than instants; with it unix_s and unix_ms can never overlap.
UNIX_S_MIN = 100_000_000
UNIX_S_MAX = 4_102_444_800  # 2100-01-01T00:00:00Z
UNIX_MS_MIN = UNIX_S_MIN * 1000
UNIX_MS_MAX = UNIX_S_MAX * 1000


class ColumnProfile(msgspec.Struct, frozen=True):
    name: str
    storage: dict[str, int]
    """Histogram of ``typeof()``: keys among null, integer, real, text, blob (absent = 0)."""
    formats: dict[str, int]
    """Counts per detected format (see FORMATS), absent = 0. A value may count in several
    (text '1' is decimal_text and bool01_text); the TEMPORAL_FORMATS never overlap."""
    min_integer: int | None = None
    max_integer: int | None = None
    max_text_bytes: int | None = None
    max_blob_bytes: int | None = None
    sampled: int | None = None
    """Counted over this many first rows only: a snapshot's guess, which its load verifies."""

    @property
    def non_null(self) -> int:
        return sum(n for cls, n in self.storage.items() if cls != "null")

    @property
    def temporal(self) -> int:
        """Values in any date or instant format (each value counts once: those formats are disjoint)."""
        return sum(self.formats.get(f, 0) for f in TEMPORAL_FORMATS)


class TableProfile(msgspec.Struct, frozen=True):
    name: str
    rows: int
    columns: tuple[ColumnProfile, ...]
    null_key_rows: int = 0
    """Rows with a NULL in any primary-key column (allowed by SQLite outside INTEGER PRIMARY KEY)."""

    def column(self, name: str) -> ColumnProfile:
        return by_name(self.columns, name)


Plain = Mapping[str, frozenset[str]]
"""Per column name, the storage classes counted without their formats (see ``profiler.profile_table``)."""
#: Every class of a column plain: its storage classes are all that is counted.
STORAGE_ONLY: Final = frozenset(STORAGE_CLASSES)
NUMBERS_ONLY: Final = frozenset({"integer", "real"})
NO_PLAIN: Final[Plain] = {}
"""Nothing plain: every value's formats are counted (the default of every scan)."""
