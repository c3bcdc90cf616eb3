"""A real Django project moves from SQLite to PostgreSQL in existing mode, every common field type, through
the ORM: the README runbook as a Django user follows it.

The test writes a small project in tmp (contenttypes, auth, sessions and an app whose model has every
common field type), makes its migrations and writes rows through the ORM to SQLite (prices SQLite stores
one ulp away, 16-20 significant digit prices), then runs Django's own ``migrate`` against PostgreSQL,
``replicator snapshot --mode existing`` (``--replace``: the migrations seeded content types and
permissions), capture, the daemon, an ORM writer, and cutover with both running. Every row is then read
through the ORM from both databases and must give the same Python values; ``migrate --check`` passes on
PostgreSQL, new rows get fresh ids there (sequences) and a user logs in.

Each Django process is a subprocess (``manage.py`` style) configured by ``settings.py`` from the
environment: ``DB=sqlite`` or ``DB=pg``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support.cli import replicator
from tests.support.ormapp import OrmApp, move_under_writes, to_wal

pytestmark = pytest.mark.e2e

pytest.importorskip("django", reason="Django is a test dependency: pip install -e '.[test]'")

SETTINGS = """
import os
SECRET_KEY = "test"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions", "shop"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
if os.environ["DB"] == "sqlite":
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["SQLITE"],
        # The README's Django advice: IMMEDIATE transactions, a busy timeout above cutover's --max-downtime.
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20},
    }}
else:
    from psycopg.conninfo import conninfo_to_dict
    p = conninfo_to_dict(os.environ["PG"])
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.postgresql", "NAME": p["dbname"], "USER": p.get("user", ""),
        "HOST": p.get("host", ""), "PORT": p.get("port", ""), "PASSWORD": p.get("password", ""),
    }}
"""

MODELS = """
import uuid
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=50, unique=True)


class Item(models.Model):
    category = models.ForeignKey(Category, on_delete=models.CASCADE, null=True)
    name = models.CharField(max_length=100)
    notes = models.TextField(blank=True)
    qty = models.IntegerField(default=0)
    big = models.BigIntegerField(default=0)
    small = models.SmallIntegerField(default=0)
    stock = models.PositiveIntegerField(default=0)
    active = models.BooleanField(default=True)
    price = models.DecimalField(max_digits=20, decimal_places=6)
    ratio = models.FloatField(default=0.0)
    day = models.DateField(null=True)
    at = models.DateTimeField(null=True)
    clock = models.TimeField(null=True)
    took = models.DurationField(null=True)
    uid = models.UUIDField(default=uuid.uuid4, unique=True)
    ip = models.GenericIPAddressField(null=True)
    data = models.JSONField(null=True)
    blob = models.BinaryField(null=True)
    email = models.EmailField(blank=True)
    slug = models.SlugField(blank=True)
    url = models.URLField(blank=True)
"""

#: One script, many commands: python run.py COMMAND (DB=sqlite|pg in the environment).
RUN = """
import datetime, decimal, json, os, pathlib, sys, time, uuid
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["DJANGO_SETTINGS_MODULE"] = "settings"
import django
django.setup()
from django.core.management import call_command

command = sys.argv[1]
if command == "manage":
    call_command(*sys.argv[2:])
    raise SystemExit(0)

from django.contrib.auth import authenticate
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.db import DatabaseError, transaction
from shop.models import Category, Item

UTC = datetime.timezone.utc
D = decimal.Decimal
PRICES = [
    "30475227.150471",          # SQLite stores the REAL one ulp away: 30475227.150471002
    "12345678901234.567891",    # 20 significant digits: SQLite keeps 15
    "99999999.000000",          # integral: stored as INTEGER
    "0.100000", "19.990000", "3.000000", "-7.250000",
]

