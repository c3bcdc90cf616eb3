"""Write fencing of the old SQLite file after cutover: every write fails, every read still works.

Why: after cutover the application must write to PostgreSQL only. A forgotten worker, cron job or
second app instance still pointed at the SQLite file would otherwise keep writing there, and its
writes would be silently lost. The fence turns each such write into an immediate, explicit error
whose message says where the data went.

How: on every ordinary table, three ``BEFORE INSERT / UPDATE / DELETE`` triggers whose body reads a
table that does not exist and whose name is the message:
``SELECT 1 FROM "this database was migrated to PostgreSQL at <time>; writes are fenced"``. SQLite
compiles a table's triggers into every statement that would fire them, for every connection and
every process (triggers live in the file's schema), so each such statement fails when it is prepared,
before any row is touched, with ``SQLITE_ERROR`` and the message "no such table: main.this database
was migrated ...". That covers INSERT, UPDATE, DELETE, ``REPLACE``/``INSERT OR REPLACE`` and UPSERT,
``INSERT OR IGNORE`` (no conflict is involved, so IGNORE does not swallow it), a DELETE without WHERE
(triggers disable the truncate optimisation) and FK cascades (the child table is fenced too).

Why not ``RAISE(ABORT, ...)``: RAISE always reports ``SQLITE_CONSTRAINT``, which Python's sqlite3 (and
so Django, SQLAlchemy, Optuna) raises as ``IntegrityError``, the class ORMs read as "duplicate key":
Django's session ``create()`` retried it forever, ``get_or_create`` went to read the row it believed
another process had inserted, and Optuna reported "already exists". ``SQLITE_ERROR`` arrives as
``OperationalError``, which every ORM propagates as the failure it is.

Limits, by SQLite's design, documented so nobody relies on more than the fence gives:

* DDL: ``ALTER TABLE ... RENAME`` (of any table or column) and ``ALTER TABLE ... DROP COLUMN`` fail,
  because SQLite re-checks every trigger body when it changes a table that way, so an ORM's
  table-rebuild migration fails on a fenced file; ``CREATE`` (tables, indexes), ``DROP TABLE``,
  ``ALTER TABLE ... ADD COLUMN`` and a ``DROP TRIGGER`` of the fence itself are not blocked (a table
  created after the fence is not fenced: ``status_on`` lists it); ``VACUUM`` still runs (it writes no rows).
* A connection that disabled triggers (``SQLITE_DBCONFIG_ENABLE_TRIGGER`` off) or edits
  ``sqlite_schema`` with ``writable_schema`` is not fenced.
* Virtual tables (FTS...) cannot have triggers; they are listed in the report as not fenced.
* Our own tables (exactly the journal, meta and fence record tables: ``triggers.names``) are not
  fenced, so a final drain can run. An app table that merely starts with ``_replicator_`` is fenced.
* A statement that writes no row (an UPDATE matching nothing) succeeds: nothing was written.
* After ``unfence``, a connection that was refused a write keeps the schema it had (SQLite re-reads
  the schema when a statement fails on a *stale* table only for the statement's own tables, not for
  a trigger's): its writes fail until it next reads anything or reconnects. New connections, and
  connections that never wrote to a fenced table, write at once. An app going back to SQLite restarts
  anyway (its database URL changes back); ``unfence`` says so.

Naming: ``_replicator_fence_{ins,upd,del}_<table>`` (deterministic, so fencing twice is a no-op).
The capture triggers are ``_replicator_{ins,upd,del}_<table>``, so the two never collide.

Record: the fence time and message go into ``_replicator_meta`` when capture is installed (rows, so
the schema does not change for them), else into a small table of our own, ``_replicator_fence``.
``unfence`` drops exactly what ``fence`` added: ``sqlite_schema`` is then row for row what it was.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import structlog

from triggers import names
from triggers.meta import read_meta
from triggers.names import FENCE_TABLE, META
from triggers.schema import quote_ident, read_schema
from triggers.source import DEFAULT_BUSY_TIMEOUT_MS, opened, translate

KEY_AT = "fenced_at"
KEY_MESSAGE = "fence_message"
_EVENTS = (("ins", "INSERT"), ("upd", "UPDATE"), ("del", "DELETE"))
_MESSAGE_AT = re.compile(r"migrated to PostgreSQL at ([^;'\"]+); writes are fenced")


class FenceReport(msgspec.Struct, frozen=True):
    """What ``fence_on`` did: the tables it fenced, what it created, and what it cannot fence."""

    at: str
    """The fence time, ISO-8601 UTC, as written in the message."""
    message: str
    tables: tuple[str, ...]
    created: tuple[str, ...]
    """Trigger names created or re-created by this call (empty when the fence was already in place)."""
    not_fenced: tuple[str, ...] = ()
    """Virtual tables: triggers are impossible on them (see the module docstring)."""
    recorded_in: str = ""


class UnfenceReport(msgspec.Struct, frozen=True):
    dropped: tuple[str, ...]
    """Trigger names dropped."""
    record_removed: bool
    was_fenced_at: str | None = None


class FenceStatus(msgspec.Struct, frozen=True):
    fenced: bool
    """Every ordinary table carries all three fence triggers (the record is informational)."""
    at: str | None
    message: str | None
    tables: tuple[str, ...]
    """Tables carrying at least one fence trigger."""
    unfenced_tables: tuple[str, ...]
    """Ordinary tables missing a fence trigger (created after fencing, or a trigger dropped by hand)."""


def trigger_name(table: str, event: str) -> str:
    """``_replicator_fence_ins_<table>`` etc.: the same table and event always give the same name."""
    return names.fence_trigger_name(table, event)


def fence_message(at: str, message_extra: str = "") -> str:
    text = f"this database was migrated to PostgreSQL at {at}; writes are fenced"
    return f"{text}; {message_extra}" if message_extra else text


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is a write the fence refused: SQLite's ``SQLITE_ERROR`` for the missing table a fence
    trigger names, and that name is :func:`fence_message`'s (read with the same pattern :func:`status_on` uses).

    Why here: the demo's writer, the demo's last step and the tests tell a fenced write from any other failure;
    the message is ours, so it is recognised in the module that writes it, and by the result code first (a
    locked or corrupt file is never taken for the fence)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.OperationalError)
        and isinstance(code, int)
        and code & 0xFF == sqlite3.SQLITE_ERROR
        and _MESSAGE_AT.search(str(exc)) is not None
    )


def trigger_sql(table: str, event: str, keyword: str, message: str) -> str:
    """One fence trigger; identifiers quoted, the message a quoted identifier: nothing injectable."""
    name = quote_ident(trigger_name(table, event))
    body = f"SELECT 1 FROM {quote_ident(message)}"  # noqa: S608 - a quoted identifier, prepared to fail
    return f"CREATE TRIGGER {name} BEFORE {keyword} ON {quote_ident(table)} BEGIN {body}; END"


def _format_at(at: datetime | str | None) -> str | None:
    if at is None or isinstance(at, str):
        return at
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _fence_triggers(conn: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    """Every fence trigger in the file: name → (table, SQL). Ours by :func:`triggers.names.is_fence_trigger`
    (named for the table it sits on, or for one the capture record names: renamed since); an app
    trigger that merely shares our prefix is never touched."""
    meta = read_meta(conn)
    former = meta.tables.keys() if meta is not None else ()
    rows = conn.execute("SELECT name, tbl_name, sql FROM sqlite_schema WHERE type = 'trigger'").fetchall()
    return {str(n): (str(t), str(s)) for n, t, s in rows if names.is_fence_trigger(str(n), str(t), former)}


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row is not None


def _record_table(conn: sqlite3.Connection) -> str | None:
    """Where the fence is recorded now: meta if capture is installed, else our table if present."""
    if _has_table(conn, META):
        return META
    return FENCE_TABLE if _has_table(conn, FENCE_TABLE) else None


def _read_record(conn: sqlite3.Connection) -> tuple[str | None, str | None]:
    values: dict[str, str] = {}
    for table in (META, FENCE_TABLE):
        if _has_table(conn, table):
            query = f"SELECT key, value FROM {quote_ident(table)} WHERE key IN (?, ?)"  # noqa: S608
            values.update({str(k): str(v) for k, v in conn.execute(query, (KEY_AT, KEY_MESSAGE))})
    return values.get(KEY_AT), values.get(KEY_MESSAGE)


def _write_record(conn: sqlite3.Connection, at: str, message: str) -> str:
    table = META if _has_table(conn, META) else FENCE_TABLE
    if table == FENCE_TABLE:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {quote_ident(FENCE_TABLE)} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
    upsert = f"INSERT OR REPLACE INTO {quote_ident(table)} (key, value) VALUES (?, ?)"  # noqa: S608
    conn.execute(upsert, (KEY_AT, at))
    conn.execute(upsert, (KEY_MESSAGE, message))
    return table


@contextmanager
def _transaction(conn: sqlite3.Connection, path: Path | str) -> Iterator[None]:
    """Join the caller's open transaction (cutover holds BEGIN IMMEDIATE), else run in our own."""
    if conn.in_transaction:
        yield
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise translate(exc, path) from None
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if _in_transaction(conn):
            conn.execute("ROLLBACK")
        raise


