"""Pure functions that render the capture DDL: the journal, the meta table and the triggers.

Why pure: the SQL we put into the application's database is the contract with every app write that
will ever run against it, so it is rendered in one place, from plain arguments, and tested as text
and by execution. Nothing here touches a connection.

Design (see ``triggers.journal`` for the reading side):

* The trigger records *which row* changed (its key), never the row's content. Content is read later
  by the apply, in one read transaction with the journal range. So trigger firing order (d16), the
  column list (d12: only key columns are named, so ``DROP COLUMN`` of any other column still works)
  and values that some SQL functions reject (d10: ``json_object`` raises on BLOB) do not matter.
* Key values are copied **verbatim** into untyped journal columns ``k1..kN`` (``o1..oN`` for the OLD
  key of an UPDATE). A column without a declared type has no affinity, so every storage class is
  kept exactly: INTEGER, REAL, TEXT with NUL or invalid UTF-8, BLOB, NULL. Nothing is converted, no
  SQL function is called, so nothing can raise and the app's write never fails because of us.
  (A function call anywhere in a trigger program, ``abs`` as much as ``julianday``, makes SQLite
  treat the app's statement as one that may abort: inside a transaction it then opens a statement
  journal and copies every page the statement modifies, measured +20 % on an UPDATE by key of an
  indexed table in 100-row transactions, bench/capture_instructions.py. Copying columns costs
  nothing comparable.)
  The canonical *text* encoding of a key lives in Python (:func:`triggers.journal.encode_key`).
* The journal has no constraint but ``seq INTEGER PRIMARY KEY`` (d2): the outer statement's
  ``OR IGNORE``/``OR REPLACE`` overrides conflict handling inside the trigger, so any UNIQUE, CHECK
  or NOT NULL could silently drop a journal row or fail the app's write.
* ``seq`` is never reused (d6) without AUTOINCREMENT: SQLite gives a new row max(rowid)+1, and
  :func:`triggers.journal.prune` never deletes the highest row (the high-water row), so the max never
  goes down. AUTOINCREMENT would guarantee the same at the price of reading and rewriting
  ``sqlite_sequence`` in every app statement (+1 page per commit, measured +0.6 µs per statement
  and up to +15 % on autocommit writes); it would also leave ``sqlite_sequence`` behind on remove.
* No timestamp by default: any time function costs that statement journal, and SQLite's
  'now' is the statement's start anyway (d15), not the commit. Lag is measured by the reader when it
  first sees a seq (:class:`triggers.journal.LagTracker`), which is closer to the commit. Install
  with ``stamp_time`` to have the triggers fill ``ts_ms`` (ms since the epoch, statement time), so a
  separate process (``capture status``) can show lag in seconds; the bench shows what it costs.
* No-op UPDATEs are journaled (the UPDATE trigger has no WHEN clause): filtering would cost a
  NULL-safe compare of every column per row (d20) and the state-based apply is idempotent anyway.
  The OLD key is always written on UPDATE; the reader drops it when equal to the new key.
* Only column references and literals: the triggers work with ``trusted_schema=OFF`` (d21).
* REPLACE victims (d1): ``INSERT OR REPLACE`` / ``UPDATE OR REPLACE`` delete the rows conflicting on
  a secondary UNIQUE index without any DELETE trigger. Looking for them later through the new row's
  unique values fails when that row changes again before the apply reads it (found by the random
  convergence test). So tables with secondary UNIQUE indexes also get BEFORE INSERT and
  BEFORE UPDATE OF <unique columns> triggers that journal (op ``R``) the key of every row holding
  the same unique values as NEW, compared with the index's collation: a superset of the victims
  (if the write is ignored or fails, the extra entry is harmless to a state-based apply; if the
  statement fails, it is rolled back with it). Partial indexes are treated as full (superset).
  Unique indexes on expressions are not covered: install reports them. The trigger's ``WHEN EXISTS``
  probes the indexes and its body runs only on a match, so a write without conflict pays the probes
  but no journal statement. On UPDATE the row being rewritten is left out (no victim of its own
  update: an ORM saving every column would otherwise journal each update twice), an index is probed
  only if NEW's values on it differ from OLD's, and a partial index or one over a generated column
  makes the trigger fire on every UPDATE (``UPDATE OF`` sees only the columns named in SET).
  The primary key counts as such an index when a key column compares with NOCASE, RTRIM or another
  non-BINARY collation: ``REPLACE ('tag')`` then deletes the row keyed 'Tag', whose bytes no entry
  of the new row names (issue 14 item 3). A BINARY key conflicts only with its own bytes.
"""

from __future__ import annotations

