"""Logical decoding as the rollback window's capture, measured on the tables and workloads the row triggers were
(bench/reverse_capture.py, bench/reverse_lag.py), so that issue 20's choice between the two has numbers.

    .venv/bin/python bench/reverse_logical.py --rows 1000000
    .venv/bin/python bench/reverse_logical.py --quick      # tiny sizes: a smoke run of the script, not a figure

**The server.** Logical decoding needs ``wal_level = logical``, and switching it needs a restart, so the bench
starts its own throwaway PostgreSQL 15 cluster (``initdb`` and ``pg_ctl`` from ``--pg-bin``, run as the
``postgres`` OS user when we are root; a temporary data directory, a free port on 127.0.0.1, trust auth) with
the settings that decide a commit's cost read from the server at ``--settings-from`` (shared_buffers,
synchronous_commit, fsync, max_wal_size, full_page_writes, wal_buffers, wal_compression, checkpoint_timeout,
commit_delay, wal_writer_delay; its locale too), never reconfiguring that server. The cluster is stopped and
deleted at the end, on an exception, Ctrl-C or SIGTERM too. ``--dsn`` uses an existing server at
``wal_level = logical`` instead (nothing restarted: the two ``@replica`` configurations are then skipped and
``capture@logical`` is measured, the ratios taken to ``none@logical``; its WAL figures include whatever else
writes there).

Set-up (untimed, once): bench/cutover.py's base (``--rows`` orders over rows/10 accounts), migrated and cut
over (bench/rollback.py's ``cut_over``), so the tables, keys (``REPLICA IDENTITY DEFAULT``: the primary key),
indexes and foreign key are PostgreSQL's as replicator made them.

**App-side cost** (bench/reverse_capture.py's pgbench scripts and runs: ``update``, ``insert``, ``mixed``
100-row transactions; ``--clients`` connections, ``--seconds`` each). Configurations:

* ``none@replica``: no trigger, ``wal_level = replica`` (the reference; the system server's level);
* ``capture@replica``: replicator's row triggers and key-only journal (:func:`replicator.state.reverse.install`,
  through reverse_capture.py's ``configure``), ``wal_level = replica``;
* ``none@logical``: no trigger, ``wal_level = logical``, no slot: what the level alone costs;
* ``logical``: ``wal_level = logical`` and a ``test_decoding`` slot streamed while the app writes by
  ``pg_recvlogical --start -f -`` into a reader thread of this process that counts the changes per table.
  The walsender's decoding is the server's cost of this choice; ``pg_recvlogical`` and the reader stand for
  the daemon and run on the same machine (as the daemon would on a single host), while the ``capture`` runs,
  as in reverse_capture.py, have no daemon reading the journal: on a machine with few cores that tilts the
  comparison against ``logical``.

Every (workload, configuration) runs once per round, configurations in alternating order from round to round.
Before each run: the triggers switched and the journals emptied, VACUUM and CHECKPOINT (reverse_capture.py's
``configure``), then the server restarted at the configuration's ``wal_level`` (every run, so that the runs
that change the level are not the only ones on a cold buffer cache), the two tables and their indexes
``pg_prewarm``-ed, and for ``logical`` the slot created and the stream seen flowing. After each run: the
journal holds one entry per row written (``capture``) or none (reverse_capture.py's ``check_journal``); for
``logical`` the stream held one decoded change per row written, and the consumer's backlog: WAL bytes the
walsender had not sent (sampled every 0.25 s during the run, and when pgbench stopped), and ``drain_s`` (a
transactional ``pg_logical_emit_message`` committed when pgbench stopped → its line read): a consumer that
does not keep up shows there, flagged above ``--behind-s``. Reported: median tps over ``--rounds``, the time
ratios to ``none@replica``, and the WAL each configuration writes per transaction (``pg_current_wal_lsn()``
before and after the run; on the throwaway cluster ``pg_waldump --stats`` splits it into records and the
full-page images that follow each run's CHECKPOINT, alike for all configurations; medians):
``wal_level = logical`` logs an UPDATE's new row whole (no prefix/suffix compression) and the old key of
DELETEs and key-moving UPDATEs (``REPLICA IDENTITY DEFAULT``; a table without a key would need ``FULL``, the
whole old row, not measured here); the triggers log their journal rows.

**Lag** (bench/reverse_lag.py's app: ``--lag-clients`` processes committing ``--rate`` transactions/s in all, each
one UPDATE of an account setting ``name = 'ts:<ns>'``, every ``--sample-every``-th on a probe row; its
``app_client``), ``wal_level = logical``, a fresh slot streamed by ``pg_recvlogical`` per round. A sample's lag:
the decoded line carrying its unique value read by this process − its commit acknowledged (CLOCK_MONOTONIC,
shared by the processes; the line can come before the app hears its commit acknowledged, so a lag can be
slightly negative). p50/p95/p99/max per round and medians of ``--lag-rounds``. This is the decoding lag
only: the change has reached the consumer, not SQLite. The reverse apply's SQLite write comes on top, as
bench/reverse_lag.py measures it end to end for the triggers (journal poll + read + SQLite commit), so the two
lag figures are not directly comparable: this one is a lower bound for a decoding-based reverse direction.

**What the numbers do not show** (the caveats of logical decoding for this tool):

* ``wal_level = logical`` takes a server restart, and many managed servers do not allow it (or only through a
  provider-specific parameter and a reboot): the triggers work on any PostgreSQL the app already runs on;
* a slot retains WAL from its ``restart_lsn`` while nothing consumes it: with the daemon down for a day of a
  days-long rollback window, the server's disk fills with WAL (``max_slot_wal_keep_size`` bounds it by
  invalidating the slot, i.e. by losing the window); the journal's backlog is table rows the daemon prunes;
* a decoded change is not part of the app's transaction: there is no journal row that the fence's commit
  makes final, so the rollback's last horizon must be an LSN read after the fence committed
  (``pg_current_wal_lsn()``), streamed up to before SQLite is un-fenced, and the reverse position kept as an
  LSN confirmed on the slot;
* DDL is not decoded (a column added on PostgreSQL during the window shows only as rows with a new shape);
* TRUNCATE is decoded only by ``pgoutput`` (``publish`` including it) and ``test_decoding``, not by every
  plugin; the triggers' ``AFTER TRUNCATE`` entry has no such dependency;
* the consumer here only counts lines; a reverse direction would also parse values back into SQLite's
  types from the plugin's text, which the trigger path avoids by reading the row at apply time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import cutover as cutover_bench  # bench/ is on sys.path when this file runs as a script
import psycopg
import reverse_capture
import reverse_lag
import structlog
from rollback import cleanup, cut_over

SLOT = f"bench_reverse_logical_{os.getpid()}"  # its own on a shared --dsn server too
REFERENCE = "none@replica"
CONFIGS = {"none@replica": "replica", "capture@replica": "replica", "none@logical": "logical", "logical": "logical"}
DSN_CONFIGS = {"none@logical": "logical", "capture@logical": "logical", "logical": "logical"}
SETTINGS = (
    "shared_buffers",
    "synchronous_commit",
    "fsync",
    "max_wal_size",
    "full_page_writes",
    "wal_buffers",
    "wal_compression",
    "checkpoint_timeout",
    "commit_delay",
    "wal_writer_delay",
)
QUICK = {
    **reverse_capture.QUICK,
    "lag_rounds": 1,
    "rate": 200.0,
    "lag_seconds": 3.0,
    "lag_clients": 2,
    "probe_rows": 50,
}
CHANGE = re.compile(rb"^table ([^:]+): (INSERT|UPDATE|DELETE|TRUNCATE):")
VALUE = re.compile(rb"'ts:(\d+)'")
WALDUMP_TOTAL = re.compile(r"^Total\s+(\d+)\s+(\d+) \[[\d.]+%\]\s+(\d+) \[[\d.]+%\]", re.MULTILINE)
MARKER = re.compile(rb"^message: transactional: 1 prefix: " + SLOT.encode() + rb", sz: \d+ content:(\S+)")


# ---------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reference_settings(dsn: str) -> tuple[dict[str, str], str, str]:
    """(settings, locale, encoding) of the reference server, read only."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        settings = {}
        for name in SETTINGS:
            row = conn.execute(f"SHOW {name}").fetchone()
            assert row is not None
            settings[name] = str(row[0])
        row = conn.execute(
            "SELECT datcollate, pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
    return settings, str(row[0]), str(row[1])


class Server:
    """Where the bench runs: its admin DSN, and whether (and how) it can switch ``wal_level``."""

    def __init__(self, admin: str) -> None:
        self.admin = admin

    @property
    def can_restart(self) -> bool:
        return False

    def restart(self, wal_level: str) -> None:
        if wal_level != self.wal_level():
            raise RuntimeError(f"the server at --dsn is at wal_level {self.wal_level()}, {wal_level} needed")

    def waldump(self, start: str, end: str) -> dict[str, int] | None:
        """WAL between two LSNs split into records and full-page images: not readable from a --dsn server."""
        return None

    def wal_level(self) -> str:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            row = conn.execute("SHOW wal_level").fetchone()
        return str(row[0]) if row else ""


class Throwaway(Server):
    """A PostgreSQL cluster of our own in a temporary directory, owned by the ``postgres`` OS user when we are
    root (the server refuses to run as root); restarted to switch ``wal_level``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="bench-reverse-logical-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.level: str | None = None
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        super().__init__(
            psycopg.conninfo.make_conninfo(host="127.0.0.1", port=str(self.port), user="postgres", dbname="postgres")
        )

    def init(self, settings: dict[str, str], locale: str, encoding: str) -> None:
        """initdb, then the reference's settings and ours appended to postgresql.conf (the file stays postgres's)."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
                  f"--locale={locale}", f"--encoding={encoding}")  # fmt: skip
        conf = {
            **settings,
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "max_wal_senders": "10",
            "max_replication_slots": "10",
        }
        with (self.data / "postgresql.conf").open("a") as f:
            f.write("\n# bench/reverse_logical.py\n")
            f.writelines(f"{k} = '{v.replace(chr(39), chr(39) * 2)}'\n" for k, v in conf.items())

    def _run(self, tool: str, *args: str, new_session: bool = False) -> None:
        done = subprocess.run(
            [*self.prefix, str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            cwd=self.root,
            check=False,
            start_new_session=new_session,  # Ctrl-C reaches us, not the postmaster: the cleanup stops it
        )
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr[-2000:]}{done.stdout[-1000:]}\n{log}")

    @property
    def can_restart(self) -> bool:
        return True

    def restart(self, wal_level: str) -> None:
        """Stop (if running) and start at ``wal_level``: each run starts from a freshly started server."""
        if self.level is not None:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "120", "stop")
            self.level = None
        opts = f"-c wal_level={wal_level}"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "120", "-o", opts, "start",
                  new_session=True)  # fmt: skip
        self.level = wal_level

    def wal_level(self) -> str:
        return self.level or ""

    def waldump(self, start: str, end: str) -> dict[str, int] | None:
        """``pg_waldump --stats`` of the range: its records' bytes and its full-page images' apart (the images
        follow the CHECKPOINT before each run, the same for every configuration, and would hide the rest)."""
        cmd = [str(self.bindir / "pg_waldump"), "-p", str(self.data / "pg_wal"), "-s", start, "-e", end, "--stats"]
        done = subprocess.run([*self.prefix, *cmd], capture_output=True, text=True, cwd=self.root, check=False)
        total = WALDUMP_TOTAL.search(done.stdout)
        if done.returncode != 0 or total is None:
            raise RuntimeError(f"pg_waldump failed: {done.stderr[-2000:]}{done.stdout[-1000:]}")
        return {"records": int(total.group(1)), "record_bytes": int(total.group(2)), "fpi_bytes": int(total.group(3))}

    def destroy(self) -> None:
        """Stop the server (fast; if that fails, its postmaster by the pid it wrote) and delete the directory."""
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists():
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        if pidfile.exists():
            with contextlib.suppress(Exception):
                pid = int(pidfile.read_text().split()[0])
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown of the postmaster we started
                for _ in range(100):
                    os.kill(pid, 0)  # raises once it is gone
                    time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def server(args: argparse.Namespace) -> Iterator[Server]:
    """The --dsn server as it is, or a throwaway cluster deleted on the way out, whatever the way out."""
    if args.dsn:
        found = Server(args.dsn)
        if found.wal_level() != "logical":
            raise SystemExit(f"--dsn: wal_level is {found.wal_level()}, logical needed")
        yield found
        return
    try:
        settings, locale, encoding = reference_settings(args.settings_from)
    except psycopg.Error as exc:
        print(f"could not read the reference server's settings ({exc}); PostgreSQL's defaults used")
        settings, locale, encoding = {}, "C.UTF-8", "UTF8"
    print(f"reference settings: {settings}, locale {locale}")
    own = Throwaway(Path(args.pg_bin))
    try:
        own.init(settings, locale, encoding)
        own.restart("replica")
        print(f"throwaway PostgreSQL at 127.0.0.1:{own.port}, data {own.data}")
        yield own
    finally:
        own.destroy()
        print(f"throwaway PostgreSQL stopped, {own.root} deleted: {not own.root.exists()}")


