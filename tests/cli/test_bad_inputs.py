"""The bad-input catalogue (issue 9, item 4): every row runs the real console script as a subprocess.

Each case builds its input, runs ``python -m replicator ...`` and states the expected outcome:
``works`` (hard input that must migrate), ``refused`` (exit code != 0 and exactly one ``error:`` line
on stderr naming what and what to do) or ``quarantined`` (exit 0, the bad row recorded). Every case
also asserts that no traceback was printed and, for refusals, that nothing was half-written: the
source file unchanged, no target table created or changed, no output left behind.

``docs/bad-inputs.md`` is generated from the same table: ``python -m tests.cli.test_bad_inputs`` rewrites
it, and :func:`test_catalogue_doc_is_current` fails when it is stale.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from tests.support.cli import Ran, free_port, run_cli
from tests.support.daemon import DaemonProcess
from tests.support.paths import ROOT
from tests.support.pgserver import as_uri
from tests.support.scram import ScramServer
from tests.support.source import make_db, sqlite_write

DOC = ROOT / "docs" / "bad-inputs.md"
UNREACHABLE = "postgresql://postgres:pw@127.0.0.1:9/postgres?connect_timeout=3"
SIMPLE = "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a'), (2, 'b');"


# --- running the CLI ------------------------------------------------------------------------------


class Env:
    """What a case's action gets: a scratch folder, a PostgreSQL database on demand, the CLI."""

    def __init__(self, tmp: Path, request: pytest.FixtureRequest) -> None:
        self.tmp = tmp
        self.request = request
        self.checks: list[Callable[[], None]] = []

    @functools.cached_property
    def dsn(self) -> str:
        return str(self.request.getfixturevalue("pg_dsn"))

    @functools.cached_property
    def pg(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = psycopg.connect(self.dsn, autocommit=True)
        self.request.addfinalizer(conn.close)
        return conn

    def dsn_with(self, **params: str) -> str:
        """The test database's DSN with other connection parameters (user, dbname)."""
        return as_uri(conninfo.make_conninfo(self.dsn, **params))

    def cli(self, *args: str, extra_env: dict[str, str] | None = None, unprivileged: bool = False) -> Ran:
        return run_cli(*args, cwd=self.tmp, extra_env=extra_env, unprivileged=unprivileged)

    def then(self, check: Callable[[], None]) -> None:
        """Run ``check`` after the exit code and the message were asserted."""
        self.checks.append(check)

    # common "nothing half-written" checks -----------------------------------------------------

    def unchanged(self, path: Path) -> None:
        before = digest(path)
        self.then(lambda: _assert_equal(digest(path), before, f"{path.name} was modified"))

    def no_app_tables(self, schema: str = "public") -> None:
        self.then(lambda: _assert_equal(self.tables(schema), [], f"tables were created in {schema}"))

    def tables(self, schema: str = "public") -> list[str]:
        rows = self.pg.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY 1",
            (schema,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def rows(self, table: str, schema: str = "public", order: str = "1") -> list[tuple[Any, ...]]:
        query = sql.SQL("SELECT * FROM {} ORDER BY " + order).format(sql.Identifier(schema, table))
        return list(self.pg.execute(query).fetchall())

    def quarantined(self) -> list[tuple[Any, ...]]:
        return list(
            self.pg.execute("SELECT table_name, key, column_name FROM replicator.quarantine ORDER BY id").fetchall()
        )


def _assert_equal(got: Any, want: Any, what: str) -> None:
    assert got == want, f"{what}: {got!r} != {want!r}"


def digest(path: Path) -> str:
    """Content of a file, and whether a hot rollback journal was left beside it."""
    h = hashlib.sha256(path.read_bytes())
    h.update(str(path.with_name(path.name + "-journal").exists()).encode())
    return h.hexdigest()


def simple(env: Env, name: str = "app.db") -> Path:
    return make_db(env.tmp / name, SIMPLE)


def installed_and_drained(env: Env, src: Path, *install_args: str) -> None:
    """capture install + run --until-drained must both succeed (the setup of the daemon cases)."""
    first = env.cli("capture", "install", "-q", "--source", str(src), *install_args)
    assert first.code == 0, first
    second = env.cli("run", "-q", "--until-drained", "--source", str(src), "--target", env.dsn)
    assert second.code == 0, second


# --- the catalogue --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    given: str
    command: str
    expect: str  # works | refused | quarantined
    code: int
    words: tuple[str, ...]
    act: Callable[[Env], Ran]
    untouched: str = ""
    """For the doc: what the test proves was not half-written (refusals) or was done (works)."""
    slow: bool = False
    needs: tuple[str, ...] = field(default_factory=tuple)
    """``unprivileged``: needs file permissions to bite (setpriv when root); ``scram``: embedded server."""


CASES: list[Case] = []


def case(
    id: str,
    group: str,
    given: str,
    command: str,
    expect: str,
    code: int,
    words: Sequence[str] = (),
    untouched: str = "",
    slow: bool = False,
    needs: Sequence[str] = (),
) -> Callable[[Callable[[Env], Ran]], Callable[[Env], Ran]]:
    def register(act: Callable[[Env], Ran]) -> Callable[[Env], Ran]:
        assert all(c.id != id for c in CASES), id
        CASES.append(Case(id, group, given, command, expect, code, tuple(words), act, untouched, slow, tuple(needs)))
        return act

    return register


# source file ---------------------------------------------------------------------------------------


@case("missing-file", "source file", "path that does not exist", "analyze", "refused", 2, ["does not exist"])
def _missing(env: Env) -> Ran:
    return env.cli("analyze", "--source", str(env.tmp / "nope.db"))


@case("directory", "source file", "a directory instead of a file", "analyze", "refused", 2, ["is a directory"])
def _directory(env: Env) -> Ran:
    return env.cli("analyze", "--source", str(env.tmp))


@case("device", "source file", "/dev/null (not a regular file)", "analyze", "refused", 2, ["not a regular file"])
def _device(env: Env) -> Ran:
    return env.cli("analyze", "--source", "/dev/null")


@case(
    "empty-file",
    "source file",
    "0-byte file",
    "snapshot",
    "refused",
    2,
    ["empty (0 bytes)"],
    untouched="no table and no state schema in PostgreSQL",
)
def _empty(env: Env) -> Ran:
    path = env.tmp / "empty.db"
    path.touch()
    env.no_app_tables()
    env.no_app_tables("replicator")
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


@case("text-file", "source file", "a text file", "analyze", "refused", 2, ["not a SQLite 3 database"])
def _text(env: Env) -> Ran:
    path = env.tmp / "notes.db"
    path.write_text("this is not a database\n" * 20)
    return env.cli("analyze", "--source", str(path))


@case(
    "encrypted-file",
    "source file",
    "random bytes (an encrypted SQLCipher file looks like this)",
    "capture install",
    "refused",
    2,
    ["not a SQLite 3 database", "encrypted"],
    untouched="file unchanged",
)
def _encrypted(env: Env) -> Ran:
    path = env.tmp / "cipher.db"
    path.write_bytes(hashlib.sha512(b"x").digest() * 128)
    env.unchanged(path)
    return env.cli("capture", "install", "--source", str(path))


@case(
    "header-truncated",
    "source file",
    "file cut inside the 100-byte header",
    "analyze",
    "refused",
    2,
    ["truncated", "backup"],
)
def _header_truncated(env: Env) -> Ran:
    path = env.tmp / "cut.db"
    path.write_bytes(simple(env).read_bytes()[:50])
    return env.cli("analyze", "--source", str(path))


@case(
    "truncated",
    "source file",
    "file cut to half its pages (an interrupted copy)",
    "snapshot",
    "refused",
    2,
    ["truncated", "header says"],
    untouched="no table in PostgreSQL",
)
def _truncated(env: Env) -> Ran:
    data = make_db(env.tmp / "full.db", SIMPLE + "CREATE TABLE u (id INTEGER PRIMARY KEY, b BLOB);").read_bytes()
    path = env.tmp / "half.db"
    path.write_bytes(data[: len(data) // 2])
    env.no_app_tables()
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


def _corrupt(env: Env, first: int, last: int) -> Path:
    data = bytearray(simple(env, "whole.db").read_bytes())
    data[first:last] = b"\xab" * (last - first)
    path = env.tmp / "corrupt.db"
    path.write_bytes(bytes(data))
    return path


@case(
    "corrupt-pages",
    "source file",
    "table b-tree pages overwritten with garbage",
    "snapshot",
    "refused",
    2,
    ["is corrupt", "integrity_check"],
    untouched="no app table in PostgreSQL",
)
def _corrupt_pages(env: Env) -> Ran:
    path = _corrupt(env, 4096, 8192)
    env.no_app_tables()
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


@case(
    "corrupt-schema",
    "source file",
    "sqlite_schema page overwritten (header intact)",
    "analyze",
    "refused",
    2,
    ["corrupt", "backup"],
)
def _corrupt_schema(env: Env) -> Ran:
    return env.cli("analyze", "--source", str(_corrupt(env, 100, 4096)))


@case(
    "corrupt-backup-verify",
    "source file",
    "corrupt file, `backup --verify`",
    "backup",
    "refused",
    1,
    ["integrity_check", "damaged"],
    untouched="no backup file left in --out",
)
def _corrupt_backup(env: Env) -> Ran:
    path = _corrupt(env, 4096, 8192)
    out = env.tmp / "backups"
    env.then(lambda: _assert_equal(sorted(os.listdir(out)) if out.exists() else [], [], "backup left files"))
    return env.cli("backup", "--verify", "--source", str(path), "--out", str(out))


@case(
    "unreadable-file",
    "source file",
    "file with mode 000",
    "analyze",
    "refused",
    2,
    ["not readable"],
    needs=["unprivileged"],
)
def _unreadable(env: Env) -> Ran:
    path = simple(env)
    path.chmod(0)
    return env.cli("analyze", "--source", str(path), unprivileged=True)


@case(
    "read-only-file-read",
    "source file",
    "read-only file (mode 444), read-only commands",
    "analyze",
    "works",
    0,
    untouched="report printed",
    needs=["unprivileged"],
)
def _read_only_analyze(env: Env) -> Ran:
    path = simple(env)
    path.chmod(0o444)
    env.unchanged(path)
    return env.cli("analyze", "--source", str(path), "--json", "-", unprivileged=True)


@case(
    "read-only-file-write",
    "source file",
    "read-only file (mode 444)",
    "capture install",
    "refused",
    2,
    ["cannot open source", "permissions"],
    untouched="file unchanged, no journal file",
    needs=["unprivileged"],
)
def _read_only_install(env: Env) -> Ran:
    path = simple(env)
    path.chmod(0o444)
    env.unchanged(path)
    return env.cli("capture", "install", "--source", str(path), unprivileged=True)


@case(
    "read-only-dir",
    "source file",
    "writable file in a read-only directory (no room for the rollback journal)",
    "capture install",
    "refused",
    2,
    ["permissions", "directory"],
    untouched="file unchanged",
    needs=["unprivileged"],
)
def _read_only_dir(env: Env) -> Ran:
    path = simple(env, "ro/app.db")
    path.parent.chmod(0o555)
    env.request.addfinalizer(lambda: path.parent.chmod(0o755))
    env.unchanged(path)
    return env.cli("capture", "install", "--source", str(path), unprivileged=True)


@case(
    "read-only-dir-wal",
    "source file",
    "WAL database in a read-only directory (no -shm can be created)",
    "analyze",
    "refused",
    2,
    ["permissions", "-shm"],
    needs=["unprivileged"],
)
def _read_only_wal(env: Env) -> Ran:
    path = make_db(env.tmp / "rowal" / "app.db", SIMPLE, wal=True)
    path.parent.chmod(0o555)
    env.request.addfinalizer(lambda: path.parent.chmod(0o755))
    return env.cli("analyze", "--source", str(path), unprivileged=True)


@case(
    "unicode-file-name",
    "source file",
    "file name with spaces and unicode (`my äpp 数据.db`)",
    "snapshot",
    "works",
    0,
    untouched="rows loaded",
)
def _unicode_name(env: Env) -> Ran:
    path = simple(env, "my äpp 数据.db")
    env.then(lambda: _assert_equal(env.rows("t"), [(1, "a"), (2, "b")], "rows"))
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


@case(
    "unicode-file-name-daemon",
    "source file",
    "file name with spaces and unicode, capture + daemon (lock file beside it)",
    "capture install, run --until-drained",
    "works",
    0,
    untouched="a change made after the snapshot reaches PostgreSQL",
)
def _unicode_daemon(env: Env) -> Ran:
    path = simple(env, "dir with space/ünïcødé app.db")
    installed_and_drained(env, path)
    sqlite_write(path, "INSERT INTO t VALUES (3, 'c')")
    env.then(lambda: _assert_equal(env.rows("t")[-1], (3, "c"), "last row"))
    return env.cli("run", "--until-drained", "--source", str(path), "--target", env.dsn)


# app schema ----------------------------------------------------------------------------------------

HOSTILE = """
CREATE TABLE "we""ird; DROP TABLE t; --" ("i d" INTEGER PRIMARY KEY, "sel""ect" TEXT, "ünï" TEXT, "order" INT);
INSERT INTO "we""ird; DROP TABLE t; --" VALUES (1, 'a', 'b', 1);
CREATE TABLE "select" ("from" INTEGER PRIMARY KEY, "table" TEXT, "user" TEXT);
INSERT INTO "select" VALUES (1, 'x', 'u');
CREATE TABLE "%s {} %(x)s" (id INTEGER PRIMARY KEY, "$1" TEXT, "?" TEXT);
INSERT INTO "%s {} %(x)s" VALUES (1, '%s', '?');
CREATE TABLE "日本語 テーブル" ("列" INTEGER PRIMARY KEY, "值" TEXT);
INSERT INTO "日本語 テーブル" VALUES (1, 'ok');
"""
HOSTILE_TABLES = ["%s {} %(x)s", "select", 'we"ird; DROP TABLE t; --', "日本語 テーブル"]


@case(
    "hostile-identifiers",
    "app schema",
    "names with quotes, `;`, spaces, unicode, `%s {}`, reserved words (`select`, `from`, `user`, `order`)",
    "snapshot",
    "works",
    0,
    untouched="every table created under its exact name, rows loaded",
)
def _hostile(env: Env) -> Ran:
    path = make_db(env.tmp / "hostile.db", HOSTILE)
    env.then(lambda: _assert_equal(sorted(env.tables()), sorted(HOSTILE_TABLES), "tables"))
    env.then(lambda: _assert_equal(env.rows("select"), [(1, "x", "u")], "rows"))
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


@case(
    "hostile-identifiers-daemon",
    "app schema",
    "the same hostile names, captured and streamed",
    "capture install, run --until-drained",
    "works",
    0,
    untouched="insert, update and delete after the snapshot all applied",
)
def _hostile_daemon(env: Env) -> Ran:
    path = make_db(env.tmp / "hostile.db", HOSTILE)
    installed_and_drained(env, path)
    sqlite_write(
        path,
        """INSERT INTO "we""ird; DROP TABLE t; --" VALUES (2, 'x''y', 'z', 3);
        UPDATE "select" SET "table" = 'changed'; DELETE FROM "日本語 テーブル";
        INSERT INTO "%s {} %(x)s" VALUES (2, '%(x)s', '{}');""",
    )
    env.then(lambda: _assert_equal(env.rows("select"), [(1, "changed", "u")], "update"))
    env.then(lambda: _assert_equal(env.rows("日本語 テーブル"), [], "delete"))
    env.then(lambda: _assert_equal(env.rows("%s {} %(x)s")[-1], (2, "%(x)s", "{}"), "insert"))
    return env.cli("run", "--until-drained", "--source", str(path), "--target", env.dsn)


@case(
    "hostile-identifiers-verify",
    "app schema",
    "the same hostile names, compared after the load",
    "verify",
    "works",
    0,
    untouched="every table matches",
)
def _hostile_verify(env: Env) -> Ran:
    path = make_db(env.tmp / "hostile.db", HOSTILE)
    loaded = env.cli("snapshot", "-q", "--source", str(path), "--target", env.dsn)
    assert loaded.code == 0, loaded
    return env.cli("verify", "--source", str(path), "--target", env.dsn)


MARKUP = """CREATE TABLE "[/x]" ("[bold]c" INTEGER PRIMARY KEY, "[/]" TEXT); INSERT INTO "[/x]" VALUES (1, '[red]v');"""


@case(
    "markup-identifiers",
    "app schema",
    "names that look like console markup (`[/x]`, `[bold]c`, `[/]`)",
    "snapshot, verify, status, checkpoints show",
    "works",
    0,
    ["[/x]"],
    untouched="names printed verbatim in every table",
)
def _markup(env: Env) -> Ran:
    path = make_db(env.tmp / "markup.db", MARKUP)
    runs = [
        env.cli("capture", "install", "-q", "--source", str(path)),
        env.cli("snapshot", "--source", str(path), "--target", env.dsn),
        env.cli("verify", "--source", str(path), "--target", env.dsn),
        env.cli("status", "--source", str(path), "--target", env.dsn),
        env.cli("checkpoints", "show", "1", "--target", env.dsn),
    ]
    for ran in runs[:-1]:
        assert ran.code == 0, ran
    return Ran(runs[-1].code, "".join(r.out for r in runs), "".join(r.err for r in runs))


LONG_TABLE, LONG_COLUMN = "t" * 70, "c" * 80


@case(
    "long-identifiers",
    "app schema",
    "table name of 70 and column name of 80 bytes (PostgreSQL keeps 63)",
    "snapshot, verify",
    "works",
    0,
    ["longer than 63 bytes"],
    untouched="loaded under the truncated names; verify matches them",
)
def _long_names(env: Env) -> Ran:
    path = make_db(env.tmp / "long.db", f'CREATE TABLE "{LONG_TABLE}" (id INTEGER PRIMARY KEY, "{LONG_COLUMN}" TEXT);')
    sqlite_write(path, f"INSERT INTO \"{LONG_TABLE}\" VALUES (1, 'x')")
    loaded = env.cli("snapshot", "--source", str(path), "--target", env.dsn)
    assert loaded.code == 0, loaded
    env.then(lambda: _assert_equal(env.rows(LONG_TABLE[:63]), [(1, "x")], "rows"))
    checked = env.cli("verify", "--source", str(path), "--target", env.dsn)
    return Ran(checked.code, loaded.out + checked.out, loaded.err + checked.err)


@case(
    "truncation-collision",
    "app schema",
    "two table names equal in their first 63 bytes",
    "snapshot",
    "refused",
    2,
    ["collide", "63 bytes", "rename"],
    untouched="no table in PostgreSQL",
)
def _collision(env: Env) -> Ran:
    a, b = "x" * 63 + "_one", "x" * 63 + "_two"
    path = make_db(env.tmp / "c.db", f'CREATE TABLE "{a}" (id INTEGER PRIMARY KEY); CREATE TABLE "{b}" (id INT);')
    env.no_app_tables()
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


@case(
    "case-only-collision",
    "app schema",
    'existing target has `"Users"` and `"USERS"`; SQLite has `users`',
    "snapshot --mode existing",
    "refused",
    2,
    ["ignoring case", "ambiguous", "Users", "USERS"],
    untouched="both target tables still empty",
)
def _case_collision(env: Env) -> Ran:
    path = make_db(env.tmp / "u.db", "CREATE TABLE users (id INTEGER PRIMARY KEY); INSERT INTO users VALUES (1);")
    env.pg.execute('CREATE TABLE "Users" (id bigint PRIMARY KEY); CREATE TABLE "USERS" (id bigint PRIMARY KEY)')
    env.then(lambda: _assert_equal(env.rows("Users") + env.rows("USERS"), [], "rows"))
    return env.cli("snapshot", "--mode", "existing", "--source", str(path), "--target", env.dsn)


@case(
    "without-rowid",
    "app schema",
    "WITHOUT ROWID table with a TEXT key",
    "capture install, run --until-drained",
    "works",
    0,
    untouched="rows and a later change applied",
)
def _without_rowid(env: Env) -> Ran:
    path = make_db(
        env.tmp / "kv.db",
        "CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID; INSERT INTO kv VALUES ('a', x'00ff');",
    )
    installed_and_drained(env, path)
    sqlite_write(path, "INSERT INTO kv VALUES ('b', NULL); UPDATE kv SET v = x'01' WHERE k = 'a'")
    env.then(lambda: _assert_equal(env.rows("kv"), [("a", b"\x01"), ("b", None)], "rows"))
    return env.cli("run", "--until-drained", "--source", str(path), "--target", env.dsn)


NULL_PK = "CREATE TABLE t (code TEXT PRIMARY KEY, v INT); INSERT INTO t VALUES (NULL, 1), (NULL, 2), ('a', 3);"


@case(
    "null-primary-key-capture",
    "app schema",
    "NULLs in a TEXT PRIMARY KEY (SQLite allows them)",
    "capture install",
    "refused",
    2,
    ["NULL values in primary key", "no_key_policy"],
    untouched="file unchanged (no trigger installed)",
)
def _null_pk_capture(env: Env) -> Ran:
    path = make_db(env.tmp / "n.db", NULL_PK)
    env.unchanged(path)
    return env.cli("capture", "install", "--source", str(path))


@case(
    "null-primary-key-snapshot",
    "app schema",
    "NULLs in a TEXT PRIMARY KEY",
    "snapshot",
    "works",
    0,
    untouched="all 3 rows loaded",
)
def _null_pk_snapshot(env: Env) -> Ran:
    path = make_db(env.tmp / "n.db", NULL_PK)
    env.then(lambda: _assert_equal(len(env.rows("t")), 3, "rows"))
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


@case(
    "no-primary-key-capture",
    "app schema",
    "table without a primary key",
    "capture install",
    "refused",
    2,
    ["no primary key", "snapshot-only"],
    untouched="file unchanged",
)
def _no_pk(env: Env) -> Ran:
    path = make_db(env.tmp / "log.db", "CREATE TABLE log (msg TEXT, at TEXT); INSERT INTO log VALUES ('a', 'b');")
    env.unchanged(path)
    return env.cli("capture", "install", "--source", str(path))


@case(
    "no-primary-key-policy",
    "app schema",
    "table without a primary key, `--no-key-policy snapshot-only`",
    "capture install, run --until-drained",
    "works",
    0,
    untouched="duplicate rows loaded",
)
def _no_pk_policy(env: Env) -> Ran:
    path = make_db(
        env.tmp / "log.db", "CREATE TABLE log (msg TEXT, at TEXT); INSERT INTO log VALUES ('a', 'b'), ('a', 'b');"
    )
    installed = env.cli("capture", "install", "--no-key-policy", "snapshot-only", "--source", str(path))
    assert installed.code == 0, installed
    env.then(lambda: _assert_equal(env.rows("log"), [("a", "b"), ("a", "b")], "rows"))
    return env.cli("run", "--until-drained", "--source", str(path), "--target", env.dsn)


SHADOWED_ROWID = "CREATE TABLE t (rowid TEXT, oid INTEGER, _rowid_ INTEGER, v TEXT{key});"
"""Every rowid alias (rowid, oid, _rowid_) is a real column: the rowid is reachable only through an
INTEGER PRIMARY KEY, if there is one."""


@case(
    "rowid-shadowed-keyless",
    "app schema",
    "keyless table with columns named rowid, oid and _rowid_ (no way to reach its rowid), `--no-key-policy rowid`",
    "capture install",
    "refused",
    2,
    ["hide its rowid", "snapshot-only"],
    untouched="file unchanged (no trigger installed)",
)
def _rowid_shadowed_keyless(env: Env) -> Ran:
    path = make_db(env.tmp / "app.db", SHADOWED_ROWID.format(key=""), ("INSERT INTO t VALUES ('x', 1, 2, 'a')", ()))
    env.unchanged(path)
    return env.cli("capture", "install", "--no-key-policy", "rowid", "--source", str(path))


@case(
    "rowid-shadowed-keyed",
    "app schema",
    "columns named rowid (holding text), oid and _rowid_ beside an INTEGER PRIMARY KEY",
    "capture install, run --until-drained",
    "works",
    0,
    untouched="rows and a later change applied",
)
def _rowid_shadowed_keyed(env: Env) -> Ran:
    path = make_db(
        env.tmp / "app.db",
        SHADOWED_ROWID.format(key=", id INTEGER PRIMARY KEY"),
        ("INSERT INTO t VALUES ('x', 1, 2, 'a', 1)", ()),
        wal=True,
    )
    installed_and_drained(env, path)
    sqlite_write(path, "INSERT INTO t VALUES ('y', 3, 4, 'b', 2); UPDATE t SET v = 'c' WHERE id = 1")
    env.then(lambda: _assert_equal(env.rows("t"), [("x", 1, 2, "c", 1), ("y", 3, 4, "b", 2)], "rows"))
    return env.cli("run", "--until-drained", "--source", str(path), "--target", env.dsn)


@case(
    "no-tables", "app schema", "a valid SQLite file without tables", "snapshot", "works", 0, untouched="nothing to load"
)
def _no_tables(env: Env) -> Ran:
    path = make_db(env.tmp / "blank.db", "PRAGMA user_version = 1;")
    env.no_app_tables()
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


# values --------------------------------------------------------------------------------------------

MIXED = (
    "CREATE TABLE m (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO m VALUES (1, 1), (2, 'two'), (3, x'01'), (4, 4);"
)


@case(
    "mixed-storage-create",
    "values",
    "INTEGER column holding integer, text and blob values",
    "snapshot (create mode)",
    "works",
    0,
    untouched="column created as text, every value kept",
)
def _mixed_create(env: Env) -> Ran:
    path = make_db(env.tmp / "m.db", MIXED)
    env.then(lambda: _assert_equal([r[1] for r in env.rows("m")], ["1", "two", "\x01", "4"], "values"))
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


def _existing_m(env: Env) -> Path:
    env.pg.execute("CREATE TABLE m (id bigint PRIMARY KEY, n bigint)")
    return make_db(env.tmp / "m.db", MIXED)


@case(
    "mixed-storage-existing",
    "values",
    "the same values into an app-created `bigint` column",
    "snapshot --mode existing",
    "refused",
    1,
    ["refused value in m (id=2) column n", "quarantine"],
    untouched="target table still empty",
)
def _mixed_existing(env: Env) -> Ran:
    path = _existing_m(env)
    env.then(lambda: _assert_equal(env.rows("m"), [], "rows"))
    return env.cli("snapshot", "--mode", "existing", "--source", str(path), "--target", env.dsn)


@case(
    "mixed-storage-quarantine",
    "values",
    "the same, `--on-bad-value quarantine`",
    "snapshot --mode existing",
    "quarantined",
    0,
    untouched="rows 1 and 4 loaded; rows 2 and 3 in replicator.quarantine",
)
def _mixed_quarantine(env: Env) -> Ran:
    path = _existing_m(env)
    env.then(lambda: _assert_equal(env.rows("m"), [(1, 1), (4, 4)], "rows"))
    env.then(lambda: _assert_equal([q[1] for q in env.quarantined()], [{"id": 2}, {"id": 3}], "quarantine"))
    args = ("--mode", "existing", "--on-bad-value", "quarantine")
    return env.cli("snapshot", *args, "--source", str(path), "--target", env.dsn)


BAD_UTF8 = (
    "CREATE TABLE u (id INTEGER PRIMARY KEY, s TEXT); INSERT INTO u VALUES (1, 'ok'), (2, CAST(x'66ff6f' AS TEXT));"
)


@case(
    "invalid-utf8",
    "values",
    "TEXT value with invalid UTF-8 bytes",
    "snapshot",
    "refused",
    1,
    ["not valid UTF-8", "id=2", "quarantine"],
    untouched="nothing written to the table",
)
def _bad_utf8(env: Env) -> Ran:
    path = make_db(env.tmp / "u.db", BAD_UTF8)
    env.then(lambda: _assert_equal(env.rows("u") if "u" in env.tables() else [], [], "rows"))
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


@case(
    "invalid-utf8-quarantine",
    "values",
    "the same, `--on-bad-value quarantine`",
    "snapshot",
    "quarantined",
    0,
    untouched="row 1 loaded, row 2 in replicator.quarantine",
)
def _bad_utf8_quarantine(env: Env) -> Ran:
    path = make_db(env.tmp / "u.db", BAD_UTF8)
    env.then(lambda: _assert_equal(env.rows("u"), [(1, "ok")], "rows"))
    env.then(lambda: _assert_equal(env.quarantined(), [("u", {"id": 2}, "s")], "quarantine"))
    return env.cli("snapshot", "--on-bad-value", "quarantine", "--source", str(path), "--target", env.dsn)


NUL = "CREATE TABLE n (id INTEGER PRIMARY KEY, s TEXT); INSERT INTO n VALUES (1, 'ok'), (2, 'a' || char(0) || 'b');"


@case(
    "nul-byte",
    "values",
    "TEXT value containing a NUL character",
    "snapshot",
    "refused",
    1,
    ["NUL", "id=2", "quarantine"],
    untouched="nothing written to the table",
)
def _nul(env: Env) -> Ran:
    path = make_db(env.tmp / "n.db", NUL)
    env.then(lambda: _assert_equal(env.rows("n") if "n" in env.tables() else [], [], "rows"))
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


@case(
    "nul-byte-strip",
    "values",
    "the same with `[types.n.s] strip_nul = true`",
    "snapshot",
    "works",
    0,
    untouched="value loaded as 'ab' (the recorded alteration)",
)
def _nul_strip(env: Env) -> Ran:
    path = make_db(env.tmp / "n.db", NUL)
    config = env.tmp / "replicator.toml"
    config.write_text("[types.n.s]\nstrip_nul = true\n")
    env.then(lambda: _assert_equal(env.rows("n"), [(1, "ok"), (2, "ab")], "rows"))
    return env.cli("snapshot", "--config", str(config), "--source", str(path), "--target", env.dsn)


@case(
    "int64-extremes",
    "values",
    "INTEGER PRIMARY KEY at -2^63 and 2^63-1",
    "snapshot",
    "works",
    0,
    untouched="both keys exact; identity continues without overflow error at load",
)
def _int64_extremes(env: Env) -> Ran:
    path = make_db(
        env.tmp / "i.db",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); "
        "INSERT INTO t VALUES (9223372036854775807, 'max'), (-9223372036854775808, 'min');",
    )
    env.then(
        lambda: _assert_equal(env.rows("t"), [(-9223372036854775808, "min"), (9223372036854775807, "max")], "keys")
    )
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


@case(
    "int64-overflow",
    "values",
    "1e19 (beyond int64, stored as REAL) in an INTEGER column, app-created `bigint`",
    "snapshot --mode existing",
    "refused",
    1,
    ["refused value in i (id=2) column n"],
    untouched="target table still empty",
)
def _int64_overflow(env: Env) -> Ran:
    env.pg.execute("CREATE TABLE i (id bigint PRIMARY KEY, n bigint)")
    path = make_db(
        env.tmp / "i.db",
        "CREATE TABLE i (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO i VALUES (1, 1);",
        ("INSERT INTO i VALUES (2, ?)", (1e19,)),
    )
    env.then(lambda: _assert_equal(env.rows("i"), [], "rows"))
    return env.cli("snapshot", "--mode", "existing", "--source", str(path), "--target", env.dsn)


@case(
    "int-too-big-for-column",
    "values",
    "70000 into an app-created `smallint` column",
    "snapshot --mode existing",
    "refused",
    1,
    ["refused value in i (id=2) column s"],
    untouched="target table still empty",
)
def _smallint(env: Env) -> Ran:
    env.pg.execute("CREATE TABLE i (id bigint PRIMARY KEY, s smallint)")
    path = make_db(
        env.tmp / "i.db", "CREATE TABLE i (id INTEGER PRIMARY KEY, s INT); INSERT INTO i VALUES (1, 1), (2, 70000);"
    )
    env.then(lambda: _assert_equal(env.rows("i"), [], "rows"))
    return env.cli("snapshot", "--mode", "existing", "--source", str(path), "--target", env.dsn)


BLOB_BYTES = 24 * 1024 * 1024


@case(
    "huge-blob",
    "values",
    "a 24 MiB BLOB",
    "snapshot",
    "works",
    0,
    untouched="blob loaded byte for byte (length and SHA-256)",
    slow=True,
)
def _huge_blob(env: Env) -> Ran:
    blob = hashlib.sha256(b"seed").digest() * (BLOB_BYTES // 32)
    path = make_db(
        env.tmp / "b.db",
        "CREATE TABLE b (id INTEGER PRIMARY KEY, data BLOB);",
        ("INSERT INTO b VALUES (1, ?)", (blob,)),
    )
    want = (BLOB_BYTES, hashlib.sha256(blob).hexdigest())

    def same() -> None:
        row = env.pg.execute("SELECT octet_length(data), encode(sha256(data), 'hex') FROM b").fetchone()
        _assert_equal(row, want, "blob")

    env.then(same)
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


DATES = (
    "CREATE TABLE d (id INTEGER PRIMARY KEY, at DATETIME); INSERT INTO d VALUES "
    "(1, '2024-01-01 00:00:00'), (2, '10000-01-01 00:00:00'), (3, '0000-00-00 00:00:00'), (4, '2024-13-45 99:00:00');"
)


@case(
    "dates-out-of-range-create",
    "values",
    "DATETIME column with year 10000, `0000-00-00` and month 13",
    "snapshot (create mode)",
    "works",
    0,
    untouched="column created as text (not every value is a date), values kept verbatim",
)
def _dates_create(env: Env) -> Ran:
    path = make_db(env.tmp / "d.db", DATES)
    env.then(lambda: _assert_equal(env.rows("d")[1], (2, "10000-01-01 00:00:00"), "value"))
    return env.cli("snapshot", "--source", str(path), "--target", env.dsn)


@case(
    "dates-out-of-range-existing",
    "values",
    "the same into an app-created `timestamp` column",
    "snapshot --mode existing",
    "refused",
    1,
    ["refused value in d (id=2) column at"],
    untouched="target table still empty",
)
def _dates_existing(env: Env) -> Ran:
    env.pg.execute("CREATE TABLE d (id bigint PRIMARY KEY, at timestamp)")
    path = make_db(env.tmp / "d.db", DATES)
    env.then(lambda: _assert_equal(env.rows("d"), [], "rows"))
    return env.cli("snapshot", "--mode", "existing", "--source", str(path), "--target", env.dsn)


@case(
    "dates-out-of-range-quarantine",
    "values",
    "the same, `--on-bad-value quarantine`",
    "snapshot --mode existing",
    "quarantined",
    0,
    untouched="row 1 loaded, rows 2-4 in replicator.quarantine",
)
def _dates_quarantine(env: Env) -> Ran:
    env.pg.execute("CREATE TABLE d (id bigint PRIMARY KEY, at timestamp)")
    path = make_db(env.tmp / "d.db", DATES)
    env.then(lambda: _assert_equal([r[0] for r in env.rows("d")], [1], "rows"))
    env.then(lambda: _assert_equal([q[1]["id"] for q in env.quarantined()], [2, 3, 4], "quarantine"))
    args = ("--mode", "existing", "--on-bad-value", "quarantine")
    return env.cli("snapshot", *args, "--source", str(path), "--target", env.dsn)


FAMILY = """
CREATE TABLE p (id INTEGER PRIMARY KEY, n INTEGER);
CREATE TABLE c (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p (id));
CREATE TABLE g (id INTEGER PRIMARY KEY, c_id INTEGER REFERENCES c (id));
INSERT INTO p VALUES (1, 1), (2, 1099511627776);
INSERT INTO c VALUES (10, 1), (20, 2);
INSERT INTO g VALUES (100, 10), (200, 20);
"""
FAMILY_PG = """
CREATE TABLE p (id integer PRIMARY KEY, n integer);
CREATE TABLE c (id integer PRIMARY KEY, p_id integer REFERENCES p (id));
CREATE TABLE g (id integer PRIMARY KEY, c_id integer REFERENCES c (id));
"""


@case(
    "quarantined-parent-existing",
    "values",
    "a parent row PostgreSQL's `integer` cannot hold, its child and grandchild, app-created schema with its "
    "foreign keys, `--on-bad-value quarantine`",
    "snapshot --mode existing",
    "quarantined",
    0,
    untouched="the other rows loaded; the parent in replicator.quarantine, its child and grandchild with it "
    "(`parent p key id=2 quarantined`, `parent c key id=20 quarantined`)",
)
def _quarantined_parent(env: Env) -> Ran:
    env.pg.execute(FAMILY_PG)
    path = make_db(env.tmp / "f.db", FAMILY)
    env.then(lambda: _assert_equal([env.rows(t) for t in "pcg"], [[(1, 1)], [(10, 1)], [(100, 10)]], "rows"))
    reasons = "SELECT table_name, key->>'id', reason FROM replicator.quarantine ORDER BY id"
    want = [("p", "2", "range"), ("c", "20", "parent p key id=2 quarantined"), ("g", "200", "parent c key id=20")]

    def recorded() -> None:
        got = env.pg.execute(reasons).fetchall()
        _assert_equal([(t, k) for t, k, _r in got], [(t, k) for t, k, _w in want], "quarantine")
        assert all(w in r for (_t, _k, r), (_u, _l, w) in zip(got, want, strict=True)), got

    env.then(recorded)
    args = ("--mode", "existing", "--on-bad-value", "quarantine")
    return env.cli("snapshot", *args, "--source", str(path), "--target", env.dsn)


@case(
    "orphan-existing",
    "values",
    "a child whose parent SQLite does not hold (its foreign keys are off), app-created schema with its foreign "
    "keys, `--on-bad-value quarantine`",
    "snapshot --mode existing",
    "refused",
    1,
    ["SQLite holds rows whose parent is missing", "(p_id)=(9)"],
    untouched="the child table still empty",
)
def _orphan(env: Env) -> Ran:
    env.pg.execute(FAMILY_PG)
    path = make_db(env.tmp / "f.db", FAMILY.replace("(2, 1099511627776)", "(2, 2)") + "INSERT INTO c VALUES (30, 9);")
    env.then(lambda: _assert_equal(env.rows("c"), [], "rows"))
    args = ("--mode", "existing", "--on-bad-value", "quarantine")
    return env.cli("snapshot", *args, "--source", str(path), "--target", env.dsn)


# PostgreSQL ----------------------------------------------------------------------------------------


@case(
    "pg-unreachable",
    "PostgreSQL",
    "nothing listens on the DSN's port",
    "snapshot",
    "refused",
    1,
    ["cannot connect to PostgreSQL", "running and reachable"],
)
def _unreachable(env: Env) -> Ran:
    return env.cli("snapshot", "--source", str(simple(env)), "--target", UNREACHABLE)


@case("pg-bad-dsn", "PostgreSQL", "malformed DSN", "snapshot", "refused", 2, ["DSN is not valid"])
def _bad_dsn(env: Env) -> Ran:
    return env.cli("snapshot", "--source", str(simple(env)), "--target", "host=127.0.0.1 dbname")


AT_PASSWORD = "Sentinel@9f2c7e-tail"
"""A password holding an '@' nobody percent-encoded: libpq would take ``Sentinel`` as the password and
``9f2c7e-tail@host`` as the host, and print that host in its error."""


@case(
    "pg-dsn-unescaped-at",
    "PostgreSQL",
    "DSN whose password holds an unescaped '@' (`postgresql://app:p@ss@host/db`)",
    "snapshot",
    "refused",
    2,
    ["more than one '@'", "%40"],
    untouched="no part of the password in the output; no table in PostgreSQL",
)
def _dsn_unescaped_at(env: Env) -> Ran:
    host = conninfo.conninfo_to_dict(env.dsn)
    dsn = f"postgresql://app:{AT_PASSWORD}@{host.get('host') or '127.0.0.1'}:{host.get('port') or 5432}/postgres"
    env.no_app_tables()
    ran = env.cli("snapshot", "--source", str(simple(env)), "--target", dsn)
    printed = [part for part in AT_PASSWORD.split("@") if part in ran.out + ran.err]
    env.then(lambda: _assert_equal(printed, [], "parts of the password printed"))
    return ran


@case("pg-no-target", "PostgreSQL", "no --target and no REPLICATOR_TARGET", "snapshot", "refused", 2, ["no target"])
def _no_target(env: Env) -> Ran:
    return env.cli("snapshot", "--source", str(simple(env)))


@case(
    "pg-no-database",
    "PostgreSQL",
    "the DSN's database does not exist",
    "snapshot",
    "refused",
    1,
    ["does not exist", "createdb"],
)
def _no_database(env: Env) -> Ran:
    dsn = env.dsn_with(dbname="replicator_no_such_db")
    return env.cli("snapshot", "--source", str(simple(env)), "--target", dsn)


@case("pg-no-role", "PostgreSQL", "the DSN's user does not exist", "snapshot", "refused", 1, ["role", "check the user"])
def _no_role(env: Env) -> Ran:
    dsn = env.dsn_with(user="replicator_no_such_role")
    return env.cli("snapshot", "--source", str(simple(env)), "--target", dsn)


@case(
    "pg-wrong-password",
    "PostgreSQL",
    "wrong password (an embedded server with scram-sha-256 auth)",
    "snapshot",
    "refused",
    1,
    ["password authentication failed", "check the user and password"],
    slow=True,
    needs=["scram"],
)
def _wrong_password(env: Env) -> Ran:
    server: ScramServer = env.request.getfixturevalue("scram_server")
    return env.cli("snapshot", "--source", str(simple(env)), "--target", server.dsn("wrong-password"))


@case(
    "pg-wrong-password-daemon",
    "PostgreSQL",
    "wrong password given to the daemon (no retry loop: waiting cannot fix it)",
    "run --until-drained",
    "refused",
    1,
    ["password authentication failed", "check the user and password"],
    untouched="journal not pruned",
    slow=True,
    needs=["scram"],
)
def _wrong_password_daemon(env: Env) -> Ran:
    server: ScramServer = env.request.getfixturevalue("scram_server")
    path = simple(env)
    installed = env.cli("capture", "install", "-q", "--source", str(path))
    assert installed.code == 0, installed
    sqlite_write(path, "INSERT INTO t VALUES (3, 'c')")
    env.unchanged(path)
    return env.cli("run", "--until-drained", "--source", str(path), "--target", server.dsn("wrong-password"))


def _weak_role(env: Env, *grants: str) -> str:
    """A login role with only ``grants`` (formatted with the database name); returns its DSN."""
    database = str(conninfo.conninfo_to_dict(env.dsn)["dbname"])
    name = f"weak_{database}"[:63]
    env.pg.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))

    def drop() -> None:
        with psycopg.connect(env.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))

    env.request.addfinalizer(drop)
    for grant in grants:
        env.pg.execute(sql.SQL(grant).format(db=sql.Identifier(database), role=sql.Identifier(name)))
    return env.dsn_with(user=name, password="")


@case(
    "pg-no-create-on-database",
    "PostgreSQL",
    "role without CREATE on the database (cannot make the state schema)",
    "snapshot",
    "refused",
    1,
    ["permission denied", "least-privilege"],
    untouched="no schema, no table",
)
def _no_create_db(env: Env) -> Ran:
    dsn = _weak_role(env)
    env.no_app_tables()
    env.no_app_tables("replicator")
    return env.cli("snapshot", "--source", str(simple(env)), "--target", dsn)


@case(
    "pg-no-create-on-schema",
    "PostgreSQL",
    "role with CREATE on the database but not on schema public",
    "snapshot",
    "refused",
    1,
    ["permission denied for schema public", "CREATE ON SCHEMA public"],
    untouched="no app table",
)
def _no_create_schema(env: Env) -> Ran:
    dsn = _weak_role(env, "GRANT CONNECT, CREATE ON DATABASE {db} TO {role}")
    env.no_app_tables()
    return env.cli("snapshot", "--source", str(simple(env)), "--target", dsn)


@case(
    "pg-target-not-empty",
    "PostgreSQL",
    "target table already holds rows",
    "snapshot",
    "refused",
    2,
    ["already hold rows: t", "--replace"],
    untouched="the existing rows unchanged",
)
def _not_empty(env: Env) -> Ran:
    env.pg.execute("CREATE TABLE t (id bigint PRIMARY KEY, v text); INSERT INTO t VALUES (7, 'theirs')")
    env.then(lambda: _assert_equal(env.rows("t"), [(7, "theirs")], "rows"))
    return env.cli("snapshot", "--source", str(simple(env)), "--target", env.dsn)


@case(
    "pg-schema-differs",
    "PostgreSQL",
    "app-created target table lacks a column and has an extra one",
    "snapshot --mode existing",
    "refused",
    2,
    ["does not match", "t.v is missing", "no column in SQLite"],
    untouched="target table still empty",
)
def _schema_differs(env: Env) -> Ran:
    env.pg.execute("CREATE TABLE t (id bigint PRIMARY KEY, other text)")
    env.then(lambda: _assert_equal(env.rows("t"), [], "rows"))
    return env.cli("snapshot", "--mode", "existing", "--source", str(simple(env)), "--target", env.dsn)


@case(
    "pg-tables-exist-create",
    "PostgreSQL",
    "`--mode create` while the tables already exist (empty)",
    "snapshot --mode create",
    "refused",
    2,
    ["already exist", "--mode existing"],
    untouched="the existing table's definition unchanged",
)
def _tables_exist(env: Env) -> Ran:
    env.pg.execute("CREATE TABLE t (id bigint PRIMARY KEY, v text, extra int)")
    env.then(lambda: _assert_equal(len(env.pg.execute("SELECT * FROM t").description or []), 3, "columns"))
    return env.cli("snapshot", "--mode", "create", "--source", str(simple(env)), "--target", env.dsn)


# checkpoints and exports ---------------------------------------------------------------------------


def _exported(env: Env) -> Path:
    path = simple(env)
    installed_and_drained(env, path)
    sqlite_write(path, "INSERT INTO t VALUES (3, 'c'); UPDATE t SET v = 'z' WHERE id = 1")
    drained = env.cli("run", "-q", "--until-drained", "--source", str(path), "--target", env.dsn)
    assert drained.code == 0, drained
    out = env.tmp / "chain.jsonl"
    exported = env.cli("checkpoints", "export", str(out), "--target", env.dsn)
    assert exported.code == 0, exported
    return out


@case(
    "chain-export-edited",
    "checkpoints and exports",
    "`checkpoints export` file with one number edited",
    "checkpoints verify --file",
    "refused",
    3,
    ["does not verify", "do not cut over"],
)
def _export_edited(env: Env) -> Ran:
    out = _exported(env)
    text = out.read_text()
    edited = re.sub(r'(upserted\\":)(\d+)', lambda m: m[1] + str(int(m[2]) + 5), text, count=1)  # escaped body
    assert edited != text
    out.write_text(edited)
    return env.cli("checkpoints", "verify", "--file", str(out))


@case(
    "chain-export-truncated",
    "checkpoints and exports",
    "`checkpoints export` file with its last line cut",
    "checkpoints verify --file",
    "refused",
    3,
    ["does not verify"],
)
def _export_truncated(env: Env) -> Ran:
    out = _exported(env)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-1])[:-10])
    return env.cli("checkpoints", "verify", "--file", str(out))


