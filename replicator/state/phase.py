"""The daemon's lifecycle phase, persisted in the target's state schema so every reader sees one truth.

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
import os
import socket
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql


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


_COLUMNS = tuple(f for f in ApplyState.__struct_fields__ if f != "updated_at")


def write(conn: psycopg.Connection[Any], schema_name: str, state: ApplyState) -> None:
    """Upsert the one state row (in the caller's transaction, so it commits with the batch)."""
    values = msgspec.structs.asdict(state)
    values["pid"] = os.getpid() if state.pid is None else state.pid
    values["host"] = state.host or socket.gethostname()
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS)
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.apply_state (id, {}, updated_at) VALUES (1, {}, clock_timestamp()) "
            "ON CONFLICT (id) DO UPDATE SET ({}, updated_at) = ({}, clock_timestamp())"
        ).format(
            sql.Identifier(schema_name),
            cols,
            sql.SQL(", ").join(sql.Placeholder(c) for c in _COLUMNS),
            cols,
            sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in _COLUMNS),
        ),
        {c: (str(values[c]) if c == "phase" else values[c]) for c in _COLUMNS},
    )


def read(conn: psycopg.Connection[Any], schema_name: str) -> ApplyState | None:
    """The state row, or None when no daemon ever ran against this target."""
    found = conn.execute("SELECT to_regclass(%s)", (sql.Identifier(schema_name, "apply_state").as_string(conn),))
    row = found.fetchone()
    if not row or row[0] is None:
        return None
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in (*_COLUMNS, "updated_at"))
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT {} FROM {}.apply_state WHERE id = 1").format(cols, sql.Identifier(schema_name)))
        got = cur.fetchone()
    if got is None:
        return None
    fields = dict(zip((*_COLUMNS, "updated_at"), got, strict=True))
    fields["phase"] = Phase(fields["phase"])
    return ApplyState(**fields)
