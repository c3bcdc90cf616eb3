from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.fixtures import scram_server, unprivileged_dsn  # noqa: F401 - fixtures for every module
from tests.support.migrated import keys, migration, signed  # noqa: F401 - one migration per module that asks
from tests.support.paths import ROOT
from tests.support.pgserver import fresh_database, server_dsn

SHARED = Path(os.environ.get("REPLICATOR_SHARED", ROOT.parent / "shared"))
REALWORLD = SHARED / "realworld"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Admin DSN of the session's PostgreSQL server."""
    with server_dsn() as dsn:
        yield dsn


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """A fresh, empty database for this test only, as a postgresql:// URI."""
    with fresh_database(pg_server) as dsn:
        yield dsn


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the test's own database."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def realworld() -> Path:
    """The shared real-world SQLite files; tests that need them skip if the folder is absent."""
    if not REALWORLD.is_dir():
        pytest.skip(f"shared real-world databases not found at {REALWORLD} (set REPLICATOR_SHARED)")
    return REALWORLD


def realworld_files() -> list[Path]:
    if not REALWORLD.is_dir():
        return []
    return sorted(p for p in REALWORLD.rglob("*") if p.is_file() and p.suffix in {".db", ".sqlite"})
