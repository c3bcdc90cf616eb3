"""Apply throughput on a journal backlog vs a raw binary COPY of as many rows into the same indexed tables.

    .venv/bin/python bench/apply.py --dsn postgresql://postgres@127.0.0.1:5432/postgres --changes 1000000

``--shape wide`` runs the same measurements on bench/shapes.py's wide SaaS database instead of the three
narrow tables: ``documents`` (17 columns, a JSON object, micro-second date-times, 5 secondary indexes, a
UNIQUE uuid, 3 FKs) holds 80 % of ``--initial`` rows (default 1,000,000 there), and the backlog's changes
land on it and its parents (:class:`WideWorkload`); ``--json-bytes`` sizes the JSON documents.

Per round: build a backlog of ``--changes`` journal entries (60 % UPDATE, 30 % INSERT, 10 % DELETE over
the shape's tables with secondary indexes, untimed), drain it with ``replicator run --until-drained`` in a
subprocess (timed from process start, so start-up is included; its peak RSS, VmHWM sampled from
/proc, to show memory stays flat), then binary-COPY the same number of new rows into the same populated, indexed
tables inside a transaction that is rolled back (timed; rows converted in memory before the clock
starts, so the baseline is PostgreSQL's and psycopg's cost alone). Medians over ``--rounds``.
Next to raw COPY, the *floor*: PostgreSQL's own cost of applying the same change set set-based
(:func:`floor`: the distinct keys the backlog names and SQLite's current rows for them, staged in
temp tables beforehand, then timed: ``DELETE`` of the keys + ``INSERT`` of the rows, into the same
populated indexed tables): in the daemon's batches of ``--batch-rows`` entries, each committed, on a
throw-away copy of the database (:func:`floor_batches`), with and without the staging COPY; and for
the whole backlog merged into one set, rolled back (:func:`floor`).
``--fastpath`` also times the insert step three ways (see :func:`fastpath`).

``--lag-seconds N`` then measures end-to-end lag at a steady app load (:func:`lag`): the app in its
own process at ``--lag-txn-rate`` transactions/s of 1-5 rows each, the daemon as a subprocess.

``--compare LABEL=DIR`` (repeatable) compares code versions in one run: each round's backlog is
drained once per version (this checkout first in odd rounds, last in even ones), each on its own
copy of the same SQLite file and PostgreSQL database, with ``PYTHONPATH=DIR`` (e.g. DIR made by
``git archive <commit> replicator checkpoints triggers | tar -x -C DIR``; ``.`` is this checkout, and
``,NAME=VALUE`` after DIR sets an environment variable, e.g. a batch size). Reported per version:
changes/s, wall, the daemon's CPU (user+sys) and its PostgreSQL backends' CPU.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import multiprocessing
import os
import random
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import shapes  # bench/ is on sys.path when this file runs as a script
from psycopg import sql

from replicator.config import DEFAULT_BATCH_ROWS
from triggers import install

SCHEMA = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL, score REAL, created_at TEXT NOT NULL
);
CREATE INDEX users_name ON users (name);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, amount INTEGER NOT NULL, status TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX orders_user ON orders (user_id);
CREATE INDEX orders_status ON orders (status, created_at);
CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, payload TEXT, at INTEGER NOT NULL);
CREATE INDEX events_kind ON events (kind, at);
"""
TABLES = ("users", "orders", "events")


def _user(i: int, rng: random.Random) -> tuple[Any, ...]:
    return (
        i,
        f"u{i}-{uuid.UUID(int=rng.getrandbits(128)).hex[:8]}@example.com",
        f"name {i % 5000}",
        rng.random() * 100,
        f"2024-01-{1 + i % 28:02d} 10:00:00",
    )


def _order(i: int, rng: random.Random) -> tuple[Any, ...]:
    return (
        i,
        rng.randint(1, 50_000),
        rng.randint(1, 100_000),
        rng.choice(("new", "paid", "shipped")),
        f"2024-02-{1 + i % 28:02d} 12:00:00",
    )


def _event(i: int, rng: random.Random) -> tuple[Any, ...]:
    return (i, rng.choice(("click", "view", "buy", "login")), "x" * rng.randint(20, 120), 1_700_000_000_000 + i)


MAKERS = {"users": _user, "orders": _order, "events": _event}
INSERT = {
    "users": "INSERT INTO users VALUES (?, ?, ?, ?, ?)",
    "orders": "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
    "events": "INSERT INTO events VALUES (?, ?, ?, ?)",
}
UPDATE = {
    "users": "UPDATE users SET score = ?, name = 'n' || id WHERE id = ?",
    "orders": "UPDATE orders SET amount = ?, status = 'paid' WHERE id = ?",
    "events": "UPDATE events SET payload = 'p' || ? WHERE id = ?",
}


