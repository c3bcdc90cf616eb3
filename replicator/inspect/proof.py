"""verify's independent reading: what a value *means*, read from each database without the load's code.

Why: the snapshot and the apply convert every SQLite value with :mod:`replicator.values.convert`. A verify
that ran the same converters over SQLite and compared the result with PostgreSQL would agree with any
mistake they make (a decimal rounded at the wrong digit, milliseconds read as seconds): it would only
prove that PostgreSQL holds what the load wrote. So verify's SQLite side is computed here, from the
Python values ``sqlite3`` itself returns (None, int, float, str, bytes; a ``str`` holding lone
surrogates U+DC80..U+DCFF means bytes that were not UTF-8, see ``convert_text.decode_text``'s reading
convention), and its PostgreSQL side from the values psycopg's own loaders return (int, Decimal, float,
str, bytes, bool, datetime, date, time, UUID; json, jsonb, enum, char and unknown types as PostgreSQL's
text output). Both sides are brought to one **canonical form** per column, decided by the column's
*meaning*: its PostgreSQL type and the storage format the plan recorded for the SQLite column
(``TargetType.format``: ``unix_ms`` and so on; the plan says *what* a stored value means, this module
decides *how* to read it). This module imports nothing from ``replicator.values`` (its converters and
parsers) or ``replicator.plan.typemap`` (a test checks it): a bug there cannot be repeated here.

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

import datetime as dt
import ipaddress
import json
import math
import re
import struct
import uuid
from collections.abc import Callable, Sequence
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal
from fractions import Fraction
from typing import Any, Final, Protocol

__all__ = [
    "Unreadable",
    "decimal_of_real",
    "key_value",
    "source_row",
    "target_row",
    "text_output",
    "unreadable",
]


class ColumnType(Protocol):
    """What this module needs of a column's type (``targettype.TargetType`` has it; not imported here)."""

    @property
    def name(self) -> str: ...
    @property
    def scale(self) -> int | None: ...
    @property
    def precision(self) -> int | None: ...
    @property
    def format(self) -> str | None: ...
    @property
    def strip_nul(self) -> bool: ...
    @property
    def replace_bad_utf8(self) -> bool: ...


Read = Callable[[Any], Any]

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
UNREADABLE: Final = "\x00?"
_EXACT: Final = Context(prec=2000, rounding=ROUND_HALF_EVEN)
_EPOCH: Final = dt.datetime(1970, 1, 1)
_EPOCH_UTC: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US: Final = dt.timedelta(microseconds=1)
_MS_FROM: Final = 100_000_000_000
"""No unit recorded: an epoch number of at least this magnitude is milliseconds (1e11 s is year 5138)."""
_UNITS: Final = {"unix_s": 1_000_000, "unix_ms": 1_000, "unix_us": 1}
_JULIAN_UNIX_MS: Final = 210_866_760_000_000
"""SQLite's date.c: the unix epoch as milliseconds since julian day 0."""
_INT: Final = re.compile(r"[+-]?[0-9]+")
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INSTANT: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"(?: ?(Z|z|UTC|([+-])([0-9]{2})(?::?([0-9]{2}))?))?)?"
)
_CLOCK: Final = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?")
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}")
_TRUE: Final = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE: Final = frozenset({"f", "false", "n", "no", "off", "0"})


class Unreadable(ValueError):
    """A SQLite key value the column's rule cannot read (key bounds skip it)."""


def unreadable(value: object) -> str:
    """The marker of a value the rule cannot read: equal to nothing PostgreSQL returns."""
    kind = {int: "integer", float: "real", str: "text", bytes: "blob"}.get(type(value), type(value).__name__)
    return f"{UNREADABLE}{kind}:{value!r}"


# --- numbers -------------------------------------------------------------------------------------


def plain(number: Decimal) -> str:
    """An exact number's canonical text: plain notation, no exponent, no trailing zeros, ``0`` unsigned."""
    if not number.is_finite():
        return "NaN" if number.is_nan() else ("-Infinity" if number < 0 else "Infinity")
    if number == 0:
        return "0"
    return format(number.normalize(_EXACT), "f")


