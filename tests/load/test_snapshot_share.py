"""A dominant table converted by both processes (replicator/load/share.py): its rowid ranges read by either
(with a twin read transaction) or read here and dealt in batches; the same rows, checksums, refusals and
resume as when one process loads it."""

from __future__ import annotations

import base64
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from checkpoints import audit, store
from replicator import config
from replicator.errors import BadValue, ConfigError
from replicator.load import costs, snapshot, twin
from replicator.state.identity import source_identity
from replicator.stream.worker import Worker
from tests.support.compare import assert_same, compare_table
from tests.support.paths import ROOT
from tests.support.pgserver import fresh_database
from tests.support.source import AppThread, make_source
from triggers import install

SIZES = {"event": 3000, "tag": 1500, "kv": 1200, "small": 10}
#: The tables both processes convert: in create mode the one no split of whole tables balances
#: (the helper loads the others whole), in existing mode every one over the threshold.
SHARED = {"create": {"event"}, "existing": {"event", "tag", "kv"}}
FETCH = 100
#: SQLite text that is not UTF-8: b"file\\x96name" (cp1252's en dash).
CAST_BAD_UTF8 = "CAST(x'66696c65966e616d65' AS TEXT)"


def cfg(workers: int = 2, **snapshot_options: Any) -> config.Config:
    return config.load(
        overrides={
            "snapshot": {"workers": workers, "split_rows": 1000, "helper_min_bytes": 0, **snapshot_options},
            "apply": {"poll_interval_s": 0.05},
        },
        environ={},
    )


SHARED_SCHEMA = """
        CREATE TABLE event (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, payload JSON, at DATETIME, score REAL,
                            token BLOB);
        CREATE INDEX event_kind ON event (kind);
        CREATE TABLE tag (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
        CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
        CREATE TABLE small (id INTEGER PRIMARY KEY, label TEXT);
        """


def over_threshold(path: Path, *, nul_every: int = 0, bad_utf8_at: int = 0, bad_utf8_every: int = 0) -> Path:
    """Three tables over the threshold -- an INTEGER PRIMARY KEY one, a rowid one keyed by text (a
    REPLACE moves a row to a new rowid) and a WITHOUT ROWID one -- and one under it; no capture.
    ``bad_utf8_at`` / ``bad_utf8_every``: event.kind holds b"file\\x96name" (not UTF-8) at that id / those ids."""
    make_source(path, SHARED_SCHEMA, capture=False)
    conn = sqlite3.connect(path, isolation_level=None)
    rnd = random.Random(9)
    conn.execute("BEGIN")
    for i in range(1, SIZES["event"] + 1):
        kind = "a\x00b" if nul_every and i % nul_every == 0 else f"kind {i % 7}"
        conn.execute(
            "INSERT INTO event VALUES (?, ?, ?, ?, ?, ?)",
            (
                i,
                kind,
                f'{{"n": {i}, "tags": ["x", "y"]}}',
                f"2024-01-{1 + i % 28:02d} 10:00:00.{i:06d}",
                rnd.random(),
                rnd.randbytes(8),
            ),
        )
    if bad_utf8_at:
        conn.execute(f"UPDATE event SET kind = {CAST_BAD_UTF8} WHERE id = ?", (bad_utf8_at,))
    if bad_utf8_every:
        conn.execute(f"UPDATE event SET kind = {CAST_BAD_UTF8} WHERE id % ? = 0", (bad_utf8_every,))
    conn.executemany("INSERT INTO tag VALUES (?, ?)", [(f"tag-{i:05d}", i) for i in range(SIZES["tag"])])
    conn.executemany("INSERT INTO kv VALUES (?, ?)", [(f"k{i:05d}", "v" * (i % 50)) for i in range(SIZES["kv"])])
    conn.executemany("INSERT INTO small VALUES (?, ?)", [(i, f"s{i}") for i in range(SIZES["small"])])
    conn.execute("COMMIT")
    conn.close()
    return path


class Hook:
    """Progress: at the start of each shared table, wait until the helper's loop runs, so that its
    part is certain rather than likely on a busy machine; optionally let the app commit, or stop."""

    def __init__(self, helper: snapshot.Helper, *, on_batch: Any = None, wait_for: set[str]) -> None:
        self.helper = helper
        self.on_batch = on_batch
        self.wait_for = wait_for
        self.batches = 0

    def start(self, table: str, total: int) -> None:
        if table in self.wait_for:
            assert self.helper.coprocessor().wait_ready(60)

    def advance(self, table: str, rows: int) -> None:
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(table, rows)

    def finish(self, table: str, rows: int, seconds: float) -> None:
        pass


