"""The proof a cutover leaves: the ``certificate``, its offline ``audit``, and the signing ``keys``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
import msgspec

from replicator import pg
from replicator.cli import options
from replicator.cli.context import Context, common_options, fail
from replicator.errors import OperatorError, UsageError

if TYPE_CHECKING:
    from replicator.cutover.certificate import Moved
    from replicator.inspect.verify_compare import TableVerify


@click.command()
@common_options
@options.json_flag("Print the certificate as JSON.")
@click.option("--verify", "verify_file", type=click.Path(path_type=Path), default=None, help="Check this file.")
@click.option(
    "--live",
    is_flag=True,
    help="Also re-read both databases: did anything change since, and do they still compare equal (verify's reading)?",
)
def certificate(ctx: Context, as_json: bool, verify_file: Path | None, live: bool) -> None:
    """Show the stored cutover certificate and check its SHA-256; exit 3 if it does not verify.

    With --live, exit 3 also when a table changed since the cutover or SQLite and PostgreSQL differ now. While
    the rollback window is open both sides change by design (the app writes PostgreSQL, `replicator run`
    writes it back into SQLite): the changes are listed, and only a difference between the two sides fails.
    """
    from replicator.cutover import certificate as cert_mod
    from replicator.errors import VerificationFailed
    from replicator.state.store import StateStore

    stored = None
    if ctx.config.target.dsn:
        with pg.connect(ctx.target, autocommit=True) as conn:
            stored = cert_mod.latest(StateStore(conn, ctx.config.target.state_schema))
    cert = cert_mod.read_file(verify_file) if verify_file is not None else stored
    if cert is None:
        raise UsageError("no cutover certificate in the target", hint="pass --verify FILE or run cutover first")
    cert_mod.check(cert, stored)
    if verify_file is not None and stored is not None and stored.sha256 != cert.sha256:
        raise VerificationFailed(
            f"{verify_file} is sealed ({cert.sha256[:16]}) but is not the certificate stored in the target "
            f"({stored.sha256[:16]})",
            hint="an older cutover's file, or another target",
        )
    moved = []
    differ: list[str] = []
    window: str | None = None
    source = Path(ctx.config.source.path) if ctx.config.source.path else None
    if live:
        window = _window_hint(ctx)
        moved = cert_mod.live_check(cert, source, ctx.target, ctx.config)
        if source is not None:
            report = cert_mod.live_compare(cert, source, ctx.target, ctx.config)
            differ = [_differing(t) for t in report.tables if t.status == "mismatch"]
    unequal = cert_mod.proof_problems(cert)
    listed = "; ".join(f"{m.side} {m.table}: {m.certified_rows} → {m.rows} rows" for m in moved)
    if as_json:
        click.echo(msgspec.json.encode(cert).decode())
    elif not ctx.quiet:
        click.echo(cert_mod.render(cert))
        click.echo("seal: SHA-256 verifies" + _live_line(live, moved, differ, listed, window, source is not None))
    if unequal:
        raise VerificationFailed(
            f"the certificate records tables that differ: {'; '.join(unequal)}",
            hint="a cutover never certifies a difference: this certificate was edited and resealed; "
            "`replicator audit` checks it with the chain",
        )
    if window is not None and not differ:
        return  # the window carries PostgreSQL's changes back: moving is what both sides do there
    if moved or differ:
        raise VerificationFailed(
            f"changed since the cutover: {'; '.join([listed, *differ] if listed else differ)}",
            hint=window or "see `replicator rollback` before going back",
        )


def _live_line(
    live: bool, moved: Sequence[Moved], differ: list[str], listed: str, window: str | None, compared: bool
) -> str:
    """What ``--live`` found, after the seal's line (the failures are the error's, below)."""
    if not live:
        return ""
    if not moved and not differ:
        return "; live: unchanged since the cutover"
    if window is None or differ:
        return ""
    carried = f"; live: changed since the cutover as the rollback window carries PostgreSQL's changes back ({listed})"
    if compared:
        return carried + "; SQLite and PostgreSQL compare equal"
    return carried + "; pass --source to compare SQLite with PostgreSQL"


def _window_hint(ctx: Context) -> str | None:
    """With the rollback window open, what a difference means (:func:`replicator.inspect.window.window_hint`)."""
    from replicator.inspect import window

    with pg.connect(ctx.target, autocommit=True, connect_timeout=ctx.config.target.connect_timeout_s) as conn:
        return window.window_hint(conn, ctx.config.target.state_schema)


def _differing(t: TableVerify) -> str:
    """One table the live independent comparison found different, with its first keys."""
    keys = [*(f"missing {k}" for k in t.missing), *(f"extra {k}" for k in t.extra)]
    keys += [f"different {k}" for k in t.different]
    return f"SQLite ≠ PostgreSQL {t.table} ({', '.join(keys[:5]) or 'no key'})"


@click.command("audit")
@options.existing_file(
    "--certificate", "certificate_path", required=True, text="The certificate cutover wrote (app.db.cutover.json)."
)
@options.existing_file("--chain", required=True, text="The chain as `checkpoints export` wrote it after the cutover.")
@options.existing_file("--backup", text="The SQLite backup the cutover took: its SHA-256 must be the certificate's.")
@options.existing_file(
    "--public-key", text="The signing key's public half (`keys generate`): the signature must verify with it."
)
@click.option(
    "--html",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the report as one self-contained HTML page (verdict, tables, timelines).",
)
@options.json_flag("Print the audit as JSON.")
def audit_command(
    certificate_path: Path, chain: Path, backup: Path | None, public_key: Path | None, html: Path | None, as_json: bool
) -> None:
    """Check a cutover offline from its files: certificate, chain export, backup, signature; PASS or FAIL.

    Needs no database. Exit 0 when every check that ran passed, 3 when one failed; the report says which
    checks could not run (no --backup, no --public-key). The formats are in docs/audit.md.
    """
    from replicator.cutover import auditor
    from replicator.errors import VerificationFailed

    try:
        result = auditor.audit(certificate_path, chain, backup=backup, public_key=public_key)
        click.echo(msgspec.json.encode(result).decode() if as_json else auditor.render(result))
        if html is not None:
            from replicator import files
            from replicator.cutover import audit_html

            with files.writing(html, what="the HTML report", instead="choose another --html"):
                html.write_text(audit_html.render(result), encoding="utf-8")
        if not result.passed:
            failed = [c.name for c in result.checks if c.status == "fail"]
            raise VerificationFailed(
                f"audit FAIL: {', '.join(failed)}", hint="each finding is listed above; keep the files as they are"
            )
    except OperatorError as exc:
        fail(exc, 0)


@click.group("keys")
def keys_group() -> None:
    """The Ed25519 key that signs cutover certificates (docs/audit.md)."""


@keys_group.command("generate")
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Where to write replicator-signing.key (mode 0600) and replicator-signing.pub.",
)
@click.option("--force", is_flag=True, help="Replace key files that exist.")
def keys_generate(out_dir: Path, force: bool) -> None:
    """Make a signing key pair: set [signing] key to the private file; give auditors the .pub file."""
    from replicator.cutover import signing

    try:
        private, public, key_id = signing.generate(out_dir, force=force)
    except OperatorError as exc:
        fail(exc, 0)
    click.echo(f"private key {private} (mode 0600: keep it where cutover runs, and nowhere else)")
    click.echo(f"public key  {public} (give it to auditors: `replicator audit --public-key {public.name}`)")
    click.echo(f'key id {key_id}; sign certificates with it: [signing] key = "{private.resolve()}"')