def decimal_of_real(
    number: float | int, scale: int | None, reader: str | None = None, precision: int | None = None
) -> Decimal:
    """The meaning of a number stored for a decimal column: the value the ORM reads back.

    The plan records which reader the column has (``TargetType.format``); how it reads is written here,
    apart from the load's :func:`replicator.values.decimals.app_decimal`:

    * no reader (Prisma, plain SQL): the shortest decimal that round-trips the double (``repr``),
      quantized to the column's scale (half-even); an integer is itself;
    * ``real15`` (a Django project): Django's SQLite backend, 15 significant digits of the number
      (``Context(prec=15).create_decimal_from_float``, integers too), then quantized to the scale;
    * ``sqlalchemy``: ``Decimal("%.{scale}f" % value)`` (``to_decimal_processor_factory``; scale 10 when the
      type has none), i.e. the double's exact binary value rounded half-even to that many places;
    * ``rails``: ActiveModel's ``Type::Decimal``, see :func:`_rails_decimal`.
    """
    if reader == "real15":
        fifteen = Context(prec=15, rounding=ROUND_HALF_EVEN).create_decimal_from_float(number)
        return fifteen if scale is None else fifteen.quantize(Decimal(1).scaleb(-scale), context=_EXACT)
    if reader == "sqlalchemy" and math.isfinite(number):
        places = 10 if scale is None else scale
        return Decimal(float(number)).quantize(Decimal(1).scaleb(-places), context=_EXACT)
    if reader == "rails" and type(number) is float and math.isfinite(number):
        return _rails_decimal(number, precision, scale)
    exact = Decimal(number) if type(number) is int else Decimal(repr(number))
    if scale is None or not exact.is_finite():
        return exact
    return exact.quantize(Decimal(1).scaleb(-scale), context=_EXACT)


def _rails_decimal(number: float, precision: int | None, scale: int | None) -> Decimal:
    """ActiveRecord's read of a Float from a SQLite decimal column (``ActiveModel::Type::Decimal``):
    scale 0 is an integer type (``to_i``, toward zero); no precision is ``Float#to_d`` (its shortest
    digits, cut to 16); otherwise ``BigDecimal(value.round(scale), min(precision, 16)).round(scale)``,
    BigDecimal rounding half up."""
    if scale == 0:
        return Decimal(math.trunc(number))
    if precision is None or scale is None or scale < 0:
        return Context(prec=16, rounding=ROUND_DOWN).plus(Decimal(repr(number)))
    nearest = Context(prec=min(precision, 16), rounding=ROUND_HALF_EVEN).plus(Decimal(_ruby_round(number, scale)))
    return nearest.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP, context=_EXACT)


def _ruby_round(x: float, digits: int) -> float:
    """Ruby's ``Float#round(digits)``, digits > 0 (numeric.c ``flo_round`` with ``round_half_up``)."""
    if x == 0.0:
        return x
    exp2 = math.frexp(x)[1]
    if exp2 > 0:
        kept, gone = 17 - math.trunc(exp2 / 4), -(math.trunc(exp2 / 3) + 1)
    else:
        kept, gone = 17 - (math.trunc(exp2 / 3) - 1), -math.trunc(exp2 / 4)
    if digits >= kept:
        return x  # the double has no digit there
    if digits < gone:
        return 0.0
    if digits > 14:
        scaled = Fraction(x) * 10**digits
        whole = math.floor(abs(scaled) + Fraction(1, 2))
        rounded = Fraction(whole if x > 0 else -whole, 10**digits)
        return float(rounded.numerator) / float(rounded.denominator)
    s = float(10**digits)
    f = float(Decimal(x * s).to_integral_value(rounding=ROUND_HALF_UP))  # C's round(): half away from zero
    if x > 0 and (f + 0.5) / s <= x:
        f += 1
    if x < 0 and (f - 0.5) / s >= x:
        f -= 1
    return f / s


def _decimal_text(text: str) -> Decimal | None:
    return Decimal(text) if _NUMBER.fullmatch(text) else None


def _float4(number: float) -> float:
    return float(struct.unpack("f", struct.pack("f", number))[0])


def _shortest_float4(value: float) -> str:
    """The shortest decimal text that reads back as this float4 (how PostgreSQL prints a real)."""
    if not math.isfinite(value):
        return "NaN" if value != value else ("-Infinity" if value < 0 else "Infinity")
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if _float4(float(text)) == value:
            return plain(Decimal(text))
    return plain(Decimal(repr(value)))


def _number(value: object) -> Decimal | None:
    """An exact number from integer, real (its repr) or decimal text; None for anything else."""
    if type(value) is int:
        return Decimal(value)
    if type(value) is float:
        return Decimal(repr(value))
    if type(value) is str:
        return _decimal_text(value)
    return None


