"""The canonical row encoding and the order-independent table digest, defined here and nowhere else.

The snapshot's per-table checksums, ``verify`` (over rows read back from PostgreSQL) and the content
digests inside checkpoints all call this module, so "the same rows" means the same bytes everywhere.
An auditor reimplements it from this docstring alone.

Row encoding
------------
A row is a sequence of values; its encoding is the concatenation of the encodings of its values, in
column order. Each value is encoded as::

    tag (1 ASCII byte) || length (4 bytes, unsigned big-endian) || payload (length bytes)

The length prefix makes the concatenation unambiguous, so no separator or column count is needed.
Tags and payloads, by the Python value (as psycopg returns it from PostgreSQL, or as the replicator's
converter produces it from SQLite before writing):

====  =====================================  =========================================================
tag   value                                  payload
====  =====================================  =========================================================
N     None (SQL NULL; also JSON ``null``)     empty
b     bool                                   ``t`` or ``f``
n     int, decimal.Decimal (exact number)    canonical exact number, see below
f     float (binary64)                       shortest round-trip repr, see below
s     str                                    UTF-8 (lone surrogates, which PostgreSQL never returns,
                                             as in Python's ``surrogatepass``)
x     bytes, bytearray, memoryview           the bytes
Z     datetime with a tzinfo                 microseconds since 1970-01-01T00:00:00Z, decimal integer
T     datetime without a tzinfo              microseconds since 1970-01-01T00:00:00, decimal integer
d     date                                   ``YYYY-MM-DD``
t     time                                   ``HH:MM:SS.ffffff`` plus ``+HH:MM`` if it has a tzinfo
i     timedelta                              total microseconds as a decimal integer
u     uuid.UUID                              the 16 bytes, big-endian (RFC 4122 order)
a     list or tuple (a PostgreSQL array)      the concatenated encodings of its elements
j     JSON value (column kind ``json``)       canonical JSON text in UTF-8, see below
====  =====================================  =========================================================

Decimal integers have no leading zeros or ``+`` and a ``-`` when negative (before 1970, for instance).
An aware datetime therefore encodes the instant, whatever its zone: 14:00+02:00 equals 12:00Z. A
tzinfo whose ``utcoffset()`` is None counts as naive. Time-of-day parts carry exactly six fractional
digits.

*Exact numbers.* int and Decimal share tag ``n`` because a numeric column returns Decimal even for a
value written as int, and numeric(10,2) pads ``1.5`` to ``1.50``: the payload is the plain decimal
notation with no exponent, no leading ``+``, no leading zeros before the point other than a single
``0``, no trailing zeros after the point and no point if nothing follows it; zero is ``0`` whatever its
sign or scale. So ``1.50``, ``1.5000`` and ``15E-1`` all give ``1.5``; ``1E+2``, ``100.00`` and ``100``
give ``100``. Non-finite Decimals give ``NaN``, ``Infinity``, ``-Infinity`` (sNaN counts as NaN).

*Floats* are kept apart from exact numbers (``1.0`` is not ``1``) and encoded as Python's ``repr``:
the shortest decimal string that reads back to the same binary64; plain notation with at least one
digit after the point when the decimal exponent is in [-4, 16), otherwise ``d[.ddd]e±XX`` with at
least two exponent digits; ``-0.0`` stays distinct from ``0.0``; every NaN is ``nan``; ``inf``,
``-inf``. Examples: ``0.1``, ``1.0``, ``1e+16``, ``1.5e-05``, ``-0.0``.

*JSON* (json and jsonb columns) is ambiguous to psycopg's caller (it returns parsed dict, list, str,
int, ...), so the caller names those columns: ``RowEncoder(kinds)`` with ``"json"`` in their places, or
wraps a value in :class:`Json` (psycopg's own ``Json``/``Jsonb`` wrappers are recognised too). The
canonical text is compact (no whitespace), objects with keys sorted by Unicode code point, strings
escaped exactly as Python's ``json.dumps(ensure_ascii=False)`` does (``\\"``, ``\\\\``, ``\\n``, ``\\r``,
``\\t``, ``\\b``, ``\\f``, other controls below U+0020 as lowercase ``\\u00XX``; nothing else), and
every number -- int or float -- written as the canonical exact number above (floats through their
repr), because jsonb stores numbers as numeric: it turns ``1e2`` into ``100`` and keeps ``1.50``.
Non-finite floats, which are not JSON, are ``NaN``, ``Infinity``, ``-Infinity``. jsonb also drops
duplicate keys (keeping the last) and reorders keys; parsing in Python keeps the last duplicate too,
so both sides agree. A SQL NULL and a JSON ``null`` both arrive as None and both encode as tag N.

Table digest
------------
A row's hash is SHA-256 of its encoding, read as a 256-bit big-endian unsigned integer. A table's
digest is the pair (row count, sum of its row hashes modulo 2**256), written as the count and the
sum in 64 lowercase hex digits. The sum does not depend on row order, counts duplicate rows (XOR
would cancel them), merges by addition (so chunks can be hashed in parallel) and supports removal by
subtraction (so an applied batch can remove old row images and add new ones). It detects accidental
divergence; it is not collision resistant against someone who may choose millions of rows
(generalised birthday attacks), which is why the checkpoint chain itself uses plain SHA-256.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json.encoder
import struct
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Literal, TypeAlias

from checkpoints.errors import CheckpointError

Kind: TypeAlias = Literal["auto", "json"]
"""How a column's values are read: ``auto`` by Python type, ``json`` as a parsed JSON document."""

