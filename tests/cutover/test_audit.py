"""Issue 21, the auditor's journey: after a real cutover, holding only the files, one offline command.

Each numbered finding of the issue is planted in copies of the files a real migration wrote (the
certificate, the chain export, the backup) and ``replicator audit`` must fail on it, naming it in words;
the untouched files must pass. Where the issue found that the older commands passed (``checkpoints verify
--file``, ``certificate --verify``) the test shows what each says now.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.support.migrated import (
    Migration,
    append_after_cutover,
    audit,
    check_line,
    copy_of,
    edit_and_rehash,
    edit_certificate,
    edit_chain,
    point_at,
    read_chain,
    run_cli,
    truncate,
    verdict,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def files(migration: Migration, tmp_path: Path) -> Migration:
    """The auditor's own copies, free to tamper with."""
    return copy_of(migration, tmp_path / "auditor")


def test_the_real_files_pass_and_the_output_says_what_ran(files: Migration) -> None:
    plain = audit(files)
    assert plain.exit_code == 0, plain.output
    assert verdict(plain) == "PASS"
    assert check_line(plain, "chain integrity").startswith("ran")
    assert check_line(plain, "chain head").startswith("ran")
    assert check_line(plain, "table proofs").startswith("ran")
    assert check_line(plain, "figures").startswith("ran")
    assert check_line(plain, "backup").startswith("not run")
    assert check_line(plain, "signature").startswith("not run")
    assert "accidental damage only" in plain.stdout
    with_backup = audit(files, "--backup", str(files.backup))
    assert with_backup.exit_code == 0, with_backup.output
    assert check_line(with_backup, "backup").startswith("ran")


