"""Differential fuzzing (issue 9, item 3): generated schemas and operation sequences; PostgreSQL equals
SQLite after every drain. Default tier: a few examples; soak (``-m soak``): many."""

from __future__ import annotations

import os

import pytest

from tests.reliability import fuzz


def test_generated_schemas_and_operations_converge(pg_dsn: str) -> None:
    fuzz.run(pg_dsn, max_examples=6, steps=12)
    assert fuzz.Differential.checks >= 6


@pytest.mark.soak
def test_soak_generated_schemas_and_operations_converge(pg_dsn: str) -> None:
    fuzz.run(pg_dsn, max_examples=int(os.environ.get("REPLICATOR_SOAK_EXAMPLES", "300")), steps=30)
