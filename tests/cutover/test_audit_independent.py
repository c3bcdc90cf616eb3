"""docs/audit.md is precise enough: a verifier written from it alone agrees with ``replicator audit``.

``tests/independent_audit.py`` uses the standard library only (an Ed25519 check included, from RFC 8032);
it runs beside the tool on the files of real migrations and on tampered copies of them. Every tampering
fails both; the untouched files pass both, and the forgery only a signature can reveal passes both
without the key and fails both with it.
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import independent_audit as mine
from tests.support.migrated import (
    Migration,
    append_after_cutover,
    audit,
    copy_of,
    edit_and_rehash,
    edit_certificate,
    edit_chain,
    point_at,
    read_chain,
    reorder,
    rewrite_history,
    truncate,
    verdict,
    write_chain,
)

pytestmark = pytest.mark.e2e


def both(m: Migration, *extra: Path) -> tuple[str, str]:
    """The tool's verdict and the independent one, on the same files."""
    key = extra[0] if extra else None
    tool = audit(m, *(["--public-key", str(key)] if key else []))
    assert tool.exit_code in (0, 3), tool.output
    independent, problems = mine.audit(m.certificate, m.chain, None, key)
    assert (independent == "PASS") == (problems == []), problems
    return verdict(tool), independent


def test_the_verifier_needs_nothing_but_the_standard_library() -> None:
    tree = ast.parse(Path(mine.__file__).read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_ed25519_from_the_rfc() -> None:
    """RFC 8032, 7.1, test 1 (empty message), and one changed bit."""
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f05"
        "95bbe24655141438e7a100b"
    )
    assert mine.ed25519_verify(public, b"", sig)
    assert not mine.ed25519_verify(public, b"\x00", sig)


def test_the_real_files_pass_both_and_the_chain_adds_up_alike(migration: Migration, tmp_path: Path) -> None:
    files = copy_of(migration, tmp_path)
    assert both(files) == ("PASS", "PASS")
    cert = json.loads(files.certificate.read_text())
    assert mine.seal(cert) == cert["sha256"]
    records, _, problems = mine.read_chain(files.chain)
    assert problems == []
    figures, breaks, unknown = mine.ledger(records)
    assert (breaks, unknown) == ([], set())
    assert figures == {t["table"]: (t["pg_rows"], t["pg_digest"]) for t in cert["tables"]}
    assert mine.audit(files.certificate, files.chain, files.backup)[0] == "PASS"


def _forge_head(path: Path) -> None:
    records, head = read_chain(path)
    write_chain(path, records, {**head, "number": 8, "hash": "ab" * 32, "count": 8})


def _edit_and_rehash(m: Migration) -> None:
    edit_chain(m.chain, edit_and_rehash)
    point_at(m.certificate, m.chain)


def _unequal(cert: dict[str, Any]) -> None:
    cert["tables"][0]["pg_rows"] -= 1


TAMPERING: dict[str, Callable[[Migration], None]] = {
    "truncate": lambda m: edit_chain(m.chain, truncate),
    "forge a head": lambda m: _forge_head(m.chain),
    "append after cutover": lambda m: edit_chain(m.chain, append_after_cutover),
    "reorder": lambda m: edit_chain(m.chain, reorder),
    "edit and rehash": lambda m: _edit_and_rehash(m),
    "reseal": lambda m: edit_certificate(m.certificate, _unequal),
    "edit without resealing": lambda m: edit_certificate(m.certificate, _unequal, seal=False),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_every_tampering_fails_both(how: str, migration: Migration, tmp_path: Path) -> None:
    files = copy_of(migration, tmp_path)
    TAMPERING[how](files)
    assert both(files) == ("FAIL", "FAIL")


def test_a_rewritten_history_needs_the_signature_in_both(
    signed: Migration, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    files = copy_of(signed, tmp_path)
    assert both(files, keys[1]) == ("PASS", "PASS")  # a signature made by the tool verifies by the RFC
    edit_chain(files.chain, rewrite_history)
    point_at(files.certificate, files.chain)
    assert both(files) == ("PASS", "PASS")  # without the key neither can tell
    assert both(files, keys[1]) == ("FAIL", "FAIL")
