"""The daemon's read-ahead: batch N+1 is read from SQLite while batch N is applied in PostgreSQL.

Its own module because it is its own thread with its own SQLite connection; the loop
(:mod:`replicator.stream.worker`) only starts, takes and discards reads.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from replicator.apply.batch import Batch


class Prefetcher:
    """Reads the next batch on its own SQLite connection while the loop applies the current one.

    Each batch is still one read transaction (journal range and rows together). A prefetched batch
    is used only if it starts where the loop now is, and is dropped on drift or on any error.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replicator-read")
        self._future: Future[Batch] | None = None
        self._after = -1

    def start(self, read: Callable[[sqlite3.Connection], Batch], after: int) -> None:
        self.discard()
        self._after = after
        self._future = self._pool.submit(read, self._conn)

    def take(self, after: int) -> Batch | None:
        future, self._future = self._future, None
        if future is None:
            return None
        if self._after != after:
            with contextlib.suppress(Exception):
                future.result()
            return None
        return future.result()

    def discard(self) -> None:
        future, self._future = self._future, None
        if future is not None:
            with contextlib.suppress(Exception):
                future.result()

    def close(self) -> None:
        self.discard()
        self._pool.shutdown(wait=True)
        self._conn.close()
