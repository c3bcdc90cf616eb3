"""A rollback window with the app's writes in it, and the CLI run with a failpoint armed: what the reverse
direction's crash tests and the rollback certificate's tests start from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from replicator.cutover.session import Options
from replicator.cutover.window import cutover
from tests.support.compare import drain
from tests.support.daemon import cfg
from tests.support.source import make_source


def cut_over_with_app_writes(tmp_path: Path, dsn: str) -> Path:
    """parent (1, 2) migrated and cut over with the window open; then the app, on PostgreSQL, inserts 3, updates
    1 and deletes 2. Returns the SQLite file."""
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL);")
    drain(src, dsn)
    cutover(src, dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name, score) VALUES (3, 'c', 0.5)")
        conn.execute("UPDATE public.parent SET score = 7.25 WHERE id = 1")
        conn.execute("DELETE FROM public.parent WHERE id = 2")
    return src


def cli_with_failpoint(*args: str, failpoint: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m replicator ARGS`` with ``REPLICATOR_FAILPOINTS`` set (empty: none armed)."""
    env = {**os.environ, "REPLICATOR_FAILPOINTS": failpoint}
    return subprocess.run(
        [sys.executable, "-m", "replicator", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
