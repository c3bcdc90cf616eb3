"""Create mode plans from a sample of each table and verifies every row while copying: a row the
guess cannot account for sends the table to a full profile and a reload, whichever process loads it."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from replicator import config
from replicator.errors import BadValue
from replicator.load import snapshot
from replicator.plan import createmode
from replicator.plan.schemaplan import SchemaPlan
from replicator.state.store import StateStore
from tests.support.compare import assert_same

ONE = config.load(overrides={"snapshot": {"workers": 1}}, environ={})
TWO = config.load(overrides={"snapshot": {"workers": 2, "helper_min_bytes": 0}}, environ={})
LATE = snapshot.GUESS_SAMPLE_ROWS + 500  # a row the sample does not see


def _source(path: Path, late_value: str | None) -> Path:
    """Five tables the guess can take; ``late_value`` names the one that a late row contradicts."""
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE nums (id INTEGER PRIMARY KEY, n INTEGER, x REAL);
        CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, raw BLOB);
        CREATE TABLE stamps (id INTEGER PRIMARY KEY, at DATETIME, day DATE);
        CREATE TABLE pairs (a TEXT, b INTEGER, v TEXT, PRIMARY KEY (a, b));
        CREATE TABLE docs (id INTEGER PRIMARY KEY, meta JSON, flag BOOLEAN NOT NULL, seen BOOLEAN);
        """
    )
    rows = range(1, 3 * snapshot.GUESS_SAMPLE_ROWS)
    conn.executemany("INSERT INTO nums VALUES (?, ?, ?)", [(i, i * 7, i / 4) for i in rows])
    conn.executemany("INSERT INTO notes VALUES (?, ?, ?)", [(i, f"note {i} ✓", bytes([i % 256])) for i in rows])
    conn.executemany(
        "INSERT INTO stamps VALUES (?, ?, ?)", [(i, f"2024-01-02 03:04:{i % 60:02d}", "2024-02-03") for i in rows]
    )
    conn.executemany("INSERT INTO pairs VALUES (?, ?, ?)", [(f"k{i}", i, "v") for i in rows])
    conn.executemany(  # as Django and SQLAlchemy write them: JSON text, booleans 0/1, a nullable one
        "INSERT INTO docs VALUES (?, ?, ?, ?)",
        [(i, f'{{"n": {i}, "tags": ["é", {i / 8}]}}', i % 2, None if i % 3 else i % 2) for i in rows],
    )
    late = {
        "text in an integer column": "UPDATE nums SET n = 'many' WHERE id = ?",
        "an offset in a naive date-time column": "UPDATE stamps SET at = '2024-01-02T03:04:05+02:00' WHERE id = ?",
        "epoch milliseconds in a date-time column": "UPDATE stamps SET at = 1704164645000 WHERE id = ?",
        "a blob in a text column": "UPDATE notes SET body = x'00ff' WHERE id = ?",
        "text in a blob column": "UPDATE notes SET raw = 'plain' WHERE id = ?",
        "a NULL in a composite key": "UPDATE pairs SET a = NULL WHERE rowid = ?",
        "February 30th in a date-time column": "UPDATE stamps SET at = '2024-02-30 03:04:05' WHERE id = ?",
        "February 30th in a date column": "UPDATE stamps SET day = '2024-02-30' WHERE id = ?",
        "a blob in a JSON column": "UPDATE docs SET meta = x'7b7d' WHERE id = ?",
        "a number in a JSON column": "UPDATE docs SET meta = 2.5 WHERE id = ?",
        "text that is not JSON in a JSON column": "UPDATE docs SET meta = '{oops' WHERE id = ?",
        "2 in a BOOLEAN column": "UPDATE docs SET flag = 2 WHERE id = ?",
        "a boolean word in a BOOLEAN column": "UPDATE docs SET seen = 'true' WHERE id = ?",
    }
    if late_value is not None:
        conn.execute(late[late_value], (LATE,))
    conn.commit()
    conn.close()
    return path


def _full_plan(path: Path) -> SchemaPlan:
    conn = snapshot.open_source(path, ONE)
    try:
        read = snapshot.read_source(conn)
    finally:
        conn.close()
    return createmode.plan_create(read.schema, read.profiles, ONE)


def _types(plan: SchemaPlan) -> dict[str, Any]:
    return {t.source: ([(c.name, c.type) for c in t.columns], t.primary_key) for t in plan.tables}


LATE_VALUES = [
    None,
    "text in an integer column",
    "an offset in a naive date-time column",
    "epoch milliseconds in a date-time column",
    "a blob in a text column",
    "text in a blob column",
    "a NULL in a composite key",
    "February 30th in a date-time column",
    "February 30th in a date column",
    "a blob in a JSON column",
    "a number in a JSON column",
    "text that is not JSON in a JSON column",
    "2 in a BOOLEAN column",
    "a boolean word in a BOOLEAN column",
]


