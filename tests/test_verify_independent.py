"""Negative controls for verify's independence (issue 15 item 4): a wrong converter planted in the load
path (the snapshot and the apply, in this process), or a wrong value written into PostgreSQL after a
correct load, is caught by ``replicator verify`` (exit 3, naming the key) and by cutover's preflight
(aborted, naming the key, nothing fenced). The load path's own digests agree with the planted bug on
both sides: only a comparison that does not share its converters can see it. A change that keeps the
value (JSON ``1.0`` re-serialized as ``1``) is not a mismatch."""

from __future__ import annotations

import ast
import json
import sqlite3
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from click.testing import CliRunner

from replicator import config
from replicator.cli.main import cli
from replicator.cutover.window import Options, cutover
from replicator.errors import VerificationFailed
from replicator.inspect import proof
from replicator.values import convert
from tests.test_apply_cases import drain, make_source

SCHEMA = """
CREATE TABLE t (
    id INTEGER PRIMARY KEY,
    at DATETIME,
    score REAL,
    name TEXT,
    doc JSON,
    price NUMERIC(20, 6)
);
"""
#: Rows 1 and 3 are loaded by the snapshot, row 2 by the apply; every planted bug leaves rows 1 and 3
#: as they are (0 ms is 0 s, 1.5 keeps its digits, 'short' is short, 1.0 → 1 keeps the value...).
SNAPSHOT_ROWS = """
INSERT INTO t VALUES (1, 0, 1.5, 'short', '{"a": 1.0, "b": [1, 2]}', 1.25);
INSERT INTO t VALUES (3, NULL, NULL, NULL, NULL, NULL);
"""
APPLIED_ROW = "INSERT INTO t VALUES (2, 200000000000, 2.718281828, 'a text longer than ten', '{\"a\": 1.5}', 12.345678)"


def conf() -> config.Config:
    return config.load(
        overrides={
            "snapshot": {"workers": 1},  # the snapshot runs in this process, where the bug is planted
            "apply": {"poll_interval_s": 0.05},
            "types": {"t": {"at": {"type": "timestamptz", "format": "unix_ms"}}},
        },
        environ={},
    )


Planter = Callable[[pytest.MonkeyPatch], None]


def _plant(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    *,
    before: Callable[[Any], Any] | None = None,
    after: Callable[[Any], Any] | None = None,
    retype: Callable[[convert.TargetType], convert.TargetType] | None = None,
) -> None:
    """Replace the load's converter for PostgreSQL type ``name`` by a wrong one (snapshot and apply alike)."""
    original = convert._BUILDERS[name]

    def builder(t: convert.TargetType, wire: bool) -> convert._Plan:
        right = original(retype(t) if retype else t, wire).convert

        def wrong(v: object) -> object:
            if v is None:
                return None
            out = right(before(v) if before else v)
            return after(out) if after and out is not None else out

        return convert._Plan(wrong)

    monkeypatch.setitem(convert._BUILDERS, name, builder)


def ms_read_as_seconds(mp: pytest.MonkeyPatch) -> None:
    _plant(mp, "timestamptz", retype=lambda t: msgspec.structs.replace(t, format="unix_s"))


def float_rounded(mp: pytest.MonkeyPatch) -> None:
    _plant(mp, "double precision", after=lambda v: round(v, 3))


def text_truncated(mp: pytest.MonkeyPatch) -> None:
    _plant(mp, "text", before=lambda v: v[:10] if isinstance(v, str) else v)


def json_number_reserialized(mp: pytest.MonkeyPatch) -> None:
    """Numbers re-serialized as integers: 1.0 → 1 keeps the value (no mismatch), 1.5 → 2 does not."""
    _plant(mp, "json", before=lambda v: json.dumps(json.loads(v, parse_float=lambda s: round(float(s)))))


def decimal_rounded_at_the_wrong_digit(mp: pytest.MonkeyPatch) -> None:
    _plant(mp, "numeric", after=lambda v: Decimal(v).quantize(Decimal("0.00001")))


