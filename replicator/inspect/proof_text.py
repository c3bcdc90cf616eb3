"""The independent reading's rules for text and bytes (:mod:`replicator.inspect.proof` has the table): text,
varchar, char, enum, bytea, the words a boolean is stored as, and the fallback, a value's text form.
"""

from __future__ import annotations

from typing import Final

from replicator.inspect.proof_rule import ColumnType, Read, unreadable

_TRUE: Final = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE: Final = frozenset({"f", "false", "n", "no", "off", "0"})


def text_source(t: ColumnType) -> Read:
    strip_nul, replace_bad, pad = t.strip_nul, t.replace_bad_utf8, t.name == "char"

    def clean(text: str) -> object:
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: the source bytes were not UTF-8
                raw = text.encode("utf-8", "surrogateescape")
                if not replace_bad:
                    return raw
                text = raw.decode("utf-8", "replace")
        if strip_nul:
            text = text.replace("\x00", "")
        return text.rstrip(" ") if pad else text

    def read(value: object) -> object:
        if type(value) is str:
            return clean(value)
        if type(value) is int:
            return str(value)
        if type(value) is float:
            return repr(value)
        if type(value) is bytes:
            try:
                return clean(value.decode("utf-8"))
            except UnicodeDecodeError:
                return clean(value.decode("utf-8", "surrogateescape"))
        return unreadable(value)

    return read


def char_target(value: object) -> object:
    return value.rstrip(" ") if type(value) is str else value


def bytea_source(value: object) -> object:
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode("utf-8", "surrogateescape")
    return unreadable(value)


def bytea_target(value: object) -> object:
    return bytes(value) if isinstance(value, bytearray | memoryview) else value


def boolean_source(value: object) -> object:
    if type(value) is int or type(value) is float:
        if value in (0, 1):
            return value == 1
    elif type(value) is str:
        word = value.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return unreadable(value)


def text_form(value: object) -> object:
    """Fallback: SQLite's value as text, the way PostgreSQL would print the same thing."""
    if type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return repr(value)
    if type(value) is bytes:
        return "\\x" + value.hex()
    return unreadable(value)
