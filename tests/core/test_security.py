"""Security checks (issue 9, item 5), through the real console script.

* A sentinel password never appears in stdout or stderr (``-v``, JSON logs), in files the commands
  write, or in the replicator's state in PostgreSQL: for a server that is unreachable, one that
  rejects the password (an embedded PostgreSQL with scram-sha-256), and one that accepts it.
* Exported files are created 0600 whatever the umask.
* The metrics endpoint binds to 127.0.0.1 by default.
* The least-privilege role of ``docs/least-privilege.md`` runs snapshot and the daemon without
  superuser (foreign keys are parked, since ``session_replication_role`` needs more).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sqlite3
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import conninfo, sql

from tests.support.cli import Ran, run_cli
from tests.support.daemon import DaemonProcess
from tests.support.pgserver import as_uri
from tests.support.scram import SENTINEL, ScramServer
from tests.support.source import make_db, sqlite_write

pytestmark = pytest.mark.e2e

SIMPLE = """
CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent (id) ON DELETE CASCADE,
    note TEXT);
INSERT INTO parent VALUES (1, 'a'), (2, 'b');
INSERT INTO child VALUES (10, 1, 'x'), (11, 1, 'y'), (12, 2, 'z');
"""


# --- the sentinel password ------------------------------------------------------------------------


def _app(path: Path) -> Path:
    return make_db(path, SIMPLE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Outputs:
    """Everything the commands printed or wrote, to grep for the sentinel at the end."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, what: str, ran: Ran) -> Ran:
        self.items.append((what, ran.out + ran.err))
        return ran

    def add_text(self, what: str, text: str) -> None:
        self.items.append((what, text))

    def assert_clean(self) -> None:
        leaks = [what for what, text in self.items if SENTINEL in text or quote(SENTINEL, safe="") in text]
        assert not leaks, f"the sentinel password appears in: {leaks}"


def _cli(outputs: Outputs, tmp: Path, *args: str, env: dict[str, str] | None = None) -> Ran:
    """Run with ``-v`` (tracebacks) and JSON logs; both are options of the command, not of the group."""
    cmd, rest = _split(args)
    ran = run_cli(*cmd, "-v", "--log-format", "json", *rest, cwd=tmp, extra_env=env, timeout=120)
    return outputs.add(" ".join(args), ran)


