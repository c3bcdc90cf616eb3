"""Open the application's SQLite file without ever disturbing the live app.

Why a module of its own: every stage (analyze, snapshot, capture, apply, cutover) opens the same
file, and each must fail the same way on a bad file: one line naming the file and what to do.
Read-only opens use a ``mode=ro`` URI so that no code path can write to the app's database by
mistake; all opens set a busy timeout so that a writer holding the lock makes us wait, not fail.

The file is never opened any other way while this process holds a SQLite connection to it. POSIX
releases every lock a process holds on a file when *any* descriptor of that file is closed, SQLite's
own included (SQLite's "How To Corrupt An SQLite Database File", 2.2): one ``open()``/``close()`` of
the database by the daemon let the app's last connection believe it was alone and delete ``-wal`` and
``-shm`` under the daemon, and would let an app write through a cutover's freeze. So every connection
this module opens counts itself per file (device, inode), and the 100-byte header that
:func:`check_file` and the source identity need is read raw only while that count is zero, under the
same lock that connections are opened under; otherwise the header read at the first open is reused.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import urllib.parse
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

from triggers.errors import SourceBusy, SourceError

SQLITE_HEADER = b"SQLite format 3\x00"
DEFAULT_BUSY_TIMEOUT_MS = 5_000
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "afs", "ceph"})
_UNDECODABLE_TEXT = "Could not decode to UTF-8"
"""The start of sqlite3's error for TEXT that is not UTF-8 under ``text_factory = str``. Python's sqlite3 raises
it itself (an ``OperationalError`` without SQLite's ``sqlite_errorcode``: SQLite stored the bytes and returned
them fine), so that missing code and its wording are all there is to tell it apart; :func:`undecodable_text`
is the one place that reads them."""


FileKey = tuple[int, int]

#: Connections this process holds open per file (device, inode), and each file's header as read raw
#: while none was open. ``_LOCK`` is held while a connection is opened and while the header is read.
#: It is re-entrant because a collected connection's finalizer (:func:`_release`) runs wherever the
#: garbage collector does, including inside ``_open_tracked`` on the thread already holding the lock:
#: with a plain Lock that thread waited for itself forever (seen as a test run that never ended).
_LIVE: dict[FileKey, int] = {}
_HEADERS: dict[FileKey, bytes] = {}
_LOCK = threading.RLock()


def _file_key(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino)


def _release(key: FileKey) -> None:
    with _LOCK:
        left = _LIVE.get(key, 0) - 1
        if left > 0:
            _LIVE[key] = left
        else:
            _LIVE.pop(key, None)


class SourceConnection(sqlite3.Connection):
    """A connection to the app's file that counts itself in ``_LIVE`` until it is closed or collected."""

    _released: weakref.finalize[[FileKey], SourceConnection] | None = None

    def track(self, key: FileKey) -> None:
        _LIVE[key] = _LIVE.get(key, 0) + 1  # caller holds _LOCK
        self._released = weakref.finalize(self, _release, key)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._released is not None:
                self._released()  # a finalizer runs once: a later collection does not count it again


def live_connections(path: Path) -> int:
    """How many SQLite connections this process holds to the file at ``path`` now (0 if it is gone)."""
    try:
        key = _file_key(path.stat())
    except OSError:
        return 0
    with _LOCK:
        return _LIVE.get(key, 0)


def read_header(path: Path) -> bytes | None:
    """The file's first 100 bytes, read without ever dropping a SQLite lock this process holds.

    Read raw only while this process has no connection to the file (then no lock can be lost); while
    one is open, the header read before it opened is returned (None if there was none). Fields that
    change with writes are therefore as of the first open: callers use only what writes never change,
    or use it only before any connection exists.
    """
    key = _file_key(path.stat())
    with _LOCK:
        if _LIVE.get(key):
            return _HEADERS.get(key)
        return _read_raw(path, key)


def _read_raw(path: Path, key: FileKey) -> bytes:
    """The one raw read of the file; the caller holds ``_LOCK`` and has seen no live connection to it."""
    with path.open("rb") as handle:
        header = handle.read(100)
    _HEADERS[key] = header
    return header


