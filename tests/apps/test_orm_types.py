"""Every column type the common ORMs create on PostgreSQL, loaded in existing mode from what their SQLite
backends store (realworld.md §2; docs/types.md is the matrix).

One PostgreSQL table holds one column per type, created by hand exactly as the ORMs' migrations create
it; the SQLite table holds each ORM's storage forms. A snapshot loads it, the app then writes (insert,
update, delete) while capture runs, the journal is drained and cutover certifies it: every value is
checked as PostgreSQL prints it, and both sides' digests agree. Refused values are named by table, key
and column (one quarantine pass names them all), and every schema refusal's hint is followed literally.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from checkpoints import ledger, store
from replicator import config
from replicator.config import ColumnOverride
from replicator.cutover import window
from replicator.cutover.session import Options
from replicator.errors import BadValue, UsageError
from replicator.load import snapshot
from replicator.plan import pgreflect
from replicator.values.convert import convert_value, value_converter
from replicator.values.decimals import REAL15
from replicator.values.refusal import RowRefused
from replicator.values.targettype import parse_type
from tests.support.compare import check_same, drain
from tests.support.daemon import cfg
from tests.support.source import app, make_db
from triggers import install

pytestmark = pytest.mark.e2e

CFG = config.load(None, environ={})

#: column → (SQLite declared type, PostgreSQL type as the ORM's migration writes it,
#: [(value as the ORM stores it in SQLite, what PostgreSQL then prints)]).
TYPES: dict[str, tuple[str, str, list[tuple[object, str]]]] = {
    "dur": (  # Django DurationField: bigint microseconds; SQLAlchemy Interval: epoch + delta as DATETIME text
        "bigint",
        "interval",
        [
            (86402000000, "1 day 00:00:02"),
            (-1, "-1 days +23:59:59.999999"),
            ("1970-01-02 00:00:02.000000", "1 day 00:00:02"),
        ],
    ),
    "ip": (  # Django GenericIPAddressField: text
        "char(39)",
        "inet",
        [("192.168.0.1", "192.168.0.1"), ("2001:db8::1", "2001:db8::1"), ("10.1.2.3/8", "10.1.2.3/8")],
    ),
    "net": ("text", "cidr", [("10.0.0.0/8", "10.0.0.0/8"), ("2001:db8::/32", "2001:db8::/32")]),
    "mac": ("text", "macaddr", [("08:00:2B:01:02:03", "08:00:2b:01:02:03"), ("0800.2b01.0204", "08:00:2b:01:02:04")]),
    "mac8": ("text", "macaddr8", [("08:00:2b:01:02:03", "08:00:2b:ff:fe:01:02:03")]),
    "u": (  # Django char(32) hex, Prisma dashed text, a 16-byte blob
        "char(32)",
        "uuid",
        [
            ("256f090027a041bbafeb104a4c0760b6", "256f0900-27a0-41bb-afeb-104a4c0760b6"),
            ("5d9025c9-39bc-4278-a565-8d168b7310ea", "5d9025c9-39bc-4278-a565-8d168b7310ea"),
            (bytes(range(16)), "00010203-0405-0607-0809-0a0b0c0d0e0f"),
        ],
    ),
    "price": (  # REAL (Django, Prisma), INTEGER (NUMERIC affinity of 3.00), TEXT
        "decimal",
        "numeric(20, 6)",
        [(12.5, "12.500000"), (3, "3.000000"), ("1.25", "1.250000"), (0.1, "0.100000")],
    ),
    "ts": (  # Django text (UTC), Prisma unix ms and ISO text with offset, CURRENT_TIMESTAMP text
        "datetime",
        "timestamp with time zone",
        [
            ("2024-03-05 06:07:08.009000", "2024-03-05 06:07:08.009+00"),
            ("2024-03-05 06:07:08", "2024-03-05 06:07:08+00"),
            ("2024-03-05T06:07:08.009+00:00", "2024-03-05 06:07:08.009+00"),
            ("2024-03-05T08:07:08.009+02:00", "2024-03-05 06:07:08.009+00"),
        ],
    ),
    "ts_ms": ("DATETIME", "timestamp(3) without time zone", [(1709618828009, "2024-03-05 06:07:08.009")]),
    "naive": (  # SQLAlchemy DateTime: always 6 digits
        "DATETIME",
        "timestamp without time zone",
        [
            ("2024-03-05 06:07:08.000000", "2024-03-05 06:07:08"),
            ("2024-03-05 06:07:08.009000", "2024-03-05 06:07:08.009"),
        ],
    ),
    "d": ("date", "date", [("2024-03-05", "2024-03-05")]),
    "tm": ("time", "time without time zone", [("01:02:03.000004", "01:02:03.000004"), ("01:02:03", "01:02:03")]),
    "tmz": (  # SQLAlchemy Time(timezone=True) drops the zone: UTC
        "TIME",
        "time with time zone",
        [("01:02:03.000000", "01:02:03+00"), ("01:02:03+02:00", "01:02:03+02")],
    ),
    "flag": ("bool", "boolean", [(1, "true"), (0, "false"), ("t", "true"), ("f", "false")]),
    "doc": ("JSON", "json", [('{"a": [1, 2], "\\u00fc": "x"}', '{"a": [1, 2], "\\u00fc": "x"}'), (42, "42")]),
    "docb": ("text", "jsonb", [('{"b": 1, "a": 2}', '{"a": 2, "b": 1}'), ("null", "null"), (1.5, "1.5")]),
    "raw": ("BLOB", "bytea", [(b"\x00\x01", "\\x0001")]),
    "mood": ("VARCHAR(5)", "mood", [("HAPPY", "HAPPY"), ("SAD", "SAD")]),  # SQLAlchemy Enum: member names
    "email": ("text", "citext", [("Hé@x.org", "Hé@x.org")]),
    "small": ("smallint", "smallint", [(32767, "32767"), (-32768, "-32768")]),
    "medium": ("integer unsigned", "integer", [(2147483647, "2147483647")]),
    "big": ("bigint", "bigint", [(2**63 - 1, str(2**63 - 1))]),
    "name": ("varchar(10)", "character varying(10)", [("abcdefghij", "abcdefghij")]),
    "code": ("char(3)", "character(3)", [("ab", "ab")]),
    "f": ("real", "double precision", [(0.1, "0.1")]),
    "tiny": ("text", "varchar(10)", [(12, "12")]),
    "pos": ("integer", "positive", [(7, "7")]),  # a domain over integer with a CHECK
}

#: column → (a value no ORM writes for it, what the refusal says).
REFUSED: dict[str, tuple[object, str]] = {
    "dur": ("soon", "not an ISO-8601"),
    "ip": ("300.1.1.1", "not an IP address"),
    "net": ("10.0.0.1/8", "host bits set"),
    "mac": ("08:00:2b", "not a 6-byte MAC address"),
    "mac8": ("zz", "not a 8-byte MAC address"),
    "u": ("nope", "not a UUID"),
    "price": (1.0000001, "decimal places"),
    "ts": ("yesterday", "not an ISO-8601"),
    "d": ("2024-03-05 10:00:00", "time of day"),
    "tm": ("25:00", "not a valid time"),
    "tmz": ("noon", "time of day"),
    "flag": (2, "not a boolean"),
    "doc": ("{", "not valid JSON"),
    "raw": (1.5, "cannot be stored as bytea"),
    "mood": ("MEH", "not a label of enum mood"),
    "small": (40000, "outside the smallint range"),
    "medium": (2**31, "outside the integer range"),
    "name": ("x" * 11, "do not fit varchar(10)"),
    "code": ("abcd", "do not fit char(3)"),
    "email": ("a\x00b", "NUL"),
}

PG_SETUP = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE mood AS ENUM ('SAD', 'HAPPY');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
"""


