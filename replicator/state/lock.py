"""The source lock: who may apply one source's journal to one target, taken the same way by the daemon
(``replicator run``), the cutover and the online re-load (``snapshot --replace --tables``), and read by
``status``.

Two locks, because two things can go wrong. The lock file next to the SQLite file (an exclusive ``flock``)
refuses a second daemon on the same host before it touches PostgreSQL, and holds the daemon's pid and host
so that a cutover knows whom to ask for a hand-over (:data:`HANDOVER_SIGNAL`). The PostgreSQL advisory lock
keyed by the capture's source id (:func:`lock_key`) refuses a second applier anywhere, and is what
``status`` reads to tell a running daemon from a stopped one. Both go away with their process: nothing
stale is left to clean up after a crash.

Below ``load/`` on purpose: the online re-load takes the lock too, and the daemon (``stream/``) and the
cutover sit above it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import IO, Any, Final

import psycopg

LOCK_NAMESPACE = 0x5250_4C43
"""High half of the advisory lock key ('RPLC'); the low half comes from the source id."""
LOCK_GRACE_S = 2.0
"""How long a start waits for the advisory lock before refusing (another daemon really runs)."""
HANDOVER_SIGNAL: Final = signal.SIGUSR1
"""What ``replicator cutover`` sends the daemon that holds the source's lock file (its pid is in it)."""


def lock_key(source_id: str) -> int:
    """A signed 64-bit advisory lock key for one source: two sources never share a daemon lock."""
    low = int.from_bytes(hashlib.sha256(source_id.encode()).digest()[:4], "big")
    value = (LOCK_NAMESPACE << 32) | low
    return value - (1 << 64) if value >= 1 << 63 else value


def take_lock(
    conn: psycopg.Connection[Any], source_id: str, *, grace_s: float = LOCK_GRACE_S, stop: threading.Event | None = None
) -> bool:
    """Take the source's advisory lock (the daemon's, and the cutover's); a holder is waited for up to
    ``grace_s``: the backend of a daemon that has just exited can hold it for a few ms after the client
    closed (a back-to-back start was refused). False: someone still holds it."""
    deadline = time.monotonic() + grace_s
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(source_id),)).fetchone()
        if row and row[0]:
            return True
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return False
        time.sleep(0.05)


def lock_path(source: Path) -> Path:
    """The file a daemon (and a cutover) holds an exclusive flock on, with the daemon's pid and host in it."""
    return source.with_name(source.name + ".replicator.lock")


def open_lock_file(source: Path) -> IO[str]:
    """The lock file, opened for :func:`try_flock` (created when missing; its content is left as it is)."""
    return lock_path(source).open("a")


def try_flock(handle: IO[str]) -> bool:
    """Take the exclusive flock without waiting. False: another process holds it."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def held_elsewhere(handle: IO[str]) -> bool:
    """Whether another process holds the lock file now (taken and let go at once when it is free)."""
    if not try_flock(handle):
        return True
    fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def write_holder(handle: IO[str]) -> None:
    """Record this process as the holder: who a cutover asks for a hand-over."""
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} {socket.gethostname()}\n")
    handle.flush()


def clear_holder(handle: IO[str]) -> None:
    """No stale pid for a cutover to signal once we are gone (pids are reused)."""
    handle.seek(0)
    handle.truncate()


def lock_holder(source: Path) -> int | None:
    """The pid of the daemon holding the lock file, when it runs on this host (in this PID namespace: the
    host name of a container differs) and so may be signalled; None when that cannot be known."""
    try:
        pid, _, host = lock_path(source).read_text().strip().partition(" ")
    except OSError:
        return None
    if not pid.isdigit() or host != socket.gethostname() or int(pid) == os.getpid():
        return None
    try:  # the pid must still be a replicator (a pid is reused once its process is gone)
        if b"replicator" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    except FileNotFoundError:
        return None
    except OSError:
        pass  # no /proc here: host and pid are all we know
    return int(pid)
