"""The metrics a running daemon serves (issue 17): scraped from a real ``replicator run --metrics-port``.

Phase, up, the journal's rows and bytes, the last checkpoint's age and the stall gauges, read while an
app writes to the SQLite file the way apps do (a connection per write).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import free_port
from tests.support.daemon import DaemonProcess
from tests.support.source import make_source, write

pytestmark = pytest.mark.e2e

Scrape = dict[str, float]
PHASES = ("INIT", "SNAPSHOT", "CATCHUP", "STREAMING", "CUTOVER", "DONE", "ERRORED")


def scrape(port: int) -> Scrape:
    """Every sample as ``name{label="value"}`` → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
    return samples


def wait_for(port: int, ready: Callable[[Scrape], bool], timeout_s: float = 60) -> Scrape:
    deadline = time.monotonic() + timeout_s
    last: Scrape = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            last = scrape(port)
            if ready(last):
                return last
        time.sleep(0.1)
    raise AssertionError(f"metrics never got there: {last}")


def journal_rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute('SELECT count(*) FROM "_replicator_journal"').fetchone()[0])


def app_write(path: Path, i: int) -> None:
    """One app request: its own connection, one autocommitted write."""
    write(path, "INSERT INTO parent VALUES (?, ?, ?)", (100 + i, f"p{i}", float(i)))


def test_a_running_daemon_serves_phase_up_journal_and_checkpoint_age(tmp_path: Path, pg_dsn: str) -> None:
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.0), (2, 'b', 2.0);")
    port = free_port()
    proc = DaemonProcess(src, pg_dsn, "--metrics-port", str(port), batch_rows=50)
    try:
        got = wait_for(port, lambda m: m.get('replicator_phase{phase="STREAMING"}') == 1.0)
        assert [p for p in PHASES if got[f'replicator_phase{{phase="{p}"}}'] != (p == "STREAMING")] == []
        assert got["replicator_daemon_up"] == 1.0
        assert 0.0 <= got["replicator_last_checkpoint_age_seconds"] < 60.0  # the genesis, just written
        assert got["replicator_stalled"] == 0.0

        for i in range(300):
            app_write(src, i)
        got = wait_for(
            port,
            lambda m: m["replicator_applied_changes_total"] == 300.0 and m["replicator_changes_behind"] == 0.0,
        )
        assert got["replicator_last_checkpoint_age_seconds"] < 30.0  # a batch's checkpoint, not the genesis
        assert got["replicator_stalled"] == 0.0
        assert got["replicator_seconds_without_progress"] == 0.0

        # The journal's rows are its seq bounds; the pruner may move them between the two reads: retry.
        for _ in range(100):
            rows, held = scrape(port)["replicator_journal_rows"], journal_rows(src)
            if rows == held:
                break
            time.sleep(0.05)
        assert rows == held, (rows, held)
        assert held >= 1  # the high-water row is never pruned
        page_size = int(sqlite3.connect(src).execute("PRAGMA page_size").fetchone()[0])
        size = got["replicator_journal_bytes"]
        assert size > 0
        assert size % page_size == 0
    finally:
        stopped = proc.stop(60)
    assert stopped.code == 0, stopped.log[-2000:]


def test_daemon_up_is_0_while_postgresql_is_unreachable_and_1_again_after(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The negative control of ``replicator_daemon_up``: PostgreSQL goes away under a streaming daemon
    (a proxy refusing connections, as in a restart), the daemon retries with up = 0, then resumes."""
    from tests.reliability.proxy import Proxy

    monkeypatch.setenv("REPLICATOR_APPLY__RETRY_MAX_WAIT_S", "1")
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.0);")
    port = free_port()
    with Proxy.to_dsn(pg_dsn).running() as proxy:
        proc = DaemonProcess(src, proxy.dsn(pg_dsn), "--metrics-port", str(port), batch_rows=50)
        try:
            wait_for(port, lambda m: m.get('replicator_phase{phase="STREAMING"}') == 1.0)
            assert scrape(port)["replicator_daemon_up"] == 1.0
            proxy.outage()
            app_write(src, 1)  # the daemon must talk to PostgreSQL to find it gone
            wait_for(port, lambda m: m["replicator_daemon_up"] == 0.0)
            proxy.resume()
            got = wait_for(port, lambda m: m["replicator_daemon_up"] == 1.0 and m["replicator_changes_behind"] == 0.0)
            assert got['replicator_phase{phase="STREAMING"}'] == 1.0
        finally:
            stopped = proc.stop(60)
    assert stopped.code == 0, stopped.log[-2000:]
