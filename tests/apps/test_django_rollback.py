"""A real Django project goes to PostgreSQL, writes there in the rollback window, comes back to SQLite with
nothing lost, and moves forward again: issue 20's acceptance test, through the CLI as the runbook runs it.

The project (settings as in ``test_django_e2e``: ``DB=sqlite`` or ``DB=pg``) has categories, tags whose key is
their code, items with every field type the write-back must spell in Django's SQLite form (DateTimeField
with microseconds, DecimalField, BooleanField, JSONField, UUIDField, non-ASCII TextField, ...), notes that
cascade from items, and an items-tags M2M. After ``cutover`` each Django process writes on PostgreSQL:
creates with auto ids, updates of every field type, deletes with cascades, a primary key change, a swap of
UNIQUE values, M2M adds and removes, a ``bulk_create``. ``replicator run --until-drained`` carries that
back into the fenced SQLite file, ``replicator rollback`` refuses while values Django wrote on PostgreSQL
cannot be held by Django's SQLite form, naming table, key and column: a microsecond in a DateTimeField whose
SQLite rows are all at whole seconds (the form learned has no fraction; changed in PostgreSQL, it goes) and
a 20-digit price (SQLite's REAL keeps 15; ``replicator quarantine ack`` accepts losing it). Django on SQLite
then reads every row as Django on PostgreSQL read it just before (the acknowledged row as SQLite had it),
writes there again, and is refused on PostgreSQL; ``snapshot --replace``, ``run --until-drained``,
``verify`` and a second ``cutover`` migrate it forward again.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.apps.test_django_e2e import SETTINGS, Project
from tests.support.cli import replicator
from tests.support.ormapp import to_wal

pytestmark = pytest.mark.e2e

pytest.importorskip("django", reason="Django is a test dependency: pip install -e '.[test]'")

MODELS = """
import uuid
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=50, unique=True)


class Tag(models.Model):
    code = models.CharField(max_length=20, primary_key=True)
    label = models.TextField(blank=True)


class Item(models.Model):
    category = models.ForeignKey(Category, on_delete=models.CASCADE, null=True)
    name = models.CharField(max_length=100)
    notes = models.TextField(blank=True)
    qty = models.IntegerField(default=0)
    big = models.BigIntegerField(default=0)
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
    tags = models.ManyToManyField(Tag, blank=True)


class Note(models.Model):
    item = models.ForeignKey(Item, on_delete=models.CASCADE)
    body = models.TextField()
    at = models.DateTimeField()
"""

#: One script, many commands: python run.py COMMAND (DB=sqlite|pg in the environment).
RUN = """
import datetime, decimal, json, os, sys, uuid
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
from shop.models import Category, Item, Note, Tag

UTC = datetime.timezone.utc
D = decimal.Decimal
T0 = datetime.datetime(2024, 3, 5, 6, 7, 8, tzinfo=UTC)
DAY = datetime.date(2024, 3, 1)


def item(i, category, **fields):
    values = dict(
        category=category, name=f"item {i}", notes="ünïcode ✓ line", qty=i - 3, big=2**62 + i,
        active=bool(i % 2), price=D("19.990000") + i, ratio=i / 3, day=DAY + datetime.timedelta(days=i),
        at=T0 + datetime.timedelta(microseconds=i * 1001), clock=datetime.time(1, 2, 3, i),
        took=datetime.timedelta(days=i, seconds=2, microseconds=-i), uid=uuid.UUID(int=i + 1),
        ip="192.168.0.%d" % i, data={"a": [1, 2.5], "ü": None, "i": i}, blob=bytes([0, 1, 255, i]),
    )
    values.update(fields)
    return Item(**values)


if command == "seed":
    fruit, tools, misc = (Category.objects.create(name=n) for n in ("fruit", "tools", "misc"))
    tags = [Tag.objects.create(code=c, label=f"label {c}") for c in ("red", "green", "blue", "spare")]
    for i in range(8):
        it = item(i, (fruit, tools, misc)[i % 3])
        it.save()
        it.tags.set(tags[: i % 4])
        Note.objects.create(item=it, body=f"note {i} ✓", at=T0 + datetime.timedelta(seconds=i))
    Item.objects.create(name="bare", price=D("0"), at=T0)  # whole second: Django stores no fraction
    User.objects.create_user("ada", "ada@example.com", "secret-pw", first_name="Ada")
    Group.objects.create(name="staff").permissions.add(*Permission.objects.filter(codename__endswith="_item"))
    raise SystemExit(0)

