"""The ``replicator`` command line: thin by design.

Each command parses its options, calls one library function and renders its result. Errors from
any of our packages become one line on stderr (``error: what — what to do``) and the exit code the
error carries: 0 ok, 1 operational failure, 2 usage or bad input, 3 verification mismatch. The
traceback is shown only with ``-v``.
"""

from __future__ import annotations

import functools
import sqlite3
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import click
import msgspec
import psycopg.errors

from replicator import __version__, config, log, pg
from replicator.errors import EXIT_FAILURE, EXIT_USAGE, OperatorError, ReplicatorError, UsageError
from triggers import source as sqlite_source
from triggers.errors import CaptureError

if TYPE_CHECKING:
    from replicator.inspect.verify_compare import TableVerify

F = TypeVar("F", bound=Callable[..., Any])


class Context(msgspec.Struct):
    """What every command receives: the effective config and the output switches."""

    config: config.Config
    verbose: int
    quiet: bool

    @property
    def source(self) -> Path:
        if not self.config.source.path:
            raise UsageError("no source SQLite file given", hint="pass --source app.db or set REPLICATOR_SOURCE")
        return Path(self.config.source.path)

    @property
    def target(self) -> str:
        if not self.config.target.dsn:
            raise UsageError(
                "no target PostgreSQL given",
                hint="pass --target postgresql://user@host/db or set REPLICATOR_TARGET",
            )
        return self.config.target.dsn


def fail(exc: BaseException, verbose: int, source: str | None = None) -> NoReturn:
    """Print one line for the operator (plus the traceback with -v) and exit with the error's code."""
    original = exc
    if isinstance(exc, sqlite3.Error):  # escaped a module's own mapping: corrupt, locked, read-only
        exc = sqlite_source.translate(exc, source or "the source")
    if isinstance(exc, OperatorError):
        message, hint, code = exc.message, exc.hint, exc.exit_code
    elif isinstance(exc, psycopg.errors.InsufficientPrivilege):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "permission denied"
        message = f"PostgreSQL refused: {first}"
        hint, code = "grant the role the privileges listed in docs/least-privilege.md", EXIT_FAILURE
    else:
        message, hint, code = f"unexpected {type(exc).__name__}: {exc}", "rerun with -v and report it", EXIT_FAILURE
    if verbose:
        click.echo(log.redact("".join(traceback.format_exception(original))), err=True)
    line = f"error: {message}" + (f" — {hint}" if hint else "")
    click.echo(log.redact(" ".join(line.split())), err=True)
    sys.exit(code)


def common_options(func: F) -> F:
    """``--source --target --config --log-format -v -q`` on every command, resolved to a Context."""

    @click.option(
        "--source",
        "source",
        type=click.Path(path_type=Path),
        envvar="REPLICATOR_SOURCE",
        help="The application's SQLite file [env REPLICATOR_SOURCE].",
    )
    @click.option(
        "--target", "target", envvar="REPLICATOR_TARGET", metavar="DSN", help="PostgreSQL URI [env REPLICATOR_TARGET]."
    )
    @click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path),
        help="TOML config file [default: ./replicator.toml if present].",
    )
    @click.option(
        "--log-format",
        type=click.Choice(["auto", "console", "json"]),
        default=None,
        help="Log output: console on a terminal, JSON otherwise.",
    )
    @click.option("-v", "--verbose", count=True, help="More log output; tracebacks on errors.")
    @click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
    @functools.wraps(func)
    def wrapper(
        source: Path | None,
        target: str | None,
        config_file: Path | None,
        log_format: str | None,
        verbose: int,
        quiet: bool,
        **kwargs: Any,
    ) -> Any:
        try:
            overrides: dict[str, Any] = {}
            if source is not None:
                overrides.setdefault("source", {})["path"] = str(source)
            if target is not None:
                overrides.setdefault("target", {})["dsn"] = target
            if log_format is not None:
                overrides.setdefault("log", {})["format"] = log_format
            if verbose:
                overrides.setdefault("log", {})["level"] = "debug"
            elif quiet:
                overrides.setdefault("log", {})["level"] = "warning"
            cfg = config.load(config_file, overrides=overrides)
            log.register_secret(pg.password(cfg.target.dsn))
            log.configure(cfg.log.format, cfg.log.level)
            return func(Context(config=cfg, verbose=verbose, quiet=quiet), **kwargs)
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was left half-written; rerun the command to continue", err=True)
            sys.exit(130)
        except SystemExit:
            raise
        except click.exceptions.ClickException:
            raise
        except Exception as exc:  # the one place where every error becomes an exit code
            fail(exc, verbose, str(source) if source is not None else None)

    return cast(F, wrapper)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="replicator")
def cli() -> None:
    """Move a live application from SQLite to PostgreSQL with near-zero downtime.

    Exit codes: 0 ok, 1 operational failure, 2 usage or bad input, 3 verification mismatch.
    """


