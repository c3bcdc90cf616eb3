"""The snapshot's checksum and verify's load-path digests agree, for every PostgreSQL type the load writes.

Why: cutover's pre-pass and stop point and the certificate set verify's load-path reading
(``verify_shape.shape_of(..., independent=False)``) against the digests the load keeps (the snapshot's checksums,
then the apply's running digests). Both bring converted values to what PostgreSQL gives back with one
normalisation (:mod:`replicator.values.readback`); if the two paths normalised differently, cutover would
report false mismatches. Here the same SQLite rows go through the snapshot (into a real PostgreSQL) and
through verify's SQLite side, and PostgreSQL's rows through verify's PostgreSQL side: one table per type, all
three digests equal. The negative control drops one type's normalisation on verify's side only (a drift):
exactly that type's table then differs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator import config
from replicator.inspect import verify_pg, verify_shape, verify_sqlite
from replicator.load import snapshot
from replicator.pg import connect
from replicator.plan.schemaplan import SchemaPlan
from replicator.values import readback
from replicator.values.targettype import TYPE_NAMES, TargetType, parse_type

CFG = config.load(None, environ={})

#: A document nested 5,000 deep, with a float of 17 digits at the bottom: PostgreSQL and the load take
#: it, json.loads and msgspec cannot read it (the digest's C reader does, in its exact mode).
DEEP_JSON = "'" + '{"a": 0.30000000000000004, "b": ' * 5000 + "[1.50]" + "}" * 5000 + "'"

#: PostgreSQL type (as declared in the existing schema) → SQLite declaration and the values stored.
#: Each list holds a value the normalisation changes where it applies (0.1 as float4, 'ab  ' padded).
CASES: dict[str, tuple[str, str, list[str]]] = {
    "smallint": ("smallint", "INTEGER", ["1", "-32768"]),
    "integer": ("integer", "INTEGER", ["7", "2147483647"]),
    "bigint": ("bigint", "INTEGER", ["9007199254740993", "-1"]),
    "real": ("real", "REAL", ["0.1", "1.5", "3.4e38"]),
    "double precision": ("double precision", "REAL", ["0.1", "1e300"]),
    "numeric": ("numeric(10,2)", "NUMERIC", ["'1.50'", "12.25"]),
    "text": ("text", "TEXT", ["'plain'", "'é🎉'", "' spaced  '"]),
    "varchar": ("varchar(10)", "TEXT", ["'short'", "'ab  '"]),
    "char": ("char(4)", "TEXT", ["'ab  '", "'abcd'", "'a'"]),
    "bytea": ("bytea", "BLOB", ["x'00ff'", "x''"]),
    "boolean": ("boolean", "BOOLEAN", ["1", "0"]),
    "timestamptz": ("timestamptz", "DATETIME", ["'2024-01-02T03:04:05Z'", "'2024-01-02 03:04:05.123+02:00'"]),
    "timestamp": ("timestamp", "DATETIME", ["'2024-01-02 03:04:05'", "'1999-12-31 23:59:59.123'"]),
    "date": ("date", "DATE", ["'2024-02-29'"]),
    "time": ("time", "TIME", ["'10:11:12'", "'00:00:00.5'"]),
    "timetz": ("timetz", "TEXT", ["'10:11:12+02:00'", "'23:59:59'"]),
    "interval": ("interval", "INTEGER", ["90061000001", "0"]),
    "json": ("json", "JSON", ["""'{"b": 1, "a": [1, 2.5, null]}'""", "'[1.0, \"x\"]'", DEEP_JSON]),
    "jsonb": ("jsonb", "JSON", ["""'{"b": 1, "a": [1, 2.5, null]}'""", "'[1.0, \"x\"]'", DEEP_JSON]),
    "uuid": ("uuid", "TEXT", ["'123e4567-e89b-12d3-a456-426614174000'"]),
    "enum": ("colour", "TEXT", ["'red'", "'green'"]),
    "citext": ("citext", "TEXT", ["'MiXed'"]),
    "inet": ("inet", "TEXT", ["'192.168.0.1'", "'::1'"]),
    "cidr": ("cidr", "TEXT", ["'10.0.0.0/8'"]),
    "macaddr": ("macaddr", "TEXT", ["'08:00:2b:01:02:03'"]),
    "macaddr8": ("macaddr8", "TEXT", ["'08:00:2b:01:02:03:04:05'"]),
}

#: The types whose converted value the normalisation changes with these rows (the negative control).
NORMALISED = ("real", "char", "json", "jsonb")


def _table(name: str) -> str:
    return "t_" + name.replace(" ", "_")


def _source(path: Path) -> Path:
    """One SQLite table per type: a key, the typed column (NULL in one row), the values above."""
    with sqlite3.connect(path) as db:
        for name, (_, decl, values) in CASES.items():
            table = _table(name)
            db.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v {decl})")
            db.execute(f"INSERT INTO {table} (id, v) VALUES (0, NULL)")
            for i, value in enumerate(values, 1):
                db.execute(f"INSERT INTO {table} (id, v) VALUES ({i}, {value})")
    db.close()
    return path


def _target(conn: psycopg.Connection[Any]) -> None:
    """The existing schema (existing mode: the types are PostgreSQL's own, enum and citext included)."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS citext")
    conn.execute("CREATE TYPE colour AS ENUM ('red', 'green')")
    for name, (pg_type, _, _) in CASES.items():
        conn.execute(f"CREATE TABLE {_table(name)} (id integer PRIMARY KEY, v {pg_type})")


def _verify_digests(path: Path, dsn: str, plan: SchemaPlan) -> dict[str, tuple[str, str]]:
    """Per table, verify's load-path digest of the SQLite rows and of the PostgreSQL rows."""
    found: dict[str, tuple[str, str]] = {}
    sconn = sqlite3.connect(path)
    try:
        with connect(dsn) as pconn:
            for table in plan.tables:
                shape = verify_shape.shape_of(table, plan.schema)
                with pconn.transaction():
                    target = verify_pg.table_digest_pg(pconn, shape).hexdigest()
                found[table.source] = (verify_sqlite.table_digest_sqlite(sconn, shape).hexdigest(), target)
    finally:
        sconn.close()
    return found


def test_every_type_has_a_case() -> None:
    """The cases cover every type the converter writes (a new type must be added here to be pinned)."""
    assert set(CASES) == set(TYPE_NAMES)


def test_normalised_types_are_never_digested_as_written() -> None:
    """The apply digests inserted rows from the converted values only for types the normalisation leaves
    alone: a type it changes must be read back (else the running digest and PostgreSQL's would differ)."""
    changed = {n for n in TYPE_NAMES if n != "enum" and readback.digest_finisher([parse_type(n)]) is not None}
    assert changed == set(NORMALISED)
    assert not changed & readback.DIGEST_EXACT_TYPES
    assert readback.digest_finisher([TargetType("enum", enum_name="e", enum_labels=("a",))]) is None


def test_snapshot_and_verify_digest_every_type_alike(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = _source(tmp_path / "types.db")
    _target(pg)
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="existing")
    assert result.plan is not None
    types = {t.source: t.load_columns[1].type.name for t in result.plan.tables}
    assert types == {_table(n): n for n in CASES}  # each table holds the type it is named after
    loaded = {t.table: t.checksum for t in result.tables}
    digests = _verify_digests(path, pg_dsn, result.plan)
    disagree = {name: (loaded[name], *digests[name]) for name in loaded if len({loaded[name], *digests[name]}) != 1}
    assert disagree == {}, disagree
    assert {t.table: t.rows for t in result.tables} == {_table(n): len(c[2]) + 1 for n, c in CASES.items()}

    # Negative control: verify's side drifts from the snapshot's for one type; exactly its table differs.
    keep: Callable[[TargetType], Any] = readback._fix
    for dropped in NORMALISED:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(readback, "_fix", lambda t, gone=dropped: None if t.name == gone else keep(t))
            drifted = _verify_digests(path, pg_dsn, result.plan)
        differing = {name for name, (source, _) in drifted.items() if source != loaded[name]}
        assert differing == {_table(dropped)}, (dropped, differing)
