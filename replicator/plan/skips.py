"""Tables the migration leaves out on purpose, and why: one rule for the daemon, cutover and ``status``.

Two kinds of table are never applied:

* **skipped by config**: ``[types."T"."*"] skip = true``, in either mode;
* **an ORM's migration bookkeeping** (:data:`replicator.plan.existingmode.MIGRATION_TABLES`, e.g.
  ``_prisma_migrations``) that existing mode leaves out of the plan: the target's own migrations
  (``prisma migrate deploy``...) filled its PostgreSQL twin, and SQLite's rows describe another
  history. The rule is :func:`replicator.plan.existingmode.plan_existing`'s (config naming the table with
  ``"*"`` loads it: then it is planned like any table).

``capture install`` runs before any plan exists (the mode is chosen by the snapshot), so it captures
them like the rest. Their journal entries are consumed like any other (the batch's checkpoint covers
their seqs and the pruner deletes them), never applied, and counted as ignored in the state schema's
``skipped_tables`` (:meth:`replicator.state.store.StateStore.count_ignored`), which ``status`` shows with the
reason. A table skipped after it was captured is no error anywhere: not in the daemon's start-up, not in its
drift check, not in cutover.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from replicator.config import Config
from replicator.plan.existingmode import MIGRATION_TABLES
from replicator.plan.schemaplan import SchemaPlan

BOOKKEEPING: Final = (
    "the ORM's migration bookkeeping: existing mode leaves it to the target's own migrations "
    '(load it with [types."{name}"."*"] skip = false)'
)
CONFIG: Final = 'skipped by config ([types."{name}"."*"] skip = true)'


def reason(config: Config, plan: SchemaPlan | None, name: str) -> str | None:
    """Why ``name`` is not migrated, or None when it is (or may be: a table the plan lacks for another reason)."""
    overrides = config.types.get(name, {})
    star = overrides.get("*")
    if star is not None and star.skip:
        return CONFIG.format(name=name)
    if (
        plan is not None
        and plan.mode == "existing"
        and star is None
        and name.lower() in MIGRATION_TABLES
        and all(t.source != name for t in plan.tables)
    ):
        return BOOKKEEPING.format(name=name)
    return None


def skipped_columns(config: Config, plan: SchemaPlan) -> dict[str, str]:
    """``table.column`` of each migrated table's column that config leaves out (``skip = true``), with why."""
    migrated = {t.source for t in plan.tables}
    return {
        f"{table}.{column}": f"skipped by config ([types.{table}.{column}] skip = true): its values are not migrated"
        for table, columns in sorted(config.types.items())
        if table in migrated
        for column, override in sorted(columns.items())
        if column != "*" and override.skip
    }


def skipped(config: Config, plan: SchemaPlan | None, names: Iterable[str]) -> dict[str, str]:
    """Each of ``names`` the migration leaves out, with the reason (see the module docstring)."""
    out = {}
    for name in names:
        why = reason(config, plan, name)
        if why is not None:
            out[name] = why
    return out
