"""COPY FREEZE only where PostgreSQL allows it: a reload into an app's partitioned table (existing mode)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator import config
from replicator.load import snapshot
from replicator.state.identity import source_identity
from replicator.state.store import StateStore

CFG = config.load(None, environ={})


@pytest.mark.parametrize("partitioned", [True, False])
def test_reload_into_an_existing_table_that_holds_rows(partitioned: bool, tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO events VALUES (?, ?)", [(1, "a"), (2, "b")])
    if partitioned:
        pg.execute("CREATE TABLE events (id bigint NOT NULL, body text, PRIMARY KEY (id)) PARTITION BY RANGE (id)")
        pg.execute("CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (1000)")
    else:
        pg.execute("CREATE TABLE events (id bigint PRIMARY KEY, body text)")
    result = snapshot.snapshot(db, pg_dsn, CFG, mode="existing")
    assert result.plan is not None
    plan = result.plan
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO events VALUES (3, 'c')")
    # The daemon's reload of a table (resnapshot.reload) and cutover's copy_again: the table holds rows.
    identity = source_identity(db)
    sconn = snapshot.open_source(db, CFG)
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as pconn:
            state_schema = CFG.target.state_schema
            with pconn.transaction():
                run_id = StateStore(pconn, state_schema).start_run(
                    command="resnapshot", mode=plan.mode, source=identity
                )
            with pconn.transaction():
                run = snapshot.LoadRun(state_schema, identity, run_id, policy="stop")
                loaded = snapshot.load_table(snapshot.LoadContext(sconn, pconn, run), plan, plan.table("events"))
    finally:
        sconn.close()
    assert loaded.rows == 3
    assert pg.execute("SELECT id, body FROM events ORDER BY id").fetchall() == [(1, "a"), (2, "b"), (3, "c")]
