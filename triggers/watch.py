"""The wake-up signal: tell the apply loop, quickly and cheaply, that the source has committed.

Two sources, because neither is enough alone (d18, d19):

* File events (watchdog/inotify) on the database's directory, filtered to ``app.db``, ``app.db-wal``
  and ``app.db-journal``: immediate, but only a hint. A WAL append is visible on disk a moment
  *before* the commit is published in the wal-index, events can be dropped or coalesced, and some
  filesystems (FUSE, network) deliver none. ``-shm`` is ignored: readers touch it too.
* ``PRAGMA data_version`` on our own read-only connection: changes exactly when another connection
  (any process) has committed. It is the truth, polled every ``poll_interval_s`` as the safety net,
  and re-checked at a fast backoff right after each file event.

``wait()`` returns True only when ``data_version`` moved, so spurious events cost a PRAGMA, never a
wasted apply cycle. WAL on a network filesystem is refused: SQLite's WAL needs shared memory that
network filesystems do not provide (https://www.sqlite.org/wal.html).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from watchdog.events import FileSystemEventHandler

from triggers.errors import SourceError
from triggers.source import NETWORK_FILESYSTEMS, connect, filesystem_type

# watchdog's inotify emitter logs "queue_events() called when the thread is inactive" at ERROR when the
# observer stops while an event is in flight (a daemon that exits right after starting). It is a
# harmless shutdown race, file events are only a hint (PRAGMA data_version polling is the safety net),
# and a stray line on stderr breaks the one-line error contract of the CLI.
logging.getLogger("watchdog.observers.inotify").setLevel(logging.CRITICAL)

FAST_RECHECKS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
"""Re-check delays after a file event: the commit becomes visible just after the WAL write."""


def refuse_network_wal(path: Path, fs_type: str | None, journal_mode: str) -> None:
    """Raise when a WAL database sits on a network filesystem (pure, so it is testable anywhere)."""
    if journal_mode.lower() == "wal" and fs_type is not None and fs_type.lower() in NETWORK_FILESYSTEMS:
        raise SourceError(
            f"source {path} is in WAL mode on a network filesystem ({fs_type}), which SQLite does not support",
            hint="run replicator on the host that owns the disk, or move the database to a local filesystem",
        )


def check_wal_location(path: Path, conn: sqlite3.Connection) -> None:
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    refuse_network_wal(path, filesystem_type(path), str(mode))


class _Handler(FileSystemEventHandler):
    """Filters events to the database's own files and sets the shared event (coalescing them)."""

    def __init__(self, names: frozenset[str], event: threading.Event) -> None:
        super().__init__()
        self._names = names
        self._event = event

    def on_any_event(self, event: Any) -> None:
        for attr in ("src_path", "dest_path"):
            raw = getattr(event, attr, None)
            if raw and os.path.basename(os.fsdecode(raw)) in self._names:
                self._event.set()
                return


class Watcher:
    """``wait(timeout) -> bool``: True as soon as the source has committed since the last True.

    Thread-safe: any thread may call ``wait`` (a change is reported to one waiter) and ``close``.
    Use as a context manager so the observer thread and the connection are always released.
    """

    def __init__(self, path: Path | str, poll_interval_s: float = 0.5, *, file_events: bool = True) -> None:
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be > 0")
        self.path = Path(path).resolve()
        self.poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._conn = connect(self.path, readonly=True)
        self._closed = False
        self._observer: Any = None
        self._log = structlog.get_logger().bind(component="capture.watch", source=str(self.path))
        try:
            check_wal_location(self.path, self._conn)
            self._version = self._data_version()
            if file_events:
                self._start_observer()
        except BaseException:
            self._conn.close()
            raise

    def _start_observer(self) -> None:
        from watchdog.observers import Observer

        name = self.path.name
        names = frozenset({name, f"{name}-wal", f"{name}-journal"})
        observer = Observer()
        observer.schedule(_Handler(names, self._event), str(self.path.parent), recursive=False)
        observer.daemon = True
        try:
            observer.start()
        except OSError as exc:  # inotify limits, unsupported filesystem: polling still works
            self._log.warning("file events unavailable; polling only", error=str(exc))
            return
        self._observer = observer

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _changed(self) -> bool:
        with self._lock:
            if self._closed:
                raise SourceError("watcher is closed", hint="create a new Watcher")
            version = self._data_version()
            if version != self._version:
                self._version = version
                return True
            return False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the source commits (True) or ``timeout`` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fast: list[float] = []
        while True:
            self._event.clear()
            if self._changed():
                return True
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            step = fast.pop(0) if fast else self.poll_interval_s
            if remaining is not None:
                step = min(step, remaining)
            if self._event.wait(step):
                fast = list(FAST_RECHECKS_S)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            observer, self._observer = self._observer, None
            self._conn.close()
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
        self._event.set()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
