"""``replicator checkpoints ...`` through click against a real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from replicator.cli.main import cli
from tests.support.chain import build_chain
from tests.support.pgserver import as_uri

ENV = {"COLUMNS": "200", "REPLICATOR_LOG__FORMAT": "json"}


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["checkpoints", *args], env=ENV, catch_exceptions=False)


@pytest.fixture
def target(pg: psycopg.Connection[Any], pg_dsn: str) -> str:
    build_chain(pg, 6)
    return as_uri(pg_dsn)


def test_list_pages_and_json(target: str) -> None:
    result = run("list", "--target", target)
    assert result.exit_code == 0, result.output
    assert "genesis" in result.output
    assert "next page: --since 6" in result.output
    page = run("list", "--target", target, "--since", "2", "--limit", "2", "--json")
    assert page.exit_code == 0, page.output
    rows = json.loads(page.output)
    assert [r["number"] for r in rows] == [3, 4]
    assert {"hash", "prev_hash", "seq_from", "seq_to", "tables", "kind", "at", "tool"} <= set(rows[0])
    assert rows[1]["prev_hash"] == rows[0]["hash"]


def test_show(target: str) -> None:
    result = run("show", "3", "--target", target)
    assert result.exit_code == 0, result.output
    assert "users" in result.output
    assert "prev_hash" in result.output
    shown = json.loads(run("show", "3", "--target", target, "--json").output)
    assert shown["number"] == 3
    assert shown["tables"]["users"]["upserted"] == 2
    missing = run("show", "99", "--target", target)
    assert missing.exit_code == 2
    assert "there is no checkpoint 99: it holds 1..6" in missing.output


def test_verify_ok_then_tampered_exits_3_with_every_finding(target: str, pg: psycopg.Connection[Any]) -> None:
    ok = run("verify", "--target", target)
    assert ok.exit_code == 0, ok.output
    assert "ok: 6 checkpoint(s)" in ok.output
    pg.execute("UPDATE replicator.checkpoints SET hash = repeat('e', 64) WHERE number = 2")
    pg.execute("DELETE FROM replicator.checkpoints WHERE number = 4")
    bad = run("verify", "--target", target)
    assert bad.exit_code == 3
    assert "checkpoint 2: edited" in bad.output
    assert "checkpoint 5: deleted" in bad.output
    assert "error: the checkpoint chain" in bad.output
    assert "2 finding(s)" in bad.output


def test_export_and_verify_file_without_a_database(target: str, tmp_path: Path) -> None:
    path = tmp_path / "chain.jsonl"
    exported = run("export", str(path), "--target", target)
    assert exported.exit_code == 0, exported.output
    assert "exported 6 checkpoint(s)" in exported.output
    offline = run("verify", "--file", str(path), "--target", "postgresql://nobody@127.0.0.1:1/none")
    assert offline.exit_code == 0, offline.output
    assert "ok: 6 checkpoint(s)" in offline.output
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    torn = run("verify", "--file", str(path))
    assert torn.exit_code == 3
    assert "torn_tail" in torn.output


def test_compact(target: str) -> None:
    result = run("compact", "--upto", "3", "--target", target)
    assert result.exit_code == 0, result.output
    assert "compacted checkpoints 1..3 (3) into checkpoint 3" in result.output
    listed = json.loads(run("list", "--target", target, "--json").output)
    assert [(r["number"], r["kind"]) for r in listed][:2] == [(3, "compaction"), (4, "batch")]
    assert run("verify", "--target", target).exit_code == 0
    refused = run("compact", "--upto", "6", "--target", target)
    assert refused.exit_code == 2
    assert "error: cannot compact up to 6" in refused.output


def test_no_checkpoint_table_is_one_line(pg_dsn: str) -> None:
    result = run("list", "--target", as_uri(pg_dsn))
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "no checkpoint table replicator.checkpoints" in result.output


def test_verify_against_an_earlier_export(target: str, pg: psycopg.Connection[Any], tmp_path: Path) -> None:
    earlier = tmp_path / "earlier.jsonl"
    assert run("export", str(earlier), "--target", target).exit_code == 0
    assert run("verify", "--target", target, "--against", str(earlier)).exit_code == 0
    pg.execute("DELETE FROM replicator.checkpoints WHERE number = 6")
    assert run("verify", "--target", target).exit_code == 0  # the chain alone cannot tell
    cut = run("verify", "--target", target, "--against", str(earlier))
    assert cut.exit_code == 3
    assert "checkpoint 6: deleted: in the export, but no longer in the chain" in cut.output
