"""The canonical row encoding and the order-independent table digest, defined here and nowhere else.

The snapshot's per-table checksums, ``verify`` (over rows read back from PostgreSQL) and the content
digests inside checkpoints all call this module, so "the same rows" means the same bytes everywhere.
An auditor reimplements it from this docstring alone.

Row encoding
------------
A row's encoding is the MessagePack encoding (https://msgpack.org/ spec) of one array holding the
row's values in column order, every header in the shortest form the spec allows (fixarray, fixstr,
positive/negative fixint and so on; ``msgspec.msgpack`` writes exactly that). Each value is first
mapped to a MessagePack value, by its Python type (as psycopg returns it from PostgreSQL, or as the
replicator's converter produces it from SQLite before writing):

=================================  ==============================================================
value                              MessagePack value
=================================  ==============================================================
None (SQL NULL; also JSON null)    nil
bool                               true / false
int in [-2**63, 2**64-1]           int (unsigned forms for values >= 0, signed forms below)
int outside that range             str: its decimal digits (the exact number, see below)
decimal.Decimal, integral          as the int of the same value (so ``Decimal("100.00")`` is 100)
decimal.Decimal, otherwise         str: the canonical exact number, see below
float (binary64)                   float 64, the value's own bits (``-0.0`` stays apart from ``0.0``)
str                                str, UTF-8 (lone surrogates, which PostgreSQL never returns, as
                                   Python's ``surrogatepass`` writes them)
bytes, bytearray, memoryview       bin
datetime with an offset            timestamp extension (type -1): the instant, in the shortest of
                                   the 32/64/96-bit forms the spec allows; 14:00+02:00 is 12:00Z
datetime without a tzinfo          str: ``YYYY-MM-DDTHH:MM:SS`` and ``.ffffff`` when the
                                   microseconds are not zero (Python's ``isoformat()``)
date                               str ``YYYY-MM-DD``
time                               str ``HH:MM:SS[.ffffff]``, then ``Z`` for a zero offset or
                                   ``+HH:MM``/``-HH:MM`` when it has a tzinfo
timedelta                          int: total microseconds
uuid.UUID                          str: 36 lowercase characters, 8-4-4-4-12
ipaddress address/interface/net    str: Python's ``str()`` (``192.0.2.1``, ``192.0.2.1/24``,
                                   ``2001:db8::/32``: compressed, lowercase), for inet and cidr
list or tuple (a PostgreSQL array) array of its elements, mapped alike
JSON value (column kind ``json``)  str: the canonical JSON text, see below
=================================  ==============================================================

A datetime whose tzinfo gives no offset is read as UTC. Subclasses (IntEnum, pendulum's DateTime...)
are mapped as their base type.

*Look-alikes.* Values of different types may share an encoding (a naive datetime and its ISO text, a
timedelta and an int, a UUID and its text): a digest compares one column with the same column, which
holds one PostgreSQL type on both sides, and binary COPY refuses a value of the wrong type before it
could be hashed. What must differ does: ``1``, ``1.0``, ``"1"``, ``b"1"``, ``True`` and None; the
length prefixes of str, bin and array keep value boundaries unambiguous.

*Exact numbers.* int and Decimal agree because a numeric column returns Decimal even for a value
written as int, and numeric(10,2) pads ``1.5`` to ``1.50``. The text of a non-integral (or huge)
exact number is the plain decimal notation with no exponent, no leading ``+``, no leading zeros
before the point other than a single ``0``, no trailing zeros after the point: ``1.50``, ``1.5000``
and ``15E-1`` all give ``1.5``. Non-finite Decimals give ``NaN``, ``Infinity``, ``-Infinity`` (sNaN
counts as NaN).

*Floats* are kept apart from exact numbers (``1.0`` is not ``1``) and written as their bits, a NaN's
included (``float('nan')`` is ``0x7FF8000000000000``; PostgreSQL's arithmetic can yield
``0xFFF8...`` and psycopg's binary reads keep it): SQLite stores no NaN at all, so a NaN in
PostgreSQL never matches the source, whatever its bits.

*JSON* (json and jsonb columns) is ambiguous to psycopg's caller (it returns parsed dict, list, str,
int, ...), so the caller names those columns: ``RowEncoder(kinds)`` with ``"json"`` in their places, or
wraps a value in :class:`Json` (psycopg's own ``Json``/``Jsonb`` wrappers are recognised too), or
hands the document unparsed, as its text, in :class:`JsonText` (in any column). A document is read
as Python's ``json.loads`` reads it (the last of duplicate keys kept; a number with a fraction or an
exponent is the float ``float(literal)``, any other an exact int). The canonical text is compact (no
whitespace), objects with keys sorted by Unicode code point, strings escaped exactly as Python's
``json.dumps(ensure_ascii=False)`` does (``\\"``, ``\\\\``, ``\\n``, ``\\r``, ``\\t``, ``\\b``, ``\\f``, other
controls below U+0020 as lowercase ``\\u00XX``; nothing else, so non-ASCII is written as itself), and
every number -- int or float -- written as the canonical exact number above (floats through their
shortest repr: ``0.1`` is ``0.1``, ``1e2`` and ``100.0`` are ``100``, ``1e-7`` is ``0.0000001``,
``-0.0`` is ``0``), because jsonb stores numbers as numeric: it turns ``1e2`` into ``100`` and keeps
``1.50``. Non-finite floats, which are not JSON (``1e400`` overflows to one), are ``NaN``,
``Infinity``, ``-Infinity``. jsonb also drops duplicate keys (keeping the last) and reorders keys, so
both sides agree. A SQL NULL and a JSON ``null`` (parsed or as text) both encode as nil. So the
documents ``{"b": 1, "a": [1.50, "\\u00e9"]}`` and ``{"a":[1.5,"é"],"b":1.0}`` are both
``{"a":[1.5,"é"],"b":1}``, while a different value, key, string or order of array elements gives a
different text (whitespace and the order of object keys never count). Numbers with a fraction or an
exponent are compared as doubles, as psycopg's parsed documents hold them: two that differ only past
a double's precision (``0.1`` and ``0.1000000000000000000001``) share a text.

*How the JSON text is computed* (not part of the definition, which the paragraph above is):
:func:`canonical_json_text` first tries one C pass (``checkpoints/_canonical.c``, built at install
with a C compiler): it writes the canonical text as it parses, reordering only objects' members, and a
float literal of at most 15 significant digits in the normal range as its own digits (DBL_DIG: it is
its double's shortest repr). A longer float, NaN, a lone surrogate, a huge integer, text that is not
JSON or ``bytes`` make it answer None: the paths below, then its exact mode (every number, for
documents too deep for msgspec and json.loads). Else the text is decoded by ``msgspec`` and encoded with
``order="sorted"``: msgspec's key order (UTF-8 bytes) is code-point order and its escapes are
exactly ``json.dumps``'s (a test checks every code point), and it writes a float in plain notation
with the shortest round-trip digits -- its canonical text -- unless it needs an exponent or ends in
``.0``. When the output holds neither (``.0`` not followed by a digit, or a digit, ``e``, then digits
or ``-`` up to the end of a number, anywhere, strings included), it is the canonical text. Otherwise
each such float outside the strings is replaced by its canonical text (msgspec's digits round-trip,
so it is the literal's float), strings told apart by counting ``"`` -- exact when the output holds
no backslash, hence no escaped quote; an output with one is decoded again with a ``float_hook``
that turns each fraction-or-exponent literal into its canonical text (the scan and the rewrite:
:mod:`checkpoints.canonical_numbers`, with :func:`exact_number`). A text msgspec
refuses (a lone surrogate escape, ``NaN``, ints beyond its range, nesting beyond its depth) is read
by ``json.loads`` and canonicalised in Python (:func:`canonical_json_py`, the definition written as
code, which the tests hold the fast paths to). A parsed value is first written by msgspec and read
back; only when that gives back an equal value (JSON's own types, no NaN) does it take the C path.

Why MessagePack: a row of plain values (ints, floats, text, bytes, date-times) is encoded by one C
call (``msgspec``), ~10x faster than building the bytes in Python; the checksum of every snapshot
row, every verify pass and every applied row image pays this cost.

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
import ipaddress
import json.encoder
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Literal, TypeAlias

import msgspec

from checkpoints.canonical_numbers import DIGITS_AS_ZERO, DOT_ZERO_END, EXPONENT, float_as_exact, float_text, rewritten
from checkpoints.canonical_numbers import exact_number as exact_number  # part of this module's API
from checkpoints.errors import CheckpointError

_c_canonical: Callable[[object], str | None] | None
_c_canonical_exact: Callable[[object], str | None] | None
try:  # the common documents in one C pass (checkpoints/_canonical.c); built at install when a compiler is there
    from checkpoints._canonical import canonical as _c_canonical
    from checkpoints._canonical import canonical_exact as _c_canonical_exact
except ImportError:  # pragma: no cover - an install without a C compiler: the msgspec path below does it all
    _c_canonical = _c_canonical_exact = None

Kind: TypeAlias = Literal["auto", "json", "native"]
"""How a column's values are read: ``auto`` by Python type, ``json`` as a parsed JSON document,
``native`` by Python type too, the caller promising only None and the types msgspec writes as the
table below says (int, float, str, bytes, bool, datetime, date, time, UUID): the fast path."""

MODULUS: Final = 1 << 256
EMPTY: Final = "0" * 64
"""The hexdigest of a table with no rows."""

#: PostgreSQL type OIDs of json and jsonb, for :func:`kinds_from_oids`.
JSON_OIDS: Final = frozenset({114, 3802})

_encode_json_str: Callable[[str], str] = json.encoder.encode_basestring
_msgpack: Final = msgspec.msgpack.Encoder()
_pack: Final = _msgpack.encode
#: Python types msgspec writes exactly as the table in the module docstring says, with no mapping.
_NATIVE: Final = frozenset(
    {type(None), bool, int, float, str, bytes, bytearray, memoryview, dt.datetime, dt.date, dt.time, uuid.UUID}
)
#: Native types msgspec never refuses (an int may be too large, a str hold a lone surrogate, an aware
#: datetime's instant fall before year 1).
_SAFE: Final = _NATIVE - {int, str, dt.datetime}
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_EPOCH_UTC: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: What psycopg returns for inet (addresses, interfaces) and cidr (networks).
_IP_TYPES: Final = (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network)


class Json:
    """Marks a value as a JSON document in a column the encoder otherwise reads by Python type."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Json({self.value!r})"


