"""Write-back of PostgreSQL values into the app's SQLite form (replicator.reverse.writeback), against the real
PostgreSQL and real SQLite files the ORMs wrote (shared/realworld/orm-samples, realworld.md §2).

Each ORM case: the app's own SQLite file (copied), a PostgreSQL table of the types that ORM's migrations
create there, rows the app writes on PostgreSQL (inserted with psycopg, read back as psycopg returns them),
written back with ``row_writer`` into the SQLite file. Then (1) what SQLite stores converts forward (the
migration's own row converter) to PostgreSQL's value, compared by PostgreSQL itself; (2) every written value
has the storage class and the spelling of the app's own rows in that column. Refusals name the column;
negative controls plant a wrong spelling and an unchecked writer and show the checks catch them.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.types.json import Json, Jsonb

from checkpoints.digest import JsonText
from replicator import pg as pgio
from replicator.plan.shape import TableShape
from replicator.reverse import writeback, writeback_forms, writeback_spell
from replicator.reverse.writeback import learn_forms, row_writer
from replicator.reverse.writeback_forms import json_spelling
from replicator.values.convert import row_converter, value_converter
from replicator.values.refusal import RowRefused, ValueRefused
from replicator.values.targettype import TargetType, parse_type, type_sql
from triggers.schema import read_schema

Pg = psycopg.Connection[tuple[Any, ...]]
PLUS2 = timezone(timedelta(hours=2))
ROLE = TargetType("enum", enum_name="Role", enum_labels=("USER", "ADMIN"))


class Col(NamedTuple):
    name: str
    type: TargetType
    pattern: str | None = None
    """A regex every text value of the column fullmatches: the app's rows and the written ones alike."""
    orm: Callable[[Any], object] | None = None
    """What the ORM itself writes for PostgreSQL's value, where its spelling has a subtlety (Django's
    ``str(datetime)`` has no fraction when the microseconds are zero): the written text must be that."""


def col(
    name: str,
    pg_type: str | TargetType,
    fmt: str | None = None,
    pattern: str | None = None,
    orm: Callable[[Any], object] | None = None,
) -> Col:
    t = pg_type if isinstance(pg_type, TargetType) else parse_type(pg_type)
    return Col(name, msgspec.structs.replace(t, format=fmt) if fmt else t, pattern, orm)


def shape_of(table: str, cols: Sequence[Col]) -> TableShape:
    names = tuple(c.name for c in cols)
    return TableShape(
        source=table,
        target=table,
        schema="public",
        source_columns=names,
        target_columns=names,
        types=tuple(c.type for c in cols),
        key_source=names[:1],
        key_target=names[:1],
        key_positions=(0,),
    )


# -- PostgreSQL and SQLite sides -----------------------------------------------------------------------


def pg_table(pg: Pg, name: str, cols: Sequence[Col]) -> None:
    pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
    for c in cols:
        if c.type.name == "enum" and c.type.enum_name:
            labels = sql.SQL(", ").join(sql.Literal(label) for label in c.type.enum_labels)
            pg.execute(sql.SQL("DROP TYPE IF EXISTS {} CASCADE").format(sql.Identifier(c.type.enum_name)))
            pg.execute(sql.SQL("CREATE TYPE {} AS ENUM ({})").format(sql.Identifier(c.type.enum_name), labels))
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c.name), type_sql(c.type)) for c in cols)
    pg.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(name), columns))


def pg_roundtrip(pg: Pg, name: str, cols: Sequence[Col], rows: Sequence[Sequence[object]]) -> list[tuple[Any, ...]]:
    """Insert ``rows`` as the app would on PostgreSQL; read them back as the reverse batch reads them (JSON as
    its text, ``replicator.pg.json_as_text``)."""
    pg_table(pg, name, cols)
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in cols)
    marks = sql.SQL(", ").join(sql.Placeholder() * len(cols))
    with pg.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(sql.Identifier(name), names, marks), rows)
    with pg.cursor() as cur:
        pgio.json_as_text(cur)
        return cur.execute(sql.SQL("SELECT {} FROM {} ORDER BY 1").format(names, sql.Identifier(name))).fetchall()


def forward_problems(pg: Pg, name: str, cols: Sequence[Col], stored: Sequence[Sequence[object]]) -> list[str]:
    """Check (1): SQLite's stored rows through the migration's row converter, into a twin table, compared
    with PostgreSQL's rows by PostgreSQL's own equality (json, which has none, as text)."""
    twin = name + "_back"
    pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(twin)))
    columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c.name), type_sql(c.type)) for c in cols)
    pg.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(twin), columns))
    convert = row_converter(name, [c.name for c in cols], [c.type for c in cols])
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in cols)
    marks = sql.SQL(", ").join(sql.Placeholder() * len(cols))
    with pg.cursor() as cur:
        insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(sql.Identifier(twin), names, marks)
        cur.executemany(insert, [convert(row) for row in stored])
    problems = []
    for c in cols:
        side = sql.SQL("{}.{}::text") if c.type.name == "json" else sql.SQL("{}.{}")
        differ = sql.SQL("{} IS DISTINCT FROM {}").format(
            side.format(sql.Identifier("a"), sql.Identifier(c.name)),
            side.format(sql.Identifier("b"), sql.Identifier(c.name)),
        )
        key = sql.Identifier(cols[0].name)
        query = sql.SQL("SELECT a.{k} FROM {t} a FULL JOIN {w} b USING ({k}) WHERE {d} ORDER BY 1").format(
            k=key, t=sql.Identifier(name), w=sql.Identifier(twin), d=differ
        )
        problems += [f"{c.name} differs for key {row[0]!r}" for row in pg.execute(query)]
    return problems


