"""Damage nobody would notice (issue 14, item 7) and a stalled daemon: each planted for real, then caught.

Every tampering is planted by hand in the real SQLite file or the real PostgreSQL, and each of the three
commands that must see it is run against it: ``status`` (exit 1, the tampering named), ``run`` (one-line
refusal naming it, nothing applied) and ``checkpoints verify`` (exit 3). The stall is a real daemon
stopped with SIGSTOP while the app writes (and a real lock holding a batch back for the metrics).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest

from checkpoints.anchor import Anchor
from replicator.stream.metrics import Metrics
from tests.support.cli import status_json
from tests.support.compare import drain
from tests.support.daemon import Daemon, DaemonProcess, cfg
from tests.support.source import ROWS, app, changes, make_source
from tests.support.state import read_phase
from triggers.journal import ANCHOR

pytestmark = pytest.mark.e2e

STALL_S = "2"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "replicator", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, check=False
    )


def run_once(src: Path, dsn: str) -> subprocess.CompletedProcess[str]:
    return cli("run", "--until-drained", "--source", str(src), "--target", dsn, "-q")


def chain_verify(src: Path | None, dsn: str) -> subprocess.CompletedProcess[str]:
    where = ["--source", str(src)] if src is not None else []
    return cli("checkpoints", "verify", "--target", dsn, *where, env={"REPLICATOR_SOURCE": ""})


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line the operator reads (log lines are JSON and go to stderr too)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def applied_seq(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT max(seq_to) FROM replicator.checkpoints").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_source(tmp_path / "app.db", rows=ROWS)


def streamed(src: Path, dsn: str) -> None:
    """Genesis, then several batches applied, pruned and anchored: the state every tampering starts from."""
    drain(src, dsn)
    changes(src)
    drain(src, dsn, cfg(batch_rows=3))
    code, got = status_json(src, dsn)
    assert code == 0, got  # the control: an untouched migration is healthy
    assert got["tampering"] == []
    assert chain_verify(src, dsn).returncode == 0


# --- (a) journal rows deleted by hand --------------------------------------------------------------


def test_journal_rows_deleted_by_hand_are_named_by_status_run_and_verify(src: Path, pg_dsn: str) -> None:
    streamed(src, pg_dsn)
    start = applied_seq(pg_dsn)
    db = app(src)
    for i in range(10):
        db.execute("UPDATE parent SET score = ? WHERE id = 3", (float(i),))
    db.execute('DELETE FROM "_replicator_journal" WHERE seq BETWEEN ? AND ?', (start + 4, start + 6))
    db.close()
    missing = f"journal entries {start + 4}..{start + 6}"

    code, got = status_json(src, pg_dsn)
    assert code == 1
    assert any(missing in t for t in got["tampering"]), got["tampering"]

    proc = run_once(src, pg_dsn)
    assert proc.returncode == 3
    assert missing in error_line(proc)
    assert applied_seq(pg_dsn) == start  # refused before anything was applied

    verified = chain_verify(src, pg_dsn)
    assert verified.returncode == 3
    assert missing in verified.stdout + verified.stderr


def test_journal_tail_deleted_after_the_daemon_saw_it(src: Path, pg_dsn: str) -> None:
    """Rows at the journal's top deleted after a daemon recorded seeing them: the head went backwards."""
    streamed(src, pg_dsn)
    start = applied_seq(pg_dsn)
    db = app(src)
    for i in range(6):
        db.execute("UPDATE parent SET score = ? WHERE id = 3", (float(i),))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # what a daemon records when it sees the head
        conn.execute("UPDATE replicator.apply_state SET head_seq = %s", (start + 6,))
    db.execute('DELETE FROM "_replicator_journal" WHERE seq > ?', (start + 2,))
    db.close()
    code, got = status_json(src, pg_dsn)
    assert code == 1
    assert any(f"seq {start + 6}" in t and f"ends at seq {start + 2}" in t for t in got["tampering"]), got
    proc = run_once(src, pg_dsn)
    assert proc.returncode == 3
    assert f"ends at seq {start + 2}" in error_line(proc)


