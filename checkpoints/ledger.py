"""The chain as a ledger: each table's row count and checksum, added up from the genesis through the head
(or through the cutover).

Every checkpoint says, per table, which row images it wrote (``upserted``) and which it took out
(``removed``, from format 2 on), each as a count and a :mod:`checkpoints.digest` sum. The table after a
checkpoint is the table before it, less the removed images, plus the written ones. The chain's first
record (the genesis, or a compaction standing for everything up to it) and a ``restated`` entry state the
table whole. So, modulo 2**256 for the digest::

    rows   = whole.upserted        + sum(upserted)        - sum(removed)
    digest = whole.upserted_digest + sum(upserted_digest) - sum(removed_digest)

over the records after the last entry that stated the table whole. At the cutover checkpoint these are
the figures PostgreSQL held at the stop point, which the certificate records per table (``pg_rows``,
``pg_digest``): an auditor recomputes them from the chain alone (:func:`at_cutover`).

The rollback window's ``reverse`` records (and a ``rollback``'s final drain) add up the same way: they write
PostgreSQL's changes back into SQLite and digest the row images, written and removed, in their PostgreSQL
form with the same encoding. So the figures at the chain's end (:func:`at_end`) are PostgreSQL's tables as
written back into SQLite by the window's last record, what a rollback's proof checks; the cutover
certificate's check stays at the cutover checkpoint, whatever follows it.

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
    """The number of the last checkpoint added up (None: none)."""


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


def add_up(items: Iterable[Record | Checkpoint], *, through: int | None = None) -> Ledger:
    """Each table's figures after the last of ``items`` (a whole chain, in order; it is not verified here:
    run :func:`checkpoints.audit.verify` on the same records), or after checkpoint ``through`` when given:
    ``items`` is read no further than it, so a stream is never read past it."""
    book = _Book()
    first, head = True, None
    for item in items:
        checkpoint = item.decode() if isinstance(item, Record) else item
        if through is not None and checkpoint.number > through:
            break
        head = checkpoint.number
        _enter(book, checkpoint, first)
        first = False
        if checkpoint.number == through:
            break
    return _ledger(book, head)


def at_cutover(items: Iterable[Record | Checkpoint]) -> Ledger | None:
    """The figures through the chain's (first) cutover checkpoint, what the cutover certificate records per
    table, whatever the rollback window added after it; None for a chain with no cutover. ``items`` is read
    no further than the cutover."""
    book = _Book()
    first = True
    for item in items:
        checkpoint = item.decode() if isinstance(item, Record) else item
        _enter(book, checkpoint, first)
        first = False
        if checkpoint.kind is Kind.CUTOVER:
            return _ledger(book, checkpoint.number)
    return None


def at_end(items: Iterable[Record | Checkpoint]) -> Ledger:
    """The figures through the chain's last record: after a rollback window, PostgreSQL's tables as its
    reverse records wrote them back into SQLite (what a rollback's proof checks); before the cutover, the
    head's. The same as :func:`add_up` without ``through``."""
    return add_up(items)


def _enter(book: _Book, checkpoint: Checkpoint, first: bool) -> None:
    """One checkpoint's table changes into the book: a batch's, a reverse batch's or a rollback's are added;
    the first record's, a genesis's, a compaction's and a restated entry state the table whole."""
    for name, change in checkpoint.tables.items():
        if first or change.restated or checkpoint.kind in (Kind.GENESIS, Kind.COMPACTION):
            book.whole(name, change, checkpoint)
        else:
            book.add(name, change, checkpoint)


def _ledger(book: _Book, head: int | None) -> Ledger:
    tables = {name: s.figures() for name, s in book.sums.items() if name not in book.unknown}
    return Ledger(tables=tables, unknown=book.unknown, breaks=book.breaks, head=head)
