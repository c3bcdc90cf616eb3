"""One SQLite state read by two processes: the main process's read transaction and the helper's twin.

pgcopydb splits a big table into ranges that several connections COPY at once, each in the *same*
source snapshot (``pg_export_snapshot``). SQLite cannot hand a snapshot to another connection here
(``sqlite3_snapshot_open`` needs ``SQLITE_ENABLE_SNAPSHOT``, which the system library lacks and the
``sqlite3`` module does not expose), but two read transactions see the same state when no write
commits between their starts, and that can be *proved* after the fact: ``PRAGMA data_version`` on a
third, idle connection changes when any other connection commits (SQLite's documented use of it).
So: read it, open the main read transaction, have the helper open its own, read it again. Equal
values: no commit came between the first read and the last, so both transactions see the state the
first read saw (each started inside that window and sees the newest commit). A VACUUM, a migration,
a write to a table capture does not watch: any commit moves the counter, so none can slip through.

That is WAL mode, where readers never block writers. In rollback-journal mode (SQLite's default, and
Django's, Prisma's and SQLAlchemy's unless the app changes it) the planning transaction's SHARED lock
keeps every commit out for as long as it is held, so the helper's twin, opened while it is held, reads
exactly its state: the planning transaction is the one paired, and no probe is needed.

The window is two messages to the helper and back (well under a millisecond when the helper is
idle); an app that commits inside it makes us try again, a few times, with a new pair. If every
try loses the race (an app committing without pause), the run keeps its planning transaction and
the dominant table is read by the main process alone (:mod:`replicator.load.share`, the slower but
equally exact way). With a twin, the helper reads rowid ranges of a dominant table itself and loads
its whole tables from the twin too: every row of the snapshot is the state at the journal mark.

The pairing happens after the plan (made in the caller's transaction while the helper starts), so
the main process never waits for the helper to start. The plan needs only the schema of the state
loaded: the schema version of the new transaction must equal the planning one's, else no pair is
made and the planning transaction (still open) is the one the rows come from. Rows committed between
the plan and the pair are loaded with the types chosen before them, exactly as rows committed after
the snapshot are applied with them (and as the helper's tables always were, profiled in one of its
transactions and loaded in a later one): a sampled table verifies every row and is re-planned on a
contradiction, and a value a profiled type cannot hold is refused by name or quarantined, never altered.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import wait
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from replicator import log
from replicator.config import Config
from replicator.load.source import open_source
from triggers import source as sqlite_source
from triggers.errors import SourceBusy, SourceError

if TYPE_CHECKING:
    from replicator.load.helper import Helper

#: Tries at a pair before the run goes on with its planning transaction alone.
ATTEMPTS: Final = 8
#: How long the pairing waits for the helper to have started (it started while the plan was made).
START_WAIT_S: Final = 30.0

_held: sqlite3.Connection | None = None


# --- the helper's side ----------------------------------------------------------------------------


def hold(path: str, config: Config) -> str:
    """In the helper: open (or re-open) its twin read transaction and keep it for the rest of its life;
    why it could not, or "" (our errors do not all pickle: the reason travels as text)."""
    global _held  # one twin per helper process, replaced by each try at a pair
    release()
    try:
        _held = open_source(Path(path), config)
    except (SourceError, SourceBusy, sqlite3.Error) as exc:
        return f"the helper could not read the source: {exc}"
    return ""


def release() -> None:
    """In the helper: end the twin (a lost race, or nothing more to read)."""
    global _held  # see hold
    if _held is not None:
        _held.close()
        _held = None


def held() -> sqlite3.Connection | None:
    """In the helper: the twin read transaction, when the main process paired one with its own."""
    return _held


# --- the main process's side ----------------------------------------------------------------------


class Pairing(msgspec.Struct, frozen=True):
    """What :func:`pair` found: whether the helper holds a twin of the returned connection's state."""

    twin: bool
    attempts: int
    reason: str = ""


def data_version(probe: sqlite3.Connection) -> int:
    return int(probe.execute("PRAGMA data_version").fetchone()[0])


def journal_mode(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA schema_version").fetchone()[0])


def pair(
    planning: sqlite3.Connection, path: Path, config: Config, helper: Helper
) -> tuple[sqlite3.Connection, Pairing]:
    """A read transaction of the main process that the helper holds a twin of, or ``planning`` itself.

    WAL mode: a new transaction, proved by the probe; ``planning`` (open, its plan made) is left as it
    is, and the caller ends it when a new transaction is returned (it must stay open until then: its
    schema version is what the new one is checked against). Rollback-journal mode: ``planning`` itself
    (:func:`_pair_locked`).
    """
    bound = log.get("snapshot")
    wait([helper.started], timeout=START_WAIT_S)
    if not helper.started.done() or helper.started.exception() is not None:
        return planning, Pairing(twin=False, attempts=0, reason="the helper process did not start")
    if journal_mode(planning) != "wal":
        return planning, _pair_locked(path, config, helper)
    planned = schema_version(planning)
    attempt, reason = 0, "no try was made (twin.ATTEMPTS is 0)"
    probe = sqlite_source.connect(path, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms)
    try:
        for attempt in range(1, ATTEMPTS + 1):
            conn, reason = _try(probe, path, config, helper, planned)
            if conn is not None:
                bound.info("the helper reads the same SQLite state", attempts=attempt)
                return conn, Pairing(twin=True, attempts=attempt)
            if "schema" in reason:
                break
    finally:
        probe.close()
    bound.info("the helper reads its own SQLite state; dominant tables are read here", reason=reason)
    return planning, Pairing(twin=False, attempts=attempt, reason=reason)


def _pair_locked(path: Path, config: Config, helper: Helper) -> Pairing:
    """Rollback-journal mode: the planning transaction's SHARED lock has kept every commit out since
    its first read (a writer needs every reader gone), so a twin the helper opens while it is held
    reads exactly its state: no new transaction, no probe. A writer already waiting to commit holds
    PENDING, which refuses new readers: the helper then gives up at once (it would wait for a writer
    that waits for us) and the run goes on without a twin."""
    at_once = msgspec.structs.replace(config, source=msgspec.structs.replace(config.source, busy_timeout_ms=0))
    failed = helper.pool.submit(hold, str(path), at_once).result()
    if failed:
        helper.pool.submit(release).result()
        log.get("snapshot").info("the helper reads its own SQLite state; dominant tables are read here", reason=failed)
        return Pairing(twin=False, attempts=1, reason=failed)
    log.get("snapshot").info("the helper reads the same SQLite state", attempts=1, locked=True)
    return Pairing(twin=True, attempts=1)


def _try(
    probe: sqlite3.Connection, path: Path, config: Config, helper: Helper, planned: int
) -> tuple[sqlite3.Connection | None, str]:
    """One try at a pair: the new main transaction, or None and why not (the helper then holds none)."""
    try:
        before = data_version(probe)
        conn = open_source(path, config)
    except (SourceError, SourceBusy, sqlite3.Error) as exc:  # WAL recovery by another connection...
        return None, f"the source could not be read: {exc}"
    try:
        failed = helper.pool.submit(hold, str(path), config).result()
        reason = failed or (
            "the app committed during every try"
            if data_version(probe) != before
            else ("the SQLite schema changed after the plan was made" if schema_version(conn) != planned else "")
        )
    except (SourceError, SourceBusy, sqlite3.Error) as exc:
        reason = f"the source could not be read: {exc}"
    except BaseException:
        conn.close()
        raise
    if not reason:
        return conn, ""
    conn.close()
    helper.pool.submit(release).result()
    return None, reason
