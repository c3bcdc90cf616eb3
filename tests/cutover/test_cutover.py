"""Cutover end to end against a real PostgreSQL: completeness under a concurrent writer, failure at
every step leaves replication running and SQLite unfenced, dry run changes nothing, the certificate."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from checkpoints import audit, store
from checkpoints.model import Kind
from replicator import faults, pg
from replicator.apply.batch import Batch
from replicator.apply.writer import Applied, Writer
from replicator.cutover import certificate
from replicator.cutover.finish import fence_where
from replicator.cutover.session import CutoverAborted, CutoverInterrupted, Options
from replicator.cutover.window import cutover
from replicator.errors import TargetError, VerificationFailed
from replicator.state import phase
from replicator.state.lock import open_lock_file, try_flock
from replicator.state.quarantine import acknowledge
from replicator.state.store import StateStore
from tests.support.cli import replicator
from tests.support.compare import check_same, drain
from tests.support.daemon import DaemonProcess, cfg, wait_for
from tests.support.source import FENCED, ROWS, app, make_source, sqlite_write, writable
from tests.support.state import read_phase

pytestmark = pytest.mark.e2e


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_source(tmp_path / "app.db", rows=ROWS)


def opts(tmp_path: Path, **kw: Any) -> Options:
    return Options(backup_dir=tmp_path / "backups", certificate_path=tmp_path / "cert.json", **kw)


def user_tables(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        return {
            t: conn.execute(f"SELECT * FROM public.{t} ORDER BY 1, 2").fetchall() for t in ("parent", "child", "pair")
        }


def sqlite_tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    db = sqlite3.connect(path)
    try:
        out = {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in ("parent", "child", "pair")}
        out["schema"] = db.execute("SELECT type, name, sql FROM sqlite_schema ORDER BY name").fetchall()
        return out
    finally:
        db.close()


def test_cutover_happy_path_certificate(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    drain(src, pg_dsn)
    db = app(src)
    db.execute("INSERT INTO parent VALUES (4, 'd', 4.0)")
    db.execute("UPDATE parent SET score = 9 WHERE id = 1")
    db.execute("DELETE FROM child WHERE id = 11")
    result = cutover(src, pg_dsn, cfg(), opts(tmp_path))
    assert result.certificate is not None
    cert = result.certificate
    assert certificate.seal_ok(cert)
    assert {t.table for t in cert.tables} == {"parent", "child", "pair"}
    assert all((t.sqlite_rows, t.sqlite_digest) == (t.pg_rows, t.pg_digest) for t in cert.tables)
    assert cert.write_outage_s < 5
    assert cert.backup is not None
    assert Path(cert.backup).exists()
    check_same(src, pg_dsn)
    assert not writable(src)
    with pytest.raises(sqlite3.OperationalError, match=FENCED) as refused:  # never IntegrityError: ORMs retry those
        db.execute("UPDATE parent SET score = 1 WHERE id = 1")
    assert f"its data is now in {pg.describe(pg_dsn)}" in str(refused.value)  # migrated, and where to
    assert cert.target == pg.describe(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        head = store.latest(conn)
        assert head is not None
        assert head.kind is Kind.CUTOVER
        assert head.seq_to == cert.stop_seq
        assert head.hash == cert.chain_head_hash
        assert audit.verify(store.records(conn)) == []
        st = StateStore(conn, "replicator").read_phase()
        assert st is not None
        assert st.phase == phase.Phase.DONE
        stored = certificate.latest(StateStore(conn, "replicator"))
        assert stored == cert
    on_disk = certificate.read_file(tmp_path / "cert.json")
    assert on_disk == cert
    assert certificate.live_check(cert, src, pg_dsn, cfg()) == []
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # sequences past max(id): the app inserts in PostgreSQL
        conn.execute("INSERT INTO parent (name) VALUES ('new')")
    moved = certificate.live_check(cert, src, pg_dsn, cfg())
    assert [(m.table, m.side, m.certified_rows, m.rows) for m in moved] == [("parent", "postgresql", 4, 5)]


def test_certificate_cli_verifies_and_tampered_fails(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    drain(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), opts(tmp_path, accept_quarantine=True))
    path = tmp_path / "cert.json"
    ok = replicator(
        "certificate", "--target", pg_dsn, "--source", str(src), "--verify", str(path), "--live", cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stderr
    assert "SHA-256 verifies" in ok.stdout
    body = json.loads(path.read_text())
    body["stop_seq"] += 1
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(body))
    bad = replicator("certificate", "--verify", str(tampered), cwd=tmp_path)
    assert bad.returncode == 3, bad.stderr
    assert "does not verify" in bad.stderr
    stored = replicator("certificate", "--target", pg_dsn, "--json", cwd=tmp_path)
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout)["sha256"] == json.loads(path.read_text())["sha256"]
    assert certificate.seal_ok(certificate.read_file(path))
    resealed = certificate.seal(msgspec.structs.replace(certificate.read_file(path), operator="someone else"))
    other = tmp_path / "other.json"
    certificate.write_file(other, resealed)
    not_stored = replicator("certificate", "--target", pg_dsn, "--verify", str(other), cwd=tmp_path)
    assert not_stored.returncode == 3, not_stored.stderr
    assert "not the certificate stored in the target" in not_stored.stderr


def test_dry_run_changes_nothing(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    drain(src, pg_dsn)
    before_pg, before_sqlite = user_tables(pg_dsn), sqlite_tables(src)
    with psycopg.connect(pg_dsn) as conn:
        chain_before = [r.hash for r in store.records(conn)]
    result = cutover(src, pg_dsn, cfg(), opts(tmp_path, dry_run=True))
    assert result.dry_run
    assert result.certificate is None
    assert user_tables(pg_dsn) == before_pg
    assert sqlite_tables(src) == before_sqlite
    with psycopg.connect(pg_dsn) as conn:
        assert [r.hash for r in store.records(conn)] == chain_before
        st = StateStore(conn, "replicator").read_phase()
        assert st is not None
        assert st.phase == phase.Phase.STREAMING
    assert writable(src)
    assert not (tmp_path / "cert.json").exists()
    drain(src, pg_dsn)  # replication goes on
    check_same(src, pg_dsn)


STEPS = [
    "cutover.after_preflight",
    "cutover.after_freeze",
    "cutover.after_drain",
    "cutover.after_verify",
    "cutover.after_finish_pg",
    "cutover.before_fence_commit",
]


@pytest.mark.parametrize("name", STEPS)
def test_failure_at_each_step_leaves_replicating_and_unfenced(
    src: Path, pg_dsn: str, tmp_path: Path, name: str
) -> None:
    drain(src, pg_dsn)
    app(src).execute("INSERT INTO parent VALUES (5, 'e', 5.0)")
    faults.arm(name, "raise")
    try:
        with pytest.raises((CutoverAborted, faults.FailpointHit)) as caught:
            cutover(src, pg_dsn, cfg(), opts(tmp_path, backup=False))
    finally:
        faults.disarm_all()
    if name != "cutover.after_preflight":
        assert "NOT fenced" in str(caught.value)
    assert writable(src)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        head = store.latest(conn)
        assert head is not None
        assert head.kind is Kind.BATCH
        assert certificate.latest(StateStore(conn, "replicator")) is None
        st = StateStore(conn, "replicator").read_phase()
        assert st is not None
        assert st.phase != phase.Phase.DONE
        locks = conn.execute(
            "SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = current_database()"
        ).fetchall()
        assert locks == []
    app(src).execute("UPDATE parent SET score = 6 WHERE id = 5")
    drain(src, pg_dsn)  # the daemon takes the locks again and goes on
    check_same(src, pg_dsn)


def test_crash_in_freeze_releases_everything(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    """A real process killed while holding the write lock (os._exit): the OS releases both locks."""
    drain(src, pg_dsn)
    env = {**os.environ, "REPLICATOR_FAILPOINTS": "cutover.after_verify:crash"}
    cmd = [sys.executable, "-m", "replicator", "cutover", "--source", str(src), "--target", pg_dsn, "--no-backup"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == faults.CRASH_EXIT, done.stderr[-2000:]
    assert writable(src)
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_running_daemon_refused(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    drain(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as other:
        from replicator.state.lock import lock_key
        from triggers.meta import read_meta

        meta = read_meta(sqlite3.connect(src))
        assert meta is not None
        other.execute("SELECT pg_advisory_lock(%s)", (lock_key(meta.source_id),))
        with pytest.raises(CutoverAborted, match="another replicator") as caught:
            cutover(src, pg_dsn, cfg(), opts(tmp_path))
    assert writable(src)
    # The refused cutover let go of the lock file it took, not the garbage collector: ``caught`` keeps its frames
    # alive, and a flock on another descriptor of this process is refused while one it holds is open.
    handle = open_lock_file(src)
    try:
        assert try_flock(handle), caught.value
    finally:
        handle.close()


def test_lock_of_a_daemon_that_just_exited_is_waited_for(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    """The daemon's start waits LOCK_GRACE_S for a backend that still holds the lock (87c4b7b); cutover too."""
    from replicator.state.lock import LOCK_GRACE_S, lock_key
    from triggers.meta import read_meta

    drain(src, pg_dsn)
    meta = read_meta(sqlite3.connect(src))
    assert meta is not None
    other = psycopg.connect(pg_dsn, autocommit=True)
    other.execute("SELECT pg_advisory_lock(%s)", (lock_key(meta.source_id),))
    release = threading.Timer(LOCK_GRACE_S / 4, other.close)  # the old backend lets go a moment later
    release.start()
    try:
        result = cutover(src, pg_dsn, cfg(), opts(tmp_path))
    finally:
        release.join()
        other.close()
    assert not result.dry_run
    assert not writable(src)


