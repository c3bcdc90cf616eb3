"""Schema drift, followed by the daemon: every cycle the loop (:mod:`replicator.stream.worker`) asks
:meth:`DriftFollower.check` whether the SQLite schema moved (one PRAGMA when it did not), and redoes the
table reloads that are owed (:meth:`DriftFollower.reload_pending`) before it reads a batch.

What drift does, per table: a dropped or renamed table, or renamed columns, stop the daemon with the table's
error in ``status`` (never silently skipped); added or dropped columns are followed online in create mode
(the tool owns the PostgreSQL table) and the table is reloaded; in existing mode the app's migration owns the
PostgreSQL table, so an added column stops, a dropped one maps the table again or holds it until fixed; a
table that lost journal coverage is reloaded; new tables are planned and loaded online, or left out with
their error. Every reload is owed durably in PostgreSQL before the capture is reinstalled
(:mod:`replicator.load.resnapshot` explains the order), so a crash anywhere redoes it.

Its own module because it is most of what can happen to a running daemon, and none of the loop's business:
the loop only asks. It lives for one ``run`` (the SQLite connections, the capture's record as last read);
:meth:`DriftFollower.resume` starts it again on every new apply session.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec
from psycopg import sql

from replicator import faults
from replicator.apply.tablestate import set_table_error
from replicator.config import Config
from replicator.load import resnapshot, snapshot
from replicator.plan import createmode, typemap
from replicator.stream.session import ApplySession, WorkerError
from triggers import drift
from triggers.install import install_on
from triggers.meta import Meta, TableCapture, read_meta


class DriftFollower:
    """The schema-drift side of one ``run``: the capture's record, the schema mark and the owed reloads."""

    def __init__(
        self, source: Path, config: Config, sconn: sqlite3.Connection, wconn: sqlite3.Connection, meta: Meta, log_: Any
    ) -> None:
        self.source, self.config = source, config
        self.state_schema = config.target.state_schema
        self.sconn = sconn
        self.wconn = wconn
        """Read-write: the capture is reinstalled on it."""
        self.meta = meta
        """The capture's record as last read (`capture install` may run while we do)."""
        self._log = log_
        self.mark = drift.SchemaMark(-1, "")
        self.pending: dict[str, str] = {}
        """Owed table reloads (table → reason), as recorded in PostgreSQL."""
        self.held: dict[str, str] = {}
        """Owed reloads that cannot run until the user fixes something (table → why); not applied meanwhile."""

    def resume(self, s: ApplySession) -> None:
        """A new session: check the whole schema again at the next cycle, read the owed reloads from PostgreSQL,
        and try held tables again (the hint says: fix it, then restart)."""
        self.mark = drift.SchemaMark(-1, "")
        self.pending = s.state_store.pending_reloads()
        self.held = {}
        if self.pending:
            self._log.warning("an interrupted online re-snapshot is redone", tables=sorted(self.pending))

    def owed(self) -> bool:
        """Reloads that can run now (owed and not held)."""
        return bool(set(self.pending) - set(self.held))

    def check(self, s: ApplySession) -> bool:
        """Every cycle: one PRAGMA, unless the schema moved; then act per table, loudly, or stop."""
        found = drift.check(self.sconn, self.mark)
        self.mark = found.mark
        if not found.changed:
            return False
        if not found.installed:
            raise WorkerError("the capture was removed from the source", hint="install it again and re-snapshot")
        meta = read_meta(self.sconn)  # `capture install` may have run meanwhile
        if meta is not None:
            self.meta = meta
        s.update_skips(self.meta, found.new_tables, log_=self._log)
        reload: dict[str, str] = {}
        refresh = [t.table for t in found.tables if self._table_drift(s, t, reload)]
        left_out = self._new_tables(s, found.new_tables, reload)
        if reload:  # owed durably before the reinstall hides the drift (ordering: replicator.load.resnapshot)
            with s.conn.transaction():
                s.state_store.mark_pending_reloads(reload.items())
            self.pending.update(reload)
            faults.point("resnapshot.after_pending")
        if reload or refresh or any(t.needs_reinstall for t in found.tables) or set(found.new_tables) - set(left_out):
            report = install_on(
                self.wconn,
                default_policy=self.config.capture.no_key_policy,
                policies=self.config.capture.tables,
                path=self.source,
                stamp_time=any(c.stamp_time for c in self.meta.tables.values()),
                exclude=left_out,
            )
            self._log.warning("capture triggers reinstalled", changed=list(report.changed))
            meta = read_meta(self.sconn)
            assert meta is not None
            self.meta = meta
            self.mark = drift.mark(self.sconn)
            faults.point("resnapshot.after_reinstall")
        return True

    def _table_drift(self, s: ApplySession, t: drift.TableDrift, reload: dict[str, str]) -> bool:
        """Fail the table, or add it to ``reload`` (table → reason) for an online re-snapshot. True: only the
        capture record is behind (the plan already has the table's new columns): reinstall to refresh it."""
        name = t.table
        if t.dropped or t.renamed_to is not None:
            what = "dropped" if t.dropped else f"renamed to {t.renamed_to!r}"
            self._fail_table(
                s,
                name,
                f"table {name!r} was {what} in SQLite",
                "drop or rename it in PostgreSQL to match, "
                "reinstall capture and re-snapshot (replicator snapshot --replace); never silently skipped",
            )
        sources = s.planned_sources(name)  # none: not applied (skipped, or not picked up yet): nothing to follow
        renamed = [(a, b) for a, b in t.columns_renamed if sources and (a in sources or b not in sources)]
        if renamed:
            cols = ", ".join(f"{a}->{b}" for a, b in renamed)
            self._fail_table(
                s,
                name,
                f"columns of {name!r} were renamed in SQLite: {cols}",
                "rename them in PostgreSQL too (existing mode), then "
                f"`replicator snapshot --replace --tables {name}` and restart `replicator run`",
            )
        dropped = [c for c in t.columns_dropped if c in sources]
        if dropped:
            self._drop_columns(s, name, dropped)
            reload[name] = f"{resnapshot.COLUMNS_DROPPED}: " + ", ".join(dropped)
        if t.columns_added and sources:
            self._add_columns(s, name, t.columns_added)
            reload[name] = "column(s) added: " + ", ".join(t.columns_added)
        if t.needs_resnapshot and name not in reload:
            self._log.warning(
                "table lost journal coverage: re-snapshotting it online",
                table=name,
                triggers_missing=t.triggers_missing,
                key_changed=t.key_changed,
            )
            reload[name] = "lost journal coverage"
        return bool(t.columns_added or t.columns_dropped or t.columns_renamed) and name not in reload

    def _drop_columns(self, s: ApplySession, table: str, columns: list[str]) -> None:
        """DROP COLUMN, followed online. Create mode (the tool owns the PostgreSQL table): dropped there too
        and the plan saved without them, in one transaction. Existing mode (the app's migration owns it): the
        owed reload maps the table again first (:meth:`reload_pending`). Either way the table is reloaded:
        its running digest covers the remaining columns only."""
        if s.plan.mode != "create":
            return
        reason = f"{resnapshot.COLUMNS_DROPPED}: " + ", ".join(columns)
        old = s.plan.table(table)
        gone = [c for c in old.columns if c.source in columns]
        ident = sql.Identifier(s.plan.schema, old.name)
        new_table = msgspec.structs.replace(old, columns=tuple(c for c in old.columns if c.source not in columns))
        pconn = s.conn
        with pconn.transaction():
            for col in gone:
                pconn.execute(
                    sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(ident, sql.Identifier(col.name))
                )
            s.plan = msgspec.structs.replace(
                s.plan, tables=tuple(new_table if t.source == table else t for t in s.plan.tables)
            )
            s.state_store.save_plan(s.plan)
            # owed in the same commit: after it the plan lacks the columns, and a restart could not tell
            # this table's (stale) running digest from one `snapshot --replace --tables` already renewed
            s.state_store.mark_pending_reloads([(table, reason)])
        self.pending[table] = reason
        self._log.warning("column(s) dropped in PostgreSQL", table=table, columns=[c.name for c in gone])
        s.rebuild_writer(self.meta)

    def _new_tables(self, s: ApplySession, new: tuple[str, ...], reload: dict[str, str]) -> list[str]:
        """Tables created in SQLite after the snapshot (and captured tables the plan lacks, after a manual
        `capture install`): each is planned (create mode: created) and its load owed in ``reload``, like a
        rebuilt table's (:mod:`replicator.load.resnapshot`); or it is left uncaptured with its error in status
        (cutover refuses while it is). Returns the tables left out. Skipped tables (:mod:`replicator.plan.skips`:
        by config, or an ORM's migration table in existing mode) stay skipped: captured like at install,
        their journal entries consumed, never applied."""
        cfg = self.config.capture
        planned = {t.source for t in s.plan.tables}
        unplanned = sorted(n for n in self.meta.tables if n not in planned and n not in s.skipped)
        fresh = [n for n in new if n not in s.skipped]
        decisions: dict[str, TableCapture | str] = {
            **{n: self.meta.tables[n] for n in unplanned},
            **drift.new_table_captures(self.sconn, fresh, default_policy=cfg.no_key_policy, policies=cfg.tables),
        }
        left_out: list[str] = []
        for name, decision in decisions.items():
            problem: resnapshot.NotAdopted | None = None
            if isinstance(decision, str):
                problem = resnapshot.NotAdopted(
                    f"new table {name!r} {decision}: not captured (capture.no_key_policy is 'refuse')",
                    hint=f"add a primary key to it, or set capture.tables.{name} (or capture.no_key_policy) to "
                    "'snapshot-only'; then restart `replicator run`",
                )
            elif decision.mode == "rowid":
                problem = resnapshot.NotAdopted(
                    f"new table {name!r} {decision.note.split(';')[0] or 'has no usable key'}: captured by rowid, "
                    "which PostgreSQL has no column for",
                    hint=f"add a primary key to it, or set capture.tables.{name} = 'snapshot-only'; "
                    "then restart `replicator run`",
                )
            else:
                try:
                    s.plan = resnapshot.adopt(
                        s.conn,
                        self.sconn,
                        plan=s.plan,
                        table=name,
                        config=self.config,
                        state_schema=self.state_schema,
                    )
                except resnapshot.NotAdopted as exc:
                    problem = exc
            if problem is None:
                assert not isinstance(decision, str)
                reload[name] = resnapshot.NEW_TABLE + (" (snapshot-only)" if decision.mode == "snapshot-only" else "")
                self._log.warning("new table in SQLite: picking it up online", table=name, capture=decision.mode)
            elif name in unplanned:  # captured already: its journal entries would have nowhere to go
                self._fail_table(s, name, f"captured table not in the plan: {problem.message}", problem.hint)
            else:
                self._table_error(s, name, name, problem.message, problem.hint)
                self._log.error(
                    "new table in SQLite is not applied", table=name, error=problem.message, hint=problem.hint
                )
                left_out.append(name)
        return left_out

    def _table_error(self, s: ApplySession, table: str, target: str, message: str, hint: str) -> None:
        """Record a table's error for status (a table in error never disappears from it)."""
        with s.conn.transaction():
            set_table_error(s.state_store, table, target, message, hint)

    def _fail_table(self, s: ApplySession, table: str, message: str, hint: str) -> None:
        target = s.targets[table].target if table in s.targets else table
        self._table_error(s, table, target, message, hint)
        raise WorkerError(message, hint=hint)

    def _add_columns(self, s: ApplySession, table: str, columns: tuple[str, ...]) -> None:
        """ADD COLUMN: create mode adds it in PostgreSQL (then the table is re-snapshotted); existing mode stops."""
        if s.plan.mode != "create":
            self._fail_table(
                s,
                table,
                f"column(s) {', '.join(columns)} added to {table!r} in SQLite",
                f"add them to {s.targets[table].target if table in s.targets else table} in "
                "PostgreSQL (the app's migration), then restart `replicator run`",
            )
        self.sconn.execute("BEGIN")
        try:
            read = snapshot.read_source(self.sconn)
        finally:
            self.sconn.execute("COMMIT")
        fresh = createmode.plan_create(read.schema, read.profiles, self.config).table(table)
        old = s.plan.table(table)
        have = {c.name for c in old.columns}
        added = [c for c in fresh.columns if c.name not in have]
        with s.conn.transaction():
            for col in added:
                s.conn.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        sql.Identifier(s.plan.schema, old.name),
                        sql.Identifier(col.name),
                        typemap.render(col.type),
                    )
                )
            new_table = msgspec.structs.replace(old, columns=old.columns + tuple(added))
            s.plan = msgspec.structs.replace(
                s.plan, tables=tuple(new_table if t.source == table else t for t in s.plan.tables)
            )
            s.state_store.save_plan(s.plan)
        self._log.warning("column(s) added in PostgreSQL", table=table, columns=[c.name for c in added])
        s.rebuild_writer(self.meta)

    def reload_pending(self, s: ApplySession) -> None:
        """Redo every owed table reload (see :mod:`replicator.load.resnapshot`), each in one PostgreSQL transaction."""
        conn = s.conn
        s.rebuild_writer(self.meta)
        planned = {t.source for t in s.plan.tables}
        for table, reason in list(self.pending.items()):
            target = s.targets.get(table)
            cap = self.meta.tables.get(table)
            solo = cap is not None and cap.mode == "snapshot-only" and table in planned and table not in s.skipped
            if target is None and not solo:  # no longer applied (config skips it now): nothing to reload into
                with conn.transaction():
                    s.state_store.clear_pending_reload(table)
                self.pending.pop(table)
                self._log.warning("owed re-snapshot dropped: the table is not applied", table=table)
                continue
            if table in self.held:
                continue
            if resnapshot.is_columns_dropped(reason) and s.plan.mode != "create" and not self._replan(s, table):
                continue
            target = s.targets.get(table)
            new = resnapshot.is_new_table(reason)
            done = resnapshot.reload(
                conn,
                source=self.source,
                config=self.config,
                plan=s.plan,
                target=target,
                prev=s.prev,
                fk=s.writer.fk,
                state_schema=self.state_schema,
                table_name=table,
                new_table=new,
            )
            s.prev = done.checkpoint
            self.pending.pop(table)
            self._log.warning(
                "new table picked up online" if new else "table re-snapshotted online",
                table=table,
                reason=reason,
                rows=done.rows,
                checkpoint=done.checkpoint.number,
                **({"refused": list(done.warnings)} if done.warnings else {}),
            )

    def _replan(self, s: ApplySession, table: str) -> bool:
        """Existing mode, before the reload owed for a DROP COLUMN: map the table again onto PostgreSQL. While
        PostgreSQL still has the column the table is held (its journal entries pass by unapplied, the reload
        stays owed, ``status`` shows the error and the fix); the other tables go on. False: held."""
        conn = s.conn
        gone = resnapshot.dropped_columns(self.sconn, s.plan, table)
        try:
            s.plan = resnapshot.replan(
                conn, self.sconn, plan=s.plan, table=table, config=self.config, state_schema=self.state_schema
            )
        except resnapshot.NotAdopted as exc:
            message, hint = exc.message, exc.hint
            if gone:
                target = s.plan.table(table).name
                drop = sql.SQL("ALTER TABLE {} ").format(sql.Identifier(s.plan.schema, target)) + sql.SQL(", ").join(
                    sql.SQL("DROP COLUMN {}").format(sql.Identifier(c.name)) for c in gone
                )
                cols = ", ".join(c.source or c.name for c in gone)
                message = f"column(s) {cols} dropped from {table!r} in SQLite are still in PostgreSQL: table held"
                hint = (
                    f"run `{drop.as_string(conn)}` in PostgreSQL (existing mode: the app's migration owns its schema), "
                    "then restart `replicator run`; the table is reloaded online"
                )
            self.held[table] = message
            self._table_error(s, table, s.plan.table(table).name, message, hint)
            self._log.error("table held: not applied until fixed", table=table, error=message, hint=hint)
            return False
        self._log.warning("table mapped again onto PostgreSQL", table=table, dropped=[c.name for c in gone])
        s.rebuild_writer(self.meta)
        return True
