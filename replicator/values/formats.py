"""Exact parsing of the datetime and number spellings found in SQLite files.

SQLite has no datetime or decimal type: applications store instants as unix seconds, unix
milliseconds, ISO-8601 text with or without an offset, or SQL ``YYYY-MM-DD HH:MM:SS[.fff]`` text
(see shared/research/realworld.md §2), and decimals as binary doubles. Every function here either
returns the exact value the text or number denotes or raises :class:`ValueRefused` with a short
reason; none rounds, truncates or guesses silently. Grammars are deliberately strict (ASCII digits
only, no surrounding whitespace) so that what is accepted is unambiguous.
"""

from __future__ import annotations

import ipaddress
import math
import re
import struct
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal, Inexact, InvalidOperation
from fractions import Fraction
from typing import Final, Literal

EPOCH: Final = datetime(1970, 1, 1)
EPOCH_UTC: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: Without an explicit ``format``, an epoch number whose magnitude is at least this is read as
#: milliseconds, below it as seconds. 1e11 s is the year 5138 and 1e11 ms is 1973-03-03, so the rule
#: is only wrong for milliseconds within 1970-01-01 .. 1973-03-03 (read as seconds, years up to
#: 5138): set ``format = "unix_ms"`` for such a column.
MS_THRESHOLD: Final = 100_000_000_000

Unit = Literal["unix_s", "unix_ms", "julian_day"]
#: Formats that say how a datetime column's numbers count time.
NUMBER_FORMATS: Final = ("unix_s", "unix_ms", "julian_day")

#: Julian day numbers (SQLite's julianday(), a REAL) of 0001-01-01 and 10000-01-01, 00:00 UTC.
#: Read as unix seconds they would be 1970-01-20 .. 1970-03-04, so without a format a number in
#: this range is refused as ambiguous rather than guessed.
JULIAN_MIN: Final = 1_721_425.5
JULIAN_MAX: Final = 5_373_484.5
#: SQLite's date.c: julian day 0 in milliseconds, and the unix epoch as such (iJD).
_UNIX_EPOCH_IJD: Final = 210_866_760_000_000

_MICROS_PER_UNIT: Final = {"unix_s": 1_000_000, "unix_ms": 1_000}
#: Multiplies exactly (or raises Inexact): the default context would round past 28 digits.
_EXACT: Final = Context(prec=80, traps=[Inexact])
#: No epoch number this large is within years 1..9999 in either unit.
_EPOCH_LIMIT: Final = 10**18


class ValueRefused(Exception):
    """One value cannot be written exactly to its target column.

    Raised per value on the hot path, so it carries only a short ``reason`` (and an optional
    ``hint``); :class:`replicator.values.convert.RowRefused` adds table, column and value.
    """

    __slots__ = ("hint", "reason", "setting")

    def __init__(self, reason: str, hint: str = "", setting: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint
        self.setting = setting
        """A column setting that makes the value load (``strip_nul = true``): the hint spells it out
        with the table and column (:func:`replicator.config.column_fix`)."""

    def __reduce__(self) -> tuple[type[ValueRefused], tuple[str, str, str]]:
        return (ValueRefused, (self.reason, self.hint, self.setting))


# -- datetimes -----------------------------------------------------------------------------------

# Date, then optionally [T t space] HH:MM[:SS[.fraction]], then optionally an offset: Z, z, UTC,
# ±HH, ±HHMM or ±HH:MM, optionally after one space (Ruby's Time#to_s writes "... 06:07:08 +0000").
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"(?: ?(Z|z|UTC|[+-][0-9]{2}(?::?[0-9]{2})?))?)?"
)
_TIME = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _micros(fraction: str | None) -> int:
    """Microseconds of a fraction-of-second text; digits past the sixth must be zeros."""
    if not fraction:
        return 0
    if len(fraction) > 6:
        if fraction[6:].strip("0"):
            raise ValueRefused(f"fraction .{fraction} is finer than a microsecond; it would be rounded")
        fraction = fraction[:6]
    return int(fraction.ljust(6, "0"))


