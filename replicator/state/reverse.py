"""The rollback window's objects in PostgreSQL: the reverse journal, its capture triggers, the write fence.

Why here, in ``state/``: they live in the state schema (the journal, the window's row, the trigger
functions) and every stage that meets them is above this layer: the cutover installs the capture, the
daemon's reverse direction reads the journal, ``rollback`` fences, ``finalize`` and ``snapshot --replace``
remove them, ``status`` reads the journal's size.

**Capture.** Per migrated table, ``AFTER ... FOR EACH ROW`` triggers (:data:`CAPTURE_TRIGGERS`) append
``(tbl, op, key)`` to ``reverse_journal`` inside the app's own transaction (an app transaction that rolls back
leaves no entry; one that commits always has its entries), plus an ``AFTER TRUNCATE`` statement trigger that
appends one entry without a key (the whole table). Key-only, as the forward capture: the key columns as a JSON array
(``jsonb_build_array``: ISO text for dates whatever the session's ``DateStyle``), the row itself read at
apply time. An UPDATE that moves the key journals both keys: the old key by a second UPDATE trigger whose
``WHEN`` tests whether the key moved (the key columns themselves where their type's ``=`` is exact, the keys as
journaled otherwise: citext's ``=`` equates 'bob' and 'Bob'), so an UPDATE that keeps its key (nearly all of
them) pays no second call.

**What the capture costs, and why it looks like this.** It runs once per row the app writes, so it is built
to cost what the cheapest possible trigger costs (bench/reverse_capture.py's ``floor``): one PL/pgSQL call
doing one ``INSERT`` of literals, no branching on ``TG_OP``, and a journal with a single index (``xid``, what
every reader goes by) and no identity column. The functions are ``SECURITY DEFINER``, so an app role that may
not touch the state schema still journals its writes, yet they carry no ``SET search_path``: a ``SET`` clause
makes every call save and restore the setting, which measured 10-30 % of the trigger's own time. They are
safe without it because nothing in their bodies is resolved through the caller's path: the journal is
schema-qualified, the one function call is ``pg_catalog.``-qualified, the literals take the journal columns'
types (no operator, no cast looked up), the columns' defaults were resolved when the journal was made, and
the moved-key test is the ``WHEN`` clause, resolved when the trigger is created, under a ``search_path`` pinned
to ``pg_catalog``.
A table whose key has a float column keeps ``SET extra_float_digits = 3``: a float's JSON text follows that
setting, and a session set to 0 would round 0.30000000000000004 to 0.3 and name no row. Capture and fence
triggers are ``ENABLE ALWAYS``: they fire in a session whose ``session_replication_role`` is ``replica`` too.

**Ordering: transaction-id horizons, not positions seen.** Transactions commit in no particular order of
anything taken while they run: transaction A can write its entry first (a lower sequence number, a lower
xid) and commit after B, and a reader that moved "past B's entry" would never see A's. Every entry therefore
records its transaction's id (``pg_current_xact_id()``, the top-level ``xid8``, which never wraps; kept as a
``bigint``), and a reader takes entries by xid below its snapshot's ``xmin``: every transaction below it has
ended, so that set is final. The reverse direction's positions are these horizons (a checkpoint covers the
entries of the transactions whose ids lie in its range), contiguous like the forward journal's seqs. A
long-running writing transaction holds the horizon back, as it should: its rows are not committed yet.

**The fence** (``rollback``). A ``BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ... FOR EACH STATEMENT``
trigger on every migrated table raises ``read_only_sql_transaction`` (SQLSTATE 25006) with a message that
says where the data went: ORMs report it as the operational error it is, not as a constraint violation
they would retry. Creating it takes each table's ``SHARE ROW EXCLUSIVE`` lock, so it waits for the app
transactions already writing there, and its commit is the moment after which no app write reaches
PostgreSQL: every journal entry is then final.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from replicator.plan.pgnames import truncated
from replicator.plan.schemaplan import SchemaPlan
from replicator.plan.shape import TableShape, table_shape

JOURNAL: Final = "reverse_journal"
WINDOW: Final = "reverse_window"
CERTIFICATES: Final = "rollback_certificates"
"""The sealed rollback certificates, one per window a rollback closed (:func:`store_certificate`)."""
CAPTURE_TRIGGERS: Final = {
    # name → (events, row whose key is journaled, WHEN the key moved); within an event, triggers fire in name order
    "replicator_reverse_row": ("INSERT OR UPDATE", "NEW", False),
    "replicator_reverse_row_moved": ("UPDATE", "OLD", True),
    "replicator_reverse_row_deleted": ("DELETE", "OLD", False),
}
"""The row triggers of a keyed table: the new key of an INSERT or UPDATE, the old key of an UPDATE that moved it,
the old key of a DELETE. Two functions serve them, one per row (``NEW``, ``OLD``); the entry's op is the first
letter of ``TG_OP`` (I, U, D)."""
LEGACY_CAPTURE_TRIGGER: Final = "replicator_reverse_capture"
"""The one row trigger (and ``function_name(table, "capture")``) an earlier release installed: removed too."""
TRUNCATE_TRIGGER: Final = "replicator_reverse_truncate"
FENCE_TRIGGER: Final = "replicator_rollback_fence"
FENCE_FUNCTION: Final = "rollback_fence"
TRUNCATE_FUNCTION: Final = "reverse_truncate"
REFUSED_ACTION: Final = "not written back to SQLite"
"""The quarantine action of a value the reverse apply refused (its row is not written back); here, below the
writer, so that ``status`` counts what ``rollback`` would refuse for."""


class Window(msgspec.Struct, frozen=True):
    """The window's row: open since when, for which cutover, where the reverse apply stands, how it closed."""

    opened_at: str
    cutover: str
    """The hash of the cutover checkpoint that opened it."""
    tables: tuple[str, ...]
    applied_through: int
    """The reverse direction's horizon: every journal entry of a transaction below it is in SQLite."""
    applied_at: str | None
    fenced_at: str | None
    closed_at: str | None
    closed_how: str | None
    message: str

    @property
    def open(self) -> bool:
        return self.closed_at is None


