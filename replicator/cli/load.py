"""The commands before the stream: ``analyze``, ``schema``, ``snapshot``, and the offline path
(``export``, ``verify-export``, ``import``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import msgspec

from replicator import config
from replicator.cli import options
from replicator.cli.context import Context, common_options, fail
from replicator.errors import OperatorError, ReplicatorError


@click.command()
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


@click.command()
@common_options
@click.option(
    "--print", "print_only", is_flag=True, help="Print the DDL instead of applying it (default without --target)."
)
@options.identifiers("Keep names' case (default) or downcase them.")
@click.option("--replace", is_flag=True, help="Drop and recreate tables that already exist in the target schema.")
def schema(ctx: Context, print_only: bool, identifiers: str | None, replace: bool) -> None:
    """Translate the SQLite schema to PostgreSQL DDL: print it, or apply it to --target (no data)."""
    from replicator.load import snapshot
    from replicator.plan import createmode, ddl

    cfg = _with_snapshot_options(ctx, identifiers)
    conn = snapshot.open_source(ctx.source, cfg)
    try:
        read = snapshot.read_source(conn)
    finally:
        conn.close()
    plan = createmode.plan_create(read.schema, read.profiles, cfg)
    if print_only or not cfg.target.dsn:
        sys.stdout.write(ddl.render_script(plan))
        return
    warnings = ddl.apply_schema(ctx.target, plan, replace=replace)
    if not ctx.quiet:
        click.echo(f"created {len(plan.tables)} table(s) in schema {plan.schema}; {len(warnings)} warning(s)")
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)


@click.command()
@common_options
@options.load_mode
@options.on_bad_value(
    "stop at the first value PostgreSQL cannot hold exactly, or skip its row and record it in the quarantine."
)
@options.identifiers("Keep names' case (default) or downcase them (create mode).")
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
@options.tables(metavar="NAME[,NAME]")
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
    from replicator.load.options import SnapshotOptions

    cfg = _with_snapshot_options(ctx, identifiers)
    names = tuple(options.table_names(tables))
    asked = SnapshotOptions(mode=mode, on_bad_value=on_bad_value, replace=replace, resume=resume, tables=names)
    with progress.shown(cfg, quiet=ctx.quiet, component="snapshot") as shown:
        result = snapshot_mod.snapshot(ctx.source, ctx.target, cfg, asked, progress=shown)
    if not ctx.quiet:
        snapshot_mod.render(result)


@click.command()
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
    from replicator.load.offline import export as export_mod

    with progress.shown(ctx.config, quiet=ctx.quiet, component="export") as shown:
        result = export_mod.export(ctx.source, out, ctx.config, tar=tar, progress=shown)
    if not ctx.quiet:
        m = result.manifest
        rows = sum(t.rows for t in m.tables)
        click.echo(f"exported {len(m.tables)} table(s), {rows:,} rows to {result.path} in {m.seconds:.2f}s")


@click.command("verify-export")
@click.argument("path", type=click.Path(path_type=Path))
@options.json_flag("Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def verify_export(path: Path, as_json: bool, quiet: bool) -> None:
    """Check an export: files, SHA-256s, counts, row shapes, unique non-null keys, no FK orphans (exit 3)."""
    from replicator.load.offline import verifier as export_mod

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


@click.command("import")
@common_options
@click.argument("path", type=click.Path(path_type=Path))
@options.load_mode
@options.on_bad_value("As for snapshot.")
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
    from replicator.load.offline import importer
    from replicator.load.options import ImportOptions

    asked = ImportOptions(
        mode=mode, on_bad_value=on_bad_value, replace=replace, single_transaction=single_transaction, dry_run=dry_run
    )
    with progress.shown(ctx.config, quiet=ctx.quiet, component="import") as shown:
        result = importer.import_export(path, ctx.target, ctx.config, asked, progress=shown)
    if not ctx.quiet:
        importer.render(result)