def test_unacknowledged_quarantine_refused_then_accepted_and_recorded(tmp_path: Path, pg_dsn: str) -> None:
    src = make_source(
        tmp_path / "q.db",
        schema="CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER);",
        rows="INSERT INTO t VALUES (1, 1), (2, 2);",
    )
    conf = cfg()
    drain(src, pg_dsn, conf)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO replicator.quarantine (table_name, key, column_name, storage_class, original_base64, reason) "
            "VALUES ('t', '{\"id\": 99}', 'n', 'text', 'eA==', 'test')"  # writable_t's probe takes id 3
        )
    with pytest.raises(CutoverAborted, match="quarantined") as refused:
        cutover(src, pg_dsn, conf, opts(tmp_path))
    assert "`replicator quarantine list`" in refused.value.hint
    assert "`replicator quarantine ack`" in refused.value.hint
    assert "--accept-quarantine" in refused.value.hint
    assert writable_t(src)
    result = cutover(src, pg_dsn, conf, opts(tmp_path, accept_quarantine=True))
    assert result.certificate is not None
    assert result.certificate.accept_quarantine
    assert result.certificate.quarantined == {"t": 1}
    (entry,) = result.certificate.quarantine  # every value, not only the count
    assert (entry.table, entry.key, entry.column, entry.reason, entry.acknowledged) == (
        "t",
        {"id": 99},
        "n",
        "test",
        False,
    )
    assert "quarantined t.n key {'id': 99}: test" in certificate.render(result.certificate)
    assert certificate.seal_ok(certificate.read_file(tmp_path / "cert.json"))


