"""The rollback window end to end: the app writes on PostgreSQL after the cutover, ``run`` carries it back into
the fenced SQLite file exactly once, ``rollback`` fences PostgreSQL, drains, proves and un-fences SQLite;
``finalize`` ends the window."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import psycopg.conninfo
import pytest

from checkpoints import audit, store
from checkpoints.model import Kind
from replicator.cutover.session import Options
from replicator.cutover.window import cutover
from replicator.load.snapshot import snapshot
from replicator.reverse import finalize, loop
from replicator.reverse import rollback as window_rollback
from replicator.state import quarantine, reverse
from replicator.state.store import StateStore
from tests.support.compare import drain
from tests.support.daemon import cfg
from tests.support.source import make_source, writable

pytestmark = pytest.mark.e2e


@pytest.fixture
def cut(tmp_path: Path, pg_dsn: str) -> Path:
    src = make_source(
        tmp_path / "app.db",
        rows="""
        INSERT INTO parent VALUES (1, 'a', 1.5), (2, 'b', NULL), (3, 'c', 2.25);
        INSERT INTO child VALUES (10, 1, 'x', 'c10'), (11, 1, 'y', 'c11');
        INSERT INTO pair VALUES ('k', 1, 'one'), ('k', 2, 'two');
        """,
    )
    drain(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    assert not writable(src)
    return src


def _app_writes_on_postgres(dsn: str) -> None:
    """What an app does on PostgreSQL in its first hours: creates, updates, deletes, a key change, a swap of
    UNIQUE values between two rows in one transaction, and a transaction it rolls back."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name, score) VALUES (4, 'dé', 0.1), (5, 'e', -3.5)")
        conn.execute("UPDATE public.parent SET score = 9.75 WHERE id = 2")
        conn.execute("DELETE FROM public.child WHERE id = 11")
        conn.execute("UPDATE public.pair SET b = 7 WHERE a = 'k' AND b = 2")  # the key moves
        with conn.transaction():  # the UNIQUE name swaps between two rows
            conn.execute("UPDATE public.parent SET name = 'tmp' WHERE id = 1")
            conn.execute("UPDATE public.parent SET name = 'a' WHERE id = 3")
            conn.execute("UPDATE public.parent SET name = 'c' WHERE id = 1")
        with psycopg.connect(dsn) as undone:  # a transaction the app rolls back leaves nothing
            undone.execute("INSERT INTO public.child (id, parent_id, label, code) VALUES (99, 1, 'never', 'c99')")
            undone.rollback()
        conn.execute("INSERT INTO public.child (id, parent_id, label, code) VALUES (12, 4, 'new', 'c12')")


