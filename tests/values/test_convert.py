"""The value converter against a real PostgreSQL: binary COPY in, read back, compare.

Each case is a SQLite value as ``sqlite3`` returns it and the Python value PostgreSQL must give
back. Refused values must raise RowRefused naming table, column, value and reason.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from psycopg import sql

from replicator.config import ColumnOverride
from replicator.values.convert import row_converter, value_converter
from replicator.values.convert_text import decode_text
from replicator.values.refusal import RowRefused, ValueRefused, excerpt
from replicator.values.targettype import TargetType, UnsupportedType, copy_types, parse_type, type_sql, with_override
from tests.support.convert import ROLE, Pg, roundtrip, target


def refusal(t: TargetType, value: object, *, table: str = "tbl", column: str = "col") -> RowRefused:
    convert = row_converter(table, ["ok", column], [parse_type("integer"), t])
    with pytest.raises(RowRefused) as info:
        convert((1, value))
    return info.value


# -- per type: accepted values round-trip exactly ------------------------------------------------

MS_2024 = 1709618828009
DT_2024 = datetime(2024, 3, 5, 6, 7, 8, 9000)

CASES: dict[str, tuple[TargetType, list[tuple[object, object]]]] = {
    "smallint": (
        target("smallint"),
        [(None, None), (-32768, -32768), (32767, 32767), (5.0, 5), ("12", 12), ("-7", -7), (-0.0, 0)],
    ),
    "integer": (target("integer"), [(-(2**31), -(2**31)), (2**31 - 1, 2**31 - 1), ("+42", 42), (1e9, 10**9)]),
    "bigint": (
        target("bigint"),
        [(-(2**63), -(2**63)), (2**63 - 1, 2**63 - 1), (9007199254740991, 9007199254740991), (2.0**62, 2**62)],
    ),
    "double": (
        target("double precision"),
        [
            (0.1, 0.1),
            (1.5, 1.5),
            (1e308, 1e308),
            (5e-324, 5e-324),
            (float("inf"), float("inf")),
            (2**53, 2.0**53),
            (-(2**62), -(2.0**62)),
            ("0.1", 0.1),
            ("1.50", 1.5),
            ("-2e3", -2000.0),
        ],
    ),
    "numeric": (
        target("numeric"),
        [
            (0.03201, Decimal("0.03201")),
            (0.30000000000000004, Decimal("0.30000000000000004")),
            (12.5, Decimal("12.5")),
            (25000, Decimal(25000)),
            (2**63 - 1, Decimal(2**63 - 1)),
            (1.2345678901234567e19, Decimal("12345678901234567000")),
            (1e-7, Decimal("0.0000001")),
            ("12.50", Decimal("12.50")),
            ("-1e3", Decimal(-1000)),
        ],
    ),
    "numeric(65,30)": (
        target("numeric(65,30)"),
        [
            (0.1, Decimal("0.1")),
            (19.99, Decimal("19.99")),
            (100000000000000.0, Decimal("100000000000000")),
            (1.2345678901234567e19, Decimal("12345678901234567000")),
            (0, Decimal(0)),
            (
                "99999999999999999999999999999999999.999999999999999999999999999999",
                Decimal("99999999999999999999999999999999999.999999999999999999999999999999"),
            ),
        ],
    ),
    "numeric(12,2)": (target("numeric(12,2)"), [(12.5, Decimal("12.50")), (3, Decimal(3)), (-9999999999.99, None)]),
    "numeric(2,-3)": (
        target("numeric(2,-3)"),
        [(3000, Decimal(3000)), (99000.0, Decimal(99000)), ("-1e3", Decimal(-1000))],
    ),
    "numeric(3,5)": (target("numeric(3,5)"), [(0.00123, Decimal("0.00123")), ("0.00999", Decimal("0.00999"))]),
    "text": (
        target("text"),
        [
            ("héllo", "héllo"),
            ("日本 😀", "日本 😀"),
            ("", ""),
            (42, "42"),
            (1.5, "1.5"),
            (1e16, "1e+16"),
            (b"blob text", "blob text"),
            ("x" * 10_000, "x" * 10_000),
        ],
    ),
    "varchar(5)": (target("character varying(5)"), [("abcde", "abcde"), ("ü" * 5, "ü" * 5), (12345, "12345")]),
    "char(3)": (target("character(3)"), [("ab", "ab "), ("abc", "abc")]),
    "bytea": (
        target("bytea"),
        [(b"\x00\xff", b"\x00\xff"), (b"", b""), ("abc", b"abc"), (decode_text(b"file\x96name"), b"file\x96name")],
    ),
    "boolean": (
        target("boolean"),
        [
            (1, True),
            (0, False),
            (1.0, True),
            (0.0, False),
            ("t", True),
            ("f", False),
            ("TRUE", True),
            ("false", False),
            ("yes", True),
            ("No", False),
            ("Y", True),
            ("n", False),
            ("on", True),
            ("OFF", False),
            ("1", True),
            ("0", False),
        ],
    ),
    "timestamp(3)": (
        target("timestamp(3) without time zone"),
        [
            (MS_2024, DT_2024),
            ("2024-03-05T06:07:08.009+00:00", DT_2024),
            ("2024-03-05T08:07:08.009+02:00", DT_2024),
            ("2024-03-05T01:07:08.009-05", DT_2024),
            ("2024-03-05T06:07:08.009Z", DT_2024),
            ("2024-03-05 06:07:08.009000", DT_2024),
            ("2024-03-05 06:07:08.009", DT_2024),
            ("2024-03-05 06:07:08.0090000", DT_2024),
            ("2024-03-05 06:07:08,009", DT_2024),
            ("2024-03-05 06:07:08", DT_2024.replace(microsecond=0)),
            ("2024-03-05 06:07:08 +0000", DT_2024.replace(microsecond=0)),
            ("2024-03-05 06:07:08 UTC", DT_2024.replace(microsecond=0)),
            ("2024-03-05 07:07:08.009 +01:00", DT_2024),  # fromisoformat refuses this layout; the grammar reads it
            ("2024-03-05T06:07", datetime(2024, 3, 5, 6, 7)),
            ("2024-03-05", datetime(2024, 3, 5)),
            (1709618828, DT_2024.replace(microsecond=0)),
            (1709618828.009, DT_2024),
            (MS_2024 + 0.0, DT_2024),
            (-2208988800000, datetime(1900, 1, 1)),
            (253402300799999, datetime(9999, 12, 31, 23, 59, 59, 999000)),
            (-62135596800, datetime(1, 1, 1)),
            (0, datetime(1970, 1, 1)),
            ("0001-01-01 00:00:00", datetime(1, 1, 1)),
        ],
    ),
    "timestamptz": (
        target("timestamp with time zone"),
        [
            (MS_2024, DT_2024.replace(tzinfo=UTC)),
            ("2024-03-05T08:07:08.009+02:00", DT_2024.replace(tzinfo=UTC)),
            ("2024-03-05 06:07:08.009", DT_2024.replace(tzinfo=UTC)),
            ("2024-03-05 06:07:08.123456", datetime(2024, 3, 5, 6, 7, 8, 123456, tzinfo=UTC)),
            ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ],
    ),
    "timestamp unix_s": (
        target("timestamp", format="unix_s"),
        [(253402300799, datetime(9999, 12, 31, 23, 59, 59)), ("1709618828", DT_2024.replace(microsecond=0))],
    ),
    "timestamp unix_ms": (
        target("timestamp", format="unix_ms"),
        [(1000, datetime(1970, 1, 1, 0, 0, 1)), ("1709618828009.5", DT_2024 + timedelta(microseconds=500))],
    ),
    "timestamp julian_day": (
        target("timestamp(3)", format="julian_day"),
        [
            (2460374.7549538077, DT_2024),
            (2460375, datetime(2024, 3, 5, 12)),
            ("2460374.5", datetime(2024, 3, 5)),
            (1721425.5, datetime(1, 1, 1)),
        ],
    ),
    "date": (
        target("date"),
        [
            ("2024-03-05", date(2024, 3, 5)),
            (1709596800000, date(2024, 3, 5)),
            ("2024-03-05T00:00:00.000+00:00", date(2024, 3, 5)),
            ("2024-03-05T01:00:00+01:00", date(2024, 3, 5)),
            ("9999-12-31", date(9999, 12, 31)),
        ],
    ),
    "time(6)": (target("time without time zone"), [("01:02:03.000004", time(1, 2, 3, 4)), ("23:59", time(23, 59))]),
    "time(3)": (target("time(3) without time zone"), [("01:02:03.004", time(1, 2, 3, 4000)), ("00:00:00", time(0))]),
    "json": (
        target("json"),
        [
            ('{"a": [1, 2], "\\u00fc": "\\u65e5\\u672c"}', {"a": [1, 2], "ü": "日本"}),
            ('{"a":[1,2],"ü":"日本"}', {"a": [1, 2], "ü": "日本"}),
            (42, 42),
            (1.5, 1.5),
            ('"123"', "123"),
            ("true", True),
            ('"\\u0000"', "\x00"),
        ],
    ),
    "jsonb": (
        target("jsonb"),
        [
            ('{"nested":{"k":[1,2,3]},"s":"x"}', {"nested": {"k": [1, 2, 3]}, "s": "x"}),
            (42, 42),
            (1.5, 1.5),
            (1.2345678901234567e19, 12345678901234567000),  # jsonb numbers are decimal: the shortest repr
            ('"just a string"', "just a string"),
            ('{"a":1,"a":2}', {"a": 2}),
            ('"\\\\u0000"', "\\u0000"),
            (b'{"blob": true}', {"blob": True}),
            ("[]", []),
        ],
    ),
    "uuid": (
        target("uuid"),
        [
            ("5d9025c9-39bc-4278-a565-8d168b7310ea", uuid.UUID("5d9025c9-39bc-4278-a565-8d168b7310ea")),
            ("256f090027a041bbafeb104a4c0760b6", uuid.UUID("256f0900-27a0-41bb-afeb-104a4c0760b6")),
            ("5D9025C9-39BC-4278-A565-8D168B7310EA", uuid.UUID("5d9025c9-39bc-4278-a565-8d168b7310ea")),
            (bytes(range(16)), uuid.UUID(bytes=bytes(range(16)))),
        ],
    ),
    "enum": (ROLE, [("USER", "USER"), ("ADMIN", "ADMIN")]),
    "interval": (  # Django: bigint microseconds; SQLAlchemy: epoch + delta as datetime text
        target("interval"),
        [
            (86402000000, timedelta(days=1, seconds=2)),
            (-1, timedelta(microseconds=-1)),
            (3.0, timedelta(microseconds=3)),
            ("1970-01-02 00:00:02.000000", timedelta(days=1, seconds=2)),
            ("1969-12-31 23:00:00", timedelta(hours=-1)),
        ],
    ),
    "interval(3)": (target("interval(3)"), [(1_000, timedelta(milliseconds=1))]),
    "inet": (
        target("inet"),
        [
            ("192.168.0.1", ipaddress.ip_address("192.168.0.1")),
            ("192.168.0.1/32", ipaddress.ip_address("192.168.0.1")),
            ("10.1.2.3/8", ipaddress.ip_interface("10.1.2.3/8")),
            ("2001:DB8::1", ipaddress.ip_address("2001:db8::1")),
            ("::ffff:1.2.3.4", ipaddress.ip_address("::ffff:1.2.3.4")),
        ],
    ),
    "cidr": (target("cidr"), [("10.0.0.0/8", ipaddress.ip_network("10.0.0.0/8"))]),
    "timetz": (
        target("time with time zone"),
        [
            ("01:02:03", time(1, 2, 3, tzinfo=UTC)),
            ("01:02:03.5+02:00", time(1, 2, 3, 500000, tzinfo=timezone(timedelta(hours=2)))),
            ("23:59-0530", time(23, 59, tzinfo=timezone(-timedelta(hours=5, minutes=30)))),
        ],
    ),
    "citext": (target("citext"), [("Hé", "Hé"), (12, "12")]),
}


@pytest.mark.parametrize("wire", [False, True], ids=["values", "wire"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_accepted_values_round_trip(pg: Pg, case: str, wire: bool) -> None:
    t, pairs = CASES[case]
    pairs = [*pairs, (None, None)]
    back = roundtrip(pg, [t], [(value,) for value, _ in pairs], wire=wire)
    for (value, expected), (got,) in zip(pairs, back, strict=True):
        if expected is None and value is not None:
            continue  # checked elsewhere (e.g. scale padding)
        assert got == expected, f"{case}: {value!r} came back as {got!r}, expected {expected!r}"
        if isinstance(expected, datetime | float | Decimal | bool):
            assert type(got) is type(expected)


@pytest.mark.parametrize("wire", [False, True], ids=["values", "wire"])
def test_value_converter_matches_row_converter(wire: bool) -> None:
    """The per-column closure and the compiled row function agree on every case (fast paths included)."""
    for case, (t, pairs) in CASES.items():
        convert = value_converter(t, wire=wire)
        rows = row_converter("t", ["c"], [t], wire=wire)
        for value, _ in pairs:
            single = convert(value)
            (inline,) = rows((value,))
            assert repr(single) == repr(inline), case


def test_wire_forms() -> None:
    """wire=True: PostgreSQL's binary forms, counted from 2000-01-01."""
    types = [
        target("timestamp(3)"),
        target("timestamptz"),
        target("date"),
        target("time"),
        target("jsonb"),
        target("json"),
    ]
    assert copy_types(types, wire=True) == ["int8", "int8", "int4", "int8", "text", "text"]
    convert = row_converter("t", [f"c{i}" for i in range(6)], types, wire=True)
    row = (946684800001, "2000-01-01T00:00:01+00:00", "2000-01-02", "00:00:01.5", '{"a":1}', "[]")
    assert convert(row) == (1000, 1_000_000, 1, 1_500_000, '\x01{"a":1}', "[]")


