"""The fast scan's categories: each value as ONE character naming its storage class and formats.

Counting 21 flags per column with ``count(*) FILTER`` costs 30 aggregate steps per value, which is
most of the time. Instead each value becomes ONE character naming its category (storage class
plus formats; the categories are disjoint), each row one string (``char(code1, code2, ...)``), and
each rowid chunk one ``group_concat`` of those strings: a single cheap aggregate step per row. Python
then counts the characters of each column's slice of that string (``str.count``, a C loop). The
formats are tested only where the value can have them: integers against the epoch ranges in one
chain, text by one Python call that checks UTF-8 and NUL and names the first character's group, so
that a value starting with a letter is never tested as a date, and only '{' or '[' reach json_valid.

Here: the categories and their codes, each value's code in SQL (``code_sql``), and the Python side
that classifies TEXT (``text_class``, registered in SQLite as ``TEXT_FUNCTION``; ``bulk_text_counts``
for a whole chunk's text at once). ``replicator.plan.chunkscan`` puts them into one statement per chunk.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Final

import msgspec

from replicator.plan.formatsql import EPOCH_S
from replicator.plan.profile import STORAGE_CLASSES, UNIX_MS_MAX, UNIX_MS_MIN, UNIX_S_MAX, UNIX_S_MIN, Plain
from triggers.schema import Affinity, Column, quote_ident


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
#: first character (the GLOBs in ``formatsql`` say the same thing; these are what the fast scan runs).
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


def category_code(storage: str, *formats: str) -> int:
    return _CODE[(storage, frozenset(formats))]


_TEXT = category_code("text")
_INVALID, _NUL, _NUL_INVALID = (
    category_code("text", "invalid_utf8"),
    category_code("text", "nul_text"),
    category_code("text", "nul_text", "invalid_utf8"),
)
#: (separator, has offset) -> code
_TEMPORAL_CODES = {
    (None, False): category_code("text", "date"),
    (b" ", False): category_code("text", "sql_datetime"),
    (b"T", False): category_code("text", "iso8601"),
    (b" ", True): category_code("text", "iso8601_tz"),
    (b"T", True): category_code("text", "iso8601_tz"),
}
_UUID_CODE, _HEX32_CODE, _BOOL_CODE = (
    category_code("text", "uuid"),
    category_code("text", "uuid_hex32"),
    category_code("text", "bool_text"),
)
_DECIMAL, _DECIMAL_01, _DECIMAL_32 = (
    category_code("text", "decimal_text"),
    category_code("text", "decimal_text", "bool01_text"),
    category_code("text", "decimal_text", "uuid_hex32"),
)


def _repeated(pattern: bytes) -> re.Pattern[bytes]:
    """``pattern`` for every value of a NUL-joined column at once."""
    return re.compile(rb"(?:" + pattern + rb")(?:\x00(?:" + pattern + rb"))*")


_B_DATETIME = _B_YMD + rb"[T ]" + _B_HMS + _B_FRACTION
#: Codes whose values can all be proven in one regex over the column (the first value decides which).
_WHOLE_COLUMN = {
    category_code("text", "date"): _repeated(_B_YMD),
    category_code("text", "sql_datetime"): _repeated(_B_YMD + b" " + _B_HMS + _B_FRACTION),
    category_code("text", "iso8601"): _repeated(_B_YMD + b"T" + _B_HMS + _B_FRACTION),
    category_code("text", "iso8601_tz"): _repeated(_B_DATETIME + rb"(?:Z|[+-][0-2][0-9]:?[0-5][0-9])"),
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


def text_class(value: bytes | None) -> int:
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
    obj, arr = category_code("text", "json_object"), category_code("text", "json_array")
    json = f"CASE WHEN json_valid(@c) THEN CASE WHEN substr(@c, 1, 1) = '{{' THEN {obj} ELSE {arr} END ELSE {_TEXT} END"
    return f"coalesce(nullif({TEXT_FUNCTION}(CAST(@c AS BLOB)), {JSON_CANDIDATE}), {json})"


def _integer_code_sql() -> str:
    """Epoch seconds, epoch milliseconds and 0/1 exclude each other: one ordered chain of comparisons."""
    return (
        f"CASE WHEN @c < {UNIX_S_MIN} THEN CASE WHEN @c BETWEEN 0 AND 1 THEN {category_code('integer', 'bool01')}"
        f" ELSE {category_code('integer')} END"
        f" WHEN @c <= {UNIX_S_MAX} THEN {category_code('integer', 'unix_s')}"
        f" WHEN @c BETWEEN {UNIX_MS_MIN} AND {UNIX_MS_MAX} THEN {category_code('integer', 'unix_ms')}"
        f" ELSE {category_code('integer')} END"
    )


_CLASS_SQL = {
    "null": str(category_code("null")),
    "integer": _integer_code_sql(),
    "real": f"CASE WHEN {EPOCH_S} THEN {category_code('real', 'unix_s')} ELSE {category_code('real')} END",
    "text": _text_code_sql(),
    "blob": str(category_code("blob")),
}
_PLAIN_SQL = {cls: str(category_code(cls)) for cls in STORAGE_CLASSES}
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


def in_bulk(column: Column, plain: Plain) -> bool:
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


#: At most this many rows per chunk: the JSON counts of a chunk are packed 16 bits each.
MAX_CHUNK_ROWS = 65535

_OBJECT_CH, _ARRAY_CH = chr(category_code("text", "json_object")), chr(category_code("text", "json_array"))
_TEXT_CH, PENDING_CH, BLOB_CH = chr(_TEXT), chr(TEXT_PENDING), chr(category_code("blob"))


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
    first = text_class(data if end < 0 else data[:end])
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
            code = text_class(value)
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
