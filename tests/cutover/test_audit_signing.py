"""Issue 21, a real signature: a key pair, a cutover that signs, an auditor who holds the public key alone.

The seal alone is recomputed by anyone who edits the certificate; the negative controls show the forgery
that passes without the key (a chain rewritten with fresh hashes, the certificate resealed to name its new
head) and fails with it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from replicator.cutover import signing
from replicator.errors import ConfigError
from tests.support.migrated import (
    Migration,
    audit,
    check_line,
    copy_of,
    edit_certificate,
    edit_chain,
    point_at,
    rewrite_history,
    run_cli,
    verdict,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def files(signed: Migration, tmp_path: Path) -> Migration:
    return copy_of(signed, tmp_path / "auditor")


def test_keys_generate_writes_a_private_key_only_its_owner_reads(keys: tuple[Path, Path], tmp_path: Path) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    again = run_cli("keys", "generate", "--out-dir", str(private.parent))
    assert again.exit_code == 2
    assert "already exists" in again.stderr
    shared = tmp_path / "shared.key"
    shared.write_bytes(private.read_bytes())
    os.chmod(shared, 0o644)
    with pytest.raises(ConfigError, match="can be read by other users"):
        signing.load_private(shared)


def test_the_signed_certificate_passes_with_the_public_key_alone(files: Migration, keys: tuple[Path, Path]) -> None:
    cert = json.loads(files.certificate.read_text())
    assert cert["format"] == 5
    assert cert["signature"]["algorithm"] == "ed25519"
    result = audit(files, "--public-key", str(keys[1]), "--backup", str(files.backup))
    assert result.exit_code == 0, result.output
    assert verdict(result) == "PASS"
    assert check_line(result, "signature").startswith("ran")
    assert "not run" not in result.stdout
    unchecked = audit(files)
    assert unchecked.exit_code == 0, unchecked.output
    assert check_line(unchecked, "signature").startswith("not run")
    assert "accidental damage only" in check_line(unchecked, "signature")


def test_a_rewritten_chain_is_caught_through_the_signed_head(files: Migration, keys: tuple[Path, Path]) -> None:
    edit_chain(files.chain, rewrite_history)
    point_at(files.certificate, files.chain)  # the certificate names the new head, resealed
    without = audit(files)
    assert without.exit_code == 0, without.output  # every hash and figure agrees: the seal cannot tell
    with_key = audit(files, "--public-key", str(keys[1]))
    assert with_key.exit_code == 3, with_key.output
    assert check_line(with_key, "signature").startswith("FAIL")
    assert "after it was sealed and signed" not in with_key.stdout  # resealed: the seal is not the signed one
    assert "does not sign this certificate" in check_line(with_key, "signature")


def test_what_the_signature_tells_about_a_broken_seal(files: Migration, keys: tuple[Path, Path]) -> None:
    body = files.certificate.with_name("body.json")
    body.write_bytes(files.certificate.read_bytes())
    edit_certificate(body, lambda c: c.update(stop_seq=c["stop_seq"] + 1), seal=False)
    result = run_cli("audit", "--certificate", str(body), "--chain", str(files.chain), "--public-key", str(keys[1]))
    assert result.exit_code == 3
    assert "the body was changed after it was sealed and signed" in result.stdout
    seal = files.certificate.with_name("seal.json")
    seal.write_bytes(files.certificate.read_bytes())
    edit_certificate(seal, lambda c: c.update(sha256="ab" * 32), seal=False)
    result = run_cli("audit", "--certificate", str(seal), "--chain", str(files.chain), "--public-key", str(keys[1]))
    assert result.exit_code == 3
    assert "the seal was changed; the body is as it was signed" in result.stdout


def test_another_key_or_no_signature_fails(files: Migration, tmp_path: Path) -> None:
    other = run_cli("keys", "generate", "--out-dir", str(tmp_path / "other"))
    assert other.exit_code == 0, other.output
    wrong = audit(files, "--public-key", str(tmp_path / "other" / signing.PUBLIC_NAME))
    assert wrong.exit_code == 3
    assert "not by the key given" in check_line(wrong, "signature")
    edit_certificate(files.certificate, lambda c: c.update(signature=None))  # stripped and resealed
    stripped = audit(files, "--public-key", str(tmp_path / "other" / signing.PUBLIC_NAME))
    assert stripped.exit_code == 3
    assert "carries no signature" in check_line(stripped, "signature")
    assert audit(files).exit_code == 0  # without the key nobody can tell
