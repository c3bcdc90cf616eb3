"""Values through the converter and binary COPY into a real PostgreSQL, read back (for the converter's
example tests and its property tests alike)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from replicator.values.convert import row_converter
from replicator.values.targettype import TargetType, copy_types, parse_type, type_sql

Pg = psycopg.Connection[tuple[Any, ...]]


def target(text: str, **fields: Any) -> TargetType:
    """parse_type plus field overrides (format, strip_nul, ...)."""
    base = parse_type(text)
    return TargetType(
        base.name,
        precision=base.precision,
        scale=base.scale,
        length=base.length,
        **fields,
    )


ROLE = TargetType("enum", enum_name="Role", enum_labels=("USER", "ADMIN"))


def roundtrip(
    pg: Pg,
    types: Sequence[TargetType],
    rows: Sequence[Sequence[object]],
    *,
    table: str = "t",
    columns: Sequence[str] | None = None,
    select: Sequence[sql.Composable] | None = None,
    wire: bool = False,
) -> list[tuple[Any, ...]]:
    """Convert ``rows``, write them with binary COPY into a fresh table, return what PostgreSQL reads back."""
    columns = list(columns or [f"c{i}" for i in range(len(types))])
    for t in types:
        if t.name == "citext":
            pg.execute("CREATE EXTENSION IF NOT EXISTS citext")
        if t.name == "enum" and t.enum_name:
            exists = pg.execute("SELECT 1 FROM pg_type WHERE typname = %s", (t.enum_name,)).fetchone()
            if exists is None:
                labels = sql.SQL(", ").join(sql.Literal(label) for label in t.enum_labels)
                pg.execute(sql.SQL("CREATE TYPE {} AS ENUM ({})").format(sql.Identifier(t.enum_name), labels))
    pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    definitions = [sql.SQL("{} {}").format(sql.Identifier(c), type_sql(t)) for c, t in zip(columns, types, strict=True)]
    pg.execute(
        sql.SQL("CREATE TABLE {} (_n integer PRIMARY KEY, {})").format(
            sql.Identifier(table), sql.SQL(", ").join(definitions)
        )
    )
    convert = row_converter(table, columns, types, wire=wire)
    names = sql.SQL(", ").join(sql.Identifier(c) for c in ["_n", *columns])
    with (
        pg.cursor() as cur,
        cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(table), names)) as copy,
    ):
        copy.set_types(["int4", *copy_types(types, wire=wire)])
        for n, row in enumerate(rows):
            copy.write_row((n, *convert(row)))
    what = sql.SQL(", ").join(select) if select else sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    query = sql.SQL("SELECT {} FROM {} ORDER BY _n").format(what, sql.Identifier(table))
    return pg.execute(query, prepare=False).fetchall()