def sqlite_rows(conn: sqlite3.Connection, table: str, cols: Sequence[Col], where: str = "") -> list[tuple[Any, ...]]:
    """Values then their typeof(), newest first."""
    names = ", ".join(f'"{c.name}"' for c in cols)
    types = ", ".join(f'typeof("{c.name}")' for c in cols)
    return conn.execute(f'SELECT {names}, {types} FROM "{table}" {where} ORDER BY rowid DESC').fetchall()


def spelling_problems(
    cols: Sequence[Col], app: Sequence[Sequence[Any]], new: Sequence[Sequence[Any]], pg_rows: Sequence[Any]
) -> list[str]:
    """Check (2): each written value has a storage class the app's own rows have in that column, text that
    fullmatches the column's documented spelling (as the app's rows do) and is what the ORM writes where
    that is given, and JSON spaced and escaped alike."""
    width, problems = len(cols), []
    numbers: dict[str, str] = {"integer": "real"}  # NUMERIC affinity stores a whole REAL as an integer, the app's too
    for i, c in enumerate(cols):
        for row, pg_row in zip(new, pg_rows, strict=True):
            if c.orm is not None and isinstance(row[i], str) and pg_row[i] is not None and row[i] != c.orm(pg_row[i]):
                problems.append(f"{c.name}: {row[i]!r} is not what the app writes ({c.orm(pg_row[i])!r})")
        same: dict[str, str] = numbers if c.type.name in ("numeric", "double precision") else {}
        app_classes = {same.get(row[width + i], row[width + i]) for row in app} - {"null"}
        app_json = {json_spelling(row[i]) for row in app if c.type.name in ("json", "jsonb") and type(row[i]) is str}
        for row in new:
            value, storage = row[i], same.get(row[width + i], row[width + i])
            if value is None:
                continue
            if app_classes and storage not in app_classes:
                problems.append(f"{c.name}: {value!r} is {storage}, the app's rows are {sorted(app_classes)}")
            if c.pattern and isinstance(value, str) and not re.fullmatch(c.pattern, value):
                problems.append(f"{c.name}: {value!r} is not spelled {c.pattern}")
            if isinstance(value, str) and app_json:
                spacing, escaped = json_spelling(value)
                seen_spacing: set[str | None] = {s for s, _ in app_json if s} or {spacing}
                seen_escaped: set[bool | None] = {e for _, e in app_json if e is not None} or {escaped}
                if (spacing and spacing not in seen_spacing) or (escaped is not None and escaped not in seen_escaped):
                    problems.append(f"{c.name}: {value!r} is spelled {spacing}/{escaped}, the app's {app_json}")
    for i, c in enumerate(cols):  # the app's own rows follow the documented spelling too
        for row in app:
            if c.pattern and isinstance(row[i], str) and not re.fullmatch(c.pattern, row[i]):
                problems.append(f"{c.name}: the app's own {row[i]!r} is not spelled {c.pattern}")
    return problems


class Outcome(NamedTuple):
    app: list[tuple[Any, ...]]
    new: list[tuple[Any, ...]]
    written: list[tuple[object, ...]]
    pg_rows: list[tuple[Any, ...]]
    path: Path


def write_back(
    pg: Pg, tmp_path: Path, source: Path, table: str, cols: Sequence[Col], rows: Sequence[Sequence[object]]
) -> Outcome:
    """The app's SQLite file (copied) learns its forms; PostgreSQL's rows are written back into it."""
    path = tmp_path / source.name
    shutil.copyfile(source, path)
    path.chmod(0o644)
    pg_rows = pg_roundtrip(pg, table, cols, rows)
    with sqlite3.connect(path) as conn:
        app = sqlite_rows(conn, table, cols)
        affinity = {c.name: c.affinity for c in read_schema(conn).table(table).columns}
        shape = shape_of(table, cols)
        forms = learn_forms(shape, [r[: len(cols)] for r in app], affinities=[affinity[c.name] for c in cols])
        writer = row_writer(table, shape, forms)
        written = [writer(row) for row in pg_rows]
        top = conn.execute(f'SELECT coalesce(max(rowid), 0) FROM "{table}"').fetchone()[0]
        names = ", ".join(f'"{c.name}"' for c in cols)
        conn.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * len(cols))})', written)
        new = sqlite_rows(conn, table, cols, f"WHERE rowid > {int(top)}")[::-1]
    return Outcome(app, new, written, pg_rows, path)


def check(pg: Pg, table: str, cols: Sequence[Col], out: Outcome) -> None:
    assert forward_problems(pg, table, cols, [row[: len(cols)] for row in out.new]) == []
    assert spelling_problems(cols, out.app, out.new, out.pg_rows) == []


# -- the ORM cases -------------------------------------------------------------------------------------

DT_PY = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?"
DT_6 = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}"
DAY = r"\d{4}-\d\d-\d\d"
U1, U2 = uuid.UUID("1b9c5b3d-74ca-4c65-8bd5-4519b64e0c7c"), uuid.UUID("904244ad-c8c7-4524-add4-0b4bf025500e")

