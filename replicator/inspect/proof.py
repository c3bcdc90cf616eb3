"""verify's independent reading: what a value *means*, read from each database without the load's code.

Why: the snapshot and the apply convert every SQLite value with :mod:`replicator.values.convert`. A verify
that ran the same converters over SQLite and compared the result with PostgreSQL would agree with any
mistake they make (a decimal rounded at the wrong digit, milliseconds read as seconds): it would only
prove that PostgreSQL holds what the load wrote. So verify's SQLite side is computed here, from the
Python values ``sqlite3`` itself returns (None, int, float, str, bytes; a ``str`` holding lone
surrogates U+DC80..U+DCFF means bytes that were not UTF-8, see ``convert.decode_text``'s reading
convention), and its PostgreSQL side from the values psycopg's own loaders return (int, Decimal, float,
str, bytes, bool, datetime, date, time, UUID; json, jsonb, enum, char and unknown types as PostgreSQL's
text output). Both sides are brought to one **canonical form** per column, decided by the column's
*meaning*: its PostgreSQL type and the storage format the plan recorded for the SQLite column
(``TargetType.format``: ``unix_ms`` and so on; the plan says *what* a stored value means, this module
decides *how* to read it). This module (the rule table and the rows) and its rules, one module per kind of
value (``proof_numbers``, ``proof_text``, ``proof_time``, ``proof_json``, ``proof_identifiers``, the marker in
``proof_rule``), import nothing from ``replicator.values.convert``, ``replicator.values.decimals`` or
``replicator.plan.typemap`` (a test checks it): a bug there cannot be repeated here.

Canonical forms (values ``checkpoints.digest`` encodes natively, so a row is one msgspec call: None,
bool, int, float, str, bytes, datetime, date, time, UUID), hashed per row (SHA-256 of the MessagePack
encoding) and summed per table, order-independent, as ``checkpoints.digest`` does. SQL NULL
is None on both sides. A SQLite value the rule cannot read under the column's meaning becomes an
**unreadable marker**, the text ``"\\x00?"`` + storage class + ``:`` + its repr, which equals no value
PostgreSQL can return (PostgreSQL text never holds NUL): the row differs and is named by key, unless
the load quarantined it (verify leaves quarantined keys out, see ``verify``).

=====================  ====================================================================================
PostgreSQL type        canonical form; SQLite values read (anything else is unreadable)
=====================  ====================================================================================
smallint, integer,     int. integer as is; real only if whole; text ``[+-]digits``.
bigint
double precision       float (its bits). real as is; integer if the double holds it exactly; decimal text
                       whose double prints back as the same number.
real (float4)          str: the number's shortest decimal text (plain notation, no trailing zeros).
                       SQLite: the double's ``repr`` (integer, decimal text: the number itself);
                       PostgreSQL: the shortest decimal that reads back as the same float4. So a real
                       whose float4 prints unlike the double (0.1234567891) differs.
numeric(p,s)           str: the exact number in plain notation, no trailing zeros (``1.50`` and ``1.5``
                       are the same number). integer and decimal text exactly; a **real** means the
                       value the ORM reads from it: :func:`decimal_of_real` (one function; today the
                       shortest decimal that round-trips the double, ``repr``, quantized to the scale,
                       half-even). NaN and ±Infinity are the words.
text, varchar(n)       str, exact (a NOCASE column still compares exactly). text as is (``strip_nul``
                       and ``replace_bad_utf8`` from the plan applied as asked); integer ``str(n)``; real
                       its ``repr`` (shortest round-trip text); a blob that is UTF-8 its text; text or a
                       blob that is not UTF-8 stays bytes (PostgreSQL text cannot hold it: it differs).
char(n)                as text, trailing blanks removed on both sides (char's padding is not data).
bytea                  bytes. blob as is; text as its UTF-8 bytes (the original bytes when not UTF-8).
boolean                bool. integer 0/1, real 0.0/1.0; text t/f, true/false, y/n, yes/no, on/off, 1/0 in
                       any case.
timestamp,             the exact instant to the microsecond: an aware UTC datetime (timestamptz), a naive
timestamptz            UTC wall time (timestamp); outside years 1..9999 unreadable.
                       text ``YYYY-MM-DD[(T|t| )HH:MM[:SS[(.|,)f...]]]`` with optional ``Z``, ``UTC``,
                       ``±HH[[:]MM]`` (one space allowed before it); text without an offset is UTC (the
                       convention every ORM in realworld.md §2 writes); fraction digits past the sixth
                       must be zeros. Numbers are epochs in the plan's unit: ``unix_s``, ``unix_ms``,
                       ``unix_us``, ``julian_day`` (read as SQLite's date functions read it: rounded to
                       the millisecond); with no unit recorded, magnitude decides (\\|v\\| ≥ 1e11:
                       milliseconds, else seconds). With a unit recorded, numeric text is a number too.
                       PostgreSQL: timestamptz converted to UTC, timestamp taken as UTC wall time.
date                   date. text date; any instant above that is exactly midnight UTC.
time                   time. text ``HH:MM[:SS[.f]]`` (fraction digits past the sixth must be zeros).
json, jsonb            str: the document's canonical text (compact, object keys sorted, the last of
                       duplicate keys kept, every number by its exact value: ``1e2`` is ``100``, ``1.0``
                       is ``1``, ``1.5`` is not ``2``). SQLite text, a UTF-8 blob, or a bare number;
                       PostgreSQL's text output parsed the same way (so JSON ``null`` is not SQL NULL).
uuid                   UUID (encoded as its lowercase text). text 8-4-4-4-12 or 32 hex digits in any case, or a
                       16-byte blob.
enum                   str: the label (PostgreSQL's text output).
anything else          **fallback**: str, PostgreSQL's text output (``::text``) against SQLite's text
                       form (text as is, integer ``str``, real ``repr``, blob ``\\x`` + hex as bytea
                       prints). Exact for types whose text form is the stored spelling; otherwise it
                       differs loudly rather than passes silently.
=====================  ====================================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from replicator.inspect.proof_identifiers import cidr, inet, mac, uuid_source
from replicator.inspect.proof_json import json_source, json_target
from replicator.inspect.proof_numbers import (
    double_source,
    integer_source,
    numeric_source,
    numeric_target,
    real_source,
    real_target,
)
from replicator.inspect.proof_rule import UNREADABLE, ColumnType, Read, Unreadable
from replicator.inspect.proof_text import (
    boolean_source,
    bytea_source,
    bytea_target,
    char_target,
    text_form,
    text_source,
)
from replicator.inspect.proof_time import (
    date_source,
    interval_source,
    interval_target,
    time_source,
    timestamp_source,
    timestamp_target,
    timetz,
)

__all__ = ["key_value", "source_row", "target_row", "text_output"]


#: Types PostgreSQL returns as text for this reading (``column::text``): labels, unpadded char, JSON
#: documents as written (json) or normalised (jsonb), so JSON null stays apart from SQL NULL.
TEXT_OUTPUT: Final = frozenset({"enum", "char", "json", "jsonb"})
KNOWN: Final = frozenset(
    {
        *("smallint", "integer", "bigint", "double precision", "real", "numeric"),
        *("text", "varchar", "char", "bytea", "boolean", "timestamp", "timestamptz", "date", "time"),
        *("json", "jsonb", "uuid", "enum", "interval", "inet", "cidr"),
    }
)


def _same(value: object) -> object:
    return value


#: The rule table (the module docstring's, in code): the reading of each PostgreSQL type on either side. A
#: rule that depends on the column's meaning (its format, scale, NUL and UTF-8 settings) is built per column
#: (``*_OF``); the others are the same function for every column of the type. A type not listed reads
#: SQLite's text form (:func:`text_form`) and, on PostgreSQL's side, its value as psycopg returns it.
_SOURCE: Final[dict[str, Read]] = {
    **dict.fromkeys(("smallint", "integer", "bigint"), integer_source),
    "double precision": double_source,
    "real": real_source,
    "bytea": bytea_source,
    "boolean": boolean_source,
    "time": time_source,
    "uuid": uuid_source,
    "interval": interval_source,
    "inet": inet,
    "cidr": cidr,
    "timetz": timetz,
}
_SOURCE_OF: Final[dict[str, Callable[[ColumnType], Read]]] = {
    "numeric": numeric_source,
    **dict.fromkeys(("text", "varchar", "char", "enum"), text_source),
    **dict.fromkeys(("timestamp", "timestamptz"), timestamp_source),
    "date": date_source,
    **dict.fromkeys(("json", "jsonb"), json_source),
    **dict.fromkeys(("macaddr", "macaddr8"), mac),
}
_TARGET: Final[dict[str, Read]] = {
    "real": real_target,
    "numeric": numeric_target,
    "char": char_target,
    "bytea": bytea_target,
    **dict.fromkeys(("timestamp", "timestamptz"), timestamp_target),
    "interval": interval_target,
    "inet": inet,
    "cidr": cidr,
    "timetz": timetz,
}
_TARGET_OF: Final[dict[str, Callable[[ColumnType], Read]]] = dict.fromkeys(("json", "jsonb"), json_target)


def _source(t: ColumnType) -> Read:
    build = _SOURCE_OF.get(t.name)
    return build(t) if build is not None else _SOURCE.get(t.name, text_form)


def _target(t: ColumnType) -> Read:
    build = _TARGET_OF.get(t.name)
    # int, float, str, bool, date, time, UUID and macaddr text are canonical as psycopg returns them
    return build(t) if build is not None else _TARGET.get(t.name, _same)


def text_output(t: ColumnType) -> bool:
    """Whether PostgreSQL's side of this column is read as its text output (``column::text``)."""
    return t.name in TEXT_OUTPUT or t.name not in KNOWN


Row = Callable[[Sequence[Any]], tuple[Any, ...]]


def _row(reads: Sequence[Read]) -> Row:
    """A row → its canonical row; columns whose reading is the identity are not called."""
    active = [(i, read) for i, read in enumerate(reads) if read is not _same]
    if not active:
        return tuple

    def row(values: Sequence[Any]) -> tuple[Any, ...]:
        out = list(values)
        for i, read in active:
            value = out[i]
            if value is not None:
                out[i] = read(value)
        return tuple(out)

    return row


def source_row(types: Sequence[ColumnType]) -> Row:
    """A SQLite row (as ``sqlite3`` returns it) → its canonical row."""
    return _row([_source(t) for t in types])


def target_row(types: Sequence[ColumnType]) -> Row:
    """A PostgreSQL row (as psycopg returns it, :func:`text_output` columns as text) → its canonical row."""
    return _row([_target(t) for t in types])


def key_value(t: ColumnType) -> Read:
    """A raw SQLite key value → its canonical value; raises :class:`Unreadable` if the rule cannot read it."""
    read = _source(t)

    def key(value: object) -> object:
        out = None if value is None else read(value)
        if type(out) is str and out.startswith(UNREADABLE):
            raise Unreadable(out)
        return out

    return key