@case(
    "chain-export-garbage",
    "checkpoints and exports",
    "`checkpoints export` file that is not JSON Lines",
    "checkpoints verify --file",
    "refused",
    3,
    ["does not verify"],
)
def _export_garbage(env: Env) -> Ran:
    out = env.tmp / "chain.jsonl"
    out.write_bytes(b"\xff\xfe not json\n")
    return env.cli("checkpoints", "verify", "--file", str(out))


@case(
    "chain-export-missing",
    "checkpoints and exports",
    "`checkpoints export` file that does not exist",
    "checkpoints verify --file",
    "refused",
    2,
    ["does not exist", "--help"],
)
def _export_missing(env: Env) -> Ran:
    return env.cli("checkpoints", "verify", "--file", str(env.tmp / "nope.jsonl"))


def _export(env: Env, source: Path, name: str = "export") -> Path:
    out = env.tmp / name
    ran = env.cli("export", "-q", "--source", str(source), "--out", str(out))
    assert ran.code == 0, ran
    return out


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@case(
    "export-out-exists",
    "checkpoints and exports",
    "`export --out` naming a directory that exists",
    "export",
    "refused",
    2,
    ["already exists", "never overwrites"],
    untouched="the existing directory's files unchanged",
)
def _export_exists(env: Env) -> Ran:
    out = env.tmp / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    env.then(lambda: _assert_equal(_listing(out), ["keep.txt"], "out dir"))
    return env.cli("export", "--source", str(simple(env)), "--out", str(out))


@case(
    "export-corrupt-source",
    "checkpoints and exports",
    "export of a file whose table pages are corrupt",
    "export",
    "refused",
    2,
    ["is corrupt", "integrity_check"],
    untouched="no export directory, no partial directory",
)
def _export_corrupt(env: Env) -> Ran:
    path = _corrupt(env, 4096, 8192)
    before = _listing(env.tmp)
    env.then(lambda: _assert_equal(_listing(env.tmp), before, "files in the parent folder"))
    return env.cli("export", "--source", str(path), "--out", str(env.tmp / "export"))


@case(
    "export-unwritable-dir",
    "checkpoints and exports",
    "`export --out` inside a read-only directory",
    "export",
    "refused",
    1,
    ["cannot write the export", "permission denied"],
    untouched="nothing created",
    needs=["unprivileged"],
)
def _export_unwritable(env: Env) -> Ran:
    parent = env.tmp / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    env.request.addfinalizer(lambda: parent.chmod(0o755))
    env.then(lambda: _assert_equal(_listing(parent), [], "read-only dir"))
    return env.cli("export", "--source", str(simple(env)), "--out", str(parent / "x"), unprivileged=True)


def _first_table_file(out: Path) -> Path:
    return sorted(out.glob("*.jsonl"))[0]


@case(
    "export-value-edited",
    "checkpoints and exports",
    "one value edited in an export's table file",
    "verify-export",
    "refused",
    3,
    ["does not match its SHA-256", "do not import"],
)
def _export_value_edited(env: Env) -> Ran:
    out = _export(env, simple(env))
    table = _first_table_file(out)
    table.write_text(table.read_text().replace('"a"', '"A"', 1))
    return env.cli("verify-export", str(out))