def _offset(text: str) -> timezone:
    if text in ("Z", "z", "UTC"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or "0")
    if hours > 23 or minutes > 59:
        raise ValueRefused(f"time zone offset {text} is not valid")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _parse(text: str) -> tuple[datetime, str | None]:
    """The datetime a text spells (aware when it has an offset) and its offset text, by the grammar."""
    match = _DATETIME.fullmatch(text)
    if match is None:
        raise ValueRefused("not an ISO-8601 or 'YYYY-MM-DD HH:MM:SS[.fff]' datetime")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        if hour is None:
            return datetime(int(year), int(month), int(day)), None
        tz = _offset(offset) if offset else None
        parts = int(year), int(month), int(day), int(hour), int(minute), int(second or 0), _micros(fraction)
        return datetime(*parts, tzinfo=tz), offset
    except ValueError as exc:
        if isinstance(exc, ValueRefused):
            raise
        raise ValueRefused(f"not a valid datetime: {exc}") from None


def parse_datetime_text(text: str) -> datetime:
    """An ISO-8601 / SQL datetime or date text, exactly; aware when the text has an offset.

    Accepted: ``YYYY-MM-DD``, ``YYYY-MM-DD[T ]HH:MM[:SS[.f{1,}]]`` with an optional ``Z``, ``UTC``,
    ``±HH``, ``±HHMM`` or ``±HH:MM``. Refused: anything else, seconds 60 (leap seconds; PostgreSQL
    would roll them into the next minute), hour 24, year 0, and fractions finer than 1 µs unless
    the extra digits are zeros.
    """
    if text.isascii():
        cut = _FAST_SHAPES.get(text.encode().translate(_NINES))
        if cut is not None:
            try:
                return datetime.fromisoformat(text)
            except ValueError:
                pass  # the grammar's reading below gives the precise reason
    return _parse(text)[0]


# Fast path. The grammar's common layouts are read by datetime.fromisoformat (C, ~10x faster than
# the regex). A layout is recognised by its "shape": the text's bytes with every ASCII digit made 9.
# Each candidate shape is checked once, at import, against the grammar's own reading of a sample,
# so a Python whose fromisoformat reads a layout differently (or not at all) simply keeps the slow
# path for it: fromisoformat in 3.11 refuses "08.5 +01:00", for one.
_NINES: Final = bytes.maketrans(b"0123456789", b"9999999999")
_ZERO_OFFSETS: Final = frozenset({"Z", "+00", "-00", "+0000", "-0000", "+00:00", "-00:00"})


def _fast_shapes() -> dict[bytes, int]:
    """Shape → length of the part before the offset, for layouts fromisoformat reads like _parse
    (a date alone too: Django's DateField, SQLAlchemy's Date)."""
    times = ["06:07", "06:07:08", *(f"06:07:08{mark}{'123456'[:n]}" for mark in ".," for n in range(1, 7))]
    zones = ("Z", "+01", "-01", "+0130", "-0130", "+01:30", "-01:30")
    offsets = ["", *(f"{space}{zone}" for space in ("", " ") for zone in zones)]
    shapes: dict[bytes, int] = {}
    samples = [("2024-03-05", "")]
    samples += [(f"2024-03-05{sep}{clock}{offset}", offset) for sep in "Tt " for clock in times for offset in offsets]
    for text, offset in samples:
        try:
            if datetime.fromisoformat(text) != _parse(text)[0]:
                continue
        except (ValueError, ValueRefused):
            continue
        shapes[text.encode().translate(_NINES)] = len(text) - len(offset)
    return shapes


#: The shape of a date alone (``YYYY-MM-DD``): no time, so no offset to append for an aware result.
_DATE_SHAPE_LENGTH: Final = 10