_SHA256_CHILD: Final = (
    "import hashlib, sys\n"
    "h = hashlib.sha256()\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    while chunk := f.read(1 << 20):\n"
    "        h.update(chunk)\n"
    "print(h.hexdigest())\n"
)


def sha256(path: Path) -> str:
    """SHA-256 of the file's bytes, read without ever dropping a SQLite lock this process holds.

    While this process has a connection to the file, the bytes are read by a child process: its ``close()``
    drops only its own POSIX locks, where ours would drop every lock this process holds on the file (SQLite's
    "How To Corrupt", 2.2). Otherwise they are read here, under the connection-count lock.
    """
    key = _file_key(path.stat())
    with _LOCK:
        if not _LIVE.get(key):
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
            return digest.hexdigest()
    done = subprocess.run(
        [sys.executable, "-c", _SHA256_CHILD, os.fspath(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise SourceError(f"cannot read {path}: {reason}", hint="check that this user can read the file")
    return done.stdout.strip()


def check_file(path: Path) -> None:
    """Refuse, with a clear reason, a path that cannot be an application's SQLite database.

    While this process holds a connection to the file, the file has already been opened as a database
    and the checks of its header are not repeated (see :func:`read_header`).
    """
    if not path.exists():
        raise SourceError(f"source {path} does not exist", hint="pass the path of the app's SQLite file")
    if path.is_dir():
        raise SourceError(f"source {path} is a directory", hint="pass the SQLite file itself, not its folder")
    try:
        mode = path.stat().st_mode
        if not os.access(path, os.R_OK):
            raise PermissionError(path)
        if live_connections(path):
            return
        header = read_header(path) or b""
    except PermissionError:
        raise SourceError(
            f"source {path} is not readable by this user",
            hint="run as the app's user or grant read access to the file and its directory",
        ) from None
    if not stat.S_ISREG(mode):
        raise SourceError(f"source {path} is not a regular file", hint="pass the SQLite database file")
    if len(header) == 0:
        raise SourceError(f"source {path} is empty (0 bytes)", hint="check the path: an app database has tables")
    if not header.startswith(SQLITE_HEADER):
        raise SourceError(
            f"source {path} is not a SQLite 3 database (bad header)",
            hint="if it is encrypted (SQLCipher, SEE), export a plain copy first; else check the path",
        )
    if len(header) < 100:
        raise SourceError(f"source {path} is truncated (header incomplete)", hint="restore it from a backup")
    short = _short_by(path, header)
    if short is not None and not _live_wal(path, header):
        size, expected = short
        raise SourceError(
            f"source {path} is truncated: {size} bytes, header says {expected}",
            hint="the copy is incomplete; copy it again or restore it from a backup",
        )


def _live_wal(path: Path, header: bytes) -> bool:
    """A WAL-mode file with a non-empty ``-wal`` beside it: its header may run ahead of its size.

    Seen on a live app (the demo's writer, about one cutover in five): the main file is a few pages short
    of its header's page count for longer than a checkpoint takes; SQLite reads those pages from the WAL.
    A truncated *copy* has no ``-wal`` (or is not in WAL mode), so it is still refused.
    """
    if header[18:20] != b"\x02\x02":  # file format write/read version 2: WAL
        return False
    try:
        return path.with_name(path.name + "-wal").stat().st_size > 0
    except OSError:
        return False


def _short_by(path: Path, header: bytes) -> tuple[int, int] | None:
    """(file size, size the header claims) when the file is shorter than its header says, else None."""
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    page_count = int.from_bytes(header[28:32], "big")
    change_counter = header[24:28]
    valid_for = header[92:96]
    size = path.stat().st_size
    if change_counter == valid_for and page_count and size < page_size * page_count:
        return size, page_size * page_count
    return None


def filesystem_type(path: Path) -> str | None:
    """The filesystem type holding ``path`` from /proc/mounts, or None where that is not known."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = parts[1].replace("\\040", " ")
        prefix = mount_point.rstrip("/") + "/"
        if (target == mount_point or target.startswith(prefix)) and len(mount_point) > len(best):
            best, best_type = mount_point, parts[2]
    return best_type


def connect(
    path: Path | str,
    *,
    readonly: bool = True,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    check: bool = True,
) -> sqlite3.Connection:
    """Open the source in autocommit mode (we issue BEGIN ourselves) and prove it is readable."""
    path = Path(path)
    if check:
        check_file(path)
    quoted = urllib.parse.quote(str(path.resolve()))
    uri = f"file:{quoted}?mode={'ro' if readonly else 'rw'}"
    try:
        conn = _open_tracked(path, uri)
    except sqlite3.Error as exc:
        raise SourceError(f"cannot open source {path}: {exc}", hint="check the path and permissions") from None
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise translate(exc, path) from None
    return conn


def _open_tracked(path: Path, uri: str) -> SourceConnection:
    """Open and count a connection; the header is cached first if this is the process's only one."""
    try:
        key: FileKey | None = _file_key(path.stat())
    except OSError:
        key = None  # sqlite3 raises the reason below
    with _LOCK:
        if key is not None and not _LIVE.get(key) and key not in _HEADERS:
            with suppress(OSError):
                _read_raw(path, key)
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, factory=SourceConnection)
        if key is not None:
            conn.track(key)
    return conn


@contextmanager
def opened(
    path: Path | str, *, readonly: bool = True, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
) -> Iterator[sqlite3.Connection]:
    """A connection for one standalone operation: any sqlite3 error inside becomes our one-line error."""
    conn = connect(path, readonly=readonly, busy_timeout_ms=busy_timeout_ms)
    try:
        yield conn
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    finally:
        conn.close()


def undecodable_text(exc: BaseException) -> bool:
    """Whether sqlite3 refused to turn a stored TEXT value into ``str`` (it is not UTF-8).

    Why a predicate: every reader of the app's rows (snapshot, export, verify, the apply, the journal) then
    re-reads with a bytes-tolerant text factory instead of failing, and each must recognise exactly this
    error, not any OperationalError (a locked or corrupt file is not re-read)."""
    raised_by_sqlite3 = getattr(exc, "sqlite_errorcode", None) is None  # not an error SQLite itself reported
    return isinstance(exc, sqlite3.OperationalError) and raised_by_sqlite3 and _UNDECODABLE_TEXT in str(exc)


_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def busy(exc: BaseException) -> bool:
    """Whether SQLite reported SQLITE_BUSY or SQLITE_LOCKED (extended codes included): another connection
    holds the lock, so the same statement can succeed later. Read from the result code, not the message."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and isinstance(code, int) and code & 0xFF in _BUSY_CODES


def translate(exc: sqlite3.Error, path: Path | str) -> SourceError | SourceBusy:
    """Map a sqlite3 exception to our error with an operator hint; never by guessing from SQL."""
    code = getattr(exc, "sqlite_errorcode", None)
    code = code & 0xFF if isinstance(code, int) else code  # extended codes (SQLITE_READONLY_DIRECTORY) -> primary
    text = str(exc)
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in text:
        return SourceBusy(
            f"source {path} is locked by another connection ({text})",
            hint="a writer holds a long transaction; retry, or raise busy_timeout",
        )
    if code == sqlite3.SQLITE_NOTADB or "not a database" in text or "encrypted" in text:
        return SourceError(
            f"source {path} is not a readable SQLite database ({text})",
            hint="if it is encrypted, export a plain copy first; else restore it from a backup",
        )
    if code == sqlite3.SQLITE_CORRUPT or "malformed" in text:
        return SourceError(
            f"source {path} is corrupt ({text})",
            hint="run `sqlite3 FILE 'PRAGMA integrity_check'` and restore from a backup",
        )
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY):
        return SourceError(
            f"cannot open source {path} ({text})",
            hint="check permissions on the file and its directory (WAL needs the -shm file)",
        )
    return SourceError(f"source {path}: {text}", hint="check the file with the sqlite3 shell")
