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

_JSON_VALIDATOR: Final = msgspec.json.Decoder(msgspec.Raw)
#: msgspec recurses per nesting level within Python's recursion limit (1000); PostgreSQL's parser
#: goes to about 10k-40k levels with the default max_stack_depth. Deeper documents than this are
#: refused by name.
JSON_MAX_DEPTH: Final = 20_000
_DEEP_JSON_LOCK: Final = threading.Lock()


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


def json_plan(t: TargetType, wire: bool) -> Plan:
    """JSON text verbatim (validated), and bare numbers SQLite's NUMERIC affinity stored as numbers.

    Values are Json/Jsonb wrappers whose ``dumps`` is the identity (the text is sent as it is); on
    the wire, json is its text and jsonb is "\\x01" + text (its binary form once UTF-8 encoded).
    jsonb refuses the ``\\u0000`` escape (json keeps it); ``strip_nul`` removes it from jsonb text.
    """
    clean = clean_text(t)
    binary = t.name == "jsonb"
    wrap: Callable[[Any, Callable[[str], str]], object] = Jsonb if binary else Json
    strip_nul = t.strip_nul

    def convert(v: object) -> object:
        if type(v) is str:
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
            text = _strip_nul_escapes(text)
        if wire:
            return "\x01" + text if binary else text
        return wrap(text, _identity)

    return Plan(convert)