@cli.command()
@common_options
@click.option(
    "--json",
    "json_out",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the report as JSON to this file ('-' for stdout).",
)
@click.option(
    "--mode",
    type=click.Choice(["existing"]),
    default=None,
    help="existing: also map onto the --target schema the app's migrations created and convert every row "
    "without writing: every schema problem and every column a snapshot would refuse, at once (exit 1 if any).",
)
def analyze(ctx: Context, json_out: Path | None, mode: str | None) -> None:
    """Report what is about to be migrated and what will bite: tables, keys, storage classes, formats."""
    from replicator.plan import analyze as analyze_mod

    report = analyze_mod.analyze(ctx.source, busy_timeout_ms=ctx.config.source.busy_timeout_ms)
    refused = 0
    if mode == "existing":
        from replicator.load import preflight

        found = preflight.check_existing(ctx.source, ctx.target, ctx.config)
        refused = len(found)
        report = msgspec.structs.replace(report, findings=(*found, *report.findings))
    if json_out is not None and str(json_out) == "-":
        sys.stdout.write(analyze_mod.to_json(report) + "\n")
    elif json_out is not None:
        analyze_mod.write_json(report, json_out)
    if not ctx.quiet and (json_out is None or str(json_out) != "-"):
        analyze_mod.render(report)
    if refused:
        raise ReplicatorError(
            f"{refused} problem(s) would stop a snapshot into the existing schema (listed above)",
            hint="apply each one's fix, then run analyze --mode existing again",
        )


def _with_snapshot_options(ctx: Context, identifiers: str | None) -> config.Config:
    """The context's config with ``--identifiers`` applied (flags win over file and environment)."""
    if identifiers is None:
        return ctx.config
    snap = msgspec.structs.replace(ctx.config.snapshot, identifiers=identifiers)
    return msgspec.structs.replace(ctx.config, snapshot=snap)


@cli.command()
@common_options
@click.option(
    "--print", "print_only", is_flag=True, help="Print the DDL instead of applying it (default without --target)."
)
@click.option(
    "--identifiers",
    type=click.Choice(["keep", "downcase"]),
    default=None,
    help="Keep names' case (default) or downcase them.",
)
@click.option("--replace", is_flag=True, help="Drop and recreate tables that already exist in the target schema.")
def schema(ctx: Context, print_only: bool, identifiers: str | None, replace: bool) -> None:
    """Translate the SQLite schema to PostgreSQL DDL: print it, or apply it to --target (no data)."""
    from replicator.load import snapshot
    from replicator.plan import pgschema

    cfg = _with_snapshot_options(ctx, identifiers)
    conn = snapshot.open_source(ctx.source, cfg)
    try:
        read = snapshot.read_source(conn)
    finally:
        conn.close()
    plan = pgschema.plan_create(read.schema, read.profiles, cfg)
    if print_only or not cfg.target.dsn:
        sys.stdout.write(pgschema.render_script(plan))
        return
    warnings = pgschema.apply_schema(ctx.target, plan, replace=replace)
    if not ctx.quiet:
        click.echo(f"created {len(plan.tables)} table(s) in schema {plan.schema}; {len(warnings)} warning(s)")
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)


@cli.command()
@common_options
@click.option(
    "--mode",
    type=click.Choice(["auto", "create", "existing"]),
    default=None,
    help="create: generate the schema; existing: load into the app's own; auto: create if the target schema is empty.",
)
@click.option(
    "--on-bad-value",
    type=click.Choice(["stop", "quarantine"]),
    default=None,
    help="stop at the first value PostgreSQL cannot hold exactly, or skip its row and record it in the quarantine.",
)
@click.option(
    "--identifiers",
    type=click.Choice(["keep", "downcase"]),
    default=None,
    help="Keep names' case (default) or downcase them (create mode).",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Reload everything: drop (create mode) or empty (existing mode: TRUNCATE, the app's schema stays; "
    "e.g. rows its migrations seeded) the tables; clears the earlier snapshot's state and checkpoint chain. "
    "With --tables on a target that streams: reload only those tables (planned again from SQLite as it is "
    "now); the chain and every other table keep their position.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted snapshot of the same source: finished tables are skipped, the interrupted "
    "one is reloaded from scratch.",
)
@click.option("--tables", "tables", multiple=True, metavar="NAME[,NAME]", help="Only these SQLite tables (repeatable).")
def snapshot(
    ctx: Context,
    mode: str | None,
    on_bad_value: str | None,
    identifiers: str | None,
    replace: bool,
    resume: bool,
    tables: tuple[str, ...],
) -> None:
    """Load every table into PostgreSQL by binary COPY, one transaction per table, then build indexes.

    With capture installed, records the journal's high-water mark and the genesis checkpoint.
    """
    from replicator import progress
    from replicator.load import snapshot as snapshot_mod

    cfg = _with_snapshot_options(ctx, identifiers)
    names = [n for item in tables for n in item.split(",") if n] or None
    with progress.shown(cfg, quiet=ctx.quiet, component="snapshot") as shown:
        result = snapshot_mod.snapshot(
            ctx.source,
            ctx.target,
            cfg,
            mode=mode,
            on_bad_value=on_bad_value,
            replace=replace,
            resume=resume,
            tables=names,
            progress=shown,
        )
    if not ctx.quiet:
        snapshot_mod.render(result)


@cli.command()
@common_options
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="New directory (or .tar file with --tar) for the export; never overwritten.",
)
@click.option("--tar", is_flag=True, help="Write one uncompressed tar file instead of a directory.")
def export(ctx: Context, out: Path, tar: bool) -> None:
    """Export every table to JSON Lines (exact values) with a SHA-256 manifest, from one read transaction."""
    from replicator import progress
    from replicator.load import export as export_mod

    with progress.shown(ctx.config, quiet=ctx.quiet, component="export") as shown:
        result = export_mod.export(ctx.source, out, ctx.config, tar=tar, progress=shown)
    if not ctx.quiet:
        m = result.manifest
        rows = sum(t.rows for t in m.tables)
        click.echo(f"exported {len(m.tables)} table(s), {rows:,} rows to {result.path} in {m.seconds:.2f}s")


