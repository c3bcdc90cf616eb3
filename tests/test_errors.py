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
from checkpoints.errors import ChainBroken, CheckpointError, NoChainTable
from checkpoints.model import TableChange, genesis
from errorbase import EXIT_MISMATCH, EXIT_USAGE, OperatorError
from replicator.cli.main import fail
from replicator.config import Config
from replicator.demo.tour import StepFailed
from replicator.errors import ReplicatorError, UsageError
from replicator.inspect import status
from replicator.plan import pgreflect, pgschema
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
    assert status._chain_head(pg, "nothing_here", tampering) is None  # no chain yet: a state, not a failure
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
    assert status._chain_head(pg, "st", tampering) is None
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
    with pytest.raises(pgschema.SchemaMismatch) as refused:
        pgschema.plan_existing(read_schema(sconn), pgreflect.reflect(pg, "public"), {}, Config())
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
    with pytest.raises(pgschema.SchemaMismatch) as refused:
        pgschema.plan_existing(read_schema(sconn), pgreflect.reflect(pg, "public"), {}, Config())
    assert refused.value.missing_tables == ()
    assert "ignoring case (ambiguous)" in refused.value.message