def test_numeric_scale_is_padded_not_rounded(pg: Pg) -> None:
    back = roundtrip(pg, [target("numeric(12,2)")], [(-9999999999.99,), (0.1,)], select=[sql.SQL("c0::text")])
    assert back == [("-9999999999.99",), ("0.10",)]


def test_real_keeps_the_printed_decimal(pg: Pg) -> None:
    """float4: accepted when PostgreSQL prints the same shortest decimal the double printed."""
    values = [0.1, 1.5, 16777216, 3.4028234663852886e38, 1e-45, 0.10000000149011612, -2.5, float("inf")]
    back = roundtrip(pg, [target("real")], [(v,) for v in values], select=[sql.SQL("c0::text")])
    assert [b[0] for b in back] == ["0.1", "1.5", "1.6777216e+07", "3.4028235e+38", "1e-45", "0.1", "-2.5", "Infinity"]
    for value in (0.123456789, 16777217, 1e39, 0.30000000000000004):
        with pytest.raises(ValueRefused):
            value_converter(target("real"))(value)


def test_json_null_text_is_json_null_not_sql_null(pg: Pg) -> None:
    back = roundtrip(
        pg,
        [target("jsonb"), target("json")],
        [("null", "null"), (None, None)],
        select=[sql.SQL("c0 IS NULL, c1::text")],
    )
    assert back == [(False, "null"), (True, None)]


