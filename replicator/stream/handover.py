"""The daemon's side of a hand-over: after a cutover asked for its locks
(:data:`~replicator.state.lock.HANDOVER_SIGNAL`) and the daemon let go, wait for that cutover to end, then
start again (:func:`replicator.stream.worker.run`).

Its own module because it runs between two daemons' lives, with no session, no loop and no connection: only
the lock file, watched.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from replicator import log
from replicator.state import lock

HANDOVER_WAIT_S: Final = 60.0
"""How long a daemon that handed over waits for the cutover to take the lock before it resumes."""


def wait_for_cutover(source: Path) -> bool:
    """After a hand-over: wait until a cutover has held the lock file and let it go. False: stopped by a signal.

    Two phases, so that the daemon does not take its lock straight back before the cutover has it: first
    until someone else holds it (at most :data:`HANDOVER_WAIT_S`: a cutover that never came), then until it
    is free again (the cutover ended, whatever way).
    """
    stop = threading.Event()
    on_signal = _stop_on_signals(stop)
    log_ = log.get("worker", source=str(source))
    try:
        with lock.open_lock_file(source) as handle:
            deadline = time.monotonic() + HANDOVER_WAIT_S
            while not lock.held_elsewhere(handle) and time.monotonic() < deadline:
                if stop.wait(0.05):
                    return False
            log_.info("waiting for the cutover to end")
            while lock.held_elsewhere(handle):
                if stop.wait(0.2):
                    return False
        log_.info("the cutover ended: starting again")
        return True
    finally:
        on_signal()


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT set ``stop`` (main thread only); returns what restores the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {
        s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT, lock.HANDOVER_SIGNAL)
    }

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore
