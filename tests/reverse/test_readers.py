"""The commands that read the chain's head, after the cutover: with ``reverse`` records after the cutover
checkpoint, the head is no longer the cutover and its ``seq_to`` is a PostgreSQL transaction-id horizon, not a
SQLite journal seq. ``status``, ``verify``, ``certificate --live`` and ``checkpoints verify --source`` take the
SQLite journal's position from the last *forward* checkpoint (:func:`checkpoints.store.last_forward`), and
``status`` shows the window.

The reproductions (each failed before): after a cutover and one reverse batch, ``status`` exited 1 naming
"journal rows were deleted by hand" (the journal's head set against the horizon), ``checkpoints verify
--source`` exited 3 for the same, ``verify`` reported the horizon as the journal position it compared at, and
``certificate --live`` exited 3 for the changes the window carried back although both sides compare equal.
The negative controls: tampering planted inside the window is still found.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from checkpoints import store
from checkpoints.model import Checkpoint, Kind
from replicator import faults
from replicator.cutover.session import Options
from replicator.cutover.window import cutover
from replicator.reverse import finalize, loop
from replicator.reverse import rollback as window_rollback
from replicator.stream.metrics import Metrics
from tests.support.cli import Ran, cli, free_port
from tests.support.compare import drain
from tests.support.daemon import cfg, conf
from tests.support.pgserver import as_uri
from tests.support.source import app, make_source, writable

pytestmark = pytest.mark.e2e


class Cut(msgspec.Struct):
    src: Path
    dsn: str
    cutover: Checkpoint


@pytest.fixture
def cut(tmp_path: Path, pg_dsn: str) -> Cut:
    """A cutover after forward batches: the cutover checkpoint covers SQLite journal seqs above 0."""
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL);")
    drain(src, pg_dsn)
    db = app(src)
    db.execute("INSERT INTO parent VALUES (3, 'c', 2.5)")
    db.execute("UPDATE parent SET score = 4.0 WHERE id = 1")
    db.close()
    cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        head = store.latest(conn, schema="replicator")
    assert head is not None
    assert head.kind is Kind.CUTOVER
    assert head.seq_to >= 2
    return Cut(src, pg_dsn, head)


def _pg_writes(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name, score) VALUES (4, 'd', 0.5)")
        conn.execute("UPDATE public.parent SET score = 7.25 WHERE id = 2")


def _carry_back(c: Cut) -> int:
    """``run`` until the reverse journal is empty; returns the batches written. A reverse batch takes the
    changes of transactions below its horizon, which an open writing transaction holds back (one of another
    database only while it cannot be placed there): one drained run may find nothing yet."""
    batches = 0
    deadline = time.monotonic() + 30
    while True:
        batches += loop.run(c.src, c.dsn, cfg(), until_drained=True).batches
        with psycopg.connect(c.dsn, autocommit=True) as conn:
            left = conn.execute("SELECT count(*) FROM replicator.reverse_journal").fetchone()
        if left == (0,) or time.monotonic() > deadline:
            return batches
        time.sleep(0.1)


@pytest.fixture
def window(cut: Cut) -> Cut:
    """The window with reverse batches written: the chain's head is a ``reverse`` checkpoint."""
    _pg_writes(cut.dsn)
    assert _carry_back(cut) >= 1
    head = _head(cut.dsn)
    assert head.kind is Kind.REVERSE
    assert head.seq_to != cut.cutover.seq_to  # a horizon, in another space than the journal's seqs
    return cut


def _head(dsn: str) -> Checkpoint:
    with psycopg.connect(dsn, autocommit=True) as conn:
        head = store.latest(conn, schema="replicator")
    assert head is not None
    return head


def _status(c: Cut) -> tuple[Ran, dict[str, Any]]:
    ran = cli(c.src, c.dsn, "status", "--json")
    assert ran.out, str(ran)
    return ran, json.loads(ran.out)


# --- the helper ------------------------------------------------------------------------------------------


