"""The daemon's own writes to the app's file (journal pruning) never fail the app's transactions.

A commit of ours fails every app transaction that read before it and writes after it, when the app
began it with a deferred ``BEGIN`` (Django's default): SQLITE_BUSY_SNAPSHOT, "database is locked",
whatever its busy timeout. So the pruner writes only once the app has been quiet for
``apply.prune_idle_s`` (or past ``apply.prune_max_rows``). The writer here is the app in its own
process; the negative control prunes after every batch, as the daemon did before, and the app fails.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.compare import drain
from tests.support.daemon import DaemonProcess
from tests.support.source import make_source

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCHEMA = "CREATE TABLE item (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, note TEXT);"

#: A Django-style request loop: a connection per request, BEGIN (deferred), read, think, write, COMMIT;
#: a failed request is counted, not retried.
APP = textwrap.dedent(
    """
    import json, sqlite3, sys, time
    path, seconds = sys.argv[1], float(sys.argv[2])
    ok = failed = 0
    i = 1000
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        i += 1
        conn = sqlite3.connect(path, isolation_level=None, timeout=5)
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT count(*) FROM item").fetchone()
            time.sleep(0.002)
            conn.execute("INSERT INTO item VALUES (?, ?, 'x')", (i, i))
            conn.execute("COMMIT")
            ok += 1
        except sqlite3.OperationalError:
            failed += 1
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            conn.close()
        time.sleep(0.005)
    print(json.dumps({"ok": ok, "failed": failed}))
    """
)


def journal_rows(source: Path) -> int:
    conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        return int(conn.execute('SELECT count(*) FROM "_replicator_journal"').fetchone()[0])
    finally:
        conn.close()


def app_beside_daemon(tmp_path: Path, dsn: str, seconds: float, **env: str) -> tuple[dict[str, int], int, int]:
    """(the app's summary, journal rows just after it stopped, journal rows a few idle seconds later)."""
    source = make_source(tmp_path / "app.db", SCHEMA, "INSERT INTO item VALUES (1, 1, 'first');")
    drain(source, dsn)
    proc = DaemonProcess(source, dsn, env=env, json_log=False)
    try:
        proc.wait_streaming(dsn)
        done = subprocess.run(
            [sys.executable, "-c", APP, str(source), str(seconds)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        busy = journal_rows(source)
        time.sleep(3.0)  # the app is quiet now: the pruner catches up
        idle = journal_rows(source)
        assert proc.alive(), proc.output(2000)
    finally:
        proc.stop(60)
    return json.loads(done.stdout), busy, idle


def test_no_app_transaction_fails_while_the_daemon_streams(tmp_path: Path, pg_dsn: str) -> None:
    summary, busy, idle = app_beside_daemon(tmp_path, pg_dsn, 6.0, REPLICATOR_APPLY__PRUNE_IDLE_S="1.0")
    assert summary["ok"] > 100
    assert summary["failed"] == 0, summary
    assert busy > 100  # nothing pruned while the app wrote...
    assert idle <= 1  # ...everything applied pruned once it was quiet (the high-water row stays)


def test_control_pruning_after_every_batch_fails_app_transactions(tmp_path: Path, pg_dsn: str) -> None:
    """The bug the policy fixes: a prune after each batch (the daemon's old behaviour, roughly)."""
    summary, _busy, _idle = app_beside_daemon(
        tmp_path, pg_dsn, 6.0, REPLICATOR_APPLY__PRUNE_IDLE_S="0.001", REPLICATOR_APPLY__PRUNE_MAX_ROWS="1"
    )
    assert summary["failed"] > 0, summary


def test_a_journal_past_prune_max_rows_is_pruned_even_while_the_app_writes(tmp_path: Path, pg_dsn: str) -> None:
    summary, busy, _idle = app_beside_daemon(
        tmp_path, pg_dsn, 4.0, REPLICATOR_APPLY__PRUNE_IDLE_S="1000", REPLICATOR_APPLY__PRUNE_MAX_ROWS="50"
    )
    assert summary["ok"] > 100
    assert busy < 50 + 200  # bounded: at most the cap plus what arrived since the last prune
