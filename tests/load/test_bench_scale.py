"""The snapshot benchmark's ``--scale`` (bench/realfiles.py): an N× copy of a real file keeps every key
unique and every foreign key inside its own copy, or is refused with the reason — never a copy that a
loader would reject for our doing (a duplicate key) or that would load with dangling references.

The bench modules are scripts, not a package: loaded here from their path."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.paths import ROOT


def _realfiles() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_realfiles", ROOT / "bench" / "realfiles.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


realfiles = _realfiles()


def _counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        tables = realfiles.user_tables(conn)
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    conn.close()
    return counts


def _assert_sound(path: Path) -> None:
    """Every UNIQUE index and key holds (integrity_check reads them) and every foreign key finds its parent."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def test_negative_keys_unique_indexes_and_foreign_keys_stay_in_step(tmp_path: Path) -> None:
    source = tmp_path / "app.db"
    with sqlite3.connect(source) as conn:
        conn.executescript(
            """
            CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
            CREATE TABLE child (
                id INTEGER PRIMARY KEY,
                parent_id INTEGER REFERENCES parent (id),
                code INTEGER NOT NULL UNIQUE,
                label TEXT NOT NULL,
                UNIQUE (label, parent_id)
            );
            CREATE TABLE log (msg TEXT);
            CREATE TRIGGER child_log AFTER INSERT ON child BEGIN INSERT INTO log VALUES ('x'); END;
            INSERT INTO parent VALUES (-5, 'a'), (0, 'b'), (7, 'c');
            INSERT INTO child VALUES (1, -5, 100, 'same'), (2, 7, -100, 'same');
            """
        )
    conn.close()
    dest = tmp_path / "app.x4.db"
    counts = realfiles.scale_copy(source, dest, 4)
    # log: the source's 2 rows (its trigger fired there) 4 times; 6 more had the trigger fired on the copies
    assert counts == {"parent": 12, "child": 8, "log": 8}
    _assert_sound(dest)
    with sqlite3.connect(dest) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        ids = [r[0] for r in conn.execute("SELECT id FROM parent ORDER BY id")]
        # one stride (the widest key spread + 1: codes -100..100 → 201) for every column, so a child's
        # parent_id moved exactly as far as its parent's id
        assert ids == [-5, 0, 7, 196, 201, 208, 397, 402, 409, 598, 603, 610]
        pairs = conn.execute("SELECT p.name, c.code FROM child c JOIN parent p ON p.id = c.parent_id").fetchall()
        expected = [("a", 100 + k * 201) for k in range(4)] + [("c", -100 + k * 201) for k in range(4)]
        assert sorted(pairs) == sorted(expected)
        # the trigger is back (it did not fire for the copied rows: ``log`` above)
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone() == (1,)
    conn.close()


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ("CREATE TABLE t (id TEXT PRIMARY KEY); INSERT INTO t VALUES ('ALFKI')", "key t.id holds non-integer"),
        ("CREATE TABLE t (id INTEGER PRIMARY KEY, uid TEXT UNIQUE); INSERT INTO t VALUES (1, 'x')", r"UNIQUE \(uid\)"),
        ("CREATE TABLE t (id INTEGER PRIMARY KEY, e TEXT); CREATE UNIQUE INDEX t_e ON t (lower(e))", "expression"),
    ],
    ids=["text-key", "text-unique", "expression-unique"],
)
def test_keys_that_cannot_be_shifted_are_refused_and_leave_no_file(tmp_path: Path, schema: str, reason: str) -> None:
    source = tmp_path / "app.db"
    with sqlite3.connect(source) as conn:
        conn.executescript(schema)
    conn.close()
    dest = tmp_path / "app.x2.db"
    with pytest.raises(realfiles.ScaleRefused, match=reason):
        realfiles.scale_copy(source, dest, 2)
    assert not dest.exists()


@pytest.mark.parametrize("name", ["sakila/sakila.db", "chinook/Chinook_Sqlite.sqlite"])
def test_real_files_scale_soundly(realworld: Path, tmp_path: Path, name: str) -> None:
    """Sakila: composite keys, a UNIQUE index over a text and two key columns, store ↔ staff FKs both
    ways, 30 triggers; Chinook: composite PlaylistTrack key, a self-referencing Employee FK."""
    dest = tmp_path / "scaled.db"
    counts = realfiles.scale_copy(realworld / name, dest, 3)
    assert counts == {t: 3 * n for t, n in _counts(realworld / name).items()}
    _assert_sound(dest)
