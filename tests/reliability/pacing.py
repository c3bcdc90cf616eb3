"""The load generators' common loop: transaction ``i`` after ``i - 1``, paced, until time, a count or SIGTERM.

:mod:`tests.reliability.loadgen` (the app on SQLite) and :mod:`tests.reliability.pgload` (the app on PostgreSQL
during the rollback window) differ in how a transaction is written and which refusals are retried; the pacing,
the bounds and the stop on SIGTERM (the crash matrix stops a writer that way) are the same, so they are here once.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from types import FrameType

import msgspec


class Stop(Exception):
    """Raised by an attempt: the app cannot go on (a fenced SQLite file), end the run."""


class Paced(msgspec.Struct, frozen=True):
    transactions: int
    seconds: float


def paced(attempt: Callable[[int], bool], *, seconds: float, tps: float, transactions: int | None) -> Paced:
    """Call ``attempt(i)`` until ``seconds`` pass, ``transactions`` commit, SIGTERM arrives or it raises
    :class:`Stop`, at ``tps`` commits a second (0: as fast as possible). ``attempt`` returns True when
    transaction ``i`` committed, False when it is to be tried again (the same ``i``, so the same draw)."""
    stop = False

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    with contextlib.suppress(ValueError):  # not the main thread (called from a test)
        signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    deadline = started + seconds
    limit = transactions if transactions is not None else 10**9
    interval = 1.0 / tps if tps > 0 else 0.0
    i = 0
    with contextlib.suppress(Stop):
        while not stop and i < limit and time.monotonic() < deadline:
            if not attempt(i):
                continue
            i += 1
            if interval:
                sleep = started + i * interval - time.monotonic()
                if sleep > 0:
                    time.sleep(min(sleep, max(0.0, deadline - time.monotonic())))
    return Paced(i, time.monotonic() - started)
