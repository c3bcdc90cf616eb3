"""The one home of the target's state schema (``replicator`` by default): DDL, a version row, the upgrades.

Every command that writes state calls :func:`ensure` first (as :meth:`StateStore.ensure
<replicator.state.store.StateStore.ensure>`). When the schema is at :data:`VERSION` that is
one SELECT of the version row. Otherwise it takes an advisory lock (so a daemon and another command
starting together never race on ``CREATE``), reads the version again under the lock, runs each
:data:`STEPS` entry above it in one transaction and records the new version: a crash mid-upgrade leaves
the schema as it was. A target laid out before the schema had a version (no ``schema_version`` table) is
version 0; step 1 is exactly the layout that code reached, written as ``IF NOT EXISTS`` statements, so it
brings such a target (or any older one: the ``ADD COLUMN`` statements are the upgrades it shipped) to
version 1 without touching its rows. A schema newer than :data:`VERSION` was written by a newer
replicator whose layout this code cannot know: it is refused, never altered.

A later layout change is a new :class:`Step` appended to :data:`STEPS` (never an edit of an old one),
plus the table's line in :data:`TABLES` and in ARCHITECTURE.md's map of the state schema.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import msgspec
import psycopg.errors
from psycopg.pq import TransactionStatus

from checkpoints import store
from replicator import log
from replicator.errors import EXIT_USAGE, ReplicatorError
from replicator.state import reverse

if TYPE_CHECKING:
    from replicator.state.store import StateStore

LOCK_CLASS: Final = 0x5250_5353
"""First key of the upgrade's two-key advisory lock ('RPSS'); the daemon's one-key lock never overlaps it."""


class NewerStateSchema(ReplicatorError):
    """The state schema was written by a newer replicator: this code would misread or damage it."""

    exit_code = EXIT_USAGE


class Step(msgspec.Struct, frozen=True):
    """One upgrade: from ``version - 1`` to ``version``, in the caller's upgrade transaction."""

    version: int
    summary: str
    apply: Callable[[StateStore], None]


#: Version 1: the layout replicator reached before the schema had a version, in the order it was created
#: (state, quarantine, apply, checkpoints, phase, resnapshot, skips, certificates). ``{schema}`` is the
#: quoted state schema. The ``ADD COLUMN`` lines are the upgrades that code ran on older targets.
_V1_BEFORE_CHAIN: Final = (
    "CREATE SCHEMA IF NOT EXISTS {schema}",
    """CREATE TABLE IF NOT EXISTS {schema}.runs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        command text NOT NULL,
        mode text,
        source_path text NOT NULL,
        source_id text NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        status text NOT NULL DEFAULT 'running',
        rows bigint,
        quarantined bigint,
        message text
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.snapshot_tables (
        table_name text PRIMARY KEY,
        target_table text NOT NULL,
        rows bigint NOT NULL,
        quarantined bigint NOT NULL DEFAULT 0,
        seconds double precision,
        finished_at timestamptz NOT NULL DEFAULT now(),
        source_path text NOT NULL,
        source_id text NOT NULL,
        run_id bigint REFERENCES {schema}.runs (id)
    )""",
    "ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS snapshot_seq bigint",
    "ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS backend_pid integer",
    "ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS backend_start timestamptz",
    "ALTER TABLE {schema}.snapshot_tables ADD COLUMN IF NOT EXISTS checksum text",
    "ALTER TABLE {schema}.snapshot_tables ADD COLUMN IF NOT EXISTS snapshot_seq bigint",
    """CREATE TABLE IF NOT EXISTS {schema}.replication (
        id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
        source_path text NOT NULL,
        source_id text NOT NULL,
        snapshot_seq bigint,
        genesis_hash text,
        run_id bigint,
        recorded_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.quarantine (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id bigint,
        table_name text NOT NULL,
        key jsonb NOT NULL,
        column_name text NOT NULL,
        storage_class text NOT NULL,
        original_base64 text NOT NULL,
        reason text NOT NULL,
        action text NOT NULL DEFAULT 'row skipped',
        recorded_at timestamptz NOT NULL DEFAULT now(),
        acknowledged boolean NOT NULL DEFAULT false,
        acknowledged_at timestamptz
    )""",
    "ALTER TABLE {schema}.quarantine ADD COLUMN IF NOT EXISTS parent_table text, "
    "ADD COLUMN IF NOT EXISTS parent_key jsonb, ADD COLUMN IF NOT EXISTS refs jsonb",
    "CREATE INDEX IF NOT EXISTS quarantine_table_idx ON {schema}.quarantine (table_name)",
    """CREATE TABLE IF NOT EXISTS {schema}.apply_plan (
        id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
        body bytea NOT NULL,
        saved_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.apply_tables (
        table_name text PRIMARY KEY,
        target_table text NOT NULL,
        digest_count bigint NOT NULL,
        digest text NOT NULL,
        upserted bigint NOT NULL DEFAULT 0,
        deleted bigint NOT NULL DEFAULT 0,
        conflicts bigint NOT NULL DEFAULT 0,
        quarantined bigint NOT NULL DEFAULT 0,
        last_seq bigint,
        last_change_at timestamptz,
        error text,
        hint text
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.parked_foreign_keys (
        table_name text NOT NULL,
        constraint_name text NOT NULL,
        definition text NOT NULL,
        parked_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (table_name, constraint_name)
    )""",
)
# checkpoints/ never imports replicator, so the chain's table keeps its DDL there (store.ensure_schema).
_V1_AFTER_CHAIN: Final = (
    """CREATE TABLE IF NOT EXISTS {schema}.apply_state (
        id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
        phase text NOT NULL,
        reason text NOT NULL DEFAULT '',
        hint text NOT NULL DEFAULT '',
        retryable boolean NOT NULL DEFAULT false,
        applied_seq bigint NOT NULL DEFAULT 0,
        head_seq bigint NOT NULL DEFAULT 0,
        rate double precision NOT NULL DEFAULT 0,
        behind_since timestamptz,
        pid int,
        host text NOT NULL DEFAULT '',
        updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.resnapshot_pending (
        table_name text PRIMARY KEY,
        reason text NOT NULL,
        since timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.skipped_tables (
        table_name text PRIMARY KEY,
        reason text NOT NULL,
        ignored bigint NOT NULL DEFAULT 0,
        last_seq bigint,
        last_ignored_at timestamptz
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.cutover_certificates (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        stored_at timestamptz NOT NULL DEFAULT now(),
        sha256 text NOT NULL,
        body bytea NOT NULL
    )""",
)

