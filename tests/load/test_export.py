"""export → verify-export: exact values, safe files, and every kind of damage named (exit 3)."""

from __future__ import annotations

import base64
import errno
import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from replicator import config, files
from replicator.cli.main import cli
from replicator.errors import UsageError
from replicator.load.offline import export, verifier
from replicator.load.offline.reader import Reader, iter_rows
from tests.support.export import BAD_UTF8, VALUES, export_source, reseal

CFG = config.load(None, environ={})


def read_exact(path: Path, table: str) -> list[tuple[Any, ...]]:
    """Rows as SQLite holds them, with text that is not UTF-8 as its bytes."""
    conn = sqlite3.connect(path)
    conn.text_factory = bytes
    rows = conn.execute(f"SELECT *, typeof(v) FROM {table} ORDER BY id").fetchall()
    conn.close()
    out = []
    for row in rows:
        kind = row[-1].decode()
        v = row[2]
        if kind == "text":
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                v = ("bad text", v)
        out.append((row[0], row[1], v, kind))
    return out


def test_export_round_trips_every_value_exactly(tmp_path: Path) -> None:
    src = export_source(tmp_path / "app.db")
    out = tmp_path / "dump"
    result = export.export(src, out, CFG)
    assert result.path == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "app.db-shm", "app.db-wal", "dump"]
    for file in out.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["order"] == ["pair", "parent", "child"] or manifest["order"].index("parent") < manifest[
        "order"
    ].index("child")
    assert manifest["source"]["name"] == "app.db"
    assert manifest["source"]["sha256"] == files.sha256_file(src)
    assert any(s.startswith("CREATE INDEX child_parent") for s in manifest["schema"])
    child = next(t for t in manifest["tables"] if t["name"] == "child")
    assert child["rows"] == len(VALUES) + 1
    assert child["columns"] == ["id", "parent_id", "v"]

    lines = (out / child["file"]).read_bytes().splitlines()
    assert json.loads(lines[7]) == {"id": 8, "parent_id": 4, "v": {"$real": "inf"}}
    assert json.loads(lines[-1])["v"] == {"$bytes_text": base64.b64encode(BAD_UTF8).decode()}
    assert b'"v":0.1}' in lines[3]
    assert b'"v":1.0}' in lines[4]
    assert b'"v":9223372036854775807}' in lines[1]

    with Reader(out) as reader:
        entry = verifier.read_manifest(reader).table("child")
        decoded = [(n, values) for n, values in iter_rows(reader, entry)]
    expected = read_exact(src, "child")
    for (_n, (id_, parent, v)), (eid, eparent, ev, _kind) in zip(decoded, expected, strict=True):
        assert (id_, parent) == (eid, eparent)
        if isinstance(ev, tuple):  # text that is not UTF-8: exact bytes, and still text
            assert isinstance(v, str)
            assert v.encode("utf-8", "surrogateescape") == ev[1]
        else:
            assert type(v) is type(ev), (id_, v, ev)
            assert repr(v) == repr(ev)
    assert verifier.verify_export(out).ok


def test_tar_export_verifies_and_never_overwrites(tmp_path: Path) -> None:
    src = export_source(tmp_path / "app.db")
    out = tmp_path / "dump.tar"
    export.export(src, out, CFG, tar=True)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    report = verifier.verify_export(out)
    assert report.ok, report.problems
    assert report.rows == 5 + len(VALUES) + 1 + 3
    with pytest.raises(UsageError, match="already exists"):
        export.export(src, out, CFG, tar=True)
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


