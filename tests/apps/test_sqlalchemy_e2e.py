"""Real SQLAlchemy apps move from SQLite to PostgreSQL in existing mode, through the README runbook.

(a) Optuna's RDB storage: studies and trials written through ``optuna.storages.RDBStorage`` on SQLite;
Optuna's own storage creation makes the PostgreSQL schema (its migration seeds ``version_info``, so the
snapshot needs ``--replace``); snapshot, capture, the daemon, an Optuna writer running trials, cutover
under writes; then every study and trial loaded through RDBStorage from both databases must be equal, and a
new trial on PostgreSQL gets a fresh id (sequences). (b) An SQLAlchemy 2 declarative model with the common
column types, its PostgreSQL schema made by Alembic (autogenerate, then upgrade), the same flow, every row
compared through SQLAlchemy sessions on both databases.

Each app process is a subprocess (``python run.py COMMAND``) with ``DB=sqlite`` or ``DB=pg``; writers begin
their transactions with ``BEGIN IMMEDIATE`` (the README's SQLAlchemy note).
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.ormapp import OrmApp, move_under_writes, to_wal

pytestmark = pytest.mark.e2e

#: Shared by both apps' run.py: the database URL from the environment, BEGIN IMMEDIATE on SQLite.
COMMON = """
import os, sys
import sqlalchemy as sa
from sqlalchemy import event

def url(db=None):
    db = db or os.environ["DB"]
    return "sqlite:///" + os.environ["SQLITE"] if db == "sqlite" else os.environ["PG_URL"]

def immediate(engine):
    '''SQLAlchemy's recipe: pysqlite emits no BEGIN of its own; every transaction begins IMMEDIATE.'''
    if engine.dialect.name != "sqlite":
        return engine
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, record):
        dbapi_connection.isolation_level = None
    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    engine.dispose()
    return engine
"""

OPTUNA_RUN = """
import datetime, json, math, pathlib, time
import optuna
from common import url, immediate
optuna.logging.set_verbosity(optuna.logging.ERROR)
command = sys.argv[1]

def open_storage(db):
    kwargs = {"connect_args": {"timeout": 20}} if db == "sqlite" else {}
    storage = optuna.storages.RDBStorage(url(db), engine_kwargs=kwargs)
    immediate(storage.engine)
    return storage

def objective(trial):
    x = trial.suggest_float("x", -10, 10)
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    n = trial.suggest_int("n", 1, 64, step=3)
    kind = trial.suggest_categorical("kind", ["adam", "sgd", None, 1.5])
    trial.set_user_attr("note", {"ü": [1, 2.5], "kind": kind})
    for step in range(3):
        trial.report(x * x / (step + 1) if step != 1 else float("nan"), step)
    if trial.number % 7 == 3:
        raise optuna.TrialPruned()
    if trial.number % 7 == 5:
        raise ValueError("a failed trial")
    return x * x + n * lr

def multi(trial):
    a = trial.suggest_float("a", 0, 1)
    return (a, float("inf") if trial.number == 2 else 1 - a)

def plain(value):
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return repr(value)

def dump(storage):
    out = {}
    for summary in storage.get_all_studies():
        sid = summary._study_id
        trials = []
        for t in storage.get_all_trials(sid, deepcopy=False):
            trials.append({
                "id": t._trial_id, "number": t.number, "state": t.state.name, "values": plain(t.values),
                "params": plain(t.params), "distributions": plain(t.distributions),
                "user_attrs": json.dumps(t.user_attrs, sort_keys=True), "system_attrs": plain(t.system_attrs),
                "intermediate": plain(sorted(t.intermediate_values.items())),
                "start": plain(t.datetime_start), "complete": plain(t.datetime_complete),
            })
        out[summary.study_name] = {
            "id": sid, "directions": plain(storage.get_study_directions(sid)),
            "user_attrs": plain(storage.get_study_user_attrs(sid)),
            "system_attrs": plain(storage.get_study_system_attrs(sid)), "trials": trials,
        }
    return out