def _integer_source(value: object) -> object:
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is str and _INT.fullmatch(value):
        return int(value)
    return unreadable(value)


def _double_source(value: object) -> object:
    if type(value) is float:
        return value
    if type(value) is int and float(value) == value:
        return float(value)
    if type(value) is str:
        exact = _decimal_text(value)
        if exact is not None and math.isfinite(float(exact)) and Decimal(repr(float(exact))) == exact:
            return float(exact)
    return unreadable(value)


def _real_source(value: object) -> object:
    number = _number(value)
    return unreadable(value) if number is None else plain(number)


def _real_target(value: object) -> object:
    return _shortest_float4(value) if type(value) is float else value


def _numeric_source(t: ColumnType) -> Read:
    scale, reader, precision = t.scale, t.format, t.precision

    def read(value: object) -> object:
        if type(value) is float or (reader in ("real15", "sqlalchemy") and type(value) is int):
            return plain(decimal_of_real(value, scale, reader, precision))
        number = _number(value)
        return unreadable(value) if number is None else plain(number)

    return read


def _numeric_target(value: object) -> object:
    return plain(value) if isinstance(value, Decimal) else plain(Decimal(value)) if type(value) is int else value


# --- text and bytes ------------------------------------------------------------------------------


def _text_source(t: ColumnType) -> Read:
    strip_nul, replace_bad, pad = t.strip_nul, t.replace_bad_utf8, t.name == "char"

    def clean(text: str) -> object:
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: the source bytes were not UTF-8
                raw = text.encode("utf-8", "surrogateescape")
                if not replace_bad:
                    return raw
                text = raw.decode("utf-8", "replace")
        if strip_nul:
            text = text.replace("\x00", "")
        return text.rstrip(" ") if pad else text

    def read(value: object) -> object:
        if type(value) is str:
            return clean(value)
        if type(value) is int:
            return str(value)
        if type(value) is float:
            return repr(value)
        if type(value) is bytes:
            try:
                return clean(value.decode("utf-8"))
            except UnicodeDecodeError:
                return clean(value.decode("utf-8", "surrogateescape"))
        return unreadable(value)

    return read


def _char_target(value: object) -> object:
    return value.rstrip(" ") if type(value) is str else value


def _bytea_source(value: object) -> object:
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode("utf-8", "surrogateescape")
    return unreadable(value)


def _bytea_target(value: object) -> object:
    return bytes(value) if isinstance(value, bytearray | memoryview) else value


def _boolean_source(value: object) -> object:
    if type(value) is int or type(value) is float:
        if value in (0, 1):
            return value == 1
    elif type(value) is str:
        word = value.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return unreadable(value)


# --- date and time -------------------------------------------------------------------------------


def _at(micros: int, aware: bool) -> dt.datetime | None:
    """The instant ``micros`` after the epoch: aware UTC, or naive UTC wall time; None outside years 1..9999."""
    try:
        return (_EPOCH_UTC if aware else _EPOCH) + micros * _US
    except OverflowError:
        return None


def _fraction(digits: str | None) -> int | None:
    """Microseconds of a fraction text; None if digits past the sixth are not zeros."""
    if not digits:
        return 0
    if digits[6:].strip("0"):
        return None
    return int(digits[:6].ljust(6, "0"))


def _instant_text(text: str) -> int | None:
    """Microseconds since 1970-01-01 UTC of a date-time text (no offset: UTC); None if not one."""
    match = _INSTANT.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, _zone, sign, zone_h, zone_m = match.groups()
    micros = _fraction(fraction)
    if micros is None:
        return None
    try:
        wall = dt.datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError:
        return None
    offset = 0
    if sign is not None:
        if int(zone_h) > 23 or int(zone_m or 0) > 59:
            return None
        offset = (int(zone_h) * 60 + int(zone_m or 0)) * (1 if sign == "+" else -1)
    return (wall - _EPOCH) // _US + micros - offset * 60_000_000


def _epoch_micros(number: int | float | Decimal, unit: str | None) -> int | None:
    """Microseconds of an epoch number in ``unit`` (None: by magnitude); None if not whole microseconds."""
    if unit == "julian_day":
        millis = int(float(number) * 86_400_000.0 + 0.5)  # SQLite's date.c reads a julian day so
        return (millis - _JULIAN_UNIX_MS) * 1000
    if unit not in _UNITS:
        unit = "unix_ms" if abs(float(number)) >= _MS_FROM else "unix_s"
    if type(number) is int:
        return number * _UNITS[unit]
    exact = (Decimal(repr(number)) if type(number) is float else Decimal(number)) * _UNITS[unit]
    return int(exact) if exact == exact.to_integral_value() else None