class JournalStats(msgspec.Struct, frozen=True):
    entries: int
    oldest_at: str | None
    bytes: int
    oldest_age_s: float | None = None
    """Seconds since the oldest entry's transaction began (PostgreSQL's clock); None when the journal is empty.
    Every entry still in the journal waits to be written back (a batch prunes what it applied), so this is
    the reverse direction's lag."""


def shapes_of(plan: SchemaPlan) -> dict[str, TableShape]:
    """The migrated tables as the window captures and writes them back, by SQLite name."""
    return {t.source: table_shape(t, plan.schema) for t in plan.tables}


def _exists(conn: psycopg.Connection[Any], relation: sql.Identifier) -> bool:
    """Whether the relation is there now (a target laid out before the window, a table dropped since)."""
    return _all_exist(conn, [relation])[0]


def journal(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, "reverse_journal")


def window(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, "reverse_window")


def function_name(table: str, row: str) -> str:
    """The capture function journaling ``row``'s key (``NEW`` or ``OLD``) on the SQLite table ``table``: a stable
    name within PostgreSQL's 63 bytes. (``capture``: the one function an earlier release installed.)"""
    return f"reverse_{row.lower()}_" + hashlib.sha256(table.encode("utf-8")).hexdigest()[:24]


def _relation(t: TableShape) -> sql.Identifier:
    return sql.Identifier(t.schema, t.target)


def _key_array(t: TableShape, row: str) -> sql.Composable:
    return sql.SQL("pg_catalog.jsonb_build_array({})").format(
        sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.SQL(row), sql.Identifier(c)) for c in t.key_target)
    )


