"""The helper's twin read transaction (replicator/load/twin.py): one SQLite state read by both processes,
proved by ``PRAGMA data_version``; a dominant table's rowid ranges read by whichever process is free."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from checkpoints import audit, store
from replicator import config
from replicator.load import share, snapshot, twin
from replicator.load.source import _select
from replicator.state.identity import source_identity
from replicator.state.store import StateStore
from replicator.stream.worker import Worker
from tests.load.test_snapshot_share import FETCH, SIZES, App, Hook, by_table, cfg, over_threshold
from tests.support.compare import assert_same, compare_table
from triggers import install
from triggers.schema import read_schema


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


WRITER = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=15)
c.execute('BEGIN IMMEDIATE'); c.execute("INSERT INTO t(v) VALUES ('app')")
print('waiting', flush=True)
try:
    c.execute('COMMIT')
except sqlite3.Error:
    pass
"""


def rollback_source(path: Path) -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [("x",)] * 100)
    conn.close()
    return path


@contextmanager
def writer_waiting(tmp_path: Path) -> Iterator[tuple[Path, config.Config, sqlite3.Connection, snapshot.Helper]]:
    """A rollback-journal source, its planning transaction open, a started helper, and an app in another
    process whose COMMIT waits for that transaction, holding PENDING (which refuses every new reader)."""
    path = rollback_source(tmp_path / "rb.db")
    conf = config.load(
        overrides={"snapshot": {"workers": 2, "helper_min_bytes": 0}, "source": {"busy_timeout_ms": 1000}}, environ={}
    )
    planning = snapshot.open_source(path, conf)
    helper = snapshot.Helper(conf, None)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        helper.started.result(timeout=60)
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "waiting"
        time.sleep(0.3)  # the writer's COMMIT now holds PENDING, waiting for the planning transaction
        yield path, conf, planning, helper
    finally:
        planning.close()
        helper.close()
        writer.wait(timeout=30)


def test_a_writer_waiting_to_commit_in_rollback_journal_mode_does_not_fail_the_pairing(tmp_path: Path) -> None:
    """Rollback-journal mode (allowed by snapshot, warned by analyze): the planning transaction holds SHARED, so
    an app's COMMIT waits holding PENDING, and a PENDING lock refuses every *new* SHARED lock: the probe, the
    new main transaction and the helper's twin. The pairing must fall back to the planning transaction (no
    twin), not raise SourceBusy and fail the snapshot: it goes on in its transaction, as before twins."""
    with writer_waiting(tmp_path) as (path, conf, planning, helper):
        conn, pairing = twin.pair(planning, path, conf, helper)
        assert conn is planning
        assert pairing.twin is False
        assert "locked" in pairing.reason
        assert helper.pool.submit(held_count, "t").result() is None


def test_rowid_ranges_near_the_largest_rowid_stay_within_sqlite_integers() -> None:
    """share.ranges_of: equal steps of ceil(span / count) from the smallest rowid; when count**2 exceeds the
    span the later starts run past the largest rowid, and with rowids near 2**63 - 1 the second-to-last
    bound was past SQLite's integers: OverflowError ("Python int too large to convert to SQLite INTEGER").
    (Found in review; needs fetch_rows small relative to MAX_RANGES: API/tests only.)"""
    top = 2**63 - 1
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(top - 20_000 + 1, top + 1)])
    table = read_schema(conn).table("t")
    ranges = share.ranges_of(conn, table, _select("t", ["id", "v"]), fetch_rows=1, rows=20_000)
    assert ranges is not None
    assert all(low >= -(2**63) and high <= top for low, high in ranges.bounds), "a bound outside int64"
    read = sum(len(batch) for low, high in ranges.bounds for batch in share.range_batches(conn, ranges, low, high))
    assert read == 20_000


def test_the_snapshot_of_a_rollback_journal_source_survives_an_app_commit_during_the_plan(
    tmp_path: Path, pg_dsn: str, pg: Any
) -> None:
    """End to end: the app tries to commit while the plan is made (its COMMIT waits for the planning
    transaction, holding PENDING). The pairing's new readers would be refused by the PENDING lock (found in
    review: the whole snapshot failed); the snapshot goes on in the planning transaction, its state."""
    with writer_waiting(tmp_path) as (path, conf, planning, helper):
        result = snapshot.snapshot_from(planning, source_identity(path), pg_dsn, conf, helper=helper, source_path=path)
        assert result.plan is not None
    assert pg.execute("SELECT count(*), count(*) FILTER (WHERE v = 'app') FROM t").fetchone() == (100, 0)


def test_in_rollback_journal_mode_the_planning_transaction_is_the_one_paired(tmp_path: Path) -> None:
    """No writer can commit while the planning transaction holds its SHARED lock: the helper's twin,
    opened while it is held, reads its state, and the rows come from the transaction the plan was made in."""
    path = rollback_source(tmp_path / "rb.db")
    conf = config.load(overrides={"snapshot": {"workers": 2, "helper_min_bytes": 0}}, environ={})
    planning = snapshot.open_source(path, conf)
    helper = snapshot.Helper(conf, None)
    try:
        writer = sqlite3.connect(path, isolation_level=None, timeout=0.1)
        with pytest.raises(sqlite3.OperationalError, match="locked"):  # the control: the lock keeps commits out
            writer.execute("INSERT INTO t (v) VALUES ('app')")
        writer.close()
        conn, pairing = twin.pair(planning, path, conf, helper)
        assert conn is planning
        assert (pairing.twin, pairing.attempts) == (True, 1)
        assert helper.pool.submit(held_count, "t").result() == count(planning, "t") == 100
    finally:
        helper.close()
        planning.close()


def test_a_rollback_journal_source_loads_its_dominant_table_by_ranges(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = over_threshold(tmp_path / "app.db")
    writer = sqlite3.connect(path, isolation_level=None)
    assert writer.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"  # as Django leaves it
    writer.close()
    conf = cfg()
    reader = snapshot.open_source(path, conf)
    helper = snapshot.Helper(conf, None)
    try:
        hook = Hook(helper, wait_for={"event"})
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
    finally:
        helper.close()
        reader.close()
    assert by_table(result)["event"].helper_ranges > 0
    assert result.plan is not None
    assert assert_same(path, pg, result.plan) == SIZES


def test_the_daemons_first_snapshot_loads_with_a_helper_and_its_twin(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """`replicator run` on a target with no snapshot takes it first (stream/session.snapshot_first): with
    two workers and a source worth it, through the same helper and twin as `replicator snapshot`."""
    path = over_threshold(tmp_path / "app.db")
    install.install(path)
    insert_small(path, 3)  # journaled before the snapshot: inside the state it loads
    conf = cfg()
    with capture_logs() as logs:
        run = Worker(path, pg_dsn, conf).run(until_drained=True)
    paired = [entry for entry in logs if entry.get("event") == "the helper reads the same SQLite state"]
    assert len(paired) == 1
    shared = [entry["tables"] for entry in logs if entry.get("event") == "tables shared by both processes"]
    assert shared == [["event"]]
    assert run.applied_seq is not None
    plan = StateStore(pg, "replicator").load_plan()
    assert plan is not None
    assert assert_same(path, pg, plan) == {**SIZES, "small": SIZES["small"] + 3}
    assert audit.verify(store.records(pg)) == []