# ---------------------------------------------------------------- the consumer


class Consumer:
    """``pg_recvlogical --start -f -`` on the slot, its output read line by line by a thread of this process:
    decoded changes counted per (table, operation), when each ``'ts:<ns>'`` value first shows (``values``),
    when each of our markers shows. A transactional message emitted after the app's commits is decoded after
    them, so its arrival says the consumer has read everything committed before it."""

    def __init__(self, recvlogical: Path, dsn: str, stderr: Path, values: bool) -> None:
        self.changes: Counter[tuple[str, str]] = Counter()
        self.seen: dict[int, int] = {}
        self.markers: dict[str, int] = {}
        self._values = values
        self._cond = threading.Condition()
        self._err = stderr.open("w")
        options = ["-o", "include-xids=0", "-o", "skip-empty-xacts=1"]
        self.proc = subprocess.Popen(
            [str(recvlogical), "-d", dsn, "-S", SLOT, "--start", "-f", "-", "-s", "1", *options],
            stdout=subprocess.PIPE,
            stderr=self._err,
        )
        self.stderr = stderr
        self._thread = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, out: IO[bytes]) -> None:
        for line in out:
            now = time.monotonic_ns()
            if line.startswith(b"table "):
                change = CHANGE.match(line)
                if change:
                    self.changes[(change.group(1).decode(), change.group(2).decode())] += 1
                if self._values and (value := VALUE.search(line)):
                    self.seen.setdefault(int(value.group(1)), now)
            elif line.startswith(b"message:") and (marker := MARKER.match(line)):
                with self._cond:
                    self.markers[marker.group(1).decode()] = now
                    self._cond.notify_all()

    def mark(self, dsn: str, name: str, timeout_s: float) -> float:
        """Commit a marker and wait for its line: the seconds from its commit's acknowledgement to its line."""
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_logical_emit_message(true, %s, %s)", (SLOT, name))
            acknowledged = time.monotonic_ns()
        with self._cond:
            if not self._cond.wait_for(lambda: name in self.markers or self.proc.poll() is not None, timeout_s):
                raise RuntimeError(f"the consumer did not read marker {name} within {timeout_s}s")
        if name not in self.markers:
            raise RuntimeError(f"pg_recvlogical exited: {self.stderr.read_text()[-2000:]}")
        return max(0.0, self.markers[name] - acknowledged) / 1e9  # ≤ 0: read before the commit's ack arrived

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # pg_recvlogical's clean exit
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(timeout=30)
        self._err.close()