_VERSION_DDL: Final = """CREATE TABLE IF NOT EXISTS {schema}.schema_version (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version int NOT NULL,
    upgraded_at timestamptz NOT NULL DEFAULT now()
)"""


def _run(state_store: StateStore, statements: tuple[str, ...]) -> None:
    """All of ``statements`` in one round trip (no parameters: PostgreSQL runs them in order; the
    caller's transaction makes them one unit)."""
    state_store.execute(";\n".join(statements))


def _layout_v1(state_store: StateStore) -> None:
    _run(state_store, _V1_BEFORE_CHAIN)
    store.ensure_schema(state_store.conn, state_store.schema_name)
    _run(state_store, _V1_AFTER_CHAIN)


#: Version 2: the rollback window (:mod:`replicator.state.reverse`). ``{schema}`` is the quoted state schema.
_V2_WINDOW: Final = (
    """CREATE TABLE IF NOT EXISTS {schema}.reverse_journal (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        xid xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
        tbl text NOT NULL,
        op "char" NOT NULL,
        key jsonb,
        at timestamptz NOT NULL DEFAULT pg_catalog.now()
    )""",
    "CREATE INDEX IF NOT EXISTS reverse_journal_xid ON {schema}.reverse_journal (xid)",
    """CREATE TABLE IF NOT EXISTS {schema}.reverse_window (
        id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
        opened_at timestamptz NOT NULL DEFAULT now(),
        cutover text NOT NULL,
        tables text[] NOT NULL,
        applied_through bigint NOT NULL DEFAULT 0,
        applied_at timestamptz,
        fenced_at timestamptz,
        closed_at timestamptz,
        closed_how text,
        message text NOT NULL DEFAULT ''
    )""",
)


def _rollback_window(state_store: StateStore) -> None:
    _run(state_store, _V2_WINDOW)


