"""``replicator analyze``: findings on a database built to hold every trap, facts on real files, CLI.

Expected numbers come from plain SQL run by the test itself (``SELECT count(*)``, ``typeof``), or from
what the test wrote, never from the code under test.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from replicator.cli.main import cli
from replicator.errors import ReplicatorError
from replicator.plan.analyze import Report, analyze, render, to_json, write_json
from replicator.plan.analyze_report import REPORT_VERSION
from tests.support.source import make_db
from triggers.errors import SourceError

LONG = "x" * 70

TRAPS_SQL = f"""
CREATE TABLE nokey (a TEXT, b INTEGER);
CREATE TABLE nullkey (a TEXT, b INTEGER, PRIMARY KEY (a, b));
CREATE TABLE parent (id INTEGER PRIMARY KEY, code TEXT);
CREATE TABLE child (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES parent(id),
    parent_code TEXT REFERENCES parent(code),
    ghost_id INTEGER REFERENCES ghost(id)
);
CREATE TABLE values_ (
    id INTEGER PRIMARY KEY,
    body TEXT,
    picture BLOB,
    qty INTEGER,
    seen_at DATETIME,
    flag BOOLEAN,
    price DECIMAL(10, 2),
    doubled INTEGER GENERATED ALWAYS AS (qty * 2) VIRTUAL
);
CREATE TABLE hen (id INTEGER PRIMARY KEY, egg_id INTEGER REFERENCES egg(id));
CREATE TABLE egg (id INTEGER PRIMARY KEY, hen_id INTEGER REFERENCES hen(id));
CREATE TABLE longnames ("{LONG}a" INTEGER PRIMARY KEY, "{LONG}b" TEXT);
CREATE VIRTUAL TABLE docs USING fts5(body);
CREATE VIEW v_parent AS SELECT id FROM parent;
CREATE TRIGGER touch AFTER UPDATE ON parent BEGIN UPDATE parent SET code = code WHERE id = NEW.id; END;
CREATE TRIGGER _replicator_ins_parent AFTER INSERT ON parent BEGIN SELECT 1; END;

INSERT INTO nokey VALUES ('a', 1);
INSERT INTO nullkey VALUES ('a', 1), (NULL, 2), ('c', NULL);
INSERT INTO parent VALUES (1, 'p1'), (2, 'p2');
INSERT INTO child VALUES (1, 1, NULL, NULL), (2, 7, NULL, NULL), (3, 8, NULL, NULL), (4, NULL, 'p1', 5);
INSERT INTO values_ (id, body, picture, qty, seen_at, flag, price) VALUES
    (1, 'plain', x'00ff', 1, 1709618828009, 1, 9.99),
    (2, 'nul' || char(0) || 'inside', 'just text', 'lots', '2024-03-05T06:07:08.009+00:00', 't', 3),
    (3, CAST(x'66696c65966e616d65' AS TEXT), NULL, 3, '2024-03-05 06:07:08', 'maybe', '12.50'),
    (4, x'0102', NULL, NULL, 'someday', 2, NULL);
