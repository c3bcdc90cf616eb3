"""The initial load: every SQLite table into PostgreSQL by binary COPY, one transaction per table.

Consistency with the journal. The main read transaction opens first (``BEGIN``, then a read as its
first statement: SQLite's BEGIN is deferred, d17); when capture is installed, the journal's
high-water mark is read in it before any row. What we chose, and why:

* ``snapshot.workers = 1``: every table comes from that one read transaction, so the snapshot and
  the mark describe exactly one state (the genesis digests are the state at ``seq_to``).
* ``snapshot.workers = 2`` (the default, create mode): a helper process loads about half the rows
  (largest tables first, balanced by size), each table from its own read transaction opened
  *after* the mark. On 2 cores this is what buys the speed (conversion and checksums are Python,
  one core each), and each reader is shorter, so WAL checkpoints stall less. It is exact because
  the apply is state-based: for every journaled key it re-reads the current row, so replaying
  entries between the mark and a table's later read point rewrites rows to the values they
  already have; nothing is lost (every change after a table's read is journaled after the mark)
  and nothing is doubled (a key is deleted before its current row is inserted). The genesis holds
  the digests of the rows loaded; the running digests the apply keeps start from them. Without
  capture, an app writing during a parallel snapshot means tables from slightly different moments:
  for one instant use ``workers = 1`` or stop the app. Existing mode loads one table at a time in
  the main transaction (the app's foreign keys are enforced, so parents must come first).
* A dominant table (``snapshot.split_rows`` rows or more, either mode) is never handed to the
  helper whole: the main process reads it, from the mark's own read transaction, and the helper
  converts batches of it once its own tables are done (:mod:`replicator.load.share`, which says why the
  read cannot be split as pgcopydb splits one). So a split table is exactly the state at the mark.
* A resumed snapshot loads the remaining tables from a newer read transaction: the genesis takes
  the *oldest* mark of the tables it covers, by the same argument.

The price of the long main reader: WAL checkpoints cannot pass it while the snapshot runs, so the
``-wal`` file grows by what the app writes meanwhile (minutes at the measured rates).

Never disturbing the app: read-only connection, ``busy_timeout``, retries on SQLITE_BUSY in
``triggers.source``, no write and no lock beyond a reader's.

Atomicity per table: TRUNCATE (when the table holds rows), COPY, the quarantine rows and the
``snapshot_tables`` row (rows, checksum, mark) commit together, after a count check against SQLite's
own count in the same read transaction. A crash or Ctrl-C leaves each table either fully loaded and
recorded or untouched. ``--resume`` skips recorded tables (refusing another source file: the source
id is recorded per table) and reloads the interrupted one from scratch; ``--replace`` starts over.
The plan (types per column) is saved in the target at the start, so a resumed run loads with the
same types and skips the profile scan.

Checksums: while copying, every converted row is hashed with :mod:`checkpoints.digest` (the one
canonical row encoding, defined there), after bringing each value to what psycopg returns when the
row is read back (float4 rounding for ``real``, ``char(n)`` without padding, JSON parsed): see
:func:`digest_finisher`. So the snapshot's checksums, ``verify`` and the checkpoints agree. The
genesis checkpoint (``checkpoints.model.genesis``, per-table counts and digests, ``seq_to`` = the
mark) is appended with ``checkpoints.store.append`` in the final transaction that records the mark.

Speed: binary COPY with ``set_types`` (no text formatting on either side), rows streamed with
``fetchmany`` (memory bounded by ``fetch_rows``), one compiled row converter per table. Secondary
indexes, UNIQUE, CHECK and FK constraints are built after the load (FKs NOT VALID, validated at
cutover), then sequences past the keys and ANALYZE. Measured in ``bench/snapshot.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import multiprocessing.connection
import os
import queue as queue_module
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
import psycopg
from psycopg import sql

from checkpoints import store
from checkpoints.digest import EMPTY, MODULUS, JsonText, Kind, RowEncoder, kinds_from_types
from checkpoints.model import TableChange, genesis
from replicator import faults, log, pg
from replicator.apply import dependents
from replicator.config import Config
from replicator.errors import (
    BadValue,
    ReplicatorError,
    TargetError,
    TargetNotEmpty,
    UniqueCollision,
    UsageError,
    is_transient_pg,
)
from replicator.plan import pgreflect, pgschema, typemap
from replicator.plan.profile import (
    STORAGE_CLASSES,
    TEMPORAL_TEXT,
    Chunk,
    ChunkResult,
    Plain,
    TableProfile,
    profile_table,
)
from replicator.progress import Progress
from replicator.state import schema as state
from replicator.state import stateschema
from replicator.values import convert, quarantine
from replicator.values.formats import float4_value
from triggers import journal
from triggers import source as sqlite_source
from triggers.install import read_meta
from triggers.schema import Schema, Table, quote_ident, read_schema

if TYPE_CHECKING:
    from replicator.load.share import Coprocessor

FETCH_ROWS = 5_000
K = TypeVar("K", bound=Hashable)
#: Rowid chunks of dominant tables' profiles one process scanned, per table (None: one was too big).
Scanned = dict[str, list[ChunkResult] | None]
_DECODE_ERROR = "Could not decode to UTF-8"


class TableResult(msgspec.Struct, frozen=True):
    table: str
    target: str
    rows: int
    quarantined: int
    seconds: float
    checksum: str = EMPTY
    """checkpoints.digest hexdigest of the rows loaded (see the module docstring)."""
    resumed: bool = False
    """Loaded by an earlier run and skipped by ``--resume``."""
    analyzed: bool = False
    """Indexed and analyzed right after its load (``index_table``)."""
    warnings: tuple[str, ...] = ()
    """Post-load statements PostgreSQL refused right after the load."""
    helper_rows: int = 0
    """Of ``rows``, those the helper process converted (a dominant table both processes shared)."""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float(self.rows)


class SnapshotResult(msgspec.Struct, frozen=True):
    mode: str
    run_id: int
    tables: tuple[TableResult, ...]
    warnings: tuple[str, ...]
    seconds: float
    sequences: dict[str, int] = msgspec.field(default_factory=dict)
    """``table.column`` → the next value its identity/serial sequence will give."""
    plan: pgschema.SchemaPlan | None = None
    """The plan that was loaded (types per column), for verification."""
    snapshot_seq: int | None = None
    """The journal high-water mark streaming starts after; None when capture is not installed."""
    genesis_hash: str | None = None

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def quarantined(self) -> int:
        return sum(t.quarantined for t in self.tables)


class SourceRead(msgspec.Struct, frozen=True):
    """What one consistent read transaction on SQLite gives every later step."""

    schema: Schema
    profiles: dict[str, TableProfile]
    sqlite_sequence: dict[str, int]
    guessed: frozenset[str] = frozenset()
    """Tables whose profile is a sample (``guess_profile``): their load verifies every row."""


def open_source(path: Path, config: Config) -> sqlite3.Connection:
    """Read-only connection with an open read transaction: all later reads see one snapshot."""
    conn = sqlite_source.connect(path, readonly=True, busy_timeout_ms=config.source.busy_timeout_ms)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # first read: the snapshot starts here
    return conn


def read_source(conn: sqlite3.Connection, create: Config | None = None, *, guess: bool = True) -> SourceRead:
    """The schema and every table's profile; ``create``: only what create mode's type choice needs
    (``plain_columns``), with that config's overrides. Without it every column is fully profiled."""
    schema = read_schema(conn)
    profiles, guessed = _profiles(conn, schema, [t.name for t in schema.tables], create, guess=guess)
    return SourceRead(
        schema=schema, profiles=profiles, sqlite_sequence=pgschema.read_sqlite_sequence(conn), guessed=guessed
    )


def _profiles(
    conn: sqlite3.Connection, schema: Schema, names: Sequence[str], create: Config | None, *, guess: bool = True
) -> tuple[dict[str, TableProfile], frozenset[str]]:
    """Each table's profile: a verified guess where one is possible (create mode), else measured."""
    profiles: dict[str, TableProfile] = {}
    guessed: set[str] = set()
    for name in names:
        table = schema.table(name)
        guessed_profile = guess_profile(conn, table, create) if create is not None and guess else None
        if guessed_profile is not None:
            profiles[name] = guessed_profile
            guessed.add(name)
        else:
            profiles[name] = profile_table(conn, table, plain=plain_columns(table, create))
    return profiles, frozenset(guessed)


#: Rows the guess reads (the lowest rowids); the load then checks every row against it.
GUESS_SAMPLE_ROWS: Final = 1_000
#: Per family, the storage classes a sample may show for its guess to be verifiable by type alone.
_GUESSABLE: dict[str, frozenset[str]] = {
    "int": frozenset({"integer"}),
    "real": frozenset({"integer", "real"}),
    "text": frozenset({"text"}),
    "blob": frozenset({"blob"}),
    "time": frozenset(STORAGE_CLASSES) - {"null"},
    "date": frozenset({"text"}),
    "timestamp": frozenset({"text"}),
}


def guess_profile(conn: sqlite3.Connection, table: Table, create: Config) -> TableProfile | None:
    """The type choice's profile from the first rows, when the load can prove it for every row.

    Profiling every value before the load costs a second full read of the table (a quarter of a
    snapshot's CPU). For a table whose every column the sample shows holding only its declared
    family's natural storage class (integers in an INTEGER column, text in TEXT, ISO text in a
    DATETIME...), the plan is made from the sample and ``copy_rows`` checks each value that misses
    the converter's fast path (``verifier``): one that the full profile could have counted
    differently -- another storage class, a date-time in another format, a NULL key -- stops the
    table's load, which is then profiled in full and reloaded (``_Loader``). So the choice is the
    full profile's whenever the guess stands, and the full profile's own when it does not.
    None: not guessable (overrides, WITHOUT ROWID, NUMERIC/JSON/UUID/BOOLEAN/untyped columns,
    a sample holding anything else).
    """
    if table.without_rowid or create.types.get(table.name):
        return None
    families = {c.name: typemap.family(typemap.parse_declared(c.declared_type), c.affinity) for c in table.columns}
    if any(f not in _GUESSABLE for f in families.values()):
        return None
    sample = profile_table(conn, table, plain=plain_columns(table, create), sample=GUESS_SAMPLE_ROWS)
    if sample.null_key_rows:
        return None
    for col in sample.columns:
        family = families[col.name]
        held = {cls for cls, n in col.storage.items() if n and cls != "null"}
        if not held <= _GUESSABLE[family]:
            return None
        if family in ("date", "timestamp") and col.storage.get("text", 0):
            temporal = sum(col.formats.get(f, 0) for f in ("date", "sql_datetime", "iso8601", "iso8601_tz"))
            if temporal != col.storage["text"] or (family == "date" and col.formats.get("date", 0) != temporal):
                return None
    columns = tuple(msgspec.structs.replace(c, sampled=GUESS_SAMPLE_ROWS) for c in sample.columns)
    return msgspec.structs.replace(sample, rows=_row_estimate(conn, table), columns=columns)