def _sqlite(src: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(src)
    try:
        return {
            "parent": conn.execute("SELECT id, name, score, typeof(score) FROM parent ORDER BY id").fetchall(),
            "child": conn.execute("SELECT id, parent_id, label, code FROM child ORDER BY id").fetchall(),
            "pair": conn.execute("SELECT a, b, v FROM pair ORDER BY a, b").fetchall(),
        }
    finally:
        conn.close()


EXPECTED = {
    "parent": [
        (1, "c", 1.5, "real"),
        (2, "b", 9.75, "real"),
        (3, "a", 2.25, "real"),
        (4, "dé", 0.1, "real"),
        (5, "e", -3.5, "real"),
    ],
    "child": [(10, 1, "x", "c10"), (12, 4, "new", "c12")],
    "pair": [("k", 1, "one"), ("k", 7, "two")],
}


def _forward_journal(src: Path) -> int:
    conn = sqlite3.connect(src)
    try:
        return int(conn.execute("SELECT count(*) FROM _replicator_journal").fetchone()[0])
    finally:
        conn.close()


def test_run_carries_postgres_writes_back_exactly_once(cut: Path, pg_dsn: str) -> None:
    _app_writes_on_postgres(pg_dsn)
    journaled = _forward_journal(cut)
    result = loop.run(cut, pg_dsn, cfg(), until_drained=True)
    assert result.batches >= 1
    assert _sqlite(cut) == EXPECTED
    assert not writable(cut)  # still fenced for the app
    again = loop.run(cut, pg_dsn, cfg(), until_drained=True)
    assert again.batches == 0  # nothing twice
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        head = store.latest(conn, schema="replicator")
        assert head is not None
        assert head.kind is Kind.REVERSE
        assert audit.verify_db(conn, schema="replicator") == []  # the chain goes on through the window
        assert conn.execute("SELECT count(*) FROM replicator.reverse_journal").fetchone() == (0,)  # pruned
    assert _forward_journal(cut) == journaled  # our writes fired neither the capture nor the app's triggers


@contextlib.contextmanager
def _older_transaction_running(pg_dsn: str, writes: Callable[[str], None] = _app_writes_on_postgres) -> Iterator[None]:
    """The app's ``writes`` come after a transaction that is still running, in another database of the
    cluster (a parallel test's, another app's): it holds the reverse horizon below them until it ends, 0.5 s
    after the block starts waiting."""
    elsewhere = psycopg.conninfo.make_conninfo(pg_dsn, dbname="postgres")
    with psycopg.connect(elsewhere) as held:
        held.execute("SELECT pg_current_xact_id()")  # an xid below the app's, running
        writes(pg_dsn)
        ends = threading.Timer(0.5, held.rollback)
        ends.start()
        try:
            yield
        finally:
            ends.join()


def test_until_drained_waits_for_writes_an_older_transaction_holds_back(cut: Path, pg_dsn: str) -> None:
    """``run --until-drained`` waits for the horizon to pass the committed writes and writes them back, instead
    of stopping at a read that found nothing below it (which made the tests here flaky beside others)."""
    with _older_transaction_running(pg_dsn):
        result = loop.run(cut, pg_dsn, cfg(), until_drained=True)
    assert result.batches >= 1
    assert _sqlite(cut) == EXPECTED


def test_rollback_dry_run_waits_for_writes_an_older_transaction_holds_back(cut: Path, pg_dsn: str) -> None:
    """``rollback --dry-run`` fences nothing, so only waiting brings the held writes back before it proves."""
    with _older_transaction_running(pg_dsn):
        result = window_rollback.rollback(cut, pg_dsn, cfg(), dry_run=True)
    assert {p.status for p in result.tables} == {"match"}
    assert _sqlite(cut) == EXPECTED


def test_a_refused_value_changed_since_is_not_named_while_an_older_transaction_holds_it_back(
    cut: Path, pg_dsn: str
) -> None:
    """The operator changes the refused value in PostgreSQL (the hint's first way) while an older transaction
    runs elsewhere: rollback waits for that change to come back, instead of refusing the value it no longer is."""
    _unholdable_on_postgres(pg_dsn)
    loop.run(cut, pg_dsn, cfg(), until_drained=True)

    def fixed(dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE public.parent SET score = 0.75 WHERE id = 3")

    with _older_transaction_running(pg_dsn, fixed):
        result = window_rollback.rollback(cut, pg_dsn, cfg())
    assert {p.status for p in result.tables} == {"match"}
    assert _sqlite(cut)["parent"][2] == (3, "z", 0.75, "real")


def test_rollback_loses_nothing_and_fences_postgres(cut: Path, pg_dsn: str, tmp_path: Path) -> None:
    _app_writes_on_postgres(pg_dsn)
    result = window_rollback.rollback(cut, pg_dsn, cfg(), certificate_path=tmp_path / "rb.json")
    assert result.certificate is not None
    assert {p.table: p.status for p in result.tables} == {"parent": "match", "child": "match", "pair": "match"}
    assert _sqlite(cut) == EXPECTED
    assert writable(cut)  # (writes a probe row)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="rolled back to SQLite"):
            conn.execute("INSERT INTO public.parent (id, name) VALUES (50, 'late')")
        window = reverse.read_window(conn, "replicator")
        assert window is not None
        assert window.closed_how == "rollback"
        head = store.latest(conn, schema="replicator")
        assert head is not None
        assert head.kind is Kind.ROLLBACK
    assert (tmp_path / "rb.json").exists()


def test_rollback_dry_run_changes_nothing(cut: Path, pg_dsn: str) -> None:
    _app_writes_on_postgres(pg_dsn)
    result = window_rollback.rollback(cut, pg_dsn, cfg(), dry_run=True)
    assert result.dry_run
    assert not writable(cut)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name) VALUES (50, 'still writable')")
        window = reverse.read_window(conn, "replicator")
        assert window is not None
        assert window.open


def test_finalize_ends_the_window(cut: Path, pg_dsn: str) -> None:
    _app_writes_on_postgres(pg_dsn)
    done = finalize.finalize(cut, pg_dsn, cfg())
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name) VALUES (60, 'after finalize')")
        assert conn.execute("SELECT count(*) FROM replicator.reverse_journal").fetchone() == (0,)
        head = store.latest(conn, schema="replicator")
        assert head is not None
        assert head.kind is Kind.FINALIZE
        assert head.number == done.checkpoint
    with pytest.raises(loop.NoWindow):
        loop.run(cut, pg_dsn, cfg(), until_drained=True)
    assert not writable(cut)