class Workload:
    """One shape's tables and its changes: what the backlog, the raw COPY and the app load write.

    ``top`` is each table's highest id (inserts append after it). ``change`` makes one change of the
    mix (60 % UPDATE, 30 % INSERT, 10 % DELETE); ``row`` makes a new row of a table; ``copy_share``
    is each table's share of the raw COPY's rows (the backlog's inserts split the same way).
    """

    name = "narrow"
    tables: tuple[str, ...] = TABLES
    copy_share: dict[str, float] = dict.fromkeys(TABLES, 1 / len(TABLES))

    def __init__(self, top: dict[str, int]) -> None:
        self.top = top

    def build(self, path: Path, initial: int, rng: random.Random) -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = wal")
        conn.execute("PRAGMA synchronous = normal")
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        for table in TABLES:
            conn.executemany(INSERT[table], (MAKERS[table](i, rng) for i in range(1, initial + 1)))
        conn.execute("COMMIT")
        conn.close()
        self.top.update(dict.fromkeys(TABLES, initial))

    def row(self, table: str, i: int, rng: random.Random) -> tuple[Any, ...]:
        return MAKERS[table](i, rng)

    def change(self, conn: sqlite3.Connection, rng: random.Random) -> None:
        table = rng.choice(TABLES)
        roll = rng.random()
        if roll < 0.6:
            conn.execute(UPDATE[table], (rng.randint(1, 100_000), rng.randint(1, self.top[table])))
        elif roll < 0.9:
            self.top[table] += 1
            conn.execute(INSERT[table], MAKERS[table](self.top[table], rng))
        else:
            conn.execute(f"DELETE FROM {table} WHERE id = ?", (rng.randint(1, self.top[table]),))


class WideWorkload(Workload):
    """bench/shapes.py's wide shape: ``documents`` (17 columns, JSON, micro-second date-times, 5 indexes,
    3 FKs) and its parents ``tenants``, ``users`` and ``projects``. ``--initial`` counts the rows of all
    four tables (80 % documents). Updates and inserts pick a table by its share of the rows, so 80 % of
    them land on ``documents``; deletes hit ``documents`` only (its parents keep their children, as an
    app with foreign keys on would). A ``documents`` update is an ORM save of the fields an edit
    touches: title, status, the JSON metadata, updated_at, score and version."""

    name = "wide"
    tables = tuple(shapes.WIDE_SHARES)
    copy_share = shapes.WIDE_SHARES

    def __init__(self, top: dict[str, int], json_bytes: int, seed: int) -> None:
        super().__init__(top)
        self.json_bytes, self.seed = json_bytes, seed
        self._document: Any = None
        pool = random.Random(seed)
        self._docs = [shapes.metadata_doc(pool, json_bytes) for _ in range(256)]
        self._titles = [shapes.text_of(pool, pool.randrange(20, 120)).title() for _ in range(256)]

    def build(self, path: Path, initial: int, rng: random.Random) -> None:
        counts = shapes.build_wide(path, initial, seed=rng.randrange(2**31), json_bytes=self.json_bytes)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = wal")
        conn.close()
        self.top.update(counts)

    def _documents(self, rng: random.Random) -> Any:
        if self._document is None:  # pools built once, parents' ids as the source holds them now; seeded
            # from the caller's generator: the app's process must not make the uuids this one made
            self._document = shapes.document_maker(random.Random(rng.getrandbits(64)), dict(self.top), self.json_bytes)
        return self._document

    def row(self, table: str, i: int, rng: random.Random) -> tuple[Any, ...]:
        words = shapes.WORDS
        if table == "documents":
            return tuple(self._documents(rng)(i))
        if table == "tenants":
            plan = rng.choice(("free", "team", "business", "enterprise"))
            return (i, f"tenant-{i}", f"{rng.choice(words).title()} Inc {i}", plan, shapes.iso_micros(rng))
        tenant = rng.randrange(1, self.top["tenants"] + 1)
        if table == "users":
            name = f"{rng.choice(words).title()} {rng.choice(words).title()}"
            return (i, tenant, f"user{i}@example.com", name, int(rng.random() < 0.05), shapes.iso_micros(rng))
        return (i, tenant, f"project {i}", shapes.text_of(rng, 80), shapes.iso_micros(rng))

    def change(self, conn: sqlite3.Connection, rng: random.Random) -> None:
        roll = rng.random()
        if roll >= 0.9:
            conn.execute("DELETE FROM documents WHERE id = ?", (rng.randint(1, self.top["documents"]),))
            return
        (table,) = rng.choices(self.tables, weights=list(self.copy_share.values()))
        if roll >= 0.6:
            self.top[table] += 1
            marks = ", ".join("?" * len(shapes.WIDE_RAW[table]))
            conn.execute(f"INSERT INTO {table} VALUES ({marks})", self.row(table, self.top[table], rng))
            return
        key = rng.randint(1, self.top[table])
        if table == "documents":
            conn.execute(
                "UPDATE documents SET title = ?, status = ?, metadata = ?, updated_at = ?, score = ?, "
                "version = version + 1 WHERE id = ?",
                (
                    rng.choice(self._titles),
                    rng.choice(("draft", "review", "published", "archived")),
                    rng.choice(self._docs),
                    shapes.iso_micros(rng),
                    round(rng.uniform(0, 100), 3),
                    key,
                ),
            )
        elif table == "users":
            conn.execute(
                "UPDATE users SET full_name = ?, is_staff = ? WHERE id = ?",
                (rng.choice(self._titles)[:60], int(rng.random() < 0.05), key),
            )
        elif table == "projects":
            conn.execute("UPDATE projects SET description = ? WHERE id = ?", (shapes.text_of(rng, 80), key))
        else:
            conn.execute("UPDATE tenants SET plan = ? WHERE id = ?", (rng.choice(("free", "team", "business")), key))


def workload(shape: str, top: dict[str, int], json_bytes: int, seed: int) -> Workload:
    return WideWorkload(top, json_bytes, seed) if shape == "wide" else Workload(top)


def build_source(path: Path, work: Workload, initial: int, rng: random.Random) -> None:
    work.build(path, initial, rng)
    install.install(path)


def make_backlog(path: Path, changes: int, work: Workload, rng: random.Random) -> None:
    """``changes`` changes: 60 % updates, 30 % inserts, 10 % deletes, spread over the tables."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = normal")
    done = 0
    while done < changes:
        conn.execute("BEGIN")
        for _ in range(min(10_000, changes - done)):
            work.change(conn, rng)
            done += 1
        conn.execute("COMMIT")
    conn.close()


def pending(path: Path, applied: int) -> int:
    conn = sqlite3.connect(path)
    (n,) = conn.execute("SELECT count(*) FROM _replicator_journal WHERE seq > ?", (applied,)).fetchone()
    conn.close()
    return int(n)


def drain(path: Path, dsn: str, env: dict[str, str]) -> tuple[float, int]:
    """Run the daemon until drained in a subprocess: (seconds, peak RSS in KiB)."""
    run = drain_measured(path, dsn, env)
    return run.seconds, run.rss_kib


class Drained:
    def __init__(self, seconds: float, rss_kib: int, cpu: float, pg_cpu: float) -> None:
        self.seconds, self.rss_kib, self.cpu, self.pg_cpu = seconds, rss_kib, cpu, pg_cpu


class BackendCpu(threading.Thread):
    """CPU seconds used by the PostgreSQL backends connected to one database (local server, /proc
    readable; 0 where it is not), sampled every 50 ms: the last sample of each backend counts."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.seen, self.done = dsn, dict[int, float](), threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            me = conn.info.backend_pid
            while not self.done.is_set():
                pids = [
                    int(r[0])
                    for r in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> %s", (me,)
                    )
                ]
                for pid in pids:
                    try:
                        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    self.seen[pid] = (int(fields[11]) + int(fields[12])) / self.tick
                time.sleep(0.05)

    def stop(self) -> float:
        self.done.set()
        self.join()
        return sum(self.seen.values())


class PeakRss(threading.Thread):
    """A process's peak RSS (VmHWM) in KiB, sampled every 20 ms. Not wait4's ru_maxrss: Linux carries
    the high-water mark of the forking process (this benchmark, holding a change set in memory) across
    fork and exec into the child's."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak = max(self.peak, int(line.split()[1]))
            time.sleep(0.02)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def drain_measured(path: Path, dsn: str, env: dict[str, str]) -> Drained:
    """Run the daemon until drained in a subprocess: wall, peak RSS, its CPU and its backends' CPU."""
    cmd = [sys.executable, "-m", "replicator", "run", "--source", str(path), "--target", dsn, "--until-drained", "-q"]
    backends = BackendCpu(dsn)
    backends.start()
    started = time.perf_counter()
    # ``python -m`` puts the working directory first on sys.path, before PYTHONPATH: run in the
    # version's directory, or every version would import this checkout's code
    cwd = env.get("PYTHONPATH") or str(Path(__file__).resolve().parent.parent)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, cwd=cwd)
    peak = PeakRss(proc.pid)
    peak.start()
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    pg_cpu = backends.stop()
    rss_kib = peak.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"replicator run failed with exit code {proc.returncode}")
    return Drained(seconds, rss_kib, usage.ru_utime + usage.ru_stime, pg_cpu)


def copy_source(path: Path, to: Path) -> None:
    src, dst = sqlite3.connect(path), sqlite3.connect(to)
    src.backup(dst)
    dst.close()
    src.close()


def clone_db(admin: str, dsn: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(conninfo_dbname(dsn)))
        )
    return psycopg.conninfo.make_conninfo(admin, dbname=name)


def drop_db(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


Variant = tuple[str, str | None, dict[str, str]]


def compare_round(
    admin: str, dsn: str, path: Path, env: dict[str, str], variants: list[Variant], reverse: bool
) -> dict[str, Drained]:
    """Drain the pending backlog once per variant, each on copies of the source and target; the main
    copies are then replaced by this checkout's result (the next round builds on it)."""
    out: dict[str, Drained] = {}
    copies: dict[str, tuple[Path, str]] = {}
    for i, (label, _dir, _env) in enumerate(variants):
        name = f"{conninfo_dbname(dsn)}_v{i}"
        copy = path.with_name(f"v{i}.db")
        copy_source(path, copy)
        copies[label] = (copy, clone_db(admin, dsn, name))
    for label, code, extra in reversed(variants) if reverse else variants:
        copy, copy_dsn = copies[label]
        venv = {**env, **extra}
        if code is not None:
            venv["PYTHONPATH"] = code
        out[label] = drain_measured(copy, copy_dsn, venv)
    this_copy, this_dsn = copies[variants[0][0]]
    copy_source(this_copy, path)
    drop_db(admin, conninfo_dbname(dsn))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(conninfo_dbname(this_dsn)), sql.Identifier(conninfo_dbname(dsn))
            )
        )
    for label, (copy, copy_dsn) in copies.items():
        copy.unlink(missing_ok=True)
        if label != variants[0][0]:
            drop_db(admin, conninfo_dbname(copy_dsn))
    return out