@cli.command("verify-export")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def verify_export(path: Path, as_json: bool, quiet: bool) -> None:
    """Check an export: files, SHA-256s, counts, row shapes, unique non-null keys, no FK orphans (exit 3)."""
    from replicator.load import export as export_mod

    try:
        report = export_mod.verify_export(path)
        if as_json:
            click.echo(msgspec.json.encode(report).decode())
        elif not quiet:
            for problem in report.problems:
                click.echo(f"mismatch: {problem}")  # the report; stderr holds the one error line
            if report.ok:
                click.echo(f"export {path} verifies: {report.tables} table(s), {report.rows:,} rows")
        if not report.ok:
            raise export_mod.ExportError(list(report.problems))
    except OperatorError as exc:
        fail(exc, 0)


@cli.command("import")
@common_options
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--mode",
    type=click.Choice(["auto", "create", "existing"]),
    default=None,
    help="create: generate the schema; existing: load into the app's own; auto: create if the target schema is empty.",
)
@click.option("--on-bad-value", type=click.Choice(["stop", "quarantine"]), default=None, help="As for snapshot.")
@click.option(
    "--replace",
    is_flag=True,
    help="Reload tables that already hold rows: drop (create mode) or empty (existing mode: TRUNCATE, "
    "e.g. rows the app's migrations seeded) them first.",
)
@click.option("--single-transaction", is_flag=True, help="One transaction for everything instead of one per table.")
@click.option("--dry-run", is_flag=True, help="Do everything, then roll back: nothing is committed.")
def import_(
    ctx: Context,
    path: Path,
    mode: str | None,
    on_bad_value: str | None,
    replace: bool,
    single_transaction: bool,
    dry_run: bool,
) -> None:
    """Load an export into PostgreSQL through the snapshot's binary COPY path, checksums verified first."""
    from replicator import progress
    from replicator.load import importer

    with progress.shown(ctx.config, quiet=ctx.quiet, component="import") as shown:
        result = importer.import_export(
            path,
            ctx.target,
            ctx.config,
            mode=mode,
            on_bad_value=on_bad_value,
            replace=replace,
            single_transaction=single_transaction,
            dry_run=dry_run,
            progress=shown,
        )
    if not ctx.quiet:
        importer.render(result)


@cli.group("checkpoints")
def checkpoints_group() -> None:
    """Inspect, verify, export and compact the hash-chained checkpoint record."""


@checkpoints_group.command("list")
@common_options
@click.option("--since", type=int, default=None, metavar="N", help="Only checkpoints numbered above N (next page).")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N", help="At most N checkpoints.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def checkpoints_list(ctx: Context, since: int | None, limit: int | None, as_json: bool) -> None:
    """List checkpoints in number order: kind, journal range, rows written, time and hash."""
    from checkpoints import report, store
    from replicator import pg

    with pg.connect(ctx.target, autocommit=True, connect_timeout=ctx.config.target.connect_timeout_s) as conn:
        found = store.read(conn, since, limit, schema=ctx.config.target.state_schema)
    if as_json:
        click.echo(report.as_json(found))
    else:
        report.render_list(found, report.console())


@checkpoints_group.command("show")
@common_options
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def checkpoints_show(ctx: Context, number: int, as_json: bool) -> None:
    """Show one checkpoint in full, with its per-table counts and digests."""
    from checkpoints import report, store
    from replicator import pg

    with pg.connect(ctx.target, autocommit=True, connect_timeout=ctx.config.target.connect_timeout_s) as conn:
        found = store.get(conn, number, schema=ctx.config.target.state_schema)
    if as_json:
        click.echo(report.as_json(found))
    else:
        report.render_show(found, report.console())


@checkpoints_group.command("verify")
@common_options
@click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Verify an export instead of the database (no database needed).",
)
@click.option(
    "--against",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Also check that an earlier export is still wholly in the chain (catches a cut-off or rewritten chain).",
)
def checkpoints_verify(ctx: Context, file: Path | None, against: Path | None) -> None:
    """Verify the hash chain; on failure print every finding and exit 3.

    Against the database it also checks what the chain alone cannot show: the phase row's applied seq
    and, with --source, the anchor the daemon keeps in SQLite and the journal above the chain's head
    (checkpoints cut off, swapped, journal entries deleted by hand).
    """
    from checkpoints import audit, report
    from checkpoints.errors import ChainBroken
    from replicator import pg
    from replicator.state import integrity

    extra: list[str] = []
    if file is not None:
        result = audit.report_file(file, against=against)
        where = str(file)
    else:
        with pg.connect(ctx.target, autocommit=True, connect_timeout=ctx.config.target.connect_timeout_s) as conn:
            result, extra = integrity.verify_target(conn, ctx.config, _optional_source(ctx), against=against)
        where = pg.describe(ctx.target)
    if result.findings or extra:
        report.render_findings(result.findings, report.console())
        for line in extra:
            click.echo(f"tampered: {line}")
        raise ChainBroken(
            f"the checkpoint chain in {where} does not verify: {len(result.findings) + len(extra)} finding(s)",
            hint=_chain_hint(result.cutover),
        )
    if not ctx.quiet:
        head = f", head {result.head} {result.head_hash}" if result.head is not None else ""
        click.echo(f"ok: {result.count} checkpoint(s) in {where} verify{head}")