def verifier(types: Sequence[convert.TargetType], keys: Collection[int]) -> dict[int, Callable[[object], bool]] | None:
    """What a guessed table's load accepts off the converter's fast paths, per column position.

    A value the fast path takes is of the guessed storage class; of the others only these keep the
    full profile's choice: NULL outside the key, numbers in a double column, any text in a text
    column, blobs in bytea, ISO text of the guessed kind in date-time columns, anything in ``time``.
    None when a type has no such rule (the table cannot be guessed).
    """
    rules: dict[int, Callable[[object], bool]] = {}
    for i, t in enumerate(types):
        rule = _rule(t)
        if rule is None:
            return None
        nullable = i not in keys
        rules[i] = lambda v, rule=rule, nullable=nullable: nullable if v is None else rule(v)  # type: ignore[misc]
    return rules


def _rule(t: convert.TargetType) -> Callable[[object], bool] | None:
    name = t.name
    if name in ("smallint", "integer", "bigint"):
        return lambda v: False
    if name == "double precision":
        return lambda v: type(v) is float or type(v) is int
    if name == "text":
        return lambda v: type(v) is str
    if name == "bytea":
        return lambda v: type(v) is bytes
    if name == "time":
        return lambda v: True
    if name in ("timestamp", "timestamptz", "date") and t.format == "iso8601":
        return partial(_temporal_text, name)
    return None


def _temporal_text(name: str, v: object) -> bool:
    """ISO text of the kind the guess saw, by the profile's own pattern: a date (date columns), no
    offset (timestamp), or any (timestamptz)."""
    if type(v) is not str or not v.isascii():
        return False
    match = TEMPORAL_TEXT.fullmatch(v)
    if match is None:
        return False
    return match[1] is None if name == "date" else match[2] is None if name == "timestamp" else True


def _types_of(table: pgschema.TablePlan) -> pgschema.TablePlan:
    """The table's plan without its reasons and warnings (a guess and a full profile word them apart)."""
    columns = tuple(msgspec.structs.replace(c, reason="") for c in table.columns)
    return msgspec.structs.replace(table, columns=columns, warnings=(), guessed=False)


class _Unverified(Exception):
    """A guessed table's load met a value its guess cannot account for: profile it in full, reload."""

    def __init__(self, table: str, column: str) -> None:
        super().__init__(f"{table}.{column}")
        self.table, self.column = table, column


def plain_columns(table: Table, create: Config | None) -> Plain:
    """Per column, the storage classes whose formats create mode's type choice ignores (``typemap.plain_classes``).

    Only in create mode: an existing target's timestamp column reads its source format from the
    profile whatever the SQLite declared type, so there every column keeps its full profile.
    """
    if create is None:
        return {}
    overrides = create.types.get(table.name, {})
    found = {c.name: typemap.plain_classes(c, overrides.get(c.name)) for c in table.columns}
    return {name: classes for name, classes in found.items() if classes}


def resolve_mode(conn: psycopg.Connection[Any], config: Config, mode: str | None) -> str:
    """``auto``: create when the target schema has no tables, else load into the existing ones.

    Except when the tables are ours: if the last snapshot into this target ran in create mode
    (finished or not), auto stays in create mode, so a rerun after a refused value rebuilds the
    indexes and constraints that the failed run never reached (with ``--replace``).
    """
    chosen = mode or config.snapshot.mode
    if chosen != "auto":
        return chosen
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
        (config.target.schema,),
    ).fetchone()
    if not row or not row[0]:
        return "create"
    return "create" if state.last_snapshot_mode(conn, config.target.state_schema) == "create" else "existing"


def build_plan(
    conn: psycopg.Connection[Any] | None, read: SourceRead, config: Config, mode: str
) -> pgschema.SchemaPlan:
    """The plan, with the foreign keys the quarantine follows (:func:`dependents.with_foreign_keys`)."""
    if mode == "create":
        return dependents.with_foreign_keys(pgschema.plan_create(read.schema, read.profiles, config), conn, read.schema)
    if conn is None:
        raise UsageError("existing mode needs the target", hint="pass --target")
    plan = pgschema.plan_existing(read.schema, pgreflect.reflect(conn, config.target.schema), read.profiles, config)
    return dependents.with_foreign_keys(plan, conn, read.schema, config.target.state_schema)


def _existing_tables(conn: psycopg.Connection[Any], schema_name: str, names: Sequence[str]) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)",
        (schema_name, list(names)),
    ).fetchall()
    return sorted(r[0] for r in rows)


def _tables_with_rows(conn: psycopg.Connection[Any], schema_name: str, names: Sequence[str]) -> list[str]:
    found = []
    for name in names:
        row = conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(schema_name, name))
        ).fetchone()
        if row and row[0]:
            found.append(name)
    return found


def check_target(
    conn: psycopg.Connection[Any],
    plan: pgschema.SchemaPlan,
    *,
    replace: bool,
    resume: bool = False,
    loaded: Sequence[str] = (),
    can_resume: bool = True,
) -> None:
    """Refuse to overwrite data, naming the tables that hold rows, unless ``--replace`` or ``--resume``.

    ``can_resume`` False (``import``, which has no ``--resume``) keeps that option out of the hints.

    ``--resume`` accepts rows only in tables an earlier run of the same source recorded as loaded
    (``loaded``, target names): rows anywhere else are someone else's and are never truncated.

    In existing mode the usual rows are the ones the app's migrations seeded (Django's content types
    and permissions, Optuna's ``version_info``): the one line names the tables and the flag that
    replaces them, and offers ``--resume`` only where it would be accepted.
    """
    names = [t.name for t in plan.tables]
    existing = _existing_tables(conn, plan.schema, names)
    if replace:
        return
    populated = _tables_with_rows(conn, plan.schema, existing)
    if resume:
        foreign = [n for n in populated if n not in set(loaded)]
        if foreign:
            raise TargetNotEmpty(
                f"target tables hold rows no earlier snapshot of this source recorded: {', '.join(foreign)}",
                hint="pass --replace to reload everything, or empty those tables",
            )
        return
    if populated and plan.mode == "existing":
        resumable = can_resume and set(populated) <= set(loaded)
        raise TargetNotEmpty(
            f"target tables already hold rows: {', '.join(populated)}",
            hint=("pass --resume to continue the interrupted snapshot of this source, or " if resumable else "")
            + "rerun the same command with --replace: it empties every table it loads (TRUNCATE; the app's "
            "schema and migration history stay) and loads SQLite's rows in their place, such as rows the app's "
            "migrations seeded (Django's content types and permissions)",
        )
    if populated:
        raise TargetNotEmpty(
            f"target tables already hold rows: {', '.join(populated)}",
            hint=("pass --resume to continue an interrupted snapshot of this source, " if can_resume else "pass ")
            + "--replace to reload everything, or point --target at an empty database",
        )
    if plan.mode == "create" and existing:
        raise UsageError(
            f"tables already exist in schema {plan.schema!r}: {', '.join(existing)}",
            hint=("pass --resume to continue an interrupted snapshot, " if can_resume else "pass ")
            + "--mode existing to load into them, or --replace to drop and recreate them",
        )


def _drop_tables(conn: psycopg.Connection[Any], schema_name: str, names: Sequence[str]) -> None:
    if names:
        conn.execute(
            sql.SQL("DROP TABLE {} CASCADE").format(sql.SQL(", ").join(sql.Identifier(schema_name, n) for n in names))
        )


def _truncate_all(conn: psycopg.Connection[Any], plan: pgschema.SchemaPlan) -> None:
    """``--replace`` in existing mode: empty every mapped table in one statement.

    One TRUNCATE over all of them is what foreign keys between them allow (a per-table TRUNCATE
    of a referenced parent is refused, and a DELETE would trip the children's rows). A table
    outside the plan that references one of them makes PostgreSQL refuse: that is reported.
    """
    populated = _tables_with_rows(conn, plan.schema, [t.name for t in plan.tables])
    if not populated:
        return
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("TRUNCATE {}").format(
                    sql.SQL(", ").join(sql.Identifier(plan.schema, t.name) for t in plan.tables)
                )
            )
    except psycopg.errors.FeatureNotSupported as exc:
        raise TargetError(
            f"cannot empty the target tables for --replace: {pgschema.pg_message(exc)}",
            hint="a table the SQLite file does not have references them; empty it first",
        ) from None


# --- reading SQLite -----------------------------------------------------------------------------


class _DecodeFallback(Exception):
    """sqlite3 met TEXT that is not UTF-8: the table is re-read with a bytes-tolerant text factory."""


def _select(table: str, columns: Sequence[str]) -> str:
    cols = ", ".join(quote_ident(c) for c in columns) or "NULL"
    return f"SELECT {cols} FROM {quote_ident(table)}"  # noqa: S608 - SQLite identifiers quoted by quote_ident


def _batches(conn: sqlite3.Connection, query: str, fetch_rows: int) -> Iterator[list[Any]]:
    """Stream rows in batches of ``fetch_rows``; bounded memory whatever the table size."""
    try:
        cursor = conn.execute(query)
        while True:
            batch = cursor.fetchmany(fetch_rows)
            if not batch:
                return
            yield batch
    except sqlite3.OperationalError as exc:
        if _DECODE_ERROR in str(exc):
            raise _DecodeFallback(str(exc)) from None
        raise sqlite_source.translate(exc, "source") from None


# --- the checksum -------------------------------------------------------------------------------

Finisher = Callable[[tuple[Any, ...]], tuple[Any, ...]]


def _json_text(value: Any) -> JsonText:
    """A converted JSON value as the digest reads a document's text: the text wrapped for psycopg,
    or on the wire (``row_converter(wire=True)``) json's text or jsonb's "\\x01" + text."""
    if isinstance(value, str):
        return JsonText(value[1:] if value[:1] == "\x01" else value)  # no JSON text starts with \x01
    return JsonText(value.obj)


