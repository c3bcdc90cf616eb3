"""The storage form an app uses for each column in SQLite, learned from its own rows (or a default).

Why learned, not planned: the plan says what a column *means* in PostgreSQL and, for datetimes and
decimals, how its numbers count (``TargetType.format``); it does not say how the app *spells* what it
writes: Django writes ``str(datetime)`` (``2024-03-05 06:07:08`` with no fraction when the microseconds
are zero), SQLAlchemy always six digits, Prisma 7 ``2024-03-05T06:07:08.009+00:00``, Prisma 6 integer
milliseconds; Django writes UUIDs as 32 hex digits and JSON with ``json.dumps``'s ``", "``/``": "``,
Prisma and Rails compact JSON (realworld.md §2). The rollback window writes PostgreSQL's rows back into the
app's SQLite file, where the app reads them with the code that wrote the other rows, so each value is
spelled the way the app spells that column: :func:`learn_column` reads it off the newest rows.

A column's form is the *dominant* one among its sampled values (a Prisma 6 file later written by Prisma 7
holds integer milliseconds and ISO text; the majority wins, ties go to the first sample, which the caller
passes newest first). Values that spell nothing recognisable for the type do not vote. Fractions are read
off the whole spelling (:func:`fraction_style`): six digits in every sample is "always six" (SQLAlchemy),
six or none is "none when zero" (Django's ``str(datetime)``, Rails); a Django or Rails column whose samples
happen to hold no whole second reads as "always six", and a whole second is then written ``.000000``,
which those apps read as the same instant. When the column has
no values, :func:`default_form` gives the documented default per type, one the forward converter
(:mod:`replicator.values.convert`) reads exactly:

============================  ============================================================================
PostgreSQL type               default form (no sampled value)
============================  ============================================================================
smallint, integer, bigint     integer
real, double precision        real
numeric                       real, integer when whole (what every ORM in realworld.md writes)
text, varchar, char, citext,  text
enum, inet, cidr
bytea                         blob
boolean                       integer 0/1; ``format`` bool_text: text ``t``/``f``; bool01_text: ``1``/``0``
timestamp, timestamptz        ``format`` unix_ms / unix_s: integer; julian_day: real; else text
                              ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC, six digits, no offset)
date                          as timestamps for an epoch ``format``; else text ``YYYY-MM-DD``
time / timetz                 text ``HH:MM:SS.ffffff`` (timetz: then the value's own ``+HH:MM``)
interval                      integer microseconds (Django's DurationField)
json, jsonb                   the document's text as PostgreSQL returns it
uuid                          text 8-4-4-4-12, lowercase; ``format`` uuid_hex32: 32 hex digits
macaddr, macaddr8             text ``08:00:2b:01:02:03``
============================  ============================================================================

The column's SQLite *affinity* decides what SQLite does to a written value (``'42'`` into a NUMERIC column
becomes the integer 42, a REAL into a TEXT column becomes 15-digit text): the caller passes the affinities
when it has the schema; otherwise :func:`possible_affinities` keeps every affinity the sampled values do
not rule out, and the writer checks each (:mod:`replicator.reverse.writeback_spell`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Final

import msgspec

from replicator.values.datetimes import JULIAN_MAX, JULIAN_MIN, MS_THRESHOLD, NUMBER_FORMATS
from replicator.values.decimals import DECIMAL_TEXT, INTEGER_TEXT
from replicator.values.targettype import TargetType

#: SQLite's five affinities (``triggers.schema.Affinity`` values); INTEGER stores like NUMERIC.
AFFINITIES: Final = ("TEXT", "NUMERIC", "INTEGER", "REAL", "BLOB")


class ColumnForm(msgspec.Struct, frozen=True, omit_defaults=True):
    """How the app stores one column's values in SQLite: a storage class and, per type, a spelling."""

    column: str
    """The SQLite column."""
    storage: str
    """integer, real, text or blob: the class the app's values have (``real`` for numbers SQLite may
    keep as integers when whole)."""
    spelling: str
    """plain (the value in ``storage``), number (numeric: integer when whole, else real), decimal_text,
    unix_s, unix_ms, julian_day (epoch numbers, or their text), iso (date-time text), date (``YYYY-MM-DD``),
    clock (time-of-day text), micros (interval), int01, words (boolean text), dashed, hex32, bytes (uuid),
    verbatim, compact, spaced (JSON)."""
    separator: str = " "
    """iso: between the date and the time (``T`` or space); macaddr text: between bytes."""
    fraction: int = 6
    """iso / clock: fractional-second digits written."""
    fraction_style: str = "fixed"
    """fixed (always ``fraction`` digits), optional (none when the microseconds are zero: Python's
    ``str(datetime)``, Django, Rails), shortest (trailing zeros dropped)."""
    suffix: str = ""
    """iso / clock: the offset after the time (``Z``, ``+00:00``...; empty: none). Instants are written in UTC
    with it; timetz writes its own offset in this style."""
    upper: bool = False
    """uuid / macaddr text: upper-case hex digits."""
    true_text: str = "1"
    false_text: str = "0"
    """words: the app's spelling of true and false."""
    ascii: bool = False
    """compact / spaced JSON: non-ASCII characters written as ``\\uXXXX`` escapes (``json.dumps``'s default)."""
    seen: int = 0
    """Sampled values written in this form (0: the default was taken)."""
    of: int = 0
    """Non-NULL sampled values of the column."""
    affinities: tuple[str, ...] = AFFINITIES
    """The column's SQLite affinity, or every one its sampled values allow when it was not given."""


