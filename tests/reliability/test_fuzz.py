"""Differential fuzzing (issue 9, item 3): generated schemas and operation sequences; PostgreSQL equals
SQLite after every drain. Default tier: a few examples; soak (``-m soak``): many."""

from __future__ import annotations

import os
import sqlite3

import pytest
from hypothesis.stateful import initialize

from replicator.errors import TargetError, UniqueCollision
from tests.reliability import fuzz
from tests.support.compare import drain
from tests.support.source import make_source

COLLIDING = fuzz.Table(
    "b", key=(fuzz.Column("id", "INTEGER"),), columns=(fuzz.Column("at", "DATETIME", unique=True),), without_rowid=False
)
"""Two spellings of one instant in its UNIQUE column are distinct in SQLite, equal in PostgreSQL."""


def test_generated_schemas_and_operations_converge(pg_dsn: str) -> None:
    fuzz.run(pg_dsn, max_examples=6, steps=12)
    assert fuzz.Differential.checks >= 6


@pytest.mark.soak
def test_soak_generated_schemas_and_operations_converge(pg_dsn: str) -> None:
    fuzz.run(pg_dsn, max_examples=int(os.environ.get("REPLICATOR_SOAK_EXAMPLES", "300")), steps=30)


def test_app_data_collations_unicode_datetimes_converge(pg_dsn: str) -> None:
    """Issue 14: NOCASE/RTRIM keys and UNIQUE columns, lower() UNIQUE indexes, non-ASCII text, date-time text
    variants. A fixed seed (the failure is reproducible), not shrunk (that takes minutes; the shrunk cases are
    in test_regressions.py). The soak runs it unseeded: ``test_soak_app_data_converges``."""
    fuzz.run(pg_dsn, max_examples=8, steps=12, seed=14, rich=True, shrink=False)
    assert fuzz.Differential.checks >= 8


class RefusedAtOnce(fuzz.Differential):
    """Every example starts with a real collision (a UNIQUE DATETIME column written two ways): refused at once."""

    @initialize()
    def create(self) -> None:  # replaces Differential.create (hypothesis collects rules by name)
        fuzz.reset(self.dsn)
        fuzz.Differential.examples += 1
        self.schema = (COLLIDING,)
        make_source(self.path, COLLIDING.ddl(None))
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.drain_and_check(compare=False)
        self.db.execute("INSERT INTO b VALUES (1, '2024-05-01 10:00:00'), (2, '2024-05-01T10:00:00')")
        self.drain_and_check()


def test_an_example_ends_cleanly_after_a_refusal(pg_dsn: str) -> None:
    """Steps left after a refusal: the machine stopped with hypothesis's InvalidDefinition ("no available rule
    had a True precondition"), so any run long enough to meet a real collision, the soak's included, failed
    on the harness, not on the tool."""
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.stateful import run_state_machine_as_test

    fuzz.Differential.dsn, fuzz.Differential.rich = pg_dsn, True
    fuzz.Differential.examples = fuzz.Differential.refusals = 0
    run_state_machine_as_test(
        RefusedAtOnce,
        settings=settings(
            max_examples=2,
            stateful_step_count=3,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],
        ),
    )
    assert fuzz.Differential.refusals == fuzz.Differential.examples >= 1


@pytest.mark.soak
def test_soak_app_data_converges(pg_dsn: str) -> None:
    fuzz.run(pg_dsn, max_examples=int(os.environ.get("REPLICATOR_SOAK_EXAMPLES", "300")), steps=30, rich=True)


def test_the_oracle_accepts_only_a_refusal_naming_both_rows(pg_dsn: str) -> None:
    """Negative control for the oracle: with a real collision in SQLite and the daemon ERRORED, a refusal
    that names neither row (PostgreSQL's bare unique violation, as a TargetError) is a failure; the apply's
    own refusal (both keys and the index in one line) is accepted."""
    table = COLLIDING
    machine = fuzz.Differential()
    try:
        fuzz.reset(pg_dsn)
        machine.dsn, machine.schema = pg_dsn, (table,)
        make_source(machine.path, table.ddl(None))
        drain(machine.path, pg_dsn)
        with sqlite3.connect(machine.path) as db:
            db.execute("INSERT INTO b VALUES (1, '2024-05-01 10:00:00'), (2, '2024-05-01T10:00:00')")
        with pytest.raises(UniqueCollision) as refused:
            drain(machine.path, pg_dsn)
        bare = TargetError(
            'applying to b (from b) failed: duplicate key value violates unique constraint "b_at_key"',
            hint="fix the row in SQLite",
        )
        with pytest.raises(AssertionError, match="naming neither row"):
            machine.accept_refusal(bare)
        machine.accept_refusal(refused.value)
        assert machine.refused
    finally:
        machine.teardown()
