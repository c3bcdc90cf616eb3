"""``replicator status``: where the apply stands, read from the target's state schema and the journal.

Works while the daemon runs: it only reads (PostgreSQL in autocommit, SQLite through a read-only
connection), so it never blocks the daemon or the app. Nothing here is cached by the daemon for us:
the phase row, the per-table rows and the checkpoint head are committed with each batch, so what
status shows is what PostgreSQL holds.

It also says what is wrong though nothing failed: **tampering** (:mod:`replicator.state.integrity`: the
anchor kept in SQLite, the phase row and the journal each checked against the other side) and a
**stall** (a daemon holds the lock, entries wait, and its phase row, which it rewrites with every
batch and as a heartbeat while idle, is older than ``status.stall_after_s``). Either exits 1.

The reads come in an order that makes a concurrent daemon harmless: the anchor before the chain
(it anchors only what committed), the phase row before the chain head, PostgreSQL before the
journal (the journal only grows ahead of what was applied).

After a cutover it shows the **rollback window** (:class:`WindowStatus`): open since when, the cutover
checkpoint that opened it, the reverse direction's lag (the age of the oldest entry of PostgreSQL's reverse
journal, all of which waits to be written back), the journal's size, the horizon applied, whether
PostgreSQL is fenced; once closed, how and when. Every SQLite journal position (applied, behind, the
journal's tamper checks) comes from the chain's last *forward* checkpoint, the cutover's: the window's
records after it count PostgreSQL transaction ids.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from checkpoints import store
from checkpoints.anchor import Anchor
from checkpoints.errors import ChainBroken, NoChainTable
from checkpoints.model import Checkpoint
from replicator import pg
from replicator.config import Config
from replicator.inspect import window as window_mod
from replicator.state import integrity, lock, phase
from replicator.state.phase import ApplyState, Phase
from replicator.state.quarantine import unacknowledged
from replicator.state.store import SkippedTable, StateStore
from triggers import fence, journal
from triggers import source as sqlite_source
from triggers.errors import CaptureError, JournalTampered
from triggers.meta import read_meta


class TableStatus(msgspec.Struct, frozen=True):
    table: str
    target: str
    rows: int
    """Rows in the target table per the running digest (kept in the batch transactions)."""
    upserted: int
    deleted: int
    last_seq: int | None
    last_change_at: dt.datetime | None
    quarantined: int = 0
    error: str | None = None
    hint: str | None = None


class CheckpointHead(msgspec.Struct, frozen=True):
    number: int
    kind: str
    seq_to: int
    at: str
    hash: str


class Status(msgspec.Struct, frozen=True):
    phase: str
    """INIT..ERRORED, or ``NONE`` when no daemon ever ran against this target."""
    reason: str
    hint: str
    applied_seq: int
    journal_head: int | None
    """None when the source could not be read (not given, or unavailable)."""
    changes_behind: int | None
    seconds_behind: float | None
    rate: float
    """Changes per second over the daemon's last seconds of batches."""
    updated_at: dt.datetime | None
    pid: int | None
    host: str
    last_checkpoint: CheckpointHead | None
    quarantined: int
    tables: tuple[TableStatus, ...]
    source_note: str = ""
    daemon_running: bool | None = None
    """Whether a daemon holds the source's advisory lock on the target now (None: source unknown)."""
    skipped: tuple[SkippedTable, ...] = ()
    """Tables the migration leaves out on purpose (not errors): the reason and the journal entries ignored."""
    tampering: tuple[str, ...] = ()
    """Damage to the checkpoint chain or the journal found by :mod:`replicator.state.integrity`, one line each."""
    stalled_s: float | None = None
    """Seconds the running daemon has recorded no progress while changes wait, once that passes
    ``status.stall_after_s``; None when it is not stalled."""
    fenced: bool | None = None
    """Whether the SQLite file carries the cutover's write fence (None: source unknown)."""
    problem: str = ""
    """A state that needs the operator although the phase looks healthy (``status`` exits 1): a cutover
    interrupted between its two commits, or a cut-over target whose SQLite file is writable again, or a
    rollback interrupted after fencing PostgreSQL or between its two commits (both sides fenced)."""
    problem_hint: str = ""
    window: window_mod.WindowStatus | None = None
    """The rollback window, once a cutover opened one (None: no cutover, or one without a window)."""


