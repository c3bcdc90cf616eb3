"""Crash safety of the rollback window: a kill at each commit boundary of the reverse apply and of ``rollback``
loses nothing, and a rerun completes (the process is killed with ``os._exit`` at the failpoint)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from checkpoints import audit, store
from checkpoints.model import Kind
from replicator import faults
from tests.support.rollback_window import cli_with_failpoint, cut_over_with_app_writes
from tests.support.source import writable

pytestmark = pytest.mark.e2e

REVERSE_POINTS = ("reverse.before_sqlite_commit", "reverse.between_commits", "reverse.before_postgres_commit")
ROLLBACK_POINTS = ("rollback.after_fence", "rollback.before_close_commit", "rollback.between_commits")


@pytest.fixture
def cut(tmp_path: Path, pg_dsn: str) -> Path:
    return cut_over_with_app_writes(tmp_path, pg_dsn)


def _rows(src: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, name, score FROM parent ORDER BY id").fetchall()
    finally:
        conn.close()


EXPECTED = [(1, "a", 7.25), (3, "c", 0.5)]


def _chain(dsn: str) -> list[Kind]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert audit.verify_db(conn, schema="replicator") == []
        return [c.kind for c in store.read(conn, schema="replicator")]


@pytest.mark.parametrize("point", REVERSE_POINTS)
def test_a_kill_in_the_reverse_apply_loses_nothing(cut: Path, pg_dsn: str, point: str) -> None:
    where = ("--source", str(cut), "--target", pg_dsn)
    crashed = cli_with_failpoint("run", *where, "--until-drained", failpoint=f"{point}:crash")
    assert crashed.returncode == faults.CRASH_EXIT, crashed.stderr[-2000:]
    rerun = cli_with_failpoint("run", *where, "--until-drained")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _rows(cut) == EXPECTED
    kinds = _chain(pg_dsn)
    assert kinds.count(Kind.REVERSE) == 1  # the batch is in the chain exactly once
    assert not writable(cut)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM replicator.reverse_journal").fetchone() == (0,)


@pytest.mark.parametrize("point", ROLLBACK_POINTS)
def test_a_kill_in_rollback_loses_nothing_and_a_rerun_completes(cut: Path, pg_dsn: str, point: str) -> None:
    where = ("--source", str(cut), "--target", pg_dsn)
    crashed = cli_with_failpoint("rollback", *where, failpoint=f"{point}:crash")
    assert crashed.returncode == faults.CRASH_EXIT, crashed.stderr[-2000:]
    rerun = cli_with_failpoint("rollback", *where)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _rows(cut) == EXPECTED
    kinds = _chain(pg_dsn)
    assert kinds[-1] is Kind.ROLLBACK
    assert kinds.count(Kind.ROLLBACK) == 1
    with psycopg.connect(pg_dsn, autocommit=True) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("INSERT INTO public.parent (id, name) VALUES (9, 'late')")
    assert writable(cut)