EPOCH = datetime(1970, 1, 1)
DJANGO = (
    col("id", "bigint"),
    col("uid", "uuid", pattern="[0-9a-f]{32}", orm=lambda v: v.hex),
    col("flag", "boolean"),
    col("amount", "numeric(10,2)", "real15"),
    col("data", "jsonb", orm=lambda v: json.dumps(json.loads(v.text))),
    col("created", "timestamptz", pattern=DT_PY, orm=lambda v: str(v.astimezone(UTC).replace(tzinfo=None))),
    col("day", "date", pattern=DAY, orm=date.isoformat),
    col("t", "time", pattern=r"\d\d:\d\d:\d\d(\.\d{6})?", orm=str),
    col("dur", "interval"),
    col("blob", "bytea"),
)
DJANGO_ROWS = [
    (
        100,
        U1,
        True,
        Decimal("12.50"),
        Jsonb({"a": [1, 2.5], "ü": "日本"}),
        datetime(2024, 3, 5, 8, 7, 8, 9000, PLUS2),
        date(2024, 3, 5),
        time(1, 2, 3, 4),
        timedelta(days=1, seconds=2),
        b"\x00\x01\xff",
    ),
    (101, U2, False, Decimal("3.00"), Jsonb("str"), datetime(2024, 3, 5, 6, 7, 8, tzinfo=UTC), None, None, None, None),
]


def test_django_rows_are_written_back_as_django_writes_them(pg: Pg, tmp_path: Path, realworld: Path) -> None:
    pg.execute("SET TIME ZONE 'Europe/Paris'")  # timestamptz arrives in the session's zone: written in UTC
    out = write_back(pg, tmp_path, realworld / "orm-samples/django52_sample.db", "app_thing", DJANGO, DJANGO_ROWS)
    check(pg, "app_thing", DJANGO, out)
    first, second = out.new
    assert (first[1], first[2], second[2]) == ("1b9c5b3d74ca4c658bd54519b64e0c7c", 1, 0)
    assert (first[3], second[3]) == (12.5, 3)  # REAL, and INTEGER when whole, as Django's '3.00' is stored
    assert (first[5], second[5]) == ("2024-03-05 06:07:08.009000", "2024-03-05 06:07:08")  # str(datetime), UTC
    assert first[4] == json.dumps(json.loads(first[4]))  # json.dumps's own spelling: ", ", ": ", \u escapes
    assert "\\u00fc" in first[4]
    assert second[4] == '"str"'
    assert (first[6], first[7], first[8]) == ("2024-03-05", "01:02:03.000004", 86402000000)


PRISMA = (
    col("id", "text"),
    col("uid", "uuid", pattern="[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", orm=str),
    col("email", "text"),
    col("active", "boolean"),
    col("balance", "numeric(65,30)"),
    col("bigCount", "bigint"),
    col("ratio", "double precision"),
    col("hits", "integer"),
    col("settings", "jsonb", orm=lambda v: json.dumps(json.loads(v.text), separators=(",", ":"), ensure_ascii=False)),
    col("avatar", "bytea"),
    col("role", ROLE),
)
PRISMA_ROWS = [
    (
        "cx1",
        U1,
        "x@y",
        True,
        Decimal("19.99"),
        2**53 + 1,
        0.1,
        7,
        Jsonb({"nested": {"k": [1, 2, 3]}, "s": "ü"}),
        b"\x00\x01",
        "ADMIN",
    ),
    ("cx2", U2, "z@y", False, Decimal("25000"), 0, None, 0, Jsonb(42), None, "USER"),
]
PRISMA_TIMES = [
    (datetime(2024, 3, 5, 6, 7, 8, 9000), datetime(1900, 1, 1)),
    (datetime(9999, 12, 31, 23, 59, 59, 999000), datetime(2024, 3, 5, 6, 7, 8)),
]


@pytest.mark.parametrize(
    ("sample", "fmt", "pattern", "expected"),
    [
        (
            "prisma7_small_unixms.db",
            "unix_ms",
            None,
            [(1709618828009, -2208988800000), (253402300799999, 1709618828000)],
        ),
        (
            "prisma7_small_iso8601.db",
            "iso8601",
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00",
            [
                ("2024-03-05T06:07:08.009+00:00", "1900-01-01T00:00:00.000+00:00"),
                ("9999-12-31T23:59:59.999+00:00", "2024-03-05T06:07:08.000+00:00"),
            ],
        ),
    ],
)
def test_prisma_rows_are_written_back_as_prisma_writes_them(
    pg: Pg, tmp_path: Path, realworld: Path, sample: str, fmt: str | None, pattern: str | None, expected: object
) -> None:
    orm = None if pattern is None else (lambda v: v.isoformat(timespec="milliseconds") + "+00:00")
    times = tuple(col(name, "timestamp(3)", fmt, pattern, orm) for name in ("createdAt", "updatedAt"))
    cols = PRISMA + times
    rows = [row + stamps for row, stamps in zip(PRISMA_ROWS, PRISMA_TIMES, strict=True)]
    out = write_back(pg, tmp_path, realworld / "orm-samples" / sample, "Account", cols, rows)
    check(pg, "Account", cols, out)
    first, second = out.new
    assert [row[11:13] for row in out.new] == expected
    assert (first[4], second[4]) == (19.99, 25000)  # Number.parseFloat: REAL, stored INTEGER when whole
    assert (first[3], second[3], first[5]) == (1, 0, 2**53 + 1)
    assert first[8] == '{"s":"ü","nested":{"k":[1,2,3]}}'  # compact, UTF-8 as itself, jsonb's key order
    assert second[8] == 42  # '42' in a JSONB (NUMERIC) column is stored as an integer, as Prisma's is
    assert second[len(cols) + 8] == "integer"


