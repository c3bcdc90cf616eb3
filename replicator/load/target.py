"""The target before the load: the mode, the plan, the refusal to overwrite rows, the tables (re)created.

Nothing here reads a row of SQLite: it decides what the load may write and where, and keeps the plan in
the target (a resumed run and the daemon convert exactly as this run does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg
from psycopg import sql

from replicator import log
from replicator.apply import dependents
from replicator.config import Config
from replicator.errors import TargetError, TargetNotEmpty, UsageError
from replicator.plan import createmode, ddl, existingmode, pgreflect
from replicator.plan.refusals import pg_message
from replicator.plan.schemaplan import SchemaPlan
from replicator.state.store import StateStore

if TYPE_CHECKING:
    from replicator.load.source import SourceRead


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
    return "create" if StateStore(conn, config.target.state_schema).last_snapshot_mode() == "create" else "existing"


def build_plan(conn: psycopg.Connection[Any] | None, read: SourceRead, config: Config, mode: str) -> SchemaPlan:
    """The plan, with the foreign keys the quarantine follows (:func:`dependents.with_foreign_keys`)."""
    if mode == "create":
        return dependents.with_foreign_keys(
            createmode.plan_create(read.schema, read.profiles, config), conn, read.schema
        )
    if conn is None:
        raise UsageError("existing mode needs the target", hint="pass --target")
    plan = existingmode.plan_existing(read.schema, pgreflect.reflect(conn, config.target.schema), read.profiles, config)
    return dependents.with_foreign_keys(plan, conn, read.schema, StateStore(conn, config.target.state_schema))


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
    plan: SchemaPlan,
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


def drop_tables(conn: psycopg.Connection[Any], schema_name: str, names: Sequence[str]) -> None:
    if names:
        conn.execute(
            sql.SQL("DROP TABLE {} CASCADE").format(sql.SQL(", ").join(sql.Identifier(schema_name, n) for n in names))
        )


def _truncate_all(conn: psycopg.Connection[Any], plan: SchemaPlan) -> None:
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
            f"cannot empty the target tables for --replace: {pg_message(exc)}",
            hint="a table the SQLite file does not have references them; empty it first",
        ) from None


def only_tables(plan: SchemaPlan, names: Sequence[str]) -> SchemaPlan:
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


def prepare_target(
    pconn: psycopg.Connection[Any],
    plan: SchemaPlan,
    *,
    replace: bool,
    reuse: bool,
    warnings: list[str],
) -> SchemaPlan:
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
            drop_tables(pconn, plan.schema, _existing_tables(pconn, plan.schema, [t.name for t in plan.tables]))
    created = ddl.create_tables(pconn, plan, defer_pk=True)
    warnings.extend(created.warnings)
    return ddl.without_generated(plan, created.plain_generated)


def save_plan(state_store: StateStore, plan: SchemaPlan, *, replace: bool) -> None:
    """Keep the plan (a resumed run and the daemon convert exactly as this run does); on ``--replace``
    forget every earlier table mark, the mark, and the checkpoint chain: this snapshot supersedes them."""
    state_store.save_plan(plan)
    if replace:
        state_store.forget_tables()
        state_store.clear_mark()
        dropped = state_store.execute("DELETE FROM {schema}.checkpoints").rowcount
        state_store.execute("DELETE FROM {schema}.apply_tables")
        if dropped:
            log.get("snapshot").warning("--replace: the earlier checkpoint chain was cleared", checkpoints=dropped)
