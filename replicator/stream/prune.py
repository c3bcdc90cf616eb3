"""The journal pruner: deletes what PostgreSQL has committed, behind the apply and off the loop's thread.

Its own module because it is its own thread with its own read-write SQLite connection; the loop
(:mod:`replicator.stream.worker`) only says how far it may go (:meth:`Pruner.request`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

from replicator import faults, log
from triggers import journal
from triggers.errors import CaptureError


class Pruner:
    """Prunes the journal behind the apply, in its own thread and on its own read-write connection.

    When: once the app has been quiet for ``idle_s`` (no new entry applied), or once ``max_rows``
    applied entries wait. A commit of ours is a commit the app did not make: every app transaction
    that read before it and tries to write after it fails at once with SQLITE_BUSY_SNAPSHOT ("database
    is locked"), whatever its busy timeout, when it began with a deferred ``BEGIN`` (Django's default,
    Python's sqlite3 default). Pruning about once a second, as the daemon did, caused several such
    errors a minute in a Django app; the cost is per transaction of ours *and* per row deleted (an app
    transaction that starts while we hold the write lock fails too), so bigger, rarer prunes do not
    help: only pruning while the app is quiet does (``bench/app_errors.py``, README). An app that is
    never quiet still gets its journal bounded by ``max_rows``, at the price of those errors.

    Pruning runs in short write transactions with pauses for the app's writers (journal.prune); off
    the loop's thread, those pauses never delay the next batch. Only seqs PostgreSQL has committed
    are ever requested, so a crash at any moment leaves at worst rows that are pruned next time.
    """

    def __init__(self, open_source: Callable[[], sqlite3.Connection], *, idle_s: float, max_rows: int) -> None:
        self._open = open_source
        self._idle_s, self._max_rows = idle_s, max_rows
        self._wanted: tuple[int, str | None] = (0, None)
        """The seq to prune up to, and the anchor of the checkpoint covering it: one attribute, so the
        prune thread never pairs a seq with another checkpoint's anchor."""
        self._done = 0
        self._advanced = time.monotonic()
        """When the applied position last moved: the app wrote then (what the daemon applies, it wrote)."""
        self._wake = threading.Event()
        self._closing = False
        self.error: BaseException | None = None
        self._log = log.get("pruner")
        self._thread = threading.Thread(target=self._run, name="replicator-prune", daemon=True)
        self._thread.start()

    def request(self, applied: int, anchor: str | None = None) -> None:
        """Prune up to ``applied`` (committed in PostgreSQL), recording ``anchor``, the checkpoint covering
        it, in the same SQLite transaction (:func:`triggers.journal.prune`)."""
        if applied > self._wanted[0]:
            self._advanced = time.monotonic()
        if applied >= self._wanted[0]:
            self._wanted = (applied, anchor)
        self._wake.set()

    def close(self) -> None:
        """Prune what was requested, then stop."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        try:
            conn = self._open()
        except Exception as exc:  # surfaced by the loop at its next prune request
            self.error = exc
            return
        timeout: float | None = None
        try:
            while True:
                self._wake.wait(timeout)
                self._wake.clear()
                timeout = None
                target, anchor = self._wanted
                if target > self._done:
                    quiet = time.monotonic() - self._advanced
                    if self._closing or target - self._done >= self._max_rows or quiet >= self._idle_s:
                        self._prune(conn, target, anchor)
                    else:  # the app is writing: wait until it has been quiet for idle_s
                        timeout = self._idle_s - quiet
                if self._closing:
                    return
        finally:
            conn.close()

    def _prune(self, conn: sqlite3.Connection, target: int, anchor: str | None) -> None:
        try:
            journal.prune(conn, target, anchor=anchor)
            self._done = target
            faults.point("prune.after")
        except CaptureError as exc:
            if not exc.transient:
                self.error = exc
            else:
                self._log.info("prune deferred: source busy", applied_seq=target)
        except Exception as exc:  # surfaced by the loop at its next prune request
            self.error = exc
