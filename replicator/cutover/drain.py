"""Step 3, and the catch-up before it: batches drained from the journal with the daemon's own apply writer,
then the chain proven to cover exactly the stop seq.

The same loop serves both: before the freeze it catches up to the head (or within a backlog of it) while
the app still writes, and reads a batch again after the apply's transient refusal as the daemon would; in
the freeze it drains to the stop seq, where nothing writes and any error aborts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from checkpoints import audit, store
from checkpoints.findings import Problem
from checkpoints.model import Checkpoint
from replicator import faults
from replicator.apply.batch import Batch, read_batch
from replicator.apply.writer import Applied
from replicator.cutover.freeze import Budget
from replicator.cutover.session import CutoverAborted, Session
from replicator.errors import ReplicatorError, VerificationFailed
from replicator.state.phase import ApplyState, Phase
from replicator.state.store import StateStore

CATCHUP_RETRIES: Final = 5
"""Times in a row a catch-up batch is read again after a transient error (the app changed its rows meanwhile)."""


def drain(session: Session, *, stop: int | None, budget: Budget | None, leave: int = 0) -> Checkpoint:
    """Apply batches until the journal is applied through ``stop`` (frozen) or within ``leave`` of its head."""
    cfg = session.config.apply
    skipped = frozenset(session.skipped)
    retries = 0
    while True:
        batch = read_batch(
            session.sconn,
            session.prev.seq_to,
            session.targets,
            max_rows=cfg.batch_rows,
            max_bytes=cfg.batch_bytes,
            ignore=skipped,
        )
        if stop is not None and batch.head != stop:
            raise CutoverAborted(
                f"the journal head moved during the freeze ({stop} → {batch.head})",
                hint="another connection wrote despite the lock; report this",
            )
        if batch.empty:
            return session.prev
        current = Phase.CUTOVER if stop is not None else Phase.CATCHUP
        try:
            applied = session.writer.write_batch(batch, session.prev, extra=_record(session, batch, current))
        except ReplicatorError as exc:
            # Before the freeze the app still writes: a batch can meet rows it changed since they were read
            # (two rows swapping a unique value). Its transaction rolled back whole, so read it again, as the
            # daemon would. In the freeze nothing writes: a transient error there is not a race; it aborts.
            # Not a failpoint's raise (a test's crash stand-in must end the cutover) nor a lost connection
            # (the batch cannot be read again on it).
            if (
                stop is not None
                or not exc.transient
                or isinstance(exc, faults.FailpointHit)
                or session.pconn.broken
                or retries >= CATCHUP_RETRIES
            ):
                raise
            retries += 1
            session.log.warning("catch-up batch read again", error=exc.message, attempt=retries)
            time.sleep(0.05 * retries)
            continue
        retries = 0
        session.prev = applied.checkpoint
        if budget is not None:
            budget.check("a drain batch")
        if stop is None and batch.head - batch.seq_to <= leave:
            return session.prev


def _record(session: Session, batch: Batch, current: Phase) -> Callable[[StateStore, Applied], None]:
    def record(state_store: StateStore, applied: Applied) -> None:
        state_store.write_phase(ApplyState(phase=current, applied_seq=batch.seq_to, head_seq=batch.head))
        if batch.ignored:
            state_store.count_ignored(batch.ignored, batch.seq_to, session.skipped)

    return record


def prove_chain(session: Session, head: Checkpoint, stop: int) -> None:
    """Every seq ≤ stop is covered by exactly one checkpoint: the chain verifies and its head is at stop.

    The preflight verified the whole chain up to ``session.verified``; here the records from that one
    on are verified (links, hashes, contiguous seq ranges), and it must still be the record verified.
    """
    base = session.verified
    records = list(store.iter_records(session.pconn, since=base.number - 1, schema=session.state_schema))
    if not records or records[0].number != base.number or records[0].hash != base.hash:
        raise VerificationFailed(
            f"checkpoint {base.number} changed since the preflight verified it",
            hint="run `replicator checkpoints verify`",
        )
    findings = [
        f
        for f in audit.verify(records)
        # the list starts at base on purpose: its missing predecessors are not a finding
        if not (f.number == base.number and f.problem in (Problem.BROKEN_LINK, Problem.BAD_ROOT, Problem.DELETED))
    ]
    if findings:
        raise VerificationFailed(f"the checkpoint chain does not verify after the drain: {findings[0]}", hint="")
    if head.seq_to != stop or records[-1].number != head.number:
        raise VerificationFailed(
            f"the chain head #{head.number} covers seq {head.seq_to}, not the stop seq {stop}",
            hint="run `replicator checkpoints verify`",
        )