def test_an_acknowledged_quarantine_needs_no_flag_and_is_in_the_certificate_as_acknowledged(
    tmp_path: Path, pg_dsn: str
) -> None:
    src = make_source(
        tmp_path / "q.db",
        schema="CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER);",
        rows="INSERT INTO t VALUES (1, 1), (2, 2);",
    )
    conf = cfg()
    drain(src, pg_dsn, conf)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO replicator.quarantine (table_name, key, column_name, storage_class, original_base64, reason) "
            "VALUES ('t', '{\"id\": 99}', 'n', 'text', 'eA==', 'test')"
        )
        assert acknowledge(StateStore(conn, "replicator")) == 1
    result = cutover(src, pg_dsn, conf, opts(tmp_path))
    assert result.certificate is not None
    assert not result.certificate.accept_quarantine
    (entry,) = result.certificate.quarantine
    assert (entry.table, entry.key, entry.column, entry.reason, entry.acknowledged) == (
        "t",
        {"id": 99},
        "n",
        "test",
        True,
    )
    assert certificate.seal_ok(certificate.read_file(tmp_path / "cert.json"))


def test_skipped_columns_need_a_flag_and_are_in_the_certificate(tmp_path: Path, pg_dsn: str) -> None:
    from replicator import config

    src = make_source(
        tmp_path / "s.db",
        schema="CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, secret TEXT);",
        rows="INSERT INTO t VALUES (1, 1, 'a'), (2, 2, 'b');",
    )
    conf = config.load(
        overrides={"apply": {"poll_interval_s": 0.05}, "types": {"t": {"secret": {"skip": True}}}}, environ={}
    )
    drain(src, pg_dsn, conf)
    with pytest.raises(CutoverAborted, match=r"t\.secret") as refused:
        cutover(src, pg_dsn, conf, opts(tmp_path))
    assert "--accept-skipped-columns" in refused.value.hint
    assert writable_t(src)
    result = cutover(src, pg_dsn, conf, opts(tmp_path, accept_skipped_columns=True))
    assert result.certificate is not None
    assert result.certificate.accept_skipped_columns
    assert list(result.certificate.skipped_columns) == ["t.secret"]
    assert "skipped column t.secret" in certificate.render(result.certificate)


def test_a_format_1_certificate_still_verifies(tmp_path: Path) -> None:
    """Certificates written before format 2 are sealed without its fields: their seal still checks."""
    import hashlib

    body = {
        "source_path": "/srv/app.db",
        "source_id": "x",
        "source_sha256": "0" * 64,
        "target": "t",
        "stop_seq": 5,
        "chain_head": 3,
        "chain_head_hash": "1" * 64,
        "tables": [],
        "steps": {},
        "frozen_at": "a",
        "fenced_at": "b",
        "write_outage_s": 0.1,
        "tool": "replicator 0.1",
        "operator": "me",
        "accept_quarantine": False,
        "quarantined": {},
        "backup": None,
        "backup_sha256": None,
        "sequences": {},
        "foreign_keys": [],
        "format": 1,
        "sha256": "",
    }
    body["sha256"] = hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()
    path = tmp_path / "old.json"
    path.write_bytes(msgspec.json.encode(body))
    assert certificate.seal_ok(certificate.read_file(path))
    forged = {**body, "stop_seq": 6}
    path.write_bytes(msgspec.json.encode(forged))
    assert not certificate.seal_ok(certificate.read_file(path))