def test_deeply_nested_json_is_accepted_up_to_the_limit(pg: Pg) -> None:
    deep = "[" * 5000 + "]" * 5000
    assert roundtrip(pg, [target("jsonb")], [(deep,)], select=[sql.SQL("jsonb_array_length(c0)")]) == [(1,)]
    with pytest.raises(ValueRefused, match="deeper than 10000"):
        value_converter(target("jsonb"))("[" * 30_000 + "]" * 30_000)
    with pytest.raises(ValueRefused, match="not valid JSON"):
        value_converter(target("json"))("[" * 3000 + "]" * 2999)


def test_json_text_is_sent_verbatim(pg: Pg) -> None:
    text = '{"b": 1.10, "a": [1e2, 12345678901234567890123]}'
    back = roundtrip(pg, [target("json"), target("jsonb")], [(text, text)], select=[sql.SQL("c0::text, c1::text")])
    assert back == [(text, '{"a": [100, 12345678901234567890123], "b": 1.10}')]


def test_varchar_and_char_use_text_wire_format(pg: Pg) -> None:
    types = [target("character varying(191)"), target("char(2)"), ROLE]
    assert copy_types(types) == ["text", "text", "text"]
    assert roundtrip(pg, types, [("a", "b", "ADMIN")]) == [("a", "b ", "ADMIN")]