def _unpadded(value: str) -> str:
    return value.rstrip(" ")


def digest_finisher(types: Sequence[convert.TargetType]) -> Finisher | None:
    """Converted values → what psycopg returns when the row is read back, for the checksum.

    The same normalisation ``replicator verify`` applies, so both sides hash the same thing:
    ``real`` is float4 (the double rounded to float4), ``char(n)`` is compared without its blank
    padding, JSON as the document its text spells (``JsonText``: canonicalised from the text, not
    parsed into Python objects first). None when no column needs it.
    """
    fixes: list[tuple[int, Callable[[Any], Any]]] = []
    for i, t in enumerate(types):
        if t.name == "real":
            fixes.append((i, float4_value))
        elif t.name == "char":
            fixes.append((i, _unpadded))
        elif t.name in ("json", "jsonb"):
            fixes.append((i, _json_text))
    if not fixes:
        return None

    def finish(row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = list(row)
        for i, fix in fixes:
            if values[i] is not None:
                values[i] = fix(values[i])
        return tuple(values)

    return finish


def digest_kinds(types: Sequence[convert.TargetType]) -> list[Kind]:
    return kinds_from_types(t.name for t in types)


# --- one table: rows in, COPY out ---------------------------------------------------------------


class Copied(msgspec.Struct):
    """What one COPY wrote: the rows, the refused ones, and the running checksum."""

    written: int
    read: int
    refusals: list[quarantine.Refusal]
    digest_sum: int
    server_rows: int = -1
    """Rows PostgreSQL says the COPY stored (its ``COPY n`` tag): the count check, without a scan."""
    helper_rows: int = 0
    """Rows the helper process converted (a shared table, :mod:`replicator.load.share`)."""

    @property
    def checksum(self) -> str:
        return format(self.digest_sum % MODULUS, "064x")


KeyOf = Callable[[Sequence[Any]], dict[str, Any]]


def read_layout(table: pgschema.TablePlan) -> tuple[list[str], list[str]]:
    """What a table's load selects: its loaded source columns, then the key columns not among them
    (``rowid`` for a table without a primary key), which only messages and quarantine rows use."""
    source_cols = [c.source for c in table.load_columns if c.source is not None]
    return source_cols, [k for k in list(table.key_source) or ["rowid"] if k not in source_cols]


def key_getter(table: pgschema.TablePlan) -> KeyOf:
    """A selected row (:func:`read_layout`) → its key, column → SQLite value."""
    source_cols, extra = read_layout(table)
    positions = {name: i for i, name in enumerate(source_cols + extra)}
    key_cols = list(table.key_source) or ["rowid"]

    def key_of(row: Sequence[Any]) -> dict[str, Any]:
        return {k: row[positions[k]] for k in key_cols}

    return key_of


class RowPipe:
    """One table's rows through the converter, the refusal policy and the checksum, a batch at a time.

    What :func:`copy_rows` does to every row, apart from where the row goes, so that the helper
    process runs the very same code on the batches of a shared table (:mod:`replicator.load.share`).
    ``verify``: the table's types are a guess (``guess_profile``): a value off the guess raises
    ``_Unverified`` once its batch is through. A refused value raises ``BadValue`` naming table,
    key, column and value or, with the quarantine policy, is recorded in ``refusals`` and its row
    skipped.
    """

    def __init__(self, table: pgschema.TablePlan, *, key_of: KeyOf, policy: str, verify: bool, extra: bool) -> None:
        self.table, self.key_of, self.policy = table, key_of, policy
        self.columns = table.load_columns
        source_cols = [c.source for c in self.columns if c.source is not None]
        self.types = [c.type for c in self.columns]
        self.missed: list[int] = []
        rules = None
        if verify:
            keys = {i for i, c in enumerate(self.columns) if c.name in table.primary_key}
            rules = verifier(self.types, keys)
            if rules is None:
                raise _Unverified(table.source, "?")
        # Rows may carry key values after the loaded columns (for messages): the converter ignores them.
        self.convert_row = convert.row_converter(
            table.source, source_cols, self.types, watch=rules, missed=self.missed, extra=extra
        )
        self.finish = digest_finisher(self.types)
        self.encode = RowEncoder(digest_kinds(self.types)).encode
        self.refusals: list[quarantine.Refusal] = []

    def run(
        self,
        batch: Iterable[Sequence[Any]],
        write_row: Callable[[tuple[Any, ...]], None],
        check: Callable[..., Any] | None = None,
        keep: Callable[..., Any] | None = None,
    ) -> int:
        """Convert, write and hash the batch's rows: the sum of their row hashes (``checkpoints.digest``).

        ``check``/``keep`` (:meth:`replicator.apply.dependents.Held.hooks`): a row whose parent is quarantined
        is quarantined with it; each refused row is remembered for its own children."""
        convert_row, finish, encode, missed = self.convert_row, self.finish, self.encode, self.missed
        sha256, from_bytes = hashlib.sha256, int.from_bytes
        name, total = self.table.source, 0
        for row in batch:
            try:
                out = convert_row(row)
            except convert.RowRefused as exc:
                if missed:
                    raise self.unverified() from None
                if self.policy != "quarantine":
                    raise _stopped(self.table, self.key_of(row), exc) from None
                refused = quarantine.make(name, self.key_of(row), exc.column, exc.value, exc.reason)
                self.refusals.append(keep(name, row, refused) if keep is not None else refused)
                continue
            if check is not None and (blocked := check(name, row, out)) is not None:
                refused = dependents.blocked_refusal(name, self.key_of(row), blocked)
                self.refusals.append(keep(name, row, refused) if keep is not None else refused)
                continue
            write_row(out)
            total += from_bytes(sha256(encode(finish(out) if finish else out)).digest(), "big")
        if missed:
            raise self.unverified()
        return total

    def unverified(self) -> _Unverified:
        return _Unverified(self.table.source, self.columns[self.missed[0]].name)


def copy_statement(schema_name: str, table: pgschema.TablePlan, *, freeze: bool) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY{})").format(
        sql.Identifier(schema_name, table.name),
        sql.SQL(", ").join(sql.Identifier(c.name) for c in table.load_columns),
        sql.SQL(", FREEZE" if freeze else ""),
    )


def copy_rows(
    pconn: psycopg.Connection[Any],
    schema_name: str,
    table: pgschema.TablePlan,
    batches: Iterable[Sequence[Sequence[Any]]],
    *,
    width: int,
    key_of: KeyOf,
    policy: str,
    on_batch: Callable[[int], None] | None = None,
    freeze: bool = False,
    verify: bool = False,
    extra: bool = True,
    held: dependents.Held | None = None,
) -> Copied:
    """Convert, checksum and binary-COPY a stream of source rows into ``table`` (caller's transaction).

    ``verify``: the table's types are a guess (``guess_profile``): any value off the guess raises
    ``_Unverified`` (the caller's transaction then rolls back).

    ``freeze``: the caller truncated the table in this transaction, so COPY may write the rows
    frozen and all-visible (``COPY ... FREEZE``): the index builds and ANALYZE that follow, and every
    later reader, skip setting hint bits on (and so rewriting) every page, and VACUUM has nothing
    to freeze.

    Every row source goes through here: SQLite for the snapshot, an export's JSON Lines for import.
    A row holds the SQLite values of the plan's load columns first (``width`` of them) and may carry
    extra key values after them (for messages; ``extra=False`` promises none, a little faster). A
    refused value stops the load (``BadValue`` naming table, key, column and value) or, with the
    quarantine policy, skips and records the row (:class:`RowPipe`).

    ``held`` (quarantine policy): the quarantined rows that rows reference (:mod:`replicator.apply.dependents`).
    """
    pipe = RowPipe(table, key_of=key_of, policy=policy, verify=verify, extra=extra)
    read = total = 0
    name = table.source
    check, keep = held.hooks(name) if held is not None else (None, None)
    with pconn.cursor() as cur:
        try:
            with cur.copy(copy_statement(schema_name, table, freeze=freeze)) as copy:
                copy.set_types(convert.copy_types(pipe.types))
                for batch in batches:
                    total += pipe.run(batch, copy.write_row, check, keep)
                    read += len(batch)
                    faults.point("snapshot.copying")  # rows streamed, nothing committed
                    if on_batch is not None:
                        on_batch(read)
        except psycopg.Error:
            if pipe.missed:  # PostgreSQL refused a value off the guess (a NULL key...): the guess, not the data
                raise pipe.unverified() from None
            raise
        server_rows = cur.rowcount
    written = read - len(pipe.refusals)
    return Copied(written=written, read=read, refusals=pipe.refusals, digest_sum=total, server_rows=server_rows)


def load_table(
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    plan: pgschema.SchemaPlan,
    table: pgschema.TablePlan,
    *,
    policy: str,
    state_schema: str,
    source: state.SourceIdentity,
    run_id: int,
    fetch_rows: int = FETCH_ROWS,
    snapshot_seq: int | None = None,
    progress: Progress | None = None,
    verify: bool = False,
    held: dependents.Held | None = None,
    shared: Coprocessor | None = None,
) -> TableResult:
    """Load one table in one PostgreSQL transaction; re-read once with the bytes fallback if needed.

    ``verify``: the table's types are a guess; raises ``_Unverified`` (nothing committed) if a row
    does not bear it out. ``held``: see :func:`copy_rows`. A table whose rows reference rows of its own
    quarantined *after* them (a tree read child first) is loaded again, those rows then known from the
    start; each pass knows more, so it ends (a forward-ordered tree takes one pass). ``shared``: the helper
    process converts some of the batches read here (a dominant table, :mod:`replicator.load.share`; not with
    ``held``, whose checks need every row here)."""
    bound = log.get("snapshot", table=table.source)
    args = (sconn, pconn, plan, table, policy, state_schema, source, run_id, fetch_rows, snapshot_seq, progress, verify)

    def load(text_factory: Callable[[bytes], str] | None) -> TableResult:
        return _load_table(*args, shared, text_factory, held)

    def refusal(exc: psycopg.Error) -> ReplicatorError:
        if isinstance(exc, psycopg.errors.UniqueViolation):
            return unique_refusal(sconn, pconn, plan, table, exc, policy=policy, fetch_rows=fetch_rows)
        return copy_error(table, exc)

    while True:
        try:
            return _load_decoding(load, sconn, table, bound, refusal)
        except _Redo:
            bound.info("rows reference rows of their own table quarantined after them; loading the table again")