def writable_t(path: Path) -> bool:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("INSERT INTO t (n) VALUES (0)")
        return True
    except sqlite3.DatabaseError:
        return False
    finally:
        db.close()


def test_corrupted_row_in_postgres_found_by_key(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    drain(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE public.parent SET name = 'corrupt' WHERE id = 2")
    with pytest.raises((VerificationFailed, CutoverAborted)) as caught:
        cutover(src, pg_dsn, cfg(), opts(tmp_path, backup=False))
    assert "parent" in str(caught.value)
    assert "(2,)" in str(caught.value)
    assert writable(src)


def test_corruption_found_by_prepass_without_full_verify(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    """PostgreSQL written behind the apply's back: its rows no longer add up to the running digest."""
    drain(src, pg_dsn)
    result = cutover(src, pg_dsn, cfg(), opts(tmp_path, dry_run=True, full_verify=False))
    assert result.dry_run
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM public.pair WHERE a = 'k' AND b = 2")
    with pytest.raises((VerificationFailed, CutoverAborted)) as caught:
        cutover(src, pg_dsn, cfg(), opts(tmp_path, backup=False, full_verify=False))
    assert "pair" in str(caught.value)
    assert "'k', 2" in str(caught.value)
    assert writable(src)


WRITER = """
import sqlite3, sys, time, pathlib
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
stop = pathlib.Path(sys.argv[2])
i = 1000
while not stop.exists():
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO parent VALUES (?, ?, ?)", (i, f"w{i}", float(i)))
        db.execute("UPDATE parent SET score = ? WHERE id = 1", (float(i),))
        db.execute("COMMIT")
        print("ok", i, flush=True)
    except sqlite3.DatabaseError as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        print("fenced" if "writes are fenced" in str(exc) else "other", i, str(exc).replace(chr(10), " "), flush=True)
    i += 1
    time.sleep(0.002)
"""


def test_concurrent_writer_every_write_accounted(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    """An app process writing throughout: writes committed before the freeze are in PostgreSQL, every later
    write fails with the fence message, nothing else happens to it; readers keep reading during the freeze."""
    drain(src, pg_dsn)
    stop_file = tmp_path / "stop"
    app_proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(src), str(stop_file)], stdout=subprocess.PIPE, text=True
    )
    reads: list[float] = []
    read_errors: list[str] = []
    done = threading.Event()

    def reader() -> None:
        db = sqlite3.connect(src, isolation_level=None, timeout=0.05)
        while not done.is_set():
            started = time.monotonic()
            try:
                db.execute("SELECT count(*) FROM parent").fetchone()
            except sqlite3.Error as exc:
                read_errors.append(str(exc))
            reads.append(time.monotonic() - started)
            time.sleep(0.001)
        db.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        time.sleep(0.5)
        result = cutover(src, pg_dsn, cfg(), opts(tmp_path, backup=False))
        time.sleep(0.3)
    finally:
        done.set()
        stop_file.touch()
        out, _ = app_proc.communicate(timeout=60)
        thread.join()
    outcomes = [line.split(" ", 2) for line in out.splitlines()]
    committed = [int(o[1]) for o in outcomes if o[0] == "ok"]
    refused = [int(o[1]) for o in outcomes if o[0] == "fenced"]
    assert [o for o in outcomes if o[0] == "other"] == []
    assert result.certificate is not None
    assert committed
    assert refused
    with psycopg.connect(pg_dsn) as conn:
        ids = {r[0] for r in conn.execute("SELECT id FROM public.parent WHERE id >= 1000")}
    assert ids == set(committed)
    assert min(refused) > max(committed)
    assert read_errors == []
    assert max(reads) < 0.5
    check_same(src, pg_dsn)


def test_ctrl_c_in_the_freeze_says_what_state_things_are_in(
    src: Path, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drain(src, pg_dsn)
    real = faults.point

    def interrupt(name: str) -> None:
        if name == "cutover.after_drain":
            raise KeyboardInterrupt
        real(name)

    monkeypatch.setattr(faults, "point", interrupt)
    with pytest.raises(CutoverInterrupted) as caught:
        cutover(src, pg_dsn, cfg(), opts(tmp_path, backup=False))
    assert caught.value.exit_code == 130
    assert "interrupted" in caught.value.message
    assert "NOT fenced" in caught.value.message
    assert writable(src)
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_max_downtime_exceeded_rolls_back(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    drain(src, pg_dsn)
    with pytest.raises(CutoverAborted, match="max-downtime"):
        cutover(src, pg_dsn, cfg(), opts(tmp_path, backup=False, max_downtime_s=0.000001))
    assert writable(src)
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_orphan_foreign_key_reported_by_key(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    drain(src, pg_dsn)
    sqlite_write(src, "INSERT INTO child VALUES (99, 999, 'orphan', 'c99')")  # SQLite does not enforce FKs by default
    with pytest.raises(CutoverAborted) as caught:
        cutover(src, pg_dsn, cfg(), opts(tmp_path, backup=False))
    assert "child_parent_id_fkey" in caught.value.message
    assert "(parent_id)=(999)" in caught.value.message
    assert "NOT fenced" in caught.value.message
    assert writable(src)
    sqlite_write(src, "DELETE FROM child WHERE id = 99")
    result = cutover(src, pg_dsn, cfg(), opts(tmp_path, backup=False))
    assert result.certificate is not None


def test_parked_foreign_keys_restored_and_validated(src: Path, unprivileged_dsn: str, tmp_path: Path) -> None:
    dsn = unprivileged_dsn
    drain(src, dsn)
    app(src).execute("UPDATE parent SET score = 0 WHERE id = 1")
    result = cutover(src, dsn, cfg(), opts(tmp_path, backup=False))
    assert result.certificate is not None
    assert result.certificate.foreign_keys == ("child.child_parent_id_fkey",)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT convalidated, confdeltype FROM pg_constraint WHERE contype = 'f' AND conrelid = 'child'::regclass"
        ).fetchone()
        assert row == (True, "c")
        assert conn.execute("SELECT count(*) FROM replicator.parked_foreign_keys").fetchone() == (0,)


def test_refusals_before_anything_is_blocked(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    """Daemon lock file held, rollback-journal mode, schema drift: each refused with its hint, nothing changed."""
    import fcntl

    drain(src, pg_dsn)
    with (src.parent / "app.db.replicator.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(CutoverAborted, match="daemon holds") as caught:
            cutover(src, pg_dsn, cfg(), opts(tmp_path))
        assert "stop the daemon" in caught.value.hint
    db = sqlite3.connect(src, isolation_level=None)
    db.execute("PRAGMA journal_mode = delete")
    with pytest.raises(CutoverAborted, match="not WAL") as caught:
        cutover(src, pg_dsn, cfg(), opts(tmp_path))
    assert "journal_mode=WAL" in caught.value.hint
    db.execute("PRAGMA journal_mode = wal")
    db.execute("ALTER TABLE pair ADD COLUMN extra TEXT")
    with pytest.raises(CutoverAborted, match="drifted"):
        cutover(src, pg_dsn, cfg(), opts(tmp_path))
    assert writable(src)
    assert not (tmp_path / "backups").exists()


def test_postgres_connection_lost_before_commit_leaves_unfenced(
    src: Path, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection dies with the finishing transaction open: asked afresh, PostgreSQL did not commit."""
    drain(src, pg_dsn)
    real = faults.point

    def kill(name: str) -> None:
        if name == "cutover.before_fence_commit":
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        real(name)

    monkeypatch.setattr(faults, "point", kill)
    with pytest.raises(CutoverAborted, match="NOT fenced"):
        cutover(src, pg_dsn, cfg(), opts(tmp_path, backup=False))
    assert writable(src)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        head = store.latest(conn)
        assert head is not None
        assert head.kind is not Kind.CUTOVER
    drain(src, pg_dsn)
    check_same(src, pg_dsn)


def test_cutover_after_the_daemon_applied_batches(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    """The preflight's verified head is a batch, not the genesis: the tail proof starts there."""
    drain(src, pg_dsn)
    app(src).execute("INSERT INTO parent VALUES (6, 'f', 6.0)")
    drain(src, pg_dsn, cfg(batch_rows=1))
    app(src).execute("UPDATE parent SET score = 7 WHERE id = 6")
    result = cutover(src, pg_dsn, cfg(batch_rows=1), opts(tmp_path, backup=False))
    assert result.certificate is not None
    assert result.certificate.chain_head > 3
    check_same(src, pg_dsn)


def test_run_after_cutover_refuses_and_keeps_phase_done(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    """A daemon restarted by a service manager after the cutover must not reopen replication, and exits 0
    (finished, not failed) so that ``Restart=on-failure`` leaves it down. (With the rollback window open it
    runs the reverse direction instead: tests/reverse/.)"""
    drain(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), opts(tmp_path, rollback_window=False))
    done = replicator("run", "--source", str(src), "--target", pg_dsn, "--until-drained", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "error:" not in done.stderr
    assert "cut over" in done.stdout
    assert "rollback" in done.stdout
    assert "Traceback" not in done.stderr
    state = read_phase(pg_dsn)
    assert state is not None
    assert state.phase is phase.Phase.DONE


def _replicator(*args: str, failpoints: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REPLICATOR_FAILPOINTS": failpoints}
    cmd = [sys.executable, "-m", "replicator", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_crash_between_the_two_commits_loses_nothing_and_cutover_finishes_it(
    src: Path, pg_dsn: str, tmp_path: Path
) -> None:
    """Killed after SQLite's fence committed and before PostgreSQL's finish: the app's writes are refused
    (nothing silently lost), status and run name the state, and cutover run again completes it."""
    drain(src, pg_dsn)
    app(src).execute("INSERT INTO parent VALUES (8, 'h', 8.0)")  # journaled, drained by the freeze
    where = ["--source", str(src), "--target", pg_dsn]
    cert = tmp_path / "cert.json"
    crashed = _replicator(
        "cutover", *where, "--no-backup", "--certificate", str(cert), failpoints="cutover.between_commits:crash"
    )
    assert crashed.returncode == faults.CRASH_EXIT, crashed.stderr[-2000:]
    assert not writable(src)  # every app write is refused loudly from here on
    assert not cert.exists()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        head = store.latest(conn)
        assert head is not None
        assert head.kind is Kind.BATCH  # the finish rolled back with the dead connection
        assert conn.execute("SELECT name FROM parent WHERE id = 8").fetchone() == ("h",)  # the drain had committed

    status = _replicator("status", *where)
    assert status.returncode == 1, status.stdout + status.stderr
    assert "cutover interrupted between its two commits" in status.stdout
    assert "run `replicator cutover` again" in status.stdout
    run = _replicator("run", *where, "--until-drained")
    assert run.returncode == 2, run.stderr
    assert "cutover interrupted between its two commits" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr

    finished = _replicator("cutover", *where, "--no-backup", "--certificate", str(cert))
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "cutover interrupted between its two commits" in finished.stdout + finished.stderr  # named as it completes
    assert cert.exists()
    assert not writable(src)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        head = store.latest(conn)
        assert head is not None
        assert head.kind is Kind.CUTOVER
        assert audit.verify(store.records(conn)) == []
        st = StateStore(conn, "replicator").read_phase()
        assert st is not None
        assert st.phase == phase.Phase.DONE
    assert user_tables(pg_dsn) == {k: v for k, v in sqlite_tables(src).items() if k != "schema"}
    after = _replicator("status", *where)
    assert after.returncode == 0, after.stdout + after.stderr
    done = _replicator("run", *where, "--until-drained")  # after the window: the reverse direction
    assert done.returncode == 0, done.stderr
    assert "written back to SQLite" in done.stdout


def test_unfenced_after_cutover_is_a_problem_status_and_run_name(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    from triggers import fence

    drain(src, pg_dsn)
    cutover(src, pg_dsn, cfg(), opts(tmp_path, backup=False))
    fence.unfence(src)
    where = ["--source", str(src), "--target", pg_dsn]
    status = _replicator("status", *where)
    assert status.returncode == 1
    assert "the SQLite file is not fenced" in status.stdout
    run = _replicator("run", *where)
    assert run.returncode == 2
    assert "writable again" in run.stderr
    again = _replicator("cutover", *where, "--no-backup")
    assert again.returncode != 0
    assert "not fenced" in again.stderr


def test_a_session_holding_a_target_table_lock_bounds_the_wait_and_is_named(
    src: Path, pg_dsn: str, tmp_path: Path
) -> None:
    """Another session holds a lock on a target table: cutover gives up after --max-downtime, names it."""
    drain(src, pg_dsn)
    app(src).execute("UPDATE parent SET score = 9 WHERE id = 1")  # the catch-up must write to parent
    with psycopg.connect(pg_dsn, application_name="reporting-job") as holder:
        holder.execute("LOCK TABLE public.parent IN ACCESS EXCLUSIVE MODE")  # held: the transaction stays open
        pid = holder.info.backend_pid
        started = time.monotonic()
        done = _replicator("cutover", "--source", str(src), "--target", pg_dsn, "--no-backup", "--max-downtime", "2s")
        waited = time.monotonic() - started
        holder.rollback()
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert "cutover aborted at preflight" in line  # the step
    assert f"pid {pid}" in line
    assert "reporting-job" in line
    assert "--max-downtime 2s" in line
    assert "not fenced" in line
    assert waited < 60
    assert writable(src)
    drain(src, pg_dsn)  # nothing was left half-done: replication goes on
    check_same(src, pg_dsn)


def test_one_command_window_with_the_daemon_running(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    """cutover asks the running daemon for its locks; the daemon finishes its batch, waits, then exits 0."""
    drain(src, pg_dsn)
    service = DaemonProcess(src, pg_dsn, json_log=False, log=tmp_path / "service.log")
    try:
        service.wait_streaming(pg_dsn)
        app(src).execute("INSERT INTO parent VALUES (20, 't', 2.0)")
        where = ["--source", str(src), "--target", pg_dsn]
        done = _replicator("cutover", *where, "--no-backup", "--certificate", str(tmp_path / "cert.json"))
        assert done.returncode == 0, done.stderr[-2000:]
        assert user_tables(pg_dsn) == {k: v for k, v in sqlite_tables(src).items() if k != "schema"}
        # The service goes on as the rollback window's reverse direction: the app's writes on PostgreSQL reach
        # the fenced SQLite file.
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO public.parent (id, name, score) VALUES (21, 'on postgres', 4.0)")
        wait_for(lambda: _sqlite_has(src, 21), timeout=60)
        assert service.alive(), service.output(2000)
        finished = service.stop(60)
    finally:
        service.kill()
    assert finished.code == 0, finished.log[-2000:]
    assert "written back to SQLite" in finished.out
    assert not writable(src)


def test_one_command_window_without_the_rollback_window_the_daemon_exits(
    src: Path, pg_dsn: str, tmp_path: Path
) -> None:
    """cutover --no-rollback-window: the daemon finishes its batch, waits, sees the cutover done and exits 0."""
    drain(src, pg_dsn)
    service = DaemonProcess(src, pg_dsn, json_log=False, log=tmp_path / "service.log")
    try:
        service.wait_streaming(pg_dsn)
        where = ["--source", str(src), "--target", pg_dsn]
        done = _replicator(
            "cutover", *where, "--no-backup", "--no-rollback-window", "--certificate", str(tmp_path / "cert.json")
        )
        assert done.returncode == 0, done.stderr[-2000:]
        finished = service.wait(60)
    finally:
        service.kill()
    assert finished.code == 0, finished.log[-2000:]
    assert "replication is finished" in finished.out
    assert not writable(src)


def _sqlite_has(src: Path, parent_id: int) -> bool:
    conn = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT 1 FROM parent WHERE id = ?", (parent_id,)).fetchone() is not None
    finally:
        conn.close()


def test_daemon_resumes_by_itself_after_an_aborted_cutover(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    drain(src, pg_dsn)
    service = DaemonProcess(src, pg_dsn, json_log=False, log=tmp_path / "service.log")
    try:
        service.wait_streaming(pg_dsn)
        where = ["--source", str(src), "--target", pg_dsn]
        aborted = _replicator("cutover", *where, "--no-backup", failpoints="cutover.after_verify:raise")
        assert aborted.returncode != 0
        assert "NOT fenced" in aborted.stderr
        app(src).execute("INSERT INTO parent VALUES (21, 'u', 3.0)")  # the daemon streams it: nobody restarted it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM parent WHERE id = 21").fetchone():
                    break
            assert service.alive(), service.output(2000)
            time.sleep(0.1)
        else:
            raise AssertionError("the daemon did not resume after the aborted cutover")
    finally:
        stopped = service.stop(60)
    assert stopped.code == 0, stopped.log[-2000:]
    check_same(src, pg_dsn)


def test_a_lock_taken_during_the_freeze_bounds_the_wait_and_is_named(
    src: Path, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another session locks a target table once the freeze has begun: the frozen steps give up within
    --max-downtime, the abort names the frozen step and the blocking session, SQLite stays writable."""
    drain(src, pg_dsn)
    holder = psycopg.connect(pg_dsn, application_name="reporting-job")
    holder.execute("SET lock_timeout = '5s'")  # never wait on the cutover's own locks forever
    hook = faults.point

    def lock_at_freeze(name: str) -> None:
        if name == "cutover.after_freeze":
            holder.execute("LOCK TABLE public.parent IN ACCESS EXCLUSIVE MODE")  # held until rolled back
        hook(name)

    monkeypatch.setattr(faults, "point", lock_at_freeze)
    started = time.monotonic()
    try:
        with pytest.raises(CutoverAborted) as aborted:
            cutover(src, pg_dsn, cfg(), opts(tmp_path, backup=False, max_downtime_s=2.0))
        waited = time.monotonic() - started
        pid = holder.info.backend_pid
    finally:
        holder.rollback()
        holder.close()
    message = aborted.value.message
    frozen = re.search(r"after ([0-9.]+)s frozen", message)
    assert frozen is not None, message
    assert float(frozen.group(1)) < 2.0 + 0.5, message  # the app's writers waited no longer than the budget
    assert "foreign key" not in message, message  # a lock wait is not a verdict on the data
    assert "cutover aborted at finish_pg" in message, message  # a frozen step: the FK validation waited
    assert f"pid {pid}" in message, message
    assert "reporting-job" in message, message
    assert "--max-downtime 2s" in message, message
    assert waited < 30
    assert writable(src)
    drain(src, pg_dsn)  # nothing was left half-done: replication goes on
    check_same(src, pg_dsn)


def test_the_fence_message_names_the_target_never_its_password() -> None:
    where = fence_where("postgresql://app:S3cr%40t-pw@db.internal:6432/shop?sslmode=require")
    assert where == "its data is now in app@db.internal:6432/shop"
    assert "S3cr" not in fence_where("host=db.internal dbname=shop user=app password=S3cr-pw")


def test_a_lock_on_a_post_load_index_table_during_the_freeze_is_named_not_warned_about(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index the snapshot could not build is built again in the freeze; a session holding its table makes
    that a lock wait, which must abort within --max-downtime naming the session, not end as a 'not created'
    warning in the certificate (or a bare 'the freeze would exceed --max-downtime' after waiting)."""
    src = make_source(
        tmp_path / "app.db",
        "CREATE TABLE tag (name TEXT PRIMARY KEY, code TEXT UNIQUE);",
        "INSERT INTO tag VALUES ('a', 'x'), ('b', 'y');",
    )
    drain(src, pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        plan = StateStore(conn, "replicator").load_plan()
        assert plan is not None
        [unique] = [s for s in plan.table("tag").post_load if s.kind == "unique"]
        conn.execute(f'DROP INDEX IF EXISTS public."{unique.name}"')  # as if the snapshot had been refused it
        conn.execute(f'ALTER TABLE public.tag DROP CONSTRAINT IF EXISTS "{unique.name}"')
    holder = psycopg.connect(pg_dsn, application_name="reporting-job")
    holder.execute("SET lock_timeout = '5s'")
    hook = faults.point

    def lock_at_freeze(name: str) -> None:
        if name == "cutover.after_freeze":
            holder.execute("LOCK TABLE public.tag IN ACCESS EXCLUSIVE MODE")
        hook(name)

    monkeypatch.setattr(faults, "point", lock_at_freeze)
    try:
        with pytest.raises(CutoverAborted) as aborted:
            cutover(src, pg_dsn, cfg(), opts(tmp_path, backup=False, max_downtime_s=2.0))
        pid = holder.info.backend_pid
    finally:
        holder.rollback()
        holder.close()
    message = aborted.value.message
    frozen = re.search(r"after ([0-9.]+)s frozen", message)
    assert frozen is not None, message
    assert float(frozen.group(1)) < 2.0 + 0.5, message
    assert "cutover aborted at finish_pg" in message, message
    assert f"pid {pid}" in message, message
    assert "reporting-job" in message, message
    app(src).execute("INSERT INTO tag VALUES ('c', 'z')")  # SQLite is writable again


@pytest.mark.parametrize("transient", [True, False])
def test_a_transient_error_in_the_catch_up_reads_the_batch_again(
    src: Path, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transient: bool
) -> None:
    """The crash matrix saw a cutover abort before the freeze on the apply's transient refusal (the app swapped
    two rows' unique values between the batch's read and its collision check). Before the freeze the app still
    writes, so the catch-up reads the batch again, as the daemon does; a non-transient error still aborts
    (the negative control), with nothing fenced."""
    drain(src, pg_dsn)
    db = app(src)
    db.execute("INSERT INTO parent VALUES (4, 'd', 4.0)")
    real = Writer.write_batch
    calls: list[int] = []

    def swapped_once(self: Writer, batch: Batch, prev: Any, extra: Any = None) -> Applied:
        calls.append(batch.seq_to)
        if len(calls) == 1:
            raise TargetError(
                "rows of parent changed in SQLite while a batch was applied (two rows swapping a value of unique "
                "index parent_name_key); the batch is read again",
                hint="nothing to do: the daemon retries",
                transient=transient,
            )
        return real(self, batch, prev, extra)

    monkeypatch.setattr(Writer, "write_batch", swapped_once)
    if not transient:
        with pytest.raises(TargetError, match="swapping a value"):
            cutover(src, pg_dsn, cfg(), opts(tmp_path))
        assert writable(src)
        return
    result = cutover(src, pg_dsn, cfg(), opts(tmp_path))
    assert result.certificate is not None
    assert certificate.seal_ok(result.certificate)
    assert len(calls) >= 2
    assert calls[0] == calls[1]
    check_same(src, pg_dsn)
    assert not writable(src)


def test_a_failpoint_raised_in_the_catch_up_ends_the_cutover(src: Path, pg_dsn: str, tmp_path: Path) -> None:
    """A failpoint's raise stands in for a crash in tests: the catch-up's re-read of a transient batch error
    must not swallow it (FailpointHit is transient for the daemon's retry path, not a race with the app)."""
    drain(src, pg_dsn)
    app(src).execute("INSERT INTO parent VALUES (4, 'd', 4.0)")
    faults.arm("apply.before_commit", "raise", times=1)
    try:
        with pytest.raises(faults.FailpointHit):
            cutover(src, pg_dsn, cfg(), opts(tmp_path))
    finally:
        faults.disarm_all()
    assert writable(src)
