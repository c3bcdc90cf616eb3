"""A PostgreSQL value written back into SQLite in the storage form the app uses there: exact, or refused.

Why: during the rollback window (issue 20) the app writes to PostgreSQL, and every change flows back into
the old SQLite file so that ``replicator rollback`` loses nothing. After a rollback the app reads those rows
with the code that wrote the others, so each value must be stored the way the app stores that column
(:mod:`replicator.reverse.writeback_forms`: learned from the table's newest rows, or a default per type),
and it must still *be* the value PostgreSQL held. "The same value" has one definition here, the one the
whole migration rests on: the forward converter (:func:`replicator.values.convert.value_converter`, the
very conversion the snapshot and the apply used) reads the stored value back to a value equal to
PostgreSQL's. Anything else is refused, naming the column, with a one-line reason and what to do
(:class:`~replicator.values.refusal.RowRefused`; the caller adds the key) — never changed silently.

How, per column and once per table (:func:`row_writer`): spell the value in the form
(:mod:`replicator.reverse.writeback_spell`), work out what SQLite stores for it under the column's affinity
(SQLite itself is asked where it converts: number-like text in a NUMERIC column, a REAL in a TEXT one),
convert that forward, compare. The check runs for every value, so a spelling can never lose a digit unseen.

Rules per PostgreSQL type (the forms in parentheses; "equal" is PostgreSQL's equality, said per type):

* smallint / integer / bigint: the int (integer; text ``str(n)``; real when exact). Equal as integers.
* double precision: the float (real; text ``repr``). Equal with its sign (PostgreSQL prints ``-0``, so a
  ``-0.0`` that a REAL or NUMERIC column turns into 0 is refused); NaN is refused: SQLite stores NULL for it.
* real (float4): the double of PostgreSQL's shortest digits (``0.1``, not ``0.10000000149011612``: both are
  the same float4, and the first is what the app wrote). Equal as float4.
* numeric: a number (integer when whole and within int64, else the nearest double) or decimal text
  (``format(d, 'f')``, its scale kept). Read back by the column's reader (``TargetType.format``: Django's
  15 digits, SQLAlchemy's ``%.{scale}f``, Rails's, or the shortest repr), so ``0.1234567890123456789`` in a
  REAL form is refused: no double reads back as it. Equal by value, as ``=`` compares numerics: a declared
  scale pads both sides alike, and the display scale of an unconstrained numeric (``12.50``) is not kept by
  a REAL form (the app's own ORM never read it from one); NaN and infinities are refused.
* text / varchar / citext / enum: the text (text; blob: its UTF-8). PostgreSQL text holds no NUL, so none
  reaches SQLite. char(n): without its blank padding, equal as PostgreSQL compares char (blanks ignored).
* bytea: the bytes (blob), or in a text form their UTF-8 text, refused when they hold a NUL (SQLite's text
  functions and the C strings the app's driver reads stop there) or are not UTF-8.
* boolean: 0/1, or the text pair the app writes (``t``/``f``, ``true``/``false``, ``1``/``0``... in its case).
* timestamp / timestamptz: the instant in UTC (timestamptz arrives in the session's zone and is converted),
  as unix seconds / milliseconds or julian days (numbers, or their text) or as ISO/SQL text in the app's
  spelling (separator, fraction digits fixed, optional or shortest, suffix). A fraction the form has no
  digits for, a time of day in a dates-only form, years outside 1..9999 are refused. Equal as instants.
* date: as date-times, at midnight UTC (Prisma's integer ms, ISO text) or ``YYYY-MM-DD``. time: ``HH:MM:SS``
  and the form's fraction. timetz: with the value's own offset in the app's suffix style, or without one
  when the app writes none (then only a UTC value is exact); equal as time and offset, as PostgreSQL
  compares timetz.
* interval: integer microseconds (Django), or 1970-01-01 plus it as date-time text (SQLAlchemy). Equal as
  timedeltas; psycopg reads a month as 30 days and a year as 365, which PostgreSQL's ``=`` equates too.
* json: the text verbatim. PostgreSQL keeps json as the text the app sent, so that text is already the
  app's spelling, and equality is text equality (another spelling would be another json value).
* jsonb: PostgreSQL's text re-spelled in the app's separators (compact or ``json.dumps``'s ``", "``/``": "``)
  and escaping, numbers as their literals; equal as the parsed documents with exact (Decimal) numbers, as
  jsonb compares. A bare number in a NUMERIC column is stored by SQLite as a number, so one a double does not
  hold (``12345678901234567890``) is refused. Both need the document's *text*
  (:func:`replicator.pg.json_as_text`): psycopg's parsed documents round numbers to floats and read the
  document ``null`` as None, the SQL NULL; a parsed document is refused.
* uuid: dashed or 32-hex text in the app's case, or the 16 bytes. inet / cidr: PostgreSQL's text.
  macaddr / macaddr8: colon (or dash) text in the app's case, or the bytes.

The refusal names the PostgreSQL column (the value to change is there) and carries the PostgreSQL value.
Values come as psycopg returns them; enum and citext as ``str`` (text results, or ``pg.read_citext_as_text``),
macaddr as its text or its bytes, json and jsonb as ``JsonText``.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Final

from replicator.plan.shape import TableShape
from replicator.reverse.writeback_forms import (
    ColumnForm,
    TableForms,
    describe,
    learn_column,
    possible_affinities,
)
from replicator.reverse.writeback_spell import affinity_kinds, encoder, json_text, mac_bytes, stored_as, storer
from replicator.values.convert import value_converter
from replicator.values.decimals import float4_value
from replicator.values.refusal import RowRefused, ValueRefused, excerpt
from replicator.values.targettype import TargetType

__all__ = ["ColumnForm", "RowWriter", "TableForms", "column_writer", "learn_forms", "row_writer"]

RowWriter = Callable[[Sequence[object]], tuple[object, ...]]
"""A row as psycopg returns it (``shape.target_columns``) → the values to bind in SQLite, in the same order."""

HINT: Final = (
    "change the value in PostgreSQL to one the app's SQLite form holds, or end the rollback window "
    "(replicator finalize) if going back to SQLite is no longer wanted"
)


def learn_forms(
    shape: TableShape, samples: Sequence[Sequence[object]], *, affinities: Sequence[str] | None = None
) -> TableForms:
    """Each column's storage form, learned from rows the app wrote (``shape.source_columns`` order, read
    with Python's ``sqlite3``, newest first: e.g. the last ~200 by rowid); a column without values takes
    its type's default (:mod:`replicator.reverse.writeback_forms`).

    ``affinities``: each column's SQLite affinity (``triggers.schema.Column.affinity``), when the caller
    has the schema; without it, every affinity the samples do not rule out is kept and checked."""
    width = len(shape.source_columns)
    if affinities is not None and len(affinities) != width:
        raise ValueError(f"{len(affinities)} affinities for {width} columns of {shape.source}")
    columns = []
    for i, (name, t) in enumerate(zip(shape.source_columns, shape.types, strict=True)):
        values = [row[i] for row in samples if row[i] is not None]
        known = (str(affinities[i]).upper(),) if affinities is not None else possible_affinities(values)
        columns.append(learn_column(name, t, values, known))
    return TableForms(table=shape.source, columns=tuple(columns), rows=len(samples))


def row_writer(table: str, shape: TableShape, forms: TableForms) -> RowWriter:
    """One table's writer, built once: every value in its column's form, checked, or :class:`RowRefused`
    naming ``table`` and the PostgreSQL column (the caller adds the key: ``RowRefused.stopped_at``)."""
    names = tuple(form.column for form in forms.columns)
    if names != shape.source_columns:
        raise ValueError(f"the forms of {forms.table} are for columns {names}, the shape has {shape.source_columns}")
    writers = [column_writer(t, form) for t, form in zip(shape.types, forms.columns, strict=True)]
    columns = shape.target_columns

    def locate(row: Sequence[object]) -> RowRefused:
        for column, write, value in zip(columns, writers, row, strict=True):
            try:
                write(value)
            except ValueRefused as exc:
                return RowRefused(table, column, value, exc.reason, exc.hint or HINT)
        raise AssertionError("a refused row has no refused value")  # pragma: no cover

    def write_row(row: Sequence[object]) -> tuple[object, ...]:
        try:
            return tuple([write(value) for write, value in zip(writers, row, strict=True)])
        except ValueRefused:
            raise locate(row) from None

    return write_row


def column_writer(t: TargetType, form: ColumnForm) -> Callable[[object], object]:
    """One column's writer: PostgreSQL value → the value to bind, or :class:`ValueRefused` when the forward
    converter would not read what SQLite stores back to that value (under each affinity still possible)."""
    encode = encoder(t, form)
    forward = value_converter(t)
    same = sameness(t)
    shown = describe(form)

    def check(v: object, written: object, stored: object) -> None:
        try:
            back = forward(stored)
        except ValueRefused as exc:
            raise ValueRefused(
                f"the app's SQLite form ({shown}) cannot hold it: {_as_stored(written, stored)} is refused "
                f"reading back ({exc.reason})"
            ) from None
        if back is None or not same(back, v):
            raise ValueRefused(
                f"the app's SQLite form ({shown}) cannot hold it exactly: {_as_stored(written, stored)} reads "
                f"back as {_shown(back)}"
            )

    kinds = affinity_kinds(form.affinities)
    if len(kinds) > 1:
        stores = storer(kinds)

        def write_any(v: object) -> object:
            if v is None:
                return None
            written = encode(v)
            for stored in stores(written):
                check(v, written, stored)
            return written

        return write_any
    (affinity,) = kinds

    def write(v: object) -> object:  # the affinity known: one stored value, checked inline
        if v is None:
            return None
        written = encode(v)
        stored = stored_as(written, affinity)
        try:
            if same(forward(stored), v):
                return written
        except (ValueRefused, TypeError, AttributeError):
            pass  # a refusal, or None (NaN stored as NULL) compared: check() says which
        check(v, written, stored)
        raise AssertionError("check() accepted what the comparison refused")  # pragma: no cover

    return write


def _as_stored(written: object, stored: object) -> str:
    if type(stored) is type(written) and stored == written:
        return f"written as {excerpt(written)}"
    return f"written as {excerpt(written)}, stored by SQLite as {excerpt(stored)},"


def _shown(value: object) -> str:
    if value is None:
        return "NULL"
    if hasattr(value, "obj"):  # psycopg's Json / Jsonb wrapper of the converted text
        return excerpt(value.obj)
    if isinstance(value, Decimal):
        return str(value)
    return excerpt(value) if isinstance(value, str | bytes) else str(value)


# -- PostgreSQL's equality, per type -------------------------------------------------------------------


def sameness(t: TargetType) -> Callable[[Any, Any], bool]:
    """(forward-converted value, PostgreSQL's value) → equal as PostgreSQL compares the type."""
    name = t.name
    if name == "double precision":
        return _same_double
    if name == "real":
        return lambda a, b: _same_double(float4_value(a), float4_value(b))
    if name == "char":
        return lambda a, b: a.rstrip(" ") == b.rstrip(" ")
    if name == "timetz":
        return lambda a, b: a == b and a.utcoffset() == b.utcoffset()
    if name == "json":
        return lambda a, b: a.obj == json_text(b)
    if name == "jsonb":
        return _same_jsonb
    if name in ("macaddr", "macaddr8"):
        size = 8 if name == "macaddr8" else 6
        return lambda a, b: a == mac_bytes(b, size)
    return operator.eq


def _same_double(a: float, b: float) -> bool:
    return a == b and (a != 0.0 or math.copysign(1.0, a) == math.copysign(1.0, b))


def _same_jsonb(converted: Any, pg: Any) -> bool:
    text, theirs = converted.obj, json_text(pg)
    return bool(text == theirs or _document(text) == _document(theirs))


def _document(text: str) -> object:
    """A JSON document with exact numbers (jsonb's are numerics): ``1.50`` equals ``1.5``, never ``1.4999``."""
    try:
        return json.loads(text, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        raise ValueRefused(f"the JSON document cannot be compared ({type(exc).__name__})") from None
