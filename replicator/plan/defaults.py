"""A SQLite column's DEFAULT as PostgreSQL's (create mode), or dropped with a warning.

Why apart from the table plan: a default is either a clock (SQLite's ``'now'`` forms, UTC text, become
PostgreSQL's clock in the column's chosen type) or a constant that SQLite itself evaluates and the loader's
conversion checks, so a default the target type cannot hold never reaches the DDL.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from psycopg import sql

from replicator.plan import sqlexpr
from replicator.values.targettype import TargetType
from triggers.schema import Column

_NOW_PATTERNS = {
    "datetime": re.compile(
        r"^(CURRENT_TIMESTAMP|DATETIME\s*\(\s*'NOW'\s*(,\s*'(LOCALTIME|UTC)'\s*)?\))$",
        re.IGNORECASE,
    ),
    "date": re.compile(r"^(CURRENT_DATE|DATE\s*\(\s*'NOW'\s*(,\s*'(LOCALTIME|UTC)'\s*)?\))$", re.IGNORECASE),
    "time": re.compile(r"^(CURRENT_TIME|TIME\s*\(\s*'NOW'\s*(,\s*'(LOCALTIME|UTC)'\s*)?\))$", re.IGNORECASE),
    "epoch": re.compile(r"^UNIXEPOCH\s*\(\s*('NOW'\s*)?\)$", re.IGNORECASE),
}
_STRFTIME_NOW = re.compile(r"^STRFTIME\s*\(\s*'([^']*)'\s*,\s*'NOW'\s*(?:,\s*'(LOCALTIME|UTC)'\s*)?\)$", re.IGNORECASE)
#: strftime directives → to_char patterns (SQLite's %f is seconds with milliseconds, SS.SSS).
_TO_CHAR = {"%Y": "YYYY", "%m": "MM", "%d": "DD", "%H": "HH24", "%M": "MI", "%S": "SS", "%f": "SS.MS", "%j": "DDD"}


def _strftime_default(fmt: str, local: bool, chosen: TargetType) -> sql.Composable | None:
    """``strftime(fmt, 'now')``: the clock in the column's type, or the same text via to_char."""
    if fmt == "%s":
        return _now_default("epoch", local, chosen)
    has_date = all(d in fmt for d in ("%Y", "%m", "%d"))
    has_time = "%H" in fmt
    if chosen.name in ("timestamptz", "timestamp", "date"):
        if not has_date:
            return None
        return _now_default("datetime" if has_time else "date", local, chosen)
    if chosen.name not in ("text", "varchar"):
        return None
    pattern: list[str] = []
    i = 0
    while i < len(fmt):
        if fmt[i] == "%":
            directive = fmt[i : i + 2]
            if directive == "%%":
                pattern.append('"%"')
            elif directive in _TO_CHAR:
                pattern.append(_TO_CHAR[directive])
            else:
                return None
            i += 2
        else:
            pattern.append('"' + fmt[i].replace('"', '\\"') + '"')
            i += 1
    clock = sql.SQL("LOCALTIMESTAMP") if local else sql.SQL("(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')")
    return sql.SQL("to_char({}, {})").format(clock, sql.Literal("".join(pattern)))


def _strip_parens(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")"):
        try:
            tokens = sqlexpr.tokenize(text)
        except sqlexpr.Untranslatable:
            return text
        if tokens and sqlexpr.group_end(tokens, 0) == len(tokens):
            text = text[1:-1].strip()
        else:
            break
    return text