def canonical_json_py(value: Any) -> str:
    """The canonical JSON text of a parsed JSON value, computed in Python: the definition as code
    (see the module docstring), the fallback of :func:`canonical_json` and its reference in tests."""
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
        return float_as_exact(value)
    if isinstance(value, dict):
        items = []
        for key in sorted(value):
            if not isinstance(key, str):
                raise CheckpointError(
                    f"JSON object key {key!r} is not a string",
                    hint="JSON columns hold parsed JSON: keys are strings (json.loads gives them so)",
                )
            items.append(_encode_json_str(key) + ":" + canonical_json_py(value[key]))
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json_py(item) for item in value) + "]"
    raise CheckpointError(
        f"a JSON column holds a {type(value).__name__}, which JSON cannot",
        hint="pass JSON columns parsed (dict, list, str, int, float, bool, None)",
    )


def _number(literal: str) -> msgspec.Raw:
    """msgspec's ``float_hook``: each float literal as its canonical text."""
    return msgspec.Raw(float_text(literal))


#: JSON text → Python values whose floats are already their canonical text (``msgspec.Raw``).
_JSON_NUMBERS: Final = msgspec.json.Decoder(float_hook=_number)
_JSON_PLAIN: Final = msgspec.json.Decoder()
_JSON_SORTED: Final = msgspec.json.Encoder(order="sorted")
_decode_plain: Final = _JSON_PLAIN.decode
_encode_sorted: Final = _JSON_SORTED.encode