def _split(args: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    groups = {"capture", "checkpoints"}
    n = 2 if args and args[0] in groups else 1
    return args[:n], args[n:]


def _daemon_briefly(outputs: Outputs, tmp: Path, source: Path, dsn: str, seconds: float = 60.0) -> None:
    """Run the daemon until it has logged a retry (within ``seconds``: a loaded machine starts Python slowly),
    then SIGTERM it; its whole output joins the outputs searched for the password."""
    env = {"REPLICATOR_APPLY__RETRY_MAX_WAIT_S": "0.2", "REPLICATOR_TARGET__CONNECT_TIMEOUT_S": "2"}
    proc = DaemonProcess(
        source, dsn, "-v", "--until-drained", env=env, cwd=tmp, log=tmp / f"daemon-{time.monotonic_ns()}.log"
    )
    deadline = time.monotonic() + seconds
    while "retrying" not in proc.log.read_text() and proc.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped = proc.stop(30)
    text = stopped.out + stopped.log
    outputs.add_text(f"run (daemon) {dsn}", text)
    assert "retrying" in text, text[-2000:]


def _refusing_commands(source: Path, dsn: str) -> list[tuple[str, ...]]:
    return [
        ("snapshot", "--source", str(source), "--target", dsn),
        ("schema", "--source", str(source), "--target", dsn),
        ("status", "--source", str(source), "--target", dsn),
        ("status", "--json", "--target", dsn),
        ("verify", "--source", str(source), "--target", dsn),
        ("checkpoints", "list", "--target", dsn),
        ("checkpoints", "verify", "--target", dsn),
    ]


def test_sentinel_never_printed_when_the_server_is_unreachable(tmp_path: Path) -> None:
    outputs = Outputs()
    source = _app(tmp_path / "app.db")
    sqlite_ok = run_cli("capture", "install", "-q", "--source", str(source), cwd=tmp_path)
    assert sqlite_ok.code == 0, sqlite_ok
    dsns = [
        f"postgresql://postgres:{SENTINEL}@127.0.0.1:9/postgres?connect_timeout=3",
        f"host=127.0.0.1 port=9 user=postgres password={SENTINEL} connect_timeout=3",
        f"postgresql://postgres:{SENTINEL}@127.0.0.1:notaport/postgres",  # refused while parsing
        f"postgresql://postgres:{SENTINEL}@[::1/postgres",
    ]
    for dsn in dsns:  # every command with the URI; the other spellings with the commands that differ
        commands = _refusing_commands(source, dsn) if dsn is dsns[0] else _refusing_commands(source, dsn)[:2]
        for args in commands:
            ran = _cli(outputs, tmp_path, *args)
            assert ran.code in (1, 2), ran
            assert "Traceback" in ran.err or ran.code == 2, ran  # -v shows the traceback on operational errors
    # the daemon retries an unreachable server with backoff (an outage is not an error): run it a while
    _daemon_briefly(outputs, tmp_path, source, dsns[1])
    # the DSN from the environment and the config file, too
    ran = _cli(outputs, tmp_path, "snapshot", "--source", str(source), env={"REPLICATOR_TARGET": dsns[0]})
    assert ran.code == 1, ran
    config = tmp_path / "replicator.toml"
    config.write_text(f'[target]\ndsn = "{dsns[0]}"\n')
    ran = _cli(outputs, tmp_path, "snapshot", "--source", str(source))
    assert ran.code == 1, ran
    outputs.assert_clean()


def test_password_with_an_unescaped_at_is_refused_whole_and_never_printed(tmp_path: Path) -> None:
    """libpq splits ``app:Sentinel@9f2c7e-tail@host`` at the first '@': password ``Sentinel``, host
    ``9f2c7e-tail@host``, printed in its error. Every command refuses the DSN with the %40 hint instead,
    from a flag, the environment or the config file, with -v and JSON logs, and no part is printed."""
    outputs = Outputs()
    source = _app(tmp_path / "app.db")
    head, tail = SENTINEL[:8], SENTINEL[8:]
    dsn = f"postgresql://postgres:{head}@{tail}@127.0.0.1:9/postgres"
    for args in _refusing_commands(source, dsn):
        ran = _cli(outputs, tmp_path, *args)
        assert ran.code == 2, ran
        assert "%40" in ran.err, ran
    ran = _cli(outputs, tmp_path, "run", "--until-drained", "--source", str(source), env={"REPLICATOR_TARGET": dsn})
    assert ran.code == 2, ran
    leaks = [what for what, text in outputs.items if head in text or tail in text]
    assert not leaks, f"part of the password appears in: {leaks}"


def test_a_one_letter_password_masks_no_letter_of_the_output(tmp_path: Path) -> None:
    """A password ``p`` registered as a secret used to turn every 'p' of every line into ``****``:
    a short secret is redacted where it stands alone, never inside a word."""
    source = _app(tmp_path / "app.db")
    ran = run_cli(
        "snapshot",
        "-v",
        "--source",
        str(source),
        "--target",
        "postgresql://app:p@127.0.0.1:9/db?connect_timeout=3",
        cwd=tmp_path,
    )
    assert ran.code == 1, ran
    assert "port 9" in ran.err, ran
    assert "replicator" in ran.err, ran  # the traceback's paths
    assert "****ort" not in ran.err, ran
    assert ":p@" not in ran.err, ran


def test_sentinel_never_printed_when_the_server_rejects_it(tmp_path: Path, scram_server: ScramServer) -> None:
    outputs = Outputs()
    source = _app(tmp_path / "app.db")
    assert run_cli("capture", "install", "-q", "--source", str(source), cwd=tmp_path).code == 0
    # the sentinel is the right password of replicator_pw: use it as the wrong one of another user
    dsn = scram_server.dsn(SENTINEL, user="postgres_intruder")
    wrong = scram_server.dsn(SENTINEL + "x")
    for target in (dsn, wrong):
        for args in _refusing_commands(source, target):
            ran = _cli(outputs, tmp_path, *args)
            assert ran.code == 1, ran
            assert "password authentication failed" in ran.err or "does not exist" in ran.err, ran
    for target in (dsn, wrong):  # a wrong password is terminal for the daemon too: no retry loop
        ran = _cli(outputs, tmp_path, "run", "--until-drained", "--source", str(source), "--target", target)
        assert ran.code == 1, ran
    outputs.assert_clean()
    leaked = [text for _what, text in outputs.items if (SENTINEL + "x") in text]
    assert not leaked


def test_sentinel_never_printed_when_the_server_accepts_it(tmp_path: Path, scram_server: ScramServer) -> None:
    outputs = Outputs()
    source = make_db(tmp_path / "app.db", SIMPLE, wal=True)  # cutover wants WAL
    dsn = scram_server.dsn(SENTINEL, dbname="sentinel")
    steps: list[tuple[str, ...]] = [
        ("capture", "install", "--source", str(source)),
        ("snapshot", "--source", str(source), "--target", dsn),
        ("run", "--until-drained", "--source", str(source), "--target", dsn),
        ("status", "--source", str(source), "--target", dsn),
        ("status", "--json", "--source", str(source), "--target", dsn),
        ("verify", "--source", str(source), "--target", dsn),
        ("checkpoints", "list", "--target", dsn),
        ("checkpoints", "show", "1", "--target", dsn),
        ("checkpoints", "verify", "--target", dsn),
        ("checkpoints", "export", str(tmp_path / "chain.jsonl"), "--target", dsn),
        ("analyze", "--source", str(source), "--json", str(tmp_path / "report.json")),
        ("backup", "--source", str(source), "--out", str(tmp_path / "backups")),
        ("export", "--source", str(source), "--out", str(tmp_path / "export")),
        ("import", str(tmp_path / "export"), "--target", dsn),  # refused: the tables hold rows (exit 2)
    ]
    for args in steps:
        ran = _cli(outputs, tmp_path, *args)
        assert ran.code == (2 if args[0] == "import" else 0), ran
        if args[0] == "snapshot":
            sqlite_write(source, "INSERT INTO parent VALUES (3, 'c'); UPDATE child SET note = 'changed' WHERE id = 10")
    _metrics_scrape(outputs, tmp_path, source, dsn)
    certificate, backups = tmp_path / "certificate.json", tmp_path / "cutover-backup"
    cutover = ("cutover", "--source", str(source), "--target", dsn)
    for args in (
        (*cutover, "--certificate", str(certificate), "--backup-dir", str(backups)),
        ("certificate", "--target", dsn),
    ):
        ran = _cli(outputs, tmp_path, *args)
        assert ran.code == 0, ran
    assert certificate.stat().st_mode & 0o077 == 0, oct(certificate.stat().st_mode)
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.name.startswith("app.db"):
            outputs.add_text(str(path), path.read_bytes().decode("utf-8", errors="replace"))
    with psycopg.connect(scram_server.dsn(SENTINEL, dbname="sentinel"), autocommit=True) as conn:
        outputs.add_text("state schema", _state_text(conn))
    outputs.assert_clean()


def _state_text(conn: psycopg.Connection[Any]) -> str:
    """Every row of every table in the replicator's state schema, as text."""
    tables = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'replicator' AND c.relkind = 'r'"
    ).fetchall()
    assert tables, "no state schema"
    parts: list[str] = []
    for (name,) in tables:
        query = sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier("replicator", name))
        parts.extend(str(r[0]) for r in conn.execute(query))
    body = sql.SQL("SELECT convert_from(body, 'UTF8') FROM {}").format(sql.Identifier("replicator", "checkpoints"))
    parts.extend(str(r[0]) for r in conn.execute(body))  # the bytea bodies, readable
    return "\n".join(parts)


