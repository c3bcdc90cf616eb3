"""Only the tool's exact object names are its own (issue 14 item 4).

An app may name its tables and triggers anything, ``_replicator_audit`` and ``_Replicator_Stats``
included: they are migrated, proven in the certificate and fenced like every other table. Ours are
exactly the journal, the meta table, the fence record table and the triggers named by the rules in
``triggers.names``. The end-to-end test drives the CLI the way a user does: analyze, capture
install, snapshot, app writes on short-lived connections, run, verify, cutover.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.cli import replicator
from tests.support.compare import check_same
from tests.support.source import make_source, write
from triggers import fence, install, names
from triggers.errors import SchemaUnsupported
from triggers.schema import read_schema

FENCED = "writes are fenced"
APP_TABLES = ("users", "_replicator_audit", "_Replicator_Stats", "_replicator_journal_v2")
APP_TRIGGER = "_replicator_audit_users"

SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE _replicator_audit (id INTEGER PRIMARY KEY, user_id INTEGER, what TEXT);
CREATE TABLE "_Replicator_Stats" (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE _replicator_journal_v2 (seq INTEGER PRIMARY KEY, note TEXT);
CREATE TRIGGER _replicator_audit_users AFTER INSERT ON users
BEGIN INSERT INTO _replicator_audit (user_id, what) VALUES (NEW.id, 'created'); END;
INSERT INTO users VALUES (1, 'ann'), (2, 'bob');
INSERT INTO "_Replicator_Stats" VALUES ('logins', 3), ('signups', 2);
INSERT INTO _replicator_journal_v2 VALUES (1, 'an app table whose name starts like our journal');
"""


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def pg_rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f'SELECT * FROM public."{table}" ORDER BY 1').fetchall()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_source(tmp_path / "app.db", SCHEMA, capture=False)


@pytest.mark.e2e
def test_app_tables_with_our_prefix_are_migrated_proven_and_fenced(source: Path, pg_dsn: str, tmp_path: Path) -> None:
    report_file = tmp_path / "analyze.json"
    ok(replicator("analyze", "--source", str(source), "--json", str(report_file), cwd=tmp_path))
    report = json.loads(report_file.read_text())
    assert {t["name"] for t in report["tables"]} == set(APP_TABLES)
    users = next(t for t in report["tables"] if t["name"] == "users")
    assert users["triggers"] == [APP_TRIGGER]

    ok(replicator("capture", "install", "--source", str(source), cwd=tmp_path))
    ok(replicator("snapshot", "--source", str(source), "--target", pg_dsn, cwd=tmp_path))
    assert pg_rows(pg_dsn, "_Replicator_Stats") == [("logins", 3), ("signups", 2)]

    write(source, "INSERT INTO users VALUES (3, 'cy')")  # the app's own trigger writes _replicator_audit
    write(source, "UPDATE \"_Replicator_Stats\" SET v = v + 1 WHERE k = 'signups'")
    write(source, "INSERT INTO _replicator_journal_v2 VALUES (2, 'second')")
    ok(replicator("run", "--source", str(source), "--target", pg_dsn, "--until-drained", cwd=tmp_path))
    assert pg_rows(pg_dsn, "_replicator_audit") == [(1, 1, "created"), (2, 2, "created"), (3, 3, "created")]
    assert pg_rows(pg_dsn, "_Replicator_Stats") == [("logins", 3), ("signups", 3)]
    assert check_same(source, pg_dsn) == {
        "users": 3,
        "_replicator_audit": 3,
        "_Replicator_Stats": 2,
        "_replicator_journal_v2": 2,
    }

    verified = json.loads(ok(replicator("verify", "--source", str(source), "--target", pg_dsn, "--json", cwd=tmp_path)))
    assert {t["table"] for t in verified["tables"]} == set(APP_TABLES)

    cert_path = tmp_path / "cert.json"
    args = ["--source", str(source), "--target", pg_dsn, "--no-backup", "--certificate", str(cert_path)]
    ok(replicator("cutover", *args, cwd=tmp_path))
    cert = json.loads(cert_path.read_text())
    assert {t["table"] for t in cert["tables"]} == set(APP_TABLES)
    assert all(t["sqlite_rows"] == t["pg_rows"] and t["sqlite_digest"] == t["pg_digest"] for t in cert["tables"])

    conn = sqlite3.connect(source)
    try:
        for statement in (
            "INSERT INTO _replicator_audit (user_id, what) VALUES (9, 'late')",
            'UPDATE "_Replicator_Stats" SET v = 0',
            "DELETE FROM _replicator_journal_v2",
        ):
            with pytest.raises(sqlite3.DatabaseError, match=FENCED):
                conn.execute(statement)
        app_trigger = conn.execute("SELECT name FROM sqlite_schema WHERE name = ?", (APP_TRIGGER,)).fetchall()
        assert app_trigger == [(APP_TRIGGER,)]  # never dropped as if it were one of ours
    finally:
        conn.close()


