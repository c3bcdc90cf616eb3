"""Where the tests find the project's own files, whichever folder of the test tree they live in."""

from __future__ import annotations

from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]
"""The repository's root (pyproject.toml, README.md, replicator/, triggers/, checkpoints/)."""

FIXTURES: Final = ROOT / "tests" / "fixtures"
"""Files the tests load: capture and state layouts of earlier versions, ORM-created PostgreSQL schemas."""
