"""export → verify-export → import equals a direct snapshot; every failure named, nothing half-committed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from click.testing import CliRunner

from replicator import config
from replicator.cli.main import cli
from replicator.errors import BadValue, TargetNotEmpty
from replicator.load import snapshot
from replicator.load.offline import export, importer
from replicator.load.offline.manifest import Manifest
from replicator.load.offline.verifier import ExportError, verify_export
from replicator.load.options import ImportOptions
from tests.conftest import REALWORLD
from tests.support.compare import assert_same
from tests.support.export import export_source, reseal
from tests.support.pgserver import fresh_database

CFG = config.load(None, environ={})
#: test_export's source holds NUL and non-UTF-8 values: quarantined (3 rows) by the import.
Q = config.load(overrides={"snapshot": {"on_bad_value": "quarantine"}}, environ={})
FILES = [
    "chinook/Chinook_Sqlite.sqlite",
    "northwind/northwind.db",
    "sakila/sakila.db",
    "orm-samples/prisma7_json_scalars.db",
    "orm-samples/django52_sample.db",
]
#: Files holding values PostgreSQL cannot take: loaded under quarantine by both paths.
QUARANTINE = {"pgloader-tests/bad-utf8.db", "pgloader-tests/type-mismatch.db"}


def tables(pg: psycopg.Connection[Any]) -> list[str]:
    rows = pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("name", FILES + sorted(QUARANTINE))
def test_export_verify_import_equals_a_direct_snapshot(
    name: str, tmp_path: Path, pg_dsn: str, pg: Any, pg_server: str, realworld: Path
) -> None:
    source = REALWORLD / name
    policy = "quarantine" if name in QUARANTINE else "stop"
    out = tmp_path / "dump"
    export.export(source, out, CFG)
    assert verify_export(out).ok or name in QUARANTINE or "orphan" in " ".join(verify_export(out).problems)
    imported = importer.import_export(out, pg_dsn, CFG, ImportOptions(on_bad_value=policy))
    with fresh_database(pg_server) as other:
        direct = snapshot.snapshot(source, other, CFG, on_bad_value=policy)
        with psycopg.connect(other, autocommit=True) as pconn:
            direct_tables = tables(pconn)
    assert direct.plan is not None
    # Same types, same DDL; only the plan-level warnings about views and triggers (not exported)
    # differ, and the wording of the reasons where the snapshot guessed from a sample it then verified.
    assert _worded_alike(imported.plan) == _worded_alike(
        msgspec.structs.replace(direct.plan, warnings=imported.plan.warnings)
    )
    assert {t.table: (t.rows, t.quarantined, t.checksum) for t in imported.tables} == {
        t.table: (t.rows, t.quarantined, t.checksum) for t in direct.tables
    }
    assert tables(pg) == direct_tables
    if name not in QUARANTINE:
        assert_same(source, pg, imported.plan)
    recorded = dict(pg.execute("SELECT table_name, checksum FROM replicator.snapshot_tables").fetchall())
    assert recorded == {t.table: t.checksum for t in imported.tables}


def test_import_refuses_a_non_empty_target_and_replaces(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    out = tmp_path / "dump"
    export.export(export_source(tmp_path / "app.db"), out, CFG)
    importer.import_export(out, pg_dsn, Q)
    with pytest.raises(TargetNotEmpty, match="target tables already hold rows: child, pair, parent") as refused:
        importer.import_export(out, pg_dsn, Q)
    assert "--replace" in refused.value.hint
    assert "--resume" not in refused.value.hint  # import has no --resume
    again = importer.import_export(out, pg_dsn, Q, ImportOptions(replace=True))
    assert again.tables[-1].quarantined == 3  # NUL text, text and a blob that are not UTF-8
    assert (
        again.rows
        == pg.execute(
            "SELECT (SELECT count(*) FROM child) + (SELECT count(*) FROM parent) + (SELECT count(*) FROM pair)"
        ).fetchone()[0]
    )


def test_dry_run_commits_nothing(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    out = tmp_path / "dump"
    export.export(export_source(tmp_path / "app.db"), out, CFG)
    result = importer.import_export(out, pg_dsn, Q, ImportOptions(dry_run=True))
    assert result.dry_run
    assert result.rows > 0
    assert tables(pg) == []
    assert pg.execute("SELECT command, status FROM replicator.runs").fetchall() == [("import", "dry-run")]
    assert pg.execute("SELECT count(*) FROM replicator.snapshot_tables").fetchone() == (0,)


def _bad_row_export(tmp_path: Path) -> tuple[Path, str]:
    """An export (resealed, so checksums pass) whose child table holds a value its type refuses."""
    src = tmp_path / "app.db"
    with sqlite3.connect(src) as conn:
        conn.executescript(
            """
            CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT);
            CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id), n INTEGER);
            """
        )
        conn.executemany("INSERT INTO parent VALUES (?, ?)", [(i, f"p{i}") for i in range(1, 4)])
        conn.executemany("INSERT INTO child VALUES (?, ?, ?)", [(i, 1, i) for i in range(1, 50)])
    out = tmp_path / "dump"
    export.export(src, out, CFG)
    manifest = json.loads((out / "manifest.json").read_text())
    file = next(t["file"] for t in manifest["tables"] if t["name"] == "child")
    lines = (out / file).read_bytes().splitlines(keepends=True)
    lines[36] = b'{"id":37,"parent_id":1,"n":"thirty-seven"}\n'
    reseal(out, file, b"".join(lines))
    return out, file


def test_bad_row_rolls_back_its_table_and_names_table_and_row(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    out, _file = _bad_row_export(tmp_path)
    with pytest.raises(BadValue, match=r"refused value in child \(id=37, line=37\) column n"):
        importer.import_export(out, pg_dsn, CFG)
    assert pg.execute("SELECT count(*) FROM parent").fetchone() == (3,)  # committed before
    assert pg.execute("SELECT count(*) FROM child").fetchone() == (0,)  # rolled back
    assert pg.execute("SELECT status FROM replicator.runs").fetchall() == [("failed",)]


def test_single_transaction_rolls_back_everything(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    out, _file = _bad_row_export(tmp_path)
    with pytest.raises(BadValue, match="child"):
        importer.import_export(out, pg_dsn, CFG, ImportOptions(single_transaction=True))
    assert tables(pg) == []


def test_damaged_export_is_refused_before_touching_the_target(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    out = tmp_path / "dump"
    export.export(export_source(tmp_path / "app.db"), out, CFG)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / manifest["tables"][0]["file"]).write_bytes(b"{}\n")
    result = CliRunner().invoke(cli, ["import", str(out), "--target", pg_dsn], catch_exceptions=False)
    assert result.exit_code == 3
    assert "does not match its SHA-256" in result.output
    assert tables(pg) == []
    assert pg.execute("SELECT to_regclass('replicator.runs')").fetchone() == (None,)


def test_cli_export_then_import(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    src = export_source(tmp_path / "app.db")
    out = tmp_path / "dump.tar"
    runner = CliRunner()
    done = runner.invoke(cli, ["export", "--source", str(src), "--out", str(out), "--tar"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "exported 3 table(s)" in done.output
    loaded = runner.invoke(
        cli, ["import", str(out), "--target", pg_dsn, "--on-bad-value", "quarantine"], catch_exceptions=False
    )
    assert loaded.exit_code == 0, loaded.output
    assert "checksum" in loaded.output
    assert pg.execute("SELECT count(*) FROM pair").fetchone() == (3,)


def test_manifest_ddl_is_input_not_code(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """A resealed manifest whose schema ATTACHes a file, or whose declared types carry SQL, does nothing."""
    out = tmp_path / "dump"
    export.export(export_source(tmp_path / "app.db"), out, CFG)
    manifest = msgspec.json.decode((out / "manifest.json").read_bytes(), type=Manifest)
    victim = tmp_path / "created-by-attach.db"
    reseal(out, schema=(*manifest.schema, f"ATTACH DATABASE '{victim}' AS x"))
    with pytest.raises(ExportError, match="not DDL"):
        importer.import_export(out, pg_dsn, Q)
    assert not victim.exists()
    hostile = tuple(
        msgspec.structs.replace(t, declared=tuple(d + ", evil INT); ATTACH 'x' AS y; --" for d in t.declared))
        for t in manifest.tables
    )
    reseal(out, schema=manifest.schema, tables=hostile)
    assert verify_export(out).ok  # the declared text never reaches SQL: only its affinity does


def _worded_alike(plan: Any) -> Any:
    return msgspec.structs.replace(plan, tables=tuple(snapshot._types_of(t) for t in plan.tables))