def test_internal_objects_are_exactly_ours(tmp_path: Path) -> None:
    """The one definition: our three tables (any case, as SQLite compares names), SQLite's own, and
    triggers named by our rules on the table they name; nothing merely sharing the prefix."""
    assert names.is_internal_table("_replicator_journal")
    assert names.is_internal_table("_REPLICATOR_META")  # SQLite: the same name as ours
    assert names.is_internal_table("_replicator_fence")
    assert names.is_internal_table("sqlite_sequence")
    for app_name in ("_replicator_audit", "_Replicator_Stats", "_replicator_journal_v2", "_replicator_", "replicator"):
        assert not names.is_internal_table(app_name), app_name

    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    conn.executescript(SCHEMA)
    install.install_on(conn)
    fence.fence_on(conn)
    schema = read_schema(conn)
    assert {t.name for t in schema.tables} == set(APP_TABLES)
    ours = {t.name for t in schema.triggers if names.is_tool_trigger(t.name, t.table)}
    assert ours == {t.name for t in schema.triggers} - {APP_TRIGGER}
    assert names.capture_trigger_name("_replicator_audit", "ins") in ours
    assert names.fence_trigger_name("_Replicator_Stats", "upd") in ours
    assert not names.is_tool_trigger(APP_TRIGGER, "users")
    assert not names.is_tool_trigger("_replicator_ins_users", "other")  # our rule names the table it sits on
    status = install.status_on(conn)
    assert {t.name: t.state for t in status.tables} == dict.fromkeys(APP_TABLES, "captured")
    unfenced = fence.unfence_on(conn)
    assert APP_TRIGGER not in unfenced.dropped
    removed = install.remove_on(conn)
    assert removed.triggers_dropped == 3 * len(APP_TABLES)
    left = conn.execute("SELECT type, name FROM sqlite_schema WHERE type IN ('table', 'trigger') ORDER BY 2").fetchall()
    assert left == sorted([("table", n) for n in APP_TABLES] + [("trigger", APP_TRIGGER)], key=lambda r: r[1])


@pytest.mark.parametrize("table", ["_replicator_journal", "_Replicator_Meta"])
def test_install_refuses_an_app_table_holding_our_name(tmp_path: Path, table: str) -> None:
    """SQLite ignores ASCII case in names: the app's table would be written into as our own."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f'CREATE TABLE "{table}" (id INTEGER PRIMARY KEY, note TEXT)')
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    before = conn.execute("SELECT * FROM sqlite_schema ORDER BY name").fetchall()
    with pytest.raises(SchemaUnsupported) as refused:
        install.install_on(conn)
    assert refused.value.hint
    assert conn.execute("SELECT * FROM sqlite_schema ORDER BY name").fetchall() == before  # nothing half-written
    result = replicator("capture", "install", "--source", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 2, result.stderr
