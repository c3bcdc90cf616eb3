"""A real ORM app for the whole-app tests (tests/apps): its files written to tmp, each of its runs a process of
its own (``python run.py COMMAND``, ``DB=sqlite`` or ``DB=pg``), and the README runbook carried out on it while
its writer runs."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.support.cli import replicator
from tests.support.daemon import DaemonProcess


class OrmApp:
    """The app whose ``run.py`` is in ``root``; ``env`` tells it where PostgreSQL is (each ORM its own way)."""

    def __init__(self, root: Path, sqlite: Path, env: dict[str, str]) -> None:
        self.root, self.sqlite, self.extra_env = root, sqlite, env

    def env(self, db: str) -> dict[str, str]:
        return {**os.environ, "DB": db, "SQLITE": str(self.sqlite), **self.extra_env}

    def call(self, db: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``run.py`` with ``args`` against ``db``, to its end: its exit code and output, whatever they are."""
        return subprocess.run(
            [sys.executable, str(self.root / "run.py"), *args],
            env=self.env(db),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.root,
        )

    def run(self, db: str, *args: str) -> str:
        """``run.py`` with ``args`` against ``db``, which must succeed: its stdout."""
        done = self.call(db, *args)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])
        return done.stdout

    def writer(self, stop: Path, log: Path) -> subprocess.Popen[str]:
        """``run.py writer`` on SQLite until ``stop`` exists: a line ``ok N`` or ``refused N why`` per write."""
        with log.open("w") as err:
            return subprocess.Popen(
                [sys.executable, str(self.root / "run.py"), "writer", str(stop)],
                env=self.env("sqlite"),
                cwd=self.root,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )


def to_wal(path: Path) -> None:
    """The runbook's one-time switch (Django's and SQLAlchemy's default journal is delete)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode = wal").fetchone() == ("wal",)


def move_under_writes(app: OrmApp, tmp_path: Path, pg_dsn: str, seeded: str | None) -> list[list[str]]:
    """The README runbook from analyze to cutover, with the app's writer running; the writer's outcomes.

    ``seeded``: a table the app's own migrations filled in PostgreSQL, which the first existing-mode snapshot
    must name (it asks for ``--replace``); None where they fill none."""
    src, cwd = str(app.sqlite), tmp_path
    analyzed = replicator("analyze", "--source", src, "--target", pg_dsn, "--mode", "existing", "-q", cwd=cwd)
    assert analyzed.returncode == 0, analyzed.stderr[-3000:]  # every column loads: nothing to fix
    assert replicator("capture", "install", "--source", src, cwd=cwd).returncode == 0
    snap = ("snapshot", "--source", src, "--target", pg_dsn, "--mode", "existing")
    if seeded is not None:  # the app's migrations seeded rows: existing mode asks before replacing them
        first = replicator(*snap, cwd=cwd)
        assert first.returncode == 2, first.stderr[-3000:]
        assert seeded in first.stderr
        assert "--replace" in first.stderr
    done = replicator(*snap, *(["--replace"] if seeded else []), cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    # The daemon streams while the app writes through the ORM; cutover runs with both running.
    daemon = DaemonProcess(Path(src), pg_dsn, cwd=cwd, log=tmp_path / "daemon.log")
    stop = tmp_path / "stop"
    writer = app.writer(stop, tmp_path / "writer.log")
    try:
        time.sleep(2.0)
        cut = ("cutover", "--source", src, "--target", pg_dsn, "--no-backup", "--certificate", str(tmp_path / "c.json"))
        done = replicator(*cut, cwd=cwd)
        assert done.returncode == 0, done.stderr[-3000:] + daemon.output(3000)
        time.sleep(0.3)  # the writer meets the fence
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=60)
        try:
            daemon.wait(15)  # after a cutover the daemon exits by itself
        except subprocess.TimeoutExpired:
            daemon.stop(30)
    outcomes = [line.split(" ", 2) for line in out.splitlines()]
    committed = [int(o[1]) for o in outcomes if o[0] == "ok"]
    refused = [o for o in outcomes if o[0] == "refused"]
    assert committed, (tmp_path / "writer.log").read_text()[-2000:]
    assert refused  # the writer was still writing when SQLite was fenced
    assert all("fenced" in o[2] for o in refused), refused[:3]
    assert min(int(o[1]) for o in refused) > max(committed)
    return outcomes