def _now_default(kind: str, local: bool, chosen: TargetType) -> sql.Composable | None:
    """SQLite's 'now' defaults are UTC text; give PostgreSQL the same instant in the column's type."""
    utc = sql.SQL("LOCALTIMESTAMP") if local else sql.SQL("(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')")
    name = chosen.name
    if kind == "epoch":
        if name in ("bigint", "integer", "numeric", "double precision"):
            return sql.SQL("(extract(epoch from CURRENT_TIMESTAMP))::bigint")
        if name in ("timestamptz", "timestamp"):  # epoch seconds read as an instant
            kind = "datetime"
        else:
            return None
    if kind == "date" and name in ("timestamptz", "timestamp"):
        day = sql.SQL("date_trunc('day', {})").format(utc)
        return sql.SQL("({} AT TIME ZONE 'UTC')").format(day) if name == "timestamptz" and not local else day
    if name == "timestamptz":
        return sql.SQL("CURRENT_TIMESTAMP") if kind != "time" else None
    if name == "timestamp":
        return utc if kind != "time" else None
    if name == "date":
        return sql.SQL("({})::date").format(utc) if kind != "time" else None
    if name == "time":
        return sql.SQL("({})::time").format(utc)
    if name in ("text", "varchar"):
        fmt = {"datetime": "YYYY-MM-DD HH24:MI:SS", "date": "YYYY-MM-DD"}.get(kind, "HH24:MI:SS")
        return sql.SQL("to_char({}, {})").format(utc, sql.Literal(fmt))
    return None


_CONSTANT_TOKENS = {"string", "number", "blob", "op", "ident"}


def translate_default(column: Column, chosen: TargetType) -> tuple[sql.Composable | None, str | None]:
    """The PostgreSQL default for a SQLite default: (expression or None, warning or None).

    Time functions map to PostgreSQL's clock (UTC, as SQLite's are). A constant is evaluated by
    SQLite itself, under the column's declared type (so ``'0'`` in an INTEGER column is 0, and
    ``"0"`` in double quotes is the string SQLite made of it), then converted like any loaded value:
    a default the target type cannot hold is dropped with a warning, never written as broken DDL.
    """
    text = column.default
    if text is None:
        return None, None
    body = _strip_parens(text)
    if body.upper() == "NULL":
        return None, None
    strftime = _STRFTIME_NOW.match(body)
    if strftime:
        expr = _strftime_default(strftime.group(1), (strftime.group(2) or "").upper() == "LOCALTIME", chosen)
        if expr is None:
            return None, f"default {text} has no equivalent for type {chosen.name}: dropped"
        return expr, None
    for kind, pattern in _NOW_PATTERNS.items():
        match = pattern.match(body)
        if match:
            expr = _now_default(kind, "LOCALTIME" in body.upper(), chosen)
            if expr is None:
                return None, f"default {text} has no equivalent for type {chosen.name}: dropped"
            return expr, None
    try:
        tokens = sqlexpr.tokenize(body)
    except sqlexpr.Untranslatable as exc:
        return None, f"default {text} cannot be read ({exc}): dropped"
    if any(t.kind not in _CONSTANT_TOKENS and not sqlexpr.is_word(t, "TRUE", "FALSE", "NULL") for t in tokens):
        return None, f"default {text} is an expression with no PostgreSQL translation: dropped"
    try:
        value = _evaluate_default(column, text)
    except sqlite3.Error as exc:
        return None, f"default {text} cannot be evaluated ({exc}): dropped"
    if value is None:
        return None, None
    try:
        converted = _convert_one(column, chosen, value)
    except Exception as exc:  # RowRefused or ValueRefused: the type cannot hold it
        return None, f"default {text} does not fit {chosen.name} ({_reason(exc)}): dropped"
    if converted is None:
        return None, None
    return sql.Literal(converted), None


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or exc)


def _evaluate_default(column: Column, text: str) -> Any:
    """What SQLite stores for ``DEFAULT text`` in a column of this declared type."""
    decl = column.declared_type.replace('"', "")
    try:
        return _evaluate(f"CREATE TABLE d (c {decl} DEFAULT {text}, z)")
    except sqlite3.Error:  # the PRAGMA drops the parentheses of DEFAULT (1 + 2)
        return _evaluate(f"CREATE TABLE d (c {decl} DEFAULT ({text}), z)")


def _evaluate(ddl: str) -> Any:
    mem = sqlite3.connect(":memory:")
    try:
        mem.execute(ddl)
        mem.execute("INSERT INTO d (z) VALUES (1)")
        return mem.execute("SELECT c FROM d").fetchone()[0]
    finally:
        mem.close()


def _convert_one(column: Column, chosen: TargetType, value: Any) -> Any:
    from replicator.values import convert

    return convert.convert_value("default", column.name, chosen, value)
