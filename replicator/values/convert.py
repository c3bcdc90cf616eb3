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
  ``format``, else the magnitude rule |v| ≥ 1e11 → milliseconds (datetimes.MS_THRESHOLD), below →
  seconds, except that a number in the julian-day range (1721425.5 ≤ v < 5373484.5, i.e. seconds
  in Jan–Mar 1970) is refused as ambiguous; julian days are read as SQLite reads them (rounded to
  the millisecond, datetimes.julian_millis); text ``YYYY-MM-DD``,
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
  them; see decimals.app_decimal.

``TargetType.format`` only changes datetime conversions (unix_s / unix_ms / julian_day fix the unit
and also admit numeric text); other formats (bool01, iso8601, ...) are descriptive, since every
other storage spelling is unambiguous and parsed per value.

Where it lives. This module is the dispatch: a column's :class:`~replicator.values.targettype.TargetType`
(``targettype``) picks its builder, which returns a :class:`~replicator.values.fastpath.Plan` (``fastpath``);
one builder module per type family (``convert_numbers``, ``convert_text``, ``convert_json``,
``convert_datetimes``, ``convert_addresses``), over the exact parsers of the spellings (``datetimes``,
``decimals``, ``addresses``); a refusal is :class:`~replicator.values.refusal.ValueRefused`, named by row as
:class:`~replicator.values.refusal.RowRefused` (``refusal``). Invalid UTF-8 is read by
:func:`~replicator.values.convert_text.decode_text` (its reading convention is there).

Speed. :func:`value_converter` builds one closure per column; :func:`row_converter` compiles one
function per table in which each column's common case is inlined (an in-range int into bigint, an
ASCII str without NUL into text, integer milliseconds into timestamp(3), a double into
numeric(65,30)), so those cost no call. ``wire=True`` additionally emits PostgreSQL's binary forms
for datetimes and jsonb (see row_converter). The generated code contains only column indices and
numeric constants, never names or values from the source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

from replicator.values import convert_addresses, convert_datetimes, convert_json, convert_numbers, convert_text
from replicator.values.fastpath import INLINE_NAMES, UTF8_CLAUSE, Converter, Plan
from replicator.values.refusal import RowRefused, ValueRefused
from replicator.values.targettype import TargetType, UnsupportedType

__all__ = ["RowConverter", "convert_value", "row_converter", "value_converter"]

RowConverter = Callable[[Sequence[object]], tuple[object, ...]]


def _plain(builder: Callable[[TargetType], Plan]) -> Callable[[TargetType, bool], Plan]:
    """A builder whose values are the same in wire mode."""
    return lambda t, wire: builder(t)


_BUILDERS: Final[Mapping[str, Callable[[TargetType, bool], Plan]]] = {
    "smallint": _plain(convert_numbers.integer_plan),
    "integer": _plain(convert_numbers.integer_plan),
    "bigint": _plain(convert_numbers.integer_plan),
    "real": _plain(convert_numbers.real_plan),
    "double precision": _plain(convert_numbers.double_plan),
    "numeric": _plain(convert_numbers.numeric_plan),
    "text": _plain(convert_text.text_plan),
    "varchar": _plain(convert_text.text_plan),
    "char": _plain(convert_text.text_plan),
    "bytea": _plain(convert_text.bytea_plan),
    "boolean": _plain(convert_text.boolean_plan),
    "timestamptz": convert_datetimes.timestamp_plan,
    "timestamp": convert_datetimes.timestamp_plan,
    "date": convert_datetimes.date_plan,
    "time": convert_datetimes.time_plan,
    "json": convert_json.json_plan,
    "jsonb": convert_json.json_plan,
    "uuid": _plain(convert_text.uuid_plan),
    "enum": _plain(convert_text.enum_plan),
    "citext": _plain(convert_text.text_plan),
    "interval": _plain(convert_datetimes.interval_plan),
    "inet": _plain(convert_addresses.network_plan),
    "cidr": _plain(convert_addresses.network_plan),
    "macaddr": _plain(convert_addresses.macaddr_plan),
    "macaddr8": _plain(convert_addresses.macaddr_plan),
    "timetz": convert_datetimes.time_plan,
}


