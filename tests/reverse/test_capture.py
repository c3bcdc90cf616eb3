"""The reverse capture in PostgreSQL: what the cutover installs, what the app's writes journal, and why the
reverse batch reads by transaction-id horizon rather than by sequence number."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from replicator.cutover.session import Options
from replicator.cutover.window import cutover
from replicator.plan.shape import TableShape
from replicator.reverse.batch import read_batch
from replicator.state import reverse
from replicator.state.store import StateStore
from tests.support.compare import drain
from tests.support.daemon import cfg
from tests.support.source import make_source

pytestmark = pytest.mark.e2e


@pytest.fixture
def cut(tmp_path: Path, pg_dsn: str) -> Path:
    src = make_source(
        tmp_path / "app.db",
        rows="""
        INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL);
        INSERT INTO child VALUES (10, 1, 'x', 'c10');
        INSERT INTO pair VALUES ('k', 1, 'one');
        """,
    )
    drain(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    return src


def _shapes(conn: psycopg.Connection[Any]) -> dict[str, TableShape]:
    plan = StateStore(conn, "replicator").load_plan()
    assert plan is not None
    return reverse.shapes_of(plan)


def _journal(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT tbl, op, key FROM replicator.reverse_journal ORDER BY seq").fetchall()


def test_cutover_opens_the_window_and_app_writes_are_journaled(cut: Path, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        window = reverse.read_window(conn, "replicator")
        assert window is not None
        assert window.open
        assert sorted(window.tables) == ["child", "pair", "parent"]
        assert _journal(conn) == []  # the cutover's own drain wrote before the capture existed
        conn.execute("INSERT INTO public.parent (id, name) VALUES (7, 'new')")
        conn.execute("UPDATE public.pair SET b = 5 WHERE a = 'k' AND b = 1")  # the key moves: both keys
        conn.execute("DELETE FROM public.child WHERE id = 10")
        with psycopg.connect(pg_dsn) as undone:  # a rolled-back app transaction leaves nothing
            undone.execute("INSERT INTO public.parent (id, name) VALUES (8, 'gone')")
            undone.rollback()
        assert _journal(conn) == [
            ("parent", "I", [7]),
            ("pair", "U", ["k", 5]),
            ("pair", "U", ["k", 1]),
            ("child", "D", [10]),
        ]
        conn.execute("TRUNCATE public.child")
        assert _journal(conn)[-1] == ("child", "T", None)


def test_without_rollback_window_nothing_is_installed(tmp_path: Path, pg_dsn: str) -> None:
    src = make_source(tmp_path / "app.db", rows="INSERT INTO parent VALUES (1, 'a', 1.5);")
    drain(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), Options(backup=False, rollback_window=False, certificate_path=tmp_path / "c.json"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert reverse.read_window(conn, "replicator") is None
        conn.execute("INSERT INTO public.parent (id, name) VALUES (7, 'new')")
        assert _journal(conn) == []


def test_a_transaction_that_commits_late_is_not_skipped(cut: Path, pg_dsn: str) -> None:
    """A takes the lower journal seq, B the higher and commits first: a reader that went by seq would move
    past A's entry before A commits. By transaction-id horizon, B waits for A (A holds the horizon back)."""
    with (
        psycopg.connect(pg_dsn, autocommit=True) as reader,
        psycopg.connect(pg_dsn) as a,
        psycopg.connect(pg_dsn) as b,
    ):
        shapes = _shapes(reader)
        a.execute("INSERT INTO public.parent (id, name) VALUES (20, 'A first')")  # seq n, xid x
        b.execute("INSERT INTO public.parent (id, name) VALUES (21, 'B second')")  # seq n+1, xid x+1
        b.commit()
        seen = read_batch(reader, "replicator", shapes, 1)
        assert seen.entries == 0  # B is above A's xid: not final while A runs
        assert seen.held  # B's entry is committed, above the horizon
        a.commit()
        batch = read_batch(reader, "replicator", shapes, seen.lo)
        for _ in range(200):  # another test's transaction in the cluster may hold the horizon a moment longer
            if batch.entries or not batch.held:
                break
            time.sleep(0.05)
            batch = read_batch(reader, "replicator", shapes, seen.lo)
        assert batch.entries == 2
        (parent,) = batch.tables
        assert sorted(k[0] for k in parent.rows) == [20, 21]
        names = sorted(row[1] for row in parent.rows.values() if row is not None)
        assert names == ["A first", "B second"]