class TableForms(msgspec.Struct, frozen=True):
    """One table's forms, in ``TableShape.source_columns`` order: what :func:`learn_forms` learned."""

    table: str
    """The SQLite table."""
    columns: tuple[ColumnForm, ...]
    rows: int
    """Rows sampled."""


#: Each PostgreSQL type's family: the forms it may take and how they are recognised.
FAMILIES: Final = {
    **dict.fromkeys(("smallint", "integer", "bigint"), "integer"),
    **dict.fromkeys(("real", "double precision"), "float"),
    "numeric": "decimal",
    **dict.fromkeys(("text", "varchar", "char", "citext", "enum"), "text"),
    "bytea": "bytes",
    "boolean": "boolean",
    **dict.fromkeys(("timestamp", "timestamptz"), "instant"),
    "date": "date",
    **dict.fromkeys(("time", "timetz"), "clock"),
    "interval": "interval",
    **dict.fromkeys(("json", "jsonb"), "json"),
    "uuid": "uuid",
    **dict.fromkeys(("inet", "cidr"), "network"),
    **dict.fromkeys(("macaddr", "macaddr8"), "mac"),
}


def family(t: TargetType) -> str:
    found = FAMILIES.get(t.name)
    if found is None:
        raise ValueError(f"no write-back form for PostgreSQL type {t.name!r}")
    return found


# -- what a sampled value spells ------------------------------------------------------------------------

Vote = tuple[ColumnForm, str | None]
"""A sampled value's form (column name and counts left empty) and its fraction digits (iso / clock only)."""

_OFFSET: Final = r"( ?(?:Z|z|UTC|[+-][0-9]{2}(?::?[0-9]{2})?))?"
_CLOCK_TEXT: Final = r"[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.([0-9]+))?)?"
_DATETIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ])" + _CLOCK_TEXT + _OFFSET)
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CLOCK: Final = re.compile(_CLOCK_TEXT + _OFFSET)
_HEX32: Final = re.compile(r"[0-9a-fA-F]{32}")
_DASHED: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MAC: Final = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4,6}")
#: Boolean words in pairs, lowercase: a sample of either word stands for the pair.
_WORD_PAIRS: Final = {"t": "f", "true": "false", "y": "n", "yes": "no", "on": "off", "1": "0"}
_PAIR_OF: Final = {**{t: (t, f) for t, f in _WORD_PAIRS.items()}, **{f: (t, f) for t, f in _WORD_PAIRS.items()}}


def _form(storage: str, spelling: str, **fields: object) -> ColumnForm:
    return ColumnForm("", storage, spelling, **fields)  # type: ignore[arg-type]


def _zero_suffix(offset: str | None) -> str:
    """The suffix to write UTC with, in the style of a seen offset: ``+02:00`` gives ``+00:00``."""
    if not offset:
        return ""
    space = " " if offset.startswith(" ") else ""
    zone = offset.strip()
    if zone[0] in "+-":
        return space + "+" + "".join("0" if c.isdigit() else c for c in zone[1:])
    return space + zone


