"""replicator.inspect.proof's rules, value by value: what SQLite stores (as sqlite3 returns it from a real file)
against what a real PostgreSQL returns through psycopg. Spellings of the same value compare equal; a
changed value (milliseconds read as seconds, a decimal rounded, 1.5 → 2 in JSON...) does not."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from replicator.inspect import proof, proof_numbers, proof_rule
from replicator.values.targettype import TargetType

TZ = TargetType("timestamptz", precision=6)
MS = TargetType("timestamptz", precision=3, format="unix_ms")
S = TargetType("timestamptz", format="unix_s")
US = TargetType("timestamptz", format="unix_us")
JD = TargetType("timestamptz", precision=3, format="julian_day")
NUM = TargetType("numeric", precision=20, scale=6)
JSON = TargetType("json")
JSONB = TargetType("jsonb")
INSTANT = "2024-03-05 06:07:08.009+00"

#: (column type, PostgreSQL type text, PostgreSQL literal, SQLite values that mean the same)
SAME: list[tuple[TargetType, str, str, list[Any]]] = [
    (
        TZ,
        "timestamptz",
        INSTANT,
        [
            "2024-03-05T06:07:08.009Z",
            "2024-03-05 06:07:08.009",
            "2024-03-05t06:07:08,009000z",
            "2024-03-05T08:07:08.009+02:00",
            "2024-03-05 01:07:08.009 -0500",
            "2024-03-05T06:07:08.009 UTC",
            1709618828009,
            1709618828.009,
        ],
    ),
    (MS, "timestamptz", INSTANT, [1709618828009, "1709618828009"]),
    (S, "timestamptz", "2024-03-05 06:07:08+00", [1709618828, 1709618828.0, "1709618828"]),
    (US, "timestamptz", "2024-03-05 06:07:08.000009+00", [1709618828000009]),
    (JD, "timestamptz", "2024-03-05 06:07:08.009+00", [2460374.7549538077]),
    (TargetType("timestamp"), "timestamp", "2024-03-05 06:07:08", ["2024-03-05 06:07:08", "2024-03-05T06:07:08Z"]),
    (TargetType("date"), "date", "2024-03-05", ["2024-03-05", "2024-03-05T00:00:00Z", 1709596800]),
    (TargetType("time"), "time", "06:07:08.5", ["06:07:08.5", "06:07:08,500000"]),
    (NUM, "numeric(20,6)", "51891460955981.880000", [51891460955981.88, "51891460955981.88"]),
    (NUM, "numeric(20,6)", "1.5", [1.5, "1.50", "15e-1"]),
    (NUM, "numeric(20,6)", "3", [3, 3.0, "3.000"]),
    (TargetType("numeric"), "numeric", "0.03201", [0.03201]),
    (TargetType("real"), "real", "0.1", [0.1, "0.1"]),
    (TargetType("double precision"), "float8", "0.1", [0.1, "0.1"]),
    (TargetType("bigint"), "bigint", "42", [42, 42.0, "42", "+42"]),
    (TargetType("boolean"), "boolean", "true", [1, 1.0, "t", "TRUE", "Yes", "on", "1"]),
    (TargetType("boolean"), "boolean", "false", [0, "f", "No", "off", "0"]),
    (JSON, "json", '{"b": 1e2, "a": [1.0, "x"]}', ['{"a":[1,"x"],"b":100}', '{"b":100.00,"a":[1,"x"]}']),
    (JSONB, "jsonb", '{"b": 1e2, "a": [1.0, "x"]}', ['{"a":[1,"x"],"b":100}']),
    (JSON, "json", "null", ["null"]),
    (JSONB, "jsonb", "12.50", [12.5, "12.5"]),
    (TargetType("uuid"), "uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", ["A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"]),
    (TargetType("uuid"), "uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", ["a0eebc999c0b4ef8bb6d6bb9bd380a11"]),
    (
        TargetType("uuid"),
        "uuid",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        [bytes.fromhex("a0eebc999c0b4ef8bb6d6bb9bd380a11")],
    ),
    (TargetType("text"), "text", "héllo", ["héllo", b"h\xc3\xa9llo"]),
    (TargetType("text"), "text", "7", [7]),
    (TargetType("text"), "text", "0.1", [0.1]),
    (TargetType("char", length=3), "char(3)", "ab", ["ab", "ab "]),
    (TargetType("bytea"), "bytea", "\\x00ff41", [b"\x00\xffA"]),
    (TargetType("bytea"), "bytea", "\\x68c3a9", ["hé"]),
    (TargetType("interval"), "interval", "1 day", ["1 day"]),  # not in the rule table: compared as text
]

#: (column type, PostgreSQL type text, PostgreSQL literal, SQLite value that means something else)
DIFFERENT: list[tuple[TargetType, str, str, Any]] = [
    (MS, "timestamptz", "2024-03-05 06:07:08+00", 1709618828009),  # milliseconds truncated to seconds
    (S, "timestamptz", INSTANT, 1709618828009),  # milliseconds read as seconds: another instant
    (TZ, "timestamptz", "2024-03-05 06:07:08.009+00", "2024-03-05T06:07:08.0091Z"),  # 100 µs
    (TZ, "timestamptz", "2024-03-05 06:07:08.009+00", "2024-03-05T06:07:08.009+01:00"),
    (TZ, "timestamptz", "2024-03-05 06:07:08+00", "2024-03-05T06:07:08.0000001Z"),  # below 1 µs: not exact
    (TargetType("date"), "date", "2024-03-05", "2024-03-05T10:00:00Z"),  # a time of day is not a date
    (NUM, "numeric(20,6)", "12.34568", 12.345678),  # rounded at the fifth decimal
    (NUM, "numeric(20,6)", "51891460955981.900000", 51891460955981.88),  # Django's 15 digits: another rule
    (TargetType("real"), "real", "0.12345679", 0.1234567891),  # float4 prints another number
    (TargetType("double precision"), "float8", "2.718", 2.718281828),
    (TargetType("bigint"), "bigint", "2", 2.5),
    (TargetType("boolean"), "boolean", "true", 2),
    (JSON, "json", '{"a": 2}', '{"a": 1.5}'),
    (JSON, "json", '{"a": "1"}', '{"a": 1}'),
    (JSON, "json", "null", None),  # SQL NULL is not JSON null
    (TargetType("text"), "text", "a text lo", "a text longer"),
    (TargetType("text"), "text", "ABC", "abc"),  # NOCASE columns compare exactly too
    (TargetType("text"), "text", "x\ufffd", b"x\xff"),  # not UTF-8 in SQLite
    (TargetType("uuid"), "uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
]


def _sqlite_value(tmp_path: Path, value: Any) -> Any:
    """The value as sqlite3 returns it after a round trip through a real file (a column without affinity)."""
    db = sqlite3.connect(tmp_path / "values.db")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS v (x)")
        db.execute("DELETE FROM v")
        db.execute("INSERT INTO v VALUES (?)", (value,))
        return db.execute("SELECT x FROM v").fetchone()[0]
    finally:
        db.close()


def _pg_value(pg: psycopg.Connection[Any], t: TargetType, type_sql: str, literal: str | None) -> Any:
    """What verify reads from PostgreSQL for this value: binary, or the text output for text_output types."""
    value = sql.SQL("CAST({} AS {})").format(sql.Literal(literal), sql.SQL(type_sql))
    if proof.text_output(t):
        value = sql.SQL("({})::text").format(value)
    with pg.cursor(binary=True) as cur:
        row = cur.execute(sql.SQL("SELECT {}").format(value)).fetchone()
    assert row is not None
    return row[0]


def _canonical(
    pg: psycopg.Connection[Any], tmp_path: Path, t: TargetType, type_sql: str, literal: str, value: Any
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    ours = proof.source_row([t])((_sqlite_value(tmp_path, value),))
    theirs = proof.target_row([t])((_pg_value(pg, t, type_sql, literal),))
    return ours, theirs


@pytest.mark.parametrize(("t", "type_sql", "literal", "values"), SAME, ids=[f"{c[1]}={c[2]}" for c in SAME])
def test_spellings_of_one_value_compare_equal(
    pg: psycopg.Connection[Any], tmp_path: Path, t: TargetType, type_sql: str, literal: str, values: list[Any]
) -> None:
    for value in values:
        ours, theirs = _canonical(pg, tmp_path, t, type_sql, literal, value)
        assert ours == theirs, (value, ours, theirs)


@pytest.mark.parametrize(("t", "type_sql", "literal", "value"), DIFFERENT, ids=[f"{c[1]}:{c[3]!r}" for c in DIFFERENT])
def test_a_changed_value_differs(
    pg: psycopg.Connection[Any], tmp_path: Path, t: TargetType, type_sql: str, literal: str, value: Any
) -> None:
    ours, theirs = _canonical(pg, tmp_path, t, type_sql, literal, value)
    assert ours != theirs


def test_the_decimal_rule_for_reals_is_one_function() -> None:
    """The shortest round-trip decimal of the double, quantized to the column's scale (not Django's 15 digits)."""
    assert proof_numbers.decimal_of_real(51891460955981.88, 6) == Decimal("51891460955981.880000")
    assert proof_numbers.decimal_of_real(0.03201, None) == Decimal("0.03201")
    assert proof_numbers.decimal_of_real(1.0000005, 6) == Decimal("1.000000")  # half-even at the scale


def test_unreadable_keys_are_refused_for_bounds() -> None:
    read = proof.key_value(TargetType("bigint"))
    assert read("12") == 12
    with pytest.raises(proof_rule.Unreadable):
        read("twelve")
