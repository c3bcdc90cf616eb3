"""Negative controls for verify's independence (issue 15 item 4): a wrong converter planted in the load
path (the snapshot and the apply, in this process), a generated column PostgreSQL computes differently,
or a wrong value written into PostgreSQL after a correct load, is caught by ``replicator verify`` (exit 3,
naming the key), by cutover's preflight, and, for a row the app writes after the preflight compared
(applied by the cutover's own drains), by the stop point (aborted, naming the key, nothing fenced). The
load path's own digests agree with the planted bug on both sides: only a comparison that does not share
its converters can see it. A change that keeps the value (JSON ``1.0`` re-serialized as ``1``) is not a
mismatch."""

from __future__ import annotations

import ast
import json
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
from replicator.cutover import window
from replicator.cutover.session import CutoverAborted, Options
from replicator.cutover.window import cutover
from replicator.errors import VerificationFailed
from replicator.inspect import proof
from replicator.plan import sqlexpr
from replicator.values import convert, fastpath, targettype
from tests.support.compare import drain
from tests.support.source import make_source, write

SCHEMA = """
CREATE TABLE t (
    id INTEGER PRIMARY KEY,
    at DATETIME,
    score REAL,
    name TEXT,
    doc JSON,
    price NUMERIC(20, 6),
    up TEXT GENERATED ALWAYS AS (upper(name)) STORED
);
"""
#: Rows 1 and 3 are loaded by the snapshot, row 2 by the apply; every planted bug leaves rows 1 and 3
#: as they are (0 ms is 0 s, 1.5 keeps its digits, 'short' is short, 1.0 → 1 keeps the value...).
SNAPSHOT_ROWS = """
INSERT INTO t (id, at, score, name, doc, price) VALUES (1, 0, 1.5, 'short', '{"a": 1.0, "b": [1, 2]}', 1.25);
INSERT INTO t (id) VALUES (3);
"""
APPLIED_ROW = (
    "INSERT INTO t (id, at, score, name, doc, price) "
    "VALUES (2, 200000000000, 2.718281828, 'a téxt longer than ten', '{\"a\": 1.5}', 12.345678)"
)


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
    retype: Callable[[targettype.TargetType], targettype.TargetType] | None = None,
) -> None:
    """Replace the load's converter for PostgreSQL type ``name`` by a wrong one (snapshot and apply alike)."""
    original = convert._BUILDERS[name]

    def builder(t: targettype.TargetType, wire: bool) -> fastpath.Plan:
        right = original(retype(t) if retype else t, wire).convert

        def wrong(v: object) -> object:
            if v is None:
                return None
            out = right(before(v) if before else v)
            return after(out) if after and out is not None else out

        return fastpath.Plan(wrong)

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


def generated_column_computed_differently(mp: pytest.MonkeyPatch) -> None:
    """upper() translated to fold é too (PostgreSQL's own upper() would fold every letter): 'É' in
    PostgreSQL where SQLite, folding ASCII only, keeps 'é'."""
    mp.setattr(sqlexpr, "_ASCII_LOWER", sqlexpr._ASCII_LOWER + "é")


