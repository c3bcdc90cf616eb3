"""``replicator demo``: the whole flow on a live sample app."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from replicator.cli.context import fail
from replicator.errors import OperatorError


@click.command()
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