if command == "window1":  # Django's first writes on PostgreSQL after the cutover
    fruit, tools = Category.objects.get(name="fruit"), Category.objects.get(name="tools")
    new = item(20, fruit, name="créé après ✓", at=datetime.datetime(2025, 1, 2, 3, 4, 5, 600007, tzinfo=UTC),
               price=D("1234.500001"), active=False, data={"nested": {"k": [True, None, 1.25]}, "é": "ü"},
               uid=uuid.uuid4(), notes="第二 ✓\\nmulti-line")
    new.save()  # an auto id from PostgreSQL's sequence
    new.tags.add("red", "blue")
    # Every note SQLite holds is at a whole second: their column's learned form has no fraction digits, and
    # this microsecond cannot be written back (the form of a CURRENT_TIMESTAMP column, which may be read so).
    late = Note.objects.create(item=new, body="on postgres", at=datetime.datetime(2025, 1, 2, 3, 4, 5, 1, tzinfo=UTC))
    it = Item.objects.get(name="item 1")
    it.at = datetime.datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    it.price = D("-0.000001")
    it.active = not it.active
    it.data = {"list": [1, "two", 3.5], "unicode": "ßü→", "null": None}
    it.uid = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")
    it.notes = "mis à jour — ☃"
    it.ratio = -1.0 / 7
    it.day = datetime.date(1999, 12, 31)
    it.clock = datetime.time(23, 59, 59, 999999)
    it.took = datetime.timedelta(microseconds=1)
    it.ip = "2001:db8::7"
    it.blob = b"\\x00\\xfe"
    it.save()
    Tag.objects.filter(pk="spare").update(code="ochre")  # a primary key change (no item is linked to it)
    Tag.objects.filter(pk="ochre").update(label="renamed ✓")
    it.tags.remove("red")  # M2M: a link removed, one added
    it.tags.add("ochre")
    Item.objects.filter(name="item 2").update(at=T0, data=None, qty=-5)  # a whole second, a SQL NULL
    Category.objects.get(name="misc").delete()  # cascades: its items, their notes and M2M links
    with transaction.atomic():  # two categories trade their UNIQUE names
        Category.objects.filter(pk=fruit.pk).update(name="tmp")
        Category.objects.filter(pk=tools.pk).update(name="fruit")
        Category.objects.filter(pk=fruit.pk).update(name="tools")
    ada = authenticate(username="ada", password="secret-pw")
    ada.set_password("new-pw"); ada.last_login = datetime.datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    ada.save()
    from django.contrib.sessions.backends.db import SessionStore
    store = SessionStore(); store["user"] = "ada ✓"; store.create()
    print(json.dumps({"note": late.pk}))
    raise SystemExit(0)

if command == "window2":  # a later process: bulk_create, an item's key moved, more M2M
    tools = Category.objects.get(name="tools")
    made = Item.objects.bulk_create([item(30 + i, tools, uid=uuid.uuid4(), name=f"bulk {i}") for i in range(5)])
    Note.objects.bulk_create([Note(item=m, body=f"bulk note {m.pk}", at=T0) for m in made])
    made[0].tags.add("ochre", "green")
    Tag.objects.get(pk="blue").item_set.clear()
    moved = Item.objects.get(name="bare")  # no note, no tag: its id can move
    Item.objects.filter(pk=moved.pk).update(id=10_000)
    Item.objects.filter(pk=made[4].pk).delete()
    User.objects.create_user("bob", "bob@example.com", "pw-bob")
    Group.objects.get(name="staff").user_set.add(User.objects.get(username="bob"))
    print(json.dumps({"bulk_ids": [m.pk for m in made]}))
    raise SystemExit(0)

if command == "unholdable":  # a price Django's SQLite form (a REAL: 15 digits) cannot hold
    it = Item.objects.get(name="item 4")
    it.price = D("12345678901234.567891")
    it.save(update_fields=["price"])
    print(it.pk)
    raise SystemExit(0)

if command == "holdprice":
    Item.objects.filter(name="item 4").update(price=D("12345.678901"))
    raise SystemExit(0)

