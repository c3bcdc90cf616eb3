"""Convert SQLite values to PostgreSQL column types: every value exact, or refused by name.

SQLite lets any column hold any storage class (d9 in shared/research/anchors-mission.md), and
applications spell datetimes, booleans, decimals and JSON in several ways (realworld.md §2). This
module turns each value Python's ``sqlite3`` returns (None, int, float, str, bytes) into the Python
value psycopg's *binary* COPY dumper for the target type accepts, or raises :class:`ValueRefused`
with a short reason. Nothing is rounded, truncated or re-encoded silently: PostgreSQL would round
``timestamp(3)`` microseconds, cut trailing spaces off ``varchar(n)``, and reject NUL, bad UTF-8,
out-of-range numbers and NaN; we name each of those instead. Two alterations exist, both opt-in per
column: ``strip_nul`` and ``replace_bad_utf8``. None is NULL for every type (NOT NULL is the DDL's).

Rules (storage class → target → value; anything else is refused with the reason given):

* smallint / integer / bigint: integer in range; real only if whole (``3.0``); text only if it is
  ``[+-]digits`` (ASCII, no spaces). Out of range is refused, never wrapped.
* double precision: real as is (Infinity too); integer if the double holds it exactly (|n| ≤ 2**53 or
  a multiple that fits); decimal text if its double's shortest repr is the same number.
* real (float4): accepted when PostgreSQL will print the same shortest decimal the double printed
  (``0.1`` is accepted, ``0.1234567891`` would print ``0.12345679`` and is refused).
* numeric(p,s): real → the shortest round-trip repr (``Decimal(repr(x))``: ``0.03201``, never
  ``Decimal(0.03201)``'s binary noise); integer and decimal text exactly. More decimals than s or more
  integer digits than p-s is refused (no rounding), and so are NaN and ±Infinity even where
  PostgreSQL 14+ would store them (SQLite only produces them by overflow, and Prisma and Django read
  them back as errors).
* text / varchar(n) / char(n): text as is; integer → ``str(n)``; real → ``repr(x)`` (shortest
  round-trip); a blob that is valid UTF-8 → its text. NUL and invalid UTF-8 refused (see the flags);
  more than n characters refused (PostgreSQL would silently cut trailing spaces). char(n) pads with
  spaces on read, as PostgreSQL's char(n) does.
* bytea: blob as is; text → its UTF-8 bytes (the original bytes when they were not UTF-8).
* boolean: 0/1 (and 0.0/1.0); text t/f, true/false, y/n, yes/no, on/off, 1/0 in any case — the
  spellings PostgreSQL itself accepts, minus its unique-prefix abbreviations and whitespace.
* timestamp(p) / timestamptz(p): integer or real epoch — unix_s, unix_ms or julian_day per
  ``format``, else the magnitude rule |v| ≥ 1e11 → milliseconds (formats.MS_THRESHOLD), below →
  seconds, except that a number in the julian-day range (1721425.5 ≤ v < 5373484.5, i.e. seconds
  in Jan–Mar 1970) is refused as ambiguous; julian days are read as SQLite reads them (rounded to
  the millisecond, formats.julian_millis); text ``YYYY-MM-DD``,
  ``YYYY-MM-DD[T ]HH:MM[:SS[.f]]`` with optional ``Z``/``UTC``/``±HH[:MM]``. Text with an offset is
  an instant: converted to UTC, for timestamp too (Prisma writes ``+00:00``, Django converts to UTC
  before writing, so UTC is what apps mean). Naive text is UTC for timestamptz and kept as wall time
  for timestamp (the same thing under that convention). Outside years 1..9999 refused (Python's
  datetime range; PostgreSQL's is wider); more fractional digits than p refused (PostgreSQL would
  round), as are leap second 60 and hour 24 (PostgreSQL would roll them over).
* date: ``YYYY-MM-DD`` text, or any instant above that is a UTC midnight (Prisma stores dates as ms
  at 00:00 UTC); an instant with a time of day is refused.
* time(p): ``HH:MM[:SS[.f]]`` text (Django/SQLAlchemy TimeField), precision checked like timestamps.
* json / jsonb: text validated as JSON and sent verbatim (jsonb then normalises key order,
  duplicates and number spelling, as PostgreSQL always does); integer/real (bare JSON numbers that
  SQLite's NUMERIC affinity turned into numbers) → their exact repr; a UTF-8 blob → its text. Text
  ``null`` is JSON null, not SQL NULL. jsonb refuses the ``\\u0000`` escape (json keeps it).
* uuid: ``8-4-4-4-12`` or 32 hex digits in any case, or a 16-byte blob.
* enum: text equal to a label (case-sensitive).
* citext: as text.
* interval(p): integer microseconds (Django's DurationField; a whole real too) or a datetime text counted
  from 1970-01-01 (SQLAlchemy's Interval); a timedelta, as psycopg writes and reads it.
* inet / cidr: address text (``192.0.2.1``, ``10.1.2.3/8``, IPv6) as Python's ipaddress reads it;
  cidr refuses host bits; zone ids refused. ``1.2.3.4/32`` is the address, as PostgreSQL prints it.
* macaddr / macaddr8: every spelling PostgreSQL accepts, or the raw 6/8 bytes; a 6-byte address in a
  macaddr8 gets ``ff:fe`` inserted, as PostgreSQL does.
* timetz(p): ``HH:MM[:SS[.f]]`` with an optional offset; without one it is UTC.
* numeric with ``format = "real15"`` (chosen for Django projects): numbers are read as Django reads
  them (15 significant digits, then decimal_places); ``"sqlalchemy"`` and ``"rails"`` as those ORMs read
  them; see formats.app_decimal.

``TargetType.format`` only changes datetime conversions (unix_s / unix_ms / julian_day fix the unit
and also admit numeric text); other formats (bool01, iso8601, ...) are descriptive, since every
other storage spelling is unambiguous and parsed per value.

Reading convention (invalid UTF-8). ``sqlite3`` raises on TEXT that is not valid UTF-8. The reader
reads with the default ``str`` text factory and, only on that error, re-reads with
``conn.text_factory = decode_text``: bytes that are not UTF-8 then arrive as lone surrogates
U+DC80..U+DCFF (Python's ``surrogateescape``). Valid UTF-8 can never produce a surrogate, so a
surrogate in a ``str`` always means "these source bytes were not UTF-8": text targets refuse it
(or replace it by U+FFFD with ``replace_bad_utf8``) and ``bytea`` targets restore the exact bytes.

Speed. :func:`value_converter` builds one closure per column; :func:`row_converter` compiles one
function per table in which each column's common case is inlined (an in-range int into bigint, an
ASCII str without NUL into text, integer milliseconds into timestamp(3), a double into
numeric(65,30)), so those cost no call. ``wire=True`` additionally emits PostgreSQL's binary forms
for datetimes and jsonb (see row_converter). The generated code contains only column indices and
numeric constants, never names or values from the source.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, NamedTuple

import msgspec
from psycopg import sql
from psycopg.types.json import Json, Jsonb

from replicator.config import ColumnOverride, column_fix
from replicator.errors import BadValue, UsageError
from replicator.values.formats import (
    DECIMAL_READERS,
    EPOCH,
    EPOCH_UTC,
    JULIAN_MAX,
    JULIAN_MIN,
    MS_THRESHOLD,
    NUMBER_FORMATS,
    RAILS,
    REAL15,
    SQLALCHEMY,
    SQLITE_REAL_DIGITS,
    ValueRefused,
    app_decimal,
    check_fraction,
    decimal_fits,
    epoch_micros,
    float4_value,
    from_epoch_micros,
    midnight_date,
    parse_cidr,
    parse_decimal_text,
    parse_epoch_text,
    parse_inet,
    parse_instant_text,
    parse_int_text,
    parse_interval,
    parse_macaddr,
    parse_time_text,
    parse_timetz_text,
    shortest_float4_repr,
    unit_of,
)

__all__ = [
    "RowRefused",
    "TargetType",
    "UnsupportedType",
    "ValueRefused",
    "convert_value",
    "copy_types",
    "decode_text",
    "excerpt",
    "parse_type",
    "row_converter",
    "type_sql",
    "value_converter",
    "with_override",
]

Converter = Callable[[object], object]
RowConverter = Callable[[Sequence[object]], tuple[object, ...]]


class TargetType(msgspec.Struct, frozen=True):
    """A PostgreSQL column type, normalised, plus how the SQLite side stores it."""

    name: str
    """smallint, integer, bigint, real, double precision, numeric, text, varchar, char, bytea, boolean,
    timestamptz, timestamp, date, time, json, jsonb, uuid, or "enum"."""
    precision: int | None = None
    """numeric: total digits; timestamp, timestamptz, time: fractional-second digits (None = 6)."""
    scale: int | None = None
    length: int | None = None
    """varchar(n), char(n)."""
    enum_labels: tuple[str, ...] = ()
    enum_name: str | None = None
    """The enum type's name (for DDL; binary COPY sends enum labels as text, see copy_types)."""
    format: str | None = None
    """How the source stores it (profile.FORMATS). Only unix_s / unix_ms / julian_day change a
    conversion: they fix the unit of numbers (and allow numeric text) in datetime columns. None = per
    value (the magnitude rule)."""
    strip_nul: bool = False
    replace_bad_utf8: bool = False


