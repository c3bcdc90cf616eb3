"""Rendering checkpoints for people (rich tables) and for programs (JSON), kept out of the CLI."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from checkpoints.exportfile import Head
from checkpoints.findings import Finding
from checkpoints.model import REVERSE_KINDS, Checkpoint

PIPE_WIDTH = 160
"""Output width when stdout is not a terminal: a pipe or a file has no reason to squeeze columns."""


def console() -> Console:
    """A console on stdout, as wide as the terminal, or PIPE_WIDTH when piped."""
    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)


def as_json(value: Checkpoint | Sequence[Checkpoint]) -> str:
    """Checkpoints as JSON, hash included (the stored body bytes are what ``export`` writes)."""
    builtins: Any = msgspec.to_builtins(value)
    return msgspec.json.format(msgspec.json.encode(builtins), indent=2).decode()


def _seq(checkpoint: Checkpoint) -> str:
    """The range it covers: SQLite journal seqs, or for the rollback window's records PostgreSQL transaction
    ids of the reverse journal (``xid``), which are not comparable with seqs."""
    if checkpoint.seq_to < checkpoint.seq_from:
        return "-"
    span = f"{checkpoint.seq_from}..{checkpoint.seq_to}"
    return f"xid {span}" if checkpoint.kind in REVERSE_KINDS else span


def render_list(checkpoints: Sequence[Checkpoint], console: Console) -> None:
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    table.add_column("#", justify="right", no_wrap=True, min_width=3)
    table.add_column("kind", no_wrap=True, min_width=10)
    table.add_column("journal seq / xid", justify="right", no_wrap=True)
    table.add_column("upserted", justify="right", no_wrap=True)
    table.add_column("deleted", justify="right", no_wrap=True)
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("hash", no_wrap=True, min_width=10)
    for c in checkpoints:
        table.add_row(
            str(c.number),
            str(c.kind),
            _seq(c),
            f"{sum(t.upserted for t in c.tables.values()):,}",
            f"{sum(t.deleted for t in c.tables.values()):,}",
            c.at.replace("T", " ")[:16],
            c.hash[:10],
        )
    console.print(table)
    if checkpoints:
        console.print(f"next page: --since {checkpoints[-1].number}", style="dim")
    else:
        console.print("no checkpoints", style="dim")


def render_show(checkpoint: Checkpoint, console: Console) -> None:
    c = checkpoint
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    for name, value in (
        ("number", str(c.number)),
        ("kind", str(c.kind)),
        ("journal xids" if c.kind in REVERSE_KINDS else "journal seq", _seq(c)),
        ("at", c.at),
        ("tool", c.tool),
        ("hash", c.hash),
        ("prev_hash", c.prev_hash),
    ):
        fields.add_row(name, value)
    if c.compaction is not None:
        fields.add_row("replaces", f"checkpoints {c.compaction.first}..{c.compaction.last} ({c.compaction.count})")
        fields.add_row("head_hash", c.compaction.head_hash)
        fields.add_row("hashes_digest", c.compaction.hashes_digest)
    console.print(fields)
    if c.tables:
        tables = Table()
        for name in ("table", "upserted", "deleted", "upserted digest", "deleted digest"):
            tables.add_column(name, no_wrap=name == "table")
        for name, change in sorted(c.tables.items()):
            tables.add_row(
                escape(name),
                f"{change.upserted:,}",
                f"{change.deleted:,}",
                change.upserted_digest[:16],
                change.deleted_digest[:16],
            )
        console.print(tables)


def render_findings(findings: Sequence[Finding], console: Console) -> None:
    for finding in findings:
        console.print(str(finding), markup=False, highlight=False, soft_wrap=True)


def render_head(head: Head, console: Console, *, what: str) -> None:
    console.print(f"{what}: {head.count} checkpoints, head {head.number} {head.hash}", highlight=False)