def _chain_hint(cutover: int | None) -> str:
    """What to do about a chain that does not verify, before the cutover and after it."""
    if cutover is None:
        return "each is listed above; export the chain before changing anything, and do not cut over"
    return (
        f"each is listed above; the migration was cut over (checkpoint {cutover}): keep this chain and the "
        "certificate as they are, as evidence, and check them together with `replicator audit`"
    )


def _optional_source(ctx: Context) -> Path | None:
    return Path(ctx.config.source.path) if ctx.config.source.path else None


@checkpoints_group.command("export")
@common_options
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
def checkpoints_export(ctx: Context, file: Path) -> None:
    """Write the chain to FILE as JSON Lines plus a head line, for an auditor (see verify --file)."""
    from checkpoints import audit
    from replicator import pg

    with pg.connect(ctx.target, autocommit=True, connect_timeout=ctx.config.target.connect_timeout_s) as conn:
        head = audit.export(conn, file, schema=ctx.config.target.state_schema)
    if not ctx.quiet:
        click.echo(f"exported {head.count} checkpoint(s) to {file}, head {head.number} {head.hash}")


@checkpoints_group.command("compact")
@common_options
@click.option("--upto", type=int, required=True, metavar="N", help="Replace checkpoints numbered N and below.")
def checkpoints_compact(ctx: Context, upto: int) -> None:
    """Replace old checkpoints with one compaction record; the rest of the chain still verifies."""
    from checkpoints import audit
    from replicator import pg

    with pg.connect(ctx.target, autocommit=True, connect_timeout=ctx.config.target.connect_timeout_s) as conn:
        base = audit.compact(conn, upto, schema=ctx.config.target.state_schema)
    if not ctx.quiet and base.compaction is not None:
        c = base.compaction
        click.echo(
            f"compacted checkpoints {c.first}..{c.last} ({c.count}) into checkpoint {base.number}; "
            f"hashes digest {c.hashes_digest}"
        )


@cli.group("capture")
def capture_group() -> None:
    """Capture triggers and the key-only change journal in the app's SQLite file."""


@capture_group.command("install")
@common_options
@click.option(
    "--no-key-policy",
    type=click.Choice(["refuse", "rowid", "snapshot-only"]),
    default=None,
    help="Tables without a usable primary key [default: capture.no_key_policy, i.e. refuse].",
)
@click.option(
    "--stamp-time",
    is_flag=True,
    help="Triggers also write a timestamp, so status shows lag in seconds (costs ~0.6 µs per app statement).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the install report as JSON.")
def capture_install(ctx: Context, no_key_policy: str | None, stamp_time: bool, as_json: bool) -> None:
    """Install (or reconcile) the capture triggers in one transaction; safe to rerun."""
    from triggers import install as capture

    policy = cast(capture.Policy, no_key_policy or ctx.config.capture.no_key_policy)
    report = capture.install(
        ctx.source,
        default_policy=policy,
        policies=dict(ctx.config.capture.tables),
        busy_timeout_ms=ctx.config.source.busy_timeout_ms,
        stamp_time=stamp_time,
    )
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
        return
    if ctx.quiet:
        return
    click.echo(f"capture format {report.format_version}, source id {report.source_id}")
    for table in report.tables:
        key = ", ".join(table.key_columns) if table.key_columns else ("rowid" if table.mode == "rowid" else "-")
        mark = "changed" if table.name in report.changed else "ok"
        note = f" ({table.note})" if table.note else ""
        click.echo(f"  {mark:8} {table.name}: {table.mode} by {key}, generation {table.generation}{note}")
    for skipped in report.skipped:
        click.echo(f"  skipped  {skipped.name}: {skipped.reason}")
    for orphan in report.dropped_orphans:
        click.echo(f"  dropped  stale trigger {orphan}")


@capture_group.command("remove")
@common_options
def capture_remove(ctx: Context) -> None:
    """Drop our triggers, journal and meta table; the app's schema is left exactly as it was."""
    from triggers import install as capture

    report = capture.remove(ctx.source, busy_timeout_ms=ctx.config.source.busy_timeout_ms)
    if not ctx.quiet:
        click.echo(
            f"removed {report.triggers_dropped} trigger(s) and a journal of {report.journal_rows_dropped} row(s)"
            + (f" ({report.note})" if report.note else "")
        )


@capture_group.command("status")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def capture_status(ctx: Context, as_json: bool) -> None:
    """Per-table capture state and the journal's size and backlog; exit 1 if a table lost its triggers."""
    from triggers import install as capture

    status = capture.status(ctx.source, busy_timeout_ms=ctx.config.source.busy_timeout_ms)
    if as_json:
        click.echo(msgspec.json.encode(status).decode())
    elif not status.installed:
        click.echo("capture is not installed (run `replicator capture install`)")
    else:
        click.echo(f"capture format {status.format_version}, source id {status.source_id}")
        for table in status.tables:
            note = f" ({table.note})" if table.note else ""
            click.echo(f"  {table.state:16} {table.name}{note}")
        if status.journal is not None:
            j = status.journal
            lag = f", lag {j.lag_s:.1f} s" if j.lag_s is not None else ""
            click.echo(
                f"journal: head {j.head}, {j.pending} pending{lag}, {j.rows} row(s), pruned through {j.pruned_through}"
            )
    broken = [t.name for t in status.tables if t.state in ("triggers-missing", "dropped")]
    if broken:
        raise CaptureError(
            f"capture is broken for {', '.join(broken)}: changes there are not journaled",
            hint="keep `replicator run` running (or start it): it re-snapshots a rebuilt table online (it "
            "reinstalls the triggers, then reloads the table) and stops a dropped one with what to do; new tables "
            "are picked up online too. A `capture install` by hand hides the gap from it: then reload those tables "
            "with `replicator snapshot --replace`",
        )