if command == "setup":  # the app's data on SQLite; Optuna's own storage creation on PostgreSQL
    storage = open_storage("sqlite")
    single = optuna.create_study(study_name="single", storage=storage, sampler=optuna.samplers.RandomSampler(seed=1))
    single.set_user_attr("owner", "ada")
    single.optimize(objective, n_trials=12, catch=(ValueError,))
    both = optuna.create_study(study_name="multi", storage=storage, directions=["minimize", "maximize"])
    both.optimize(multi, n_trials=4)
    storage.engine.dispose()
    open_storage("pg").engine.dispose()  # tables, version_info and alembic_version, as Optuna makes them
    raise SystemExit(0)

if command == "writer":
    stop = pathlib.Path(sys.argv[2])
    storage = open_storage("sqlite")
    study = optuna.load_study(study_name="single", storage=storage, sampler=optuna.samplers.RandomSampler(seed=2))
    i = 0
    while not stop.exists():
        i += 1
        try:
            study.optimize(objective, n_trials=1, catch=(ValueError,))
            print("ok", i, flush=True)
        except Exception as exc:  # Optuna wraps the database's error: report the whole chain
            chain = [exc]
            while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
                chain.append(chain[-1].__cause__ or chain[-1].__context__)
            print("refused", i, " / ".join(str(e).splitlines()[0] for e in chain if str(e)), flush=True)
        time.sleep(0.01)
    raise SystemExit(0)

if command == "check":  # every study and trial through RDBStorage on both; then a new trial on PostgreSQL
    on_sqlite, pg = dump(open_storage("sqlite")), open_storage("pg")
    on_pg = dump(pg)
    study = optuna.load_study(study_name="single", storage=pg)
    before = max(t._trial_id for t in study.get_trials(deepcopy=False))
    trial = study.ask()
    study.tell(trial, trial.suggest_float("x", -1, 1) ** 2)
    new = study.get_trials(deepcopy=False)[-1]
    after = {"before": before, "new": new._trial_id, "state": new.state.name}
    print(json.dumps({"sqlite": on_sqlite, "pg": on_pg, "after": after}, sort_keys=True))
    raise SystemExit(0)
raise SystemExit(f"unknown command {command}")
"""


class App(OrmApp):
    """An app in tmp: ``run.py`` beside ``common.py``, run against SQLite or PostgreSQL."""

    def __init__(self, root: Path, run: str, pg_dsn: str, *files: tuple[str, str]) -> None:
        url = sa.make_url(pg_dsn).set(drivername="postgresql+psycopg")
        super().__init__(root / "app", root / "app.db", {"PG_URL": url.render_as_string(hide_password=False)})
        self.root.mkdir()
        for name, text in (("common.py", COMMON), ("run.py", "from common import *\n" + run), *files):
            (self.root / name).write_text(textwrap.dedent(text))


def test_optuna_rdb_storage_moves_under_writes(tmp_path: Path, pg_dsn: str) -> None:
    pytest.importorskip("optuna", reason="optuna is a test dependency: pip install -e '.[test]'")
    app = App(tmp_path, OPTUNA_RUN, pg_dsn)
    app.run("sqlite", "setup")
    to_wal(app.sqlite)
    with sqlite3.connect(app.sqlite) as conn:
        (seeded_trials,) = conn.execute("SELECT count(*) FROM trials").fetchone()
    conn.close()
    move_under_writes(app, tmp_path, pg_dsn, seeded="version_info")
    checked = json.loads(app.run("sqlite", "check"))
    on_sqlite, on_pg = checked["sqlite"], checked["pg"]
    assert len(on_sqlite["single"]["trials"]) + len(on_sqlite["multi"]["trials"]) > seeded_trials  # the writer's too
    differences = [
        (name, t["number"], field, t[field], pg_trial.get(field))
        for name, study in on_sqlite.items()
        for t, pg_trial in zip(study["trials"], on_pg[name]["trials"], strict=False)
        for field in t
        if t[field] != pg_trial.get(field)
    ]
    assert differences == []
    assert on_sqlite == on_pg
    states = {t["state"] for t in on_pg["single"]["trials"]}
    assert {"COMPLETE", "PRUNED", "FAIL"} <= states
    assert any("nan" in t["intermediate"] for t in on_pg["single"]["trials"])
    assert "inf" in on_pg["multi"]["trials"][2]["values"]
    after = checked["after"]
    assert after["new"] > after["before"]  # the sequence continues past every moved trial
    assert after["state"] == "COMPLETE"


MODELS = """
import datetime, decimal, enum, uuid
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"
    BLUE = "b"


