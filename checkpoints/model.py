"""The checkpoint: one hash-chained record of what was applied to PostgreSQL, and how to make the next.

A checkpoint's ``body`` is its canonical encoding: msgspec JSON of every field except ``hash``, with
struct fields and dict keys sorted, no whitespace, UTF-8. ``hash`` is the SHA-256 of exactly those
bytes in lowercase hex. Each checkpoint carries the previous one's hash in ``prev_hash``, so editing,
removing or reordering any record that has a successor breaks the chain. The store keeps the body
bytes as written, so re-hashing never depends on re-encoding; an auditor hashes the stored bytes
and needs no JSON encoder at all. A compaction record (see :func:`compaction_of`) is the one record
whose successor points not at its own hash but at ``compaction.head_hash``, the hash of the last
checkpoint it replaced (:attr:`Checkpoint.link_hash`).

Numbers run 1, 2, 3... without gaps. Journal sequence ranges are contiguous: a checkpoint covers the
journal entries ``seq_from..seq_to`` and the next starts at ``seq_to + 1``; an empty range
(``seq_to == seq_from - 1``) is a checkpoint that applied nothing (a cutover, an idle heartbeat).
The genesis checkpoint (number 1) records the snapshot: per table, the rows loaded and their
:mod:`checkpoints.digest` checksum, with ``seq_from = 0`` and ``seq_to`` the journal position the
snapshot was read at.

After the cutover the chain goes on through the *rollback window* (issue 20): PostgreSQL's changes, made by
the app, flow back into the fenced SQLite file, one ``reverse`` checkpoint per batch, and the window ends
with a ``rollback`` (back to SQLite) or a ``finalize`` (stay on PostgreSQL), the chain's last record. Their
ranges are in PostgreSQL's *reverse journal*, which starts again at 1 after the cutover. What may follow
what is :data:`FOLLOWERS`; where a range starts, :func:`seq_from_after`; :func:`next_checkpoint`, the store
and the audit all hold the chain to them.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Mapping
from importlib import metadata
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias

import msgspec

from checkpoints.digest import EMPTY, TableDigest, add_hex
from checkpoints.errors import CheckpointError

FORMAT: Final = 2
"""Version of the body layout; part of the hashed body, so it cannot be changed unnoticed. 2 added
``TableChange.removed``, ``removed_digest`` and ``restated``, and ``journal_head``: with them the chain adds
up, from the genesis through the cutover, to each table's count and checksum (:mod:`checkpoints.ledger`)."""

Restated: TypeAlias = Literal["", "reload", "read"]

ZERO_HASH: Final = "0" * 64
"""``prev_hash`` of a chain's first record (the genesis, or a compaction that replaced it)."""


class Kind(enum.StrEnum):
    GENESIS = "genesis"
    """The snapshot: per-table row counts and checksums of what was loaded."""
    BATCH = "batch"
    """One applied journal batch, written in the same transaction as the batch."""
    COMPACTION = "compaction"
    """Stands in for the checkpoints it replaced, at the base of the chain."""
    CUTOVER = "cutover"
    """The final drain at cutover: the last record of SQLite's journal; only the rollback window follows."""
    REVERSE = "reverse"
    """One reverse batch of the rollback window: PostgreSQL's changes (the app's, after the cutover) written
    back into the fenced SQLite file. Its range is in PostgreSQL's reverse journal (1, 2, 3... from the first
    record after the cutover), not SQLite's. Its tables hold, per table, the row images written into SQLite
    (``upserted``, digested from their PostgreSQL values with :mod:`checkpoints.digest`, the same canonical
    encoding as forward), the keys deleted, and the old SQLite row images replaced or deleted (``removed``,
    in their PostgreSQL form): so the ledger goes on adding up through it as through a batch."""
    ROLLBACK = "rollback"
    """The window closed by going back to SQLite: the final drain of the reverse journal (its range possibly
    empty), recorded like a reverse batch. The chain's last record: nothing may follow it."""
    FINALIZE = "finalize"
    """The window closed by staying on PostgreSQL: nothing is written back (an empty range, no tables). The
    chain's last record: nothing may follow it."""


