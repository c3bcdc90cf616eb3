"""``replicator audit``: the certificate, the chain export and the backup checked together, offline.

What an auditor holds after a cutover is files, not databases: the certificate cutover wrote, a
``checkpoints export`` and perhaps the backup and the signing key's public half. Each file has its own
check (``checkpoints verify --file``, ``certificate --verify``), but only together do they prove the
migration: the chain must hold the cutover checkpoint the certificate names, at its stop point, with nothing
after it but the rollback window's records (reverse batches, then a rollback or a finalize: a chain exported
after the cutover may hold them, and the certificate does not vouch for them), its figures added up through
that checkpoint must be the certificate's per-table counts and checksums, every table proof must hold, the
backup must be the one the certificate names, and the signature (when a public key is given) must sign it
all. :func:`audit` runs each check it can and says which it could not run and why;
the verdict is PASS only when none that ran failed. Each finding is said in words an auditor reads, the
technical detail after it. The formats are in docs/audit.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from checkpoints import audit as chain_audit
from checkpoints import ledger
from checkpoints.errors import CheckpointError
from checkpoints.exportfile import read_file
from checkpoints.findings import Finding, Problem, Report
from checkpoints.model import REVERSE_KINDS, Checkpoint, Kind, Record
from replicator import files
from replicator.cutover import certificate as cert_mod
from replicator.cutover import signing
from replicator.cutover.certificate import Certificate

Status = Literal["pass", "fail", "not run"]

#: Each chain problem in an auditor's words (the tool's own name and detail follow in parentheses).
PLAIN: dict[Problem, str] = {
    Problem.EDITED: "was altered after it was written: its contents no longer match its fingerprint",
    Problem.BROKEN_LINK: "does not link to the record before it: a record was changed, removed or inserted",
    Problem.DELETED: "is missing",
    Problem.REORDERED: "is out of place",
    Problem.DUPLICATE: "is present twice",
    Problem.SEQ_OVERLAP: "records changes that an earlier record already recorded",
    Problem.SEQ_GAP: "leaves changes recorded nowhere between it and the record before it",
    Problem.BAD_ROOT: "does not start the record the way a migration does",
    Problem.BAD_COMPACTION: "summarises older records in a way that does not add up",
    Problem.CORRUPT: "cannot be read",
    Problem.TORN_TAIL: "is cut short: the file ends in the middle",
    Problem.HEAD_MISMATCH: "has a closing line that does not describe the records above it",
    Problem.AFTER_CUTOVER: "was recorded after the cutover, when the migration had ended",
    Problem.AFTER_END: "was recorded after the rollback window had closed: nothing may follow a rollback or finalize",
    Problem.BEFORE_CUTOVER: "claims to write PostgreSQL's changes back into SQLite before any cutover",
}


class Check(msgspec.Struct, frozen=True):
    """One check: ``pass``, ``fail`` or ``not run`` (with why), in words, and each finding."""

    name: str
    status: Status
    summary: str
    findings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


class Point(msgspec.Struct, frozen=True):
    """One checkpoint as the timeline plots it."""

    number: int
    kind: str
    at: str
    seq_from: int
    seq_to: int
    journal_head: int | None
    rows: int
    """Row images written plus keys deleted."""


class Audit(msgspec.Struct, frozen=True):
    certificate_path: str
    chain_path: str
    certificate: Certificate
    checks: tuple[Check, ...]
    points: tuple[Point, ...]
    figures: dict[str, ledger.Figures]

    @property
    def passed(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"


def audit(certificate: Path, chain: Path, *, backup: Path | None = None, public_key: Path | None = None) -> Audit:
    """Every check that the files given allow; see the module docstring."""
    cert = cert_mod.read_file(certificate)
    public = signing.load_public(public_key) if public_key is not None else None
    report = chain_audit.report_file(chain)
    records, _, _ = read_file(chain)
    decoded = _decoded(records)
    # What the certificate vouches for ends at its cutover checkpoint: the rollback window after it is not added.
    book = ledger.add_up(decoded, through=cert.chain_head) if decoded is not None else None
    checks = (
        _seal(cert, public),
        _signature(cert, public),
        _integrity(report),
        _head(cert, report, records, decoded),
        _proofs(cert),
        _figures(cert, book),
        _backup(cert, backup),
    )
    points = tuple(_point(c) for c in decoded or ())
    return Audit(str(certificate), str(chain), cert, checks, points, book.tables if book else {})


def _decoded(records: list[Record]) -> list[Checkpoint] | None:
    try:
        return [r.decode() for r in records]
    except CheckpointError:
        return None  # the integrity check names the unreadable record


def _point(c: Checkpoint) -> Point:
    rows = sum(t.upserted + t.deleted for t in c.tables.values())
    return Point(c.number, str(c.kind), c.at, c.seq_from, c.seq_to, c.journal_head, rows)


def _seal(cert: Certificate, public: Ed25519PublicKey | None) -> Check:
    name = "certificate seal"
    if cert_mod.seal_ok(cert):
        return Check(name, "pass", "the SHA-256 recorded in the certificate matches its contents")
    sig = cert.signature
    signed = (lambda seal: signing.verifies(sig, seal, public)) if sig is not None and public is not None else None
    return Check(
        name,
        "fail",
        "the certificate's contents do not match its SHA-256",
        (cert_mod.seal_problem(cert, None, signed),),
    )


def _signature(cert: Certificate, public: Ed25519PublicKey | None) -> Check:
    name, sig = "signature", cert.signature
    weak = "the seal detects accidental damage only: anyone who edits the certificate can recompute it"
    if public is None:
        if sig is None:
            unsigned = "the certificate is not signed (no signing key at the cutover) and no --public-key was given"
            return Check(name, "not run", f"{unsigned}, so {weak}")
        unchecked = f"the certificate is signed (key {sig.key_id}) but no --public-key was given to check it"
        return Check(name, "not run", f"{unchecked}: until it is checked, {weak}")
    given = signing.key_id(public)
    if sig is None:
        return Check(
            name,
            "fail",
            f"a public key was given (key {given}) but the certificate carries no signature",
            ("it was written without a signing key, or its signature was removed",),
        )
    if sig.key_id != given:
        return Check(name, "fail", f"the certificate is signed by key {sig.key_id}, not by the key given ({given})")
    if not signing.verifies(sig, cert.sha256, public) or not cert_mod.seal_ok(cert):
        why = (
            cert_mod.seal_problem(cert, None, lambda seal: signing.verifies(sig, seal, public))
            if not cert_mod.seal_ok(cert)
            else "its fields were changed and its seal recomputed after it was signed"
        )
        return Check(name, "fail", f"the signature of key {given} does not sign this certificate", (why,))
    return Check(
        name, "pass", f"signed by key {given}: every field is as the cutover wrote it, the chain's head included"
    )


def _integrity(report: Report) -> Check:
    name = "chain integrity"
    if report.findings:
        return Check(
            name,
            "fail",
            f"{len(report.findings)} problem(s) in the chain export",
            tuple(_plain(f) for f in report.findings),
        )
    return Check(name, "pass", f"{report.count} checkpoints, each intact and linked to the one before it")


def _plain(finding: Finding) -> str:
    where = f"checkpoint {finding.number}" if finding.number is not None else "the export file"
    return f"{where} {PLAIN.get(finding.problem, str(finding.problem))} ({finding.problem}: {finding.detail})"


def _head(cert: Certificate, report: Report, records: list[Record], decoded: list[Checkpoint] | None) -> Check:
    """The certificate's cutover checkpoint is in the chain, at its stop point; only the window follows it."""
    name = "chain head"
    at = next((i for i, r in enumerate(records) if r.number == cert.chain_head), None)
    if at is None or records[at].hash != cert.chain_head_hash:
        named = (
            f"the certificate says the migration ended at checkpoint #{cert.chain_head} ({cert.chain_head_hash[:12]}…)"
        )
        if at is not None:
            held = f"the chain's checkpoint {cert.chain_head} is {records[at].hash[:12]}…"
        elif records:
            held = (
                f"the chain does not hold checkpoint {cert.chain_head}: it ends at checkpoint {report.head} "
                f"({(report.head_hash or '')[:12]}…)"
            )
        else:
            held = "the chain holds no checkpoints"
        found = [f"{held}, but {named}"]
        if report.cutover is None:
            found.append("the chain holds no cutover checkpoint")
        return Check(name, "fail", "the chain and the certificate describe different ends", tuple(found))
    if decoded is None:
        return Check(name, "not run", "the chain cannot be read to check its cutover (see the integrity check above)")
    return _window(cert, decoded[at], decoded[at + 1 :])


