"""A fenced file seen through real ORMs: every write raises, none loops or silently succeeds; reads work.

The fence used to ``RAISE(ABORT, ...)``, which SQLite reports as SQLITE_CONSTRAINT and Python as
``IntegrityError``: Django's ``SessionStore.create()`` took it for a session-key collision and retried
forever, ``get_or_create`` went looking for a row another process had "just inserted". Each ORM runs
in a subprocess of its own (Django's settings are process-global), bounded by a timeout, and reports
what the app saw as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from triggers import fence

django = pytest.importorskip("django", reason="Django is a test dependency: pip install -e '.[test]'")
sqlalchemy = pytest.importorskip("sqlalchemy")

DJANGO_APP = textwrap.dedent(
    """
    import json, sys
    import django
    from django.conf import settings
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sys.argv[1]}},
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions"],
        USE_TZ=True, SECRET_KEY="test", PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )
    django.setup()
    from django.core.management import call_command
    from django.contrib.auth.models import Group, User
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import DatabaseError, IntegrityError
    if sys.argv[2] == "create":
        call_command("migrate", verbosity=0)
        User.objects.create_user("ada", password="pw")
        Group.objects.create(name="staff")
        raise SystemExit(0)
    seen = {}
    def attempt(name, fn):
        try:
            fn()
            seen[name] = "ok"
        except IntegrityError as exc:
            seen[name] = "IntegrityError: " + str(exc)
        except DatabaseError as exc:
            seen[name] = type(exc).__name__ + ": " + str(exc)
    attempt("session_create", lambda: SessionStore().create())
    attempt("get_or_create", lambda: Group.objects.get_or_create(name="editors"))
    def save():
        user = User.objects.get(username="ada")
        user.first_name = "Ada"
        user.save()
    attempt("save", save)
    attempt("delete", lambda: Group.objects.filter(name="staff").delete())
    seen["read"] = User.objects.get(username="ada").first_name
    seen["groups"] = sorted(Group.objects.values_list("name", flat=True))
    print(json.dumps(seen))
    """
)

SQLALCHEMY_APP = textwrap.dedent(
    """
    import json, sys
    from sqlalchemy import create_engine, String, select, exc
    from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
    class Base(DeclarativeBase):
        pass
    class Study(Base):
        __tablename__ = "study"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(100), unique=True)
    engine = create_engine("sqlite:///" + sys.argv[1])
    if sys.argv[2] == "create":
        Base.metadata.create_all(engine)
        with Session(engine) as s:
            s.add(Study(id=1, name="first"))
            s.commit()
        raise SystemExit(0)
    seen = {}
    def attempt(name, fn):
        try:
            with Session(engine) as s:
                fn(s)
                s.commit()
            seen[name] = "ok"
        except exc.IntegrityError as e:
            seen[name] = "IntegrityError: " + str(e.orig)
        except exc.DBAPIError as e:
            seen[name] = type(e).__name__ + ": " + str(e.orig)
    attempt("add", lambda s: s.add(Study(id=2, name="second")))
    attempt("update", lambda s: setattr(s.get(Study, 1), "name", "renamed"))
    attempt("delete", lambda s: s.delete(s.get(Study, 1)))
    with Session(engine) as s:
        seen["read"] = [row.name for row in s.scalars(select(Study))]
    print(json.dumps(seen))
    """
)


def run_app(script: str, path: Path, action: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", script, str(path), action], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout) if action == "write" else {}


def test_django_writes_on_a_fenced_file_raise_operational_errors(tmp_path: Path) -> None:
    path = tmp_path / "django.db"
    run_app(DJANGO_APP, path, "create")
    fence.fence(path, message_extra="the app now uses postgresql://db/app")
    seen = run_app(DJANGO_APP, path, "write")  # the timeout catches a retry loop
    for name in ("session_create", "get_or_create", "save", "delete"):
        assert seen[name].startswith("OperationalError: "), (name, seen[name])
        assert "writes are fenced; the app now uses postgresql://db/app" in seen[name]
    assert seen["read"] == ""  # the save did not happen, and reading works
    assert seen["groups"] == ["staff"]


def test_sqlalchemy_writes_on_a_fenced_file_raise_operational_errors(tmp_path: Path) -> None:
    path = tmp_path / "sa.db"
    run_app(SQLALCHEMY_APP, path, "create")
    fence.fence(path)
    seen = run_app(SQLALCHEMY_APP, path, "write")
    for name in ("add", "update", "delete"):
        assert seen[name].startswith("OperationalError: "), (name, seen[name])
        assert "writes are fenced" in seen[name]
    assert seen["read"] == ["first"]