def _metrics_scrape(outputs: Outputs, tmp: Path, source: Path, dsn: str) -> None:
    port = _free_port()
    proc = DaemonProcess(source, dsn, "-v", "--metrics-port", str(port), cwd=tmp)
    try:
        body = _scrape(port)
        outputs.add_text("metrics", body)
        assert "replicator" in body
    finally:
        stopped = proc.stop(30)
        outputs.add_text("daemon with metrics", stopped.out + stopped.log)
    assert stopped.code == 0, stopped.log[-2000:]


def _scrape(port: int, host: str = "127.0.0.1") -> str:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --- files and sockets ------------------------------------------------------------------------------


def _private(path: Path) -> bool:
    return path.stat().st_mode & 0o077 == 0


def test_exported_files_are_0600_whatever_the_umask(tmp_path: Path, pg_dsn: str) -> None:
    source = _app(tmp_path / "app.db")
    assert run_cli("capture", "install", "-q", "--source", str(source), cwd=tmp_path).code == 0
    env = {"REPLICATOR_LOG__LEVEL": "warning"}
    drained = run_cli(
        "run", "--until-drained", "--source", str(source), "--target", pg_dsn, cwd=tmp_path, extra_env=env
    )
    assert drained.code == 0, drained
    chain, report, backups = tmp_path / "chain.jsonl", tmp_path / "report.json", tmp_path / "backups"
    old = os.umask(0)  # the children inherit it: files must be private by their own doing
    try:
        for args in (
            ("checkpoints", "export", str(chain), "--target", pg_dsn),
            ("analyze", "--source", str(source), "--json", str(report)),
            ("backup", "--source", str(source), "--out", str(backups)),
        ):
            ran = run_cli(*args, cwd=tmp_path)
            assert ran.code == 0, ran
    finally:
        os.umask(old)
    written = [chain, report, *backups.iterdir()]
    assert len(written) >= 4
    assert [p.name for p in written if not _private(p)] == []
    assert _private(backups) or backups.stat().st_mode & 0o022 == 0


def test_metrics_endpoint_binds_to_loopback_by_default(tmp_path: Path, pg_dsn: str) -> None:
    source = _app(tmp_path / "app.db")
    assert run_cli("capture", "install", "-q", "--source", str(source), cwd=tmp_path).code == 0
    port = _free_port()
    proc = DaemonProcess(source, pg_dsn, "--metrics-port", str(port), json_log=False, cwd=tmp_path)
    try:
        _scrape(port)
        listening = _listeners(port)
    finally:
        stopped = proc.stop(30)
    assert stopped.code == 0, stopped.log[-2000:]
    assert listening == {"127.0.0.1"}, listening


def _listeners(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                address, hexport = fields[1].rsplit(":", 1)
                if int(hexport, 16) != port or fields[3] != "0A":  # 0A = LISTEN
                    continue
                found.add(_address(address))
    return found


def _address(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


# --- least privilege ----------------------------------------------------------------------------------

APP_ROLE = "replicator_app"


@pytest.fixture
def app_role(pg_dsn: str, pg: psycopg.Connection[tuple[Any, ...]]) -> Iterator[str]:
    """``replicator_app`` with exactly the GRANTs of docs/least-privilege.md; yields its DSN.

    A role belongs to the whole server: tests using it (on other xdist workers too) take turns.
    """
    database = str(conninfo.conninfo_to_dict(pg_dsn)["dbname"])
    role = sql.Identifier(APP_ROLE)
    turn = (Path(tempfile.gettempdir()) / "replicator_app.role.lock").open("a")
    fcntl.flock(turn, fcntl.LOCK_EX)
    with contextlib.suppress(psycopg.errors.DuplicateObject):
        pg.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(role))
    pg.execute(sql.SQL("ALTER ROLE {} LOGIN NOSUPERUSER").format(role))
    pg.execute(sql.SQL("GRANT CONNECT, CREATE ON DATABASE {} TO {}").format(sql.Identifier(database), role))
    pg.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(role))
    try:
        yield as_uri(conninfo.make_conninfo(pg_dsn, user=APP_ROLE, password=""))
    finally:
        pg.execute(sql.SQL("DROP OWNED BY {}").format(role))
        # the role is shared by the server's databases: drop it only when nothing else holds grants
        with contextlib.suppress(psycopg.errors.DependentObjectsStillExist):
            pg.execute(sql.SQL("DROP ROLE {}").format(role))
        turn.close()  # releases the lock


