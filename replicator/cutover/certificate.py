"""The cutover certificate: what was proven at the stop point, sealed with its own SHA-256.

Written by ``replicator cutover`` as a JSON file and stored in the target's state schema
(``<state>.cutover_certificates``). The seal is the SHA-256 of the certificate's canonical JSON
encoding with ``sha256`` empty, so anyone can re-check it (``replicator certificate --verify FILE``):
a changed byte in any field changes the hash. Against the live databases, :func:`live_check`
re-reads both sides and reports every table whose count or checksum moved since the stop point, and
:func:`live_compare` compares the two sides with verify's independent reading (:mod:`replicator.inspect.proof`),
the comparison each table's ``independent`` proof records.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from replicator import files, pg
from replicator.config import Config
from replicator.errors import ReplicatorError, UsageError, VerificationFailed
from replicator.inspect import verify, verify_compare, verify_pg, verify_shape, verify_sqlite
from replicator.plan.schemaplan import NotCreated, SchemaPlan
from replicator.state.store import StateStore
from triggers import source as sqlite_source

FORMAT = 5
"""2 added what the migration left out (skipped tables and columns, every quarantined value); 3 added each
table's independent comparison (``TableProof.independent``); 4 the Ed25519 ``signature`` of the seal
(:mod:`replicator.cutover.signing`); 5 each schema object not created in PostgreSQL (``not_created``) and
``accept_missing_constraints``. An older certificate is sealed without the fields added after its format, and
:func:`_body` leaves them out to check its seal."""
_ADDED_IN_2 = ("skipped_tables", "skipped_columns", "accept_skipped_columns", "quarantine")
_ADDED_IN_4 = ("signature",)
_ADDED_IN_5 = ("not_created", "accept_missing_constraints")
_ADDED_IN_3_PER_TABLE = ("independent",)
STEP_ORDER = (
    *("preflight", "backup", "prepass", "catchup", "freeze", "drain", "verify", "copy"),
    *("finish_pg", "fence", "commit", "analyze", "certificate"),
)
"""The order cutover runs its steps in (the sealed JSON sorts keys)."""


class IndependentCheck(msgspec.Struct, frozen=True):
    """One table compared by the reading the load path cannot bias (:mod:`replicator.inspect.proof`, verify's).

    ``preflight``: cutover's full verify, before the freeze, at applied position ``seq`` (keys journaled
    after it were ``in_flight``: the drains applied them, and the stop point compared every key journaled
    after ``seq`` by this reading too);
    ``copied``: a snapshot-only table read whole on both sides after it was copied again at the stop point.
    The digests are over the canonical rows, not comparable with ``TableProof``'s load-path digests."""

    at: str
    status: str
    sqlite_rows: int
    sqlite_digest: str
    pg_rows: int
    pg_digest: str
    seq: int | None = None
    in_flight: int = 0


class TableProof(msgspec.Struct, frozen=True):
    """One table at the stop point: count and checksum on each side, and how the SQLite side was read."""

    table: str
    target: str
    sqlite_rows: int
    sqlite_digest: str
    pg_rows: int
    pg_digest: str
    how: str = "full"
    """``prepass``: unchanged since the pre-freeze read; ``incremental``: changed keys re-read; ``full``;
    ``copied``: a snapshot-only table copied again from the frozen SQLite, then both sides read whole."""
    independent: IndependentCheck | None = None
    """The independent comparison the verdict rests on; None: none ran (cutover ``--skip-full-verify``)."""

    @property
    def equal(self) -> bool:
        """Both sides hold the same rows: the counts and the checksums agree."""
        return (self.sqlite_rows, self.sqlite_digest) == (self.pg_rows, self.pg_digest)


class QuarantineEntry(msgspec.Struct, frozen=True):
    """One value the migration did not carry (``--on-bad-value quarantine``), and whether someone accepted it."""

    table: str
    key: Any
    column: str
    reason: str
    action: str
    acknowledged: bool


