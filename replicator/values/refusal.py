"""How a value is refused: a short reason per value, then the table, column and value of its row.

Why a module of its own, below every parser and converter: the parsers (:mod:`replicator.values.datetimes`,
:mod:`~replicator.values.decimals`, :mod:`~replicator.values.addresses`) and the column converters all raise
:class:`ValueRefused` on the hot path, where it must stay cheap (a reason, an optional hint and setting);
the row converter (:func:`replicator.values.convert.row_converter`) turns the first one of a row into a
:class:`RowRefused`, which names the table, the column, an :func:`excerpt` of the value and the setting that
would make it load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from replicator.config import column_fix
from replicator.errors import BadValue


class ValueRefused(Exception):
    """One value cannot be written exactly to its target column.

    Raised per value on the hot path, so it carries only a short ``reason`` (and an optional
    ``hint``); :class:`RowRefused` adds table, column and value.
    """

    __slots__ = ("hint", "reason", "setting")

    def __init__(self, reason: str, hint: str = "", setting: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint
        self.setting = setting
        """A column setting that makes the value load (``strip_nul = true``): the hint spells it out
        with the table and column (:func:`replicator.config.column_fix`)."""

    def __reduce__(self) -> tuple[type[ValueRefused], tuple[str, str, str]]:
        return (ValueRefused, (self.reason, self.hint, self.setting))


class RowRefused(BadValue):
    """A row holds a value its target column cannot hold exactly; names table, column and value."""

    def __init__(self, table: str, column: str, value: object, reason: str, hint: str = "", setting: str = "") -> None:
        self.table = table
        self.column = column
        self.value = value
        self.reason = reason
        self.setting = setting
        """A column setting that makes such values load (``strip_nul = true``), or empty."""
        fixes = [column_fix(table, column, setting)] if setting else []
        fixes += [hint] if hint else []
        super().__init__(
            f"{table}.{column}: {reason}; value {excerpt(value)}",
            hint="; or ".join(fixes) or "fix the value in SQLite, or set snapshot.on_bad_value = quarantine",
        )
        self._hint_given = hint

    @property
    def fixes(self) -> str:
        """What makes this value load, naming the table and column; empty when only the data can change."""
        fixes = [column_fix(self.table, self.column, self.setting)] if self.setting else []
        return "; or ".join(fixes + ([self._hint_given] if self._hint_given else []))

    def stopped_at(self, table: str, key: Mapping[str, object]) -> str:
        """``refused value in t (id=2) column n: <reason>; value <excerpt>``: how a load and the apply both
        begin the message they stop on (by the row's key, not its table.column); each then says what it did
        not write."""
        shown = ", ".join(f"{k}={v!r}" for k, v in key.items())
        return f"refused value in {table} ({shown}) column {self.column}: {self.reason}; value {excerpt(self.value)}"

    def __reduce__(self) -> tuple[type[RowRefused], tuple[str, str, object, str, str, str]]:
        """Picklable (worker processes send refusals back): rebuilt from its own fields."""
        return (RowRefused, (self.table, self.column, self.value, self.reason, self._hint_given, self.setting))


EXCERPT_CHARS: Final = 40


def excerpt(value: object) -> str:
    """A short, printable rendering of a source value for error messages and quarantine rows."""
    if isinstance(value, str | bytes) and len(value) > EXCERPT_CHARS:
        kind = "chars" if isinstance(value, str) else "bytes"
        return f"{value[:EXCERPT_CHARS]!r}… ({len(value)} {kind})"
    if isinstance(value, str):
        return repr(value).encode("ascii", "backslashreplace").decode("ascii")
    return repr(value)


def storage_name(value: object) -> str:
    """The SQLite storage class name of a Python value, for reasons."""
    return {int: "integer", float: "real", str: "text", bytes: "blob"}.get(type(value), type(value).__name__)


def refuse_storage(value: object, target: str) -> ValueRefused:
    """The refusal of a storage class the target never takes (a blob into integer), named by both."""
    return ValueRefused(f"{storage_name(value)} value cannot be stored as {target}")
