"""Crash matrix (issue 9, item 1): the real daemon SIGKILLed at every commit boundary and at random times
under a load generator in its own process; after each round PostgreSQL equals SQLite row for row.

Default tier: every window once, small data. Soak tier (``-m soak``): 200 kills; the load generator's mode
from ``REPLICATOR_SOAK_WRITER`` (``conn-per-txn``: the churn writer of issue 14).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability import crash

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _check(result: crash.Round) -> None:
    report = "\n".join(f"{k.kind}: hit={k.hit} ok={k.ok} {k.note[:300]}" for k in result.kills)
    assert result.passed, f"{result.error}\nchain: {result.chain}\n{report}"
    assert result.lost == 0
    assert result.doubled == 0
    missed = [k for k in result.kills if not k.ok]
    assert not missed, report
    assert result.compared > 0


SNAPSHOT_AND_STREAM = [*crash.SNAPSHOT_KINDS, *crash.STREAM_POINTS, "random", "random"]


def test_kills_in_snapshot_and_streaming_windows(tmp_path: Path, pg_server: str) -> None:
    result = crash.run_round(tmp_path, pg_server, SNAPSHOT_AND_STREAM, seed=11, rows=2000)
    _check(result)
    hit = {k.kind for k in result.kills if k.hit}
    assert set(crash.STREAM_POINTS) <= hit, [f"{k.kind}: {k.note[-300:]}" for k in result.kills if not k.hit]
    assert set(crash.SNAPSHOT_KINDS) <= hit, [f"{k.kind}: {k.note[-300:]}" for k in result.kills if not k.hit]


def test_kills_in_cutover_steps(tmp_path: Path, pg_server: str) -> None:
    """Cutover crashes in each step: SQLite unfenced, the daemon resumes, nothing lost."""
    result = crash.run_round(tmp_path, pg_server, [*crash.CUTOVER_POINTS, "random"], seed=12, rows=500)
    _check(result)
    missed = [f"{k.kind}: {k.note[-300:]}" for k in result.kills if not k.hit]
    assert {k.kind for k in result.kills if k.hit} >= set(crash.CUTOVER_POINTS), missed


def test_kill_in_online_resnapshot(tmp_path: Path, pg_server: str) -> None:
    """Finding 1 (fixed): a re-snapshot killed between any two of its commits is redone by the next start."""
    result = crash.run_round(tmp_path, pg_server, list(crash.RESNAPSHOT_POINTS), seed=13, rows=500)
    _check(result)
    assert all(k.hit for k in result.kills), [f"{k.kind}: {k.note[-300:]}" for k in result.kills]


def test_kills_under_a_connection_per_transaction_writer(tmp_path: Path, pg_server: str) -> None:
    """Issue 14: the churn writer (a new connection per transaction, so every commit ends with the app's last
    close) under a few kills; the soak runs 200 of them with ``REPLICATOR_SOAK_WRITER=conn-per-txn``. Seed 26
    lets both random kills come after 2.3 s, long after the daemon's first connect."""
    kinds = ["apply.after_commit", "prune.after", "random", "random"]
    result = crash.run_round(tmp_path, pg_server, kinds, seed=26, rows=500, writer="conn-per-txn")
    _check(result)
    assert all(k.hit for k in result.kills), [f"{k.kind}: {k.note[-300:]}" for k in result.kills]


def test_kills_in_the_rollback_window(tmp_path: Path, pg_server: str) -> None:
    """Issue 20: after the round's cutover the app writes on PostgreSQL (its own process, a connection per
    transaction) while the reverse direction is killed at each commit boundary of its batches and at a random
    time, then rollback at each of its steps, each run the rerun of the one before; the last run completes:
    nothing lost or doubled, the chain verifies through its reverse and rollback checkpoints, the app writes
    to SQLite again."""
    result = crash.run_round(tmp_path, pg_server, list(crash.WINDOW_KINDS), seed=27, rows=300)
    _check(result)
    assert [k.kind for k in result.kills] == list(crash.WINDOW_KINDS)
    assert all(k.hit for k in result.kills), [f"{k.kind}: {k.note[-300:]}" for k in result.kills]
    assert result.window_transactions > 0


@pytest.mark.soak
def test_soak_crash_matrix(tmp_path: Path, pg_server: str) -> None:
    kills = int(os.environ.get("REPLICATOR_SOAK_KILLS", "200"))
    rounds = [
        crash.run_round(tmp_path / f"r{i}", pg_server, kinds, seed=100 + i)
        for i, kinds in enumerate(crash.plan(kills, 7))
    ]
    survived = sum(k.ok for r in rounds for k in r.kills)
    tried = sum(len(r.kills) for r in rounds)
    assert sum(r.lost for r in rounds) == 0
    assert sum(r.doubled for r in rounds) == 0
    assert survived == tried, [r.error for r in rounds if not r.passed]