from typing import Literal

from triggers.names import JOURNAL, META, capture_trigger_name
from triggers.schema import quote_ident

FORMAT_VERSION = 2
"""Bumped whenever the journal layout changes; install refuses a mismatch."""

Op = Literal["I", "U", "D"]
OPS: tuple[Op, ...] = ("I", "U", "D")
_EVENT = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}
_SUFFIX = {"I": "ins", "U": "upd", "D": "del"}
VictimOp = Literal["RI", "RU"]
VICTIM_OPS: tuple[VictimOp, ...] = ("RI", "RU")
_VICTIM_SUFFIX = {"RI": "rin", "RU": "rup"}
UniqueKey = tuple[tuple[str, str], ...]
"""A secondary UNIQUE index as ((column, collation), ...)."""
ROWID_NAMES = ("rowid", "_rowid_", "oid")
FIXED_COLUMNS = ("seq", "tbl", "op", "gen", "nk", "ts_ms")
TS_MS_SQL = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
"""Milliseconds since the Unix epoch; constant within one statement (d15)."""


def key_column(i: int) -> str:
    """Journal column holding the i-th (1-based) key value of the changed row."""
    return f"k{i}"


def old_key_column(i: int) -> str:
    """Journal column holding the i-th key value before an UPDATE."""
    return f"o{i}"


def journal_table_sql(width: int) -> str:
    """The journal for keys of up to ``width`` columns; only the rowid PK as a constraint (d2)."""
    if width < 1:
        raise ValueError("width must be >= 1")
    keys = "".join(f",\n  {key_column(i)},\n  {old_key_column(i)}" for i in range(1, width + 1))
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_ident(JOURNAL)} (\n"
        "  seq INTEGER PRIMARY KEY,\n"
        "  tbl TEXT,\n"
        "  op TEXT,\n"
        "  gen INTEGER,\n"
        "  nk INTEGER,\n"
        f"  ts_ms INTEGER{keys}\n"
        ")"
    )


def widen_journal_sql(current: int, width: int) -> list[str]:
    """ALTER TABLE statements adding key columns ``current+1..width`` (instant: no table rewrite)."""
    statements = []
    for i in range(current + 1, width + 1):
        for col in (key_column(i), old_key_column(i)):
            statements.append(f"ALTER TABLE {quote_ident(JOURNAL)} ADD COLUMN {col}")
    return statements


def meta_table_sql() -> str:
    """Our bookkeeping: source id, format version, one ``table:<name>`` row per captured table."""
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(META)} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def trigger_name(table: str, op: Op | VictimOp) -> str:
    """Deterministic: the same table and event always give the same name (idempotent install)."""
    suffix = _VICTIM_SUFFIX[op] if op in _VICTIM_SUFFIX else _SUFFIX[op]
    return capture_trigger_name(table, suffix)


def rowid_name(column_names: tuple[str, ...]) -> str:
    """A rowid alias no column shadows (a column may be named ``rowid``); the table must have rowids."""
    taken = {name.lower() for name in column_names}
    for name in ROWID_NAMES:
        if name not in taken:
            return name
    raise ValueError("every rowid alias (rowid, _rowid_, oid) is shadowed by a column")


def key_refs(prefix: Literal["NEW", "OLD"], key_columns: tuple[str, ...] | None, rowid: str = "rowid") -> list[str]:
    """``NEW."a"``, ``NEW."b"``... (or ``NEW.rowid`` when ``key_columns`` is None: the rowid policy)."""
    if key_columns is None:
        return [f"{prefix}.{rowid}"]
    if not key_columns:
        raise ValueError("a key needs at least one column")
    return [f"{prefix}.{quote_ident(col)}" for col in key_columns]


def trigger_sql(
    table: str,
    op: Op,
    key_columns: tuple[str, ...] | None,
    generation: int,
    *,
    rowid: str = "rowid",
    stamp_time: bool = False,
) -> str:
    """``CREATE TRIGGER`` for one table and event: INSERT journals NEW's key, DELETE OLD's key,
    UPDATE both (the reader keeps the OLD key only when it differs: a PK change)."""
    if generation < 1:
        raise ValueError("generation starts at 1")
    name = quote_ident(trigger_name(table, op))
    target = quote_ident(table)
    journal = quote_ident(JOURNAL)
    tbl = "'" + table.replace("'", "''") + "'"
    new = key_refs("NEW", key_columns, rowid)
    old = key_refs("OLD", key_columns, rowid)
    width = len(new)
    cols = ["tbl", "op", "gen", "nk"]
    values = [tbl, f"'{op}'", str(int(generation)), str(width)]
    if stamp_time:
        cols.append("ts_ms")
        values.append(TS_MS_SQL)
    refs = old if op == "D" else new
    cols += [key_column(i) for i in range(1, width + 1)]
    values += refs
    if op == "U":
        cols += [old_key_column(i) for i in range(1, width + 1)]
        values += old
    # Every identifier is quote_ident()-ed and the table literal ''-escaped: no injection possible.
    insert = f"INSERT INTO {journal} ({', '.join(cols)})"
    return f"CREATE TRIGGER {name} AFTER {_EVENT[op]} ON {target} BEGIN {insert} VALUES ({', '.join(values)}); END"


