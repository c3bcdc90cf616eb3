"""The tables of one run, loaded here or with the helper, and loaded again when their rows require it.

The one stateful part of a run: the plan changes when a guess is disproved, the quarantined rows that
foreign keys follow accumulate, and the dominant tables are converted by both processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from replicator import log
from replicator.apply import dependents
from replicator.config import Config
from replicator.load.context import LoadContext
from replicator.load.costs import load_costs, split, table_rows
from replicator.load.guess import _Unverified, replan
from replicator.load.helper import _UNVERIFIED, Helper, _Failure, _helper_load, _LoadJob, _raise, _Relay
from replicator.load.postload import index_table
from replicator.load.results import TableResult
from replicator.load.source import SourceRead
from replicator.load.table import load_table
from replicator.plan.schemaplan import SchemaPlan
from replicator.progress import Progress
from replicator.state.store import StateStore

if TYPE_CHECKING:
    from replicator.load.share import Coprocessor


class Loader:
    """Loads tables here (the caller's read transaction) or shared with the helper process.

    Holds what changes while the run loads: the plan (a disproved guess re-plans its table), the
    quarantined rows foreign keys follow (``held``), and which tables both processes convert.
    """

    def __init__(self, ctx: LoadContext, plan: SchemaPlan, config: Config, read: SourceRead | None = None) -> None:
        self.ctx, self.plan, self.config, self.read = ctx, plan, config, read
        guessed = (t.source for t in plan.tables if t.guessed)
        self.guessed = frozenset(guessed) if plan.mode == "create" else frozenset()
        self.held = dependents.Held(plan) if ctx.run.policy == "quarantine" and plan.foreign_keys else None
        self.dominant: frozenset[str] = frozenset()
        """Tables read here and converted by both processes (:mod:`replicator.load.share`)."""
        self.coprocessor: Coprocessor | None = None

    def here(self, name: str, progress: Progress | None = None, *, verify: bool | None = None) -> TableResult:
        try:
            result = load_table(
                self.ctx.with_progress(progress or self.ctx.progress),
                self.plan,
                self.plan.table(name),
                verify=name in self.guessed if verify is None else verify,
                held=self.held,
                shared=self.coprocessor if name in self.dominant else None,
            )
        except _Unverified as exc:
            column = exc.column
        else:
            return index_table(self.ctx.pconn, self.plan, result)
        # Profiled outside the handler: the traceback kept the load's frames, and with them a SQLite cursor
        # whose statement still runs (rows were left unread), and SQLite refuses to register the profile's
        # functions again while a statement runs ("Error creating function").
        return self.measured(name, column, progress)

    def measured(self, name: str, column: str, progress: Progress | None = None) -> TableResult:
        """A guess the rows disproved: re-plan the table from a full profile (:func:`guess.replan`),
        load it again unguessed."""
        assert self.read is not None
        log.get("snapshot", table=name).info(
            "guessed types disproved by a row; profiling the table in full", column=column
        )
        self.plan = replan(self.ctx, self.plan, self.read, self.config, name)
        return self.here(name, progress, verify=False)

    def dependents(self) -> dict[str, TableResult]:
        """After a shared load: each table holding rows whose parent (in either process) was quarantined
        is loaded again here, parents first, with every quarantined row held (read back from the
        quarantine), so those rows are quarantined too, and theirs in the tables after it."""
        if self.held is None:
            return {}
        self.held = held = dependents.Held(self.plan)
        with self.ctx.pconn.transaction():
            dependents.seed(held, StateStore(self.ctx.pconn, self.config.target.state_schema))
        again: dict[str, TableResult] = {}
        for name in self.plan.order:
            fks = held.into(name)
            if any(dependents.referencing(self.ctx.pconn, self.plan, fk, held.pg_values(fk), limit=1) for fk in fks):
                log.get("snapshot", table=name).info("rows reference quarantined rows; loading the table again")
                again[name] = self.here(name)
        return again

    def share(self, dominant: Sequence[str], helper: Helper) -> None:
        """These tables are read here and converted here and in the helper, whose conversion loop is
        queued after the tasks submitted to it so far."""
        if dominant and self.held is not None:  # held rows are checked row by row, here
            log.get("snapshot").info("quarantine follows foreign keys: tables not shared", tables=list(dominant))
        elif dominant:
            self.dominant, self.coprocessor = frozenset(dominant), helper.coprocessor(self.config)
            self.coprocessor.schema = self.read.schema if self.read is not None else None
            log.get("snapshot").info("tables shared by both processes", tables=list(dominant))

    def shared(self, names: Sequence[str], read: SourceRead, helper: Helper, path: Path) -> dict[str, TableResult]:
        """Half the work here, half in the helper: whole tables the helper loads from its own read
        transaction (opened after the mark), then the dominant tables, read here and converted by both.

        A table is dominant when no split of whole tables can balance it (``share.dominant_tables``).
        The main process starts with its own whole tables, then the dominant one, and the helper
        joins it once its tables are done: so the split by estimated cost only has to be about
        right, the dealing of batches evens out the rest. The main process is given half of the
        dominant table's cost to begin with, the half it will convert.
        """
        from replicator.load.share import dominant_tables

        costs = load_costs(self.ctx.sconn, read.schema, names, read.profiles)
        rows = table_rows(self.ctx.sconn, read.schema, names, read.profiles)
        dominant = dominant_tables(rows, self.config.snapshot.split_rows, costs)
        whole = {name: cost for name, cost in costs.items() if name not in dominant}
        mine, theirs = split(whole, main_start=sum(costs[name] for name in dominant) // 2)
        futures = {
            name: helper.pool.submit(
                _helper_load,
                _LoadJob(str(path), self.config, self.plan, name, self.ctx.run, verify=name in self.guessed),
            )
            for name in names
            if name in theirs
        }
        self.share(dominant, helper)  # after the helper's own tables
        relay = _Relay(self.ctx.progress, helper)
        done = {name: self.here(name, relay) for name in names if name in mine}
        done.update({name: self.here(name, relay) for name in dominant})
        helper.wait(list(futures.values()))
        for name, future in futures.items():
            result = future.result()
            if isinstance(result, _Failure):
                if result.kind == _UNVERIFIED:  # the helper's rows disproved the guess: redo it here
                    done[name] = self.measured(name, result.message, relay)
                    continue
                _raise(result)
            else:
                done[name] = result
        return done