def test_every_journal_row_deleted_is_named(src: Path, pg_dsn: str) -> None:
    """Nothing pruned yet: deleting the whole journal leaves its head below what PostgreSQL applied."""
    drain(src, pg_dsn)
    db = app(src)
    for i in range(5):
        db.execute("UPDATE parent SET score = ? WHERE id = 3", (float(i),))
    db.close()
    drain(src, pg_dsn)
    with sqlite3.connect(src) as conn:
        conn.execute('DELETE FROM "_replicator_journal"')
        conn.execute("DELETE FROM \"_replicator_meta\" WHERE key = 'pruned_through'")
    code, got = status_json(src, pg_dsn)
    assert code == 1
    assert any("the journal ends at seq 0" in t for t in got["tampering"]), got["tampering"]
    proc = run_once(src, pg_dsn)
    assert proc.returncode == 3
    assert "the journal ends at seq 0" in error_line(proc)


# --- (b) every checkpoint after genesis deleted ----------------------------------------------------


def test_checkpoints_after_genesis_deleted_are_named(src: Path, pg_dsn: str) -> None:
    streamed(src, pg_dsn)
    with sqlite3.connect(src) as sconn:  # the last prune anchored this checkpoint (it may lag the head)
        anchored = Anchor.decode(
            sconn.execute("SELECT value FROM _replicator_meta WHERE key = ?", (ANCHOR,)).fetchone()[0]
        )
    assert anchored.number > 2
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM replicator.checkpoints WHERE number > 1")
    gone = f"checkpoints 2..{anchored.number} are missing"

    verified = chain_verify(src, pg_dsn)
    assert verified.returncode == 3
    assert gone in verified.stdout, verified.stdout
    without_source = chain_verify(None, pg_dsn)  # the phase row in PostgreSQL still knows what was applied
    assert without_source.returncode == 3
    assert "the newest checkpoints were deleted" in without_source.stdout, without_source.stdout

    code, got = status_json(src, pg_dsn)
    assert code == 1
    assert any(gone in t for t in got["tampering"]), got["tampering"]

    proc = run_once(src, pg_dsn)
    assert proc.returncode == 3
    assert gone in error_line(proc)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM replicator.checkpoints").fetchone()
    assert row == (1,)  # nothing was appended on top of the truncated chain


def test_a_resnapshot_is_not_tampering(src: Path, pg_dsn: str) -> None:
    """`snapshot --replace` starts a new chain on purpose: the old anchor must not be read as damage."""
    streamed(src, pg_dsn)
    proc = cli("snapshot", "--replace", "--source", str(src), "--target", pg_dsn, "-q")
    assert proc.returncode == 0, proc.stderr
    code, got = status_json(src, pg_dsn)
    assert code == 0, got["tampering"]
    assert chain_verify(src, pg_dsn).returncode == 0
    app(src).execute("UPDATE parent SET score = 42 WHERE id = 3")
    assert run_once(src, pg_dsn).returncode == 0


# --- (c) two checkpoints swapped --------------------------------------------------------------------