def _load_decoding(
    load: Callable[[Callable[[bytes], str] | None], TableResult],
    sconn: sqlite3.Connection,
    table: pgschema.TablePlan,
    bound: Any,
    refusal: Callable[[psycopg.Error], ReplicatorError],
) -> TableResult:
    try:
        return load(None)
    except psycopg.Error as exc:
        raise refusal(exc) from None
    except _DecodeFallback as exc:
        bound.warning("invalid UTF-8 in source text; re-reading the table with the bytes fallback", detail=str(exc))
        try:
            return load(convert.decode_text)
        except psycopg.Error as exc:
            raise refusal(exc) from None
        finally:
            sconn.text_factory = str


class _Redo(Exception):
    """Rows of a table reference rows of it quarantined later in the same pass: load it again."""


@contextlib.contextmanager
def _self_references(
    pconn: psycopg.Connection[Any], plan: pgschema.SchemaPlan, held: dependents.Held | None, name: str
) -> Iterator[None]:
    """Around a table's COPY: raise ``_Redo`` when a loaded row references a row of its own table the
    pass quarantined after it (existing mode: the COPY fails on the app's key; create mode: found)."""
    if held is None:
        yield
        return
    held.fresh(name)  # what an earlier pass held is known from the start of this one
    try:
        yield
    except psycopg.errors.ForeignKeyViolation:
        if held.fresh(name):
            raise _Redo from None
        raise
    by_fk: dict[pgschema.ForeignKey, list[tuple[Any, ...]]] = {}
    for fk, value in held.fresh(name):
        by_fk.setdefault(fk, []).append(value)
    if any(dependents.referencing(pconn, plan, fk, values, limit=1) for fk, values in by_fk.items()):
        raise _Redo


def _count_check(table: pgschema.TablePlan, source_count: int, copied: Copied) -> None:
    """The table was emptied in the load's transaction: COPY's count is the table's."""
    if copied.server_rows != copied.written or copied.read != source_count:
        raise TargetError(
            f"count check failed for {table.source!r}: SQLite has {source_count} rows, read "
            f"{copied.read}, PostgreSQL holds {copied.server_rows}",
            hint="nothing was committed for this table; rerun, and report it if it repeats",
        )


def _load_table(
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    plan: pgschema.SchemaPlan,
    table: pgschema.TablePlan,
    policy: str,
    state_schema: str,
    source: state.SourceIdentity,
    run_id: int,
    fetch_rows: int,
    snapshot_seq: int | None,
    progress: Progress | None,
    verify: bool,
    shared: Coprocessor | None,
    text_factory: Callable[[bytes], str] | None,
    held: dependents.Held | None = None,
) -> TableResult:
    bound = log.get("snapshot", table=table.source)
    started = time.monotonic()
    source_cols, extra = read_layout(table)
    key_of = key_getter(table)
    ident = sql.Identifier(plan.schema, table.name)
    (source_count,) = sconn.execute(f"SELECT count(*) FROM {quote_ident(table.source)}").fetchone()  # noqa: S608
    if progress is not None:
        progress.start(table.source, int(source_count))
    if text_factory is not None:
        sconn.text_factory = text_factory

    def on_batch(read: int) -> None:
        if progress is not None:
            progress.advance(table.source, read)

    with pconn.transaction():
        freeze = truncate_table(pconn, ident) if plan.mode == "create" else empty_table(pconn, ident)
        batches = _batches(sconn, _select(table.source, source_cols + extra), fetch_rows)
        with _self_references(pconn, plan, held, table.source):
            if shared is None or held is not None:
                copied = copy_rows(
                    pconn,
                    plan.schema,
                    table,
                    batches,
                    width=len(source_cols),
                    key_of=key_of,
                    policy=policy,
                    on_batch=on_batch,
                    freeze=freeze,
                    verify=verify,
                    extra=bool(extra),
                    held=held,
                )
            else:
                copied = shared.copy(
                    pconn, plan.schema, table, batches, policy=policy, on_batch=on_batch, freeze=freeze, verify=verify
                )
        _count_check(table, int(source_count), copied)
        quarantine.replace_for_table(pconn, state_schema, table.source, copied.refusals, run_id)
        seconds = time.monotonic() - started
        state.record_table(
            pconn,
            state_schema,
            table=table.source,
            target_table=table.name,
            rows=copied.written,
            quarantined=len(copied.refusals),
            seconds=seconds,
            source=source,
            run_id=run_id,
            checksum=copied.checksum,
            snapshot_seq=snapshot_seq,
        )
    faults.point("snapshot.after_table")  # this table committed with its state row, the next not begun
    if copied.refusals:
        bound.warning("values quarantined; their rows were skipped", quarantined=len(copied.refusals))
    if progress is not None:
        progress.finish(table.source, copied.written, seconds)
    bound.info(
        "table loaded",
        rows=copied.written,
        seconds=round(seconds, 3),
        checksum=copied.checksum[:16],
        **({"helper_rows": copied.helper_rows} if shared is not None else {}),
    )
    return TableResult(
        table.source,
        table.name,
        copied.written,
        len(copied.refusals),
        seconds,
        copied.checksum,
        helper_rows=copied.helper_rows,
    )


def copy_error(table: pgschema.TablePlan, exc: psycopg.Error) -> TargetError:
    """PostgreSQL refused the table's rows: name the table and say what to do; nothing was committed."""
    message = f"loading {table.source} into {table.name} failed: {pgschema.pg_message(exc)}; nothing was committed"
    if isinstance(exc, psycopg.errors.ForeignKeyViolation | psycopg.errors.UniqueViolation):
        detail = exc.diag.message_detail  # "Key (parent_id)=(77) is not present in table ...": the orphan; or
        # "Key (at)=(2024-05-01 10:00:00) already exists": the key two SQLite rows share (one line even if a value
        # holds a newline)
        shown = (detail or "").rstrip(".").replace("\n", "\\n")
        message = message.replace("; nothing", f" ({shown}); nothing") if shown else message
    if isinstance(exc, psycopg.errors.ForeignKeyViolation):
        hint = (
            "SQLite holds rows whose parent is missing (its foreign keys are off by default): fix the orphans, "
            "or load in create mode where foreign keys are created NOT VALID and checked at cutover "
            "(children of a quarantined row are quarantined with it, never reported here)"
        )
    elif isinstance(
        exc, psycopg.errors.UniqueViolation | psycopg.errors.CheckViolation | psycopg.errors.NotNullViolation
    ):
        hint = "the target schema is stricter than the SQLite data; fix the rows or relax the constraint"
    else:
        hint = "check the target table's definition against the SQLite table; rerun with -v for details"
    return TargetError(message, hint=hint, transient=is_transient_pg(exc))


def unique_refusal(
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    plan: pgschema.SchemaPlan,
    table: pgschema.TablePlan,
    exc: psycopg.errors.UniqueViolation,
    *,
    policy: str,
    fetch_rows: int,
) -> ReplicatorError:
    """A UNIQUE index of the target refused the table's rows: name two rows it finds equal, and the index.

    In existing mode the index is the app's own (on PostgreSQL's lower(), which folds every letter, or over
    a date-time column where two spellings are one instant): rows SQLite keeps distinct collide, and
    PostgreSQL's message names neither. So the rows are copied again with that index dropped, in a
    transaction that is rolled back (the index with it), and grouped on the index's terms as the apply
    does (:func:`pgschema.duplicates_query`). PostgreSQL's own message when that cannot be said.
    """
    name = exc.diag.constraint_name
    by_source = {c.source: c.name for c in table.columns if c.source is not None}
    key = table.primary_key or tuple(by_source.get(k, "") for k in table.key_source)  # existing mode: the PG names
    if not name or not key or "" in key:
        return copy_error(table, exc)
    ident = sql.Identifier(plan.schema, table.name)
    source_cols, extra = read_layout(table)
    try:
        with pconn.transaction(force_rollback=True):
            found = pconn.execute(
                "SELECT array(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k),"
                " pg_get_expr(i.indpred, i.indrelid), c.conname FROM pg_index i LEFT JOIN pg_constraint c"
                " ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid WHERE i.indexrelid = %s::regclass",
                (sql.Identifier(plan.schema, name).as_string(pconn),),
            ).fetchone()
            if found is None:
                return copy_error(table, exc)
            exprs, predicate, constraint = found
            if constraint is not None:
                pconn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {} CASCADE").format(ident, sql.Identifier(name)))
            else:
                pconn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(plan.schema, name)))
            empty_table(pconn, ident)
            batches = _batches(sconn, _select(table.source, source_cols + extra), fetch_rows)
            copy_rows(
                pconn,
                plan.schema,
                table,
                batches,
                width=len(source_cols),
                key_of=key_getter(table),
                policy=policy,
                extra=bool(extra),
            )
            keys = pconn.execute(pgschema.duplicates_query(ident, exprs, predicate, key)).fetchall()
    except psycopg.Error:  # another constraint refused the copy without the index: PostgreSQL's own message
        return copy_error(table, exc)
    if len(set(keys)) < 2:  # the key itself collided: PostgreSQL would show one key twice
        return copy_error(table, exc)
    names = table.key_source if len(table.key_source) == len(key) else key
    return UniqueCollision(
        pgschema.collision_message(table.source, names, keys[:2], name, exprs) + "; nothing was committed",
        hint=(
            "make the two values distinct as PostgreSQL compares them (its lower()/upper() fold every letter, "
            f"SQLite's only ASCII; date-time text is compared as the instant it names), or drop index {name} "
            "in PostgreSQL, then run the snapshot again"
        ),
    )


def empty_table(conn: psycopg.Connection[Any], ident: sql.Composable) -> bool:
    """TRUNCATE when the table holds rows; DELETE when a foreign key forbids TRUNCATE.

    True when it was truncated in the caller's transaction and is a plain table (``COPY ... FREEZE``
    may follow; PostgreSQL refuses it for a partitioned table).
    """
    row = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(ident)).fetchone()
    if not row or not row[0]:
        return False
    # An app's table (existing mode) may be partitioned: PostgreSQL refuses COPY FREEZE into one.
    kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (ident.as_string(conn),)).fetchone()
    return truncate_table(conn, ident) and kind is not None and kind[0] == "r"