@cli.command()
@common_options
@click.option("--tables", "tables", multiple=True, metavar="NAME", help="Only these SQLite tables (repeatable).")
@click.option("--keys", is_flag=True, help="Find the differing primary keys (bisection over key ranges).")
@click.option(
    "--max-keys", type=click.IntRange(min=1), default=100, show_default=True, help="At most N keys per table."
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(ctx: Context, tables: tuple[str, ...], keys: bool, max_keys: int, as_json: bool) -> None:
    """Compare row counts and canonical checksums of every table on both sides; exit 3 on a mismatch.

    Each side is read on its own, not through the converters the snapshot and the apply use: what
    SQLite stores and what PostgreSQL returns are compared by meaning (the column's PostgreSQL type
    and the storage format the plan recorded: epoch ms, ISO text, 0/1...), so a conversion mistake in
    the load shows as a difference. The rule per type is in the docstring of replicator/inspect/proof.py.

    Keys journaled after the position PostgreSQL was compared at are "in flight" (no mismatch) only
    while a daemon is running and advancing: it holds the source's lock, in CATCHUP or STREAMING, and
    is not stalled. After a cutover, unfence or rollback, after an error, or with no daemon running,
    nothing applies them: they are a mismatch, named by key, and the hint says why.
    """
    from replicator import progress
    from replicator.errors import VerificationFailed
    from replicator.inspect import verify as verify_mod

    names = [n for item in tables for n in item.split(",") if n]
    with progress.shown(ctx.config, quiet=ctx.quiet, component="verify") as shown:
        report = verify_mod.verify(ctx.source, ctx.target, ctx.config, names or None, keys, max_keys, progress=shown)
    if as_json:
        click.echo(verify_mod.to_json(report))
    elif not ctx.quiet:
        verify_mod.render(report, keys=keys)
    if not report.match:
        listed = keys or verify_mod.keys_listed(report)
        hint = "the differing keys are listed above" if listed else "rerun with --keys to list the differing keys"
        hint += "; " + (_after_cutover_hint if _cut_over(ctx) else "do not cut over")
        if report.not_applying is not None:  # journaled keys that nothing applies: say why they are not in flight
            hint = f"{report.not_applying.reason}, so these differences are not in flight: {report.not_applying.hint}"
        raise VerificationFailed(
            f"{len(report.mismatched)} table(s) differ between SQLite and PostgreSQL: {', '.join(report.mismatched)}",
            hint=hint,
        )


@cli.command()
@common_options
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True, help="Directory for the copy."
)
@click.option("--verify", is_flag=True, help="Run PRAGMA integrity_check on the copy before naming it final.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def backup(ctx: Context, out_dir: Path, verify: bool, as_json: bool) -> None:
    """Copy the live SQLite file through the online backup API, with a SHA-256 manifest."""
    from replicator import progress
    from replicator.cutover import backup as backup_mod

    with progress.shown(ctx.config, quiet=ctx.quiet, component="backup", unit="pages") as shown:
        busy = ctx.config.source.busy_timeout_ms
        result = backup_mod.backup(ctx.source, out_dir, verify, busy_timeout_ms=busy, progress=shown)
    if as_json:
        click.echo(msgspec.json.encode(result.manifest).decode())
    elif not ctx.quiet:
        m = result.manifest
        checked = ", integrity_check ok" if m.integrity_check else ""
        click.echo(f"backup {result.path}: {m.size:,} bytes, {m.page_count:,} pages, sha256 {m.sha256}{checked}")
        click.echo(f"manifest {result.manifest_path}")


@cli.command()
@common_options
@click.option("--message", default="", help="Appended to the fence message (say where the data is now).")
def fence(ctx: Context, message: str) -> None:
    """Refuse every row write to the SQLite file (cutover fences it itself; this re-fences by hand)."""
    from triggers import fence as fence_mod

    report = fence_mod.fence(ctx.source, message_extra=message, busy_timeout_ms=ctx.config.source.busy_timeout_ms)
    if not ctx.quiet:
        click.echo(f"fenced {len(report.tables)} table(s) at {report.at} ({len(report.created)} trigger(s) created)")
        for name in report.not_fenced:
            click.echo(f"warning: virtual table {name} cannot be fenced", err=True)


@cli.command()
@common_options
def unfence(ctx: Context) -> None:
    """Emergency: drop the write fence so the app can write to the SQLite file again."""
    from triggers import fence as fence_mod

    report = fence_mod.unfence(ctx.source, busy_timeout_ms=ctx.config.source.busy_timeout_ms)
    if ctx.quiet:
        return
    if not report.dropped and not report.record_removed:
        click.echo(f"{ctx.source} was not fenced; nothing changed")
        return
    since = f" (fenced at {report.was_fenced_at})" if report.was_fenced_at else ""
    click.echo(f"unfenced {ctx.source}{since}: dropped {len(report.dropped)} fence trigger(s); writes work again")
    click.echo("warning: writes made now are not in PostgreSQL unless capture and apply still run", err=True)
    click.echo("restart the app: a connection that was refused a write keeps failing until it next reads", err=True)


@cli.command()
@common_options
@click.option("--once", is_flag=True, help="Apply at most one batch, then exit.")
@click.option("--until-drained", is_flag=True, help="Apply until the journal is drained, then exit (cutover, tests).")
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="N", help="Serve Prometheus metrics on N."
)
def run(ctx: Context, once: bool, until_drained: bool, metrics_port: int | None) -> None:
    """Apply the change journal to PostgreSQL exactly once (snapshot first if the target has none)."""
    from replicator.stream import worker
    from replicator.stream.metrics import Metrics
    from replicator.stream.session import AlreadyCutOver

    sys.setswitchinterval(worker.SWITCH_INTERVAL_S)
    cfg = ctx.config
    if metrics_port is not None:
        cfg = msgspec.structs.replace(cfg, metrics=msgspec.structs.replace(cfg.metrics, port=metrics_port))
    metrics = Metrics() if cfg.metrics.port is not None else None  # served by the daemon once it holds its lock
    try:
        result = worker.run(ctx.source, ctx.target, cfg, once=once, until_drained=until_drained, metrics=metrics)
    except AlreadyCutOver as exc:
        if exc.exit_code != 0:
            raise
        if not ctx.quiet:  # finished, not failed: exit 0 so that Restart=on-failure leaves the daemon down
            click.echo(f"{exc.message}; {exc.hint}")
        return
    if not ctx.quiet:
        click.echo(
            f"{result.phase}: {result.changes} change(s) in {result.batches} batch(es); "
            f"applied seq {result.applied_seq}, journal head {result.head_seq}"
        )