def _instant_micros(value: object, unit: str | None) -> int | None:
    if type(value) is int or type(value) is float:
        return _epoch_micros(value, unit) if math.isfinite(value) else None
    if type(value) is str:
        if unit is not None and _NUMBER.fullmatch(value):
            return _epoch_micros(Decimal(value), unit)
        return _instant_text(value)
    return None


def _timestamp_source(t: ColumnType) -> Read:
    unit = t.format if t.format in (*_UNITS, "julian_day") else None
    aware = t.name == "timestamptz"

    def read(value: object) -> object:
        micros = _instant_micros(value, unit)
        instant = None if micros is None else _at(micros, aware)
        return unreadable(value) if instant is None else instant

    return read


def _timestamp_target(value: object) -> object:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    return value


def _date_source(t: ColumnType) -> Read:
    unit = t.format if t.format in (*_UNITS, "julian_day") else None

    def read(value: object) -> object:
        micros = _instant_micros(value, unit)
        instant = None if micros is None or micros % 86_400_000_000 else _at(micros, False)
        return unreadable(value) if instant is None else instant.date()

    return read


def _time_source(value: object) -> object:
    if type(value) is str:
        match = _CLOCK.fullmatch(value)
        if match is not None:
            hour, minute, second, fraction = match.groups()
            micros = _fraction(fraction)
            if micros is not None:
                try:
                    return dt.time(int(hour), int(minute), int(second or 0), micros)
                except ValueError:
                    pass
    return unreadable(value)


# --- JSON, uuid ----------------------------------------------------------------------------------


def _no_constant(word: str) -> object:
    raise ValueError(f"{word} is not JSON")


def _json_canon(doc: object, strip_nul: bool) -> str:
    if doc is None:
        return "null"
    if doc is True:
        return "true"
    if doc is False:
        return "false"
    if isinstance(doc, Decimal | int):
        return plain(Decimal(doc))
    if isinstance(doc, str):
        return json.dumps(doc.replace("\x00", "") if strip_nul else doc, ensure_ascii=False)
    if isinstance(doc, list):
        return "[" + ",".join(_json_canon(item, strip_nul) for item in doc) + "]"
    assert isinstance(doc, dict)
    items = ((k.replace("\x00", "") if strip_nul else k, v) for k, v in doc.items())
    ordered = sorted(items, key=lambda item: item[0])
    return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_json_canon(v, strip_nul)}" for k, v in ordered) + "}"


def _json_text(text: str, strip_nul: bool) -> str | None:
    try:
        doc = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    try:
        return _json_canon(doc, strip_nul)
    except RecursionError:
        return None


def _json_source(t: ColumnType) -> Read:
    strip_nul = t.strip_nul

    def read(value: object) -> object:
        text: str | None = None
        if type(value) is str:
            text = value
        elif type(value) is bytes:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        elif type(value) is int:
            return plain(Decimal(value))
        elif type(value) is float and math.isfinite(value):
            return plain(Decimal(repr(value)))
        canon = None if text is None else _json_text(text, strip_nul)
        return unreadable(value) if canon is None else canon

    return read


def _json_target(t: ColumnType) -> Read:
    strip_nul = t.strip_nul

    def read(value: object) -> object:
        if type(value) is str:
            canon = _json_text(value, strip_nul)
            return unreadable(value) if canon is None else canon
        return value

    return read


def _uuid_source(value: object) -> object:
    if type(value) is str and _UUID.fullmatch(value):
        return uuid.UUID(value)
    if type(value) is bytes and len(value) == 16:
        return uuid.UUID(bytes=value)
    return unreadable(value)


# --- the rule table ------------------------------------------------------------------------------


def _same(value: object) -> object:
    return value


# --- interval, network addresses, timetz -------------------------------------------------------------


def _interval_source(value: object) -> object:
    """Django stores a duration as integer microseconds; SQLAlchemy as the epoch plus the duration."""
    if type(value) is int:
        return value
    if type(value) is str:
        micros = _instant_text(value)
        if micros is None:
            micros = _interval_text(value)
        if micros is not None:
            return micros
    return unreadable(value)


_INTERVAL: Final = re.compile(r"(?:([+-]?\d+) days?)?\s*(?:([+-]?)(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?)?")