def _epoch_vote(v: object, t: TargetType) -> Vote | None:
    """A number (or, for an epoch ``format``, numeric text) in a date-time column: its unit."""
    unit = t.format if t.format in NUMBER_FORMATS else None
    if type(v) is str:
        if unit is None or not DECIMAL_TEXT.fullmatch(v):
            return None
        return _form("text", unit), None
    if type(v) is not int and type(v) is not float:
        return None
    if unit is None:
        if abs(v) >= MS_THRESHOLD:
            unit = "unix_ms"
        elif type(v) is float and JULIAN_MIN <= v < JULIAN_MAX:
            unit = "julian_day"
        else:
            unit = "unix_s"
    return _form("integer" if type(v) is int else "real", unit), None


def _iso_vote(v: str) -> Vote | None:
    match = _DATETIME.fullmatch(v)
    if match is None:
        return None
    separator, fraction, offset = match.groups()
    return _form("text", "iso", separator="T" if separator in "Tt" else " ", suffix=_zero_suffix(offset)), (
        fraction or ""
    )


def _instant_vote(v: object, t: TargetType) -> Vote | None:
    if type(v) is str:
        if len(v) == 10 and _DATE.fullmatch(v):
            return _form("text", "date"), None
        return _iso_vote(v) or _epoch_vote(v, t)
    return _epoch_vote(v, t)


def _clock_vote(v: object, t: TargetType) -> Vote | None:
    if type(v) is not str:
        return None
    match = _CLOCK.fullmatch(v)
    if match is None:
        return None
    fraction, offset = match.groups()
    return _form("text", "clock", suffix=_zero_suffix(offset)), fraction or ""


def _interval_vote(v: object, t: TargetType) -> Vote | None:
    if type(v) is int or (type(v) is float and v.is_integer()):
        return _form("integer" if type(v) is int else "real", "micros"), None
    if type(v) is str:
        return (_form("text", "micros"), None) if INTEGER_TEXT.fullmatch(v) else _iso_vote(v)
    return None


def _plain_vote(classes: dict[type, str]) -> Callable[[object, TargetType], Vote | None]:
    """A family whose values are written as themselves in one of these storage classes."""

    def vote(v: object, t: TargetType) -> Vote | None:
        storage = classes.get(type(v))
        return None if storage is None else (_form(storage, "plain"), None)

    return vote


def _integer_vote(v: object, t: TargetType) -> Vote | None:
    if type(v) is int or (type(v) is float and v.is_integer()):
        return _form("integer" if type(v) is int else "real", "plain"), None
    if type(v) is str and INTEGER_TEXT.fullmatch(v):
        return _form("text", "plain"), None
    return None


def _decimal_vote(v: object, t: TargetType) -> Vote | None:
    if type(v) is int or type(v) is float:
        return _form("real", "number"), None  # one form: SQLite keeps a whole REAL as an integer
    if type(v) is str and DECIMAL_TEXT.fullmatch(v):
        return _form("text", "decimal_text"), None
    return None


def _boolean_vote(v: object, t: TargetType) -> Vote | None:
    if type(v) is int and v in (0, 1):
        return _form("integer", "int01"), None
    if type(v) is float and v in (0.0, 1.0):
        return _form("real", "int01"), None
    if type(v) is not str:
        return None
    pair = _PAIR_OF.get(v.lower())
    if pair is None:
        return None
    case: Callable[[str], str] = str.lower
    if v.isupper():
        case = str.upper
    elif v[:1].isupper():
        case = str.capitalize
    return _form("text", "words", true_text=case(pair[0]), false_text=case(pair[1])), None


def _uuid_vote(v: object, t: TargetType) -> Vote | None:
    if type(v) is bytes and len(v) == 16:
        return _form("blob", "bytes"), None
    if type(v) is not str:
        return None
    spelling = "dashed" if _DASHED.fullmatch(v) else "hex32" if _HEX32.fullmatch(v) else None
    if spelling is None:
        return None
    return _form("text", spelling, upper=v != v.lower()), None


def _mac_vote(v: object, t: TargetType) -> Vote | None:
    if type(v) is bytes:
        return _form("blob", "plain"), None
    if type(v) is str and (match := _MAC.fullmatch(v)) is not None:
        return _form("text", "plain", separator=match.group(1), upper=v != v.lower()), None
    return None


