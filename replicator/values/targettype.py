"""The PostgreSQL column types the converter writes: :class:`TargetType`, read from type text and rendered as SQL.

Why apart from the converters: the plan (:mod:`replicator.plan`) builds, stores and compares target types
without converting a value, and binary COPY needs each type's name for ``Copy.set_types``
(:func:`copy_types`); the converters (``values/convert*``) take a :class:`TargetType` and build one closure
per column from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

import msgspec
from psycopg import sql

from replicator.config import ColumnOverride
from replicator.errors import UsageError


class TargetType(msgspec.Struct, frozen=True):
    """A PostgreSQL column type, normalised, plus how the SQLite side stores it."""

    name: str
    """smallint, integer, bigint, real, double precision, numeric, text, varchar, char, bytea, boolean,
    timestamptz, timestamp, date, time, json, jsonb, uuid, or "enum"."""
    precision: int | None = None
    """numeric: total digits; timestamp, timestamptz, time: fractional-second digits (None = 6)."""
    scale: int | None = None
    length: int | None = None
    """varchar(n), char(n)."""
    enum_labels: tuple[str, ...] = ()
    enum_name: str | None = None
    """The enum type's name (for DDL; binary COPY sends enum labels as text, see copy_types)."""
    format: str | None = None
    """How the source stores it (profile.FORMATS). Only unix_s / unix_ms / julian_day change a
    conversion: they fix the unit of numbers (and allow numeric text) in datetime columns. None = per
    value (the magnitude rule)."""
    strip_nul: bool = False
    replace_bad_utf8: bool = False


class UnsupportedType(UsageError):
    """A PostgreSQL type this converter does not write (arrays, intervals, geometric types...)."""


#: Type names for ``Copy.set_types``. varchar, char and enum columns take the text binary format
#: (their receive functions read a label / string), so they need no registration with psycopg.
COPY_NAMES: Final[Mapping[str, str]] = {
    "smallint": "int2",
    "integer": "int4",
    "bigint": "int8",
    "real": "float4",
    "double precision": "float8",
    "numeric": "numeric",
    "text": "text",
    "varchar": "text",
    "char": "text",
    "bytea": "bytea",
    "boolean": "bool",
    "timestamptz": "timestamptz",
    "timestamp": "timestamp",
    "date": "date",
    "time": "time",
    "json": "json",
    "jsonb": "jsonb",
    "uuid": "uuid",
    "enum": "text",
    "citext": "text",  # citext's binary receive is text's
    "interval": "interval",
    "inet": "inet",
    "cidr": "cidr",
    "timetz": "timetz",
    # psycopg has no macaddr type: the converter produces the 6 (8) bytes of the binary form, which
    # bytea's binary dumper sends unchanged and psycopg reads back as bytes.
    "macaddr": "bytea",
    "macaddr8": "bytea",
}

TYPE_NAMES: Final = frozenset(COPY_NAMES)


#: copy_types(wire=True): the binary forms row_converter(wire=True) produces.
WIRE_COPY_NAMES: Final[Mapping[str, str]] = {
    **COPY_NAMES,
    "timestamptz": "int8",
    "timestamp": "int8",
    "date": "int4",
    "time": "int8",
    "json": "text",
    "jsonb": "text",
}


def copy_types(types: Sequence[TargetType], *, wire: bool = False, json_wire: bool = False) -> list[str]:
    """What to pass to ``Copy.set_types`` for a binary COPY of the converted values (``wire``, ``json_wire``:
    as ``row_converter`` was given them)."""
    names = WIRE_COPY_NAMES if wire else COPY_NAMES
    return [WIRE_COPY_NAMES[t.name] if json_wire and t.name in ("json", "jsonb") else names[t.name] for t in types]


_ALIASES: Final[Mapping[str, str]] = {
    "int2": "smallint",
    "smallserial": "smallint",
    "int": "integer",
    "int4": "integer",
    "serial": "integer",
    "int8": "bigint",
    "bigserial": "bigint",
    "float4": "real",
    "float8": "double precision",
    "double": "double precision",
    "float": "double precision",
    "decimal": "numeric",
    "character varying": "varchar",
    "character": "char",
    "bpchar": "char",
    "bool": "boolean",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
    "time with time zone": "timetz",
}
_MODIFIERS = re.compile(r"\(\s*([0-9]+)\s*(?:,\s*(-?[0-9]+)\s*)?\)")


