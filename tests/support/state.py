"""The target's state schema as a test reads it: through the code's own :class:`StateStore`, on a connection of
its own, so an assertion reads exactly what ``status``, the daemon and the cutover read."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

import psycopg

from replicator.state.phase import ApplyState
from replicator.state.store import StateStore

SCHEMA: Final = "replicator"
"""The default state schema (``target.state_schema``), which every test target uses."""


@contextlib.contextmanager
def state_store(dsn: str, schema: str = SCHEMA) -> Iterator[StateStore]:
    """A StateStore on a new autocommit connection to ``dsn``, closed on exit."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield StateStore(conn, schema)


def read_phase(dsn: str, schema: str = SCHEMA) -> ApplyState | None:
    """The daemon's phase row as the target holds it now (None before any daemon ran)."""
    with state_store(dsn, schema) as states:
        return states.read_phase()
