"""After the rows: primary keys, UNIQUE, indexes, CHECKs, foreign keys, sequences, ANALYZE.

Built after the COPY because building an index over loaded rows is much faster than maintaining it row
by row. In create mode each table's own constraints and indexes follow its load right away
(:func:`index_table`, so with two processes one indexes while the other copies); foreign keys, which
read other tables, wait for every table (:func:`finish_target`, created NOT VALID, validated at cutover).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from replicator import log
from replicator.load.results import TableResult
from replicator.load.source import SourceRead
from replicator.load.target import only_tables
from replicator.plan import constraints, ddl
from replicator.plan.schemaplan import SchemaPlan
from replicator.plan.sequences import sync_sequences


def _existing_objects(pconn: psycopg.Connection[Any], schema_name: str) -> set[str]:
    rows = pconn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'i' "
        "UNION SELECT con.conname FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace "
        "WHERE n.nspname = %s",
        (schema_name, schema_name),
    ).fetchall()
    return {str(r[0]) for r in rows}


def pending_post_load(pconn: psycopg.Connection[Any], plan: SchemaPlan) -> SchemaPlan:
    """The plan without the post-load statements an interrupted earlier run already completed."""
    have = _existing_objects(pconn, plan.schema)
    tables = tuple(
        msgspec.structs.replace(t, post_load=tuple(s for s in t.post_load if s.name not in have)) for t in plan.tables
    )
    return msgspec.structs.replace(plan, tables=tables)


def index_table(pconn: psycopg.Connection[Any], plan: SchemaPlan, result: TableResult) -> TableResult:
    """Right after a table's load (create mode): its primary key (deferred, built over the loaded
    rows), UNIQUE constraints, indexes and CHECKs, then ANALYZE. With two loading processes one
    indexes while the other still copies, so the post-load work runs mostly in the shadow of the
    loads. Foreign keys read other tables and wait for ``finish_target``; so does anything this step
    could not create."""
    if plan.mode != "create":
        return result
    table = plan.table(result.table)
    ddl.add_primary_key(pconn, plan.schema, table)
    pending = pending_post_load(pconn, only_tables(plan, [result.table]))
    refused = constraints.apply_post_load(pconn, pending, kinds=constraints.TABLE_LOCAL_KINDS)
    pconn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(plan.schema, table.name)))
    return msgspec.structs.replace(result, analyzed=True, warnings=result.warnings + tuple(refused))


def finish_target(
    pconn: psycopg.Connection[Any],
    plan: SchemaPlan,
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
            ddl.add_primary_key(pconn, plan.schema, table)
        pending = pending_post_load(pconn, plan)
        # What index_table already tried and PostgreSQL refused is not tried (and warned) twice.
        tables = tuple(
            msgspec.structs.replace(t, post_load=tuple(x for x in t.post_load if x.kind == "fk"))
            if t.source in analyzed
            else t
            for t in pending.tables
        )
        warnings.extend(constraints.apply_post_load(pconn, msgspec.structs.replace(pending, tables=tables)))
    indexed = time.monotonic()
    sequences = sync_sequences(pconn, plan, read.sqlite_sequence)
    for table in plan.tables:
        if table.source not in analyzed:
            pconn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(plan.schema, table.name)))
    bound.info(
        "indexes, constraints, sequences and ANALYZE done",
        post_load_s=round(indexed - started, 3),
        sequences_analyze_s=round(time.monotonic() - indexed, 3),
    )
    return sequences