def test_strip_nul_and_replace_bad_utf8_alter_only_when_asked(pg: Pg) -> None:
    bad = decode_text(b"caf\xe9 \xff")
    types = [
        target("text", strip_nul=True),
        target("text", replace_bad_utf8=True),
        target("jsonb", strip_nul=True),
        target("json", strip_nul=True),
        target("bytea"),
    ]
    rows = [("a\x00b\x00", bad, '{"k": "x\\u0000y", "l": "\\\\u0000"}', '"x\\u0000"', bad)]
    back = roundtrip(pg, types, rows, select=[sql.SQL("c0, c1, c2::text, c3::text, c4")])
    assert back == [("ab", "caf\ufffd \ufffd", '{"k": "xy", "l": "\\\\u0000"}', '"x\\u0000"', b"caf\xe9 \xff")]


def test_timestamptz_output_is_aware_utc_and_timestamp_naive() -> None:
    aware = value_converter(target("timestamptz"))("2024-03-05T08:07:08+02:00")
    naive = value_converter(target("timestamp"))("2024-03-05T08:07:08+02:00")
    assert aware == datetime(2024, 3, 5, 6, 7, 8, tzinfo=UTC)
    assert isinstance(aware, datetime)
    assert aware.tzinfo is UTC
    assert naive == datetime(2024, 3, 5, 6, 7, 8)


