"""Converted values as PostgreSQL gives them back: the one normalisation the load path's digests share.

Why one home: the snapshot's checksums (:mod:`replicator.load.snapshot`), the digests ``verify``'s
load-path reading computes over SQLite (:mod:`replicator.inspect.verify_shape`, cutover's pre-pass and stop
point, the certificate's per-side records) and the apply's running digests must all equal the digest of
what PostgreSQL holds. A converted value and the value psycopg reads back differ for a few types only, and
this module says which and how. Two copies of it (there were: ``snapshot.digest_finisher`` and
``verify._finisher``) could drift, and a drift would surface as false mismatches at cutover.

Why here and not in :mod:`checkpoints.digest`: the digest's encoding stands alone (``checkpoints/`` never
imports ``replicator``), while this normalisation follows the converter's output conventions (psycopg's
``Json``/``Jsonb`` wrappers, the wire form of jsonb with its version byte) and its float4 rounding
(:func:`replicator.values.decimals.float4_value`), so it sits beside them, at the lowest layer both the
load and ``inspect/`` can import.

Not used by verify's *independent* reading (:mod:`replicator.inspect.proof`), which must share nothing
with the load path: it brings each side to its own canonical form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, TypeAlias

from checkpoints.digest import JsonText, Kind, RowEncoder, canonical_json_text, canonical_value, kinds_from_types
from replicator.values.convert_json import CANONICAL
from replicator.values.decimals import float4_value
from replicator.values.targettype import TargetType

Finisher: TypeAlias = Callable[[tuple[Any, ...]], tuple[Any, ...]]
"""A converted row → the row psycopg returns when it is read back (for the digest only)."""

#: Types whose converted Python value is exactly what psycopg reads back (so the digest of what was
#: written equals the digest of what PostgreSQL holds): the apply then takes the digest of inserted rows
#: from the converted values, and the INSERT needs no RETURNING. real (float4 rounding), char(n)
#: (padding), json/jsonb (normalisation) and enums are read back instead.
DIGEST_EXACT_TYPES: Final = frozenset(
    {"smallint", "integer", "bigint", "double precision", "numeric", "text", "varchar", "bytea", "boolean"}
    | {"timestamp", "timestamptz", "date", "time", "uuid"}
)


def digest_exact(types: Sequence[TargetType]) -> bool:
    """Every column's converted value is what PostgreSQL gives back: the apply may digest what it wrote."""
    return all(t.name in DIGEST_EXACT_TYPES for t in types)


def _json_text(value: Any) -> JsonText:
    """A converted JSON value as the digest reads a document's text: the text wrapped for psycopg,
    or on the wire (``row_converter(wire=True)``) json's text or jsonb's "\\x01" + text."""
    if isinstance(value, str):
        return JsonText(value[1:] if value[:1] == "\x01" else value)  # no JSON text starts with \x01
    return JsonText(value.obj)


def _unpadded(value: str) -> str:
    return value.rstrip(" ")


def _fix(t: TargetType) -> Callable[[Any], Any] | None:
    """What a value of type ``t`` becomes when PostgreSQL stores it and psycopg reads it back."""
    if t.name == "real":
        return float4_value  # the double rounded to float4
    if t.name == "char":
        return _unpadded  # char(n)'s blank padding is not data
    if t.name in ("json", "jsonb"):
        return _json_text  # the document its text spells, canonicalised from the text, not parsed first
    return None


def digest_finisher(types: Sequence[TargetType]) -> Finisher | None:
    """Converted values → what psycopg returns when the row is read back, for the checksum.

    ``real`` is float4 (the double rounded to float4), ``char(n)`` is compared without its blank
    padding, JSON as the document its text spells (``JsonText``: canonicalised from the text, not
    parsed into Python objects first). None when no column needs it (the row is hashed as converted).
    """
    fixes = [(i, fix) for i, t in enumerate(types) if (fix := _fix(t)) is not None]
    if not fixes:
        return None

    def finish(row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = list(row)
        for i, fix in fixes:
            if values[i] is not None:
                values[i] = fix(values[i])
        return tuple(values)

    return finish


def digest_kinds(types: Sequence[TargetType]) -> list[Kind]:
    """The digest's column kinds (:class:`checkpoints.digest.RowEncoder`) for finished rows of ``types``."""
    return kinds_from_types(t.name for t in types)


RowBytes: TypeAlias = Callable[[Sequence[Any]], bytes]
"""A converted row → the canonical bytes (:mod:`checkpoints.digest`) of the row psycopg reads back."""


def _json_canonical(value: Any) -> str | None:
    """A converted JSON value → what the digest writes for a JSON column: its canonical text
    (:func:`checkpoints.digest.canonical_json_text`), or None (nil) for the document ``null``.

    A digesting converter (``row_converter(digest=True)``) left the text its validating C pass wrote for this
    very value in ``convert_json.CANONICAL``: taken by identity, else computed here."""
    kept = CANONICAL.pop(id(value), None)
    if kept is not None and kept[0] is value:
        canonical = kept[1]
    else:
        text = value if isinstance(value, str) else value.obj
        if text[:1] == "\x01":  # jsonb on the wire (row_converter(wire=True)); no JSON text starts with \x01
            text = text[1:]
        canonical = canonical_json_text(text)
    return None if canonical == "null" else canonical


def row_digester(types: Sequence[TargetType]) -> RowBytes:
    """``RowEncoder(digest_kinds(types)).encode(digest_finisher(types)(row))`` in one pass, for the
    load's per-row checksum (the same bytes; a test holds the two to it).

    Why: on a table with a JSON column the finisher wrapped each document in ``JsonText`` and the
    encoder copied the row again to put the document's canonical text in its place. Here the
    document becomes its canonical text at once, through the digest's own function, and the column
    is encoded as the plain ``str`` (or nil) the digest's definition writes for a JSON column, so
    the whole row is one msgspec call (``native`` kind); no second definition of the encoding.
    """
    kinds = digest_kinds(types)
    fixes: list[tuple[int, Callable[[Any], Any]]] = []
    for i, t in enumerate(types):
        if t.name in ("json", "jsonb"):
            fixes.append((i, _json_canonical))
            kinds[i] = "native"  # a str or None, which msgspec writes as the JSON column's encoding
        elif (fix := _fix(t)) is not None:
            fixes.append((i, fix))
        elif t.name == "numeric":  # an int or the exact text (never a Raw): the row stays one C call
            fixes.append((i, canonical_value))
            kinds[i] = "native"
    encode = RowEncoder(kinds).encode
    if not fixes:
        return encode

    def digest_bytes(row: Sequence[Any]) -> bytes:
        values = list(row)
        for i, fix in fixes:
            if values[i] is not None:
                values[i] = fix(values[i])
        return encode(values)

    return digest_bytes
