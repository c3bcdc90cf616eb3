"""The independent reading's rule for JSON (:mod:`replicator.inspect.proof` has the table): a document's
canonical text (compact, keys sorted, the last of duplicate keys kept, numbers by their exact value).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal

from replicator.inspect.proof_numbers import plain
from replicator.inspect.proof_rule import ColumnType, Read, unreadable


def _no_constant(word: str) -> object:
    raise ValueError(f"{word} is not JSON")


def _json_canon(doc: object, strip_nul: bool) -> str:
    if doc is None:
        return "null"
    if doc is True:
        return "true"
    if doc is False:
        return "false"
    if isinstance(doc, Decimal | int):
        return plain(Decimal(doc))
    if isinstance(doc, str):
        return json.dumps(doc.replace("\x00", "") if strip_nul else doc, ensure_ascii=False)
    if isinstance(doc, list):
        return "[" + ",".join(_json_canon(item, strip_nul) for item in doc) + "]"
    assert isinstance(doc, dict)
    items = ((k.replace("\x00", "") if strip_nul else k, v) for k, v in doc.items())
    ordered = sorted(items, key=lambda item: item[0])
    return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_json_canon(v, strip_nul)}" for k, v in ordered) + "}"


def _json_text(text: str, strip_nul: bool) -> str | None:
    try:
        doc = json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    try:
        return _json_canon(doc, strip_nul)
    except RecursionError:
        return None


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
