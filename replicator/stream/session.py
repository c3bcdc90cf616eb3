"""The apply session: one PostgreSQL connection holding the source's advisory lock, with everything the apply
needs on it (the plan, the tables it writes and how, foreign-key mode, running digests, the writer, the chain
head). The daemon (:mod:`replicator.stream.worker`) opens one at every (re)start; the cutover opens one to
drain with the same machinery (:mod:`replicator.cutover.window`).

One object, built whole by its constructor: before it, the daemon set a dozen fields as it went and the
cutover repeated its start-up; the two could drift apart (a table resolved one way for the daemon and
another for the cutover). What differs between the two is how a problem is refused (``refuse``) and what
else the daemon writes in the transaction that seeds the digests (``in_seed``).

Also here, the parts of the daemon's start that come before a session: the checks that refuse to resume
(cut over, another source, a chain changed by hand), the first snapshot, a plan rebuilt when none was kept.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psycopg

from checkpoints import ledger, store
from checkpoints.errors import NoChainTable
from checkpoints.model import CUT_OVER_KINDS, ENDING_KINDS, Checkpoint, Kind, TableChange, genesis, next_checkpoint
from replicator import faults
from replicator.apply import dependents
from replicator.apply.digests import table_digest_of
from replicator.apply.foreignkeys import fk_mode, park_foreign_keys
from replicator.apply.tablestate import clear_table_errors, read_digests, seed_digests, set_table_error
from replicator.apply.targets import resolve_targets
from replicator.apply.writer import Writer
from replicator.config import Config
from replicator.errors import ReplicatorError, UsageError
from replicator.load import snapshot
from replicator.plan import existingmode, pgreflect, skips
from replicator.plan.schemaplan import SchemaPlan
from replicator.state import integrity, phase
from replicator.state.identity import source_identity
from replicator.state.store import StateStore
from triggers import fence, journal
from triggers.meta import Meta


class WorkerError(ReplicatorError):
    """A terminal condition the loop stops on (phase ERRORED)."""


class AlreadyCutOver(WorkerError):
    """The chain ends in a cutover checkpoint: replication is finished, nothing may be applied.

    Not an ERRORED condition: the phase stays DONE, so ``status`` keeps telling the truth. ``run``
    exits 0 when the SQLite file is fenced as the cutover left it, so that a service manager with
    ``Restart=on-failure`` leaves the daemon down after the window; 2 when it is writable again.
    """

    exit_code = 2


class CutoverUnfinished(WorkerError):
    """SQLite is fenced but the chain has no cutover checkpoint: a cutover died between its two commits."""

    exit_code = 2


class WrongSource(UsageError):
    """The target was loaded from another SQLite file: this run is refused, the target stays healthy."""


Refuse = Callable[[dict[str, str]], None]
"""Given the tables the apply cannot resolve (name -> why), raise (or record and raise) the caller's refusal."""
InSeed = Callable[[StateStore, Checkpoint, list[str]], Checkpoint]
"""Runs in the transaction that seeds the running digests, with the chain head and the tables seeded;
returns the (possibly new) chain head."""