def test_magnitude_rule_for_epoch_numbers() -> None:
    """Without a format, |v| >= 1e11 is milliseconds, below is seconds."""
    convert = value_converter(target("timestamp"))
    assert convert(99_999_999_999) == datetime(1970, 1, 1) + timedelta(seconds=99_999_999_999)
    assert convert(100_000_000_000) == datetime(1970, 1, 1) + timedelta(milliseconds=100_000_000_000)
    assert convert(-100_000_000_000) == datetime(1970, 1, 1) - timedelta(milliseconds=100_000_000_000)
    assert value_converter(target("timestamp", format="unix_ms"))(1000) == datetime(1970, 1, 1, 0, 0, 1)
    assert value_converter(target("timestamp", format="unix_s"))(100_000_000_000) == datetime(5138, 11, 16, 9, 46, 40)


# -- refusals ------------------------------------------------------------------------------------

REFUSALS: list[tuple[str, TargetType, object, str]] = [
    ("text NUL", target("text"), "a\x00b", "NUL"),
    ("text bad utf-8", target("text"), decode_text(b"file\x96name"), "not valid UTF-8 (bytes 96"),
    ("blob bad utf-8 into text", target("text"), b"file\x96name", "not valid UTF-8"),
    ("varchar too long", target("varchar(3)"), "abcd", "4 characters do not fit varchar(3)"),
    ("varchar trailing spaces", target("varchar(3)"), "ab  ", "do not fit"),
    ("char too long", target("char(1)"), "ab", "char(1)"),
    ("smallint above", target("smallint"), 32768, "outside the smallint range"),
    ("integer below", target("integer"), -(2**31) - 1, "outside the integer range"),
    ("bigint above (real)", target("bigint"), 2.0**63, "outside the bigint range"),
    ("integer from fraction", target("integer"), 1.5, "not a whole number"),
    ("integer from inf", target("bigint"), float("inf"), "not a whole number"),
    ("integer from text", target("integer"), "lots-of-it", "not an integer"),
    ("integer from spaced text", target("integer"), " 12", "not an integer"),
    ("integer from unicode digits", target("integer"), "١٢", "not an integer"),
    ("integer from blob", target("integer"), b"\x01", "blob value cannot be stored as integer"),
    ("double from big int", target("double precision"), 2**53 + 1, "53 significant bits"),
    ("double from long text", target("double precision"), "0.1000000000000000000001", "no exact double"),
    ("numeric inf", target("numeric"), float("inf"), "no exact numeric"),
    ("numeric nan", target("numeric(65,30)"), float("nan"), "no exact numeric"),
    ("numeric NaN text", target("numeric"), "NaN", "not a decimal"),
    ("numeric scale", target("numeric(10,2)"), 0.125, "3 decimal places; numeric(10,2) would round"),
    ("numeric scale text", target("numeric(65,30)"), "1e-31", "31 decimal places"),
    ("numeric precision", target("numeric(5,2)"), 1000, "4 integer digits; numeric(5,2) allows 3"),
    ("numeric precision real", target("numeric(65,30)"), 1e36, "37 integer digits"),
    ("numeric negative scale", target("numeric(2,-3)"), 1500, "not a multiple of 1e3"),
    ("numeric negative scale range", target("numeric(2,-3)"), 100000, "too large for numeric(2,-3)"),
    ("numeric scale above precision", target("numeric(3,5)"), 0.01, "too large for numeric(3,5)"),
    ("numeric beyond range", target("numeric"), "1e131072", "beyond the range of numeric"),
    ("boolean 2", target("boolean"), 2, "not a boolean"),
    ("boolean text", target("boolean"), "maybe", "not a boolean"),
    ("boolean prefix", target("boolean"), "tr", "not a boolean"),
    ("boolean blob", target("boolean"), b"1", "not a boolean"),
    ("timestamp(3) micros", target("timestamp(3)"), "2024-03-05 06:07:08.009123", "precision 3 would round"),
    ("timestamp(0) fraction", target("timestamp(0)"), 1709618828009, "precision 0 would round"),
    ("timestamptz(3) micros", target("timestamptz(3)"), 1709618828.000001, "precision 3 would round"),
    ("timestamp sub-micro", target("timestamp"), "2024-03-05 06:07:08.0000001", "finer than a microsecond"),
    ("timestamp sub-micro real", target("timestamp", format="unix_s"), 1.0000001, "finer than a microsecond"),
    ("timestamp year 10000 ms", target("timestamp"), 253402300800000, "outside years 1..9999"),
    ("timestamp year 0 s", target("timestamptz"), -62135596801, "outside years 1..9999"),
    ("timestamp year 0 text", target("timestamp"), "0000-12-31 00:00:00", "year 0 is out of range"),
    ("timestamp aware below year 1", target("timestamp"), "0001-01-01T00:30:00+01:00", "outside years 1..9999"),
    ("timestamp aware above 9999", target("timestamptz"), "9999-12-31T23:30:00-01:00", "outside years 1..9999"),
    ("timestamp leap second", target("timestamp"), "2016-12-31 23:59:60", "not a valid datetime"),
    ("timestamp hour 24", target("timestamp"), "2024-03-05 24:00:00", "not a valid datetime"),
    ("timestamp 30 February", target("timestamp"), "2024-02-30", "not a valid datetime"),
    ("timestamp garbage", target("timestamp"), "yesterday", "not an ISO-8601"),
    ("timestamp digits without format", target("timestamp"), "1709618828", "not an ISO-8601"),
    ("timestamp bad offset", target("timestamp"), "2024-03-05 06:07:08+25:00", "offset"),
    ("timestamp inf", target("timestamp"), float("inf"), "not an instant"),
    ("timestamp julian ambiguous real", target("timestamp"), 2460374.75, "ambiguous: a julian day number"),
    ("timestamp julian ambiguous int", target("timestamptz"), 2460375, "ambiguous"),
    ("date julian ambiguous", target("date"), 2460375, "ambiguous"),
    ("timestamp julian out of range", target("timestamp", format="julian_day"), 1e7, "outside years 1..9999"),
    ("timestamp blob", target("timestamp"), b"2024", "blob value"),
    ("date with time", target("date"), "2024-03-05 06:07:08", "time of day"),
    ("date with time ms", target("date"), MS_2024, "time of day"),
    ("time garbage", target("time"), "1:2:3", "time of day"),
    ("time(3) micros", target("time(3)"), "01:02:03.000004", "precision 3 would round"),
    ("time from int", target("time"), 3600, "integer value cannot be stored as time"),
    ("jsonb NUL escape", target("jsonb"), '{"a": "x\\u0000"}', "\\u0000"),
    ("json raw NUL", target("json"), '"a\x00"', "NUL"),
    ("json invalid", target("jsonb"), "{'a': 1}", "not valid JSON"),
    ("json trailing", target("json"), '{"a":1} x', "not valid JSON"),
    ("json NaN", target("jsonb"), "NaN", "not valid JSON"),
    ("json inf real", target("jsonb"), float("inf"), "not a JSON number"),
    ("json lone surrogate escape", target("jsonb"), '"\\ud800"', "not valid JSON"),
    ("json blob not utf-8", target("jsonb"), b"\x80\x01", "blob is not UTF-8 JSON text"),
    ("uuid short", target("uuid"), "5d9025c9-39bc-4278-a565", "not a UUID"),
    ("uuid braces", target("uuid"), "{5d9025c9-39bc-4278-a565-8d168b7310ea}", "not a UUID"),
    ("uuid blob 15", target("uuid"), bytes(15), "blob value cannot be stored as uuid"),
    ("enum label", ROLE, "GUEST", "not a label of enum Role: USER, ADMIN"),
    ("enum case", ROLE, "user", "not a label"),
    ("enum int", ROLE, 1, "integer value is not a label"),
    ("bytea from int", target("bytea"), 7, "integer value cannot be stored as bytea"),
    ("real out of range", target("real"), 1e39, "outside the range of real"),
    ("real rounds", target("real"), 0.1234567891, "would become 0.12345679"),
    ("interval fraction", target("interval"), 1.5, "not a whole number of microseconds"),
    ("interval zone", target("interval"), "1970-01-02 00:00:00+02:00", "has one"),
    ("interval words", target("interval"), "2 days", "not an ISO-8601"),
    ("interval blob", target("interval"), b"x", "blob value cannot be stored as interval"),
    ("interval(3) rounds", target("interval(3)"), 1, "interval(3) would round them"),
    ("inet zone id", target("inet"), "fe80::1%eth0", "zone ids"),
    ("inet leading zero", target("inet"), "010.1.1.1", "not an IP address"),
    ("inet integer", target("inet"), 16909060, "integer value cannot be stored as inet"),
    ("cidr host bits", target("cidr"), "10.0.0.1/8", "host bits set"),
    ("macaddr short", target("macaddr"), "08:00:2b:01:02", "not a 6-byte MAC address"),
    ("macaddr mixed", target("macaddr"), "08:00-2b:01:02:03", "not a 6-byte MAC address"),
    ("macaddr blob 8", target("macaddr"), bytes(8), "blob value cannot be stored as macaddr"),
    ("timetz garbage", target("time with time zone"), "noon", "time of day"),
    ("timetz offset", target("time with time zone"), "01:00+25:00", "offset"),
    ("citext nul", target("citext"), "a\x00b", "NUL"),
]


