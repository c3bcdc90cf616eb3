"""Each format as a SQL condition, and the scan built on them alone: one bit mask per value.

The conditions are the formats' reference in SQL (GLOBs, lengths, ranges; the fast scan's byte
patterns in ``replicator.plan.category`` say the same thing). The scan (``scan_sql``) was the second
design: an inner query classifies each value once into a bit mask, the outer one counts each bit with
``count(*) FILTER``. It needs no string per chunk, so ``profiler.legacy_profile_table`` still runs it
for a WITHOUT ROWID table too big for one; ``bench/profile_bench.py`` times it against the fast scan.
"""

from __future__ import annotations

from collections.abc import Sequence

from replicator.plan.profile import (
    FORMATS,
    STORAGE_CLASSES,
    UNIX_MS_MAX,
    UNIX_MS_MIN,
    UNIX_S_MAX,
    UNIX_S_MIN,
    ColumnProfile,
)
from triggers.schema import Column, Table, quote_ident

#: SQLite's default SQLITE_MAX_COLUMN (2000) bounds the aggregates of one SELECT.
MAX_RESULT_COLUMNS = 1900
UTF8_FUNCTION = "replicator_utf8_invalid"


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


#: A number within the epoch-seconds range (the fast scan codes a REAL by it too: ``category``).
EPOCH_S = f"@c BETWEEN {UNIX_S_MIN} AND {UNIX_S_MAX}"

#: Each format as a condition on a value already known to be of the listed storage class. Every
#: condition starts with a cheap gate (a character at a fixed place, a length) before any GLOB.
INTEGER_FORMATS = {
    "unix_s": EPOCH_S,
    "unix_ms": f"@c BETWEEN {UNIX_MS_MIN} AND {UNIX_MS_MAX}",
    "bool01": "@c IN (0, 1)",
}
REAL_FORMATS = {"unix_s": EPOCH_S}
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


def utf8_invalid(value: bytes | None) -> int:
    """1 when the bytes are not UTF-8 that PostgreSQL accepts (strict: no surrogates, no overlongs)."""
    if value is None:
        return 0
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return 1
    return 0


def column_profile(name: str, values: Sequence[object]) -> ColumnProfile:
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