class ApplySession:
    """The apply machinery on one locked PostgreSQL connection; ``prev`` is the chain head, moved by whoever
    appends (a batch, an online reload, the cutover's drain)."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        sconn: sqlite3.Connection,
        meta: Meta,
        config: Config,
        *,
        plan: SchemaPlan,
        prev: Checkpoint,
        skip_reasons: dict[str, str],
        refuse: Refuse,
        in_seed: InSeed | None = None,
    ) -> None:
        """Resolve the tables (``refuse`` sees the problems), pick the FK mode (parking the FKs when we may
        not disable their triggers), seed the running digests, build the writer."""
        self.conn, self.sconn, self.config = conn, sconn, config
        self.state_store = StateStore(conn, config.target.state_schema)
        """The state schema on :attr:`conn`: what the apply records commits with the rows it writes."""
        self.plan = plan
        self.skip_reasons = skip_reasons
        """Tables the migration leaves out (:mod:`replicator.plan.skips`): their journal entries are passed over."""
        self.skipped = frozenset(skip_reasons)
        targets, problems = resolve_targets(plan, meta, self.skipped)
        refuse(problems)
        self.targets = targets
        self.fk = fk_mode(conn)
        self.parked: list[str] = []
        """The foreign keys parked until cutover (``fk == "parked"``: no privilege for the replica role)."""
        if self.fk == "parked":
            self.parked = park_foreign_keys(self.state_store, plan.schema, [t.target for t in targets.values()])
        with conn.transaction():
            self.seeded = seed_digests(self.state_store, targets)
            self.prev = prev if in_seed is None else in_seed(self.state_store, prev, self.seeded)
        self.writer = self._new_writer()

    def _new_writer(self) -> Writer:
        return Writer(
            self.state_store,
            self.targets,
            fk=self.fk,
            on_bad_value=self.config.snapshot.on_bad_value,
            source=self.sconn,
            plan=self.plan,
        )

    def rebuild_writer(self, meta: Meta) -> None:
        """Resolve the tables again (the plan or the capture changed) and put a new writer on them."""
        self.targets, problems = resolve_targets(self.plan, meta, self.skipped)
        problems = fatal(self.plan, problems)
        if problems:
            raise WorkerError("; ".join(f"{n} {w}" for n, w in problems.items()), hint="fix the capture policy")
        self.writer.close()
        self.writer = self._new_writer()

    def update_skips(self, meta: Meta, new: Iterable[str] = (), *, log_: Any) -> None:
        """Which captured (or ``new``) tables the migration leaves out; recorded for status when that changed."""
        reasons = skips_of(self.config, self.plan, meta, new)
        if reasons == self.skip_reasons:
            return
        record_skips(self.state_store, reasons, meta, log_)
        self.skip_reasons, self.skipped = reasons, frozenset(reasons)

    def planned_sources(self, table: str) -> set[str]:
        """The table's SQLite columns the plan loads (none for a table the plan lacks)."""
        try:
            return {c.source for c in self.plan.table(table).columns if c.source is not None}
        except KeyError:
            return set()

    def close(self) -> None:
        """The writer (its digest thread and staging tables), then the connection: the advisory lock goes with
        it. A connection that will not close is already gone."""
        self.writer.close()
        with contextlib.suppress(Exception):
            self.conn.close()


def fatal(plan: SchemaPlan, problems: dict[str, str]) -> dict[str, str]:
    """Problems that stop the apply: a captured table the plan lacks is picked up by the drift check."""
    planned = {t.source for t in plan.tables}
    return {n: why for n, why in problems.items() if n in planned}


def skips_of(config: Config, plan: SchemaPlan | None, meta: Meta, new: Iterable[str] = ()) -> dict[str, str]:
    """The tables left out among the captured, the typed and ``new`` ones, with the reason."""
    return skips.skipped(config, plan, {*meta.tables, *config.types, *new})


def record_skips(state_store: StateStore, reasons: dict[str, str], meta: Meta, log_: Any) -> None:
    """Record the skipped tables for status, and say which captured ones are consumed unapplied."""
    with state_store.conn.transaction():
        state_store.record_skipped(reasons)
    captured = sorted(n for n in reasons if n in meta.tables)
    if captured:
        log_.info("skipped tables: their journal entries are consumed, never applied", tables=captured)


# --- the daemon's start ---------------------------------------------------------------------------------


def open_for_daemon(
    conn: psycopg.Connection[Any],
    sconn: sqlite3.Connection,
    meta: Meta,
    source: Path,
    dsn: str,
    config: Config,
    log_: Any,
    on_snapshot: Callable[[], None],
) -> tuple[ApplySession, str]:
    """The daemon's session on ``conn`` (locked already), and the chain's root hash (each anchor records it):
    refuse to resume where the daemon must not, take the first snapshot when there is none (``on_snapshot``
    first: the phase says so), then resolve, seed and restate."""
    state_store = StateStore(conn, config.target.state_schema)
    pgreflect.warm()
    state_store.ensure()
    prev = latest(state_store)
    refuse_after_cutover(source, config, prev)
    if prev is None:
        on_snapshot()
        prev = snapshot_first(state_store, source, dsn, config, meta, log_)
    else:
        check_same_source(state_store, source, meta)
        check_integrity(state_store, sconn, prev)
    root = integrity.chain_root(state_store) or prev.hash
    plan = saved_plan(state_store, sconn, config, log_)
    reasons = skips_of(config, plan, meta)
    record_skips(state_store, reasons, meta, log_)
    live = ApplySession(
        conn,
        sconn,
        meta,
        config,
        plan=plan,
        prev=prev,
        skip_reasons=reasons,
        refuse=_recorded_refusal(state_store, plan),
        in_seed=_restated_and_cleared,
    )
    if live.parked:
        log_.warning("foreign keys parked until cutover (no privilege for replica role)", fks=live.parked)
    if live.prev is not prev:
        log_.info("checksums restated in the chain", tables=sorted(live.prev.tables), checkpoint=live.prev.number)
    if live.seeded:
        log_.info("running digests seeded from the target", tables=live.seeded)
    return live, root


