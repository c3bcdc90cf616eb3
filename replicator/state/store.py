"""The replicator's own state in the target, as one object: :class:`StateStore`.

The state lives in PostgreSQL, not in a local file, so that every later stage (apply, verify, cutover) and
every operator on any machine reads the same truth, and so that a table's state row commits in the same
transaction as the table's data: a crash can never leave "loaded" recorded for rows that are not there. So a
StateStore is a connection and a schema (``replicator`` by default, ``target.state_schema``), nothing more: it
opens no transaction of its own, and what it writes commits with the caller's transaction on that connection.
Whoever writes a table's rows and its state builds the store on the connection the rows go to.

Its methods are the schema's own bookkeeping: the layout and its version (laid out by
:mod:`replicator.state.stateschema`), the runs, the tables loaded, the snapshot's journal mark, the daemon's
phase row, the saved plan, the reloads owed, the tables left out. The tables with a module of their own take a
StateStore: the quarantine (:mod:`replicator.state.quarantine`), the running digests
(:mod:`replicator.apply.tablestate`), the parked foreign keys (:mod:`replicator.apply.foreignkeys`), the
certificates (:mod:`replicator.cutover.certificate`). The checkpoint chain keeps its own store
(:mod:`checkpoints.store`, which imports nothing of replicator), called with :attr:`StateStore.conn` and
:attr:`StateStore.schema_name`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql
from psycopg.abc import Params

from replicator.plan.schemaplan import SchemaPlan
from replicator.state import stateschema
from replicator.state.identity import SourceIdentity
from replicator.state.phase import COLUMNS, ApplyState, Phase

KILLED_MESSAGE: Final = "the process ended without recording an outcome: killed, or it lost its connection"


class TableState(msgspec.Struct, frozen=True):
    """A table the snapshot (or import) loaded, as ``snapshot_tables`` records it."""

    table_name: str
    target_table: str
    rows: int
    quarantined: int
    finished_at: datetime
    source_path: str
    source_id: str
    checksum: str | None = None
    snapshot_seq: int | None = None


class Mark(msgspec.Struct, frozen=True):
    """Where streaming starts: the journal position the snapshot was read at (None: no capture)."""

    source_path: str
    source_id: str
    snapshot_seq: int | None
    genesis_hash: str | None
    run_id: int | None


class SkippedTable(msgspec.Struct, frozen=True):
    """A table the migration leaves out (:mod:`replicator.plan.skips` says why), as ``skipped_tables`` holds it."""

    table: str
    reason: str
    ignored: int
    """Journal entries consumed without being applied."""
    last_seq: int | None = None


class StateStore:
    """The state schema ``schema_name`` on ``conn``: every statement runs in the caller's transaction."""

    def __init__(self, conn: psycopg.Connection[Any], schema_name: str) -> None:
        self.conn: Final = conn
        self.schema_name: Final = schema_name
        self.schema: Final = sql.Identifier(schema_name)
        """The schema's quoted identifier (``{schema}`` in :meth:`query`)."""

    def table(self, name: str) -> sql.Identifier:
        """The state table ``name``, schema-qualified and quoted."""
        return sql.Identifier(self.schema_name, name)

    def query(self, template: str) -> sql.Composed:
        """``template`` with ``{schema}`` as this schema's identifier."""
        return sql.SQL(template).format(schema=self.schema)

    def execute(self, template: str, params: Params | None = None) -> psycopg.Cursor[Any]:
        """Run ``template`` (``{schema}`` as this schema) on the store's connection."""
        return self.conn.execute(self.query(template), params)

    def has_table(self, name: str) -> bool:
        """Whether the schema holds ``name`` now (one catalog lookup, in the caller's transaction).

        For readers, which never lay the schema out (``status``, ``verify``, the certificate): a table not
        there yet means "nothing yet", not an error."""
        found = self.conn.execute("SELECT to_regclass(%s)", (self.table(name).as_string(self.conn),)).fetchone()
        return found is not None and found[0] is not None

    # --- the layout (:mod:`replicator.state.stateschema`) ----------------------------------------------------

    def ensure(self) -> None:
        """Bring the schema to the layout this code reads and writes; one SELECT when it is there already.
        Every command that writes state calls this first (:func:`replicator.state.stateschema.ensure`)."""
        stateschema.ensure(self)

    def recorded_version(self) -> int:
        """The layout's version the target records; 0 when it records none."""
        return stateschema.recorded_version(self)

    def refuse_newer(self) -> None:
        """For readers that never lay the schema out: refuse a layout a newer replicator wrote."""
        stateschema.refuse_newer(self)

    # --- runs: one row per command run ----------------------------------------------------------------------

    def mark_killed(self) -> int:
        """Mark ``killed`` each run still ``running`` whose PostgreSQL session is gone.

        A run killed by SIGKILL, the OOM killer or a power cut cannot record its own end. Its session can: each
        run records the backend that started it (pid and start time, so a reused pid is not mistaken for it),
        and PostgreSQL ends that backend when the process's connection closes. Every command that opens the
        state (snapshot and import run this after :meth:`ensure`) settles such runs, so none stays ``running``
        forever."""
        return self.execute(
            "UPDATE {schema}.runs r SET status = 'killed', finished_at = now(), message = %s "
            "WHERE r.status = 'running' AND r.backend_pid IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.backend_pid AND a.backend_start = r.backend_start)",
            (KILLED_MESSAGE,),
        ).rowcount

    def start_run(self, *, command: str, mode: str, source: SourceIdentity) -> int:
        """A new ``running`` run, with the backend that runs it (:meth:`mark_killed` reads it); its id."""
        row = self.execute(
            "INSERT INTO {schema}.runs (command, mode, source_path, source_id, backend_pid, backend_start) "
            "SELECT %s, %s, %s, %s, pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid() "
            "RETURNING id",
            (command, mode, source.path, source.id),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        rows: int | None = None,
        quarantined: int | None = None,
        message: str | None = None,
    ) -> None:
        self.execute(
            "UPDATE {schema}.runs SET finished_at = now(), status = %s, rows = %s, quarantined = %s, message = %s "
            "WHERE id = %s",
            (status, rows, quarantined, message, run_id),
        )

    def last_snapshot_mode(self) -> str | None:
        """The mode of the most recent snapshot run recorded in this target, if any."""
        if not self.has_table("runs"):
            return None
        row = self.execute("SELECT mode FROM {schema}.runs WHERE command = 'snapshot' ORDER BY id DESC LIMIT 1")
        found = row.fetchone()
        return str(found[0]) if found else None

    def last_snapshot_source(self) -> str | None:
        """The source id of the most recent snapshot run, finished or not (the schema is laid out)."""
        row = self.execute(
            "SELECT source_id FROM {schema}.runs WHERE command = 'snapshot' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return str(row[0]) if row else None

    def last_loaded_source(self) -> tuple[str, str] | None:
        """The source (path, id) the last successful snapshot loaded; None before one."""
        if not self.has_table("runs"):
            return None
        row = self.execute(
            "SELECT source_path, source_id FROM {schema}.runs WHERE command = 'snapshot' AND status = 'ok' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    # --- the tables loaded (``snapshot_tables``) ------------------------------------------------------------

    def record_table(
        self,
        *,
        table: str,
        target_table: str,
        rows: int,
        quarantined: int,
        seconds: float,
        source: SourceIdentity,
        run_id: int,
        checksum: str | None,
        snapshot_seq: int | None,
    ) -> None:
        """Mark a table loaded; called inside the table's own load transaction.

        ``checksum`` is the table's :mod:`checkpoints.digest` hexdigest over the rows loaded;
        ``snapshot_seq`` the journal high-water mark of the read transaction the rows came from (None
        when capture is not installed: an import). Both are said by every caller: a mark left out by
        mistake would make the snapshot's end refuse the table as loaded before capture.
        """
        self.execute(
            "INSERT INTO {schema}.snapshot_tables (table_name, target_table, rows, quarantined, seconds, "
            "finished_at, source_path, source_id, run_id, checksum, snapshot_seq) "
            "VALUES (%s, %s, %s, %s, %s, now(), %s, %s, %s, %s, %s) "
            "ON CONFLICT (table_name) DO UPDATE SET target_table = EXCLUDED.target_table, rows = EXCLUDED.rows, "
            "quarantined = EXCLUDED.quarantined, seconds = EXCLUDED.seconds, finished_at = EXCLUDED.finished_at, "
            "source_path = EXCLUDED.source_path, source_id = EXCLUDED.source_id, run_id = EXCLUDED.run_id, "
            "checksum = EXCLUDED.checksum, snapshot_seq = EXCLUDED.snapshot_seq",
            (table, target_table, rows, quarantined, seconds, source.path, source.id, run_id, checksum, snapshot_seq),
        )

    def forget_tables(self, names: list[str] | None = None) -> None:
        """Drop the loaded marks of ``names`` (all when None): ``--replace`` reloads them from scratch."""
        if names is None:
            self.execute("DELETE FROM {schema}.snapshot_tables")
        else:
            self.execute("DELETE FROM {schema}.snapshot_tables WHERE table_name = ANY(%s)", (names,))

    def loaded_tables(self) -> dict[str, TableState]:
        """What ``snapshot_tables`` records; empty when the state schema does not exist yet."""
        if not self.has_table("snapshot_tables"):
            return {}
        rows = self.execute(
            "SELECT table_name, target_table, rows, quarantined, finished_at, source_path, source_id, "
            "checksum, snapshot_seq FROM {schema}.snapshot_tables"
        ).fetchall()
        return {r[0]: TableState(*r) for r in rows}

    # --- the snapshot's journal mark (``replication``) -------------------------------------------------------

    def record_mark(
        self, *, source: SourceIdentity, snapshot_seq: int | None, genesis_hash: str | None, run_id: int
    ) -> None:
        """Record the snapshot's journal high-water mark (the daemon streams from ``snapshot_seq + 1``)."""
        self.execute(
            "INSERT INTO {schema}.replication (id, source_path, source_id, snapshot_seq, genesis_hash, run_id) "
            "VALUES (1, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET source_path = EXCLUDED.source_path, "
            "source_id = EXCLUDED.source_id, snapshot_seq = EXCLUDED.snapshot_seq, "
            "genesis_hash = EXCLUDED.genesis_hash, run_id = EXCLUDED.run_id, recorded_at = now()",
            (source.path, source.id, snapshot_seq, genesis_hash, run_id),
        )
        self.execute("UPDATE {schema}.runs SET snapshot_seq = %s WHERE id = %s", (snapshot_seq, run_id))

    def read_mark(self) -> Mark | None:
        """The recorded mark; None before a snapshot finished (or when the state schema is absent)."""
        if not self.has_table("replication"):
            return None
        row = self.execute(
            "SELECT source_path, source_id, snapshot_seq, genesis_hash, run_id FROM {schema}.replication WHERE id = 1"
        ).fetchone()
        return None if row is None else Mark(*row)

    def clear_mark(self) -> None:
        self.execute("DELETE FROM {schema}.replication")

    # --- the daemon's phase row (``apply_state``, :mod:`replicator.state.phase`) -------------------------------

    def write_phase(self, state: ApplyState) -> None:
        """Upsert the one phase row (in the caller's transaction, so it commits with the batch)."""
        values = msgspec.structs.asdict(state)
        values["pid"] = os.getpid() if state.pid is None else state.pid
        values["host"] = state.host or socket.gethostname()
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
        self.conn.execute(
            sql.SQL(
                "INSERT INTO {}.apply_state (id, {}, updated_at) VALUES (1, {}, clock_timestamp()) "
                "ON CONFLICT (id) DO UPDATE SET ({}, updated_at) = ({}, clock_timestamp())"
            ).format(
                self.schema,
                cols,
                sql.SQL(", ").join(sql.Placeholder(c) for c in COLUMNS),
                cols,
                sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in COLUMNS),
            ),
            {c: (str(values[c]) if c == "phase" else values[c]) for c in COLUMNS},
        )

    def read_phase(self) -> ApplyState | None:
        """The phase row, or None when no daemon ever ran against this target."""
        if not self.has_table("apply_state"):
            return None
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in (*COLUMNS, "updated_at"))
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT {} FROM {}.apply_state WHERE id = 1").format(cols, self.schema))
            got = cur.fetchone()
        if got is None:
            return None
        fields = dict(zip((*COLUMNS, "updated_at"), got, strict=True))
        fields["phase"] = Phase(fields["phase"])
        return ApplyState(**fields)

    # --- the saved plan (``apply_plan``) ----------------------------------------------------------------------

    def save_plan(self, plan: SchemaPlan) -> None:
        """Keep the plan the snapshot loaded with: whatever reads rows after the load (the apply, the cutover,
        the certificate, the rollback) must convert exactly as the load did."""
        self.execute(
            "INSERT INTO {schema}.apply_plan (id, body) VALUES (1, %s) "
            "ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, saved_at = now()",
            (msgspec.json.encode(plan),),
        )

    def load_plan(self) -> SchemaPlan | None:
        row = self.execute("SELECT body FROM {schema}.apply_plan WHERE id = 1").fetchone()
        return None if row is None else msgspec.json.decode(bytes(row[0]), type=SchemaPlan)

    # --- reloads owed (``resnapshot_pending``, :mod:`replicator.load.resnapshot` says when and why) ----------

    def mark_pending_reloads(self, tables: Iterable[tuple[str, str]]) -> None:
        """Record (table, reason) reloads as owed; call in a transaction that commits before the triggers are
        reinstalled."""
        for table, reason in tables:
            self.execute(
                "INSERT INTO {schema}.resnapshot_pending (table_name, reason) VALUES (%s, %s) "
                "ON CONFLICT (table_name) DO UPDATE SET reason = EXCLUDED.reason",
                (table, reason),
            )

    def clear_pending_reload(self, table: str) -> None:
        """Strike an owed reload off, in the reload's own transaction."""
        self.execute("DELETE FROM {schema}.resnapshot_pending WHERE table_name = %s", (table,))

    def pending_reloads(self) -> dict[str, str]:
        """Owed reloads: table → reason, oldest first."""
        rows = self.execute(
            "SELECT table_name, reason FROM {schema}.resnapshot_pending ORDER BY since, table_name"
        ).fetchall()
        return {str(t): str(r) for t, r in rows}

    # --- the tables left out (``skipped_tables``, the rule in :mod:`replicator.plan.skips`) ------------------

    def record_skipped(self, reasons: Mapping[str, str]) -> None:
        """Make ``skipped_tables`` name exactly these tables (their ignored counts are kept)."""
        table = self.table("skipped_tables")
        self.conn.execute(sql.SQL("DELETE FROM {} WHERE NOT (table_name = ANY(%s))").format(table), (list(reasons),))
        for name, why in reasons.items():
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO {} (table_name, reason) VALUES (%s, %s) "
                    "ON CONFLICT (table_name) DO UPDATE SET reason = EXCLUDED.reason"
                ).format(table),
                (name, why),
            )

    def count_ignored(self, counts: Mapping[str, int], last_seq: int, reasons: Mapping[str, str]) -> None:
        """Add a batch's ignored journal entries per table (in the batch's own transaction)."""
        for name, n in counts.items():
            self.conn.execute(
                sql.SQL(
                    "INSERT INTO {} AS s (table_name, reason, ignored, last_seq, last_ignored_at) "
                    "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (table_name) DO UPDATE SET "
                    "ignored = s.ignored + EXCLUDED.ignored, last_seq = EXCLUDED.last_seq, "
                    "last_ignored_at = EXCLUDED.last_ignored_at"
                ).format(self.table("skipped_tables")),
                (name, reasons.get(name, "skipped"), n, last_seq),
            )

    def skipped_tables(self) -> list[SkippedTable]:
        """What ``skipped_tables`` holds (nothing when no daemon of this version ran)."""
        if not self.has_table("skipped_tables"):
            return []
        rows = self.conn.execute(
            sql.SQL("SELECT table_name, reason, ignored, last_seq FROM {} ORDER BY table_name").format(
                self.table("skipped_tables")
            )
        ).fetchall()
        return [SkippedTable(str(r[0]), str(r[1]), int(r[2]), r[3]) for r in rows]