_FAST_SHAPES: Final = _fast_shapes()


def parse_instant_text(text: str, aware: bool) -> datetime:
    """The UTC instant of a datetime text: aware UTC when ``aware``, else naive UTC wall time.

    Text without an offset is taken as UTC. For the common layouts with no or a zero offset this
    costs one fromisoformat call (``datetime.replace`` is avoided: it is slower than parsing): the
    hot path for Prisma 7's ``2024-03-05T06:07:08.009+00:00`` and SQL ``2024-03-05 06:07:08``.
    """
    if text.isascii():
        cut = _FAST_SHAPES.get(text.encode().translate(_NINES))
        if cut is not None:
            zone = text[cut:].lstrip(" ")
            try:
                if not zone:
                    if cut == _DATE_SHAPE_LENGTH:  # a date alone: midnight UTC
                        return (
                            datetime.fromisoformat(text).replace(tzinfo=UTC) if aware else datetime.fromisoformat(text)
                        )
                    return datetime.fromisoformat(text + "+00:00" if aware else text)
                if zone in _ZERO_OFFSETS:
                    return datetime.fromisoformat(text) if aware else datetime.fromisoformat(text[:cut])
                return _to_utc(datetime.fromisoformat(text), aware)
            except ValueError:
                pass  # the grammar's reading below gives the precise reason
    value, offset = _parse(text)
    if offset is None:
        return value.replace(tzinfo=UTC) if aware else value
    return _to_utc(value, aware)


def _to_utc(value: datetime, aware: bool) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueRefused(f"{value.isoformat()} is outside years 1..9999 in UTC") from None
    return utc if aware else utc.replace(tzinfo=None)


