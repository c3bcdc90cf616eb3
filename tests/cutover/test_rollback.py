"""Rollback after a cutover: SQLite writable again; PostgreSQL-side changes since the certificate are
reported and need --force."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from replicator.cutover.rollback import RollbackRefused, rollback
from replicator.cutover.session import Options
from replicator.cutover.window import cutover
from replicator.state.store import StateStore
from tests.support.compare import drain
from tests.support.daemon import cfg
from tests.support.source import make_source, writable

pytestmark = pytest.mark.e2e


@pytest.fixture
def cut(tmp_path: Path, pg_dsn: str) -> Path:
    src = make_source(
        tmp_path / "app.db",
        rows="""
        INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL);
        INSERT INTO child VALUES (10, 1, 'x', 'c10');
        INSERT INTO pair VALUES ('k', 1, 'one');
        """,
    )
    drain(src, pg_dsn)
    # Without the rollback window: the rollback that can only un-fence (with the window: tests/reverse/).
    cutover(src, pg_dsn, cfg(), Options(backup=False, rollback_window=False, certificate_path=tmp_path / "cert.json"))
    assert not writable(src)
    return src


def test_rollback_without_changes_unfences(cut: Path, pg_dsn: str) -> None:
    report = rollback(cut, pg_dsn, cfg())
    assert report.changed == ()
    assert report.unfenced_triggers == 9
    assert writable(cut)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        st = StateStore(conn, "replicator").read_phase()
        assert st is not None
        assert "rolled back" in st.reason
        runs = conn.execute("SELECT command, status FROM replicator.runs WHERE command = 'rollback'").fetchall()
    assert runs == [("rollback", "ok")]


def test_rollback_reports_postgres_changes_and_needs_force(cut: Path, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (name) VALUES ('written in pg')")
        conn.execute("UPDATE public.pair SET v = 'changed' WHERE a = 'k'")
    with pytest.raises(RollbackRefused) as refused:
        rollback(cut, pg_dsn, cfg())
    assert refused.value.exit_code == 3
    assert "parent: 2 → 3 rows" in refused.value.message
    assert "pair" in refused.value.message
    assert not writable(cut)
    report = rollback(cut, pg_dsn, cfg(), force=True)
    assert sorted(m.table for m in report.changed) == ["pair", "parent"]
    assert report.forced
    assert writable(cut)


def test_rollback_cli(cut: Path, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.child")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    cmd = [sys.executable, "-m", "replicator", "rollback", "--source", str(cut), "--target", pg_dsn]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert refused.returncode == 3, refused.stderr
    assert "child: 1 → 0 rows" in refused.stderr
    forced = subprocess.run([*cmd, "--force"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert forced.returncode == 0, forced.stderr
    assert "lost: child" in forced.stderr
    assert "SQLite writable again" in forced.stdout
    assert writable(cut)