def _window(cert: Certificate, cut: Checkpoint, after: list[Checkpoint]) -> Check:
    """The certificate's head checkpoint and what follows it: the rollback window's records, or nothing."""
    name, found = "chain head", []
    if cut.kind is not Kind.CUTOVER:
        found.append(f"the checkpoint #{cut.number} the certificate names is a {cut.kind}, not the cutover checkpoint")
    elif cut.seq_to != cert.stop_seq:
        found.append(
            f"the cutover checkpoint covers changes up to {cut.seq_to}; the certificate's stop point is {cert.stop_seq}"
        )
    strays = [c for c in after if c.kind not in REVERSE_KINDS]
    if strays:
        listed = ", ".join(f"{c.number} ({c.kind})" for c in strays[:5]) + (", …" if len(strays) > 5 else "")
        found.append(
            f"records other than the rollback window's follow the cutover checkpoint {cut.number}: checkpoint(s) "
            f"{listed}"
        )
    if found:
        return Check(name, "fail", "the chain and the certificate describe different ends", tuple(found))
    summary = (
        f"the chain holds the cutover checkpoint #{cert.chain_head} the certificate names "
        f"({cert.chain_head_hash[:12]}…), at the stop point (change {cert.stop_seq:,})"
    )
    if not after:
        return Check(name, "pass", f"{summary}, and ends there")
    window = f"{summary}, followed by {len(after)} record(s) of the rollback window"
    return Check(name, "pass", window, (), (_tail(after),))


