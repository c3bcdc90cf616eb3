"""The chain as a ledger: each table's row count and checksum, added up from the genesis through the head.

Every checkpoint says, per table, which row images it wrote (``upserted``) and which it took out
(``removed``, from format 2 on), each as a count and a :mod:`checkpoints.digest` sum. The table after a
checkpoint is the table before it, less the removed images, plus the written ones. The chain's first
record (the genesis, or a compaction standing for everything up to it) and a ``restated`` entry state the
table whole. So, modulo 2**256 for the digest::

    rows   = whole.upserted        + sum(upserted)        - sum(removed)
    digest = whole.upserted_digest + sum(upserted_digest) - sum(removed_digest)

over the records after the last entry that stated the table whole. At the cutover checkpoint these are
the figures PostgreSQL held at the stop point, which the certificate records per table (``pg_rows``,
``pg_digest``): an auditor recomputes them from the chain alone.

A ``read`` restatement reads the same rows anew (another reading of the same values; see
:class:`checkpoints.model.TableChange`): it may restate the checksum but never the count, so counts add
up from the genesis through the cutover with no restatement at all, and a ``read`` that changes the count
is a :attr:`Ledger.breaks` finding. A format 1 batch did not record its removed images, so a table it
touched cannot be added up (:attr:`Ledger.unknown` says from where).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from checkpoints.digest import MODULUS
from checkpoints.model import Checkpoint, Kind, Record, TableChange

FIRST_WITH_REMOVED = 2
"""The checkpoint format from which batches record the row images they removed."""


class Figures(msgspec.Struct, frozen=True):
    """One table's count and checksum as the chain adds them up."""

    rows: int
    digest: str
    since: int
    """The checkpoint that last stated the table whole (the genesis, a compaction, a restatement)."""
    read_anew: tuple[int, ...] = ()
    """Checkpoints that restated its checksum by reading the same rows anew (count carried through)."""


class Ledger(msgspec.Struct, frozen=True):
    tables: dict[str, Figures]
    unknown: dict[str, str]
    """Tables that cannot be added up, with the reason (a format 1 batch touched them)."""
    breaks: dict[str, str]
    """Tables whose count a ``read`` restatement changed: rows appeared or vanished outside any batch."""
    head: int | None


class _Sum:
    def __init__(self, change: TableChange, number: int, read_anew: tuple[int, ...] = ()) -> None:
        self.rows = change.upserted - change.removed
        self.total = int(change.upserted_digest, 16) - int(change.removed_digest, 16)
        self.since = number
        self.read_anew = read_anew

    def add(self, change: TableChange) -> None:
        self.rows += change.upserted - change.removed
        self.total += int(change.upserted_digest, 16) - int(change.removed_digest, 16)

    def figures(self) -> Figures:
        return Figures(self.rows, format(self.total % MODULUS, "064x"), self.since, self.read_anew)


class _Book:
    def __init__(self) -> None:
        self.sums: dict[str, _Sum] = {}
        self.unknown: dict[str, str] = {}
        self.breaks: dict[str, str] = {}

    def whole(self, name: str, change: TableChange, checkpoint: Checkpoint) -> None:
        before = self.sums.get(name)
        read_anew: tuple[int, ...] = ()
        if change.restated == "read" and before is not None:
            read_anew = (*before.read_anew, checkpoint.number)
            if before.rows != change.upserted:
                self.breaks.setdefault(
                    name,
                    f"checkpoint {checkpoint.number} reads it anew with {change.upserted:,} rows, but the chain "
                    f"adds up to {before.rows:,} before it",
                )
        self.sums[name] = _Sum(change, checkpoint.number, read_anew)
        if checkpoint.kind is not Kind.COMPACTION or checkpoint.format >= FIRST_WITH_REMOVED:
            self.unknown.pop(name, None)
        else:
            self.unknown[name] = f"checkpoint {checkpoint.number} stands for format 1 batches"

    def add(self, name: str, change: TableChange, checkpoint: Checkpoint) -> None:
        if name not in self.sums:
            self.unknown[name] = f"checkpoint {checkpoint.number} changes it, but no earlier record states it whole"
            return
        self.sums[name].add(change)
        if checkpoint.format < FIRST_WITH_REMOVED and (change.upserted or change.deleted):
            self.unknown.setdefault(
                name, f"checkpoint {checkpoint.number} (format {checkpoint.format}) does not record the rows it removed"
            )


def add_up(items: Iterable[Record | Checkpoint]) -> Ledger:
    """Each table's figures after the last of ``items`` (a whole chain, in order; it is not verified here:
    run :func:`checkpoints.audit.verify` on the same records)."""
    book = _Book()
    first, head = True, None
    for item in items:
        checkpoint = item.decode() if isinstance(item, Record) else item
        head = checkpoint.number
        for name, change in checkpoint.tables.items():
            if first or change.restated or checkpoint.kind in (Kind.GENESIS, Kind.COMPACTION):
                book.whole(name, change, checkpoint)
            else:
                book.add(name, change, checkpoint)
        first = False
    tables = {name: s.figures() for name, s in book.sums.items() if name not in book.unknown}
    return Ledger(tables=tables, unknown=book.unknown, breaks=book.breaks, head=head)