class Shop(Base):
    __tablename__ = "shop"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)


class Item(Base):
    __tablename__ = "item"
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int | None] = mapped_column(sa.ForeignKey("shop.id"))
    name: Mapped[str] = mapped_column(sa.String(100))
    price: Mapped[decimal.Decimal] = mapped_column(sa.Numeric(20, 6, asdecimal=True))
    color: Mapped[Color] = mapped_column(sa.Enum(Color, name="color"))
    at: Mapped[datetime.datetime | None] = mapped_column(sa.DateTime(timezone=True))
    naive: Mapped[datetime.datetime | None] = mapped_column(sa.DateTime())
    day: Mapped[datetime.date | None] = mapped_column(sa.Date)
    clock: Mapped[datetime.time | None] = mapped_column(sa.Time)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    data: Mapped[dict | None] = mapped_column(sa.JSON)
    blob: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    uid: Mapped[uuid.UUID] = mapped_column(sa.Uuid, default=uuid.uuid4, unique=True)
    took: Mapped[datetime.timedelta | None] = mapped_column(sa.Interval)
    qty: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    ratio: Mapped[float | None] = mapped_column(sa.Float)
"""

SQLALCHEMY_RUN = """
import datetime, decimal, json, pathlib, time, uuid
from alembic import command
from alembic.config import Config
from sqlalchemy.orm import Session
from models import Base, Color, Item, Shop

D = decimal.Decimal
UTC = datetime.timezone.utc
HERE = pathlib.Path(__file__).parent
PRICES = [
    "12345678901234.567891",  # 20 digits: SQLAlchemy binds float(); reads "%.6f" of that double back
    "19.990000", "0.100000", "3.000000", "-7.250000", "1234567.123457",
]

def alembic(db):
    cfg = Config(str(HERE / "alembic.ini"))  # written by command.init
    cfg.set_main_option("sqlalchemy.url", url(db).replace("%", "%%"))  # ConfigParser: %2F of a socket path
    return cfg

def session(db):
    return Session(immediate(sa.create_engine(url(db), connect_args={"timeout": 20} if db == "sqlite" else {})))

command_name = sys.argv[1]
if command_name == "setup":
    # Alembic: a generated environment, an autogenerated revision, upgrade on both databases.
    command.init(Config(str(HERE / "alembic.ini")), str(HERE / "migrations"))
    cfg = alembic("pg")
    env = HERE / "migrations" / "env.py"
    metadata = "from models import Base\\ntarget_metadata = Base.metadata"
    env.write_text(env.read_text().replace("target_metadata = None", metadata))
    command.revision(cfg, message="initial", autogenerate=True)
    command.upgrade(cfg, "head")
    command.upgrade(alembic("sqlite"), "head")
    with session("sqlite") as s, s.begin():
        shops = [Shop(name="north"), Shop(name="ünïcode ✓")]
        s.add_all(shops)
        for i, price in enumerate(PRICES):
            s.add(Item(
                shop_id=None, name=f"item {i}", price=D(price), color=list(Color)[i % 3],
                at=datetime.datetime(2024, 3, 5, 6, 7, 8, i * 1000, tzinfo=UTC),
                naive=datetime.datetime(2024, 3, i + 1, 23, 59),
                day=datetime.date(2024, 2, 29), clock=datetime.time(1, 2, 3, 4), active=bool(i % 2),
                data={"a": [1, 2.5], "ü": None, "i": i} if i else None, blob=bytes([0, 1, 255, i]),
                took=datetime.timedelta(days=i - 2, seconds=2, microseconds=i), qty=2**62 + i, ratio=i / 3,
            ))
        s.flush()
        for item in s.query(Item):
            item.shop_id = shops[item.id % 2].id
    with session("sqlite") as s, s.begin():  # a legacy row written as text by another tool: SQLite's one-ulp REAL
        s.execute(sa.text("INSERT INTO item (name, price, color, active, uid, qty) VALUES "
                          "('legacy', '30475227.150471', 'BLUE', 1, :u, 0)"), {"u": uuid.uuid4().hex})
    raise SystemExit(0)