def _sorted_json(value: Any) -> str | None:
    """msgspec's sorted text of a decoded value with every float in its canonical text, or None
    (a float to rewrite in a text with a backslash: the float_hook pass)."""
    out = _encode_sorted(value)
    digits_as_zero = out.translate(DIGITS_AS_ZERO)
    if DOT_ZERO_END.search(out) is None and EXPONENT.search(digits_as_zero) is None:
        return out.decode()
    return rewritten(out, digits_as_zero)


def canonical_json_text(text: str | bytes) -> str:
    """The canonical JSON text of a JSON document given as text (or UTF-8 bytes); see the module
    docstring. Raises :class:`CheckpointError` when the text is not JSON."""
    if _c_canonical is not None and (done := _c_canonical(text)) is not None:
        return done
    try:
        fast = _sorted_json(_decode_plain(text))  # floats as Python floats: one C pass each way
        if fast is not None:
            return fast
    except (ValueError, RecursionError):  # msgspec.DecodeError and UnicodeError are ValueErrors
        pass
    try:
        return _JSON_SORTED.encode(_JSON_NUMBERS.decode(text)).decode()  # each float through _number
    except (ValueError, RecursionError):
        pass
    if (deep := _deep_json(text)) is not None:  # nested beyond the recursion limit, say
        return deep
    try:
        return canonical_json_py(json.loads(text))
    except ValueError as exc:
        raise CheckpointError(
            f"a JSON column holds text that is not JSON ({exc})", hint="pass the document as PostgreSQL returns it"
        ) from None
    except RecursionError:
        raise CheckpointError(
            "a JSON document nests deeper than Python's recursion limit and is not one the C reader takes"
            " (it is not JSON; or holds NaN, Infinity or a lone surrogate, which only the Python reading takes;"
            " or its objects' keys are out of order at thousands of levels)",
            hint="such a document cannot be checksummed: correct or remove it",
        ) from None


def _deep_json(text: str | bytes) -> str | None:
    """The C pass's exact mode (every number; no recursion) for what msgspec could not read: documents
    nested deeper than the recursion limit above all (PostgreSQL stores them, json.loads cannot)."""
    if _c_canonical_exact is None:
        return None
    if not isinstance(text, str):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return _c_canonical_exact(text)


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a parsed JSON value (see the module docstring).

    msgspec writes the value (keys sorted) and reads it back: when that gives an equal value, the
    value held only JSON's own types (not a Decimal, datetime or NaN, which msgspec would write as a
    string or null) and its canonical text is computed from msgspec's text, in C; otherwise in Python.
    """
    try:
        first = _JSON_SORTED.encode(value)  # TypeError: a key that is not a str, a type JSON lacks
        decoded = _JSON_PLAIN.decode(first)
        if decoded == value:
            return _sorted_json(decoded) or _JSON_SORTED.encode(_JSON_NUMBERS.decode(first)).decode()
    except (TypeError, ValueError, RecursionError):
        pass
    return canonical_json_py(value)


class JsonText:
    """A JSON document as its text (``str``, or UTF-8 ``bytes``), not parsed: digested as the
    document it spells (:func:`canonical_json_text`), so ``JsonText('{"a": 1.0}')`` encodes like
    ``Json({"a": 1})``. What the snapshot has (the SQLite text it loads) and what a reader gets
    from PostgreSQL without parsing: no Python objects are built for the document."""

    __slots__ = ("text",)

    def __init__(self, text: str | bytes) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"JsonText({self.text!r})"


def _is_psycopg_json(value: Any) -> bool:
    return type(value).__module__ == "psycopg.types.json" and hasattr(value, "obj")


def _str_header(n: int) -> bytes:
    if n < 32:
        return bytes((0xA0 | n,))
    if n < 1 << 8:
        return b"\xd9" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xda" + n.to_bytes(2, "big")
    return b"\xdb" + n.to_bytes(4, "big")


def _timestamp(value: dt.datetime) -> msgspec.msgpack.Ext:
    """The timestamp extension of an aware datetime, computed here: its instant may lie outside the
    years 1..9999 in UTC (0001-01-01T00:00+05:00), which datetime itself cannot hold."""
    delta = value - _EPOCH_UTC  # between instants: the offset is applied exactly, without overflow
    seconds, nanos = delta.days * 86_400 + delta.seconds, delta.microseconds * 1000
    if 0 <= seconds < 1 << 34:
        if nanos == 0 and seconds < 1 << 32:
            return msgspec.msgpack.Ext(-1, seconds.to_bytes(4, "big"))
        return msgspec.msgpack.Ext(-1, (nanos << 34 | seconds).to_bytes(8, "big"))
    return msgspec.msgpack.Ext(-1, nanos.to_bytes(4, "big") + seconds.to_bytes(8, "big", signed=True))


def _exact(value: int | decimal.Decimal) -> int | str:
    """An exact number as MessagePack holds it: an int where one fits, else its canonical text."""
    if isinstance(value, int):
        number = int(value)
        return number if _INT_MIN <= number <= _INT_MAX else str(number)
    if value.is_finite() and value == value.to_integral_value():
        return _exact(int(value))
    return exact_number(value)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is JsonText:
        text = canonical_json_text(value.text)
        return None if text == "null" else text  # JSON null encodes as nil, parsed or not
    if isinstance(value, Json):
        value = value.value
    elif _is_psycopg_json(value):
        value = value.obj
    return canonical_json(value)


def _mapped(value: Any) -> Any:
    """One value as the MessagePack value the module docstring gives it (the slow path)."""
    if type(value) in _SAFE:
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | decimal.Decimal):
        return _exact(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        text = str(value)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "surrogatepass")
            return msgspec.Raw(_str_header(len(raw)) + raw)
        return text
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return _timestamp(value if value.utcoffset() is not None else value.replace(tzinfo=dt.UTC))
        if type(value) is dt.datetime:
            return value
        v = value
        return dt.datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.tzinfo, fold=v.fold)
    if isinstance(value, dt.date):
        return dt.date(value.year, value.month, value.day)
    if isinstance(value, dt.time):
        return dt.time(value.hour, value.minute, value.second, value.microsecond, tzinfo=value.tzinfo)
    if isinstance(value, dt.timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if isinstance(value, uuid.UUID):
        return uuid.UUID(int=value.int)
    if isinstance(value, _IP_TYPES):
        return str(value)
    if isinstance(value, list | tuple):
        return [_mapped(item) for item in value]
    if isinstance(value, Json | JsonText) or _is_psycopg_json(value):
        return _mapped(_json(value))  # the text may hold a lone surrogate (JSON's "\\udc80")
    if isinstance(value, dict):
        raise CheckpointError(
            "a dict in a column not marked as JSON",
            hint="give the column kind 'json' (RowEncoder(kinds)) or wrap the value in checkpoints.digest.Json",
        )
    raise CheckpointError(
        f"cannot digest a value of type {type(value).__module__}.{type(value).__qualname__}",
        hint="convert it to one of the documented types (see checkpoints.digest) before hashing",
    )


def canonical_value(value: Any) -> Any:
    """One value as the MessagePack value the module docstring gives it: what the ``auto`` kind does
    to every value of a row, for a caller that maps only the columns that need it and encodes the
    row as ``native`` (the same bytes)."""
    return _mapped(value)


def _encode_native(row: Sequence[Any]) -> bytes:
    """Every value is None or natively encoded (the caller's column kinds say so): one C call."""
    try:
        return _pack(row)
    except (OverflowError, UnicodeEncodeError, TypeError):  # TypeError: not a list/tuple, or a stray type
        return _pack([_mapped(value) for value in row])


def _encode_auto(row: Sequence[Any]) -> bytes:
    """Plain rows (the common case) in one C call; anything else value by value first."""
    if _NATIVE.issuperset(map(type, row)):
        try:
            return _pack(row if type(row) is list or type(row) is tuple else list(row))
        except (OverflowError, UnicodeEncodeError):  # a huge int, a lone surrogate: mapped below
            pass
    return _pack([_mapped(value) for value in row])


#: PostgreSQL types whose values psycopg returns (and the converter produces) as None or one of the
#: natively encoded Python types: by name (``format_type`` spelling) and by type OID.
NATIVE_TYPES: Final = frozenset(
    {
        "smallint", "integer", "bigint", "real", "double precision", "text", "varchar", "char", "enum",
        "bytea", "timestamp", "timestamptz", "date", "time", "timetz", "boolean", "uuid",
    }
)  # fmt: skip
NATIVE_OIDS: Final = frozenset({16, 17, 20, 21, 23, 25, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184, 1266, 2950})


def kinds_from_oids(oids: Iterable[int]) -> list[Kind]:
    """Column kinds from PostgreSQL type OIDs (``cursor.description[i].type_code``)."""
    return ["json" if oid in JSON_OIDS else "native" if oid in NATIVE_OIDS else "auto" for oid in oids]


def kinds_from_types(names: Iterable[str]) -> list[Kind]:
    """Column kinds from PostgreSQL type names without modifiers (``bigint``, ``varchar``, ``jsonb``)."""
    return ["json" if n in ("json", "jsonb") else "native" if n in NATIVE_TYPES else "auto" for n in names]


class RowEncoder:
    """Encodes rows of one table shape, as fast as the column ``kinds`` allow (None: all ``auto``).

    ``encode`` is chosen once: when every column is ``native`` a row is one msgspec call (a value
    msgspec refuses -- a huge int, a lone surrogate -- sends that row down the mapping); otherwise
    JSON columns are canonicalised first, then the row is one msgspec call if every other column is
    ``native``, else its value types are checked first.
    """

    __slots__ = ("_json", "_rest", "encode", "kinds")

    encode: Callable[[Sequence[Any]], bytes]
    """The canonical bytes of one row."""

    def __init__(self, kinds: Sequence[Kind] | None = None) -> None:
        self.kinds: tuple[Kind, ...] | None = None
        self._json: tuple[int, ...] = ()
        self._rest: Callable[[Sequence[Any]], bytes] = _encode_auto
        self.encode = _encode_auto
        if kinds is None:
            return
        for kind in kinds:
            if kind not in ("auto", "json", "native"):
                raise CheckpointError(f"unknown column kind {kind!r}", hint="use 'auto', 'json' or 'native'")
        self.kinds = tuple(kinds)
        self._json = tuple(i for i, kind in enumerate(kinds) if kind == "json")
        if all(kind in ("native", "json") for kind in kinds):  # a JSON document becomes a str or None
            self._rest = _encode_native
        if self._json:
            self.encode = self._encode_json
        elif kinds and all(kind == "native" for kind in kinds):
            self.encode = _encode_native

    def _encode_json(self, row: Sequence[Any]) -> bytes:
        assert self.kinds is not None
        if len(row) != len(self.kinds):
            raise CheckpointError(
                f"row has {len(row)} values but the encoder was given {len(self.kinds)} column kinds",
                hint="build the RowEncoder from the same column list as the query",
            )
        values = list(row)
        for i in self._json:
            values[i] = _json(values[i])
        return self._rest(values)

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