def raw_copy(dsn: str, changes: int, work: Workload, rng: random.Random) -> float:
    """Binary COPY of ``changes`` new rows (split like the backlog's inserts) into the same, populated,
    indexed tables, in a transaction rolled back afterwards (the rollback is not timed). Foreign keys
    do not act (``session_replication_role = replica``), as in the daemon's transactions."""
    from replicator.values import convert, targettype

    with psycopg.connect(dsn, autocommit=True) as conn:
        prepared: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
        for table in work.tables:
            per = int(changes * work.copy_share[table])
            rows = conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (f"public.{table}",),
            ).fetchall()
            tts = [targettype.parse_type(r[0]) for r in rows]
            conv = convert.row_converter(table, [f"c{i}" for i in range(len(tts))], tts)
            prepared[table] = (
                targettype.copy_types(tts),
                [conv(work.row(table, 50_000_000 + i, rng)) for i in range(per)],
            )
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL session_replication_role = replica")
            started = time.perf_counter()
            for table in work.tables:
                types, data = prepared[table]
                copy_sql = sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(sql.Identifier("public", table))
                with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    copy.set_types(types)
                    for row in data:
                        copy.write_row(row)
            seconds = time.perf_counter() - started
    return seconds


ChangeSet = dict[str, tuple[list[int], list[tuple[Any, ...]]]]


def change_sets(path: Path, dsn: str, batch: int, tables: tuple[str, ...]) -> tuple[ChangeSet, list[ChangeSet]]:
    """What any state-based applier of the pending backlog must write: the distinct keys it names per
    table and SQLite's current rows for them, for the whole backlog at once and per ``batch`` entries
    (the daemon's batches: a key changed in two batches is written twice)."""
    with psycopg.connect(dsn, autocommit=True) as pconn:
        (applied,) = pconn.execute("SELECT max(seq_to) FROM replicator.checkpoints").fetchone()
    conn = sqlite3.connect(path)
    entries = conn.execute("SELECT tbl, k1 FROM _replicator_journal WHERE seq > ? ORDER BY seq", (applied,)).fetchall()
    current: dict[str, dict[int, tuple[Any, ...]]] = {}
    for table in tables:
        keys = sorted({int(k) for t, k in entries if t == table})
        found: dict[int, tuple[Any, ...]] = {}
        for i in range(0, len(keys), 10_000):
            chunk = keys[i : i + 10_000]
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(f"SELECT * FROM {table} WHERE id IN ({marks})", chunk):
                found[int(row[0])] = row
        current[table] = found
    conn.close()

    def of(part: list[tuple[str, int]]) -> ChangeSet:
        out: ChangeSet = {}
        for table in tables:
            keys = sorted({int(k) for t, k in part if t == table})
            out[table] = (keys, [current[table][k] for k in keys if k in current[table]])
        return out

    return of(entries), [of(entries[i : i + batch]) for i in range(0, len(entries), batch)]


def _pg_types(conn: psycopg.Connection[Any], table: str) -> list[Any]:
    from replicator.values import targettype

    rows = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (f"public.{table}",),
    ).fetchall()
    return [targettype.parse_type(r[0]) for r in rows]


def floor(dsn: str, batches: list[ChangeSet]) -> tuple[float, float]:
    """PostgreSQL's own cost of applying the change sets set-based, one after the other, in
    transactions rolled back: (``DELETE`` of each set's keys + ``INSERT`` of its current rows from
    temp tables staged beforehand; that plus the staging binary COPY of the keys and rows). Seconds,
    the faster of index nested loops (what the daemon forces) and the planner's own choice."""
    from replicator.values import convert, targettype

    best_sql, best_all = float("inf"), float("inf")
    with psycopg.connect(dsn, autocommit=True) as conn:
        types = {table: _pg_types(conn, table) for table in batches[0]}
        convs = {t: convert.row_converter(t, [f"c{i}" for i in range(len(tt))], tt) for t, tt in types.items()}
        for nested in (True, False):
            with conn.transaction(force_rollback=True):
                conn.execute("SET LOCAL session_replication_role = replica")
                if nested:
                    conn.execute("SET LOCAL enable_mergejoin = off")
                    conn.execute("SET LOCAL enable_hashjoin = off")
                staging = 0.0
                for n, part in enumerate(batches):
                    for table, (keys, rows) in part.items():
                        data = [convs[table](r) for r in rows]
                        started = time.perf_counter()
                        conn.execute(f"CREATE TEMP TABLE fk_{table}_{n} (id bigint) ON COMMIT DROP")
                        conn.execute(
                            f"CREATE TEMP TABLE fr_{table}_{n} ON COMMIT DROP AS SELECT * FROM {table} WITH NO DATA"
                        )
                        with conn.cursor() as cur:
                            with cur.copy(f"COPY fk_{table}_{n} FROM STDIN (FORMAT BINARY)") as copy:
                                copy.set_types(["int8"])
                                for k in keys:
                                    copy.write_row((k,))
                            with cur.copy(f"COPY fr_{table}_{n} FROM STDIN (FORMAT BINARY)") as copy:
                                copy.set_types(targettype.copy_types(types[table]))
                                for row in data:
                                    copy.write_row(row)
                        staging += time.perf_counter() - started
                started = time.perf_counter()
                for n, part in enumerate(batches):
                    for table in part:
                        conn.execute(f"DELETE FROM {table} t USING fk_{table}_{n} k WHERE t.id = k.id")
                        conn.execute(f"INSERT INTO {table} SELECT * FROM fr_{table}_{n}")
                applying = time.perf_counter() - started
            best_sql, best_all = min(best_sql, applying), min(best_all, applying + staging)
    return best_sql, best_all


