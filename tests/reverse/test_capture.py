"""The reverse capture in PostgreSQL: what the cutover installs, what the app's writes journal, and why the
reverse batch reads by transaction-id horizon rather than by the positions it has seen."""

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
    # within a transaction, the order the row triggers wrote (a small table nothing deleted from: ctid order)
    return conn.execute("SELECT tbl, op, key FROM replicator.reverse_journal ORDER BY xid, ctid").fetchall()


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
    """A writes its entry first (the lower xid), B after and commits first: a reader that moved past the
    entries it had seen would move past A's before A commits. By transaction-id horizon, B waits for A (A
    holds the horizon back)."""
    with (
        psycopg.connect(pg_dsn, autocommit=True) as reader,
        psycopg.connect(pg_dsn) as a,
        psycopg.connect(pg_dsn) as b,
    ):
        shapes = _shapes(reader)
        a.execute("INSERT INTO public.parent (id, name) VALUES (20, 'A first')")  # xid x
        b.execute("INSERT INTO public.parent (id, name) VALUES (21, 'B second')")  # xid x+1
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


def test_negative_control_a_reader_by_position_seen_would_lose_the_late_commit(cut: Path, pg_dsn: str) -> None:
    """The control: reading "what is there" at the same moment sees only B's entry, and a reader that kept the
    highest transaction id it had seen as its position would be past A's entry when A commits."""
    with psycopg.connect(pg_dsn, autocommit=True) as reader, psycopg.connect(pg_dsn) as a, psycopg.connect(pg_dsn) as b:
        a.execute("INSERT INTO public.parent (id, name) VALUES (20, 'A first')")
        b.execute("INSERT INTO public.parent (id, name) VALUES (21, 'B second')")
        b.commit()
        query = "SELECT xid FROM replicator.reverse_journal ORDER BY xid"
        seen = [r[0] for r in reader.execute(query)]
        assert len(seen) == 1  # only B's entry is visible, and it has the higher xid
        a.commit()
        later = [r[0] for r in reader.execute(query)]
        assert later[0] < seen[0]  # A's entry appeared *below* the position such a reader had reached


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


