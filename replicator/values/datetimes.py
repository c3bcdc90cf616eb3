"""Exact parsing of the datetime, time and interval spellings found in SQLite files.

SQLite has no datetime type: applications store instants as unix seconds, unix milliseconds, julian
days, ISO-8601 text with or without an offset, or SQL ``YYYY-MM-DD HH:MM:SS[.fff]`` text (see
shared/research/realworld.md §2), durations as microseconds or epoch-relative text. Every function here
either returns the exact value the text or number denotes or raises :class:`ValueRefused` with a short
reason; none rounds, truncates or guesses silently. Grammars are deliberately strict (ASCII digits only,
no surrounding whitespace) so that what is accepted is unambiguous.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Context, Decimal, Inexact
from typing import Final, Literal

from replicator.values.decimals import DECIMAL_TEXT, INTEGER_TEXT
from replicator.values.refusal import ValueRefused

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


# -- datetimes -----------------------------------------------------------------------------------

# Date, then optionally [T t space] HH:MM[:SS[.fraction]], then optionally an offset: Z, z, UTC,
# ±HH, ±HHMM or ±HH:MM, optionally after one space (Ruby's Time#to_s writes "... 06:07:08 +0000").
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"(?: ?(Z|z|UTC|[+-][0-9]{2}(?::?[0-9]{2})?))?)?"
)
_TIME = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?")


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
        cut = _FAST_SHAPES.get(text.encode().translate(NINES))
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
NINES: Final = bytes.maketrans(b"0123456789", b"9999999999")
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
        shapes[text.encode().translate(NINES)] = len(text) - len(offset)
    return shapes


#: The shape of a date alone (``YYYY-MM-DD``): no time, so no offset to append for an aware result.
_DATE_SHAPE_LENGTH: Final = 10


_FAST_SHAPES: Final = _fast_shapes()
#: The fast layouts without an offset (a date alone among them), and the date alone: the row converter
#: reads text of these shapes with one fromisoformat call, inline (see convert_datetimes).
NAIVE_SHAPES: Final = frozenset(shape for shape, cut in _FAST_SHAPES.items() if cut == len(shape))
DATE_SHAPE: Final = b"9999-99-99"
#: Of those, the ones a profile counts as ISO date-times (seconds, a ``.`` fraction, ``T`` or a space;
#: not ``HH:MM``, a ``,`` fraction or ``t``): a guessed column's inline path takes only these, as the
#: guess's check takes nothing else (``replicator.load.guess``; a test holds the two together).
PROFILED_SHAPES: Final = frozenset(s for s in NAIVE_SHAPES if b"," not in s and b"t" not in s and s.count(b":") != 1)


def parse_instant_text(text: str, aware: bool) -> datetime:
    """The UTC instant of a datetime text: aware UTC when ``aware``, else naive UTC wall time.

    Text without an offset is taken as UTC. For the common layouts with no or a zero offset this
    costs one fromisoformat call (``datetime.replace`` is avoided: it is slower than parsing): the
    hot path for Prisma 7's ``2024-03-05T06:07:08.009+00:00`` and SQL ``2024-03-05 06:07:08``.
    """
    if text.isascii():
        cut = _FAST_SHAPES.get(text.encode().translate(NINES))
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
    if INTEGER_TEXT.fullmatch(text):
        return int(text)
    if DECIMAL_TEXT.fullmatch(text):
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
    if INTEGER_TEXT.fullmatch(value):
        return parse_interval(int(value))
    moment, offset = _parse(value)
    if offset is not None:
        raise ValueRefused("an interval stored as a datetime has no time zone; this text has one")
    return moment - EPOCH