@pytest.mark.parametrize(("t", "value", "fragment"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refused_values_name_table_column_value_and_reason(t: TargetType, value: object, fragment: str) -> None:
    error = refusal(t, value)
    assert (error.table, error.column, error.value) == ("tbl", "col", value)
    assert fragment in error.reason
    text = str(error)
    assert "tbl.col" in text
    assert error.reason in text
    assert excerpt(value) in text
    assert error.exit_code == 1


def test_refusals_survive_pickling() -> None:
    """Worker processes send refusals back to the parent."""
    import pickle

    error = refusal(target("text"), "a\x00b")
    again = pickle.loads(pickle.dumps(error))
    assert (again.table, again.column, again.value, again.reason, again.hint) == (
        error.table,
        error.column,
        error.value,
        error.reason,
        error.hint,
    )
    assert str(again) == str(error)
    value_error = pickle.loads(pickle.dumps(ValueRefused("why", "hint")))
    assert (value_error.reason, value_error.hint) == ("why", "hint")


def test_refusal_excerpt_is_short_for_big_values() -> None:
    error = refusal(target("varchar(10)"), "x" * 100_000)
    assert "(100000 chars)" in str(error)
    assert len(str(error)) < 400
    error = refusal(target("integer"), b"\x00" * 5000)
    assert "(5000 bytes)" in str(error)


def test_refused_value_is_not_written(pg: Pg) -> None:
    """A refusal is raised before anything reaches COPY, so the loader can stop or quarantine."""
    with pytest.raises(RowRefused, match=r"t\.c1: 32768 is outside the smallint range"):
        roundtrip(pg, [target("integer"), target("smallint")], [(1, 2), (3, 32768)])
    assert pg.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_first_refused_column_is_named() -> None:
    convert = row_converter(
        "Account", ["id", "createdAt", "active"], [target("text"), target("timestamp(3)"), target("boolean")]
    )
    with pytest.raises(RowRefused) as info:
        convert(("x", "tomorrow", 7))
    assert info.value.column == "createdAt"


# -- reading invalid UTF-8 from a real SQLite file ---------------------------------------------------


def test_decode_text_convention_with_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE f (name TEXT)")
        conn.execute("INSERT INTO f VALUES (CAST(x'66696c6596' AS TEXT)), ('ok')")
    conn = sqlite3.connect(db)
    try:
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("SELECT name FROM f").fetchall()
        conn.text_factory = decode_text
        (bad,), (good,) = conn.execute("SELECT name FROM f ORDER BY rowid").fetchall()
    finally:
        conn.close()
    assert good == "ok"
    assert value_converter(target("bytea"))(bad) == b"file\x96"
    assert value_converter(target("text", replace_bad_utf8=True))(bad) == "file\ufffd"
    with pytest.raises(ValueRefused, match="bytes 96 at character 4"):
        value_converter(target("text"))(bad)


# -- parse_type, type_sql, copy_types, overrides -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timestamp(3) without time zone", TargetType("timestamp", precision=3)),
        ("timestamp without time zone", TargetType("timestamp")),
        ("timestamp(6) with time zone", TargetType("timestamptz", precision=6)),
        ("timestamptz", TargetType("timestamptz")),
        ("numeric(65,30)", TargetType("numeric", precision=65, scale=30)),
        ("NUMERIC(10)", TargetType("numeric", precision=10, scale=0)),
        ("numeric(2,-3)", TargetType("numeric", precision=2, scale=-3)),
        ("decimal", TargetType("numeric")),
        ("character varying(191)", TargetType("varchar", length=191)),
        ("character varying", TargetType("varchar")),
        ("varchar(5)", TargetType("varchar", length=5)),
        ("character(1)", TargetType("char", length=1)),
        ("character", TargetType("char", length=1)),
        ("bpchar", TargetType("char")),
        ("int4", TargetType("integer")),
        ("serial", TargetType("integer")),
        ("int8", TargetType("bigint")),
        ("smallint", TargetType("smallint")),
        ("double precision", TargetType("double precision")),
        ("float8", TargetType("double precision")),
        ("float(24)", TargetType("real")),
        ("float(53)", TargetType("double precision")),
        ("float", TargetType("double precision")),
        ("bool", TargetType("boolean")),
        ("time(3) without time zone", TargetType("time", precision=3)),
        ("jsonb", TargetType("jsonb")),
        ("pg_catalog.uuid", TargetType("uuid")),
        ("bytea", TargetType("bytea")),
        ("date", TargetType("date")),
    ],
)
def test_parse_type(text: str, expected: TargetType) -> None:
    assert parse_type(text) == expected