if command == "seed":
    fruit = Category.objects.create(name="fruit")
    tools = Category.objects.create(name="tools")
    for i, price in enumerate(PRICES):
        Item.objects.create(
            category=fruit if i % 2 else tools, name=f"item {i}", notes="ünïcode ✓\\nline", qty=i - 3,
            big=2**62 + i, small=-(2**15), stock=2**31 - 1, active=bool(i % 2), price=D(price), ratio=i / 3,
            day=datetime.date(2024, 3, i + 1), at=datetime.datetime(2024, 3, 5, 6, 7, 8, i * 1000, tzinfo=UTC),
            clock=datetime.time(1, 2, 3, 4), took=datetime.timedelta(days=i, seconds=2, microseconds=-i),
            ip=["192.168.0.1", "2001:db8::1", "::ffff:1.2.3.4"][i % 3], data={"a": [1, 2.5], "ü": None, "i": i},
            blob=bytes([0, 1, 255, i]), email=f"u{i}@example.com", slug=f"item-{i}", url=f"https://x.org/{i}",
        )
    Item.objects.create(name="bare", price=D("0"))
    User.objects.create_user("ada", "ada@example.com", "secret-pw", first_name="Ada")
    Group.objects.create(name="staff").permissions.add(*Permission.objects.filter(codename__endswith="_item"))
    from django.contrib.sessions.backends.db import SessionStore
    store = SessionStore(); store["user"] = "ada"; store.create()
    raise SystemExit(0)

if command == "writer":
    stop = pathlib.Path(sys.argv[2])
    i = 0
    while not stop.exists():
        i += 1
        try:
            with transaction.atomic():
                item = Item.objects.create(name=f"w{i}", price=D(PRICES[i % len(PRICES)]), took=datetime.timedelta(i))
                Item.objects.filter(pk=item.pk).update(qty=i, ip="10.0.0.%d" % (i % 250))
                if i % 5 == 0:
                    Item.objects.filter(name=f"w{i - 3}").delete()
            print("ok", i, flush=True)
        except DatabaseError as exc:
            print("refused", i, str(exc).splitlines()[0], flush=True)
        time.sleep(0.01)
    raise SystemExit(0)

def plain(value):
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, (dict, list)):  # JSONField: equal dicts, whatever the key order jsonb keeps
        return "json " + json.dumps(value, sort_keys=True)
    return repr(value)

if command == "dump":
    out = {}
    for model in (Category, Item, User, Group, Permission, ContentType, Session):
        rows = []
        for obj in model.objects.order_by("pk"):
            row = {f.attname: plain(getattr(obj, f.attname)) for f in model._meta.concrete_fields}
            if model is Group:
                row["permissions"] = sorted(obj.permissions.values_list("codename", flat=True))
            rows.append(row)
        out[model._meta.label] = rows
    print(json.dumps(out, sort_keys=True))
    raise SystemExit(0)

if command == "after":
    fruit = Category.objects.get(name="fruit")
    new = Item.objects.create(category=fruit, name="after cutover", price=D("1.500000"))
    group = Group.objects.create(name="new group")
    user = authenticate(username="ada", password="secret-pw")
    print(json.dumps({
        "item": new.pk, "max_item": max(Item.objects.exclude(pk=new.pk).values_list("pk", flat=True)),
        "group": group.pk, "user": user.username if user else None,
        "price": str(Item.objects.get(pk=new.pk).price),
    }))
    raise SystemExit(0)
raise SystemExit(f"unknown command {command}")
"""


class Project(OrmApp):
    """The Django project in ``root``: ``run.py`` runs its commands and ``manage.py``'s."""

    def __init__(self, root: Path, sqlite: Path, pg_dsn: str) -> None:
        super().__init__(root, sqlite, {"PG": pg_dsn})

    def manage(self, db: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.call(db, "manage", *args)


def _project(tmp_path: Path, pg_dsn: str) -> Project:
    root = tmp_path / "proj"
    (root / "shop" / "migrations").mkdir(parents=True)
    (root / "settings.py").write_text(textwrap.dedent(SETTINGS))
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "migrations" / "__init__.py").write_text("")
    (root / "shop" / "models.py").write_text(textwrap.dedent(MODELS))
    (root / "run.py").write_text(textwrap.dedent(RUN))
    return Project(root, tmp_path / "app.db", pg_dsn)