class UnsupportedType(UsageError):
    """A PostgreSQL type this converter does not write (arrays, intervals, geometric types...)."""


class RowRefused(BadValue):
    """A row holds a value its target column cannot hold exactly; names table, column and value."""

    def __init__(self, table: str, column: str, value: object, reason: str, hint: str = "", setting: str = "") -> None:
        self.table = table
        self.column = column
        self.value = value
        self.reason = reason
        self.setting = setting
        """A column setting that makes such values load (``strip_nul = true``), or empty."""
        fixes = [column_fix(table, column, setting)] if setting else []
        fixes += [hint] if hint else []
        super().__init__(
            f"{table}.{column}: {reason}; value {excerpt(value)}",
            hint="; or ".join(fixes) or "fix the value in SQLite, or set snapshot.on_bad_value = quarantine",
        )
        self._hint_given = hint

    @property
    def fixes(self) -> str:
        """What makes this value load, naming the table and column; empty when only the data can change."""
        fixes = [column_fix(self.table, self.column, self.setting)] if self.setting else []
        return "; or ".join(fixes + ([self._hint_given] if self._hint_given else []))

    def __reduce__(self) -> tuple[type[RowRefused], tuple[str, str, object, str, str, str]]:
        """Picklable (worker processes send refusals back): rebuilt from its own fields."""
        return (RowRefused, (self.table, self.column, self.value, self.reason, self._hint_given, self.setting))


def decode_text(data: bytes) -> str:
    """``sqlite3`` text factory for the fallback read: invalid UTF-8 bytes become lone surrogates."""
    return data.decode("utf-8", "surrogateescape")


EXCERPT_CHARS: Final = 40


def excerpt(value: object) -> str:
    """A short, printable rendering of a source value for error messages and quarantine rows."""
    if isinstance(value, str | bytes) and len(value) > EXCERPT_CHARS:
        kind = "chars" if isinstance(value, str) else "bytes"
        return f"{value[:EXCERPT_CHARS]!r}… ({len(value)} {kind})"
    if isinstance(value, str):
        return repr(value).encode("ascii", "backslashreplace").decode("ascii")
    return repr(value)


def _storage(value: object) -> str:
    """The SQLite storage class name of a Python value, for reasons."""
    return {int: "integer", float: "real", str: "text", bytes: "blob"}.get(type(value), type(value).__name__)


# -- types -----------------------------------------------------------------------------------------

INT_RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}