@pytest.mark.parametrize("text", ["USER-DEFINED", "integer[]", "point", "money", "enum", "tsvector", ""])
def test_parse_type_refuses_unsupported(text: str) -> None:
    with pytest.raises(UnsupportedType, match="not supported"):
        parse_type(text)


def test_type_sql_round_trips_through_postgres(pg: Pg) -> None:
    texts = [
        "timestamp(3) without time zone",
        "timestamp(6) with time zone",
        "numeric(65,30)",
        "character varying(191)",
        "character(2)",
        "time(3) without time zone",
        "double precision",
        "jsonb",
        "boolean",
    ]
    for i, text in enumerate(texts):
        t = parse_type(text)
        pg.execute(sql.SQL("CREATE TABLE {} (c {})").format(sql.Identifier(f"t{i}"), type_sql(t)))
        (formatted,) = pg.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'c'",
            (f"t{i}",),
        ).fetchone() or ("",)
        assert parse_type(formatted) == t


def test_with_override() -> None:
    base = parse_type("text")
    over = with_override(base, ColumnOverride(type="timestamptz", format="unix_ms"))
    assert over == TargetType("timestamptz", format="unix_ms")
    flags = with_override(base, ColumnOverride(strip_nul=True, replace_bad_utf8=True))
    assert flags == TargetType("text", strip_nul=True, replace_bad_utf8=True)


