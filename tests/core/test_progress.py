"""Progress where users look (issue 17): export, verify, backup and cutover's reads before the freeze
report through the one mechanism snapshot and import use (``replicator.progress``).

The library calls are checked with a recording ``Progress`` against real files and a real PostgreSQL;
the CLI is run once on a pseudo-terminal (bars drawn) and once on a pipe (no bars: JSON log lines).
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from replicator.cutover import backup, window
from replicator.cutover.session import Options
from replicator.inspect import verify, verify_sides
from replicator.load.offline import export
from replicator.stream.worker import Worker
from tests.support.cli import cli_env
from tests.support.daemon import cfg
from tests.support.source import make_source

pytestmark = pytest.mark.e2e

ROWS = 12_000
"""More than two fetch batches of 5,000: the bars move more than once per table."""


class Recorder:
    """Every progress call, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []

    def start(self, table: str, total: int) -> None:
        self.events.append(("start", table, total))

    def advance(self, table: str, rows: int) -> None:
        self.events.append(("advance", table, rows))

    def finish(self, table: str, rows: int, seconds: float) -> None:
        assert seconds >= 0
        self.events.append(("finish", table, rows))

    def of(self, table: str) -> list[tuple[str, int]]:
        return [(kind, n) for kind, name, n in self.events if name == table]


@pytest.fixture
def src(tmp_path: Path, pg_dsn: str) -> Path:
    """A captured, snapshotted source: ``parent`` with ROWS rows, ``pair`` with 3."""
    path = make_source(tmp_path / "app.db")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO parent VALUES (?, ?, ?)", ((i, f"p{i}", i / 3) for i in range(ROWS)))
        conn.executemany("INSERT INTO pair VALUES (?, ?, 'v')", (("k", i) for i in range(3)))
        conn.execute("COMMIT")
    Worker(path, pg_dsn, cfg()).run(until_drained=True)
    return path


def assert_task(events: list[tuple[str, int]], rows: int, *, total: int | None = None) -> None:
    """start (with ``total``), advances that never go back and reach ``rows``, finish with ``rows``."""
    assert events[0][0] == "start", events
    if total is not None:
        assert events[0][1] == total, events
    assert events[-1] == ("finish", rows), events
    done = [n for kind, n in events[1:-1] if kind == "advance"]
    assert done == sorted(done), events
    assert done[-1] == rows, events


def test_export_reports_each_tables_rows(src: Path, tmp_path: Path) -> None:
    shown = Recorder()
    export.export(src, tmp_path / "out", cfg(), progress=shown)
    assert_task(shown.of("parent"), ROWS, total=ROWS)
    assert_task(shown.of("pair"), 3, total=3)
    assert len([e for e in shown.of("parent") if e[0] == "advance"]) >= 3


@pytest.mark.parametrize("parallel", ["off", "thread", "process"])
def test_verify_reports_each_tables_rows(src: Path, pg_dsn: str, parallel: verify_sides.Parallel) -> None:
    shown = Recorder()
    report = verify.verify(src, pg_dsn, cfg(), parallel=parallel, progress=shown)
    assert report.match
    assert_task(shown.of("parent"), ROWS, total=ROWS)  # the snapshot ANALYZEd: reltuples is exact
    assert_task(shown.of("pair"), 3)


def test_backup_reports_pages(src: Path, tmp_path: Path) -> None:
    shown = Recorder()
    result = backup.backup(src, tmp_path / "backups", pages_per_step=8, step_sleep_s=0, progress=shown)
    pages = result.manifest.page_count
    events = shown.of("app.db")
    assert_task(events, pages, total=pages)
    assert len(events) >= pages // 8


def test_cutover_reports_the_full_verify_and_the_prepass(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    shown = Recorder()
    options = Options(dry_run=True, backup=False, certificate_path=tmp_path / "cert.json")
    result = window.cutover(src, pg_dsn, cfg(), options, progress=shown)
    assert result.dry_run
    events = shown.of("parent")
    starts = [i for i, (kind, _n) in enumerate(events) if kind == "start"]
    assert len(starts) == 2, events  # the preflight's full verify, then the pre-pass
    assert_task(events[: starts[1]], ROWS, total=ROWS)
    assert_task(events[starts[1] :], ROWS, total=ROWS)  # the running digests' count


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal (so it draws bars); returns exit code and stderr."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "replicator", *args],
        cwd=cwd,
        env=cli_env({"COLUMNS": "120", "TERM": "xterm"}),
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def test_cli_draws_bars_on_a_terminal_and_none_on_a_pipe(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    for command in (["verify"], ["export", "--out", str(tmp_path / "x")], ["backup", "--out", str(tmp_path / "b")]):
        code, err = _on_a_terminal([*command, "--source", str(src), "--target", pg_dsn], tmp_path)
        assert code == 0, err
        unit = "pages/s" if command[0] == "backup" else "rows/s"
        assert unit in err, (command, err)
        assert ("app.db" if command[0] == "backup" else "parent") in err, (command, err)
    piped = subprocess.run(
        [sys.executable, "-m", "replicator", "verify", "--source", str(src), "--target", pg_dsn],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert "rows/s" not in piped.stderr
