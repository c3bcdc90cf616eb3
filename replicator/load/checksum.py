"""The snapshot's checksum: converted values brought to what psycopg reads back, then ``checkpoints.digest``.

A table's checksum is the sum of its rows' ``checkpoints.digest`` hashes, so ``verify`` (which reads the rows
back from PostgreSQL) and the checkpoints must hash exactly what the load hashed. The load hashes the values it
converted, before PostgreSQL stores them: :func:`digest_finisher` applies what storing does to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from checkpoints.digest import JsonText, Kind, kinds_from_types
from replicator.values import convert
from replicator.values.formats import float4_value

Finisher = Callable[[tuple[Any, ...]], tuple[Any, ...]]


def _json_text(value: Any) -> JsonText:
    """A converted JSON value as the digest reads a document's text: the text wrapped for psycopg,
    or on the wire (``row_converter(wire=True)``) json's text or jsonb's "\\x01" + text."""
    if isinstance(value, str):
        return JsonText(value[1:] if value[:1] == "\x01" else value)  # no JSON text starts with \x01
    return JsonText(value.obj)


def _unpadded(value: str) -> str:
    return value.rstrip(" ")


def digest_finisher(types: Sequence[convert.TargetType]) -> Finisher | None:
    """Converted values → what psycopg returns when the row is read back, for the checksum.

    The same normalisation ``replicator verify`` applies, so both sides hash the same thing:
    ``real`` is float4 (the double rounded to float4), ``char(n)`` is compared without its blank
    padding, JSON as the document its text spells (``JsonText``: canonicalised from the text, not
    parsed into Python objects first). None when no column needs it.
    """
    fixes: list[tuple[int, Callable[[Any], Any]]] = []
    for i, t in enumerate(types):
        if t.name == "real":
            fixes.append((i, float4_value))
        elif t.name == "char":
            fixes.append((i, _unpadded))
        elif t.name in ("json", "jsonb"):
            fixes.append((i, _json_text))
    if not fixes:
        return None

    def finish(row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = list(row)
        for i, fix in fixes:
            if values[i] is not None:
                values[i] = fix(values[i])
        return tuple(values)

    return finish


def digest_kinds(types: Sequence[convert.TargetType]) -> list[Kind]:
    return kinds_from_types(t.name for t in types)