@case(
    "export-file-truncated",
    "checkpoints and exports",
    "an export's table file cut short",
    "verify-export",
    "refused",
    3,
    ["does not match its SHA-256"],
)
def _export_file_truncated(env: Env) -> Ran:
    out = _export(env, simple(env))
    table = _first_table_file(out)
    table.write_bytes(table.read_bytes()[:-7])
    return env.cli("verify-export", str(out))


@case(
    "export-file-missing",
    "checkpoints and exports",
    "an export's table file deleted",
    "verify-export",
    "refused",
    3,
    ["is missing"],
)
def _export_file_missing(env: Env) -> Ran:
    out = _export(env, simple(env))
    _first_table_file(out).unlink()
    return env.cli("verify-export", str(out))


@case(
    "export-manifest-missing",
    "checkpoints and exports",
    "an export without its manifest.json",
    "verify-export",
    "refused",
    3,
    ["manifest.json is missing"],
)
def _export_manifest_missing(env: Env) -> Ran:
    out = _export(env, simple(env))
    (out / "manifest.json").unlink()
    return env.cli("verify-export", str(out))


@case("export-absent", "checkpoints and exports", "no export there", "verify-export", "refused", 2, ["no export"])
def _export_absent(env: Env) -> Ran:
    return env.cli("verify-export", str(env.tmp / "nothing-here"))