if command == "hold":  # the note's time at a whole second: Django's SQLite form for that column holds it
    Note.objects.filter(pk=int(sys.argv[2])).update(at=datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    raise SystemExit(0)

if command == "write":  # the app writes again: an item, a link, a note
    fruit = Category.objects.get(name="fruit")
    new = item(50, fruit, name=f"after on {os.environ['DB']}", uid=uuid.uuid4())
    try:
        with transaction.atomic():
            new.save()
            new.tags.add("green")
            Note.objects.create(item=new, body="written after", at=T0)
    except DatabaseError as exc:
        print(json.dumps({"refused": str(exc).splitlines()[0]}))
        raise SystemExit(0)
    print(json.dumps({"item": new.pk, "max_before": max(Item.objects.exclude(pk=new.pk).values_list("pk", flat=True)),
                      "user": getattr(authenticate(username="ada", password="new-pw"), "username", None)}))
    raise SystemExit(0)


def plain(value):
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, (dict, list)):  # JSONField: equal dicts, whatever the key order jsonb keeps
        return "json " + json.dumps(value, sort_keys=True)
    return repr(value)


if command == "dump":
    out = {}
    models = (Category, Tag, Item, Item.tags.through, Note, User, Group, Permission, ContentType, Session)
    for model in models:
        rows = []
        for obj in sorted(model.objects.all(), key=lambda o: o.pk):  # Python's order: no collation differs
            row = {f.attname: plain(getattr(obj, f.attname)) for f in model._meta.concrete_fields}
            if model is Item:
                row["tags"] = sorted(obj.tags.values_list("code", flat=True))
            if model is Group:
                row["permissions"] = sorted(obj.permissions.values_list("codename", flat=True))
                row["users"] = sorted(obj.user_set.values_list("username", flat=True))
            rows.append(row)
        out[model._meta.label] = rows
    print(json.dumps(out, sort_keys=True))
    raise SystemExit(0)
raise SystemExit(f"unknown command {command}")
"""


def _project(tmp_path: Path, pg_dsn: str) -> Project:
    root = tmp_path / "proj"
    (root / "shop" / "migrations").mkdir(parents=True)
    (root / "settings.py").write_text(textwrap.dedent(SETTINGS))
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "migrations" / "__init__.py").write_text("")
    (root / "shop" / "models.py").write_text(textwrap.dedent(MODELS))
    (root / "run.py").write_text(textwrap.dedent(RUN))
    return Project(root, tmp_path / "app.db", pg_dsn)


def _cli(tmp_path: Path, *args: str, code: int = 0) -> str:
    """``python -m replicator ARGS`` with the project's files, which must exit ``code``: its stderr."""
    done = replicator(*args, cwd=tmp_path)
    assert done.returncode == code, (args, done.returncode, done.stdout[-2000:], done.stderr[-4000:])
    return done.stderr


def _error_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def _differences(want: dict[str, Any], got: dict[str, Any]) -> list[tuple[str, str, str, object, object]]:
    """(model, pk, field, wanted, got) for every field that differs (values as ``repr`` in the dumps); a
    missing or extra row as field '*'."""
    out: list[tuple[str, str, str, object, object]] = []
    for label in sorted(set(want) | set(got)):
        mine = {_pk(r): r for r in want.get(label, [])}
        theirs = {_pk(r): r for r in got.get(label, [])}
        for pk in sorted(set(mine) | set(theirs)):
            a, b = mine.get(pk), theirs.get(pk)
            if a is None or b is None:
                out.append((label, pk, "*", a, b))
                continue
            out.extend((label, pk, f, a.get(f), b.get(f)) for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f))
    return out


def _pk(row: dict[str, Any]) -> str:
    return str(row.get("id", row.get("code", row.get("session_key"))))


def _carried_back(tmp_path: Path, at: tuple[str, ...], pg_dsn: str) -> None:
    """``run --until-drained``: afterwards PostgreSQL's reverse journal is empty (pruned once written back),
    even while a transaction elsewhere in the cluster (a parallel test's) holds the reverse horizon back."""
    import psycopg

    _cli(tmp_path, "run", *at, "--until-drained")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM replicator.reverse_journal").fetchone() == (0,)