#: Version 3: a leaner reverse journal, since every app write on PostgreSQL during the window pays for each of its
#: parts (bench/reverse_capture.py). The identity ``seq`` goes: nothing reads it (readers go by transaction-id
#: horizon), and it cost a ``nextval`` and a second index entry per row. ``xid`` becomes a ``bigint`` (the same
#: number: an ``xid8`` is the 64-bit, epoch-extended id): a B-tree entry on ``xid8`` cost about twice one on
#: ``bigint`` per captured row in a micro-benchmark (50,000-row UPDATE, 9 rounds: 14.4 us against 8.7 us of
#: trigger time per row, no index at all 7.1 us), and the readers compared through ``::text::xid8`` anyway.
#: And the sealed rollback certificates, one per window a rollback closed, keyed by its cutover checkpoint's hash
#: and written in the transaction that closes it (:func:`replicator.state.reverse.store_certificate` says why a
#: table and not a column of the window's row): a rollback killed after that commit still has its proof.
_V3_WINDOW: Final = (
    """ALTER TABLE {schema}.reverse_journal DROP COLUMN IF EXISTS seq, ALTER COLUMN xid DROP DEFAULT,
        ALTER COLUMN xid TYPE bigint USING xid::text::bigint,
        ALTER COLUMN xid SET DEFAULT pg_catalog.pg_current_xact_id()::text::bigint""",
    """CREATE TABLE IF NOT EXISTS {schema}.rollback_certificates (
        cutover text PRIMARY KEY,
        stored_at timestamptz NOT NULL DEFAULT now(),
        sha256 text NOT NULL,
        body bytea NOT NULL
    )""",
)


def _window_v3(state_store: StateStore) -> None:
    _run(state_store, _V3_WINDOW)


STEPS: Final = (
    Step(1, "the layout of replicator before the schema had a version", _layout_v1),
    Step(2, "the rollback window: the reverse journal and the window's row", _rollback_window),
    Step(
        3,
        "the reverse journal without its identity column, its xid a bigint (a cheaper index entry); the rollback "
        "certificates",
        _window_v3,
    ),
)
"""Every upgrade, in order; ``STEPS[i].version == i + 1``."""

VERSION: Final = STEPS[-1].version
"""The layout this code reads and writes."""

TABLES: Final = (
    "runs",
    "snapshot_tables",
    "replication",
    "quarantine",
    "apply_plan",
    "apply_tables",
    "parked_foreign_keys",
    store.TABLE,
    "apply_state",
    "resnapshot_pending",
    "skipped_tables",
    "cutover_certificates",
    "schema_version",
    reverse.JOURNAL,
    reverse.WINDOW,
    reverse.CERTIFICATES,
)
"""The tables of the state schema at :data:`VERSION` (ARCHITECTURE.md says what each holds)."""


def recorded_version(state_store: StateStore) -> int:
    """The version the target records; 0 when it records none (no schema, or one laid out before versions).

    One SELECT. A missing table must not abort the caller's transaction, so inside one it runs in a savepoint.
    """
    conn = state_store.conn
    query = state_store.query("SELECT version FROM {schema}.schema_version")
    try:
        if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
            row = conn.execute(query).fetchone()
        else:
            with conn.transaction():
                row = conn.execute(query).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return 0 if row is None else int(row[0])


def refuse_newer(state_store: StateStore) -> None:
    """For readers that never lay the schema out (``status``): refuse a layout a newer replicator wrote, whose
    tables this code would misread; one SELECT."""
    _refuse_newer(recorded_version(state_store), state_store.schema_name)


def _refuse_newer(found: int, schema_name: str) -> None:
    if found > VERSION:
        raise NewerStateSchema(
            f"the state schema {schema_name} is at version {found}, newer than this replicator knows ({VERSION})",
            hint="upgrade replicator to the release that wrote it; an older one must not change that schema",
        )


def _lock_keys(schema_name: str) -> tuple[int, int]:
    low = int.from_bytes(hashlib.sha256(schema_name.encode()).digest()[:4], "big", signed=True)
    return LOCK_CLASS, low


def ensure(state_store: StateStore) -> None:
    """Bring the state schema to :data:`VERSION` (create it on a fresh target); one SELECT when it is there.

    Raises :class:`NewerStateSchema` for a schema a newer replicator wrote. Inside the caller's transaction
    the upgrade commits with it; otherwise it commits on its own.
    """
    conn, schema_name = state_store.conn, state_store.schema_name
    found = recorded_version(state_store)
    if found == VERSION:
        return
    _refuse_newer(found, schema_name)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _lock_keys(schema_name))
        found = recorded_version(state_store)  # another process may have upgraded it while we waited
        _refuse_newer(found, schema_name)
        if found == VERSION:
            return
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema_name,)).fetchone()
        upgrading = bool(row and row[0])
        for step in STEPS[found:]:
            step.apply(state_store)
        _run(state_store, (_VERSION_DDL,))
        state_store.execute(
            "INSERT INTO {schema}.schema_version (id, version) VALUES (1, %s) "
            "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, upgraded_at = now()",
            (VERSION,),
        )
    if upgrading:  # an operator learns their target's layout changed; a new target's creation is no news
        log.get("state").info("state schema upgraded", schema=schema_name, from_version=found, to_version=VERSION)
