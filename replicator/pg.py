"""Connecting to PostgreSQL, and the only place a DSN is parsed.

A bad DSN, a refused connection and a wrong password each end in one line that names the host
and database (never the password) and says what to do.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg import conninfo, pq
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader
from psycopg.types.string import TextBinaryLoader

from checkpoints.digest import JsonText
from replicator import log
from replicator.errors import TargetError, UsageError, is_transient_pg

APPLICATION_NAME = "replicator"
_URI_AUTHORITY = re.compile(r"^\s*postgres(?:ql)?://([^/?#]*)", re.IGNORECASE)
"""A URI's authority: ``user:password@host:port``, up to the path, query or fragment."""


def _authority(dsn: str) -> str | None:
    found = _URI_AUTHORITY.match(dsn)
    return found.group(1) if found else None


def unescaped_at(dsn: str) -> bool:
    """Whether a URI's authority holds more than one '@': an '@' in the user name or password that was
    not written ``%40``. libpq splits at the first one, so the rest of the password becomes the host name
    and ends up in every error message (``failed to resolve host 'ss@localhost'``)."""
    authority = _authority(dsn)
    return authority is not None and authority.count("@") > 1


def password(dsn: str | None) -> str | None:
    """The DSN's whole password, for :func:`replicator.log.register_secret`; None if it has none.

    With an unescaped '@' (see :func:`unescaped_at`) it is everything between the user name and the
    last '@', not the fragment libpq would take: the secret to hide is what the operator typed.
    """
    if not dsn:
        return None
    authority = _authority(dsn)
    if authority is not None and authority.count("@") > 1:
        userinfo = authority.rsplit("@", 1)[0]
        return unquote(userinfo.partition(":")[2]) or None
    try:
        found = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        return None
    return str(found) if found else None


def describe(dsn: str) -> str:
    """``user@host:port/dbname`` for messages; never includes the password."""
    if unescaped_at(dsn):
        return "<DSN with an unescaped '@'>"
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{params.get('user') or ''}{'@' if params.get('user') else ''}{host}:{port}/{params.get('dbname') or ''}"


def with_lock_timeout(dsn: str, milliseconds: int) -> str:
    """The same DSN whose sessions give up waiting for a lock after ``milliseconds`` (``lock_timeout``).

    For commands with a time budget (cutover's ``--max-downtime``): every connection they open, their
    own and the ones library code opens from the DSN (verify), is bounded the same way.
    """
    params = parse(dsn)
    option = f"-c lock_timeout={max(1, int(milliseconds))}"
    params["options"] = f"{params['options']} {option}" if params.get("options") else option
    return conninfo.make_conninfo("", **params)


def blockers(conn: psycopg.Connection[Any], schemas: list[str]) -> list[str]:
    """Other sessions holding a lock on a table in ``schemas``: pid, user, application, state, for how long.

    Asked after a ``lock_timeout``, so that the abort names who to talk to rather than only what timed out.
    """
    rows = conn.execute(
        """SELECT a.pid, coalesce(a.usename, ''), coalesce(a.application_name, ''), coalesce(a.state, ''),
                  coalesce(extract(epoch FROM clock_timestamp() - a.xact_start), 0)::int,
                  string_agg(DISTINCT n.nspname || '.' || c.relname || ' (' || l.mode || ')', ', ')
           FROM pg_locks l
           JOIN pg_class c ON c.oid = l.relation
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.granted AND l.pid <> pg_backend_pid() AND n.nspname = ANY(%s)
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           GROUP BY 1, 2, 3, 4, 5 ORDER BY 5 DESC, 1 LIMIT 5""",
        (schemas,),
    ).fetchall()
    return [
        f"pid {pid} (user {user or '?'}, application {app or '?'}, {state or '?'} for {age}s) holds {locks}"
        for pid, user, app, state, age, locks in rows
    ]