def _load(path: Path, dsn: str, plant: Planter | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshot rows 1 and 3, then the apply row 2, with the planted bug in both."""
    if plant is not None:
        plant(monkeypatch)
    drain(path, dsn, conf())
    write(path, APPLIED_ROW)
    drain(path, dsn, conf())


BUGS = {
    "ms read as seconds": ms_read_as_seconds,
    "float rounded": float_rounded,
    "text truncated": text_truncated,
    "json number re-serialized": json_number_reserialized,
    "decimal rounded at the wrong digit": decimal_rounded_at_the_wrong_digit,
    "generated column computed differently": generated_column_computed_differently,
    "plain column changed in PostgreSQL": None,
}


def _source(tmp_path: Path) -> Path:
    return make_source(tmp_path / "app.db", schema=SCHEMA, rows=SNAPSHOT_ROWS)


def _break(dsn: str, bug: str) -> None:
    if BUGS[bug] is None:  # a correct load, then a wrong value written straight into PostgreSQL
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE public.t SET name = 'a téxt longer than te' WHERE id = 2")


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
    write(path, "INSERT INTO t (id) VALUES (4)")  # nothing fenced: the app still writes


PLANTED = [bug for bug, plant in BUGS.items() if plant is not None]


def _app_writes_row_2_after(monkeypatch: pytest.MonkeyPatch, path: Path, step: str, *statements: str) -> None:
    """The app writes (row 2 by default) right after the cutover's ``preflight``, or right before its
    ``freeze`` or a ``prove_changed`` comparison (each as :mod:`replicator.cutover.window` calls it)."""
    original = getattr(window, step)

    def then_the_app_writes(*args: Any) -> Any:
        if step != "preflight":
            _write(path, *statements)
        out = original(*args)
        if step == "preflight":
            _write(path, *statements)
        return out

    monkeypatch.setattr(window, step, then_the_app_writes)


def _write(path: Path, *statements: str) -> None:
    for statement in statements or (APPLIED_ROW,):
        write(path, statement)


@pytest.mark.parametrize("bug", PLANTED)
@pytest.mark.parametrize(
    ("step", "caught_where"),
    [
        ("preflight", "tables differ in rows changed since the preflight: "),  # before the freeze
        ("freeze", "aborted at verify (tables differ at the stop point: "),  # in the outage
    ],
)
def test_cutover_catches_a_planted_bug_in_a_row_written_after_the_preflight(
    bug: str, step: str, caught_where: str, tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row 2 is written once the preflight compared: the cutover's own drains apply it with the bug, and
    the load path's digests agree with it on both sides. The keys journaled since the preflight's position
    are compared by the independent reading: after the catch-up (before the freeze), and those journaled
    after it at the stop point."""
    path = _source(tmp_path)
    BUGS[bug](monkeypatch)  # type: ignore[misc]
    drain(path, pg_dsn, conf())  # rows 1 and 3: the bug leaves them as they are
    _app_writes_row_2_after(monkeypatch, path, step)
    with pytest.raises((CutoverAborted, VerificationFailed)) as caught:
        cutover(path, pg_dsn, conf(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    assert caught_where + "t (3 vs 3 rows; different (2,))" in str(caught.value)
    assert not (tmp_path / "cert.json").exists()
    _write(path, "INSERT INTO t (id) VALUES (4)")  # nothing fenced: the app still writes


def test_rows_written_after_the_preflight_without_a_bug_pass_the_stop_point(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control's control: an insert, an update and a delete after the preflight, converted right."""
    path = _source(tmp_path)
    drain(path, pg_dsn, conf())
    _app_writes_row_2_after(monkeypatch, path, "preflight", APPLIED_ROW, "DELETE FROM t WHERE id = 3")
    # Row 2, applied by the catch-up, changes again before it is compared: in flight there, left to the stop point.
    _app_writes_row_2_after(monkeypatch, path, "prove_changed", "UPDATE t SET score = 9.5 WHERE id = 2")
    _app_writes_row_2_after(
        monkeypatch,
        path,
        "freeze",
        "UPDATE t SET name = 'Ωmega', doc = '[1.5e3, {\"b\": 2, \"a\": 1}]', at = 1.5 WHERE id = 1",
    )
    result = cutover(path, pg_dsn, conf(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    assert result.certificate is not None
    (proven,) = result.certificate.tables
    assert (proven.sqlite_rows, proven.pg_rows) == (2, 2)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT id, up FROM public.t ORDER BY id").fetchall() == [
            (1, "ΩMEGA"),
            (2, "A TéXT LONGER THAN TEN"),
        ]


def _django_source(tmp_path: Path) -> tuple[Path, config.Config]:
    """Issue 15 item 4: a Django DecimalField(max_digits=20, decimal_places=6) REAL that Django reads with
    15 significant digits (51891460955981.900000), the shortest repr being 51891460955981.88."""
    path = make_source(
        tmp_path / "dj.db",
        schema="CREATE TABLE shop_item (id INTEGER PRIMARY KEY, price decimal);",
        rows="INSERT INTO shop_item VALUES (1, 51891460955981.88), (2, 1.5);",
    )
    toml = tmp_path / "replicator.toml"
    toml.write_text('[snapshot]\nworkers = 1\n[types.shop_item.price]\ntype = "numeric(20,6)"\nformat = "real15"\n')
    return path, config.load(toml, environ={})


def test_a_django_decimal_loaded_by_its_shortest_repr_is_caught(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load writes 51891460955981.880000 where Django reads .900000: verify and the preflight name the key."""
    path, conf_ = _django_source(tmp_path)
    _plant(monkeypatch, "numeric", retype=lambda t: msgspec.structs.replace(t, format=None))
    drain(path, pg_dsn, conf_)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT price::text FROM shop_item ORDER BY id").fetchall() == [
            ("51891460955981.880000",),
            ("1.500000",),
        ]
    args = ["verify", "--config", str(tmp_path / "replicator.toml"), "--source", str(path), "--target", pg_dsn]
    out = CliRunner().invoke(cli, [*args, "--keys", "--json"])
    assert out.exit_code == 3, out.output
    (table,) = json.loads(out.stdout)["tables"]
    assert (table["status"], table["different"]) == ("mismatch", [[1]])
    with pytest.raises(VerificationFailed, match=r"shop_item \(2 vs 2 rows; different \(1,\)\)"):
        cutover(path, pg_dsn, conf_, Options(backup=False, certificate_path=tmp_path / "cert.json"))


def test_a_django_decimal_loaded_as_django_reads_it_matches(tmp_path: Path, pg_dsn: str) -> None:
    path, conf_ = _django_source(tmp_path)
    drain(path, pg_dsn, conf_)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT price::text FROM shop_item WHERE id = 1").fetchone() == ("51891460955981.900000",)
    args = ["verify", "--config", str(tmp_path / "replicator.toml"), "--source", str(path), "--target", pg_dsn]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output


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
    """replicator.inspect.proof and its rules (``proof_*.py``) import nothing from the load path's conversion
    modules: of our code, only each other."""
    modules = sorted(Path(proof.__file__).parent.glob("proof*.py"))
    assert len(modules) >= 7, modules  # the rules were read, not an empty glob
    forbidden = {
        "replicator.plan.typemap",
        "replicator",
        "replicator.values",  # from replicator.values import convert
        "replicator.plan",
    }
    for path in modules:
        tree = ast.parse(path.read_text())
        imported = {
            *(n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module),
            *(a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names),
        }
        # Every module of replicator.values: the converters (convert*), the parsers they use (datetimes,
        # decimals, addresses) and the rest of the load path's value handling.
        assert not {m for m in imported if m in forbidden or m.startswith("replicator.values.")}, (path.name, imported)
        ours = {m for m in imported if m.split(".")[0] in {"replicator", "triggers", "checkpoints"}}
        assert all(m.startswith("replicator.inspect.proof") for m in ours), (path.name, ours)


def test_certificate_live_compares_independently(tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cutover without its full verify rests on the load path's digests only: a planted bug passes it, the
    certificate says no independent comparison ran, and ``certificate --live`` (verify's reading) names the key."""
    path = _source(tmp_path)
    _load(path, pg_dsn, decimal_rounded_at_the_wrong_digit, monkeypatch)
    # without a rollback window: with one, a move both sides agree on is the window's work, not a failure
    # (tests/reverse/test_readers.py)
    result = cutover(path, pg_dsn, conf(), Options(backup=False, full_verify=False, rollback_window=False))
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