def floor_batches(admin: str, dsn: str, batches: list[ChangeSet]) -> tuple[float, float]:
    """The floor in the daemon's batches, each committed like the daemon's (a batch in one transaction
    with the ones before it would find every earlier batch's dead row versions still unprunable), on a
    throw-away copy of the database: seconds of (``DELETE`` + ``INSERT`` + commit, that plus the
    staging COPY), index nested loops as the daemon forces them."""
    from replicator.values import convert, targettype

    name = f"{conninfo_dbname(dsn)}_floor"
    copy_dsn = clone_db(admin, dsn, name)
    applying = staging = 0.0
    try:
        with psycopg.connect(copy_dsn, autocommit=True) as conn:
            types = {table: _pg_types(conn, table) for table in batches[0]}
            convs = {t: convert.row_converter(t, [f"c{i}" for i in range(len(tt))], tt) for t, tt in types.items()}
            for table in types:
                conn.execute(f"CREATE TEMP TABLE fk_{table} (id bigint) ON COMMIT DELETE ROWS")
                conn.execute(
                    f"CREATE TEMP TABLE fr_{table} ON COMMIT DELETE ROWS AS SELECT * FROM {table} WITH NO DATA"
                )
            for part in batches:
                data = {table: [convs[table](r) for r in rows] for table, (_keys, rows) in part.items()}
                with conn.transaction():
                    conn.execute("SET LOCAL session_replication_role = replica")
                    conn.execute("SET LOCAL enable_mergejoin = off")
                    conn.execute("SET LOCAL enable_hashjoin = off")
                    started = time.perf_counter()
                    for table, (keys, _rows) in part.items():
                        with conn.cursor() as cur:
                            with cur.copy(f"COPY fk_{table} FROM STDIN (FORMAT BINARY)") as copy:
                                copy.set_types(["int8"])
                                for k in keys:
                                    copy.write_row((k,))
                            with cur.copy(f"COPY fr_{table} FROM STDIN (FORMAT BINARY)") as copy:
                                copy.set_types(targettype.copy_types(types[table]))
                                for row in data[table]:
                                    copy.write_row(row)
                    staged = time.perf_counter()
                    for table in part:
                        conn.execute(f"DELETE FROM {table} t USING fk_{table} k WHERE t.id = k.id")
                        conn.execute(f"INSERT INTO {table} SELECT * FROM fr_{table}")
                committed = time.perf_counter()
                staging += staged - started
                applying += committed - staged
    finally:
        drop_db(admin, name)
    return applying, applying + staging


def fastpath(dsn: str, rows_per_batch: int = 20_000, reps: int = 5) -> dict[str, float]:
    """The insert step of a batch, three ways, on ``users`` (PK + UNIQUE email + name index).

    Each rep deletes the same ``rows_per_batch`` rows and puts them back, inside a transaction that
    is rolled back; only the put-back is timed. (a) binary COPY into a temp staging table, then
    INSERT ... SELECT ... RETURNING (what the apply does: the returned images feed the digests);
    (b) the same without RETURNING; (c) binary COPY straight into the table.
    """
    from replicator.values import targettype

    out: dict[str, list[float]] = {"staging+insert returning": [], "staging+insert": [], "copy direct": []}
    with psycopg.connect(dsn, autocommit=True) as conn:
        types = [
            targettype.parse_type(r[0])
            for r in conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'public.users'::regclass "
                "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
            )
        ]
        with conn.cursor(binary=True) as cur:
            rows = cur.execute("SELECT * FROM users ORDER BY id LIMIT %s", (rows_per_batch,)).fetchall()
        conn.execute("CREATE TEMP TABLE stage AS SELECT * FROM users WITH NO DATA")
        copy_types = targettype.copy_types(types)
        for _ in range(reps):
            for variant in out:
                with conn.transaction(force_rollback=True):
                    conn.execute("DELETE FROM users WHERE id <= %s", (rows[-1][0],))
                    started = time.perf_counter()
                    target = "users" if variant == "copy direct" else "stage"
                    with (
                        conn.cursor() as cur,
                        cur.copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(sql.Identifier(target))) as copy,
                    ):
                        copy.set_types(copy_types)
                        for row in rows:
                            copy.write_row(row)
                    if variant != "copy direct":
                        returning = " RETURNING *" if "returning" in variant else ""
                        with conn.cursor(binary=True) as cur:
                            cur.execute("INSERT INTO users SELECT * FROM stage" + returning)
                            if returning:
                                cur.fetchall()
                    out[variant].append(time.perf_counter() - started)
    return {k: rows_per_batch / statistics.median(v) for k, v in out.items()}


