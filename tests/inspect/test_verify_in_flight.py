""" "In flight" means in flight: verify tolerates a difference only for keys journaled after the position it
compared at, and only while a daemon holds the source's lock, in CATCHUP or STREAMING, and is not stalled.

The reproductions (each exited 0 "match" before): after cutover and ``unfence`` an app write; after
``rollback`` an app write; a daemon ERRORED with rows behind; a daemon stopped cleanly with a backlog. The
controls: a running daemon while the app writes is still tolerated, and a paused one only until it counts
as stalled. Real SQLite files, the real PostgreSQL, the CLI in a subprocess where an exit code is claimed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator import config
from replicator.cutover.rollback import rollback
from replicator.cutover.session import Options
from replicator.cutover.window import cutover
from replicator.inspect import status, verify
from tests.support.compare import drain
from tests.support.daemon import DaemonProcess, cfg
from tests.support.source import app, make_source, writable

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "replicator", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, check=False
    )


def verify_cli(src: Path, dsn: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``replicator verify --json``: the process (exit code, hint on stderr) and its report."""
    ran = cli("verify", "--source", str(src), "--target", dsn, "--json", *args)
    assert ran.stdout, ran.stderr
    return ran, json.loads(ran.stdout)


def table(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in report["tables"] if t["table"] == name)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_source(
        tmp_path / "app.db",
        rows="""
        INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL);
        INSERT INTO child VALUES (10, 1, 'x', 'c10');
        INSERT INTO pair VALUES ('k', 1, 'one');
        """,
    )


