"""Writing the operator's files (export, backup, certificate): an ``OSError`` while writing becomes one line
naming the path and the problem, with what to do, instead of ``unexpected OSError ... report it``.

A full disk (ENOSPC), a quota (EDQUOT) and a file size limit (EFBIG: RLIMIT_FSIZE, or a file system's
largest file) are operational conditions, not bugs: exit 1 with a hint. The callers keep their own rule
that nothing half-written stays under the final name.

Also two steps the export and the backup share: a file's SHA-256 read in bounded memory, and an fsync by
path (of the directory too, so that the rename that publishes a file is durable).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

from replicator.errors import ReplicatorError

_HASH_CHUNK: Final = 1 << 20


class WriteFailed(ReplicatorError):
    """A file could not be written: full disk, quota, size limit, permissions, read-only file system."""


def write_error(exc: OSError, path: Path | str, *, what: str, instead: str) -> WriteFailed:
    """The operator's error for ``exc`` raised while writing ``what`` at ``path``; ``instead`` is the other
    way out, e.g. ``"choose another --out"``."""
    where = Path(os.path.abspath(path)).parent
    code = exc.errno
    if code == errno.ENOSPC:
        problem, hint = f"no space left on the device holding {where}", f"free space there or {instead}"
    elif code == errno.EDQUOT:
        problem, hint = f"disk quota exceeded on the device holding {where}", f"free space there or {instead}"
    elif code == errno.EFBIG:
        problem = "file size limit reached"
        hint = f"{instead} on a file system that allows larger files, or raise the file size limit (ulimit -f)"
    elif code in (errno.EACCES, errno.EPERM):
        problem, hint = f"permission denied in {where}", f"check the permissions of {where} or {instead}"
    elif code == errno.EROFS:
        problem, hint = f"{where} is on a read-only file system", instead
    else:
        problem, hint = exc.strerror or str(exc), f"check {where} or {instead}"
    return WriteFailed(f"cannot write {what} {path}: {problem}", hint=hint)


@contextlib.contextmanager
def writing(path: Path | str, *, what: str, instead: str) -> Iterator[None]:
    """Map any ``OSError`` raised inside to :func:`write_error` (the original kept as the cause, for -v)."""
    try:
        yield
    except OSError as exc:
        raise write_error(exc, path, what=what, instead=instead) from exc


def sha256_of(handle: IO[bytes]) -> str:
    """SHA-256 of what is left to read in ``handle``, a chunk at a time: memory stays bounded whatever its size."""
    digest = hashlib.sha256()
    while chunk := handle.read(_HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of a file we wrote (an export's, a backup). Never the app's SQLite file: ``triggers.source.sha256``
    reads that one without dropping a SQLite lock this process holds."""
    with path.open("rb") as handle:
        return sha256_of(handle)


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory so that a rename into it survives a crash, by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
