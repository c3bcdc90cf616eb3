"""Fixtures more than one test module needs, registered for all of them by tests/conftest.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import conninfo, sql

from tests.support.scram import ScramServer, start_scram_server


@pytest.fixture
def unprivileged_dsn(pg_dsn: str) -> Iterator[str]:
    """The test database owned by a role that may not set session_replication_role."""
    role = f"app_{uuid.uuid4().hex[:10]}"
    dbname = conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(str(dbname)), sql.Identifier(role)))
    yield conninfo.make_conninfo(pg_dsn, user=role)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture(scope="session")
def scram_server() -> Iterator[ScramServer]:
    """One embedded server that checks passwords per test session (skips where none can start)."""
    yield from start_scram_server()