def _load(path: Path, dsn: str, plant: Planter | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshot rows 1 and 3, then the apply row 2, with the planted bug in both."""
    if plant is not None:
        plant(monkeypatch)
    drain(path, dsn, conf())
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(APPLIED_ROW)
    db.close()
    drain(path, dsn, conf())


BUGS = {
    "ms read as seconds": ms_read_as_seconds,
    "float rounded": float_rounded,
    "text truncated": text_truncated,
    "json number re-serialized": json_number_reserialized,
    "decimal rounded at the wrong digit": decimal_rounded_at_the_wrong_digit,
    "plain column changed in PostgreSQL": None,
}


def _source(tmp_path: Path) -> Path:
    return make_source(tmp_path / "app.db", schema=SCHEMA, rows=SNAPSHOT_ROWS)


def _break(dsn: str, bug: str) -> None:
    if BUGS[bug] is None:  # a correct load, then a wrong value written straight into PostgreSQL
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE public.t SET name = 'a text longer than te' WHERE id = 2")


@pytest.mark.parametrize("bug", list(BUGS))
def test_verify_cli_catches_a_planted_load_bug(
    bug: str, tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _source(tmp_path)
    _load(path, pg_dsn, BUGS[bug], monkeypatch)
    _break(pg_dsn, bug)
    # The bug is still planted while verify runs: a verify through the load's converters would agree.
    out = CliRunner().invoke(cli, ["verify", "--source", str(path), "--target", pg_dsn, "--keys", "--json"])
    assert out.exit_code == 3, out.output
    table = next(t for t in json.loads(out.stdout)["tables"] if t["table"] == "t")
    assert (table["status"], table["different"], table["missing"], table["extra"]) == ("mismatch", [[2]], [], [])


@pytest.mark.parametrize("bug", list(BUGS))
def test_cutover_preflight_catches_a_planted_load_bug(
    bug: str, tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _source(tmp_path)
    _load(path, pg_dsn, BUGS[bug], monkeypatch)
    _break(pg_dsn, bug)
    with pytest.raises(VerificationFailed) as caught:
        cutover(path, pg_dsn, conf(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    assert "t (3 vs 3 rows; different (2,))" in str(caught.value)
    assert not (tmp_path / "cert.json").exists()
    db = sqlite3.connect(path, isolation_level=None)  # nothing fenced: the app still writes
    db.execute("INSERT INTO t (id) VALUES (4)")
    db.close()


def test_without_a_bug_verify_and_cutover_pass_and_the_certificate_says_which_check_ran(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _source(tmp_path)
    _load(path, pg_dsn, None, monkeypatch)
    out = CliRunner().invoke(cli, ["verify", "--source", str(path), "--target", pg_dsn])
    assert out.exit_code == 0, out.output
    result = cutover(path, pg_dsn, conf(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    assert result.certificate is not None
    (proven,) = result.certificate.tables
    assert proven.independent is not None
    assert proven.independent.status == "match"
    assert proven.independent.sqlite_rows == proven.independent.pg_rows == 3
    assert proven.independent.sqlite_digest == proven.independent.pg_digest


def test_the_independent_reading_imports_no_converter() -> None:
    """replicator.inspect.proof imports nothing from the load path's conversion modules."""
    tree = ast.parse(Path(proof.__file__).read_text())
    imported = {
        *(n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module),
        *(a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names),
    }
    assert not imported & {
        "replicator.values.convert",
        "replicator.values.formats",
        "replicator.plan.typemap",
        "replicator",
        "replicator.values",  # from replicator.values import convert
        "replicator.plan",
    }, imported


def test_certificate_live_compares_independently(tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cutover without its full verify rests on the load path's digests only: a planted bug passes it, the
    certificate says no independent comparison ran, and ``certificate --live`` (verify's reading) names the key."""
    path = _source(tmp_path)
    _load(path, pg_dsn, decimal_rounded_at_the_wrong_digit, monkeypatch)
    result = cutover(path, pg_dsn, conf(), Options(backup=False, full_verify=False))
    assert result.certificate is not None
    assert [t.independent for t in result.certificate.tables] == [None]
    args = ["certificate", "--live", "--source", str(path), "--target", pg_dsn]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 3, out.output
    assert "SQLite ≠ PostgreSQL t (different (2,))" in out.stderr
    monkeypatch.undo()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # repaired by hand: both sides agree again
        conn.execute("UPDATE public.t SET price = 12.345678 WHERE id = 2")
    repaired = CliRunner().invoke(cli, args)
    assert repaired.exit_code == 3  # PostgreSQL moved since the certificate (the moved check): named as such
    assert "postgresql t: 3 → 3 rows" in repaired.stderr
    assert "SQLite ≠ PostgreSQL" not in repaired.stderr


def test_a_format_2_certificate_still_verifies(tmp_path: Path) -> None:
    """Format 2 was sealed without the per-table ``independent`` entry: its seal still checks, a forgery fails."""
    import hashlib

    from replicator.cutover import certificate

    table = {"table": "t", "target": "t", "sqlite_rows": 1, "sqlite_digest": "a", "pg_rows": 1, "pg_digest": "a"}
    body: dict[str, Any] = {
        **{"source_path": "/srv/app.db", "source_id": "x", "source_sha256": "0" * 64, "target": "t"},
        **{"stop_seq": 5, "chain_head": 3, "chain_head_hash": "1" * 64, "tables": [{**table, "how": "prepass"}]},
        **{"steps": {}, "frozen_at": "a", "fenced_at": "b", "write_outage_s": 0.1, "tool": "r", "operator": "me"},
        **{"accept_quarantine": False, "quarantined": {}, "backup": None, "backup_sha256": None, "sequences": {}},
        **{"foreign_keys": [], "skipped_tables": {}, "skipped_columns": {}, "accept_skipped_columns": False},
        **{"quarantine": [], "format": 2, "sha256": ""},
    }
    body["sha256"] = hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()
    path = tmp_path / "old.json"
    path.write_bytes(msgspec.json.encode(body))
    old = certificate.read_file(path)
    assert old.tables[0].independent is None
    assert certificate.seal_ok(old)
    path.write_bytes(msgspec.json.encode({**body, "tables": [{**table, "how": "full"}]}))
    assert not certificate.seal_ok(certificate.read_file(path))