def victim_trigger_sql(
    table: str,
    op: VictimOp,
    key_columns: tuple[str, ...] | None,
    unique_keys: tuple[UniqueKey, ...],
    generation: int,
    *,
    rowid: str = "rowid",
    identity: tuple[str, ...] = (),
    indirect: tuple[UniqueKey, ...] = (),
) -> str:
    """BEFORE INSERT (``RI``) or BEFORE UPDATE (``RU``): journal, as op ``R``, the key of every row that
    has NEW's values on some secondary UNIQUE index (see module doc).

    ``WHEN EXISTS`` probes the unique indexes first, so the journal INSERT ... SELECT runs only when a
    row holds NEW's values: the common write (no conflict) pays the probes, not the journal statement.
    ``RU`` only:

    * ``identity``: SQL spellings of what names exactly one row, the rowid on a rowid table or the
      quoted primary key columns of a WITHOUT ROWID table, by which the row being updated is left out:
      it is no victim of its own update (an ORM that writes every column on save would journal it
      twice otherwise). Empty when nothing names a row exactly (the rowid is hidden): it stays in.
    * An index is probed only when NEW's values on it differ from OLD's under its collation: the index
      is unique and holds OLD's, so no other row can hold values equal to them.
    * ``indirect``: the unique keys an UPDATE can change without naming their columns in SET (a
      partial index's WHERE, a generated column's inputs). ``UPDATE OF`` fires only for columns named
      in SET, so with any of them the trigger fires on every UPDATE, and they are always probed.
    """
    if not unique_keys:
        raise ValueError("no unique key: no victim trigger")
    if generation < 1:
        raise ValueError("generation starts at 1")
    name = quote_ident(trigger_name(table, op))
    target = quote_ident(table)
    refs = [rowid] if key_columns is None else [quote_ident(c) for c in key_columns]
    cols = ", ".join(["tbl", "op", "gen", "nk"] + [key_column(i) for i in range(1, len(refs) + 1)])
    tbl = "'" + table.replace("'", "''") + "'"
    head = f"{tbl}, 'R', {int(generation)}, {len(refs)}, {', '.join(refs)}"
    others = ""
    if op == "RU" and identity:
        others = " AND NOT (" + " AND ".join(f"{c} IS OLD.{c}" for c in identity) + ")"
    probes: list[str] = []
    statements: list[str] = []
    for unique in unique_keys:
        where = _same_values(unique, "", "=")
        probe = f"EXISTS (SELECT 1 FROM {target} WHERE {where}{others})"  # noqa: S608
        if op == "RU" and unique not in indirect:
            probe = f"NOT ({_same_values(unique, 'OLD.', 'IS')}) AND {probe}"
        probes.append(probe)
        statements.append(
            f"INSERT INTO {quote_ident(JOURNAL)} ({cols}) SELECT {head} FROM {target} WHERE {where}{others};"  # noqa: S608
        )
    if op == "RI":
        event = "INSERT"
    elif indirect:
        event = "UPDATE"
    else:
        watched = sorted({col for unique in unique_keys for col, _coll in unique})
        event = "UPDATE OF " + ", ".join(quote_ident(c) for c in watched)
    when = " OR ".join(f"({p})" for p in probes) if len(probes) > 1 else probes[0]
    return f"CREATE TRIGGER {name} BEFORE {event} ON {target} WHEN {when} BEGIN {' '.join(statements)} END"


def _same_values(unique: UniqueKey, row: str, op: str) -> str:
    """``{row}"a" {op} NEW."a" COLLATE "NOCASE" AND ...``: the row's values equal NEW's under the index's
    collations (an explicit COLLATE on either operand is the one the comparison uses)."""
    return " AND ".join(f"{row}{quote_ident(c)} {op} NEW.{quote_ident(c)} COLLATE {quote_ident(k)}" for c, k in unique)


def drop_trigger_sql(name: str) -> str:
    return f"DROP TRIGGER IF EXISTS {quote_ident(name)}"