def test_django_writes_on_postgres_roll_back_to_sqlite_and_move_forward_again(tmp_path: Path, pg_dsn: str) -> None:
    proj = _project(tmp_path, pg_dsn)
    src = str(proj.sqlite)
    made = proj.manage("sqlite", "makemigrations", "shop", "--verbosity", "0")
    assert made.returncode == 0, made.stderr
    assert proj.manage("sqlite", "migrate", "--verbosity", "0").returncode == 0
    proj.run("sqlite", "seed")
    to_wal(proj.sqlite)
    migrated = proj.manage("pg", "migrate", "--verbosity", "0")
    assert migrated.returncode == 0, migrated.stderr

    # Forward: the runbook, as in test_django_e2e (cutting over under the app's writes is that test's business).
    at = ("--source", src, "--target", pg_dsn)
    _cli(tmp_path, "capture", "install", "--source", src)
    _cli(tmp_path, "snapshot", *at, "--mode", "existing", "--replace")  # migrate seeded content types
    _cli(tmp_path, "cutover", *at, "--no-backup", "--certificate", str(tmp_path / "cutover.json"))

    # The rollback window: Django writes on PostgreSQL; `run` carries it back into SQLite, fenced for the app.
    late_note = json.loads(proj.run("pg", "window1"))["note"]
    _carried_back(tmp_path, at, pg_dsn)
    assert "fenced" in json.loads(proj.run("sqlite", "write"))["refused"]
    bulk_ids = json.loads(proj.run("pg", "window2"))["bulk_ids"]
    assert len(bulk_ids) == 5
    assert all(isinstance(i, int) for i in bulk_ids)
    refused_pk = int(proj.run("pg", "unholdable"))
    _carried_back(tmp_path, at, pg_dsn)

    # Two values Django's SQLite forms cannot hold: rollback refuses, naming each one's table, key and column.
    line = _error_line(_cli(tmp_path, "rollback", *at, code=3))
    assert line.startswith("error: 2 value(s) PostgreSQL holds were not written back"), line
    assert f"shop_note {{'id': {late_note}}} column at:" in line, line
    assert f"shop_item {{'id': {refused_pk}}} column price:" in line, line
    assert "quarantine ack" in line, line
    # One is changed in PostgreSQL to a value the form holds (the hint's first way), the other acknowledged.
    proj.run("pg", "hold", str(late_note))
    line = _error_line(_cli(tmp_path, "rollback", *at, code=3))
    assert line.startswith("error: 1 value(s)"), line
    assert "shop_note" not in line, line
    on_pg = json.loads(proj.run("pg", "dump"))  # what Django reads on PostgreSQL just before going back
    items = {r["name"] for r in on_pg["shop.Item"]}
    assert items >= {"'créé après ✓'", "'bulk 0'", "'bulk 3'", "'bare'"}
    assert "'bulk 4'" not in items
    assert not [r for r in on_pg["shop.Item"] if r["category_id"] == "3"]  # misc's items went with it
    _cli(tmp_path, "quarantine", "ack", *at, "--table", "shop_item")
    _cli(tmp_path, "rollback", *at, "--certificate", str(tmp_path / "rollback.json"))
    certificate = json.loads((tmp_path / "rollback.json").read_text())
    (acknowledged,) = certificate["acknowledged_refusals"]
    assert acknowledged.startswith(f"shop_item {{'id': {refused_pk}}} price:"), acknowledged
    statuses = {t["table"]: t["status"] for t in certificate["tables"]}
    assert statuses.pop("shop_item") == "acknowledged"
    assert set(statuses.values()) == {"match"}

    # Django on SQLite reads every row as Django on PostgreSQL read it; the acknowledged price as SQLite had it.
    on_sqlite = json.loads(proj.run("sqlite", "dump"))
    assert _differences(on_pg, on_sqlite) == [
        ("shop.Item", repr(refused_pk), "price", "Decimal('12345678901234.567891')", "Decimal('23.990000')")
    ]
    assert sum(len(rows) for rows in on_sqlite.values()) > 80  # (permissions, content types...: all compared)

    # The app works on SQLite again (ids after PostgreSQL's, the password set there); PostgreSQL refuses writes.
    wrote = json.loads(proj.run("sqlite", "write"))
    assert wrote["item"] > wrote["max_before"] >= 10_000
    assert wrote["user"] == "ada"
    assert "rolled back to SQLite" in json.loads(proj.run("pg", "write"))["refused"]

    # Forward again: reload, stream the app's writes, verify, cut over a second time.
    replaced = replicator("snapshot", *at, "--mode", "existing", "--replace", cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    proj.run("sqlite", "write")
    _cli(tmp_path, "run", *at, "--until-drained")
    _cli(tmp_path, "verify", *at)
    _cli(tmp_path, "cutover", *at, "--no-backup", "--certificate", str(tmp_path / "cutover2.json"))
    assert _differences(json.loads(proj.run("sqlite", "dump")), json.loads(proj.run("pg", "dump"))) == []
    assert "item" in json.loads(proj.run("pg", "write"))  # the second cutover left PostgreSQL writable
