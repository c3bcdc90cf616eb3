"""The replicator's own state in the target: a schema (``replicator`` by default) we own entirely.

It lives in PostgreSQL, not in a local file, so that every later stage (apply, verify, cutover)
and every operator on any machine reads the same truth, and so that a table's state row commits in
the same transaction as the table's data: a crash can never leave "loaded" recorded for rows that
are not there. The tables themselves are laid out by :mod:`replicator.state.stateschema`.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from triggers import source as sqlite_source
from triggers.errors import SourceError


class SourceIdentity(msgspec.Struct, frozen=True):
    path: str
    id: str
    """Stable identity of the SQLite file: device, inode and the database header's creation facts."""


#: Header fields that never change while an app writes: page size, file format versions, reserved
#: bytes, payload fractions (16..24), text encoding (56..60) and application id (68..72). The change
#: counter, the schema cookie and the version-valid-for number change with writes, so a resumed
#: snapshot of the same live file would otherwise look like another file.
_STABLE_HEADER = ((16, 24), (56, 60), (68, 72))


def source_identity(path: Path) -> SourceIdentity:
    """Identify the source file so a later stage can refuse a different file at the same path.

    File identity (device, inode) plus the header fields that writes never change: stable for one
    live file however much the app writes, different for another file moved into place. When capture
    is installed, the snapshot uses the capture's own random source id instead (see
    :func:`capture_identity`), which survives even a copy of the file.
    """
    resolved = path.resolve()
    st = resolved.stat()
    header = sqlite_source.read_header(resolved)  # never an open() that would drop this process's SQLite locks
    if header is None:
        raise SourceError(f"cannot read the header of source {resolved}", hint="check that this user can read the file")
    stable = b"".join(header[a:b] for a, b in _STABLE_HEADER)
    digest = hashlib.sha256(f"{st.st_dev}:{st.st_ino}:".encode() + stable).hexdigest()[:16]
    return SourceIdentity(path=os.fspath(resolved), id=digest)


def capture_identity(path: str, capture_source_id: str) -> SourceIdentity:
    """The identity of a source whose capture is installed: the id the triggers' meta table holds."""
    return SourceIdentity(path=path, id=f"capture:{capture_source_id}")


KILLED_MESSAGE = "the process ended without recording an outcome: killed, or it lost its connection"


def mark_killed(conn: psycopg.Connection[Any], schema_name: str) -> int:
    """Mark ``killed`` each run still ``running`` whose PostgreSQL session is gone.

    A run killed by SIGKILL, the OOM killer or a power cut cannot record its own end. Its session can: each
    run records the backend that started it (pid and start time, so a reused pid is not mistaken for it),
    and PostgreSQL ends that backend when the process's connection closes. Every command that opens the
    state (snapshot and import run this after :func:`replicator.state.stateschema.ensure`) settles such runs, so none
    stays ``running`` forever."""
    cur = conn.execute(
        sql.SQL(
            "UPDATE {}.runs r SET status = 'killed', finished_at = now(), message = %s "
            "WHERE r.status = 'running' AND r.backend_pid IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.backend_pid AND a.backend_start = r.backend_start)"
        ).format(sql.Identifier(schema_name)),
        (KILLED_MESSAGE,),
    )
    return cur.rowcount


def start_run(
    conn: psycopg.Connection[Any], schema_name: str, *, command: str, mode: str, source: SourceIdentity
) -> int:
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {}.runs (command, mode, source_path, source_id, backend_pid, backend_start) "
            "SELECT %s, %s, %s, %s, pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid() "
            "RETURNING id"
        ).format(sql.Identifier(schema_name)),
        (command, mode, source.path, source.id),
    ).fetchone()
    assert row is not None
    return int(row[0])


def finish_run(
    conn: psycopg.Connection[Any],
    schema_name: str,
    run_id: int,
    *,
    status: str,
    rows: int | None = None,
    quarantined: int | None = None,
    message: str | None = None,
) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {}.runs SET finished_at = now(), status = %s, rows = %s, quarantined = %s, message = %s "
            "WHERE id = %s"
        ).format(sql.Identifier(schema_name)),
        (status, rows, quarantined, message, run_id),
    )


