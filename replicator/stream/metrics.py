"""Prometheus metrics for ``replicator run --metrics-port``: phase, lag, applied changes, batch latency,
errors, stalls, the journal's size and the last checkpoint's age; after a cutover, while ``run`` writes
PostgreSQL's changes back into SQLite (the rollback window), the reverse direction's lag and journal.

A registry of our own (not the process-global default), so tests and several workers in one process
never collide; the HTTP endpoint binds to 127.0.0.1 unless the config says otherwise, because the
numbers describe a production database. What describes the daemon's state (phase, up, stall, ages,
the journal) is computed at scrape time from callables the worker registers: those gauges move even
while the loop's thread is stuck, which is when they matter.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from replicator import log
from replicator.errors import UsageError
from replicator.state.phase import Phase

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOURNAL_BYTES_EVERY_S = 60.0
"""The journal's bytes are read from its pages (``dbstat``: a walk of the journal's b-tree, ~40 ms per
million entries), so at most this often, whatever the scrape interval; its rows cost two index seeks."""
T = TypeVar("T")

SCRAPE_BUSY_MS = 200
"""A scrape reading SQLite waits at most this long for a lock (the reading is NaN if it cannot)."""


def _or_nan(read: Callable[[], float | None]) -> Callable[[], float]:
    """A scrape-time reading that never fails the scrape: NaN when the value is unknown or unreadable
    (the SQLite file locked, PostgreSQL gone), the other gauges are still served."""

    def value() -> float:
        try:
            got = read()
        except Exception as exc:  # a scrape must never fail because one reading did
            log.get("metrics").debug("metric not readable", error=str(exc))
            return math.nan
        return math.nan if got is None else float(got)

    return value


class _Every(Generic[T]):
    """The last value of ``read``, read again only after ``seconds`` (a cache for costly readings)."""

    def __init__(self, read: Callable[[], T | None], seconds: float) -> None:
        self._read, self._seconds = read, seconds
        self._value: T | None = None
        self._at = -math.inf

    def __call__(self) -> T | None:
        now = time.monotonic()
        if now - self._at >= self._seconds:
            self._value, self._at = self._read(), now
        return self._value


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # Every metric in this registry, never the process-global default (the module docstring says why).
        counter = functools.partial(Counter, registry=self.registry)
        gauge = functools.partial(Gauge, registry=self.registry)
        histogram = functools.partial(Histogram, registry=self.registry)
        self.applied = counter("replicator_applied_changes", "Journal entries applied to PostgreSQL")
        self.batches = counter("replicator_batches", "Batches committed (each with its checkpoint)")
        self.behind = gauge("replicator_changes_behind", "Journal entries visible but not applied yet")
        self.lag = gauge("replicator_lag_seconds", "Age of the oldest change seen but not yet applied")
        self.batch_seconds = histogram(
            "replicator_batch_seconds", "Read + apply + checkpoint + prune time per batch", buckets=BATCH_BUCKETS
        )
        self.errors = counter("replicator_errors", "Errors seen by the loop, by kind", ["kind"])
        self.without_progress = gauge(
            "replicator_seconds_without_progress",
            "Seconds since the daemon last committed a batch while journal entries wait (0 when none wait)",
        )
        self.stalled = gauge(
            "replicator_stalled", "1 while entries wait and nothing was applied for status.stall_after_s, else 0"
        )
        self.phase = gauge(
            "replicator_phase",
            "1 for the daemon's current phase (INIT, SNAPSHOT, CATCHUP, STREAMING, ...), 0 for the others",
            ["phase"],
        )
        self.up = gauge(
            "replicator_daemon_up",
            "1 while the daemon runs its apply loop connected to PostgreSQL; 0 while it retries after an "
            "error, and once it stopped",
        )
        self.checkpoint_age = gauge(
            "replicator_last_checkpoint_age_seconds",
            "Seconds since the chain head's checkpoint was written (grows while nothing is written)",
        )
        self.journal_rows = gauge(
            "replicator_journal_rows",
            "Entries in the SQLite journal (_replicator_journal), applied or not: its seq bounds",
        )
        self.journal_bytes = gauge(
            "replicator_journal_bytes",
            f"Bytes of the journal's pages in the SQLite file (read at most every {JOURNAL_BYTES_EVERY_S:.0f} s; "
            "NaN where SQLite has no dbstat)",
        )

        self.reverse_lag = gauge(
            "replicator_reverse_lag_seconds",
            "Rollback window: age of the oldest change made on PostgreSQL not yet written back to SQLite "
            "(0 when none waits)",
        )
        self.reverse_entries = gauge(
            "replicator_reverse_journal_entries",
            "Rollback window: entries in PostgreSQL's reverse journal, all waiting to be written back to SQLite",
        )

    def watch_reverse(self, reading: Callable[[], tuple[int, float] | None]) -> None:
        """The reverse direction's journal (entries, lag in seconds), read at scrape time (once for both
        gauges: ``reading`` opens a connection of its own)."""
        once = _Every(reading, 1.0)

        def part(i: int) -> Callable[[], float | None]:
            def value() -> float | None:
                got = once()
                return None if got is None else float(got[i])

            return value

        self.reverse_entries.set_function(_or_nan(part(0)))
        self.reverse_lag.set_function(_or_nan(part(1)))

    def watch_progress(self, stalled_for: Callable[[], float], stall_after_s: float) -> None:
        """Compute both stall gauges at scrape time: they must move while the loop's thread is stuck."""
        self.without_progress.set_function(stalled_for)
        self.stalled.set_function(lambda: 1.0 if stalled_for() >= stall_after_s else 0.0)

    def watch_daemon(
        self, phase: Callable[[], str], up: Callable[[], bool], checkpoint_at: Callable[[], float | None]
    ) -> None:
        """Phase, up and the last checkpoint's age (``checkpoint_at``: its UNIX time), at scrape time."""

        def current(name: str) -> Callable[[], float]:
            return lambda: 1.0 if phase() == name else 0.0

        for name in Phase:
            self.phase.labels(phase=name.value).set_function(current(name.value))
        self.up.set_function(lambda: 1.0 if up() else 0.0)

        def age() -> float | None:
            at = checkpoint_at()
            return None if at is None else max(0.0, time.time() - at)

        self.checkpoint_age.set_function(_or_nan(age))

    def watch_journal(self, rows: Callable[[], int], size: Callable[[], int | None]) -> None:
        """The journal's rows at every scrape, its bytes at most every ``JOURNAL_BYTES_EVERY_S``."""
        self.journal_rows.set_function(_or_nan(rows))
        self.journal_bytes.set_function(_or_nan(_Every(size, JOURNAL_BYTES_EVERY_S)))

    def observe_batch(self, entries: int, seconds: float, behind: int, lag_s: float) -> None:
        self.applied.inc(entries)
        self.batches.inc()
        self.batch_seconds.observe(seconds)
        self.behind.set(behind)
        self.lag.set(lag_s)

    def serve(self, port: int, host: str = "127.0.0.1") -> Callable[[], None]:
        """Start the /metrics HTTP endpoint in a daemon thread; returns what stops it.

        A port that cannot be bound (in use, privileged, a host not on this machine) is one line with
        exit 2: the daemon calls this only once it holds its lock, so a second daemon is named as such
        and never as a port clash.
        """
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise UsageError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                hint="choose another --metrics-port (or metrics.port), or stop what listens there",
            ) from None

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop
