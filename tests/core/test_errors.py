"""Errors are matched by type, and the three packages share one error base.

Why: a message is for the operator and gets reworded; code that decides by reading it breaks silently the day
it does (a "no chain yet" turned into a crash, a locked file taken for the fence). Each case below used to be
a text match; each is now a type, a result code or one predicate, proved on real SQLite files and a real
PostgreSQL, with a negative control that the old text match would have got wrong.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from checkpoints import store
from checkpoints.errors import EXIT_MISMATCH, EXIT_USAGE, ChainBroken, CheckpointError, NoChainTable, OperatorError
from checkpoints.model import TableChange, genesis
from replicator.cli.context import fail
from replicator.config import Config
from replicator.demo.tour import StepFailed
from replicator.errors import ReplicatorError, UsageError
from replicator.inspect import status
from replicator.plan import existingmode, pgreflect
from replicator.state.store import StateStore
from triggers import fence
from triggers import source as sqlite_source
from triggers.errors import CaptureError, JournalTampered
from triggers.schema import read_schema

# --- one base --------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [ReplicatorError, CaptureError, CheckpointError, StepFailed])
def test_every_package_error_derives_from_the_one_base(base: type[Exception]) -> None:
    assert issubclass(base, OperatorError)
    assert "__str__" not in vars(base)  # not a copy of the base: the base's rendering, inherited


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("bad flag", hint="see --help"), EXIT_USAGE),
        (JournalTampered("journal rows are gone", hint="reload the target"), EXIT_MISMATCH),
        (ChainBroken("checkpoint 3 does not match its hash", hint="run checkpoints verify"), EXIT_MISMATCH),
        (StepFailed("fence", "a write succeeded", "check the fence", EXIT_MISMATCH), EXIT_MISMATCH),
    ],
)
def test_the_cli_prints_any_package_error_by_its_base(
    error: OperatorError, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ended:
        fail(error, 0)
    assert ended.value.code == code
    assert capsys.readouterr().err == f"error: {error.message} — {error.hint}\n"


def test_negative_control_an_error_shaped_like_ours_is_not_taken_for_one(capsys: pytest.CaptureFixture[str]) -> None:
    class LooksLikeOurs(Exception):  # message, hint and exit_code, but not an OperatorError
        message, hint, exit_code = "a message", "a hint", EXIT_USAGE

    with pytest.raises(SystemExit) as ended:
        fail(LooksLikeOurs("raw"), 0)
    assert ended.value.code == 1
    assert capsys.readouterr().err == "error: unexpected LooksLikeOurs: raw — rerun with -v and report it\n"


# --- our own errors: by type, not by their text --------------------------------------------------------


def test_no_checkpoint_table_is_its_own_type_with_the_same_words(pg: psycopg.Connection[tuple[object, ...]]) -> None:
    with pytest.raises(NoChainTable) as missing:
        store.latest(pg, schema="nothing_here")
    assert missing.value.message == "there is no checkpoint table nothing_here.checkpoints in this database"
    assert missing.value.exit_code == 1
    tampering: list[str] = []
    assert status._chain_head(StateStore(pg, "nothing_here"), tampering) is None  # no chain yet: a state, not a failure
    assert tampering == []


def test_negative_control_a_broken_chain_is_not_taken_for_no_chain(pg: psycopg.Connection[tuple[object, ...]]) -> None:
    store.ensure_schema(pg, "st")
    with pg.transaction():
        store.append(pg, genesis({"t": TableChange(upserted=1)}, seq_to=0), schema="st")
    pg.execute("UPDATE st.checkpoints SET hash = %s", ("f" * 64,))  # edited by hand
    with pytest.raises(CheckpointError) as broken:
        store.latest(pg, schema="st")
    assert not isinstance(broken.value, NoChainTable)
    tampering: list[str] = []
    assert status._chain_head(StateStore(pg, "st"), tampering) is None
    assert tampering == [broken.value.message]  # reported as tampering, never silently as "no chain yet"


def _sqlite(path: Path, *ddl: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in ddl:
        conn.execute(statement)
    return conn


def test_a_table_missing_in_postgres_is_named_by_type(
    tmp_path: Path, pg: psycopg.Connection[tuple[object, ...]]
) -> None:
    sconn = _sqlite(
        tmp_path / "app.db", "CREATE TABLE a (id INTEGER PRIMARY KEY)", 'CREATE TABLE "B" (id INTEGER PRIMARY KEY)'
    )
    pg.execute("CREATE TABLE a (id integer PRIMARY KEY)")
    with pytest.raises(existingmode.SchemaMismatch) as refused:
        existingmode.plan_existing(read_schema(sconn), pgreflect.reflect(pg, "public"), {}, Config())
    assert refused.value.missing_tables == ("B",)
    assert refused.value.message == (
        "the target schema does not match the SQLite schema (1 problem(s)): "
        "table 'B' has no table in target schema 'public'"
    )
    assert isinstance(refused.value, UsageError)
    assert refused.value.exit_code == EXIT_USAGE


def test_negative_control_an_ambiguous_table_is_not_missing(
    tmp_path: Path, pg: psycopg.Connection[tuple[object, ...]]
) -> None:
    sconn = _sqlite(tmp_path / "app.db", "CREATE TABLE item (id INTEGER PRIMARY KEY)")
    pg.execute('CREATE TABLE "Item" (id integer PRIMARY KEY); CREATE TABLE "ITEM" (id integer PRIMARY KEY)')
    with pytest.raises(existingmode.SchemaMismatch) as refused:
        existingmode.plan_existing(read_schema(sconn), pgreflect.reflect(pg, "public"), {}, Config())
    assert refused.value.missing_tables == ()
    assert "ignoring case (ambiguous)" in refused.value.message


# --- SQLite's errors: by result code, or one predicate --------------------------------------------------


def _undecodable(path: Path) -> sqlite3.OperationalError:
    conn = _sqlite(path, "CREATE TABLE t (x TEXT)", "INSERT INTO t VALUES (CAST(x'ff41' AS TEXT))")
    with pytest.raises(sqlite3.OperationalError) as raised:
        conn.execute("SELECT x FROM t").fetchall()
    return raised.value


def test_text_that_is_not_utf8_is_recognised(tmp_path: Path) -> None:
    exc = _undecodable(tmp_path / "app.db")
    assert sqlite_source.undecodable_text(exc)
    assert getattr(exc, "sqlite_errorcode", None) is None  # raised by Python's sqlite3, not reported by SQLite


def test_negative_control_sqlite_errors_that_merely_say_decode_are_not_undecodable_text(tmp_path: Path) -> None:
    conn = _sqlite(tmp_path / "app.db")
    with pytest.raises(sqlite3.OperationalError) as named:  # SQLite's own error, quoting a name: has a code
        conn.execute('SELECT * FROM "Could not decode to UTF-8"')
    assert "Could not decode to UTF-8" in str(named.value)
    assert not sqlite_source.undecodable_text(named.value)
    assert not sqlite_source.undecodable_text(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))


def _locked(path: Path) -> sqlite3.OperationalError:
    holder = _sqlite(path, "CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as raised:
        other.execute("INSERT INTO t VALUES (1)")
    holder.execute("ROLLBACK")
    return raised.value


def test_busy_is_read_from_the_result_code(tmp_path: Path) -> None:
    exc = _locked(tmp_path / "app.db")
    assert sqlite_source.busy(exc)
    assert not sqlite_source.undecodable_text(exc)
    assert not fence.refused(exc)


def test_negative_control_a_message_saying_locked_is_not_busy(tmp_path: Path) -> None:
    conn = _sqlite(tmp_path / "app.db")
    with pytest.raises(sqlite3.OperationalError) as named:
        conn.execute('SELECT * FROM "locked busy"')
    assert "locked" in str(named.value)  # the demo writer's old text match would have retried this forever
    assert not sqlite_source.busy(named.value)


def test_a_fenced_write_is_recognised(tmp_path: Path) -> None:
    conn = _sqlite(tmp_path / "app.db", "CREATE TABLE t (id INTEGER PRIMARY KEY)")
    fence.fence_on(conn)
    with pytest.raises(sqlite3.OperationalError) as refused:
        conn.execute("INSERT INTO t VALUES (1)")
    assert fence.refused(refused.value)
    assert not sqlite_source.busy(refused.value)


def test_negative_control_an_app_error_that_says_fenced_is_not_the_fence(tmp_path: Path) -> None:
    conn = _sqlite(
        tmp_path / "app.db",
        "CREATE TABLE t (id INTEGER PRIMARY KEY)",
        "CREATE TRIGGER t_guard BEFORE INSERT ON t BEGIN SELECT RAISE(ABORT, "
        "'this database was migrated to PostgreSQL at 2026-01-01T00:00:00Z; writes are fenced'); END",
    )
    with pytest.raises(sqlite3.IntegrityError) as raised:  # the app's own RAISE: SQLITE_CONSTRAINT, same words
        conn.execute("INSERT INTO t VALUES (1)")
    assert "writes are fenced" in str(raised.value)
    assert not fence.refused(raised.value)
    assert not fence.refused(_locked(tmp_path / "other.db"))
