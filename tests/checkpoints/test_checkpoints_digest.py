"""The canonical row digest: its algebra, its encoding rules, and a round trip through PostgreSQL."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import math
import struct
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.types.json import Json as PgJson
from psycopg.types.json import Jsonb

from checkpoints import digest
from checkpoints.digest import EMPTY, Json, RowEncoder, TableDigest, encode_row, kinds_from_oids, table_digest
from checkpoints.errors import CheckpointError

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
    st.text(),
    st.binary(max_size=20),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.dates(),
    st.uuids(),
)
rows = st.lists(st.tuples(scalars, scalars, scalars), max_size=12)


def _digest(rs: list[tuple[Any, ...]]) -> TableDigest:
    return table_digest(rs)


@given(rows, st.randoms(use_true_random=False))
def test_digest_does_not_depend_on_row_order(rs: list[tuple[Any, ...]], rnd: Any) -> None:
    shuffled = list(rs)
    rnd.shuffle(shuffled)
    assert _digest(rs) == _digest(shuffled)
    assert _digest(rs).hexdigest() == _digest(shuffled).hexdigest()


@given(rows, st.tuples(scalars, scalars, scalars))
def test_duplicate_rows_count_and_do_not_cancel(rs: list[tuple[Any, ...]], row: tuple[Any, ...]) -> None:
    once, twice = _digest([*rs, row]), _digest([*rs, row, row])
    assert twice.count == once.count + 1
    assert twice.hexdigest() != once.hexdigest()
    assert _digest([row, row]).hexdigest() != EMPTY  # XOR would give the empty digest here


@given(rows, rows)
def test_merge_is_the_digest_of_the_union_and_remove_undoes_add(
    a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]
) -> None:
    merged = _digest(a)
    merged.merge(_digest(b))
    assert merged == _digest(a + b)
    incremental = _digest(a + b)
    for row in b:
        incremental.remove(row)
    assert incremental == _digest(a)
    assert incremental.hexdigest() == _digest(a).hexdigest()
    resumed = TableDigest.from_hex(_digest(a).count, _digest(a).hexdigest())
    resumed.add_rows(b)
    assert resumed == _digest(a + b)


@given(st.decimals(allow_nan=False, allow_infinity=False), st.integers(min_value=1, max_value=12))
def test_decimal_scale_padding_does_not_change_the_encoding(value: Decimal, extra: int) -> None:
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    padded = Decimal((sign, (*digits, *([0] * extra)), exponent - extra))
    assert padded == value
    assert encode_row([padded]) == encode_row([value])


@given(st.integers())
def test_an_int_and_the_same_exact_decimal_encode_alike(value: int) -> None:
    sign, digits, _ = Decimal(value).as_tuple()
    with_scale = Decimal((sign, (*digits, 0, 0), -2))  # what numeric(p,2) returns for it
    assert encode_row([value]) == encode_row([Decimal(value)]) == encode_row([with_scale])


def test_exact_number_text() -> None:
    assert digest.exact_number(Decimal("1.50")) == "1.5"
    assert digest.exact_number(Decimal("1E+2")) == "100"
    assert digest.exact_number(Decimal("-0.000")) == "0"
    assert digest.exact_number(Decimal("15E-1")) == "1.5"
    assert digest.exact_number(Decimal("0.00100")) == "0.001"
    assert digest.exact_number(Decimal("NaN")) == "NaN"
    assert digest.exact_number(Decimal("-Infinity")) == "-Infinity"
    long = "1." + "0" * 40 + "1"
    assert digest.exact_number(Decimal(long)) == long  # no 28-digit context rounding


def _float_bits(value: float) -> bytes:
    encoded = encode_row([value])
    assert encoded[:2] == b"\x91\xcb"  # an array of one float 64
    return encoded[2:]


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_floats_are_encoded_exactly(a: float, b: float) -> None:
    assert _float_bits(a) == struct.pack(">d", a)
    same_bits = struct.pack(">d", a) == struct.pack(">d", b)
    assert (encode_row([a]) == encode_row([b])) == same_bits


def test_float_special_values() -> None:
    assert encode_row([0.0]) != encode_row([-0.0])
    assert _float_bits(float("nan")) == bytes.fromhex("7ff8000000000000")
    assert _float_bits(float("inf")) == struct.pack(">d", math.inf)
    assert encode_row([1.0]) != encode_row([1])


@given(st.datetimes(), st.timezones())
def test_aware_datetimes_are_normalised_to_utc(moment: dt.datetime, zone: dt.tzinfo) -> None:
    aware = moment.replace(tzinfo=dt.UTC)
    try:
        elsewhere = aware.astimezone(zone)
    except (OverflowError, ValueError):
        return  # outside datetime's range in that zone: nothing to compare
    assert encode_row([elsewhere]) == encode_row([aware])
    assert encode_row([moment]) != encode_row([aware])  # naive is kept naive, and differs


def test_datetimes_at_the_edges() -> None:
    assert encode_row([dt.datetime(1969, 12, 31, 23, 59, 59, 999999)]) == b"\x91\xba1969-12-31T23:59:59.999999"
    assert encode_row([dt.datetime(2024, 1, 2, 3, 4, 5)]) == b"\x91\xb32024-01-02T03:04:05"
    # The timestamp extension, 96-bit form: nanoseconds (uint32) then seconds (int64), both big-endian.
    far_east = dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5)))  # before datetime.min in UTC
    expected = b"\xc7\x0c\xff" + struct.pack(">I", 0) + struct.pack(">q", -62135614800)
    assert encode_row([far_east]) == b"\x91" + expected

    class NoOffset(dt.tzinfo):
        def utcoffset(self, moment: dt.datetime | None) -> dt.timedelta | None:
            return None

        def dst(self, moment: dt.datetime | None) -> dt.timedelta | None:
            return None

        def tzname(self, moment: dt.datetime | None) -> str | None:
            return None

    read_as_utc = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert encode_row([dt.datetime(2024, 1, 1, tzinfo=NoOffset())]) == encode_row([read_as_utc])


def test_values_that_must_differ_do() -> None:
    values: list[Any] = [1, 1.0, "1", True, b"1", None, Json("1"), [1], Decimal("1.5"), 1.5, 0, False, ""]
    encodings = [encode_row([v]) for v in values]
    assert len(set(encodings)) == len(values)
    assert encode_row([Decimal("1.5")]) == encode_row(["1.5"])
    assert encode_row([False]) != encode_row([0]) != encode_row([None])


def test_value_boundaries_are_unambiguous() -> None:
    assert encode_row(["ab", "c"]) != encode_row(["a", "bc"])
    assert encode_row([b"", b"x"]) != encode_row([b"x", b""])
    assert encode_row([[1, 2], 3]) != encode_row([[1], 2, 3])


def test_encoding_is_the_documented_bytes() -> None:
    when = dt.datetime(2024, 1, 2, 5, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    row: list[Any] = [
        None,
        True,
        7,
        Decimal("2.50"),
        Decimal("300.00"),
        0.5,
        "é",
        b"\x00",
        when,
        dt.date(2024, 1, 2),
        uid,
    ]
    row += [dt.time(1, 2, 3, tzinfo=dt.UTC), dt.timedelta(seconds=1), 2**70, -300, [1, "a"]]
    expected = (
        b"\xdc\x00\x10"  # array 16 of 16 values
        + b"\xc0"  # nil
        + b"\xc3"  # true
        + b"\x07"  # positive fixint
        + b"\xa3"
        + b"2.5"  # Decimal, not integral: fixstr of its canonical text
        + b"\xcd\x01\x2c"  # Decimal 300.00 is the int 300: uint 16
        + b"\xcb"
        + struct.pack(">d", 0.5)
        + b"\xa2\xc3\xa9"  # "é"
        + b"\xc4\x01\x00"  # bin 8
        + b"\xd7\xff"
        + ((6 * 1000) << 34 | 1704164645).to_bytes(8, "big")  # timestamp 64: 03:04:05.000006Z
        + b"\xaa"
        + b"2024-01-02"
        + b"\xd9\x24"
        + b"12345678-1234-5678-1234-567812345678"  # str 8 (36 bytes)
        + b"\xa9"
        + b"01:02:03Z"
        + b"\xce"
        + (1_000_000).to_bytes(4, "big")  # timedelta: microseconds
        + bytes((0xA0 | len(str(2**70)),))
        + str(2**70).encode()  # beyond uint 64: its digits
        + b"\xd1\xfe\xd4"  # int 16: -300
        + b"\x92\x01\xa1a"
    )
    assert encode_row(row) == expected
    digest_of_one = int.from_bytes(hashlib.sha256(expected).digest(), "big")
    assert table_digest([row]).hexdigest() == format(digest_of_one, "064x")


def test_lone_surrogates_are_written_as_surrogatepass_utf8() -> None:
    assert encode_row(["a\udc80"]) == b"\x91\xa4a" + "\udc80".encode("utf-8", "surrogatepass")


def test_json_is_canonical() -> None:
    enc = RowEncoder(["json"])
    assert enc.encode([{"b": 1, "a": [1, 2.5, None]}]) == enc.encode([{"a": [1, 2.5, None], "b": 1}])
    assert enc.encode([{"x": 100.0}]) == enc.encode([{"x": 100}]) == enc.encode([{"x": Decimal("1E+2")}])
    assert enc.encode([{"x": 1.5}]) == enc.encode([{"x": Decimal("1.50")}])
    assert digest.canonical_json({"é": "a\nb", "a": True}) == '{"a":true,"é":"a\\nb"}'
    assert enc.encode(["1"]) != enc.encode([1])
    assert enc.encode([None]) == encode_row([None])
    assert enc.encode([{"k": 1}]) == encode_row([Json({"k": 1})]) == encode_row([Jsonb({"k": 1})])


def test_unknown_values_are_refused_with_a_hint() -> None:
    with pytest.raises(CheckpointError, match="json"):
        encode_row([{"a": 1}])
    with pytest.raises(CheckpointError, match="cannot digest") as info:
        encode_row([object()])
    assert info.value.hint
    with pytest.raises(CheckpointError, match="column kinds"):
        RowEncoder(["auto", "json"]).encode([1])


# --- the same digest on both sides of PostgreSQL -------------------------------------------------

COLUMNS = (
    ("i", "integer"),
    ("b", "bigint"),
    ("f", "double precision"),
    ("n", "numeric"),
    ("n4", "numeric(14,4)"),
    ("t", "text"),
    ("x", "bytea"),
    ("ok", "boolean"),
    ("tz", "timestamptz"),
    ("ts", "timestamp"),
    ("d", "date"),
    ("jb", "jsonb"),
    ("js", "json"),
    ("u", "uuid"),
)
KINDS: list[digest.Kind] = ["json" if kind in ("jsonb", "json") else "auto" for _, kind in COLUMNS]


def _create(pg: psycopg.Connection[Any]) -> None:
    pg.execute(
        sql.SQL("CREATE TABLE mixed ({})").format(
            sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in COLUMNS)
        )
    )


def _write(pg: psycopg.Connection[Any], python_rows: list[tuple[Any, ...]]) -> None:
    """Write rows as the replicator would: JSON columns wrapped for psycopg."""
    with pg.cursor() as cur:
        for row in python_rows:
            wire = [
                Jsonb(v) if k == "jsonb" else PgJson(v) if k == "json" else v
                for v, (_, k) in zip(row, COLUMNS, strict=True)
            ]
            cur.execute(
                sql.SQL("INSERT INTO mixed VALUES ({})").format(sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS))),
                wire,
            )


def _read_back(pg: psycopg.Connection[Any]) -> TableDigest:
    with pg.cursor() as cur:
        cur.execute("SELECT * FROM mixed")
        assert cur.description is not None
        back = TableDigest(kinds_from_oids(c.type_code for c in cur.description))
        back.add_rows(cur)
    return back


def test_postgres_round_trip_gives_the_digest_of_what_was_written(pg: psycopg.Connection[Any]) -> None:
    _create(pg)
    pg.execute("SET TIME ZONE 'America/New_York'")  # read back in another zone: must not matter
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    python_rows: list[tuple[Any, ...]] = [
        (
            1,
            2**40,
            0.1,
            Decimal("1.50"),
            Decimal("2.5"),  # comes back as 2.5000
            "héllo\n",
            b"\x00\xff",
            True,
            dt.datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=ist),
            dt.datetime(2024, 3, 1, 12, 0, 0),
            dt.date(1999, 12, 31),
            {"b": [1, 2.5, None], "a": {"z": "x", "y": 1e2}},  # jsonb reorders and turns 1e2 into 100
            {"b": 1, "a": 2},  # json keeps the text as written
            uuid.UUID("00000000-0000-0000-0000-0000000000ff"),
        ),
        (
            -(2**31),
            -(2**63),
            -0.0,
            Decimal("-12345678901234567890.000100"),
            7,
            "",
            b"",
            False,
            None,
            None,
            None,
            [],
            "s",
            None,
        ),
        (
            0,
            0,
            float("inf"),
            Decimal("NaN"),
            Decimal("0.0001"),
            "x" * 300,
            bytes(range(256)),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ),
        (
            0,
            0,
            float("inf"),
            Decimal("NaN"),
            Decimal("0.0001"),
            "x" * 300,
            bytes(range(256)),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        ),
    ]
    _write(pg, python_rows)
    written = table_digest(python_rows, KINDS)
    assert written.count == 4
    assert _read_back(pg) == written

    # jsonb duplicate keys: PostgreSQL keeps the last, as Python's json.loads does on the source side.
    text = '{"k": 1, "k": 2, "a": 1.50}'
    pg.execute("DELETE FROM mixed")
    pg.execute("INSERT INTO mixed (i, jb, js) VALUES (1, %s::jsonb, %s::json)", (text, text))
    parsed = json.loads(text)
    assert _read_back(pg) == table_digest(
        [(1, None, None, None, None, None, None, None, None, None, None, parsed, parsed, None)], KINDS
    )


def test_a_changed_value_changes_the_digest(pg: psycopg.Connection[Any]) -> None:
    _create(pg)
    row = (1, 2, 1.0, Decimal(1), Decimal(1), "a", b"a", True, None, None, None, {"a": 1}, {"a": 1}, None)
    _write(pg, [row])
    pg.execute("UPDATE mixed SET f = 1.0000000000000002")
    assert _read_back(pg) != table_digest([row], KINDS)
    pg.execute("UPDATE mixed SET f = 1.0, jb = '{\"a\": 2}'")
    assert _read_back(pg) != table_digest([row], KINDS)
    pg.execute("UPDATE mixed SET jb = '{\"a\": 1.0}'")
    assert _read_back(pg) == table_digest([row], KINDS)  # jsonb numbers compare as numbers


pg_values = st.tuples(
    # NaN as Python and psycopg make it (SQLite stores no NaN; the encoding keeps a NaN's own bits)
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: math.nan if math.isnan(f) else f),
    st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**20), max_value=10**20),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")),
    st.datetimes(
        min_value=dt.datetime(1900, 1, 1),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.just(dt.timezone(dt.timedelta(hours=-7))),
    ),
    st.recursive(
        st.none()
        | st.booleans()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.integers(-(2**53), 2**53)
        | st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0xD7FF)),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3, alphabet="abcé"), inner, max_size=3)
        ),
        max_leaves=8,
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(pg_values, min_size=1, max_size=5))
def test_random_values_survive_postgres_with_the_same_digest(
    pg: psycopg.Connection[Any], values: list[tuple[Any, ...]]
) -> None:
    pg.execute("CREATE TABLE IF NOT EXISTS r (f double precision, n numeric(40,8), t text, tz timestamptz, j jsonb)")
    pg.execute("TRUNCATE r")
    with pg.cursor() as cur:
        cur.executemany(
            "INSERT INTO r VALUES (%s, %s, %s, %s, %s)", [(f, n, t, tz, Jsonb(j)) for f, n, t, tz, j in values]
        )
        cur.execute("SELECT f, n, t, tz, j FROM r")
        back = table_digest(cur.fetchall(), ["auto", "auto", "auto", "auto", "json"])
    assert back == table_digest(values, ["auto", "auto", "auto", "auto", "json"])


@pytest.mark.slow
def test_decimal_context_is_left_alone() -> None:
    with decimal.localcontext() as ctx:
        ctx.prec = 3
        assert encode_row([Decimal("1.23456789")]) == b"\x91\xaa1.23456789"


@given(st.datetimes(timezones=st.timezones()))
def test_the_mapped_timestamp_is_msgspecs_own(moment: dt.datetime) -> None:
    """The value-by-value path (a subclass, or an instant before year 1) writes what msgspec writes."""
    try:
        native = msgspec.msgpack.encode(moment)
    except OverflowError:
        return
    assert msgspec.msgpack.encode(digest._timestamp(moment)) == native
