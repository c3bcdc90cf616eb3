"""Damage the chain alone cannot show, found the same way by ``status``, ``run`` and ``checkpoints verify``.

A hash chain proves that what it holds was not edited, but not that it holds everything: delete its
newest checkpoints and what remains still verifies, and a daemon would resume from the older head and
read journal entries that were pruned long ago. Journal rows deleted by hand vanish without a trace
in a chain that never saw them. So each side is checked against a record kept on the *other* side:

* **The anchor** (:class:`checkpoints.anchor.Anchor`): the daemon's pruner writes the last committed
  checkpoint's number, hash and seq into the SQLite file's meta table, in the very transaction that
  deletes the journal entries that checkpoint covers (no write of its own). The chain in PostgreSQL
  must still hold it, unchanged, and verify from it to the head. The anchor only ever lags the head,
  so a rare prune weakens nothing but how recent the proof is.
* **The phase row** in PostgreSQL records the seq the daemon applied and the head it saw, written with
  each batch: a chain ending below it lost checkpoints (checked without the source too).
* **The journal itself** (:func:`triggers.journal.check_range`): seqs are contiguous and we prune only
  what a committed checkpoint covers, so above the chain's head no seq may be missing, the head may
  not fall below what was applied or seen, and ``pruned_through`` may not pass the chain's head.

After the cutover the chain goes on with the rollback window's records, whose ranges are PostgreSQL
transaction-id horizons: every comparison with SQLite's journal above is made with the chain's last
*forward* checkpoint (:func:`forward_of`, the cutover's), never with a horizon.

Every finding is one line naming what was tampered with; ``run`` refuses on the first
(:class:`Tampered`, exit 3), ``status`` lists them and exits 1, ``checkpoints verify`` exits 3.

Not detectable without a cost to every app write: entries deleted from the top of the journal before
any daemon saw them (they look exactly like writes that never happened).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg

from checkpoints import audit, store
from checkpoints.anchor import Anchor, check_anchor
from checkpoints.errors import ChainBroken
from checkpoints.findings import Report
from checkpoints.model import REVERSE_KINDS, Checkpoint
from replicator.config import Config
from replicator.errors import EXIT_MISMATCH, ReplicatorError
from replicator.state.phase import ApplyState
from replicator.state.store import StateStore
from triggers import journal
from triggers import source as sqlite_source
from triggers.errors import JournalTampered

HINT = (
    "run `replicator checkpoints verify --source ...` to see every finding and export the chain before changing "
    "anything; the changes lost cannot be replayed: reload the target with `replicator snapshot --replace`"
)


class Tampered(ReplicatorError):
    """The checkpoint chain or the journal was changed by hand: applying on would skip changes silently."""

    exit_code = EXIT_MISMATCH


def read_anchor(sconn: sqlite3.Connection) -> Anchor | None:
    """The anchor the daemon's last prune kept in the source (None before the first prune).

    Read it *before* the chain: the daemon anchors only committed checkpoints, so a chain read later
    can only be ahead of it.
    """
    text = journal.anchor(sconn)
    return None if text is None else Anchor.decode(text)


def anchor_for(head: Checkpoint, root: str) -> str:
    """The anchor text the pruner stores for ``head`` (the chain's first record hashes to ``root``)."""
    return Anchor(number=head.number, hash=head.hash, seq_to=head.seq_to, root=root).encode()


def chain_root(state_store: StateStore) -> str | None:
    """Hash of the chain's first stored record: which chain an anchor belongs to."""
    first = next(store.iter_records(state_store.conn, limit=1, schema=state_store.schema_name), None)
    return None if first is None else first.hash


def for_chain(state_store: StateStore, state: ApplyState | None) -> ApplyState | None:
    """The phase row if it was written for the current chain; None if it predates it (``snapshot
    --replace`` began a new chain, whose numbers the old row's do not describe)."""
    if state is None or state.updated_at is None:
        return None
    started = store.started_at(state_store.conn, schema=state_store.schema_name)
    return state if started is not None and state.updated_at >= started else None


def forward_of(state_store: StateStore, head: Checkpoint | None) -> Checkpoint | None:
    """The checkpoint that says where SQLite's journal stands: ``head`` itself, unless it is one of the
    rollback window's records (a horizon in PostgreSQL's reverse journal), then the last forward one
    (:func:`checkpoints.store.last_forward`: the cutover's)."""
    if head is None or head.kind not in REVERSE_KINDS:
        return head
    return store.last_forward(state_store.conn, schema=state_store.schema_name)


def chain_findings(
    state_store: StateStore,
    *,
    anchor: Anchor | None,
    state: ApplyState | None,
    head: Checkpoint | None,
    tail_only: bool = False,
) -> list[str]:
    """What the anchor and the phase row (read before ``head``, see :func:`for_chain`) say is missing.

    ``head`` is the chain's head; the phase row's journal seq is held against the forward part's end
    (:func:`forward_of`)."""
    found: list[str] = []
    if anchor is not None:
        found += [
            str(f) for f in check_anchor(state_store.conn, anchor, schema=state_store.schema_name, tail_only=tail_only)
        ]
    try:
        forward = forward_of(state_store, head)
    except ChainBroken as exc:
        return [*found, exc.message]
    if forward is not None and state is not None and state.applied_seq > forward.seq_to:
        ends = "ends" if forward is head else "ends its forward part"
        found.append(
            f"the phase row records journal seq {state.applied_seq} as applied, but the checkpoint chain {ends} at "
            f"checkpoint {forward.number} (seq {forward.seq_to}): the newest checkpoints were deleted"
        )
    return found


def refuse(findings: list[str]) -> None:
    """Raise :class:`Tampered` on the first finding (one line; the rest are counted)."""
    if findings:
        more = f" (+{len(findings) - 1} more finding(s))" if len(findings) > 1 else ""
        raise Tampered(f"the checkpoint chain was tampered with: {findings[0]}{more}", hint=HINT)


def journal_findings(
    sconn: sqlite3.Connection, state_store: StateStore, applied: int, state: ApplyState | None
) -> list[str]:
    """:func:`triggers.journal.check_range` above the chain's forward end (seq ``applied``: the
    :func:`forward_of` the head, never a reverse horizon), in one read transaction.

    A running daemon may commit and prune between the caller's chain read and this one: a prune past
    ``applied`` is checked again against the chain's forward end read anew (it only grows), and named only
    if it still holds.
    """
    seen = state.head_seq if state is not None else 0
    try:
        with journal.read_transaction(sconn):
            try:
                journal.check_range(sconn, applied, seen=seen)
            except JournalTampered:
                fresh = store.last_forward(state_store.conn, schema=state_store.schema_name)
                if fresh is None or fresh.seq_to <= applied:
                    raise
                journal.check_range(sconn, fresh.seq_to, seen=seen)
    except JournalTampered as exc:
        return [exc.message]
    return []


def verify_target(
    conn: psycopg.Connection[Any], config: Config, source: Path | None, *, against: Path | None = None
) -> tuple[Report, list[str]]:
    """``checkpoints verify`` against the database: the full chain audit, then what it cannot show
    alone (the phase row; with ``source``, the anchor and the journal), each finding once."""
    schema = config.target.state_schema
    state_store = StateStore(conn, schema)
    sconn = None
    if source is not None:
        sconn = sqlite_source.connect(source, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms)
    try:
        extra: list[str] = []
        anchor = None
        if sconn is not None:
            try:
                anchor = read_anchor(sconn)
            except ChainBroken as exc:
                extra.append(exc.message)
        state = for_chain(state_store, state_store.read_phase())
        report = audit.report_db(conn, schema=schema, against=against)
        try:
            head = store.latest(conn, schema=schema)
        except ChainBroken:
            head = None  # the audit above names it
        extra += chain_findings(state_store, anchor=anchor, state=state, head=head)
        try:
            forward = forward_of(state_store, head)
        except ChainBroken:
            forward = None  # chain_findings named it
        if sconn is not None and forward is not None:
            extra += journal_findings(sconn, state_store, forward.seq_to, state)
    finally:
        if sconn is not None:
            sconn.close()
    listed = {str(f) for f in report.findings}
    return report, [line for line in dict.fromkeys(extra) if line not in listed]