INSERT INTO hen VALUES (1, 1);
INSERT INTO egg VALUES (1, 1);
INSERT INTO docs VALUES ('hello');
"""

EXPECTED = {
    ("error", "no_primary_key", "nokey", None),
    ("error", "null_primary_key", "nullkey", None),
    ("error", "fk_orphans", "child", None),
    ("error", "fk_parent_not_unique", "child", None),
    ("error", "fk_missing_parent", "child", None),
    ("error", "nul_in_text", "values_", "body"),
    ("error", "invalid_utf8", "values_", "body"),
    ("error", "identifier_collision", "longnames", None),
    ("warning", "identifier_truncated", "longnames", f"{LONG}a"),
    ("warning", "identifier_truncated", "longnames", f"{LONG}b"),
    ("warning", "blob_in_typed_column", "values_", "body"),
    ("warning", "text_in_blob_column", "values_", "picture"),
    ("warning", "text_in_numeric_column", "values_", "qty"),
    ("warning", "unrecognised_datetime", "values_", "seen_at"),
    ("warning", "mixed_datetime_formats", "values_", "seen_at"),
    ("warning", "unrecognised_boolean", "values_", "flag"),
    ("warning", "virtual_table", "docs", None),
    ("warning", "not_wal", None, None),
    ("info", "decimal_as_real", "values_", "price"),
    ("info", "generated_columns", "values_", None),
    ("info", "app_triggers", None, None),
    ("info", "views", None, None),
    ("info", "fk_cycle", None, None),
    ("info", "capture_installed", None, None),
    ("info", "deferred_transactions", None, None),
}


@pytest.fixture
def traps(tmp_path: Path) -> Path:
    path = tmp_path / "traps.db"
    return make_db(path, TRAPS_SQL)  # foreign_keys is off by default: the orphans get in


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_trap_is_found_exactly_once(traps: Path) -> None:
    report = analyze(traps)
    got = [(f.severity, f.code, f.table, f.column) for f in report.findings]
    assert len(got) == len(set(got)), "no finding is reported twice"
    assert set(got) == EXPECTED
    by_code = {f.code: f for f in report.findings}
    assert "2 row(s)" in by_code["fk_orphans"].message  # parent_id 7 and 8
    assert "2 row(s)" in by_code["null_primary_key"].message
    assert "1 of 4" in by_code["unrecognised_datetime"].message  # 'someday'
    assert "unix_ms 1" in by_code["mixed_datetime_formats"].message
    assert "2 of 4" in by_code["unrecognised_boolean"].message  # 'maybe' and 2
    assert "kept current by the apply" in by_code["generated_columns"].message  # what schema and the docs say
    assert all(f.hint for f in report.findings), "every finding says what to do"
    severities = [f.severity for f in report.findings]
    assert severities == sorted(severities, key=("error", "warning", "info").index)


def test_trap_report_facts(traps: Path) -> None:
    report = analyze(traps)
    child = report.table("child")
    fks = {fk.columns: fk for fk in child.foreign_keys}
    assert fks[("parent_id",)].orphan_rows == 2
    assert fks[("parent_code",)].parent_key_unique is False
    assert fks[("parent_code",)].orphan_rows is None
    assert fks[("ghost_id",)].parent_exists is False
    assert report.table("nullkey").null_key_rows == 2
    assert report.table("parent").triggers == ("touch",)  # ours (named by triggers.names) are not the app's
    assert report.capture_installed
    assert report.virtual_tables == ("docs",)
    assert report.views == ("v_parent",)
    assert report.fk_cycles == (("egg", "hen"),)
    assert {"docs", "v_parent"}.isdisjoint(report.load_order)
    assert report.load_order.index("parent") < report.load_order.index("child")
    body = report.table("values_").columns[1]
    assert body.storage == {"text": 3, "blob": 1}
    assert body.formats == {"nul_text": 1, "invalid_utf8": 1}


def test_analyze_never_writes_to_the_source(traps: Path) -> None:
    before = _digest(traps), traps.stat().st_mtime_ns, sorted(os.listdir(traps.parent))
    analyze(traps)
    assert (_digest(traps), traps.stat().st_mtime_ns, sorted(os.listdir(traps.parent))) == before


def test_wal_database_has_no_wal_warning_and_reads_while_a_writer_is_open(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    app = sqlite3.connect(path, isolation_level=None)
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    app.executemany("INSERT INTO t (v) VALUES (?)", [("a",), ("b",)])
    app.execute("BEGIN")
    app.execute("INSERT INTO t (v) VALUES ('uncommitted')")  # the app mid-transaction
    report = analyze(path, busy_timeout_ms=100)
    app.execute("COMMIT")
    assert report.source.journal_mode == "wal"
    assert "not_wal" not in {f.code for f in report.findings}
    assert report.table("t").rows == 2


def _count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize(
    "file", ["chinook/Chinook_Sqlite_AutoIncrementPKs.sqlite", "northwind/northwind.db", "sakila/sakila.db"]
)
def test_real_databases(realworld: Path, file: str) -> None:
    path = realworld / file
    report = analyze(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    query = "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    names = [str(row[0]) for row in conn.execute(query)]
    conn.close()
    assert sorted(t.name for t in report.tables) == names
    assert sorted(report.load_order) == names
    for table in report.tables:
        quoted = '"' + table.name.replace('"', '""') + '"'
        assert table.rows == _count(path, f"SELECT count(*) FROM {quoted}")
        for col in table.columns:
            c = '"' + col.name.replace('"', '""') + '"'
            assert col.storage.get("null", 0) == _count(path, f"SELECT count(*) FROM {quoted} WHERE {c} IS NULL")
        for fk in table.foreign_keys:
            if fk.ref_table != table.name and table.name not in _after_cycles(report):
                assert report.load_order.index(fk.ref_table) < report.load_order.index(table.name)
    assert report.count("error") == 0  # these sample databases migrate as they are


def _after_cycles(report: Report) -> set[str]:
    """Cycle members and every table that depends on one: dependency_order puts them last, by name."""
    tainted = {name for cycle in report.fk_cycles for name in cycle}
    while True:
        more = {t.name for t in report.tables if any(fk.ref_table in tainted for fk in t.foreign_keys)} - tainted
        if not more:
            return tainted
        tainted |= more


def test_sequences_and_decimal_facts(realworld: Path) -> None:
    path = realworld / "chinook/Chinook_Sqlite_AutoIncrementPKs.sqlite"
    report = analyze(path)
    assert report.table("Genre").sequence == _count(path, "SELECT seq FROM sqlite_sequence WHERE name = 'Genre'")
    assert report.table("Genre").autoincrement
    findings = {(f.code, f.table, f.column) for f in report.findings}
    assert ("decimal_as_real", "Invoice", "Total") in findings
    sakila = analyze(realworld / "sakila/sakila.db")
    staff_active = [f for f in sakila.findings if (f.table, f.column) == ("staff", "active")]
    assert [f.code for f in staff_active] == ["text_in_numeric_column"]  # SMALLINT holding 't'
    assert sakila.fk_cycles == (("staff", "store"),)


def test_collision_file_from_pgloader(realworld: Path) -> None:
    report = analyze(realworld / "pgloader-tests/collision.db")
    assert [f.code for f in report.findings if f.severity == "error"] == ["identifier_collision"]


def test_json_round_trip_and_atomic_write(traps: Path, tmp_path: Path) -> None:
    report = analyze(traps)
    assert msgspec.json.decode(to_json(report), type=Report) == report
    out = tmp_path / "out" / "report.json"
    out.parent.mkdir()
    write_json(report, out)
    assert json.loads(out.read_text())["report_version"] == 1
    assert os.listdir(out.parent) == ["report.json"]  # no temp file left behind
    with pytest.raises(ReplicatorError, match="cannot write the JSON report"):
        write_json(report, tmp_path / "missing-dir" / "r.json")


def test_json_into_a_fifo_or_through_a_symlink_never_replaces_it(traps: Path, tmp_path: Path) -> None:
    """As root, renaming over /dev/null would turn the device into a file: special files are written into."""
    report = analyze(traps)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    write_json(report, fifo)
    reader.join(timeout=10)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert json.loads(received[0])["report_version"] == REPORT_VERSION
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_json(report, link)
    assert link.is_symlink()
    assert json.loads(real.read_text())["report_version"] == REPORT_VERSION


def test_render_names_every_table_and_finding(traps: Path) -> None:
    report = analyze(traps)
    buffer = io.StringIO()
    render(report, buffer)
    text = buffer.getvalue()
    for table in report.tables:
        assert table.name[:20] in text
    for finding in report.findings:
        assert finding.code in text
    assert not any(line != line.rstrip() for line in text.splitlines())
    totals = {s: sum(1 for e in EXPECTED if e[0] == s) for s in ("error", "warning", "info")}
    assert f"{totals['error']} errors, {totals['warning']} warnings, {totals['info']} info" in text


def test_bad_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        analyze(tmp_path / "nope.db")
    notdb = tmp_path / "notes.txt"
    notdb.write_text("hello " * 100)
    with pytest.raises(SourceError, match="not a SQLite 3 database"):
        analyze(notdb)


# --- the command line ------------------------------------------------------------------------------


def test_cli_text_and_json_file(traps: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["analyze", "--source", str(traps), "--json", str(out), "--log-format", "json"])
    assert result.exit_code == 0, result.output
    assert "Findings" in result.stdout
    assert "no_primary_key" in result.stdout
    data = json.loads(out.read_text())
    assert {f["code"] for f in data["findings"]} == {code for _, code, _, _ in EXPECTED}


def test_cli_quiet_json_file_prints_nothing(traps: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["analyze", "-q", "--source", str(traps), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert out.exists()


@pytest.mark.parametrize(
    ("make", "code", "text"),
    [
        (lambda p: None, 2, "does not exist"),
        (lambda p: p.write_text("not a database " * 20), 2, "not a SQLite 3 database"),
    ],
)
def test_cli_bad_source_is_one_line_and_exit_2(tmp_path: Path, make: object, code: int, text: str) -> None:
    path = tmp_path / "app.db"
    make(path)  # type: ignore[operator]
    result = CliRunner().invoke(cli, ["analyze", "--source", str(path)])
    assert result.exit_code == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert text in lines[0]
    assert " — " in lines[0]


def test_cli_unwritable_json_is_exit_1(traps: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["analyze", "--source", str(traps), "--json", str(tmp_path / "no" / "r.json")])
    assert result.exit_code == 1
    assert "cannot write the JSON report" in result.stderr


@pytest.mark.e2e
def test_installed_command_json_to_stdout(realworld: Path) -> None:
    """The README's first command, as a user runs it (JSON on stdout, logs on stderr)."""
    source = realworld / "chinook/Chinook_Sqlite.sqlite"
    exe = Path(sys.executable).with_name("replicator")
    proc = subprocess.run(
        [str(exe), "analyze", "--source", str(source), "--json", "-"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {t["name"]: t["rows"] for t in data["tables"]}["Track"] == _count(source, "SELECT count(*) FROM Track")
    assert data["load_order"][-1] in {"InvoiceLine", "PlaylistTrack"}
    assert data["report_version"] == REPORT_VERSION


# --- self-references, sqlite_sequence, views and virtual tables, the parallel read ----------------


SELF_SQL = """
CREATE TABLE tags (id INTEGER PRIMARY KEY AUTOINCREMENT, parent_id INTEGER REFERENCES tags(id), label TEXT);
CREATE TABLE nodes (code TEXT PRIMARY KEY, parent_code TEXT REFERENCES nodes(code));
CREATE TABLE hen (id INTEGER PRIMARY KEY, egg_id INTEGER REFERENCES egg(id));
CREATE TABLE egg (id INTEGER PRIMARY KEY, hen_id INTEGER REFERENCES hen(id));
INSERT INTO tags (parent_id, label) VALUES (NULL, 'root'), (1, 'child'), (99, 'lost'), (2, 'grandchild');
INSERT INTO nodes VALUES ('a', NULL), ('b', 'a'), ('c', 'zz'), ('d', 'A');
INSERT INTO hen VALUES (1, 1);
INSERT INTO egg VALUES (1, 1);
INSERT INTO sqlite_sequence (name, seq) VALUES ('dropped_long_ago', 41);
"""


@pytest.fixture
def selfref(tmp_path: Path) -> Path:
    path = tmp_path / "selfref.db"
    return make_db(path, SELF_SQL)


def test_self_references_are_reported_beside_cycles_and_are_not_fatal(selfref: Path) -> None:
    report = analyze(selfref)
    assert report.self_references == ("nodes", "tags")
    assert report.fk_cycles == (("egg", "hen"),)  # a self-reference is not a cycle
    assert set(report.load_order) == {"egg", "hen", "nodes", "tags"}
    infos = {(f.code, f.table) for f in report.findings if f.severity == "info"}
    assert {("fk_self_reference", "nodes"), ("fk_self_reference", "tags"), ("fk_cycle", None)} <= infos
    assert all(f.code == "fk_orphans" for f in report.findings if f.severity == "error")
    # orphans of a self-reference, counted by SQL written here (rowid key, then a TEXT key)
    for table, fk_col, key in (("tags", "parent_id", "id"), ("nodes", "parent_code", "code")):
        expected = _count(
            selfref,
            f"SELECT count(*) FROM {table} c WHERE {fk_col} IS NOT NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {table} p WHERE p.{key} = c.{fk_col})",
        )
        assert report.table(table).foreign_keys[0].orphan_rows == expected == (1 if table == "tags" else 2)
    text = io.StringIO()
    render(report, text)
    assert "self-referencing tables: nodes, tags" in text.getvalue()


def test_sqlite_sequence_contents_are_shown(selfref: Path) -> None:
    report = analyze(selfref)
    conn = sqlite3.connect(f"file:{selfref}?mode=ro", uri=True)
    expected = {str(n): int(s) for n, s in conn.execute("SELECT name, seq FROM sqlite_sequence")}
    conn.close()
    assert report.sequences == expected == {"tags": 4, "dropped_long_ago": 41}
    assert report.table("tags").sequence == 4
    text = io.StringIO()
    render(report, text)
    assert "sqlite_sequence: tags = 4, dropped_long_ago = 41" in text.getvalue()
    assert json.loads(to_json(report))["sequences"] == expected


def test_views_virtual_tables_and_their_shadow_tables_are_listed(traps: Path) -> None:
    report = analyze(traps)
    conn = sqlite3.connect(f"file:{traps}?mode=ro", uri=True)
    shadow = sorted(str(r[1]) for r in conn.execute("PRAGMA table_list") if r[2] == "shadow")
    conn.close()
    assert report.virtual_table_modules == {"docs": "fts5"}
    assert sorted(report.shadow_tables) == shadow
    assert shadow
    assert not set(shadow) & {t.name for t in report.tables}
    text = io.StringIO()
    render(report, text)
    out = text.getvalue()
    assert "views (not copied): v_parent" in out
    assert "virtual tables (not copied): docs (fts5)" in out
    assert f"shadow tables of virtual tables: {', '.join(report.shadow_tables)}" in out


def test_one_or_two_connections_and_any_chunk_size_give_the_same_report(
    traps: Path, selfref: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from replicator.plan import analyze as analyze_module
    from replicator.plan import chunkscan

    big = tmp_path / "big.db"
    conn = sqlite3.connect(big)
    conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id), at TEXT, n)")
    conn.executemany("INSERT INTO p VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 2001)])
    conn.executemany(
        "INSERT INTO c VALUES (?, ?, ?, ?)",
        [(i, i % 2100, f"2024-01-{i % 28 + 1:02d}", [i, "x", 1.5, None][i % 4]) for i in range(1, 5001)],
    )
    conn.commit()
    conn.close()

    def strip(report: Report) -> Report:
        return msgspec.structs.replace(report, seconds=0.0)

    for path in (traps, selfref, big):
        monkeypatch.setattr(analyze_module, "WORKERS", 1)
        one = strip(analyze(path))
        monkeypatch.setattr(analyze_module, "WORKERS", 2)
        monkeypatch.setattr(chunkscan, "CHUNK_BYTES", 2048)
        monkeypatch.setattr(chunkscan, "MIN_CHUNK_ROWS", 16)
        assert strip(analyze(path)) == one
        monkeypatch.undo()
    report = analyze(big)
    assert report.table("c").rows == _count(big, "SELECT count(*) FROM c")
    assert report.table("c").foreign_keys[0].orphan_rows == _count(
        big, "SELECT count(*) FROM c WHERE p_id IS NOT NULL AND p_id NOT IN (SELECT id FROM p)"
    )


def test_a_django_app_is_told_about_deferred_transactions(tmp_path: Path) -> None:
    """Django begins deferred: another commit between its read and its write fails the request."""
    path = tmp_path / "django.db"
    make_db(
        path,
        "CREATE TABLE django_migrations (id INTEGER PRIMARY KEY, app TEXT, name TEXT, applied TEXT);"
        "CREATE TABLE shop_item (id INTEGER PRIMARY KEY, name TEXT);",
    )
    found = [f for f in analyze(path).findings if f.code == "deferred_transactions"]
    assert len(found) == 1
    assert found[0].severity == "warning"
    assert '"transaction_mode": "IMMEDIATE"' in found[0].hint


UNIQUE_SQL = """
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT UNIQUE);
CREATE UNIQUE INDEX users_lower ON users (lower(name));
CREATE TABLE bookings (id INTEGER PRIMARY KEY, room INTEGER, starts_at DATETIME, UNIQUE (room, starts_at));
CREATE TABLE events (id INTEGER PRIMARY KEY, at DATETIME UNIQUE);
CREATE TABLE slots (at DATETIME PRIMARY KEY, label TEXT);
CREATE TABLE tags (name TEXT COLLATE NOCASE PRIMARY KEY, n INTEGER) WITHOUT ROWID;
CREATE TABLE codes (id INTEGER PRIMARY KEY, code TEXT);
CREATE UNIQUE INDEX codes_code ON codes (code COLLATE RTRIM);
INSERT INTO users VALUES (1, 'Émile', 'e@x');
INSERT INTO bookings VALUES (1, 7, '2024-05-01 10:00:00');
INSERT INTO events VALUES (1, 1714557600000);
INSERT INTO slots VALUES ('2024-05-01 10:00:00', 'a');
INSERT INTO tags VALUES ('Straße', 1);
INSERT INTO codes VALUES (1, 'a');
"""


def test_unique_indexes_whose_equality_differs_in_postgresql_are_warned_about(tmp_path: Path) -> None:
    """Expression UNIQUE indexes, UNIQUE over date-time text, NOCASE/RTRIM keys; and nothing else:
    a plain UNIQUE text column, and a date-time column stored as epoch integers, are left alone."""
    path = tmp_path / "unique.db"
    make_db(path, UNIQUE_SQL)
    report = analyze(path)
    got = {(f.code, f.table, f.column) for f in report.findings if f.code.startswith("unique_")}
    assert got == {
        ("unique_expression", "users", None),
        ("unique_datetime_text", "bookings", "starts_at"),
        ("unique_datetime_text", "slots", "at"),
        ("unique_collation", "tags", "name"),
        ("unique_collation", "codes", "code"),
    }
    by_code = {(f.code, f.table): f for f in report.findings if f.code.startswith("unique_")}
    assert all(f.severity == "warning" and f.hint for f in by_code.values())
    assert "'users_lower' is on lower(name)" in by_code["unique_expression", "users"].message
    lowered = by_code["unique_expression", "users"].message
    assert "replicator builds it on SQLite's ASCII-only folding" in lowered  # create mode: no collision there
    assert "an index the app's own migration created in PostgreSQL" in lowered  # existing mode: 'É' and 'é' may
    assert "2024-05-01T10:00:00" in by_code["unique_datetime_text", "bookings"].message
    assert by_code["unique_datetime_text", "slots"].message.startswith("primary key includes 'at'")
    tags = next(t for t in report.tables if t.name == "tags")
    assert [i.collations for i in tags.indexes if i.origin == "pk"] == [("NOCASE",)]
