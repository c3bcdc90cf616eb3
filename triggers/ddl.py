"""Pure functions that render the capture DDL: the journal, the meta table and the triggers.

Why pure: the SQL we put into the application's database is the contract with every app write that
will ever run against it, so it is rendered in one place, from plain arguments, and tested as text
and by execution. Nothing here touches a connection.

Design (see ``triggers.journal`` for the reading side):

* The trigger records *which row* changed (its key), never the row's content. Content is read later
  by the apply, in one read transaction with the journal range. So trigger firing order (d16), the
  column list (d12: only key columns are named, so ``DROP COLUMN`` of any other column still works)
  and values that some SQL functions reject (d10: ``json_object`` raises on BLOB) do not matter.
* The journal has no constraint but ``seq INTEGER PRIMARY KEY AUTOINCREMENT`` (d2, d6): the outer
  statement's ``OR IGNORE``/``OR REPLACE`` overrides conflict handling inside the trigger, so any
  UNIQUE, CHECK or NOT NULL could silently drop a journal row or fail the app's write.
* Keys are encoded by a total function that never raises (``typeof`` → ``quote``/``hex``), see
  :func:`encode_expr`.
* Only built-in, innocuous functions are used, so the triggers work with ``trusted_schema=OFF`` and
  under any SQLite that can open the file (d21).
* No-op UPDATEs are journaled (the UPDATE trigger has no WHEN clause): filtering would cost a
  NULL-safe compare of every column per row (d20) and the state-based apply is idempotent anyway.
"""

from __future__ import annotations

from typing import Literal

from triggers.schema import quote_ident

JOURNAL = "_replicator_journal"
META = "_replicator_meta"
TRIGGER_PREFIX = "_replicator_"
FORMAT_VERSION = 1
"""Bumped whenever the journal layout or the key encoding changes; install refuses a mismatch."""

Op = Literal["I", "U", "D"]
OPS: tuple[Op, ...] = ("I", "U", "D")
_EVENT = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}
_SUFFIX = {"I": "ins", "U": "upd", "D": "del"}
ROWID = None
"""Marker for "the key is the rowid" (the ``rowid`` no-key policy) in ``key_columns`` arguments."""

ROWID_NAMES = ("rowid", "_rowid_", "oid")

# Milliseconds since the Unix epoch. julianday('now') is fixed for one statement (d15), so this is a
# statement time, not a commit time: good for lag, never for ordering (``seq`` orders).
_TS_MS = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"


def journal_table_sql() -> str:
    """The journal: only the rowid PK as a constraint (d2), AUTOINCREMENT so ids never repeat (d6)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_ident(JOURNAL)} (\n"
        "  seq INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "  tbl TEXT,\n"
        "  op TEXT,\n"
        "  key TEXT,\n"
        "  old_key TEXT,\n"
        "  gen INTEGER,\n"
        "  ts_ms INTEGER\n"
        ")"
    )


def meta_table_sql() -> str:
    """Our bookkeeping: source id, format version, one ``table:<name>`` row per captured table."""
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(META)} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def trigger_name(table: str, op: Op) -> str:
    """Deterministic: the same table and event always give the same name (idempotent install)."""
    return f"{TRIGGER_PREFIX}{_SUFFIX[op]}_{table}"


def rowid_name(column_names: tuple[str, ...]) -> str:
    """A rowid alias no column shadows (a column may be named ``rowid``); the table must have rowids."""
    taken = {name.lower() for name in column_names}
    for name in ROWID_NAMES:
        if name not in taken:
            return name
    raise ValueError("every rowid alias (rowid, _rowid_, oid) is shadowed by a column")


def encode_expr(ref: str) -> str:
    """SQL rendering one value as a token of the canonical key encoding; total: it never raises.

    * NULL → ``NULL``; INTEGER → decimal; REAL → ``quote()`` (round-trips exactly: 15 digits, or
      20 when 15 do not; ``Inf``/``-Inf``); BLOB → ``X'HEX'``: all from ``quote()``.
    * TEXT → ``T`` + ``hex()`` of its bytes, because ``quote()`` stops at a NUL and passes invalid
      UTF-8 through (which the reader could not even decode).

    No token contains a comma, so composite keys are tokens joined by ``,``.
    """
    return f"CASE typeof({ref}) WHEN 'text' THEN 'T' || hex({ref}) ELSE quote({ref}) END"


def key_expr(prefix: Literal["NEW", "OLD"], key_columns: tuple[str, ...] | None, rowid: str = "rowid") -> str:
    """The encoded key of the NEW or OLD row; ``key_columns`` None means the rowid."""
    if key_columns is None:
        return f"quote({prefix}.{rowid})"
    if not key_columns:
        raise ValueError("a key needs at least one column")
    parts = [encode_expr(f"{prefix}.{quote_ident(col)}") for col in key_columns]
    return " || ',' || ".join(parts)


def integer_key(key_columns: tuple[str, ...] | None, rowid_alias: str | None) -> bool:
    """Keys that are always an INTEGER (rowid or its alias) skip the typeof() branch."""
    return key_columns is None or (rowid_alias is not None and key_columns == (rowid_alias,))


def _key(
    prefix: Literal["NEW", "OLD"], key_columns: tuple[str, ...] | None, rowid_alias: str | None, rowid: str
) -> str:
    if key_columns is not None and integer_key(key_columns, rowid_alias):
        return f"quote({prefix}.{quote_ident(key_columns[0])})"
    return key_expr(prefix, key_columns, rowid)


def trigger_sql(
    table: str,
    op: Op,
    key_columns: tuple[str, ...] | None,
    generation: int,
    *,
    rowid_alias: str | None = None,
    rowid: str = "rowid",
) -> str:
    """``CREATE TRIGGER`` for one table and event.

    INSERT journals NEW's key, DELETE OLD's key, UPDATE NEW's key plus OLD's key when the two
    encodings differ (a PK change, including a case-only change under NOCASE: compared as encoded
    text, so collations and affinities cannot hide it).
    """
    if generation < 1:
        raise ValueError("generation starts at 1")
    name = quote_ident(trigger_name(table, op))
    target = quote_ident(table)
    journal = quote_ident(JOURNAL)
    tbl = "'" + table.replace("'", "''") + "'"
    if op == "I":
        key, old = _key("NEW", key_columns, rowid_alias, rowid), "NULL"
    elif op == "D":
        key, old = _key("OLD", key_columns, rowid_alias, rowid), "NULL"
    else:
        key = _key("NEW", key_columns, rowid_alias, rowid)
        old = f"nullif({_key('OLD', key_columns, rowid_alias, rowid)}, {key})"
    # Every identifier is quote_ident()-ed and the table literal ''-escaped: no injection possible.
    insert = f"INSERT INTO {journal} (tbl, op, key, old_key, gen, ts_ms)"
    values = f"VALUES ({tbl}, '{op}', {key}, {old}, {int(generation)}, {_TS_MS})"
    return f"CREATE TRIGGER {name} AFTER {_EVENT[op]} ON {target} BEGIN {insert} {values}; END"


def drop_trigger_sql(name: str) -> str:
    return f"DROP TRIGGER IF EXISTS {quote_ident(name)}"