REVERSE_KINDS: Final = frozenset({Kind.REVERSE, Kind.ROLLBACK, Kind.FINALIZE})
"""The rollback window's kinds: their ranges are in PostgreSQL's reverse journal, and only they follow the
cutover."""

ENDING_KINDS: Final = frozenset({Kind.ROLLBACK, Kind.FINALIZE})
"""The kinds that end a chain: nothing may follow them."""

CUT_OVER_KINDS: Final = frozenset({Kind.CUTOVER, *REVERSE_KINDS})
"""The kinds a chain's head has once its migration cut over (the cutover itself or the window after it)."""

_FORWARD: Final = frozenset({Kind.BATCH, Kind.CUTOVER})

FOLLOWERS: Final[Mapping[Kind, frozenset[Kind]]] = MappingProxyType(
    {
        Kind.GENESIS: _FORWARD,
        Kind.BATCH: _FORWARD,
        Kind.COMPACTION: _FORWARD,
        Kind.CUTOVER: REVERSE_KINDS,
        Kind.REVERSE: REVERSE_KINDS,
        Kind.ROLLBACK: frozenset(),
        Kind.FINALIZE: frozenset(),
    }
)
"""The chain's grammar: the kinds that may follow each kind (a genesis or a compaction only starts a chain).
Forward batches until the cutover, then only the rollback window, then nothing."""


class TableChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one checkpoint wrote to one table: counts, and digests of exactly those row images.

    The table after it holds the table before it, less the ``removed`` row images, plus the ``upserted``
    ones (``replaced``: only the ``upserted`` ones), so counts and digests add up along the chain."""

    upserted: int = 0
    """Row images written: each inserted row and the new image of each updated row."""
    deleted: int = 0
    """Keys deleted and not written again (an update is not counted here: its key stays)."""
    upserted_digest: str = EMPTY
    """checkpoints.digest sum over the row images inserted or updated (for genesis: the table's checksum)."""
    deleted_digest: str = EMPTY
    """checkpoints.digest sum over the primary-key tuples deleted."""
    removed: int = 0
    """Row images taken out of the table: the old image of each updated or deleted row, and of each row an
    incoming row displaced on a UNIQUE key (format 2; a format 1 batch did not record them)."""
    removed_digest: str = EMPTY
    """checkpoints.digest sum over those removed row images."""
    restated: Restated = ""
    """Not empty: this entry states the table whole, it holds exactly the ``upserted`` rows. ``reload``: the
    table was emptied and loaded anew (a re-snapshot; a snapshot-only table copied again at the cutover).
    ``read``: the same rows read anew by another reading (the apply's own, when it starts keeping the
    table's running checksum; the cutover's, for a table whose values the two read differently): the count
    cannot change there, only how the checksum reads the values."""

    @classmethod
    def of(
        cls,
        upserted: TableDigest,
        deleted: TableDigest | None = None,
        removed: TableDigest | None = None,
        *,
        restated: Restated = "",
    ) -> TableChange:
        """From the digests the writer kept: upserted row images and, if any, deleted keys and removed images.

        For the genesis, ``upserted`` is the snapshot's per-table checksum of the loaded rows.
        """
        return cls(
            upserted=upserted.count,
            deleted=deleted.count if deleted is not None else 0,
            upserted_digest=upserted.hexdigest(),
            deleted_digest=deleted.hexdigest() if deleted is not None else EMPTY,
            removed=removed.count if removed is not None else 0,
            removed_digest=removed.hexdigest() if removed is not None else EMPTY,
            restated=restated,
        )

    def __add__(self, other: TableChange) -> TableChange:
        """Both changes together (the digests of a multiset union add); after a ``restated`` change only it
        and what follows it count."""
        if other.restated:
            return other
        return TableChange(
            upserted=self.upserted + other.upserted,
            deleted=self.deleted + other.deleted,
            upserted_digest=add_hex(self.upserted_digest, other.upserted_digest),
            deleted_digest=add_hex(self.deleted_digest, other.deleted_digest),
            removed=self.removed + other.removed,
            removed_digest=add_hex(self.removed_digest, other.removed_digest),
            restated=self.restated,
        )


class Compaction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a compaction checkpoint replaced: enough to check it against an older export."""

    first: int
    """Number of the first replaced checkpoint (1 unless the chain was already cut)."""
    last: int
    """Number of the last replaced checkpoint; the compaction record takes this number."""
    count: int
    """How many original checkpoints it stands for (``last - first + 1``)."""
    head_hash: str
    """Hash of checkpoint ``last``: the next checkpoint's ``prev_hash`` still points at it."""
    hashes_digest: str
    """Fold of the replaced hashes in order: d = 0*64; d = sha256(ascii(d + hash)).hexdigest()."""


class Checkpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    number: int
    kind: Kind
    seq_from: int
    seq_to: int
    tables: dict[str, TableChange]
    at: str
    """Wall time of the write, UTC, ISO 8601 with microseconds and a ``Z``."""
    tool: str
    """Version of the program that wrote it."""
    prev_hash: str
    hash: str = ""
    """SHA-256 of the body; empty until sealed."""
    compaction: Compaction | None = None
    format: int = FORMAT
    journal_head: int | None = None
    """A batch's: the SQLite journal's newest entry when the batch was read, so ``journal_head - seq_to``
    changes were still waiting after it (the lag an auditor can plot); None where not recorded (format 2)."""

    @property
    def link_hash(self) -> str:
        """What the next checkpoint's ``prev_hash`` must equal.

        A compaction record stands for the checkpoints it replaced, so its successor keeps pointing at
        the last of them; every other record is pointed at by its own hash.
        """
        if self.kind is Kind.COMPACTION and self.compaction is not None:
            return self.compaction.head_hash
        return self.hash


class Record(msgspec.Struct, frozen=True):
    """A checkpoint as stored or exported: its number, hash and exact body bytes, undecoded.

    ``columns`` holds the store's copies of body fields (kind, seq_from...), which the audit checks.
    """

    number: int
    hash: str
    body: bytes
    columns: dict[str, Any] = msgspec.field(default_factory=dict)

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> Record:
        """The record a checkpoint in memory would be stored as."""
        return cls(number=checkpoint.number, hash=checkpoint.hash, body=encode_body(checkpoint))

    def decode(self) -> Checkpoint:
        return decode_body(self.body, self.hash)


_body_encoder = msgspec.json.Encoder(order="sorted")
_body_decoder = msgspec.json.Decoder(Checkpoint)


def encode_body(checkpoint: Checkpoint) -> bytes:
    """The canonical bytes that are hashed and stored: every field but ``hash``, keys sorted."""
    fields: dict[str, Any] = msgspec.to_builtins(checkpoint)
    fields.pop("hash", None)
    return _body_encoder.encode(fields)


def hash_body(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def seal(checkpoint: Checkpoint) -> tuple[Checkpoint, bytes]:
    """The checkpoint with its hash filled in, and the exact body bytes that hash covers."""
    body = encode_body(checkpoint)
    return msgspec.structs.replace(checkpoint, hash=hash_body(body)), body


def decode_body(body: bytes, hash: str) -> Checkpoint:
    """A checkpoint from stored body bytes and the stored hash (not checked here: see audit)."""
    try:
        checkpoint = _body_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint body is not a valid checkpoint: {exc}",
            hint="run 'replicator checkpoints verify' to see which record is damaged",
        ) from None
    if checkpoint.hash:
        raise CheckpointError("checkpoint body carries a hash field", hint="bodies exclude the hash; rewrite refused")
    return msgspec.structs.replace(checkpoint, hash=hash)


def utc_now() -> str:
    return format_time(dt.datetime.now(dt.UTC))


def format_time(moment: dt.datetime) -> str:
    """UTC ISO 8601 with microseconds and ``Z``: the one spelling of ``at``."""
    if moment.tzinfo is None:
        raise CheckpointError("checkpoint time must be timezone-aware", hint="pass datetime.now(datetime.UTC)")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def tool_version() -> str:
    """The installed replicator distribution's version, read without importing it."""
    try:
        return "replicator " + metadata.version("replicator")
    except metadata.PackageNotFoundError:
        return "replicator unknown"


def genesis(
    tables: Mapping[str, TableChange],
    *,
    seq_to: int,
    at: str | None = None,
    tool: str | None = None,
) -> Checkpoint:
    """Checkpoint 1: the snapshot, read at journal position ``seq_to``, with each table's count and checksum."""
    if seq_to < 0:
        raise CheckpointError(f"snapshot journal position {seq_to} is negative", hint="pass max(seq) or 0")
    draft = Checkpoint(
        number=1,
        kind=Kind.GENESIS,
        seq_from=0,
        seq_to=seq_to,
        tables=dict(tables),
        at=at or utc_now(),
        tool=tool or tool_version(),
        prev_hash=ZERO_HASH,
    )
    return seal(draft)[0]


def seq_from_after(prev: Checkpoint, kind: Kind) -> int | None:
    """Where the range of a ``kind`` checkpoint after ``prev`` starts: ``prev.seq_to + 1`` in the same journal
    (both forward, or both of the rollback window), 1 for a window record right after the cutover (it opens
    PostgreSQL's reverse journal), and None for any other crossing between the journals: positions in two
    journals do not compare, and the grammar refuses such a pair anyway."""
    if (kind in REVERSE_KINDS) == (prev.kind in REVERSE_KINDS):
        return prev.seq_to + 1
    if kind in REVERSE_KINDS and prev.kind is Kind.CUTOVER:
        return 1
    return None


def check_follows(prev: Checkpoint, kind: Kind) -> None:
    """Refuse a ``kind`` checkpoint after ``prev`` unless :data:`FOLLOWERS` allows it, saying why in an
    operator's words: the writer, the store and the audit hold the chain to the same grammar."""
    if kind in FOLLOWERS[prev.kind]:
        return
    where = f"checkpoint {prev.number}"
    if prev.kind in ENDING_KINDS:
        stayed = "went back to SQLite" if prev.kind is Kind.ROLLBACK else "stays on PostgreSQL"
        raise CheckpointError(
            f"a {kind} checkpoint cannot follow: the chain ended with a {prev.kind} checkpoint ({where}), the "
            f"migration {stayed} and its rollback window is closed",
            hint="nothing more is recorded in this chain; a new migration starts a new chain with its snapshot",
        )
    if kind in (Kind.GENESIS, Kind.COMPACTION):
        raise CheckpointError(
            f"a {kind} checkpoint cannot follow another: it only starts a chain",
            hint=f"after a {prev.kind} checkpoint, use {' or '.join(sorted(FOLLOWERS[prev.kind]))}",
        )
    if prev.kind in CUT_OVER_KINDS:
        raise CheckpointError(
            f"a {kind} checkpoint cannot follow the {prev.kind} checkpoint ({where}): after the cutover only the "
            "rollback window's reverse, rollback or finalize checkpoints are recorded",
            hint="the migration's forward replication ended at its cutover; to migrate again, start a new "
            "migration (its snapshot starts a new chain)",
        )
    raise CheckpointError(
        f"a {kind} checkpoint cannot follow the {prev.kind} checkpoint ({where}): the rollback window opens only "
        "after the cutover checkpoint",
        hint="record batches until the cutover; reverse, rollback and finalize checkpoints come after it",
    )


def next_checkpoint(
    prev: Checkpoint,
    *,
    seq_to: int,
    tables: Mapping[str, TableChange],
    kind: Kind = Kind.BATCH,
    at: str | None = None,
    tool: str | None = None,
    journal_head: int | None = None,
) -> Checkpoint:
    """The checkpoint after ``prev``, covering journal entries :func:`seq_from_after` ``.. seq_to``.

    ``kind`` must be allowed after ``prev`` (:data:`FOLLOWERS`): the first window record after the cutover
    starts PostgreSQL's reverse journal at 1; a finalize records nothing."""
    if not prev.hash:
        raise CheckpointError("previous checkpoint is not sealed", hint="build checkpoints with genesis()/seal()")
    check_follows(prev, kind)
    seq_from = seq_from_after(prev, kind)
    assert seq_from is not None, "the grammar lets no forward record follow a window record"
    if seq_to < seq_from - 1:
        journal = "reverse journal" if kind in REVERSE_KINDS else "journal"
        behind = (
            f"the start of the reverse journal, opened after the cutover checkpoint {prev.number}"
            if kind in REVERSE_KINDS and prev.kind is Kind.CUTOVER
            else f"checkpoint {prev.number}'s {prev.seq_to}"
        )
        raise CheckpointError(
            f"{journal} position {seq_to} is behind {behind}",
            hint="the journal was reset or another writer is ahead; do not append",
        )
    if kind is Kind.FINALIZE and (tables or seq_to != seq_from - 1):
        raise CheckpointError(
            f"a finalize checkpoint records nothing, but this one covers reverse journal entries "
            f"{seq_from}..{seq_to} and {len(tables)} table(s)",
            hint="finalize keeps PostgreSQL and writes nothing back: record the last reverse batch first, "
            "then finalize with seq_to = its seq_to and no tables",
        )
    draft = Checkpoint(
        number=prev.number + 1,
        kind=kind,
        seq_from=seq_from,
        seq_to=seq_to,
        tables=dict(tables),
        at=at or utc_now(),
        tool=tool or tool_version(),
        prev_hash=prev.link_hash,
        journal_head=journal_head,
    )
    return seal(draft)[0]


def fold_hashes(hashes: list[str], start: str = ZERO_HASH) -> str:
    """The compaction digest of replaced hashes, continuing from ``start`` (an earlier compaction's)."""
    digest = start
    for value in hashes:
        digest = hashlib.sha256((digest + value).encode("ascii")).hexdigest()
    return digest


def compaction_of(replaced: list[Checkpoint], *, at: str | None = None, tool: str | None = None) -> Checkpoint:
    """One compaction record standing for ``replaced`` (the chain's first records, in order)."""
    if not replaced:
        raise CheckpointError("nothing to compact", hint="pass --upto above the chain's first checkpoint")
    past = next((c for c in replaced if c.kind in CUT_OVER_KINDS), None)
    if past is not None:
        # The cutover certificate names the cutover checkpoint, and the window's ranges are in another journal.
        raise CheckpointError(
            f"a compaction cannot stand for checkpoint {past.number} ({past.kind}): only the records before the "
            "cutover can be compacted",
            hint=f"pass --upto below the cutover checkpoint (at most {past.number - 1})",
        )
    base = replaced[0]
    if base.kind is Kind.COMPACTION and base.compaction is not None:
        first, count, start, fresh = base.compaction.first, base.compaction.count, base.compaction.hashes_digest, 1
    else:
        first, count, start, fresh = base.number, 0, ZERO_HASH, 0
    rest = replaced[fresh:]
    if not rest:
        raise CheckpointError(f"checkpoint {base.number} is already the compaction base", hint="pass a larger --upto")
    tables: dict[str, TableChange] = {}
    for checkpoint in replaced:
        for name, change in checkpoint.tables.items():
            tables[name] = tables[name] + change if name in tables else change
    last = replaced[-1]
    draft = Checkpoint(
        number=last.number,
        kind=Kind.COMPACTION,
        seq_from=base.seq_from,
        seq_to=last.seq_to,
        tables=tables,
        at=at or utc_now(),
        tool=tool or tool_version(),
        prev_hash=ZERO_HASH,
        # Its sums are only as complete as the batches it adds up (checkpoints.ledger).
        format=min((c.format for c in replaced if c.kind in (Kind.BATCH, Kind.COMPACTION)), default=FORMAT),
        compaction=Compaction(
            first=first,
            last=last.number,
            count=count + len(rest),
            head_hash=last.link_hash,
            hashes_digest=fold_hashes([c.hash for c in rest], start),
        ),
    )
    return seal(draft)[0]