@pytest.fixture
def cut(src: Path, pg_dsn: str, tmp_path: Path) -> Path:
    drain(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    assert not writable(src)
    return src


def assert_mismatch_names(ran: subprocess.CompletedProcess[str], report: dict[str, Any], key: list[Any]) -> None:
    assert ran.returncode == 3, (ran.stdout, ran.stderr)
    assert report["match"] is False
    parent = table(report, "parent")
    assert parent["status"] == "mismatch"
    assert parent["missing"] == [key]
    assert parent["in_flight"] == 1  # journaled since the compared position, but nothing applies it


def test_after_cutover_and_unfence_an_app_write_is_a_mismatch(cut: Path, pg_dsn: str) -> None:
    unfenced = cli("unfence", "--source", str(cut))
    assert unfenced.returncode == 0, unfenced.stderr
    app(cut).execute("INSERT INTO parent VALUES (3, 'c', 0.5)")
    ran, report = verify_cli(cut, pg_dsn)
    assert_mismatch_names(ran, report, [3])
    assert "cut over" in ran.stderr
    text = cli("verify", "--source", str(cut), "--target", pg_dsn)
    assert text.returncode == 3
    assert "missing in PostgreSQL: 3" in text.stdout  # the key is named without --keys
    live = cli("certificate", "--live", "--source", str(cut), "--target", pg_dsn)
    assert live.returncode == 3, live.stdout
    assert "sqlite parent: 2 → 3 rows" in live.stderr


def test_after_rollback_an_app_write_is_a_mismatch(cut: Path, pg_dsn: str) -> None:
    rollback(cut, pg_dsn, cfg())
    app(cut).execute("INSERT INTO parent VALUES (3, 'c', 0.5)")
    ran, report = verify_cli(cut, pg_dsn)
    assert_mismatch_names(ran, report, [3])
    assert "rolled back" in ran.stderr
    run = cli("run", "--source", str(cut), "--target", pg_dsn)
    assert run.returncode == 2
    assert "writable again (rolled back or unfenced)" in run.stderr  # what the README's rollback runbook says


def test_an_errored_daemon_with_rows_behind_is_a_mismatch(tmp_path: Path, pg_dsn: str) -> None:
    path = make_source(
        tmp_path / "e.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER);", "INSERT INTO t VALUES (1, 1);"
    )
    drain(path, pg_dsn)
    db = app(path)
    db.execute("INSERT INTO t VALUES (2, 2)")
    db.execute("INSERT INTO t VALUES (3, 3)")
    db.execute("UPDATE t SET n = 'x' WHERE id = 1")  # refused by the apply: the daemon stops ERRORED
    with pytest.raises(Exception, match="refused value"):
        drain(path, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT phase FROM replicator.apply_state").fetchone() == ("ERRORED",)
        assert conn.execute("SELECT count(*) FROM public.t").fetchone() == (1,)  # two rows behind
    ran, report = verify_cli(path, pg_dsn)
    assert ran.returncode == 3, (ran.stdout, ran.stderr)
    t = table(report, "t")
    assert t["status"] == "mismatch"
    assert sorted(t["missing"]) == [[2], [3]]
    assert "phase ERRORED" in ran.stderr
    assert "t (id=1) column n" in ran.stderr  # the daemon's own reason


def test_a_daemon_errored_on_a_null_key_with_rows_behind_is_a_mismatch(tmp_path: Path, pg_dsn: str) -> None:
    """Issue 15 item 3 as filed: the daemon stopped on a NULL key (SQLite lets a TEXT primary key hold NULL)."""
    path = make_source(
        tmp_path / "n.db", "CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER);", "INSERT INTO t VALUES ('a', 1);"
    )
    drain(path, pg_dsn)
    db = app(path)
    db.execute("INSERT INTO t VALUES ('b', 2)")
    db.execute("INSERT INTO t VALUES ('c', 3)")
    db.execute("INSERT INTO t VALUES (NULL, 4)")
    with pytest.raises(Exception, match="null value in column"):
        drain(path, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT phase FROM replicator.apply_state").fetchone() == ("ERRORED",)
        assert conn.execute("SELECT count(*) FROM public.t").fetchone() == (1,)  # two rows behind
    ran, report = verify_cli(path, pg_dsn)
    assert ran.returncode == 3, (ran.stdout, ran.stderr)
    t = table(report, "t")
    assert t["status"] == "mismatch"
    assert {tuple(k) for k in t["missing"]} == {("b",), ("c",), (None,)}  # the NULL key's row too
    assert "phase ERRORED" in ran.stderr


def test_a_stopped_daemon_with_a_backlog_is_a_mismatch_and_says_so(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    db = app(src)
    db.execute("INSERT INTO parent VALUES (3, 'c', 0.5)")
    db.execute("UPDATE parent SET score = 9 WHERE id = 1")
    ran, report = verify_cli(src, pg_dsn)
    assert ran.returncode == 3, (ran.stdout, ran.stderr)
    parent = table(report, "parent")
    assert parent["status"] == "mismatch"
    assert (parent["missing"], parent["different"]) == ([[3]], [[1]])
    assert report["not_applying"]["reason"] == "no daemon is running"
    assert "no daemon is running, so these differences are not in flight" in ran.stderr
    assert "`replicator run`" in ran.stderr
    applied = cli("run", "--until-drained", "-q", "--source", str(src), "--target", pg_dsn)
    assert applied.returncode == 0, applied.stderr
    again, report = verify_cli(src, pg_dsn)
    assert again.returncode == 0, again.stderr
    assert all(t["status"] == "match" for t in report["tables"])


def _writer(path: Path, stop: threading.Event, written: list[int]) -> None:
    """The app: one connection per write, a deferred transaction each, ~200 writes/s."""
    i = 0
    while not stop.is_set():
        db = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            db.execute("BEGIN")
            db.execute("INSERT INTO child (id, parent_id, label) VALUES (?, 1, 'w')", (1000 + i,))
            db.execute("UPDATE parent SET score = ? WHERE id = 2", (float(i),))
            db.execute("COMMIT")
        finally:
            db.close()
        written.append(i)
        i += 1
        time.sleep(0.005)


def test_a_running_daemon_keeps_keys_journaled_after_the_compared_position_in_flight(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    proc = DaemonProcess(src, pg_dsn, batch_rows=5)
    wait_running(src, pg_dsn)
    stop, written = threading.Event(), list[int]()
    writer = threading.Thread(target=_writer, args=(src, stop, written))
    writer.start()
    statuses: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while "in-flight" not in statuses and time.monotonic() < deadline:
            report = verify.verify(src, pg_dsn, cfg())
            assert report.match, [(t.table, t.status, t.missing, t.extra, t.different) for t in report.tables]
            assert report.not_applying is None
            statuses += [t.status for t in report.tables]
        assert "in-flight" in statuses  # the app outran the daemon at least once, and that was tolerated
        with psycopg.connect(pg_dsn, autocommit=True) as conn:  # a real difference on a key nobody journals
            conn.execute("UPDATE public.pair SET v = 'forged' WHERE a = 'k'")
        forged = verify.verify(src, pg_dsn, cfg())
        assert not forged.match
        assert next(t for t in forged.tables if t.table == "pair").status == "mismatch"
    finally:
        stop.set()
        writer.join(timeout=30)
        stopped = proc.stop(30)
    assert stopped.code == 0
    assert written  # the app wrote while verify compared (how many depends on the machine)


def test_a_paused_daemon_is_in_flight_until_it_counts_as_stalled(src: Path, pg_dsn: str) -> None:
    drain(src, pg_dsn)
    proc = DaemonProcess(src, pg_dsn, batch_rows=3)
    try:
        wait_running(src, pg_dsn)
        os.kill(proc.pid, signal.SIGSTOP)  # alive, holding its lock, applying nothing
        try:
            db = app(src)
            db.execute("INSERT INTO parent VALUES (3, 'c', 0.5)")
            db.execute("DELETE FROM child WHERE id = 10")
            patient = verify.verify(src, pg_dsn, config.load(overrides={"status": {"stall_after_s": 3600}}, environ={}))
            assert patient.match
            assert patient.not_applying is None
            assert {t.table: t.status for t in patient.tables} == {
                "parent": "in-flight",
                "child": "in-flight",
                "pair": "match",
            }
            time.sleep(1.5)
            strict = config.load(overrides={"status": {"stall_after_s": 1}}, environ={})
            stalled = verify.verify(src, pg_dsn, strict, keys=True)
            assert not stalled.match
            assert stalled.not_applying is not None
            assert "no progress" in stalled.not_applying.reason
            assert set(stalled.mismatched) == {"parent", "child"}
            assert next(t for t in stalled.tables if t.table == "child").extra == ((10,),)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    finally:
        stopped = proc.stop(30)
    assert stopped.code == 0


def wait_running(src: Path, dsn: str) -> None:
    """Until the daemon holds its lock, streams and has applied everything journaled."""
    deadline = time.monotonic() + 30
    while True:
        got = status.read_status(dsn, cfg(), src)
        if got.daemon_running and got.phase == "STREAMING" and got.changes_behind == 0:
            return
        assert time.monotonic() < deadline, got
        time.sleep(0.1)
