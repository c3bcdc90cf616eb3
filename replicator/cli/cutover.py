"""The maintenance window and what surrounds it: ``backup``, ``fence``, ``unfence``, ``cutover``, ``rollback``."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from replicator.cli import options
from replicator.cli.context import Context, common_options
from replicator.errors import UsageError


@click.command()
@common_options
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True, help="Directory for the copy."
)
@click.option("--verify", is_flag=True, help="Run PRAGMA integrity_check on the copy before naming it final.")
@options.json_flag("Print the manifest as JSON.")
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


@click.command()
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


@click.command()
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


@click.command()
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
@click.option(
    "--no-rollback-window",
    is_flag=True,
    help="Do not capture PostgreSQL's changes for a lossless rollback (rollback then needs an unchanged target).",
)
@options.json_flag("Print the result as JSON.")
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
    no_rollback_window: bool,
    as_json: bool,
) -> None:
    """Freeze SQLite, drain, prove completeness, finish PostgreSQL, fence SQLite; write the certificate."""
    from replicator import progress
    from replicator.cutover import certificate as cert_mod
    from replicator.cutover import session, window

    options = session.Options(
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
        rollback_window=not no_rollback_window,
    )
    with progress.shown(ctx.config, quiet=ctx.quiet, component="cutover") as shown:
        result = window.cutover(ctx.source, ctx.target, ctx.config, options, progress=shown)
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


@click.command()
@common_options
@click.option(
    "--force", is_flag=True, help="Without a rollback window: go back although PostgreSQL changed (loses it)."
)
@click.option("--dry-run", is_flag=True, help="With the window open: catch up and prove equal, fence nothing.")
@click.option(
    "--max-downtime",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    help="Bound on fencing PostgreSQL (s).",
)
@click.option(
    "--certificate",
    "certificate_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Rollback certificate file [default: <source>.rollback-certificate.json].",
)
@options.json_flag("Print the report as JSON.")
def rollback(
    ctx: Context, force: bool, dry_run: bool, max_downtime: float, certificate_path: Path | None, as_json: bool
) -> None:
    """After a cutover: go back to SQLite, carrying PostgreSQL's writes back first (the rollback window).

    With the window open: fence PostgreSQL, drain its changes into SQLite, prove both sides equal, un-fence
    SQLite, write a rollback certificate (also kept in the state schema: run again after an interruption,
    rollback writes it). Without it (--no-rollback-window at cutover): un-fence SQLite if PostgreSQL has not
    changed since the cutover, or with --force."""
    from replicator.cutover import rollback as rollback_mod
    from replicator.reverse import rollback as window_mod

    if _windowed(ctx):
        result = window_mod.rollback(
            ctx.source,
            ctx.target,
            ctx.config,
            dry_run=dry_run,
            max_downtime_s=max_downtime,
            certificate_path=certificate_path,
        )
        if as_json:
            click.echo(msgspec.json.encode(result).decode())
        elif not ctx.quiet:
            if result.resumed:
                click.echo("finished an interrupted rollback: SQLite un-fenced, the app writes to SQLite again")
                if result.certificate_path is not None:
                    click.echo(
                        f"certificate {result.certificate_path}, as the rollback stored it in the state schema "
                        "(write outage not measured)"
                    )
            elif result.dry_run:
                click.echo(
                    f"dry run: {len(result.tables)} table(s) equal after carrying back {result.drained_entries} "
                    "change(s); nothing fenced"
                )
            else:
                click.echo(
                    f"rolled back with nothing lost: {result.drained_entries} change(s) carried back, "
                    f"{len(result.tables)} table(s) proved equal, write outage {result.write_outage_s:.3f}s; "
                    f"certificate {result.certificate_path}"
                )
        return
    if dry_run:
        raise UsageError("--dry-run needs an open rollback window", hint="the window opens with `replicator cutover`")
    report = rollback_mod.rollback(ctx.source, ctx.target, ctx.config, force=force)
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    elif not ctx.quiet:
        for m in report.changed:
            click.echo(f"lost: {m.table}: {m.certified_rows} rows at cutover, {m.rows} in PostgreSQL now", err=True)
        click.echo(f"rolled back cutover {report.certificate_sha256[:16]}: SQLite writable again")


def _windowed(ctx: Context) -> bool:
    """Whether this cutover opened a rollback window: it is open, or it was closed (by a rollback, perhaps
    interrupted, or by finalize) after this chain's cutover checkpoint. Then rollback is the window's, which
    finishes an interrupted one and refuses after finalize; never the path of a cutover without a window, whose
    --force would un-fence SQLite and lose what PostgreSQL holds."""
    from checkpoints import store
    from checkpoints.errors import NoChainTable
    from replicator import pg
    from replicator.state import reverse

    schema = ctx.config.target.state_schema
    with pg.connect(ctx.target, autocommit=True, connect_timeout=ctx.config.target.connect_timeout_s) as conn:
        window = reverse.read_window(conn, schema)
        if window is None or window.open:
            return window is not None
        try:
            forward = store.last_forward(conn, schema=schema)
        except NoChainTable:
            return False
    return forward is not None and forward.hash == window.cutover


@click.command()
@common_options
@options.json_flag("Print the result as JSON.")
def finalize(ctx: Context, as_json: bool) -> None:
    """End the rollback window: stay on PostgreSQL, drop the reverse capture, seal the chain."""
    from replicator.reverse import finalize as finalize_mod

    result = finalize_mod.finalize(ctx.source, ctx.target, ctx.config)
    if as_json:
        click.echo(msgspec.json.encode(result).decode())
    elif not ctx.quiet:
        click.echo(
            f"rollback window closed (open since {result.opened_at}): the chain is sealed by checkpoint "
            f"#{result.checkpoint}; the reverse capture is gone from PostgreSQL"
            + (
                f"; {result.entries_dropped} change(s) not yet written back to the SQLite file were dropped"
                if result.entries_dropped
                else ""
            )
        )
