"""The independent reading's rules for date and time (:mod:`replicator.inspect.proof` has the table):
timestamp and timestamptz (texts, and epoch numbers in the plan's unit), date, time, interval and timetz.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal
from typing import Final

from replicator.inspect.proof_numbers import NUMBER
from replicator.inspect.proof_rule import ColumnType, Read, unreadable

_EPOCH: Final = dt.datetime(1970, 1, 1)
_EPOCH_UTC: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US: Final = dt.timedelta(microseconds=1)
_MS_FROM: Final = 100_000_000_000
"""No unit recorded: an epoch number of at least this magnitude is milliseconds (1e11 s is year 5138)."""
_UNITS: Final = {"unix_s": 1_000_000, "unix_ms": 1_000, "unix_us": 1}
_JULIAN_UNIX_MS: Final = 210_866_760_000_000
"""SQLite's date.c: the unix epoch as milliseconds since julian day 0."""
_INSTANT: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"(?: ?(Z|z|UTC|([+-])([0-9]{2})(?::?([0-9]{2}))?))?)?"
)
_CLOCK: Final = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?")


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
        if unit is not None and NUMBER.fullmatch(value):
            return _epoch_micros(Decimal(value), unit)
        return _instant_text(value)
    return None


def timestamp_source(t: ColumnType) -> Read:
    unit = t.format if t.format in (*_UNITS, "julian_day") else None
    aware = t.name == "timestamptz"

    def read(value: object) -> object:
        micros = _instant_micros(value, unit)
        instant = None if micros is None else _at(micros, aware)
        return unreadable(value) if instant is None else instant

    return read


def timestamp_target(value: object) -> object:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    return value


def date_source(t: ColumnType) -> Read:
    unit = t.format if t.format in (*_UNITS, "julian_day") else None

    def read(value: object) -> object:
        micros = _instant_micros(value, unit)
        instant = None if micros is None or micros % 86_400_000_000 else _at(micros, False)
        return unreadable(value) if instant is None else instant.date()

    return read


def time_source(value: object) -> object:
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


def interval_source(value: object) -> object:
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


def interval_target(value: object) -> object:
    if isinstance(value, dt.timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return value


_TIMETZ: Final = re.compile(r"(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?\s*(?:(Z|UTC)|([+-])(\d\d)(?::?(\d\d))?)?")


def timetz(value: object) -> object:
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