@case(
    "import-edited-export",
    "checkpoints and exports",
    "import of an export with an edited value",
    "import",
    "refused",
    3,
    ["does not verify", "do not import"],
    untouched="no table in PostgreSQL",
)
def _import_edited(env: Env) -> Ran:
    out = _export(env, simple(env))
    table = _first_table_file(out)
    table.write_text(table.read_text().replace('"b"', '"B"', 1))
    env.no_app_tables()
    return env.cli("import", str(out), "--target", env.dsn)


@case(
    "import-target-not-empty",
    "checkpoints and exports",
    "import into a table that already holds rows",
    "import",
    "refused",
    2,
    ["already hold rows: t", "--replace"],
    untouched="the existing rows unchanged",
)
def _import_not_empty(env: Env) -> Ran:
    out = _export(env, simple(env))
    env.pg.execute("CREATE TABLE t (id bigint PRIMARY KEY, v text); INSERT INTO t VALUES (7, 'theirs')")
    env.then(lambda: _assert_equal(env.rows("t"), [(7, "theirs")], "rows"))
    return env.cli("import", str(out), "--target", env.dsn)


@case(
    "hostile-identifiers-export",
    "app schema",
    "the hostile names of `hostile-identifiers`, exported, checked and imported",
    "export, verify-export, import",
    "works",
    0,
    untouched="every table imported under its exact name",
)
def _hostile_export(env: Env) -> Ran:
    out = _export(env, make_db(env.tmp / "hostile.db", HOSTILE))
    checked = env.cli("verify-export", "-q", str(out))
    assert checked.code == 0, checked
    env.then(lambda: _assert_equal(sorted(env.tables()), sorted(HOSTILE_TABLES), "tables"))
    env.then(lambda: _assert_equal(env.rows("%s {} %(x)s"), [(1, "%s", "?")], "rows"))
    return env.cli("import", str(out), "--target", env.dsn)