if command_name == "writer":
    stop = pathlib.Path(sys.argv[2])
    s = session("sqlite")
    i = 0
    while not stop.exists():
        i += 1
        try:
            with s.begin():
                price = D(PRICES[i % len(PRICES)])
                item = Item(name=f"w{i}", price=price, color=Color.GREEN, took=datetime.timedelta(i))
                s.add(item)
                s.flush()
                item.qty = i
                item.at = datetime.datetime.now(UTC)
                if i % 5 == 0:
                    s.query(Item).filter(Item.name == f"w{i - 3}").delete()
            print("ok", i, flush=True)
        except Exception as exc:
            chain = [exc]
            while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
                chain.append(chain[-1].__cause__ or chain[-1].__context__)
            print("refused", i, " / ".join(str(e).splitlines()[0] for e in chain if str(e)), flush=True)
            s.rollback()
        time.sleep(0.01)
    raise SystemExit(0)

def plain(value):
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)  # SQLite's DateTime(timezone=True) reads naive UTC
    if isinstance(value, (dict, list)):
        return "json " + json.dumps(value, sort_keys=True)
    return repr(value)

def dump(db):
    with session(db) as s:
        return {
            model.__tablename__: [
                {c.key: plain(getattr(obj, c.key)) for c in model.__table__.columns}
                for obj in s.query(model).order_by(model.id)
            ]
            for model in (Shop, Item)
        }

if command_name == "check":
    on_sqlite, on_pg = dump("sqlite"), dump("pg")
    with session("pg") as s, s.begin():
        before = s.query(sa.func.max(Item.id)).scalar()
        new = Item(name="after cutover", price=D("1.5"), color=Color.RED, shop_id=1)
        s.add(new)
        s.flush()
        s.refresh(new)  # read back from PostgreSQL
        after = {"before": before, "new": new.id, "price": str(new.price)}
    print(json.dumps({"sqlite": on_sqlite, "pg": on_pg, "after": after}, sort_keys=True))
    raise SystemExit(0)
raise SystemExit(f"unknown command {command_name}")
"""


def test_sqlalchemy_model_with_alembic_moves_under_writes(tmp_path: Path, pg_dsn: str) -> None:
    pytest.importorskip("alembic", reason="alembic is a test dependency: pip install -e '.[test]'")
    app = App(tmp_path, SQLALCHEMY_RUN, pg_dsn, ("models.py", MODELS))
    app.run("sqlite", "setup")
    migration = next((app.root / "migrations" / "versions").glob("*.py")).read_text()
    assert "sa.Enum('RED', 'GREEN', 'BLUE', name='color')" in migration  # autogenerated: a PostgreSQL enum type
    to_wal(app.sqlite)
    with sqlite3.connect(app.sqlite) as conn:
        (legacy,) = conn.execute("SELECT price FROM item WHERE name = 'legacy'").fetchone()
    conn.close()
    assert legacy == 30475227.150471002  # SQLite's REAL for the text: the shortest repr has 9 decimals
    move_under_writes(app, tmp_path, pg_dsn, seeded=None)
    checked = json.loads(app.run("sqlite", "check"))
    on_sqlite, on_pg = checked["sqlite"], checked["pg"]
    differences = [
        (table, i, field, row[field], on_pg[table][i].get(field) if i < len(on_pg[table]) else None)
        for table, rows in on_sqlite.items()
        for i, row in enumerate(rows)
        for field in row
        if i >= len(on_pg[table]) or row[field] != on_pg[table][i].get(field)
    ]
    assert differences == []
    assert on_sqlite == on_pg
    prices = [row["price"] for row in on_pg["item"][:7]]
    assert prices[0] == "Decimal('12345678901234.568359')"  # what SQLAlchemy reads from SQLite, digit for digit
    assert prices[6] == "Decimal('30475227.150471')"
    assert {row["color"] for row in on_pg["item"]} >= {"<Color.RED: 'r'>", "<Color.BLUE: 'b'>"}
    assert any(row["took"].startswith("datetime.timedelta(days=-2") for row in on_pg["item"])
    after = checked["after"]
    assert after["new"] > after["before"]  # the sequence continues past every moved row
    assert after["price"] == "1.500000"
