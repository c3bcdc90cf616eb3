"""The one definition of which objects in the app's SQLite file are ours (or SQLite's), not the app's.

Why exact names and not a prefix: an app may well call its own tables ``_replicator_audit`` or
``_Replicator_Stats``, or its own trigger ``_replicator_audit_users``. Treated as ours by prefix they
were never migrated, never proven, never fenced, and a capture reinstall dropped such a trigger as
an orphan (issue 14 item 4). So ours are exactly:

* the tables :data:`TABLES`: the journal, the meta table and the fence record table. SQLite
  compares table names ignoring ASCII case, so ``_Replicator_Journal`` *is* our journal's name to
  it, and counts as ours (install refuses to start over an app table holding one of these names);
* SQLite's own ``sqlite_*`` tables (SQLite reserves the prefix, in any case);
* the triggers named by :func:`capture_trigger_name` and :func:`fence_trigger_name` *for the table
  they sit on*, or for a table the capture record names (``ALTER TABLE ... RENAME`` moves a trigger
  to the new table name but keeps its name).

Every module that needs to tell ours from the app's asks this one; none matches a prefix itself.
This module has no imports from the package (``triggers.schema`` and ``triggers.ddl`` use it).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

PREFIX: Final = "_replicator_"
JOURNAL: Final = "_replicator_journal"
META: Final = "_replicator_meta"
FENCE_TABLE: Final = "_replicator_fence"
"""Our record of the fence when ``_replicator_meta`` (capture) is absent."""
TABLES: Final = frozenset({JOURNAL, META, FENCE_TABLE})
SQLITE_PREFIX: Final = "sqlite_"

CAPTURE_EVENTS: Final = ("ins", "upd", "del", "rin", "rup")
"""AFTER INSERT / UPDATE / DELETE, and the BEFORE INSERT / UPDATE REPLACE-victim triggers."""
FENCE_PREFIX: Final = PREFIX + "fence_"
FENCE_EVENTS: Final = ("ins", "upd", "del")

_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(name: str) -> str:
    """A name as SQLite compares identifiers: ASCII letters folded, everything else as is."""
    return name.translate(_ASCII_LOWER)


def is_internal_table(name: str) -> bool:
    """One of our tables or SQLite's: never migrated, captured, verified or fenced."""
    folded = fold(name)
    return folded in TABLES or folded.startswith(SQLITE_PREFIX)


def capture_trigger_name(table: str, event: str) -> str:
    """``_replicator_ins_<table>`` etc.: the same table and event always give the same name."""
    return f"{PREFIX}{event}_{table}"


def fence_trigger_name(table: str, event: str) -> str:
    """``_replicator_fence_ins_<table>`` etc.; never equal to a capture trigger name ('fence' is no event)."""
    return f"{FENCE_PREFIX}{event}_{table}"


def _named_table(name: str, prefix: str, events: tuple[str, ...]) -> str | None:
    """The table a trigger name made by our rule names, or None when the name is not made by it."""
    if not name.startswith(prefix):
        return None
    event, sep, table = name[len(prefix) :].partition("_")
    return table if sep and event in events else None


def is_capture_trigger(name: str, table: str, former: Collection[str] = ()) -> bool:
    """Our capture trigger: named by :func:`capture_trigger_name` for ``table`` (the table it sits on)
    or for one of ``former`` (the tables the capture record names: one renamed since)."""
    named = _named_table(name, PREFIX, CAPTURE_EVENTS)
    return named is not None and (named == table or named in former)


def is_fence_trigger(name: str, table: str, former: Collection[str] = ()) -> bool:
    """Our write-fence trigger, by the same rule as :func:`is_capture_trigger`."""
    named = _named_table(name, FENCE_PREFIX, FENCE_EVENTS)
    return named is not None and (named == table or named in former)


def is_tool_trigger(name: str, table: str, former: Collection[str] = ()) -> bool:
    """A trigger we created (capture or fence); every other trigger is the app's."""
    return is_capture_trigger(name, table, former) or is_fence_trigger(name, table, former)


__all__ = [
    "CAPTURE_EVENTS",
    "FENCE_EVENTS",
    "FENCE_PREFIX",
    "FENCE_TABLE",
    "JOURNAL",
    "META",
    "PREFIX",
    "TABLES",
    "capture_trigger_name",
    "fence_trigger_name",
    "fold",
    "is_capture_trigger",
    "is_fence_trigger",
    "is_internal_table",
    "is_tool_trigger",
]
