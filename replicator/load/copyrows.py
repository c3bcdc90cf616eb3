"""Rows in, binary COPY out: conversion, the refusal policy and the checksum, for any row source.

The snapshot (from SQLite), the helper process (batches of a shared table, :mod:`replicator.load.share`)
and ``import`` (an export's JSON Lines) all convert through :class:`RowPipe`, so a row is converted,
refused or hashed the same way whichever path loads it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, NamedTuple

import msgspec
import psycopg
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.copy import Copy, Writer

from checkpoints.digest import MODULUS
from replicator import faults
from replicator.apply import dependents
from replicator.errors import BadValue, TargetError, refused_by_target
from replicator.load.guess import _Unverified, verifier
from replicator.plan import refusals, schemaplan
from replicator.values import convert, convert_json, quarantine, refusal, targettype
from replicator.values.readback import row_digester


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
    helper_ranges: int = 0
    """Rowid ranges of a shared table the helper read itself, from its twin read transaction."""

    @property
    def checksum(self) -> str:
        return format(self.digest_sum % MODULUS, "064x")


KeyOf = Callable[[Sequence[Any]], dict[str, Any]]


def read_layout(table: schemaplan.TablePlan) -> tuple[list[str], list[str]]:
    """What a table's load selects: its loaded source columns, then the key columns not among them
    (``rowid`` for a table without a primary key), which only messages and quarantine rows use."""
    source_cols = [c.source for c in table.load_columns if c.source is not None]
    return source_cols, [k for k in list(table.key_source) or ["rowid"] if k not in source_cols]


def key_getter(table: schemaplan.TablePlan) -> KeyOf:
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
    skipped. In a guessed table it raises ``_Unverified`` instead, whatever the policy: a later row may
    make the full profile choose a type that holds the value (a blob after JSON that is not JSON: text),
    and a row quarantined under the guess would hold back the rows referencing it; the reload under
    the full profile's type refuses it if that type does too.
    ``strict_text``: the rows come from a strict UTF-8 read (:func:`replicator.load.source.strict_text`),
    so the converter skips its lone-surrogate check (``row_converter``); never for a bytes-fallback read or
    an export's JSON Lines, whose text may hold one.
    """

    def __init__(
        self,
        table: schemaplan.TablePlan,
        *,
        key_of: KeyOf,
        policy: str,
        verify: bool,
        extra: bool,
        strict_text: bool = False,
    ) -> None:
        self.table, self.key_of, self.policy = table, key_of, policy
        self.columns = table.load_columns
        source_cols = [c.source for c in self.columns if c.source is not None]
        self.types = [c.type for c in self.columns]
        self.missed: list[int] = []
        self.verify = verify
        rules = None
        if verify:
            keys = {i for i, c in enumerate(self.columns) if c.name in table.primary_key}
            rules = verifier(self.types, keys)
            if rules is None:
                raise _Unverified(table.source, "?")
        # Rows may carry key values after the loaded columns (for messages): the converter ignores them.
        self.convert_row = convert.row_converter(
            table.source,
            source_cols,
            self.types,
            watch=rules,
            missed=self.missed,
            extra=extra,
            strict_text=strict_text,
            digest=True,  # every converted row is digested below: JSON is validated by the pass the digest takes
            json_wire=True,  # documents as text for the COPY, no wrapper
        )
        self.copy_types = targettype.copy_types(self.types, json_wire=True)
        """What the COPY that takes these rows is typed as (``Copy.set_types``)."""
        self.digest_bytes = row_digester(self.types)  # the finisher and the encoder in one pass
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
        convert_row, digest_bytes, missed = self.convert_row, self.digest_bytes, self.missed
        sha256, from_bytes = hashlib.sha256, int.from_bytes
        name, total = self.table.source, 0
        kept = convert_json.CANONICAL  # the texts the converter leaves for the row's digest
        try:
            for row in batch:
                try:
                    out = convert_row(row)
                except refusal.RowRefused as exc:
                    kept.clear()  # the row is not digested: its documents' texts go now (megabytes, some)
                    if self.verify:  # refused under a guess: the full profile's type decides, before anything is held
                        raise (self.unverified() if missed else _Unverified(name, exc.column)) from None
                    if self.policy != "quarantine":
                        raise _stopped(self.table, self.key_of(row), exc) from None
                    refused = quarantine.make(name, self.key_of(row), exc.column, exc.value, exc.reason)
                    self.refusals.append(keep(name, row, refused) if keep is not None else refused)
                    continue
                if check is not None and (blocked := check(name, row, out)) is not None:
                    kept.clear()
                    refused = dependents.blocked_refusal(name, self.key_of(row), blocked)
                    self.refusals.append(keep(name, row, refused) if keep is not None else refused)
                    continue
                write_row(out)
                total += from_bytes(sha256(digest_bytes(out)).digest(), "big")
                if kept:  # what the digest did not take: a row converted twice (a fast path's ValueError)
                    kept.clear()
        finally:
            kept.clear()
        if missed:
            raise self.unverified()
        return total

    def unverified(self) -> _Unverified:
        return _Unverified(self.table.source, self.columns[self.missed[0]].name)


#: Binary COPY framing (PostgreSQL's documented file format): the 11-byte signature, the flags field
#: and the header extension length; the trailer, a field count of -1.
SIGNATURE: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
TRAILER: Final = b"\xff\xff"


class _Collect(Writer):
    """A COPY writer that keeps the formatted buffers (psycopg's documented use of ``Copy(writer=)``).

    Kept as given, not copied: the formatter hands over each buffer it fills (~32 kB) and starts a new one."""

    def __init__(self) -> None:
        self.parts: list[Buffer] = []

    def write(self, data: Buffer) -> None:
        self.parts.append(data)


