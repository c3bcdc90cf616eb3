"""The ``quarantine`` commands: review the values PostgreSQL could not hold exactly, and acknowledge them."""

from __future__ import annotations

import click
import msgspec

from replicator import pg
from replicator.cli import options
from replicator.cli.context import Context, common_options


@click.group("quarantine")
def quarantine_group() -> None:
    """Review the values PostgreSQL could not hold exactly, and acknowledge them before cutover."""


@quarantine_group.command("list")
@common_options
@click.option("--table", default=None, help="Only this source table.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True, help="At most this many values.")
@options.json_flag("JSON instead of a table.")
def quarantine_list(ctx: Context, table: str | None, limit: int, as_json: bool) -> None:
    """List quarantined values: table, key, column, reason, original bytes (base64)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from replicator.state.quarantine import list_values
    from replicator.state.store import StateStore

    with pg.connect(ctx.target, autocommit=True) as conn:
        values = list_values(StateStore(conn, ctx.config.target.state_schema), table, limit)
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
    from replicator.state.quarantine import acknowledge
    from replicator.state.store import StateStore

    with pg.connect(ctx.target, autocommit=True) as conn:
        state_store = StateStore(conn, ctx.config.target.state_schema)
        state_store.ensure()
        changed = acknowledge(state_store, table)
    click.echo(f"acknowledged {changed} quarantined value(s)")
