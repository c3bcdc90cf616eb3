"""What every command shares: its Context, the common options that build it, and the one way it fails.

The error printing lives here, beside the options, because :func:`common_options` is where every
command's errors are caught: any error from our packages becomes one line on stderr (``error: what —
what to do``) and the exit code the error carries; the traceback is shown only with ``-v``. Commands
that take no Context (``audit``, ``keys generate``, ``demo``...) call :func:`fail` themselves.
"""

from __future__ import annotations

import functools
import sqlite3
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import click
import msgspec
import psycopg.errors

from replicator import config, log, pg
from replicator.errors import EXIT_FAILURE, OperatorError, UsageError
from triggers import source as sqlite_source

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

    def connect(self) -> psycopg.Connection[Any]:
        """An autocommit connection to the target that gives up after ``target.connect_timeout_s``."""
        return pg.connect(self.target, autocommit=True, connect_timeout=self.config.target.connect_timeout_s)


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