def test_least_privilege_role_runs_snapshot_and_daemon(
    tmp_path: Path, app_role: str, pg: psycopg.Connection[tuple[Any, ...]]
) -> None:
    row = pg.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = %s", (APP_ROLE,))
    assert row.fetchone() == (False, False, False)
    source = _app(tmp_path / "app.db")
    env = {"REPLICATOR_LOG__LEVEL": "warning"}

    def cli(*args: str) -> Ran:
        ran = run_cli(*args, cwd=tmp_path, extra_env=env)
        assert ran.code == 0, ran
        return ran

    cli("capture", "install", "--source", str(source))
    cli("snapshot", "--source", str(source), "--target", app_role)
    owners = pg.execute(
        "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'replicator')"
    ).fetchall()
    assert owners == [(APP_ROLE,)]
    # a parent changed in SQLite: with parked FKs, its children survive the delete-then-insert apply
    db = sqlite3.connect(source, isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("UPDATE parent SET name = 'renamed' WHERE id = 1")  # applied as delete + insert of the key
    db.execute("INSERT INTO child VALUES (13, 2, 'new')")
    db.execute("DELETE FROM child WHERE id = 12")
    db.close()
    ran = cli("run", "--until-drained", "--source", str(source), "--target", app_role)
    assert "foreign keys parked" in ran.err
    assert pg.execute("SELECT id, name FROM parent ORDER BY id").fetchall() == [(1, "renamed"), (2, "b")]
    want = [(10, 1, "x"), (11, 1, "y"), (13, 2, "new")]
    sqlite_rows = sqlite3.connect(source).execute("SELECT * FROM child ORDER BY id").fetchall()
    assert sqlite_rows == want
    assert pg.execute("SELECT * FROM child ORDER BY id").fetchall() == want
    parked = pg.execute("SELECT table_name FROM replicator.parked_foreign_keys").fetchall()
    assert parked == [("child",)]
    cli("verify", "--source", str(source), "--target", app_role)
    cli("status", "--source", str(source), "--target", app_role)
    cli("checkpoints", "verify", "--target", app_role)


def test_least_privilege_role_with_set_on_parameter_keeps_foreign_keys(
    tmp_path: Path, app_role: str, pg: psycopg.Connection[tuple[Any, ...]]
) -> None:
    """PostgreSQL 15+: GRANT SET ON PARAMETER session_replication_role lets the daemon keep the FKs."""
    if pg.info.server_version < 150000:
        pytest.skip("GRANT SET ON PARAMETER needs PostgreSQL 15")
    grant = sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}").format(sql.Identifier(APP_ROLE))
    pg.execute(grant)
    try:
        source = _app(tmp_path / "app.db")
        env = {"REPLICATOR_LOG__LEVEL": "warning"}
        for args in (
            ("capture", "install", "--source", str(source)),
            ("run", "--until-drained", "--source", str(source), "--target", app_role),
        ):
            ran = run_cli(*args, cwd=tmp_path, extra_env=env)
            assert ran.code == 0, ran
            assert "foreign keys parked" not in ran.err
        sqlite_write(source, "UPDATE parent SET name = 'renamed' WHERE id = 1")
        ran = run_cli("run", "--until-drained", "--source", str(source), "--target", app_role, cwd=tmp_path)
        assert ran.code == 0, ran
        assert pg.execute("SELECT count(*) FROM child").fetchone() == (3,)
        fks = pg.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
        ).fetchone()
        assert fks == (1,)
    finally:
        pg.execute(sql.SQL("REVOKE SET ON PARAMETER session_replication_role FROM {}").format(sql.Identifier(APP_ROLE)))


def test_a_role_that_does_not_own_the_tables_is_told_before_the_freeze_about_the_rollback_window(
    tmp_path: Path, app_role: str, pg: psycopg.Connection[tuple[Any, ...]]
) -> None:
    """The window's triggers are ENABLE ALWAYS, an ALTER TABLE only the owner may run: a role that does not own
    a migrated table is refused in the preflight (nothing fenced, naming the table and both ways out), and
    ``--no-rollback-window`` cuts over."""
    source = _app(tmp_path / "app.db")
    wal = sqlite3.connect(source)
    wal.execute("PRAGMA journal_mode = wal")  # cutover's own requirement
    wal.close()
    env = {"REPLICATOR_LOG__LEVEL": "warning"}
    where = ("--source", str(source), "--target", app_role)
    assert run_cli("capture", "install", "--source", str(source), cwd=tmp_path, extra_env=env).code == 0
    assert run_cli("snapshot", *where, cwd=tmp_path, extra_env=env).code == 0
    assert run_cli("run", "--until-drained", *where, cwd=tmp_path, extra_env=env).code == 0
    pg.execute("ALTER TABLE public.parent OWNER TO postgres")  # the app's migration user owns it, say
    pg.execute(sql.SQL("GRANT ALL ON public.parent TO {}").format(sql.Identifier(APP_ROLE)))
    pg.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}").format(sql.Identifier(APP_ROLE)))
    refused = run_cli("cutover", "--no-backup", *where, cwd=tmp_path, extra_env=env)
    assert refused.code != 0, refused
    assert "not owned: parent" in refused.err
    assert "--no-rollback-window" in refused.err
    db = sqlite3.connect(source, isolation_level=None)
    db.execute("INSERT INTO child VALUES (14, 1, 'still writable')")  # nothing was fenced
    db.close()
    # (the FK onto the table it no longer owns cannot be validated by this role: accepted, recorded)
    flags = ("--no-backup", "--no-rollback-window", "--accept-missing-constraints")
    done = run_cli("cutover", *flags, *where, cwd=tmp_path, extra_env=env)
    assert done.code == 0, done.err[-3000:]