_STALLABLE = (Phase.CATCHUP, Phase.STREAMING)
"""Phases in which a running daemon rewrites its row with every batch and heartbeat (a snapshot or an
INIT seeding digests may legitimately take longer)."""


def read_status(dsn: str, config: Config, source: Path | None = None) -> Status:
    """Everything ``status`` shows, from one target connection and two short journal reads."""
    schema = config.target.state_schema
    sconn, note = _open(source, config)
    try:
        tampering: list[str] = []
        anchor = _anchor(sconn, tampering)
        with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as conn:
            state_store = StateStore(conn, schema)
            state_store.refuse_newer()
            now = _now(conn)
            state = state_store.read_phase()
            chain = _chain_head(state_store, tampering)
            forward = _forward(state_store, chain, tampering)
            recorded = integrity.for_chain(state_store, state)
            if chain is not None:
                tampering += integrity.chain_findings(
                    state_store, anchor=anchor, state=recorded, head=chain, tail_only=True
                )
            left_out = tuple(state_store.skipped_tables())
            named = {s.table for s in left_out}
            tables = [t for t in _tables(state_store) if t.table not in named]
            waiting = unacknowledged(state_store)
            window = window_mod.read(conn, schema, forward)
            applied = state.applied_seq if state is not None else (forward.seq_to if forward is not None else 0)
            found = _journal(sconn, note, applied)
            tampering += found.tampering
            if sconn is not None and forward is not None and found.head is not None:
                tampering += integrity.journal_findings(sconn, state_store, forward.seq_to, recorded)
            journal_head, seconds, source_id, note = found.head, found.seconds, found.source_id, found.note
            running = None if source_id is None else _daemon_running(conn, source_id)
    finally:
        if sconn is not None:
            sconn.close()
    current = str(state.phase) if state is not None else "NONE"
    problem, problem_hint = _two_sides(current, found.fenced, window, running)
    behind = None if journal_head is None else max(0, journal_head - applied)
    if seconds is None and behind is not None:
        if behind == 0:
            seconds = 0.0
        elif state is not None and state.behind_since is not None:
            seconds = max(0.0, (dt.datetime.now(dt.UTC) - state.behind_since).total_seconds())
    counts = {t.table: t for t in tables}
    merged = tuple(
        msgspec.structs.replace(counts[n], quarantined=waiting.get(n, 0)) if n in counts else _missing(n, waiting[n])
        for n in sorted(set(counts) | set(waiting))
    )
    head = None if chain is None else CheckpointHead(chain.number, str(chain.kind), chain.seq_to, chain.at, chain.hash)
    return Status(
        phase=str(state.phase) if state is not None else "NONE",
        reason=state.reason if state is not None else "",
        hint=state.hint if state is not None else "",
        applied_seq=applied,
        journal_head=journal_head,
        changes_behind=behind,
        seconds_behind=seconds,
        rate=state.rate if state is not None else 0.0,
        updated_at=state.updated_at if state is not None else None,
        pid=state.pid if state is not None else None,
        host=state.host if state is not None else "",
        last_checkpoint=head,
        quarantined=sum(waiting.values()),
        tables=merged,
        source_note=note,
        daemon_running=running,
        skipped=left_out,
        tampering=tuple(tampering),
        stalled_s=_stalled(state, running, behind, now, config.status.stall_after_s),
        fenced=found.fenced,
        problem=problem,
        problem_hint=problem_hint,
        window=window,
    )


