"""The soak tier: tests marked ``soak`` run only when asked (``-m soak`` or ``REPLICATOR_SOAK=1``)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("REPLICATOR_SOAK") == "1" or "soak" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="soak tier: run with -m soak or REPLICATOR_SOAK=1")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)
