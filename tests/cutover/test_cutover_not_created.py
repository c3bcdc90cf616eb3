"""The certificate tells everything: a UNIQUE index PostgreSQL refused is named at cutover and sealed in it.

``bookings`` holds two rows SQLite keeps distinct (``'2024-05-01 10:00:00'`` and ``'2024-05-01T10:00:00'``
in a DATETIME column) that are the same instant in PostgreSQL: the snapshot loads both and leaves the UNIQUE
index out with a warning. After the cutover the app would run on PostgreSQL without it, so the cutover
refuses without ``--accept-missing-constraints`` (naming the index and both rows), and with it the certificate
(format 5) lists the index; the seal, ``replicator audit`` and the independent verifier cover the new field.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator import config, faults
from replicator.cutover import certificate
from replicator.cutover.session import CutoverAborted, Options
from replicator.cutover.window import cutover
from replicator.load import snapshot
from tests.support import independent_audit
from tests.support.compare import drain
from tests.support.migrated import run_cli
from tests.support.source import app, make_source

BOOKINGS = """
CREATE TABLE bookings (
    id INTEGER PRIMARY KEY, room INTEGER NOT NULL, starts_at DATETIME NOT NULL, UNIQUE (room, starts_at)
);
"""
ROWS = "INSERT INTO bookings VALUES (1, 7, '2024-05-01 10:00:00'), (2, 7, '2024-05-01T10:00:00'), (3, 8, '2024-05-02');"
INDEX = "bookings_room_starts_at_key"
BOTH_ROWS = "rows bookings (id=1) and (id=2) are distinct in SQLite but equal in PostgreSQL"


def _source(tmp_path: Path, dsn: str) -> Path:
    """Snapshot (which warns), then one applied batch: the state a cutover starts from."""
    path = make_source(tmp_path / "app.db", BOOKINGS, ROWS)
    result = snapshot.snapshot(path, dsn, config.load(environ={}), mode="create")
    refused = [w for w in result.warnings if "not created" in w]
    assert len(refused) == 1, result.warnings
    assert INDEX in refused[0]
    assert BOTH_ROWS in refused[0]
    db = app(path)
    db.execute("INSERT INTO bookings VALUES (4, 9, '2024-05-03 09:00:00')")
    db.close()
    drain(path, dsn)
    return path


def _opts(tmp_path: Path, **kw: Any) -> Options:
    return Options(backup_dir=tmp_path / "backups", certificate_path=tmp_path / "cert.json", **kw)


def _writable(path: Path) -> bool:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("INSERT INTO bookings VALUES (100, 100, '2030-01-01')")
        db.execute("DELETE FROM bookings WHERE id = 100")
        return True
    except sqlite3.DatabaseError:
        return False
    finally:
        db.close()


def _pg_has_index(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regclass(%s)", (f"public.{INDEX}",)).fetchone() != (None,)


def test_cutover_refuses_a_missing_unique_index_naming_it_both_rows_and_the_flag(tmp_path: Path, pg_dsn: str) -> None:
    src = _source(tmp_path, pg_dsn)
    with pytest.raises(CutoverAborted) as refused:
        cutover(src, pg_dsn, config.load(environ={}), _opts(tmp_path, backup=False))
    message = refused.value.message
    assert "\n" not in message
    assert f"unique index {INDEX} on bookings" in message, message
    assert BOTH_ROWS in message, message
    assert "--accept-missing-constraints" in (refused.value.hint or ""), refused.value.hint
    assert _writable(src)  # refused in the preflight: nothing frozen, nothing fenced
    assert not (tmp_path / "cert.json").exists()
    said = run_cli("cutover", "--source", str(src), "--target", pg_dsn, "--no-backup", "--log-format", "json")
    assert said.exit_code not in (0, None), said.output
    [line] = [x for x in said.stderr.splitlines() if INDEX in x and not x.startswith("{")]  # not the JSON log
    assert BOTH_ROWS in line
    assert "--accept-missing-constraints" in said.stderr
    assert _writable(src)


def test_the_dry_run_refuses_alike_and_with_the_flag_says_what_would_be_missing(tmp_path: Path, pg_dsn: str) -> None:
    src = _source(tmp_path, pg_dsn)
    with pytest.raises(CutoverAborted, match=re.escape(f"unique index {INDEX} on bookings")):
        cutover(src, pg_dsn, config.load(environ={}), _opts(tmp_path, dry_run=True))
    result = cutover(
        src, pg_dsn, config.load(environ={}), _opts(tmp_path, dry_run=True, accept_missing_constraints=True)
    )
    assert result.dry_run
    assert [(n.kind, n.table, n.name) for n in result.not_created] == [("unique index", "bookings", INDEX)]
    assert BOTH_ROWS in result.not_created[0].reason
    assert _writable(src)
    assert not _pg_has_index(pg_dsn)


def test_with_the_flag_the_sealed_certificate_lists_the_index_and_every_reader_shows_it(
    tmp_path: Path, pg_dsn: str
) -> None:
    src = _source(tmp_path, pg_dsn)
    result = cutover(
        src, pg_dsn, config.load(environ={}), _opts(tmp_path, backup=False, accept_missing_constraints=True)
    )
    cert = result.certificate
    assert cert is not None
    assert cert.format == 5
    assert cert.accept_missing_constraints
    [missing] = cert.not_created
    assert (missing.kind, missing.table, missing.name) == ("unique index", "bookings", INDEX)
    assert BOTH_ROWS in missing.reason
    assert f"unique index {INDEX}" in missing.reason
    assert not _pg_has_index(pg_dsn)
    assert not _writable(src)  # the cutover happened
    assert certificate.seal_ok(cert)
    path = tmp_path / "cert.json"
    on_disk = json.loads(path.read_text())
    assert on_disk["not_created"] == [
        {"kind": "unique index", "table": "bookings", "name": INDEX, "reason": missing.reason}
    ]
    assert independent_audit.seal(on_disk) == on_disk["sha256"]
    shown = run_cli("certificate", "--verify", str(path), "--log-format", "json")
    assert shown.exit_code == 0, shown.output
    assert f"not created in PostgreSQL: unique index {INDEX} on bookings: {BOTH_ROWS}" in shown.stdout
    chain = tmp_path / "chain.jsonl"
    exported = run_cli("checkpoints", "export", str(chain), "--target", pg_dsn, "--log-format", "json", "-q")
    assert exported.exit_code == 0, exported.output
    page = tmp_path / "audit.html"
    audited = run_cli("audit", "--certificate", str(path), "--chain", str(chain), "--html", str(page))
    assert audited.exit_code == 0, audited.output
    assert "verdict: PASS" in audited.stdout
    assert "PostgreSQL lacks 1 schema object(s) of SQLite's (accepted at the cutover)" in audited.stdout
    assert f"unique index {INDEX} on bookings" in audited.stdout
    assert BOTH_ROWS in audited.stdout
    html = page.read_text()
    assert "What PostgreSQL does not have" in html
    assert f'data-not-created="{INDEX}"' in html
    assert independent_audit.audit(path, chain) == ("PASS", [])

    # negative control: the field is sealed. Dropping the entry (or editing its reason) breaks the seal everywhere.
    for edit in ("drop", "reason", "accept"):
        forged = dict(on_disk)
        if edit == "drop":
            forged["not_created"] = []
        elif edit == "reason":
            forged["not_created"] = [{**on_disk["not_created"][0], "reason": "an index PostgreSQL did not need"}]
        else:
            forged["accept_missing_constraints"] = False
        copy = tmp_path / f"forged-{edit}.json"
        copy.write_text(json.dumps(forged))
        assert not certificate.seal_ok(certificate.read_file(copy)), edit
        verdict, problems = independent_audit.audit(copy, chain)
        assert verdict == "FAIL", edit
        assert "the certificate's seal does not match its fields" in problems, edit
        tool = run_cli("audit", "--certificate", str(copy), "--chain", str(chain))
        assert tool.exit_code == 3, tool.output
        assert "verdict: FAIL" in tool.stdout
        checked = run_cli("certificate", "--verify", str(copy), "--log-format", "json")
        assert checked.exit_code == 3, checked.output


def test_a_format_4_certificate_still_verifies_without_the_new_fields(tmp_path: Path) -> None:
    """Sealed before format 5: no ``not_created`` key in its seal; it verifies, and an edit still breaks it."""
    import hashlib

    import msgspec

    body: dict[str, Any] = {
        "source_path": "/srv/app.db",
        "source_id": "x",
        "source_sha256": "0" * 64,
        "target": "t",
        "stop_seq": 5,
        "chain_head": 3,
        "chain_head_hash": "1" * 64,
        "tables": [],
        "steps": {},
        "frozen_at": "a",
        "fenced_at": "b",
        "write_outage_s": 0.1,
        "tool": "replicator 0.1",
        "operator": "me",
        "accept_quarantine": False,
        "quarantined": {},
        "backup": None,
        "backup_sha256": None,
        "sequences": {},
        "foreign_keys": [],
        "skipped_tables": {},
        "skipped_columns": {},
        "accept_skipped_columns": False,
        "quarantine": [],
        "format": 4,
        "sha256": "",
        "signature": None,
    }
    body["sha256"] = hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()
    path = tmp_path / "old.json"
    path.write_bytes(msgspec.json.encode(body))
    old = certificate.read_file(path)
    assert certificate.seal_ok(old)
    assert old.not_created == ()
    assert independent_audit.seal(body) == body["sha256"]
    path.write_bytes(msgspec.json.encode({**body, "stop_seq": 6}))
    assert not certificate.seal_ok(certificate.read_file(path))


def test_what_the_plan_could_not_translate_is_refused_and_certified_too(tmp_path: Path, pg_dsn: str) -> None:
    """A CHECK and an index the translator refused never reached PostgreSQL: the same flag, the same record."""
    schema = """
    CREATE TABLE tags (id INTEGER PRIMARY KEY, name TEXT NOT NULL, CONSTRAINT name_len CHECK (length(name) < 20));
    CREATE INDEX tags_glob ON tags (name) WHERE name GLOB 'a*';
    """
    src = make_source(tmp_path / "app.db", schema, "INSERT INTO tags VALUES (1, 'a'), (2, 'b');")
    drain(src, pg_dsn)
    with pytest.raises(CutoverAborted) as refused:
        cutover(src, pg_dsn, config.load(environ={}), _opts(tmp_path, backup=False))
    assert "check tags_name_len on tags: length() counts a BLOB's bytes" in refused.value.message
    assert "index tags_glob on tags" in refused.value.message
    assert _writable_tags(src)
    result = cutover(
        src, pg_dsn, config.load(environ={}), _opts(tmp_path, backup=False, accept_missing_constraints=True)
    )
    assert result.certificate is not None
    assert sorted((n.kind, n.name) for n in result.certificate.not_created) == [
        ("check", "tags_name_len"),
        ("index", "tags_glob"),
    ]
    assert certificate.seal_ok(result.certificate)


def _writable_tags(path: Path) -> bool:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("INSERT INTO tags VALUES (100, 'probe')")
        db.execute("DELETE FROM tags WHERE id = 100")
        return True
    except sqlite3.DatabaseError:
        return False
    finally:
        db.close()


def test_rows_that_collide_after_the_preflight_abort_the_freeze_without_the_flag(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index is missing but buildable at the preflight; the app then writes the colliding row, the drain
    applies it, and step 5 cannot build the index: the cutover aborts there, nothing fenced, not certified silently."""
    src = make_source(tmp_path / "app.db", BOOKINGS, "INSERT INTO bookings VALUES (1, 7, '2024-05-01 10:00:00');")
    drain(src, pg_dsn)
    assert _pg_has_index(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # as if the snapshot had been refused it
        conn.execute(f'ALTER TABLE public.bookings DROP CONSTRAINT IF EXISTS "{INDEX}"')
        conn.execute(f'DROP INDEX IF EXISTS public."{INDEX}"')
    hook = faults.point

    def collide_after_preflight(name: str) -> None:
        if name == "cutover.after_preflight":
            db = app(src)
            db.execute("INSERT INTO bookings VALUES (2, 7, '2024-05-01T10:00:00')")
            db.close()
        hook(name)

    monkeypatch.setattr(faults, "point", collide_after_preflight)
    with pytest.raises(CutoverAborted) as aborted:
        cutover(src, pg_dsn, config.load(environ={}), _opts(tmp_path, backup=False))
    assert "finish_pg" in aborted.value.message, aborted.value.message
    assert f"unique index {INDEX} on bookings" in aborted.value.message
    assert BOTH_ROWS in aborted.value.message
    assert _writable(src)
    assert not (tmp_path / "cert.json").exists()