def _recorded_refusal(state_store: StateStore, plan: SchemaPlan) -> Refuse:
    """Tables the plan has but the apply cannot resolve: each recorded for status, then the daemon stops."""

    def refuse(problems: dict[str, str]) -> None:
        problems = fatal(plan, problems)
        if not problems:
            return
        with state_store.conn.transaction():
            for name, why in problems.items():
                set_table_error(state_store, name, name, why, "see the message")
        listed = "; ".join(f"{n} {why}" for n, why in sorted(problems.items()))
        raise WorkerError(f"cannot apply table(s): {listed}", hint="fix the capture policy or the plan, then rerun")

    return refuse


def _restated_and_cleared(state_store: StateStore, prev: Checkpoint, seeded: list[str]) -> Checkpoint:
    """With the digests seeded: restate what the seeding read otherwise (:func:`restate`), and clear the table
    errors an earlier run recorded (this run's first drift check raises them again if still true)."""
    prev = restate(state_store, prev, seeded)
    clear_table_errors(state_store)
    return prev


def latest(state_store: StateStore) -> Checkpoint | None:
    """The chain head; None when there is no chain yet."""
    try:
        return store.latest(state_store.conn, schema=state_store.schema_name)
    except NoChainTable:
        return None


def refuse_after_cutover(source: Path, config: Config, prev: Checkpoint | None) -> None:
    """A cut-over target applies nothing; say which of the two cutover states it is in, truthfully."""
    fenced = bool(fence.status(source, busy_timeout_ms=config.source.busy_timeout_ms).tables)
    if prev is not None and prev.kind in ENDING_KINDS:
        if prev.kind is Kind.FINALIZE:
            error = AlreadyCutOver(
                f"this target was cut over and its rollback window finalized at {prev.at} (checkpoint "
                f"{prev.number}): the app runs on PostgreSQL for good",
                hint="nothing to run",
            )
            error.exit_code = 0
            raise error
        raise AlreadyCutOver(
            f"this target was rolled back to SQLite at {prev.at} (checkpoint {prev.number}): the SQLite file is "
            "the source of truth again",
            hint="to migrate again: `replicator snapshot --replace`, then `replicator run`",
        )
    if prev is not None and prev.kind in CUT_OVER_KINDS:
        if fenced:
            error = AlreadyCutOver(
                f"this target was cut over at {prev.at} (checkpoint {prev.number}): replication is finished "
                "and the old SQLite file is fenced",
                hint="nothing to run; `replicator certificate` shows the cutover, `replicator rollback` goes back",
            )
            error.exit_code = 0
            raise error
        raise AlreadyCutOver(
            f"this target was cut over at {prev.at} (checkpoint {prev.number}), and the SQLite file is "
            "writable again (rolled back or unfenced): nothing more is applied to this target",
            hint="to migrate again: `replicator snapshot --replace`, then `replicator run`",
        )
    if prev is not None and fenced:
        raise CutoverUnfinished(
            f"{phase.INTERRUPTED_BETWEEN_COMMITS}: the SQLite file is fenced but PostgreSQL has no cutover "
            "checkpoint, so nothing is left to replicate",
            hint=phase.FINISH_HINT,
        )


def check_same_source(state_store: StateStore, source: Path, meta: Meta) -> None:
    """Refuse to apply this file's journal to a target loaded from another file (its positions mean nothing)."""
    loaded = state_store.last_loaded_source()
    if loaded is None:
        return
    ours = {f"capture:{meta.source_id}", source_identity(source).id}
    if loaded[1] not in ours:
        raise WrongSource(
            f"the target was loaded from another source file: {loaded[0]} (id {loaded[1]}); "
            f"this is {source} (capture source id {meta.source_id})",
            hint="run against the file the target was snapshotted from, "
            "or reload the target from this one with `replicator snapshot --replace`",
        )