def test_unknown_target_name_is_a_usage_error() -> None:
    with pytest.raises(UnsupportedType):
        value_converter(TargetType("point"))
    with pytest.raises(UnsupportedType):
        value_converter(TargetType("enum", enum_name="E"))


def test_row_converter_with_no_columns_and_mismatch() -> None:
    assert row_converter("t", [], [])(()) == ()
    with pytest.raises(ValueError, match="2 columns but 1 types"):
        row_converter("t", ["a", "b"], [parse_type("text")])


def test_parse_datetime_text_keeps_the_offset() -> None:
    from replicator.values.datetimes import parse_datetime_text

    assert parse_datetime_text("2024-03-05T08:07:08+02:00").utcoffset() == timedelta(hours=2)
    assert parse_datetime_text("2024-03-05 08:07:08.5 +02:00").utcoffset() == timedelta(hours=2)
    assert parse_datetime_text("2024-03-05 08:07").tzinfo is None
    assert parse_datetime_text("2024-03-05") == datetime(2024, 3, 5)


def test_offsets_are_fixed_not_named_zones() -> None:
    """An offset text is an instant: any fixed offset converts to the same UTC instant."""
    convert = value_converter(target("timestamptz"))
    east = convert("2024-03-05T11:37:08+05:30")
    assert east == datetime(2024, 3, 5, 6, 7, 8, tzinfo=UTC)
    assert east == datetime(2024, 3, 5, 11, 37, 8, tzinfo=timezone(timedelta(hours=5, minutes=30)))