def _tamper(env: Env) -> Path:
    path = simple(env)
    installed_and_drained(env, path)
    sqlite_write(path, "INSERT INTO t VALUES (3, 'c')")
    drained = env.cli("run", "-q", "--until-drained", "--source", str(path), "--target", env.dsn)
    assert drained.code == 0, drained
    env.pg.execute(
        "UPDATE replicator.checkpoints SET body = convert_to(replace(convert_from(body, 'UTF8'), "
        "'\"upserted\":1', '\"upserted\":5'), 'UTF8') WHERE number = 2"
    )
    return path


@case(
    "tampered-checkpoint",
    "checkpoints and exports",
    "a checkpoint row edited in PostgreSQL",
    "checkpoints verify",
    "refused",
    3,
    ["does not verify", "1 finding"],
)
def _tampered_verify(env: Env) -> Ran:
    _tamper(env)
    return env.cli("checkpoints", "verify", "--target", env.dsn)


@case(
    "tampered-checkpoint-run",
    "checkpoints and exports",
    "the daemon restarted on a tampered chain",
    "run --until-drained",
    "refused",
    3,
    ["does not match its hash", "checkpoints verify"],
    untouched="no change applied, journal not pruned",
)
def _tampered_run(env: Env) -> Ran:
    path = _tamper(env)
    sqlite_write(path, "INSERT INTO t VALUES (4, 'd')")
    env.then(lambda: _assert_equal([r[0] for r in env.rows("t")], [1, 2, 3], "rows"))
    journal = sqlite3.connect(path).execute("SELECT count(*) FROM _replicator_journal").fetchone()
    env.then(
        lambda: _assert_equal(
            sqlite3.connect(path).execute("SELECT count(*) FROM _replicator_journal").fetchone(), journal, "journal"
        )
    )
    return env.cli("run", "--until-drained", "--source", str(path), "--target", env.dsn)


