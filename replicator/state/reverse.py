"""The rollback window's objects in PostgreSQL: the reverse journal, its capture triggers, the write fence.

Why here, in ``state/``: they live in the state schema (the journal, the window's row, the trigger
functions) and every stage that meets them is above this layer: the cutover installs the capture, the
daemon's reverse direction reads the journal, ``rollback`` fences, ``finalize`` and ``snapshot --replace``
remove them, ``status`` reads the journal's size.

**Capture.** One ``AFTER INSERT OR UPDATE OR DELETE ... FOR EACH ROW`` trigger per migrated table appends
``(tbl, op, key)`` to ``reverse_journal`` inside the app's own transaction (an app transaction that rolls
back leaves no entry; one that commits always has its entries), plus an ``AFTER TRUNCATE`` statement
trigger that appends one entry without a key (the whole table). Key-only, as the forward capture: the key
columns as a JSON array (``jsonb_build_array``: ISO text for dates whatever the session's ``DateStyle``,
exact numbers: a float's text follows ``extra_float_digits``, which the function fixes at 3, as it would
round 0.30000000000000004 to 0.3 in a session set to 0 and name no row), the row itself read at apply
time. An UPDATE that moves a key journals both keys. The functions are ``SECURITY DEFINER`` with a fixed
``search_path``, so an app role that may not touch the state schema still journals its writes, and nothing
in the function resolves through the caller's path. Capture and fence triggers are ``ENABLE ALWAYS``: they
fire in a session whose ``session_replication_role`` is ``replica`` too.

**Ordering: transaction ids, not sequence numbers.** A journal ``seq`` from an identity column is taken at
insert time, not at commit: transaction A can take seq 10, B seq 11 and commit first, and a reader that
applied "up to 11" would never see 10. Every entry therefore records its transaction's id
(``pg_current_xact_id()``, the top-level ``xid8``, which never wraps), and a reader takes entries by xid
below its snapshot's ``xmin``: every transaction below it has ended, so that set is final. The reverse
direction's positions are these horizons (a checkpoint covers the entries of the transactions whose ids
lie in its range), contiguous like the forward journal's seqs. A long-running writing transaction holds
the horizon back, as it should: its rows are not committed yet.

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
CAPTURE_TRIGGER: Final = "replicator_reverse_capture"
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
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (relation.as_string(conn),)).fetchone()
    return bool(row and row[0])


def journal(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, "reverse_journal")


def window(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, "reverse_window")


def function_name(table: str) -> str:
    """The capture function of the SQLite table ``table``: a stable name within PostgreSQL's 63 bytes."""
    return "reverse_capture_" + hashlib.sha256(table.encode("utf-8")).hexdigest()[:24]


def _relation(t: TableShape) -> sql.Identifier:
    return sql.Identifier(t.schema, t.target)


def _function(t: TableShape) -> sql.Identifier:
    return sql.Identifier(function_name(t.source))


def _key_array(t: TableShape, row: str) -> sql.Composable:
    return sql.SQL("pg_catalog.jsonb_build_array({})").format(
        sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.SQL(row), sql.Identifier(c)) for c in t.key_target)
    )


def _always(relation: sql.Identifier, trigger: str) -> sql.Composed:
    """The trigger fires whatever the session's ``session_replication_role``: an ordinary trigger does not in
    ``replica`` mode (bulk loaders, pg_restore-like tools, an app connected as a superuser set it), so the
    capture would miss such a session's writes and the fence would let them through."""
    return sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(relation, sql.Identifier(trigger))