def _in_transaction(conn: sqlite3.Connection) -> bool:
    """Read afresh: a COMMIT that failed may or may not have ended the transaction."""
    return conn.in_transaction


def fence_on(
    conn: sqlite3.Connection,
    at: datetime | str | None = None,
    message_extra: str = "",
    *,
    path: Path | str = "source",
) -> FenceReport:
    """Fence every ordinary table, inside the caller's open write transaction if there is one.

    ``at`` (default: the time of an existing fence, else now) is written into the message.
    Idempotent: triggers already in place with the same SQL are left alone; ones with another
    message are replaced, and tables created since the last fence are fenced too. The connection
    must be in autocommit mode (``isolation_level=None``) unless the caller opened the transaction.
    """
    log = structlog.get_logger().bind(component="fence", source=str(path))
    with _transaction(conn, path):
        previous_at, _previous_message = _read_record(conn)
        stamp = _format_at(at) or previous_at or _format_at(datetime.now(UTC))
        assert stamp is not None
        message = fence_message(stamp, message_extra)
        schema = read_schema(conn)
        existing = _fence_triggers(conn)
        wanted: dict[str, str] = {}
        for table in schema.tables:
            for event, keyword in _EVENTS:
                wanted[trigger_name(table.name, event)] = trigger_sql(table.name, event, keyword, message)
        created: list[str] = []
        for name, sql in wanted.items():
            if existing.get(name, ("", ""))[1] == sql:
                continue
            if name in existing:
                conn.execute(f"DROP TRIGGER {quote_ident(name)}")
            conn.execute(sql)
            created.append(name)
        for stale in sorted(set(existing) - set(wanted)):  # on a table renamed or dropped since
            conn.execute(f"DROP TRIGGER IF EXISTS {quote_ident(stale)}")
        recorded = _write_record(conn, stamp, message)
    report = FenceReport(
        at=stamp,
        message=message,
        tables=tuple(t.name for t in schema.tables),
        created=tuple(created),
        not_fenced=tuple(v.name for v in schema.virtual_tables),
        recorded_in=recorded,
    )
    log.info("writes fenced", at=stamp, tables=len(report.tables), created=len(created))
    if report.not_fenced:
        log.warning("virtual tables cannot be fenced", tables=list(report.not_fenced))
    return report


