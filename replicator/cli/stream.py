"""The commands that keep PostgreSQL following SQLite: the ``capture`` triggers and the ``run`` daemon."""

from __future__ import annotations

import sys
from typing import Any, cast

import click
import msgspec

from replicator.cli import options
from replicator.cli.context import Context, common_options
from triggers.errors import CaptureError


@click.group("capture")
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
@options.json_flag("Print the install report as JSON.")
def capture_install(ctx: Context, no_key_policy: str | None, stamp_time: bool, as_json: bool) -> None:
    """Install (or reconcile) the capture triggers in one transaction; safe to rerun."""
    from triggers import install, keys

    policy = cast(keys.Policy, no_key_policy or ctx.config.capture.no_key_policy)
    report = install.install(
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
    from triggers import install

    report = install.remove(ctx.source, busy_timeout_ms=ctx.config.source.busy_timeout_ms)
    if not ctx.quiet:
        click.echo(
            f"removed {report.triggers_dropped} trigger(s) and a journal of {report.journal_rows_dropped} row(s)"
            + (f" ({report.note})" if report.note else "")
        )


@capture_group.command("status")
@common_options
@options.json_flag("Print the status as JSON.")
def capture_status(ctx: Context, as_json: bool) -> None:
    """Per-table capture state and the journal's size and backlog; exit 1 if a table lost its triggers."""
    from triggers import install

    status = install.status(ctx.source, busy_timeout_ms=ctx.config.source.busy_timeout_ms)
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


def _reverse(ctx: Context, cfg: Any, *, once: bool, until_drained: bool) -> bool:
    """After a cutover with the rollback window open: keep the fenced SQLite file current (the reverse
    direction). False when no window is open (the cutover finished replication for good)."""
    import signal
    import threading

    from replicator.reverse import loop
    from replicator.stream.metrics import Metrics

    stop = threading.Event()  # SIGTERM (a service manager) or Ctrl-C: the batch in hand is finished first
    previous = {s: signal.signal(s, lambda _n, _f: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    metrics = Metrics() if cfg.metrics.port is not None else None  # the forward daemon's gauges would lie here
    try:
        result = loop.run(
            ctx.source, ctx.target, cfg, once=once, until_drained=until_drained, stop=stop, metrics=metrics
        )
    except loop.NoWindow:
        return False
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if not ctx.quiet:
        click.echo(
            f"reverse: {result.entries} change(s) in {result.batches} batch(es) written back to SQLite "
            f"({result.upserted} row(s) written, {result.deleted} deleted, {result.refused} refused)"
        )
    return True


@click.command()
@common_options
@click.option("--once", is_flag=True, help="Apply at most one batch, then exit.")
@click.option("--until-drained", is_flag=True, help="Apply until the journal is drained, then exit (cutover, tests).")
@click.option(
    "--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="N", help="Serve Prometheus metrics on N."
)
def run(ctx: Context, once: bool, until_drained: bool, metrics_port: int | None) -> None:
    """Apply the change journal to PostgreSQL exactly once (snapshot first if none); after a cutover, the reverse.

    With the rollback window open after a cutover, it writes PostgreSQL's changes back into the fenced SQLite
    file instead, exactly once, so that `replicator rollback` loses nothing."""
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
        if _reverse(ctx, cfg, once=once, until_drained=until_drained):
            return
        if not ctx.quiet:  # finished, not failed: exit 0 so that Restart=on-failure leaves the daemon down
            click.echo(f"{exc.message}; {exc.hint}")
        return
    if not ctx.quiet:
        click.echo(
            f"{result.phase}: {result.changes} change(s) in {result.batches} batch(es); "
            f"applied seq {result.applied_seq}, journal head {result.head_seq}"
        )