def _journal_head(path: Path) -> int:
    return int(sqlite3.connect(path).execute("SELECT max(seq) FROM _replicator_journal").fetchone()[0] or 0)


@case(
    "journal-rows-deleted-run",
    "checkpoints and exports",
    "journal rows deleted by hand before the daemon applied them",
    "run --until-drained",
    "refused",
    3,
    ["journal entries", "deleted from _replicator_journal by hand", "snapshot --replace"],
    untouched="no change applied",
)
def _journal_rows_deleted_run(env: Env) -> Ran:
    path = simple(env)
    installed_and_drained(env, path)
    head = _journal_head(path)
    sqlite_write(path, "INSERT INTO t VALUES (4, 'd'); INSERT INTO t VALUES (5, 'e'); INSERT INTO t VALUES (6, 'f');")
    sqlite_write(path, f"DELETE FROM _replicator_journal WHERE seq = {head + 2}")
    env.then(lambda: _assert_equal([r[0] for r in env.rows("t")], [1, 2], "rows"))
    return env.cli("run", "--until-drained", "--source", str(path), "--target", env.dsn)


def _two_batches(env: Env) -> Path:
    path = simple(env)
    installed_and_drained(env, path)
    for row in ("(3, 'c')", "(4, 'd')"):
        sqlite_write(path, f"INSERT INTO t VALUES {row}")
        drained = env.cli("run", "-q", "--until-drained", "--source", str(path), "--target", env.dsn)
        assert drained.code == 0, drained
    return path


@case(
    "checkpoints-cut-off-run",
    "checkpoints and exports",
    "every checkpoint after the genesis deleted in PostgreSQL",
    "run --until-drained",
    "refused",
    3,
    ["checkpoints 2..3 are missing", "anchor"],
    untouched="nothing appended to the cut-off chain",
)
def _cut_off_run(env: Env) -> Ran:
    path = _two_batches(env)
    env.pg.execute("DELETE FROM replicator.checkpoints WHERE number > 1")
    env.then(
        lambda: _assert_equal(env.pg.execute("SELECT count(*) FROM replicator.checkpoints").fetchone(), (1,), "chain")
    )
    return env.cli("run", "--until-drained", "--source", str(path), "--target", env.dsn)


@case(
    "checkpoints-swapped-run",
    "checkpoints and exports",
    "the two newest checkpoints swapped in PostgreSQL",
    "run --until-drained",
    "refused",
    3,
    ["checkpoint 3 holds the body of checkpoint 2", "swapped"],
    untouched="no change applied",
)
def _swapped_run(env: Env) -> Ran:
    path = _two_batches(env)
    with env.pg.transaction():
        env.pg.execute("UPDATE replicator.checkpoints SET number = 99 WHERE number = 2")
        env.pg.execute("UPDATE replicator.checkpoints SET number = 2 WHERE number = 3")
        env.pg.execute("UPDATE replicator.checkpoints SET number = 3 WHERE number = 99")
    sqlite_write(path, "INSERT INTO t VALUES (5, 'e')")
    env.then(lambda: _assert_equal([r[0] for r in env.rows("t")], [1, 2, 3, 4], "rows"))
    return env.cli("run", "--until-drained", "--source", str(path), "--target", env.dsn)


@case(
    "cutover-not-wal",
    "daemon",
    "cutover of a source in rollback-journal (DELETE) mode",
    "cutover",
    "refused",
    1,
    ["not WAL", "journal_mode=WAL"],
    untouched="SQLite not fenced: the app can still write",
)
def _cutover_not_wal(env: Env) -> Ran:
    path = simple(env)
    installed_and_drained(env, path)
    env.then(lambda: sqlite_write(path, "INSERT INTO t VALUES (9, 'still writable')"))
    return env.cli("cutover", "--source", str(path), "--target", env.dsn)


@case(
    "certificate-edited",
    "checkpoints and exports",
    "cutover certificate file with one number edited",
    "certificate --verify",
    "refused",
    3,
    ["does not verify", "edited or damaged"],
)
def _certificate_edited(env: Env) -> Ran:
    path = make_db(env.tmp / "app.db", SIMPLE, wal=True)
    installed_and_drained(env, path)
    certificate = env.tmp / "certificate.json"
    args = ("--certificate", str(certificate), "--backup-dir", str(env.tmp / "backup"))
    done = env.cli("cutover", "-q", "--source", str(path), "--target", env.dsn, *args)
    assert done.code == 0, done
    text = certificate.read_text()
    edited = re.sub(r'("stop_seq": *)(\d+)', lambda m: m[1] + str(int(m[2]) + 1), text, count=1)
    assert edited != text
    certificate.write_text(edited)
    return env.cli("certificate", "--verify", str(certificate), "--target", env.dsn)


# daemon --------------------------------------------------------------------------------------------


@case(
    "run-without-capture",
    "daemon",
    "source without capture installed",
    "run",
    "refused",
    2,
    ["capture is not installed", "capture install"],
    untouched="no table in PostgreSQL",
)
def _no_capture(env: Env) -> Ran:
    env.no_app_tables()
    return env.cli("run", "--until-drained", "--source", str(simple(env)), "--target", env.dsn)


@case(
    "two-daemons",
    "daemon",
    "a second `run` on the same source while one runs",
    "run",
    "refused",
    1,
    ["another replicator", "stop the other"],
    untouched="the first daemon keeps running and exits 0 on SIGTERM",
    slow=True,
)
def _two_daemons(env: Env) -> Ran:
    return _second_daemon(env, copy=False)


@case(
    "two-daemons-copy",
    "daemon",
    "a second `run` on a copy of the source (own lock file, same capture id) while one runs",
    "run",
    "refused",
    1,
    ["another replicator is already applying", "pg_stat_activity"],
    untouched="the first daemon keeps running and exits 0 on SIGTERM (PostgreSQL advisory lock)",
    slow=True,
)
def _two_daemons_copy(env: Env) -> Ran:
    return _second_daemon(env, copy=True)


@case(
    "two-daemons-metrics-port",
    "daemon",
    "a second `run` with the same `--metrics-port` while one runs",
    "run --metrics-port",
    "refused",
    1,
    ["another replicator", "stop the other"],
    untouched="the first daemon keeps running and exits 0 on SIGTERM",
    slow=True,
)
def _two_daemons_port(env: Env) -> Ran:
    return _second_daemon(env, copy=False, options=("--metrics-port", str(free_port())))