#: Type names for ``Copy.set_types``. varchar, char and enum columns take the text binary format
#: (their receive functions read a label / string), so they need no registration with psycopg.
COPY_NAMES: Final[Mapping[str, str]] = {
    "smallint": "int2",
    "integer": "int4",
    "bigint": "int8",
    "real": "float4",
    "double precision": "float8",
    "numeric": "numeric",
    "text": "text",
    "varchar": "text",
    "char": "text",
    "bytea": "bytea",
    "boolean": "bool",
    "timestamptz": "timestamptz",
    "timestamp": "timestamp",
    "date": "date",
    "time": "time",
    "json": "json",
    "jsonb": "jsonb",
    "uuid": "uuid",
    "enum": "text",
    "citext": "text",  # citext's binary receive is text's
    "interval": "interval",
    "inet": "inet",
    "cidr": "cidr",
    "timetz": "timetz",
    # psycopg has no macaddr type: the converter produces the 6 (8) bytes of the binary form, which
    # bytea's binary dumper sends unchanged and psycopg reads back as bytes.
    "macaddr": "bytea",
    "macaddr8": "bytea",
}

TYPE_NAMES: Final = frozenset(COPY_NAMES)


#: copy_types(wire=True): the binary forms row_converter(wire=True) produces.
WIRE_COPY_NAMES: Final[Mapping[str, str]] = {
    **COPY_NAMES,
    "timestamptz": "int8",
    "timestamp": "int8",
    "date": "int4",
    "time": "int8",
    "json": "text",
    "jsonb": "text",
}


def copy_types(types: Sequence[TargetType], *, wire: bool = False) -> list[str]:
    """What to pass to ``Copy.set_types`` for a binary COPY of the converted values."""
    names = WIRE_COPY_NAMES if wire else COPY_NAMES
    return [names[t.name] for t in types]


_ALIASES: Final[Mapping[str, str]] = {
    "int2": "smallint",
    "smallserial": "smallint",
    "int": "integer",
    "int4": "integer",
    "serial": "integer",
    "int8": "bigint",
    "bigserial": "bigint",
    "float4": "real",
    "float8": "double precision",
    "double": "double precision",
    "float": "double precision",
    "decimal": "numeric",
    "character varying": "varchar",
    "character": "char",
    "bpchar": "char",
    "bool": "boolean",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
    "time with time zone": "timetz",
}
_MODIFIERS = re.compile(r"\(\s*([0-9]+)\s*(?:,\s*(-?[0-9]+)\s*)?\)")


def parse_type(pg_type_text: str) -> TargetType:
    """A TargetType from ``format_type()`` / information_schema / DDL text.

    ``timestamp(3) without time zone`` → timestamp precision 3; ``numeric(65,30)`` → numeric 65, 30;
    ``character varying(191)`` → varchar length 191. Enums (``USER-DEFINED``) need their labels: the
    caller builds ``TargetType("enum", enum_name=..., enum_labels=...)``.
    """
    text = pg_type_text.strip().lower()
    text = text.removeprefix("pg_catalog.")
    mods = _MODIFIERS.search(text)
    first = int(mods.group(1)) if mods else None
    second = int(mods.group(2)) if mods and mods.group(2) is not None else None
    base = " ".join(_MODIFIERS.sub(" ", text).replace('"', "").split())
    if base.startswith("interval"):  # "interval", "interval(3)", "interval day to second(3)"
        return TargetType("interval", precision=first)
    if base == "float" and first is not None:
        base = "real" if first <= 24 else "double precision"
        first = None
    base = _ALIASES.get(base, base)
    if base not in TYPE_NAMES or base == "enum":
        raise UnsupportedType(
            f"PostgreSQL type {pg_type_text!r} is not supported by the converter",
            hint="override the column type in [types] with one of: " + ", ".join(sorted(TYPE_NAMES - {"enum"})),
        )
    if base == "numeric":
        return TargetType(base, precision=first, scale=(second or 0) if first is not None else None)
    if base in ("timestamp", "timestamptz", "time", "timetz"):
        return TargetType(base, precision=first)
    if base == "varchar":
        return TargetType(base, length=first)
    if base == "char":
        # DDL "character" means character(1); "bpchar" without a length is unbounded.
        return TargetType(base, length=first if first is not None or "bpchar" in text else 1)
    return TargetType(base)


def type_sql(t: TargetType) -> sql.Composable:
    """The column type as SQL for DDL: ``timestamp(3)``, ``numeric(65,30)``, ``varchar(191)``, an enum's name."""
    if t.name == "enum":
        if not t.enum_name:
            raise UnsupportedType("an enum TargetType needs enum_name to be rendered", hint="set enum_name")
        return sql.Identifier(t.enum_name)  # resolved through search_path, like the app's own DDL
    mods: tuple[int, ...] = ()
    if t.name == "numeric" and t.precision is not None:
        mods = (t.precision, t.scale or 0)
    elif t.name in ("timestamp", "timestamptz", "time", "timetz", "interval") and t.precision is not None:
        mods = (t.precision,)
    elif t.name in ("varchar", "char") and t.length is not None:
        mods = (t.length,)
    name = {"char": "character", "varchar": "character varying"}.get(t.name, t.name)
    if name not in TYPE_NAMES and name not in ("character", "character varying"):
        raise UnsupportedType(f"target type {t.name!r} is not a normalised type name")
    suffix = "(" + ",".join(str(m) for m in mods) + ")" if mods else ""
    if name == "timestamptz" and suffix:
        return sql.SQL("timestamp{} with time zone").format(sql.SQL(suffix))
    if name == "timetz" and suffix:
        return sql.SQL("time{} with time zone").format(sql.SQL(suffix))
    return sql.SQL(name + suffix)


def with_override(target: TargetType, override: ColumnOverride) -> TargetType:
    """Apply a ``[types.table.column]`` override: its type (if any), format and text flags."""
    base = parse_type(override.type) if override.type else target
    return msgspec.structs.replace(
        base,
        format=override.format or target.format,
        strip_nul=override.strip_nul or target.strip_nul,
        replace_bad_utf8=override.replace_bad_utf8 or target.replace_bad_utf8,
        enum_labels=base.enum_labels or target.enum_labels,
        enum_name=base.enum_name or target.enum_name,
    )


# -- per-type converters ---------------------------------------------------------------------------


class _Plan(NamedTuple):
    """A column's converter plus inline fast paths for :func:`row_converter`.

    Each fast path is ``(guard, result)``: Python expressions over ``{v}`` (the value), ``{k}``
    (``const``) and the helpers in ``_INLINE_NAMES``. Where ``guard`` is true, ``result`` must equal
    what ``convert`` returns (the tests check both agree); elsewhere ``convert`` is called.
    """

    convert: Converter
    fast: tuple[tuple[str, str], ...] = ()
    const: object = None


