"""What the values in each column actually are, measured in SQL, chunk by chunk.

SQLite lets any column hold any storage class, so the declared type proves nothing: analyze reports
this profile to the operator, and the schema translation picks PostgreSQL types from it.

CONTRACT (shared by analyze and schema translation; extend, do not rename):
``profile_table(conn, table) -> TableProfile``: every value's storage class (``typeof``), formats
(FORMATS) and extremes, measured with aggregate SQL over the whole table, never by fetching rows
into Python one at a time.

How (measured in ``bench/analyze.py`` and ``bench/profile_bench.py``):

* The table is read in rowid chunks (``chunks``: equal rowid ranges, or boundaries found by
  stepping when rowids are sparse; one chunk for WITHOUT ROWID tables), one statement per chunk.
  Several connections can read chunks at once (``replicator.plan.analyze``).
* Each value becomes ONE character naming its category (storage class plus formats; the
  CATEGORIES are disjoint), computed by dispatching once on ``typeof`` and testing only that class's
  formats; a row becomes ``char(code1, code2, ...)`` and the chunk one ``group_concat`` of them,
  which Python counts per column with ``str.count``. One aggregate step per row instead of one
  ``count(*) FILTER`` per format (the first design, kept as ``legacy_profile_table``).
* TEXT values of columns that may hold text (``is_bulk``) are not classified in SQL: the chunk
  hands Python their bytes joined by NULs. One ``count`` proves no value holds a NUL, one
  ``decode`` that all are valid UTF-8 (which SQLite cannot test), and then the cheapest proof that
  fits classifies them: a JSON column counts first characters (SQLite's ``json_valid`` is summed in
  the same statement), one regex matches a column that has a single format throughout, one search
  shows that no value starts like a format; otherwise each distinct value is classified once.
  A chunk with a NUL or invalid UTF-8 is coded again value by value (``replicator_text_class``).
* Extremes are plain ``min``/``max`` where the affinity says what the column holds; a column whose
  values prove the guess wrong gets the exact ``CASE typeof`` aggregates in one more statement.
* SQLite caps a result row at 2000 columns: wider tables take one statement per column group.

Runs in whatever transaction the caller holds (one point in time, as the snapshot does); in
autocommit every statement is its own short read.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Final, cast

import msgspec

from replicator import log
from triggers import source
from triggers.schema import Affinity, Column, Table, quote_ident, read_schema

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

#: SQLite's default SQLITE_MAX_COLUMN (2000) bounds the aggregates of one SELECT.
MAX_RESULT_COLUMNS = 1900
UTF8_FUNCTION = "replicator_utf8_invalid"


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
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


# --- SQL for one column. ``@c`` stands for the quoted column name; all other text is constant. -----

_YMD = "[0-9][0-9][0-9][0-9]-[01][0-9]-[0-3][0-9]"
_HMS = "[0-2][0-9]:[0-5][0-9]:[0-6][0-9]"
_HEX = "[0-9a-fA-F]"
_UUID = "-".join(_HEX * n for n in (8, 4, 4, 4, 12))


def _fraction_or_empty(cut: int) -> str:
    """Characters 20.. up to ``cut`` from the end are '' or '.' and digits (length arithmetic, one GLOB)."""
    rest = f"(length(@c) - {19 + cut})"
    return (
        f"({rest} = 0 OR ({rest} > 1 AND substr(@c, 20, 1) = '.' AND substr(@c, 21, {rest} - 1) NOT GLOB '*[^0-9]*'))"
    )


def _datetime_head(separator: str) -> str:
    """The first 19 characters: 'YYYY-MM-DD', the separator, 'HH:MM:SS' (one GLOB over the prefix)."""
    return f"@c GLOB '{_YMD}{separator}{_HMS}*'"


def _offset_suffix() -> str:
    """After the 19 head characters: an optional fraction, then Z, ±HH:MM or ±HHMM."""
    cases = (("*Z", 1), ("*[+-][0-2][0-9]:[0-5][0-9]", 6), ("*[+-][0-2][0-9][0-5][0-9]", 5))
    whens = " ".join(f"WHEN @c GLOB '{glob}' THEN {_fraction_or_empty(cut)}" for glob, cut in cases)
    return f"CASE {whens} ELSE 0 END"


_EPOCH_S = f"@c BETWEEN {UNIX_S_MIN} AND {UNIX_S_MAX}"

#: Each format as a condition on a value already known to be of the listed storage class. Every
#: condition starts with a cheap gate (a character at a fixed place, a length) before any GLOB.
INTEGER_FORMATS = {
    "unix_s": _EPOCH_S,
    "unix_ms": f"@c BETWEEN {UNIX_MS_MIN} AND {UNIX_MS_MAX}",
    "bool01": "@c IN (0, 1)",
}
REAL_FORMATS = {"unix_s": _EPOCH_S}
#: The date and time text formats exclude each other, so they are tested as one CASE chain.
TEMPORAL_TEXT_FORMATS = {
    "date": f"length(@c) = 10 AND @c GLOB '{_YMD}'",
    "sql_datetime": f"substr(@c, 11, 1) = ' ' AND {_datetime_head(' ')} AND {_fraction_or_empty(0)}",
    "iso8601": f"substr(@c, 11, 1) = 'T' AND {_datetime_head('T')} AND {_fraction_or_empty(0)}",
    "iso8601_tz": f"length(@c) > 19 AND {_datetime_head('[T ]')} AND {_offset_suffix()}",
}
OTHER_TEXT_FORMATS = {
    "bool_text": "length(@c) <= 5 AND lower(@c) IN ('t', 'f', 'true', 'false', 'yes', 'no')",
    "json_object": "substr(@c, 1, 1) = '{' AND json_valid(@c)",
    "json_array": "substr(@c, 1, 1) = '[' AND json_valid(@c)",
    "uuid": f"substr(@c, 9, 1) = '-' AND @c GLOB '{_UUID}'",
    # '+', '-', '.' or a digit first, '.' or a digit last, no exponent, and SQLite's own whole-string
    # number test: ``+x`` has no affinity, so comparing it with a NUMERIC CAST converts it only if well formed.
    "decimal_text": "unicode(@c) BETWEEN 43 AND 57 AND unicode(substr(@c, -1)) BETWEEN 46 AND 57"
    " AND (+@c) = CAST(@c AS NUMERIC) AND instr(@c, 'e') = 0 AND instr(@c, 'E') = 0",
    "bool01_text": "@c IN ('0', '1')",
    "uuid_hex32": "length(@c) = 32 AND @c NOT GLOB '*[^0-9a-fA-F]*'",
}
#: Tested on every text value. SQLite's text functions stop at a NUL, so a text holding one counts
#: only as nul_text (and invalid_utf8 if so), never in a format judged on the part before the NUL.
HAS_NUL = "instr(CAST(@c AS BLOB), x'00') > 0"
ENCODING_FORMATS = {
    "nul_text": HAS_NUL,
    # A Python call on every text value: measured cheaper than any GLOB gate that would spare it.
    "invalid_utf8": f"{UTF8_FUNCTION}(CAST(@c AS BLOB))",
}
assert {*INTEGER_FORMATS, *REAL_FORMATS, *TEMPORAL_TEXT_FORMATS, *OTHER_TEXT_FORMATS, *ENCODING_FORMATS} == set(FORMATS)

#: Bit of each format, then of each storage class, in the per-value mask.
FORMAT_BIT = {name: 1 << i for i, name in enumerate(FORMATS)}
STORAGE_BIT = {cls: 1 << (len(FORMATS) + i) for i, cls in enumerate(STORAGE_CLASSES)}


def _bits(conditions: dict[str, str]) -> str:
    return " | ".join(f"(CASE WHEN {cond} THEN {FORMAT_BIT[name]} ELSE 0 END)" for name, cond in conditions.items())


def _mask_sql() -> str:
    """One integer per value: its storage class bit OR the bits of every format it matches.

    Dispatching on ``typeof`` once means a value is only tested against its own class's formats.
    """
    temporal = " ".join(f"WHEN {cond} THEN {FORMAT_BIT[name]}" for name, cond in TEMPORAL_TEXT_FORMATS.items())
    utf8 = _bits({"invalid_utf8": ENCODING_FORMATS["invalid_utf8"]})
    clean = f"(CASE WHEN substr(@c, 5, 1) <> '-' THEN 0 {temporal} ELSE 0 END) | {_bits(OTHER_TEXT_FORMATS)}"
    text = f"CASE WHEN {HAS_NUL} THEN {FORMAT_BIT['nul_text']} | {utf8} ELSE {clean} | {utf8} END"
    return (
        f"CASE typeof(@c) WHEN 'null' THEN {STORAGE_BIT['null']}"
        f" WHEN 'integer' THEN {STORAGE_BIT['integer']} | {_bits(INTEGER_FORMATS)}"
        f" WHEN 'real' THEN {STORAGE_BIT['real']} | {_bits(REAL_FORMATS)}"
        f" WHEN 'text' THEN {STORAGE_BIT['text']} | {text}"
        f" ELSE {STORAGE_BIT['blob']} END"
    )


MASK_SQL = _mask_sql()
#: Per column, the inner query yields the mask, the integer (for min/max) and the byte length.
INNER_SQL = (
    MASK_SQL,
    "CASE WHEN typeof(@c) = 'integer' THEN @c END",
    "CASE typeof(@c) WHEN 'text' THEN length(CAST(@c AS BLOB)) WHEN 'blob' THEN length(@c) END",
)
PER_COLUMN = len(STORAGE_CLASSES) + len(FORMATS) + 4
COLUMNS_PER_SCAN = (MAX_RESULT_COLUMNS - 2) // PER_COLUMN


def _outer_aggregates(i: int) -> list[str]:
    """Column ``i``'s aggregates over the inner query's ``m{i}``, ``n{i}``, ``l{i}``, in read-back order."""
    m, n, length = f"m{i}", f"n{i}", f"l{i}"
    exprs = [f"count(*) FILTER (WHERE {m} & {STORAGE_BIT[cls]})" for cls in STORAGE_CLASSES]
    exprs += [f"count(*) FILTER (WHERE {m} & {FORMAT_BIT[name]})" for name in FORMATS]
    exprs += [
        f"min({n})",
        f"max({n})",
        f"max({length}) FILTER (WHERE {m} & {STORAGE_BIT['text']})",
        f"max({length}) FILTER (WHERE {m} & {STORAGE_BIT['blob']})",
    ]
    return exprs


def _utf8_invalid(value: bytes | None) -> int:
    """1 when the bytes are not UTF-8 that PostgreSQL accepts (strict: no surrogates, no overlongs)."""
    if value is None:
        return 0
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return 1
    return 0


def _column_profile(name: str, values: Sequence[object]) -> ColumnProfile:
    def count(i: int) -> int:
        v = values[i]
        return int(v) if isinstance(v, int) else 0

    def maybe(i: int) -> int | None:
        v = values[i]
        return v if isinstance(v, int) else None

    n_storage, n_formats = len(STORAGE_CLASSES), len(FORMATS)
    storage = {cls: count(i) for i, cls in enumerate(STORAGE_CLASSES) if count(i)}
    formats = {f: count(n_storage + i) for i, f in enumerate(FORMATS) if count(n_storage + i)}
    base = n_storage + n_formats
    return ColumnProfile(
        name=name,
        storage=storage,
        formats=formats,
        min_integer=maybe(base),
        max_integer=maybe(base + 1),
        max_text_bytes=maybe(base + 2),
        max_blob_bytes=maybe(base + 3),
    )


def scan_sql(table: Table, columns: Sequence[Column]) -> str:
    """One pass over the table: the inner query classifies each value once, the outer one counts.

    ``LIMIT -1`` keeps SQLite from flattening the subquery (which would re-evaluate each mask in every
    aggregate that reads it): it runs as a co-routine, a row at a time, never materialised.
    """
    inner = ["NULL AS k"]
    if table.primary_key:
        inner[0] = " OR ".join(f"{quote_ident(c)} IS NULL" for c in table.primary_key) + " AS k"
    outer = ["count(*)", "count(*) FILTER (WHERE k)"]
    for i, col in enumerate(columns):
        quoted = quote_ident(col.name)
        # str.replace scans the template only, never the inserted name: a column named "@c" stays intact.
        inner += [f"{expr.replace('@c', quoted)} AS {alias}{i}" for expr, alias in zip(INNER_SQL, "mnl", strict=True)]
        outer += _outer_aggregates(i)
    source_table = f"main.{quote_ident(table.name)}"
    return f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM {source_table} LIMIT -1)"  # noqa: S608


def _database_path(conn: sqlite3.Connection) -> str:
    for _seq, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return str(file)
    return "source"


# --- The fast scan: one character per value, counted in Python ---------------------------------------
#
# Counting 21 flags per column with ``count(*) FILTER`` costs 30 aggregate steps per value, which is
# most of the time. Instead each value becomes ONE character naming its category (storage class
# plus formats; the categories are disjoint), each row one string (``char(code1, code2, ...)``), and
# each rowid chunk one ``group_concat`` of those strings: a single cheap aggregate step per row. Python
# then counts the characters of each column's slice of that string (``str.count``, a C loop). The
# formats are tested only where the value can have them: integers against the epoch ranges in one
# chain, text by one Python call that checks UTF-8 and NUL and names the first character's group, so
# that a value starting with a letter is never tested as a date, and only '{' or '[' reach json_valid.


class Category(msgspec.Struct, frozen=True):
    storage: str
    formats: frozenset[str]


#: Every category a value can fall in; the character of category ``i`` is ``chr(CODE_BASE + i)``.
CATEGORIES: tuple[Category, ...] = tuple(
    Category(cls, frozenset(fmts))
    for cls, fmts in (
        ("null", ()),
        ("integer", ()),
        ("integer", ("unix_s",)),
        ("integer", ("unix_ms",)),
        ("integer", ("bool01",)),
        ("real", ()),
        ("real", ("unix_s",)),
        ("blob", ()),
        ("text", ()),
        ("text", ("invalid_utf8",)),
        ("text", ("nul_text",)),
        ("text", ("nul_text", "invalid_utf8")),
        ("text", ("date",)),
        ("text", ("sql_datetime",)),
        ("text", ("iso8601",)),
        ("text", ("iso8601_tz",)),
        ("text", ("bool_text",)),
        ("text", ("json_object",)),
        ("text", ("json_array",)),
        ("text", ("uuid",)),
        ("text", ("decimal_text",)),
        ("text", ("decimal_text", "bool01_text")),
        ("text", ("decimal_text", "uuid_hex32")),
        ("text", ("uuid_hex32",)),
    )
)
CODE_BASE = 65  # 'A': every code is one ASCII character
_CODE = {(c.storage, c.formats): CODE_BASE + i for i, c in enumerate(CATEGORIES)}


TEXT_FUNCTION = "replicator_text_class"
#: ``replicator_text_class`` returns this for valid NUL-free text starting with '{' or '[': only
#: SQLite's own ``json_valid`` decides those (C, and exactly what SQLite's JSON functions accept).
JSON_CANDIDATE = 0

_B_YMD = rb"[0-9]{4}-[01][0-9]-[0-3][0-9]"
_B_HMS = rb"[0-2][0-9]:[0-5][0-9]:[0-6][0-9]"
_B_FRACTION = rb"(?:\.[0-9]+)?"
_B_HEX = rb"[0-9a-fA-F]"
#: The text formats as byte patterns, each tested only on pure-ASCII text of a plausible length and
#: first character (the GLOBs above say the same thing; these are what the fast scan runs).
#: One pattern for every date and instant: which groups matched names the format.
_TEMPORAL_RX = re.compile(_B_YMD + rb"(?:([T ])" + _B_HMS + _B_FRACTION + rb"(Z|[+-][0-2][0-9]:?[0-5][0-9])?)?")
#: The same pattern for ``str`` values (the snapshot's check of a guessed date-time column): group 1
#: is the date/time separator (None: a date), group 2 the offset (None: naive), as the profile reads them.
TEMPORAL_TEXT: Final = re.compile(_TEMPORAL_RX.pattern.decode("ascii"))
_UUID_RX = re.compile(rb"-".join(_B_HEX + b"{%d}" % n for n in (8, 4, 4, 4, 12)))
_HEX32_RX = re.compile(_B_HEX + rb"{32}")
_DECIMAL_RX = re.compile(rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_BOOL_WORDS = frozenset({b"t", b"f", b"true", b"false", b"yes", b"no"})
_DIGITS, _HEX_LETTERS, _SIGNS = frozenset(b"0123456789"), frozenset(b"abcdefABCDEF"), frozenset(b"+-.")
_BOOL_FIRST = frozenset(b"tTfFyYnN")


def _code(storage: str, *formats: str) -> int:
    return _CODE[(storage, frozenset(formats))]


_TEXT = _code("text")
_INVALID, _NUL, _NUL_INVALID = (
    _code("text", "invalid_utf8"),
    _code("text", "nul_text"),
    _code("text", "nul_text", "invalid_utf8"),
)
#: (separator, has offset) -> code
_TEMPORAL_CODES = {
    (None, False): _code("text", "date"),
    (b" ", False): _code("text", "sql_datetime"),
    (b"T", False): _code("text", "iso8601"),
    (b" ", True): _code("text", "iso8601_tz"),
    (b"T", True): _code("text", "iso8601_tz"),
}
_UUID_CODE, _HEX32_CODE, _BOOL_CODE = _code("text", "uuid"), _code("text", "uuid_hex32"), _code("text", "bool_text")
_DECIMAL, _DECIMAL_01, _DECIMAL_32 = (
    _code("text", "decimal_text"),
    _code("text", "decimal_text", "bool01_text"),
    _code("text", "decimal_text", "uuid_hex32"),
)


def _repeated(pattern: bytes) -> re.Pattern[bytes]:
    """``pattern`` for every value of a NUL-joined column at once."""
    return re.compile(rb"(?:" + pattern + rb")(?:\x00(?:" + pattern + rb"))*")


_B_DATETIME = _B_YMD + rb"[T ]" + _B_HMS + _B_FRACTION
#: Codes whose values can all be proven in one regex over the column (the first value decides which).
_WHOLE_COLUMN = {
    _code("text", "date"): _repeated(_B_YMD),
    _code("text", "sql_datetime"): _repeated(_B_YMD + b" " + _B_HMS + _B_FRACTION),
    _code("text", "iso8601"): _repeated(_B_YMD + b"T" + _B_HMS + _B_FRACTION),
    _code("text", "iso8601_tz"): _repeated(_B_DATETIME + rb"(?:Z|[+-][0-2][0-9]:?[0-5][0-9])"),
    _UUID_CODE: _repeated(rb"-".join(_B_HEX + b"{%d}" % n for n in (8, 4, 4, 4, 12))),
}


def _ascii_text_code(value: bytes) -> int:
    """The category of pure-ASCII, NUL-free text: only the formats its first character allows are tried."""
    first, n = value[0], len(value)
    if first in _DIGITS:
        if n >= 10 and value[4] == 45:  # 'YYYY-'
            match = _TEMPORAL_RX.fullmatch(value)
            return _TEMPORAL_CODES[(match[1], match[2] is not None)] if match else _TEXT
        if n == 36 and _UUID_RX.fullmatch(value):
            return _UUID_CODE
        if _DECIMAL_RX.fullmatch(value):
            if n == 1 and first in b"01":
                return _DECIMAL_01
            return _DECIMAL_32 if n == 32 and _HEX32_RX.fullmatch(value) else _DECIMAL
        return _HEX32_CODE if n == 32 and _HEX32_RX.fullmatch(value) else _TEXT
    if first in _SIGNS:
        return _DECIMAL if _DECIMAL_RX.fullmatch(value) else _TEXT
    if first in _BOOL_FIRST and n <= 5 and value.lower() in _BOOL_WORDS:
        return _BOOL_CODE
    if first in _HEX_LETTERS:
        if n == 36:
            return _UUID_CODE if _UUID_RX.fullmatch(value) else _TEXT
        return _HEX32_CODE if n == 32 and _HEX32_RX.fullmatch(value) else _TEXT
    return JSON_CANDIDATE if first in (123, 91) else _TEXT  # '{' '['


def _text_class(value: bytes | None) -> int:
    """The category code of one TEXT value (its bytes): UTF-8 (strict, as PostgreSQL) and NUL first,
    since such text counts in no other format; JSON_CANDIDATE when only json_valid can decide."""
    if not value:
        return _TEXT
    nul = 0 in value
    if value.isascii():
        return _NUL if nul else _ascii_text_code(value)
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return _NUL_INVALID if nul else _INVALID
    if nul:
        return _NUL
    return JSON_CANDIDATE if value[0] in (123, 91) else _TEXT  # non-ASCII text can only be JSON


def _text_code_sql() -> str:
    """The category of a value known to be TEXT: one Python call; json_valid only for '{' and '['."""
    obj, arr = _code("text", "json_object"), _code("text", "json_array")
    json = f"CASE WHEN json_valid(@c) THEN CASE WHEN substr(@c, 1, 1) = '{{' THEN {obj} ELSE {arr} END ELSE {_TEXT} END"
    return f"coalesce(nullif({TEXT_FUNCTION}(CAST(@c AS BLOB)), {JSON_CANDIDATE}), {json})"


def _integer_code_sql() -> str:
    """Epoch seconds, epoch milliseconds and 0/1 exclude each other: one ordered chain of comparisons."""
    return (
        f"CASE WHEN @c < {UNIX_S_MIN} THEN CASE WHEN @c BETWEEN 0 AND 1 THEN {_code('integer', 'bool01')}"
        f" ELSE {_code('integer')} END"
        f" WHEN @c <= {UNIX_S_MAX} THEN {_code('integer', 'unix_s')}"
        f" WHEN @c BETWEEN {UNIX_MS_MIN} AND {UNIX_MS_MAX} THEN {_code('integer', 'unix_ms')}"
        f" ELSE {_code('integer')} END"
    )


_CLASS_SQL = {
    "null": str(_code("null")),
    "integer": _integer_code_sql(),
    "real": f"CASE WHEN {_EPOCH_S} THEN {_code('real', 'unix_s')} ELSE {_code('real')} END",
    "text": _text_code_sql(),
    "blob": str(_code("blob")),
}
_PLAIN_SQL = {cls: str(_code(cls)) for cls in STORAGE_CLASSES}
_NO_PLAIN: Plain = {}
#: The storage class a column most likely holds goes first in its ``CASE typeof()`` (the last is the ELSE).
_CLASS_ORDER = {
    Affinity.INTEGER: ("integer", "null", "real", "text", "blob"),
    Affinity.NUMERIC: ("integer", "real", "null", "text", "blob"),
    Affinity.REAL: ("real", "null", "integer", "text", "blob"),
    Affinity.TEXT: ("text", "null", "integer", "real", "blob"),
}


#: A TEXT value of a bulk column: classified in Python from the chunk's concatenated text (not a category).
TEXT_PENDING = CODE_BASE + len(CATEGORIES)


def is_bulk(column: Column) -> bool:
    """Columns that may well hold text (all but INTEGER, REAL and declared BLOB): their text is read in
    bulk. NUMERIC affinity is here because DATE, DATETIME, TIMESTAMP and BOOLEAN columns hold text."""
    if column.affinity in (Affinity.INTEGER, Affinity.REAL):
        return False
    return column.affinity is not Affinity.BLOB or not column.declared_type.strip()


Plain = Mapping[str, frozenset[str]]
"""Per column name, the storage classes counted without their formats (see ``profile_table``)."""
#: Every class of a column plain: its storage classes are all that is counted.
STORAGE_ONLY: Final = frozenset(STORAGE_CLASSES)
NUMBERS_ONLY: Final = frozenset({"integer", "real"})


def _bulk(column: Column, plain: Plain) -> bool:
    return "text" not in plain.get(column.name, ()) and is_bulk(column)


def code_sql(column: Column, *, bulk: bool = False, plain: frozenset[str] = frozenset()) -> str:
    """The category code (an integer, a character's code point) of one value of ``column``.

    With ``bulk``, a TEXT value is only marked TEXT_PENDING: its bytes come in the chunk's
    concatenation (``bulk_text_sql``) and Python classifies them all at once. Values of the storage
    classes in ``plain`` are coded by class only (no formats): the type choice needs nothing more.
    """
    order = _CLASS_ORDER.get(column.affinity)
    if order is None:  # BLOB affinity: declared BLOB holds blobs; no type at all, anything
        typed = "BLOB" in column.declared_type.upper()
        order = ("blob", "null", "text", "integer", "real") if typed else ("null", "text", "integer", "real", "blob")
    sql = {**_CLASS_SQL, "text": str(TEXT_PENDING)} if bulk else _CLASS_SQL
    if plain:
        sql = {**sql, **{cls: _PLAIN_SQL[cls] for cls in plain}}
    whens = " ".join(f"WHEN '{cls}' THEN {sql[cls]}" for cls in order[:-1])
    return f"CASE typeof(@c) {whens} ELSE {sql[order[-1]]} END".replace("@c", quote_ident(column.name))


def bulk_text_sql(column: Column) -> tuple[str, str, str]:
    """The chunk's TEXT values of ``column`` as one BLOB, NUL-separated; json_valid of the values
    starting with '{' (low 32 bits) and '[' (high bits), the one test left to SQLite; and (TEXT
    affinity, where only text and blobs have a length) the total of SQLite's ``length()``."""
    q = quote_ident(column.name)
    data = f"CAST(group_concat(CASE WHEN typeof({q}) = 'text' THEN CAST({q} AS BLOB) END, x'00') AS BLOB)"
    # Four 16-bit counts in one sum: values starting with '{', those json_valid, same for '['.
    valid = f"(typeof({q}) = 'text' AND json_valid({q}))"
    json = f"sum(CASE unicode({q}) WHEN 123 THEN 1 + ({valid} << 16) WHEN 91 THEN {1 << 32} + ({valid} << 48) END)"
    if column.affinity is not Affinity.TEXT:  # numbers would be turned into text by unicode()
        json = f"sum(CASE WHEN typeof({q}) = 'text' THEN CASE unicode({q}) WHEN 123 THEN 1 + (json_valid({q}) << 16)"
        json += f" WHEN 91 THEN {1 << 32} + (json_valid({q}) << 48) END END)"
    chars = f"sum(length({q}))" if column.affinity is Affinity.TEXT else "NULL"
    return data, json, chars


_OBJECT_CH, _ARRAY_CH = chr(_code("text", "json_object")), chr(_code("text", "json_array"))
_TEXT_CH, _PENDING_CH, _BLOB_CH = chr(_TEXT), chr(TEXT_PENDING), chr(_code("blob"))


#: Where a value that may have a format starts (for valid NUL-free text; see _ascii_text_code): a
#: digit, sign, dot or bracket first; 8 hex digits and a dash (UUID); exactly 32 hex digits; a
#: boolean word. A column where this never matches is plain text throughout.
_FORMAT_HEAD = rb"(?:[0-9+.\-{\[]|[0-9a-fA-F]{8}-|[0-9a-fA-F]{32}(?:\x00|$)|(?i:t|f|true|false|yes|no)(?:\x00|$))"
#: The first value is matched in place; the others are found after a NUL (a literal the regex
#: engine scans for quickly, where an alternation with ``^`` would be tried at every byte).
_FORMAT_FIRST, _FORMAT_NEXT = re.compile(_FORMAT_HEAD), re.compile(rb"\x00" + _FORMAT_HEAD)


def bulk_text_counts(
    data: bytes | None, values: int, json: int, chars: int | None = None, rows: int = 0
) -> dict[str, int] | None:
    """Categories of ``values`` TEXT values joined by NULs in ``data``; None when the fast path cannot decide.

    The number of NULs proves that no value holds one (then the split is exact), one ``decode`` that
    every value is valid UTF-8 (a NUL cannot complete a sequence, so the join is valid only if each
    part is). Then the cheapest proof that fits: a JSON column counts its first characters, a column
    whose first value has a format is matched by one regex, a column where no value starts like a
    format is plain text; else each distinct value is classified once. Anything else goes back to
    the per-value path.
    """
    data = data or b""
    if rows > MAX_CHUNK_ROWS:  # the 16-bit JSON counts may have overflowed (an unranged chunk)
        return None
    ascii_only = data.isascii()
    if not ascii_only:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    # ``chars``: SQLite's length() of the values, which stops at a NUL: for ASCII, the bytes minus
    # the separators exactly when no value holds a NUL (no pass over the bytes needed).
    nul_free = ascii_only and chars == len(data) - (values - 1)
    end = data.find(0)
    first = _text_class(data if end < 0 else data[:end])
    counts: dict[str, int] = {}
    objects = arrays = 0
    if first in (JSON_CANDIDATE, _TEXT, *_WHOLE_COLUMN):  # C passes over the whole column only
        if not nul_free and data.count(0) != values - 1:
            return None
        starts = (json & 0xFFFF, (json >> 32) & 0xFFFF)  # values starting with '{', with '['
        if first == JSON_CANDIDATE:
            if sum(starts) == values:  # every value is a JSON candidate: json_valid said the rest
                objects, arrays = starts
        elif first == _TEXT:
            if _FORMAT_FIRST.match(data) is None and _FORMAT_NEXT.search(data) is None:
                counts[_TEXT_CH] = values
        elif _WHOLE_COLUMN[first].fullmatch(data):
            counts[chr(first)] = values
    if not counts and objects + arrays < values:
        parts = data.split(b"\x00")
        if len(parts) != values:
            return None
        for value, n in Counter(parts).items():
            code = _text_class(value)
            if code != JSON_CANDIDATE:
                ch = chr(code)
                counts[ch] = counts.get(ch, 0) + n
            elif value[0] == 123:
                objects += n
            else:
                arrays += n
    valid_objects, valid_arrays = (json >> 16) & 0xFFFF, json >> 48
    for ch, n in (
        (_OBJECT_CH, valid_objects),
        (_ARRAY_CH, valid_arrays),
        (_TEXT_CH, objects + arrays - valid_objects - valid_arrays),
    ):
        if n:
            counts[ch] = counts.get(ch, 0) + n
    return counts


#: Extremes read in the same scan, chosen by affinity (what the column almost always holds). Raw
#: ``min(c)`` is the least integer only when the column holds nothing but integers and NULLs; a
#: column whose values prove the guess wrong gets the exact aggregates in one more scan.
_EXACT = {
    "min_integer": "min(CASE WHEN typeof(@c) = 'integer' THEN @c END)",
    "max_integer": "max(CASE WHEN typeof(@c) = 'integer' THEN @c END)",
    "max_text_bytes": "max(CASE WHEN typeof(@c) = 'text' THEN length(CAST(@c AS BLOB)) END)",
    "max_blob_bytes": "max(CASE WHEN typeof(@c) = 'blob' THEN length(@c) END)",
}
_RAW_INTEGER = {"min_integer": "min(@c)", "max_integer": "max(@c)"}
_RAW_LENGTH = "max(length(CAST(@c AS BLOB)))"
_EXTREME_CLASS = {
    "min_integer": "integer",
    "max_integer": "integer",
    "max_text_bytes": "text",
    "max_blob_bytes": "blob",
}


class _Extreme(msgspec.Struct, frozen=True):
    """One aggregate of the scan: which extremes it yields, and the only classes under which it is exact."""

    sql: str
    names: tuple[str, ...]
    valid_if: frozenset[str]


def _extremes(column: Column, table: Table, plain: Plain = _NO_PLAIN) -> list[_Extreme]:
    """The extremes one chunk statement reads for ``column`` (the rowid's come from its index);
    none for a column profiled by storage class only (its type choice reads no extreme)."""
    q = quote_ident(column.name)
    if column.name == table.rowid_alias or plain.get(column.name) == STORAGE_ONLY:
        return []
    if column.affinity is Affinity.INTEGER:
        ints = frozenset({"null", "integer"})
        return [_Extreme(sql.replace("@c", q), (name,), ints) for name, sql in _RAW_INTEGER.items()]
    if column.affinity is Affinity.TEXT:
        return [_Extreme(_RAW_LENGTH.replace("@c", q), ("max_text_bytes",), frozenset({"null", "text"}))]
    if column.affinity is Affinity.REAL:
        return []
    if column.affinity is Affinity.BLOB and column.declared_type.strip():  # declared BLOB
        return [_Extreme(f"max(length({q}))", ("max_blob_bytes",), frozenset({"null", "blob"}))]
    names = ["min_integer", "max_integer", "max_text_bytes"]
    if column.affinity is Affinity.BLOB:
        names.append("max_blob_bytes")
    return [_Extreme(_EXACT[n].replace("@c", q), (n,), frozenset(STORAGE_CLASSES)) for n in names]


#: SQLite's default SQLITE_MAX_FUNCTION_ARG is 127: ``char()`` takes the codes in groups.
CHAR_ARGS = 100
#: Rows per chunk aim at this many characters (one per value) in one ``group_concat``...
CHUNK_CHARS = 1_000_000
#: ... and at about this many bytes of row data (the bulk text of a chunk is at most that).
CHUNK_BYTES = 16 * 2**20
MIN_CHUNK_ROWS = 256
#: At most this many rows per chunk: the JSON counts of a chunk are packed 16 bits each.
MAX_CHUNK_ROWS = 65535
#: Beyond this many equal rowid ranges, chunk boundaries are found by stepping over the rowids.
MAX_CHUNKS = 1024
_FILE_BYTES_SQL = "SELECT p.page_size * c.page_count FROM pragma_page_size AS p, pragma_page_count AS c"


def _rowid_name(table: Table) -> str | None:
    """A name that reaches the rowid in this table, or None (WITHOUT ROWID, or every alias shadowed)."""
    if table.without_rowid:
        return None
    if table.rowid_alias:
        return quote_ident(table.rowid_alias)
    names = {c.name.lower() for c in table.columns}
    return next((n for n in ("rowid", "_rowid_", "oid") if n not in names), None)


class Chunk(msgspec.Struct, frozen=True):
    """One statement's share of a table: rowids in ``[low, high]``, or the whole table when ``low`` is None."""

    table: str
    low: int | None = None
    high: int | None = None


def chunk_sql(
    table: Table,
    columns: Sequence[Column],
    *,
    ranged: bool,
    bulk: bool = True,
    null_keys: bool = True,
    plain: Plain = _NO_PLAIN,
) -> tuple[str, list[_Extreme]]:
    """The statement for one chunk: the codes of every row as one string, each bulk column's text and
    JSON counts, then the extremes and the NULL-key count. ``bulk=False``: every value coded in SQL.
    Columns named in ``plain`` get their storage class only (see ``profile_table``)."""
    codes = [
        str(_code("integer"))  # the rowid itself: always an integer
        if c.name == table.rowid_alias
        else code_sql(c, bulk=bulk and _bulk(c, plain), plain=plain.get(c.name, frozenset()))
        for c in columns
    ]
    row = " || ".join(f"char({', '.join(codes[i : i + CHAR_ARGS])})" for i in range(0, len(codes), CHAR_ARGS))
    extremes = [e for c in columns for e in _extremes(c, table, plain) if e.sql]
    exprs = [f"group_concat({row}, '')"]
    if bulk:
        exprs += [sql for c in columns if _bulk(c, plain) for sql in bulk_text_sql(c)]
    exprs += [e.sql for e in extremes]
    if null_keys and table.primary_key and not table.rowid_alias:
        exprs.append("sum(" + " OR ".join(f"{quote_ident(c)} IS NULL" for c in table.primary_key) + ")")
    where = ""
    if ranged:
        rowid = _rowid_name(table)
        where = f" WHERE {rowid} BETWEEN ? AND ?"
    return f"SELECT {', '.join(exprs)} FROM main.{quote_ident(table.name)}{where}", extremes  # noqa: S608


def chunks(conn: sqlite3.Connection, table: Table) -> list[Chunk]:
    """Rowid ranges of about CHUNK_CHARS values and CHUNK_BYTES bytes each, or the whole table."""
    rowid = _rowid_name(table)
    if rowid is None:
        return [Chunk(table.name)]
    try:
        return _chunks(conn, table, rowid)
    except sqlite3.Error as exc:
        raise source.translate(exc, _database_path(conn)) from None


def _chunks(conn: sqlite3.Connection, table: Table, rowid: str) -> list[Chunk]:
    query = f"SELECT min({rowid}), max({rowid}) FROM main.{quote_ident(table.name)}"  # noqa: S608
    low, high = conn.execute(query).fetchone()
    if low is None:
        return [Chunk(table.name)]
    span = int(high) - int(low) + 1
    # Bytes per row: at most the whole file over this table's rowid span (other tables count too,
    # so this errs towards smaller chunks); the text of a chunk stays near CHUNK_BYTES.
    file_bytes = int(conn.execute(_FILE_BYTES_SQL).fetchone()[0])
    width = max(1, len(table.columns))

    def rows_per_chunk(rows: int) -> int:
        by_bytes = CHUNK_BYTES // max(1, file_bytes // max(1, rows))
        return max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, CHUNK_CHARS // width, by_bytes))

    per_chunk = rows_per_chunk(span)
    count = -(-span // per_chunk)
    if count <= MAX_CHUNKS:  # dense enough: equal rowid ranges, no extra read
        step = -(-span // count)
        bounds = [int(low) + i * step for i in range(count)] + [int(high) + 1]
    else:  # sparse rowids (or a huge table): exact boundaries, stepping over the rowids
        table_sql = f"main.{quote_ident(table.name)}"
        per_chunk = rows_per_chunk(int(conn.execute(f"SELECT count(*) FROM {table_sql}").fetchone()[0]))  # noqa: S608
        bounds = [int(low)]
        step_sql = f"SELECT {rowid} FROM {table_sql} WHERE {rowid} >= ? ORDER BY {rowid} LIMIT 1 OFFSET ?"  # noqa: S608
        while (row := conn.execute(step_sql, (bounds[-1], per_chunk)).fetchone()) is not None:
            bounds.append(int(row[0]))
        bounds.append(int(high) + 1)
    out = [Chunk(table.name, lo, hi - 1) for lo, hi in itertools.pairwise(bounds) if lo < hi]
    # Rows added beyond either end while we read belong to the first or the last chunk.
    out[0] = Chunk(table.name, -(2**63), out[0].high)
    out[-1] = Chunk(table.name, out[-1].low, 2**63 - 1)
    return out


class ChunkResult(msgspec.Struct):
    rows: int = 0
    null_key_rows: int = 0
    counts: list[dict[str, int]] = msgspec.field(default_factory=list)
    extremes: list[dict[str, int | None]] = msgspec.field(default_factory=list)


def _count_chars(text: str) -> dict[str, int]:
    """How often each character occurs, in as many C passes as there are distinct characters."""
    counts: dict[str, int] = {}
    while text:
        ch = text[0]
        n = text.count(ch)
        counts[ch] = n
        if n == len(text):
            break
        text = text.replace(ch, "")
    return counts


def _execute_chunk(conn: sqlite3.Connection, table: Table, chunk: Chunk, sql: str) -> tuple[object, ...] | None:
    """The chunk's one result row; None when it does not fit in one string (SQLITE_TOOBIG)."""
    params = () if chunk.low is None else (chunk.low, chunk.high)
    try:
        return tuple(conn.execute(sql, params).fetchone())
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_TOOBIG:
            raise source.translate(exc, _database_path(conn)) from None
        return None


def column_groups(table: Table, plain: Plain = _NO_PLAIN) -> list[list[Column]]:
    """The columns in groups whose statement stays under SQLite's 2000 result columns (one group mostly)."""
    groups: list[list[Column]] = [[]]
    used = 2
    for column in table.columns:
        cost = (3 if _bulk(column, plain) else 0) + sum(1 for e in _extremes(column, table, plain) if e.sql)
        if groups[-1] and used + cost > MAX_RESULT_COLUMNS:
            groups.append([])
            used = 2
        groups[-1].append(column)
        used += cost
    return groups


def scan_chunk(conn: sqlite3.Connection, table: Table, chunk: Chunk, plain: Plain = _NO_PLAIN) -> ChunkResult:
    """Read one chunk: per column, how many values of each category and the extremes the scan could take."""
    groups = column_groups(table, plain)
    parts = [_scan_group(conn, table, chunk, group, null_keys=i == 0, plain=plain) for i, group in enumerate(groups)]
    if any(part is None for part in parts):
        if chunk.low is None or chunk.high is None or chunk.low >= chunk.high:
            raise TooBig(table.name)
        # More rows or text in this range than one string holds (rowids or sizes guessed wrong): halve it.
        middle = chunk.low + (chunk.high - chunk.low) // 2
        halves = (Chunk(chunk.table, chunk.low, middle), Chunk(chunk.table, middle + 1, chunk.high))
        return combine([scan_chunk(conn, table, half, plain) for half in halves])
    found = [part for part in parts if part is not None]
    out = ChunkResult(rows=found[0].rows, null_key_rows=found[0].null_key_rows)
    for part in found:
        out.counts += part.counts
        out.extremes += part.extremes
    return out


def _scan_group(
    conn: sqlite3.Connection,
    table: Table,
    chunk: Chunk,
    columns: list[Column],
    *,
    null_keys: bool,
    plain: Plain = _NO_PLAIN,
) -> ChunkResult | None:
    sql, _ = chunk_sql(table, columns, ranged=chunk.low is not None, null_keys=null_keys, plain=plain)
    result = _execute_chunk(conn, table, chunk, sql)
    if result is None:
        return None
    text = str(result[0] or "")
    width = len(columns)
    out = ChunkResult(rows=len(text) // width if width else 0)
    out.counts = [_count_chars(text[i::width]) for i in range(width)]
    values = iter(result[1:])
    exact: list[int] = []
    out.extremes = [{} for _ in columns]
    for i, column in enumerate(columns):
        if not _bulk(column, plain):
            continue
        data, json, chars = next(values), next(values), next(values)
        pending = out.counts[i].pop(_PENDING_CH, 0)
        if not pending:
            continue
        counts = bulk_text_counts(
            data if isinstance(data, bytes) else None,
            pending,
            int(cast(int, json or 0)),
            # a blob's length() would count too: trust the sum only when the chunk has none here
            chars if isinstance(chars, int) and _BLOB_CH not in out.counts[i] else None,
            out.rows,
        )
        if counts is None:
            exact.append(i)
            continue
        for ch, n in counts.items():
            out.counts[i][ch] = out.counts[i].get(ch, 0) + n
    for i, column in enumerate(columns):
        for extreme in _extremes(column, table, plain):
            if extreme.sql:
                value = next(values)
                for name in extreme.names:
                    out.extremes[i][name] = value if isinstance(value, int) else None
    if null_keys and table.primary_key and not table.rowid_alias:
        out.null_key_rows = int(cast(int, next(values) or 0))
    if exact:
        # Text with a NUL or invalid UTF-8 in this chunk: these columns again, each value coded in SQL.
        again = _execute_chunk(conn, table, chunk, exact_sql(table, [columns[i] for i in exact], chunk))
        if again is None:
            return None
        codes = str(again[0] or "")
        for j, i in enumerate(exact):
            out.counts[i] = _count_chars(codes[j :: len(exact)])
    return out


def exact_sql(table: Table, columns: Sequence[Column], chunk: Chunk) -> str:
    """Every value of ``columns`` coded in SQL (a Python call per TEXT value)."""
    codes = [code_sql(c) for c in columns]
    row = " || ".join(f"char({', '.join(codes[i : i + CHAR_ARGS])})" for i in range(0, len(codes), CHAR_ARGS))
    exprs = [f"group_concat({row}, '')"]
    where = f" WHERE {_rowid_name(table)} BETWEEN ? AND ?" if chunk.low is not None else ""
    return f"SELECT {', '.join(exprs)} FROM main.{quote_ident(table.name)}{where}"  # noqa: S608


def _merge_extreme(name: str, a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b) if name.startswith("min") else max(a, b)


def combine(results: Sequence[ChunkResult]) -> ChunkResult:
    """Several chunks of one table as one."""
    out = ChunkResult(rows=sum(r.rows for r in results), null_key_rows=sum(r.null_key_rows for r in results))
    width = max((len(r.counts) for r in results), default=0)
    for i in range(width):
        counts: dict[str, int] = {}
        extremes: dict[str, int | None] = {}
        for r in results:
            for ch, n in r.counts[i].items():
                counts[ch] = counts.get(ch, 0) + n
            for name, value in r.extremes[i].items():
                extremes[name] = _merge_extreme(name, extremes.get(name), value)
        out.counts.append(counts)
        out.extremes.append(extremes)
    return out


class TooBig(Exception):
    """A chunk that cannot be split further does not fit in one string (SQLITE_TOOBIG)."""


def finish_profile(
    conn: sqlite3.Connection, table: Table, results: Sequence[ChunkResult], plain: Plain = _NO_PLAIN
) -> TableProfile:
    """Add up the chunks; columns whose values defeated the affinity guess get exact extremes in one scan."""
    columns = list(table.columns)
    total = combine(results)
    rows, null_keys = total.rows, total.null_key_rows
    merged: list[tuple[dict[str, int], dict[str, int], dict[str, int | None]]] = []
    missing: list[tuple[int, str]] = []
    for i, column in enumerate(columns):
        storage: dict[str, int] = {}
        formats: dict[str, int] = {}
        for ch, n in total.counts[i].items():
            cat = CATEGORIES[ord(ch) - CODE_BASE]
            storage[cat.storage] = storage.get(cat.storage, 0) + n
            for f in cat.formats:
                formats[f] = formats.get(f, 0) + n
        classes = frozenset(storage)
        extremes: dict[str, int | None] = {}
        taken = {
            name: extreme.valid_if
            for extreme in _extremes(column, table)
            for name in extreme.names
            if classes <= extreme.valid_if
        }
        for name in _EXACT:
            if _EXTREME_CLASS[name] not in storage or plain.get(column.name) == STORAGE_ONLY:
                extremes[name] = None
            elif column.name == table.rowid_alias:  # from the table's b-tree: two seeks
                bound = "min" if name == "min_integer" else "max"
                query = f"SELECT {bound}({quote_ident(column.name)}) FROM main.{quote_ident(table.name)}"  # noqa: S608
                try:
                    extremes[name] = int(conn.execute(query).fetchone()[0])
                except sqlite3.Error as exc:
                    raise source.translate(exc, _database_path(conn)) from None
            elif name in taken:
                extremes[name] = total.extremes[i].get(name)
            else:
                missing.append((i, name))
        merged.append((storage, formats, extremes))
    if missing:
        exprs = [_EXACT[name].replace("@c", quote_ident(columns[i].name)) for i, name in missing]
        query = f"SELECT {', '.join(exprs)} FROM main.{quote_ident(table.name)}"  # noqa: S608
        try:
            exact = conn.execute(query).fetchone()
        except sqlite3.Error as exc:
            raise source.translate(exc, _database_path(conn)) from None
        for (i, name), value in zip(missing, exact, strict=True):
            merged[i][2][name] = value if isinstance(value, int) else None
    profiles = tuple(
        ColumnProfile(
            name=column.name,
            storage=dict(sorted(storage.items(), key=lambda kv: STORAGE_CLASSES.index(kv[0]))),
            formats=dict(sorted(formats.items(), key=lambda kv: FORMATS.index(kv[0]))),
            min_integer=extremes["min_integer"],
            max_integer=extremes["max_integer"],
            max_text_bytes=extremes["max_text_bytes"],
            max_blob_bytes=extremes["max_blob_bytes"],
        )
        for column, (storage, formats, extremes) in zip(columns, merged, strict=True)
    )
    return TableProfile(name=table.name, rows=rows, columns=profiles, null_key_rows=null_keys)


def register(conn: sqlite3.Connection) -> None:
    """The Python functions the scans call (per connection)."""
    conn.create_function(TEXT_FUNCTION, 1, _text_class, deterministic=True)
    conn.create_function(UTF8_FUNCTION, 1, _utf8_invalid, deterministic=True)


def profile_table(
    conn: sqlite3.Connection, table: Table | str, *, plain: Plain = _NO_PLAIN, sample: int | None = None
) -> TableProfile:
    """Measure every column of ``table``: one statement per rowid chunk, counted in Python.

    ``table`` is a ``triggers.schema.Table`` (or a name, read from the schema). Runs in whatever
    transaction the caller holds (one point in time); in autocommit each chunk is its own short read.
    ``plain`` names columns whose values of some storage classes are counted by class only, without
    formats (so a text class in it means no NUL or UTF-8 counts either; a column plain in every
    class gets no extremes either): create mode's type choice
    for a TEXT or BLOB column reads nothing else, nor does an INTEGER column's for its numbers, and
    proving every value's formats is most of a profile's cost (``typemap.plain_classes``).
    ``sample``: only the rows among the first ``sample`` rowids (the snapshot's guess, which its
    load then verifies row by row; see ``replicator.load.snapshot.guess_profile``).
    """
    if isinstance(table, str):
        table = read_schema(conn).table(table)
    logger = log.get("profile", table=table.name)
    started = time.perf_counter()
    register(conn)
    parts = chunks(conn, table) if sample is None else _first_rows(conn, table, sample)
    try:
        results = [scan_chunk(conn, table, part, plain) for part in parts]
    except TooBig:
        return legacy_profile_table(conn, table)
    prof = finish_profile(conn, table, results, plain)
    logger.debug(
        "profiled", rows=prof.rows, columns=len(table.columns), chunks=len(parts), seconds=time.perf_counter() - started
    )
    return prof


def _first_rows(conn: sqlite3.Connection, table: Table, rows: int) -> list[Chunk]:
    """One chunk of the ``rows`` lowest rowids (a sample; the whole table when it has no rowid)."""
    rowid = _rowid_name(table)
    if rowid is None:
        return [Chunk(table.name)]
    try:
        (low,) = conn.execute(f"SELECT min({rowid}) FROM main.{quote_ident(table.name)}").fetchone()  # noqa: S608 - quoted
    except sqlite3.Error as exc:
        raise source.translate(exc, _database_path(conn)) from None
    if low is None:
        return [Chunk(table.name)]
    return [Chunk(table.name, int(low), int(low) + rows - 1)]


def legacy_profile_table(conn: sqlite3.Connection, table: Table) -> TableProfile:
    """The aggregate-per-format scan (``scan_sql``): no string per chunk, for a WITHOUT ROWID table too big for one."""
    register(conn)
    columns = list(table.columns)
    parts = [columns[i : i + COLUMNS_PER_SCAN] for i in range(0, len(columns), COLUMNS_PER_SCAN)] or [[]]
    profiles: list[ColumnProfile] = []
    rows = null_key_rows = 0
    for part in parts:
        try:
            result = conn.execute(scan_sql(table, part)).fetchone()
        except sqlite3.Error as exc:
            raise source.translate(exc, _database_path(conn)) from None
        rows, null_key_rows = int(result[0]), int(result[1] or 0)
        for i, col in enumerate(part):
            start = 2 + i * PER_COLUMN
            profiles.append(_column_profile(col.name, result[start : start + PER_COLUMN]))
    return TableProfile(name=table.name, rows=rows, columns=tuple(profiles), null_key_rows=null_key_rows)
