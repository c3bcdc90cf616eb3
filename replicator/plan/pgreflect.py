"""Reading the app's PostgreSQL schema (existing mode) with SQLAlchemy's inspector.

The app's migrations made the tables; the plan needs, per column, what the converter writes into it
(:class:`~replicator.values.targettype.TargetType`), whether it is NOT NULL, has a default, is an identity or
generated column. ``sqlalchemy.inspect`` reads all of it for every table in a few batched catalog
queries, and its PostgreSQL type objects already know enums (with their labels), domains (with
their base type), ``interval``, ``inet``, ``macaddr``, ``citext`` and arrays: :func:`_target` only
translates them.

The inspector runs once, when a plan is made (snapshot, analyze, verify without a plan, a table the
daemon adopts), on its own short connection with the caller's parameters, so that SQLAlchemy never
touches the caller's session (its transaction, its snapshot). SQLAlchemy is imported there, not at
module import: commands that never reflect do not pay for it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg
from psycopg import conninfo, sql

from replicator import pg
from replicator.values.targettype import TYPE_NAMES, TargetType, UnsupportedType, parse_type, type_sql

if TYPE_CHECKING:
    from sqlalchemy.types import TypeEngine


def warm() -> None:
    """Import SQLAlchemy and its PostgreSQL dialect now: the daemon calls this at start, so that a table it
    adopts mid-stream (a reflection) does not hold the apply for the import (0.3-2 s)."""
    import sqlalchemy.dialects.postgresql  # noqa: F401


class PgColumn(msgspec.Struct, frozen=True):
    name: str
    type_text: str
    """The column's type as PostgreSQL writes it (``format_type``), for messages."""
    notnull: bool
    has_default: bool
    generated: bool
    identity: bool
    target: TargetType | None = None
    """What the converter writes into it (a domain's base type, checked by PostgreSQL against the
    domain's constraints); None for a type it cannot write."""


class PgTable(msgspec.Struct, frozen=True):
    name: str
    columns: tuple[PgColumn, ...]


def target_type(column: PgColumn) -> TargetType:
    """The converter's type for a target column; raises UnsupportedType for a type it cannot write."""
    if column.target is None:
        raise UnsupportedType(
            f"PostgreSQL type {column.type_text!r} is not supported by the converter",
            hint="override the column type in [types] with one of: " + ", ".join(sorted(TYPE_NAMES - {"enum"})),
        )
    return column.target


def reflect(conn: psycopg.Connection[Any], schema_name: str) -> dict[str, PgTable]:
    """The tables (plain and partitioned) of ``schema_name`` and their columns, mapped for the converter.

    The inspector connects with ``conn``'s parameters (:func:`_same_target`); the two small
    queries SQLAlchemy cannot answer (:func:`_domain_bases`, :func:`_type_texts`) run on ``conn``.
    """
    import sqlalchemy
    from sqlalchemy import exc as sa_exc

    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://",  # no credentials in the URL: pg.connect keeps the password out of every message
        creator=lambda: pg.connect(_same_target(conn)),
        poolclass=sqlalchemy.NullPool,
        use_native_hstore=False,
    )
    try:
        with warnings.catch_warnings():  # "Did not recognize type 'point'": such a column is refused by name below
            warnings.simplefilter("ignore", sa_exc.SAWarning)
            with engine.connect() as session:  # one connection: inspect(engine) opens a second one
                found = sqlalchemy.inspect(session).get_multi_columns(schema=schema_name)
    except sa_exc.DBAPIError as exc:  # callers (and the CLI's messages) handle psycopg's own errors
        raise exc.orig or exc from None
    finally:
        engine.dispose()
    bases = _domain_bases(conn)
    tables: dict[str, PgTable] = {}
    for table, reflected in sorted(((str(key[1]), value) for key, value in found.items()), key=lambda item: item[0]):
        columns = [_column(c, bases) for c in reflected]
        if any(c.target is None for c in columns):
            texts = _type_texts(conn, schema_name, table)
            columns = [c if c.target else msgspec.structs.replace(c, type_text=texts[c.name]) for c in columns]
        tables[table] = PgTable(name=table, columns=tuple(columns))
    return tables