def _utf8_ok(s: str) -> bool:
    """No lone surrogate (i.e. no invalid source byte, see decode_text); faster than a regex search."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: Epoch numbers of 0001-01-01T00:00:00 and 9999-12-31T23:59:59.999 (UTC).
_MIN_S: Final = -62_135_596_800
_MAX_S: Final = 253_402_300_799
_MIN_MS: Final = _MIN_S * 1000
_MAX_MS: Final = _MAX_S * 1000 + 999

#: Integers below this (1e1000) fit an unconstrained numeric; SQLite's never exceed 2**63 anyway.
_NUMERIC_INT_LIMIT: Final = 10**1000

#: Helpers the generated row functions may use in fast-path expressions.
_INLINE_NAMES: Final[Mapping[str, object]] = {
    "_td": timedelta,
    "_D": Decimal,
    "_repr": repr,
    "_INF": float("inf"),
    "_NUMERIC_INT_LIMIT": _NUMERIC_INT_LIMIT,
    "_utf8_ok": _utf8_ok,
    "_T": MS_THRESHOLD,
    "_JD_LO": math.ceil(JULIAN_MIN),
    "_JD_HI": math.ceil(JULIAN_MAX),
    "_MIN_S": _MIN_S,
    "_MAX_S": _MAX_S,
    "_MIN_MS": _MIN_MS,
    "_MAX_MS": _MAX_MS,
}


def _unchanged(guard: str) -> tuple[tuple[str, str], ...]:
    """A fast path for values that already have the target's Python type and range."""
    return ((guard, "{v}"),)


def _refuse_storage(value: object, target: str) -> ValueRefused:
    return ValueRefused(f"{_storage(value)} value cannot be stored as {target}")


def _integer(t: TargetType) -> _Plan:
    lo, hi = INT_RANGES[t.name]
    name = t.name

    def in_range(number: int) -> int:
        if lo <= number <= hi:
            return number
        raise ValueRefused(f"{number} is outside the {name} range {lo}..{hi}")

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is int:
            return in_range(v)
        if type(v) is float:
            if v.is_integer():
                return in_range(int(v))
            raise ValueRefused(f"real {v!r} is not a whole number; {name} would lose the fraction")
        if type(v) is str:
            return in_range(parse_int_text(v))
        raise _refuse_storage(v, name)

    return _Plan(convert, _unchanged(f"type({{v}}) is int and {lo} <= {{v}} <= {hi}"))


def _double(t: TargetType) -> _Plan:
    def convert(v: object) -> object:
        if v is None or type(v) is float:
            return v
        if type(v) is int:
            as_float = float(v)
            if as_float == v:
                return as_float
            raise ValueRefused(f"integer {v} has more than 53 significant bits; double precision would round it")
        if type(v) is str:
            exact = parse_decimal_text(v)
            as_float = float(exact)
            if as_float in (float("inf"), float("-inf")) or Decimal(repr(as_float)) != exact:
                raise ValueRefused("text number has no exact double precision value")
            return as_float
        raise _refuse_storage(v, "double precision")

    return _Plan(convert, _unchanged("type({v}) is float"))


def _real(t: TargetType) -> _Plan:
    """float4: accepted when PostgreSQL will print the same shortest decimal SQLite printed."""

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is int:
            number = float(v)
            if number != v:
                raise ValueRefused(f"integer {v} cannot be a double exactly")
        elif type(v) is float:
            number = v
        elif type(v) is str:
            number = float(parse_decimal_text(v))
            if Decimal(repr(number)) != Decimal(v):
                raise ValueRefused("text number has no exact real value")
        else:
            raise _refuse_storage(v, "real")
        near = float4_value(number)
        if near == number or near != near or float(shortest_float4_repr(near)) == number:
            return number
        raise ValueRefused(
            f"{number!r} would become {shortest_float4_repr(near)} in real (float4)",
            hint="use double precision for this column",
        )

    return _Plan(convert)


#: Integers below this have at most 15 digits: Django's 15-significant-digit read keeps them whole.
_REAL15_EXACT: Final = 10**SQLITE_REAL_DIGITS
#: Integers below this are exact as doubles: SQLAlchemy's "%.6f" % v reads them as themselves.
_DOUBLE_EXACT: Final = 2**53

#: Bounds on the shortest repr of a double with 1e-4 <= |x| < 1e16: 17 significant digits at most.
_REPR_MAX_FRACTION: Final = 20
_REPR_MAX_INTEGER: Final = 16


def _refuse_real(v: float, number: Decimal, precision: int | None, scale: int | None) -> None:
    """A REAL that does not fit: when its 15-significant-digit reading does (the digits SQLite keeps
    turning decimal text into a REAL, and Django's reading), the refusal names that setting."""
    reason = decimal_fits(number, precision, scale) or ""
    try:
        fifteen = app_decimal(v, precision, scale, REAL15)
    except ValueRefused:
        raise ValueRefused(reason) from None
    if decimal_fits(fifteen, precision, scale) is not None:
        raise ValueRefused(reason)
    raise ValueRefused(
        f"{reason} (read with the 15 significant digits SQLite keeps, it is {fifteen}; an app whose ORM reads"
        ' it loads what the ORM reads with [snapshot] orm = "django", "sqlalchemy" or "rails")',
        setting=f'format = "{REAL15}"',
    )