SQLALCHEMY = (
    col("id", "bigint"),
    col("u", "uuid", pattern="[0-9a-f]{32}", orm=lambda v: v.hex),
    col("flag", "boolean"),
    col("amount", "numeric(12,2)", "sqlalchemy"),
    col("data", "json"),
    col("ts", "timestamp", pattern=DT_6, orm=lambda v: v.isoformat(" ", "microseconds")),
    col("tstz", "timestamptz", pattern=DT_6),  # SQLAlchemy writes the local wall time; we write UTC (the forward rule)
    col("d", "date", pattern=DAY),
    col("tm", "time", pattern=r"\d\d:\d\d:\d\d\.\d{6}", orm=lambda v: v.isoformat("microseconds")),
    col("iv", "interval", pattern=DT_6, orm=lambda v: (EPOCH + v).isoformat(" ", "microseconds")),
    col("color", "varchar(5)"),
    col("blob", "bytea"),
    col("big", "bigint"),
)
SQLALCHEMY_ROWS = [
    (
        10,
        U1,
        True,
        Decimal("12.34"),
        Json({"a": 1, "ü": 2}),
        datetime(2024, 3, 5, 6, 7, 8, 9000),
        datetime(2024, 3, 5, 8, 7, 8, tzinfo=PLUS2),
        date(2024, 3, 5),
        time(1, 2, 3),
        timedelta(days=1, seconds=2),
        "GREEN",
        b"\x00\xff",
        4611686018427387904,
    ),
    (11, U2, False, Decimal("3.00"), Json(None), datetime(2024, 3, 5, 6, 7, 8), *(None,) * 7),
]


def test_sqlalchemy_rows_are_written_back_as_sqlalchemy_writes_and_reads_them(
    pg: Pg, tmp_path: Path, realworld: Path
) -> None:
    out = write_back(pg, tmp_path, realworld / "orm-samples/sqlalchemy21_sample.db", "t", SQLALCHEMY, SQLALCHEMY_ROWS)
    check(pg, "t", SQLALCHEMY, out)
    first, second = out.new
    assert (first[5], second[5], first[6]) == (
        "2024-03-05 06:07:08.009000",
        "2024-03-05 06:07:08.000000",
        "2024-03-05 06:07:08.000000",
    )
    assert (first[4], second[4], first[9]) == ('{"a": 1, "\\u00fc": 2}', "null", "1970-01-02 00:00:02.000000")
    # SQLAlchemy itself reads PostgreSQL's values back from the file, through its own types.
    sa = pytest.importorskip("sqlalchemy")
    meta = sa.MetaData()
    table = sa.Table(
        "t",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        *(sa.Column(n, kind) for n, kind in [("u", sa.Uuid()), ("flag", sa.Boolean()), ("amount", sa.Numeric(12, 2))]),
        *(sa.Column(n, kind) for n, kind in [("data", sa.JSON()), ("ts", sa.DateTime()), ("iv", sa.Interval())]),
        sa.Column("tstz", sa.DateTime(timezone=True)),
    )
    engine = sa.create_engine(f"sqlite:///{out.path}")
    with engine.connect() as conn:
        read = conn.execute(sa.select(table).where(table.c.id >= 10).order_by(table.c.id)).all()
    engine.dispose()
    for got, want in zip(read, out.pg_rows, strict=True):
        assert (got.u, got.flag, got.amount, got.ts, got.iv) == (want[1], want[2], want[3], want[5], want[9])
        assert got.data == json.loads(want[4].text)
    assert read[0].tstz == datetime(2024, 3, 5, 6, 7, 8)  # the instant, as UTC wall time (offset dropped)


RAILS = (
    col("id", "bigint"),
    col("flag", "boolean"),
    col("amount", "numeric(12,2)", "rails"),
    col("data", "json"),
    col("ts", "timestamp(6)", pattern=DT_PY),
    col("d", "date", pattern=DAY),
    col("b", "bytea"),
    col("name", "varchar"),
    col("created_at", "timestamp(6)", pattern=DT_PY),
    col("updated_at", "timestamp(6)", pattern=DT_PY),
)
COMPACT = {"dumps": lambda obj: json.dumps(obj, separators=(",", ":"), ensure_ascii=False)}
RAILS_ROWS = [
    (
        10,
        True,
        Decimal("12.50"),
        Json({"a": [1, 2], "ü": "日本"}, **COMPACT),
        datetime(2024, 3, 5, 6, 7, 8, 9000),
        date(2024, 3, 5),
        b"\x00\xff",
        "x",
        datetime(2026, 11, 24, 11, 14, 49, 583771),
        datetime(2026, 11, 24),
    ),
    (
        11,
        False,
        Decimal("3.00"),
        Json(42, **COMPACT),
        None,
        None,
        None,
        None,
        datetime(2026, 1, 1, 0, 0, 0, 1),
        datetime(2026, 1, 1, 0, 0, 0, 1),
    ),
]


def test_rails_rows_are_written_back_as_activerecord_writes_them(pg: Pg, tmp_path: Path, realworld: Path) -> None:
    out = write_back(pg, tmp_path, realworld / "orm-samples/activerecord61_sample.db", "things", RAILS, RAILS_ROWS)
    check(pg, "things", RAILS, out)
    first, second = out.new
    assert (first[1], first[2], second[2]) == (1, 12.5, 3)
    assert first[3] == '{"a":[1,2],"ü":"日本"}'  # json: verbatim, which is Rails's own spelling
    assert second[3] == 42  # '42' in a json (NUMERIC) column is stored as an integer, as Rails's is
    assert (first[4], first[8]) == ("2024-03-05 06:07:08.009000", "2026-11-24 11:14:49.583771")
    # The file shows no whole-second value, so its six digits are taken as fixed: Rails would write
    # '2026-11-24 00:00:00' here; both read back as the same instant (ActiveRecord reads either).
    assert first[9] == "2026-11-24 00:00:00.000000"


# -- forms learned from the ORMs' own files ------------------------------------------------------------