class Signature(msgspec.Struct, frozen=True):
    """Ed25519 over the seal (docs/audit.md, "Signature"): who holds the public key can check every field."""

    algorithm: str
    key_id: str
    """First 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    value: str
    """The 64-byte signature, hex."""


class Certificate(msgspec.Struct, frozen=True):
    source_path: str
    source_id: str
    source_sha256: str
    target: str
    stop_seq: int
    chain_head: int
    chain_head_hash: str
    tables: tuple[TableProof, ...]
    steps: dict[str, float]
    """Seconds per step, in the order they ran."""
    frozen_at: str
    fenced_at: str
    write_outage_s: float
    tool: str
    operator: str
    accept_quarantine: bool = False
    quarantined: dict[str, int] = msgspec.field(default_factory=dict)
    backup: str | None = None
    backup_sha256: str | None = None
    sequences: dict[str, int] = msgspec.field(default_factory=dict)
    foreign_keys: tuple[str, ...] = ()
    """Each FK restored/validated (``table.name``)."""
    skipped_tables: dict[str, str] = msgspec.field(default_factory=dict)
    """Tables in SQLite the migration left out on purpose, with the reason (config, an ORM's migration table)."""
    skipped_columns: dict[str, str] = msgspec.field(default_factory=dict)
    """``table.column`` left out by config, with the reason: their values are not in PostgreSQL."""
    accept_skipped_columns: bool = False
    """The operator passed ``--accept-skipped-columns`` (required when any column is skipped)."""
    quarantine: tuple[QuarantineEntry, ...] = ()
    """Every quarantined value, acknowledged or accepted with ``--accept-quarantine``."""
    not_created: tuple[NotCreated, ...] = ()
    """Each UNIQUE index, index, CHECK or foreign key of SQLite's that PostgreSQL does not hold: the app runs
    without it after the cutover (format 5)."""
    accept_missing_constraints: bool = False
    """The operator passed ``--accept-missing-constraints`` (required when ``not_created`` is not empty)."""
    format: int = FORMAT
    sha256: str = ""
    signature: Signature | None = None
    """None: not signed (no ``[signing] key`` configured); the seal then detects accidental damage only."""


class CertificateError(ReplicatorError):
    """The certificate is missing, unreadable, or its seal does not verify (exit 3)."""

    exit_code = 3


def _body(cert: Certificate) -> bytes:
    """What the seal hashes: every field, ``sha256`` empty and ``signature`` null (it signs the seal)."""
    body = msgspec.structs.replace(cert, sha256="", signature=None)
    if cert.format >= FORMAT:
        return msgspec.json.encode(body, order="sorted")
    fields = msgspec.to_builtins(body)  # what an older certificate was sealed over
    fields = {k: v for k, v in fields.items() if k not in _ADDED_IN_5}
    if cert.format < 4:
        fields = {k: v for k, v in fields.items() if k not in _ADDED_IN_4}
    if cert.format < 3:
        fields["tables"] = [{k: v for k, v in t.items() if k not in _ADDED_IN_3_PER_TABLE} for t in fields["tables"]]
    if cert.format < 2:
        fields = {k: v for k, v in fields.items() if k not in _ADDED_IN_2}
    return msgspec.json.encode(fields, order="sorted")


def seal(cert: Certificate) -> Certificate:
    return msgspec.structs.replace(cert, sha256=hashlib.sha256(_body(cert)).hexdigest())


def seal_ok(cert: Certificate) -> bool:
    return bool(cert.sha256) and hashlib.sha256(_body(cert)).hexdigest() == cert.sha256


def encode(cert: Certificate) -> bytes:
    return msgspec.json.format(msgspec.json.encode(cert, order="sorted"), indent=2) + b"\n"


def write_file(path: Path, cert: Certificate) -> None:
    """Temp file, fsync, rename: a reader never sees half a certificate. A full disk, a quota or a size limit
    raises :class:`replicator.files.WriteFailed` naming the path; the temp file is removed."""
    partial = path.with_name(f".{path.name}.partial")
    with files.writing(path, what="the certificate", instead="choose another --certificate"):
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                left = memoryview(encode(cert))
                while left:  # a short write is followed by one that says why (ENOSPC, EFBIG)
                    left = left[os.write(fd, left) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


def read_file(path: Path) -> Certificate:
    try:
        return msgspec.json.decode(path.read_bytes(), type=Certificate)
    except FileNotFoundError:
        raise UsageError(f"certificate file {path} does not exist", hint="pass the file cutover wrote") from None
    except msgspec.DecodeError as exc:
        raise CertificateError(
            f"{path} is not a cutover certificate: {exc}", hint="pass the file cutover wrote"
        ) from None


def store(state_store: StateStore, cert: Certificate) -> None:
    state_store.ensure()
    state_store.execute(
        "INSERT INTO {schema}.cutover_certificates (sha256, body) VALUES (%s, %s)", (cert.sha256, encode(cert))
    )


def latest(state_store: StateStore) -> Certificate | None:
    if not state_store.has_table("cutover_certificates"):
        return None
    row = state_store.execute("SELECT body FROM {schema}.cutover_certificates ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else msgspec.json.decode(bytes(row[0]), type=Certificate)


class Moved(msgspec.Struct, frozen=True):
    """A table whose count or checksum differs from the certificate on one side."""

    table: str
    side: str
    certified_rows: int
    certified_digest: str
    rows: int
    digest: str


def pg_side(conn: psycopg.Connection[Any], plan: SchemaPlan, names: list[str]) -> dict[str, tuple[int, str]]:
    """Count and canonical digest of each table as PostgreSQL holds it now (one REPEATABLE READ snapshot).

    ``conn`` must be in autocommit mode (the snapshot is this function's own transaction)."""
    out: dict[str, tuple[int, str]] = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for name in names:
            side = verify_pg.table_digest_pg(conn, verify_shape.shape_of(plan.table(name), plan.schema))
            out[name] = (side.count, side.hexdigest())
    return out


def sqlite_side(
    path: Path,
    plan: SchemaPlan,
    names: list[str],
    busy_ms: int,
    quarantined: dict[str, frozenset[str]] | None = None,
) -> dict[str, tuple[int, str]]:
    """Count and digest of each table in SQLite, without the rows the quarantine holds (as certified)."""
    conn = sqlite_source.connect(path, readonly=True, busy_timeout_ms=busy_ms)
    try:
        conn.execute("BEGIN")
        out: dict[str, tuple[int, str]] = {}
        for name in names:
            shape = verify_shape.shape_of(plan.table(name), plan.schema)
            if quarantined and quarantined.get(name):
                shape = msgspec.structs.replace(shape, quarantined=quarantined[name])
            side = verify_sqlite.table_digest_sqlite(conn, shape)
            out[name] = (side.count, side.hexdigest())
        return out
    except sqlite3.Error as exc:
        raise sqlite_source.translate(exc, path) from None
    finally:
        conn.close()


def moved(cert: Certificate, side: str, now: dict[str, tuple[int, str]]) -> list[Moved]:
    result = []
    for proof in cert.tables:
        rows, digest = (
            (proof.sqlite_rows, proof.sqlite_digest) if side == "sqlite" else (proof.pg_rows, proof.pg_digest)
        )
        got = now.get(proof.table)
        if got is None or got != (rows, digest):
            result.append(Moved(proof.table, side, rows, digest, *(got or (-1, ""))))
    return result


def live_check(cert: Certificate, source: Path | None, dsn: str, config: Config) -> list[Moved]:
    """Tables whose count or checksum moved since the certificate, on each side that is reachable."""
    names = [t.table for t in cert.tables]
    with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as conn:
        state_store = StateStore(conn, config.target.state_schema)
        plan = state_store.load_plan()
        if plan is None:
            raise UsageError("the target holds no saved plan", hint="is this the target the certificate names?")
        found = moved(cert, "postgresql", pg_side(conn, plan, names))
        quarantined = verify_shape.quarantined_keys(state_store, plan.tables)
    if source is not None:
        busy_ms = config.source.busy_timeout_ms
        found += moved(cert, "sqlite", sqlite_side(source, plan, names, busy_ms, quarantined))
    return found


def live_compare(cert: Certificate, source: Path, dsn: str, config: Config) -> verify_compare.VerifyReport:
    """The certified tables compared now, SQLite against PostgreSQL, by verify's independent reading (the
    comparison cutover's preflight ran; the moved check above compares each side with its own record)."""
    with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as conn:
        plan = StateStore(conn, config.target.state_schema).load_plan()
    if plan is None:
        raise UsageError("the target holds no saved plan", hint="is this the target the certificate names?")
    return verify.verify(source, dsn, config, [t.table for t in cert.tables], keys=True, plan=plan)


def check(cert: Certificate, stored: Certificate | None = None) -> None:
    """Raise (exit 3) unless the seal verifies, saying what changed: the body or the seal (``stored``: the
    copy in the target, compared field by field)."""
    if not seal_ok(cert):
        raise VerificationFailed(
            f"certificate SHA-256 does not verify: {seal_problem(cert, stored)}",
            hint="the file was edited or damaged; the copy stored in the target is what the cutover wrote "
            "(`replicator certificate --json`)",
        )


def body_hash(cert: Certificate) -> str:
    """The SHA-256 the seal must equal."""
    return hashlib.sha256(_body(cert)).hexdigest()


def seal_problem(
    cert: Certificate, stored: Certificate | None = None, signed: Callable[[str], bool] | None = None
) -> str:
    """Why the seal does not verify, as far as can be told: a damaged seal, the fields that differ from the
    stored copy, what the signature signed (``signed(seal)``: does the signature sign this seal), or
    (offline, unsigned) that the body and the seal disagree without saying which moved."""
    if len(cert.sha256) != 64 or any(c not in "0123456789abcdef" for c in cert.sha256):
        return f"the seal {cert.sha256 or '(empty)'!r} is not a SHA-256: the seal itself was damaged or removed"
    if signed is not None and signed(cert.sha256):
        return "the body was changed after it was sealed and signed (the recorded seal is the signed one)"
    if signed is not None and signed(body_hash(cert)):
        return "the seal was changed; the body is as it was signed"
    if stored is not None:
        changed = differences(stored, cert)
        if changed == ["sha256"]:
            return "the seal was changed; every field is as the cutover stored it in the target"
        shown = "; ".join(c for c in changed[:8] if c != "sha256") + ("…" if len(changed) > 8 else "")
        return f"the body differs from the certificate stored in the target: {shown}"
    return (
        f"the body does not hash to the recorded seal {cert.sha256[:16]}…: a field or the seal was changed, and "
        "without a signature or the copy stored in the target it cannot be told which (pass --target to compare)"
    )


def differences(before: Certificate, after: Certificate) -> list[str]:
    """Each field that differs, as ``path before → after`` (``sha256`` alone for the seal)."""
    out: list[str] = []

    def walk(path: str, a: Any, b: Any) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                walk(f"{path}.{key}" if path else str(key), a.get(key), b.get(key))
        elif isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(f"{path}[{i}]", x, y)
        elif a != b:
            out.append("sha256" if path == "sha256" else f"{path} {a!r} → {b!r}")

    walk("", msgspec.to_builtins(before), msgspec.to_builtins(after))
    return out


def proof_problems(cert: Certificate) -> list[str]:
    """Each table whose recorded proof does not hold: the two sides differ, or the independent reading did."""
    found = []
    for t in cert.tables:
        if t.sqlite_rows != t.pg_rows:
            found.append(f"{t.table}: PostgreSQL holds {t.pg_rows:,} rows, SQLite {t.sqlite_rows:,} rows")
        elif t.sqlite_digest != t.pg_digest:
            found.append(f"{t.table}: the same {t.pg_rows:,} rows on each side, but their checksums differ")
        if t.independent is not None and t.independent.status == "mismatch":
            i = t.independent
            found.append(
                f"{t.table}: the independent comparison ({i.at}) found the sides different "
                f"({i.sqlite_rows:,} rows in SQLite, {i.pg_rows:,} in PostgreSQL)"
            )
    return found


def render(cert: Certificate) -> str:
    """The summary table the operator reads."""
    lines = [
        f"cutover certificate {cert.sha256}",
        f"  source   {cert.source_path} (id {cert.source_id}, sha256 {cert.source_sha256[:16]}…)",
        f"  target   {cert.target}",
        f"  stop seq {cert.stop_seq}; chain head #{cert.chain_head} {cert.chain_head_hash[:16]}…",
        f"  frozen   {cert.frozen_at}  fenced {cert.fenced_at}  write outage {cert.write_outage_s:.3f} s",
        f"  operator {cert.operator}; {cert.tool}",
    ]
    if cert.accept_quarantine:
        lines.append(f"  quarantine accepted: {cert.quarantined}")
    for q in cert.quarantine:
        state = "acknowledged" if q.acknowledged else "accepted at cutover"
        lines.append(f"  quarantined {q.table}.{q.column} key {q.key}: {q.reason} ({q.action}; {state})")
    for name, why in sorted(cert.skipped_tables.items()):
        lines.append(f"  skipped table {name}: {why}")
    for name, why in sorted(cert.skipped_columns.items()):
        lines.append(f"  skipped column {name}: {why} (accepted with --accept-skipped-columns)")
    for n in cert.not_created:
        lines.append(f"  not created in PostgreSQL: {n.kind} {n.name} on {n.table}: {n.reason}")
    if cert.not_created and cert.accept_missing_constraints:
        lines.append("  (the app runs without them on PostgreSQL; accepted with --accept-missing-constraints)")
    if cert.backup:
        lines.append(f"  backup   {cert.backup}")
    width = max([5, *(len(t.table) for t in cert.tables)])
    lines.append(f"  {'table':<{width}}  {'sqlite rows':>12}  {'pg rows':>12}  checksum          how")
    for t in cert.tables:
        same = "=" if t.equal else "≠"
        lines.append(
            f"  {t.table:<{width}}  {t.sqlite_rows:>12,}  {t.pg_rows:>12,}  {t.sqlite_digest[:12]} {same}  {t.how}"
        )
    ordered = sorted(cert.steps.items(), key=lambda kv: STEP_ORDER.index(kv[0]) if kv[0] in STEP_ORDER else 99)
    lines.append("  steps: " + ", ".join(f"{k} {v:.3f}s" for k, v in ordered))
    return "\n".join(lines)
