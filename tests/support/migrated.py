"""A real small migration an auditor is handed the files of, and the tampering an auditor must catch.

:func:`migrate` runs the tool for real against its own PostgreSQL database: capture, snapshot (the
genesis), five applied batches of inserts, updates and deletes, a cutover with a backup, then
``replicator checkpoints export``. It returns the files an auditor holds afterwards: the certificate
``app.db.cutover.json``, the chain export and the backup. The tamper helpers below edit copies of those
files as an attacker with a text editor and ``sha256sum`` would (standard library only): they recompute
every hash the format lets them, so only what the files cannot be made to agree on is left to catch.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result

from replicator import config
from replicator.cli.main import cli
from replicator.cutover import signing
from replicator.cutover.session import Options
from replicator.cutover.window import cutover
from tests.support.compare import drain
from tests.support.daemon import cfg
from tests.support.independent_audit import canonical
from tests.support.pgserver import fresh_database
from tests.support.source import app, make_source

ROWS = """
INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 2.25);
INSERT INTO child VALUES (10, 1, 'x', 'c10'), (11, 1, 'y', 'c11');
INSERT INTO pair VALUES ('k', 1, 'one'), ('k', 2, 'two');
"""

#: What the app writes between snapshot and cutover: one applied batch each.
WRITES = (
    "INSERT INTO parent VALUES (4, 'd', 4.0), (5, 'e', 5.5)",
    "UPDATE parent SET score = 9 WHERE id = 1; UPDATE pair SET v = 'uno' WHERE a = 'k' AND b = 1",
    "DELETE FROM child WHERE id = 11; INSERT INTO child VALUES (12, 2, 'z', 'c12')",
    "INSERT INTO pair VALUES ('m', 1, 'eins'); DELETE FROM parent WHERE id = 3",
    "UPDATE child SET label = 'xx' WHERE id = 10; INSERT INTO parent VALUES (6, 'f', 0.25)",
)


class Migration(msgspec.Struct, frozen=True):
    """The files an auditor holds after a cutover (and the database, which an auditor does not have)."""

    source: Path
    certificate: Path
    chain: Path
    backup: Path
    dsn: str


def run_cli(*args: str) -> Result:
    """The real command line in this process (one import of the tool for the whole test session)."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def migrate(workdir: Path, dsn: str, **options: Any) -> Migration:
    """Snapshot, 5 batches, cutover, export: checkpoints #1 genesis, #2..#6 batches, #7 cutover."""
    workdir.mkdir(parents=True, exist_ok=True)
    src = make_source(workdir / "app.db", rows=ROWS)
    conf = options.pop("config", None) or cfg()
    drain(src, dsn, conf)
    db = app(src)
    for statements in WRITES:
        db.executescript(statements)
        drain(src, dsn, conf)
    db.close()
    result = cutover(src, dsn, conf, Options(backup_dir=workdir / "backups", **options))
    assert result.certificate is not None
    assert result.certificate_path is not None
    chain = workdir / "chain.jsonl"
    exported = run_cli("checkpoints", "export", str(chain), "--target", dsn, "--log-format", "json", "-q")
    assert exported.exit_code == 0, exported.output
    assert result.certificate.backup is not None
    return Migration(src, Path(result.certificate_path), chain, Path(result.certificate.backup), dsn)


def copy_of(m: Migration, into: Path) -> Migration:
    """The auditor's copies of the files, to tamper with (the migration's own stay as written)."""
    into.mkdir(parents=True, exist_ok=True)
    for path in (m.certificate, m.chain, m.backup):
        shutil.copy(path, into / path.name)
    return msgspec.structs.replace(
        m, certificate=into / m.certificate.name, chain=into / m.chain.name, backup=into / m.backup.name
    )