@pytest.fixture
def dump(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    out = tmp_path / "dump"
    export.export(export_source(tmp_path / "app.db"), out, CFG)
    manifest = json.loads((out / "manifest.json").read_text())
    return out, {t["name"]: t["file"] for t in manifest["tables"]}


def verify_cli(out: Path) -> Any:
    return CliRunner().invoke(cli, ["verify-export", str(out)], catch_exceptions=False)


def test_verify_export_ok_through_the_cli(dump: tuple[Path, dict[str, str]]) -> None:
    result = verify_cli(dump[0])
    assert result.exit_code == 0, result.output
    assert "verifies" in result.output


def test_corrupted_file_is_named_exit_3(dump: tuple[Path, dict[str, str]]) -> None:
    out, files = dump
    data = bytearray((out / files["child"]).read_bytes())
    data[10] ^= 0x01
    (out / files["child"]).write_bytes(bytes(data))
    result = verify_cli(out)
    assert result.exit_code == 3
    assert f"file {files['child']} of table child does not match its SHA-256" in result.output


def test_missing_file_is_named_exit_3(dump: tuple[Path, dict[str, str]]) -> None:
    out, files = dump
    (out / files["pair"]).unlink()
    result = verify_cli(out)
    assert result.exit_code == 3
    assert f"file {files['pair']} of table pair is missing" in result.output


def test_edited_manifest_is_detected_exit_3(dump: tuple[Path, dict[str, str]]) -> None:
    out, _files = dump
    text = (out / "manifest.json").read_text().replace('"rows": 5', '"rows": 6', 1)
    (out / "manifest.json").write_text(text)
    result = verify_cli(out)
    assert result.exit_code == 3
    assert "manifest.json was edited" in result.output


def test_count_mismatch_in_a_resealed_manifest(dump: tuple[Path, dict[str, str]]) -> None:
    out, files = dump
    lines = (out / files["parent"]).read_bytes().splitlines(keepends=True)
    reseal(out, files["parent"], b"".join(lines[:-1]))
    report = verifier.verify_export(out)
    assert "parent: the manifest says 5 rows, the file holds 4" in report.problems


def test_orphans_are_each_reported(tmp_path: Path) -> None:
    src = export_source(tmp_path / "app.db")
    with sqlite3.connect(src) as conn:  # foreign keys are off by default: SQLite keeps orphans
        conn.execute("INSERT INTO child VALUES (200, 42, 'lost'), (201, 43, 'lost too'), (202, NULL, 'no parent')")
    out = tmp_path / "dump"
    export.export(src, out, CFG)
    result = verify_cli(out)
    assert result.exit_code == 3
    assert "orphan in child (id=200): parent_id = (42) has no row in parent" in result.output
    assert "orphan in child (id=201): parent_id = (43) has no row in parent" in result.output
    assert "202" not in result.output  # a NULL reference is no orphan


def test_duplicate_and_null_keys_and_bad_rows(dump: tuple[Path, dict[str, str]]) -> None:
    out, files = dump
    pair = (out / files["pair"]).read_bytes()
    extra = b'{"a":"x","b":1}\n{"a":null,"b":3}\n{"a":"z","b":{"$blob":"AA=="}}\n'
    child = (out / files["parent"]).read_bytes() + b'{"id":"seven","name":"p7"}\n'
    reseal(out, files["pair"], pair + extra)
    reseal(out, files["parent"], child)
    problems = verifier.verify_export(out).problems
    assert "pair: primary key ('x', 1) appears 2 times" in problems
    assert "pair line 5: primary key holds NULL" in problems
    assert "parent line 6: column id holds str, its type allows int only" in problems
    bad = (out / files["pair"]).read_bytes() + b'{"a":"q"}\n'
    reseal(out, files["pair"], bad)
    problems = verifier.verify_export(out).problems
    assert any(p.startswith("pair line 7: columns differ (missing ['b']") for p in problems)


@pytest.mark.parametrize(
    ("code", "problem", "hint"),
    [
        (errno.ENOSPC, "no space left on the device holding {dir}", "free space there or choose another --out"),
        (errno.EDQUOT, "disk quota exceeded on the device holding {dir}", "free space there or choose another --out"),
        (errno.EFBIG, "file size limit reached", "choose another --out on a file system that allows larger files"),
    ],
)
def test_write_errors_name_the_path_and_what_to_do(tmp_path: Path, code: int, problem: str, hint: str) -> None:
    err = files.write_error(
        OSError(code, os.strerror(code)), tmp_path / "exp", what="the export", instead="choose another --out"
    )
    assert err.message == f"cannot write the export {tmp_path / 'exp'}: " + problem.format(dir=tmp_path)
    assert err.hint.startswith(hint)
    assert err.exit_code == 1


def test_certificate_write_failure_names_the_file(tmp_path: Path) -> None:
    from replicator.cutover import certificate

    cert = certificate.Certificate(
        source_path="app.db",
        source_id="id",
        source_sha256="0" * 64,
        target="postgresql://x",
        stop_seq=1,
        chain_head=1,
        chain_head_hash="0" * 64,
        tables=(),
        steps={},
        frozen_at="",
        fenced_at="",
        write_outage_s=0.0,
        tool="test",
        operator="test",
    )
    path = tmp_path / "missing" / "cert.json"
    with pytest.raises(files.WriteFailed, match=r"cannot write the certificate .*cert\.json") as caught:
        certificate.write_file(path, cert)
    assert "choose another --certificate" in caught.value.hint
    assert not path.parent.exists()
