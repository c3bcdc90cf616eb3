"""What a load was asked for: ``snapshot``'s and ``import``'s options, made once and passed down whole.

They used to be the same keyword list at every layer (the command, :func:`replicator.load.snapshot.snapshot`,
``snapshot_from``, the run's setup; ``import`` repeated most of it), each layer passing each one on by name.
The command builds the Struct now (``replicator.cli.load``), and every layer takes it as one value.

Callers that want one or two of them (the tests, the bench, the daemon's first snapshot) still write
``snapshot(source, dsn, config, mode="existing")``: the entry points take the fields as keywords too and
make the Struct from them in one place, :func:`asked`, so the names and defaults are written once, here.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from replicator.config import Config
from replicator.load.context import FETCH_ROWS


class LoadOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What both ``snapshot`` and ``import`` take."""

    mode: str | None = None
    """``create``, ``existing`` or ``auto``; None: the config's ``snapshot.mode``."""
    on_bad_value: str | None = None
    """``stop`` or ``quarantine``; None: the config's ``snapshot.on_bad_value``."""
    replace: bool = False
    """Reload tables that already hold rows (and, for a snapshot, start its state over)."""

    def policy(self, config: Config) -> str:
        """What a value PostgreSQL cannot hold does: the option, else the config's."""
        return self.on_bad_value or config.snapshot.on_bad_value


class SnapshotOptions(LoadOptions, frozen=True, kw_only=True):
    """``replicator snapshot``'s options (:func:`replicator.load.snapshot.snapshot`)."""

    resume: bool = False
    """Skip the tables an interrupted run of the same source finished."""
    tables: tuple[str, ...] = ()
    """Only these SQLite tables; empty: every table."""
    fetch_rows: int = FETCH_ROWS
    """Rows per ``fetchmany`` batch from SQLite (the tests make it small to interrupt a table halfway)."""


class ImportOptions(LoadOptions, frozen=True, kw_only=True):
    """``replicator import``'s options (:func:`replicator.load.offline.importer.import_export`)."""

    single_transaction: bool = False
    """One transaction for every table instead of one per table."""
    dry_run: bool = False
    """Do everything, then roll back."""


Asked = TypeVar("Asked", bound=LoadOptions)


def asked(kind: type[Asked], options: Asked | None, keywords: dict[str, Any]) -> Asked:
    """The options a caller passed whole, or made from its keywords (an unknown one is a TypeError, as an
    unknown keyword argument is); passing both would leave one silently unused, so it is refused."""
    if options is None:
        return kind(**keywords)
    if keywords:
        raise TypeError(f"pass the options or keywords, not both (got {', '.join(sorted(keywords))})")
    return options