def swap(dsn: str, a: int, b: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("UPDATE replicator.checkpoints SET number = 999999 WHERE number = %s", (a,))
        conn.execute("UPDATE replicator.checkpoints SET number = %s WHERE number = %s", (a, b))
        conn.execute("UPDATE replicator.checkpoints SET number = %s WHERE number = 999999", (b,))


def test_swapped_head_checkpoints_are_named_not_blamed_on_another_writer(src: Path, pg_dsn: str) -> None:
    streamed(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT max(number) FROM replicator.checkpoints").fetchone()
    assert row is not None
    head = int(row[0])
    swap(pg_dsn, head - 1, head)
    app(src).execute("UPDATE parent SET score = 7 WHERE id = 3")

    proc = run_once(src, pg_dsn)
    assert proc.returncode == 3
    line = error_line(proc)
    assert "another writer" not in line
    assert f"checkpoint {head} holds the body of checkpoint {head - 1}" in line

    code, got = status_json(src, pg_dsn)
    assert code == 1
    assert any(f"checkpoint {head} holds the body of checkpoint {head - 1}" in t for t in got["tampering"]), got

    verified = chain_verify(src, pg_dsn)
    assert verified.returncode == 3
    assert "reordered" in verified.stdout


def test_swapped_checkpoints_near_the_anchor_are_named_by_run_and_status(src: Path, pg_dsn: str) -> None:
    streamed(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT max(number) FROM replicator.checkpoints").fetchone()
    assert row is not None
    head = int(row[0])
    swap(pg_dsn, head - 2, head - 1)  # below the head: store.latest alone would not see it
    code, got = status_json(src, pg_dsn)
    assert code == 1
    assert any(f"checkpoint {head - 1}" in t for t in got["tampering"]), got["tampering"]
    proc = run_once(src, pg_dsn)
    assert proc.returncode == 3
    assert "reordered" in error_line(proc)
    assert chain_verify(src, pg_dsn).returncode == 3


# --- stalls ------------------------------------------------------------------------------------------


def status_env() -> dict[str, str]:
    return {"REPLICATOR_STATUS__STALL_AFTER_S": STALL_S}


def stall_status(src: Path, dsn: str) -> tuple[int, dict[str, Any]]:
    return status_json(src, dsn, status_env())


def wait_caught_up(src: Path, dsn: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, got = stall_status(src, dsn)
        if (code == 0 and got["changes_behind"] == 0 and got["daemon_running"]) or time.monotonic() > deadline:
            assert code == 0, got
            assert got["changes_behind"] == 0
            return got
        time.sleep(0.2)


def test_a_stopped_daemon_is_reported_as_stalled_and_recovers(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    proc = DaemonProcess(src, pg_dsn, batch_rows=3, env=status_env())  # the daemon's heartbeat follows it
    try:
        wait_caught_up(src, pg_dsn)
        time.sleep(float(STALL_S) * 1.5)  # idle longer than stall_after_s: an idle daemon is not stalled
        with psycopg.connect(pg_dsn, autocommit=True) as conn:  # its heartbeat keeps the phase row young
            age = conn.execute("SELECT extract(epoch FROM clock_timestamp() - updated_at) FROM replicator.apply_state")
            row = age.fetchone()
        assert row is not None
        assert float(row[0]) < float(STALL_S)
        app(src).execute("UPDATE parent SET score = 1 WHERE id = 1")
        code, got = stall_status(src, pg_dsn)
        assert code == 0, got
        assert got["stalled_s"] is None
        wait_caught_up(src, pg_dsn)

        os.kill(proc.pid, signal.SIGSTOP)
        try:
            db = app(src)
            for i in range(5):
                db.execute("UPDATE parent SET score = ? WHERE id = 2", (float(i),))
            db.close()
            time.sleep(float(STALL_S) + 1.0)
            code, got = stall_status(src, pg_dsn)
            assert code == 1, got
            assert got["daemon_running"] is True
            assert got["changes_behind"] == 5
            assert got["stalled_s"] is not None
            assert got["stalled_s"] >= float(STALL_S)
            text = cli("status", "--source", str(src), "--target", pg_dsn, env=status_env())
            assert text.returncode == 1
            assert "stalled" in text.stdout
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        got = wait_caught_up(src, pg_dsn)
        assert got["stalled_s"] is None
    finally:
        stopped = proc.stop(30)
    assert stopped.code == 0


def test_stall_metrics_while_a_batch_is_held_back(src: Path, pg_dsn: str) -> None:
    """A batch that cannot commit (the checkpoint table is locked): the gauges show the stall, then clear."""
    drain(src, pg_dsn)
    conf = cfg()
    conf = type(conf)(**{**{f: getattr(conf, f) for f in conf.__struct_fields__}, "status": stall_config()})
    metrics = Metrics()
    port = 19500 + os.getpid() % 400
    metrics.serve(port)
    with Daemon(src, pg_dsn, conf, metrics=metrics) as daemon:
        with psycopg.connect(pg_dsn) as holder:
            holder.execute("LOCK TABLE replicator.checkpoints IN SHARE ROW EXCLUSIVE MODE")
            app(src).execute("UPDATE parent SET score = 3 WHERE id = 3")
            deadline = time.monotonic() + 30
            while True:
                body = scrape(port)
                if "replicator_stalled 1.0" in body or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert "replicator_stalled 1.0" in body
            code, got = stall_status(src, pg_dsn)
            assert code == 1
            assert got["stalled_s"] is not None
            holder.rollback()
        deadline = time.monotonic() + 30
        while "replicator_stalled 0.0" not in (body := scrape(port)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "replicator_stalled 0.0" in body
    assert not daemon.errors, daemon.errors
    state = read_phase(pg_dsn)
    assert state is not None
    assert state.applied_seq == state.head_seq == 1


def stall_config() -> Any:
    from replicator.config import Status

    return Status(stall_after_s=float(STALL_S))


def scrape(port: int) -> str:
    return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode())


def test_stall_after_s_is_validated(src: Path, pg_dsn: str) -> None:
    proc = cli("status", "--source", str(src), "--target", pg_dsn, env={"REPLICATOR_STATUS__STALL_AFTER_S": "0"})
    assert proc.returncode == 2
    assert "stall_after_s" in error_line(proc)
