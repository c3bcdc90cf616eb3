"""SQLite expression and DDL reading (the pieces no PRAGMA reports), and the proved allow-list.

Every allow-listed function and operator is run in SQLite and, translated, in PostgreSQL on the same
row (PostgreSQL's row is SQLite's row passed through the load's own converter), over NULL, negative,
64-bit extreme and non-ASCII inputs, BLOBs in TEXT columns included. Whenever PostgreSQL returns a
value it must be SQLite's; the one documented exception is an integer step beyond 64 bits, where
PostgreSQL raises "bigint out of range" (SQLite goes on in floating point). Everything off the list
is refused with the reason.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.plan import sqlexpr
from replicator.values import convert
from replicator.values.targettype import TargetType

INT, TEXT, BOOL, OTHER = sqlexpr.Kind.INT, sqlexpr.Kind.TEXT, sqlexpr.Kind.BOOL, sqlexpr.Kind.OTHER
ANY = {INT, TEXT, BOOL}
COLS = {
    "a": sqlexpr.Operand("a", INT),
    "b": sqlexpr.Operand("b", INT),
    "h": sqlexpr.Operand("h", TEXT),
    "g": sqlexpr.Operand("g", TEXT),
    "Order Id": sqlexpr.Operand("order_id", INT),
    "d": sqlexpr.Operand("d", OTHER, "column 'd' (DATETIME planned as timestamptz)"),
    "n": sqlexpr.Operand("n", TEXT, collation="NOCASE"),
}


def _pg(text: str, want: set[sqlexpr.Kind] | None = None) -> str:
    return sqlexpr.translate(sqlexpr.tokenize(text), COLS, want or ANY).as_string(None)


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("[a]>=(0) AND [b]<=(1)", '(("a" >= 0) AND ("b" <= 1))'),
        ("`a` == 0x10", '("a" = 16)'),
        ('"Order Id" IS NOT NULL', '("order_id" IS NOT NULL)'),
        ("a IS 3", '("a" IS NOT DISTINCT FROM 3)'),
        ("a IS NOT 3", '("a" IS DISTINCT FROM 3)'),
        ("d NOTNULL AND d ISNULL OR d NOT NULL", '((("d" IS NOT NULL) AND ("d" IS NULL)) OR ("d" IS NOT NULL))'),
        ("ifnull(h, 'x') || 'y'", "(coalesce(\"h\", 'x') || 'y')"),
        ("A in (1, -2, b)", '("a" IN (1, (- 2), "b"))'),
        ("a NOT IN (1)", '("a" NOT IN (1))'),
        ('h || "unknown word"', "(\"h\" || 'unknown word')"),
        ("a + b * -2 - abs(a)", '(("a" + ("b" * (- 2))) - abs("a"))'),
        ("upper(h)", "translate(\"h\", 'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ')"),
        ("NOT a < b", '(NOT ("a" < "b"))'),
    ],
)
def test_translate(sqlite: str, postgres: str) -> None:
    assert _pg(sqlite) == postgres


@pytest.mark.parametrize(
    ("sqlite", "reason"),
    [
        ("substr(h, -2)", "negative start"),
        ("substr(h, 2, 1)", "negative start"),
        ("max(a, b)", "greatest"),
        ("min(a, b)", "least"),
        ("h LIKE 'a%'", "ILIKE"),
        ("h NOT LIKE 'a%'", "ILIKE"),
        ("length(h)", "BLOB"),
        ("a / b", "zero divisor"),
        ("a % b", "zero divisor"),
        ("a * 1.5", "REAL literal"),
        ("a = 9223372036854775808", "64 bits"),
        ("a = 0xFFFFFFFFFFFFFFFF", "64 bits"),
        ("2000000000 + 2000000000 = a", "32 bits"),
        ("h = g", "integer values only"),
        ("h < 'x'", "integer values only"),
        ("h IN ('x')", "integer values only"),
        ("a + h", "integer values only"),
        ("upper(a)", "text values only"),
        ("a || b", "text values only"),
        ("d + 1", "planned as timestamptz"),
        ("a AND b", "boolean values only"),
        ("typeof(a) = 'integer'", "not on the proved list"),
        ("json_valid(h)", "not on the proved list"),
        ("CAST(a AS TEXT)", "CAST"),
        ("h GLOB 'a*'", "GLOB"),
        ("h COLLATE NOCASE", "COLLATE"),
        ("a BETWEEN 1 AND 2", "BETWEEN"),
        ("CASE WHEN a > 0 THEN 1 END", "CASE"),
        ("a & 1", "bitwise"),
        ("coalesce(a, NULL)", "proved list"),
        ("nosuch + 1", "not a column"),
        ("a IN (SELECT 1)", "subquery"),
    ],
)
def test_off_the_list_is_refused_with_the_reason(sqlite: str, reason: str) -> None:
    with pytest.raises(sqlexpr.Untranslatable, match=reason):
        _pg(sqlite)


def test_text_equality_only_in_a_check_and_only_under_binary_collation() -> None:
    """A CHECK may compare text for equality (a BLOB in the column can only make PostgreSQL refuse a row)."""

    def check(text: str) -> str:
        return sqlexpr.translate(sqlexpr.tokenize(text), COLS, {BOOL}, text_equality=True).as_string(None)

    assert check("h IN ('G', 'PG') AND g <> 'x'") == "((\"h\" IN ('G', 'PG')) AND (\"g\" <> 'x'))"
    assert (
        check("upper(n) = 'X'")
        == "(translate(\"n\", 'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ') = 'X')"
    )
    with pytest.raises(sqlexpr.Untranslatable, match="COLLATE NOCASE"):
        check("n = 'x'")
    with pytest.raises(sqlexpr.Untranslatable, match="COLLATE NOCASE"):
        check("'x' IN (n)")
    with pytest.raises(sqlexpr.Untranslatable, match="integer values only"):
        check("h < g")
    with pytest.raises(sqlexpr.Untranslatable, match="text values only, not integer"):
        check("h = 1")


def test_the_caller_gets_only_the_kind_it_can_use() -> None:
    """A CHECK needs a boolean, a generated column its own kind."""
    with pytest.raises(sqlexpr.Untranslatable, match="the expression is integer, not boolean"):
        _pg("a + b", {BOOL})
    with pytest.raises(sqlexpr.Untranslatable, match="planned as timestamptz"):
        _pg("d", {INT})
    assert _pg("a + 1", {INT}) == '("a" + 1)'


def test_parse_create_table_checks_generated_and_collations() -> None:
    ddl = sqlexpr.parse_create_table(
        """CREATE TABLE [t] ([a]INTEGER CHECK (a > 0), "b, c" TEXT COLLATE NOCASE,
        d INT GENERATED ALWAYS AS (a * 2) STORED, e AS (upper("b, c")),
        CONSTRAINT ck CHECK (d <> 'x, (y)'), PRIMARY KEY (a))"""
    )
    assert [name for name, _ in ddl.checks] == [None, "ck"]
    assert [t.text for t in ddl.checks[1][1]] == ["d", "<>", "'x, (y)'"]
    assert set(ddl.generated) == {"d", "e"}
    assert ddl.collations == {"b, c": "NOCASE"}


def test_parse_create_index_keys_and_where() -> None:
    ddl = sqlexpr.parse_create_index(
        'CREATE UNIQUE INDEX "i" ON t (lower(name) DESC, qty COLLATE NOCASE) WHERE qty > 0;'
    )
    assert len(ddl.keys) == 2
    assert [t.text for t in ddl.where] == ["qty", ">", "0"]


# --- the same expression in both databases ---------------------------------------------------

ALLOWED = [
    # integers
    "a + b",
    "a - b",
    "a * b",
    "-a",
    "a + 1",
    "2 * b - a",
    "abs(a)",
    "coalesce(a, b, -1)",
    "ifnull(a, 7)",
    "a < b",
    "a <= b",
    "a > b",
    "a >= b",
    "a = b",
    "a == b",
    "a != b",
    "a <> b",
    "a IS b",
    "a IS NOT b",
    "a IN (1, -2, b)",
    "a NOT IN (0, b)",
    # text
    "h || g",
    "'<' || h || '>'",
    "upper(h)",
    "lower(h)",
    "upper(h) || lower(g)",
    "coalesce(h, g, 'z')",
    "ifnull(h, g)",
    # NULL tests and logic
    "h IS NULL",
    "g IS NOT NULL",
    "a NOTNULL",
    "b ISNULL",
    "NOT a < b",
    "a < b AND b < 3",
    "a < b OR h IS NULL",
    "NOT (a IS NULL OR b IS NULL) AND a + b > 0",
]
SAMPLE_TEXT = ["héllo", "ÉTÉ straße", "ıi İ", "ǅ ﬁ", "Ωmega", "ABC xyz", "", " ", "日本"]
ints = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.sampled_from([(1 << 63) - 1, -(1 << 63), 1 << 31, -(1 << 31) - 1, 1 << 32]),
)
plain_text = st.one_of(
    st.sampled_from(SAMPLE_TEXT),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6),
)
# A BLOB holding UTF-8 in a TEXT column: the load writes its text.
texts = st.one_of(st.none(), plain_text, plain_text.map(str.encode))
TEXT_TYPE = TargetType("text")
BIGINT = TargetType("bigint")


class Both:
    """One row in SQLite and, converted as the load converts it, in PostgreSQL."""

    def __init__(self, pconn: psycopg.Connection[Any]) -> None:
        self.sconn = sqlite3.connect(":memory:")
        self.sconn.execute("CREATE TABLE t (a INTEGER, b INTEGER, h TEXT, g TEXT)")
        self.pconn = pconn
        pconn.execute("CREATE TABLE t (a bigint, b bigint, h text, g text)")

    def load(self, row: tuple[Any, ...]) -> None:
        self.sconn.execute("DELETE FROM t")
        self.sconn.execute("INSERT INTO t VALUES (?, ?, ?, ?)", row)
        stored = self.sconn.execute("SELECT a, b, h, g FROM t").fetchone()
        types = (BIGINT, BIGINT, TEXT_TYPE, TEXT_TYPE)
        converted = [convert.convert_value("t", "c", t, v) for t, v in zip(types, stored, strict=True)]
        self.pconn.execute("DELETE FROM t")
        self.pconn.execute("INSERT INTO t VALUES (%s, %s, %s, %s)", converted)

    def sqlite(self, expr: str) -> tuple[str, Any]:
        try:
            value = self.sconn.execute(f"SELECT {expr} FROM t").fetchone()[0]
        except sqlite3.OperationalError as exc:
            return "error", str(exc)
        return "value", value.decode() if isinstance(value, bytes) else value

    def postgres(self, expr: str, *, text_equality: bool = False) -> tuple[str, Any]:
        tokens = sqlexpr.tokenize(expr)
        translated = sqlexpr.translate(tokens, COLS, ANY, text_equality=text_equality).as_string(None)
        try:
            return "value", _one(self.pconn, f"SELECT {translated} FROM t")
        except psycopg.errors.NumericValueOutOfRange as exc:
            return "error", str(exc)


def _one(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def both(pg: psycopg.Connection[Any]) -> Iterator[Both]:
    pair = Both(pg)
    yield pair
    pair.sconn.close()


def _same(expr: str, sqlite: tuple[str, Any], postgres: tuple[str, Any]) -> bool:
    (s_kind, s_value), (p_kind, p_value) = sqlite, postgres
    if p_kind == "error":
        # An integer step left 64 bits: SQLite goes on in floating point (or raises, for abs), PostgreSQL
        # raises "bigint out of range". A loud refusal of the row, never another value.
        return True
    if s_kind == "error":
        return False
    if isinstance(p_value, bool):
        return bool(s_value == int(p_value))
    return bool(type(s_value) is type(p_value) and s_value == p_value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=ints, b=ints, h=texts, g=texts)
def test_allowed_expressions_compute_the_same_in_both_databases(
    both: Both, a: int | None, b: int | None, h: Any, g: Any
) -> None:
    both.load((a, b, h, g))
    for expr in ALLOWED:
        s, p = both.sqlite(expr), both.postgres(expr)
        assert _same(expr, s, p), (expr, (a, b, h, g), s, p)


TEXT_EQUALITY = ["h = g", "h == 'héllo'", "h <> g", "h != 'ıi İ'", "h IS g", "h IS NOT 'ß'", "h IN ('Ωmega', g)"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.one_of(st.none(), plain_text), g=st.one_of(st.none(), plain_text))
def test_text_equality_is_the_same_on_text_values(both: Both, h: str | None, g: str | None) -> None:
    both.load((None, None, h, g))
    for expr in TEXT_EQUALITY:
        s, p = both.sqlite(expr), both.postgres(expr, text_equality=True)
        assert _same(expr, s, p), (expr, (h, g), s, p)


@pytest.mark.parametrize(
    ("expr", "row", "sqlite", "postgres"),
    [
        ("substr(h, -2)", (None, None, "héllo", None), "lo", "héllo"),
        ("upper(h)", (None, None, "héllo", None), "HéLLO", "HÉLLO"),
        ("max(a, b)", (1, None, None, None), None, 1),
        ("h LIKE 'É%'", (None, None, "été", None), 0, True),
        ("length(h)", (None, None, "é".encode(), None), 2, 1),
    ],
)
def test_what_the_old_translation_got_wrong(
    both: Both, expr: str, row: tuple[Any, ...], sqlite: Any, postgres: Any
) -> None:
    """The old one-to-one translation, run in both databases, disagrees: now refused, or (upper) exact."""
    old = {"substr": "substr", "upper": "upper", "max": "greatest", "LIKE": "ILIKE", "length": "length"}
    both.load(row)
    assert both.sqlite(expr) == ("value", sqlite)
    pg_expr = expr
    for name, pg_name in old.items():
        pg_expr = pg_expr.replace(name, pg_name)
    assert _one(both.pconn, f"SELECT {pg_expr} FROM t") == postgres
    if expr.startswith("upper"):
        assert both.postgres(expr) == ("value", sqlite)
        return
    with pytest.raises(sqlexpr.Untranslatable):
        _pg(expr)