def test_a_backup_changed_by_one_byte_fails(files: Migration) -> None:
    """The backup check hashes the file given, not the name: one flipped byte fails it, in words."""
    data = bytearray(files.backup.read_bytes())
    data[len(data) // 2] ^= 0xFF
    files.backup.write_bytes(bytes(data))
    result = audit(files, "--backup", str(files.backup))
    assert result.exit_code != 0, result.output
    assert verdict(result) == "FAIL"
    assert check_line(result, "backup").startswith("FAILED")
    assert "is not the backup the certificate names" in check_line(result, "backup")


def test_finding_1_a_certificate_for_another_chain_head_fails(files: Migration) -> None:
    """Each file passes its own check; only together do they disagree."""

    def other_head(cert: dict[str, object]) -> None:
        cert["chain_head_hash"] = "ab" * 32

    edit_certificate(files.certificate, other_head)
    alone = run_cli("checkpoints", "verify", "--file", str(files.chain))
    assert alone.exit_code == 0, alone.output
    sealed = run_cli("certificate", "--verify", str(files.certificate))
    assert sealed.exit_code == 0, sealed.output
    result = audit(files)
    assert result.exit_code == 3, result.output
    assert verdict(result) == "FAIL"
    assert check_line(result, "chain head").startswith("FAIL")
    assert "abababababab" in result.stdout


def test_finding_2_a_chain_cut_before_the_cutover_fails(files: Migration) -> None:
    edit_chain(files.chain, truncate)
    alone = run_cli("checkpoints", "verify", "--file", str(files.chain))
    assert alone.exit_code == 0, alone.output  # a chain cut short is still a chain: only the certificate knows
    assert "ok: 6 checkpoint(s)" in alone.stdout
    result = audit(files)
    assert result.exit_code == 3, result.output
    assert check_line(result, "chain head").startswith("FAIL")
    assert "#7" in result.stdout
    assert "ends at checkpoint 6" in result.stdout


def test_finding_3_a_record_after_the_cutover_fails_everywhere(files: Migration, migration: Migration) -> None:
    edit_chain(files.chain, append_after_cutover)
    alone = run_cli("checkpoints", "verify", "--file", str(files.chain))
    assert alone.exit_code == 3, alone.output
    assert "after the cutover" in alone.stdout
    against = run_cli("checkpoints", "verify", "--file", str(files.chain), "--against", str(migration.chain))
    assert against.exit_code == 3, against.output
    result = audit(files)
    assert result.exit_code == 3, result.output
    assert check_line(result, "chain integrity").startswith("FAIL")
    assert "checkpoint 8" in result.stdout


def test_finding_4_a_certificate_showing_its_own_mismatch_fails(files: Migration) -> None:
    def one_row_less(cert: dict[str, list[dict[str, object]]]) -> None:
        parent = next(t for t in cert["tables"] if t["table"] == "parent")
        parent["pg_rows"] = int(str(parent["pg_rows"])) - 1

    edit_certificate(files.certificate, one_row_less)
    shown = run_cli("certificate", "--verify", str(files.certificate))
    assert shown.exit_code == 3, shown.output
    assert "≠" in shown.stdout
    assert "parent" in shown.stderr
    result = audit(files)
    assert result.exit_code == 3, result.output
    assert check_line(result, "table proofs").startswith("FAIL")
    assert re.search(r"parent: .*PostgreSQL .*4 rows.*SQLite .*5 rows", result.stdout), result.stdout


def test_finding_7_the_chain_adds_up_to_the_certificate(files: Migration, migration: Migration) -> None:
    """From the genesis through the cutover, the chain's per-table figures give the certificate's."""
    result = audit(files)
    assert check_line(result, "figures").startswith("ran")
    assert "3 table(s)" in check_line(result, "figures")
    # Negative control: one batch claims a row more; the chain rehashed onward and the certificate resealed
    # to name its new head. Every hash agrees; only the arithmetic does not.
    edit_chain(files.chain, edit_and_rehash)
    point_at(files.certificate, files.chain)
    assert run_cli("checkpoints", "verify", "--file", str(files.chain)).exit_code == 0
    forged = audit(files)
    assert forged.exit_code == 3, forged.output
    assert check_line(forged, "figures").startswith("FAIL")
    assert check_line(forged, "chain head").startswith("ran")
    assert re.search(r"parent: the chain adds up to 6 rows, the certificate says 5", forged.stdout), forged.stdout


def test_finding_8_hints_fit_after_the_cutover(files: Migration) -> None:
    edit_chain(files.chain, append_after_cutover)
    result = run_cli("checkpoints", "verify", "--file", str(files.chain))
    assert result.exit_code == 3
    assert "do not cut over" not in result.stderr
    assert "replicator audit" in result.stderr


def test_finding_8_the_seal_error_says_what_changed(files: Migration, migration: Migration) -> None:
    def edit_rows(cert: dict[str, list[dict[str, object]]]) -> None:
        cert["tables"][0]["pg_rows"] = 47

    body = files.certificate.with_name("body.json")
    body.write_bytes(files.certificate.read_bytes())
    edit_certificate(body, edit_rows, seal=False)
    online = run_cli("certificate", "--verify", str(body), "--target", migration.dsn)
    assert online.exit_code == 3, online.output
    assert "tables[0].pg_rows" in online.stderr
    assert "47" in online.stderr

    def edit_seal(cert: dict[str, object]) -> None:
        cert["sha256"] = "0" * 64

    seal = files.certificate.with_name("seal.json")
    seal.write_bytes(files.certificate.read_bytes())
    edit_certificate(seal, edit_seal, seal=False)
    only_seal = run_cli("certificate", "--verify", str(seal), "--target", migration.dsn)
    assert only_seal.exit_code == 3, only_seal.output
    assert "the seal was changed" in only_seal.stderr
    offline = run_cli("certificate", "--verify", str(body))
    assert offline.exit_code == 3
    assert "body" in offline.stderr
    assert "seal" in offline.stderr


def test_the_chain_in_the_export_is_the_one_the_certificate_names(migration: Migration) -> None:
    records, head = read_chain(migration.chain)
    cert = json.loads(migration.certificate.read_text())
    assert [r["number"] for r in records] == list(range(1, 8))
    assert records[-1]["parsed"]["kind"] == "cutover"
    assert (head["number"], head["hash"]) == (cert["chain_head"], cert["chain_head_hash"])


def test_finding_8_a_killed_import_is_marked_killed(tmp_path: Path, pg_dsn: str) -> None:
    """An import ended by SIGKILL (the crash failpoint is ``os._exit``) cannot record its end; the next
    command that opens the state finds its connection gone and marks it, instead of ``running`` forever."""
    import os
    import subprocess
    import sys

    import psycopg

    from tests.support.export import export_source

    src = export_source(tmp_path / "app.db")
    out = tmp_path / "dump.tar"
    assert run_cli("export", "--source", str(src), "--out", str(out), "--tar", "-q").exit_code == 0
    env = {**os.environ, "REPLICATOR_FAILPOINTS": "import.after_table:crash"}
    killed = subprocess.run(
        [sys.executable, "-m", "replicator", "import", str(out), "--target", pg_dsn, "--on-bad-value", "quarantine"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert killed.returncode == 137, killed.stderr
    again = run_cli("import", str(out), "--target", pg_dsn, "--on-bad-value", "quarantine", "--replace", "-q")
    assert again.exit_code == 0, again.output
    with psycopg.connect(pg_dsn) as conn:
        runs = conn.execute(
            "SELECT command, status, finished_at IS NOT NULL FROM replicator.runs ORDER BY id"
        ).fetchall()
    assert runs == [("import", "killed", True), ("import", "ok", True)]


def test_a_run_whose_session_lives_is_not_marked_killed(pg_dsn: str) -> None:
    """Negative control: only a run whose PostgreSQL session ended is settled."""
    import psycopg

    from replicator.state.identity import SourceIdentity
    from replicator.state.store import KILLED_MESSAGE, StateStore

    alive = psycopg.connect(pg_dsn, autocommit=True)
    with alive.transaction():
        state_store = StateStore(alive, "replicator")
        state_store.ensure()
        state_store.mark_killed()
        run = state_store.start_run(command="import", mode="create", source=SourceIdentity("p", "i"))
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        assert StateStore(other, "replicator").mark_killed() == 0
        alive.close()
        for _ in range(100):  # the backend ends as soon as it reads the closed socket
            if StateStore(other, "replicator").mark_killed():
                break
            time.sleep(0.05)
        row = other.execute("SELECT status, message FROM replicator.runs WHERE id = %s", (run,)).fetchone()
    assert row == ("killed", KILLED_MESSAGE)


def test_finding_8_verify_after_the_cutover_gives_advice_for_after(migration: Migration) -> None:
    import psycopg

    with psycopg.connect(migration.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO parent (id, name) VALUES (99, 'written in PostgreSQL after the cutover')")
        try:
            result = run_cli("verify", "--source", str(migration.source), "--target", migration.dsn, "-q")
        finally:
            conn.execute("DELETE FROM parent WHERE id = 99")
    assert result.exit_code == 3, result.output
    assert "do not cut over" not in result.stderr
    # The cutover opened the rollback window: the difference is a change not carried back to SQLite yet.
    assert "the rollback window is open" in result.stderr
    assert "`replicator run` carries them back" in result.stderr