def _forms(path: Path, table: str, types: dict[str, str | TargetType]) -> dict[str, writeback.ColumnForm]:
    cols = [col(name, t) for name, t in types.items()]
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = [r[: len(cols)] for r in sqlite_rows(conn, table, cols)]
    forms = learn_forms(shape_of(table, cols), rows)
    return {f.column: f for f in forms.columns}


def test_learn_forms_reads_each_orms_documented_form(realworld: Path) -> None:
    samples = realworld / "orm-samples"
    django = _forms(samples / "django52_sample.db", "app_thing", {"created": "timestamptz", "uid": "uuid"})
    django |= _forms(samples / "django52_sample.db", "app_thing", {"data": "jsonb", "t": "time", "flag": "boolean"})
    assert (django["created"].spelling, django["created"].separator) == ("iso", " ")
    assert (django["created"].fraction, django["created"].fraction_style, django["created"].suffix) == (
        6,
        "optional",
        "",
    )
    assert (django["uid"].spelling, django["uid"].upper) == ("hex32", False)
    assert (django["data"].spelling, django["data"].ascii) == ("spaced", True)
    assert (django["t"].spelling, django["t"].fraction, django["flag"].spelling) == ("clock", 6, "int01")
    sqla = _forms(samples / "sqlalchemy21_sample.db", "t", {"ts": "timestamp", "iv": "interval", "data": "json"})
    assert (sqla["ts"].fraction, sqla["ts"].fraction_style) == (6, "fixed")
    assert (sqla["iv"].spelling, sqla["data"].spelling) == ("iso", "verbatim")  # json: PostgreSQL holds the app's text
    assert _forms(samples / "sqlalchemy21_sample.db", "t", {"data": "jsonb"})["data"].ascii is True
    for name, storage, spelling in [
        ("prisma7_small_iso8601.db", "text", "iso"),
        ("prisma7_small_unixms.db", "integer", "unix_ms"),
    ]:
        prisma = _forms(samples / name, "Account", {"createdAt": "timestamp(3)", "uid": "uuid", "settings": "jsonb"})
        assert (prisma["createdAt"].storage, prisma["createdAt"].spelling) == (storage, spelling)
        assert (prisma["uid"].spelling, prisma["settings"].spelling, prisma["settings"].ascii) == (
            "dashed",
            "compact",
            False,
        )
        assert prisma["settings"].affinities == ("NUMERIC", "INTEGER", "BLOB")  # 42 stored as an integer
    iso = _forms(samples / "prisma7_small_iso8601.db", "Account", {"createdAt": "timestamp(3)"})["createdAt"]
    assert (iso.separator, iso.fraction, iso.fraction_style, iso.suffix) == ("T", 3, "fixed", "+00:00")
    rails = _forms(
        samples / "activerecord61_sample.db", "things", {"ts": "timestamp(6)", "data": "jsonb", "flag": "boolean"}
    )
    assert (rails["ts"].spelling, rails["data"].spelling, rails["flag"].spelling) == ("iso", "compact", "int01")


def test_learn_forms_from_real_databases(realworld: Path) -> None:
    """Northwind's booleans as text '0'/'1' and date-only DATETIMEs; Chinook's REAL money; sakila's '1'."""
    northwind = _forms(
        realworld / "northwind/northwind.db", "Products", {"ProductID": "bigint", "Discontinued": "boolean"}
    )
    assert (northwind["Discontinued"].spelling, northwind["Discontinued"].true_text) == ("words", "1")
    orders = _forms(realworld / "northwind/northwind.db", "Orders", {"OrderID": "bigint", "OrderDate": "timestamp"})
    assert orders["OrderDate"].spelling == "date"
    chinook = _forms(
        realworld / "chinook/Chinook_Sqlite.sqlite", "Invoice", {"InvoiceId": "bigint", "Total": "numeric(10,2)"}
    )
    assert (chinook["Total"].storage, chinook["Total"].spelling) == ("real", "number")
    sakila = _forms(realworld / "sakila/sakila.db", "customer", {"customer_id": "bigint", "active": "boolean"})
    assert (sakila["active"].storage, sakila["active"].true_text, sakila["active"].false_text) == ("text", "1", "0")


# -- refusals ------------------------------------------------------------------------------------------


def refused(
    pg: Pg, cols: Sequence[Col], app: Sequence[Sequence[object]], row: Sequence[object], **kw: Any
) -> RowRefused:
    """Learn the forms from ``app``'s rows, read ``row`` back from PostgreSQL and write it: the refusal."""
    (read,) = pg_roundtrip(pg, "r", cols, [row])
    shape = shape_of("r", cols)
    writer = row_writer("r", shape, learn_forms(shape, app, **kw))
    with pytest.raises(RowRefused) as caught:
        writer(read)
    return caught.value


def test_refused_a_fraction_the_apps_second_precision_form_has_no_digits_for(pg: Pg) -> None:
    cols = (col("id", "bigint"), col("at", "timestamp(6)"))
    app = [(1, "2024-03-05 06:07:08"), (2, "2024-03-05 06:07:09")]  # CURRENT_TIMESTAMP: whole seconds
    exc = refused(pg, cols, app, (3, datetime(2024, 3, 5, 6, 7, 8, 123456)))
    assert (exc.table, exc.column) == ("r", "at")
    assert "written as '2024-03-05 06:07:08' reads back as 2024-03-05 06:07:08" in exc.reason
    assert "\n" not in str(exc)
    assert "PostgreSQL" in exc.hint
    unix_ms = (col("id", "bigint"), col("at", "timestamp(6)", "unix_ms"))
    assert refused(pg, unix_ms, [(1, 1709618828009)], (3, datetime(2024, 3, 5, 6, 7, 8, 9001))).column == "at"


