"""The helper's twin read transaction (replicator/load/twin.py): one SQLite state read by both processes,
proved by ``PRAGMA data_version``; a dominant table's rowid ranges read by whichever process is free."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from checkpoints import audit, store
from replicator.load import snapshot, twin
from replicator.state.identity import source_identity
from replicator.stream.worker import Worker
from tests.load.test_snapshot_share import FETCH, SIZES, App, Hook, by_table, cfg, over_threshold
from tests.support.compare import assert_same, compare_table
from triggers import install


def held_count(table: str) -> int | None:
    """In the helper: the rows of ``table`` its twin read transaction sees (None: it holds none)."""
    conn = twin.held()
    return None if conn is None else int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])


def insert_small(path: Path, n: int = 1) -> None:
    """Another connection commits ``n`` rows into ``small`` (a table no dominant-table range touches)."""
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        for _ in range(n):
            writer.execute("INSERT INTO small (label) VALUES ('written meanwhile')")
    finally:
        writer.close()


def test_pair_gives_the_helper_the_same_state_as_the_main_transaction(tmp_path: Path) -> None:
    path = over_threshold(tmp_path / "app.db")
    conf = cfg()
    planning = snapshot.open_source(path, conf)
    helper = snapshot.Helper(conf, None)
    try:
        insert_small(path)  # after the plan's transaction: the pair is newer than it
        conn, pairing = twin.pair(planning, path, conf, helper)
        assert (pairing.twin, pairing.attempts) == (True, 1)
        assert conn is not planning
        insert_small(path)  # after the pair: neither twin sees it
        assert count(conn, "small") == helper.pool.submit(held_count, "small").result() == SIZES["small"] + 1
        assert count(planning, "small") == SIZES["small"]
        now = sqlite3.connect(path)
        assert count(now, "small") == SIZES["small"] + 2  # the control: the file moved on
        now.close()
        conn.close()
    finally:
        helper.close()
        planning.close()


def test_a_commit_inside_the_window_is_caught_and_no_twin_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planted race: another connection commits right after the main transaction opens, before
    the helper opens its own, on every try. The two would see different states: no pair is made."""
    path = over_threshold(tmp_path / "app.db")
    conf = cfg()
    opened = snapshot.open_source

    def open_then_commit(source: Path, config: Any) -> sqlite3.Connection:
        conn = opened(source, config)
        insert_small(path)
        return conn

    monkeypatch.setattr(twin, "open_source", open_then_commit)
    planning = snapshot.open_source(path, conf)
    helper = snapshot.Helper(conf, None)
    try:
        conn, pairing = twin.pair(planning, path, conf, helper)
        assert conn is planning
        assert (pairing.twin, pairing.attempts) == (False, twin.ATTEMPTS)
        assert "committed" in pairing.reason
        assert helper.pool.submit(held_count, "small").result() is None
    finally:
        helper.close()
        planning.close()


def test_a_schema_changed_since_the_plan_keeps_the_planning_transaction(tmp_path: Path) -> None:
    path = over_threshold(tmp_path / "app.db")
    conf = cfg()
    planning = snapshot.open_source(path, conf)
    helper = snapshot.Helper(conf, None)
    try:
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("ALTER TABLE small ADD COLUMN added TEXT")  # a migration after the plan was made
        writer.close()
        conn, pairing = twin.pair(planning, path, conf, helper)
        assert (conn is planning, pairing.twin) == (True, False)
        assert "schema changed" in pairing.reason
    finally:
        helper.close()
        planning.close()


def test_with_a_twin_every_table_is_the_state_at_the_mark_and_the_helper_reads_ranges(
    tmp_path: Path, pg_dsn: str, pg: Any
) -> None:
    """The app starts committing when the first table starts loading, and commits between every two
    batches after: a witness transaction opened just before it started sees the state at the mark,
    and PostgreSQL must hold exactly that in every table: the ranges the helper read, the ones read
    here, and the helper's whole tables (before twins, those came from its own later transactions)."""
    path = over_threshold(tmp_path / "app.db")
    install.install(path)
    conf = cfg()
    app = App(path)
    witness: list[sqlite3.Connection] = []

    class Starting(Hook):
        def start(self, table: str, total: int) -> None:
            if not witness:
                witness.append(snapshot.open_source(path, conf))
                app.start()
            super().start(table, total)

    reader = snapshot.open_source(path, conf)
    helper = snapshot.Helper(conf, None)
    hook = Starting(helper, on_batch=lambda table, rows: app.wait_for_commits(app.commits + 2), wait_for={"event"})
    try:
        result = snapshot.snapshot_from(
            reader,
            source_identity(path),
            pg_dsn,
            conf,
            fetch_rows=FETCH,
            progress=hook,
            helper=helper,
            source_path=path,
        )
        assert result.plan is not None
        for name in SIZES:
            diff = compare_table(witness[0], pg, result.plan, result.plan.table(name))
            assert (diff.missing, diff.extra) == ([], []), name
    finally:
        app.stop.set()
        if app.is_alive():
            app.join()
        helper.close()
        reader.close()
        for conn in witness:
            conn.close()
    assert app.error is None
    assert app.commits >= 50
    event = by_table(result)["event"]
    assert event.helper_ranges > 0, event
    assert 0 < event.helper_rows < event.rows, event
    now = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:  # the control: the app did change the tables while they loaded
        assert compare_table(now, pg, result.plan, result.plan.table("event")).missing
    finally:
        now.close()
    run = Worker(path, pg_dsn, cfg()).run(until_drained=True)
    assert run.applied_seq is not None
    assert run.applied_seq > (result.snapshot_seq or 0)
    assert_same(path, pg, result.plan)
    assert audit.verify(store.records(pg)) == []
