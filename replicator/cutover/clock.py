"""The cutover's clock: seconds per step, for the result and the certificate, and the step running, for the
abort message. Shared by the orchestration (:mod:`replicator.cutover.window`) and the freeze, which times
its own ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class Clock:
    """Seconds per step, in order; ``current`` names the step running (for the abort message)."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self.current: str | None = None
        """The innermost step running, else the last one that ran (a failure between steps follows it)."""
        self._running: list[str] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self._running.append(name)
        self.current = name
        started = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.steps[name] = round(self.steps.get(name, 0.0) + time.perf_counter() - started, 4)
            self._running.remove(name)
            self.current = self._running[-1] if self._running else name
