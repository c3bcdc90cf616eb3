"""``replicator status`` while the daemon runs, after it stops, and when it is ERRORED; metrics endpoint."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import pytest

from replicator.inspect import status as status_mod
from replicator.stream.metrics import Metrics
from tests.support.cli import status_json
from tests.support.compare import drain
from tests.support.daemon import DaemonProcess, cfg
from tests.support.source import app, make_source

pytestmark = pytest.mark.e2e


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.0), (2, 'b', 2.0);")


def test_status_during_a_run_and_after(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    proc = DaemonProcess(src, pg_dsn, batch_rows=5)
    try:
        db = app(src)
        for i in range(50):
            db.execute("INSERT INTO parent VALUES (?, ?, 0)", (100 + i, f"x{i}"))
        deadline = time.monotonic() + 20
        while True:
            code, got = status_json(src, pg_dsn)
            if got["changes_behind"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert code == 0
        assert got["phase"] == "STREAMING"
        assert got["journal_head"] == got["applied_seq"] == 50
        assert got["seconds_behind"] == 0.0
        assert got["rate"] > 0
        tables = {t["table"]: t for t in got["tables"]}
        assert tables["parent"]["rows"] == 52
        assert tables["parent"]["upserted"] == 50
        head = got["last_checkpoint"]
        assert isinstance(head, dict)
        assert head["seq_to"] == 50
        assert len(head["hash"]) == 64
        assert got["quarantined"] == 0
        assert got["daemon_running"] is True
    finally:
        stopped = proc.stop(30)
    assert stopped.code == 0


def test_status_shows_backlog_when_daemon_is_stopped(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    for i in range(7):
        db.execute("UPDATE parent SET score = ? WHERE id = 1", (float(i),))
    got = status_mod.read_status(pg_dsn, cfg(), src)
    assert got.daemon_running is False
    assert got.changes_behind == 7
    assert got.journal_head == 7
    assert got.applied_seq == 0


def test_status_errored_names_table_and_exits_1(tmp_path: Path, pg_dsn: str) -> None:
    path = make_source(
        tmp_path / "e.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER);", "INSERT INTO t VALUES (1, 1);"
    )
    drain(path, pg_dsn)
    app(path).execute("UPDATE t SET n = 'x' WHERE id = 1")
    with pytest.raises(Exception, match="refused value"):
        drain(path, pg_dsn)
    code, got = status_json(path, pg_dsn)
    assert code == 1
    assert got["phase"] == "ERRORED"
    assert "t (id=1) column n" in str(got["reason"])
    assert got["hint"]


def test_metrics_endpoint(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    for i in range(10):
        app(src).execute("UPDATE parent SET score = ? WHERE id = 2", (float(i),))
    metrics = Metrics()
    from replicator.stream.worker import Worker

    Worker(src, pg_dsn, cfg(batch_rows=4), metrics=metrics).run(until_drained=True)
    port = 19000 + os.getpid() % 1000
    metrics.serve(port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "replicator_applied_changes_total 10.0" in body
    assert "replicator_batches_total 3.0" in body
    assert "replicator_changes_behind 0.0" in body
    assert 'replicator_batch_seconds_bucket{le="+Inf"} 3.0' in body