def test_refused_a_decimal_a_real_form_cannot_hold(pg: Pg) -> None:
    prisma = (col("id", "bigint"), col("price", "numeric(65,30)"))
    exc = refused(pg, prisma, [(1, 19.99)], (2, Decimal("0.1234567890123456789")))
    assert exc.column == "price"
    assert "0.12345678901234568" in exc.reason
    django = (col("id", "bigint"), col("price", "numeric(30,20)", "real15"))
    assert refused(pg, django, [(1, 12.5)], (2, Decimal("0.1234567890123456789"))).column == "price"
    huge = (col("id", "bigint"), col("n", "numeric"))
    assert refused(pg, huge, [(1, 1.5)], (2, Decimal("1e400"))).column == "n"  # out of a double's range


def test_refused_bytes_a_text_form_cannot_hold(pg: Pg) -> None:
    cols = (col("id", "bigint"), col("file", "bytea"))
    app = [(1, "aGVsbG8="), (2, "d29ybGQ=")]  # web2py: base64 TEXT in a BLOB column
    exc = refused(pg, cols, app, (3, b"a\x00b"))
    assert exc.column == "file"
    assert "NUL" in exc.reason
    assert "UTF-8" in refused(pg, cols, app, (3, b"\xff\xfe")).reason


def test_refused_values_outside_the_form(pg: Pg) -> None:
    interval = (col("id", "bigint"), col("iv", "interval"))
    exc = refused(pg, interval, [(1, "1970-01-02 00:00:02.000000")], (2, timedelta(days=3_000_000)))
    assert exc.column == "iv"
    assert "outside years" in exc.reason
    jsonb = (col("id", "bigint"), col("doc", "jsonb"))  # Prisma's JSONB: NUMERIC affinity stores numbers
    exc = refused(pg, jsonb, [(1, '{"a":1}'), (2, 42)], (3, Jsonb(12345678901234567890)))
    assert exc.column == "doc"
    assert "stored by SQLite as 1.2345678901234567e+19" in exc.reason
    double = (col("id", "bigint"), col("x", "double precision"))
    assert "NaN" in refused(pg, double, [(1, 0.5)], (2, float("nan"))).reason
    timetz = (col("id", "bigint"), col("at", "timetz"))
    assert refused(pg, timetz, [(1, "06:07:08.000000")], (2, time(6, 7, 8, tzinfo=PLUS2))).column == "at"
    dates = (col("id", "bigint"), col("on", "timestamp"))  # Northwind: DATETIME holding dates only
    assert refused(pg, dates, [(1, "2016-07-04")], (2, datetime(2016, 7, 4, 12))).column == "on"


def test_a_parsed_json_document_is_refused() -> None:
    cols = (col("id", "bigint"), col("doc", "jsonb"))
    shape = shape_of("r", cols)
    writer = row_writer("r", shape, learn_forms(shape, []))
    with pytest.raises(RowRefused, match="json_as_text"):
        writer((1, {"a": 1}))
    assert writer((1, JsonText("null"))) == (1, "null")  # the document null is not the SQL NULL
    assert writer((1, None)) == (1, None)


def test_refused_without_the_affinity_when_the_samples_allow_a_converting_one() -> None:
    """No affinity given, no sample: the writer keeps every affinity possible, so text SQLite's NUMERIC
    affinity would turn into a REAL is refused; with TEXT affinity known, it is written."""
    cols = (col("id", "bigint"), col("doc", "jsonb"))
    shape = shape_of("r", cols)
    value = (1, JsonText(b"12345678901234567890"))
    with pytest.raises(RowRefused, match="doc"):
        row_writer("r", shape, learn_forms(shape, []))(value)
    assert (
        row_writer("r", shape, learn_forms(shape, [], affinities=["INTEGER", "TEXT"]))(value)[1]
        == "12345678901234567890"
    )


# -- defaults and forms without PostgreSQL -------------------------------------------------------------

DEFAULTS: list[tuple[TargetType, str, object, object]] = [
    (parse_type("bigint"), "INTEGER", 2**63 - 1, 2**63 - 1),
    (parse_type("real"), "REAL", 0.10000000149011612, 0.1),
    (parse_type("numeric(12,2)"), "NUMERIC", Decimal("12.50"), 12.5),
    (parse_type("char(4)"), "TEXT", "ab  ", "ab"),
    (parse_type("boolean"), "NUMERIC", True, 1),
    (TargetType("boolean", format="bool_text"), "NUMERIC", False, "f"),
    (parse_type("timestamp"), "NUMERIC", datetime(2024, 3, 5, 6, 7, 8, 9), "2024-03-05 06:07:08.000009"),
    (TargetType("timestamptz", format="unix_ms"), "NUMERIC", datetime(2024, 3, 5, 6, 7, 8, 9000, UTC), 1709618828009),
    (TargetType("timestamptz", format="julian_day"), "REAL", datetime(2024, 3, 5, 12, tzinfo=UTC), 2460375.0),
    (TargetType("date", format="unix_ms"), "NUMERIC", date(1900, 1, 1), -2208988800000),
    (parse_type("timetz"), "NUMERIC", time(6, 7, 8, tzinfo=PLUS2), "06:07:08.000000+02:00"),
    (parse_type("interval"), "INTEGER", timedelta(days=-1, microseconds=1), -86399999999),
    (TargetType("uuid", format="uuid_hex32"), "TEXT", U1, U1.hex),
    (parse_type("macaddr"), "TEXT", "08:00:2B:01:02:03", "08:00:2b:01:02:03"),
    (parse_type("inet"), "TEXT", ipaddress.ip_interface("10.1.2.3/8"), "10.1.2.3/8"),
]


