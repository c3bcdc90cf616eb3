"""A decimal stored as a REAL loads as the app's ORM reads it: SQLAlchemy's and ActiveRecord's readers.

Each ORM reads a SQLite REAL in a decimal column its own way (docs/types.md): SQLAlchemy's ``Numeric`` as
``Decimal("%.{scale}f" % value)``, ActiveRecord as ``BigDecimal(value.round(scale), 16).round(scale)``. The
tests take real values (SQLite's own REAL for the text 30475227.150471 is 30475227.150471002; the double of
a 17-digit price) and check, for each reader: the value the ORM reads from SQLite == the value PostgreSQL
gets == what the ORM reads back from PostgreSQL; and the independent reading (replicator.inspect.proof) agrees.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import struct
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from replicator.config import Config, Snapshot
from replicator.errors import BadValue
from replicator.inspect.proof_numbers import decimal_of_real
from replicator.load import snapshot
from replicator.plan import existingmode
from replicator.values.convert import value_converter
from replicator.values.decimals import RAILS, SQLALCHEMY, decimal_fits, rails_decimal, sqlalchemy_decimal
from replicator.values.targettype import parse_type

CFG = Config()

#: Written as decimal text into a NUMERIC-affinity column (SQLite keeps 15 digits, sometimes one ulp off),
#: or as the double a Python app binds: SQLAlchemy binds a Decimal as float(value).
TEXTS = ["30475227.150471", "0.30000000000000004", "2.675", "1.005", "-99.995", "19.99", "3.7", "-3.7"]
FLOATS = [12345678901234.567891, 1234567.1234565, 0.1 + 0.2, 1e-11, -78.52380703626727, 86.72289945457601]


def _stored(texts: list[str], floats: list[float]) -> list[int | float]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE p (v decimal)")
    db.executemany("INSERT INTO p VALUES (?)", [(t,) for t in texts] + [(f,) for f in floats])
    return [v for (v,) in db.execute("SELECT v FROM p ORDER BY rowid")]


def test_sqlalchemy_numeric_reads_a_real_with_its_scale() -> None:
    """SQLAlchemy itself reads each stored number (Numeric(20, 6) and Numeric() on SQLite): the reader
    gives the same Decimal, digit for digit, and so does the independent reading."""
    rng = random.Random(16)
    texts = TEXTS + [f"{rng.randrange(10**8)}.{rng.randrange(10**6):06d}" for _ in range(3000)]
    floats = FLOATS + [struct.unpack("d", struct.pack("Q", rng.getrandbits(62)))[0] for _ in range(500)]
    values = [*_stored(texts, floats), 3, -(2**40)]
    meta = sa.MetaData()
    table = sa.Table("t", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("a", sa.Numeric(20, 6)))
    table.append_column(sa.Column("b", sa.Numeric()))
    engine = sa.create_engine("sqlite://")
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (?, ?, ?)", [(i, v, v) for i, v in enumerate(values)])
        reads = conn.execute(sa.select(table.c.a, table.c.b).order_by(table.c.id)).all()
    shortest_refused = 0
    for value, (a, b) in zip(values, reads, strict=True):
        assert (str(sqlalchemy_decimal(value, 6)), str(sqlalchemy_decimal(value, None))) == (str(a), str(b)), value
        assert decimal_of_real(value, 6, SQLALCHEMY, 20) == a, value
        assert decimal_of_real(value, None, SQLALCHEMY) == b, value
        shortest_refused += type(value) is float and decimal_fits(Decimal(repr(value)), 20, 6) is not None
    assert shortest_refused > 0  # the shortest repr would refuse these for numeric(20,6); SQLAlchemy reads them
    assert str(sqlalchemy_decimal(30475227.150471002, 6)) == "30475227.150471"
    assert str(sqlalchemy_decimal(12345678901234.567891, 6)) == "12345678901234.568359"


#: What ActiveRecord 6.1.7.10 (Debian bookworm ruby-activerecord, Ruby 3.1.2, bigdecimal 3.1.1, sqlite3 gem
#: 1.4.2) reads from SQLite for each stored number, per declared column type (recorded with
#: tests/values/rails_reads.rb).
RAILS_READS: list[tuple[float | int, dict[str, str]]] = [
    (
        30475227.150471002,
        {"decimal(20,6)": "30475227.150471", "decimal": "30475227.150471", "decimal(10,0)": "30475227"},
    ),
    (12345678901234.568, {"decimal(20,6)": "12345678901234.57", "decimal": "12345678901234.56"}),
    (2.675, {"decimal(20,6)": "2.675", "decimal(12,2)": "2.68", "decimal(10,0)": "2"}),
    (1.005, {"decimal(12,2)": "1.01", "decimal(30,15)": "1.005"}),
    (-99.995, {"decimal(12,2)": "-100.0", "decimal(10,0)": "-99"}),
    (0.30000000000000004, {"decimal(20,6)": "0.3", "decimal": "0.3"}),
    (1e-11, {"decimal(20,6)": "0.0", "decimal": "0.00000000001", "decimal(30,15)": "0.00000000001"}),
    (
        -78.52380703626727,
        {"decimal(20,6)": "-78.523807", "decimal": "-78.52380703626727", "decimal(30,15)": "-78.52380703626726"},
    ),
    (86.72289945457601, {"decimal(30,15)": "86.72289945457602"}),
    (123456789012345678, {"decimal(20,6)": "123456789012345678.0", "decimal(10,0)": "123456789012345678"}),
]


def _precision_scale(declared: str) -> tuple[int | None, int | None]:
    if "(" not in declared:
        return None, None
    precision, scale = declared[declared.index("(") + 1 : -1].split(",")
    return int(precision), int(scale)


@pytest.mark.parametrize(("stored", "reads"), RAILS_READS)
def test_rails_reader_is_what_activerecord_read(stored: float | int, reads: dict[str, str]) -> None:
    for declared, read in reads.items():
        precision, scale = _precision_scale(declared)
        assert rails_decimal(stored, precision, scale) == Decimal(read), declared
        assert decimal_of_real(stored, scale, RAILS, precision) == Decimal(read), declared


RAILS_SCRIPT = Path(__file__).with_name("rails_reads.rb")


def test_rails_reader_against_activerecord_itself(tmp_path: Path) -> None:
    """Where Ruby and ActiveRecord are installed (apt-get install ruby-activerecord ruby-sqlite3), thousands
    of stored numbers read by ActiveRecord: every value that fits its column reads the same here."""
    probe = ["ruby", "-e", 'require "active_record"']
    if shutil.which("ruby") is None or subprocess.run(probe, capture_output=True, check=False).returncode:
        pytest.skip("ruby with active_record is not installed")
    rng = random.Random(61)
    texts = TEXTS + [f"{rng.randrange(10**8)}.{rng.randrange(10**6):06d}" for _ in range(2000)]
    texts += [f"{rng.randrange(100)}.{rng.randrange(1000):03d}5" for _ in range(300)]  # ties at 2 and 3 places
    floats = FLOATS + [rng.uniform(-1000, 1000) for _ in range(500)]
    columns = ["decimal(20,6)", "decimal", "decimal(10,0)", "decimal(12,2)", "decimal(30,15)", "decimal(5,3)"]
    path = tmp_path / "rails.db"
    with sqlite3.connect(path) as db:
        declared = ", ".join(f"c{i} {t}" for i, t in enumerate(columns))
        db.execute(f"CREATE TABLE items (id integer PRIMARY KEY, {declared})")
        marks = ", ".join("?" * (len(columns) + 1))
        rows = [(i, *[v] * len(columns)) for i, v in enumerate([*texts, *floats])]
        db.executemany(f"INSERT INTO items VALUES ({marks})", rows)
        stored = [row[1:] for row in db.execute("SELECT * FROM items ORDER BY id")]
    db.close()
    done = subprocess.run(["ruby", str(RAILS_SCRIPT), str(path)], capture_output=True, text=True, check=True)
    read_rows: list[list[str]] = json.loads(done.stdout)
    compared = 0
    for values, reads in zip(stored, read_rows, strict=True):
        for declared, value, read in zip(columns, values, reads, strict=True):
            precision, scale = _precision_scale(declared)
            if decimal_fits(Decimal(read), precision, scale) is not None:
                continue  # PostgreSQL's numeric(p,s) cannot hold what Rails read: refused either way
            assert rails_decimal(value, precision, scale) == Decimal(read), (declared, value)
            assert decimal_of_real(value, scale, RAILS, precision) == Decimal(read), (declared, value)
            compared += 1
    assert compared > 10_000


# -- PostgreSQL gets what the ORM reads ------------------------------------------------------------


def test_detected_orm_chooses_the_reader() -> None:
    assert existingmode.decimal_reader(["django_migrations", "alembic_version"], "auto") == "real15"
    assert existingmode.decimal_reader(["ar_internal_metadata", "schema_migrations"], "auto") == RAILS
    assert existingmode.decimal_reader(["alembic_version", "studies"], "auto") == SQLALCHEMY
    assert existingmode.decimal_reader(["schema_migrations"], "auto") is None  # golang-migrate, Ecto: not Rails
    assert existingmode.decimal_reader(["alembic_version"], "none") is None
    assert existingmode.decimal_reader([], "rails") == RAILS


def _sqlalchemy_app(path: Path) -> sa.Table:
    """An SQLAlchemy app's table: prices bound as SQLAlchemy binds them (floats), one legacy row written as
    text by another tool (SQLite's one-ulp REAL)."""
    meta = sa.MetaData()
    item = sa.Table("item", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("price", sa.Numeric(20, 6)))
    engine = sa.create_engine(f"sqlite:///{path}")
    meta.create_all(engine)
    with engine.begin() as conn:
        prices = ["12345678901234.567891", "19.990000", "0.100000", "1234567.123457"]
        conn.execute(item.insert(), [{"id": i, "price": Decimal(p)} for i, p in enumerate(prices, 1)])
        conn.exec_driver_sql("INSERT INTO item VALUES (9, '30475227.150471')")
    engine.dispose()
    return item


def _reads(url: str, table: sa.Table) -> list[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        got = [str(price) for (price,) in conn.execute(sa.select(table.c.price).order_by(table.c.id))]
    engine.dispose()
    return got


def test_sqlalchemy_app_numeric_loads_what_sqlalchemy_reads(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """Through SQLAlchemy on both sides: without a reader the one-ulp REAL is refused; with Alembic's
    table in the target, PostgreSQL gets exactly what SQLAlchemy read from SQLite, and SQLAlchemy reads it
    back identically (17-digit prices included, where the shortest repr would change them)."""
    path = tmp_path / "app.db"
    item = _sqlalchemy_app(path)
    on_sqlite = _reads(f"sqlite:///{path}", item)
    assert on_sqlite[0] == "12345678901234.568359"
    assert on_sqlite[-1] == "30475227.150471"
    pg.execute("CREATE TABLE item (id integer PRIMARY KEY, price numeric(20, 6))")
    with pytest.raises(BadValue) as info:  # not known as an SQLAlchemy app: no reader
        snapshot.snapshot(path, pg_dsn, CFG, mode="existing")
    assert "item (id=9) column price" in info.value.message
    pg.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="existing", replace=True)
    assert result.plan is not None
    assert result.plan.table("item").columns[1].type.format == SQLALCHEMY
    url = sa.make_url(pg_dsn).set(drivername="postgresql+psycopg")
    assert _reads(url.render_as_string(hide_password=False), item) == on_sqlite
    assert [p for (p,) in pg.execute("SELECT price::text FROM item ORDER BY id")] == on_sqlite


def test_config_orm_setting_chooses_the_reader(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """An app with no migration table in the target: ``[snapshot] orm = "rails"`` reads as ActiveRecord."""
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE item (id integer PRIMARY KEY, price decimal(20, 6), total decimal)")
        conn.execute("INSERT INTO item VALUES (1, '30475227.150471', '30475227.150471')")
        conn.execute("INSERT INTO item VALUES (2, 12345678901234.568, 12345678901234.568)")
    conn.close()
    pg.execute("CREATE TABLE item (id bigint PRIMARY KEY, price numeric(20, 6), total numeric)")
    cfg = msgspec.structs.replace(CFG, snapshot=Snapshot(orm="rails"))
    snapshot.snapshot(path, pg_dsn, cfg, mode="existing")
    got = pg.execute("SELECT price::text, total::text FROM item ORDER BY id").fetchall()
    # RAILS_READS: what ActiveRecord reads from SQLite for these REALs
    assert got == [("30475227.150471", "30475227.150471"), ("12345678901234.570000", "12345678901234.56")]


def test_fast_paths_agree_with_the_reader() -> None:
    """Integers that skip the reader (the row converter's fast path) read the same through it."""
    cases = {"numeric(20,6)": (0, 3, -7, 10**13), "numeric": (0, 3, -7, 10**13, 2**53 + 1, -(2**70))}
    for declared, numbers in cases.items():
        t = parse_type(declared)
        sqlalchemy = value_converter(msgspec.structs.replace(t, format=SQLALCHEMY))
        rails = value_converter(msgspec.structs.replace(t, format=RAILS))
        for number in numbers:
            assert Decimal(str(sqlalchemy(number))) == sqlalchemy_decimal(number, t.scale), (declared, number)
            assert Decimal(str(rails(number))) == rails_decimal(number, t.precision, t.scale), (declared, number)