def _pg_table(pg: psycopg.Connection[Any], name: str = "every") -> None:
    columns = ", ".join(f'"{c}" {pg_type}' for c, (_d, pg_type, _v) in TYPES.items())
    pg.execute(f'CREATE TABLE "{name}" (id bigint PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY, {columns})')


def _sqlite_source(path: Path, rows: list[dict[str, object]], name: str = "every") -> None:
    columns = ", ".join(f'"{c}" {decl}' for c, (decl, _t, _v) in TYPES.items())
    inserts = []
    for i, row in enumerate(rows, start=1):
        names = ", ".join(f'"{c}"' for c in row)
        marks = ", ".join("?" * len(row))
        inserts.append((f'INSERT INTO "{name}" (id, {names}) VALUES (?, {marks})', (i, *row.values())))
    make_db(path, f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY AUTOINCREMENT, {columns})', *inserts, wal=True)


def _good_rows() -> list[dict[str, object]]:
    """Row i holds each column's i-th case (columns with fewer cases are NULL there)."""
    depth = max(len(cases) for _d, _t, cases in TYPES.values())
    return [
        {c: cases[i][0] for c, (_d, _t, cases) in TYPES.items() if i < len(cases)} or {"small": 1} for i in range(depth)
    ]


def _printed(pg: psycopg.Connection[Any], name: str = "every") -> dict[int, dict[str, str | None]]:
    pg.execute("SET TIME ZONE 'UTC'")
    # inet's output function, not its text cast (which adds /32)
    cols = ", ".join(f"format('%s', \"{c}\")" if c == "ip" else f'"{c}"::text' for c in TYPES)
    return {
        row[0]: dict(zip(TYPES, row[1:], strict=True))
        for row in pg.execute(f'SELECT id, {cols} FROM "{name}" ORDER BY id').fetchall()
    }


