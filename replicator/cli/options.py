"""The options more than one command takes, each defined once so that the commands cannot drift apart.

Each is a decorator like ``click.option``; those whose help depends on the command take it as an argument
(``import`` says "As for snapshot." where ``snapshot`` explains).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

EXISTING_FILE = click.Path(path_type=Path, dir_okay=False, exists=True)
"""A file that must exist: a chain export, a certificate, a backup, a public key."""


def existing_file(*decls: str, text: str, required: bool = False) -> Callable[[F], F]:
    """An option naming a file that must exist; ``None`` when an optional one is not given."""
    if required:
        return click.option(*decls, required=True, type=EXISTING_FILE, help=text)
    return click.option(*decls, type=EXISTING_FILE, default=None, help=text)


def json_flag(text: str) -> Callable[[F], F]:
    """``--json``: print the command's result as JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help=text)


load_mode = click.option(
    "--mode",
    type=click.Choice(["auto", "create", "existing"]),
    default=None,
    help="create: generate the schema; existing: load into the app's own; auto: create if the target schema is empty.",
)
"""``--mode`` of the two loads, ``snapshot`` and ``import``."""


def on_bad_value(text: str) -> Callable[[F], F]:
    """``--on-bad-value``: what a load does with a value PostgreSQL cannot hold exactly."""
    return click.option("--on-bad-value", type=click.Choice(["stop", "quarantine"]), default=None, help=text)


def identifiers(text: str) -> Callable[[F], F]:
    """``--identifiers``: keep the SQLite names' case or downcase them."""
    return click.option("--identifiers", type=click.Choice(["keep", "downcase"]), default=None, help=text)


def tables(metavar: str) -> Callable[[F], F]:
    """``--tables``: only these SQLite tables, repeatable and comma-separated (see :func:`table_names`)."""
    return click.option(
        "--tables", "tables", multiple=True, metavar=metavar, help="Only these SQLite tables (repeatable)."
    )


def table_names(tables: tuple[str, ...]) -> list[str]:
    """The names ``--tables`` gave, each occurrence split at commas; empty when none were given."""
    return [n for item in tables for n in item.split(",") if n]