MODULUS: Final = 1 << 256
EMPTY: Final = "0" * 64
"""The hexdigest of a table with no rows."""

#: PostgreSQL type OIDs of json and jsonb, for :func:`kinds_from_oids`.
JSON_OIDS: Final = frozenset({114, 3802})

_pack_len = struct.Struct(">I").pack
_encode_json_str: Callable[[str], str] = json.encoder.encode_basestring
_EPOCH: Final = dt.datetime(1970, 1, 1)
_EPOCH_UTC: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NULL: Final = b"N" + _pack_len(0)
_TRUE: Final = b"b" + _pack_len(1) + b"t"
_FALSE: Final = b"b" + _pack_len(1) + b"f"


class Json:
    """Marks a value as a JSON document in a column the encoder otherwise reads by Python type."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Json({self.value!r})"


def _frame(tag: bytes, payload: bytes) -> bytes:
    return tag + _pack_len(len(payload)) + payload


def exact_number(value: int | decimal.Decimal) -> str:
    """The canonical text of an exact number (see the module docstring); never rounds."""
    if type(value) is int:
        return str(value)
    if isinstance(value, int):
        return str(int(value))
    if not value.is_finite():
        if value.is_nan():
            return "NaN"
        return "-Infinity" if value.is_signed() else "Infinity"
    text = format(value, "f")  # plain notation, all digits, no context rounding
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        return "0"
    return text


def _float_as_exact(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return exact_number(decimal.Decimal(repr(value)))


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a parsed JSON value (see the module docstring)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return str(_encode_json_str(value))
    if isinstance(value, int | decimal.Decimal):
        return exact_number(value)
    if isinstance(value, float):
        return _float_as_exact(value)
    if isinstance(value, dict):
        items = []
        for key in sorted(value):
            if not isinstance(key, str):
                raise CheckpointError(
                    f"JSON object key {key!r} is not a string",
                    hint="JSON columns hold parsed JSON: keys are strings (json.loads gives them so)",
                )
            items.append(_encode_json_str(key) + ":" + canonical_json(value[key]))
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
    raise CheckpointError(
        f"a JSON column holds a {type(value).__name__}, which JSON cannot",
        hint="pass JSON columns parsed (dict, list, str, int, float, bool, None)",
    )


def _json_value(value: Any) -> bytes:
    if value is None:
        return _NULL
    if isinstance(value, Json):
        value = value.value
    elif _is_psycopg_json(value):
        value = value.obj
    return _frame(b"j", canonical_json(value).encode("utf-8", "surrogatepass"))


def _is_psycopg_json(value: Any) -> bool:
    return type(value).__module__ == "psycopg.types.json" and hasattr(value, "obj")


def _enc_int(value: int) -> bytes:
    payload = str(value).encode()
    return b"n" + _pack_len(len(payload)) + payload


def _enc_decimal(value: decimal.Decimal) -> bytes:
    return _frame(b"n", exact_number(value).encode())


def _enc_float(value: float) -> bytes:
    payload = repr(value).encode()
    return b"f" + _pack_len(len(payload)) + payload


def _enc_str(value: str) -> bytes:
    payload = value.encode("utf-8", "surrogatepass")
    return b"s" + _pack_len(len(payload)) + payload


def _enc_bytes(value: bytes | bytearray | memoryview) -> bytes:
    payload = bytes(value)
    return b"x" + _pack_len(len(payload)) + payload


def _enc_datetime(value: dt.datetime) -> bytes:
    if value.tzinfo is not None:
        try:
            delta = value - _EPOCH_UTC  # an aware difference is between instants: the offset is applied exactly
        except TypeError:  # a tzinfo whose utcoffset() is None: the value is naive after all
            pass
        else:
            payload = str((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds).encode()
            return b"Z" + _pack_len(len(payload)) + payload
        value = value.replace(tzinfo=None)
    delta = value - _EPOCH
    payload = str((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds).encode()
    return b"T" + _pack_len(len(payload)) + payload


def _enc_date(value: dt.date) -> bytes:
    return _frame(b"d", value.isoformat().encode())


def _enc_time(value: dt.time) -> bytes:
    return _frame(b"t", value.isoformat(timespec="microseconds").encode())


def _enc_timedelta(value: dt.timedelta) -> bytes:
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return _frame(b"i", str(micros).encode())


def _enc_uuid(value: uuid.UUID) -> bytes:
    return b"u" + _pack_len(16) + value.bytes


def _enc_array(value: list[Any] | tuple[Any, ...]) -> bytes:
    return _frame(b"a", b"".join([_encode_auto(item) for item in value]))


_BY_TYPE: dict[type, Callable[[Any], bytes]] = {
    type(None): lambda _value: _NULL,
    bool: lambda value: _TRUE if value else _FALSE,
    int: _enc_int,
    float: _enc_float,
    decimal.Decimal: _enc_decimal,
    str: _enc_str,
    bytes: _enc_bytes,
    bytearray: _enc_bytes,
    memoryview: _enc_bytes,
    dt.datetime: _enc_datetime,
    dt.date: _enc_date,
    dt.time: _enc_time,
    dt.timedelta: _enc_timedelta,
    uuid.UUID: _enc_uuid,
    list: _enc_array,
    tuple: _enc_array,
    Json: _json_value,
}

#: Checked in order for subclasses (IntEnum, pendulum's DateTime...): datetime before its base date.
_BY_BASE: tuple[tuple[type | tuple[type, ...], Callable[[Any], bytes]], ...] = (
    (bool, _BY_TYPE[bool]),
    (int, _enc_int),
    (float, _enc_float),
    (decimal.Decimal, _enc_decimal),
    (str, _enc_str),
    ((bytes, bytearray, memoryview), _enc_bytes),
    (dt.datetime, _enc_datetime),
    (dt.date, _enc_date),
    (dt.time, _enc_time),
    (dt.timedelta, _enc_timedelta),
    (uuid.UUID, _enc_uuid),
    ((list, tuple), _enc_array),
)


def _encode_auto(value: Any) -> bytes:
    encoder = _BY_TYPE.get(type(value))
    if encoder is not None:
        return encoder(value)
    return _encode_other(value)


def _encode_other(value: Any) -> bytes:
    if _is_psycopg_json(value):
        return _json_value(value)
    for base, encoder in _BY_BASE:
        if isinstance(value, base):
            return encoder(value)
    if isinstance(value, dict):
        raise CheckpointError(
            "a dict in a column not marked as JSON",
            hint="give the column kind 'json' (RowEncoder(kinds)) or wrap the value in checkpoints.digest.Json",
        )
    raise CheckpointError(
        f"cannot digest a value of type {type(value).__module__}.{type(value).__qualname__}",
        hint="convert it to one of the documented types (see checkpoints.digest) before hashing",
    )


def kinds_from_oids(oids: Iterable[int]) -> list[Kind]:
    """Column kinds from PostgreSQL type OIDs (``cursor.description[i].type_code``): json, jsonb → json."""
    return ["json" if oid in JSON_OIDS else "auto" for oid in oids]


class RowEncoder:
    """Encodes rows of one table shape; ``kinds`` says which columns hold JSON (None: none do)."""

    __slots__ = ("_columns", "kinds")

    def __init__(self, kinds: Sequence[Kind] | None = None) -> None:
        self.kinds: tuple[Kind, ...] | None = None
        self._columns: tuple[Callable[[Any], bytes], ...] | None = None
        if kinds is not None and any(kind != "auto" for kind in kinds):
            for kind in kinds:
                if kind not in ("auto", "json"):
                    raise CheckpointError(f"unknown column kind {kind!r}", hint="use 'auto' or 'json'")
            self.kinds = tuple(kinds)
            self._columns = tuple(_json_value if kind == "json" else _encode_auto for kind in kinds)

    def encode(self, row: Sequence[Any]) -> bytes:
        """The canonical bytes of one row."""
        get = _BY_TYPE.get
        if self._columns is None:
            return b"".join([(get(type(v)) or _encode_other)(v) for v in row])
        if len(row) != len(self._columns):
            raise CheckpointError(
                f"row has {len(row)} values but the encoder was given {len(self._columns)} column kinds",
                hint="build the RowEncoder from the same column list as the query",
            )
        return b"".join([encode(v) for encode, v in zip(self._columns, row, strict=True)])

    def hash(self, row: Sequence[Any]) -> bytes:
        """SHA-256 of the row's canonical bytes."""
        return hashlib.sha256(self.encode(row)).digest()


