"""The daemon's lifecycle phase, persisted in the target's state schema so every reader sees one truth
(:meth:`~replicator.state.store.StateStore.write_phase` and ``read_phase``).

Who sets what (the worker is the only writer; ``status`` and cutover only read):

* ``INIT``: the worker has started and holds the locks, nothing is known yet.
* ``SNAPSHOT``: no genesis checkpoint exists, so the worker runs the snapshot first.
* ``CATCHUP``: applying a backlog (the last batch was full).
* ``STREAMING``: caught up; each commit in SQLite is applied within a wake-up.
* ``CUTOVER`` / ``DONE``: set by the cutover stage (drain, verify, hand over).
* ``ERRORED``: stopped on a terminal error; ``reason`` says what, ``hint`` what to do, ``retryable``
  whether simply restarting can help.

The row also carries the numbers ``status`` shows while the daemon runs (applied seq, head seen,
apply rate, since when it is behind), written with the phase so they never disagree.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Final

import msgspec


class Phase(enum.StrEnum):
    INIT = "INIT"
    SNAPSHOT = "SNAPSHOT"
    CATCHUP = "CATCHUP"
    STREAMING = "STREAMING"
    CUTOVER = "CUTOVER"
    DONE = "DONE"
    ERRORED = "ERRORED"


INTERRUPTED_BETWEEN_COMMITS: Final = "cutover interrupted between its two commits"
"""SQLite's fence committed, PostgreSQL's finish did not (``replicator.cutover.window``, step 6): no phase of
its own, because the target's row rolled back with the finish; the fenced SQLite file shows it."""
FINISH_HINT: Final = (
    "run `replicator cutover` again to finish PostgreSQL and write the certificate, "
    "or `replicator unfence` to go back to SQLite"
)


class ApplyState(msgspec.Struct, frozen=True):
    phase: Phase
    reason: str = ""
    hint: str = ""
    retryable: bool = False
    applied_seq: int = 0
    head_seq: int = 0
    rate: float = 0.0
    """Changes per second over the recent batches (exponentially weighted)."""
    behind_since: dt.datetime | None = None
    """When the worker first saw a head it has not applied yet; None when caught up."""
    pid: int | None = None
    host: str = ""
    updated_at: dt.datetime | None = None


COLUMNS: Final = tuple(f for f in ApplyState.__struct_fields__ if f != "updated_at")
"""The columns the phase row is written with (``updated_at`` is PostgreSQL's clock at the write)."""