def _numeric(t: TargetType) -> _Plan:
    precision, scale = t.precision, t.scale
    # Integers pass unchanged when every integer below the limit fits (never for a negative scale).
    limit = 10 ** (precision - (scale or 0)) if precision is not None and (scale or 0) >= 0 else 0
    label = f"numeric({precision},{scale or 0})" if precision is not None else "numeric"

    def checked(number: Decimal) -> Decimal:
        reason = decimal_fits(number, precision, scale)
        if reason is not None:
            raise ValueRefused(reason)
        return number

    reader = t.format if t.format in DECIMAL_READERS else None

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is int:
            if reader in (None, RAILS) and (
                (precision is None and -_NUMERIC_INT_LIMIT < v < _NUMERIC_INT_LIMIT) or -limit < v < limit
            ):
                return v
            return checked(app_decimal(v, precision, scale, reader))
        if type(v) is float:
            number = app_decimal(v, precision, scale, reader)
            if reader is None and decimal_fits(number, precision, scale) is not None:
                _refuse_real(v, number, precision, scale)
            return checked(number)
        if type(v) is str:
            return checked(parse_decimal_text(v))
        raise _refuse_storage(v, label)

    if reader == REAL15:
        # Integers of up to 15 digits read as themselves; every other number goes through app_decimal.
        small = min(limit, _REAL15_EXACT) if precision is not None else _REAL15_EXACT
        return _Plan(convert, ((f"type({{v}}) is int and {-small} < {{v}} < {small}", "{v}"),))
    if reader == SQLALCHEMY:
        # SQLAlchemy formats integers as doubles: exact below 2**53. An unconstrained numeric keeps the
        # digits it is given, so there every number takes SQLAlchemy's spelling (3.0000000000).
        small = min(limit, _DOUBLE_EXACT)
        return _Plan(convert, ((f"type({{v}}) is int and {-small} < {{v}} < {small}", "{v}"),) if small else ())
    if reader == RAILS:
        return _Plan(convert, ((f"type({{v}}) is int and {-limit} < {{v}} < {limit}", "{v}"),) if limit else ())
    if precision is None:
        # Any finite double (and any SQLite integer) fits an unconstrained numeric.
        return _Plan(
            convert,
            (
                ("type({v}) is int and -_NUMERIC_INT_LIMIT < {v} < _NUMERIC_INT_LIMIT", "{v}"),
                ("type({v}) is float and -_INF < {v} < _INF", "_D(_repr({v}))"),
            ),
        )
    fast = [(f"type({{v}}) is int and {-limit} < {{v}} < {limit}", "{v}")] if limit else []
    if (scale or 0) >= _REPR_MAX_FRACTION and precision - (scale or 0) >= _REPR_MAX_INTEGER:
        # The shortest repr of a double in [1e-4, 1e16) has at most 20 decimals and 16 integer
        # digits, so numeric(65,30) holds every such value: no digit counting needed.
        fast.append(("type({v}) is float and (1e-4 <= {v} < 1e16 or -1e16 < {v} <= -1e-4)", "_D(_repr({v}))"))
    return _Plan(convert, tuple(fast))


_SURROGATE: Final = re.compile("[\ud800-\udfff]+")


def _clean_text(t: TargetType) -> Callable[[str], str]:
    """NUL and invalid-UTF-8 handling shared by text, varchar, char, json and jsonb."""
    strip_nul, replace_bad = t.strip_nul, t.replace_bad_utf8

    def clean(s: str) -> str:
        if "\x00" in s:
            if not strip_nul:
                raise ValueRefused(
                    f"text contains NUL (\\x00) at character {s.index(chr(0))}; PostgreSQL text cannot hold it",
                    setting="strip_nul = true",
                )
            s = s.replace("\x00", "")
        if not s.isascii() and not _utf8_ok(s):
            bad = _SURROGATE.search(s)
            if bad is not None:
                if not replace_bad:
                    raw = bad.group().encode("utf-8", "surrogateescape") if bad.group() >= "\udc80" else b"?"
                    raise ValueRefused(
                        f"text is not valid UTF-8 (bytes {raw[:8].hex(' ')} at character {bad.start()})",
                        setting="replace_bad_utf8 = true",
                    )
                s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return s

    return clean


def _as_text(v: object, clean: Callable[[str], str]) -> str:
    """Any storage class as exact text: numbers by their shortest repr, blobs if they are UTF-8."""
    if type(v) is str:
        return clean(v)
    if type(v) is int:
        return str(v)
    if type(v) is float:
        return repr(v)
    if type(v) is bytes:
        try:
            return clean(v.decode("utf-8"))
        except UnicodeDecodeError:
            return clean(decode_text(v))
    raise _refuse_storage(v, "text")


def _text(t: TargetType) -> _Plan:
    clean = _clean_text(t)
    limit = t.length if t.name in ("varchar", "char") else None
    label = f"{t.name}({limit})"

    def convert(v: object) -> object:
        if v is None:
            return None
        s = clean(v) if type(v) is str else _as_text(v, clean)
        if limit is not None and len(s) > limit:
            raise ValueRefused(f"{len(s)} characters do not fit {label}")
        return s

    guard = "type({v}) is str and '\\x00' not in {v} and ({v}.isascii() or _utf8_ok({v}))"
    if limit is not None:
        guard += f" and len({{v}}) <= {limit}"
    return _Plan(convert, _unchanged(guard))


def _bytea(t: TargetType) -> _Plan:
    def convert(v: object) -> object:
        if v is None or type(v) is bytes:
            return v
        if type(v) is str:
            return v.encode("utf-8", "surrogateescape")
        raise _refuse_storage(v, "bytea")

    return _Plan(convert, _unchanged("type({v}) is bytes"))


_BOOLEANS: Final[Mapping[object, bool]] = {
    0: False,
    1: True,
    **dict.fromkeys(("f", "false", "n", "no", "off", "0"), False),
    **dict.fromkeys(("t", "true", "y", "yes", "on", "1"), True),
}


def _boolean(t: TargetType) -> _Plan:
    """0/1 (also 0.0/1.0) and PostgreSQL's own full spellings, any case: t/f, true/false, y/n,
    yes/no, on/off, '1'/'0'. No prefixes (PostgreSQL reads 'tr' as true), no spaces."""

    def convert(v: object) -> object:
        if v is None:
            return None
        result = _BOOLEANS.get(v)
        if result is None and type(v) is str:
            result = _BOOLEANS.get(v.lower())
        if result is None or type(v) is bytes:
            raise ValueRefused(f"{_storage(v)} value is not a boolean (0/1, t/f, true/false, yes/no, y/n, on/off)")
        return result

    return _Plan(convert, (("type({v}) is int and ({v} == 0 or {v} == 1)", "{v} == 1"),))