def truncate_table(conn: psycopg.Connection[Any], ident: sql.Composable) -> bool:
    """TRUNCATE (in a savepoint), else DELETE when a foreign key forbids it; True if truncated.

    Create mode truncates even an empty table: it costs a catalog update and lets the COPY freeze.
    """
    try:
        with conn.transaction():
            conn.execute(sql.SQL("TRUNCATE {}").format(ident))
    except psycopg.errors.FeatureNotSupported:
        conn.execute(sql.SQL("DELETE FROM {}").format(ident))
        return False
    return True


def _stopped(table: pgschema.TablePlan, key: dict[str, Any], exc: convert.RowRefused) -> BadValue:
    shown = ", ".join(f"{k}={v!r}" for k, v in key.items())
    return BadValue(
        f"refused value in {table.source} ({shown}) column {exc.column}: {exc.reason}; "
        f"value {convert.excerpt(exc.value)}; nothing was written to {table.name}",
        hint=(
            f"{exc.fixes + '; or ' if exc.fixes else ''}fix the value in SQLite, or use --on-bad-value "
            "quarantine to skip and record such rows; then rerun with --replace"
        ),
    )


# --- the run --------------------------------------------------------------------------------------


def snapshot(
    source: Path,
    dsn: str,
    config: Config,
    *,
    mode: str | None = None,
    on_bad_value: str | None = None,
    replace: bool = False,
    resume: bool = False,
    tables: Sequence[str] | None = None,
    fetch_rows: int = FETCH_ROWS,
    progress: Progress | None = None,
) -> SnapshotResult:
    """Create (or map) the schema, load every table, then indexes, constraints, sequences, ANALYZE.

    ``replace`` with ``tables`` on a target that streams (it has a checkpoint chain) reloads only those
    tables and keeps the chain and every other table's position (:func:`replicator.load.resnapshot.replace_tables`).
    """
    config = msgspec.structs.replace(config, target=msgspec.structs.replace(config.target, dsn=dsn))
    if on_bad_value is not None:
        config = msgspec.structs.replace(
            config, snapshot=msgspec.structs.replace(config.snapshot, on_bad_value=on_bad_value)
        )
    if replace and tables and not resume and _has_chain(dsn, config):
        from replicator.load import resnapshot  # it loads tables with this module

        return resnapshot.replace_tables(source, dsn, config, tables, mode=mode)
    identity = state.source_identity(source)
    sconn = open_source(source, config)
    helper: Helper | None = None
    try:
        helper = Helper(config, progress) if config.snapshot.workers > 1 else None
        return snapshot_from(
            sconn,
            identity,
            dsn,
            config,
            mode=mode,
            on_bad_value=on_bad_value,
            replace=replace,
            resume=resume,
            tables=tables,
            fetch_rows=fetch_rows,
            progress=progress,
            helper=helper,
            source_path=source,
        )
    finally:
        sconn.close()
        if helper is not None:
            helper.close()


def _has_chain(dsn: str, config: Config) -> bool:
    """Does the target hold a checkpoint chain (a snapshot with capture, maybe streaming since)?"""
    schema_name = config.target.state_schema
    with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (sql.Identifier(schema_name, "checkpoints").as_string(conn),))
        row = found.fetchone()
        return bool(row and row[0] is not None) and store.latest(conn, schema=schema_name) is not None


class _Setup(msgspec.Struct):
    plan: pgschema.SchemaPlan
    read: SourceRead
    loaded: dict[str, state.TableState]
    reused_plan: bool


def _setup(
    sconn: sqlite3.Connection,
    pconn: psycopg.Connection[Any],
    identity: state.SourceIdentity,
    config: Config,
    mode: str | None,
    *,
    replace: bool,
    resume: bool,
    tables: Sequence[str] | None = None,
    parallel: tuple[Helper, Path] | None = None,
) -> _Setup:
    """The plan and what earlier runs loaded; refuses another source's state and a non-empty target."""
    from replicator.apply import batch as apply

    state_schema = config.target.state_schema
    stateschema.ensure(pconn, state_schema)
    state.mark_killed(pconn, state_schema)
    loaded = {} if replace else state.loaded_tables(pconn, state_schema)
    if resume:
        _same_source(pconn, state_schema, identity, loaded)
    saved = apply.load_plan(pconn, state_schema) if resume and _last_run_source(pconn, state_schema) else None
    if saved is not None:
        read = SourceRead(schema=read_schema(sconn), profiles={}, sqlite_sequence=pgschema.read_sqlite_sequence(sconn))
        plan = saved
    else:
        resolved = resolve_mode(pconn, config, mode)
        create = config if resolved == "create" else None
        read = (
            read_source(sconn, create)
            if parallel is None
            else read_source_parallel(sconn, parallel[1], config, parallel[0], create=create is not None)
        )
        plan = build_plan(pconn, read, config, resolved)
        if read.guessed:
            guessed = tuple(msgspec.structs.replace(t, guessed=t.source in read.guessed) for t in plan.tables)
            plan = msgspec.structs.replace(plan, tables=guessed)
    if tables:
        plan = only_tables(plan, tables)
    check_target(pconn, plan, replace=replace, resume=resume, loaded=[s.target_table for s in loaded.values()])
    if not replace and not resume:
        head = store.latest(pconn, schema=state_schema)
        if head is not None:
            raise TargetNotEmpty(
                f"the target already holds a checkpoint chain (head {head.number}) from an earlier snapshot",
                hint="pass --replace to start the migration over (the chain is cleared), or --resume",
            )
    return _Setup(plan=plan, read=read, loaded=loaded, reused_plan=saved is not None)


def only_tables(plan: pgschema.SchemaPlan, names: Sequence[str]) -> pgschema.SchemaPlan:
    """``--tables``: the plan restricted to these SQLite tables (foreign keys to the others are dropped
    with a warning by the post-load step); an unknown name is an error, not a silent skip."""
    known = {t.source for t in plan.tables}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"--tables names table(s) the plan does not have: {', '.join(unknown)}",
            hint="names are SQLite table names, case-sensitive; `replicator analyze` lists them",
        )
    wanted = set(names)
    return msgspec.structs.replace(
        plan,
        tables=tuple(t for t in plan.tables if t.source in wanted),
        order=tuple(n for n in plan.order if n in wanted),
    )


def _last_run_source(conn: psycopg.Connection[Any], schema_name: str) -> str | None:
    row = conn.execute(
        sql.SQL("SELECT source_id FROM {}.runs WHERE command = 'snapshot' ORDER BY id DESC LIMIT 1").format(
            sql.Identifier(schema_name)
        )
    ).fetchone()
    return str(row[0]) if row else None


def _same_source(
    conn: psycopg.Connection[Any],
    schema_name: str,
    identity: state.SourceIdentity,
    loaded: dict[str, state.TableState],
) -> None:
    """``--resume`` never mixes two source files: every recorded table and the last run must be this one."""
    others = sorted({(s.source_path, s.source_id) for s in loaded.values() if s.source_id != identity.id})
    last = _last_run_source(conn, schema_name)
    if not others and last is not None and last != identity.id:
        others = [("(the last snapshot run)", last)]
    if others:
        shown = ", ".join(f"{path} (id {sid})" for path, sid in others)
        raise UsageError(
            f"the target holds a snapshot of another source file: {shown}; this is {identity.path} (id {identity.id})",
            hint="resume with the same file, or pass --replace to reload everything from this one",
        )


def snapshot_from(
    sconn: sqlite3.Connection,
    identity: state.SourceIdentity,
    dsn: str,
    config: Config,
    *,
    mode: str | None = None,
    on_bad_value: str | None = None,
    replace: bool = False,
    resume: bool = False,
    tables: Sequence[str] | None = None,
    fetch_rows: int = FETCH_ROWS,
    progress: Progress | None = None,
    helper: Helper | None = None,
    source_path: Path | None = None,
) -> SnapshotResult:
    """The load from a source connection whose read transaction is already open (see open_source).

    The caller owns that transaction (the daemon opens it and reads the journal head too). When
    capture is installed, the journal's high-water mark is read here, in that transaction, before any
    row: streaming starts right after it, and the genesis checkpoint records it.
    """
    if replace and resume:
        raise UsageError("--replace and --resume exclude each other", hint="pass one of them")
    started = time.monotonic()
    config = msgspec.structs.replace(config, target=msgspec.structs.replace(config.target, dsn=dsn))
    meta = read_meta(sconn)
    mark = journal.head(sconn) if meta is not None else None
    if meta is not None:
        identity = state.capture_identity(identity.path, meta.source_id)
    policy = on_bad_value or config.snapshot.on_bad_value
    state_schema = config.target.state_schema
    bound = log.get("snapshot")
    with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as pconn:
        parallel = (helper, source_path) if helper is not None and source_path is not None else None
        setup = _setup(
            sconn, pconn, identity, config, mode, replace=replace, resume=resume, tables=tables, parallel=parallel
        )
        plan, read = setup.plan, setup.read
        warnings = list(plan.warnings) + [f"{t.source}: {w}" for t in plan.tables for w in t.warnings]
        with pconn.transaction():
            run_id = state.start_run(pconn, state_schema, command="snapshot", mode=plan.mode, source=identity)
        try:
            plan = prepare_target(pconn, plan, replace=replace, reuse=setup.reused_plan, warnings=warnings)
            with pconn.transaction():
                _save_plan(pconn, state_schema, plan, replace=replace)
            bound.info("snapshot started", mode=plan.mode, tables=len(plan.tables), run_id=run_id, journal_mark=mark)
            done = {
                name: _resumed(setup.loaded[name])
                for name in plan.order
                if resume and name in setup.loaded and setup.loaded[name].source_id == identity.id
            }
            for name in done:
                bound.info("table already loaded; skipped", table=name, rows=done[name].rows)
            todo = [name for name in plan.order if name not in done]
            load = _Loader(sconn, pconn, plan, policy, config, identity, run_id, fetch_rows, mark, progress, read)
            if load.held is not None and done:  # resumed: what the earlier run quarantined is held
                with pconn.transaction():
                    dependents.seed(load.held, pconn, state_schema, list(done))
            if parallel is None:
                done.update({name: load.here(name) for name in todo})
            elif plan.mode != "create":  # existing mode: enforced FKs need parents first, all loaded here
                from replicator.load.share import dominant_tables

                rows = table_rows(sconn, read.schema, todo, read.profiles)
                load.share(dominant_tables(rows, config.snapshot.split_rows), parallel[0])
                done.update({name: load.here(name) for name in todo})
                parallel[0].finish()
            else:
                done.update(load.shared(todo, read, *parallel))
                parallel[0].finish()  # the helper's work is done: let it exit meanwhile
                done.update(load.dependents())
            plan = load.plan  # a disproved guess may have changed a table's types
            results = [done[name] for name in plan.order]
            warnings.extend(w for r in results for w in r.warnings)
            analyzed = frozenset(r.table for r in results if r.analyzed)
            sequences = finish_target(pconn, plan, read, warnings, analyzed)
            seq_to, genesis_hash = _finish_run(pconn, plan, state_schema, identity, run_id, mark, results)
        except BaseException as exc:
            _mark_failed(pconn, state_schema, run_id, exc)
            raise
        result = SnapshotResult(
            mode=plan.mode,
            run_id=run_id,
            tables=tuple(results),
            warnings=tuple(warnings),
            seconds=time.monotonic() - started,
            sequences=sequences,
            plan=plan,
            snapshot_seq=seq_to,
            genesis_hash=genesis_hash,
        )
    for warning in result.warnings:
        bound.warning("schema", detail=warning)
    return result