def _always(relation: sql.Identifier, *triggers: str) -> sql.Composed:
    """The triggers fire whatever the session's ``session_replication_role``: an ordinary trigger does not in
    ``replica`` mode (bulk loaders, pg_restore-like tools, an app connected as a superuser set it), so the
    capture would miss such a session's writes and the fence would let them through. One ``ALTER TABLE`` for
    all of a table's triggers: each is a lock and a relation-cache invalidation inside the cutover's outage."""
    return sql.SQL("ALTER TABLE {} {}").format(
        relation, sql.SQL(", ").join(sql.SQL("ENABLE ALWAYS TRIGGER {}").format(sql.Identifier(t)) for t in triggers)
    )


def _capture_function(schema: str, t: TableShape, row: str, *, float_key: bool) -> sql.Composed:
    """The function journaling ``row``'s key: one ``INSERT`` (see the module's docstring for why it needs no
    ``SET search_path``); the op is ``TG_OP``'s first letter, taken by a ``pg_catalog`` function, not compared."""
    body = sql.SQL(
        "BEGIN INSERT INTO {} (tbl, op, key) VALUES ({}, pg_catalog.left(TG_OP, 1), {}); RETURN NULL; END"
    ).format(journal(schema), sql.Literal(t.source), _key_array(t, row))
    setting = sql.SQL(" SET extra_float_digits = 3") if float_key else sql.SQL("")
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER{} AS {}"
    ).format(
        sql.Identifier(schema),
        sql.Identifier(function_name(t.source, row)),
        setting,
        sql.Literal(body.as_string(None)),
    )


def _moved(t: TableShape, *, exact: bool) -> sql.Composable:
    """The moved-key trigger's ``WHEN``: the key columns themselves where their type's ``=`` is exact (integers,
    uuid...: nearly every app's key, and the cheap test: a jsonb comparison cost a quarter of the capture's time
    per UPDATE row), otherwise the keys as journaled (citext's ``=`` equates 'bob' and 'Bob', numeric's 1.0 and
    1.00, float's 0 and -0: different journal keys)."""
    if exact:
        return sql.SQL(" OR ").join(
            sql.SQL("OLD.{0} IS DISTINCT FROM NEW.{0}").format(sql.Identifier(c)) for c in t.key_target
        )
    return sql.SQL("NOT ({} OPERATOR(pg_catalog.=) {})").format(_key_array(t, "OLD"), _key_array(t, "NEW"))


def _capture_triggers(schema: str, t: TableShape, *, exact: bool) -> list[sql.Composable]:
    """The keyed table's row triggers. The moved-key trigger's ``WHEN`` is resolved when it is created, under
    :func:`install`'s pinned ``search_path``."""
    return [
        sql.SQL("CREATE OR REPLACE TRIGGER {} AFTER {} ON {} FOR EACH ROW {}EXECUTE FUNCTION {}.{}()").format(
            sql.Identifier(trigger),
            sql.SQL(events),
            _relation(t),
            sql.SQL("WHEN ({}) ").format(_moved(t, exact=exact)) if moved else sql.SQL(""),
            sql.Identifier(schema),
            sql.Identifier(function_name(t.source, row)),
        )
        for trigger, (events, row, moved) in CAPTURE_TRIGGERS.items()
    ]


def _truncate_function(schema: str) -> sql.Composed:
    body = sql.SQL("BEGIN INSERT INTO {} (tbl, op, key) VALUES (TG_ARGV[0], 'T', NULL); RETURN NULL; END").format(
        journal(schema)
    )
    return sql.SQL("CREATE OR REPLACE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS {}").format(
        sql.Identifier(schema), sql.Identifier(TRUNCATE_FUNCTION), sql.Literal(body.as_string(None))
    )


FLOAT_TYPES: Final = frozenset({"real", "double precision"})
EXACT_EQUALITY: Final = frozenset({"smallint", "integer", "bigint", "uuid", "boolean", "date", "bytea"})
"""Types whose ``=`` holds only between values with the same journaled (JSON) spelling."""