def test_a_hostile_search_path_in_the_app_session_changes_nothing(cut: Path, pg_dsn: str) -> None:
    """The capture functions run as their owner (``SECURITY DEFINER``) without a ``SET search_path``: nothing in
    them may resolve through the caller's path. An app session puts its own schema before ``pg_catalog``, with
    an ``=`` on jsonb and on text that raise, a ``jsonb_build_array`` and a ``reverse_journal`` of its own, and a
    temporary ``reverse_journal``: every write is still journaled, in the real journal, and nothing of the
    caller's is called."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA evil")
        conn.execute(
            "CREATE FUNCTION evil.hijack(jsonb, jsonb) RETURNS boolean LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'hijacked'; END$$"
        )
        conn.execute("CREATE OPERATOR evil.= (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = evil.hijack)")
        conn.execute(
            "CREATE FUNCTION evil.hijack_text(text, text) RETURNS boolean LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'hijacked'; END$$"
        )
        conn.execute("CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.hijack_text)")
        conn.execute(
            "CREATE FUNCTION evil.jsonb_build_array(bigint) RETURNS jsonb LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'hijacked'; END$$"
        )
        conn.execute('CREATE TABLE evil.reverse_journal (tbl text, op "char", key jsonb)')
        conn.execute("GRANT USAGE ON SCHEMA evil TO PUBLIC")
    with psycopg.connect(pg_dsn, autocommit=True) as app:
        app.execute('CREATE TEMP TABLE reverse_journal (tbl text, op "char", key jsonb)')
        app.execute("SET search_path = evil, pg_catalog, public")
        app.execute("INSERT INTO public.parent (id, name) VALUES (50, 'n')")
        app.execute("UPDATE public.parent SET name = 'm' WHERE id = 50")
        app.execute("UPDATE public.pair SET b = 7 WHERE a OPERATOR(pg_catalog.=) 'k'")  # the key moves: WHEN runs
        app.execute("DELETE FROM public.parent WHERE id = 50")
        assert app.execute("SELECT count(*) FROM pg_temp.reverse_journal").fetchone() == (0,)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert _journal(conn) == [
            ("parent", "I", [50]),
            ("parent", "U", [50]),
            ("pair", "U", ["k", 7]),
            ("pair", "U", ["k", 1]),
            ("parent", "D", [50]),
        ]
        assert conn.execute("SELECT count(*) FROM evil.reverse_journal").fetchone() == (0,)


def test_the_capture_functions_carry_no_setting_but_a_float_keys(tmp_path: Path, pg_dsn: str) -> None:
    """A ``SET`` clause costs every call a save and restore of the setting; only a table whose key is a float
    needs one (``extra_float_digits``, for the key's exact JSON text: tests/reverse/test_redteam.py shows why)."""
    src = make_source(
        tmp_path / "app.db",
        schema="CREATE TABLE m (x REAL PRIMARY KEY, v TEXT); CREATE TABLE n (id INTEGER PRIMARY KEY, v TEXT);",
        rows="INSERT INTO m VALUES (0.5, 'a'); INSERT INTO n VALUES (1, 'a');",
    )
    drain(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), Options(backup=False, certificate_path=tmp_path / "cert.json"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        shapes = _shapes(conn)
        settings = {}
        for table in ("m", "n"):
            for which in ("NEW", "OLD"):
                row = conn.execute(
                    "SELECT proconfig, prosecdef FROM pg_proc WHERE proname = %s",
                    (reverse.function_name(shapes[table].source, which),),
                ).fetchone()
                assert row is not None, (table, which)
                assert row[1], (table, which)  # SECURITY DEFINER
                settings[table, which] = row[0]
        assert {v for (t, _), v in settings.items() if t == "n"} == {None}
        assert all(v == ["extra_float_digits=3"] for (t, _), v in settings.items() if t == "m")


def test_remove_also_takes_an_earlier_releases_capture(cut: Path, pg_dsn: str) -> None:
    """A window an earlier release opened has one row trigger ``replicator_reverse_capture`` per table calling
    ``reverse_capture_<hash>``: ``finalize`` (``remove``) must take it off too, or the app's writes would go
    on journaling into a window that is closed."""
    with psycopg.connect(pg_dsn) as conn:
        shapes = _shapes(conn)
        legacy = "reverse_capture_" + reverse.function_name("parent", "NEW").removeprefix("reverse_new_")
        conn.execute(
            f"CREATE FUNCTION replicator.{legacy}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN INSERT INTO replicator.reverse_journal (tbl, op, key) VALUES ('parent', 'L', NULL); "
            "RETURN NULL; END$$"
        )
        conn.execute(
            f"CREATE TRIGGER {reverse.LEGACY_CAPTURE_TRIGGER} AFTER INSERT ON public.parent FOR EACH ROW "
            f"EXECUTE FUNCTION replicator.{legacy}()"
        )
        reverse.remove(conn, "replicator", list(shapes.values()))
        conn.commit()
        conn.execute("INSERT INTO public.parent (id, name) VALUES (60, 'after')")
        conn.commit()
        assert _journal(conn) == []
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = %s", (legacy,)).fetchone() == (0,)


def test_an_integer_key_that_moves_journals_both_keys_and_the_install_pins_its_path(cut: Path, pg_dsn: str) -> None:
    """An integer key's move is tested on the columns themselves (the cheap ``WHEN``); its ``=`` is resolved when
    the trigger is created. The cutover's session could carry any ``search_path``: reinstalled from a session
    whose path puts a schema with a raising ``=`` on integers first, the capture still uses pg_catalog's."""
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE SCHEMA evil")
        for ty in ("bigint", "integer"):
            conn.execute(
                f"CREATE FUNCTION evil.hijack({ty}, {ty}) RETURNS boolean LANGUAGE plpgsql AS "
                "$$BEGIN RAISE EXCEPTION 'hijacked'; END$$"
            )
            conn.execute(f"CREATE OPERATOR evil.= (LEFTARG = {ty}, RIGHTARG = {ty}, FUNCTION = evil.hijack)")
        window = reverse.read_window(conn, "replicator")
        assert window is not None
        shapes = list(_shapes(conn).values())
        conn.execute("SET search_path = evil, pg_catalog, public")
        reverse.install(conn, "replicator", shapes, window.cutover)
        assert conn.execute("SHOW search_path").fetchone() == ("evil, pg_catalog, public",)  # restored
        conn.commit()
        triggers = conn.execute(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = %s AND tgrelid = 'public.parent'::regclass",
            ("replicator_reverse_row_moved",),
        ).fetchone()
        assert triggers is not None
        assert "jsonb" not in triggers[0]  # the integer key is compared as itself
    with psycopg.connect(pg_dsn, autocommit=True) as app:
        app.execute("UPDATE public.parent SET id = 70 WHERE id = 2")
        app.execute("UPDATE public.parent SET name = 'same key' WHERE id = 70")
        assert _journal(app) == [("parent", "U", [70]), ("parent", "U", [2]), ("parent", "U", [70])]