WorkloadSpec = tuple[str, dict[str, int], int, int]
"""What rebuilds a :class:`Workload` in another process: (shape, top ids, JSON bytes, seed)."""


def app_load(path: str, out: str, seconds: float, txn_rate: int, spec: WorkloadSpec, seed: int) -> None:
    """The app (run in its own process): ``txn_rate`` transactions/s for ``seconds``, each of 1-5 rows
    (the workload's mix: 60 % UPDATE, 30 % INSERT, 10 % DELETE), paced to an absolute schedule (a
    late transaction does not push the next ones back). Writes one ``(last seq, commit time)`` pair
    per transaction to ``out``: the seq is read inside the transaction (the writer holds the lock, so
    the journal's max is its own last entry), the time right after COMMIT returns."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA synchronous = normal")
    rng = random.Random(seed)
    work = workload(*spec)
    seqs, times = array.array("q"), array.array("d")
    interval = 1.0 / txn_rate
    start = time.monotonic()
    n = 0
    while True:
        due = start + n * interval
        now = time.monotonic()
        if due - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(rng.randint(1, 5)):
            work.change(conn, rng)
        (seq,) = conn.execute("SELECT max(seq) FROM _replicator_journal").fetchone()
        conn.execute("COMMIT")
        times.append(time.time())
        seqs.append(int(seq))
        n += 1
    conn.close()
    with open(out, "wb") as fh:
        fh.write(struct.pack("<qd", n, time.monotonic() - start))
        seqs.tofile(fh)
        times.tofile(fh)


class Lag:
    def __init__(self) -> None:
        self.lags: list[float] = []
        self.txns = 0
        self.txn_rate = 0.0
        self.changes = 0
        self.rss_peak_kib = 0
        self.rss_samples: list[int] = []
        self.journal_rows: list[int] = []
        self.wal_bytes: list[int] = []
        self.cpu = 0.0


def lag(path: Path, dsn: str, env: dict[str, str], seconds: float, txn_rate: int, spec: WorkloadSpec) -> Lag:
    """End-to-end lag at a steady app load: the daemon (``replicator run``) and the app (:func:`app_load`)
    each in their own process. A commit's lag is the time PostgreSQL first showed a checkpoint covering
    its seq (polled every 5 ms by this process, so at most ~5 ms late) minus its SQLite commit time.
    Sampled every 250 ms: the daemon's RSS, the journal's row count and the -wal file's size."""
    cmd = [sys.executable, "-m", "replicator", "run", "--source", str(path), "--target", dsn, "-q"]
    daemon = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    try:
        return _lag(daemon, path, dsn, seconds, txn_rate, spec)
    finally:
        if daemon.returncode is None:
            daemon.kill()
            daemon.wait()


def _lag(
    daemon: subprocess.Popen[bytes], path: Path, dsn: str, seconds: float, txn_rate: int, spec: WorkloadSpec
) -> Lag:
    out = Lag()
    seen: list[tuple[int, float]] = []
    with psycopg.connect(dsn, autocommit=True) as pconn:
        probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # start-up: wait until this daemon has caught up
            row = pconn.execute("SELECT pid, upper(phase) FROM replicator.apply_state").fetchone()
            if row == (daemon.pid, "STREAMING"):
                break
            time.sleep(0.1)
        else:
            raise SystemExit("the daemon did not reach STREAMING within 120 s")
        result = Path(path).with_name("app_load.bin")
        app = multiprocessing.get_context("spawn").Process(
            target=app_load, args=(str(path), str(result), seconds, txn_rate, spec, 11)
        )
        app.start()
        last_sample = 0.0
        last_seq = -1
        wal = Path(f"{path}-wal")
        while app.is_alive():
            now = time.monotonic()
            (top_seq,) = pconn.execute("SELECT max(seq_to) FROM replicator.checkpoints").fetchone()
            if top_seq is not None and top_seq > last_seq:
                seen.append((int(top_seq), time.time()))
                last_seq = int(top_seq)
            if now - last_sample >= 0.25:
                last_sample = now
                out.journal_rows.append(int(probe.execute("SELECT count(*) FROM _replicator_journal").fetchone()[0]))
                out.wal_bytes.append(wal.stat().st_size if wal.exists() else 0)
                with contextlib.suppress(OSError):
                    for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            out.rss_samples.append(int(line.split()[1]))
                        elif line.startswith("VmHWM:"):
                            out.rss_peak_kib = max(out.rss_peak_kib, int(line.split()[1]))
            time.sleep(0.005)
        app.join()
        with open(result, "rb") as fh:
            n, elapsed = struct.unpack("<qd", fh.read(16))
            seqs, times = array.array("q"), array.array("d")
            seqs.fromfile(fh, n)
            times.fromfile(fh, n)
        out.txns, out.txn_rate = n, n / elapsed
        final = seqs[-1]
        deadline = time.monotonic() + 30
        while last_seq < final and time.monotonic() < deadline:  # the tail
            (top_seq,) = pconn.execute("SELECT max(seq_to) FROM replicator.checkpoints").fetchone()
            if top_seq is not None and top_seq > last_seq:
                seen.append((int(top_seq), time.time()))
                last_seq = int(top_seq)
            time.sleep(0.005)
        (first,) = probe.execute("SELECT min(seq) FROM _replicator_journal").fetchone()
        del first
        probe.close()
    daemon.send_signal(signal.SIGTERM)
    _pid, status, usage = os.wait4(daemon.pid, 0)
    daemon.returncode = os.waitstatus_to_exitcode(status)
    out.cpu = usage.ru_utime + usage.ru_stime
    out.changes = seqs[-1] - seqs[0]
    i = 0
    for seq, at in zip(seqs, times, strict=True):
        while i < len(seen) and seen[i][0] < seq:
            i += 1
        if i == len(seen):
            raise SystemExit(f"the daemon did not apply seq {seq} within 30 s of the load's end")
        out.lags.append(seen[i][1] - at)
    out.lags.sort()
    return out