def _key_column_types(conn: psycopg.Connection[Any], tables: Sequence[TableShape]) -> dict[tuple[str, str, str], str]:
    """(schema, table, column) → the column's type as PostgreSQL has it now (a domain's base type), for every
    column of the tables' schemas: one query, inside the cutover's outage."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname, a.attname, "
        "pg_catalog.format_type(CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END, NULL) "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid "
        "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped",
        (sorted({t.schema for t in tables}),),
    ).fetchall()
    return {(str(r[0]), str(r[1]), str(r[2])): str(r[3]) for r in rows}


def install(conn: psycopg.Connection[Any], schema: str, tables: Sequence[TableShape], cutover: str) -> None:
    """The reverse capture on every table, and the window opened, in the caller's transaction (the cutover's).

    A table without a key the journal can name gets only a keyless entry per statement (whole-table
    entries: the reverse apply copies such a table whole)."""
    types = _key_column_types(conn, tables)
    path = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()
    # every operator a WHEN names resolves to pg_catalog's, whatever the cutover session's path; restored below
    statements: list[sql.Composable] = [
        sql.SQL("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)"),
        _truncate_function(schema),
    ]
    for t in tables:
        rel = _relation(t)
        if t.key_target:
            key_types = [types.get((t.schema, t.target, k), "") for k in t.key_target]
            float_key = any(ty in FLOAT_TYPES for ty in key_types)
            statements += [_capture_function(schema, t, row, float_key=float_key) for row in ("NEW", "OLD")]
            statements += _capture_triggers(schema, t, exact=all(ty in EXACT_EQUALITY for ty in key_types))
            truncate_events = sql.SQL("TRUNCATE")
            triggers = [*CAPTURE_TRIGGERS, TRUNCATE_TRIGGER]
        else:
            truncate_events = sql.SQL("INSERT OR UPDATE OR DELETE OR TRUNCATE")
            triggers = [TRUNCATE_TRIGGER]
        statements.append(
            sql.SQL("CREATE OR REPLACE TRIGGER {} AFTER {} ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}.{}({})").format(
                sql.Identifier(TRUNCATE_TRIGGER),
                truncate_events,
                rel,
                sql.Identifier(schema),
                sql.Identifier(TRUNCATE_FUNCTION),
                sql.Literal(t.source),
            )
        )
        statements.append(_always(rel, *triggers))
    statements.append(
        sql.SQL("SELECT pg_catalog.set_config('search_path', {}, true)").format(sql.Literal(path[0] if path else ""))
    )
    conn.execute(sql.SQL(";\n").join(statements))  # one round trip: this runs inside the cutover's outage
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (cutover, tables) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET "
            "opened_at = now(), cutover = EXCLUDED.cutover, tables = EXCLUDED.tables, applied_through = 0, "
            "applied_at = NULL, fenced_at = NULL, closed_at = NULL, closed_how = NULL, message = ''"
        ).format(window(schema)),
        (cutover, [t.source for t in tables]),
    )


def remove(
    conn: psycopg.Connection[Any], schema: str, tables: Iterable[TableShape], *, keep_fence: bool = False
) -> None:
    """Drop the capture (and, unless ``keep_fence``, the fence) from every table, the functions, and the
    journal's entries, in the caller's transaction. Idempotent: a table dropped since is skipped.

    Two round trips whatever the number of tables: ``rollback`` runs this inside its write outage."""
    capture = (*CAPTURE_TRIGGERS, LEGACY_CAPTURE_TRIGGER, TRUNCATE_TRIGGER)
    triggers = capture if keep_fence else (*capture, FENCE_TRIGGER)
    shapes = list(tables)
    there = _all_exist(conn, [*(_relation(t) for t in shapes), journal(schema)])
    statements: list[sql.Composable] = []
    for t, exists in zip(shapes, there, strict=False):
        if not exists:
            continue
        drop_trigger = sql.SQL("DROP TRIGGER IF EXISTS {} ON {}")
        statements += [drop_trigger.format(sql.Identifier(trigger), _relation(t)) for trigger in triggers]
        statements += [_drop_function(schema, function_name(t.source, row)) for row in ("NEW", "OLD", "capture")]
    for name in (TRUNCATE_FUNCTION,) if keep_fence else (TRUNCATE_FUNCTION, FENCE_FUNCTION):
        statements.append(_drop_function(schema, name))
    if there[-1]:
        statements.append(sql.SQL("DELETE FROM {}").format(journal(schema)))
    conn.execute(sql.SQL(";\n").join(statements))


def _drop_function(schema: str, name: str) -> sql.Composed:
    return sql.SQL("DROP FUNCTION IF EXISTS {}.{}()").format(sql.Identifier(schema), sql.Identifier(name))


def _all_exist(conn: psycopg.Connection[Any], relations: Sequence[sql.Identifier]) -> list[bool]:
    """:func:`_exists` for many relations in one query, in order."""
    rows = conn.execute(
        "SELECT to_regclass(r) IS NOT NULL FROM unnest(%s::text[]) WITH ORDINALITY AS u(r, i) ORDER BY i",
        ([r.as_string(conn) for r in relations],),
    ).fetchall()
    return [bool(r[0]) for r in rows]


def not_owned(conn: psycopg.Connection[Any], tables: Iterable[TableShape]) -> list[str]:
    """The tables this role may not ``ALTER`` (it neither owns them nor belongs to their owner's role): the
    window's ``ENABLE ALWAYS`` triggers need that. Checked before the cutover's freeze, so a role without it is
    told at once instead of the cutover failing in its last transaction."""
    out = []
    for t in tables:
        row = conn.execute(
            "SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_catalog.pg_class c WHERE c.oid = "
            "to_regclass(%s)",
            (_relation(t).as_string(conn),),
        ).fetchone()
        if row is not None and not row[0]:
            out.append(t.source)
    return out


def tables_since_cutover(
    conn: psycopg.Connection[Any], schema: str, target_schema: str, known: Iterable[str]
) -> list[str]:
    """Tables of the target schema created (or altered) after the cutover that are not migrated ones: the window
    does not capture them, so their rows would stay behind in PostgreSQL if the app went back.

    A catalog row's ``xmin`` is the transaction that last wrote it; the cutover checkpoint's row was written by
    the cutover's transaction and never again, so a table whose ``pg_class`` row is younger came later.
    (VACUUM and ANALYZE update ``pg_class`` in place, which keeps ``xmin``.)"""
    row = conn.execute(
        sql.SQL("SELECT age(xmin) FROM {} WHERE kind = 'cutover' ORDER BY number DESC LIMIT 1").format(
            sql.Identifier(schema, "checkpoints")
        )
    ).fetchone()
    if row is None:
        return []
    found = conn.execute(
        "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND age(c.xmin) < %s AND NOT (c.relname = ANY(%s)) "
        "ORDER BY c.relname",
        (target_schema, int(row[0]), list(known)),
    ).fetchall()
    return [str(r[0]) for r in found]


def forget(conn: psycopg.Connection[Any], schema: str, tables: Iterable[TableShape]) -> None:
    """A new migration (``snapshot --replace``): the earlier window's capture and fence leave every table (an
    existing-mode reload TRUNCATEs them: the fence would refuse it), its journal and its row go."""
    remove(conn, schema, tables)
    if _exists(conn, window(schema)):
        conn.execute(sql.SQL("DELETE FROM {}").format(window(schema)))


def fence(conn: psycopg.Connection[Any], schema: str, tables: Sequence[TableShape], message: str) -> None:
    """PostgreSQL's write fence on every table, in the caller's transaction: its commit ends the app's writes."""
    body = sql.SQL(
        "BEGIN RAISE EXCEPTION USING ERRCODE = 'read_only_sql_transaction', MESSAGE = TG_ARGV[0], "
        "HINT = 'point the app at the SQLite file: writes on PostgreSQL are fenced'; END"
    )
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql "
            "SET search_path = pg_catalog, pg_temp AS {}"
        ).format(sql.Identifier(schema), sql.Identifier(FENCE_FUNCTION), sql.Literal(body.as_string(None)))
    )
    for t in tables:
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {} "
                "FOR EACH STATEMENT EXECUTE FUNCTION {}.{}({})"
            ).format(
                sql.Identifier(FENCE_TRIGGER),
                _relation(t),
                sql.Identifier(schema),
                sql.Identifier(FENCE_FUNCTION),
                sql.Literal(message),
            )
        )
        conn.execute(_always(_relation(t), FENCE_TRIGGER))
    conn.execute(sql.SQL("UPDATE {} SET fenced_at = now()").format(window(schema)))