def test_last_forward_is_the_cutover_through_the_window(window: Cut) -> None:
    with psycopg.connect(window.dsn, autocommit=True) as conn:
        found = store.last_forward(conn, schema="replicator")
        assert found == window.cutover
        before = store.read(conn, schema="replicator", until=window.cutover.number - 1)[-1]
        conn.execute("DELETE FROM replicator.checkpoints WHERE number >= %s", (window.cutover.number,))
        assert store.last_forward(conn, schema="replicator") == before  # not a reverse kind: the head itself


def test_last_forward_refuses_a_record_whose_kind_column_lies(window: Cut) -> None:
    """Negative control: the kind column is a copy; a reverse record relabelled by hand is not taken for a
    forward one (its body says what it is)."""
    from checkpoints.errors import ChainBroken

    head = _head(window.dsn)
    with psycopg.connect(window.dsn, autocommit=True) as conn:
        conn.execute("UPDATE replicator.checkpoints SET kind = 'batch' WHERE number = %s", (head.number,))
        with pytest.raises(ChainBroken, match=f"checkpoint {head.number}"):
            store.last_forward(conn, schema="replicator")


# --- status ----------------------------------------------------------------------------------------------


def test_status_in_the_window_exits_0_and_shows_it(window: Cut) -> None:
    ran, got = _status(window)
    assert ran.code == 0, str(ran)
    assert got["tampering"] == []
    assert got["problem"] == ""
    assert got["applied_seq"] == window.cutover.seq_to  # SQLite's journal position, not the horizon
    assert got["journal_head"] == window.cutover.seq_to
    assert got["changes_behind"] == 0
    assert got["last_checkpoint"]["kind"] == "reverse"
    w = got["window"]
    assert w["state"] == "open"
    assert w["opened_at"]
    assert w["cutover_checkpoint"] == window.cutover.number
    assert w["cutover_hash"] == window.cutover.hash
    assert w["reverse_lag_s"] == 0.0
    assert w["journal_entries"] == 0
    assert w["journal_bytes"] > 0
    assert w["applied_horizon"] == _head(window.dsn).seq_to + 1
    assert w["applied_at"]
    assert w["postgres_fenced"] is False
    assert w["closed_at"] is None
    assert w["closed_how"] is None
    assert w["refused_waiting"] == 0
    text = cli(window.src, window.dsn, "status")
    assert text.code == 0, str(text)
    assert "tampered" not in text.out
    assert "rollback window open since" in text.out
    assert f"cutover checkpoint {window.cutover.number}" in text.out
    assert "reverse lag 0.0 s" in text.out
    assert "PostgreSQL writable" in text.out
    assert f"applied seq {window.cutover.seq_to:,}" in text.out
    assert "(reverse, horizon" in text.out


def test_status_shows_the_reverse_lag_of_changes_not_written_back(window: Cut) -> None:
    with psycopg.connect(window.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name) VALUES (5, 'e')")
        conn.execute("SELECT pg_sleep(0.05)")
    ran, got = _status(window)
    assert ran.code == 0, str(ran)
    w = got["window"]
    assert w["journal_entries"] == 1
    assert w["reverse_lag_s"] > 0
    text = cli(window.src, window.dsn, "status")
    assert "1 journal entr" in text.out
    assert "reverse lag 0.0 s" not in text.out


def test_status_without_source_shows_the_window(window: Cut) -> None:
    ran = cli(window.src, window.dsn, "status", "--json", env={"REPLICATOR_SOURCE": ""})
    got = json.loads(ran.out)
    assert ran.code == 0, str(ran)
    assert got["applied_seq"] == window.cutover.seq_to
    assert got["window"]["state"] == "open"


def test_status_before_a_reverse_batch_and_without_a_window(cut: Cut, tmp_path: Path, pg_dsn: str) -> None:
    ran, got = _status(cut)
    assert ran.code == 0, str(ran)
    assert got["window"]["state"] == "open"
    assert got["window"]["applied_horizon"] == 0
    other = make_source(tmp_path / "other.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    name = f"plain_window_{uuid.uuid4().hex[:12]}"  # its own database: tests run side by side on one server
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    plain = as_uri(make_conninfo(pg_dsn, dbname=name))
    try:
        drain(other, plain)
        cutover(
            other, plain, cfg(), Options(backup=False, certificate_path=tmp_path / "c2.json", rollback_window=False)
        )
        ran = cli(other, plain, "status", "--json")
        assert ran.code == 0, str(ran)
        assert json.loads(ran.out)["window"] is None
        assert "rollback window" not in cli(other, plain, "status").out
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_status_after_finalize(window: Cut) -> None:
    finalize.finalize(window.src, window.dsn, cfg())
    ran, got = _status(window)
    assert ran.code == 0, str(ran)
    assert got["tampering"] == []
    assert got["applied_seq"] == window.cutover.seq_to
    w = got["window"]
    assert w["state"] == "closed"
    assert w["closed_how"] == "finalize"
    assert w["closed_at"]
    assert w["journal_entries"] is None  # the capture is gone: no lag to show
    assert "rollback window closed by finalize" in cli(window.src, window.dsn, "status").out


def test_status_after_rollback(window: Cut, tmp_path: Path) -> None:
    window_rollback.rollback(window.src, window.dsn, cfg(), certificate_path=tmp_path / "rb.json")
    ran, got = _status(window)
    assert ran.code == 1  # phase ERRORED: the SQLite file is the source of truth again
    assert got["phase"] == "ERRORED"
    assert got["tampering"] == []
    assert got["problem"] == ""
    w = got["window"]
    assert w["state"] == "closed"
    assert w["closed_how"] == "rollback"
    assert w["postgres_fenced"] is True
    assert "rollback window closed by rollback" in cli(window.src, window.dsn, "status").out


def test_status_forgets_the_window_of_a_previous_migration(window: Cut, tmp_path: Path) -> None:
    """A closed window's row that another migration opened says nothing about this one: `snapshot --replace`
    deletes it, and one left behind anyway (planted here: a restored state schema, a row put back by hand) is
    neither shown nor read as a rollback interrupted between its commits (negative control: without the guard
    in inspect.window.read, it is)."""
    window_rollback.rollback(window.src, window.dsn, cfg(), certificate_path=tmp_path / "rb.json")
    with psycopg.connect(window.dsn, autocommit=True) as conn:
        old = conn.execute("SELECT * FROM replicator.reverse_window").fetchall()
    assert _status(window)[1]["window"]["closed_how"] == "rollback"
    replaced = cli(window.src, window.dsn, "snapshot", "--replace")
    assert replaced.code == 0, str(replaced)
    ran = cli(window.src, window.dsn, "run", "--until-drained")
    assert ran.code == 0, str(ran)
    assert _status(window)[1]["window"] is None  # snapshot --replace forgot it
    with psycopg.connect(window.dsn, autocommit=True) as conn:
        columns = ", ".join(["%s"] * len(old[0]))
        conn.execute(f"INSERT INTO replicator.reverse_window VALUES ({columns})", old[0])
    fenced = cli(window.src, window.dsn, "fence")  # a new cutover's fence, as if it stopped between its commits
    assert fenced.code == 0, str(fenced)
    _, got = _status(window)
    assert got["window"] is None
    assert "rollback" not in got["problem"]
    assert "SQLite is fenced but PostgreSQL is not finished" in got["problem"]


def test_status_names_a_rollback_interrupted_between_its_commits(window: Cut) -> None:
    crashed = cli(window.src, window.dsn, "rollback", env={"REPLICATOR_FAILPOINTS": "rollback.between_commits:crash"})
    assert crashed.code == faults.CRASH_EXIT, str(crashed)
    ran, got = _status(window)
    assert ran.code == 1
    assert "rollback" in got["problem"]
    assert "interrupted" in got["problem"]
    assert "replicator rollback" in got["problem_hint"]
    assert "cutover" not in got["problem_hint"]
    assert got["tampering"] == []


@pytest.mark.parametrize("point", ["rollback.after_fence", "rollback.before_close_commit"])
def test_status_names_a_rollback_interrupted_after_fencing_postgres(window: Cut, point: str) -> None:
    crashed = cli(window.src, window.dsn, "rollback", env={"REPLICATOR_FAILPOINTS": f"{point}:crash"})
    assert crashed.code == faults.CRASH_EXIT, str(crashed)
    ran, got = _status(window)
    assert ran.code == 1
    assert got["window"]["state"] == "open"
    assert got["window"]["postgres_fenced"] is True
    assert "interrupted after fencing PostgreSQL" in got["problem"]
    assert "replicator rollback" in got["problem_hint"]
    finished = cli(window.src, window.dsn, "rollback")
    assert finished.code == 0, str(finished)
    ran, got = _status(window)
    assert got["problem"] == ""
    assert got["window"]["closed_how"] == "rollback"


def test_negative_control_tampering_inside_the_window_is_still_found(window: Cut) -> None:
    """The phase row claims more than the chain's forward part covers: found in the window too."""
    with psycopg.connect(window.dsn, autocommit=True) as conn:
        conn.execute("UPDATE replicator.apply_state SET applied_seq = applied_seq + 5")
    ran, got = _status(window)
    assert ran.code == 1
    assert any("newest checkpoints were deleted" in f for f in got["tampering"]), got["tampering"]
    verified = cli(window.src, window.dsn, "checkpoints", "verify")
    assert verified.code == 3, str(verified)


def test_negative_control_journal_rows_deleted_in_the_window_are_found(window: Cut) -> None:
    """The journal's rows deleted by hand (its head falls below the cutover's seq): found in the window too."""
    conn = sqlite3.connect(window.src)
    conn.execute("DELETE FROM _replicator_journal")
    conn.commit()
    conn.close()
    ran, got = _status(window)
    assert ran.code == 1
    assert any("deleted by hand" in f for f in got["tampering"]), got["tampering"]
    assert cli(window.src, window.dsn, "checkpoints", "verify").code == 3


# --- checkpoints verify, verify, certificate --live --------------------------------------------------------


def test_checkpoints_verify_with_the_source_passes_in_the_window(window: Cut) -> None:
    ran = cli(window.src, window.dsn, "checkpoints", "verify")
    assert ran.code == 0, str(ran)
    finalize.finalize(window.src, window.dsn, cfg())
    after = cli(window.src, window.dsn, "checkpoints", "verify")
    assert after.code == 0, str(after)


def test_verify_in_the_window_compares_at_the_forward_position(window: Cut) -> None:
    ran = cli(window.src, window.dsn, "verify", "--json")
    assert ran.code == 0, str(ran)
    report = json.loads(ran.out)
    assert report["match"] is True
    assert report["applied_through"] == window.cutover.seq_to
    assert report["journal_head"] == window.cutover.seq_to


def test_verify_in_the_window_names_the_changes_not_written_back(window: Cut) -> None:
    with psycopg.connect(window.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name) VALUES (5, 'e')")
    ran = cli(window.src, window.dsn, "verify")
    assert ran.code == 3
    assert "not written back to SQLite yet" in ran.err
    assert "replicator run" in ran.err


def test_certificate_live_in_the_window(window: Cut) -> None:
    ran = cli(window.src, window.dsn, "certificate", "--live")
    assert ran.code == 0, str(ran)
    assert "rollback window" in ran.out
    assert "compare equal" in ran.out
    assert "parent" in ran.out  # what moved is still said


def test_certificate_live_in_the_window_with_changes_not_written_back(window: Cut) -> None:
    """Negative control: a difference the window has not carried back yet is a difference, and says why."""
    with psycopg.connect(window.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name) VALUES (5, 'e')")
    ran = cli(window.src, window.dsn, "certificate", "--live")
    assert ran.code == 3, str(ran)
    assert "SQLite ≠ PostgreSQL parent" in ran.err
    assert "not written back to SQLite yet" in ran.err
    assert _carry_back(window) >= 1
    assert cli(window.src, window.dsn, "certificate", "--live").code == 0


def test_certificate_live_after_finalize_reports_the_changes(window: Cut) -> None:
    """After the window closed, PostgreSQL's changes are no longer carried back: as after a cutover without one."""
    finalize.finalize(window.src, window.dsn, cfg())
    with psycopg.connect(window.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name) VALUES (5, 'e')")
    ran = cli(window.src, window.dsn, "certificate", "--live")
    assert ran.code == 3, str(ran)
    assert "changed since the cutover" in ran.err


def test_checkpoints_list_names_the_windows_ranges_as_transaction_ids(window: Cut) -> None:
    ran = cli(window.src, window.dsn, "checkpoints", "list")
    assert ran.code == 0, str(ran)
    rows = {
        line.split()[1]: line for line in ran.out.splitlines() if line.split()[:1] != ["#"] and len(line.split()) > 2
    }
    assert " xid " in rows["reverse"] + " "
    assert "xid" not in rows["cutover"]


# --- metrics ---------------------------------------------------------------------------------------------


def _scrape(port: int, want: str, deadline_s: float = 30) -> str:
    deadline = time.monotonic() + deadline_s
    body = ""
    while time.monotonic() < deadline:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            body = ""
        if want in body:
            return body
        time.sleep(0.2)
    raise AssertionError(f"{want!r} not in the metrics:\n{body}")


def test_metrics_show_the_reverse_lag(window: Cut) -> None:
    """An open transaction holds the horizon back, so a change made on PostgreSQL waits: the gauges show it,
    then 0 once it is written back."""
    port = free_port()
    metrics = Metrics()
    stop = threading.Event()
    blocker = psycopg.connect(window.dsn)
    blocker.execute("SELECT pg_current_xact_id()")  # an xid below the write's: its entry is not final yet
    with psycopg.connect(window.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name) VALUES (5, 'e')")
    running = threading.Thread(
        target=loop.run,
        args=(window.src, window.dsn, conf(metrics={"port": port})),
        kwargs={"stop": stop, "metrics": metrics},
        daemon=True,
    )
    running.start()
    try:
        body = _scrape(port, "replicator_reverse_journal_entries 1.0")
        lag = next(line for line in body.splitlines() if line.startswith("replicator_reverse_lag_seconds "))
        assert float(lag.split()[1]) > 0
        assert "replicator_daemon_up 1.0" in body
        blocker.commit()
        body = _scrape(port, "replicator_reverse_journal_entries 0.0")
        assert "replicator_reverse_lag_seconds 0.0" in body
    finally:
        blocker.close()
        stop.set()
        running.join(30)
    assert not running.is_alive()


def test_rollback_after_finalize_is_refused_even_with_force(window: Cut) -> None:
    """After finalize PostgreSQL is the app's database for good: rollback must not take the path of a cutover
    without a window (which un-fences SQLite with --force and loses what PostgreSQL holds)."""
    finalize.finalize(window.src, window.dsn, cfg())
    for args in ((), ("--force",)):
        ran = cli(window.src, window.dsn, "rollback", *args)
        assert ran.code == 3, str(ran)
        assert "for good" in ran.err
    assert not writable(window.src)


def test_negative_control_the_head_read_as_the_journal_position_is_caught(
    window: Cut, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plant the old reading (the chain's head, a reverse horizon, taken for SQLite's journal position): the
    status test's assertions fail on it (false tampering, a horizon as applied seq)."""
    from replicator.inspect import status as status_mod
    from replicator.state import integrity

    clean = status_mod.read_status(window.dsn, cfg(), window.src)
    assert clean.tampering == ()
    assert clean.applied_seq == window.cutover.seq_to
    monkeypatch.setattr(integrity, "forward_of", lambda state_store, head: head)
    monkeypatch.setattr(store, "last_forward", store.latest)
    planted = status_mod.read_status(window.dsn, cfg(), window.src)
    assert planted.tampering != ()