_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}"
)


def _uuid(t: TargetType) -> _Plan:
    """36-char hyphenated (Prisma) or 32 hex digits (Django, SQLAlchemy), any case; 16-byte blobs."""

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is str:
            if _UUID.fullmatch(v):
                return uuid.UUID(v)
            raise ValueRefused("text is not a UUID (8-4-4-4-12 or 32 hex digits)")
        if type(v) is bytes and len(v) == 16:
            return uuid.UUID(bytes=v)
        raise _refuse_storage(v, "uuid")

    return _Plan(convert)


def _enum(t: TargetType) -> _Plan:
    labels = frozenset(t.enum_labels)
    if not labels:
        raise UnsupportedType(f"enum type {t.enum_name!r} has no labels", hint="pass enum_labels")
    shown = ", ".join(t.enum_labels[:8]) + (", …" if len(t.enum_labels) > 8 else "")

    def convert(v: object) -> object:
        if v is None or v in labels:
            return v
        raise ValueRefused(f"{_storage(v)} value is not a label of enum {t.enum_name or '(unnamed)'}: {shown}")

    return _Plan(convert, _unchanged("{v} in {k}"), labels)


_JSON_VALIDATOR: Final = msgspec.json.Decoder(msgspec.Raw)
#: msgspec recurses per nesting level within Python's recursion limit (1000); PostgreSQL's parser
#: goes to about 10k-40k levels with the default max_stack_depth. Deeper documents than this are
#: refused by name.
JSON_MAX_DEPTH: Final = 20_000
_DEEP_JSON_LOCK: Final = threading.Lock()


