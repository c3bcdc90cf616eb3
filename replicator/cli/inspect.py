"""The commands that read where a migration stands: ``status``, ``verify`` (are both sides equal?)
and the ``checkpoints`` chain (list, show, verify, export, compact)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click
import msgspec

from replicator import pg
from replicator.cli import options
from replicator.cli.context import Context, common_options
from replicator.errors import EXIT_FAILURE

if TYPE_CHECKING:
    from rich.console import Console

    from checkpoints.model import Checkpoint

C = TypeVar("C", "Checkpoint", "Sequence[Checkpoint]")


@click.group("checkpoints")
def checkpoints_group() -> None:
    """Inspect, verify, export and compact the hash-chained checkpoint record."""


@checkpoints_group.command("list")
@common_options
@click.option("--since", type=int, default=None, metavar="N", help="Only checkpoints numbered above N (next page).")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N", help="At most N checkpoints.")
@options.json_flag("Print JSON instead of a table.")
def checkpoints_list(ctx: Context, since: int | None, limit: int | None, as_json: bool) -> None:
    """List checkpoints in number order: kind, journal range, rows written, time and hash."""
    from checkpoints import report, store

    with ctx.connect() as conn:
        found = store.read(conn, since, limit, schema=ctx.config.target.state_schema)
    _print_checkpoints(found, as_json, report.render_list)


@checkpoints_group.command("show")
@common_options
@click.argument("number", type=int)
@options.json_flag("Print JSON instead of a table.")
def checkpoints_show(ctx: Context, number: int, as_json: bool) -> None:
    """Show one checkpoint in full, with its per-table counts and digests."""
    from checkpoints import report, store

    with ctx.connect() as conn:
        found = store.get(conn, number, schema=ctx.config.target.state_schema)
    _print_checkpoints(found, as_json, report.render_show)


def _print_checkpoints(found: C, as_json: bool, render: Callable[[C, Console], None]) -> None:
    """Checkpoints as JSON with --json, else as ``render`` draws them."""
    from checkpoints import report

    if as_json:
        click.echo(report.as_json(found))
    else:
        render(found, report.console())


@checkpoints_group.command("verify")
@common_options
@options.existing_file("--file", "file", text="Verify an export instead of the database (no database needed).")
@options.existing_file(
    "--against",
    text="Also check that an earlier export is still wholly in the chain (catches a cut-off or rewritten chain).",
)
def checkpoints_verify(ctx: Context, file: Path | None, against: Path | None) -> None:
    """Verify the hash chain; on failure print every finding and exit 3.

    Against the database it also checks what the chain alone cannot show: the phase row's applied seq
    and, with --source, the anchor the daemon keeps in SQLite and the journal above the chain's head
    (checkpoints cut off, swapped, journal entries deleted by hand).
    """
    from checkpoints import audit, report
    from checkpoints.errors import ChainBroken
    from replicator.state import integrity

    extra: list[str] = []
    if file is not None:
        result = audit.report_file(file, against=against)
        where = str(file)
    else:
        with ctx.connect() as conn:
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
    from checkpoints import exportfile

    with ctx.connect() as conn:
        head = exportfile.export(conn, file, schema=ctx.config.target.state_schema)
    if not ctx.quiet:
        click.echo(f"exported {head.count} checkpoint(s) to {file}, head {head.number} {head.hash}")


@checkpoints_group.command("compact")
@common_options
@click.option("--upto", type=int, required=True, metavar="N", help="Replace checkpoints numbered N and below.")
def checkpoints_compact(ctx: Context, upto: int) -> None:
    """Replace old checkpoints with one compaction record; the rest of the chain still verifies."""
    from checkpoints import compaction

    with ctx.connect() as conn:
        base = compaction.compact(conn, upto, schema=ctx.config.target.state_schema)
    if not ctx.quiet and base.compaction is not None:
        c = base.compaction
        click.echo(
            f"compacted checkpoints {c.first}..{c.last} ({c.count}) into checkpoint {base.number}; "
            f"hashes digest {c.hashes_digest}"
        )


@click.command()
@common_options
@options.tables(metavar="NAME")
@click.option("--keys", is_flag=True, help="Find the differing primary keys (bisection over key ranges).")
@click.option(
    "--max-keys", type=click.IntRange(min=1), default=100, show_default=True, help="At most N keys per table."
)
@options.json_flag("Print the report as JSON.")
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

    names = options.table_names(tables)
    with progress.shown(ctx.config, quiet=ctx.quiet, component="verify") as shown:
        report = verify_mod.verify(ctx.source, ctx.target, ctx.config, names or None, keys, max_keys, progress=shown)
    if as_json:
        click.echo(verify_mod.to_json(report))
    elif not ctx.quiet:
        verify_mod.render(report, keys=keys)
    if not report.match:
        listed = keys or verify_mod.keys_listed(report)
        hint = "the differing keys are listed above" if listed else "rerun with --keys to list the differing keys"
        window = _window_hint(ctx)
        if window is not None:  # after the cutover, PostgreSQL's changes flow back: say where they stand
            hint += "; " + window
        else:
            hint += "; " + (_after_cutover_hint if _cut_over(ctx) else "do not cut over")
        if report.not_applying is not None:  # journaled keys that nothing applies: say why they are not in flight
            hint = f"{report.not_applying.reason}, so these differences are not in flight: {report.not_applying.hint}"
        raise VerificationFailed(
            f"{len(report.mismatched)} table(s) differ between SQLite and PostgreSQL: {', '.join(report.mismatched)}",
            hint=hint,
        )


@click.command()
@common_options
@options.json_flag("Print the status as JSON.")
def status(ctx: Context, as_json: bool) -> None:
    """Phase, lag (changes and seconds), apply rate, per-table state, checkpoint head; exit 1 if ERRORED.

    After a cutover it also shows the rollback window: open since when and from which cutover checkpoint,
    the reverse lag (the age of the oldest change made on PostgreSQL not written back to SQLite yet), the
    reverse journal's entries and size, the horizon applied and whether PostgreSQL is fenced; once closed,
    by rollback or finalize and when. Journal positions stay SQLite's: the cutover checkpoint's.

    Also exit 1 when the checkpoint chain or the journal was tampered with (each finding named), when
    the daemon holds the lock but has recorded no progress for status.stall_after_s while changes wait,
    or when the SQLite side disagrees with the phase (a cutover, or a rollback, interrupted between its
    two commits).
    """
    from replicator.inspect import status as status_mod

    result = status_mod.read_status(ctx.target, ctx.config, _optional_source(ctx))
    if as_json:
        click.echo(msgspec.json.encode(result).decode())
    else:
        status_mod.render(result)
    if result.phase == "ERRORED" or result.problem or result.tampering or result.stalled_s is not None:
        sys.exit(EXIT_FAILURE)


_after_cutover_hint = (
    "this target was cut over, so one side changed since the stop point (the app writing to PostgreSQL, or "
    "SQLite written after an unfence): `replicator certificate --live` compares both with the certificate"
)


def _window_hint(ctx: Context) -> str | None:
    """With the rollback window open: what a difference means there (changes not written back yet, or real)."""
    from replicator.inspect import window

    with ctx.connect() as conn:
        return window.window_hint(conn, ctx.config.target.state_schema)


def _cut_over(ctx: Context) -> bool:
    """Whether the target's phase is DONE (advice after a cutover is not advice before one)."""
    from replicator.state.phase import Phase
    from replicator.state.store import StateStore

    with ctx.connect() as conn:
        state = StateStore(conn, ctx.config.target.state_schema).read_phase()
    return state is not None and state.phase is Phase.DONE
