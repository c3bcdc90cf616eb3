"""`replicator quarantine list|ack`: an operator reviews refused values, then cutover may proceed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from replicator.cli.main import cli


def _app_with_a_nul(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes VALUES (1, 'fine'), (2, 'bad' || char(0) || 'nul'), (3, 'also fine')")
    conn.commit()
    conn.close()


def test_list_then_ack_quarantined_values(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = tmp_path / "app.db"
    _app_with_a_nul(path)
    runner = CliRunner()
    common = ["--source", str(path), "--target", pg_dsn]
    loaded = runner.invoke(cli, ["snapshot", *common, "--on-bad-value", "quarantine"])
    assert loaded.exit_code == 0, loaded.output

    listed = runner.invoke(cli, ["quarantine", "list", *common, "--json"])
    assert listed.exit_code == 0, listed.output
    values = json.loads(listed.stdout.strip().splitlines()[-1])
    assert [(v["table"], v["column"], v["acknowledged"]) for v in values] == [("notes", "body", False)]
    assert "NUL" in values[0]["reason"] or "nul" in values[0]["reason"].lower()

    acked = runner.invoke(cli, ["quarantine", "ack", *common, "--table", "notes"])
    assert acked.exit_code == 0, acked.output
    assert "acknowledged 1" in acked.stdout
    row = pg.execute("SELECT count(*) FROM replicator.quarantine WHERE NOT acknowledged").fetchone()
    assert row == (0,)
    again = runner.invoke(cli, ["quarantine", "ack", *common])
    assert "acknowledged 0" in again.stdout


def test_list_on_a_target_without_quarantine_is_empty(tmp_path: Path, pg_dsn: str) -> None:
    result = CliRunner().invoke(cli, ["quarantine", "list", "--target", pg_dsn, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
