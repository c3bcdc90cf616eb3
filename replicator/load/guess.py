"""Types from a sample, proven by the load, and the full profile when a row disproves them.

Profiling every value before the load costs a second full read of each table (a quarter of a snapshot's
CPU). In create mode a table whose sample shows each column holding only its declared family's natural
storage class is planned from the sample (:func:`guess_profile`); the load then checks every value off the
converter's fast paths (:func:`verifier`). A value the full profile could have counted differently stops the
table's load (``Unverified``, nothing committed) and :func:`replan` profiles it in full before it is loaded
again. So the types are always the full profile's.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final

import msgspec

from replicator import log
from replicator.config import Config
from replicator.load.context import LoadContext
from replicator.load.costs import row_estimate
from replicator.load.target import drop_tables, save_plan
from replicator.plan import createmode, ddl, schemaplan, typemap
from replicator.plan.category import TEMPORAL_TEXT
from replicator.plan.profile import (
    STORAGE_CLASSES,
    Plain,
    TableProfile,
)
from replicator.plan.profiler import profile_table
from replicator.state.store import StateStore
from replicator.values import targettype
from triggers.schema import Table

if TYPE_CHECKING:
    from replicator.load.source import SourceRead


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
    # JSON is json/jsonb unless a blob is held; a BOOLEAN column is boolean when it holds 0/1 (the
    # sample must show only those: the load's rule takes nothing else, see ``_rule``)
    "json": frozenset({"integer", "real", "text"}),
    "jsonb": frozenset({"integer", "real", "text"}),
    "bool": frozenset({"integer"}),
}


def guess_profile(conn: sqlite3.Connection, table: Table, create: Config) -> TableProfile | None:
    """The type choice's profile from the first rows, when the load can prove it for every row.

    Profiling every value before the load costs a second full read of the table (a quarter of a
    snapshot's CPU). For a table whose every column the sample shows holding only its declared
    family's natural storage class (integers in an INTEGER column, text in TEXT, ISO text in a
    DATETIME...), the plan is made from the sample and ``copy_rows`` checks each value that misses
    the converter's fast path (``verifier``): one that the full profile could have counted
    differently -- another storage class, a date-time in another format, a NULL key -- stops the
    table's load, which is then profiled in full and reloaded (:func:`replan`). So the choice is the
    full profile's whenever the guess stands, and the full profile's own when it does not.
    None: not guessable (overrides, WITHOUT ROWID, NUMERIC/UUID/untyped columns, a JSON column
    holding a blob, a BOOLEAN column holding anything but 0/1, a sample holding anything else).
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
        if family == "bool" and col.formats.get("bool01", 0) != col.storage.get("integer", 0):
            return None
    columns = tuple(msgspec.structs.replace(c, sampled=GUESS_SAMPLE_ROWS) for c in sample.columns)
    return msgspec.structs.replace(sample, rows=row_estimate(conn, table), columns=columns)


def verifier(
    types: Sequence[targettype.TargetType], keys: Collection[int]
) -> dict[int, Callable[[object], bool]] | None:
    """What a guessed table's load accepts off the converter's fast paths, per column position.

    A value the fast path takes is of the guessed storage class; of the others only these keep the
    full profile's choice: NULL outside the key, numbers in a double column, any text in a text
    column, blobs in bytea, ISO text of the guessed kind in date-time columns, anything in ``time``,
    anything but a blob in json/jsonb, 0/1 in boolean.
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


def _rule(t: targettype.TargetType) -> Callable[[object], bool] | None:
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
    if name in ("json", "jsonb"):  # the full profile makes it text only for a blob; bad JSON is refused either way
        return lambda v: type(v) is not bytes
    if name == "boolean":  # 0/1; a boolean word or another number: the full profile decides
        return lambda v: type(v) is int and (v == 0 or v == 1)
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


def _types_of(table: schemaplan.TablePlan) -> schemaplan.TablePlan:
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


def replan(
    ctx: LoadContext, plan: schemaplan.SchemaPlan, read: SourceRead, config: Config, name: str
) -> schemaplan.SchemaPlan:
    """The plan after a guess the rows disproved: the table profiled in full and re-planned; if its
    types changed, the table is recreated and the plan saved (a resumed run and the daemon use it)."""
    bound = log.get("snapshot", table=name)
    table = read.schema.table(name)
    full = profile_table(ctx.sconn, table, plain=plain_columns(table, config))
    profiles = {**read.profiles, name: full}
    fresh = createmode.plan_create(read.schema, profiles, config).table(name)
    old = plan.table(name)
    if _types_of(fresh) == _types_of(old):
        return plan
    bound.warning("types changed by the full profile; table recreated", table=name)
    alone = msgspec.structs.replace(plan, tables=(fresh,), order=(name,))
    with ctx.pconn.transaction():
        drop_tables(ctx.pconn, plan.schema, [old.name])
    created = ddl.create_tables(ctx.pconn, alone, defer_pk=True)
    fresh = ddl.without_generated(alone, created.plain_generated).table(name)
    plan = msgspec.structs.replace(plan, tables=tuple(fresh if t.source == name else t for t in plan.tables))
    with ctx.pconn.transaction():
        save_plan(StateStore(ctx.pconn, config.target.state_schema), plan, replace=False)
    return plan
