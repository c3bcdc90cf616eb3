"""The independent reading's rule for JSON (:mod:`replicator.inspect.proof` has the table): a document's
canonical text (compact, keys sorted, the last of duplicate keys kept, numbers by their exact value).
"""

from __future__ import annotations

import json
import math
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Final

from replicator.inspect.proof_numbers import plain
from replicator.inspect.proof_rule import ColumnType, Read, unreadable


def _no_constant(word: str) -> object:
    raise ValueError(f"{word} is not JSON")


#: Documents nest as deep as PostgreSQL parses them (~14,500 array levels with its default 2 MB stack): read to
#: this depth, past Python's recursion limit (``json.loads`` recurses in C per level; a level costs it a few
#: hundred bytes of stack). The load refuses documents deeper than 10,000 levels.
_DEEPEST: Final = 20_000
_DEEP_LOCK: Final = threading.Lock()


def _scalar(doc: object, strip_nul: bool) -> str:
    if doc is None:
        return "null"
    if doc is True:
        return "true"
    if doc is False:
        return "false"
    if isinstance(doc, Decimal | int):
        return plain(Decimal(doc))
    assert isinstance(doc, str)
    return json.dumps(doc.replace("\x00", "") if strip_nul else doc, ensure_ascii=False)


def _members(doc: dict[str, object], strip_nul: bool) -> Iterator[tuple[str, object]]:
    items = ((k.replace("\x00", "") if strip_nul else k, v) for k, v in doc.items())
    ordered = sorted(items, key=lambda item: item[0])
    return ((("," if i else "") + json.dumps(k, ensure_ascii=False) + ":", v) for i, (k, v) in enumerate(ordered))


def _json_canon(doc: object, strip_nul: bool) -> str:
    """Compact, keys sorted: without recursion, so a document as deep as PostgreSQL holds is read whole."""
    out: list[str] = []
    parents: list[tuple[Iterator[tuple[str, object]], str]] = []
    items: Iterator[tuple[str, object]] = iter([("", doc)])
    close = ""
    while True:
        for before, value in items:
            out.append(before)
            if isinstance(value, list):
                out.append("[")
                parents.append((items, close))
                items, close = ((("," if i else ""), v) for i, v in enumerate(value)), "]"
                break
            if isinstance(value, dict):
                out.append("{")
                parents.append((items, close))
                items, close = _members(value, strip_nul), "}"
                break
            out.append(_scalar(value, strip_nul))
        else:
            out.append(close)
            if not parents:
                return "".join(out)
            items, close = parents.pop()


def _loads(text: str) -> object:
    return json.loads(text, parse_float=Decimal, parse_constant=_no_constant)


def _deep_loads(text: str) -> object:
    """``json.loads`` for a document deeper than the recursion limit: the limit raised for this one call."""
    with _DEEP_LOCK:
        previous = sys.getrecursionlimit()
        sys.setrecursionlimit(max(previous, _DEEPEST + 200))
        try:
            return _loads(text)
        finally:
            sys.setrecursionlimit(previous)


def _json_text(text: str, strip_nul: bool) -> str | None:
    try:
        try:
            doc = _loads(text)
        except RecursionError:
            doc = _deep_loads(text)
    except (ValueError, RecursionError):
        return None
    return _json_canon(doc, strip_nul)


def json_source(t: ColumnType) -> Read:
    strip_nul = t.strip_nul

    def read(value: object) -> object:
        text: str | None = None
        if type(value) is str:
            text = value
        elif type(value) is bytes:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        elif type(value) is int:
            return plain(Decimal(value))
        elif type(value) is float and math.isfinite(value):
            return plain(Decimal(repr(value)))
        if text is not None and strip_nul:  # the opt-in drops NUL from the text itself, not only from strings
            text = text.replace("\x00", "")
        canon = None if text is None else _json_text(text, strip_nul)
        return unreadable(value) if canon is None else canon

    return read


def json_target(t: ColumnType) -> Read:
    strip_nul = t.strip_nul

    def read(value: object) -> object:
        if type(value) is str:
            canon = _json_text(value, strip_nul)
            return unreadable(value) if canon is None else canon
        return value

    return read
