"""The rollback window as ``status`` shows it, and what a difference between the two sides means while it is
open (``verify``'s and ``certificate --live``'s hint).

Read from the window's row and PostgreSQL's reverse journal (:mod:`replicator.state.reverse`): open since
when, the cutover checkpoint that opened it, the reverse direction's lag (the age of the oldest journal
entry: every entry still in the journal waits to be written back, a batch prunes what it applied), the
journal's size, the horizon applied, PostgreSQL's fence and the values not written back; once closed,
how and when. Only reads, in autocommit: a running reverse direction is never blocked.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import psycopg

from checkpoints.model import REVERSE_KINDS, Checkpoint
from replicator.state import reverse


class WindowStatus(msgspec.Struct, frozen=True):
    """The rollback window a cutover opened (:mod:`replicator.state.reverse`), as ``status`` shows it."""

    state: str
    """``open`` (PostgreSQL's changes are captured and ``replicator run`` writes them back) or ``closed``."""
    opened_at: str
    cutover_checkpoint: int | None
    """The number of the cutover checkpoint that opened it (None: not in this chain)."""
    cutover_hash: str
    applied_horizon: int
    """The reverse direction's position: every change of a PostgreSQL transaction below this id is in SQLite
    (0: no reverse batch yet)."""
    applied_at: str | None
    reverse_lag_s: float | None
    """Age of the oldest change not written back yet, 0.0 when none waits; None once the window is closed."""
    journal_entries: int | None
    """Entries in PostgreSQL's reverse journal, all waiting to be written back; None once closed."""
    journal_bytes: int | None
    postgres_fenced: bool
    """PostgreSQL's write fence is up (a rollback fenced it: the app runs on SQLite)."""
    fenced_at: str | None
    refused_waiting: int
    """Values not written back (SQLite's form cannot hold them) nobody acknowledged: rollback refuses while any."""
    closed_at: str | None
    closed_how: str | None
    """``rollback`` or ``finalize``."""
    message: str


def read(conn: psycopg.Connection[Any], schema: str, forward: Checkpoint | None) -> WindowStatus | None:
    """The rollback window's row, the reverse journal's size and lag while it is open, and the refusals.

    None without one, and for a closed window another migration opened: after a rollback, ``snapshot
    --replace`` starts a new chain and the old row stays; it says nothing about this one (``forward``, the
    chain's last forward checkpoint, is then not the cutover that opened it)."""
    window = reverse.read_window(conn, schema)
    if window is None:
        return None
    if not window.open and (forward is None or forward.hash != window.cutover):
        return None
    stats = reverse.journal_stats(conn, schema) if window.open else None
    return WindowStatus(
        state="open" if window.open else "closed",
        opened_at=window.opened_at,
        cutover_checkpoint=forward.number if forward is not None and forward.hash == window.cutover else None,
        cutover_hash=window.cutover,
        applied_horizon=window.applied_through,
        applied_at=window.applied_at,
        reverse_lag_s=None if stats is None else lag(stats),
        journal_entries=None if stats is None else stats.entries,
        journal_bytes=None if stats is None else stats.bytes,
        postgres_fenced=window.fenced_at is not None,
        fenced_at=window.fenced_at,
        refused_waiting=reverse.refused_waiting(conn, schema),
        closed_at=window.closed_at,
        closed_how=window.closed_how,
        message=window.message,
    )


def lag(stats: reverse.JournalStats) -> float:
    """The reverse direction's lag: the oldest waiting entry's age, 0.0 when nothing waits."""
    if not stats.entries or stats.oldest_age_s is None:
        return 0.0
    return stats.oldest_age_s


def window_hint(conn: psycopg.Connection[Any], schema: str) -> str | None:
    """While the rollback window is open, what a difference between the two sides means and what to do
    (``verify``'s and ``certificate --live``'s hint); None without an open window."""
    window = reverse.read_window(conn, schema)
    if window is None or not window.open:
        return None
    stats = reverse.journal_stats(conn, schema)
    waiting = stats.entries if stats is not None else 0
    if waiting:
        return (
            f"the rollback window is open and {waiting:,} change(s) made on PostgreSQL are not written back to SQLite "
            "yet: `replicator run` carries them back (`replicator status` shows the reverse lag), then compare again"
        )
    return (
        "the rollback window is open and every change made on PostgreSQL was written back to SQLite, so this "
        "difference is real: `replicator verify --keys` names the rows; `replicator rollback` refuses until "
        "the sides are equal"
    )


KINDS: Final = frozenset(str(k) for k in REVERSE_KINDS)
"""The rollback window's checkpoint kinds, as ``status`` names them: their range is a horizon, not a seq."""


def lines(w: WindowStatus) -> list[str]:
    """The rollback window in a few lines of text (rich markup; the message is escaped)."""
    from rich.markup import escape

    cutover = f"cutover checkpoint {w.cutover_checkpoint}" if w.cutover_checkpoint is not None else "cutover"
    if w.state != "open":
        out = [f"rollback window closed by {w.closed_how} at {w.closed_at} (opened {w.opened_at} by the {cutover})"]
        if w.message:
            out.append(f"  {escape(w.message)}")
        if w.postgres_fenced:
            out.append(f"  PostgreSQL fenced since {w.fenced_at}")
        return out
    waited = "?" if w.reverse_lag_s is None else f"{w.reverse_lag_s:.1f} s"
    entries = "?" if w.journal_entries is None else f"{w.journal_entries:,}"
    size = "?" if w.journal_bytes is None else f"{w.journal_bytes / 1024:,.0f} kB"
    applied = (
        f"applied through horizon {w.applied_horizon} at {w.applied_at}"
        if w.applied_at is not None
        else "no reverse batch yet"
    )
    fenced = f"[red]PostgreSQL fenced since {w.fenced_at}[/red]" if w.postgres_fenced else "PostgreSQL writable"
    style = "green" if not w.journal_entries else "yellow"
    out = [
        f"rollback window open since {w.opened_at}, {cutover}",
        f"  [{style}]reverse lag {waited}[/{style}]: {entries} journal entr{'y' if w.journal_entries == 1 else 'ies'} "
        f"({size}) wait to be written back to SQLite; {applied}; {fenced}",
    ]
    if w.refused_waiting:
        out.append(
            f"  [yellow]{w.refused_waiting} value(s) not written back to SQLite (its form cannot hold them): "
            "rollback refuses until they change or `replicator quarantine ack`[/yellow]"
        )
    return out