_VOTERS: Final[dict[str, Callable[[object, TargetType], Vote | None]]] = {
    "integer": _integer_vote,
    "float": _plain_vote({int: "real", float: "real", str: "text"}),
    "decimal": _decimal_vote,
    "text": _plain_vote({str: "text", bytes: "blob"}),
    "network": _plain_vote({str: "text"}),
    "bytes": _plain_vote({bytes: "blob", str: "text"}),
    "boolean": _boolean_vote,
    "instant": _instant_vote,
    "date": _instant_vote,
    "clock": _clock_vote,
    "interval": _interval_vote,
    "uuid": _uuid_vote,
    "mac": _mac_vote,
}


# -- learning ------------------------------------------------------------------------------------------


def learn_column(column: str, t: TargetType, values: Sequence[object], affinities: tuple[str, ...]) -> ColumnForm:
    """One column's form from its sampled non-NULL values (newest first), or its default."""
    kind = family(t)
    if kind == "json":
        learned = _learn_json(values)
        if learned is not None and t.name == "json":  # json keeps the app's text: written as PostgreSQL holds it
            learned = msgspec.structs.replace(learned, spelling="verbatim", ascii=False)
    else:
        votes: dict[ColumnForm, list[str | None]] = {}
        for v in values:
            found = _VOTERS[kind](v, t)
            if found is not None:
                votes.setdefault(found[0], []).append(found[1])
        learned = None
        if votes:
            form = max(votes, key=lambda k: len(votes[k]))  # the first of equals: dicts keep insertion order
            fractions = votes[form]
            learned = msgspec.structs.replace(form, seen=len(fractions))
            if form.spelling in ("iso", "clock"):
                digits, style = fraction_style([f for f in fractions if f is not None])
                learned = msgspec.structs.replace(learned, fraction=digits, fraction_style=style)
    form = learned if learned is not None else default_form(t)
    return msgspec.structs.replace(form, column=column, of=len(values), affinities=affinities)


def fraction_style(fractions: Sequence[str]) -> tuple[int, str]:
    """Digits and style of the fractions (``""``: none) seen in one spelling of date-time text.

    One length throughout: that many, always; one length and no fraction at all in some values: that many
    when there is one (Python's ``str(datetime)``); several lengths without a trailing zero: the shortest
    spelling; otherwise the most common length."""
    lengths = Counter(len(f) for f in fractions)
    nonzero = sorted(n for n in lengths if n)
    if not nonzero:
        return 0, "fixed"
    if len(nonzero) == 1:
        return nonzero[0], "optional" if lengths[0] else "fixed"
    if not any(f.endswith("0") for f in fractions):
        return max(nonzero), "shortest"
    return max(nonzero, key=lambda n: lengths[n]), "fixed"


def _learn_json(values: Sequence[object]) -> ColumnForm | None:
    """JSON text: its separators and whether non-ASCII is escaped, from the documents that show them."""
    separators: Counter[str] = Counter()
    escaped: Counter[bool] = Counter()
    seen = 0
    for v in values:
        if type(v) is not str:
            continue  # a bare number SQLite's NUMERIC affinity made a number: it shows no spelling
        seen += 1
        spacing, ascii_escaped = json_spelling(v)
        if spacing is not None:
            separators[spacing] += 1
        if ascii_escaped is not None:
            escaped[ascii_escaped] += 1
    if not separators:
        return None if not seen else _form("text", "verbatim", seen=seen)
    spelling = separators.most_common(1)[0][0]
    default_ascii = spelling == "spaced"  # json.dumps's default (Django, SQLAlchemy); compact: Prisma, Rails
    ascii_escaped = escaped.most_common(1)[0][0] if escaped else default_ascii
    return _form("text", spelling, ascii=ascii_escaped, seen=seen)


def json_spelling(text: str) -> tuple[str | None, bool | None]:
    """(compact or spaced, by what follows the first ``,`` or ``:`` outside a string; non-ASCII written as
    ``\\uXXXX`` escapes or as itself), None where the document does not show it."""
    spacing: str | None = None
    in_string = escape = False
    for i, c in enumerate(text):
        if in_string:
            if escape:
                escape = False
            elif c == "\\":
                escape = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in ",:":
            spacing = "spaced" if text[i + 1 : i + 2] == " " else "compact"
            break
    if not text.isascii():
        return spacing, False
    escapes = re.findall(r"(?<!\\)(?:\\\\)*\\u([0-9a-fA-F]{4})", text)
    return spacing, (True if any(int(code, 16) >= 0x80 for code in escapes) else None)


