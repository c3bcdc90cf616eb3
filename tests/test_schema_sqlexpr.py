"""SQLite expression and DDL reading: the pieces no PRAGMA reports."""

from __future__ import annotations

import pytest

from replicator import sqlexpr

COLS = {"Discount": "Discount", "qty": "qty", "name": "name", "Order Id": "order_id"}


def _pg(text: str) -> str:
    return sqlexpr.translate(sqlexpr.tokenize(text), COLS).as_string(None)


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("[Discount]>=(0) AND [Discount]<=(1)", '"Discount" >= ( 0 ) AND "Discount" <= ( 1 )'),
        ("`qty` == 0x10", '"qty" = 16'),
        ('"Order Id" IS NOT NULL', '"order_id" IS NOT NULL'),
        ("qty IS 3", '"qty" IS NOT DISTINCT FROM 3'),
        ("qty IS NOT 3", '"qty" IS DISTINCT FROM 3'),
        ("name LIKE 'a%' ESCAPE '\\'", "\"name\" ILIKE 'a%' ESCAPE  E'\\\\'"),  # a backslash: E'' string
        ("ifnull(name, 'x') || 'y'", "coalesce(\"name\", 'x') || 'y'"),
        ("max(qty, 1)", 'greatest("qty", 1)'),
        ("QTY in (1, 2)", '"qty" IN ( 1 , 2 )'),
        ('name = "unknown word"', "\"name\" = 'unknown word'"),
    ],
)
def test_translate(sqlite: str, postgres: str) -> None:
    assert _pg(sqlite) == postgres


@pytest.mark.parametrize(
    "sqlite", ["name GLOB 'a*'", "typeof(qty) = 'integer'", "CAST(qty AS TEXT)", "json_valid(name)"]
)
def test_untranslatable_is_refused_with_the_reason(sqlite: str) -> None:
    with pytest.raises(sqlexpr.Untranslatable):
        _pg(sqlite)


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