def check_integrity(state_store: StateStore, sconn: sqlite3.Connection, prev: Checkpoint) -> None:
    """Refuse to resume on a chain or journal changed by hand (:mod:`replicator.state.integrity`): the
    anchor kept in SQLite, the phase row (read before anything here rewrites it), then the journal
    above the head. The whole segment from the anchor to the head is verified: a start is rare."""
    anchor = integrity.read_anchor(sconn)
    recorded = integrity.for_chain(state_store, state_store.read_phase())
    integrity.refuse(integrity.chain_findings(state_store, anchor=anchor, state=recorded, head=prev))
    with journal.read_transaction(sconn):
        journal.check_range(sconn, prev.seq_to, seen=recorded.head_seq if recorded else 0)


def snapshot_first(
    state_store: StateStore, source: Path, dsn: str, config: Config, meta: Meta, log_: Any
) -> Checkpoint:
    """No genesis: load the snapshot now, in one SQLite read transaction with the journal head."""
    conn = state_store.conn
    identity = source_identity(source)
    sconn = snapshot.open_source(source, config)
    helper = snapshot.Helper(config, None) if snapshot.worth_a_helper(source, config) else None
    try:
        # The mark the snapshot records is read in the transaction its rows come from (this one, or
        # the one it pairs with the helper's twin); this head is only the floor for a genesis of ours.
        head = journal.head(sconn)
        retry = state_store.last_snapshot_mode() is not None
        log_.info("no snapshot in the target: taking it first", journal_head=head, replace=retry)
        result = snapshot.snapshot_from(
            sconn, identity, dsn, config, replace=retry, helper=helper, source_path=source if helper else None
        )
    finally:
        sconn.close()
        if helper is not None:
            helper.close()
    assert result.plan is not None
    with conn.transaction():
        state_store.save_plan(result.plan)
        existing = latest(state_store)
        if existing is not None:  # the snapshot stage wrote its own genesis
            return existing
        left_out = skips.skipped(config, result.plan, meta.tables)
        targets, _ = resolve_targets(result.plan, meta, left_out)
        tables = {}
        for name, t in targets.items():
            digest = table_digest_of(conn, t)
            tables[name] = TableChange.of(digest)
        cp = genesis(tables, seq_to=head)
        store.append(conn, cp, state_store.schema_name)
        faults.point("snapshot.after_genesis")
    return cp


def saved_plan(state_store: StateStore, sconn: sqlite3.Connection, config: Config, log_: Any) -> SchemaPlan:
    """The plan the snapshot loaded with; rebuilt from the target (and saved) when none was kept."""
    conn = state_store.conn
    plan = state_store.load_plan()
    if plan is not None:
        return plan
    sconn.execute("BEGIN")
    try:
        read = snapshot.read_source(sconn)
    finally:
        sconn.execute("COMMIT")
    plan = existingmode.plan_existing(read.schema, pgreflect.reflect(conn, config.target.schema), read.profiles, config)
    plan = dependents.with_foreign_keys(plan, conn, read.schema, state_store)
    with conn.transaction():
        state_store.save_plan(plan)
    log_.warning(
        "no saved plan: mapped the target tables by name",
        hint="the snapshot stage should save its plan (replicator.state.store.StateStore.save_plan) so formats match "
        "exactly",
    )
    return plan


def restate(state_store: StateStore, prev: Checkpoint, seeded: list[str]) -> Checkpoint:
    """Tables whose running checksum was just seeded by reading PostgreSQL: where that reading differs from
    what the chain adds up to (the snapshot's checksum reads some types otherwise), a checkpoint restates
    them (``read``: same rows, so the count must agree), and the chain keeps adding up (checkpoints.ledger)."""
    if not seeded or prev.kind in CUT_OVER_KINDS:
        return prev
    book = ledger.add_up(store.iter_records(state_store.conn, schema=state_store.schema_name))
    running = read_digests(state_store, seeded)
    changes = {
        name: TableChange(upserted=rows, upserted_digest=digest, restated="read")
        for name, (rows, digest) in sorted(running.items())
        if (f := book.tables.get(name)) is None or (f.rows, f.digest) != (rows, digest)
    }
    if not changes:
        return prev
    cp = next_checkpoint(prev, seq_to=prev.seq_to, tables=changes)
    store.append(state_store.conn, cp, state_store.schema_name)
    return cp