def parse_type(pg_type_text: str) -> TargetType:
    """A TargetType from ``format_type()`` / information_schema / DDL text.

    ``timestamp(3) without time zone`` → timestamp precision 3; ``numeric(65,30)`` → numeric 65, 30;
    ``character varying(191)`` → varchar length 191. Enums (``USER-DEFINED``) need their labels: the
    caller builds ``TargetType("enum", enum_name=..., enum_labels=...)``.
    """
    text = pg_type_text.strip().lower()
    text = text.removeprefix("pg_catalog.")
    mods = _MODIFIERS.search(text)
    first = int(mods.group(1)) if mods else None
    second = int(mods.group(2)) if mods and mods.group(2) is not None else None
    base = " ".join(_MODIFIERS.sub(" ", text).replace('"', "").split())
    if base.startswith("interval"):  # "interval", "interval(3)", "interval day to second(3)"
        return TargetType("interval", precision=first)
    if base == "float" and first is not None:
        base = "real" if first <= 24 else "double precision"
        first = None
    base = _ALIASES.get(base, base)
    if base not in TYPE_NAMES or base == "enum":
        raise UnsupportedType(
            f"PostgreSQL type {pg_type_text!r} is not supported by the converter",
            hint="override the column type in [types] with one of: " + ", ".join(sorted(TYPE_NAMES - {"enum"})),
        )
    if base == "numeric":
        return TargetType(base, precision=first, scale=(second or 0) if first is not None else None)
    if base in ("timestamp", "timestamptz", "time", "timetz"):
        return TargetType(base, precision=first)
    if base == "varchar":
        return TargetType(base, length=first)
    if base == "char":
        # DDL "character" means character(1); "bpchar" without a length is unbounded.
        return TargetType(base, length=first if first is not None or "bpchar" in text else 1)
    return TargetType(base)


def type_sql(t: TargetType) -> sql.Composable:
    """The column type as SQL for DDL: ``timestamp(3)``, ``numeric(65,30)``, ``varchar(191)``, an enum's name."""
    if t.name == "enum":
        if not t.enum_name:
            raise UnsupportedType("an enum TargetType needs enum_name to be rendered", hint="set enum_name")
        return sql.Identifier(t.enum_name)  # resolved through search_path, like the app's own DDL
    mods: tuple[int, ...] = ()
    if t.name == "numeric" and t.precision is not None:
        mods = (t.precision, t.scale or 0)
    elif t.name in ("timestamp", "timestamptz", "time", "timetz", "interval") and t.precision is not None:
        mods = (t.precision,)
    elif t.name in ("varchar", "char") and t.length is not None:
        mods = (t.length,)
    name = {"char": "character", "varchar": "character varying"}.get(t.name, t.name)
    if name not in TYPE_NAMES and name not in ("character", "character varying"):
        raise UnsupportedType(f"target type {t.name!r} is not a normalised type name")
    suffix = "(" + ",".join(str(m) for m in mods) + ")" if mods else ""
    if name == "timestamptz" and suffix:
        return sql.SQL("timestamp{} with time zone").format(sql.SQL(suffix))
    if name == "timetz" and suffix:
        return sql.SQL("time{} with time zone").format(sql.SQL(suffix))
    return sql.SQL(name + suffix)


def with_override(target: TargetType, override: ColumnOverride) -> TargetType:
    """Apply a ``[types.table.column]`` override: its type (if any), format and text flags."""
    base = parse_type(override.type) if override.type else target
    return msgspec.structs.replace(
        base,
        format=override.format or target.format,
        strip_nul=override.strip_nul or target.strip_nul,
        replace_bad_utf8=override.replace_bad_utf8 or target.replace_bad_utf8,
        enum_labels=base.enum_labels or target.enum_labels,
        enum_name=base.enum_name or target.enum_name,
    )