def test_every_orm_type_loads_streams_and_cuts_over(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    pg.execute(PG_SETUP)
    _pg_table(pg)
    path = tmp_path / "app.db"
    _sqlite_source(path, _good_rows())
    install.install(path)
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="existing")
    assert result.plan is not None
    printed = _printed(pg)
    for column, (_decl, _pg_type, cases) in TYPES.items():
        for i, (_stored, shown) in enumerate(cases, start=1):
            assert printed[i][column] == shown, (column, i)
    # The app writes while capture runs: an update of every column, an insert, a delete.
    db = app(path)
    db.execute(
        "UPDATE every SET dur = 5000000, ip = '::1', mac = '08-00-2b-01-02-05', tmz = '23:59:59-05:30' WHERE id = 1"
    )
    db.execute(
        "INSERT INTO every (id, ip, net, mood, email, price) VALUES (50, '10.0.0.9', '10.0.0.0/24', 'SAD', 'A', 7)"
    )
    db.execute("DELETE FROM every WHERE id = 2")
    drain(path, pg_dsn)
    check_same(path, pg_dsn)
    after = _printed(pg)
    assert (after[1]["dur"], after[1]["ip"], after[1]["mac"], after[1]["tmz"]) == (
        "00:00:05",
        "::1",
        "08:00:2b:01:02:05",
        "23:59:59-05:30",
    )
    assert 2 not in after
    assert (after[50]["net"], after[50]["mood"], after[50]["price"]) == ("10.0.0.0/24", "SAD", "7.000000")
    done = window.cutover(path, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "c.json"))
    assert done.certificate is not None
    assert all((t.sqlite_rows, t.sqlite_digest) == (t.pg_rows, t.pg_digest) for t in done.certificate.tables)
    # The chain adds up to the certificate, where the snapshot's checksum, the apply's and verify's read
    # these types differently: restated by reading (same count), never by a count that moved.
    book = ledger.add_up(store.records(pg))
    assert book.breaks == {}
    assert book.unknown == {}
    assert {t.table: (t.pg_rows, t.pg_digest) for t in done.certificate.tables} == {
        name: (f.rows, f.digest) for name, f in book.tables.items()
    }
    assert book.tables["every"].read_anew


def test_every_refused_value_is_named_in_one_pass(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """One quarantine pass names each bad value by table, key and column; a stop names the first."""
    pg.execute(PG_SETUP)
    _pg_table(pg)
    path = tmp_path / "app.db"
    _sqlite_source(path, [{column: value} for column, (value, _why) in REFUSED.items()])
    with pytest.raises(BadValue) as stopped:
        snapshot.snapshot(path, pg_dsn, CFG, mode="existing")
    assert "every (id=1) column dur" in stopped.value.message
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="existing", on_bad_value="quarantine", replace=True)
    assert result.quarantined == len(REFUSED)
    found = {
        (key, column): reason
        for key, column, reason in pg.execute("SELECT key::text, column_name, reason FROM replicator.quarantine")
    }
    for i, (column, (_value, why)) in enumerate(REFUSED.items(), start=1):
        assert why in found[(f'{{"id": {i}}}', column)], column