def test_negative_control_a_lost_update_is_caught_and_rollback_aborts(
    cut: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plant a writer that drops updates: the independent comparison catches it, rollback aborts, PostgreSQL is
    writable again and SQLite stays fenced (the app keeps running on PostgreSQL, nothing lost)."""
    from replicator.reverse.writer import Writer

    monkeypatch.setattr(Writer, "_update", lambda self, t, row, key: None)
    _app_writes_on_postgres(pg_dsn)
    with pytest.raises(window_rollback.RollbackAborted, match="differ after the drain") as aborted:
        window_rollback.rollback(cut, pg_dsn, cfg())
    assert "parent" in aborted.value.message
    assert not writable(cut)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name) VALUES (70, 'app still writes')")
        window = reverse.read_window(conn, "replicator")
        assert window is not None
        assert window.open
        assert window.fenced_at is None


def test_negative_control_a_value_written_altered_is_caught(
    cut: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plant a write-back that stores text decomposed (NFD: 'dé' as 'de' + U+0301, which looks the same):
    verify reads what SQLite returns and refuses."""
    import unicodedata

    from replicator.reverse import writeback

    real_writer = writeback.row_writer

    def decomposed(table: str, shape, forms):  # type: ignore[no-untyped-def]
        write = real_writer(table, shape, forms)
        return lambda row: tuple(unicodedata.normalize("NFD", v) if isinstance(v, str) else v for v in write(row))

    monkeypatch.setattr(writeback, "row_writer", decomposed)
    _app_writes_on_postgres(pg_dsn)
    with pytest.raises(window_rollback.RollbackAborted, match="parent"):
        window_rollback.rollback(cut, pg_dsn, cfg())
    assert not writable(cut)


def test_negative_control_a_bug_in_the_final_drain_is_caught(
    cut: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app writes on PostgreSQL after rollback's full comparison and before its fence; the final drain
    writes that row wrong (planted). Only the changed-keys proof sees it: rollback aborts, nothing lost."""
    from replicator.reverse import writer as writer_mod

    real_compare = window_rollback._compare_whole
    real_apply = writer_mod.Writer._apply

    def compare_then_write(*args, **kwargs):  # type: ignore[no-untyped-def]
        compared = real_compare(*args, **kwargs)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("UPDATE public.parent SET name = 'changed late' WHERE id = 3")

        def wrong(self, p):  # type: ignore[no-untyped-def]
            p.present = {k: tuple("WRONG" if v == "changed late" else v for v in row) for k, row in p.present.items()}
            return real_apply(self, p)

        monkeypatch.setattr(writer_mod.Writer, "_apply", wrong)
        return compared

    monkeypatch.setattr(window_rollback, "_compare_whole", compare_then_write)
    with pytest.raises(window_rollback.RollbackAborted, match="parent"):
        window_rollback.rollback(cut, pg_dsn, cfg())
    assert not writable(cut)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name) VALUES (71, 'app still writes')")


def test_rollback_with_the_app_writing_during_the_comparison(
    cut: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows the app changes between the full comparison and the fence differ at the comparison, are written
    back by the final drain and proved then: the rollback succeeds with them."""
    real_compare = window_rollback._compare_whole

    def compare_then_write(*args, **kwargs):  # type: ignore[no-untyped-def]
        compared = real_compare(*args, **kwargs)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("UPDATE public.parent SET name = 'changed late' WHERE id = 3")
            conn.execute("INSERT INTO public.parent (id, name, score) VALUES (40, 'late', 1.0)")
        return compared

    monkeypatch.setattr(window_rollback, "_compare_whole", compare_then_write)
    window_rollback.rollback(cut, pg_dsn, cfg())
    rows = _sqlite(cut)["parent"]
    assert (3, "changed late", 2.25, "real") in rows
    assert (40, "late", 1.0, "real") in rows


def test_app_triggers_and_generated_columns_do_not_alter_what_is_written_back(tmp_path: Path, pg_dsn: str) -> None:
    """Sakila-style triggers stamp every row the app writes in SQLite; PostgreSQL's rows already are what the app
    made of them there, so the reverse apply writes them as they are. A STORED generated column is computed by
    SQLite itself (it refuses a value for one)."""
    src = make_source(
        tmp_path / "app.db",
        schema="""
        CREATE TABLE film (
            id INTEGER PRIMARY KEY, title TEXT NOT NULL, last_update TEXT,
            upper_title TEXT GENERATED ALWAYS AS (upper(title)) STORED
        );
        CREATE TRIGGER film_stamp AFTER UPDATE ON film BEGIN
            UPDATE film SET last_update = 'stamped by sqlite' WHERE rowid = new.rowid;
        END;
        """,
        rows="INSERT INTO film (id, title, last_update) VALUES (1, 'alien', '2020-01-01 00:00:00');",
    )
    drain(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        generated = conn.execute(
            "SELECT is_generated FROM information_schema.columns "
            "WHERE table_name = 'film' AND column_name = 'upper_title'"
        ).fetchone()
        conn.execute("UPDATE public.film SET title = 'aliens', last_update = '2021-02-03 04:05:06' WHERE id = 1")
        conn.execute("INSERT INTO public.film (id, title, last_update) VALUES (2, 'heat', '2022-01-01 00:00:00')")
    loop.run(src, pg_dsn, cfg(), until_drained=True)
    db = sqlite3.connect(src)
    try:
        rows = db.execute("SELECT id, title, last_update, upper_title FROM film ORDER BY id").fetchall()
        triggers = db.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name = 'film_stamp'"
        ).fetchall()
    finally:
        db.close()
    assert rows == [(1, "aliens", "2021-02-03 04:05:06", "ALIENS"), (2, "heat", "2022-01-01 00:00:00", "HEAT")]
    assert triggers == [("film_stamp",)]  # put back exactly
    assert generated is not None
    result = window_rollback.rollback(src, pg_dsn, cfg(), certificate_path=tmp_path / "rb.json")
    assert {p.table: p.status for p in result.tables} == {"film": "match"}


def test_a_value_sqlite_cannot_hold_is_refused_and_rollback_waits_for_an_acknowledgement(
    tmp_path: Path, pg_dsn: str
) -> None:
    """The app stores whole-second date-times as text; on PostgreSQL it writes microseconds. That value is not
    written back (never rounded): the quarantine names table, key and column, rollback refuses until it is
    acknowledged, then goes back with the row as SQLite had it, and the certificate lists it."""
    from replicator.state.quarantine import acknowledge, list_values
    from replicator.state.store import StateStore

    src = make_source(
        tmp_path / "app.db",
        schema="CREATE TABLE event (id INTEGER PRIMARY KEY, at DATETIME NOT NULL, note TEXT);",
        rows="""
        INSERT INTO event VALUES (1, '2021-01-01 10:00:00', 'a'), (2, '2021-01-02 11:30:00', 'b');
        """,
    )
    drain(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE public.event SET at = at + interval '0.123456 second', note = 'moved' WHERE id = 2")
        conn.execute("INSERT INTO public.event VALUES (3, '2021-01-03 12:00:00', 'c')")
    result = loop.run(src, pg_dsn, cfg(), until_drained=True)
    assert result.refused == 1
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        (value,) = [v for v in list_values(StateStore(conn, "replicator")) if v.action == "not written back to SQLite"]
        assert (value.table, value.column) == ("event", "at")
        assert value.key == {"id": 2}
    db = sqlite3.connect(src)
    assert db.execute("SELECT id, at, note FROM event ORDER BY id").fetchall() == [
        (1, "2021-01-01 10:00:00", "a"),
        (2, "2021-01-02 11:30:00", "b"),  # untouched: not half-written
        (3, "2021-01-03 12:00:00", "c"),  # the app's spelling
    ]
    db.close()
    with pytest.raises(window_rollback.RollbackRefused, match=r"event .*at"):
        window_rollback.rollback(src, pg_dsn, cfg())
    db = sqlite3.connect(src)
    with pytest.raises(sqlite3.OperationalError, match="writes are fenced"):
        db.execute("DELETE FROM event")
    db.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert acknowledge(StateStore(conn, "replicator"), "event") == 1
    done = window_rollback.rollback(src, pg_dsn, cfg(), certificate_path=tmp_path / "rb.json")
    assert done.certificate is not None
    assert len(done.certificate.acknowledged_refusals) == 1
    assert "event" in done.certificate.acknowledged_refusals[0]


def test_after_rollback_the_migration_starts_again_and_verifies(cut: Path, pg_dsn: str, tmp_path: Path) -> None:
    """Back on SQLite, the app writes there; `snapshot --replace` then starts a new migration on the fenced
    PostgreSQL (its fence and capture leave with the old window), the daemon catches up, verify passes, and a
    second cutover opens a new window."""
    from tests.support.cli import cli

    _app_writes_on_postgres(pg_dsn)
    window_rollback.rollback(cut, pg_dsn, cfg(), certificate_path=tmp_path / "rb.json")
    db = sqlite3.connect(cut, isolation_level=None)
    db.execute("INSERT INTO parent VALUES (6, 'back on sqlite', 6.5)")
    db.close()
    replaced = cli(cut, pg_dsn, "snapshot", "--replace")
    assert replaced.code == 0, replaced.err[-2000:]
    ran = cli(cut, pg_dsn, "run", "--until-drained")
    assert ran.code == 0, ran.err[-2000:]
    verified = cli(cut, pg_dsn, "verify")
    assert verified.code == 0, verified.out + verified.err[-2000:]
    again = cli(cut, pg_dsn, "cutover", "--no-backup")
    assert again.code == 0, again.err[-2000:]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name) VALUES (80, 'second window')")
        window = reverse.read_window(conn, "replicator")
        assert window is not None
        assert window.open


def test_the_fence_gives_way_to_an_app_transaction_that_would_deadlock_with_it(cut: Path, pg_dsn: str) -> None:
    """An app transaction holds one table and then writes another while rollback fences PostgreSQL table by
    table: the fence's short lock attempts give way (no 1-second deadlock abort of either), the app commits,
    the fence commits after it, and the app's writes are carried back."""
    import threading
    import time

    with loop.opened(cut, pg_dsn, cfg()) as session:
        order = list(session.shapes)  # the order the fence takes the tables in (parents first)
    writes = {
        "child": "INSERT INTO public.child (id, parent_id, label, code) VALUES (50, 1, 'held', 'c50')",
        "parent": "UPDATE public.parent SET name = 'written while fencing' WHERE id = 2",
    }
    first, second = sorted(writes, key=order.index, reverse=True)  # hold the table the fence takes last
    outcome: dict[str, object] = {}
    with psycopg.connect(pg_dsn) as app_tx:
        app_tx.execute(writes[first])

        def go_back() -> None:
            try:
                outcome["result"] = window_rollback.rollback(cut, pg_dsn, cfg())
            except BaseException as exc:  # reported below
                outcome["error"] = exc

        worker = threading.Thread(target=go_back)
        worker.start()
        time.sleep(0.5)  # the rollback is fencing now: it holds the other table and waits for the app's
        app_tx.execute(writes[second])
        app_tx.commit()
        worker.join(60)
    assert "error" not in outcome, outcome.get("error")
    rows = _sqlite(cut)
    assert (50, 1, "held", "c50") in rows["child"]
    assert (2, "written while fencing", None, "null") in rows["parent"]


def _unholdable_on_postgres(dsn: str) -> None:
    """Parent 3's score becomes NaN (SQLite stores NULL for it: refused, its row left as SQLite had it), with
    another change to the same row; parent 4 is new and holdable."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE public.parent SET score = 'NaN', name = 'z' WHERE id = 3")
        conn.execute("INSERT INTO public.parent (id, name, score) VALUES (4, 'd', 0.5)")


def test_rollback_goes_back_once_the_refused_value_is_acknowledged(cut: Path, pg_dsn: str) -> None:
    """The runbook's way past a refusal it cannot fix in PostgreSQL: ``quarantine ack`` accepts losing that
    value, and the next rollback goes back with the row as SQLite had it, the rest proved equal."""
    _unholdable_on_postgres(pg_dsn)
    with pytest.raises(window_rollback.RollbackRefused, match=r"parent \{'id': 3\} column score"):
        window_rollback.rollback(cut, pg_dsn, cfg())
    assert not writable(cut)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert quarantine.acknowledge(StateStore(conn, "replicator"), None) == 1
    result = window_rollback.rollback(cut, pg_dsn, cfg())
    assert result.certificate is not None
    (acknowledged,) = result.certificate.acknowledged_refusals
    assert acknowledged.startswith("parent {'id': 3} score:"), acknowledged
    assert {p.table: p.status for p in result.tables} == {"parent": "acknowledged", "child": "match", "pair": "match"}
    assert _sqlite(cut)["parent"] == [
        (1, "a", 1.5, "real"),
        (2, "b", None, "null"),
        (3, "c", 2.25, "real"),  # as SQLite had it: the acknowledged loss
        (4, "d", 0.5, "real"),
    ]
    assert writable(cut)


def test_negative_control_an_acknowledged_refusal_hides_no_other_difference(
    cut: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plant a writer that drops parent 4: with parent 3's refusal acknowledged, the proof still names the
    table and rollback aborts."""
    from replicator.reverse.writer import Writer

    real_insert = Writer._write_keys

    def dropping(self, t, p, existing, width):  # type: ignore[no-untyped-def]
        p.present.pop((4,), None)
        return real_insert(self, t, p, existing, width)

    monkeypatch.setattr(Writer, "_write_keys", dropping)
    _unholdable_on_postgres(pg_dsn)
    with pytest.raises(window_rollback.RollbackRefused):
        window_rollback.rollback(cut, pg_dsn, cfg())
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert quarantine.acknowledge(StateStore(conn, "replicator"), None) == 1
    with pytest.raises(window_rollback.RollbackAborted, match="differ after the drain in 1 table"):
        window_rollback.rollback(cut, pg_dsn, cfg())
    assert not writable(cut)


def test_a_value_only_the_final_drain_meets_refuses_the_rollback(
    cut: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction older than the app's writes (any database of the cluster) holds the horizon back past
    the catch-up's wait, so only the final drain meets the refused value: the rollback refuses as it does
    before the fence (not an abort saying the sides differ), PostgreSQL writable again, SQLite still fenced."""
    monkeypatch.setattr(window_rollback, "HELD_WAIT_S", 0.3)
    with psycopg.connect(pg_dsn) as held:
        held.execute("SELECT pg_current_xact_id()")  # an xid below the app's: still running
        _unholdable_on_postgres(pg_dsn)
        with pytest.raises(window_rollback.RefusedValues, match=r"parent \{'id': 3\} column score"):
            window_rollback.rollback(cut, pg_dsn, cfg())
    assert not writable(cut)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name) VALUES (90, 'still writable')")


def test_snapshot_replace_in_existing_mode_after_a_rollback_migrates_again(
    cut: Path, pg_dsn: str, tmp_path: Path
) -> None:
    """The rollback's own hint: to migrate again, ``snapshot --replace``, ``run``, cutover. In existing mode
    the reload empties the app's tables with TRUNCATE, which PostgreSQL's rollback fence refuses unless the
    reload removes it; after the second cutover the app writes on PostgreSQL."""
    _app_writes_on_postgres(pg_dsn)
    window_rollback.rollback(cut, pg_dsn, cfg())
    snapshot(cut, pg_dsn, cfg(), mode="existing", replace=True)
    drain(cut, pg_dsn)
    cutover(cut, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert2.json"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.parent (id, name) VALUES (80, 'after the second cutover')")
        window = reverse.read_window(conn, "replicator")
        assert window is not None
        assert window.open