@case(
    "metrics-port-in-use",
    "daemon",
    "`--metrics-port` that another program listens on",
    "run --metrics-port",
    "refused",
    2,
    ["cannot serve metrics", "in use", "--metrics-port"],
    untouched="the change journaled since the snapshot is not applied (nothing started)",
)
def _metrics_port_in_use(env: Env) -> Ran:
    path = simple(env)
    installed_and_drained(env, path)
    sqlite_write(path, "INSERT INTO t VALUES (3, 'c')")
    env.then(lambda: _assert_equal([r[0] for r in env.rows("t")], [1, 2], "rows"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        return env.cli("run", "--until-drained", "--metrics-port", port, "--source", str(path), "--target", env.dsn)


def _second_daemon(env: Env, *, copy: bool, options: tuple[str, ...] = ()) -> Ran:
    path = simple(env)
    installed_and_drained(env, path)
    second_path = path
    if copy:
        second_path = env.tmp / "copy" / path.name
        second_path.parent.mkdir()
        shutil.copyfile(path, second_path)
    first = DaemonProcess(path, env.dsn, *options, json_log=False, cwd=env.tmp)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _streaming(env):
            time.sleep(0.1)
        second = env.cli("run", "--until-drained", *options, "--source", str(second_path), "--target", env.dsn)
    finally:
        stopped = first.stop(30)
    env.then(lambda: _assert_equal(stopped.code, 0, f"first daemon: {stopped.log[-2000:]}"))
    return second


def _streaming(env: Env) -> bool:
    try:
        row = env.pg.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'replicator' "
            "AND datname = current_database()"
        ).fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0])


@case(
    "wrong-source",
    "daemon",
    "`run` pointed at another file (same schema, own capture) than the one the target was loaded from",
    "run",
    "refused",
    2,
    ["another source"],
    untouched="no change from the other file applied",
)
def _wrong_source(env: Env) -> Ran:
    path = simple(env)
    installed_and_drained(env, path)
    other = simple(env, "other.db")
    installed = env.cli("capture", "install", "-q", "--source", str(other))
    assert installed.code == 0, installed
    sqlite_write(
        other, "INSERT INTO t VALUES (99, 'other'); INSERT INTO t VALUES (98, 'x'); DELETE FROM t WHERE id = 98"
    )
    env.then(lambda: _assert_equal([r[0] for r in env.rows("t")], [1, 2], "rows"))
    env.then(lambda: _assert_equal(_phase(env), "STREAMING", "phase (a refused run must not mark the target ERRORED)"))
    return env.cli("run", "--until-drained", "--source", str(other), "--target", env.dsn)


def _phase(env: Env) -> str:
    row = env.pg.execute("SELECT phase FROM replicator.apply_state").fetchone()
    return str(row[0]) if row else ""


# configuration and usage ---------------------------------------------------------------------------


@case(
    "config-unknown-key",
    "configuration",
    "`[target] dsnn = ...` (typo)",
    "analyze",
    "refused",
    2,
    ["unknown field", "dsnn"],
)
def _config_typo(env: Env) -> Ran:
    config = env.tmp / "replicator.toml"
    config.write_text('[target]\ndsnn = "x"\n')
    return env.cli("analyze", "--source", str(simple(env)))


@case("config-bad-toml", "configuration", "config file that is not TOML", "analyze", "refused", 2, ["not valid TOML"])
def _config_syntax(env: Env) -> Ran:
    config = env.tmp / "settings.toml"
    config.write_text("[target\n")
    return env.cli("analyze", "--config", str(config), "--source", str(simple(env)))


@case(
    "config-bad-env",
    "configuration",
    "`REPLICATOR_APPLY__BATCH_ROWS=abc`",
    "analyze",
    "refused",
    2,
    ["apply.batch_rows", "expected"],
)
def _config_env(env: Env) -> Ran:
    return env.cli("analyze", "--source", str(simple(env)), extra_env={"REPLICATOR_APPLY__BATCH_ROWS": "abc"})


@case(
    "config-poll-interval-zero",
    "configuration",
    "`REPLICATOR_APPLY__POLL_INTERVAL_S=0` (the daemon would spin)",
    "run --until-drained",
    "refused",
    2,
    ["REPLICATOR_APPLY__POLL_INTERVAL_S", "apply.poll_interval_s", "> 0"],
)
def _config_poll_zero(env: Env) -> Ran:
    path = simple(env)
    return env.cli(
        "run", "--until-drained", "--source", str(path), extra_env={"REPLICATOR_APPLY__POLL_INTERVAL_S": "0"}
    )


@case(
    "config-batch-rows-zero",
    "configuration",
    "`[apply] batch_rows = 0` (would apply nothing and call the journal drained)",
    "run --until-drained",
    "refused",
    2,
    ["apply.batch_rows", ">= 1"],
    untouched="the change journaled since the snapshot is still not applied",
)
def _config_batch_zero(env: Env) -> Ran:
    path = simple(env)
    installed_and_drained(env, path)
    sqlite_write(path, "INSERT INTO t VALUES (3, 'c')")
    (env.tmp / "replicator.toml").write_text("[apply]\nbatch_rows = 0\n")
    env.then(lambda: _assert_equal([r[0] for r in env.rows("t")], [1, 2], "rows"))
    return env.cli("run", "--until-drained", "--source", str(path), "--target", env.dsn)


@case(
    "quarantine-negative-limit",
    "configuration",
    "`quarantine list --limit -1`",
    "quarantine list",
    "refused",
    2,
    ["--limit", "x>=1"],
)
def _quarantine_limit(env: Env) -> Ran:
    return env.cli("quarantine", "list", "--limit", "-1", "--target", env.dsn)


@case(
    "usage-unknown-option",
    "configuration",
    "an option that does not exist",
    "analyze",
    "refused",
    2,
    ["No such option", "--help"],
)
def _unknown_option(env: Env) -> Ran:
    return env.cli("analyze", "--sauce", "x.db")


# --- the tests ------------------------------------------------------------------------------------


def _param(c: Case) -> Any:
    marks = [pytest.mark.slow] if c.slow else []
    return pytest.param(c, id=c.id, marks=marks)


@pytest.mark.e2e
@pytest.mark.parametrize("c", [_param(c) for c in CASES])
def test_bad_input(c: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if "unprivileged" in c.needs and os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    env = Env(tmp_path, request)
    ran = c.act(env)
    assert "Traceback" not in ran.out + ran.err, ran
    assert ran.code == c.code, ran
    if c.code == 0:
        assert not [line for line in ran.lines if line.startswith("error:")], ran
        text = ran.out + ran.err
    else:
        assert len(ran.lines) == 1, ran
        text = ran.lines[0]
        assert text.startswith("error: "), ran
        assert " — " in text, f"no 'what to do' part: {text}"
    for word in c.words:
        assert word.lower() in text.lower(), f"{word!r} not in {text!r}"
    for check in env.checks:
        check()


def test_catalogue_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert {c.expect for c in CASES} == {"works", "refused", "quarantined"}
    for c in CASES:
        assert (c.code == 0) == (c.expect != "refused"), c.id


def render() -> str:
    counts = {e: sum(c.expect == e for c in CASES) for e in ("works", "refused", "quarantined")}
    lines = [
        "# Bad-input catalogue",
        "",
        "Generated from `tests/cli/test_bad_inputs.py` (`python -m tests.cli.test_bad_inputs` rewrites this file;",
        "`test_catalogue_doc_is_current` fails when it is stale). Every row is a test that runs the real",
        "`replicator` console script as a subprocess and asserts the exit code, that stderr holds exactly one",
        "`error: what — what to do` line for a refusal (structured JSON log lines aside), the key words of",
        "that line, that no traceback is printed (tracebacks only with `-v`), and what was *not* half-written",
        "(or, for hard input that must work, what was loaded).",
        "",
        f"{len(CASES)} cases: {counts['works']} work, {counts['refused']} are refused, "
        f"{counts['quarantined']} load with the bad rows quarantined.",
        "",
        "Exit codes: 0 ok, 1 operational failure, 2 usage or bad input, 3 verification mismatch.",
        "",
        "| # | id | group | input | command | expected | exit | message contains | checked afterwards |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, c in enumerate(CASES, 1):
        words = ", ".join(f"`{w}`" for w in c.words) or "-"
        cells = [
            str(n),
            f"`{c.id}`",
            c.group,
            c.given,
            f"`{c.command}`",
            c.expect,
            str(c.code),
            words,
            c.untouched or "-",
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += [
        "",
        "The daemon (`run`) retries an unreachable PostgreSQL with capped backoff instead of exiting: an",
        "outage is not bad input (the outage tests cover it); a wrong password, unknown role or missing",
        "database stop it at once (`pg-wrong-password-daemon`).",
        "",
    ]
    return "\n".join(lines)


def test_catalogue_doc_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/bad-inputs.md is stale: run python -m tests.cli.test_bad_inputs"
    )


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC} ({len(CASES)} cases)")