# -- decimals: PostgreSQL gets the value the app reads --------------------------------------------

#: (price text Django writes, what Django reads back from SQLite for DecimalField(20, 6))
DJANGO_PRICES_TEXT = [
    ("30475227.150471", "30475227.150471"),  # stored as the REAL 30475227.150471002
    ("12345678901234.567891", "12345678901234.600000"),  # SQLite keeps 15 significant digits
    ("1234567.000000", "1234567.000000"),  # stored as INTEGER 1234567
]

#: (REAL SQLite stores, what Django reads from SQLite for DecimalField(max_digits=20, decimal_places=6))
DJANGO_PRICES = [
    (30475227.150471002, "30475227.150471"),  # SQLite's text→REAL conversion, one ulp off
    (12345678901234.568, "12345678901234.600000"),  # a 20-digit price kept by SQLite as 15 digits
    (0.1, "0.100000"),
    (0.30000000000000004, "0.300000"),  # 0.1 + 0.2 computed by the app
]


DJANGO_READS = """
import json, sys
from django.db.backends.sqlite3.base import DatabaseWrapper
from django.db.backends.sqlite3.operations import DatabaseOperations
from django.db.models import DecimalField
from django.db.models.expressions import Col
column = Col("t", DecimalField(max_digits=20, decimal_places=6))
convert = DatabaseOperations.get_decimalfield_converter(None, column)
out = []
for value in json.load(sys.stdin):
    try:
        out.append(str(convert(value, column, None)))
    except Exception as exc:
        out.append("error: " + type(exc).__name__)
print(json.dumps(out))
"""


def _django_reads(values: list[int | float]) -> list[str]:
    """What the installed Django's SQLite backend reads for each stored number (in a subprocess: importing
    the backend registers a Decimal adapter on the sqlite3 module for the whole process)."""
    pytest.importorskip("django")
    done = subprocess.run(
        [sys.executable, "-c", DJANGO_READS], input=json.dumps(values), capture_output=True, text=True, check=True
    )
    reads: list[str] = json.loads(done.stdout)
    return reads


def test_app_decimal_is_what_django_reads() -> None:
    """Prices written as Django writes them (decimal text into a NUMERIC-affinity column, which SQLite
    turns into a REAL), read by Django's own converter: app_decimal agrees on every one, including the
    REALs one unit in the last place away that the shortest repr would refuse."""
    rng = random.Random(16)
    texts = [f"{rng.randrange(10**8)}.{rng.randrange(10**6):06d}" for _ in range(20_000)]
    texts += [f"{rng.randrange(10**14)}.{rng.randrange(10**6):06d}" for _ in range(2_000)]  # 16-20 digits
    texts += [p for p, _ in DJANGO_PRICES_TEXT]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE p (v decimal)")
    db.executemany("INSERT INTO p VALUES (?)", [(t,) for t in texts])
    stored = [v for (v,) in db.execute("SELECT v FROM p ORDER BY rowid")]
    reads = _django_reads(stored)
    off_by_an_ulp = 0
    t = msgspec.structs.replace(parse_type("numeric(20,6)"), format=REAL15)
    convert = value_converter(t)
    for text, value, read in zip(texts, stored, reads, strict=True):
        assert not read.startswith("error"), (value, read)
        assert convert(value) == Decimal(read), value
        off_by_an_ulp += len(text) <= 16 and Decimal(repr(value)) != Decimal(text)
    assert off_by_an_ulp > 0  # the sample holds SQLite's one-ulp REALs (about 1 in 7,000)
    assert reads[-len(DJANGO_PRICES_TEXT) :] == [r for _, r in DJANGO_PRICES_TEXT]