# --- the chain export, edited as text ---------------------------------------------------------------------


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_chain(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The checkpoint lines (each with its body parsed as ``parsed``) and the head line."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    head = lines[-1]["head"]
    records = lines[:-1]
    for r in records:
        r["parsed"] = json.loads(r["body"])
    return records, head


def write_chain(path: Path, records: list[dict[str, Any]], head: dict[str, Any] | None) -> None:
    out = [json.dumps({"number": r["number"], "hash": r["hash"], "body": r["body"]}) for r in records]
    if head is not None:
        out.append(json.dumps({"head": head}))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def rebody(record: dict[str, Any], body: dict[str, Any]) -> None:
    """Give a record a new body and the hash that body has (what anyone can recompute)."""
    record["parsed"] = body
    record["body"] = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    record["hash"] = sha256(record["body"])


def relink(records: list[dict[str, Any]], start: int) -> None:
    """Rewrite each record from index ``start`` on to point at its (rewritten) predecessor, rehashing."""
    for i in range(max(start, 1), len(records)):
        body = dict(records[i]["parsed"])
        body["prev_hash"] = records[i - 1]["hash"]
        rebody(records[i], body)


def head_for(records: list[dict[str, Any]], like: dict[str, Any]) -> dict[str, Any]:
    return {**like, "number": records[-1]["number"], "hash": records[-1]["hash"], "count": len(records)}


def edit_chain(path: Path, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """Apply ``change`` to the records, then write them with a head line that matches them."""
    records, head = read_chain(path)
    records = change(records)
    write_chain(path, records, head_for(records, head))


def truncate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop the cutover checkpoint (the head line is rewritten for the one before)."""
    return records[:-1]


def append_after_cutover(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch #8 after the cutover checkpoint, linked and hashed like a real one."""
    last = records[-1]["parsed"]
    forged = {
        **last,
        "number": last["number"] + 1,
        "kind": "batch",
        "seq_from": last["seq_to"] + 1,
        "seq_to": last["seq_to"] + 1,
        "prev_hash": records[-1]["hash"],
        "tables": {"parent": {"upserted": 1, "deleted": 0, "upserted_digest": "1" * 64, "deleted_digest": "0" * 64}},
    }
    record: dict[str, Any] = {"number": forged["number"]}
    rebody(record, forged)
    return [*records, record]


def reorder(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Swap batches #3 and #4 in the file."""
    out = list(records)
    out[2], out[3] = out[3], out[2]
    return out


def edit_and_rehash(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batch #2 claims one row more for parent; it and every record after it rehashed and relinked."""
    body = json.loads(records[1]["body"])
    body["tables"]["parent"]["upserted"] += 1
    rebody(records[1], body)
    relink(records, 2)
    return records


# --- the certificate, edited as text ----------------------------------------------------------------------


def reseal(cert: dict[str, Any]) -> dict[str, Any]:
    """The certificate's SHA-256 recomputed over its edited fields (what the seal lets anyone do)."""
    body = {**cert, "sha256": ""}
    if "signature" in cert:
        body["signature"] = None
    return {**cert, "sha256": sha256(canonical(body))}


def edit_certificate(path: Path, change: Callable[[dict[str, Any]], None], *, seal: bool = True) -> None:
    cert = json.loads(path.read_text(encoding="utf-8"))
    change(cert)
    path.write_text(json.dumps(reseal(cert) if seal else cert, indent=2), encoding="utf-8")


def point_at(path: Path, chain: Path) -> None:
    """The certificate made to name the (tampered) chain's head, and resealed."""
    records, _ = read_chain(chain)

    def change(cert: dict[str, Any]) -> None:
        cert["chain_head"] = records[-1]["number"]
        cert["chain_head_hash"] = records[-1]["hash"]

    edit_certificate(path, change)


# --- the auditor's command, and the migrations (module fixtures, registered by tests/conftest.py) ----


def audit(m: Migration, *extra: str) -> Result:
    return run_cli("audit", "--certificate", str(m.certificate), "--chain", str(m.chain), *extra)


def verdict(result: Result) -> str:
    found = re.findall(r"^verdict: (PASS|FAIL)", result.stdout, re.MULTILINE)
    assert len(found) == 1, result.output
    return str(found[0])


def check_line(result: Result, name: str) -> str:
    """The line of the check list naming ``name`` (each check: ``ran``/``FAILED``/``not run``, then words)."""
    lines = [
        line
        for line in result.stdout.splitlines()
        if name in line and line.lstrip().startswith(("ran", "FAIL", "not run"))
    ]
    assert len(lines) == 1, (name, result.stdout)
    return lines[0].strip()


def rewrite_history(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A batch's time moved, and every record after it rehashed and relinked: figures untouched."""
    body = json.loads(records[2]["body"])
    body["at"] = "2020-01-01T00:00:00.000000Z"
    rebody(records[2], body)
    relink(records, 3)
    return records


@pytest.fixture(scope="module")
def migration(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migration]:
    with fresh_database(pg_server) as dsn:
        yield migrate(tmp_path_factory.mktemp("migration"), dsn)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("keys")
    made = run_cli("keys", "generate", "--out-dir", str(out))
    assert made.exit_code == 0, made.output
    return out / signing.PRIVATE_NAME, out / signing.PUBLIC_NAME


@pytest.fixture(scope="module")
def signed(pg_server: str, tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Iterator[Migration]:
    conf = config.load(overrides={"apply": {"poll_interval_s": 0.05}, "signing": {"key": str(keys[0])}}, environ={})
    with fresh_database(pg_server) as dsn:
        yield migrate(tmp_path_factory.mktemp("signed"), dsn, config=conf)