def _same_target(conn: psycopg.Connection[Any]) -> str:
    """``conn``'s connection string with its password (``info.dsn`` leaves it out), for a second session."""
    password = conn.info.password
    return conninfo.make_conninfo(conn.info.dsn, **({"password": password} if password else {}))


def _column(found: Any, bases: dict[tuple[str | None, str], str]) -> PgColumn:
    """One of the inspector's ReflectedColumn dicts as a PgColumn (an unsupported type's text is read after)."""
    try:
        target: TargetType | None = _target(found["type"], bases)
    except UnsupportedType:
        target = None
    return PgColumn(
        name=str(found["name"]),  # SQLAlchemy's quoted_name: a str msgspec does not encode
        type_text=type_sql(target).as_string() if target else "",
        notnull=not found["nullable"],
        has_default=found["default"] is not None,  # the column's own, else its domain's
        generated=found.get("computed") is not None,
        identity=found.get("identity") is not None,
        target=target,
    )


def _target(kind: TypeEngine[Any], bases: dict[tuple[str | None, str], str]) -> TargetType:
    """SQLAlchemy's PostgreSQL type object → the converter's type; UnsupportedType for any other.

    Exact classes, not isinstance: CITEXT is a TEXT, JSONB a JSON, DOUBLE_PRECISION a NUMERIC.
    """
    from sqlalchemy import types as t
    from sqlalchemy.dialects import postgresql as p

    if isinstance(kind, p.DOMAIN):
        base = bases.get((kind.schema, kind.name or ""))
        return parse_type(base) if base else _target(kind.data_type, bases)
    if isinstance(kind, p.ENUM) and kind.name:
        return TargetType("enum", enum_name=str(kind.name), enum_labels=tuple(map(str, kind.enums)))
    cls = type(kind)
    if cls is t.NUMERIC:
        precision = getattr(kind, "precision", None)
        return TargetType("numeric", precision=precision, scale=getattr(kind, "scale", None) if precision else None)
    if cls in (t.VARCHAR, t.CHAR):
        return TargetType(cls.__name__.lower(), length=getattr(kind, "length", None))
    if cls in (p.TIMESTAMP, p.TIME):
        name = cls.__name__.lower() + ("tz" if getattr(kind, "timezone", False) else "")
        return TargetType(name, precision=getattr(kind, "precision", None))
    if cls is p.INTERVAL:
        return TargetType("interval", precision=getattr(kind, "precision", None))
    plain = {
        t.SMALLINT: "smallint", t.INTEGER: "integer", t.BIGINT: "bigint", t.REAL: "real",
        t.DOUBLE_PRECISION: "double precision", t.TEXT: "text", p.CITEXT: "citext", p.BYTEA: "bytea",
        t.BOOLEAN: "boolean", t.DATE: "date", p.JSON: "json", p.JSONB: "jsonb", t.UUID: "uuid",
        p.INET: "inet", p.CIDR: "cidr", p.MACADDR: "macaddr", p.MACADDR8: "macaddr8",
    }  # fmt: skip
    if cls not in plain:
        raise UnsupportedType(f"{kind!r}")
    return TargetType(plain[cls])


def _domain_bases(conn: psycopg.Connection[Any]) -> dict[tuple[str | None, str], str]:
    """``format_type`` of the base of each domain whose base has a modifier, keyed as SQLAlchemy names
    the domain (schema None when the search path sees it).

    SQLAlchemy reflects a domain's base type without its modifier (``numeric`` for a domain over
    ``numeric(10,2)``), and the modifier decides the conversion (the scale values are rounded to).
    """
    rows = conn.execute(
        "SELECT CASE WHEN pg_type_is_visible(t.oid) THEN NULL ELSE n.nspname END, t.typname, "
        "format_type(t.typbasetype, t.typtypmod) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE t.typtype = 'd' AND t.typtypmod >= 0"
    ).fetchall()
    return {(schema, name): base for schema, name, base in rows}


def _type_texts(conn: psycopg.Connection[Any], schema_name: str, table: str) -> dict[str, str]:
    """``format_type`` of each column of a table that holds a column the converter cannot write.

    The refusal names the type; SQLAlchemy reflects a type it does not know (``point``, ``xml``)
    without its name.
    """
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
        (sql.Identifier(schema_name, table).as_string(conn),),
    ).fetchall()
    return {str(name): str(text) for name, text in rows}