@pytest.mark.parametrize("cfg", [ONE, TWO], ids=["one-process", "two-processes"])
@pytest.mark.parametrize("late_value", LATE_VALUES, ids=lambda v: v or "nothing-late")
def test_guessed_types_are_the_full_profiles_types(
    tmp_path: Path, pg_dsn: str, pg: Any, cfg: config.Config, late_value: str | None
) -> None:
    path = _source(tmp_path / "app.db", late_value)
    conn = snapshot.open_source(path, cfg)
    try:
        guessed = snapshot.read_source(conn, cfg).guessed
    finally:
        conn.close()
    assert guessed == {"nums", "notes", "stamps", "pairs", "docs"}  # every table is planned from its sample
    result = snapshot.snapshot(path, pg_dsn, cfg, mode="create", on_bad_value="quarantine")
    assert result.plan is not None
    assert _types(result.plan) == _types(_full_plan(path))
    refused = dict(pg.execute("SELECT table_name, count(*) FROM replicator.quarantine GROUP BY 1").fetchall())
    assert_same(path, pg, result.plan, exclude={t: {(LATE,)} for t in refused})
    saved = pg.execute("SELECT count(*) FROM replicator.snapshot_tables").fetchone()
    assert saved == (5,)
    if late_value is None:
        return
    # the contradicted table was reloaded under the full profile's plan; the saved plan says so too
    with pg.transaction():
        stored = StateStore(pg, "replicator").load_plan()
    assert stored is not None
    assert _types(stored) == _types(result.plan)


#: A value the guessed type refuses, then a later one that makes the full profile choose text, which takes both.
REFUSED_THEN_TEXT = {
    "text that is not JSON, then a blob, in a JSON column": [
        "UPDATE docs SET meta = '{oops' WHERE id = ?",
        "UPDATE docs SET meta = x'7b7d' WHERE id = ? + 1",
    ],
    "February 30th, then a word, in a date-time column": [
        "UPDATE stamps SET at = '2024-02-30 03:04:05' WHERE id = ?",
        "UPDATE stamps SET at = 'soon' WHERE id = ? + 1",
    ],
}


@pytest.mark.parametrize("cfg", [ONE, TWO], ids=["one-process", "two-processes"])
@pytest.mark.parametrize("case", sorted(REFUSED_THEN_TEXT))
def test_a_value_the_guess_refuses_stops_nothing_the_full_profile_loads(
    tmp_path: Path, pg_dsn: str, pg: Any, cfg: config.Config, case: str
) -> None:
    """With on_bad_value = stop, a value the guessed type refuses (JSON that is not JSON, February 30th)
    is judged under the full profile's type: a later row may make that text, which holds it."""
    path = _source(tmp_path / "app.db", None)
    conn = sqlite3.connect(path)
    for statement in REFUSED_THEN_TEXT[case]:
        conn.execute(statement, (LATE,))
    conn.commit()
    conn.close()
    full = _full_plan(path)
    assert {c.type.name for t in full.tables for c in t.columns if t.source in ("docs", "stamps")} >= {"text"}
    result = snapshot.snapshot(path, pg_dsn, cfg, mode="create")  # on_bad_value = stop
    assert result.plan is not None
    assert _types(result.plan) == _types(full)
    assert_same(path, pg, result.plan)


@pytest.mark.parametrize("cfg", [ONE, TWO], ids=["one-process", "two-processes"])
def test_a_row_the_guess_quarantines_holds_back_no_child_the_full_profile_loads(
    tmp_path: Path, pg_dsn: str, pg: Any, cfg: config.Config
) -> None:
    """With on_bad_value = quarantine, a row refused under a guess that a later row disproves is not
    quarantined, nor are the rows referencing it: the full profile's type (text) holds its value."""
    path = _source(tmp_path / "app.db", None)
    conn = sqlite3.connect(path)
    for statement in REFUSED_THEN_TEXT["text that is not JSON, then a blob, in a JSON column"]:
        conn.execute(statement, (LATE,))
    conn.execute("CREATE TABLE links (id INTEGER PRIMARY KEY, doc INTEGER REFERENCES docs (id))")
    conn.executemany("INSERT INTO links VALUES (?, ?)", [(i, LATE) for i in range(1, 4)])
    conn.commit()
    conn.close()
    result = snapshot.snapshot(path, pg_dsn, cfg, mode="create", on_bad_value="quarantine")
    assert result.plan is not None
    assert _types(result.plan) == _types(_full_plan(path))
    assert pg.execute("SELECT table_name, count(*) FROM replicator.quarantine GROUP BY 1").fetchall() == []
    assert_same(path, pg, result.plan)


@pytest.mark.parametrize("cfg", [ONE, TWO], ids=["one-process", "two-processes"])
def test_a_guess_disproved_with_rows_left_unread_is_profiled_and_reloaded(
    tmp_path: Path, pg_dsn: str, pg: Any, cfg: config.Config
) -> None:
    """The row that disproves a guess stops the load with batches of the table left unread: the full
    profile that follows must still be able to scan SQLite (the stopped read's statement ended)."""
    path = _source(tmp_path / "app.db", "an offset in a naive date-time column")
    result = snapshot.snapshot(path, pg_dsn, cfg, mode="create", fetch_rows=100)  # 30 batches, stopped in the 16th
    assert result.plan is not None
    assert _types(result.plan) == _types(_full_plan(path))
    assert result.plan.table("stamps").columns[1].type.name == "timestamptz"
    assert_same(path, pg, result.plan)