class _Loader:
    """Loads tables here (the caller's read transaction) or shared with the helper process."""

    def __init__(
        self,
        sconn: sqlite3.Connection,
        pconn: psycopg.Connection[Any],
        plan: pgschema.SchemaPlan,
        policy: str,
        config: Config,
        identity: state.SourceIdentity,
        run_id: int,
        fetch_rows: int,
        mark: int | None,
        progress: Progress | None,
        read: SourceRead | None = None,
    ) -> None:
        self.sconn, self.pconn, self.plan, self.policy, self.config = sconn, pconn, plan, policy, config
        self.identity, self.run_id, self.fetch_rows, self.mark, self.progress = (
            identity,
            run_id,
            fetch_rows,
            mark,
            progress,
        )
        self.read = read
        guessed = (t.source for t in plan.tables if t.guessed)
        self.guessed = frozenset(guessed) if plan.mode == "create" else frozenset()
        self.held = dependents.Held(plan) if policy == "quarantine" and plan.foreign_keys else None
        self.dominant: frozenset[str] = frozenset()
        """Tables read here and converted by both processes (:mod:`replicator.load.share`)."""
        self.coprocessor: Coprocessor | None = None

    def here(self, name: str, progress: Progress | None = None, *, verify: bool | None = None) -> TableResult:
        try:
            result = load_table(
                self.sconn,
                self.pconn,
                self.plan,
                self.plan.table(name),
                policy=self.policy,
                state_schema=self.config.target.state_schema,
                source=self.identity,
                run_id=self.run_id,
                fetch_rows=self.fetch_rows,
                snapshot_seq=self.mark,
                progress=progress or self.progress,
                verify=name in self.guessed if verify is None else verify,
                held=self.held,
                shared=self.coprocessor if name in self.dominant else None,
            )
        except _Unverified as exc:
            return self.measured(name, exc.column, progress)
        return index_table(self.pconn, self.plan, result)

    def measured(self, name: str, column: str, progress: Progress | None = None) -> TableResult:
        """A guess the rows disproved: profile the table in full, re-plan and (if its types changed)
        recreate it, save the plan, load it again unguessed."""
        assert self.read is not None
        bound = log.get("snapshot", table=name)
        bound.info("guessed types disproved by a row; profiling the table in full", column=column)
        table = self.read.schema.table(name)
        full = profile_table(self.sconn, table, plain=plain_columns(table, self.config))
        profiles = {**self.read.profiles, name: full}
        fresh = pgschema.plan_create(self.read.schema, profiles, self.config).table(name)
        old = self.plan.table(name)
        if _types_of(fresh) != _types_of(old):
            bound.warning("types changed by the full profile; table recreated", table=name)
            alone = msgspec.structs.replace(self.plan, tables=(fresh,), order=(name,))
            with self.pconn.transaction():
                _drop_tables(self.pconn, self.plan.schema, [old.name])
            created = pgschema.create_tables(self.pconn, alone, defer_pk=True)
            fresh = pgschema.without_generated(alone, created.plain_generated).table(name)
            self.plan = msgspec.structs.replace(
                self.plan, tables=tuple(fresh if t.source == name else t for t in self.plan.tables)
            )
            with self.pconn.transaction():
                _save_plan(self.pconn, self.config.target.state_schema, self.plan, replace=False)
        return self.here(name, progress, verify=False)

    def dependents(self) -> dict[str, TableResult]:
        """After a shared load: each table holding rows whose parent (in either process) was quarantined
        is loaded again here, parents first, with every quarantined row held (read back from the
        quarantine), so those rows are quarantined too, and theirs in the tables after it."""
        if self.held is None:
            return {}
        self.held = held = dependents.Held(self.plan)
        with self.pconn.transaction():
            dependents.seed(held, self.pconn, self.config.target.state_schema)
        again: dict[str, TableResult] = {}
        for name in self.plan.order:
            fks = held.into(name)
            if any(dependents.referencing(self.pconn, self.plan, fk, held.pg_values(fk), limit=1) for fk in fks):
                log.get("snapshot", table=name).info("rows reference quarantined rows; loading the table again")
                again[name] = self.here(name)
        return again

    def share(self, dominant: Sequence[str], helper: Helper) -> None:
        """These tables are read here and converted here and in the helper, whose conversion loop is
        queued after the tasks submitted to it so far."""
        if dominant and self.held is not None:  # held rows are checked row by row, here
            log.get("snapshot").info("quarantine follows foreign keys: tables not shared", tables=list(dominant))
        elif dominant:
            self.dominant, self.coprocessor = frozenset(dominant), helper.coprocessor(self.config)
            log.get("snapshot").info("tables shared by both processes", tables=list(dominant))

    def shared(self, names: Sequence[str], read: SourceRead, helper: Helper, path: Path) -> dict[str, TableResult]:
        """Half the work here, half in the helper: whole tables the helper loads from its own read
        transaction (opened after the mark), then the dominant tables, read here and converted by both.

        A table is dominant when no split of whole tables can balance it (``share.dominant_tables``).
        The main process starts with its own whole tables, then the dominant one, and the helper
        joins it once its tables are done: so the split by estimated cost only has to be about
        right, the dealing of batches evens out the rest. The main process is given half of the
        dominant table's cost to begin with, the half it will convert.
        """
        from replicator.load.share import dominant_tables

        costs = load_costs(self.sconn, read.schema, names, read.profiles)
        rows = table_rows(self.sconn, read.schema, names, read.profiles)
        dominant = dominant_tables(rows, self.config.snapshot.split_rows, costs)
        whole = {name: cost for name, cost in costs.items() if name not in dominant}
        mine, theirs = split(whole, main_start=sum(costs[name] for name in dominant) // 2)
        futures = {
            name: helper.pool.submit(
                _helper_load,
                _LoadJob(
                    str(path),
                    self.config,
                    self.plan,
                    name,
                    self.policy,
                    self.identity,
                    self.run_id,
                    self.fetch_rows,
                    self.mark,
                    name in self.guessed,
                ),
            )
            for name in names
            if name in theirs
        }
        self.share(dominant, helper)  # after the helper's own tables
        relay = _Relay(self.progress, helper)
        done = {name: self.here(name, relay) for name in names if name in mine}
        done.update({name: self.here(name, relay) for name in dominant})
        helper.wait(list(futures.values()))
        for name, future in futures.items():
            result = future.result()
            if isinstance(result, _Failure):
                if result.kind == _UNVERIFIED:  # the helper's rows disproved the guess: redo it here
                    done[name] = self.measured(name, result.message, relay)
                    continue
                _raise(result)
            else:
                done[name] = result
        return done


def _resumed(done: state.TableState) -> TableResult:
    return TableResult(
        table=done.table_name,
        target=done.target_table,
        rows=done.rows,
        quarantined=done.quarantined,
        seconds=0.0,
        checksum=done.checksum or EMPTY,
        resumed=True,
    )


def _mark_failed(pconn: psycopg.Connection[Any], state_schema: str, run_id: int, exc: BaseException) -> None:
    """Record the failure (Ctrl-C included) without hiding the original error if that fails too."""
    message = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)[:1000]
    try:
        with pconn.transaction():
            state.finish_run(pconn, state_schema, run_id, status="failed", message=message)
    except psycopg.Error:
        log.get("snapshot").warning("could not record the failed run", run_id=run_id)


def _save_plan(pconn: psycopg.Connection[Any], state_schema: str, plan: pgschema.SchemaPlan, *, replace: bool) -> None:
    """Keep the plan (a resumed run and the daemon convert exactly as this run does); on ``--replace``
    forget every earlier table mark, the mark, and the checkpoint chain: this snapshot supersedes them."""
    from replicator.apply import batch as apply

    apply.save_plan(pconn, state_schema, plan)
    if replace:
        state.forget_tables(pconn, state_schema)
        state.clear_mark(pconn, state_schema)
        schema = sql.Identifier(state_schema)
        dropped = pconn.execute(sql.SQL("DELETE FROM {}.checkpoints").format(schema)).rowcount
        pconn.execute(sql.SQL("DELETE FROM {}.apply_tables").format(schema))
        if dropped:
            log.get("snapshot").warning("--replace: the earlier checkpoint chain was cleared", checkpoints=dropped)