def unfence_on(conn: sqlite3.Connection, *, path: Path | str = "source") -> UnfenceReport:
    """Drop every fence trigger and the fence record: writes work again, the schema is as before."""
    with _transaction(conn, path):
        was_at, _message = _read_record(conn)
        names = sorted(_fence_triggers(conn))
        for name in names:
            conn.execute(f"DROP TRIGGER IF EXISTS {quote_ident(name)}")
        removed = False
        if _has_table(conn, FENCE_TABLE):
            conn.execute(f"DROP TABLE {quote_ident(FENCE_TABLE)}")
            removed = True
        if _has_table(conn, META):
            cur = conn.execute(f"DELETE FROM {quote_ident(META)} WHERE key IN (?, ?)", (KEY_AT, KEY_MESSAGE))  # noqa: S608
            removed = removed or cur.rowcount > 0
    structlog.get_logger().bind(component="fence", source=str(path)).info(
        "fence removed", triggers=len(names), was_fenced_at=was_at
    )
    return UnfenceReport(dropped=tuple(names), record_removed=removed, was_fenced_at=was_at)


@contextmanager
def lifted(conn: sqlite3.Connection, tables: Collection[str]) -> Iterator[int]:
    """Inside the caller's open write transaction: every trigger on ``tables`` dropped, then put back SQL for SQL.

    Why: during the rollback window the reverse apply, and only it, writes PostgreSQL's rows into the fenced
    file, and they must land exactly as PostgreSQL holds them: not refused by the fence, not journaled again
    by the capture, not rewritten by an app trigger (Sakila's ``last_update`` triggers would stamp every row
    we write; PostgreSQL's rows already are what the app made of them there). SQLite's DDL is transactional
    and a write transaction excludes every other writer, so between our ``BEGIN IMMEDIATE`` and ``COMMIT``
    nobody else writes, and no reader ever sees the triggers gone: it sees the schema before or after, which
    are the same. The schema cookie changes, so other connections re-prepare their statements once.
    Yields how many triggers were lifted. (``SQLITE_DBCONFIG_ENABLE_TRIGGER`` would do it per connection, but
    Python's ``sqlite3`` exposes it only from 3.12.)"""
    if not conn.in_transaction:
        raise RuntimeError("fence.lifted needs the caller's open write transaction")
    wanted = set(tables)
    saved = [
        (str(name), str(sql))
        for name, table, sql in conn.execute(
            "SELECT name, tbl_name, sql FROM sqlite_schema WHERE type = 'trigger' ORDER BY rowid"
        ).fetchall()
        if table in wanted
    ]
    for name, _sql in saved:
        conn.execute(f"DROP TRIGGER {quote_ident(name)}")
    yield len(saved)
    for _name, sql in saved:
        conn.execute(sql)


