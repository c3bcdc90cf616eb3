"""The snapshot's helper process leaves nothing running behind it, on every exit path.

A ``ProcessPoolExecutor`` shut down with ``wait=False`` (the helper's :meth:`finish`, so that it exits while
the post-load steps run) keeps its manager thread running; a later ``shutdown(wait=True)`` no longer joins
it (the executor dropped its reference). At interpreter exit CPython's own atexit hook then writes to that
thread's wake-up pipe while the thread closes it, and a snapshot that succeeded prints
``OSError: [Errno 9] Bad file descriptor`` after its result.
"""

from __future__ import annotations

import threading
from concurrent.futures import process

from replicator import config
from replicator.load.helper import Helper


def _managers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, process._ExecutorManagerThread)]


def _helper() -> Helper:
    conf = config.load(overrides={"snapshot": {"workers": 2}}, environ={})
    helper = Helper(conf, None)
    helper.wait([helper.started])
    return helper


def test_close_after_finish_leaves_no_manager_thread() -> None:
    before = _managers()
    helper = _helper()
    helper.finish()
    helper.close()
    assert [t for t in _managers() if t not in before] == []


def test_close_without_finish_leaves_no_manager_thread() -> None:
    before = _managers()
    helper = _helper()
    helper.close()
    assert [t for t in _managers() if t not in before] == []
