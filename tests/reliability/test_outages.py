"""Outages (issue 9, item 2): the daemon retries, status shows it, nothing is lost, it recovers by itself.

Default tier: short outages. Soak (``-m soak``): PostgreSQL unreachable 60 s, the SQLite lock held 10 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import outages

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _check(out: outages.Outcome) -> None:
    assert out.passed, out


def test_postgres_unreachable_mid_stream(tmp_path: Path, pg_dsn: str) -> None:
    _check(outages.postgres_unreachable(tmp_path, pg_dsn, seconds=5))


def test_postgres_gone_during_a_batch(tmp_path: Path, pg_dsn: str) -> None:
    _check(outages.postgres_gone_during_batch(tmp_path, pg_dsn, times=2, down_s=1.5))


def test_sqlite_write_lock_held(tmp_path: Path, pg_dsn: str) -> None:
    _check(outages.sqlite_write_lock(tmp_path, pg_dsn, seconds=3))


@pytest.mark.parametrize("tar", [False, True], ids=["directory", "tar"])
def test_export_on_a_full_disk_fails_cleanly(tmp_path: Path, tar: bool) -> None:
    out = outages.export_disk_full(tmp_path, tar=tar)
    assert out.exit_code == 1, out
    assert len(out.error_lines) == 1, out  # one line, nothing else on stderr
    assert out.leftovers == [], out  # no export, no partial work directory


@pytest.mark.parametrize("tar", [False, True], ids=["directory", "tar"])
def test_export_on_a_full_disk_says_what_to_do(tmp_path: Path, tar: bool) -> None:
    """Finding 3 (fixed): the line read 'unexpected OSError: [Errno 27] File too large ... report it'."""
    out = outages.export_disk_full(tmp_path, tar=tar)
    line = out.error_lines[0]
    assert "unexpected" not in line, out.error_lines
    assert f"cannot write the export {tmp_path / 'exports' / ('exp.tar' if tar else 'exp')}:" in line, line
    assert "file size limit reached" in line, line
    assert "choose another --out" in line, line


@pytest.mark.soak
def test_soak_postgres_unreachable_60s(tmp_path: Path, pg_dsn: str) -> None:
    _check(outages.postgres_unreachable(tmp_path, pg_dsn, seconds=60))


@pytest.mark.soak
def test_soak_sqlite_write_lock_10s(tmp_path: Path, pg_dsn: str) -> None:
    _check(outages.sqlite_write_lock(tmp_path, pg_dsn, seconds=10))


@pytest.mark.soak
def test_soak_postgres_gone_during_batches(tmp_path: Path, pg_dsn: str) -> None:
    _check(outages.postgres_gone_during_batch(tmp_path, pg_dsn, times=10, down_s=3))