def test_django_project_moves_with_every_field_type(tmp_path: Path, pg_dsn: str) -> None:
    proj = _project(tmp_path, pg_dsn)
    made = proj.manage("sqlite", "makemigrations", "shop", "--verbosity", "0")
    assert made.returncode == 0, made.stderr
    assert proj.manage("sqlite", "migrate", "--verbosity", "0").returncode == 0
    proj.run("sqlite", "seed")
    to_wal(proj.sqlite)
    sqlite_before = json.loads(proj.run("sqlite", "dump"))
    # The app's own migrations create the PostgreSQL schema (and seed content types and permissions).
    migrated = proj.manage("pg", "migrate", "--verbosity", "0")
    assert migrated.returncode == 0, migrated.stderr
    # Django's migrate seeded django_content_type and auth_permission: existing mode asks before emptying them.
    move_under_writes(proj, tmp_path, pg_dsn, seeded="django_content_type")
    # Every row, read through the ORM from both databases: the same Python values.
    on_sqlite = json.loads(proj.run("sqlite", "dump"))
    on_pg = json.loads(proj.run("pg", "dump"))
    differences = [
        (label, i, field, row[field], on_pg[label][i].get(field))
        for label, rows in on_sqlite.items()
        for i, row in enumerate(rows)
        for field in row
        if i >= len(on_pg[label]) or row[field] != on_pg[label][i].get(field)
    ]
    assert differences == []
    assert on_sqlite == on_pg
    assert len(on_pg["shop.Item"]) > len(sqlite_before["shop.Item"])
    prices = [row["price"] for row in on_pg["shop.Item"][:3]]
    assert prices == ["Decimal('30475227.150471')", "Decimal('12345678901234.600000')", "Decimal('99999999.000000')"]
    # Django agrees the schema is its own, sequences continue, a user logs in.
    check = proj.manage("pg", "migrate", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    after = json.loads(proj.run("pg", "after"))
    assert after["item"] > after["max_item"]
    assert after["user"] == "ada"
    assert after["price"] == "1.500000"


def _rows(pg_dsn: str, sqlite_path: Path, table: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Every row of ``table`` on both sides, PostgreSQL's columns in its order (Django's SQLite order differs)."""
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        names = [r[0] for r in conn.execute(f"SELECT * FROM {table} LIMIT 0").description or ()]
        select = f"SELECT {', '.join(names)} FROM {table} ORDER BY 1"
        on_pg = [tuple(r) for r in conn.execute(select)]
    with sqlite3.connect(sqlite_path) as lite:
        on_sqlite = [tuple(r) for r in lite.execute(select)]
    lite.close()
    return on_sqlite, on_pg


def test_rows_the_migrations_seeded_are_replaced_as_the_refusal_says(tmp_path: Path, pg_dsn: str) -> None:
    """Django's ``migrate`` seeds content types and permissions in PostgreSQL: the first existing-mode snapshot
    stops on one line that names those tables and the flag; the same command with that flag loads SQLite's
    rows in their place (ids included) and keeps the app's schema and its migration history."""
    proj = _project(tmp_path, pg_dsn)
    assert proj.manage("sqlite", "makemigrations", "shop", "--verbosity", "0").returncode == 0
    assert proj.manage("sqlite", "migrate", "--verbosity", "0").returncode == 0
    proj.run("sqlite", "seed")
    with sqlite3.connect(proj.sqlite) as lite:  # SQLite's content types now differ from the ones PG is seeded with
        lite.execute("INSERT INTO django_content_type (app_label, model) VALUES ('legacy', 'thing')")
    lite.close()
    assert proj.manage("pg", "migrate", "--verbosity", "0").returncode == 0
    history = _rows(pg_dsn, proj.sqlite, "django_migrations")[1]
    seeded = _rows(pg_dsn, proj.sqlite, "django_content_type")
    assert seeded[1]
    assert seeded[0] != seeded[1]
    args = ("snapshot", "--source", str(proj.sqlite), "--target", pg_dsn, "--mode", "existing")
    first = replicator(*args, cwd=tmp_path)
    assert first.returncode == 2, first.stderr
    (line,) = [x for x in first.stderr.splitlines() if x.startswith("error:")]
    assert "already hold rows: auth_permission, django_content_type" in line
    hinted = re.search(r"rerun the same command with (--[a-z-]+)", line)
    assert hinted is not None, line
    assert _rows(pg_dsn, proj.sqlite, "django_content_type")[1] == seeded[1]  # the refusal wrote nothing
    second = replicator(*args, hinted.group(1), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    for table in ("django_content_type", "auth_permission", "auth_group_permissions", "auth_user_groups"):
        on_sqlite, on_pg = _rows(pg_dsn, proj.sqlite, table)
        assert on_sqlite == on_pg, table
    assert _rows(pg_dsn, proj.sqlite, "django_migrations")[1] == history  # PostgreSQL's own history, untouched
    check = proj.manage("pg", "migrate", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
