"""`replicator capture install|status|remove` on a real file, through the click group."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from replicator.cli.main import cli
from tests.support.source import make_db


def _db(tmp_path: Path) -> Path:
    path = tmp_path / "app db.sqlite"
    return make_db(
        path,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE);"
        "CREATE TABLE audit (at TEXT, msg TEXT);",  # no primary key
    )


def _run(*args: str) -> tuple[int, str]:
    """Exit code and output; with --json only stdout (log lines go to stderr)."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout if "--json" in args else result.output


def test_install_refuses_then_installs_with_a_policy_then_status_and_remove(tmp_path: Path) -> None:
    path = _db(tmp_path)
    before = sqlite3.connect(path).execute("SELECT type, name, sql FROM sqlite_schema ORDER BY name").fetchall()

    code, out = _run("capture", "install", "--source", str(path), "--log-format", "json")
    assert code == 2
    assert '"audit" has no primary key' in out
    assert "no_key_policy" in out

    code, out = _run("capture", "install", "--source", str(path), "--no-key-policy", "snapshot-only", "-q")
    assert code == 0

    code, out = _run("capture", "status", "--source", str(path), "--json")
    assert code == 0
    status = json.loads(out)
    assert {t["name"]: t["state"] for t in status["tables"]} == {"audit": "snapshot-only", "users": "captured"}

    app = sqlite3.connect(path)
    app.execute("INSERT INTO users (email) VALUES ('a')")
    app.commit()
    code, out = _run("capture", "status", "--source", str(path))
    assert code == 0
    assert "journal: head 1, 1 pending, 1 row(s)" in out

    code, out = _run("capture", "install", "--source", str(path), "--no-key-policy", "snapshot-only", "--stamp-time")
    assert code == 0
    assert "changed  users: key by id, generation 2" in out
    app.execute("INSERT INTO users (email) VALUES ('b')")
    app.commit()
    code, out = _run("capture", "status", "--source", str(path))
    assert "journal: head 2, 2 pending, lag " in out

    app.executescript(
        "CREATE TABLE u2 (id INTEGER PRIMARY KEY, email TEXT UNIQUE); INSERT INTO u2 SELECT * FROM users;"
        " DROP TABLE users; ALTER TABLE u2 RENAME TO users;"
    )
    code, out = _run("capture", "status", "--source", str(path))
    assert code == 1
    assert "triggers-missing" in out
    assert "re-snapshot" in out

    code, out = _run("capture", "remove", "--source", str(path))
    assert code == 0
    assert "removed 0 trigger(s) and a journal of 2 row(s)" in out  # the rebuild had dropped ours already
    after = sqlite3.connect(path).execute("SELECT type, name FROM sqlite_schema ORDER BY name").fetchall()
    assert after == [(t, n) for t, n, _sql in before]  # the app's own rebuild changed users' SQL text only


def test_config_file_sets_per_table_policies(tmp_path: Path) -> None:
    path = _db(tmp_path)
    config = tmp_path / "replicator.toml"
    config.write_text('[capture]\nno_key_policy = "refuse"\n[capture.tables]\naudit = "rowid"\n')
    code, out = _run("capture", "install", "--source", str(path), "--config", str(config), "--json")
    assert code == 0
    report = json.loads(out)
    assert {t["name"]: t["mode"] for t in report["tables"]} == {"audit": "rowid", "users": "key"}


def test_missing_source_is_a_usage_error(tmp_path: Path) -> None:
    code, out = _run("capture", "status", "--source", str(tmp_path / "nope.db"))
    assert code == 2
    assert "does not exist" in out