def _finish_run(
    pconn: psycopg.Connection[Any],
    plan: pgschema.SchemaPlan,
    state_schema: str,
    identity: state.SourceIdentity,
    run_id: int,
    mark: int | None,
    results: Sequence[TableResult],
) -> tuple[int | None, str | None]:
    """One transaction: the genesis checkpoint (capture installed), the mark, the run's end.

    The genesis covers every table with its count and checksum; its ``seq_to`` is the oldest mark a
    loaded table was read at (a resumed run's earlier tables), so streaming replays from there.
    """
    loaded = state.loaded_tables(pconn, state_schema)
    rows = sum(r.rows for r in results)
    quarantined = sum(r.quarantined for r in results)
    seq_to: int | None = None
    genesis_hash: str | None = None
    with pconn.transaction():
        if mark is not None:
            marks = [loaded[name].snapshot_seq for name in plan.order if name in loaded]
            unmarked = [name for name in plan.order if name in loaded and loaded[name].snapshot_seq is None]
            if unmarked:
                raise UsageError(
                    f"table(s) {', '.join(unmarked)} were loaded before capture was installed: changes since are lost",
                    hint="pass --replace to reload every table now that capture is installed",
                )
            seq_to = min([m for m in marks if m is not None] + [mark])
            head = store.latest(pconn, schema=state_schema)
            if head is None:
                tables = {
                    name: TableChange(upserted=loaded[name].rows, upserted_digest=loaded[name].checksum or EMPTY)
                    for name in plan.order
                    if name in loaded
                }
                checkpoint = genesis(tables, seq_to=seq_to)
                store.append(pconn, checkpoint, state_schema)
                faults.point("snapshot.after_genesis")
                genesis_hash = checkpoint.hash
            else:
                genesis_hash = None if head.number != 1 else head.hash
                seq_to = None if head.number != 1 else head.seq_to
        state.record_mark(
            pconn, state_schema, source=identity, snapshot_seq=seq_to, genesis_hash=genesis_hash, run_id=run_id
        )
        state.finish_run(pconn, state_schema, run_id, status="ok", rows=rows, quarantined=quarantined)
    if mark is not None:
        log.get("snapshot").info("journal mark recorded", snapshot_seq=seq_to, genesis=genesis_hash)
    return seq_to, genesis_hash


def prepare_target(
    pconn: psycopg.Connection[Any],
    plan: pgschema.SchemaPlan,
    *,
    replace: bool,
    reuse: bool,
    warnings: list[str],
) -> pgschema.SchemaPlan:
    """Existing mode: empty the tables for --replace. Create mode: (re)create the tables.

    ``reuse``: a resumed run with the saved plan; the tables exist already and keep their rows.
    """
    if reuse:
        return plan
    if plan.mode == "existing":
        if replace:
            with pconn.transaction():
                _truncate_all(pconn, plan)
        return plan
    if replace:
        with pconn.transaction():
            _drop_tables(pconn, plan.schema, _existing_tables(pconn, plan.schema, [t.name for t in plan.tables]))
    created = pgschema.create_tables(pconn, plan, defer_pk=True)
    warnings.extend(created.warnings)
    return pgschema.without_generated(plan, created.plain_generated)


def _existing_objects(pconn: psycopg.Connection[Any], schema_name: str) -> set[str]:
    rows = pconn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'i' "
        "UNION SELECT con.conname FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace "
        "WHERE n.nspname = %s",
        (schema_name, schema_name),
    ).fetchall()
    return {str(r[0]) for r in rows}


def _pending_post_load(pconn: psycopg.Connection[Any], plan: pgschema.SchemaPlan) -> pgschema.SchemaPlan:
    """The plan without the post-load statements an interrupted earlier run already completed."""
    have = _existing_objects(pconn, plan.schema)
    tables = tuple(
        msgspec.structs.replace(t, post_load=tuple(s for s in t.post_load if s.name not in have)) for t in plan.tables
    )
    return msgspec.structs.replace(plan, tables=tables)


def index_table(pconn: psycopg.Connection[Any], plan: pgschema.SchemaPlan, result: TableResult) -> TableResult:
    """Right after a table's load (create mode): its primary key (deferred, built over the loaded
    rows), UNIQUE constraints, indexes and CHECKs, then ANALYZE. With two loading processes one
    indexes while the other still copies, so the post-load step that used to follow every load runs
    mostly in the shadow of the loads. Foreign keys read
    other tables and wait for ``finish_target``; so does anything this step could not create."""
    if plan.mode != "create":
        return result
    table = plan.table(result.table)
    pgschema.add_primary_key(pconn, plan.schema, table)
    pending = _pending_post_load(pconn, only_tables(plan, [result.table]))
    refused = pgschema.apply_post_load(pconn, pending, kinds=pgschema.TABLE_LOCAL_KINDS)
    pconn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(plan.schema, table.name)))
    return msgspec.structs.replace(result, analyzed=True, warnings=result.warnings + tuple(refused))


def finish_target(
    pconn: psycopg.Connection[Any],
    plan: pgschema.SchemaPlan,
    read: SourceRead,
    warnings: list[str],
    analyzed: frozenset[str] = frozenset(),
) -> dict[str, int]:
    """After every table: what ``index_table`` left (FKs; everything for resumed tables), sequences
    past the keys, ANALYZE of the tables not analyzed yet."""
    bound = log.get("snapshot")
    started = time.monotonic()
    if plan.mode == "create":
        for table in plan.tables:  # tables an earlier, interrupted run loaded before their key was built
            pgschema.add_primary_key(pconn, plan.schema, table)
        pending = _pending_post_load(pconn, plan)
        # What index_table already tried and PostgreSQL refused is not tried (and warned) twice.
        tables = tuple(
            msgspec.structs.replace(t, post_load=tuple(x for x in t.post_load if x.kind == "fk"))
            if t.source in analyzed
            else t
            for t in pending.tables
        )
        warnings.extend(pgschema.apply_post_load(pconn, msgspec.structs.replace(pending, tables=tables)))
    indexed = time.monotonic()
    sequences = pgschema.sync_sequences(pconn, plan, read.sqlite_sequence)
    for table in plan.tables:
        if table.source not in analyzed:
            pconn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(plan.schema, table.name)))
    bound.info(
        "indexes, constraints, sequences and ANALYZE done",
        post_load_s=round(indexed - started, 3),
        sequences_analyze_s=round(time.monotonic() - indexed, 3),
    )
    return sequences


# --- the second core: a helper process that profiles and loads its share of the tables -------------


class _Failure(msgspec.Struct, frozen=True):
    """An error in the helper, carried back as data (our errors' constructors do not all pickle)."""

    kind: str
    message: str
    hint: str
    exit_code: int


_helper_queue: Any = None
_helper_work: Any = None
_helper_results: Any = None


def _init_helper(queue: Any, work: Any, results: Any, fmt: str, level: str) -> None:
    global _helper_queue, _helper_work, _helper_results  # one set per helper process, set once by the pool
    _helper_queue, _helper_work, _helper_results = queue, work, results
    log.configure(fmt, level)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="exit-with-parent", daemon=True).start()


def _exit_with(sentinel: int) -> None:
    """A main process killed outright (SIGKILL, OOM) leaves its helper blocked on a queue nobody
    feeds: the pool's or the shared tables'. It exits too, and PostgreSQL rolls back what it held."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def helper_queues() -> tuple[Any, Any]:
    """In the helper: the shared tables' batches in, their converted blocks out (:mod:`replicator.load.share`)."""
    return _helper_work, _helper_results


class _QueueProgress:
    """Progress events from the helper, relayed to the main process's bars or log lines."""

    def start(self, table: str, total: int) -> None:
        _helper_queue.put(("start", table, total, 0.0))

    def advance(self, table: str, rows: int) -> None:
        _helper_queue.put(("advance", table, rows, 0.0))

    def finish(self, table: str, rows: int, seconds: float) -> None:
        _helper_queue.put(("finish", table, rows, seconds))


def _failure(exc: BaseException) -> _Failure:
    if isinstance(exc, ReplicatorError):
        return _Failure(type(exc).__name__, exc.message, exc.hint, exc.exit_code)
    return _Failure(type(exc).__name__, str(exc), "rerun with -v and report it", 1)


def _raise(failure: _Failure) -> None:
    error = TargetError(failure.message, hint=failure.hint)
    error.exit_code = failure.exit_code
    raise error


class _LoadJob(msgspec.Struct, frozen=True):
    path: str
    config: Config
    plan: pgschema.SchemaPlan
    table: str
    policy: str
    source: state.SourceIdentity
    run_id: int
    fetch_rows: int
    snapshot_seq: int | None
    verify: bool = False


#: The _Failure kind of an _Unverified load in the helper (its message: the column).
_UNVERIFIED: Final = "unverified"


def _helper_profile(
    path: str, config: Config, names: list[str], create: bool, chunks: Sequence[Chunk] = ()
) -> tuple[dict[str, TableProfile], Scanned] | _Failure:
    """Profile ``names``, and scan ``chunks`` of dominant tables, in the helper's own read transaction
    (the type choice only; see the module doc)."""
    from replicator.load import share

    try:
        conn = open_source(Path(path), config)
        try:
            schema, create_config = read_schema(conn), config if create else None
            profiles, _ = _profiles(conn, schema, names, create_config, guess=False)
            return profiles, share.scan_chunks(conn, schema, chunks, create_config)
        finally:
            conn.close()
    except Exception as exc:
        return _failure(exc)


def _helper_load(job: _LoadJob) -> TableResult | _Failure:
    """Load one table from the helper's own read transaction, over its own PostgreSQL connection."""
    try:
        sconn = open_source(Path(job.path), job.config)
        try:
            timeout = job.config.target.connect_timeout_s
            with pg.connect(job.config.target.dsn, autocommit=True, connect_timeout=timeout) as pconn:
                result = load_table(
                    sconn,
                    pconn,
                    job.plan,
                    job.plan.table(job.table),
                    policy=job.policy,
                    state_schema=job.config.target.state_schema,
                    source=job.source,
                    run_id=job.run_id,
                    fetch_rows=job.fetch_rows,
                    snapshot_seq=job.snapshot_seq,
                    progress=_QueueProgress(),
                    verify=job.verify,
                    held=dependents.Held(job.plan) if job.policy == "quarantine" and job.plan.foreign_keys else None,
                )
                return index_table(pconn, job.plan, result)
        finally:
            sconn.close()
    except _Unverified as exc:
        return _Failure(kind=_UNVERIFIED, message=exc.column, hint="", exit_code=1)
    except Exception as exc:
        return _failure(exc)


def _ready() -> None:
    """Nothing: the first task a helper runs, so that it is started (and imported) early."""