def _two_sides(
    current: str, fenced: bool | None, window: window_mod.WindowStatus | None = None, running: bool | None = None
) -> tuple[str, str]:
    """What the phase alone cannot show: the SQLite side disagrees with it (see cutover, step 6), or both sides
    are fenced and no rollback is running (the window's rollback stopped after fencing PostgreSQL, step 3, or
    between its two commits, step 7)."""
    if fenced is None or current == "NONE":
        return "", ""
    if window is not None and window.state == "open" and window.postgres_fenced and fenced and running is False:
        return (
            f"a rollback was interrupted after fencing PostgreSQL at {window.fenced_at}: both sides are fenced "
            "(the app can write to neither) and the rollback window is still open",
            "run `replicator rollback` again: it drains, proves and un-fences SQLite (nothing is lost)",
        )
    if window is not None and window.closed_how == "rollback":
        if fenced:
            return (
                f"a rollback was interrupted between its two commits: the window closed at {window.closed_at} and "
                "PostgreSQL is fenced, but the SQLite file is still fenced too (the app can write to neither)",
                "run `replicator rollback` again: it only un-fences SQLite",
            )
        return "", ""
    if fenced and current != "DONE":
        return (
            f"{phase.INTERRUPTED_BETWEEN_COMMITS}: SQLite is fenced but PostgreSQL is not finished",
            phase.FINISH_HINT,
        )
    if not fenced and current == "DONE":
        return (
            "cut over, but the SQLite file is not fenced: app writes to it since then are not in PostgreSQL",
            "if the app went back to SQLite, run `replicator rollback`; else run `replicator fence`",
        )
    return "", ""


def _stalled(
    state: ApplyState | None, running: bool | None, behind: int | None, now: dt.datetime, after_s: float
) -> float | None:
    """How long a running, behind daemon has not rewritten its row, once that reaches ``after_s``.

    An idle daemon rewrites it as a heartbeat (``worker.HEARTBEAT_MAX_S``, a quarter of ``after_s``),
    a working one with every batch: a row this old means the loop is not going round.
    """
    if not running or not behind or state is None or state.updated_at is None or state.phase not in _STALLABLE:
        return None
    age = (now - state.updated_at).total_seconds()
    return age if age >= after_s else None


class NotApplying(msgspec.Struct, frozen=True):
    """Why nothing will apply the journal's later entries to the target now, and what to do."""

    reason: str
    hint: str


def not_applying(
    state_store: StateStore, source_id: str, journal_head: int, stall_after_s: float
) -> NotApplying | None:
    """None while a daemon is alive and advancing: it holds the source's advisory lock, its phase is
    CATCHUP or STREAMING and it is not stalled (:func:`_stalled`); else why not.

    This is what lets ``verify`` call a difference "in flight": only a daemon that is applying the journal
    will make keys journaled after the compared position converge. After DONE (cut over, whether or not
    the file was unfenced since), after a rollback or an error (ERRORED) and while no daemon runs, nothing
    will. The store's connection reads now (autocommit or a fresh transaction), not in an old snapshot: the
    lock is live.
    """
    conn = state_store.conn
    state = state_store.read_phase()
    if state is None:
        return NotApplying("no daemon has run against this target", "run `replicator run` to apply them")
    if state.phase == Phase.DONE:
        return NotApplying(
            "this target was cut over (phase DONE): nothing applies SQLite writes to it any more",
            "writes to the SQLite file since the cutover are not in PostgreSQL: if the app went back to SQLite, "
            "run `replicator rollback`; else run `replicator fence`",
        )
    if state.phase == Phase.ERRORED:
        return NotApplying(
            f"nothing applies the journal (phase ERRORED): {state.reason}",
            state.hint or "fix it and run `replicator run`",
        )
    running = _daemon_running(conn, source_id)
    if not running:
        return NotApplying("no daemon is running", "run `replicator run` to apply them")
    if state.phase not in _STALLABLE:
        return NotApplying(
            f"the daemon is in phase {state.phase}, not applying the journal",
            "verify again once `replicator status` shows STREAMING",
        )
    stalled = _stalled(state, running, max(0, journal_head - state.applied_seq), _now(conn), stall_after_s)
    if stalled is not None:
        return NotApplying(
            f"the daemon (pid {state.pid}) holds the lock but has recorded no progress for {stalled:.0f} s",
            "see `replicator status`; restart the daemon if it is stuck",
        )
    return None