def parse_time_text(text: str) -> time:
    """A time of day ``HH:MM[:SS[.f]]`` (Django's TimeField, SQLAlchemy's Time) exactly."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueRefused("not a 'HH:MM[:SS[.ffffff]]' time of day")
    hour, minute, second, fraction = match.groups()
    try:
        return time(int(hour), int(minute), int(second or 0), _micros(fraction))
    except ValueError as exc:
        if isinstance(exc, ValueRefused):
            raise
        raise ValueRefused(f"not a valid time: {exc}") from None


def parse_timetz_text(text: str) -> time:
    """A time of day with an offset, ``HH:MM[:SS[.f]][±HH[:MM]|Z]``, as an aware time.

    Without an offset the time is UTC: SQLAlchemy's ``Time(timezone=True)`` on SQLite stores the
    wall time and drops the zone (realworld.md §2.4), and every ORM here writes UTC.
    """
    match = _TIMETZ.fullmatch(text)
    if match is None:
        raise ValueRefused("not a 'HH:MM[:SS[.ffffff]][+HH:MM]' time of day")
    clock, offset = match.groups()
    return parse_time_text(clock).replace(tzinfo=_offset(offset) if offset else UTC)


_TIMETZ = re.compile(r"([0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?) ?(Z|z|UTC|[+-][0-9]{2}(?::?[0-9]{2})?)?")


def unit_of(number: int | float, unit: str | None) -> Unit:
    """The unit of a datetime number: the column's declared format, else the magnitude rule.

    Without a format: |v| >= MS_THRESHOLD is milliseconds; a number in the julian-day range is
    refused as ambiguous; anything else is seconds.
    """
    if unit == "unix_s":
        return "unix_s"
    if unit == "unix_ms":
        return "unix_ms"
    if unit == "julian_day":
        return "julian_day"
    if abs(number) >= MS_THRESHOLD:
        return "unix_ms"
    if JULIAN_MIN <= number < JULIAN_MAX:
        raise ValueRefused(
            f"{number!r} is ambiguous: a julian day number (SQLite julianday()) or unix seconds in early 1970",
            hint="format = 'unix_s' reads it as seconds instead",
            setting='format = "julian_day"',
        )
    return "unix_s"


def julian_millis(number: int | float | Decimal) -> int:
    """Unix milliseconds of a julian day number, read exactly as SQLite reads it.

    SQLite's date functions keep julian days as integer milliseconds, rounding the REAL to the
    nearest millisecond (date.c: ``iJD = r*86400000.0 + 0.5``); that is the instant the application
    sees through datetime()/strftime(), so it is the exact value here, not an alteration.
    """
    if type(number) is int:
        ijd = number * 86_400_000
    else:
        real = float(number)
        if real != real or real in (float("inf"), float("-inf")):
            raise ValueRefused(f"{number!r} is not an instant")
        if not JULIAN_MIN <= real < JULIAN_MAX:
            raise ValueRefused(f"julian day {number} is outside years 1..9999")
        ijd = int(real * 86_400_000.0 + 0.5)
    return ijd - _UNIX_EPOCH_IJD


def epoch_micros(number: int | float | Decimal, unit: Unit) -> int:
    """Microseconds since 1970 of an epoch number; refuses NaN, infinities and sub-µs parts."""
    if unit == "julian_day":
        return julian_millis(number) * 1000
    scale = _MICROS_PER_UNIT[unit]
    if type(number) is int:
        return number * scale
    if isinstance(number, float):
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueRefused(f"{number!r} is not an instant")
        if number.is_integer():
            return int(number) * scale
        number = Decimal(repr(number))
    assert isinstance(number, Decimal)
    if abs(number) >= _EPOCH_LIMIT:
        raise ValueRefused("outside years 1..9999 (Python's datetime range)")
    try:
        micros = _EXACT.multiply(number, scale)
    except Inexact:
        micros = Decimal("0.5")  # more digits than the context holds: certainly finer than 1 µs
    if micros != micros.to_integral_value():
        raise ValueRefused(f"{number} {unit} has a part finer than a microsecond; it would be rounded")
    return int(micros)


def from_epoch_micros(micros: int, base: datetime) -> datetime:
    """``base`` (the epoch, naive or aware) plus ``micros``; refuses results outside years 1..9999."""
    try:
        return base + timedelta(microseconds=micros)
    except OverflowError:
        raise ValueRefused("outside years 1..9999 (Python's datetime range)") from None


def parse_epoch_text(text: str) -> int | Decimal:
    """A number written as text, for columns whose format says unix_s or unix_ms."""
    if _INTEGER.fullmatch(text):
        return int(text)
    if _DECIMAL.fullmatch(text):
        return Decimal(text)
    raise ValueRefused("not a number of epoch seconds or milliseconds")


def check_fraction(value: datetime | time, step: int, precision: int) -> None:
    """Refuse a value with more fractional digits than ``precision`` (PostgreSQL would round it)."""
    if value.microsecond % step:
        raise ValueRefused(
            f"has {value.microsecond:06d} microseconds; precision {precision} would round them",
            hint="declare the column with more fractional digits, e.g. timestamp(6)",
        )


def midnight_date(value: datetime) -> date:
    """The date of a UTC midnight; refuses an instant with a time of day (it would be dropped)."""
    if value.hour or value.minute or value.second or value.microsecond:
        raise ValueRefused(f"has a time of day ({value.time().isoformat()} UTC) that a date column would drop")
    return value.date()


# -- intervals -----------------------------------------------------------------------------------

#: PostgreSQL's interval holds microseconds in an int64 and days in an int32; Python's timedelta
#: (what psycopg reads back) is the narrower of the two.
_MAX_INTERVAL_MICROS: Final = (timedelta.max.days + 1) * 86_400_000_000 - 1


def parse_interval(value: int | float | str) -> timedelta:
    """A duration: integer microseconds (Django's DurationField on SQLite) or a datetime text counted
    from 1970-01-01 (SQLAlchemy's ``Interval`` on SQLite stores epoch + delta as DATETIME text)."""
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueRefused(f"real {value!r} is not a whole number of microseconds")
        value = int(value)
    if isinstance(value, int):
        if abs(value) > _MAX_INTERVAL_MICROS:
            raise ValueRefused(f"{value} microseconds is outside the interval range Python can read back")
        return timedelta(microseconds=value)
    if _INTEGER.fullmatch(value):
        return parse_interval(int(value))
    moment, offset = _parse(value)
    if offset is not None:
        raise ValueRefused("an interval stored as a datetime has no time zone; this text has one")
    return moment - EPOCH


# -- network addresses -----------------------------------------------------------------------------

IpValue = ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Interface | ipaddress.IPv6Interface


def parse_inet(text: str) -> IpValue:
    """An ``inet``: an address, or address/prefix, as psycopg reads it back from PostgreSQL.

    An address with its full prefix (``/32``, ``/128``) is the bare address, as PostgreSQL prints it.
    Zone ids (``fe80::1%eth0``) and spaces are refused: PostgreSQL has no such inet.
    """
    try:
        if "/" not in text:
            if "%" in text:
                raise ValueError("zone ids are not part of an inet")
            return ipaddress.ip_address(text)
        interface = ipaddress.ip_interface(text)
    except ValueError as exc:
        raise ValueRefused(f"text is not an IP address ({exc})") from None
    if "%" in text:
        raise ValueRefused("text is not an IP address (zone ids are not part of an inet)")
    if interface.network.prefixlen == interface.max_prefixlen:
        return interface.ip
    return interface


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A ``cidr`` network; host bits set are refused (PostgreSQL refuses them too)."""
    try:
        if "%" in text:
            raise ValueError("zone ids are not part of a cidr")
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueRefused(f"text is not a network in CIDR notation ({exc})") from None


_HEX2: Final = "[0-9a-fA-F]{2}"
#: The macaddr spellings PostgreSQL accepts (its documentation's list), 6 bytes; macaddr8 alike with 8.
_MAC_FORMS: Final = {
    size: re.compile(
        "|".join(
            [
                ":".join([_HEX2] * size),
                "-".join([_HEX2] * size),
                _HEX2 * (size // 2) + "[:-]" + _HEX2 * (size // 2),
                r"\.".join([_HEX2 * 2] * (size // 2)),
                "-".join([_HEX2 * 2] * (size // 2)),
                _HEX2 * size,
            ]
        )
    )
    for size in (6, 8)
}


def parse_macaddr(text: str, size: int) -> bytes:
    """A ``macaddr`` (size 6) or ``macaddr8`` (size 8) as its bytes, from the spellings PostgreSQL
    accepts (``08:00:2b:01:02:03``, ``08-00-2b-01-02-03``, ``08002b:010203``, ``0800.2b01.0203``,
    ``0800-2b01-0203``, ``08002b010203``). A 6-byte address in a macaddr8 becomes its EUI-64 form
    (``ff:fe`` inserted in the middle), as PostgreSQL converts it. The bytes are macaddr's binary
    form, and what psycopg reads back (it has no macaddr type)."""
    for length in (size, 6):
        if _MAC_FORMS[length].fullmatch(text):
            digits = re.sub("[^0-9a-fA-F]", "", text)
            if length < size:
                digits = digits[:6] + "fffe" + digits[6:]
            return bytes.fromhex(digits)
    raise ValueRefused(f"text is not a {size}-byte MAC address")


# -- numbers -------------------------------------------------------------------------------------


def parse_int_text(text: str) -> int:
    """A base-10 integer text with optional sign; no spaces, underscores or non-ASCII digits."""
    if _INTEGER.fullmatch(text) is None:
        raise ValueRefused("text is not an integer")
    return int(text)


def parse_decimal_text(text: str) -> Decimal:
    """A plain decimal text (``-12.50``, ``1e-3``), exactly; no spaces, NaN or Infinity."""
    if _DECIMAL.fullmatch(text) is None:
        raise ValueRefused("text is not a decimal number")
    return Decimal(text)


def float_to_decimal(number: float) -> Decimal:
    """The shortest decimal that round-trips to this double: ``0.1`` not ``0.1000000000000000055511``.

    That is the value the application saw and printed; ``Decimal(float)`` would expose binary noise.
    """
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueRefused(f"{number!r} has no exact numeric value")
    return Decimal(repr(number))


#: SQLite keeps only this many significant digits when it turns decimal text into a REAL (a NUMERIC
#: column's affinity, sqlite.org/datatype3.html §3), and Django's SQLite backend reads a
#: DecimalField's REAL with this many (``get_decimalfield_converter``). The digits past it are noise
#: of SQLite's conversion: 30475227.150471 written as text is stored as 30475227.150471002.
SQLITE_REAL_DIGITS: Final = 15
_REAL_DIGITS: Final = Context(prec=SQLITE_REAL_DIGITS)

#: ``TargetType.format`` of a numeric column whose REALs are read as Django reads them.
REAL15: Final = "real15"
#: ... as SQLAlchemy's ``Numeric`` reads them from SQLite (:func:`sqlalchemy_decimal`).
SQLALCHEMY: Final = "sqlalchemy"
#: ... as ActiveRecord's decimal type reads them from SQLite (:func:`rails_decimal`).
RAILS: Final = "rails"
#: Every ORM reading of a decimal column; any other format (None) is the shortest round-trip decimal.
DECIMAL_READERS: Final = (REAL15, SQLALCHEMY, RAILS)

#: SQLAlchemy's ``Numeric._default_decimal_return_scale``: the digits it formats when the type has no scale.
SQLALCHEMY_DEFAULT_SCALE: Final = 10
#: Ruby's ``Float::DIG + 1``: the most significant digits ActiveRecord and BigDecimal take from a Float.
RUBY_FLOAT_DIGITS: Final = 16
_RUBY_SHORTEST: Final = Context(prec=RUBY_FLOAT_DIGITS, rounding=ROUND_DOWN)
_WIDE: Final = Context(prec=2000)


def app_decimal(number: int | float, precision: int | None, scale: int | None, reader: str | None) -> Decimal:
    """The decimal the application reads for a number SQLite stores in a decimal column.

    This is the one rule for numbers loaded into ``numeric``: PostgreSQL gets what the app reads.

    * ``reader`` None (Prisma, plain SQL): an integer is itself; a REAL is its shortest round-trip
      decimal (:func:`float_to_decimal`), the digits every language prints.
    * ``reader`` ``"real15"`` (Django, chosen automatically for a Django project): Django's SQLite
      backend reads ``Context(prec=15).create_decimal_from_float(value)`` -- integers too -- then
      quantizes to ``decimal_places`` in a context of ``max_digits`` digits, both rounding half to even.
      So 30475227.150471002, the REAL SQLite made of the text 30475227.150471, reads 30475227.150471,
      and a 20-digit price SQLite kept as a 15-digit REAL reads those 15 digits. A value Django cannot
      read (the quantized value needs more than max_digits digits) is refused: Django's own read fails.
    * ``"sqlalchemy"`` and ``"rails"``: :func:`sqlalchemy_decimal`, :func:`rails_decimal`.

    The caller still checks the result fits numeric(precision, scale) (:func:`decimal_fits`).
    """
    if reader == SQLALCHEMY:
        return sqlalchemy_decimal(number, scale)
    if reader == RAILS:
        return rails_decimal(number, precision, scale)
    if reader != REAL15:
        return Decimal(number) if isinstance(number, int) else float_to_decimal(number)
    if isinstance(number, float) and (number != number or number in (float("inf"), float("-inf"))):
        raise ValueRefused(f"{number!r} has no exact numeric value")
    value = _REAL_DIGITS.create_decimal_from_float(number)
    if scale is None:
        return value
    try:
        return value.quantize(Decimal(1).scaleb(-scale), context=Context(prec=precision or 1000))
    except InvalidOperation:
        raise ValueRefused(
            f"{value} does not fit numeric({precision},{scale}) once rounded to {scale} decimal places, "
            "so Django cannot read it from SQLite either"
        ) from None


def sqlalchemy_decimal(number: int | float, scale: int | None) -> Decimal:
    """What SQLAlchemy's ``Numeric`` (``asdecimal=True``) reads from SQLite for a stored number.

    pysqlite returns REALs as floats and SQLAlchemy's SQLite dialect has ``supports_native_decimal =
    False``, so ``Numeric.result_processor`` is ``processors.to_decimal_processor_factory(Decimal,
    self._effective_decimal_return_scale)``: ``Decimal("%.{scale}f" % value)``, the scale being the
    type's ``scale`` or, without one, ``_default_decimal_return_scale`` (10). ``%`` formats the exact
    binary value correctly rounded (half to even), integers included after Python turns them into a
    double. 30475227.150471002 in a ``Numeric(20, 6)`` reads 30475227.150471, the 17-digit double
    12345678901234.568 reads 12345678901234.568359. The text keeps its trailing zeros, so an unconstrained
    numeric gets ``0.1000000000`` and SQLAlchemy reads the same digits back from PostgreSQL.
    """
    digits = SQLALCHEMY_DEFAULT_SCALE if scale is None else scale
    if digits < 0:
        raise ValueRefused(f"SQLAlchemy cannot read a Numeric with scale {digits} from SQLite ('%.{digits}f')")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueRefused(f"{number!r} has no exact numeric value")
    return Decimal(f"%.{digits}f" % number)


def rails_decimal(number: int | float, precision: int | None, scale: int | None) -> Decimal:
    """What ActiveRecord's decimal type reads from SQLite for a stored number.

    The sqlite3 gem returns REALs as Floats and integers as Integers; ``ActiveModel::Type::Decimal#cast_value``
    (the same since Rails 5.0) reads an Integer exactly, and a Float, for a column with a precision, as
    ``BigDecimal(value.round(scale), [precision, Float::DIG + 1].min)`` then ``.round(scale)`` (BigDecimal's
    default ROUND_HALF_UP), and without one (``t.decimal`` with no options) as ``value.to_d``: BigDecimal's
    shortest digits of the Float, cut (not rounded) to 16. A column of scale 0 (``decimal(10)``) is
    ``Type::DecimalWithoutScale``, an integer type: ``Float#to_i`` truncates toward zero. ``Float#round``
    is Ruby's (:func:`ruby_float_round`), half away from zero on the double's own arithmetic.
    """
    if type(number) is int:
        return Decimal(number)
    if not math.isfinite(number):
        raise ValueRefused(f"{number!r} has no exact numeric value")
    if scale == 0:
        return Decimal(int(number))
    if precision is None or scale is None or scale < 0:  # BigDecimal keeps no trailing zeros
        return _RUBY_SHORTEST.plus(Decimal(repr(number))).normalize(_WIDE)
    rounded = ruby_float_round(number, scale)
    digits = min(precision, RUBY_FLOAT_DIGITS)
    value = Decimal(f"{rounded:.{digits - 1}e}") if rounded else Decimal(0)
    return value.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP, context=_WIDE)


def ruby_float_round(number: float, ndigits: int) -> float:
    """Ruby's ``Float#round(ndigits)`` for ``ndigits > 0`` (numeric.c ``flo_round``), double for double.

    A number with fewer than ``ndigits`` decimals of precision is returned as is, one far below the last
    digit is 0.0; above 14 digits the exact value is rounded half up, then its numerator and denominator
    divided as doubles (``rb_flo_round_by_rational``); otherwise ``round_half_up(x, 10**ndigits) /
    10**ndigits``, whose ``(f + 0.5) / s <= x`` correction makes 2.675 (binary 2.67499999...) round to
    2.68 as its shortest digits suggest.
    """
    if number == 0.0 or not math.isfinite(number):
        return number
    binexp = math.frexp(number)[1]
    if ndigits >= 17 - (_c_div(binexp, 4) if binexp > 0 else _c_div(binexp, 3) - 1):
        return number
    if ndigits < -(_c_div(binexp, 3) + 1 if binexp > 0 else _c_div(binexp, 4)):
        return 0.0
    if ndigits > 14:  # Rational#round, then Rational#to_f: numerator and denominator each made a double
        exact = Fraction(Decimal(number).quantize(Decimal(1).scaleb(-ndigits), rounding=ROUND_HALF_UP, context=_WIDE))
        return float(exact.numerator) / float(exact.denominator)
    s = float(10**ndigits)
    xs = number * s
    f = float(math.floor(abs(xs)))
    if abs(xs) - f >= 0.5:  # C's round(): half away from zero
        f += 1.0
    f = math.copysign(f, xs)
    if number > 0 and (f + 0.5) / s <= number:
        f += 1.0
    elif number < 0 and (f - 0.5) / s >= number:
        f -= 1.0
    return f / s


def _c_div(a: int, b: int) -> int:
    """C's integer division: truncates toward zero."""
    return -(-a // b) if a < 0 else a // b


#: Unconstrained numeric holds up to 131072 digits before the point and 16383 after it.
NUMERIC_MAX_INTEGER_DIGITS: Final = 131_072
NUMERIC_MAX_SCALE: Final = 16_383


def decimal_fits(value: Decimal, precision: int | None, scale: int | None) -> str | None:
    """Why ``value`` does not fit numeric(precision, scale) exactly, or None when it does.

    Handles PostgreSQL 15's negative scales (numeric(2,-3) holds multiples of 1000) and scales above
    the precision (numeric(3,5) holds values below 0.001).
    """
    if not value.is_finite():
        return f"{value} is not a finite number; numeric holds neither NaN nor infinities here"
    if not value:
        return None
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    # Trailing zeros of the coefficient are not significant ("25000" = 25 with exponent 3).
    stripped = len(digits)
    while stripped > 1 and digits[stripped - 1] == 0:
        stripped -= 1
        exponent += 1
    top = value.adjusted()  # the power of ten of the leading digit
    if precision is None:
        if -exponent > NUMERIC_MAX_SCALE or top >= NUMERIC_MAX_INTEGER_DIGITS:
            return f"{value} is beyond the range of numeric"
        return None
    scale = scale or 0
    label = f"numeric({precision},{scale})"
    if -exponent > scale:
        if scale >= 0:
            return f"{value} has {-exponent} decimal places; {label} would round it"
        return f"{value} is not a multiple of 1e{-scale}; {label} would round it"
    if top >= precision - scale:
        if scale >= 0 and precision > scale:
            return f"{value} has {top + 1} integer digits; {label} allows {precision - scale}"
        return f"{value} is too large for {label} (its magnitude must be below 1e{precision - scale})"
    return None


_F4 = struct.Struct("f")
FLOAT4_MAX: Final = 3.4028234663852886e38


def float4_value(number: float) -> float:
    """The float4 nearest to ``number``; refuses numbers outside float4's range."""
    if abs(number) > FLOAT4_MAX and number not in (float("inf"), float("-inf")):
        raise ValueRefused(f"{number!r} is outside the range of real (float4)")
    (near,) = _F4.unpack(_F4.pack(number))
    return float(near)


def shortest_float4_repr(value: float) -> str:
    """What PostgreSQL prints for a float4 (shortest text that reads back to the same float4)."""
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if _F4.unpack(_F4.pack(float(text)))[0] == value:
            return text
    return repr(value)
