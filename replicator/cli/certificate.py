"""The proof a cutover leaves: the ``certificate``, its offline ``audit``, and the signing ``keys``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
import msgspec
from psycopg import sql

from replicator import pg
from replicator.cli import options
from replicator.cli.context import Context, common_options, fail
from replicator.errors import OperatorError, UsageError

if TYPE_CHECKING:
    from replicator.cutover.certificate import Moved
    from replicator.inspect.verify_compare import TableVerify
    from replicator.reverse.rollback_certificate import RollbackCertificate


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

    --verify also takes the rollback certificate `replicator rollback` wrote: its seal is checked, and with a
    target, that it is the one the state schema keeps and that the chain holds the checkpoint it names.
    """
    from replicator.cutover import certificate as cert_mod
    from replicator.errors import VerificationFailed
    from replicator.state.store import StateStore

    if verify_file is not None and _is_rollback_certificate(verify_file):
        if live:
            raise UsageError(
                "--live re-reads the databases against a cutover certificate, not a rollback one",
                hint="drop --live: after a rollback, SQLite is the app's database again",
            )
        _verify_rollback(ctx, verify_file, as_json)
        return
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


def _is_rollback_certificate(path: Path) -> bool:
    """Whether the file is a rollback certificate (it names when it rolled back); anything else, a file that is
    not there or not JSON included, is read as a cutover certificate, which reports it."""
    try:
        data = msgspec.json.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return False
    return isinstance(data, dict) and "rolled_back_at" in data


def _verify_rollback(ctx: Context, path: Path, as_json: bool) -> None:
    """The rollback certificate's checks: its seal; with a target, the same seal as the one the state schema keeps
    (:func:`replicator.state.reverse.store_certificate`) and a ``rollback`` checkpoint in the chain with the hash
    it names; every table it certifies equal or its refusals acknowledged."""
    from replicator.cutover.certificate import CertificateError
    from replicator.errors import VerificationFailed
    from replicator.reverse import rollback_certificate as rb

    try:
        cert = rb.decode(path.read_bytes())
    except msgspec.DecodeError as exc:
        raise CertificateError(
            f"{path} is not a rollback certificate: {exc}", hint="pass the file rollback wrote"
        ) from None
    if not rb.seal_ok(cert):
        raise VerificationFailed(
            f"{path} does not hash to its seal {cert.sha256[:16]}: it was changed after it was sealed",
            hint="the state schema keeps the certificate as sealed: `replicator rollback` writes it again",
        )
    found = _rollback_in_target(ctx, cert) if ctx.config.target.dsn else ""
    uncertified = [
        f"{t.table} ({t.status}, SQLite {t.sqlite_rows} / PostgreSQL {t.postgres_rows} rows)"
        for t in cert.tables
        if t.status not in ("match", "acknowledged") or (t.status == "match" and t.sqlite_rows != t.postgres_rows)
    ]
    if uncertified:
        raise VerificationFailed(
            f"the rollback certificate records tables that were not proved equal: {', '.join(uncertified)}",
            hint="rollback never certifies a difference: this certificate was edited and resealed",
        )
    if as_json:
        click.echo(msgspec.json.encode(cert).decode())
    elif not ctx.quiet:
        outage = "not measured (finished by a rerun)" if cert.write_outage_s is None else f"{cert.write_outage_s} s"
        click.echo(f"rollback certificate: {cert.source} ← {cert.target}, rolled back at {cert.rolled_back_at}")
        click.echo(f"window opened {cert.window_opened_at}, {cert.batches_in_window} batches; write outage {outage}")
        for t in cert.tables:
            click.echo(f"  {t.table}: SQLite {t.sqlite_rows} = PostgreSQL {t.postgres_rows} rows ({t.status})")
        for refusal in cert.acknowledged_refusals:
            click.echo(f"  acknowledged, not carried back: {refusal}")
        click.echo("seal: SHA-256 verifies" + found)


def _rollback_in_target(ctx: Context, cert: RollbackCertificate) -> str:
    """The target's side of a rollback certificate's check (the seal line's tail when it holds)."""
    from checkpoints import store
    from replicator.errors import VerificationFailed
    from replicator.reverse import rollback_certificate as rb
    from replicator.state import reverse

    schema = ctx.config.target.state_schema
    with pg.connect(ctx.target, autocommit=True, connect_timeout=ctx.config.target.connect_timeout_s) as conn:
        body = reverse.read_certificate(conn, schema, cert.cutover_checkpoint)
        row = conn.execute(
            sql.SQL("SELECT kind FROM {} WHERE hash = %s").format(sql.Identifier(schema, store.TABLE)),
            (cert.chain_head,),
        ).fetchone()
    if body is not None:
        kept = rb.verified(body)
        if kept.sha256 != cert.sha256:
            raise VerificationFailed(
                f"the file is sealed ({cert.sha256[:16]}) but is not the rollback certificate the target keeps "
                f"({kept.sha256[:16]})",
                hint="another rollback's file, or another target",
            )
    if row is None or row[0] != "rollback":
        raise VerificationFailed(
            f"the target's chain has no rollback checkpoint {cert.chain_head[:16]}, which the certificate names",
            hint="another target, or a chain replaced since (`replicator audit` checks the chain)",
        )
    return "; the target keeps the same certificate" if body is not None else "; the target's chain names it"


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