@contextmanager
def sharing(path: Path, conf: config.Config, on_batch: Any = None, mode: str = "create") -> Iterator[tuple[Any, Hook]]:
    """An open source (the read transaction the snapshot uses) and a helper with a Hook."""
    reader = snapshot.open_source(path, conf)
    helper = snapshot.Helper(conf, None)
    try:
        yield reader, Hook(helper, on_batch=on_batch, wait_for=SHARED[mode])
    finally:
        helper.close()
        reader.close()


def load(path: Path, dsn: str, conf: config.Config, mode: str = "create", **options: Any) -> snapshot.SnapshotResult:
    with sharing(path, conf, mode=mode) as (reader, hook):
        return snapshot.snapshot_from(
            reader,
            source_identity(path),
            dsn,
            conf,
            mode=mode,
            fetch_rows=FETCH,
            progress=hook,
            helper=hook.helper,
            source_path=path,
            **options,
        )


def by_table(result: snapshot.SnapshotResult) -> dict[str, snapshot.TableResult]:
    return {t.table: t for t in result.tables}


@pytest.mark.parametrize("mode", ["create", "existing"])
def test_both_processes_convert_a_dominant_table_with_the_checksums_of_one(
    tmp_path: Path, pg_dsn: str, pg: Any, pg_server: str, mode: str
) -> None:
    path = over_threshold(tmp_path / "app.db")
    if mode == "existing":
        app_schema(pg)
    result = load(path, pg_dsn, cfg(), mode=mode)
    tables = by_table(result)
    for name in SIZES:  # the helper converted batches of each shared table, and only of those
        if name in SHARED[mode]:
            assert 0 < tables[name].helper_rows <= tables[name].rows == SIZES[name], tables[name]
        else:
            assert tables[name].helper_rows == 0
    # The main process too, of a table whose rows take longer to convert than to read and send
    # (a tiny row's helper may keep up with every batch).
    assert tables["event"].helper_rows < SIZES["event"]
    assert result.plan is not None
    assert assert_same(path, pg, result.plan) == SIZES
    assert dict(pg.execute("SELECT table_name, rows FROM replicator.snapshot_tables").fetchall()) == SIZES
    with fresh_database(pg_server) as other, psycopg.connect(other, autocommit=True) as conn:
        if mode == "existing":
            app_schema(conn)
        alone = snapshot.snapshot(path, other, cfg(workers=1), mode=mode)  # one process, one reader
    assert {t.table: t.checksum for t in alone.tables} == {t.table: t.checksum for t in result.tables}
    assert all(t.helper_rows == 0 for t in alone.tables)
    if mode == "create":  # indexes after the last row, in the table's one transaction
        indexes = {r[0] for r in pg.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
        assert "event_kind" in indexes


def app_schema(conn: psycopg.Connection[Any]) -> None:
    """The tables as the app's own migrations would create them (existing mode)."""
    conn.execute(
        "CREATE TABLE event (id bigint PRIMARY KEY, kind text NOT NULL, payload jsonb, at timestamptz, "
        "score double precision, token bytea)"
    )
    conn.execute("CREATE TABLE tag (name text PRIMARY KEY, n bigint NOT NULL)")
    conn.execute("CREATE TABLE kv (k text PRIMARY KEY, v text)")
    conn.execute("CREATE TABLE small (id bigint PRIMARY KEY, label text)")


def test_without_a_threshold_no_table_is_shared(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = over_threshold(tmp_path / "app.db")
    result = snapshot.snapshot(path, pg_dsn, cfg(split_rows=0), fetch_rows=FETCH)
    assert all(t.helper_rows == 0 for t in result.tables)
    assert result.plan is not None
    assert assert_same(path, pg, result.plan) == SIZES


class App(AppThread):
    """The live app: inserts, updates, deletes, REPLACEs (a new rowid for an old key) in every table."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.rnd = random.Random(4)
        self.next_id = SIZES["event"] + 1

    def transaction(self, conn: sqlite3.Connection) -> None:
        op = self.rnd.randrange(6)
        if op == 0:
            conn.execute(
                "INSERT INTO event VALUES (?, 'new', '{}', '2025-01-01 00:00:00', 1.0, X'00')", (self.next_id,)
            )
            self.next_id += 1
        elif op == 1:
            conn.execute(
                "UPDATE event SET score = -1, kind = 'upd' WHERE id = ?", (self.rnd.randrange(1, self.next_id),)
            )
        elif op == 2:
            conn.execute("DELETE FROM event WHERE id = ?", (self.rnd.randrange(1, self.next_id),))
        elif op == 3:  # the row leaves its place among the rowids for the end of the table
            conn.execute(
                "INSERT OR REPLACE INTO tag VALUES (?, ?)", (f"tag-{self.rnd.randrange(SIZES['tag']):05d}", -1)
            )
        elif op == 4:
            conn.execute("UPDATE kv SET v = 'changed' WHERE k = ?", (f"k{self.rnd.randrange(SIZES['kv']):05d}",))
        else:
            conn.execute("DELETE FROM kv WHERE k = ?", (f"k{self.rnd.randrange(SIZES['kv']):05d}",))
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, 'new')", (f"z{self.next_id}",))
            self.next_id += 1


@pytest.mark.parametrize("mode", ["create", "existing"])
def test_a_shared_table_is_the_state_at_the_journal_mark_and_the_journal_applies_the_rest(
    tmp_path: Path, pg_dsn: str, pg: Any, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a twin (no pair made: an app that never pauses), the main process reads every row of a
    shared table in the planning transaction and deals batches; tests/load/test_snapshot_twin.py: with one."""
    monkeypatch.setattr(twin, "ATTEMPTS", 0)
    path = over_threshold(tmp_path / "app.db")
    install.install(path)
    if mode == "existing":
        app_schema(pg)
    shared = SHARED[mode]
    app = App(path)
    app.start()

    def let_the_app_commit(table: str, rows: int) -> None:  # between every two batches read
        app.wait_for_commits(app.commits + 2)

    conf = cfg()
    try:
        with sharing(path, conf, on_batch=let_the_app_commit, mode=mode) as (reader, hook):
            result = snapshot.snapshot_from(
                reader,
                source_identity(path),
                pg_dsn,
                conf,
                mode=mode,
                fetch_rows=FETCH,
                progress=hook,
                helper=hook.helper,
                source_path=path,
            )
            assert result.plan is not None
            # PostgreSQL holds exactly what the mark's read transaction sees, every part of a shared table.
            for name in shared:
                diff = compare_table(reader, pg, result.plan, result.plan.table(name))
                assert (diff.missing, diff.extra) == ([], []), name
    finally:
        app.stop.set()
        app.join()
    assert app.error is None
    tables = by_table(result)
    assert all(0 < tables[name].helper_rows <= tables[name].rows for name in shared)
    assert app.commits >= 100
    # The control: the app did change the tables while they loaded, so the equality above is the mark's.
    now = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        changed = {n for n in shared if compare_table(now, pg, result.plan, result.plan.table(n)).missing}
    finally:
        now.close()
    assert changed == shared
    # The journal then brings each row to SQLite's state exactly once.
    run = Worker(path, pg_dsn, cfg()).run(until_drained=True)
    assert run.applied_seq is not None
    assert run.applied_seq > (result.snapshot_seq or 0)
    assert_same(path, pg, result.plan)
    assert audit.verify(store.records(pg)) == []


def test_refused_values_are_quarantined_from_every_part(tmp_path: Path, pg_dsn: str, pg: Any, pg_server: str) -> None:
    path = over_threshold(tmp_path / "app.db", nul_every=170)
    result = load(path, pg_dsn, cfg(on_bad_value="quarantine"))
    event = by_table(result)["event"]
    bad = SIZES["event"] // 170
    assert (event.quarantined, event.rows) == (bad, SIZES["event"] - bad)
    assert event.helper_rows > 0
    keys = sorted(r[0]["id"] for r in pg.execute("SELECT key FROM replicator.quarantine WHERE table_name = 'event'"))
    assert keys == [i for i in range(1, SIZES["event"] + 1) if i % 170 == 0]
    with fresh_database(pg_server) as other:
        alone = snapshot.snapshot(path, other, cfg(workers=1, on_bad_value="quarantine"))
    assert by_table(alone)["event"].checksum == event.checksum


def test_stop_names_the_first_refused_value_in_read_order(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = over_threshold(tmp_path / "app.db", nul_every=170)
    with pytest.raises(BadValue, match=r"refused value in event \(id=170\) column kind"):
        load(path, pg_dsn, cfg())
    assert pg.execute("SELECT count(*) FROM event").fetchone() == (0,)


def test_invalid_utf8_late_in_a_shared_table_rereads_it_whole(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """The first read stops at the bad text with batches at the helper; the bytes-fallback reread
    is a new session whose blocks are not mixed with the abandoned one's."""
    path = over_threshold(tmp_path / "app.db", bad_utf8_at=2500)
    result = load(path, pg_dsn, cfg(on_bad_value="quarantine"))
    event = by_table(result)["event"]
    assert (event.rows, event.quarantined) == (SIZES["event"] - 1, 1)
    assert pg.execute("SELECT key FROM replicator.quarantine").fetchall() == [({"id": 2500},)]
    assert pg.execute("SELECT count(*), count(DISTINCT id) FROM event").fetchone() == (2999, 2999)


BAD_EVERY = 170


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("outcome", ["stop", "quarantine", "replace"])
def test_invalid_utf8_in_a_large_table_is_refused_quarantined_or_replaced(
    tmp_path: Path, pg_dsn: str, pg: Any, workers: int, outcome: str
) -> None:
    """Rows read strictly skip the converter's UTF-8 check (``strict_text``); the bytes-fallback re-read
    of a table with invalid UTF-8 must not: in one process, and in two (its batches dealt to the helper,
    whose other tables come from its twin read transaction), the bad values are refused by name,
    quarantined with their original bytes, or replaced, as the policy says."""
    path = over_threshold(tmp_path / "app.db", bad_utf8_every=BAD_EVERY)
    bad_ids = [i for i in range(1, SIZES["event"] + 1) if i % BAD_EVERY == 0]
    options: dict[str, Any] = {"on_bad_value": "quarantine"} if outcome == "quarantine" else {}
    conf = cfg(workers=workers, **options)
    if outcome == "replace":
        conf = msgspec.structs.replace(conf, types={"event": {"kind": config.ColumnOverride(replace_bad_utf8=True)}})

    def run() -> snapshot.SnapshotResult:
        if workers == 1:
            return snapshot.snapshot(path, pg_dsn, conf, fetch_rows=FETCH)
        return load(path, pg_dsn, conf)

    if outcome == "stop":
        with pytest.raises(BadValue, match=rf"event \(id={BAD_EVERY}\) column kind: text is not valid UTF-8"):
            run()
        assert pg.execute("SELECT count(*) FROM event").fetchone() == (0,)
        return
    event = by_table(run())["event"]
    assert event.helper_rows > 0 if workers == 2 else event.helper_rows == 0
    kinds = dict(pg.execute("SELECT id, kind FROM event").fetchall())
    if outcome == "quarantine":
        assert (event.rows, event.quarantined) == (SIZES["event"] - len(bad_ids), len(bad_ids))
        found = pg.execute("SELECT key, original_base64 FROM replicator.quarantine WHERE table_name = 'event'")
        assert sorted((k["id"], base64.b64decode(b)) for k, b in found) == [(i, b"file\x96name") for i in bad_ids]
        assert not set(kinds) & set(bad_ids)
    else:
        assert (event.rows, event.quarantined) == (SIZES["event"], 0)
        assert [i for i, k in sorted(kinds.items()) if k == "file\ufffdname"] == bad_ids
    assert len(kinds) == event.rows
    assert all(kinds[i] == f"kind {i % 7}" for i in kinds if i % BAD_EVERY)


def test_interrupted_in_the_middle_of_a_shared_table_then_resumed(
    tmp_path: Path, pg_dsn: str, pg: Any, pg_server: str
) -> None:
    path = over_threshold(tmp_path / "app.db")
    seen: dict[str, int] = {}

    def stop_halfway(table: str, rows: int) -> None:
        seen[table] = rows
        if table == "event" and rows >= SIZES["event"] // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), sharing(path, cfg(), on_batch=stop_halfway) as (reader, hook):
        snapshot.snapshot_from(
            reader,
            source_identity(path),
            pg_dsn,
            cfg(),
            fetch_rows=FETCH,
            progress=hook,
            helper=hook.helper,
            source_path=path,
        )
    assert seen["event"] < SIZES["event"]
    recorded = dict(pg.execute("SELECT table_name, rows FROM replicator.snapshot_tables").fetchall())
    assert "event" not in recorded
    assert pg.execute("SELECT count(*) FROM event").fetchone() == (0,)  # nothing of it committed
    result = snapshot.snapshot(path, pg_dsn, cfg(), resume=True, fetch_rows=FETCH)
    assert result.plan is not None
    assert assert_same(path, pg, result.plan) == SIZES
    with fresh_database(pg_server) as other:
        whole = snapshot.snapshot(path, other, cfg(workers=1))
    assert {t.table: t.checksum for t in result.tables} == {t.table: t.checksum for t in whole.tables}


KILLED = """
import os, sys
from pathlib import Path
from replicator import config, faults
from replicator.load import snapshot
conf = config.load(overrides={"snapshot": {"workers": 2, "split_rows": 1000, "helper_min_bytes": 0}}, environ={})

class Hook:
    def start(self, table, total):
        pass
    def advance(self, table, rows):
        import multiprocessing
        Path(sys.argv[3]).write_text(" ".join(str(p.pid) for p in multiprocessing.active_children()))
        if table == "event" and rows >= 1000:
            faults.arm("snapshot.copying", "crash")  # SIGKILL-like: no finally, no rollback
    def finish(self, table, rows, seconds):
        pass

snapshot.snapshot(Path(sys.argv[1]), sys.argv[2], conf, fetch_rows=100, progress=Hook())
"""


def test_killed_in_the_middle_of_a_shared_table_the_helper_exits_and_a_resume_completes(
    tmp_path: Path, pg_dsn: str, pg: Any
) -> None:
    path = over_threshold(tmp_path / "app.db")
    pids = tmp_path / "children"
    root = ROOT
    env = {**os.environ, "PYTHONPATH": str(root)}
    with (tmp_path / "run.log").open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-c", KILLED, str(path), pg_dsn, str(pids)], env=env, stdout=out, stderr=out, timeout=300
        )
    assert done.returncode == 137, (tmp_path / "run.log").read_text()
    assert "event" not in dict(pg.execute("SELECT table_name, rows FROM replicator.snapshot_tables").fetchall())
    children = [int(p) for p in pids.read_text().split()]
    assert children
    deadline = time.monotonic() + 30  # the orphaned helper notices and exits
    while time.monotonic() < deadline and any(_alive(p) for p in children):
        time.sleep(0.1)
    assert not any(_alive(p) for p in children)
    result = snapshot.snapshot(path, pg_dsn, cfg(), resume=True, fetch_rows=FETCH)
    assert result.plan is not None
    assert assert_same(path, pg, result.plan) == SIZES


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_table_is_shared_when_no_split_of_whole_tables_balances_it() -> None:
    from replicator.load.share import dominant_tables

    rows = {"big": 5000, "mid": 3000, "small": 10}
    assert dominant_tables(rows, 1000, {"big": 60, "mid": 30, "small": 1}) == ["big"]
    assert dominant_tables(rows, 1000, {"big": 45, "mid": 40, "small": 15}) == []  # 45 | 55: balanced
    assert dominant_tables(rows, 1000) == ["big", "mid"]  # existing mode: the helper has nothing else
    assert dominant_tables(rows, 0, {"big": 99, "mid": 0, "small": 0}) == []


def test_the_split_counts_half_the_shared_tables_for_the_main_process() -> None:
    # 100 of shared work: the main process starts at 50 (the half it will convert), so the 45 and
    # the 40 go to the helper, which then joins the shared tables; the 30 to the main process.
    assert snapshot.split({"a": 40, "b": 30, "c": 45}, main_start=50) == (["b"], ["c", "a"])
    assert snapshot.split({"a": 40, "b": 30, "c": 45}) == (["c"], ["a", "b"])
    with pytest.raises(ConfigError, match="split_rows"):
        config.load(overrides={"snapshot": {"split_rows": -1}}, environ={})


def test_a_dominant_tables_profile_is_scanned_by_both_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from replicator.plan import chunkscan, profiler
    from triggers.schema import read_schema

    path = over_threshold(tmp_path / "app.db")
    with sqlite3.connect(path) as conn:  # a blob in event's JSON column, in the guess's sample: no guess
        conn.execute("UPDATE event SET payload = x'7b7d' WHERE id = 5")
    monkeypatch.setattr(chunkscan, "CHUNK_CHARS", 1000)  # 256-row chunks (the helper scans what it is given)
    monkeypatch.setattr(costs, "HELPER_START_NS", 0)  # a helper not yet started still gets its share
    conf = cfg()
    with sharing(path, conf) as (reader, hook):
        submitted: list[tuple[Any, ...]] = []
        submit = hook.helper.pool.submit

        def spy(fn: Any, *args: Any) -> Any:
            submitted.append(args)
            return submit(fn, *args)

        monkeypatch.setattr(hook.helper.pool, "submit", spy)
        read = snapshot.read_source_parallel(reader, path, conf, hook.helper, create=True)
        schema = read_schema(reader)
        assert {"event", "kv"}.isdisjoint(read.guessed)  # a blob in JSON, WITHOUT ROWID: profiled in full
        for name in ("event", "kv"):  # as one process profiles the whole table in its transaction
            table = schema.table(name)
            assert read.profiles[name] == profiler.profile_table(
                reader, table, plain=snapshot.plain_columns(table, conf)
            )
        event_chunks = len(chunkscan.chunks(reader, schema.table("event")))
    (args,) = submitted  # the helper's share: (path, config, whole tables, create, chunks)
    assert 0 < [c.table for c in args[4]].count("event") < event_chunks
    assert event_chunks > 10


def test_a_guess_disproved_late_in_a_shared_table_is_profiled_and_reloaded(
    tmp_path: Path, pg_dsn: str, pg: Any
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE event (id INTEGER PRIMARY KEY, n INTEGER, label TEXT)")
        conn.executemany("INSERT INTO event VALUES (?, ?, ?)", [(i, i, f"l{i}") for i in range(1, 3001)])
        conn.execute("UPDATE event SET n = 2.5 WHERE id = 2950")  # beyond the guess's sample
    result = load(path, pg_dsn, cfg())
    (event,) = result.tables
    assert (event.rows, event.quarantined) == (3000, 0)
    assert event.helper_rows > 0
    assert result.plan is not None
    (n,) = [c for c in result.plan.table("event").columns if c.name == "n"]
    assert n.type.name not in ("bigint", "integer")
    assert_same(path, pg, result.plan)


@pytest.mark.parametrize("rows", [0, 1, 3_000], ids=["no-row", "one-row", "many-buffers"])
def test_formatted_parts_load_exactly_their_rows(pg: Any, rows: int) -> None:
    """``copyrows.format_parts`` hands the main process psycopg's buffers less header and trailer, as views:
    written between one header and one trailer they load exactly the batch, and joined they are the block
    the helper sends. A batch whose every row is refused (no row) or of one row leaves the framing intact."""
    from replicator.load.copyrows import SIGNATURE, TRAILER, RowPipe, format_parts, key_getter
    from replicator.load.share import format_block
    from replicator.plan.schemaplan import ColumnPlan, TablePlan
    from replicator.values.targettype import parse_type

    pg.execute("CREATE TABLE items (id bigint PRIMARY KEY, v text, doc json)")
    types = (parse_type("bigint"), parse_type("text"), parse_type("json"))
    columns = tuple(ColumnPlan(n, n, t) for n, t in zip(("id", "v", "doc"), types, strict=True))
    table = TablePlan("items", "items", columns, primary_key=("id",), key_source=("id",))
    pipe = RowPipe(table, key_of=key_getter(table), policy="quarantine", verify=False, extra=False, strict_text=True)
    batch = [(n, "café " * 20, f'{{"n": {n}, "a": [1, 2]}}') for n in range(rows)] + [(-1, "refused", "not json")]
    with pg.cursor() as cur:
        done = format_parts(cur, pipe.copy_types, pipe, batch)
        again = format_block(cur, pipe.copy_types, pipe, batch)
        assert (rows > 3_000 // 2) == (len(done.parts) > 1)  # the many-row batch spans several buffers
        assert b"".join(done.parts) == again.data
        assert done.digest_sum == again.digest_sum
        assert len(done.refusals) == len(again.refusals) == 1
        with cur.copy("COPY items FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(SIGNATURE)
            for part in done.parts:
                copy.write(part)
            copy.write(TRAILER)
    assert pg.execute("SELECT count(*), coalesce(sum(id), 0) FROM items").fetchone() == (rows, sum(range(rows)))
    loaded = pg.execute("SELECT id, v, doc::text FROM items ORDER BY id").fetchall()
    assert loaded == batch[:rows]  # the documents as their text, not as JSON strings of it
