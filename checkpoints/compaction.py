"""Compacting the chain: one record stands for its oldest checkpoints, refused on a chain that does not verify.

Compaction replaces checkpoints ``first..upto`` with one record numbered ``upto`` that carries the
hash of the original checkpoint ``upto`` (its successor still points at it), their count, and a fold
of their hashes that an auditor holding an older export can recompute (:func:`verify_compaction`).
Only records before the cutover are compacted: the cutover certificate names the cutover checkpoint, and the
rollback window after it (:mod:`checkpoints.model`) counts PostgreSQL's reverse journal, not SQLite's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from checkpoints.audit import verify
from checkpoints.errors import ChainBroken, CheckpointUsageError
from checkpoints.findings import Tally
from checkpoints.model import CUT_OVER_KINDS, Checkpoint, Kind, compaction_of

if TYPE_CHECKING:
    import psycopg

log = structlog.get_logger().bind(component="checkpoints")


def compact(
    conn: psycopg.Connection[Any],
    upto: int,
    *,
    schema: str | None = None,
    at: str | None = None,
    tool: str | None = None,
) -> Checkpoint:
    """Replace checkpoints numbered ``upto`` and below with one compaction record, in one transaction.

    Refuses a chain that does not verify (compacting would hide the evidence) and keeps at least
    the head after the compaction, so the compaction record's head_hash stays bound by a successor.
    Appends wait for the table lock meanwhile rather than fail.
    """
    from checkpoints import store

    schema = schema or store.DEFAULT_SCHEMA
    with conn.transaction():
        store.lock(conn, schema=schema)
        tally = Tally(store.iter_records(conn, schema=schema))
        findings = verify(tally)
        if findings:
            raise ChainBroken(
                f"refusing to compact a chain with {len(findings)} finding(s), first: {findings[0]}",
                hint="run 'replicator checkpoints verify' and export the chain for investigation first",
            )
        replaced = store.read(conn, until=upto, schema=schema)
        _check_upto(replaced, tally.last.number if tally.last else None, upto)
        compaction = compaction_of(replaced, at=at, tool=tool)
        removed = store.replace_prefix(conn, upto, compaction, schema=schema)
    log.info("checkpoints compacted", upto=upto, removed=removed)
    return compaction


def _check_upto(replaced: Sequence[Checkpoint], head: int | None, upto: int) -> None:
    if head is None:
        raise CheckpointUsageError("there are no checkpoints to compact", hint="the snapshot writes the first one")
    if upto >= head:
        raise CheckpointUsageError(
            f"cannot compact up to {upto}: the head is checkpoint {head} and must stay",
            hint=f"pass --upto {head - 1} or less",
        )
    past = next((c for c in replaced if c.kind in CUT_OVER_KINDS), None)
    if past is not None:
        # The cutover certificate names the cutover checkpoint, so it must stay; the rollback window after it
        # counts another journal's positions, which a compaction's range cannot hold with SQLite's.
        raise CheckpointUsageError(
            f"cannot compact up to {upto}: checkpoint {past.number} is the {past.kind}"
            + ("" if past.kind is Kind.CUTOVER else " of the rollback window after the cutover")
            + ", and only the records before the cutover can be compacted",
            hint=f"pass --upto {past.number - 1} or less",
        )
    if len(replaced) < 2:
        first = f"{replaced[0].number} ({replaced[0].kind})" if replaced else "above it"
        raise CheckpointUsageError(
            f"nothing to compact up to {upto}: the chain already starts at {first}",
            hint=f"pass --upto between the first checkpoint + 1 and {head - 1}",
        )