class Formatted(NamedTuple):
    """A batch converted and formatted here: its tuples as the formatter's buffers, unjoined."""

    parts: list[Buffer]
    digest_sum: int
    refusals: list[quarantine.Refusal]


def format_parts(cursor: psycopg.Cursor[Any], types: Sequence[str], pipe: RowPipe, rows: Sequence[Any]) -> Formatted:
    """Convert ``rows`` and format them as binary COPY tuples with the cursor's connection's dumpers:
    the buffers as psycopg filled them, less its header and trailer (views, not copies). The main process
    writes them into its COPY as they are: a 7 MB batch joined, sliced and split again cost ~1 us a row."""
    sink = _Collect()
    copy = Copy(cursor, binary=True, writer=sink)
    copy.set_types(types)
    refused = len(pipe.refusals)
    total = pipe.run(rows, copy.write_row)
    copy.finish(None)
    parts = [memoryview(part) for part in sink.parts if len(part)]
    if not parts or bytes(parts[0][: len(SIGNATURE)]) != SIGNATURE or bytes(parts[-1][-len(TRAILER) :]) != TRAILER:
        raise TargetError("unexpected binary COPY framing from psycopg", hint="report it with the psycopg version")
    parts[0] = parts[0][len(SIGNATURE) :]
    parts[-1] = parts[-1][: len(parts[-1]) - len(TRAILER)]
    return Formatted([part for part in parts if len(part)], total, pipe.refusals[refused:])


def copy_statement(schema_name: str, table: schemaplan.TablePlan, *, freeze: bool) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY{})").format(
        sql.Identifier(schema_name, table.name),
        sql.SQL(", ").join(sql.Identifier(c.name) for c in table.load_columns),
        sql.SQL(", FREEZE" if freeze else ""),
    )


def copy_rows(
    pconn: psycopg.Connection[Any],
    schema_name: str,
    pipe: RowPipe,
    batches: Iterable[Sequence[Sequence[Any]]],
    *,
    on_batch: Callable[[int], None] | None = None,
    freeze: bool = False,
    held: dependents.Held | None = None,
) -> Copied:
    """Convert, checksum and binary-COPY a stream of source rows into ``pipe``'s table (caller's transaction).

    ``pipe`` (:class:`RowPipe`) says how each row is read, converted and refused; with ``verify`` the
    table's types are a guess (``guess_profile``): any value off the guess raises ``_Unverified`` (the
    caller's transaction then rolls back).

    ``freeze``: the caller truncated the table in this transaction, so COPY may write the rows
    frozen and all-visible (``COPY ... FREEZE``): the index builds and ANALYZE that follow, and every
    later reader, skip setting hint bits on (and so rewriting) every page, and VACUUM has nothing
    to freeze.

    Every row source goes through here: SQLite for the snapshot, an export's JSON Lines for import.
    A row holds the SQLite values of the plan's load columns first, in their order, and may carry
    extra key values after them (for messages; the pipe's ``extra=False`` promises none, a little
    faster). A refused value stops the load (``BadValue`` naming table, key, column and value) or,
    with the quarantine policy, skips and records the row.

    ``held`` (quarantine policy): the quarantined rows that rows reference (:mod:`replicator.apply.dependents`).
    """
    table = pipe.table
    read = total = 0
    name = table.source
    check, keep = held.hooks(name) if held is not None else (None, None)
    with pconn.cursor() as cur:
        try:
            with cur.copy(copy_statement(schema_name, table, freeze=freeze)) as copy:
                copy.set_types(pipe.copy_types)
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


def copy_error(table: schemaplan.TablePlan, exc: psycopg.Error) -> TargetError:
    """PostgreSQL refused the table's rows: name the table and say what to do; nothing was committed."""
    message = f"loading {table.source} into {table.name} failed: {refusals.pg_message(exc)}; nothing was committed"
    if isinstance(exc, psycopg.errors.ForeignKeyViolation | psycopg.errors.UniqueViolation):
        detail = exc.diag.message_detail  # "Key (parent_id)=(77) is not present in table ...": the orphan; or
        # "Key (at)=(2024-05-01 10:00:00) already exists": the key two SQLite rows share (one line even if a value
        # holds a newline)
        shown = (detail or "").rstrip(".").replace("\n", "\\n")
        message = message.replace("; nothing", f" ({shown}); nothing") if shown else message
    return refused_by_target(
        message,
        exc,
        [
            (
                psycopg.errors.ForeignKeyViolation,
                "SQLite holds rows whose parent is missing (its foreign keys are off by default): fix the orphans, "
                "or load in create mode where foreign keys are created NOT VALID and checked at cutover "
                "(children of a quarantined row are quarantined with it, never reported here)",
            ),
            (
                (psycopg.errors.UniqueViolation, psycopg.errors.CheckViolation, psycopg.errors.NotNullViolation),
                "the target schema is stricter than the SQLite data; fix the rows or relax the constraint",
            ),
        ],
        "check the target table's definition against the SQLite table; rerun with -v for details",
    )


def _stopped(table: schemaplan.TablePlan, key: dict[str, Any], exc: refusal.RowRefused) -> BadValue:
    return BadValue(
        f"{exc.stopped_at(table.source, key)}; nothing was written to {table.name}",
        hint=(
            f"{exc.fixes + '; or ' if exc.fixes else ''}fix the value in SQLite, or use --on-bad-value "
            "quarantine to skip and record such rows; then rerun with --replace"
        ),
    )