def unfence(conn: psycopg.Connection[Any], schema: str, tables: Iterable[TableShape]) -> None:
    """Drop PostgreSQL's fence (a rollback that did not finish gives the app its writes back)."""
    for t in tables:
        conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(FENCE_TRIGGER), _relation(t)))
    conn.execute(sql.SQL("UPDATE {} SET fenced_at = NULL WHERE closed_at IS NULL").format(window(schema)))


def fenced_tables(conn: psycopg.Connection[Any], tables: Iterable[TableShape]) -> list[str]:
    """The tables whose fence trigger is in place now."""
    out = []
    for t in tables:
        row = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s)",
            (FENCE_TRIGGER, _relation(t).as_string(conn)),
        ).fetchone()
        if row is not None:
            out.append(t.source)
    return out


def read_window(conn: psycopg.Connection[Any], schema: str) -> Window | None:
    """The window's row, or None when no cutover opened one (or the layout predates it)."""
    if not _exists(conn, window(schema)):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT opened_at::text, cutover, tables, applied_through, applied_at::text, fenced_at::text, "
            "closed_at::text, closed_how, message FROM {}"
        ).format(window(schema))
    ).fetchone()
    if row is None:
        return None
    return Window(row[0], row[1], tuple(row[2]), int(row[3]), row[4], row[5], row[6], row[7], row[8])


