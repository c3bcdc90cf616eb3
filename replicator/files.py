"""Writing the operator's files (export, backup, certificate): an ``OSError`` while writing becomes one line
naming the path and the problem, with what to do, instead of ``unexpected OSError ... report it``.

A full disk (ENOSPC), a quota (EDQUOT) and a file size limit (EFBIG: RLIMIT_FSIZE, or a file system's
largest file) are operational conditions, not bugs: exit 1 with a hint. The callers keep their own rule
that nothing half-written stays under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from replicator.errors import ReplicatorError


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
