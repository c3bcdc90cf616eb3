"""What every rule of verify's independent reading (:mod:`replicator.inspect.proof`) shares: the column's
meaning it reads by (:class:`ColumnType`) and the marker of a value a rule cannot read.

Like every ``proof`` module, this one imports nothing from the load path's conversion code (a test checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol


class ColumnType(Protocol):
    """What the rules need of a column's type (``convert.TargetType`` has it; not imported here)."""

    @property
    def name(self) -> str: ...
    @property
    def scale(self) -> int | None: ...
    @property
    def precision(self) -> int | None: ...
    @property
    def format(self) -> str | None: ...
    @property
    def strip_nul(self) -> bool: ...
    @property
    def replace_bad_utf8(self) -> bool: ...


Read = Callable[[Any], Any]
UNREADABLE: Final = "\x00?"


class Unreadable(ValueError):
    """A SQLite key value the column's rule cannot read (key bounds skip it)."""


def unreadable(value: object) -> str:
    """The marker of a value the rule cannot read: equal to nothing PostgreSQL returns."""
    kind = {int: "integer", float: "real", str: "text", bytes: "blob"}.get(type(value), type(value).__name__)
    return f"{UNREADABLE}{kind}:{value!r}"
