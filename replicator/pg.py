"""Connecting to PostgreSQL, and the only place a DSN is parsed.

A bad DSN, a refused connection and a wrong password each end in one line that names the host
and database (never the password) and says what to do.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import conninfo

from replicator import log
from replicator.errors import TargetError, UsageError, is_transient_pg

APPLICATION_NAME = "replicator"


def describe(dsn: str) -> str:
    """``user@host:port/dbname`` for messages; never includes the password."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{params.get('user') or ''}{'@' if params.get('user') else ''}{host}:{port}/{params.get('dbname') or ''}"


def parse(dsn: str | None) -> dict[str, Any]:
    if not dsn:
        raise UsageError(
            "no target PostgreSQL given",
            hint="pass --target postgresql://user@host/db or set REPLICATOR_TARGET",
        )
    try:
        params: dict[str, Any] = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise UsageError(
            f"target DSN is not valid: {log.redact(str(exc))}",
            hint="use postgresql://user:password@host:5432/dbname",
        ) from None
    log.register_secret(params.get("password"))
    return params


def connect(dsn: str | None, *, autocommit: bool = False, connect_timeout: int = 10) -> psycopg.Connection[Any]:
    params = parse(dsn)
    assert dsn is not None
    params.setdefault("application_name", APPLICATION_NAME)
    params.setdefault("connect_timeout", connect_timeout)
    try:
        return psycopg.connect(**params, autocommit=autocommit)
    except psycopg.Error as exc:
        raise connect_error(exc, dsn) from None


def connect_error(exc: psycopg.Error, dsn: str) -> TargetError:
    where = describe(dsn)
    text = log.redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    sqlstate = getattr(exc, "sqlstate", None)
    transient = is_transient_pg(exc)  # connection failures carry no SQLSTATE: the text tells what waiting cannot heal
    if sqlstate in ("28P01", "28000") or "password authentication failed" in text or "pg_hba.conf" in text:
        hint, transient = "check the user and password in the DSN", False
    elif 'role "' in text and "does not exist" in text:
        hint, transient = "check the user in the DSN, or create that role in PostgreSQL", False
    elif sqlstate == "3D000" or "does not exist" in text:
        hint, transient = "create the database first (createdb) or fix the DSN", False
    else:
        hint = "check that PostgreSQL is running and reachable, and the host/port in the DSN"
    return TargetError(f"cannot connect to PostgreSQL at {where}: {text}", hint=hint, transient=transient)