def test_django_project_numeric_reads_fifteen_digits(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """With django_migrations in the target, numeric columns take Django's reading; without, the one-ulp
    REAL is refused by name (no reader is known), and 16-digit REALs keep their shortest repr."""
    path = tmp_path / "app.db"
    make_db(
        path,
        'CREATE TABLE "shop_item" (id integer PRIMARY KEY, price decimal NOT NULL)',
        *(("INSERT INTO shop_item VALUES (?, ?)", row) for row in enumerate((p for p, _ in DJANGO_PRICES), 1)),
    )
    pg.execute("CREATE TABLE shop_item (id bigint PRIMARY KEY, price numeric(20, 6) NOT NULL)")
    with pytest.raises(BadValue) as info:
        snapshot.snapshot(path, pg_dsn, CFG, mode="existing")
    assert "shop_item (id=1) column price" in info.value.message
    pg.execute("CREATE TABLE django_migrations (id bigint PRIMARY KEY, app text, name text, applied timestamptz)")
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="existing", replace=True)
    assert result.plan is not None
    assert result.plan.table("shop_item").columns[1].type.format == REAL15
    got = dict(pg.execute("SELECT id, price::text FROM shop_item").fetchall())
    assert got == {i: read for i, (_p, read) in enumerate(DJANGO_PRICES, 1)}


# -- the plan: every problem at once, every hint followed literally ---------------------------------


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def _follow(hint_text: str, config_file: Path) -> None:
    """Do what each 'add [types."T"."c"] with k = v to the config file' says, as written."""
    fixes = re.findall(r'add (\[types\."[^"]+"\."[^"]+"\]) with (\w+ = \S+) to the config file', hint_text)
    assert fixes, hint_text
    config_file.write_text(config_file.read_text() + "".join(f"\n{table}\n{key}\n" for table, key in fixes))