def test_negative_control_a_seq_reader_would_lose_the_late_commit(cut: Path, pg_dsn: str) -> None:
    """The control: reading by seq at the same moment sees only B's entry and would move its position past A."""
    with psycopg.connect(pg_dsn, autocommit=True) as reader, psycopg.connect(pg_dsn) as a, psycopg.connect(pg_dsn) as b:
        a.execute("INSERT INTO public.parent (id, name) VALUES (20, 'A first')")
        b.execute("INSERT INTO public.parent (id, name) VALUES (21, 'B second')")
        b.commit()
        seqs = [r[0] for r in reader.execute("SELECT seq FROM replicator.reverse_journal ORDER BY seq")]
        assert len(seqs) == 1  # only B's row is visible, and it has the higher seq
        a.commit()
        later = [r[0] for r in reader.execute("SELECT seq FROM replicator.reverse_journal ORDER BY seq")]
        assert later[0] < seqs[0]  # A's entry appeared *below* the position a seq reader had reached


def test_the_fence_refuses_app_writes_and_waits_for_writers(cut: Path, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn, psycopg.connect(pg_dsn) as app:
        shapes = list(_shapes(conn).values())
        app.execute("INSERT INTO public.parent (id, name) VALUES (30, 'in flight')")  # holds its lock
        fenced = threading.Event()

        def fence_it() -> None:
            with psycopg.connect(pg_dsn) as f:
                reverse.fence(f, "replicator", shapes, "this database was rolled back to SQLite; writes are fenced")
                f.commit()
            fenced.set()

        worker = threading.Thread(target=fence_it)
        worker.start()
        assert not fenced.wait(0.5)  # waits for the app transaction already writing
        app.commit()
        worker.join(10)
        assert fenced.is_set()
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="rolled back to SQLite"):
            conn.execute("UPDATE public.parent SET name = 'x' WHERE id = 999")  # statement-level: even no rows
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("TRUNCATE public.pair")
        batch = read_batch(conn, "replicator", {s.source: s for s in shapes}, 1, final=True)
        assert batch.entries == 1  # the in-flight write committed before the fence, and is journaled
        reverse.unfence(conn, "replicator", shapes)
        conn.execute("UPDATE public.parent SET name = 'x' WHERE id = 30")


def test_a_transaction_running_in_another_database_does_not_hold_the_reverse_direction(
    cut: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transaction ids are the cluster's: a long transaction in another database (a report, another app) sits
    below every later xid. It can never write this database's journal, so it must not hold the horizon back."""
    from psycopg.conninfo import make_conninfo

    elsewhere = make_conninfo(pg_dsn, dbname="postgres")
    with psycopg.connect(elsewhere) as other, psycopg.connect(pg_dsn, autocommit=True) as conn:
        other.execute("SELECT pg_current_xact_id()")  # takes an xid, and keeps it while the transaction is open
        conn.execute("INSERT INTO public.parent (id, name) VALUES (40, 'behind a long transaction elsewhere')")
        batch = read_batch(conn, "replicator", _shapes(conn), 1)
        assert batch.entries == 1
        from replicator.reverse import batch as batch_mod

        # The control: the plain xmin is held back by the other database's transaction.
        monkeypatch.setattr(batch_mod, "HORIZON", "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        assert read_batch(conn, "replicator", _shapes(conn), 1).entries == 0
        other.rollback()
