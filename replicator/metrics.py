"""Prometheus metrics for ``replicator run --metrics-port``: lag, applied changes, batch latency, errors.

A registry of our own (not the process-global default), so tests and several workers in one process
never collide; the HTTP endpoint binds to 127.0.0.1 unless the config says otherwise, because the
numbers describe a production database.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.applied = Counter(
            "replicator_applied_changes", "Journal entries applied to PostgreSQL", registry=self.registry
        )
        self.batches = Counter(
            "replicator_batches", "Batches committed (each with its checkpoint)", registry=self.registry
        )
        self.behind = Gauge(
            "replicator_changes_behind", "Journal entries visible but not applied yet", registry=self.registry
        )
        self.lag = Gauge(
            "replicator_lag_seconds", "Age of the oldest change seen but not yet applied", registry=self.registry
        )
        self.batch_seconds = Histogram(
            "replicator_batch_seconds",
            "Read + apply + checkpoint + prune time per batch",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter("replicator_errors", "Errors seen by the loop, by kind", ["kind"], registry=self.registry)
        self.without_progress = Gauge(
            "replicator_seconds_without_progress",
            "Seconds since the daemon last committed a batch while journal entries wait (0 when none wait)",
            registry=self.registry,
        )
        self.stalled = Gauge(
            "replicator_stalled",
            "1 while entries wait and nothing was applied for status.stall_after_s, else 0",
            registry=self.registry,
        )

    def watch_progress(self, stalled_for: Callable[[], float], stall_after_s: float) -> None:
        """Compute both stall gauges at scrape time: they must move while the loop's thread is stuck."""
        self.without_progress.set_function(stalled_for)
        self.stalled.set_function(lambda: 1.0 if stalled_for() >= stall_after_s else 0.0)

    def observe_batch(self, entries: int, seconds: float, behind: int, lag_s: float) -> None:
        self.applied.inc(entries)
        self.batches.inc()
        self.batch_seconds.observe(seconds)
        self.behind.set(behind)
        self.lag.set(lag_s)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Start the /metrics HTTP endpoint in a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