def test_every_schema_problem_at_once_and_each_fix_works_as_written(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = tmp_path / "app.db"
    make_db(
        path,
        """
        CREATE TABLE a (id integer PRIMARY KEY, pt text, tags text, gone text);
        CREATE TABLE b (id integer PRIMARY KEY, cash real);
        INSERT INTO a VALUES (1, '(1,2)', '{x}', 'g');
        INSERT INTO b VALUES (1, 1.5);
        """,
    )
    pg.execute(
        "CREATE TABLE a (id bigint PRIMARY KEY, pt point, tags text[], extra text);"
        "CREATE TABLE b (id bigint PRIMARY KEY, cash money)"
    )
    config_file = tmp_path / "replicator.toml"
    config_file.write_text("")
    args = ("snapshot", "--source", str(path), "--target", pg_dsn, "--mode", "existing", "--config", str(config_file))
    first = _cli(*args, cwd=tmp_path)
    assert first.returncode == 2, first.stderr
    problems = ["a.pt", "a.tags", "a.gone", "a.extra", "b.cash"]
    assert all(p in first.stderr for p in problems), first.stderr
    assert "(5 problem(s))" in first.stderr
    _follow(first.stderr, config_file)
    second = _cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert pg.execute("SELECT id, pt, tags, extra FROM a").fetchall() == [(1, None, None, None)]


def test_a_type_override_that_cannot_be_written_is_refused_by_name(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = tmp_path / "app.db"
    make_db(
        path,
        "CREATE TABLE t (id integer PRIMARY KEY, u text, label text); INSERT INTO t VALUES (1, 'not-a-uuid', 'x');",
    )
    pg.execute("CREATE TABLE t (id bigint PRIMARY KEY, u uuid, label varchar(3))")
    types = {"t": {"u": ColumnOverride(type="text"), "label": ColumnOverride(type="text")}}
    with pytest.raises(UsageError) as info:
        snapshot.snapshot(path, pg_dsn, msgspec.structs.replace(CFG, types=types), mode="existing")
    assert "column t.u: override type = 'text' cannot be written into the target's uuid column" in info.value.message
    assert "t.label" not in info.value.message  # text into varchar: the same binary form, honoured


def test_hint_of_a_refused_value_is_followed_as_written(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = tmp_path / "app.db"
    make_db(path, "CREATE TABLE t (id integer PRIMARY KEY, s text); INSERT INTO t VALUES (1, 'a' || char(0) || 'b');")
    pg.execute("CREATE TABLE t (id bigint PRIMARY KEY, s text)")
    config_file = tmp_path / "replicator.toml"
    config_file.write_text("")
    args = ("snapshot", "--source", str(path), "--target", pg_dsn, "--mode", "existing", "--config", str(config_file))
    first = _cli(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    _follow(first.stderr, config_file)
    second = _cli(*args, "--replace", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert pg.execute("SELECT s FROM t").fetchall() == [("ab",)]


def test_unsupported_refusal_names_table_key_column() -> None:
    with pytest.raises(RowRefused) as info:
        convert_value("t", "ip", parse_type("inet"), "1.2.3.4%eth0")
    assert (info.value.table, info.value.column) == ("t", "ip")


def test_plan_reflects_a_domain_as_its_base_type(pg: Any) -> None:
    pg.execute(PG_SETUP)
    pg.execute("CREATE TABLE dom (p positive)")
    (column,) = pgreflect.reflect(pg, "public")["dom"].columns
    assert pgreflect.target_type(column) == parse_type("integer")


def test_a_one_ulp_real_outside_django_names_the_reading_that_loads_it(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """Not a Django project: the shortest repr (what Prisma and Python print) has a 9th decimal, so the
    value is refused; the hint names format = "real15", and followed as written the price loads."""
    path = tmp_path / "app.db"
    make_db(
        path,
        "CREATE TABLE item (id integer PRIMARY KEY, price decimal);"
        "INSERT INTO item VALUES (1, '30475227.150471');",  # SQLite stores 30475227.150471002
    )
    pg.execute("CREATE TABLE item (id bigint PRIMARY KEY, price numeric(20, 6))")
    config_file = tmp_path / "replicator.toml"
    config_file.write_text("")
    args = ("snapshot", "--source", str(path), "--target", pg_dsn, "--mode", "existing", "--config", str(config_file))
    first = _cli(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    assert "item (id=1) column price" in first.stderr
    _follow(first.stderr, config_file)
    assert 'format = "real15"' in config_file.read_text()
    second = _cli(*args, "--replace", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert pg.execute("SELECT price::text FROM item").fetchall() == [("30475227.150471",)]


def test_analyze_existing_lists_every_problem_in_one_pass(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """What took a Django project eight snapshot attempts: one read-only pass names every schema problem
    and every column holding refused values, with row counts, the first key and each fix."""
    path = tmp_path / "app.db"
    make_db(
        path,
        """
        CREATE TABLE a (id integer PRIMARY KEY, ip text, u text, price decimal, s text, pt text);
        INSERT INTO a VALUES (1, '300.1.1.1', 'nope', '30475227.150471', 'a' || char(0) || 'b', '(1,2)');
        INSERT INTO a VALUES (2, 'also bad', '256f090027a041bbafeb104a4c0760b6', '1.5', 'ok', NULL);
        CREATE TABLE b (id integer PRIMARY KEY, n integer);
        INSERT INTO b VALUES (7, 40000);
        """,
    )
    pg.execute(
        "CREATE TABLE a (id bigint PRIMARY KEY, ip inet, u uuid, price numeric(20, 6), s text, pt point);"
        "CREATE TABLE b (id bigint PRIMARY KEY, n smallint)"
    )
    args = ("analyze", "--source", str(path), "--target", pg_dsn, "--mode", "existing", "--json", "-")
    ran = _cli(*args, cwd=tmp_path)
    assert ran.returncode == 1, ran.stderr
    assert "6 problem(s) would stop a snapshot" in ran.stderr
    findings = [f for f in json.loads(ran.stdout)["findings"] if f["code"] in ("target_schema", "refused_values")]
    by_column = {(f["table"], f["column"]): f for f in findings if f["code"] == "refused_values"}
    assert set(by_column) == {("a", "ip"), ("a", "u"), ("a", "price"), ("a", "s"), ("b", "n")}
    assert by_column[("a", "ip")]["message"].startswith("2 row(s) of a.ip cannot be loaded")
    assert "(first: id=1)" in by_column[("a", "u")]["message"]
    assert 'add [types."a"."price"] with format = "real15"' in by_column[("a", "price")]["hint"]
    assert 'add [types."a"."s"] with strip_nul = true' in by_column[("a", "s")]["hint"]
    assert "outside the smallint range" in by_column[("b", "n")]["message"]
    (schema_problem,) = [f for f in findings if f["code"] == "target_schema"]
    assert "a.pt: target type point cannot be loaded" in schema_problem["message"]
    assert pg.execute("SELECT count(*) FROM a").fetchone() == (0,)  # read-only: nothing written
