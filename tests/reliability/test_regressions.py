"""Counterexamples the reliability harness found, shrunk to plain tests (strict xfail until fixed:
each flips to a failure the day the bug is fixed, so the marker is removed then)."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator import faults
from replicator.cutover import CutoverAborted, Options, cutover
from tests.test_apply_cases import app, cfg, check_same, drain, make_source
from tests.test_worker_restart import daemon

RESNAPSHOT_WINDOWS = ["resnapshot.after_pending", "resnapshot.after_reinstall", "resnapshot.before_commit"]
"""Between the commits of an online re-snapshot: owed reload recorded, triggers reinstalled, reload."""


@pytest.mark.parametrize("window", RESNAPSHOT_WINDOWS)
def test_interrupted_resnapshot_after_add_column_is_redone(tmp_path: Path, pg_dsn: str, window: str) -> None:
    """Finding 1: the column was added in PostgreSQL and the triggers reinstalled, then the reload was lost;
    the restarted loop saw no drift (PostgreSQL kept NULL in parent.extra, SQLite has 'd')."""
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    drain(src, pg_dsn)
    app(src).execute("ALTER TABLE parent ADD COLUMN extra TEXT DEFAULT 'd'")
    faults.arm(window, "raise", times=1)  # one transient error in that window: the loop restarts as after a crash
    try:
        drain(src, pg_dsn, cfg(retry_max_wait_s=0.2))
        assert window not in faults.armed()  # the window was reached
    finally:
        faults.disarm_all()
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_cutover_after_a_batch_checkpoint(tmp_path: Path, pg_dsn: str) -> None:
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    drain(src, pg_dsn)
    app(src).execute("INSERT INTO parent VALUES (2, 'b', 2.0)")
    drain(src, pg_dsn)  # the chain head is a batch checkpoint now, as in every real migration
    # found by the crash matrix (every cutover aborted: 'the chain starts at N'); fixed in 91d6a63
    app(src).execute("INSERT INTO parent VALUES (3, 'c', 3.0)")
    result = cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    assert result.stop_seq > 0


@pytest.mark.parametrize("window", RESNAPSHOT_WINDOWS)
def test_interrupted_resnapshot_after_lost_trigger_is_redone(tmp_path: Path, pg_dsn: str, window: str) -> None:
    """Finding 1b: the same windows after a lost trigger: the change made while it was missing was never
    applied once the reload was interrupted (PostgreSQL kept score 1.5)."""
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    drain(src, pg_dsn)
    db = app(src)
    db.execute("DROP TRIGGER _replicator_upd_parent")  # an app migration that lost the trigger
    db.execute("UPDATE parent SET score = 9.5 WHERE id = 1")  # not journaled
    faults.arm(window, "raise", times=1)
    try:
        drain(src, pg_dsn, cfg(retry_max_wait_s=0.2))
        assert window not in faults.armed()  # the window was reached
    finally:
        faults.disarm_all()
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_killed_resnapshot_blocks_cutover_until_redone(tmp_path: Path, pg_dsn: str) -> None:
    """Finding 1, a real kill (os._exit) before the reload commits: cutover refuses while the reload is owed,
    the next daemon redoes it, then cutover goes through."""
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    drain(src, pg_dsn)
    db = app(src)
    db.execute("DROP TRIGGER _replicator_upd_parent")
    db.execute("UPDATE parent SET score = 9.5 WHERE id = 1")  # not journaled
    killed = daemon(src, pg_dsn, "--until-drained", failpoints="resnapshot.before_commit:crash")
    _out, err = killed.communicate(timeout=60)
    assert killed.returncode == faults.CRASH_EXIT, err.decode()[-2000:]
    with pytest.raises(CutoverAborted, match="re-snapshot was interrupted"):
        cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    drain(src, pg_dsn)
    check_same(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    assert (tmp_path / "cert.json").exists()


@pytest.mark.soak
def test_back_to_back_runs_never_refuse_each_other(tmp_path: Path, pg_dsn: str) -> None:
    """Finding 4: a run started right after the previous one exited was refused ('another replicator is
    already applying', 2 in 300 under load) while the old backend still held the advisory lock; fixed by a
    short grace in Worker._lock_target. Racy by nature, so it loops (soak tier)."""
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    drain(src, pg_dsn)
    db = app(src)
    for i in range(300):
        db.execute("UPDATE parent SET score = ? WHERE id = 1", (float(i),))
        drain(src, pg_dsn)
    check_same(src, pg_dsn)
