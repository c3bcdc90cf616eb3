"""Ed25519 signatures of cutover certificates: what makes the seal more than a checksum.

The seal (:func:`replicator.cutover.certificate.seal`) is a bare SHA-256 of the certificate's fields: it detects
accidental damage, but anyone who edits a count or the chain head recomputes it. With a signing key
configured (``[signing] key``), cutover also signs the seal with Ed25519 (RFC 8032, through the
``cryptography`` package); the certificate carries the signature and the key's id. An auditor who holds
only the public key then knows that every field, the chain head among them, is what the cutover wrote:
a chain rewritten with recomputed hashes no longer ends at the signed head.

The signed message is ``MESSAGE_PREFIX`` followed by the seal's 64 hex digits, ASCII (docs/audit.md).
Key files: the private key is PEM PKCS#8, unencrypted, mode 0600; the public key is PEM
SubjectPublicKeyInfo, whose DER is a fixed 12-byte prefix then the 32-byte key. The key id is the first
16 hex digits of the SHA-256 of those 32 bytes.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from replicator import files
from replicator.cutover.certificate import Certificate, Signature, seal_ok
from replicator.errors import ConfigError, UsageError

ALGORITHM: Final = "ed25519"
MESSAGE_PREFIX: Final = b"replicator cutover certificate seal "
PRIVATE_NAME: Final = "replicator-signing.key"
PUBLIC_NAME: Final = "replicator-signing.pub"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def message(seal: str) -> bytes:
    return MESSAGE_PREFIX + seal.encode("ascii")


def generate(out_dir: Path, *, force: bool = False) -> tuple[Path, Path, str]:
    """A new key pair in ``out_dir``: the private key (mode 0600) and the public key; returns both and the id."""
    private_path, public_path = out_dir / PRIVATE_NAME, out_dir / PUBLIC_NAME
    for path in (private_path, public_path):
        if path.exists() and not force:
            raise UsageError(f"{path} already exists", hint="choose another --out-dir, or pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    out_dir.mkdir(parents=True, exist_ok=True)
    with files.writing(private_path, what="the private key", instead="choose another --out-dir"):
        private_path.unlink(missing_ok=True)  # a new file gets 0600 from the start, never a moment readable
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        os.chmod(private_path, 0o600)  # whatever the umask
    with files.writing(public_path, what="the public key", instead="choose another --out-dir"):
        public_path.write_bytes(public)
    return private_path, public_path, key_id(key.public_key())


def load_private(path: Path) -> Ed25519PrivateKey:
    """The signing key; refused when others may read it (a key anyone can read signs for anyone)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the signing key {path}: {exc.strerror}", hint="check [signing] key in the config"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the signing key {path} can be read by other users (mode {stat.S_IMODE(mode):o})",
            hint=f"chmod 600 {path}",
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not a PEM private key: {exc}", hint="make one with `replicator keys generate`"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key", hint="make one with `replicator keys generate`")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read the public key {path}: {exc.strerror}", hint="check --public-key") from None
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"{path} is not a PEM public key: {exc}", hint="pass the .pub file `keys generate` wrote"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path} is not an Ed25519 public key", hint="pass the .pub file `keys generate` wrote")
    return key


def sign(cert: Certificate, key: Ed25519PrivateKey) -> Certificate:
    """The sealed certificate with its signature (the seal, and so every field, signed)."""
    import msgspec

    if not seal_ok(cert):
        raise UsageError("only a sealed certificate can be signed", hint="seal it first")
    value = key.sign(message(cert.sha256)).hex()
    return msgspec.structs.replace(
        cert, signature=Signature(algorithm=ALGORITHM, key_id=key_id(key.public_key()), value=value)
    )


def verifies(signature: Signature, seal: str, public: Ed25519PublicKey) -> bool:
    """Whether ``signature`` signs ``seal`` under ``public`` (False for another algorithm or a bad encoding)."""
    if signature.algorithm != ALGORITHM:
        return False
    try:
        public.verify(bytes.fromhex(signature.value), message(seal))
    except (InvalidSignature, ValueError):
        return False
    return True
