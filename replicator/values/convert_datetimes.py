"""Converters for the datetime columns: timestamp, timestamptz, date, time, timetz and interval.

Each builder reads any datetime storage (epoch numbers, julian days, ISO-8601 or SQL text: the parsers of
:mod:`replicator.values.datetimes`) into the exact value, refuses fractions the column's precision would
round, and with ``wire=True`` produces PostgreSQL's binary form directly (int8 microseconds or int4 days
since 2000-01-01). Integer epochs, Prisma's storage, are inlined by the row converter.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from replicator.values.datetimes import (
    EPOCH,
    EPOCH_UTC,
    NUMBER_FORMATS,
    check_fraction,
    epoch_micros,
    from_epoch_micros,
    midnight_date,
    parse_epoch_text,
    parse_instant_text,
    parse_interval,
    parse_time_text,
    parse_timetz_text,
    unit_of,
)
from replicator.values.fastpath import Plan
from replicator.values.refusal import ValueRefused, refuse_storage
from replicator.values.targettype import TargetType


def _fraction_digits(t: TargetType) -> tuple[int, int]:
    """The column's fractional-second digits (6 when unset, PostgreSQL's most) and the microsecond step
    they keep: a value off the step would be rounded by PostgreSQL, so it is refused."""
    precision = 6 if t.precision is None else min(t.precision, 6)
    return precision, 10 ** (6 - precision)


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
        raise refuse_storage(v, t.name)

    return instant


#: PostgreSQL's binary datetimes count from 2000-01-01: microseconds (timestamp, time), days (date).
PG_EPOCH: Final = datetime(2000, 1, 1)
PG_EPOCH_UTC: Final = datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_ORDINAL: Final = PG_EPOCH.toordinal()
_PG_EPOCH_S: Final = 946_684_800
_MICROSECOND: Final = timedelta(microseconds=1)


def timestamp_plan(t: TargetType, wire: bool) -> Plan:
    """timestamp / timestamptz: a datetime (naive UTC / aware UTC), or on the wire int8 µs since 2000."""
    aware = t.name == "timestamptz"
    instant = _instant(t, aware)
    precision, step = _fraction_digits(t)
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
    fast = tuple((f"type({{v}}) is int and {g}", r) for g, r in paths)
    if not wire and step == 1:
        fast += (_naive_text_path(aware),)
    return Plan(convert, fast, base)


def _naive_text_path(aware: bool) -> tuple[str, str]:
    """ISO/SQL text without an offset, as :func:`~replicator.values.datetimes.parse_instant_text` reads it
    (one fromisoformat call for these shapes), without its three calls: the ORMs' DATETIME text.
    Text is never an epoch number here (a shape has a ``-`` past its first character)."""
    guard = "type({v}) is str and {v}.isascii() and {v}.encode().translate(_NINES) in _NAIVE_SHAPES"
    if aware:  # a date alone is midnight UTC through datetime.replace: left to the converter
        return (f"{guard} and len({{v}}) > 10", "_fromiso({v} + '+00:00')")
    return (guard, "_fromiso({v})")


def date_plan(t: TargetType, wire: bool) -> Plan:
    """date: a date, or on the wire int4 days since 2000-01-01."""
    instant = _instant(t)

    def convert(v: object) -> object:
        if v is None:
            return None
        day = midnight_date(instant(v))
        return day.toordinal() - PG_EPOCH_ORDINAL if wire else day

    # Inline: ``YYYY-MM-DD`` text (the ORMs' DATE), which the converter reads by one fromisoformat too.
    guard = "type({v}) is str and len({v}) == 10 and {v}.isascii() and {v}.encode().translate(_NINES) == _DATE_SHAPE"
    result = "_date_fromiso({v}).toordinal() - {k}" if wire else "_date_fromiso({v})"
    return Plan(convert, ((guard, result),), PG_EPOCH_ORDINAL)


def time_plan(t: TargetType, wire: bool) -> Plan:
    """time: a time, or on the wire int8 µs since midnight; timetz: an aware time, also on the wire (text
    without an offset is UTC, see :func:`replicator.values.datetimes.parse_timetz_text`)."""
    name = t.name
    parse = parse_timetz_text if name == "timetz" else parse_time_text
    wire = wire and name == "time"  # timetz has no wire form of its own: COPY sends the aware time
    precision, step = _fraction_digits(t)

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is not str:
            raise refuse_storage(v, name)
        result = parse(v)
        if step > 1 and result.microsecond % step:
            check_fraction(result, step, precision)
        if wire:
            return ((result.hour * 60 + result.minute) * 60 + result.second) * 1_000_000 + result.microsecond
        return result

    return Plan(convert)


def interval_plan(t: TargetType) -> Plan:
    """interval: integer microseconds (Django) or epoch-relative datetime text (SQLAlchemy), a timedelta."""
    precision, step = _fraction_digits(t)

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is int or type(v) is float or type(v) is str:
            result = parse_interval(v)
        else:
            raise refuse_storage(v, "interval")
        if step > 1 and result.microseconds % step:
            raise ValueRefused(f"has {result.microseconds:06d} microseconds; interval({precision}) would round them")
        return result

    if step > 1:
        return Plan(convert)
    # Every SQLite integer (int64) is within timedelta's range (±8.6e19 µs).
    return Plan(convert, (("type({v}) is int", "_td(0, 0, {v})"),))
