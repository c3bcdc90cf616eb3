"""A PostgreSQL value spelled in a column's SQLite form, and what SQLite's affinity then makes of it.

Why apart from :mod:`replicator.reverse.writeback`: that module decides whether a written value is exact
(the forward converter must read it back as PostgreSQL's value); this one only spells, one closure per
column (:func:`encoder`), from the value psycopg returns to the value bound for SQLite, and says what SQLite
stores for a bound value under a column affinity (:func:`storer`), since the check must read what SQLite
keeps, not what was bound: ``'12345678901234567890'`` bound into a NUMERIC column is stored as the REAL
``1.2345678901234567e+19``, a REAL bound into a TEXT column as its 15-digit text.

An encoder raises :class:`~replicator.values.refusal.ValueRefused` only where no spelling exists (a NUL in
bytes whose form is text, NaN, a parsed JSON document); a spelling that merely loses something (a fraction
the form has no digits for) is left for the check to find, so every loss is found the same way.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final

from checkpoints.digest import JsonText
from replicator.reverse.writeback_forms import ColumnForm, family
from replicator.values.addresses import parse_macaddr
from replicator.values.decimals import shortest_float4_repr
from replicator.values.refusal import ValueRefused
from replicator.values.targettype import TargetType

Encoder = Callable[[Any], object]

EPOCH: Final = datetime(1970, 1, 1)
_US: Final = timedelta(microseconds=1)
#: Julian day 0 (-4713-11-24 12:00 UTC) to 1970-01-01, in microseconds; a day in microseconds.
_JULIAN_EPOCH_US: Final = 210_866_760_000_000_000
_DAY_US: Final = 86_400_000_000
_INT64: Final = 2**63


def wrong_type(v: object, expected: str) -> ValueRefused:
    return ValueRefused(f"psycopg returned {type(v).__name__}, not {expected}, for this column")


def encoder(t: TargetType, form: ColumnForm) -> Encoder:
    """The column's PostgreSQL value (as psycopg returns it, never None) → the value to bind in SQLite."""
    return _BUILDERS[family(t)](t, form)


# -- date-times ---------------------------------------------------------------------------------------


def _fraction(form: ColumnForm) -> Callable[[int], str]:
    """Microseconds → the fraction as the form writes it (``.009000``, ``.009``, ``""``)."""
    digits, style = form.fraction, form.fraction_style
    if digits == 0:
        return lambda us: ""
    if style == "shortest":
        return lambda us: "." + f"{us:06d}".rstrip("0") if us else ""
    if style == "optional":
        return lambda us: "." + f"{us:06d}".ljust(digits, "0")[:digits] if us else ""
    return lambda us: "." + f"{us:06d}".ljust(digits, "0")[:digits]


def _naive_utc(v: object) -> datetime:
    """An instant as naive UTC wall time (a date is its midnight)."""
    if isinstance(v, datetime):
        if v.tzinfo is None:
            return v
        try:
            return v.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueRefused(f"{v.isoformat()} is outside years 1..9999 in UTC") from None
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day)
    raise wrong_type(v, "a datetime or date")