def _interval_text(text: str) -> int | None:
    """PostgreSQL's own interval spelling ('1 day', '-1 days +23:59:59.999999', '00:00:05') in microseconds."""
    match = _INTERVAL.fullmatch(text.strip())
    if match is None or not text.strip():
        return None
    days, sign, hours, minutes, seconds, fraction = match.groups()
    clock = 0
    if hours is not None:
        clock = ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1_000_000 + int((fraction or "").ljust(6, "0"))
        clock = -clock if sign == "-" else clock
    return int(days or 0) * 86_400_000_000 + clock


def _interval_target(value: object) -> object:
    if isinstance(value, dt.timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return value


def _inet(value: object) -> object:
    """An address as PostgreSQL's inet prints it: the prefix only when it is not the whole address."""
    try:
        iface = ipaddress.ip_interface(str(value))
    except ValueError:
        return unreadable(value)
    return str(iface.ip) if iface.network.prefixlen == iface.max_prefixlen else str(iface)


def _cidr(value: object) -> object:
    try:
        return str(ipaddress.ip_network(str(value), strict=True))
    except ValueError:
        return unreadable(value)


def _mac(eight: bool) -> Read:
    def read(value: object) -> object:
        if type(value) is not str:
            return unreadable(value)
        digits = re.sub(r"[:.\-]", "", value).lower()
        if eight and len(digits) == 12:  # a 6-byte address in a macaddr8 column: ff:fe in the middle
            digits = digits[:6] + "fffe" + digits[6:]
        if len(digits) != (16 if eight else 12) or not re.fullmatch(r"[0-9a-f]+", digits):
            return unreadable(value)
        return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))

    return read


_TIMETZ: Final = re.compile(r"(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?\s*(?:(Z|UTC)|([+-])(\d\d)(?::?(\d\d))?)?")


def _timetz(value: object) -> object:
    """(microseconds since midnight, offset in seconds): text without an offset is UTC."""
    if type(value) is not str:
        return unreadable(value)
    match = _TIMETZ.fullmatch(value.strip())
    if match is None:
        return unreadable(value)
    hour, minute, second, fraction, _utc, sign, oh, om = match.groups()
    micros = ((int(hour) * 60 + int(minute)) * 60 + int(second or 0)) * 1_000_000 + int((fraction or "").ljust(6, "0"))
    offset = 0 if sign is None else (1 if sign == "+" else -1) * (int(oh) * 3600 + int(om or 0) * 60)
    return f"{micros}{offset:+d}"


def _text_form(value: object) -> object:
    """Fallback: SQLite's value as text, the way PostgreSQL would print the same thing."""
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return repr(value)
    if type(value) is bytes:
        return "\\x" + value.hex()
    return unreadable(value)


def _source(t: ColumnType) -> Read:
    name = t.name
    if name in ("smallint", "integer", "bigint"):
        return _integer_source
    if name == "double precision":
        return _double_source
    if name == "real":
        return _real_source
    if name == "numeric":
        return _numeric_source(t)
    if name in ("text", "varchar", "char", "enum"):
        return _text_source(t)
    if name == "bytea":
        return _bytea_source
    if name == "boolean":
        return _boolean_source
    if name in ("timestamp", "timestamptz"):
        return _timestamp_source(t)
    if name == "date":
        return _date_source(t)
    if name == "time":
        return _time_source
    if name in ("json", "jsonb"):
        return _json_source(t)
    if name == "uuid":
        return _uuid_source
    if name == "interval":
        return _interval_source
    if name == "inet":
        return _inet
    if name == "cidr":
        return _cidr
    if name in ("macaddr", "macaddr8"):
        return _mac(name == "macaddr8")
    if name == "timetz":
        return _timetz
    return _text_form


def _target(t: ColumnType) -> Read:
    name = t.name
    if name == "real":
        return _real_target
    if name == "numeric":
        return _numeric_target
    if name == "char":
        return _char_target
    if name == "bytea":
        return _bytea_target
    if name in ("timestamp", "timestamptz"):
        return _timestamp_target
    if name in ("json", "jsonb"):
        return _json_target(t)
    if name == "interval":
        return _interval_target
    if name == "inet":
        return _inet
    if name == "cidr":
        return _cidr
    if name == "timetz":
        return _timetz
    return _same  # int, float, str, bool, date, time, UUID and macaddr text are canonical as psycopg returns them


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
