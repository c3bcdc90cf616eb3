"""What a verification of the chain reports: each problem a typed :class:`Finding` naming the checkpoint it
concerns, and the :class:`Report` (how much was checked, the head it ends at, every finding) that the audit,
the export and the compaction all build by one :class:`Tally` of the records they stream.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator

import msgspec

from checkpoints.model import Record


class Problem(enum.StrEnum):
    EDITED = "edited"
    BROKEN_LINK = "broken_link"
    DELETED = "deleted"
    REORDERED = "reordered"
    DUPLICATE = "duplicate"
    SEQ_OVERLAP = "seq_overlap"
    SEQ_GAP = "seq_gap"
    BAD_ROOT = "bad_root"
    BAD_COMPACTION = "bad_compaction"
    CORRUPT = "corrupt"
    TORN_TAIL = "torn_tail"
    HEAD_MISMATCH = "head_mismatch"
    AFTER_CUTOVER = "after_cutover"
    """A forward record (a batch, another cutover) after the cutover: only the rollback window follows it."""
    AFTER_END = "after_end"
    """A record after a rollback or finalize checkpoint, which ends the chain."""
    BEFORE_CUTOVER = "before_cutover"
    """A rollback window record (reverse, rollback, finalize) where no cutover precedes it."""


class Finding(msgspec.Struct, frozen=True):
    """One thing wrong with the chain, named by the checkpoint it concerns (None: the file as a whole)."""

    number: int | None
    problem: Problem
    detail: str

    def __str__(self) -> str:
        where = f"checkpoint {self.number}" if self.number is not None else "export"
        return f"{where}: {self.problem}: {self.detail}"


class Report(msgspec.Struct, frozen=True):
    """A verification's outcome: how much was checked, the head it ends at, and every finding."""

    count: int
    head: int | None
    head_hash: str | None
    findings: list[Finding]
    cutover: int | None = None
    """The number of the chain's cutover checkpoint: the migration is over (advice must fit that)."""

    @property
    def ok(self) -> bool:
        return not self.findings


class Tally:
    """Passes records through, counting them and remembering the last: a report's count and head."""

    def __init__(self, records: Iterable[Record]) -> None:
        self._records = records
        self.count = 0
        self.last: Record | None = None

    def __iter__(self) -> Iterator[Record]:
        for record in self._records:
            self.count += 1
            self.last = record
            yield record

    def report(self, findings: list[Finding], cutover: int | None = None) -> Report:
        last = self.last
        return Report(
            count=self.count,
            head=last.number if last else None,
            head_hash=last.hash if last else None,
            findings=findings,
            cutover=cutover,
        )
