"""Which SQLite file a run read: the identity each ``runs`` and ``snapshot_tables`` row records.

A later stage compares it to refuse another file at the same path (``snapshot --resume``, the daemon's start):
positions in one file's journal mean nothing for another's.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgspec

from triggers import source as sqlite_source
from triggers.errors import SourceError


class SourceIdentity(msgspec.Struct, frozen=True):
    path: str
    id: str
    """Stable identity of the SQLite file: device, inode and the database header's creation facts."""


#: Header fields that never change while an app writes: page size, file format versions, reserved
#: bytes, payload fractions (16..24), text encoding (56..60) and application id (68..72). The change
#: counter, the schema cookie and the version-valid-for number change with writes, so a resumed
#: snapshot of the same live file would otherwise look like another file.
_STABLE_HEADER = ((16, 24), (56, 60), (68, 72))


def source_identity(path: Path) -> SourceIdentity:
    """Identify the source file so a later stage can refuse a different file at the same path.

    File identity (device, inode) plus the header fields that writes never change: stable for one
    live file however much the app writes, different for another file moved into place. When capture
    is installed, the snapshot uses the capture's own random source id instead (see
    :func:`capture_identity`), which survives even a copy of the file.
    """
    resolved = path.resolve()
    st = resolved.stat()
    header = sqlite_source.read_header(resolved)  # never an open() that would drop this process's SQLite locks
    if header is None:
        raise SourceError(f"cannot read the header of source {resolved}", hint="check that this user can read the file")
    stable = b"".join(header[a:b] for a, b in _STABLE_HEADER)
    digest = hashlib.sha256(f"{st.st_dev}:{st.st_ino}:".encode() + stable).hexdigest()[:16]
    return SourceIdentity(path=os.fspath(resolved), id=digest)


def capture_identity(path: str, capture_source_id: str) -> SourceIdentity:
    """The identity of a source whose capture is installed: the id the triggers' meta table holds."""
    return SourceIdentity(path=path, id=f"capture:{capture_source_id}")