def _tail(after: list[Checkpoint]) -> str:
    """The rollback window's records in words: what they are, and that the cutover certificate stops before them."""
    reverse = sum(1 for c in after if c.kind is Kind.REVERSE)
    last = after[-1]
    state = {
        Kind.ROLLBACK: f"closed by a rollback to SQLite at checkpoint {last.number}",
        Kind.FINALIZE: f"closed by finalizing PostgreSQL at checkpoint {last.number}",
    }.get(last.kind, "still open when the chain was exported")
    return (
        f"checkpoints {after[0].number}..{last.number}: {reverse} reverse batch(es) of PostgreSQL's changes written "
        f"back into SQLite, {state}; the chain integrity check covers them, this certificate does not vouch for them"
    )


def _proofs(cert: Certificate) -> Check:
    name, found = "table proofs", cert_mod.proof_problems(cert)
    if found:
        return Check(name, "fail", f"{len(found)} table proof(s) in the certificate do not hold", tuple(found))
    independent = all(t.independent is not None for t in cert.tables)
    also = "; each also compared by the independent reading" if independent and cert.tables else ""
    return Check(
        name, "pass", f"{len(cert.tables)} table(s): the same rows and the same checksum in SQLite and PostgreSQL{also}"
    )


def _figures(cert: Certificate, book: ledger.Ledger | None) -> Check:
    name = "figures reconcile"
    if book is None:
        return Check(name, "not run", "the chain cannot be read to add it up (see the integrity check above)")
    found, unknown, notes = [], [], []
    for t in cert.tables:
        f = book.tables.get(t.table)
        if t.table in book.breaks:
            found.append(f"{t.table}: {book.breaks[t.table]}")
        if t.table in book.unknown:
            unknown.append(f"{t.table}: {book.unknown[t.table]}")
        elif f is None:
            found.append(f"{t.table}: the chain holds no figures for it")
        elif f.rows != t.pg_rows:
            found.append(f"{t.table}: the chain adds up to {f.rows:,} rows, the certificate says {t.pg_rows:,}")
        elif f.digest != t.pg_digest:
            found.append(
                f"{t.table}: the chain adds up to the same {f.rows:,} rows but another checksum "
                f"({f.digest[:12]}… against the certificate's {t.pg_digest[:12]}…)"
            )
        elif f.read_anew:
            notes.append(
                f"{t.table}: its checksum was read anew at checkpoint(s) {', '.join(map(str, f.read_anew))} "
                "(the same rows, another reading of their values); its count adds up from the first record"
            )
    checked = len(cert.tables) - len(unknown)
    if found:
        return Check(
            name, "fail", "the chain's figures do not add up to the certificate's", tuple(found), tuple(unknown)
        )
    if not checked and cert.tables:
        return Check(name, "not run", "no table can be added up from this chain", (), tuple(unknown))
    return Check(
        name,
        "pass",
        f"{checked} table(s): added up from the first record through the cutover checkpoint, the chain gives the "
        "rows and checksum the certificate records for each",
        (),
        tuple(unknown + notes),
    )