def conninfo_dbname(dsn: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])


def vacuum(dsn: str, tables: tuple[str, ...]) -> None:
    """VACUUM ANALYZE the tables (untimed). A database copied with CREATE DATABASE ... TEMPLATE
    starts with no statistics, so autovacuum never learns of the dead rows a drain leaves there and
    every round would start on the bloat of all the rounds before it (measured: the apply and the floor
    both ran twice as long in round 3 as in round 1). Each round starts from a vacuumed table, as a
    database autovacuum keeps up with would."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in tables:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier("public", table)))


def fresh_db(admin: str) -> str:
    name = f"bench_apply_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(admin, dbname=name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dsn", default=os.environ.get("REPLICATOR_TEST_DSN", "postgresql://postgres@127.0.0.1/postgres")
    )
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--shape", choices=("narrow", "wide"), default="narrow", help="see Workload, WideWorkload")
    parser.add_argument(
        "--initial",
        type=int,
        default=None,
        help="rows before the backlog: per table for narrow (default 100,000), in all tables for wide "
        "(default 1,000,000, 80 %% of them in documents)",
    )
    parser.add_argument("--json-bytes", type=int, default=400, help="wide: the JSON documents' size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fastpath", action="store_true", help="also time the insert step three ways")
    parser.add_argument("--lag-seconds", type=float, default=0, help="also measure streaming lag for N seconds")
    parser.add_argument(
        "--lag-txn-rate",
        type=int,
        default=1_000,
        help="app transactions (1-5 rows each) per second during --lag-seconds",
    )
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="also drain each round's backlog with the code in DIR (PYTHONPATH; '.' for this checkout) on "
        "copies of the same data; ',NAME=VALUE' after DIR sets environment variables (e.g. "
        "REPLICATOR_APPLY__BATCH_ROWS=50000)",
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "REPLICATOR_LOG__LEVEL": "warning"}
    if args.batch_rows:
        env["REPLICATOR_APPLY__BATCH_ROWS"] = str(args.batch_rows)
    dsn = fresh_db(args.dsn)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        work = workload(args.shape, {}, args.json_bytes, args.seed)
        initial = args.initial or (1_000_000 if args.shape == "wide" else 100_000)
        build_source(path, work, initial, rng)
        drain(path, dsn, env)  # the snapshot (untimed)
        if args.fastpath:
            for variant, rate in fastpath(dsn).items():
                print(f"insert step, {variant}: {rate:,.0f} rows/s", flush=True)
        applied_rates, copy_rates, floor_rates, floor_all_rates, merged_rates, rss = [], [], [], [], [], []
        variants: list[Variant] = [("this", None, {})]
        for spec in args.compare:
            label, _, rest = spec.partition("=")
            code, *assignments = rest.split(",")
            extra = dict(a.split("=", 1) for a in assignments)
            variants.append((label, None if code == "." else str(Path(code).resolve()), extra))
        runs: dict[str, list[Drained]] = {label: [] for label, _, _ in variants}
        for round_no in range(1, args.rounds + 1):
            make_backlog(path, args.changes, work, rng)
            vacuum(dsn, work.tables)
            whole, batched = change_sets(path, dsn, args.batch_rows or DEFAULT_BATCH_ROWS, work.tables)
            distinct = sum(len(k) for k, _ in whole.values())
            distinct_batched = sum(len(k) for part in batched for k, _ in part.values())
            if len(variants) > 1:
                measured = compare_round(args.dsn, dsn, path, env, variants, reverse=round_no % 2 == 0)
                for label, run in measured.items():
                    runs[label].append(run)
                seconds, peak = measured["this"].seconds, measured["this"].rss_kib
            else:
                run = drain_measured(path, dsn, env)
                runs["this"].append(run)
                seconds, peak = run.seconds, run.rss_kib
            vacuum(dsn, work.tables)  # the references start from a vacuumed table too
            copy_seconds = raw_copy(dsn, args.changes, work, rng)
            floor_sql, floor_all = floor_batches(args.dsn, dsn, batched)
            merged_sql, _ = floor(dsn, [whole])
            del whole, batched
            applied_rates.append(args.changes / seconds)
            copy_rates.append(args.changes / copy_seconds)
            floor_rates.append(args.changes / floor_sql)
            floor_all_rates.append(args.changes / floor_all)
            merged_rates.append(args.changes / merged_sql)
            rss.append(peak)
            for label, done in runs.items():
                last = done[-1]
                print(
                    f"round {round_no} [{label}]: apply {args.changes:,} changes in {last.seconds:.2f} s "
                    f"= {args.changes / last.seconds:,.0f}/s; daemon CPU {last.cpu:.2f} s, PostgreSQL backends "
                    f"CPU {last.pg_cpu:.2f} s (peak RSS {last.rss_kib / 1024:.0f} MiB); "
                    f"ratio vs raw COPY {copy_seconds / last.seconds:.2f}x, vs floor {floor_sql / last.seconds:.2f}x, "
                    f"vs floor+staging {floor_all / last.seconds:.2f}x",
                    flush=True,
                )
            print(
                f"round {round_no}: raw COPY {args.changes / copy_seconds:,.0f} rows/s ({copy_seconds:.2f} s); "
                f"floor in the daemon's batches ({distinct_batched:,} keys) DELETE+INSERT from staged rows "
                f"{args.changes / floor_sql:,.0f} changes/s ({floor_sql:.2f} s), with the staging COPY "
                f"{args.changes / floor_all:,.0f} changes/s ({floor_all:.2f} s); whole backlog merged "
                f"({distinct:,} keys) {args.changes / merged_sql:,.0f} changes/s ({merged_sql:.2f} s)",
                flush=True,
            )
        if args.lag_seconds:
            spec: WorkloadSpec = (args.shape, dict(work.top), args.json_bytes, args.seed)
            m = lag(path, dsn, env, args.lag_seconds, args.lag_txn_rate, spec)
            lags = m.lags
            print(
                f"streaming lag, app at {args.lag_txn_rate:,} txn/s (1-5 rows each) for {args.lag_seconds:.0f} s: "
                f"achieved {m.txn_rate:,.0f} txn/s = {m.changes / args.lag_seconds:,.0f} changes/s; "
                f"p50 {lags[len(lags) // 2] * 1000:.0f} ms, p99 {lags[int(len(lags) * 0.99)] * 1000:.0f} ms, "
                f"max {lags[-1] * 1000:.0f} ms ({len(lags):,} commits); daemon peak RSS "
                f"{m.rss_peak_kib / 1024:.0f} MiB (sampled {min(m.rss_samples) / 1024:.0f}-"
                f"{max(m.rss_samples) / 1024:.0f} MiB), CPU {m.cpu:.1f} s; journal rows sampled "
                f"median {statistics.median(m.journal_rows):,.0f}, max {max(m.journal_rows):,}; -wal size "
                f"median {statistics.median(m.wal_bytes) / 2**20:.1f} MiB, max {max(m.wal_bytes) / 2**20:.1f} MiB",
                flush=True,
            )
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(conninfo_dbname(dsn))))
    if not applied_rates:
        return
    apply_median, copy_median = statistics.median(applied_rates), statistics.median(copy_rates)
    floor_median, floor_all_median = statistics.median(floor_rates), statistics.median(floor_all_rates)
    merged_median = statistics.median(merged_rates)
    if len(variants) > 1:
        for label, done in runs.items():
            rate = statistics.median(args.changes / r.seconds for r in done)
            print(
                f"median [{label}]: {rate:,.0f} changes/s, ratio {rate / copy_median:.2f}x of raw COPY, "
                f"{rate / floor_median:.2f}x of floor, {rate / floor_all_median:.2f}x of floor+staging, wall "
                f"{statistics.median(r.seconds for r in done):.2f} s, daemon CPU "
                f"{statistics.median(r.cpu for r in done):.2f} s, PostgreSQL CPU "
                f"{statistics.median(r.pg_cpu for r in done):.2f} s"
            )
    print(
        f"median: apply {apply_median:,.0f} changes/s, raw COPY {copy_median:,.0f} rows/s, floor "
        f"{floor_median:,.0f} changes/s, floor+staging {floor_all_median:,.0f} changes/s; ratio "
        f"{apply_median / copy_median:.2f}x of raw COPY, {apply_median / floor_median:.2f}x of floor, "
        f"{apply_median / floor_all_median:.2f}x of floor+staging, {apply_median / merged_median:.2f}x of the "
        f"merged floor ({merged_median:,.0f} changes/s); floor "
        f"is {floor_median / copy_median:.2f}x of raw COPY; "
        f"peak RSS {max(rss) / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