def default_form(t: TargetType) -> ColumnForm:
    """The form of a column with no sampled value (the table in the module docstring)."""
    kind = family(t)
    if kind in ("instant", "date") and t.format in NUMBER_FORMATS:
        return _form("real" if t.format == "julian_day" else "integer", t.format)
    defaults = {
        "integer": _form("integer", "plain"),
        "float": _form("real", "plain"),
        "decimal": _form("real", "number"),
        "text": _form("text", "plain"),
        "network": _form("text", "plain"),
        "bytes": _form("blob", "plain"),
        "instant": _form("text", "iso"),
        "date": _form("text", "date"),
        "clock": _form("text", "clock", suffix="+00:00" if t.name == "timetz" else ""),
        "interval": _form("integer", "micros"),
        "json": _form("text", "verbatim"),
        "uuid": _form("text", "hex32" if t.format == "uuid_hex32" else "dashed"),
        "mac": _form("text", "plain", separator=":"),
    }
    if kind == "boolean":
        if t.format == "bool_text":
            return _form("text", "words", true_text="t", false_text="f")
        if t.format == "bool01_text":
            return _form("text", "words")
        return _form("integer", "int01")
    return defaults[kind]


_NUMBER_TEXT: Final = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def possible_affinities(values: Sequence[object]) -> tuple[str, ...]:
    """The affinities a column may have, given values it holds: an integer rules out TEXT and REAL (they
    would have made it text or real), a real TEXT, a whole real below 2**53 NUMERIC and INTEGER, numeric
    text NUMERIC, INTEGER and REAL. A contradiction (a STRICT table, a changed declaration) keeps them all."""
    possible = set(AFFINITIES)
    for v in values:
        if type(v) is int:
            possible -= {"TEXT", "REAL"}
        elif type(v) is float:
            possible.discard("TEXT")
            if v.is_integer() and abs(v) < 2**53:
                possible -= {"NUMERIC", "INTEGER"}
        elif type(v) is str and _NUMBER_TEXT.fullmatch(v):
            possible -= {"NUMERIC", "INTEGER", "REAL"}
    return tuple(a for a in AFFINITIES if a in possible) or AFFINITIES


# -- for messages --------------------------------------------------------------------------------------


def describe(form: ColumnForm) -> str:
    """The form in a few words, for refusals and logs: ``text 'YYYY-MM-DD HH:MM:SS[.ffffff]'``."""
    s = form.spelling
    if s == "iso":
        return f"text 'YYYY-MM-DD{form.separator}HH:MM:SS{_fraction_pattern(form)}{form.suffix}'"
    if s == "clock":
        return f"text 'HH:MM:SS{_fraction_pattern(form)}{'+HH:MM' if form.suffix else ''}'"
    words = {
        "date": "text 'YYYY-MM-DD' (dates only)",
        "unix_ms": f"{form.storage} unix milliseconds",
        "unix_s": f"{form.storage} unix seconds",
        "julian_day": f"{form.storage} julian day numbers",
        "micros": f"{form.storage} microseconds",
        "number": "a REAL (an integer when whole)",
        "decimal_text": "decimal text",
        "int01": f"{form.storage} 0/1",
        "words": f"text '{form.true_text}'/'{form.false_text}'",
        "dashed": f"text 8-4-4-4-12 ({'upper' if form.upper else 'lower'}case)",
        "hex32": f"text of 32 hex digits ({'upper' if form.upper else 'lower'}case)",
        "bytes": "a 16-byte blob",
        "verbatim": "JSON text as PostgreSQL returns it",
        "compact": "compact JSON text" + (" (non-ASCII escaped)" if form.ascii else ""),
        "spaced": "JSON text with ', ' and ': '" + (" (non-ASCII escaped)" if form.ascii else ""),
    }
    return words.get(s, form.storage)


def _fraction_pattern(form: ColumnForm) -> str:
    if form.fraction == 0:
        return ""
    digits = "." + "f" * form.fraction
    if form.fraction_style == "fixed":
        return digits
    return f"[{digits}]" if form.fraction_style == "optional" else "[.f...]"