def backlog_bytes(dsn: str) -> int | None:
    """WAL the slot's walsender has not sent yet (None if it is not streaming)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), r.sent_lsn) FROM pg_stat_replication r "
            "JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = %s",
            (SLOT,),
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


@contextlib.contextmanager
def backlog_sampled(dsn: str, every_s: float = 0.25) -> Iterator[list[int]]:
    """The walsender's backlog every ``every_s`` while open (a consumer falling behind mid-run and catching up
    before the end marker shows here, not in ``drain_s``)."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(psycopg.Error):
                found = backlog_bytes(dsn)
                if found is not None:
                    samples.append(found)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=30)


@contextlib.contextmanager
def streaming(dsn: str, recvlogical: Path, work: Path, values: bool) -> Iterator[Consumer]:
    """A fresh slot and its consumer, seen flowing (a first marker read); both gone on the way out."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (SLOT,))
    consumer = Consumer(recvlogical, dsn, work / "pg_recvlogical.err", values)
    try:
        consumer.mark(dsn, "ready", 60)
        yield consumer
    finally:
        consumer.stop()
        drop_slot(dsn)


def drop_slot(dsn: str) -> None:
    """Once its walsender has gone (it outlives the client's exit by a moment)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(300):
            row = conn.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)).fetchone()
            if row is None:
                return
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (SLOT,))
                return
            time.sleep(0.1)
    raise RuntimeError(f"slot {SLOT} still active")


