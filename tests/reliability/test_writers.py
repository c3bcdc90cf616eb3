"""How apps write (issue 14): the daemon beside a writer that uses a connection per transaction, restarts,
the ``sqlite3`` shell, or Django's deferred read-then-write transactions. Every row arrives exactly once and
the daemon holds no deleted database file. Default tier, a few seconds each."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import loadgen, writers

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _check(out: writers.Outcome) -> None:
    assert out.passed, out


def test_connection_per_transaction(tmp_path: Path, pg_dsn: str) -> None:
    _check(writers.beside(tmp_path, pg_dsn, "conn-per-txn"))


def test_app_restarts(tmp_path: Path, pg_dsn: str) -> None:
    out = writers.beside(tmp_path, pg_dsn, "restarts")
    assert int(out.writer.get("restarts", 0)) > 0, out  # the writer did restart mid-run
    _check(out)


@pytest.mark.skipif(loadgen.shell_binary() is None, reason="the sqlite3 command-line shell is not installed")
def test_sqlite3_shell_sessions(tmp_path: Path, pg_dsn: str) -> None:
    _check(writers.beside(tmp_path, pg_dsn, "shell"))


def test_deferred_read_then_write(tmp_path: Path, pg_dsn: str) -> None:
    """Mid-run (the writer's connection open) it holds today; the writer's exit is the app's last close."""
    _check(writers.beside(tmp_path, pg_dsn, "deferred"))