def record_table(
    conn: psycopg.Connection[Any],
    schema_name: str,
    *,
    table: str,
    target_table: str,
    rows: int,
    quarantined: int,
    seconds: float,
    source: SourceIdentity,
    run_id: int,
    checksum: str | None = None,
    snapshot_seq: int | None = None,
) -> None:
    """Mark a table loaded; called inside the table's own load transaction.

    ``checksum`` is the table's :mod:`checkpoints.digest` hexdigest over the rows loaded;
    ``snapshot_seq`` the journal high-water mark of the read transaction the rows came from (None
    when capture is not installed).
    """
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.snapshot_tables (table_name, target_table, rows, quarantined, seconds, finished_at, "
            "source_path, source_id, run_id, checksum, snapshot_seq) "
            "VALUES (%s, %s, %s, %s, %s, now(), %s, %s, %s, %s, %s) "
            "ON CONFLICT (table_name) DO UPDATE SET target_table = EXCLUDED.target_table, rows = EXCLUDED.rows, "
            "quarantined = EXCLUDED.quarantined, seconds = EXCLUDED.seconds, finished_at = EXCLUDED.finished_at, "
            "source_path = EXCLUDED.source_path, source_id = EXCLUDED.source_id, run_id = EXCLUDED.run_id, "
            "checksum = EXCLUDED.checksum, snapshot_seq = EXCLUDED.snapshot_seq"
        ).format(sql.Identifier(schema_name)),
        (table, target_table, rows, quarantined, seconds, source.path, source.id, run_id, checksum, snapshot_seq),
    )


def forget_tables(conn: psycopg.Connection[Any], schema_name: str, names: list[str] | None = None) -> None:
    """Drop the loaded marks of ``names`` (all when None): ``--replace`` reloads them from scratch."""
    if names is None:
        conn.execute(sql.SQL("DELETE FROM {}.snapshot_tables").format(sql.Identifier(schema_name)))
    else:
        conn.execute(
            sql.SQL("DELETE FROM {}.snapshot_tables WHERE table_name = ANY(%s)").format(sql.Identifier(schema_name)),
            (names,),
        )


class Mark(msgspec.Struct, frozen=True):
    """Where streaming starts: the journal position the snapshot was read at (None: no capture)."""

    source_path: str
    source_id: str
    snapshot_seq: int | None
    genesis_hash: str | None
    run_id: int | None


def record_mark(
    conn: psycopg.Connection[Any],
    schema_name: str,
    *,
    source: SourceIdentity,
    snapshot_seq: int | None,
    genesis_hash: str | None,
    run_id: int,
) -> None:
    """Record the snapshot's journal high-water mark (the daemon streams from ``snapshot_seq + 1``)."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.replication (id, source_path, source_id, snapshot_seq, genesis_hash, run_id) "
            "VALUES (1, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET source_path = EXCLUDED.source_path, "
            "source_id = EXCLUDED.source_id, snapshot_seq = EXCLUDED.snapshot_seq, "
            "genesis_hash = EXCLUDED.genesis_hash, run_id = EXCLUDED.run_id, recorded_at = now()"
        ).format(sql.Identifier(schema_name)),
        (source.path, source.id, snapshot_seq, genesis_hash, run_id),
    )
    conn.execute(
        sql.SQL("UPDATE {}.runs SET snapshot_seq = %s WHERE id = %s").format(sql.Identifier(schema_name)),
        (snapshot_seq, run_id),
    )


def read_mark(conn: psycopg.Connection[Any], schema_name: str) -> Mark | None:
    """The recorded mark; None before a snapshot finished (or when the state schema is absent)."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"{_quoted(schema_name)}.replication",)).fetchone()
    if not exists or exists[0] is None:
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT source_path, source_id, snapshot_seq, genesis_hash, run_id FROM {}.replication WHERE id = 1"
        ).format(sql.Identifier(schema_name))
    ).fetchone()
    return None if row is None else Mark(*row)


def clear_mark(conn: psycopg.Connection[Any], schema_name: str) -> None:
    conn.execute(sql.SQL("DELETE FROM {}.replication").format(sql.Identifier(schema_name)))


class TableState(msgspec.Struct, frozen=True):
    table_name: str
    target_table: str
    rows: int
    quarantined: int
    finished_at: datetime
    source_path: str
    source_id: str
    checksum: str | None = None
    snapshot_seq: int | None = None


def loaded_tables(conn: psycopg.Connection[Any], schema_name: str) -> dict[str, TableState]:
    """What ``snapshot_tables`` records; empty when the state schema does not exist yet."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"{_quoted(schema_name)}.snapshot_tables",)).fetchone()
    if not exists or exists[0] is None:
        return {}
    rows = conn.execute(
        sql.SQL(
            "SELECT table_name, target_table, rows, quarantined, finished_at, source_path, source_id, "
            "checksum, snapshot_seq FROM {}.snapshot_tables"
        ).format(sql.Identifier(schema_name))
    ).fetchall()
    return {r[0]: TableState(*r) for r in rows}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def last_snapshot_mode(conn: psycopg.Connection[Any], schema_name: str) -> str | None:
    """The mode of the most recent snapshot run recorded in this target, if any."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"{_quoted(schema_name)}.runs",)).fetchone()
    if not exists or exists[0] is None:
        return None
    row = conn.execute(
        sql.SQL("SELECT mode FROM {}.runs WHERE command = 'snapshot' ORDER BY id DESC LIMIT 1").format(
            sql.Identifier(schema_name)
        )
    ).fetchone()
    return str(row[0]) if row else None