def _backup(cert: Certificate, backup: Path | None) -> Check:
    name = "backup file"
    if backup is None:
        named = (
            f"the certificate names {cert.backup}, SHA-256 {cert.backup_sha256[:16]}…"
            if cert.backup and cert.backup_sha256
            else "the cutover took none"
        )
        return Check(name, "not run", f"no --backup given ({named})")
    if not cert.backup_sha256:
        return Check(name, "fail", "the certificate records no backup (the cutover ran with --no-backup)")
    actual = files.sha256_file(backup)
    if actual != cert.backup_sha256:
        return Check(
            name,
            "fail",
            f"{backup} is not the backup the certificate names",
            (f"its SHA-256 is {actual[:16]}…, the certificate records {cert.backup_sha256[:16]}…",),
        )
    return Check(name, "pass", f"{backup} is the copy of SQLite the cutover took (SHA-256 {actual[:16]}…)")


def not_created(cert: Certificate) -> list[str]:
    """Each schema object of SQLite's the certificate says PostgreSQL lacks, in an auditor's words: after the
    cutover the application runs without it (not a failed check: the operator accepted it, and it is sealed)."""
    what = {
        "unique index": "a rule that no two rows may share these values",
        "index": "an index (speed only: no rule is lost)",
        "check": "a rule every row must obey",
        "foreign key": "a rule that rows point at existing rows of another table",
    }
    return [
        f"{n.kind} {n.name} on {n.table} ({what.get(n.kind, n.kind)}) was not created in PostgreSQL: {n.reason}"
        for n in cert.not_created
    ]


def render(result: Audit) -> str:
    """The text report: what was audited, each check (ran / FAILED / not run) and its findings, the verdict."""
    cert = result.certificate
    lines = [
        f"audit of {result.certificate_path} with the chain {result.chain_path}",
        f"  migration {cert.source_path} → {cert.target}; cut over at {cert.fenced_at}, "
        f"writes stopped for {cert.write_outage_s:.3f} s; {len(cert.tables)} table(s)",
    ]
    missing = not_created(cert)
    if missing:
        accepted = "accepted at the cutover" if cert.accept_missing_constraints else "NOT accepted at the cutover"
        lines.append(f"  PostgreSQL lacks {len(missing)} schema object(s) of SQLite's ({accepted}):")
        lines += [f"           - {m}" for m in missing]
    lines.append("checks:")
    label = {"pass": "ran", "fail": "FAILED", "not run": "not run"}
    for check in result.checks:
        lines.append(f"  {label[check.status]:<8} {check.name}: {check.summary}")
        lines += [f"           - {f}" for f in check.findings]
        lines += [f"           · {n}" for n in check.notes]
    failed = [c.name for c in result.checks if c.status == "fail"]
    skipped = [c.name for c in result.checks if c.status == "not run"]
    ran = len(result.checks) - len(skipped)
    if failed:
        tail = f"{len(failed)} of the {ran} checks that ran failed: {', '.join(failed)}"
    else:
        tail = f"all {ran} checks that ran passed"
    if skipped:
        tail += f"; not run: {', '.join(skipped)}"
    lines.append(f"verdict: {result.verdict} — {tail}")
    return "\n".join(lines)
