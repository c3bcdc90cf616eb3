"""Transient or not, and how long to wait: the daemon's one policy for retrying.

A transient error (connection loss, admin shutdown, serialization failure, SQLite busy) is retried; anything
else stops. Our errors say which they are (their ``transient`` flag), PostgreSQL's are classified by
:func:`~replicator.errors.is_transient_pg`. The loop retries whole cycles with :func:`backoff`;
:func:`at_edge` retries opening a resource (tenacity at the I/O edges only).
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from typing import TypeVar

import psycopg
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from replicator.errors import ReplicatorError, is_transient_pg
from triggers import source as sqlite_source
from triggers.errors import CaptureError


def transient(exc: BaseException) -> bool:
    if isinstance(exc, ReplicatorError | CaptureError):
        return exc.transient
    if isinstance(exc, psycopg.Error):
        return is_transient_pg(exc)
    return False


T = TypeVar("T")


def at_edge(open_: Callable[[], T], max_wait_s: float) -> T:
    """Open a resource, retrying transient failures (SQLite busy, connection refused) with capped
    exponential backoff and jitter: tenacity at the I/O edges only, the predicate the transient flag."""
    for attempt in Retrying(
        retry=retry_if_exception(transient),
        wait=wait_random_exponential(multiplier=0.2, max=max_wait_s),
        stop=stop_after_delay(max_wait_s * 4),
        reraise=True,
    ):
        with attempt:
            try:
                return open_()
            except sqlite3.Error as exc:
                raise sqlite_source.translate(exc, "source") from exc
    raise AssertionError("unreachable")


def backoff(attempt: int, cap_s: float) -> float:
    """Capped exponential backoff with jitter: 0.2 s, 0.4 s, 0.8 s... at most ``cap_s``, times U(0.5, 1)."""
    return float(min(cap_s, 0.2 * 2 ** min(attempt - 1, 30)) * random.uniform(0.5, 1.0))
