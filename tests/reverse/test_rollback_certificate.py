"""The rollback certificate is kept in the state schema, stored in the transaction that closes the window: a rollback
that dies after that commit (``rollback.between_commits``, or after SQLite's un-fence but before the file) still
leaves the proof of what it carried back, and the run that finishes it writes that certificate, its seal intact.

Before, the window's close stored nothing: the rerun un-fenced SQLite and returned without a certificate."""

from __future__ import annotations

from pathlib import Path

import msgspec
import psycopg
import pytest

from checkpoints import store
from checkpoints.model import Kind
from replicator import faults
from replicator.files import WriteFailed
from replicator.reverse import rollback as window_rollback
from replicator.reverse import rollback_certificate as rbcert
from replicator.reverse.rollback_certificate import RollbackCertificate, TableProof
from tests.support.daemon import cfg
from tests.support.rollback_window import cli_with_failpoint, cut_over_with_app_writes
from tests.support.source import writable

pytestmark = pytest.mark.e2e

STATE = "replicator"
PROVED = {
    "child": TableProof("child", 0, 0, "match"),
    "pair": TableProof("pair", 0, 0, "match"),
    "parent": TableProof("parent", 2, 2, "match"),
}
"""What rollback proves for :func:`cut`: parent's rows 1 and 3 on both sides (2 deleted, 3 inserted on PostgreSQL)."""


def _by_table(tables: tuple[TableProof, ...]) -> dict[str, TableProof]:
    return {t.table: t for t in tables}


@pytest.fixture
def cut(tmp_path: Path, pg_dsn: str) -> Path:
    """Cut over with the window open, then the app writes on PostgreSQL (as tests/reverse/test_crash.py)."""
    return cut_over_with_app_writes(tmp_path, pg_dsn)


def _stored(dsn: str) -> bytes:
    """The one stored rollback certificate's body, read as an auditor would: plain SQL."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT cutover, sha256, body FROM replicator.rollback_certificates").fetchall()
        window = conn.execute("SELECT cutover FROM replicator.reverse_window").fetchone()
    assert len(rows) == 1
    ((cutover_hash, sha256, body),) = rows
    assert window == (cutover_hash,)
    cert = rbcert.decode(bytes(body))
    assert cert.sha256 == sha256
    assert cert.cutover_checkpoint == cutover_hash
    return bytes(body)


def _rollback_head(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        head = store.latest(conn, schema=STATE)
    assert head is not None
    assert head.kind is Kind.ROLLBACK
    return head.hash


def _tamper(dsn: str) -> None:
    """Someone with write access to the state schema says PostgreSQL held one more parent row."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        changed = conn.execute(
            "UPDATE replicator.rollback_certificates SET body = convert_to(replace(convert_from(body, 'UTF8'), "
            "'\"postgres_rows\": 2', '\"postgres_rows\": 3'), 'UTF8')"
        ).rowcount
    assert changed == 1


def test_a_kill_after_the_close_leaves_the_certificate_and_the_rerun_writes_it(cut: Path, pg_dsn: str) -> None:
    where = ("--source", str(cut), "--target", pg_dsn)
    crashed = cli_with_failpoint("rollback", *where, failpoint="rollback.between_commits:crash")
    assert crashed.returncode == faults.CRASH_EXIT, crashed.stderr[-2000:]
    assert not writable(cut)
    path = cut.with_name("app.db.rollback-certificate.json")
    assert not path.exists()
    body = _stored(pg_dsn)  # what the killed run proved, kept by its close
    proved = rbcert.decode(body)
    assert rbcert.seal_ok(proved)
    assert _by_table(proved.tables) == PROVED
    assert proved.write_outage_s is None  # the kill came before the outage ended
    assert proved.chain_head == _rollback_head(pg_dsn)

    rerun = cli_with_failpoint("rollback", *where)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "finished an interrupted rollback" in rerun.stdout
    assert f"certificate {path}" in rerun.stdout
    assert writable(cut)
    assert path.read_bytes() == body
    written = rbcert.decode(path.read_bytes())
    assert rbcert.seal_ok(written)
    assert _by_table(written.tables) == PROVED
    assert written.write_outage_s is None  # said, not a made-up 0
    assert '"write_outage_s": null' in path.read_text()
    assert _stored(pg_dsn) == body


