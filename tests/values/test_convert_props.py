"""Property tests of the converter through a real PostgreSQL (hypothesis), and the ORM sample files.

Instants from year 1 to 9999 in every storage format, floats through numeric and double precision,
integers around the int2/int4/int8 boundaries, arbitrary text and JSON documents: what is accepted
comes back from PostgreSQL exactly, what is refused is refused for exactly the documented reason.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from replicator.values.convert import row_converter, value_converter
from replicator.values.datetimes import MS_THRESHOLD
from replicator.values.refusal import RowRefused, ValueRefused
from replicator.values.targettype import TargetType, parse_type
from tests.support.convert import ROLE, Pg, roundtrip, target

PG_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
EPOCH = datetime(1970, 1, 1)
MIN_DT = datetime(1, 1, 1)
MAX_DT = datetime(9999, 12, 31, 23, 59, 59, 999999)

instants = st.datetimes(min_value=MIN_DT, max_value=MAX_DT)
offsets = st.integers(min_value=-(14 * 60), max_value=14 * 60)


def _offset_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}"


def _storages(instant: datetime, offset_minutes: int) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """One instant in every storage format, and what PostgreSQL must give back for each column."""
    ms = instant.replace(microsecond=instant.microsecond // 1000 * 1000)
    s = instant.replace(microsecond=0)
    ms_number = (ms - EPOCH) // timedelta(milliseconds=1)
    s_number = (s - EPOCH) // timedelta(seconds=1)
    offset = timezone(timedelta(minutes=offset_minutes))
    try:
        local = instant.replace(tzinfo=UTC).astimezone(offset)
        with_offset: object = local.isoformat(timespec="microseconds")
        expect_offset: object = instant.replace(tzinfo=UTC)
    except OverflowError:  # the local wall time would be outside years 1..9999
        with_offset = expect_offset = None
    values = (
        ms_number,
        s_number,
        with_offset,
        instant.isoformat(timespec="microseconds"),
        ms.isoformat(sep=" ", timespec="milliseconds"),
        ms_number if abs(ms_number) >= MS_THRESHOLD else None,
        s.isoformat(sep=" "),
    )
    expected = (
        ms,
        s.replace(tzinfo=UTC),
        expect_offset,
        instant,
        ms,
        ms.replace(tzinfo=UTC) if values[5] is not None else None,
        s,
    )
    return values, expected


INSTANT_TYPES = [
    target("timestamp(3)", format="unix_ms"),
    target("timestamptz(0)", format="unix_s"),
    target("timestamptz"),
    target("timestamp(6)"),
    target("timestamp(3)"),
    target("timestamptz(3)"),  # magnitude rule: no format
    target("timestamp(0)"),
]


@PG_SETTINGS
@given(st.lists(st.tuples(instants, offsets), min_size=1, max_size=20))
@example(
    [(MIN_DT, 0), (MAX_DT, 0), (MIN_DT, 60), (MAX_DT, -60), (EPOCH, 0), (datetime(1969, 12, 31, 23, 59, 59, 999999), 0)]
)
def test_instants_round_trip_in_every_storage_format(pg: Pg, cases: list[tuple[datetime, int]]) -> None:
    rows = [_storages(instant, offset) for instant, offset in cases]
    for wire in (False, True):
        back = roundtrip(pg, INSTANT_TYPES, [values for values, _ in rows], wire=wire)
        assert back == [expected for _, expected in rows]


@settings(max_examples=300, deadline=None)
@given(instants, st.sampled_from([0, 1, 2, 3, 4, 5, 6]))
def test_fraction_digits_are_kept_or_refused_never_rounded(instant: datetime, precision: int) -> None:
    convert = value_converter(TargetType("timestamp", precision=precision))
    text = instant.isoformat(sep=" ", timespec="microseconds")
    if instant.microsecond % 10 ** (6 - precision):
        with pytest.raises(ValueRefused, match=f"precision {precision} would round"):
            convert(text)
    else:
        assert convert(text) == instant


finite_floats = st.floats(allow_nan=False, allow_infinity=False)


@PG_SETTINGS
@given(st.lists(finite_floats, min_size=1, max_size=30))
@example([0.1, 0.03201, 1e308, -5e-324, 1.2345678901234567e19, -0.0, 2.0**53 + 2, 123456789.12345679])
def test_floats_keep_their_shortest_repr(pg: Pg, floats: list[float]) -> None:
    back = roundtrip(
        pg,
        [target("numeric"), target("double precision")],
        [(f, f) for f in floats],
        select=[sql.SQL("c0, c0::text, c1")],
    )
    for f, (as_decimal, as_text, as_double) in zip(floats, back, strict=True):
        assert as_decimal == Decimal(repr(f))
        assert Decimal(as_text) == Decimal(repr(f))
        assert float(as_decimal) == f
        assert as_double == f
        assert repr(as_double) == repr(f)


_WIDE = Context(prec=1000)


@PG_SETTINGS
@given(st.lists(finite_floats, min_size=1, max_size=30))
@example([1e35, 9.999999999999999e34, 1e-30, 1.5e-30, 123.456])
def test_numeric_65_30_accepts_exactly_what_fits(pg: Pg, floats: list[float]) -> None:
    convert = value_converter(target("numeric(65,30)"))
    accepted = []
    for f in floats:
        exact = Decimal(repr(f))
        fits = exact == _WIDE.quantize(exact, Decimal("1e-30")) and abs(exact) < Decimal(10) ** 35
        if fits:
            assert convert(f) == exact
            accepted.append(f)
        else:
            with pytest.raises(ValueRefused, match="numeric\\(65,30\\)"):
                convert(f)
    back = roundtrip(pg, [target("numeric(65,30)")], [(f,) for f in accepted])
    assert [b[0] for b in back] == [Decimal(repr(f)) for f in accepted]


INT_TYPES = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}


def _boundary_ints() -> st.SearchStrategy[int]:
    edges = [sign * limit + delta for limit in INT_TYPES.values() for sign in (1, -1) for delta in (-2, -1, 0, 1)]
    return st.one_of(st.sampled_from(edges), st.integers(min_value=-(2**64), max_value=2**64))


@PG_SETTINGS
@given(
    st.sampled_from(sorted(INT_TYPES)), st.lists(st.tuples(_boundary_ints(), st.booleans()), min_size=1, max_size=30)
)
def test_integers_refused_exactly_outside_range(pg: Pg, name: str, values: list[tuple[int, bool]]) -> None:
    limit = INT_TYPES[name]
    convert = value_converter(parse_type(name))
    accepted = []
    for number, as_text in values:
        source: object = str(number) if as_text else number
        if -limit <= number < limit:
            assert convert(source) == number
            accepted.append(source)
        else:
            with pytest.raises(ValueRefused, match=f"outside the {name} range"):
                convert(source)
    back = roundtrip(pg, [parse_type(name)], [(v,) for v in accepted])
    assert [b[0] for b in back] == [int(str(v)) for v in accepted]


def test_integral_floats_at_int_boundaries() -> None:
    for name, limit in INT_TYPES.items():
        convert = value_converter(parse_type(name))
        assert convert(float(-limit)) == -limit
        with pytest.raises(ValueRefused):
            convert(float(limit))  # 2.0**63 etc. is one past the maximum
        if limit < 2**53:
            assert convert(float(limit - 1)) == limit - 1


@PG_SETTINGS
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"])), min_size=1, max_size=20))
@example(["a\x00", "", "\U0010ffff", "日本"])
def test_text_round_trips_or_names_the_nul(pg: Pg, texts: list[str]) -> None:
    convert = value_converter(target("text"))
    accepted = []
    for text in texts:
        if "\x00" in text:
            with pytest.raises(ValueRefused, match="NUL"):
                convert(text)
        else:
            accepted.append(text)
    assert roundtrip(pg, [target("text")], [(t,) for t in accepted]) == [(t,) for t in accepted]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite_floats | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


@PG_SETTINGS
@given(st.lists(json_values, min_size=1, max_size=10), st.booleans())
def test_json_documents_round_trip_in_jsonb(pg: Pg, docs: list[Any], ascii_only: bool) -> None:
    convert = value_converter(target("jsonb"))
    accepted = []
    for doc in docs:
        text = json.dumps(doc, ensure_ascii=ascii_only)
        if _has_nul(doc):
            with pytest.raises(ValueRefused, match=r"NUL|u0000"):
                convert(text)
        else:
            accepted.append((text, doc))
    back = roundtrip(
        pg,
        [target("jsonb"), target("json")],
        [(text, text) for text, _ in accepted],
        select=[sql.SQL("c0::text, c1::text")],
    )
    # JSON numbers are decimals: jsonb prints 7.205759403792162e+16 as 72057594037921620.
    assert [(_decimal_json(b), _decimal_json(t)) for b, t in back] == [
        (_decimal_json(text), _decimal_json(text)) for text, _ in accepted
    ]
    assert [t for _, t in back] == [text for text, _ in accepted]


def _decimal_json(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


# -- the ORM sample files in shared/realworld ------------------------------------------------------


def _sqlite_rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


PRISMA_ACCOUNT = {
    "id": "text",
    "uid": "text",
    "email": "text",
    "active": "boolean",
    "balance": "numeric(65,30)",
    "bigCount": "bigint",
    "ratio": "double precision",
    "hits": "integer",
    "settings": "jsonb",
    "avatar": "bytea",
    "role": "enum",
    "createdAt": "timestamp(3) without time zone",
    "updatedAt": "timestamp(3) without time zone",
}


def _types(mapping: dict[str, str]) -> list[TargetType]:
    return [ROLE if text == "enum" else parse_type(text) for text in mapping.values()]


def _load(pg: Pg, path: Path, table: str, mapping: dict[str, str], wire: bool = False) -> list[tuple[Any, ...]]:
    columns = ", ".join(f'"{c}"' for c in mapping)
    rows = _sqlite_rows(path, f'SELECT {columns} FROM "{table}" ORDER BY rowid')
    return roundtrip(pg, _types(mapping), rows, table=table, columns=list(mapping), wire=wire)


def _check_instants(pg: Pg, path: Path, table: str, column: str) -> None:
    """Our converted instants equal PostgreSQL's own reading of the source values (an independent parser).

    Text is cast by PostgreSQL (session TimeZone UTC, so naive text is UTC), integers are epoch ms.
    """
    pg.execute("SET TimeZone = 'UTC'")
    raw = [r[0] for r in _sqlite_rows(path, f'SELECT "{column}" FROM "{table}" ORDER BY rowid')]
    expected: list[datetime | None] = []
    for value in raw:
        if value is None:
            expected.append(None)
            continue
        query = (
            "SELECT timestamp 'epoch' + %s * interval '1 millisecond'"
            if isinstance(value, int)
            else "SELECT %s::text::timestamptz AT TIME ZONE 'UTC'"
        )
        row = pg.execute(query, (value,)).fetchone()
        assert row is not None
        expected.append(row[0])
    got = pg.execute(
        sql.SQL("SELECT {c} FROM {t} ORDER BY _n").format(c=sql.Identifier(column), t=sql.Identifier(table)),
        prepare=False,
    ).fetchall()
    naive = [g[0].astimezone(UTC).replace(tzinfo=None) if g[0] and g[0].tzinfo else g[0] for g in got]
    assert naive == expected
    assert any(v is not None for v in naive)


@pytest.mark.parametrize("wire", [False, True], ids=["values", "wire"])
@pytest.mark.parametrize("name", ["prisma7_small_unixms.db", "prisma7_small_iso8601.db", "prisma7_json_scalars.db"])
def test_prisma_files_load_as_prisma_postgres_types(pg: Pg, realworld: Path, name: str, wire: bool) -> None:
    path = realworld / "orm-samples" / name
    back = _load(pg, path, "Account", PRISMA_ACCOUNT, wire)
    assert back
    for column in ("createdAt", "updatedAt"):
        _check_instants(pg, path, "Account", column)
    balances = {r[4] for r in back}
    assert balances <= {
        Decimal(0),
        Decimal("0.1"),
        Decimal("19.99"),
        Decimal("12345678901234567000"),
        Decimal("0.30000000000000004"),
    }
    settings_values = [r[8] for r in back]
    assert any(v in (42, 1.5, "just a string", "123", True) for v in settings_values)


def test_prisma_json_null_text_stays_json_null(pg: Pg, realworld: Path) -> None:
    path = realworld / "orm-samples" / "prisma7_json_scalars.db"
    _load(pg, path, "Account", PRISMA_ACCOUNT)
    nulls = _sqlite_rows(path, "SELECT count(*) FROM Account WHERE settings = 'null'")[0][0]
    got = pg.execute("""SELECT count(*) FROM "Account" WHERE settings = 'null'::jsonb""").fetchone()
    assert got == (nulls,)


DJANGO = {
    "id": "bigint",
    "uid": "uuid",
    "flag": "boolean",
    "amount": "numeric",
    "big": "numeric",
    "data": "jsonb",
    "created": "timestamp with time zone",
    "day": "date",
    "t": "time without time zone",
    "dur": "bigint",
    "blob": "bytea",
    "owner_id": "bigint",
}
RAILS = {
    "id": "bigint",
    "flag": "boolean",
    "amount": "numeric(12,2)",
    "data": "jsonb",
    "ts": "timestamp(6) without time zone",
    "d": "date",
    "b": "bytea",
    "name": "character varying",
    "parent_id": "bigint",
    "created_at": "timestamp(6) without time zone",
    "updated_at": "timestamp(6) without time zone",
}
SQLALCHEMY = {
    "id": "integer",
    "u": "uuid",
    "flag": "boolean",
    "amount": "numeric(12,2)",
    "data": "json",
    "ts": "timestamp without time zone",
    "tstz": "timestamp with time zone",
    "d": "date",
    "tm": "time without time zone",
    "iv": "timestamp without time zone",
    "color": "character varying(5)",
    "blob": "bytea",
    "big": "bigint",
    "parent": "integer",
}


@pytest.mark.parametrize(
    ("name", "table", "mapping", "datetimes"),
    [
        ("django52_sample.db", "app_thing", DJANGO, ["created"]),
        ("activerecord61_sample.db", "things", RAILS, ["ts", "created_at", "updated_at"]),
        ("sqlalchemy21_sample.db", "t", SQLALCHEMY, ["ts", "tstz", "iv"]),
    ],
)
@pytest.mark.parametrize("wire", [False, True], ids=["values", "wire"])
def test_orm_files_load_exactly(
    pg: Pg, realworld: Path, name: str, table: str, mapping: dict[str, str], datetimes: list[str], wire: bool
) -> None:
    path = realworld / "orm-samples" / name
    back = _load(pg, path, table, mapping, wire)
    assert back
    for column in datetimes:
        _check_instants(pg, path, table, column)


def test_django_microsecond_time_and_uuid(pg: Pg, realworld: Path) -> None:
    back = _load(pg, realworld / "orm-samples" / "django52_sample.db", "app_thing", DJANGO)
    first = dict(zip(DJANGO, back[0], strict=True))
    assert str(first["uid"]) == "256f0900-27a0-41bb-afeb-104a4c0760b6"
    assert first["t"].isoformat() == "01:02:03.000004"
    assert first["data"] == {"a": [1, 2], "ü": "日本"}
    assert first["big"] == Decimal("1.2345678901234569E+23")
    assert first["created"] == datetime(2024, 3, 5, 6, 7, 8, 9000, tzinfo=UTC)


def _refused(path: Path, table: str, mapping: dict[str, str]) -> list[RowRefused]:
    convert = row_converter(table, list(mapping), [parse_type(t) for t in mapping.values()])
    columns = ", ".join(f'"{c}"' for c in mapping)
    errors = []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.text_factory = _decode
    try:
        for row in conn.execute(f'SELECT {columns} FROM "{table}" ORDER BY rowid'):
            try:
                convert(row)
            except RowRefused as exc:
                errors.append(exc)
    finally:
        conn.close()
    return errors


def _decode(data: bytes) -> str:
    from replicator.values.convert_text import decode_text

    return decode_text(data)


def test_pgloader_type_mismatch_and_bad_utf8_are_named(realworld: Path) -> None:
    tests = realworld / "pgloader-tests"
    (mismatch,) = _refused(tests / "type-mismatch.db", "products", {"id": "integer", "name": "text", "qty": "integer"})
    assert (mismatch.table, mismatch.column, mismatch.value) == ("products", "qty", "lots-of-it")
    assert "not an integer" in str(mismatch)
    (bad,) = _refused(tests / "bad-utf8.db", "files", {"id": "integer", "filename": "text"})
    assert (bad.column, bad.value) == ("filename", b"file\x96name.txt")
    assert "not valid UTF-8 (bytes 96 at character 4)" in str(bad)
    assert _refused(tests / "bad-utf8.db", "files", {"id": "integer", "filename": "bytea"}) == []


def test_chinook_invoice_dates_and_totals(pg: Pg, realworld: Path) -> None:
    """A real table: DATETIME text and NUMERIC(10,2) REALs into timestamp and numeric(10,2)."""
    path = realworld / "chinook" / "Chinook_Sqlite.sqlite"
    mapping = {"InvoiceId": "integer", "CustomerId": "integer", "InvoiceDate": "timestamp", "Total": "numeric(10,2)"}
    back = _load(pg, path, "Invoice", mapping)
    oracle = _sqlite_rows(path, 'SELECT printf(\'%.2f\', "Total") FROM "Invoice" ORDER BY rowid')
    assert [str(r[3]) for r in back] == [r[0] for r in oracle]
    _check_instants(pg, path, "Invoice", "InvoiceDate")


# -- the compiled row function and the per-column closures agree on anything -------------------------

ALL_TYPES = [
    *(parse_type(n) for n in ("smallint", "integer", "bigint", "real", "double precision", "numeric", "text")),
    *(parse_type(n) for n in ("numeric(65,30)", "numeric(12,2)", "varchar(8)", "char(2)", "bytea", "boolean")),
    *(parse_type(n) for n in ("timestamp(3)", "timestamptz", "timestamp(0)", "date", "time(3)", "json", "jsonb")),
    *(parse_type(n) for n in ("uuid", "timestamp", "numeric(2,-3)", "numeric(3,5)", "numeric(10,0)")),
    target("timestamp(3)", format="unix_ms"),
    target("timestamptz(6)", format="unix_s"),
    target("timestamp(3)", format="julian_day"),
    target("date", format="julian_day"),
    ROLE,
]
EDGE_INTS = [
    0,
    1,
    2,
    -1,
    MS_THRESHOLD,
    MS_THRESHOLD - 1,
    -MS_THRESHOLD,
    -MS_THRESHOLD + 1,
    -62_135_596_800,
    -62_135_596_801,
    1_721_425,
    1_721_426,
    5_373_484,
    5_373_485,
    253_402_300_799,
    253_402_300_800,
    -62_135_596_800_000,
    -62_135_596_800_001,
    253_402_300_799_999,
    253_402_300_800_000,
    2**63 - 1,
    -(2**63),
]
any_value = st.one_of(
    st.none(),
    st.sampled_from(EDGE_INTS),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.sampled_from([1e-4, -1e-4, 9.999999999999998e15, 1e16, -1e16, 0.0, -0.0]),
    st.text(max_size=12),
    st.sampled_from(
        ["USER", "t", "0", "1", "2024-03-05", "12:00", '{"a":1}', "null", "5d9025c939bc4278a5658d168b7310ea"]
    ),
    st.binary(max_size=20),
)


def _outcome(call: Any, value: object) -> str:
    try:
        return repr(call(value))
    except (ValueRefused, RowRefused) as exc:
        return f"refused: {exc.reason}"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(range(len(ALL_TYPES))), any_value, st.booleans())
def test_row_function_agrees_with_value_converter(index: int, value: object, wire: bool) -> None:
    t = ALL_TYPES[index]
    single = value_converter(t, wire=wire)
    row = row_converter("t", ["c"], [t], wire=wire)
    assert _outcome(lambda v: row((v,))[0], value) == _outcome(single, value)


def test_sakila_payments_rentals_and_text_booleans(pg: Pg, realworld: Path) -> None:
    """16k-row tables: DECIMAL(5,2) REALs, TIMESTAMP text, and booleans spelled 't' and '0'/'1' as text."""
    path = realworld / "sakila" / "sakila.db"
    payment = {
        "payment_id": "integer",
        "customer_id": "smallint",
        "amount": "numeric(5,2)",
        "payment_date": "timestamp without time zone",
    }
    back = _load(pg, path, "payment", payment)
    oracle = _sqlite_rows(path, "SELECT printf('%.2f', amount) FROM payment ORDER BY rowid")
    assert [str(r[2]) for r in back] == [r[0] for r in oracle]
    _check_instants(pg, path, "payment", "payment_date")
    rental = {"rental_id": "integer", "rental_date": "timestamp(0)", "return_date": "timestamp(0)"}
    _load(pg, path, "rental", rental)
    _check_instants(pg, path, "rental", "return_date")
    staff = _load(pg, path, "staff", {"staff_id": "smallint", "active": "boolean", "username": "varchar(16)"})
    assert [r[1] for r in staff] == [True, True]
    customer = _load(pg, path, "customer", {"customer_id": "integer", "active": "boolean", "create_date": "date"})
    actives = _sqlite_rows(path, "SELECT active = '1' FROM customer ORDER BY rowid")
    assert [r[1] for r in customer] == [bool(a[0]) for a in actives]
    language = _load(pg, path, "language", {"language_id": "smallint", "name": "character(20)"})
    assert language[0][1] == "English".ljust(20)


def test_northwind_mixed_numeric_storage(pg: Pg, realworld: Path) -> None:
    path = realworld / "northwind" / "northwind.db"
    details = {"OrderID": "integer", "ProductID": "integer", "UnitPrice": "numeric(10,4)", "Discount": "real"}
    back = _load(pg, path, "Order Details", details)
    oracle = _sqlite_rows(path, 'SELECT UnitPrice, Discount FROM "Order Details" ORDER BY rowid')
    assert [(r[2], r[3]) for r in back] == [(Decimal(repr(p)), d) for p, d in oracle]
    products = _load(pg, path, "Products", {"ProductID": "integer", "Discontinued": "boolean"})
    assert {r[1] for r in products} == {True, False}


def test_wide_table_compiles() -> None:
    """The generated row function handles very wide tables (SQLite allows 2000 columns by default)."""
    width = 2000
    types = [parse_type(("bigint", "text", "timestamp(3)", "jsonb")[i % 4]) for i in range(width)]
    convert = row_converter("wide", [f"c{i}" for i in range(width)], types)
    row = tuple((7, "x", 1709618828009, "{}")[i % 4] for i in range(width))
    out = convert(row)
    assert len(out) == width
    assert out[2] == datetime(2024, 3, 5, 6, 7, 8, 9000)
    with pytest.raises(RowRefused, match=r"wide\.c1999"):
        convert((*row[:-1], "{"))


@st.composite
def datetime_texts(draw: st.DrawFn) -> tuple[str, datetime]:
    """A UTC instant written in any layout of the grammar (separator, precision, offset spelling)."""
    instant = draw(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)))
    minutes = draw(st.sampled_from([0, 0, 60, -90, 330, -600, 14 * 60]))
    digits = draw(st.integers(min_value=-1, max_value=9))  # -1: no seconds, 0: seconds, n: n fraction digits
    if digits == -1:
        instant = instant.replace(second=0, microsecond=0)
    elif digits <= 6:
        instant = instant.replace(microsecond=instant.microsecond // 10 ** (6 - digits) * 10 ** (6 - digits))
    local = instant.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=minutes)))
    text = local.strftime("%m-%d") + draw(st.sampled_from(["T", "t", " "])) + local.strftime("%H:%M")
    text = f"{local.year:04d}-{text}"
    if digits >= 0:
        text += f":{local.second:02d}"
    if digits > 0:
        fraction = (
            f"{local.microsecond:06d}"[:digits] if digits <= 6 else f"{local.microsecond:06d}" + "0" * (digits - 6)
        )
        text += draw(st.sampled_from([".", ","])) + fraction
    sign, magnitude = ("-" if minutes < 0 else "+"), abs(minutes)
    hh, mm = divmod(magnitude, 60)
    if minutes == 0:
        spellings = ["Z", "z", "UTC", "+00:00", "-00:00", "+0000", "+00", ""]
    elif mm == 0:
        spellings = [f"{sign}{hh:02d}", f"{sign}{hh:02d}00", f"{sign}{hh:02d}:00"]
    else:
        spellings = [f"{sign}{hh:02d}{mm:02d}", f"{sign}{hh:02d}:{mm:02d}"]
    zone = draw(st.sampled_from(spellings))
    if zone:
        text += draw(st.sampled_from(["", " "])) + zone
    return text, instant


@settings(max_examples=500, deadline=None)
@given(datetime_texts(), st.booleans())
def test_every_layout_reads_the_same_instant(case: tuple[str, datetime], aware: bool) -> None:
    """The fromisoformat fast path and the grammar agree on every layout: same instant, or none."""
    from replicator.values.datetimes import parse_instant_text

    text, instant = case
    expected = instant.replace(tzinfo=UTC) if aware else instant
    got = parse_instant_text(text, aware)
    assert got == expected
    assert (got.tzinfo is UTC) if aware else (got.tzinfo is None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(day=st.dates(), aware=st.booleans())
def test_a_date_alone_is_read_by_fromisoformat(day: date, aware: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``YYYY-MM-DD`` (a DateField's storage) takes the fast path, as midnight UTC; the grammar only
    explains refusals (a day that does not exist)."""
    from replicator.values import datetimes

    def grammar(text: str) -> tuple[datetime, str | None]:
        raise AssertionError(f"the grammar read {text!r}")

    with monkeypatch.context() as patch:
        patch.setattr(datetimes, "_parse", grammar)
        got = datetimes.parse_instant_text(day.isoformat(), aware)
    midnight = datetime(day.year, day.month, day.day)
    assert got == (midnight.replace(tzinfo=UTC) if aware else midnight)
    assert (got.tzinfo is UTC) if aware else (got.tzinfo is None)
    assert value_converter(target("date"))(day.isoformat()) == day
    with pytest.raises(ValueRefused, match="day is out of range"):
        datetimes.parse_instant_text(f"{day.year:04d}-02-30", aware)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1_721_425.5, max_value=5_373_484.4), st.booleans())
def test_julian_days_read_as_sqlite_reads_them(julian: float, as_int: bool) -> None:
    """SQLite's own strftime is the oracle: the same millisecond, for REAL and INTEGER julian days."""
    value: float | int = max(int(julian), 1_721_426) if as_int else julian
    with sqlite3.connect(":memory:") as conn:
        (expected,) = conn.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', ?)", (value,)).fetchone()
    got = value_converter(target("timestamp(3)", format="julian_day"))(value)
    assert isinstance(got, datetime)
    assert f"{got.year:04d}-{got:%m-%d %H:%M:%S}.{got.microsecond // 1000:03d}" == expected
