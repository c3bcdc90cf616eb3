"""Online backup while the app writes: the copy is whole, owner-only, matches its manifest's SHA-256,
passes integrity_check and holds exactly the rows of one committed state."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from replicator.cli.main import cli
from replicator.cutover import backup
from tests.support.source import AppThread

BATCH = 10


def _app(path: Path, journal_mode: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal_mode}")
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, batch INTEGER, note TEXT)")
    conn.execute("CREATE TABLE lines (id INTEGER PRIMARY KEY, batch INTEGER, payload BLOB)")
    conn.execute("BEGIN")
    for i in range(20_000):  # ~ a few MB, so the stepped copy takes many steps
        conn.execute("INSERT INTO orders (batch, note) VALUES (?, ?)", (0, f"seed {i}" * 4))
        conn.execute("INSERT INTO lines (batch, payload) VALUES (?, ?)", (0, bytes(100)))
    conn.execute("COMMIT")
    conn.close()


class Writer(AppThread):
    """The app: commits BATCH rows into both tables per transaction until stopped."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, pause_s=0.0005)
        self.batch = 1

    def transaction(self, conn: sqlite3.Connection) -> None:
        for _ in range(BATCH):
            conn.execute("INSERT INTO orders (batch, note) VALUES (?, 'x')", (self.batch,))
            conn.execute("INSERT INTO lines (batch, payload) VALUES (?, x'00')", (self.batch,))
        self.batch += 1


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_backup_under_concurrent_writes_is_one_committed_state(tmp_path: Path, journal_mode: str) -> None:
    source = tmp_path / "app.db"
    _app(source, journal_mode)
    writer = Writer(source)
    writer.start()
    writer.wait_for_commits(5)
    try:
        result = backup.backup(source, tmp_path / "out", verify=True, pages_per_step=16, step_sleep_s=0.001)
        commits_during = writer.commits
    finally:
        writer.stop.set()
        writer.join()
    assert writer.error is None
    assert commits_during > 5  # the app kept committing while the copy ran
    copy = Path(result.path)
    assert copy.exists()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(result.manifest_path).stat().st_mode) == 0o600
    assert [p.name for p in copy.parent.iterdir() if p.name.startswith(".")] == []  # no partial left
    manifest = json.loads(Path(result.manifest_path).read_text())
    assert manifest["sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert manifest["size"] == copy.stat().st_size
    assert manifest["journal_mode"] == journal_mode
    assert manifest["integrity_check"] == "ok"
    assert manifest["page_count"] * manifest["page_size"] == manifest["size"]
    assert manifest["tool"].startswith("replicator ")
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    orders = conn.execute("SELECT count(*), max(batch) FROM orders WHERE batch > 0").fetchone()
    lines = conn.execute("SELECT count(*), max(batch) FROM lines WHERE batch > 0").fetchone()
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()
    # One committed state: both tables hold the same whole batches 1..n, nothing torn.
    assert orders == lines
    assert orders[0] == BATCH * orders[1]
    assert orders[1] >= 5
    assert backup.check_manifest(result.manifest_path).sha256 == manifest["sha256"]


def test_manifest_check_catches_a_changed_copy(tmp_path: Path) -> None:
    source = tmp_path / "app.db"
    _app(source, "wal")
    result = backup.backup(source, tmp_path / "out")
    assert result.manifest.integrity_check is None
    with Path(result.path).open("r+b") as handle:
        handle.seek(5000)
        handle.write(b"tampered")
    with pytest.raises(backup.BackupFailed, match="SHA-256"):
        backup.check_manifest(result.manifest_path)


def test_cli_backup_prints_the_manifest(tmp_path: Path) -> None:
    source = tmp_path / "app.db"
    _app(source, "wal")
    out = CliRunner().invoke(
        cli, ["backup", "--source", str(source), "--out", str(tmp_path / "b"), "--verify", "--json"]
    )
    assert out.exit_code == 0, out.output
    manifest = json.loads(out.stdout)
    assert manifest["integrity_check"] == "ok"
    assert (tmp_path / "b" / manifest["file"]).stat().st_size == manifest["size"]


def test_backup_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    out = CliRunner().invoke(cli, ["backup", "--source", str(tmp_path / "nope.db"), "--out", str(tmp_path / "b")])
    assert out.exit_code == 2
    assert "does not exist" in out.output
