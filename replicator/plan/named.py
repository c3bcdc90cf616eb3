"""Finding one item of a plan, a report or a manifest by its name.

They keep their tables (a profile its columns) in a tuple, in the order they are loaded and written to
JSON, and look one up by name only now and then: a scan, not a dict kept beside the tuple. Each of them
had the same four-line loop; this is that loop, once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

Item = TypeVar("Item")


def by_name(items: Iterable[Item], name: str, attr: str = "name") -> Item:
    """The first of ``items`` whose ``attr`` equals ``name``; ``KeyError(name)`` when none does, as a dict's
    lookup would (callers catch it to tell an unknown table)."""
    for item in items:
        if getattr(item, attr) == name:
            return item
    raise KeyError(name)