@cli.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(ctx: Context, as_json: bool) -> None:
    """Phase, lag (changes and seconds), apply rate, per-table state, checkpoint head; exit 1 if ERRORED.

    Also exit 1 when the checkpoint chain or the journal was tampered with (each finding named), when
    the daemon holds the lock but has recorded no progress for status.stall_after_s while changes wait,
    or when the SQLite side disagrees with the phase (a cutover interrupted between its two commits).
    """
    from replicator.inspect import status as status_mod

    result = status_mod.read_status(ctx.target, ctx.config, _optional_source(ctx))
    if as_json:
        click.echo(msgspec.json.encode(result).decode())
    else:
        status_mod.render(result)
    if result.phase == "ERRORED" or result.problem or result.tampering or result.stalled_s is not None:
        sys.exit(EXIT_FAILURE)


def _seconds(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    """``5s``, ``500ms``, ``2m`` or a bare number of seconds."""
    text = value.strip().lower()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix):
            text, factor = text[: -len(suffix)], scale
            break
    else:
        factor = 1.0
    try:
        seconds = float(text) * factor
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration (5s, 500ms, 2m)") from None
    if seconds <= 0:
        raise click.BadParameter("must be positive")
    return seconds


_after_cutover_hint = (
    "this target was cut over, so one side changed since the stop point (the app writing to PostgreSQL, or "
    "SQLite written after an unfence): `replicator certificate --live` compares both with the certificate"
)


def _cut_over(ctx: Context) -> bool:
    """Whether the target's phase is DONE (advice after a cutover is not advice before one)."""
    from replicator.state import phase

    with pg.connect(ctx.target, autocommit=True, connect_timeout=ctx.config.target.connect_timeout_s) as conn:
        state = phase.read(conn, ctx.config.target.state_schema)
    return state is not None and state.phase is phase.Phase.DONE


@cli.command()
@common_options
@click.option("--dry-run", is_flag=True, help="Run preflight, freeze, drain, verify, finish PostgreSQL; roll back.")
@click.option(
    "--max-downtime", default="5s", show_default=True, callback=_seconds, help="Abort if the freeze would exceed it."
)
@click.option("--accept-quarantine", is_flag=True, help="Proceed with unacknowledged quarantined rows (recorded).")
@click.option(
    "--accept-skipped-columns", is_flag=True, help="Proceed although config skips columns (recorded, values lost)."
)
@click.option(
    "--accept-missing-constraints",
    is_flag=True,
    help="Proceed although a UNIQUE, index, CHECK or FK of SQLite's is not in PostgreSQL (recorded).",
)
@click.option("--no-backup", is_flag=True, help="Do not back up the SQLite file before fencing.")
@click.option("--backup-dir", type=click.Path(path_type=Path, file_okay=False), default=None, help="Backup directory.")
@click.option("--certificate", "certificate_path", type=click.Path(path_type=Path), default=None, help="Output file.")
@click.option("--operator", default="", help="Who runs the cutover (default: the login name).")
@click.option("--skip-full-verify", is_flag=True, help="Skip the preflight's full verify (the stop point is verified).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def cutover(
    ctx: Context,
    dry_run: bool,
    max_downtime: float,
    accept_quarantine: bool,
    accept_skipped_columns: bool,
    accept_missing_constraints: bool,
    no_backup: bool,
    backup_dir: Path | None,
    certificate_path: Path | None,
    operator: str,
    skip_full_verify: bool,
    as_json: bool,
) -> None:
    """Freeze SQLite, drain, prove completeness, finish PostgreSQL, fence SQLite; write the certificate."""
    from replicator import progress
    from replicator.cutover import certificate as cert_mod
    from replicator.cutover import window as cutover_mod

    options = cutover_mod.Options(
        dry_run=dry_run,
        max_downtime_s=max_downtime,
        accept_quarantine=accept_quarantine,
        accept_skipped_columns=accept_skipped_columns,
        accept_missing_constraints=accept_missing_constraints,
        backup=not no_backup,
        backup_dir=backup_dir,
        certificate_path=certificate_path,
        operator=operator,
        full_verify=not skip_full_verify,
    )
    with progress.shown(ctx.config, quiet=ctx.quiet, component="cutover") as shown:
        result = cutover_mod.cutover(ctx.source, ctx.target, ctx.config, options, progress=shown)
    if as_json:
        click.echo(msgspec.json.encode(result).decode())
    elif not ctx.quiet:
        if result.certificate is not None:
            click.echo(cert_mod.render(result.certificate))
            click.echo(f"certificate written to {result.certificate_path} and stored in the target")
        else:
            steps = ", ".join(f"{k} {v:.3f}s" for k, v in result.steps.items())
            click.echo(f"dry run: stop seq {result.stop_seq}, {len(result.tables)} table(s) equal; rolled back")
            click.echo(f"write outage {result.write_outage_s:.3f}s; steps: {steps}")
            for n in result.not_created:
                click.echo(f"would not be created in PostgreSQL: {n.kind} {n.name} on {n.table}: {n.reason}")
        for line in result.warnings:
            click.echo(f"warning: {line}", err=True)