@pytest.mark.parametrize("policy", ["stop", "quarantine"])
def test_a_guess_disproved_on_the_bytes_fallback_re_read_is_profiled_and_reloaded(
    tmp_path: Path, pg_dsn: str, pg: Any, policy: str
) -> None:
    """A guessed table with text that is not UTF-8 is re-read with the bytes fallback; a row of that
    re-read that disproves the guess (a blob in a TEXT column) sends it to the full profile, which
    must be able to scan SQLite (no statement of the failed reads left running), then a reload. Small
    batches: the re-read's statement is still running when the row disproves the guess."""
    path = _source(tmp_path / "app.db", None)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE notes SET body = CAST(x'66696c6596' AS TEXT) WHERE id = ?", (LATE,))
    conn.execute("UPDATE notes SET body = x'0102' WHERE id = ?", (LATE + 1,))
    conn.commit()
    conn.close()
    if policy == "stop":
        with pytest.raises(BadValue, match=rf"notes \(id={LATE}\) column body: text is not valid UTF-8"):
            snapshot.snapshot(path, pg_dsn, ONE, mode="create", fetch_rows=100)
        return
    result = snapshot.snapshot(path, pg_dsn, ONE, mode="create", on_bad_value="quarantine", fetch_rows=100)
    assert result.plan is not None
    assert _types(result.plan) == _types(_full_plan(path))
    refused = pg.execute("SELECT table_name, key FROM replicator.quarantine").fetchall()
    assert refused == [("notes", {"id": LATE})]
    assert_same(path, pg, result.plan, exclude={"notes": {(LATE,)}})


def test_a_resumed_snapshot_still_verifies_the_guessed_tables_it_loads(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """The saved plan marks guessed tables: a run interrupted before the contradicted table loads
    is resumed with the saved plan, and the resumed load still verifies, re-profiles and reloads it."""
    from tests.support.snapshot import Interrupt

    path = _source(tmp_path / "app.db", "an offset in a naive date-time column")  # timestamptz in full
    with pytest.raises(KeyboardInterrupt):
        snapshot.snapshot(path, pg_dsn, ONE, mode="create", progress=Interrupt(at=100))
    done = dict(pg.execute("SELECT table_name, rows FROM replicator.snapshot_tables").fetchall())
    assert "stamps" not in done  # the interrupted run never reached the contradicted table
    result = snapshot.snapshot(path, pg_dsn, ONE, mode="create", resume=True, on_bad_value="quarantine")
    assert result.plan is not None
    assert _types(result.plan) == _types(_full_plan(path))
    assert result.plan.table("stamps").columns[1].type.name == "timestamptz"
    assert_same(path, pg, result.plan)


@pytest.mark.parametrize("name", ["timestamp", "timestamptz", "date"])
def test_the_date_time_text_a_watched_column_converts_inline_is_text_its_guess_accepts(name: str) -> None:
    """A guessed date-time column keeps its inline ISO-text path (the converter's speed on ORM
    text) only for the shapes the guess's watch accepts; every other value still reaches the watch."""
    from replicator.load.guess import verifier
    from replicator.values import convert
    from replicator.values.datetimes import DATE_SHAPE, NAIVE_SHAPES, PROFILED_SHAPES
    from replicator.values.refusal import RowRefused
    from replicator.values.targettype import TargetType

    t = TargetType(name, format="iso8601")
    rules = verifier([t], keys=set())
    assert rules is not None
    rule = rules[0]
    watched = [DATE_SHAPE] if name == "date" else sorted(PROFILED_SHAPES)
    others = [] if name == "date" else sorted(NAIVE_SHAPES - PROFILED_SHAPES)
    assert watched
    assert others or name == "date"
    for shape in watched + others:
        text = shape.decode().replace("9", "1")  # 1111-11-11 11:11:11.111...
        missed: list[int] = []
        convert.row_converter("t", ["at"], [t], watch={0: rule}, missed=missed)((text,))
        assert rule(text) is (shape in watched), text  # the guess accepts exactly the shapes kept inline
        assert missed == ([] if shape in watched else [0]), text
    off_guess: list[object] = [1704164645000, 1704164645] if name != "date" else ["2024-01-02 03:04:05"]
    if name == "timestamp":
        off_guess.append("2024-01-02T03:04:05+02:00")
    impossible = "2024-02-30" if name == "date" else "2024-02-30 03:04:05"  # an inline shape fromisoformat refuses
    missed = []
    with pytest.raises(RowRefused, match=r"t\.at"):  # refused by name, as without the guess, not a ValueError
        convert.row_converter("t", ["at"], [t], watch={0: rule}, missed=missed)((impossible,))
    assert missed == []
    for value in off_guess:
        missed = []
        with contextlib.suppress(RowRefused):
            convert.row_converter("t", ["at"], [t], watch={0: rule}, missed=missed)((value,))
        assert missed == [0], value