@pytest.mark.parametrize(("t", "affinity", "pg_value", "expected"), DEFAULTS, ids=[d[0].name for d in DEFAULTS])
def test_default_forms_write_what_the_forward_converter_reads_back(
    t: TargetType, affinity: str, pg_value: object, expected: object
) -> None:
    cols = (col("id", "bigint"), Col("v", t))
    shape = shape_of("r", cols)
    forms = learn_forms(shape, [], affinities=["INTEGER", affinity])
    assert forms.columns[1].seen == 0
    (_, written) = row_writer("r", shape, forms)((1, pg_value))
    assert written == expected
    assert type(written) is type(expected)
    assert msgspec.json.decode(msgspec.json.encode(forms), type=writeback.TableForms) == forms  # storable


def test_forms_follow_the_dominant_spelling_and_its_fractions() -> None:
    t = parse_type("timestamp")

    def learn(values: list[object]) -> writeback.ColumnForm:
        return writeback_forms.learn_column("c", t, values, ("TEXT",))

    assert (
        learn(["2024-03-05T06:07:08.5Z", "2024-03-05T06:07:08.25Z", "2024-03-05 06:07:08"]).fraction_style == "shortest"
    )
    mixed = learn([1709618828009, "2024-03-05 06:07:08", 1709618828010])
    assert (mixed.spelling, mixed.seen, mixed.of) == ("unix_ms", 2, 3)
    words = writeback_forms.learn_column("b", parse_type("boolean"), ["T", "F", "T"], ("TEXT",))
    assert (words.true_text, words.false_text) == ("T", "F")
    upper = writeback_forms.learn_column("u", parse_type("uuid"), [U1.hex.upper()], ("TEXT",))
    assert row_writer("r", shape_of("r", [col("u", "uuid")]), writeback.TableForms("r", (upper,), 1))((U2,)) == (
        U2.hex.upper(),
    )


# -- property: the forward converter's values come back as the app's own spelling ----------------------

APP_FORMS: list[tuple[TargetType, Callable[[datetime], object]]] = [
    (parse_type("timestamptz"), lambda d: str(d)),  # Django: str(datetime), UTC
    (parse_type("timestamp"), lambda d: d.isoformat(" ", "microseconds")),  # SQLAlchemy
    (
        TargetType("timestamp", precision=3, format="unix_ms"),
        lambda d: (d - datetime(1970, 1, 1)) // timedelta(milliseconds=1),
    ),
    (parse_type("timestamp(3)"), lambda d: d.isoformat(timespec="milliseconds") + "+00:00"),  # Prisma 7
    (parse_type("date"), lambda d: d.date().isoformat()),
    (parse_type("time"), lambda d: str(d.time())),  # Django's TimeField
]
SEEDS = [datetime(2024, 3, 5, 6, 7, 8, 9000), datetime(2024, 3, 5, 6, 7, 8), datetime(2001, 2, 3, 4, 5, 6, 700000)]


@settings(max_examples=150, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)))
def test_writeback_of_forward_converted_app_values_is_the_identity(moment: datetime) -> None:
    for t, spell in APP_FORMS:
        value = moment.replace(microsecond=moment.microsecond // 1000 * 1000) if t.precision == 3 else moment
        form = writeback_forms.learn_column("c", t, [spell(s) for s in SEEDS], ("NUMERIC",))
        original = spell(value)
        pg_value = value_converter(t)(original)
        write = writeback.column_writer(t, form)
        assert write(pg_value) == original, (t, form)


@settings(max_examples=150, deadline=None)
@given(number=st.decimals(min_value=-(10**9), max_value=10**9, places=2))
def test_writeback_of_django_decimals_converts_forward_to_the_same_value(number: Decimal) -> None:
    t = TargetType("numeric", precision=12, scale=2, format="real15")
    write = writeback.column_writer(t, writeback_forms.learn_column("c", t, [12.5, 3], ("NUMERIC",)))
    assert value_converter(t)(write(number)) == number


# -- negative controls -----------------------------------------------------------------------------------


def test_negative_control_a_planted_wrong_spelling_is_caught(pg: Pg, tmp_path: Path, realworld: Path) -> None:
    """SQLAlchemy's fixed six digits planted in Django's form: the spelling check names the column."""
    planted = writeback_forms.learn_column

    def sqlalchemy_style(
        column: str, t: TargetType, values: Sequence[object], aff: tuple[str, ...]
    ) -> writeback.ColumnForm:
        form = planted(column, t, values, aff)
        return msgspec.structs.replace(form, fraction_style="fixed") if column == "created" else form

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writeback, "learn_column", sqlalchemy_style)
        out = write_back(pg, tmp_path, realworld / "orm-samples/django52_sample.db", "app_thing", DJANGO, DJANGO_ROWS)
    assert forward_problems(pg, "app_thing", DJANGO, [r[: len(DJANGO)] for r in out.new]) == []  # exact, yet
    assert spelling_problems(DJANGO, out.app, out.new, out.pg_rows) == [
        "created: '2024-03-05 06:07:08.000000' is not what the app writes ('2024-03-05 06:07:08')"
    ]


