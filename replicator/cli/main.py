"""The ``replicator`` command line: thin by design.

Each command parses its options, calls one library function and renders its result. Errors from
any of our packages become one line on stderr (``error: what — what to do``) and the exit code the
error carries: 0 ok, 1 operational failure, 2 usage or bad input, 3 verification mismatch. The
traceback is shown only with ``-v``.

This module holds the group and registers the commands; they live by stage in the modules beside it
(``load``, ``stream``, ``inspect``, ``cutover``, ``certificate``, ``quarantine``, ``demo``), and what they
share (the Context, the common options, the error printing) in ``context`` and ``options``.
"""

from __future__ import annotations

import sys

import click

from replicator import __version__
from replicator.cli import certificate, cutover, demo, inspect, load, quarantine, stream
from replicator.errors import EXIT_USAGE


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="replicator")
def cli() -> None:
    """Move a live application from SQLite to PostgreSQL with near-zero downtime.

    Exit codes: 0 ok, 1 operational failure, 2 usage or bad input, 3 verification mismatch.
    """


for command in (
    load.analyze,
    load.schema,
    load.snapshot,
    load.export,
    load.verify_export,
    load.import_,
    stream.capture_group,
    stream.run,
    inspect.status,
    inspect.verify,
    inspect.checkpoints_group,
    cutover.backup,
    cutover.fence,
    cutover.unfence,
    cutover.cutover,
    cutover.rollback,
    cutover.finalize,
    certificate.certificate,
    certificate.audit_command,
    certificate.keys_group,
    quarantine.quarantine_group,
    demo.demo,
):
    cli.add_command(command)


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
