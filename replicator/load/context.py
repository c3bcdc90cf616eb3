"""What every table's load in one run shares, made once per run and passed instead of a dozen parameters.

The loaders used to take the same eleven to thirteen values each (the two connections, the state schema,
the source's identity, the run, the refusal policy, the batch size, the journal mark, progress...), passed
down three levels and copied into the job the helper process receives. Two objects carry them now:

* :class:`LoadRun`, the run's constants: plain data (a msgspec Struct), so the helper process receives it
  whole with each job (``replicator.load.helper``) and builds its own context around it;
* :class:`LoadContext`, that plus what cannot cross a process: the SQLite connection whose read transaction
  the rows come from, the PostgreSQL connection they go to, and where progress is reported.

What changes from one table to the next (its plan, whether its types are a guess, the rows held by the
quarantine, the shared conversion) stays a parameter of the call that loads it.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any, Final

import msgspec
import psycopg

from replicator.progress import Progress
from replicator.state.identity import SourceIdentity
from replicator.state.store import StateStore

#: Rows per ``fetchmany`` batch from SQLite: bounds the memory a table's load holds.
FETCH_ROWS: Final = 5_000


class LoadRun(msgspec.Struct, frozen=True):
    """The constants of one run's table loads: what they record and how they treat a refused value."""

    state_schema: str
    """Where the ``snapshot_tables`` row and the quarantine rows of each table go."""
    source: SourceIdentity
    """The SQLite file (or capture) the rows come from, recorded per table (``--resume`` checks it)."""
    run_id: int
    """The ``runs`` row the tables' state and quarantine rows point to."""
    policy: str
    """``stop`` or ``quarantine``: what a value PostgreSQL cannot hold does."""
    fetch_rows: int = FETCH_ROWS
    mark: int | None = None
    """The journal high-water mark the rows were read after (``snapshot_seq``); None without capture."""


@dataclasses.dataclass(frozen=True)
class LoadContext:
    """One process's side of a run: its connections and progress around the run's constants.

    A frozen dataclass, not a Struct: it holds live connections. ``with_progress`` gives the same
    context reporting elsewhere (the main process relays the helper's progress while it loads).
    """

    sconn: sqlite3.Connection
    """The read transaction the rows come from (``source.open_source``)."""
    pconn: psycopg.Connection[Any]
    """The target, in autocommit: each table's load opens its own transaction."""
    run: LoadRun
    progress: Progress | None = None

    def with_progress(self, progress: Progress | None) -> LoadContext:
        return dataclasses.replace(self, progress=progress)

    @property
    def state_store(self) -> StateStore:
        """The run's state schema on :attr:`pconn`: a table's state rows commit with its rows."""
        return StateStore(self.pconn, self.run.state_schema)
