"""The anchor: the last checkpoint a writer saw committed, kept outside PostgreSQL, that the chain must still hold.

A chain alone cannot reveal that its newest records were cut off, or that it was rewritten whole
with fresh hashes. :func:`checkpoints.audit.verify_against` closes that gap with an earlier export;
:func:`check_anchor` does the same with a single :class:`Anchor`, the last checkpoint a writer saw
committed, which the daemon keeps outside PostgreSQL (in the SQLite file, with each journal prune):
the anchored checkpoint must still be there with its hash, and the chain from it to the head must
verify.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

import msgspec

from checkpoints.audit import verify
from checkpoints.errors import ChainBroken, CheckpointError
from checkpoints.findings import Finding, Problem
from checkpoints.model import Checkpoint, Kind, Record

if TYPE_CHECKING:
    import psycopg


class Anchor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A checkpoint its writer saw committed, kept outside PostgreSQL: the chain must still hold it.

    Only a copy kept elsewhere reveals a chain whose newest records were cut off (it still verifies
    on its own). The daemon stores one in the SQLite file's meta table with every journal prune,
    which it only does after the checkpoint committed, so the chain's head is never below it.
    """

    number: int
    hash: str
    seq_to: int
    root: str
    """Hash of the chain's first record when anchored: a chain started since (``snapshot --replace``)
    begins with another genesis, and the anchor is then about a chain that no longer exists."""

    def encode(self) -> str:
        return msgspec.json.encode(self).decode()

    @classmethod
    def decode(cls, text: str) -> Anchor:
        try:
            return msgspec.json.decode(text, type=cls)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ChainBroken(
                f"the anchor kept in the source is unreadable: {exc}",
                hint="it was edited by hand; the daemon rewrites it at its next prune once the chain verifies",
            ) from None


ANCHOR_TAIL: Final = 1_000
"""How many of the newest checkpoints :func:`check_anchor` verifies with ``tail_only`` (``status``)."""


def check_anchor(
    conn: psycopg.Connection[Any], anchor: Anchor, *, schema: str | None = None, tail_only: bool = False
) -> list[Finding]:
    """Findings about the stored chain against ``anchor``: cut off below it, its record rewritten or
    swapped, or the segment from it to the head not verifying (``tail_only``: only the anchored
    record and the newest :data:`ANCHOR_TAIL` checkpoints, for a command run often).

    Nothing is found about a chain the anchor does not describe: an empty one (a snapshot is due),
    or one that starts with another genesis (``snapshot --replace`` started it; the daemon anchors
    it at its next prune).
    """
    from checkpoints import store

    schema = schema or store.DEFAULT_SCHEMA
    low, high = store.bounds(conn, schema=schema)
    if low is None or high is None:
        return []
    first = next(store.iter_records(conn, until=low, schema=schema), None)
    root = _decoded(first)
    if root is None or (root.kind is Kind.GENESIS and first is not None and first.hash != anchor.root):
        return []
    if high < anchor.number:
        span = (
            f"checkpoint {high + 1} is" if high + 1 == anchor.number else f"checkpoints {high + 1}..{anchor.number} are"
        )
        return [
            Finding(
                anchor.number,
                Problem.DELETED,
                f"{span} missing: the source's anchor records checkpoint {anchor.number} (journal seq "
                f"{anchor.seq_to}) as committed, but the chain ends at checkpoint {high}",
            )
        ]
    if root.compaction is not None and root.compaction.last >= anchor.number:
        if anchor.number == root.number and root.compaction.head_hash != anchor.hash:
            return [Finding(anchor.number, Problem.EDITED, "the compaction's head_hash is not the anchored hash")]
        return verify(store.iter_records(conn, since=max(low, high - ANCHOR_TAIL), schema=schema), whole=False)
    since = max(anchor.number, high - ANCHOR_TAIL) if tail_only else anchor.number
    findings = (
        []
        if since == anchor.number
        else _with_anchor(store.iter_records(conn, since=anchor.number - 1, until=anchor.number, schema=schema), anchor)
    )
    # From the anchored record's predecessor: its link to the anchored one is checked too.
    tail = store.iter_records(conn, since=max(0, since - 2), schema=schema)
    return findings + _with_anchor(tail, anchor, covered=since == anchor.number)


def _decoded(record: Record | None) -> Checkpoint | None:
    if record is None:
        return None
    try:
        return record.decode()
    except CheckpointError:
        return None  # verify names it


def _with_anchor(records: Iterable[Record], anchor: Anchor, *, covered: bool = True) -> list[Finding]:
    """Verify a segment of the chain; the anchored checkpoint in it (``covered``: it must be) must
    still carry the anchored hash."""
    findings: list[Finding] = []
    seen = False

    def watched() -> Iterator[Record]:
        nonlocal seen
        for record in records:
            if record.number == anchor.number:
                seen = True
                if record.hash != anchor.hash:
                    findings.append(
                        Finding(
                            anchor.number,
                            Problem.EDITED,
                            f"hash {record.hash[:12]}… is not the {anchor.hash[:12]}… the source's anchor "
                            "recorded when it was committed: rewritten or swapped",
                        )
                    )
            yield record

    segment = verify(watched(), whole=False)
    if covered and not seen:
        findings.append(Finding(anchor.number, Problem.DELETED, "the checkpoint the source's anchor records is gone"))
    return findings + segment