def test_negative_control_a_writer_without_the_exactness_check_is_caught(pg: Pg, tmp_path: Path) -> None:
    """The check skipped (every comparison true): the microseconds are dropped silently, and check (1),
    PostgreSQL's own comparison of what SQLite then holds, names the column."""
    cols = (col("id", "bigint"), col("at", "timestamp(6)"))
    (tmp_path / "src").mkdir()
    source = tmp_path / "src" / "app.db"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, at DATETIME)")
        conn.execute("INSERT INTO r VALUES (1, '2024-03-05 06:07:08')")
    row = (2, datetime(2024, 3, 5, 6, 7, 8, 123456))
    (tmp_path / "w").mkdir()
    with pytest.raises(RowRefused):
        write_back(pg, tmp_path / "w", source, "r", cols, [row])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writeback, "sameness", lambda t: lambda a, b: True)
        out = write_back(pg, tmp_path, source, "r", cols, [row])
    assert out.new[0][1] == "2024-03-05 06:07:08"
    assert forward_problems(pg, "r", cols, [r[:2] for r in out.new]) == ["at differs for key 2"]


# -- what SQLite stores, against SQLite itself ------------------------------------------------------------

TRICKY: list[object] = [-0.0, 3.0, 1.5, 1e18, 9.3e18, 0.12345678901234568, float("inf"), float("nan"), -5, 2**63 - 1]
TRICKY += [" 12 ", "12", "12.0", "+7", ".5", "5.", "1.5e3", "1e400", "0x10", "Inf", "abc", "2024-03-05", b"x"]
TRICKY += ["12345678901234567890", "0.1234567890123456789"]
DECLARED = {"TEXT": "TEXT", "NUMERIC": "DATETIME", "INTEGER": "BIGINT", "REAL": "DOUBLE", "BLOB": "BLOB"}


def storage_problems(stored_as: Callable[[object, str], object], path: Path) -> list[str]:
    """Each tricky value bound into a real column of each affinity: what SQLite keeps, against ``stored_as``."""
    problems = []
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE s (" + ", ".join(f"{a} {d}" for a, d in DECLARED.items()) + ")")
        for value in TRICKY:
            conn.execute("DELETE FROM s")
            conn.execute(f"INSERT INTO s VALUES ({', '.join('?' * len(DECLARED))})", (value,) * len(DECLARED))
            row = conn.execute("SELECT * FROM s").fetchone()
            for affinity, kept in zip(DECLARED, row, strict=True):
                ours = stored_as(value, affinity)
                if type(ours) is not type(kept) or (ours != kept and ours == ours):
                    problems.append(f"{value!r} in {affinity}: SQLite keeps {kept!r}, we said {ours!r}")
    return problems


def test_what_sqlite_stores_is_asked_of_sqlite(tmp_path: Path) -> None:
    assert storage_problems(writeback_spell.stored_as, tmp_path / "s.db") == []


def test_negative_control_a_python_guess_of_the_affinity_is_caught(tmp_path: Path) -> None:
    """Without SQLite's own answer (the value taken as kept), the comparison with a real table finds it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writeback_spell, "_probe", lambda value, affinity: value)
        problems = storage_problems(writeback_spell.stored_as, tmp_path / "s.db")
    assert "' 12 ' in NUMERIC: SQLite keeps 12, we said ' 12 '" in problems
    assert "0.12345678901234568 in TEXT: SQLite keeps '0.123456789012346', we said 0.12345678901234568" in problems


# -- property: JSON documents through PostgreSQL's jsonb, back in Django's and Prisma's spelling -------------

JSON_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=6)
DOCUMENTS = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | JSON_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(JSON_TEXT, inner, max_size=3),
    max_leaves=8,
)
JSONB = parse_type("jsonb")
DJANGO_JSON = writeback_forms.learn_column("d", JSONB, ['{"a": [1, 2], "\\u00fc": 1}'], ("TEXT",))
PRISMA_JSON = writeback_forms.learn_column("d", JSONB, ['{"a":[1,2]}', 42], ("NUMERIC",))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=DOCUMENTS)
def test_jsonb_documents_come_back_in_the_apps_spelling(pg: Pg, document: object) -> None:
    with pg.cursor() as cur:
        pgio.json_as_text(cur)
        (value,) = cur.execute("SELECT %s::jsonb", (Jsonb(document),)).fetchone() or (None,)
    for form, affinity in ((DJANGO_JSON, "TEXT"), (PRISMA_JSON, "NUMERIC")):
        try:
            written = writeback.column_writer(JSONB, form)(value)
        except ValueRefused:
            assert affinity == "NUMERIC"  # a bare number a NUMERIC column would keep as a lossy REAL
            assert not isinstance(document, dict | list | str | bool | None)
            continue
        stored = writeback_spell.stored_as(written, affinity)
        back = value_converter(JSONB)(stored)
        assert pg.execute("SELECT %s::jsonb = %s::jsonb", (back, Jsonb(document))).fetchone() == (True,)
        if isinstance(written, str):
            spacing, escaped = json_spelling(written)
            assert spacing in (None, form.spelling)
            assert escaped in (None, form.ascii)


@settings(max_examples=100, deadline=None)
@given(moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999000)))
def test_epoch_numbers_come_back_as_the_same_instant(moment: datetime) -> None:
    """Julian days (read to the millisecond, as SQLite reads them) and REAL unix seconds: the forward reading
    of what is written is PostgreSQL's instant, whether or not the double is the one the app had."""
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    for fmt, storage in (("julian_day", "real"), ("unix_s", "real"), ("unix_s", "integer")):
        t = TargetType("timestamp", precision=3, format=fmt)
        form = writeback.ColumnForm("c", storage, fmt, affinities=("REAL" if storage == "real" else "INTEGER",))
        write = writeback.column_writer(t, form)
        if storage == "integer" and moment.microsecond:
            with pytest.raises(ValueRefused):
                write(moment)
            continue
        assert value_converter(t)(write(moment)) == moment