def _validate_deep_json(text: str) -> None:
    """Validate JSON nested deeper than the recursion limit by raising it for this one call (rare)."""
    with _DEEP_JSON_LOCK:
        previous = sys.getrecursionlimit()
        sys.setrecursionlimit(max(previous, JSON_MAX_DEPTH + 200))
        try:
            _JSON_VALIDATOR.decode(text)
        except msgspec.DecodeError as exc:
            raise ValueRefused(f"not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueRefused(f"JSON nests deeper than {JSON_MAX_DEPTH} levels") from None
        finally:
            sys.setrecursionlimit(previous)


_NUL_ESCAPE: Final = re.compile(r"(\\+)u0000")


def _identity(text: str) -> str:
    """The ``dumps`` of our Json/Jsonb wrappers: the value already is JSON text, sent verbatim."""
    return text


def _strip_nul_escapes(text: str) -> str:
    """Remove ``\\u0000`` escapes (an odd run of backslashes before u0000), keep ``\\\\u0000``."""

    def replace(match: re.Match[str]) -> str:
        slashes = match.group(1)
        return slashes[:-1] if len(slashes) % 2 else match.group()

    return _NUL_ESCAPE.sub(replace, text)


def _has_nul_escape(text: str) -> bool:
    return any(len(m.group(1)) % 2 for m in _NUL_ESCAPE.finditer(text))


def _json(t: TargetType, wire: bool) -> _Plan:
    """JSON text verbatim (validated), and bare numbers SQLite's NUMERIC affinity stored as numbers.

    Values are Json/Jsonb wrappers whose ``dumps`` is the identity (the text is sent as it is); on
    the wire, json is its text and jsonb is "\\x01" + text (its binary form once UTF-8 encoded).
    jsonb refuses the ``\\u0000`` escape (json keeps it); ``strip_nul`` removes it from jsonb text.
    """
    clean = _clean_text(t)
    binary = t.name == "jsonb"
    wrap: Callable[[Any, Callable[[str], str]], object] = Jsonb if binary else Json
    strip_nul = t.strip_nul

    def convert(v: object) -> object:
        if type(v) is str:
            text = v if v.isascii() and "\x00" not in v else clean(v)
        elif v is None:
            return None
        elif type(v) is bytes:
            try:
                text = clean(v.decode("utf-8"))
            except UnicodeDecodeError:
                raise ValueRefused(
                    "blob is not UTF-8 JSON text", hint="a SQLite JSONB blob: read the column as json(column)"
                ) from None
        elif type(v) is float and (v != v or v in (float("inf"), float("-inf"))):
            raise ValueRefused(f"real {v!r} is not a JSON number")
        else:
            text = _as_text(v, clean)
        try:
            _JSON_VALIDATOR.decode(text)
        except msgspec.DecodeError as exc:
            raise ValueRefused(f"not valid JSON: {exc}") from None
        except RecursionError:
            _validate_deep_json(text)
        if binary and "\\u0000" in text and _has_nul_escape(text):
            if not strip_nul:
                raise ValueRefused(
                    "JSON contains the escape \\u0000, which jsonb cannot hold",
                    setting="strip_nul = true",
                )
            text = _strip_nul_escapes(text)
        if wire:
            return "\x01" + text if binary else text
        return wrap(text, _identity)

    return _Plan(convert)


def _instant(t: TargetType, aware: bool = False) -> Callable[[object], datetime]:
    """Any datetime storage to a UTC datetime (aware or naive as asked), exactly.

    Numbers are epoch seconds or milliseconds (``format`` or the magnitude rule); text is ISO-8601
    or SQL text, date-only text meaning midnight. Aware text is converted to UTC; naive text is
    taken as UTC (timestamptz) or kept as wall time (timestamp) — the same thing, as every ORM in
    realworld.md §2 writes UTC (except SQLAlchemy DateTime(timezone=True), which drops the offset).
    """
    unit_format = t.format if t.format in NUMBER_FORMATS else None
    base = EPOCH_UTC if aware else EPOCH

    def instant(v: object) -> datetime:
        if type(v) is str:
            if unit_format is not None and v[:1] in "+-0123456789" and "-" not in v[1:]:
                number = parse_epoch_text(v)
                return from_epoch_micros(epoch_micros(number, unit_of(float(number), unit_format)), base)
            return parse_instant_text(v, aware)
        if type(v) is int or type(v) is float:
            return from_epoch_micros(epoch_micros(v, unit_of(v, unit_format)), base)
        raise _refuse_storage(v, t.name)

    return instant


#: PostgreSQL's binary datetimes count from 2000-01-01: microseconds (timestamp, time), days (date).
PG_EPOCH: Final = datetime(2000, 1, 1)
PG_EPOCH_UTC: Final = datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_ORDINAL: Final = PG_EPOCH.toordinal()
_PG_EPOCH_S: Final = 946_684_800
_MICROSECOND: Final = timedelta(microseconds=1)


def _timestamp(t: TargetType, wire: bool) -> _Plan:
    """timestamp / timestamptz: a datetime (naive UTC / aware UTC), or on the wire int8 µs since 2000."""
    aware = t.name == "timestamptz"
    instant = _instant(t, aware)
    precision = 6 if t.precision is None else min(t.precision, 6)
    step = 10 ** (6 - precision)
    base = EPOCH_UTC if aware else EPOCH
    pg_base = PG_EPOCH_UTC if aware else PG_EPOCH
    unit = t.format if t.format in NUMBER_FORMATS else None

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is int and unit != "julian_day":
            # Integer epochs are the hot path (Prisma's native storage): one timedelta, no parsing.
            kind = unit or unit_of(v, None)
            try:
                result = base + (timedelta(0, 0, 0, v) if kind == "unix_ms" else timedelta(0, v))
            except OverflowError:
                raise ValueRefused("outside years 1..9999 (Python's datetime range)") from None
        else:
            result = instant(v)
        if step > 1 and result.microsecond % step:
            check_fraction(result, step, precision)
        return (result - pg_base) // _MICROSECOND if wire else result

    # Inline: integers whose instant is surely within years 1..9999 and loses no digit.
    if wire:
        from_s, from_ms = f"({{v}} - {_PG_EPOCH_S}) * 1000000", f"({{v}} - {_PG_EPOCH_S * 1000}) * 1000"
    else:
        from_s, from_ms = "{k} + _td(0, {v})", "{k} + _td(0, 0, 0, {v})"
    seconds = ("_MIN_S <= {v} <= _MAX_S", from_s)
    millis = ("_MIN_MS <= {v} <= _MAX_MS", from_ms)
    if unit is None:
        # The magnitude rule (1e11 s is within 9999), minus the ambiguous julian-day range.
        seconds = ("(_MIN_S <= {v} < _JD_LO or _JD_HI <= {v} < _T)", from_s)
        millis = ("(_T <= {v} <= _MAX_MS or _MIN_MS <= {v} <= -_T)", from_ms)
    paths = []
    if unit in (None, "unix_ms") and precision >= 3:  # whole milliseconds need no fraction check
        paths.append(millis)  # first: milliseconds are Prisma's storage, the common case
    if unit in (None, "unix_s"):
        paths.append(seconds)
    return _Plan(convert, tuple((f"type({{v}}) is int and {g}", r) for g, r in paths), base)


def _date(t: TargetType, wire: bool) -> _Plan:
    """date: a date, or on the wire int4 days since 2000-01-01."""
    instant = _instant(t)

    def convert(v: object) -> object:
        if v is None:
            return None
        day = midnight_date(instant(v))
        return day.toordinal() - PG_EPOCH_ORDINAL if wire else day

    return _Plan(convert)


def _time(t: TargetType, wire: bool) -> _Plan:
    """time: a time, or on the wire int8 µs since midnight."""
    precision = 6 if t.precision is None else min(t.precision, 6)
    step = 10 ** (6 - precision)

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is not str:
            raise _refuse_storage(v, "time")
        result = parse_time_text(v)
        if step > 1 and result.microsecond % step:
            check_fraction(result, step, precision)
        if wire:
            return ((result.hour * 60 + result.minute) * 60 + result.second) * 1_000_000 + result.microsecond
        return result

    return _Plan(convert)


def _timetz(t: TargetType) -> _Plan:
    """timetz: an aware time; text without an offset is UTC (see formats.parse_timetz_text)."""
    precision = 6 if t.precision is None else min(t.precision, 6)
    step = 10 ** (6 - precision)

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is not str:
            raise _refuse_storage(v, "timetz")
        result = parse_timetz_text(v)
        if step > 1 and result.microsecond % step:
            check_fraction(result, step, precision)
        return result

    return _Plan(convert)


def _interval(t: TargetType) -> _Plan:
    """interval: integer microseconds (Django) or epoch-relative datetime text (SQLAlchemy), a timedelta."""
    precision = 6 if t.precision is None else min(t.precision, 6)
    step = 10 ** (6 - precision)

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is int or type(v) is float or type(v) is str:
            result = parse_interval(v)
        else:
            raise _refuse_storage(v, "interval")
        if step > 1 and result.microseconds % step:
            raise ValueRefused(f"has {result.microseconds:06d} microseconds; interval({precision}) would round them")
        return result

    if step > 1:
        return _Plan(convert)
    # Every SQLite integer (int64) is within timedelta's range (±8.6e19 µs).
    return _Plan(convert, (("type({v}) is int", "_td(0, 0, {v})"),))


def _network(t: TargetType) -> _Plan:
    """inet / cidr: text to the ipaddress object psycopg writes, and reads back."""
    parse = parse_cidr if t.name == "cidr" else parse_inet

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is not str:
            raise _refuse_storage(v, t.name)
        return parse(v)

    return _Plan(convert)


def _macaddr(t: TargetType) -> _Plan:
    """macaddr / macaddr8: text in any spelling PostgreSQL accepts, or the raw bytes, as the binary form."""
    size = 8 if t.name == "macaddr8" else 6

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is str:
            return parse_macaddr(v, size)
        if type(v) is bytes and len(v) == size:
            return v
        raise _refuse_storage(v, t.name)

    return _Plan(convert)


def _plain(builder: Callable[[TargetType], _Plan]) -> Callable[[TargetType, bool], _Plan]:
    """A builder whose values are the same in wire mode."""
    return lambda t, wire: builder(t)


_BUILDERS: Final[Mapping[str, Callable[[TargetType, bool], _Plan]]] = {
    "smallint": _plain(_integer),
    "integer": _plain(_integer),
    "bigint": _plain(_integer),
    "real": _plain(_real),
    "double precision": _plain(_double),
    "numeric": _plain(_numeric),
    "text": _plain(_text),
    "varchar": _plain(_text),
    "char": _plain(_text),
    "bytea": _plain(_bytea),
    "boolean": _plain(_boolean),
    "timestamptz": _timestamp,
    "timestamp": _timestamp,
    "date": _date,
    "time": _time,
    "json": _json,
    "jsonb": _json,
    "uuid": _plain(_uuid),
    "enum": _plain(_enum),
    "citext": _plain(_text),
    "interval": _plain(_interval),
    "inet": _plain(_network),
    "cidr": _plain(_network),
    "macaddr": _plain(_macaddr),
    "macaddr8": _plain(_macaddr),
    "timetz": _plain(_timetz),
}


def _plan(t: TargetType, wire: bool = False) -> _Plan:
    builder = _BUILDERS.get(t.name)
    if builder is None:
        raise UnsupportedType(
            f"target type {t.name!r} is not a normalised type name", hint="build TargetType with parse_type()"
        )
    return builder(t, wire)


def value_converter(t: TargetType, *, wire: bool = False) -> Converter:
    """One column's converter: source value → value for psycopg's binary dumper of ``t``.

    Raises :class:`ValueRefused` (with ``.reason``) for a value that the column cannot hold exactly.
    ``wire=True``: see :func:`row_converter`.
    """
    return _plan(t, wire).convert


def row_converter(
    table: str,
    columns: Sequence[str],
    types: Sequence[TargetType],
    *,
    wire: bool = False,
    watch: Mapping[int, Callable[[object], bool]] | None = None,
    missed: list[int] | None = None,
    extra: bool = False,
) -> RowConverter:
    """One table's row converter, compiled once; raises :class:`RowRefused` naming the column.

    The generated function unpacks the row and, per column, computes the value inline when a fast
    path's guard holds (an in-range int into bigint, integer milliseconds into timestamp(3), a double
    into numeric(65,30)...), else calls the column's converter.

    ``wire=True`` is for binary COPY only (pair it with ``copy_types(types, wire=True)``): datetimes
    are produced directly in PostgreSQL's binary form (int8 µs / int4 days since 2000-01-01) and
    jsonb as its binary form (version byte 1 + the text, sent with psycopg's C text dumper),
    skipping the datetime and Json objects and psycopg's Python JSON dumper: the same bytes reach
    the server, faster. The default (semantic) values suit SQL parameters as well as COPY.

    ``watch`` (column position → predicate) checks every value of those columns that misses the
    fast paths: one the predicate rejects appends its position to ``missed`` before it is
    converted (a NULL counts as missed when the predicate rejects None). The snapshot uses it to
    prove that a type chosen from a sample of the table held for every row. ``extra``: rows may
    carry more values after these columns (ignored).
    """
    if len(columns) != len(types):
        raise ValueError(f"{len(columns)} columns but {len(types)} types for table {table}")
    plans = [_plan(t, wire) for t in types]
    converters = [p.convert for p in plans]
    namespace: dict[str, object] = {
        **_INLINE_NAMES,
        "_locate": _locator(table, columns, converters),
        "ValueRefused": ValueRefused,
    }
    exprs: list[str] = []
    watch = watch or {}
    for i, p in enumerate(plans):
        namespace[f"c{i}"] = p.convert
        namespace[f"k{i}"] = p.const
        v, k = f"v{i}", f"k{i}"
        branches = "".join(
            f"({result.format(v=v, k=k)}) if ({guard.format(v=v, k=k)}) else " for guard, result in p.fast
        )
        if i in watch:
            assert missed is not None, "watch needs a missed list"
            namespace[f"c{i}"] = _watched(i, watch[i], p.convert, missed)
            null = f"c{i}(None)" if not watch[i](None) else "None"
            if types[i].name not in _EXACT_FAST:  # a fast path for another storage class: watch every value
                branches = ""
            exprs.append(f"({null} if {v} is None else {branches}c{i}({v}))")
            continue
        exprs.append(f"(None if {v} is None else {branches}c{i}({v}))")
    if not plans:
        return lambda row: ()
    names = ", ".join(f"v{i}" for i in range(len(plans)))
    source = (
        "def convert_row(row):\n"
        "    try:\n"
        f"        {names}, {'*_' if extra else ''} = row\n"
        f"        return ({', '.join(exprs)},)\n"
        "    except ValueRefused:\n"
        "        raise _locate(row) from None\n"
    )
    exec(compile(source, f"<row_converter {table}>", "exec"), namespace)
    function: RowConverter = namespace["convert_row"]  # type: ignore[assignment]
    return function


#: Types whose fast paths take only values already of the target's Python type (``_unchanged``):
#: a watched column keeps them. Others (a timestamp's integer epochs) send every value to the watch.
_EXACT_FAST: Final = frozenset(
    {"smallint", "integer", "bigint", "double precision", "text", "varchar", "char", "bytea", "citext"}
)


def _watched(position: int, ok: Callable[[object], bool], convert: Converter, missed: list[int]) -> Converter:
    def watched(v: object) -> object:
        if not ok(v) and not missed:  # the first miss is all the caller needs
            missed.append(position)
        return None if v is None else convert(v)

    return watched


def _locator(
    table: str, columns: Sequence[str], converters: Sequence[Converter]
) -> Callable[[Sequence[object]], RowRefused]:
    """Error path only: find the first refused value of a row and describe it."""

    def locate(row: Sequence[object]) -> RowRefused:
        for column, convert, value in zip(columns, converters, row, strict=True):
            try:
                convert(value)
            except ValueRefused as exc:
                return RowRefused(table, column, value, exc.reason, exc.hint, exc.setting)
        return RowRefused(table, "?", row, "refused, but no single value is refused on its own")

    return locate


def convert_value(table: str, column: str, t: TargetType, value: object) -> object:
    """Convert one value outside a row; raises RowRefused. Builds the converter: not for loops."""
    try:
        return value_converter(t)(value)
    except ValueRefused as exc:
        raise RowRefused(table, column, value, exc.reason, exc.hint, exc.setting) from None
