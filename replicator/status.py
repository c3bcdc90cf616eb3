"""``replicator status``: where the apply stands, read from the target's state schema and the journal.

Works while the daemon runs: it only reads (PostgreSQL in autocommit, SQLite through a read-only
connection), so it never blocks the daemon or the app. Nothing here is cached by the daemon for us:
the phase row, the per-table rows and the checkpoint head are committed with each batch, so what
status shows is what PostgreSQL holds.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from checkpoints import store
from checkpoints.errors import CheckpointError
from replicator import pg, phase, quarantine, skips
from replicator.config import Config
from triggers import fence, journal
from triggers import source as sqlite_source
from triggers.errors import CaptureError
from triggers.install import read_meta


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
    skipped: tuple[skips.SkippedTable, ...] = ()
    """Tables the migration leaves out on purpose (not errors): the reason and the journal entries ignored."""
    fenced: bool | None = None
    """Whether the SQLite file carries the cutover's write fence (None: source unknown)."""
    problem: str = ""
    """A state that needs the operator although the phase looks healthy (``status`` exits 1): a cutover
    interrupted between its two commits, or a cut-over target whose SQLite file is writable again."""
    problem_hint: str = ""


def read_status(dsn: str, config: Config, source: Path | None = None) -> Status:
    """Everything ``status`` shows, from one target connection and one journal read."""
    schema = config.target.state_schema
    with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as conn:
        state = phase.read(conn, schema)
        head = _checkpoint_head(conn, schema)
        left_out = tuple(skips.read(conn, schema))
        named = {s.table for s in left_out}
        tables = [t for t in _tables(conn, schema) if t.table not in named]
        waiting = quarantine.unacknowledged(conn, schema)
        applied = state.applied_seq if state is not None else (head.seq_to if head is not None else 0)
        journal_head, seconds, note, source_id, fenced = _journal(source, config, applied)
        running = None if source_id is None else _daemon_running(conn, source_id)
    problem, problem_hint = _two_sides(str(state.phase) if state is not None else "NONE", fenced)
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
        fenced=fenced,
        problem=problem,
        problem_hint=problem_hint,
    )


def _two_sides(current: str, fenced: bool | None) -> tuple[str, str]:
    """What the phase alone cannot show: the SQLite side disagrees with it (see cutover, step 6)."""
    if fenced is None or current == "NONE":
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


def _missing(name: str, quarantined: int) -> TableStatus:
    return TableStatus(name, name, 0, 0, 0, None, None, quarantined)


def _checkpoint_head(conn: psycopg.Connection[Any], schema: str) -> CheckpointHead | None:
    try:
        cp = store.latest(conn, schema=schema)
    except CheckpointError as exc:
        if "there is no checkpoint table" in exc.message:
            return None
        raise
    if cp is None:
        return None
    return CheckpointHead(cp.number, str(cp.kind), cp.seq_to, cp.at, cp.hash)


def _tables(conn: psycopg.Connection[Any], schema: str) -> list[TableStatus]:
    found = conn.execute("SELECT to_regclass(%s)", (sql.Identifier(schema, "apply_tables").as_string(conn),))
    row = found.fetchone()
    if not row or row[0] is None:
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT table_name, target_table, digest_count, upserted, deleted, last_seq, last_change_at, error, hint "
            "FROM {}.apply_tables ORDER BY table_name"
        ).format(sql.Identifier(schema))
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


def _journal(
    source: Path | None, config: Config, applied: int
) -> tuple[int | None, float | None, str, str | None, bool | None]:
    """(journal head, seconds behind from the first unapplied stamped entry, a note, the source id, fenced)."""
    if source is None:
        return None, None, "no --source: journal head unknown", None, None
    try:
        conn = sqlite_source.connect(source, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms)
    except CaptureError as exc:
        return None, None, exc.message, None, None
    try:
        with journal.read_transaction(conn) as head:
            seconds = _stamped_age(conn, applied)
            meta = read_meta(conn)
            fenced = bool(fence.status_on(conn).tables)
        return head, seconds, "", None if meta is None else meta.source_id, fenced
    except (CaptureError, sqlite3.Error) as exc:
        return None, None, str(getattr(exc, "message", exc)), None, None
    finally:
        conn.close()


def _daemon_running(conn: psycopg.Connection[Any], source_id: str) -> bool:
    """A daemon holds the advisory lock keyed by the source id for as long as it runs."""
    from replicator.worker import lock_key

    key = lock_key(source_id) & 0xFFFF_FFFF_FFFF_FFFF
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
    if status.daemon_running is not None:
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
    head = "?" if status.journal_head is None else str(status.journal_head)
    behind = "?" if status.changes_behind is None else f"{status.changes_behind:,}"
    seconds = "?" if status.seconds_behind is None else f"{status.seconds_behind:.1f} s"
    console.print(f"applied seq {status.applied_seq:,} of journal head {head}: {behind} change(s) behind, {seconds}")
    console.print(
        f"apply rate {status.rate:,.0f} changes/s" + (f"; {status.source_note}" if status.source_note else "")
    )
    if status.last_checkpoint is not None:
        cp = status.last_checkpoint
        console.print(f"last checkpoint {cp.number} ({cp.kind}, seq {cp.seq_to}, {cp.at}), chain head {cp.hash[:16]}…")
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
