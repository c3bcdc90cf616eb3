"""The rollback certificate: what ``replicator rollback`` proved, sealed with its own SHA-256.

The seal is the SHA-256 of the certificate's canonical JSON (keys sorted, ``sha256`` empty): a changed byte in any
field changes it. ``rollback`` stores the sealed certificate in the state schema in the transaction that closes
the window (:func:`replicator.state.reverse.store_certificate`), stores it again once the outage is measured, and
writes it as a file; the stored body and the file are the same bytes (:func:`encode`). A rollback interrupted after
the close, or a file lost since, is written again from the stored one, its seal checked first (:func:`verified`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec

from replicator import files
from replicator.errors import VerificationFailed


class TableProof(msgspec.Struct, frozen=True):
    table: str
    sqlite_rows: int
    postgres_rows: int
    status: str


class RollbackCertificate(msgspec.Struct, frozen=True):
    source: str
    target: str
    cutover_checkpoint: str
    window_opened_at: str
    rolled_back_at: str
    chain_head: str
    """The hash of the ``rollback`` checkpoint that closed the window."""
    tables: tuple[TableProof, ...]
    write_outage_s: float | None
    """Seconds from PostgreSQL's fence to SQLite's un-fence. None (``null``): not measured, a rollback interrupted
    after it closed the window; the certificate is the one the close stored, written by the run that finished it."""
    batches_in_window: int
    acknowledged_refusals: tuple[str, ...]
    sha256: str = ""


class StoredCertificateDamaged(VerificationFailed):
    """The rollback certificate stored in the state schema does not hash to its seal: it was changed since."""


def seal(cert: RollbackCertificate) -> RollbackCertificate:
    """The SHA-256 of the canonical encoding (keys sorted, ``sha256`` empty) recorded in ``sha256``."""
    return msgspec.structs.replace(cert, sha256=_body_hash(cert))


def _body_hash(cert: RollbackCertificate) -> str:
    return hashlib.sha256(msgspec.json.encode(msgspec.structs.replace(cert, sha256=""), order="sorted")).hexdigest()


def seal_ok(cert: RollbackCertificate) -> bool:
    """The certificate's fields hash to its seal: nothing was changed after it was sealed."""
    return bool(cert.sha256) and _body_hash(cert) == cert.sha256


def encode(cert: RollbackCertificate) -> bytes:
    """The file's bytes (the stored body too): indented JSON, keys sorted as the seal hashes them."""
    return msgspec.json.format(msgspec.json.encode(cert, order="sorted"), indent=2) + b"\n"


def decode(body: bytes) -> RollbackCertificate:
    return msgspec.json.decode(body, type=RollbackCertificate)


def default_path(source: Path) -> Path:
    return source.with_name(source.name + ".rollback-certificate.json")


def write_file(path: Path, cert: RollbackCertificate) -> None:
    """Temp file, fsync, rename: a reader (or a rerun asking whether the file is there) never sees half of it."""
    partial = path.with_name(f".{path.name}.partial")
    instead = "run `replicator rollback --certificate FILE` again: it writes the certificate the state schema keeps"
    with files.writing(path, what="the rollback certificate", instead=instead):
        try:
            partial.write_bytes(encode(cert))
            files.fsync_path(partial)
            partial.replace(path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


def verified(body: bytes) -> RollbackCertificate:
    """The stored certificate, its seal checked: what was changed after the seal is never written as proof."""
    try:
        cert = decode(body)
    except msgspec.DecodeError as exc:
        raise StoredCertificateDamaged(
            f"the rollback certificate stored in the state schema is unreadable ({exc})"
        ) from None
    if not seal_ok(cert):
        raise StoredCertificateDamaged(
            f"the rollback certificate stored in the state schema does not hash to its seal {cert.sha256[:16]}: "
            "it was changed after it was sealed"
        )
    return cert


def kept(stored: bytes | None, path: Path) -> str:
    """Where the finished rollback's certificate is, for the refusal's one line; the file written again when it
    is missing (never over one that is there)."""
    if stored is None:
        return ""
    try:
        cert = verified(stored)
    except StoredCertificateDamaged as exc:
        return f"; {exc.message}"
    where = f"; its rollback certificate (seal {cert.sha256[:16]}) is kept in the state schema"
    if path.exists():
        return f"{where} ({path} exists)"
    write_file(path, cert)
    return f"{where} and was written again to {path}"