# ---------------------------------------------------------------- app-side cost


def lsn(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def wal_between(dsn: str, start: str, end: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (end, start)).fetchone()
    assert row is not None
    return int(row[0])


def prewarm(dsn: str) -> bool:
    """The two tables and their indexes into shared buffers (False if pg_prewarm is not there)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            conn.execute(
                "SELECT pg_prewarm(c) FROM (SELECT 'accounts'::regclass UNION ALL SELECT 'orders'::regclass "
                "UNION ALL SELECT indexrelid::regclass FROM pg_index "
                "WHERE indrelid IN ('accounts'::regclass, 'orders'::regclass)) AS r (c)"
            )
    except psycopg.Error:
        return False
    return True


def check_decoded(consumer: Consumer, workload: str, result: dict[str, float], clients: int) -> int:
    """One decoded change per row written, on the two tables only (reverse_capture.check_journal's slack)."""
    rows = reverse_capture.ROWS_PER_TXN[workload]
    written = int(result["processed"]) * rows
    ours = {k: n for k, n in consumer.changes.items() if k[0].split(".")[-1] in ("accounts", "orders")}
    got = sum(ours.values())
    other = sum(consumer.changes.values()) - got
    if other != 0 or abs(got - written) > clients * rows:
        raise RuntimeError(f"logical/{workload}: {dict(consumer.changes)} decoded, {written} rows written")
    return got


def app_run(
    srv: Server, dsn: str, config: str, level: str, workload: str, files: dict[str, Path], ctx: dict[str, Any]
) -> dict[str, Any]:
    """One pgbench run of ``workload`` under ``config``, its WAL, and for ``logical`` the stream's counts."""
    args = ctx["args"]
    capture = config.startswith("capture")
    reverse_capture.configure(dsn, "capture" if capture else "none")
    srv.restart(level)
    warmed = prewarm(dsn)
    with contextlib.ExitStack() as stack:
        consumer = None
        if config == "logical":
            consumer = stack.enter_context(streaming(dsn, ctx["recvlogical"], ctx["work"], values=False))
        backlog: list[int] = stack.enter_context(backlog_sampled(dsn)) if consumer is not None else []
        start = lsn(dsn)
        result: dict[str, Any] = reverse_capture.pgbench(ctx["pgbench"], dsn, files[workload], ctx["variables"], args)
        end = lsn(dsn)
        result["wal_bytes"] = wal_between(dsn, start, end)
        txns = max(1, result["processed"])
        result["wal_per_txn"] = round(result["wal_bytes"] / txns, 1)
        dumped = srv.waldump(start, end)
        if dumped is not None:
            result["wal_records_per_txn"] = round(dumped["records"] / txns, 2)
            result["wal_record_bytes_per_txn"] = round(dumped["record_bytes"] / txns, 1)
            result["wal_fpi_bytes_per_txn"] = round(dumped["fpi_bytes"] / txns, 1)
        result["prewarmed"] = warmed
        if consumer is not None:
            result["backlog_bytes"] = backlog_bytes(dsn)
            result["backlog_bytes_max"] = max([result["backlog_bytes"] or 0, *backlog])
            result["drain_s"] = round(consumer.mark(dsn, "end", args.drain_timeout), 3)
            result["decoded"] = check_decoded(consumer, workload, result, args.clients)
    reverse_capture.check_journal(dsn, "capture" if capture else "none", workload, result, args.clients)
    return result


# ---------------------------------------------------------------- lag


def lag_round(srv: Server, dsn: str, accounts: int, ctx: dict[str, Any]) -> dict[str, Any]:
    """reverse_lag.py's app at ``--rate``; each sample's value looked up in the decoded stream."""
    args = ctx["args"]
    reverse_capture.configure(dsn, "none")
    srv.restart("logical")
    prewarm(dsn)
    with streaming(dsn, ctx["recvlogical"], ctx["work"], values=True) as consumer:
        mp = multiprocessing.get_context("spawn")  # this process has the reader thread: no fork
        out: Any = mp.Queue()
        n = args.lag_clients
        split = [list(range(1 + c, args.probe_rows + 1, n)) for c in range(n)]
        clients = [
            mp.Process(
                target=reverse_lag.app_client,
                args=(dsn, args.rate / n, split[c], accounts, args.sample_every, args.lag_seconds, out),
            )
            for c in range(n)
        ]
        with backlog_sampled(dsn) as sampled:
            for c in clients:
                c.start()
            results = [out.get(timeout=args.lag_seconds + 120) for _ in clients]
        for c in clients:
            c.join()
        backlog = backlog_bytes(dsn)
        drain = consumer.mark(dsn, "end", args.drain_timeout)
        seen = dict(consumer.seen)
    samples = [s for r in results for s in r[1]]
    measured = [(seen[value] - acknowledged) / 1e6 for _, value, acknowledged in samples if value in seen]
    commits = sum(r[0] for r in results)
    elapsed = max(r[3] for r in results)

    def pct(p: float) -> float | None:
        return round(reverse_lag.percentile(measured, p), 2) if measured else None

    return {
        "commits": commits,
        "errors": sum(r[2] for r in results),
        "achieved_rate": round(commits / elapsed, 1),
        "samples": len(samples),
        "unseen": len(samples) - len(measured),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(max(measured), 2) if measured else None,
        "min_ms": round(min(measured), 2) if measured else None,
        "backlog_bytes": backlog,
        "backlog_bytes_max": max([backlog or 0, *sampled]),
        "drain_s": round(drain, 3),
    }


# ---------------------------------------------------------------- main


def med(values: list[Any]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(statistics.median(kept), 2) if kept else None


def wal_cell(w: dict[str, Any], config: str) -> str:
    """WAL per transaction: its records' bytes (without full-page images) when pg_waldump could read them."""
    records = w["wal_record_bytes_per_txn"][config]
    if records is None:
        return f"{w['wal_bytes_per_txn'][config]:,.0f} B WAL/txn"
    return f"{records:,.0f} B WAL records/txn + {w['wal_fpi_bytes_per_txn'][config]:,.0f} B FPI"


def summarize(
    args: argparse.Namespace, configs: dict[str, str], runs: dict[str, dict[str, list[dict[str, Any]]]]
) -> dict[str, Any]:
    reference = REFERENCE if REFERENCE in configs else "none@logical"
    out: dict[str, Any] = {}
    for workload, by_config in runs.items():
        tps = {c: statistics.median(r["tps"] for r in by_config[c]) for c in configs}
        logical = by_config.get("logical", [])
        out[workload] = {
            "rows_per_txn": reverse_capture.ROWS_PER_TXN[workload],
            "tps": {c: round(v, 1) for c, v in tps.items()},
            f"time_over_{reference}": {c: round(tps[reference] / v, 3) for c, v in tps.items()},
            "wal_bytes_per_txn": {c: med([r["wal_per_txn"] for r in by_config[c]]) for c in configs},
            "wal_record_bytes_per_txn": {
                c: med([r.get("wal_record_bytes_per_txn") for r in by_config[c]]) for c in configs
            },
            "wal_fpi_bytes_per_txn": {c: med([r.get("wal_fpi_bytes_per_txn") for r in by_config[c]]) for c in configs},
            "wal_records_per_txn": {c: med([r.get("wal_records_per_txn") for r in by_config[c]]) for c in configs},
            "logical_consumer": {
                "drain_s_max": max((r["drain_s"] for r in logical), default=None),
                "backlog_bytes_max": max((r["backlog_bytes_max"] for r in logical), default=None),
                "behind": [r["drain_s"] for r in logical if r["drain_s"] > args.behind_s],
            },
            "per_round_tps": {c: [r["tps"] for r in by_config[c]] for c in configs},
        }
    return out


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="an existing server at wal_level=logical (default: a throwaway cluster)")
    parser.add_argument(
        "--settings-from",
        default=os.environ.get("REPLICATOR_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="the server whose settings the throwaway cluster copies (read only)",
    )
    parser.add_argument("--pg-bin", default="/usr/lib/postgresql/15/bin", help="initdb, pg_ctl, pg_recvlogical")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10, help="pgbench -T of each run")
    parser.add_argument("--clients", type=int, default=4, help="pgbench -c")
    parser.add_argument("--jobs", type=int, default=2, help="pgbench -j")
    parser.add_argument("--workloads", default=",".join(reverse_capture.WORKLOADS))
    parser.add_argument("--synchronous-commit", choices=("on", "off"), default="on", help="the app's setting")
    parser.add_argument("--pgbench", help="the pgbench binary (default: on PATH, else /usr/lib/postgresql/*/bin)")
    parser.add_argument("--lag-rounds", type=int, default=3, help="0: no lag measurement")
    parser.add_argument("--rate", type=float, default=1000.0, help="lag: app transactions per second, all clients")
    parser.add_argument("--lag-clients", type=int, default=4, help="lag: app processes")
    parser.add_argument("--lag-seconds", type=float, default=30.0, help="lag: app load per round")
    parser.add_argument("--sample-every", type=int, default=10, help="lag: every Nth commit of a client is a sample")
    parser.add_argument("--probe-rows", type=int, default=200, help="lag: accounts 1..N carry the samples")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="seconds to wait for the consumer")
    parser.add_argument("--behind-s", type=float, default=1.0, help="a consumer this far behind is reported")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, short runs: a smoke run, not a figure")
    if parser.parse_known_args()[0].quick:  # tiny defaults; flags given explicitly still win
        parser.set_defaults(**QUICK)
    args = parser.parse_args()
    args.workload_list = [w for w in args.workloads.split(",") if w]
    if unknown := sorted(set(args.workload_list) - set(reverse_capture.WORKLOADS)):
        parser.error(f"unknown workload(s) {', '.join(unknown)}")
    args.pgbench_binary = reverse_capture.find_pgbench(args.pgbench or str(Path(args.pg_bin) / "pgbench"))
    if not (Path(args.pg_bin) / "pg_recvlogical").exists():
        parser.error(f"no pg_recvlogical in {args.pg_bin} (--pg-bin)")
    if args.probe_rows + args.lag_clients >= max(1, args.rows // 10):
        parser.error("--probe-rows must leave accounts for the other commits")
    return args


def main() -> None:
    args = parse()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally blocks: the cluster goes
    variables = reverse_capture.pgbench_variables(args.rows, args.clients)
    configs = DSN_CONFIGS if args.dsn else CONFIGS
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {w: {c: [] for c in configs} for w in args.workload_list}
    lag_rounds: list[dict[str, Any]] = []
    with server(args) as srv, tempfile.TemporaryDirectory(prefix="bench-reverse-logical-") as tmp:
        work = Path(tmp)
        base = work / "base.db"
        started = time.monotonic()
        cutover_bench.build_base(base, args.rows)
        print(f"base: {args.rows:,} rows, built in {time.monotonic() - started:.1f}s")
        source, dsn, setup_s = cut_over(base, work, srv.admin, 0)
        print(f"migrated and cut over in {setup_s:.1f}s; pgbench {args.clients} clients, {args.seconds}s runs")
        files = {}
        for name, text in reverse_capture.scripts().items():
            files[name] = work / f"{name}.sql"
            files[name].write_text(text)
        ctx = {
            "args": args,
            "work": work,
            "variables": variables,
            "pgbench": args.pgbench_binary,
            "recvlogical": Path(args.pg_bin) / "pg_recvlogical",
        }
        try:
            for r in range(args.rounds):
                order = list(configs) if r % 2 == 0 else list(reversed(configs))
                for workload in args.workload_list:
                    for config in order:
                        result = app_run(srv, dsn, config, configs[config], workload, files, ctx)
                        runs[workload][config].append(result)
                        print(f"round {r + 1} {workload:<6} {config:<15} {result}")
                        if result.get("drain_s", 0) > args.behind_s:
                            print(f"  consumer behind: {result['drain_s']}s to read the end marker")
            for n in range(args.lag_rounds):
                lr = lag_round(srv, dsn, variables["naccounts"], ctx)
                print(f"lag round {n + 1}: {lr}")
                if lr["drain_s"] > args.behind_s or lr["unseen"]:
                    print(f"  consumer behind: {lr['drain_s']}s to read the end marker, {lr['unseen']} samples unseen")
                lag_rounds.append(lr)
        finally:
            with contextlib.suppress(Exception):
                drop_slot(dsn)
            if not srv.can_restart:
                cleanup(srv.admin, source, dsn)
    summary: dict[str, Any] = {
        "benchmark": "reverse_logical",
        "server": "--dsn" if args.dsn else "throwaway PostgreSQL 15",
        "rows": args.rows,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "clients": args.clients,
        "synchronous_commit": args.synchronous_commit,
        "workloads": summarize(args, configs, runs),
    }
    if lag_rounds:
        summary["lag"] = {
            "decoding_only": True,
            "rate": args.rate,
            "rounds": len(lag_rounds),
            **{k: med([r[k] for r in lag_rounds]) for k in ("achieved_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms")},
            "unseen": sum(r["unseen"] for r in lag_rounds),
            "drain_s_max": max(r["drain_s"] for r in lag_rounds),
            "backlog_bytes_max": max(r["backlog_bytes_max"] for r in lag_rounds),
            "per_round": lag_rounds,
        }
    print(json.dumps(summary, indent=2))
    for workload, w in summary["workloads"].items():
        ratios = next(v for k, v in w.items() if k.startswith("time_over_"))
        cells = ", ".join(f"{c} {w['tps'][c]:,.0f} tps ({ratios[c]:.2f}×, {wal_cell(w, c)})" for c in configs)
        consumer = w["logical_consumer"]
        behind = f"; BEHIND in {len(consumer['behind'])} run(s)" if consumer["behind"] else ""
        print(
            f"{workload}: {cells}; consumer drain max {consumer['drain_s_max']}s, "
            f"backlog max {consumer['backlog_bytes_max']} B{behind}"
        )
    if lag_rounds:
        lag = summary["lag"]
        print(
            f"decoding lag (to the consumer, not SQLite), median of {lag['rounds']} round(s) at "
            f"{lag['achieved_rate']} txn/s: p50 {lag['p50_ms']} ms, p95 {lag['p95_ms']} ms, p99 {lag['p99_ms']} ms, "
            f"max {lag['max_ms']} ms; unseen {lag['unseen']}; consumer backlog max {lag['backlog_bytes_max']} B, "
            f"drain max {lag['drain_s_max']}s"
        )


if __name__ == "__main__":
    main()
