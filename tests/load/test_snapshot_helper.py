"""The snapshot's helper process leaves nothing running behind it, on every exit path.

A ``ProcessPoolExecutor`` shut down with ``wait=False`` (the helper's :meth:`finish`, so that it exits while
the post-load steps run) keeps its manager thread running; a later ``shutdown(wait=True)`` no longer joins
it (the executor dropped its reference). At interpreter exit CPython's own atexit hook then writes to that
thread's wake-up pipe while the thread closes it, and a snapshot that succeeded prints
``OSError: [Errno 9] Bad file descriptor`` after its result.
"""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import process
from pathlib import Path

from replicator import config
from replicator.load import snapshot
from replicator.load.helper import Helper


def _managers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if isinstance(t, process._ExecutorManagerThread)]


def _helper() -> Helper:
    conf = config.load(overrides={"snapshot": {"workers": 2, "helper_min_bytes": 0}}, environ={})
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


def test_the_helper_starts_only_for_a_source_worth_it(tmp_path: Path) -> None:
    """``snapshot.helper_min_bytes``: a helper costs a process start (~0.3 s of a core), so a small file
    is loaded by one process; the file's WAL counts with it."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [("x" * 100,)] * 100)
    conn.commit()
    size = path.stat().st_size + path.with_name("app.db-wal").stat().st_size
    assert path.with_name("app.db-wal").stat().st_size > 0  # the rows are in the WAL still
    for minimum, expected in [(size, True), (size + 1, False), (0, True)]:
        conf = config.load(overrides={"snapshot": {"workers": 2, "helper_min_bytes": minimum}}, environ={})
        assert snapshot.worth_a_helper(path, conf) is expected, minimum
    one = config.load(overrides={"snapshot": {"workers": 1, "helper_min_bytes": 0}}, environ={})
    assert snapshot.worth_a_helper(path, one) is False
    conn.close()
