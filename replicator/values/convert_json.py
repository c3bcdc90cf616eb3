"""The converter for json and jsonb columns: JSON text verbatim once validated, never re-encoded.

Why apart from text: a JSON value is checked as a document (validity, nesting deeper than Python's
recursion limit, jsonb's refusal of the ``\\u0000`` escape) and sent in wrappers whose ``dumps`` is the
identity, or on the wire as jsonb's binary form; only its NUL and UTF-8 handling is text's
(:func:`replicator.values.convert_text.clean_text`).
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from typing import Any, Final

import msgspec
from psycopg.types.json import Json, Jsonb

from replicator.values.convert_text import as_text, clean_text
from replicator.values.fastpath import Plan
from replicator.values.refusal import ValueRefused
from replicator.values.targettype import TargetType

_c_canonical: Callable[[object], str | None] | None
try:  # the C canonical pass (checkpoints/_canonical.c): it validates a document as it writes the digest's text
    from checkpoints._canonical import canonical as _c_canonical
except ImportError:  # built at install where a compiler is there; without it documents are validated below
    _c_canonical = None

_JSON_VALIDATOR: Final = msgspec.json.Decoder(msgspec.Raw)
#: msgspec recurses per nesting level within Python's recursion limit (1000); PostgreSQL's parser stops at
#: ~13,000 object levels (~14,500 array levels) with the default 2 MB max_stack_depth (PostgreSQL 15, json and
#: jsonb alike), and its "stack depth limit exceeded" fails the whole COPY. Deeper documents than this are
#: refused by name, so a quarantine takes the row and the table loads.
JSON_MAX_DEPTH: Final = 10_000
_DEEP_JSON_LOCK: Final = threading.Lock()
#: A document this short cannot nest deeper than :data:`JSON_MAX_DEPTH` (a level takes two characters), so
#: the C pass's acceptance is its whole validation.
_C_VALIDATES: Final = 2 * JSON_MAX_DEPTH

CANONICAL: Final[dict[int, tuple[object, str]]] = {}
"""``id(value)`` → ``(value, canonical text)`` for the JSON values a digesting converter returned
(``json_plan(digest=True)``): the row's digest (:func:`replicator.values.readback.row_digester`) takes the
text the validating C pass wrote instead of parsing the document a second time. The entry holds the value,
so its id is not reused while it is there; a reader checks identity, so a stale or raced entry can only miss.
``RowPipe.run`` clears it after each row it does not digest whole (a refused or blocked row); past
:data:`_CANONICAL_MAX` entries it is cleared here too, for any other caller."""
_CANONICAL_MAX: Final = 64


def _validate_deep_json(text: str) -> None:
    """Validate JSON nested deeper than the recursion limit by raising it for this one call (rare)."""
    with _DEEP_JSON_LOCK:
        previous = sys.getrecursionlimit()
        sys.setrecursionlimit(max(previous, JSON_MAX_DEPTH + 200))
        try:
            _JSON_VALIDATOR.decode(text)
        except msgspec.DecodeError as exc:
            raise ValueRefused(f"not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueRefused(f"JSON nests deeper than {JSON_MAX_DEPTH} levels") from None
        finally:
            sys.setrecursionlimit(previous)


_NUL_ESCAPE: Final = re.compile(r"(\\+)u0000")


def _identity(text: str) -> str:
    """The ``dumps`` of our Json/Jsonb wrappers: the value already is JSON text, sent verbatim."""
    return text


def _strip_nul_escapes(text: str) -> str:
    """Remove ``\\u0000`` escapes (an odd run of backslashes before u0000), keep ``\\\\u0000``."""

    def replace(match: re.Match[str]) -> str:
        slashes = match.group(1)
        return slashes[:-1] if len(slashes) % 2 else match.group()

    return _NUL_ESCAPE.sub(replace, text)


def _has_nul_escape(text: str) -> bool:
    return any(len(m.group(1)) % 2 for m in _NUL_ESCAPE.finditer(text))


def json_plan(t: TargetType, wire: bool, *, digest: bool = False) -> Plan:
    """JSON text verbatim (validated), and bare numbers SQLite's NUMERIC affinity stored as numbers.

    Values are Json/Jsonb wrappers whose ``dumps`` is the identity (the text is sent as it is); on
    the wire, json is its text and jsonb is "\\x01" + text (its binary form once UTF-8 encoded).
    jsonb refuses the ``\\u0000`` escape (json keeps it); ``strip_nul`` removes it from jsonb text.

    ``digest``: every converted row is digested next (the snapshot's ``RowPipe``), so a document is
    validated by the C canonical pass, whose text the digest then takes from :data:`CANONICAL`: one
    parse per document instead of two (msgspec's validation, then the canonical pass). A document the
    C pass declines (long floats, a lone surrogate escape, not JSON...) is validated by msgspec as
    before; so is any document where no row digest follows, whose canonical text would be wasted.
    """
    clean = clean_text(t)
    binary = t.name == "jsonb"
    wrap: Callable[[Any, Callable[[str], str]], object] = Jsonb if binary else Json
    strip_nul = t.strip_nul
    canonical_of = _c_canonical if digest else None

    def convert(v: object) -> object:
        canonical = None
        if type(v) is str:
            if canonical_of is not None and len(v) <= _C_VALIDATES and (canonical := canonical_of(v)) is not None:
                text = v  # JSON, so no NUL; and no lone surrogate, which the C pass declines: clean() is void
            else:
                text = v if v.isascii() and "\x00" not in v else clean(v)
        elif v is None:
            return None
        elif type(v) is bytes:
            try:
                text = clean(v.decode("utf-8"))
            except UnicodeDecodeError:
                raise ValueRefused(
                    "blob is not UTF-8 JSON text", hint="a SQLite JSONB blob: read the column as json(column)"
                ) from None
        elif type(v) is float and (v != v or v in (float("inf"), float("-inf"))):
            raise ValueRefused(f"real {v!r} is not a JSON number")
        else:
            text = as_text(v, clean)
        if canonical is None and canonical_of is not None and type(v) is not str and len(text) <= _C_VALIDATES:
            canonical = canonical_of(text)  # a blob's or a number's text
        if canonical is None:
            try:
                _JSON_VALIDATOR.decode(text)
            except msgspec.DecodeError as exc:
                raise ValueRefused(f"not valid JSON: {exc}") from None
            except RecursionError:
                _validate_deep_json(text)
        if binary and "\\u0000" in text and _has_nul_escape(text):
            if not strip_nul:
                raise ValueRefused(
                    "JSON contains the escape \\u0000, which jsonb cannot hold",
                    setting="strip_nul = true",
                )
            text, canonical = _strip_nul_escapes(text), None  # the digest reads the stripped text itself
        value = ("\x01" + text if binary else text) if wire else wrap(text, _identity)
        if canonical is not None:
            if len(CANONICAL) >= _CANONICAL_MAX:
                CANONICAL.clear()
            CANONICAL[id(value)] = (value, canonical)
        return value

    return Plan(convert)
