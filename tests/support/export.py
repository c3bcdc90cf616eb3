"""A source full of awkward values for export/import, and a way to forge a well-formed but bad export."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from replicator import files
from replicator.load.offline.manifest import Manifest

VALUES: list[tuple[int, Any]] = [
    (1, None),
    (2, 2**63 - 1),
    (3, -(2**63)),
    (4, 0.1),
    (5, 1.0),
    (6, -0.0),
    (7, 1e300),
    (8, float("inf")),
    (9, float("-inf")),
    (10, "plain"),
    (11, "nul\x00inside"),
    (12, "émoji 🎉"),
    (13, b""),
    (14, b"\x00\xff binary"),
    (15, '{"looks": "like json"}'),
    (16, 5e-324),
]
BAD_UTF8 = b"caf\xe9 \xff\xfe"


def export_source(path: Path) -> Path:
    """Three tables (one WITHOUT ROWID) holding the awkward values: extremes, NUL, bytes, text that is not
    UTF-8. No capture installed: export reads a plain file."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = wal")
    conn.executescript(
        """
        CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT UNIQUE);
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id), v);
        CREATE INDEX child_parent ON child (parent_id);
        CREATE TABLE pair (a TEXT, b INTEGER, PRIMARY KEY (a, b)) WITHOUT ROWID;
        """
    )
    conn.executemany("INSERT INTO parent VALUES (?, ?)", [(i, f"p{i}") for i in range(1, 6)])
    conn.executemany("INSERT INTO child VALUES (?, ?, ?)", [(i, i % 5 + 1, v) for i, v in VALUES])
    conn.execute("INSERT INTO child VALUES (100, 1, CAST(? AS TEXT))", (BAD_UTF8,))
    conn.executemany("INSERT INTO pair VALUES (?, ?)", [("x", 1), ("x", 2), ("y", 1)])
    conn.close()
    return path


def reseal(out: Path, edit_file: str | None = None, content: bytes | None = None, **manifest_edits: Any) -> None:
    """Edit a file and recompute the manifest's SHA-256s and checksum: a well-formed but bad export."""
    if edit_file is not None and content is not None:
        (out / edit_file).write_bytes(content)
    manifest = msgspec.json.decode((out / "manifest.json").read_bytes(), type=Manifest)
    manifest = msgspec.structs.replace(manifest, **manifest_edits)
    tables = tuple(msgspec.structs.replace(t, sha256=files.sha256_file(out / t.file)) for t in manifest.tables)
    manifest = msgspec.structs.replace(manifest, tables=tables)
    manifest = msgspec.structs.replace(manifest, checksum=manifest.computed_checksum())
    (out / "manifest.json").write_bytes(msgspec.json.encode(manifest))
