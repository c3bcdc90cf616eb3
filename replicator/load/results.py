"""What a snapshot reports: per table and per run (the CLI's summary, ``import``, the daemon and the tests).

A module of its own because every stage of the load returns them: the per-table load, the helper process
(its results come back pickled), the post-load step that marks a table analyzed, and the run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import msgspec

from checkpoints.digest import EMPTY
from replicator.plan.schemaplan import SchemaPlan


class TableResult(msgspec.Struct, frozen=True):
    table: str
    target: str
    rows: int
    quarantined: int
    seconds: float
    checksum: str = EMPTY
    """checkpoints.digest hexdigest of the rows loaded (see the module docstring)."""
    resumed: bool = False
    """Loaded by an earlier run and skipped by ``--resume``."""
    analyzed: bool = False
    """Indexed and analyzed right after its load (``index_table``)."""
    warnings: tuple[str, ...] = ()
    """Post-load statements PostgreSQL refused right after the load."""
    helper_rows: int = 0
    """Of ``rows``, those the helper process converted (a dominant table both processes shared)."""
    helper_ranges: int = 0
    """Rowid ranges of it the helper read itself, from its twin read transaction (:mod:`replicator.load.twin`)."""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float(self.rows)


class SnapshotResult(msgspec.Struct, frozen=True):
    mode: str
    run_id: int
    tables: tuple[TableResult, ...]
    warnings: tuple[str, ...]
    seconds: float
    sequences: dict[str, int] = msgspec.field(default_factory=dict)
    """``table.column`` → the next value its identity/serial sequence will give."""
    plan: SchemaPlan | None = None
    """The plan that was loaded (types per column), for verification."""
    snapshot_seq: int | None = None
    """The journal high-water mark streaming starts after; None when capture is not installed."""
    genesis_hash: str | None = None

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def quarantined(self) -> int:
        return sum(t.quarantined for t in self.tables)

    @classmethod
    def of_run(
        cls, plan: SchemaPlan, run_id: int, tables: Iterable[TableResult], warnings: Iterable[str], started: float
    ) -> SnapshotResult:
        """A run that loaded ``plan``'s tables, timed from ``started`` (``time.monotonic``): the snapshot's, and
        the one that reloads some tables of a streaming target (``snapshot --replace --tables``)."""
        return cls(
            mode=plan.mode,
            run_id=run_id,
            tables=tuple(tables),
            warnings=tuple(warnings),
            seconds=time.monotonic() - started,
            plan=plan,
        )
