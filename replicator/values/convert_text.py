"""Converters for text and blobs (text, varchar, char, citext, bytea), and the values spelled as text labels
(boolean, uuid, enum).

Reading convention (invalid UTF-8). ``sqlite3`` raises on TEXT that is not valid UTF-8. The reader
reads with the default ``str`` text factory and, only on that error, re-reads with
``conn.text_factory = decode_text``: bytes that are not UTF-8 then arrive as lone surrogates
U+DC80..U+DCFF (Python's ``surrogateescape``). Valid UTF-8 can never produce a surrogate, so a
surrogate in a ``str`` always means "these source bytes were not UTF-8": text targets refuse it
(or replace it by U+FFFD with ``replace_bad_utf8``) and ``bytea`` targets restore the exact bytes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Final

from replicator.values.fastpath import UTF8_CLAUSE, Plan, unchanged, utf8_ok
from replicator.values.refusal import ValueRefused, refuse_storage, storage_name
from replicator.values.targettype import TargetType, UnsupportedType


def decode_text(data: bytes) -> str:
    """``sqlite3`` text factory for the fallback read: invalid UTF-8 bytes become lone surrogates."""
    return data.decode("utf-8", "surrogateescape")


_SURROGATE: Final = re.compile("[\ud800-\udfff]+")


def clean_text(t: TargetType) -> Callable[[str], str]:
    """NUL and invalid-UTF-8 handling shared by text, varchar, char, json and jsonb."""
    strip_nul, replace_bad = t.strip_nul, t.replace_bad_utf8

    def clean(s: str) -> str:
        if "\x00" in s:
            if not strip_nul:
                raise ValueRefused(
                    f"text contains NUL (\\x00) at character {s.index(chr(0))}; PostgreSQL text cannot hold it",
                    setting="strip_nul = true",
                )
            s = s.replace("\x00", "")
        if not s.isascii() and not utf8_ok(s):
            bad = _SURROGATE.search(s)
            if bad is not None:
                if not replace_bad:
                    raw = bad.group().encode("utf-8", "surrogateescape") if bad.group() >= "\udc80" else b"?"
                    raise ValueRefused(
                        f"text is not valid UTF-8 (bytes {raw[:8].hex(' ')} at character {bad.start()})",
                        setting="replace_bad_utf8 = true",
                    )
                s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return s

    return clean


def as_text(v: object, clean: Callable[[str], str]) -> str:
    """Any storage class as exact text: numbers by their shortest repr, blobs if they are UTF-8."""
    if type(v) is str:
        return clean(v)
    if type(v) is int:
        return str(v)
    if type(v) is float:
        return repr(v)
    if type(v) is bytes:
        try:
            return clean(v.decode("utf-8"))
        except UnicodeDecodeError:
            return clean(decode_text(v))
    raise refuse_storage(v, "text")


def text_plan(t: TargetType) -> Plan:
    clean = clean_text(t)
    limit = t.length if t.name in ("varchar", "char") else None
    label = f"{t.name}({limit})"

    def convert(v: object) -> object:
        if v is None:
            return None
        s = clean(v) if type(v) is str else as_text(v, clean)
        if limit is not None and len(s) > limit:
            raise ValueRefused(f"{len(s)} characters do not fit {label}")
        return s

    guard = "type({v}) is str and '\\x00' not in {v}" + UTF8_CLAUSE
    if limit is not None:
        guard += f" and len({{v}}) <= {limit}"
    return Plan(convert, unchanged(guard))


def bytea_plan(t: TargetType) -> Plan:
    def convert(v: object) -> object:
        if v is None or type(v) is bytes:
            return v
        if type(v) is str:
            return v.encode("utf-8", "surrogateescape")
        raise refuse_storage(v, "bytea")

    return Plan(convert, unchanged("type({v}) is bytes"))


_BOOLEANS: Final[Mapping[object, bool]] = {
    0: False,
    1: True,
    **dict.fromkeys(("f", "false", "n", "no", "off", "0"), False),
    **dict.fromkeys(("t", "true", "y", "yes", "on", "1"), True),
}


def boolean_plan(t: TargetType) -> Plan:
    """0/1 (also 0.0/1.0) and PostgreSQL's own full spellings, any case: t/f, true/false, y/n,
    yes/no, on/off, '1'/'0'. No prefixes (PostgreSQL reads 'tr' as true), no spaces."""

    def convert(v: object) -> object:
        if v is None:
            return None
        result = _BOOLEANS.get(v)
        if result is None and type(v) is str:
            result = _BOOLEANS.get(v.lower())
        if result is None or type(v) is bytes:
            raise ValueRefused(f"{storage_name(v)} value is not a boolean (0/1, t/f, true/false, yes/no, y/n, on/off)")
        return result

    return Plan(convert, (("type({v}) is int and ({v} == 0 or {v} == 1)", "{v} == 1"),))


_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}"
)


def uuid_plan(t: TargetType) -> Plan:
    """36-char hyphenated (Prisma) or 32 hex digits (Django, SQLAlchemy), any case; 16-byte blobs."""

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is str:
            if _UUID.fullmatch(v):
                return uuid.UUID(v)
            raise ValueRefused("text is not a UUID (8-4-4-4-12 or 32 hex digits)")
        if type(v) is bytes and len(v) == 16:
            return uuid.UUID(bytes=v)
        raise refuse_storage(v, "uuid")

    return Plan(convert)


def enum_plan(t: TargetType) -> Plan:
    labels = frozenset(t.enum_labels)
    if not labels:
        raise UnsupportedType(f"enum type {t.enum_name!r} has no labels", hint="pass enum_labels")
    shown = ", ".join(t.enum_labels[:8]) + (", …" if len(t.enum_labels) > 8 else "")

    def convert(v: object) -> object:
        if v is None or v in labels:
            return v
        raise ValueRefused(f"{storage_name(v)} value is not a label of enum {t.enum_name or '(unnamed)'}: {shown}")

    return Plan(convert, unchanged("{v} in {k}"), labels)
