"""``replicator rollback``: after a cutover, give the SQLite file back to the app.

1. Read the cutover certificate stored in the target and check its seal.
2. Re-read every certified table in PostgreSQL (one REPEATABLE READ snapshot): each whose count or
   checksum moved since the stop point holds writes made in PostgreSQL after the cutover, which going
   back would lose. They are listed, and rollback refuses without ``--force`` (exit 3).
3. Un-fence SQLite (drop exactly the fence triggers and record), record the rollback in the target
   (``runs``; phase ERRORED with the reason: the chain ended with the cutover checkpoint, so a new
   migration starts with ``snapshot --replace``).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from replicator import log, pg
from replicator.config import Config
from replicator.cutover import certificate
from replicator.cutover.certificate import Moved
from replicator.errors import UsageError, VerificationFailed
from replicator.state.identity import source_identity
from replicator.state.phase import ApplyState, Phase
from replicator.state.store import StateStore
from triggers import fence


class RollbackRefused(VerificationFailed):
    """PostgreSQL changed since the certificate; going back would lose those writes (``--force``)."""


class RollbackReport(msgspec.Struct, frozen=True):
    certificate_sha256: str
    stop_seq: int
    changed: tuple[Moved, ...]
    """Tables whose PostgreSQL count or checksum moved since the cutover (writes lost by going back)."""
    unfenced_triggers: int
    forced: bool


def changes_since(dsn: str, config: Config) -> tuple[certificate.Certificate, list[Moved]]:
    """The stored certificate (seal checked) and the tables PostgreSQL changed since it."""
    with pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as conn:
        state_store = StateStore(conn, config.target.state_schema)
        cert = certificate.latest(state_store)
        if cert is None:
            raise UsageError("the target holds no cutover certificate", hint="rollback follows `replicator cutover`")
        certificate.check(cert)
        plan = state_store.load_plan()
        if plan is None:
            raise UsageError("the target holds no saved plan", hint="is this the target that was cut over?")
        now = certificate.pg_side(conn, plan, [t.table for t in cert.tables])
    return cert, certificate.moved(cert, "postgresql", now)


def rollback(source: Path, dsn: str, config: Config, *, force: bool = False) -> RollbackReport:
    bound = log.get("rollback", source=str(source))
    cert, changed = changes_since(dsn, config)
    if changed and not force:
        listed = "; ".join(f"{m.table}: {m.certified_rows} → {m.rows} rows" for m in changed)
        raise RollbackRefused(
            f"PostgreSQL changed since the cutover in {len(changed)} table(s) ({listed}): "
            "going back loses those writes",
            hint="copy them out first, or pass --force to go back anyway",
        )
    report = fence.unfence(source, busy_timeout_ms=config.source.busy_timeout_ms)
    identity = source_identity(source)
    with (
        pg.connect(dsn, autocommit=True, connect_timeout=config.target.connect_timeout_s) as conn,
        conn.transaction(),
    ):
        state_store = StateStore(conn, config.target.state_schema)
        run = state_store.start_run(command="rollback", mode="forced" if force else "clean", source=identity)
        message = f"rolled back cutover {cert.sha256[:16]} (stop seq {cert.stop_seq}); {len(changed)} table(s) lost"
        state_store.finish_run(run, status="ok", message=message)
        state_store.write_phase(
            ApplyState(
                phase=Phase.ERRORED,
                reason=f"rolled back after cutover: the SQLite file is the source of truth again ({message})",
                hint="to migrate again: `replicator snapshot --replace`, `replicator run`, then cut over",
                applied_seq=cert.stop_seq,
                head_seq=cert.stop_seq,
            ),
        )
    bound.warning("rolled back: SQLite writable again", changed=[m.table for m in changed], forced=force)
    return RollbackReport(cert.sha256, cert.stop_seq, tuple(changed), len(report.dropped), force)