def schema_changes(conn: psycopg.Connection[Any], plan: SchemaPlan, tables: Iterable[str]) -> list[str]:
    """What changed in PostgreSQL's migrated tables since the plan: columns added or dropped, tables gone, the
    capture no longer on a table (re-created by a migration, or its trigger dropped or disabled).

    Why: the reverse direction reads and writes back the planned columns only. A column the app's migration
    added on PostgreSQL during the window has nowhere to go in SQLite (a rollback would leave its values
    behind without a word); one it dropped makes every batch fail on a bare "column does not exist"; a table
    without its capture journals nothing, and what the app writes there is never carried back. All are named
    so the reverse direction and rollback refuse them loudly."""
    shapes = shapes_of(plan)
    out = []
    for name in tables:
        table = plan.table(name)
        relation = sql.Identifier(plan.schema, table.name).as_string(conn)
        rows = conn.execute(
            "SELECT a.attname FROM pg_catalog.pg_attribute a WHERE a.attrelid = to_regclass(%s) "
            "AND a.attnum > 0 AND NOT a.attisdropped",
            (relation,),
        ).fetchall()
        if not rows:
            out.append(f"{name}: the table {relation} is gone")
            continue
        now = {str(r[0]) for r in rows}
        planned = {truncated(c.name) for c in table.columns}
        out += [f"{name}: column {c!r} added" for c in sorted(now - planned)]
        out += [f"{name}: column {c!r} dropped" for c in sorted(planned - now)]
        enabled = {
            str(r[0])
            for r in conn.execute(
                "SELECT tgname FROM pg_catalog.pg_trigger WHERE tgrelid = to_regclass(%s) AND tgenabled IN ('O', 'A')",
                (relation,),
            )
        }
        wanted = [TRUNCATE_TRIGGER]
        if shapes[name].key_target and LEGACY_CAPTURE_TRIGGER not in enabled:  # a window an earlier release opened
            wanted += list(CAPTURE_TRIGGERS)
        out += [f"{name}: the capture trigger {t} is missing or disabled" for t in wanted if t not in enabled]
    return out