def _plan(t: TargetType, wire: bool = False, digest: bool = False, json_wire: bool = False) -> Plan:
    builder = _BUILDERS.get(t.name)
    if builder is None:
        raise UnsupportedType(
            f"target type {t.name!r} is not a normalised type name", hint="build TargetType with parse_type()"
        )
    wire = wire or (json_wire and t.name in ("json", "jsonb"))  # by the type: copy_types(json_wire=) says the same
    if digest and builder is convert_json.json_plan:
        return convert_json.json_plan(t, wire, digest=True)
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
    strict_text: bool = False,
    digest: bool = False,
    json_wire: bool = False,
) -> RowConverter:
    """One table's row converter, compiled once; raises :class:`RowRefused` naming the column.

    The generated function unpacks the row and, per column, computes the value inline when a fast path's guard
    holds (an in-range int into bigint, integer milliseconds into timestamp(3), a double into numeric(65,30),
    ISO text into timestamp by one fromisoformat...), else calls the column's converter. A fast path whose
    result raises ``ValueError`` (February 30th) sends the row to the converters alone, which decide.

    ``wire=True`` is for binary COPY only (with ``copy_types(types, wire=True)``): datetimes in PostgreSQL's
    binary form (int8 µs / int4 days since 2000-01-01), json as its text and jsonb as "\\x01" + text, without
    datetime and Json objects or psycopg's Python JSON dumper (~0.6 µs a document); ``json_wire``: the JSON
    columns alone so. The default (semantic) values suit SQL parameters as well as COPY.

    ``watch`` (column position → predicate) checks each value of those columns off the fast paths: one the
    predicate rejects (a NULL too, if it rejects None) appends its position to ``missed`` before it is
    converted; the snapshot proves with it that a type chosen from a sample held for every row. ``extra``:
    rows may carry more values after these columns (ignored).

    ``strict_text``: every str comes from a strict UTF-8 decode (sqlite3's own ``text_factory = str``),
    which never yields a lone surrogate, so the text fast path leaves out its check for one
    (:data:`~replicator.values.fastpath.UTF8_CLAUSE`). Never for the bytes-fallback read, JSON Lines or
    the capture journal: their surrogates must reach the converter, to be refused or replaced.
    ``digest``: each row is digested next (``readback.row_digester``), taking the text of the C pass that
    validated each JSON document (``convert_json.json_plan``).
    """
    if len(columns) != len(types):
        raise ValueError(f"{len(columns)} columns but {len(types)} types for table {table}")
    plans = [(_strict if strict_text else _same)(_plan(t, wire, digest, json_wire)) for t in types]
    converters = [p.convert for p in plans]
    namespace: dict[str, object] = {
        **INLINE_NAMES,
        "_locate": _locator(table, columns, converters),
        "ValueRefused": ValueRefused,
    }
    exprs: list[tuple[str, str]] = []
    watch = watch or {}
    for i, p in enumerate(plans):
        namespace[f"c{i}"] = p.convert
        namespace[f"k{i}"] = p.const
        if i in watch:
            assert missed is not None, "watch needs a missed list"
            namespace[f"c{i}"] = _watched(i, watch[i], p.convert, missed)
            exprs.append(_watched_expr(i, p, types[i], watch[i]))
            continue
        exprs.append(_expr(i, p))
    if not plans:
        return lambda row: ()
    names = ", ".join(f"v{i}" for i in range(len(plans)))
    unpack = f"{names}, {'*_' if extra else ''} = row"
    source = (
        "def convert_row(row):\n"
        "    try:\n"
        f"        {unpack}\n"
        f"        return ({', '.join(fast for fast, _ in exprs)},)\n"
        "    except ValueRefused:\n"
        "        raise _locate(row) from None\n"
        "    except ValueError:\n"  # a fast path's result refused its value (fromisoformat): the converters decide
        "        return convert_row_plain(row)\n"
        "def convert_row_plain(row):\n"
        "    try:\n"
        f"        {unpack}\n"
        f"        return ({', '.join(plain for _, plain in exprs)},)\n"
        "    except ValueRefused:\n"
        "        raise _locate(row) from None\n"
    )
    exec(compile(source, f"<row_converter {table}>", "exec"), namespace)
    function: RowConverter = namespace["convert_row"]  # type: ignore[assignment]
    return function


def _same(p: Plan) -> Plan:
    return p


def _strict(p: Plan) -> Plan:
    """``p`` without the fast path's UTF-8 clause (see ``strict_text`` in :func:`row_converter`)."""
    return p._replace(fast=tuple((guard.replace(UTF8_CLAUSE, ""), result) for guard, result in p.fast))


def _branches(i: int, p: Plan) -> str:
    v, k = f"v{i}", f"k{i}"
    return "".join(f"({result.format(v=v, k=k)}) if ({guard.format(v=v, k=k)}) else " for guard, result in p.fast)


def _expr(i: int, p: Plan) -> tuple[str, str]:
    """Column ``i``'s expression with its fast paths inlined, and without (the converter alone)."""
    return f"(None if v{i} is None else {_branches(i, p)}c{i}(v{i}))", f"(None if v{i} is None else c{i}(v{i}))"


def _watched_expr(i: int, p: Plan, t: TargetType, ok: Callable[[object], bool]) -> tuple[str, str]:
    """A watched column's expression with its kept fast paths inlined, and without them: every value
    off the fast paths goes through the watch, a NULL too when the predicate rejects it.

    Without them (the row's second pass, after a fast path's ``ValueError``) a date-time text path's
    value goes through the watch, which accepts it, and the converter, which refuses February 30th
    by name; the other kept paths never raise, so keep them there too."""
    null = f"c{i}(None)" if not ok(None) else "None"
    if t.name in _EXACT_FAST:
        kept, plain = p, p
    elif t.name in _TEXT_FAST:  # the date-time text paths, for the shapes a profile counts; not integer epochs
        text = [
            (g.replace("_NAIVE_SHAPES", "_PROFILED_SHAPES"), r) for g, r in p.fast if g.startswith("type({v}) is str")
        ]
        kept, plain = p._replace(fast=tuple(text)), p._replace(fast=())
    else:  # another storage class's fast path: watch all
        kept = plain = p._replace(fast=())
    return (
        f"({null} if v{i} is None else {_branches(i, kept)}c{i}(v{i}))",
        f"({null} if v{i} is None else {_branches(i, plain)}c{i}(v{i}))",
    )


#: Types whose fast paths take only values a guess's watch accepts (``replicator.load.guess._rule``):
#: values already of the target's Python type (``_unchanged``), and boolean's 0/1. A watched column
#: keeps them. Others (a timestamp's integer epochs) send every value to the watch.
_EXACT_FAST: Final = frozenset(
    {"smallint", "integer", "bigint", "double precision", "text", "varchar", "char", "bytea", "citext", "boolean"}
)
#: Date-time types whose text fast paths take only ISO text without an offset: a watched column keeps
#: them for the shapes the guess's watch accepts (``PROFILED_SHAPES``; a test holds every shape to it),
#: not its integer epochs.
_TEXT_FAST: Final = frozenset({"timestamp", "timestamptz", "date"})


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