def status_on(conn: sqlite3.Connection) -> FenceStatus:
    """Which tables are fenced, and since when (read in one read transaction if none is open)."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        at, message = _read_record(conn)
        triggers = _fence_triggers(conn)
        names = [t.name for t in read_schema(conn).tables]
    finally:
        if own and conn.in_transaction:
            conn.execute("COMMIT")
    on = {table for table, _sql in triggers.values()}
    missing = tuple(n for n in names if any(trigger_name(n, e) not in triggers for e, _k in _EVENTS))
    if at is None and triggers:  # the record went with _replicator_meta (capture removed): read a trigger
        found = _MESSAGE_AT.search(next(iter(triggers.values()))[1])
        at = found.group(1) if found else None
    return FenceStatus(
        fenced=bool(names) and not missing,
        at=at,
        message=message,
        tables=tuple(sorted(on)),
        unfenced_tables=missing,
    )


def is_fenced(conn: sqlite3.Connection) -> bool:
    """True when every ordinary table has its three fence triggers."""
    return status_on(conn).fenced


def fence(
    path: Path | str,
    at: datetime | str | None = None,
    message_extra: str = "",
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
) -> FenceReport:
    """Fence the file at ``path`` in one ``BEGIN IMMEDIATE`` transaction of our own."""
    with opened(path, readonly=False, busy_timeout_ms=busy_timeout_ms) as conn:
        return fence_on(conn, at, message_extra, path=path)


def unfence(path: Path | str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> UnfenceReport:
    """Make the file at ``path`` writable again (emergency rollback of a cutover)."""
    with opened(path, readonly=False, busy_timeout_ms=busy_timeout_ms) as conn:
        return unfence_on(conn, path=path)


def status(path: Path | str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> FenceStatus:
    with opened(path, busy_timeout_ms=busy_timeout_ms) as conn:
        return status_on(conn)


__all__ = [
    "FenceReport",
    "FenceStatus",
    "UnfenceReport",
    "fence",
    "fence_on",
    "is_fenced",
    "lifted",
    "refused",
    "status",
    "status_on",
    "unfence",
    "unfence_on",
]