def _now(conn: psycopg.Connection[Any]) -> dt.datetime:
    """PostgreSQL's clock: the phase row's times are its, and this host's clock may differ."""
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _open(source: Path | None, config: Config) -> tuple[sqlite3.Connection | None, str]:
    if source is None:
        return None, "no --source: journal head unknown"
    try:
        return sqlite_source.connect(source, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms), ""
    except CaptureError as exc:
        return None, exc.message


def _anchor(sconn: sqlite3.Connection | None, tampering: list[str]) -> Anchor | None:
    """The anchor the daemon keeps in SQLite, read before the chain (see the module docstring)."""
    if sconn is None:
        return None
    try:
        return integrity.read_anchor(sconn)
    except ChainBroken as exc:
        tampering.append(exc.message)
    except (CaptureError, sqlite3.Error):
        pass  # no capture, or unreadable: the journal read below says why
    return None


def _forward(state_store: StateStore, chain: Checkpoint | None, tampering: list[str]) -> Checkpoint | None:
    """The chain's last forward checkpoint: where SQLite's journal stands (:func:`integrity.forward_of`)."""
    try:
        return integrity.forward_of(state_store, chain)
    except ChainBroken as exc:
        tampering.append(exc.message)
        return None


def _chain_head(state_store: StateStore, tampering: list[str]) -> Checkpoint | None:
    try:
        return store.latest(state_store.conn, schema=state_store.schema_name)
    except ChainBroken as exc:
        tampering.append(exc.message)
        return None
    except NoChainTable:
        return None


class _Journal(msgspec.Struct):
    head: int | None
    seconds: float | None
    note: str
    source_id: str | None
    tampering: list[str]
    fenced: bool | None = None


def _journal(sconn: sqlite3.Connection | None, note: str, applied: int) -> _Journal:
    """The journal head, seconds behind from the first unapplied stamped entry, and the source id."""
    if sconn is None:
        return _Journal(None, None, note, None, [])
    try:
        with journal.read_transaction(sconn) as head:
            seconds = _stamped_age(sconn, applied)
            meta = read_meta(sconn)
            fenced = bool(fence.status_on(sconn).tables)
        return _Journal(head, seconds, "", None if meta is None else meta.source_id, [], fenced)
    except JournalTampered as exc:
        return _Journal(None, None, exc.message, None, [exc.message])
    except (CaptureError, sqlite3.Error) as exc:
        return _Journal(None, None, str(getattr(exc, "message", exc)), None, [])


def _missing(name: str, quarantined: int) -> TableStatus:
    return TableStatus(name, name, 0, 0, 0, None, None, quarantined)


def _tables(state_store: StateStore) -> list[TableStatus]:
    if not state_store.has_table("apply_tables"):
        return []
    rows = state_store.execute(
        "SELECT table_name, target_table, digest_count, upserted, deleted, last_seq, last_change_at, error, hint "
        "FROM {schema}.apply_tables ORDER BY table_name"
    ).fetchall()
    return [
        TableStatus(
            table=r[0],
            target=r[1],
            rows=int(r[2]),
            upserted=int(r[3]),
            deleted=int(r[4]),
            last_seq=r[5],
            last_change_at=r[6],
            error=r[7],
            hint=r[8],
        )
        for r in rows
    ]


def _daemon_running(conn: psycopg.Connection[Any], source_id: str) -> bool:
    """A daemon holds the advisory lock keyed by the source id for as long as it runs."""
    key = lock.lock_key(source_id) & 0xFFFF_FFFF_FFFF_FFFF
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND classid::bigint = %s AND objid::bigint = %s AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
        (key >> 32, key & 0xFFFF_FFFF),
    ).fetchone()
    return bool(row and row[0])


def _stamped_age(conn: sqlite3.Connection, applied: int) -> float | None:
    """Age of the oldest unapplied entry when the triggers stamp ``ts_ms`` (install --stamp-time)."""
    try:
        row = conn.execute(
            'SELECT ts_ms FROM "_replicator_journal" WHERE seq > ? AND ts_ms IS NOT NULL ORDER BY seq LIMIT 1',
            (applied,),
        ).fetchone()
    except sqlite3.OperationalError:  # a journal without the ts_ms column
        return None
    if row is None:
        return None
    now_ms = dt.datetime.now(dt.UTC).timestamp() * 1000
    return max(0.0, (now_ms - int(row[0])) / 1000.0)