@cli.command()
@common_options
@click.option("--force", is_flag=True, help="Go back even though PostgreSQL changed since the cutover.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def rollback(ctx: Context, force: bool, as_json: bool) -> None:
    """After a cutover: un-fence SQLite so the app can go back; report what PostgreSQL changed since."""
    from replicator.cutover import rollback as rollback_mod

    report = rollback_mod.rollback(ctx.source, ctx.target, ctx.config, force=force)
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    elif not ctx.quiet:
        for m in report.changed:
            click.echo(f"lost: {m.table}: {m.certified_rows} rows at cutover, {m.rows} in PostgreSQL now", err=True)
        click.echo(f"rolled back cutover {report.certificate_sha256[:16]}: SQLite writable again")


@cli.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print the certificate as JSON.")
@click.option("--verify", "verify_file", type=click.Path(path_type=Path), default=None, help="Check this file.")
@click.option(
    "--live",
    is_flag=True,
    help="Also re-read both databases: did anything change since, and do they still compare equal (verify's reading)?",
)
def certificate(ctx: Context, as_json: bool, verify_file: Path | None, live: bool) -> None:
    """Show the stored cutover certificate and check its SHA-256; exit 3 if it does not verify."""
    from replicator import pg
    from replicator.cutover import certificate as cert_mod
    from replicator.errors import VerificationFailed

    stored = None
    if ctx.config.target.dsn:
        with pg.connect(ctx.target, autocommit=True) as conn:
            stored = cert_mod.latest(conn, ctx.config.target.state_schema)
    cert = cert_mod.read_file(verify_file) if verify_file is not None else stored
    if cert is None:
        raise UsageError("no cutover certificate in the target", hint="pass --verify FILE or run cutover first")
    cert_mod.check(cert, stored)
    if verify_file is not None and stored is not None and stored.sha256 != cert.sha256:
        raise VerificationFailed(
            f"{verify_file} is sealed ({cert.sha256[:16]}) but is not the certificate stored in the target "
            f"({stored.sha256[:16]})",
            hint="an older cutover's file, or another target",
        )
    moved = []
    differ: list[str] = []
    if live:
        source = Path(ctx.config.source.path) if ctx.config.source.path else None
        moved = cert_mod.live_check(cert, source, ctx.target, ctx.config)
        if source is not None:
            report = cert_mod.live_compare(cert, source, ctx.target, ctx.config)
            differ = [_differing(t) for t in report.tables if t.status == "mismatch"]
    unequal = cert_mod.proof_problems(cert)
    if as_json:
        click.echo(msgspec.json.encode(cert).decode())
    elif not ctx.quiet:
        click.echo(cert_mod.render(cert))
        unchanged = live and not moved and not differ
        click.echo("seal: SHA-256 verifies" + ("; live: unchanged since the cutover" if unchanged else ""))
    if unequal:
        raise VerificationFailed(
            f"the certificate records tables that differ: {'; '.join(unequal)}",
            hint="a cutover never certifies a difference: this certificate was edited and resealed; "
            "`replicator audit` checks it with the chain",
        )
    if moved or differ:
        listed = "; ".join([*(f"{m.side} {m.table}: {m.certified_rows} → {m.rows} rows" for m in moved), *differ])
        raise VerificationFailed(
            f"changed since the cutover: {listed}", hint="see `replicator rollback` before going back"
        )


def _differing(t: TableVerify) -> str:
    """One table the live independent comparison found different, with its first keys."""
    keys = [*(f"missing {k}" for k in t.missing), *(f"extra {k}" for k in t.extra)]
    keys += [f"different {k}" for k in t.different]
    return f"SQLite ≠ PostgreSQL {t.table} ({', '.join(keys[:5]) or 'no key'})"


@cli.command("audit")
@click.option(
    "--certificate",
    "certificate_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The certificate cutover wrote (app.db.cutover.json).",
)
@click.option(
    "--chain",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The chain as `checkpoints export` wrote it after the cutover.",
)
@click.option(
    "--backup",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="The SQLite backup the cutover took: its SHA-256 must be the certificate's.",
)
@click.option(
    "--public-key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="The signing key's public half (`keys generate`): the signature must verify with it.",
)
@click.option(
    "--html",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the report as one self-contained HTML page (verdict, tables, timelines).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the audit as JSON.")
def audit_command(
    certificate_path: Path, chain: Path, backup: Path | None, public_key: Path | None, html: Path | None, as_json: bool
) -> None:
    """Check a cutover offline from its files: certificate, chain export, backup, signature; PASS or FAIL.

    Needs no database. Exit 0 when every check that ran passed, 3 when one failed; the report says which
    checks could not run (no --backup, no --public-key). The formats are in docs/audit.md.
    """
    from replicator.cutover import auditor
    from replicator.errors import VerificationFailed

    try:
        result = auditor.audit(certificate_path, chain, backup=backup, public_key=public_key)
        click.echo(msgspec.json.encode(result).decode() if as_json else auditor.render(result))
        if html is not None:
            from replicator import files
            from replicator.cutover import audit_html

            with files.writing(html, what="the HTML report", instead="choose another --html"):
                html.write_text(audit_html.render(result), encoding="utf-8")
        if not result.passed:
            failed = [c.name for c in result.checks if c.status == "fail"]
            raise VerificationFailed(
                f"audit FAIL: {', '.join(failed)}", hint="each finding is listed above; keep the files as they are"
            )
    except OperatorError as exc:
        fail(exc, 0)


@cli.group("keys")
def keys_group() -> None:
    """The Ed25519 key that signs cutover certificates (docs/audit.md)."""


@keys_group.command("generate")
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Where to write replicator-signing.key (mode 0600) and replicator-signing.pub.",
)
@click.option("--force", is_flag=True, help="Replace key files that exist.")
def keys_generate(out_dir: Path, force: bool) -> None:
    """Make a signing key pair: set [signing] key to the private file; give auditors the .pub file."""
    from replicator.cutover import signing

    try:
        private, public, key_id = signing.generate(out_dir, force=force)
    except OperatorError as exc:
        fail(exc, 0)
    click.echo(f"private key {private} (mode 0600: keep it where cutover runs, and nowhere else)")
    click.echo(f"public key  {public} (give it to auditors: `replicator audit --public-key {public.name}`)")
    click.echo(f'key id {key_id}; sign certificates with it: [signing] key = "{private.resolve()}"')


@cli.group("quarantine")
def quarantine_group() -> None:
    """Review the values PostgreSQL could not hold exactly, and acknowledge them before cutover."""


@quarantine_group.command("list")
@common_options
@click.option("--table", default=None, help="Only this source table.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True, help="At most this many values.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def quarantine_list(ctx: Context, table: str | None, limit: int, as_json: bool) -> None:
    """List quarantined values: table, key, column, reason, original bytes (base64)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from replicator import pg
    from replicator.values import quarantine

    with pg.connect(ctx.target, autocommit=True) as conn:
        values = quarantine.list_values(conn, ctx.config.target.state_schema, table, limit)
    if as_json:
        click.echo(msgspec.json.encode(values).decode())
        return
    grid = Table("id", "table", "key", "column", "reason", "ack")
    for v in values:
        grid.add_row(
            str(v.id),
            escape(v.table),
            escape(str(v.key)),
            escape(v.column),
            escape(v.reason),
            "yes" if v.acknowledged else "",
        )
    Console().print(grid)
    click.echo(f"{len(values)} value(s)")


@quarantine_group.command("ack")
@common_options
@click.option("--table", default=None, help="Only this source table (default: all).")
def quarantine_ack(ctx: Context, table: str | None) -> None:
    """Acknowledge quarantined values after review; cutover then proceeds (the values stay listed)."""
    from replicator import pg
    from replicator.state import stateschema
    from replicator.values import quarantine

    with pg.connect(ctx.target, autocommit=True) as conn:
        stateschema.ensure(conn, ctx.config.target.state_schema)
        changed = quarantine.acknowledge(conn, ctx.config.target.state_schema, table)
    click.echo(f"acknowledged {changed} quarantined value(s)")


@cli.command()
@click.option(
    "--rows", type=click.IntRange(min=200), default=20_000, show_default=True, help="Rows in the demo app's database."
)
@click.option(
    "--keep", is_flag=True, help="Keep the working directory (app.db, certificate, backups, PostgreSQL data)."
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Working directory, new or empty [default: a temporary one].",
)
@click.option(
    "--target", metavar="DSN", default=None, help="Use this PostgreSQL server (the demo creates its own database)."
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.5),
    default=6.0,
    show_default=True,
    help="How long the daemon streams before cutover.",
)
@click.option("-v", "--verbose", count=True, help="Show the library's log lines too.")
def demo(rows: int, keep: bool, directory: Path | None, target: str | None, seconds: float, verbose: int) -> None:
    """Migrate a live 12-table demo app to an embedded PostgreSQL 18, end to end, narrated.

    analyze → capture install → snapshot → apply daemon while the app writes → status → cutover →
    certificate → the fenced write → verify. Exit 0 only if every step passed and verify matched.
    """
    from replicator.demo import tour as demo_mod

    try:
        code = demo_mod.demo(rows=rows, keep=keep, directory=directory, target=target, seconds=seconds, verbose=verbose)
    except OperatorError as exc:
        fail(exc, verbose)
    sys.exit(code)


def main() -> None:
    try:
        code = cli.main(prog_name="replicator", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help, as click prints it
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.ClickException as exc:  # unknown option, bad value: one line too, exit 2
        where = exc.ctx.command_path if isinstance(exc, click.UsageError) and exc.ctx else "replicator"
        click.echo(f"error: {' '.join(exc.format_message().split())} — see `{where} --help`", err=True)
        sys.exit(EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted: nothing was left half-written; rerun the command to continue", err=True)
        sys.exit(130)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (EXIT_USAGE if exc.code else 0)
    sys.exit(code if isinstance(code, int) else 0)
