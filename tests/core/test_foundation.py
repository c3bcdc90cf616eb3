"""Foundation: config precedence and errors, secret redaction, source-file checks, PG harness."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from replicator import config, log, pg
from replicator.errors import ConfigError, TargetError, UsageError
from tests.support.paths import ROOT
from triggers import source
from triggers.errors import SourceError


def test_config_defaults_are_the_named_constants() -> None:
    cfg = config.load(None, environ={})
    assert cfg.source.busy_timeout_ms == config.DEFAULT_BUSY_TIMEOUT_MS
    assert cfg.apply.batch_rows == config.DEFAULT_BATCH_ROWS
    assert cfg.snapshot.on_bad_value == "stop"


def test_config_precedence_toml_then_env_then_flags(tmp_path: Path) -> None:
    file = tmp_path / "r.toml"
    file.write_text('[source]\nbusy_timeout_ms = 100\npath = "a.db"\n[apply]\nbatch_rows = 7\n')
    env = {"REPLICATOR_APPLY__BATCH_ROWS": "8", "REPLICATOR_SNAPSHOT__WORKERS": "3"}
    cfg = config.load(file, environ=env, overrides={"source": {"path": "b.db"}})
    assert cfg.source.busy_timeout_ms == 100
    assert cfg.apply.batch_rows == 8
    assert cfg.snapshot.workers == 3
    assert cfg.source.path == "b.db"


def test_config_unknown_key_is_named(tmp_path: Path) -> None:
    file = tmp_path / "r.toml"
    file.write_text("[apply]\nbatch_rowz = 7\n")
    with pytest.raises(ConfigError, match="batch_rowz"):
        config.load(file, environ={})


def test_config_bad_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"apply\.batch_rows"):
        config.load(None, environ={"REPLICATOR_APPLY__BATCH_ROWS": "many"})
    with pytest.raises(ConfigError, match="unknown section"):
        config.load(None, environ={"REPLICATOR_NOPE__X": "1"})


def test_config_type_overrides(tmp_path: Path) -> None:
    file = tmp_path / "r.toml"
    file.write_text('[types."User".createdAt]\ntype = "timestamptz"\nformat = "unix_ms"\n')
    cfg = config.load(file, environ={})
    assert cfg.types["User"]["createdAt"].format == "unix_ms"


def test_example_config_loads() -> None:
    example = ROOT / "replicator.example.toml"
    cfg = config.load(example, environ={})
    assert cfg.snapshot.on_bad_value == "stop"


def test_redaction_of_uri_kv_and_registered_secret() -> None:
    assert "s3cr3t" not in log.redact("postgresql://bob:s3cr3t@db:5432/x failed")
    assert "s3cr3t" not in log.redact("host=db password=s3cr3t dbname=x")
    log.register_secret("hunter2-sentinel")
    assert "hunter2-sentinel" not in log.redact("oops hunter2-sentinel in a message")


def test_log_lines_never_carry_the_password() -> None:
    stream = io.StringIO()
    log.configure("json", "debug", stream=stream)
    log.register_secret("pw-sentinel-991")
    log.get("test", dsn="postgresql://u:pw-sentinel-991@h/db").info("connecting", extra=["pw-sentinel-991"])
    line = stream.getvalue()
    assert "pw-sentinel-991" not in line
    assert json.loads(line)["component"] == "test"


def test_bad_dsn_is_usage_error() -> None:
    with pytest.raises(UsageError, match="not valid"):
        pg.parse("postgresql://u:pw@h:notaport/db x=")
    with pytest.raises(UsageError, match="no target"):
        pg.parse(None)


def test_unreachable_pg_names_host_not_password() -> None:
    with pytest.raises(TargetError) as info:
        pg.connect("postgresql://u:topsecret-77@127.0.0.1:1/db", connect_timeout=2)
    assert "topsecret-77" not in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("hello, not a database at all" * 10), "not a SQLite 3 database"),
    ],
)
def test_source_refuses_bad_files(tmp_path: Path, make: object, match: str) -> None:
    path = tmp_path / "app.db"
    make(path)  # type: ignore[operator]
    with pytest.raises(SourceError, match=match):
        source.connect(path)


def test_source_refuses_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t(x)")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,) for _ in range(200)])
    conn.commit()
    conn.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="truncated"):
        source.connect(path)


def test_source_read_only_connection_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "app db é.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t(x)")
    conn.commit()
    conn.close()
    ro = source.connect(path)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.execute("INSERT INTO t VALUES (1)")


def test_each_test_gets_its_own_empty_database(pg: psycopg.Connection[tuple[object, ...]]) -> None:
    row = pg.execute("SELECT current_database(), count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert row is not None
    assert str(row[0]).startswith("rt_")
    assert row[1] == 0