class Helper:
    """One spawned process beside the main one; progress comes back through a queue, and the batches
    of shared tables go and come back through two more (:mod:`replicator.load.share`)."""

    def __init__(self, config: Config, progress: Progress | None) -> None:
        context = multiprocessing.get_context("spawn")
        self.queue = context.Queue()
        self.work = context.Queue()
        self.results = context.Queue()
        self.progress = progress
        self.config = config
        self._coprocessor: Coprocessor | None = None
        level = config.log.level
        fmt = "json" if config.log.format == "auto" and not sys.stderr.isatty() else config.log.format
        self.pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=context,
            initializer=_init_helper,
            initargs=(self.queue, self.work, self.results, fmt, level),
        )
        self._started = self.pool.submit(_ready)  # start the process now: it imports while this one plans

    def coprocessor(self, config: Config | None = None) -> Coprocessor:
        """The helper's conversion loop for shared tables, queued after the tasks submitted so far
        (``config``: the run's, with the target's DSN; the first call's is kept)."""
        if self._coprocessor is None:
            from replicator.load.share import Coprocessor

            self._coprocessor = Coprocessor(self, config or self.config)
        return self._coprocessor

    def finish(self) -> None:
        """The main process needs the helper no more: let it exit while the post-load steps run."""
        if self._coprocessor is not None:
            self._coprocessor.stop()
        self.pool.shutdown(wait=False)

    def close(self) -> None:
        # A helper still starting when the work is done (a tiny source) must finish starting first:
        # shut down mid-spawn, it fails to unpickle its queue and prints a traceback.
        wait([self._started], timeout=30)
        if self._coprocessor is not None:
            self._coprocessor.stop()  # after an error too: its loop waits for this
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.drain()
        self.queue.close()
        for channel in (self.work, self.results):  # what a failed load left unread must not block our exit
            channel.cancel_join_thread()
            channel.close()

    def drain(self) -> None:
        """Relay the helper's progress events (called from the main process's own progress calls)."""
        while True:
            try:
                event, table, value, seconds = self.queue.get_nowait()
            except queue_module.Empty:
                return
            if self.progress is None:
                continue
            if event == "start":
                self.progress.start(table, value)
            elif event == "advance":
                self.progress.advance(table, value)
            else:
                self.progress.finish(table, value, seconds)

    def wait(self, futures: Sequence[Future[Any]]) -> None:
        pending = set(futures)
        while pending:
            _done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            self.drain()


class _Relay:
    """The main process's progress, draining the helper's events as it goes."""

    def __init__(self, progress: Progress | None, helper: Helper) -> None:
        self.progress = progress
        self.helper = helper

    def start(self, table: str, total: int) -> None:
        if self.progress is not None:
            self.progress.start(table, total)
        self.helper.drain()

    def advance(self, table: str, rows: int) -> None:
        if self.progress is not None:
            self.progress.advance(table, rows)
        self.helper.drain()

    def finish(self, table: str, rows: int, seconds: float) -> None:
        if self.progress is not None:
            self.progress.finish(table, rows, seconds)
        self.helper.drain()


def split(sizes: Mapping[K, int], helper_start: int = 0, main_start: int = 0) -> tuple[list[K], list[K]]:
    """Largest first, each to the lighter side: (main process's tables, helper's tables).

    ``helper_start``: work the helper has before its first table (starting its interpreter);
    ``main_start``: the main process's part of the shared tables (it reads them).
    """
    sides: tuple[list[K], list[K]] = ([], [])
    weight = [main_start, helper_start]
    for name in sorted(sizes, key=lambda n: (-sizes[n], str(n))):
        side = 0 if weight[0] <= weight[1] else 1
        sides[side].append(name)
        weight[side] += sizes[name] + 1
    return sides


def read_source_parallel(
    conn: sqlite3.Connection, path: Path, config: Config, helper: Helper, *, create: bool
) -> SourceRead:
    """read_source with the profiles split between this process and the helper.

    Guesses (create mode) cost a sample each and are made here; only the tables that need a full
    profile are split, so a schema the guesses cover never waits for the helper to start.
    """
    schema = read_schema(conn)
    create_config = config if create else None
    guesses = {
        t.name: guess_profile(conn, t, create_config) if create_config is not None else None for t in schema.tables
    }
    profiles = {name: guess for name, guess in guesses.items() if guess is not None}
    costs = {name: cost for name, cost in profile_costs(conn, schema).items() if name not in profiles}
    from replicator.load import share

    mine, theirs = split(share.profile_pieces(conn, schema, costs, config.snapshot.split_rows), HELPER_START_NS)
    their_tables, their_chunks = share.whole_and_chunks(theirs)
    future = (
        helper.pool.submit(_helper_profile, str(path), config, their_tables, create, their_chunks) if theirs else None
    )
    my_tables, my_chunks = share.whole_and_chunks(mine)
    measured, _ = _profiles(conn, schema, my_tables, create_config, guess=False)
    profiles.update(measured)
    scanned = [share.scan_chunks(conn, schema, my_chunks, create_config)]
    if future is not None:
        helper.wait([future])
        other = future.result()
        if isinstance(other, _Failure):
            _raise(other)
        else:
            profiles.update(other[0])
            scanned.append(other[1])
    profiles.update(share.finish_profiles(conn, schema, scanned, create_config))
    return SourceRead(
        schema=schema,
        profiles=profiles,
        sqlite_sequence=pgschema.read_sqlite_sequence(conn),
        guessed=frozenset(name for name, guess in guesses.items() if guess is not None),
    )


#: The cost model of one table's load, fitted on the benchmark database (bench/snapshot.py, 2 cores):
#: per row (read, convert, checksum, write), per date-time text value (parsed), per stored byte.
ROW_COST_NS: Final = 1_500
DATETIME_TEXT_COST_NS: Final = 1_800
BYTE_COST_NS: Final = 6


def load_costs(
    conn: sqlite3.Connection,
    schema: Schema,
    names: Sequence[str],
    profiles: Mapping[str, TableProfile] | None = None,
) -> dict[str, int]:
    """Each table's expected load time in ns, to split the tables between the two processes.

    Rows alone balance badly: a row of a wide text table costs several narrow ones, and every
    date-time text is parsed. Bytes per row are sampled from the table's first rows.
    """
    costs = {}
    rows = table_rows(conn, schema, names, profiles)
    for name in names:
        table = schema.table(name)
        per_row = ROW_COST_NS + _dated(table) * DATETIME_TEXT_COST_NS + _row_bytes(conn, table) * BYTE_COST_NS
        costs[name] = rows[name] * per_row
    return costs


def table_rows(
    conn: sqlite3.Connection, schema: Schema, names: Sequence[str], profiles: Mapping[str, TableProfile] | None = None
) -> dict[str, int]:
    """Each table's rows, as the profile counted them, else estimated (for balancing only)."""
    return {
        name: profiles[name].rows if profiles and name in profiles else _row_estimate(conn, schema.table(name))
        for name in names
    }


#: The profile's cost model (same fit): per row and column coded in SQL, per date-time column
#: proven by a regex; the helper first spends about this long starting (spawn, imports).
PROFILE_COLUMN_NS: Final = 150
PROFILE_DATETIME_NS: Final = 750
HELPER_START_NS: Final = 300_000_000


def profile_costs(conn: sqlite3.Connection, schema: Schema) -> dict[str, int]:
    """Each table's expected profile time in ns: the two processes profile in parallel, and the load
    waits for both (the plan needs every table's types)."""
    return {
        t.name: _row_estimate(conn, t) * (len(t.columns) * PROFILE_COLUMN_NS + _dated(t) * PROFILE_DATETIME_NS)
        for t in schema.tables
    }


def _dated(table: Table) -> int:
    """Columns of a date-time family (their text values are parsed on load and proven on profile)."""
    return sum(
        1
        for c in table.columns
        if typemap.family(typemap.parse_declared(c.declared_type), c.affinity) in ("timestamp", "date")
    )


def _row_bytes(conn: sqlite3.Connection, table: Table, sample: int = 256) -> int:
    """Average bytes of a row's values among the table's first ``sample`` rows (a few page reads)."""
    if not table.columns:
        return 0
    lengths = " + ".join(f"ifnull(length(CAST({quote_ident(c.name)} AS BLOB)), 0)" for c in table.columns)
    query = f"SELECT avg({lengths}) FROM (SELECT * FROM main.{quote_ident(table.name)} LIMIT ?)"  # noqa: S608
    try:
        (average,) = conn.execute(query, (sample,)).fetchone()
    except sqlite3.Error:
        return 0
    return int(average or 0)


def _row_estimate(conn: sqlite3.Connection, table: Table) -> int:
    """Rows, for balancing only: max(rowid) is an index seek; count(*) for WITHOUT ROWID tables and
    where a column is named rowid (max(rowid) would read that column, which may hold text)."""
    name = quote_ident(table.name)
    if table.without_rowid or any(c.name.lower() == "rowid" for c in table.columns):
        row = conn.execute(f"SELECT count(*) FROM {name}").fetchone()  # noqa: S608 - quoted
    else:
        row = conn.execute(f"SELECT max(rowid) FROM {name}").fetchone()  # noqa: S608 - quoted
    return int(row[0] or 0)


# --- progress and the summary ---------------------------------------------------------------------


def render(result: SnapshotResult) -> None:
    """The run summary like pgloader's: rows, seconds, rows/s and checksum per table, totals."""
    from rich.console import Console
    from rich.markup import escape  # app names are text, never markup ("[/x]" crashed rich)
    from rich.table import Table

    out = Table(title=f"snapshot ({result.mode} mode, run {result.run_id})")
    out.add_column("table")
    out.add_column("rows", justify="right")
    out.add_column("quarantined", justify="right")
    out.add_column("seconds", justify="right")
    out.add_column("rows/s", justify="right")
    out.add_column("checksum")
    for t in result.tables:
        seconds = "resumed" if t.resumed else f"{t.seconds:.2f}"
        rate = "" if t.resumed else f"{t.rows_per_second:,.0f}"
        out.add_row(escape(t.table), f"{t.rows:,}", f"{t.quarantined:,}", seconds, rate, t.checksum[:16])
    total_rate = result.rows / result.seconds if result.seconds else 0.0
    out.add_row(
        "total",
        f"{result.rows:,}",
        f"{result.quarantined:,}",
        f"{result.seconds:.2f}",
        f"{total_rate:,.0f}",
        "",
        style="bold",
    )
    console = Console()
    console.print(out)
    if result.snapshot_seq is not None:
        console.print(
            f"journal mark {result.snapshot_seq}: `replicator run` streams from entry {result.snapshot_seq + 1}"
            + (f" (genesis checkpoint {result.genesis_hash[:16]})" if result.genesis_hash else "")
        )
    if result.quarantined:
        console.print(
            f"[yellow]{result.quarantined} row(s) quarantined (skipped): see replicator.quarantine; "
            "cutover refuses until they are acknowledged[/yellow]"
        )
    if result.warnings:
        console.print(f"{len(result.warnings)} schema warning(s) logged; `replicator schema --print` lists them")