def _capture_function(schema: str, t: TableShape) -> sql.Composed:
    """The row trigger's function: one journal entry per row (two for an UPDATE that moves the key)."""

    def entry(op: str, row: str) -> sql.Composed:
        return sql.SQL("INSERT INTO {} (tbl, op, key) VALUES ({}, {}, {});").format(
            journal(schema), sql.Literal(t.source), sql.Literal(op), _key_array(t, row)
        )

    # the keys as journaled, compared: the column type's own "=" may equate two keys (citext 'bob' and 'Bob')
    moved = sql.SQL("{} IS DISTINCT FROM {}").format(_key_array(t, "OLD"), _key_array(t, "NEW"))
    body = sql.SQL(
        "BEGIN\n"
        "  IF TG_OP = 'INSERT' THEN\n    {ins}\n"
        "  ELSIF TG_OP = 'UPDATE' THEN\n    {upd}\n    IF {moved} THEN\n      {old}\n    END IF;\n"
        "  ELSE\n    {dele}\n  END IF;\n"
        "  RETURN NULL;\n"
        "END"
    ).format(ins=entry("I", "NEW"), upd=entry("U", "NEW"), moved=moved, old=entry("U", "OLD"), dele=entry("D", "OLD"))
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = pg_catalog, pg_temp SET extra_float_digits = 3 AS {}"
    ).format(sql.Identifier(schema), sql.Identifier(function_name(t.source)), sql.Literal(body.as_string(None)))


def _truncate_function(schema: str) -> sql.Composed:
    body = sql.SQL("BEGIN INSERT INTO {} (tbl, op, key) VALUES (TG_ARGV[0], 'T', NULL); RETURN NULL; END").format(
        journal(schema)
    )
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {}.{}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = pg_catalog, pg_temp AS {}"
    ).format(sql.Identifier(schema), sql.Identifier(TRUNCATE_FUNCTION), sql.Literal(body.as_string(None)))


def install(conn: psycopg.Connection[Any], schema: str, tables: Sequence[TableShape], cutover: str) -> None:
    """The reverse capture on every table, and the window opened, in the caller's transaction (the cutover's).

    A table without a key the journal can name gets only a keyless entry per statement (whole-table
    entries: the reverse apply copies such a table whole)."""
    statements: list[sql.Composable] = [_truncate_function(schema)]
    for t in tables:
        rel = _relation(t)
        if t.key_target:
            statements.append(_capture_function(schema, t))
            statements.append(
                sql.SQL(
                    "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} "
                    "FOR EACH ROW EXECUTE FUNCTION {}.{}()"
                ).format(sql.Identifier(CAPTURE_TRIGGER), rel, sql.Identifier(schema), _function(t))
            )
            statements.append(_always(rel, CAPTURE_TRIGGER))
            truncate_events = sql.SQL("TRUNCATE")
        else:
            truncate_events = sql.SQL("INSERT OR UPDATE OR DELETE OR TRUNCATE")
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
        statements.append(_always(rel, TRUNCATE_TRIGGER))
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
    journal's entries, in the caller's transaction. Idempotent: a table dropped since is skipped."""
    triggers = (CAPTURE_TRIGGER, TRUNCATE_TRIGGER) if keep_fence else (CAPTURE_TRIGGER, TRUNCATE_TRIGGER, FENCE_TRIGGER)
    for t in tables:
        if not _exists(conn, _relation(t)):
            continue
        for trigger in triggers:
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(trigger), _relation(t)))
        conn.execute(
            sql.SQL("DROP FUNCTION IF EXISTS {}.{}()").format(
                sql.Identifier(schema), sql.Identifier(function_name(t.source))
            )
        )
    for name in (TRUNCATE_FUNCTION,) if keep_fence else (TRUNCATE_FUNCTION, FENCE_FUNCTION):
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}.{}()").format(sql.Identifier(schema), sql.Identifier(name)))
    if _exists(conn, journal(schema)):
        conn.execute(sql.SQL("DELETE FROM {}").format(journal(schema)))


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
        wanted = (CAPTURE_TRIGGER, TRUNCATE_TRIGGER) if shapes[name].key_target else (TRUNCATE_TRIGGER,)
        enabled = {
            str(r[0])
            for r in conn.execute(
                "SELECT tgname FROM pg_catalog.pg_trigger WHERE tgrelid = to_regclass(%s) AND tgenabled IN ('O', 'A')",
                (relation,),
            )
        }
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


def prune(conn: psycopg.Connection[Any], schema: str, below: int) -> int:
    """Delete the entries of transactions below ``below`` (applied and checkpointed), in the caller's transaction."""
    cur = conn.execute(
        sql.SQL("DELETE FROM {} WHERE xid < %s::text::xid8").format(journal(schema)),
        (str(below),),
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