def test_the_resumed_rollback_returns_the_certificate_and_writes_it_where_asked(
    cut: Path, pg_dsn: str, tmp_path: Path
) -> None:
    crashed = cli_with_failpoint(
        "rollback", "--source", str(cut), "--target", pg_dsn, failpoint="rollback.between_commits:crash"
    )
    assert crashed.returncode == faults.CRASH_EXIT, crashed.stderr[-2000:]
    asked = tmp_path / "elsewhere.json"
    result = window_rollback.rollback(cut, pg_dsn, cfg(), certificate_path=asked)
    assert result.resumed
    assert result.certificate is not None
    assert result.certificate_path == str(asked)
    assert _by_table(result.tables) == PROVED
    assert rbcert.decode(asked.read_bytes()) == result.certificate
    assert asked.read_bytes() == _stored(pg_dsn)


def test_a_finished_rollback_stores_the_certificate_with_its_measured_outage(
    cut: Path, pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "rb.json"
    result = window_rollback.rollback(cut, pg_dsn, cfg(), certificate_path=path)
    assert result.certificate is not None
    assert result.certificate.write_outage_s == result.write_outage_s
    assert result.certificate.write_outage_s is not None
    assert rbcert.seal_ok(result.certificate)
    assert _by_table(result.certificate.tables) == PROVED
    assert result.certificate.chain_head == _rollback_head(pg_dsn)
    assert path.read_bytes() == _stored(pg_dsn)  # the measured one replaced the one the close stored


def test_a_finished_rollback_names_its_certificate_and_writes_it_again_when_the_file_is_lost(
    cut: Path, pg_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "rb.json"
    window_rollback.rollback(cut, pg_dsn, cfg(), certificate_path=path)
    first = path.read_bytes()
    seal = rbcert.decode(first).sha256
    with pytest.raises(window_rollback.RollbackRefused, match="already rolled back") as exists:
        window_rollback.rollback(cut, pg_dsn, cfg(), certificate_path=path)
    assert f"seal {seal[:16]}" in exists.value.message
    assert f"{path} exists" in exists.value.message
    path.unlink()
    with pytest.raises(window_rollback.RollbackRefused, match="already rolled back") as lost:
        window_rollback.rollback(cut, pg_dsn, cfg(), certificate_path=path)
    assert "\n" not in lost.value.message
    assert f"written again to {path}" in lost.value.message
    assert path.read_bytes() == first


def test_the_file_not_written_after_the_unfence_is_written_by_the_next_run(
    cut: Path, pg_dsn: str, tmp_path: Path
) -> None:
    """The process cannot write the file after SQLite's un-fence (here: a directory that is not there; a kill
    at that moment leaves the same state): the state schema holds the certificate, the next run writes it."""
    nowhere = tmp_path / "missing" / "rb.json"
    with pytest.raises(WriteFailed, match="rollback certificate") as failed:
        window_rollback.rollback(cut, pg_dsn, cfg(), certificate_path=nowhere)
    assert "writes the certificate the state schema keeps" in failed.value.hint
    assert writable(cut)
    stored = rbcert.decode(_stored(pg_dsn))
    assert stored.write_outage_s is not None  # stored again once measured, before the file
    path = tmp_path / "rb.json"
    ran = cli_with_failpoint("rollback", "--source", str(cut), "--target", pg_dsn, "--certificate", str(path))
    assert ran.returncode == 3, ran.stderr
    assert ran.stderr.count("\n") == 1, ran.stderr
    assert f"written again to {path}" in ran.stderr
    assert rbcert.decode(path.read_bytes()) == stored
    assert rbcert.seal_ok(stored)


def test_a_tampered_stored_certificate_is_caught_by_its_seal(cut: Path, pg_dsn: str) -> None:
    """Negative control: the seal check is not vacuous. The body changed after the seal no longer hashes to it,
    the rerun still gives the app SQLite back, and writes no certificate it cannot vouch for."""
    where = ("--source", str(cut), "--target", pg_dsn)
    crashed = cli_with_failpoint("rollback", *where, failpoint="rollback.between_commits:crash")
    assert crashed.returncode == faults.CRASH_EXIT, crashed.stderr[-2000:]
    assert rbcert.seal_ok(rbcert.decode(_stored(pg_dsn)))
    _tamper(pg_dsn)
    tampered = rbcert.decode(_stored(pg_dsn))
    assert _by_table(tampered.tables)["parent"] == TableProof("parent", 2, 3, "match")
    assert not rbcert.seal_ok(tampered)
    rerun = cli_with_failpoint("rollback", *where)
    assert rerun.returncode == 3, rerun.stderr[-2000:]
    assert "does not hash to its seal" in rerun.stderr
    assert writable(cut)  # un-fenced all the same: the close was proved and committed
    assert not cut.with_name("app.db.rollback-certificate.json").exists()


def test_the_seal_covers_the_outage_marker() -> None:
    """``write_outage_s`` null (not measured) and a measured value seal differently: neither passes for the other."""
    cert = rbcert.seal(
        RollbackCertificate("a.db", "h:5432/d", "c", "t0", "t1", "r", tuple(PROVED.values()), None, 0, ())
    )
    assert rbcert.seal_ok(cert)
    assert rbcert.decode(rbcert.encode(cert)) == cert
    measured = rbcert.seal(msgspec.structs.replace(cert, write_outage_s=0.0))
    assert measured.sha256 != cert.sha256
    assert not rbcert.seal_ok(msgspec.structs.replace(measured, sha256=cert.sha256))


def test_certificate_verify_checks_a_rollback_certificate_against_the_target(
    cut: Path, pg_dsn: str, tmp_path: Path
) -> None:
    """``replicator certificate --verify FILE`` takes the rollback certificate too: its seal, the same seal as the
    one the target keeps, and the chain's rollback checkpoint it names. Negative controls: an edited file, a file
    resealed after an edit (not the one the target keeps), and another target's chain."""
    path = tmp_path / "rb.json"
    window_rollback.rollback(cut, pg_dsn, cfg(), certificate_path=path)
    ok = cli_with_failpoint("certificate", "--target", pg_dsn, "--verify", str(path))
    assert ok.returncode == 0, ok.stderr
    assert "seal: SHA-256 verifies; the target keeps the same certificate" in ok.stdout
    assert "parent: SQLite 2 = PostgreSQL 2 rows (match)" in ok.stdout
    offline = cli_with_failpoint("certificate", "--verify", str(path))  # no target: the seal alone
    assert offline.returncode == 0, offline.stderr

    edited = tmp_path / "edited.json"
    edited.write_bytes(path.read_bytes().replace(b'"postgres_rows": 2', b'"postgres_rows": 3'))
    caught = cli_with_failpoint("certificate", "--target", pg_dsn, "--verify", str(edited))
    assert caught.returncode == 3
    assert "does not hash to its seal" in caught.stderr

    resealed = tmp_path / "resealed.json"
    cert = rbcert.decode(path.read_bytes())
    others = tuple(t for t in cert.tables if t.table != "parent")
    forged = rbcert.seal(msgspec.structs.replace(cert, tables=(*others, TableProof("parent", 3, 3, "match"))))
    rbcert.write_file(resealed, forged)
    offline_forged = cli_with_failpoint("certificate", "--verify", str(resealed))
    assert offline_forged.returncode == 0  # offline, a resealed file is only as good as its seal
    against = cli_with_failpoint("certificate", "--target", pg_dsn, "--verify", str(resealed))
    assert against.returncode == 3
    assert "is not the rollback certificate the target keeps" in against.stderr
    unequal = tmp_path / "unequal.json"  # resealed, and certifying unequal counts as a match: caught offline
    rbcert.write_file(
        unequal, rbcert.seal(msgspec.structs.replace(cert, tables=(*others, TableProof("parent", 2, 3, "match"))))
    )
    refused = cli_with_failpoint("certificate", "--verify", str(unequal))
    assert refused.returncode == 3
    assert "not proved equal: parent" in refused.stderr

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM replicator.rollback_certificates")
        conn.execute("UPDATE replicator.checkpoints SET kind = 'reverse' WHERE kind = 'rollback'")
    elsewhere = cli_with_failpoint("certificate", "--target", pg_dsn, "--verify", str(path))
    assert elsewhere.returncode == 3
    assert "has no rollback checkpoint" in elsewhere.stderr
    live = cli_with_failpoint("certificate", "--target", pg_dsn, "--verify", str(path), "--live")
    assert live.returncode != 0
    assert "--live re-reads the databases against a cutover certificate" in live.stderr