def record_applied(conn: psycopg.Connection[Any], schema: str, through: int) -> None:
    conn.execute(
        sql.SQL("UPDATE {} SET applied_through = %s, applied_at = now()").format(window(schema)),
        (through,),
    )


def close(conn: psycopg.Connection[Any], schema: str, how: str, message: str) -> None:
    conn.execute(
        sql.SQL("UPDATE {} SET closed_at = now(), closed_how = %s, message = %s").format(window(schema)),
        (how, message),
    )


def certificates(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, "rollback_certificates")


def store_certificate(conn: psycopg.Connection[Any], schema: str, cutover: str, sha256: str, body: bytes) -> None:
    """The sealed rollback certificate of the window ``cutover`` opened, in the caller's transaction.

    Why a table of its own, not a column of the window's row: that row is reset by the next cutover and deleted
    by ``snapshot --replace`` (:func:`forget`), and the proof of what a rollback carried back must outlive both,
    as the cutover certificates do. Keyed by the cutover checkpoint's hash (one window per cutover, closed once):
    ``rollback`` writes it in the transaction that closes the window, so a window closed by rollback always has
    its row, and again (an upsert) once the outage is measured, after SQLite's un-fence."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (cutover, sha256, body) VALUES (%s, %s, %s) ON CONFLICT (cutover) DO UPDATE SET "
            "sha256 = EXCLUDED.sha256, body = EXCLUDED.body, stored_at = now()"
        ).format(certificates(schema)),
        (cutover, sha256, body),
    )


def read_certificate(conn: psycopg.Connection[Any], schema: str, cutover: str) -> bytes | None:
    """The stored body of the window's rollback certificate; None when none is (a window not closed by rollback,
    or closed by a release that kept it in a file only)."""
    if not _exists(conn, certificates(schema)):
        return None
    row = conn.execute(sql.SQL("SELECT body FROM {} WHERE cutover = %s").format(certificates(schema)), (cutover,))
    found = row.fetchone()
    return None if found is None else bytes(found[0])


def prune(conn: psycopg.Connection[Any], schema: str, below: int) -> int:
    """Delete the entries of transactions below ``below`` (applied and checkpointed), in the caller's transaction."""
    cur = conn.execute(
        sql.SQL("DELETE FROM {} WHERE xid < %s").format(journal(schema)),
        (below,),
    )
    return cur.rowcount


def journal_stats(conn: psycopg.Connection[Any], schema: str) -> JournalStats | None:
    if not _exists(conn, journal(schema)):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), min(at)::text, pg_catalog.pg_total_relation_size(%s::regclass), "
            "extract(epoch FROM pg_catalog.clock_timestamp() - min(at))::float8 FROM {}"
        ).format(journal(schema)),
        (journal(schema).as_string(conn),),
    ).fetchone()
    assert row is not None
    return JournalStats(int(row[0]), row[1], int(row[2]), None if row[3] is None else max(0.0, float(row[3])))


def refused_waiting(conn: psycopg.Connection[Any], schema: str) -> int:
    """Values the reverse apply refused that nobody acknowledged: ``rollback`` refuses while any."""
    if not _exists(conn, sql.Identifier(schema, "quarantine")):
        return 0
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE action = %s AND NOT acknowledged").format(
            sql.Identifier(schema, "quarantine")
        ),
        (REFUSED_ACTION,),
    ).fetchone()
    return int(row[0]) if row else 0