def _instant_spelling(form: ColumnForm) -> Callable[[datetime], object]:
    """A naive UTC datetime in the form: epoch numbers (or their text), date text or date-time text."""
    s, storage = form.spelling, form.storage
    if s == "iso":
        fraction, sep, suffix = _fraction(form), form.separator, form.suffix
        return lambda d: (
            f"{d.year:04d}-{d.month:02d}-{d.day:02d}{sep}{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
            f"{fraction(d.microsecond)}{suffix}"
        )
    if s == "date":
        return lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}"
    if s == "julian_day":
        number: Callable[[int], object] = lambda us: (us + _JULIAN_EPOCH_US) / _DAY_US  # noqa: E731
        return lambda d: number((d - EPOCH) // _US) if storage != "text" else repr(number((d - EPOCH) // _US))
    scale = 1000 if s == "unix_ms" else 1_000_000
    if storage == "real":
        return lambda d: ((d - EPOCH) // _US) / scale  # int / int: the correctly rounded double
    if storage == "text":
        return lambda d: str(((d - EPOCH) // _US) // scale)
    return lambda d: ((d - EPOCH) // _US) // scale  # a finer part is lost here: the check refuses it


def _instant(t: TargetType, form: ColumnForm) -> Encoder:
    spell = _instant_spelling(form)
    return lambda v: spell(_naive_utc(v))


def _date(t: TargetType, form: ColumnForm) -> Encoder:
    spell = _instant_spelling(form)

    def encode(v: object) -> object:
        if isinstance(v, datetime) or not isinstance(v, date):
            raise wrong_type(v, "a date")
        return spell(datetime(v.year, v.month, v.day))

    return encode


def offset_text(offset: timedelta, style: str) -> str:
    """A UTC offset in the style of the suffix the app writes (``Z``, ``+00:00``, ``+0000``, `` UTC``)."""
    space = " " if style.startswith(" ") else ""
    zone = style.strip()
    if not offset and zone in ("Z", "z", "UTC"):
        return style
    if offset % timedelta(minutes=1):
        raise ValueRefused(f"its offset {offset} has seconds, which no offset text the app writes holds")
    minutes = offset // timedelta(minutes=1)
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    colon = ":" if ":" in zone or zone in ("Z", "z", "UTC") else ""
    return f"{space}{sign}{hours:02d}{colon}{mins:02d}"


def _clock(t: TargetType, form: ColumnForm) -> Encoder:
    fraction = _fraction(form)
    style = form.suffix if t.name == "timetz" else ""  # time text with an offset is not read as a time

    def encode(v: object) -> object:
        if not isinstance(v, time):
            raise wrong_type(v, "a time")
        text = f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}{fraction(v.microsecond)}"
        offset = v.utcoffset()
        return text + offset_text(offset, style) if style and offset is not None else text

    return encode


def _interval(t: TargetType, form: ColumnForm) -> Encoder:
    """Integer microseconds (Django), or the instant that long after 1970-01-01 as date-time text
    (SQLAlchemy's ``Interval`` on SQLite)."""
    as_instant = _instant_spelling(form) if form.spelling == "iso" else None
    storage = form.storage

    def encode(v: object) -> object:
        if not isinstance(v, timedelta):
            raise wrong_type(v, "a timedelta")
        if as_instant is not None:
            try:
                return as_instant(EPOCH + v)
            except OverflowError:
                raise ValueRefused(f"1970-01-01 + {v} is outside years 1..9999, the app's date-time form") from None
        micros = v // _US
        return str(micros) if storage == "text" else float(micros) if storage == "real" else micros

    return encode


# -- numbers ----------------------------------------------------------------------------------------------


def _integer(t: TargetType, form: ColumnForm) -> Encoder:
    storage = form.storage

    def encode(v: object) -> object:
        if type(v) is not int:
            raise wrong_type(v, "an int")
        return str(v) if storage == "text" else float(v) if storage == "real" else v

    return encode


def _float(t: TargetType, form: ColumnForm) -> Encoder:
    """A double as is; a float4 as the double of its shortest digits (what PostgreSQL prints: ``0.1``,
    not ``0.10000000149011612``), which stores the same float4."""
    as_text, float4 = form.storage == "text", t.name == "real"

    def encode(v: object) -> object:
        if type(v) is not float:
            raise wrong_type(v, "a float")
        if v != v:
            raise ValueRefused("NaN has no SQLite form: SQLite stores NULL for it")
        if float4 and v not in (float("inf"), float("-inf")):
            v = float(shortest_float4_repr(v))
        return repr(v) if as_text else v

    return encode


def _decimal(t: TargetType, form: ColumnForm) -> Encoder:
    """Decimal text as plain digits (``format(d, 'f')``: its scale kept, no exponent); a number as an
    integer when whole and within SQLite's int64, else the nearest double (the check decides)."""
    as_text = form.spelling == "decimal_text"

    def encode(v: object) -> object:
        if type(v) is int:
            v = Decimal(v)
        if not isinstance(v, Decimal):
            raise wrong_type(v, "a Decimal")
        if not v.is_finite():
            raise ValueRefused(f"{v} has no form the app reads as a number in SQLite")
        if as_text:
            return format(v, "f")
        if v == v.to_integral_value() and -_INT64 <= v < _INT64:
            return int(v)
        return float(v)

    return encode


# -- text, bytes, labels --------------------------------------------------------------------------------


def _text(t: TargetType, form: ColumnForm) -> Encoder:
    """Text as is (char(n) without its blank padding, which PostgreSQL adds and compares away); in a
    blob form, its UTF-8 bytes."""
    blob, padded = form.storage == "blob", t.name == "char"

    def encode(v: object) -> object:
        if type(v) is not str:
            raise wrong_type(v, "a str")
        if padded:
            v = v.rstrip(" ")
        return v.encode() if blob else v

    return encode


def _bytes(t: TargetType, form: ColumnForm) -> Encoder:
    """Bytes as a blob; in a text form, their UTF-8 text, refused when they hold a NUL (SQLite's text
    functions and the C strings most drivers read stop at it) or are not UTF-8."""
    as_text = form.storage == "text"

    def encode(v: object) -> object:
        if not isinstance(v, bytes | bytearray | memoryview):
            raise wrong_type(v, "bytes")
        data = bytes(v)
        if not as_text:
            return data
        if b"\x00" in data:
            raise ValueRefused(
                f"has a NUL byte at {data.index(0)}; the app's form is text, which the app reads cut at a NUL"
            )
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise ValueRefused(f"is not UTF-8 (byte {exc.start}); the app's form is text") from None

    return encode


def _boolean(t: TargetType, form: ColumnForm) -> Encoder:
    yes: object
    no: object
    if form.spelling == "words":
        yes, no = form.true_text, form.false_text
    else:
        yes, no = (1.0, 0.0) if form.storage == "real" else (1, 0)

    def encode(v: object) -> object:
        if type(v) is not bool:
            raise wrong_type(v, "a bool")
        return yes if v else no

    return encode


def _uuid(t: TargetType, form: ColumnForm) -> Encoder:
    spelling, upper = form.spelling, form.upper

    def encode(v: object) -> object:
        if not isinstance(v, uuid.UUID):
            raise wrong_type(v, "a UUID")
        if spelling == "bytes":
            return v.bytes
        text = v.hex if spelling == "hex32" else str(v)
        return text.upper() if upper else text

    return encode


def _network(t: TargetType, form: ColumnForm) -> Encoder:
    kinds = (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Interface, ipaddress.IPv6Interface)
    networks = (ipaddress.IPv4Network, ipaddress.IPv6Network)

    def encode(v: object) -> object:
        if not isinstance(v, kinds) and not isinstance(v, networks):
            raise wrong_type(v, "an ipaddress value")
        return str(v)

    return encode


def mac_bytes(v: object, size: int) -> bytes:
    """A macaddr as psycopg returns it (its text, or the bytes of a binary read) → its bytes."""
    if type(v) is str:
        return parse_macaddr(v, size)
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    raise wrong_type(v, "a MAC address")


def _mac(t: TargetType, form: ColumnForm) -> Encoder:
    size, blob, sep, upper = 8 if t.name == "macaddr8" else 6, form.storage == "blob", form.separator, form.upper

    def encode(v: object) -> object:
        data = mac_bytes(v, size)
        if blob:
            return data
        text = sep.join(f"{b:02x}" for b in data)
        return text.upper() if upper else text

    return encode


# -- JSON ---------------------------------------------------------------------------------------------


def json_text(v: object) -> str:
    """The document's text, as :func:`replicator.pg.json_as_text` reads it. A parsed document is refused:
    psycopg parses numbers into floats (``0.1234567890123456789`` loses digits) and the document ``null``
    into None, the SQL NULL, so nothing written from it could be proved exact."""
    if isinstance(v, JsonText):
        text = v.text
        return text if isinstance(text, str) else bytes(text).decode()
    raise ValueRefused(
        f"psycopg returned a parsed {type(v).__name__} for a JSON column",
        hint="read json and jsonb with replicator.pg.json_as_text (the document's text, exact)",
    )


class _Number(str):
    """A JSON number's literal, kept as PostgreSQL wrote it (jsonb keeps ``1.50``; a float would not)."""

    __slots__ = ()


def respell_json(text: str, item: str, key: str, ascii_only: bool) -> str:
    """The document in other separators (``","``/``":"`` or ``", "``/``": "``), non-ASCII escaped or not;
    keys in the order PostgreSQL gave (jsonb's own order), numbers as their literals."""
    try:
        document = json.loads(text, parse_float=_Number, parse_int=_Number)
    except RecursionError:
        raise ValueRefused("the JSON document nests too deep to re-spell") from None
    except ValueError as exc:
        raise ValueRefused(f"not JSON ({exc})") from None
    out: list[str] = []
    try:
        _dump(document, out.append, item, key, ascii_only)
    except RecursionError:
        raise ValueRefused("the JSON document nests too deep to re-spell") from None
    return "".join(out)


def _dump(v: object, out: Callable[[str], object], item: str, key: str, ascii_only: bool) -> None:
    if type(v) is _Number:
        out(v)
    elif type(v) is str:
        out(json.dumps(v, ensure_ascii=ascii_only))
    elif v is None or type(v) is bool:
        out("null" if v is None else "true" if v else "false")
    elif type(v) is list:
        out("[")
        for i, element in enumerate(v):
            if i:
                out(item)
            _dump(element, out, item, key, ascii_only)
        out("]")
    else:
        assert type(v) is dict
        out("{")
        for i, (name, element) in enumerate(v.items()):
            if i:
                out(item)
            out(json.dumps(name, ensure_ascii=ascii_only))
            out(key)
            _dump(element, out, item, key, ascii_only)
        out("}")


def _json(t: TargetType, form: ColumnForm) -> Encoder:
    """json: its text verbatim (PostgreSQL keeps json as the app wrote it, so the text *is* the app's
    spelling, and another would be another value). jsonb: PostgreSQL's text (``", "``, ``": "``, non-ASCII
    as itself) re-spelled in the app's separators and escaping."""
    spelling = "verbatim" if t.name == "json" else form.spelling
    spaced, ascii_only = spelling == "spaced", form.ascii
    item, key = (", ", ": ") if spaced else (",", ":")

    def encode(v: object) -> object:
        text = json_text(v)
        if spelling == "verbatim" or (spaced and (not ascii_only or text.isascii())):
            return text  # already jsonb's own spelling
        return respell_json(text, item, key, ascii_only)

    return encode


_BUILDERS: Final[dict[str, Callable[[TargetType, ColumnForm], Encoder]]] = {
    "integer": _integer,
    "float": _float,
    "decimal": _decimal,
    "text": _text,
    "bytes": _bytes,
    "boolean": _boolean,
    "instant": _instant,
    "date": _date,
    "clock": _clock,
    "interval": _interval,
    "json": _json,
    "uuid": _uuid,
    "network": _network,
    "mac": _mac,
}


# -- what SQLite stores -----------------------------------------------------------------------------------

#: Text SQLite's numeric affinities may turn into a number: a decimal literal with optional blanks around it
#: (SQLite accepts them), or an infinity/NaN word (newer SQLites read some). Anything else is kept as text.
_MAYBE_NUMBER: Final = re.compile(
    r"\s*(?:[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan))\s*", re.IGNORECASE
)
#: One column per converting affinity: its value is set, then read back by a SELECT (``RETURNING`` gives
#: the value before a REAL column's read-back conversion: 0 for -0.0 where the column then reads 0.0).
_PROBES: Final = {
    "TEXT": ("UPDATE probe SET t = ?", "SELECT t FROM probe"),
    "NUMERIC": ("UPDATE probe SET n = ?", "SELECT n FROM probe"),
    "REAL": ("UPDATE probe SET r = ?", "SELECT r FROM probe"),
    "INTEGER": ("UPDATE probe SET n = ?", "SELECT n FROM probe"),  # stores as NUMERIC does
}
_LOCAL: Final = threading.local()


def _probe(value: object, affinity: str) -> object:
    """What SQLite itself stores for ``value`` in a column of ``affinity`` (an in-memory table per thread):
    its conversions (15-digit text of a REAL, whole REALs as integers, text numbers with blanks) are
    SQLite's own, so they are asked, not re-implemented."""
    conn: sqlite3.Connection | None = getattr(_LOCAL, "conn", None)
    if conn is None:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.execute("CREATE TABLE probe (t TEXT, n NUMERIC, r REAL)")
        conn.execute("INSERT INTO probe VALUES (NULL, NULL, NULL)")
        _LOCAL.conn = conn
    update, select = _PROBES[affinity]
    conn.execute(update, (value,))
    row = conn.execute(select).fetchone()
    return row[0]


def stored_as(value: object, affinity: str) -> object:
    """The value SQLite stores when ``value`` is bound into a column of ``affinity`` (INTEGER as NUMERIC).

    Decided in Python where SQLite changes nothing or only formats an integer; SQLite is asked
    (:func:`_probe`) for number-like text under a numeric affinity and for whole or text-bound REALs."""
    if isinstance(value, str):
        if affinity in ("TEXT", "BLOB") or _MAYBE_NUMBER.fullmatch(value) is None:
            return value
        return _probe(value, affinity)
    if type(value) is int:
        if affinity == "TEXT":
            return str(value)
        return float(value) if affinity == "REAL" else value
    if type(value) is float:
        if value != value:
            return None  # SQLite stores NULL for NaN, in every column
        if affinity == "BLOB" or (affinity != "TEXT" and not value.is_integer()):
            return value
        return _probe(value, affinity)
    return value


def affinity_kinds(affinities: tuple[str, ...]) -> tuple[str, ...]:
    """The affinities that store differently (INTEGER stores as NUMERIC does)."""
    return tuple(dict.fromkeys("NUMERIC" if a == "INTEGER" else a for a in affinities))


def storer(affinities: tuple[str, ...]) -> Callable[[object], tuple[object, ...]]:
    """A bound value → what SQLite may store for it: one value per affinity still possible (each distinct
    outcome once), every one of which the check must accept."""
    kinds = affinity_kinds(affinities)

    def variants(w: object) -> tuple[object, ...]:
        found: list[object] = []
        for affinity in kinds:
            stored = stored_as(w, affinity)
            if not any(type(seen) is type(stored) and seen == stored for seen in found):
                found.append(stored)
        return tuple(found)

    return variants