def encode_row(row: Sequence[Any], kinds: Sequence[Kind] | None = None) -> bytes:
    """The canonical bytes of one row; for many rows build one :class:`RowEncoder`."""
    return RowEncoder(kinds).encode(row)


def row_hash(row: Sequence[Any], kinds: Sequence[Kind] | None = None) -> bytes:
    return hashlib.sha256(encode_row(row, kinds)).digest()


class TableDigest:
    """Order-independent, mergeable digest of a multiset of rows: (count, sum of row hashes mod 2**256)."""

    __slots__ = ("_sum", "count", "encoder")

    def __init__(self, kinds: Sequence[Kind] | None = None, *, encoder: RowEncoder | None = None) -> None:
        self.encoder = encoder if encoder is not None else RowEncoder(kinds)
        self.count = 0
        self._sum = 0

    @classmethod
    def from_hex(cls, count: int, hexdigest: str, kinds: Sequence[Kind] | None = None) -> TableDigest:
        """Resume from a stored (count, hexdigest), e.g. to maintain a table's digest batch by batch."""
        digest = cls(kinds)
        digest.count = count
        try:
            digest._sum = int(hexdigest, 16) % MODULUS
        except ValueError:
            raise CheckpointError(f"{hexdigest!r} is not a hex digest", hint="expected 64 hex digits") from None
        return digest

    def add(self, row: Sequence[Any]) -> None:
        self._sum += int.from_bytes(hashlib.sha256(self.encoder.encode(row)).digest(), "big")
        self.count += 1

    def add_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        """Add many rows; the fast path for snapshots and verification."""
        encode, sha256, from_bytes = self.encoder.encode, hashlib.sha256, int.from_bytes
        total, count = 0, 0
        for row in rows:
            total += from_bytes(sha256(encode(row)).digest(), "big")
            count += 1
        self._sum = (self._sum + total) % MODULUS
        self.count += count

    def remove(self, row: Sequence[Any]) -> None:
        """Take one row image out again (an update's old image, a deleted row)."""
        self._sum -= int.from_bytes(hashlib.sha256(self.encoder.encode(row)).digest(), "big")
        self.count -= 1

    def merge(self, other: TableDigest) -> None:
        """Fold in a digest computed elsewhere (another chunk, another worker)."""
        self._sum += other._sum
        self.count += other.count

    def subtract(self, other: TableDigest) -> None:
        self._sum -= other._sum
        self.count -= other.count

    def hexdigest(self) -> str:
        """The sum of row hashes modulo 2**256 as 64 lowercase hex digits (the count is separate)."""
        return format(self._sum % MODULUS, "064x")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TableDigest):
            return NotImplemented
        return self.count == other.count and (self._sum - other._sum) % MODULUS == 0

    def __hash__(self) -> int:
        return hash((self.count, self._sum % MODULUS))

    def __repr__(self) -> str:
        return f"TableDigest(count={self.count}, hexdigest={self.hexdigest()!r})"


def add_hex(a: str, b: str) -> str:
    """The digest of the union of two row multisets, from their hexdigests."""
    return format((int(a, 16) + int(b, 16)) % MODULUS, "064x")


def table_digest(rows: Iterable[Sequence[Any]], kinds: Sequence[Kind] | None = None) -> TableDigest:
    digest = TableDigest(kinds)
    digest.add_rows(rows)
    return digest