def parse(dsn: str | None) -> dict[str, Any]:
    if not dsn:
        raise UsageError(
            "no target PostgreSQL given",
            hint="pass --target postgresql://user@host/db or set REPLICATOR_TARGET",
        )
    log.register_secret(password(dsn))
    if unescaped_at(dsn):
        raise UsageError(
            "the target DSN has more than one '@' before its host: an '@' in the user name or password "
            "must be percent-encoded",
            hint="write each '@' in the user name or password as %40 (x@y becomes x%40y), ':' as %3A and '/' as %2F",
        )
    try:
        params: dict[str, Any] = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise UsageError(
            f"target DSN is not valid: {log.redact(str(exc))}",
            hint="use postgresql://user:password@host:5432/dbname",
        ) from None
    return params


def connect(dsn: str | None, *, autocommit: bool = False, connect_timeout: int = 10) -> psycopg.Connection[Any]:
    params = parse(dsn)
    assert dsn is not None
    params.setdefault("application_name", APPLICATION_NAME)
    params.setdefault("connect_timeout", connect_timeout)
    # Text is sent and read as UTF-8, whatever PGCLIENTENCODING or the DSN says: under LATIN1 "é" was stored
    # as "Ã©" (psycopg's JSON dumper writes UTF-8 regardless) and "€" stopped the load; PostgreSQL converts
    # UTF-8 to the database's encoding and refuses, by name, what that encoding cannot hold.
    params["client_encoding"] = "UTF8"
    try:
        conn = psycopg.connect(**params, autocommit=autocommit)
    except psycopg.Error as exc:
        raise connect_error(exc, dsn) from None
    try:
        read_citext_as_text(conn)
    except psycopg.Error as exc:
        conn.close()
        raise connect_error(exc, dsn) from None
    return conn


#: The citext extension's type: its binary form is its text, but psycopg does not know the type
#: (its oid differs per database) and would return binary values as bytes.
_CITEXT = "SELECT oid FROM pg_type WHERE typname = 'citext' AND typtype = 'b'"


def read_citext_as_text(conn: psycopg.Connection[Any]) -> None:
    """Read citext as ``str`` in binary results too, as in text results.

    The converter produces ``str`` for it, and the digests of the snapshot (converted values), of
    the apply (row images PostgreSQL returns in binary) and of verify must encode the same value.
    One catalog query per connection; the loader is the connection's own. (Enums are read as text
    where digests are taken: verify casts them, the apply digests them as PostgreSQL returns them.)
    """
    oids = [row[0] for row in conn.execute(_CITEXT)]
    if not conn.autocommit:
        conn.rollback()  # leave no transaction open: the caller may still set its isolation level
    for oid in oids:
        conn.adapters.register_loader(oid, TextBinaryLoader)


class _JsonTextLoader(Loader):
    """json and jsonb in text format, json in binary (its text): the document's text, unparsed."""

    def load(self, data: Buffer) -> JsonText:
        return JsonText(bytes(data))


class _JsonTextBinaryLoader(_JsonTextLoader):
    format = pq.Format.BINARY


class _JsonbTextBinaryLoader(Loader):
    """jsonb in binary format: a version byte (1), then the document's text."""

    format = pq.Format.BINARY

    def load(self, data: Buffer) -> JsonText:
        if data[:1] != b"\x01":
            raise psycopg.DataError(f"unknown jsonb binary format: {bytes(data[:1])!r}")
        return JsonText(bytes(data[1:]))


def json_as_text(context: AdaptContext) -> None:
    """Read json and jsonb as the document's text (:class:`checkpoints.digest.JsonText`), not parsed.

    For cursors whose rows are only digested (the apply's row images, a digest seed, verify's
    load-path reading): the digest canonicalises a document from its text in C, while psycopg's own
    loaders build Python objects (``json.loads``) the digest would then walk and write out again.
    Register on a cursor before it executes (its loaders are chosen then), not on a connection
    whose other readers expect parsed documents."""
    adapters = context.adapters
    for name in ("json", "jsonb"):
        adapters.register_loader(name, _JsonTextLoader)
    adapters.register_loader("json", _JsonTextBinaryLoader)
    adapters.register_loader("jsonb", _JsonbTextBinaryLoader)


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
