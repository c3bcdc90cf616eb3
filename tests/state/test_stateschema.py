"""The state schema's one home: a version row, the upgrade from the layout before versions, refusals, races."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
from structlog.testing import capture_logs

from checkpoints import audit, store
from replicator.errors import EXIT_USAGE
from replicator.state import reverse, stateschema
from replicator.state.stateschema import VERSION, NewerStateSchema
from replicator.state.store import StateStore
from tests.support.compare import check_same, drain
from tests.support.paths import FIXTURES, ROOT
from tests.support.source import app, make_source

UNVERSIONED = FIXTURES / "state_schema_unversioned.sql"
SCHEMA = "replicator"

#: How the code names a state table in SQL: ``{}.name`` / ``{schema}.name`` in a composed query,
#: ``f"{...schema...}.name"`` in a to_regclass argument, ``sql.Identifier(<schema variable>, "name")``,
#: ``<state store>.table("name")`` and ``<state store>.has_table("name")``.
_REFERENCES = (
    r"\{(?:schema)?\}\.(\w+)",
    r"\{[^{}\"]*schema[^{}\"]*\}\.(\w+)",
    r"Identifier\([\w.]*schema[\w.]*, \"(\w+)\"\)",
    r"(?:state_store|self|StateStore\([^()]*\))\.(?:has_)?table\(\"(\w+)\"\)",
)


def tables_the_code_uses() -> dict[str, set[str]]:
    """Each state table named in replicator/ and checkpoints/ outside the schema's home, with the files naming it."""
    found: dict[str, set[str]] = {}
    for package in ("replicator", "checkpoints"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "stateschema.py":
                continue
            text = path.read_text()
            for pattern in _REFERENCES:
                for match in re.finditer(pattern, text):
                    found.setdefault(match.group(1), set()).add(path.name)
    return found


def layout(conn: psycopg.Connection[Any], schema: str = SCHEMA) -> dict[str, list[tuple[Any, ...]]]:
    """The catalog's description of a schema: columns in order (type, NOT NULL, default, identity),
    constraints and indexes, per table. Two schemas with equal layouts accept the same statements."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for row in conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid), a.attidentity "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum "
        "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.relname, a.attnum",
        (schema,),
    ):
        out.setdefault(row[0], []).append(("column", *row[1:]))
    for row in conn.execute(
        "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
        "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s ORDER BY 1, 2",
        (schema,),
    ):
        out.setdefault(row[0], []).append(("constraint", *row[1:]))
    for row in conn.execute(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1, 2", (schema,)
    ):
        out.setdefault(row[0], []).append(("index", *row[1:]))
    return out


def load_unversioned(dsn: str) -> None:
    """Lay the target out as replicator did before the schema had a version (its own connection:
    the dump empties search_path)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(UNVERSIONED.read_text().encode())


def test_fresh_target_gets_the_current_version(pg: psycopg.Connection[Any]) -> None:
    StateStore(pg, SCHEMA).ensure()
    assert StateStore(pg, SCHEMA).recorded_version() == VERSION
    row = pg.execute("SELECT version, upgraded_at IS NOT NULL FROM replicator.schema_version").fetchone()
    assert row == (VERSION, True)
    assert sorted(layout(pg)) == sorted(stateschema.TABLES)


def test_version_1_is_the_layout_before_versions(pg_dsn: str, pg: psycopg.Connection[Any], pg_server: str) -> None:
    """The dump of the schema the unversioned code laid out equals a fresh ensure's, table for table."""
    from tests.support.pgserver import fresh_database

    with capture_logs() as created:
        StateStore(pg, SCHEMA).ensure()
    assert created == []  # a new target's creation is no news
    fresh = layout(pg)
    with fresh_database(pg_server) as old_dsn, psycopg.connect(old_dsn, autocommit=True) as old:
        load_unversioned(old_dsn)
        before = layout(old)
        assert StateStore(old, SCHEMA).recorded_version() == 0
        with capture_logs() as upgraded:
            StateStore(old, SCHEMA).ensure()
        assert [(e["event"], e["from_version"], e["to_version"]) for e in upgraded] == [
            ("state schema upgraded", 0, VERSION)
        ]
        assert StateStore(old, SCHEMA).recorded_version() == VERSION
        after = layout(old)
    later = {"schema_version", *(t for step in stateschema.STEPS[1:] for t in _tables_of(step))}
    assert {k: v for k, v in fresh.items() if k not in later} == before
    assert after == fresh


def _tables_of(step: stateschema.Step) -> tuple[str, ...]:
    """The tables a later step adds (the window's, for step 2; the rollback certificates for step 3, which also
    changes the journal)."""
    return {2: (reverse.JOURNAL, reverse.WINDOW), 3: (reverse.CERTIFICATES,)}[step.version]


def test_older_layout_gains_the_later_columns(pg: psycopg.Connection[Any]) -> None:
    """A target from before the ADD COLUMN upgrades (and before versions) reaches the same layout."""
    StateStore(pg, SCHEMA).ensure()
    fresh = layout(pg)
    pg.execute("DROP TABLE replicator.schema_version")
    pg.execute(
        "ALTER TABLE replicator.runs DROP COLUMN snapshot_seq, DROP COLUMN backend_pid, DROP COLUMN backend_start"
    )
    pg.execute("ALTER TABLE replicator.quarantine DROP COLUMN parent_table, DROP COLUMN parent_key, DROP COLUMN refs")
    pg.execute("DROP TABLE replicator.cutover_certificates, replicator.skipped_tables")
    assert layout(pg) != fresh  # the control: the damage is visible to the comparison
    StateStore(pg, SCHEMA).ensure()
    assert layout(pg) == fresh


def test_version_2s_reverse_journal_becomes_version_3s_entries_kept(pg: psycopg.Connection[Any]) -> None:
    """Version 2 gave the reverse journal an identity ``seq`` and an ``xid8`` xid; version 3 drops the one and
    makes the other a ``bigint`` (each cost every captured app row), keeping the entries and their xids, and adds
    the rollback certificates' table."""
    StateStore(pg, SCHEMA).ensure()
    fresh = layout(pg)
    pg.execute("DROP TABLE replicator.reverse_journal, replicator.rollback_certificates")
    for statement in stateschema._V2_WINDOW[:2]:  # version 2's journal, as it laid it out
        pg.execute(statement.format(schema="replicator"))
    pg.execute("INSERT INTO replicator.reverse_journal (tbl, op, key) VALUES ('t', 'I', '[1]')")
    xid = pg.execute("SELECT xid::text::bigint FROM replicator.reverse_journal").fetchone()
    pg.execute("UPDATE replicator.schema_version SET version = 2")
    assert layout(pg) != fresh  # the control: the old journal is visible to the comparison
    assert reverse.CERTIFICATES not in layout(pg)
    StateStore(pg, SCHEMA).ensure()
    assert layout(pg) == fresh
    assert [c[1:3] for c in layout(pg)[reverse.CERTIFICATES] if c[0] == "column"] == [
        ("cutover", "text"),
        ("stored_at", "timestamp with time zone"),
        ("sha256", "text"),
        ("body", "bytea"),
    ]
    assert StateStore(pg, SCHEMA).recorded_version() == VERSION
    assert pg.execute("SELECT tbl, op, key, xid FROM replicator.reverse_journal").fetchall() == [
        ("t", "I", [1], xid[0] if xid else None)
    ]
    with pg.transaction():  # the new default is the writing transaction's id, as a bigint
        pg.execute("INSERT INTO replicator.reverse_journal (tbl, op, key) VALUES ('t', 'U', '[1]')")
        now = pg.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        assert pg.execute("SELECT max(xid) FROM replicator.reverse_journal").fetchone() == now


def test_target_laid_out_before_versions_is_upgraded_and_keeps_working(tmp_path: Path, pg_dsn: str) -> None:
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL);")
    drain(src, pg_dsn)  # snapshot, then apply
    db = app(src)
    db.execute("INSERT INTO parent VALUES (3, 'c', 2.0)")
    drain(src, pg_dsn)
    check_same(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE replicator.schema_version")  # now as the unversioned code left it
        runs = conn.execute("SELECT id, command, status FROM replicator.runs ORDER BY id").fetchall()
        chain = [c.hash for c in store.iter_records(conn)]
        assert StateStore(conn, SCHEMA).recorded_version() == 0
    db.execute("UPDATE parent SET score = 9 WHERE id = 1")
    db.execute("DELETE FROM parent WHERE id = 2")
    drain(src, pg_dsn)  # the daemon's start upgrades, then applies
    check_same(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert StateStore(conn, SCHEMA).recorded_version() == VERSION
        assert conn.execute("SELECT id, command, status FROM replicator.runs ORDER BY id").fetchall() == runs
        records = list(store.iter_records(conn))
        assert [c.hash for c in records][: len(chain)] == chain
        assert len(records) > len(chain)
        assert audit.verify(records) == []
        assert conn.execute("SELECT id, score FROM public.parent ORDER BY id").fetchall() == [(1, 9.0), (3, 2.0)]
    db.close()


def test_newer_version_is_refused_in_one_line(tmp_path: Path, pg_dsn: str, pg: psycopg.Connection[Any]) -> None:
    StateStore(pg, SCHEMA).ensure()
    pg.execute("UPDATE replicator.schema_version SET version = %s", (VERSION + 1,))
    before = layout(pg)
    with pytest.raises(NewerStateSchema, match=f"version {VERSION + 1}, newer than this replicator knows") as caught:
        StateStore(pg, SCHEMA).ensure()
    assert caught.value.exit_code == EXIT_USAGE
    assert "upgrade replicator" in caught.value.hint
    cmd = [sys.executable, "-m", "replicator", "quarantine", "ack", "--target", pg_dsn]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: the state schema replicator is at version {VERSION + 1}")
    assert "upgrade replicator" in proc.stderr
    assert "acknowledged" not in proc.stdout
    status = [sys.executable, "-m", "replicator", "status", "--target", pg_dsn]
    proc = subprocess.run(status, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == EXIT_USAGE, proc.stderr  # status only reads, and reads nothing it would misread
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: the state schema replicator is at version {VERSION + 1}")
    assert layout(pg) == before
    assert StateStore(pg, SCHEMA).recorded_version() == VERSION + 1


def _wait_for_lock_waiter(conn: psycopg.Connection[Any], deadline_s: float = 20.0) -> str:
    """The wait event of the other backend once it blocks on a lock (the test's ordering, not a sleep)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT wait_event FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        ).fetchone()
        if row is not None:
            return str(row[0])
        time.sleep(0.02)
    raise AssertionError("the second session never waited for a lock")


def _race(pg_dsn: str, second: Callable[[psycopg.Connection[Any]], None]) -> tuple[list[BaseException], str]:
    """A first session lays the schema out and holds its transaction open until ``second``, on another
    session, waits on it; then it commits. Returns what ``second`` raised and what it waited for."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                second(conn)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    with psycopg.connect(pg_dsn, autocommit=True) as first, psycopg.connect(pg_dsn, autocommit=True) as watch:
        with first.transaction():
            StateStore(first, SCHEMA).ensure()
            thread.start()
            waited = _wait_for_lock_waiter(watch)
        thread.join(timeout=30)
    assert not thread.is_alive()
    return errors, waited


def test_concurrent_ensures_do_not_fail(pg_dsn: str, pg: psycopg.Connection[Any]) -> None:
    errors, waited = _race(pg_dsn, lambda conn: StateStore(conn, SCHEMA).ensure())
    assert waited == "advisory"
    assert errors == []
    assert StateStore(pg, SCHEMA).recorded_version() == VERSION


def test_without_the_lock_the_same_race_fails(pg_dsn: str) -> None:
    """Negative control: the layout's statements alone, raced the same way, collide in the catalog."""
    errors, waited = _race(pg_dsn, lambda conn: stateschema.STEPS[0].apply(StateStore(conn, SCHEMA)))
    assert waited == "transactionid"
    assert len(errors) == 1
    assert isinstance(errors[0], psycopg.errors.UniqueViolation)


def test_many_concurrent_ensures_on_a_fresh_target(pg_dsn: str, pg: psycopg.Connection[Any]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                barrier.wait()
                StateStore(conn, SCHEMA).ensure()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert pg.execute("SELECT count(*), max(version) FROM replicator.schema_version").fetchone() == (1, VERSION)


class _Counting(psycopg.Connection[Any]):
    """A real connection that counts the statements sent through ``execute``."""

    executed: list[str]

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        self.executed.append(str(query))
        return super().execute(query, params, **kwargs)


def test_ensure_on_a_current_schema_is_one_select(pg_dsn: str, pg: psycopg.Connection[Any]) -> None:
    StateStore(pg, SCHEMA).ensure()
    with _Counting.connect(pg_dsn, autocommit=True) as conn:
        conn.executed = []
        StateStore(conn, SCHEMA).ensure()
        assert len(conn.executed) == 1
        conn.execute("DROP TABLE replicator.schema_version")
        conn.executed = []
        StateStore(conn, SCHEMA).ensure()  # the control: an upgrade is more than one statement
        assert len(conn.executed) > 1


def test_a_missing_schema_does_not_abort_the_callers_transaction(pg: psycopg.Connection[Any]) -> None:
    with pg.transaction():
        assert StateStore(pg, "nowhere").recorded_version() == 0
        assert pg.execute("SELECT 1").fetchone() == (1,)


def test_has_table_tells_a_table_not_laid_out_yet(pg: psycopg.Connection[Any]) -> None:
    """Readers ask before they read (status, verify, the certificate): a schema or table not laid out is
    "nothing yet", and the question aborts nothing."""
    assert not StateStore(pg, SCHEMA).has_table("checkpoints")
    assert not StateStore(pg, 'a "quoted" %s schema').has_table("checkpoints")
    with pg.transaction():
        assert not StateStore(pg, SCHEMA).has_table("checkpoints")
        assert pg.execute("SELECT 1").fetchone() == (1,)
    StateStore(pg, SCHEMA).ensure()
    assert StateStore(pg, SCHEMA).has_table("checkpoints")
    assert not StateStore(pg, SCHEMA).has_table("no_such_table")


def test_every_state_table_the_code_uses_exists_after_ensure(pg: psycopg.Connection[Any]) -> None:
    used = tables_the_code_uses()
    assert {"runs", "checkpoints", "skipped_tables", "cutover_certificates"} <= used.keys()  # the collector reads
    StateStore(pg, SCHEMA).ensure()
    present = set(layout(pg))
    assert set(used) - present == set(), used
    assert present == set(stateschema.TABLES)
    assert set(stateschema.TABLES) - set(used) == {"schema_version"}


def test_no_module_but_the_home_creates_state_tables() -> None:
    """One home: no other module runs CREATE TABLE / ADD COLUMN on the state schema."""
    offenders = []
    for package in ("replicator", "checkpoints"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name == "stateschema.py" or path.as_posix().endswith("checkpoints/store.py"):
                continue
            if re.search(r"CREATE TABLE IF NOT EXISTS|ADD COLUMN IF NOT EXISTS", path.read_text()):
                offenders.append(path.name)
    assert offenders == []