def render(status: Status) -> None:
    """Human-readable status on stdout."""
    from rich.console import Console
    from rich.markup import escape  # app names are text, never markup ("[/x]" crashed rich)
    from rich.table import Table

    console = Console()
    style = "red" if status.phase == "ERRORED" else "green" if status.phase == "STREAMING" else "yellow"
    daemon = ""
    if status.daemon_running is not None and status.window is not None and status.window.state == "open":
        # after the cutover only the reverse direction (or a rollback, a finalize) holds the lock; the phase
        # row's pid is the forward daemon's, long gone
        daemon = ", reverse direction running" if status.daemon_running else ", reverse direction not running"
    elif status.daemon_running is not None:
        daemon = (
            f", daemon running (pid {status.pid} on {status.host})" if status.daemon_running else ", no daemon running"
        )
    console.print(f"phase [{style}]{status.phase}[/{style}]{daemon}")
    if status.reason:
        console.print(f"  error: {escape(status.reason)}")
        console.print(f"  hint:  {escape(status.hint or '')}")
    if status.problem:
        console.print(f"[red]problem: {escape(status.problem)}[/red]")
        console.print(f"  hint:  {escape(status.problem_hint)}")
    for finding in status.tampering:
        console.print(f"[red]tampered: {escape(finding)}[/red]")
    if status.tampering:
        console.print(f"  hint:  {escape(integrity.HINT)}")
    if status.stalled_s is not None:
        console.print(
            f"[red]stalled: {status.changes_behind:,} change(s) wait and the daemon (pid {status.pid}) has "
            f"recorded no progress for {status.stalled_s:.0f} s[/red]"
        )
        console.print(
            "  hint:  see its log; if it does not recover, stop it (SIGTERM) and start `replicator run` again"
        )
    head = "?" if status.journal_head is None else str(status.journal_head)
    behind = "?" if status.changes_behind is None else f"{status.changes_behind:,}"
    seconds = "?" if status.seconds_behind is None else f"{status.seconds_behind:.1f} s"
    console.print(f"applied seq {status.applied_seq:,} of journal head {head}: {behind} change(s) behind, {seconds}")
    console.print(
        f"apply rate {status.rate:,.0f} changes/s" + (f"; {status.source_note}" if status.source_note else "")
    )
    if status.last_checkpoint is not None:
        cp = status.last_checkpoint
        where = f"horizon {cp.seq_to + 1}" if cp.kind in window_mod.KINDS else f"seq {cp.seq_to}"
        console.print(f"last checkpoint {cp.number} ({cp.kind}, {where}, {cp.at}), chain head {cp.hash[:16]}…")
    if status.window is not None:
        for line in window_mod.lines(status.window):
            console.print(line, highlight=False)
    if status.quarantined:
        console.print(f"[yellow]{status.quarantined} quarantined value(s) not acknowledged[/yellow]")
    out = Table()
    for column in ("table", "rows", "upserted", "deleted", "last seq", "last change", "quarantined", "error"):
        out.add_column(column)
    for t in status.tables:
        out.add_row(
            escape(t.table),
            f"{t.rows:,}",
            f"{t.upserted:,}",
            f"{t.deleted:,}",
            "" if t.last_seq is None else str(t.last_seq),
            "" if t.last_change_at is None else t.last_change_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(t.quarantined or ""),
            escape((t.error or "") + (f" ({t.hint})" if t.hint else "")),
            style="red" if t.error else None,
        )
    console.print(out)
    for s in status.skipped:  # left out on purpose: not an error
        ignored = f"; {s.ignored:,} journal entr{'y' if s.ignored == 1 else 'ies'} ignored" if s.ignored else ""
        console.print(f"[dim]{escape(s.table)} skipped: {escape(s.reason)}{ignored}[/dim]")
