"""One SQLite value as JSON and back, exactly: every value round-trips with its storage class.

Values (msgspec JSON; a JSON object as a value is always one of the tagged forms below):

========================  ===========================================================
SQLite value              JSON
========================  ===========================================================
NULL                      ``null``
INTEGER                   integer, exact at any size
REAL                      number in Python's shortest round-trip repr (``0.1``, ``1e+16``,
                          ``1.0`` stays a real); ``{"$real": "inf"}`` / ``"-inf"`` for
                          infinities, which JSON cannot spell
TEXT (valid UTF-8)        string; NUL and every other character escaped by JSON as needed
TEXT (not valid UTF-8)    ``{"$bytes_text": base64 of the exact bytes}``
BLOB                      ``{"$blob": base64}``
========================  ===========================================================
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Final


class _BadText(bytes):
    """TEXT whose bytes are not UTF-8, as the fallback text factory returns it."""


def fallback_text(data: bytes) -> str | _BadText:
    """The text factory of export's second read of a table: text that is not UTF-8 kept as its exact bytes."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _BadText(data)


_INF: Final = float("inf")


def _tag(value: Any) -> Any:
    """A value that JSON cannot carry as itself, in its tagged form (see the module docstring)."""
    if type(value) is bytes:
        return {"$blob": base64.b64encode(value).decode("ascii")}
    if type(value) is _BadText:
        return {"$bytes_text": base64.b64encode(value).decode("ascii")}
    if type(value) is float:
        if value == _INF:
            return {"$real": "inf"}
        if value == -_INF:
            return {"$real": "-inf"}
        raise ValueError("NaN is not a SQLite value")  # SQLite stores NaN as NULL
    raise TypeError(f"not a SQLite value: {type(value).__name__}")


_PLAIN: Final = frozenset({int, str, type(None)})


def encode_row(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """One row as the JSON object written to the file."""
    return {
        c: v if type(v) in _PLAIN or (type(v) is float and -_INF < v < _INF) else _tag(v)
        for c, v in zip(columns, row, strict=True)
    }


class BadValue(ValueError):
    """A JSON value that no SQLite value encodes to."""


def decode_value(value: Any) -> Any:
    """A JSON value back to the SQLite value (text that was not UTF-8 comes back as surrogates,
    exactly as the snapshot's fallback reader gives it, so the converter treats both alike)."""
    if type(value) is not dict:
        if value is True or value is False or isinstance(value, list):
            raise BadValue(f"{type(value).__name__} is not a SQLite value")
        return value
    if len(value) != 1:
        raise BadValue(f"object with keys {sorted(value)} is not a tagged value")
    ((tag, payload),) = value.items()
    if not isinstance(payload, str):
        raise BadValue(f"{tag} payload is not a string")
    if tag == "$real" and payload in ("inf", "-inf"):
        return float(payload)
    try:
        raw = base64.b64decode(payload, validate=True)
    except ValueError:
        raise BadValue(f"{tag} payload is not base64") from None
    if tag == "$blob":
        return raw
    if tag == "$bytes_text":
        return raw.decode("utf-8", "surrogateescape")
    raise BadValue(f"unknown tag {tag!r}")
