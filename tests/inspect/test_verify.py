"""verify against a real PostgreSQL: every real-world file matches after a create-mode snapshot; one
updated, one deleted and one extra row are each found and named by key (single, composite, text,
keyless); bisection recurses through several levels; the CLI exits 3 on a mismatch."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from replicator import config
from replicator.cli.main import cli
from replicator.inspect import verify, verify_compare
from replicator.load import snapshot
from tests.conftest import REALWORLD, realworld_files

CFG = config.load(None, environ={})
REFUSING = {"type-mismatch.db", "bad-utf8.db"}
LOADABLE = [p for p in realworld_files() if p.name != "collision.db"]
CHINOOK = REALWORLD / "chinook" / "Chinook_Sqlite.sqlite"


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REALWORLD)) for p in paths]


@pytest.mark.parametrize("path", LOADABLE, ids=_ids(LOADABLE))
def test_every_realworld_file_verifies_after_a_snapshot(path: Path, pg_dsn: str) -> None:
    policy = "quarantine" if path.name in REFUSING else "stop"
    loaded = snapshot.snapshot(path, pg_dsn, CFG, mode="create", on_bad_value=policy)
    report = verify.verify(path, pg_dsn, CFG, keys=True)
    assert report.match, [(t.table, t.status, t.missing, t.extra, t.different) for t in report.tables if not t.match]
    assert {t.table: t.source_rows for t in report.tables} == {t.table: t.rows for t in loaded.tables}
    assert all(t.source_digest == t.target_digest for t in report.tables)
    assert sum(t.refused for t in report.tables) == loaded.quarantined


def _damage(pg: psycopg.Connection[Any]) -> None:
    pg.execute("""UPDATE "Track" SET "Composer" = 'someone else' WHERE "TrackId" = 1234""")
    pg.execute("""DELETE FROM "InvoiceLine" WHERE "InvoiceLineId" = 77""")
    pg.execute(
        """INSERT INTO "Genre" ("GenreId", "Name") VALUES (99, 'Polka')""",
    )
    pg.execute("""DELETE FROM "PlaylistTrack" WHERE "PlaylistId" = 1 AND "TrackId" = 3402""")
    pg.execute("""INSERT INTO "PlaylistTrack" VALUES (18, 1)""")


@pytest.mark.parametrize("parallel", ["off", "thread", "process"])
def test_damaged_chinook_names_exactly_the_bad_keys(realworld: Path, pg_dsn: str, pg: Any, parallel: Any) -> None:
    snapshot.snapshot(CHINOOK, pg_dsn, CFG, mode="create")
    _damage(pg)
    report = verify.verify(CHINOOK, pg_dsn, CFG, keys=True, parallel=parallel)
    assert not report.match
    by_table = {t.table: t for t in report.tables}
    assert set(report.mismatched) == {"Track", "InvoiceLine", "Genre", "PlaylistTrack"}
    assert by_table["Track"].different == ((1234,),)
    assert by_table["Track"].missing == by_table["Track"].extra == ()
    assert by_table["Track"].source_rows == by_table["Track"].target_rows
    assert by_table["InvoiceLine"].missing == ((77,),)
    assert by_table["InvoiceLine"].target_rows == by_table["InvoiceLine"].source_rows - 1
    assert by_table["Genre"].extra == ((99,),)
    assert by_table["PlaylistTrack"].key_columns == ("PlaylistId", "TrackId")
    assert by_table["PlaylistTrack"].missing == ((1, 3402),)
    assert by_table["PlaylistTrack"].extra == ((18, 1),)
    assert by_table["Album"].match
    # Without --keys: the same verdicts, no keys listed.
    plain = verify.verify(CHINOOK, pg_dsn, CFG, tables=["Track", "Album"], parallel=parallel)
    assert [(t.table, t.status, t.different) for t in plain.tables] == [
        ("Track", "mismatch", ()),
        ("Album", "match", ()),
    ]


def test_cli_exit_3_and_json_keys(realworld: Path, pg_dsn: str, pg: Any) -> None:
    snapshot.snapshot(CHINOOK, pg_dsn, CFG, mode="create")
    runner = CliRunner()
    ok = runner.invoke(cli, ["verify", "--source", str(CHINOOK), "--target", pg_dsn])
    assert ok.exit_code == 0, ok.output
    assert "match" in ok.stdout
    _damage(pg)
    bad = runner.invoke(cli, ["verify", "--source", str(CHINOOK), "--target", pg_dsn, "--keys", "--json"])
    assert bad.exit_code == 3
    data = json.loads(bad.stdout)
    assert data["match"] is False
    tables = {t["table"]: t for t in data["tables"]}
    assert tables["Track"]["different"] == [[1234]]
    assert tables["PlaylistTrack"]["missing"] == [[1, 3402]]
    assert "differ between SQLite and PostgreSQL" in bad.stderr
    one = runner.invoke(cli, ["verify", "--source", str(CHINOOK), "--target", pg_dsn, "--tables", "Album,Artist"])
    assert one.exit_code == 0, one.output
    missing = runner.invoke(cli, ["verify", "--source", str(CHINOOK), "--target", pg_dsn, "--tables", "Nope"])
    assert missing.exit_code == 2
    assert "no such table" in missing.stderr


def _app(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for statement in statements:
        conn.execute(statement)
    conn.execute("COMMIT")
    conn.close()


@pytest.mark.parametrize("bucket_rows", [256, 8])
def test_text_composite_keyless_and_uuid_tables(
    tmp_path: Path, pg_dsn: str, pg: Any, monkeypatch: Any, bucket_rows: int
) -> None:
    monkeypatch.setattr(verify_compare, "BUCKET_ROWS", bucket_rows)  # 8: dozens of hash buckets, few compared
    path = tmp_path / "app.db"
    ids = [uuid.UUID(int=i * 7919) for i in range(300)]
    _app(
        path,
        "CREATE TABLE tags (lang TEXT COLLATE NOCASE, slug TEXT, hits INTEGER, PRIMARY KEY (lang, slug)) WITHOUT ROWID",
        "CREATE TABLE log (at TEXT, msg TEXT)",  # no key at all
        "CREATE TABLE things (id UUID PRIMARY KEY, body TEXT)",  # a uuid in PostgreSQL: no shared order
        *[
            f"INSERT INTO tags VALUES ('{lang}', 'slug-{i}-ü表', {i})"
            for lang in ("en", "Fr", "de")
            for i in range(400)
        ],
        *[f"INSERT INTO log VALUES ('2024-01-0{i % 9 + 1} 10:00:00', 'line {i % 50}')" for i in range(500)],
        *[f"INSERT INTO things VALUES ('{u}', 'body {n}')" for n, u in enumerate(ids)],
    )
    snapshot.snapshot(path, pg_dsn, CFG, mode="create")
    assert verify.verify(path, pg_dsn, CFG, keys=True).match
    pg.execute("""UPDATE tags SET hits = -1 WHERE lang = 'Fr' AND slug = 'slug-7-ü表'""")
    pg.execute("""DELETE FROM tags WHERE lang = 'de' AND slug = 'slug-399-ü表'""")
    pg.execute("""DELETE FROM log WHERE ctid = (SELECT ctid FROM log WHERE msg = 'line 3' LIMIT 1)""")
    pg.execute("""INSERT INTO log VALUES ('2024-02-01 00:00:00', 'forged')""")
    pg.execute("UPDATE things SET body = 'changed' WHERE id = %s", (str(ids[42]),))
    report = verify.verify(path, pg_dsn, CFG, keys=True)
    by_table = {t.table: t for t in report.tables}
    assert by_table["tags"].different == (("Fr", "slug-7-ü表"),)
    assert by_table["tags"].missing == (("de", "slug-399-ü表"),)
    log = by_table["log"]
    assert log.key_columns == ()
    assert len(log.missing) == 1
    assert log.missing[0][1] == "line 3"
    assert [row[1] for row in log.extra] == ["forged"]
    assert by_table["things"].different == ((ids[42],),)


def test_bisection_recurses_through_several_levels(tmp_path: Path, pg_dsn: str, pg: Any, monkeypatch: Any) -> None:
    path = tmp_path / "big.db"
    _app(
        path,
        "CREATE TABLE big (id INTEGER PRIMARY KEY, grp TEXT NOT NULL, v REAL, note TEXT)",
        "CREATE TABLE pair (a TEXT NOT NULL, b INTEGER NOT NULL, v TEXT, PRIMARY KEY (a, b))",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
        "INSERT INTO big SELECT i * 3, 'g' || (i % 17), i / 7.0, 'note ' || i FROM n",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
        "INSERT INTO pair SELECT 'k' || (i % 100), i, 'v' || i FROM n",
    )
    snapshot.snapshot(path, pg_dsn, CFG, mode="create")
    monkeypatch.setattr(verify_compare, "FANOUT", 4)
    monkeypatch.setattr(verify_compare, "SUBFANOUT", 4)
    monkeypatch.setattr(verify_compare, "LEAF_ROWS", 20)
    pg.execute("UPDATE big SET note = 'x' WHERE id IN (3, 30000, 59997)")
    pg.execute("DELETE FROM big WHERE id = 45000")
    pg.execute("INSERT INTO big VALUES (45001, 'g1', 1.5, 'extra'), (-5, 'g0', 0, 'before all')")
    pg.execute("UPDATE pair SET v = 'x' WHERE (a, b) IN (('k0', 100), ('k99', 19999))")
    pg.execute("DELETE FROM pair WHERE a = 'k50' AND b = 10050")
    report = verify.verify(path, pg_dsn, CFG, keys=True)
    big = next(t for t in report.tables if t.table == "big")
    assert big.different == ((3,), (30000,), (59997,))
    assert big.missing == ((45000,),)
    assert big.extra == ((-5,), (45001,))
    pair = next(t for t in report.tables if t.table == "pair")
    assert pair.different == (("k0", 100), ("k99", 19999))
    assert pair.missing == (("k50", 10050),)
    capped = verify.verify(path, pg_dsn, CFG, tables=["big"], keys=True, max_keys=2)
    assert len(capped.tables[0].different + capped.tables[0].missing + capped.tables[0].extra) == 2
    assert capped.tables[0].keys_truncated


def test_refused_source_rows_are_counted_not_compared(realworld: Path, pg_dsn: str) -> None:
    path = REALWORLD / "pgloader-tests" / "type-mismatch.db"
    snapshot.snapshot(path, pg_dsn, CFG, mode="create", on_bad_value="quarantine")
    report = verify.verify(path, pg_dsn, CFG)
    products = next(t for t in report.tables if t.table == "products")
    assert products.refused == 1
    assert products.match


def test_invalid_utf8_source_in_a_child_process(realworld: Path, pg_dsn: str, pg: Any) -> None:
    path = REALWORLD / "pgloader-tests" / "bad-utf8.db"
    snapshot.snapshot(path, pg_dsn, CFG, mode="create", on_bad_value="quarantine")
    report = verify.verify(path, pg_dsn, CFG, keys=True, parallel="process")
    assert report.match
    assert sum(t.refused for t in report.tables) == 1
    pg.execute("DELETE FROM files WHERE id = (SELECT min(id) FROM files)")
    broken = verify.verify(path, pg_dsn, CFG, keys=True, parallel="process")
    files = next(t for t in broken.tables if t.table == "files")
    assert files.status == "mismatch"
    assert len(files.missing) == 1


def test_rows_journaled_after_the_applied_position_with_no_daemon_differ(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    from checkpoints import model, store
    from triggers import install, journal

    path = tmp_path / "app.db"
    app = sqlite3.connect(path, isolation_level=None)
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    app.execute("CREATE TABLE quiet (id INTEGER PRIMARY KEY)")
    install.install(path)
    app.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"v{i}") for i in range(1, 101)])
    snapshot.snapshot(path, pg_dsn, CFG, mode="create")
    head = journal.head(app)
    genesis = store.latest(pg)  # the snapshot's genesis: applied through the journal head it read at
    assert genesis is not None
    assert genesis.seq_to == head
    app.execute("UPDATE t SET v = 'new' WHERE id = 5")
    app.execute("DELETE FROM t WHERE id = 7")
    app.execute("INSERT INTO t VALUES (1000, 'late')")
    report = verify.verify(path, pg_dsn, CFG)
    assert report.applied_through == head
    assert {name: change.upserted_digest for name, change in genesis.tables.items()} == {
        "t": next(x for x in verify.verify(path, pg_dsn, CFG).tables if x.table == "t").target_digest,
        "quiet": "0" * 64,
    }
    assert report.journal_head == head + 3
    t = next(x for x in report.tables if x.table == "t")
    assert t.in_flight == 3
    assert (t.different, t.extra, t.missing) == (((5,),), ((7,),), ((1000,),))  # named without keys=True
    # Journaled after the compared position, but no daemon applies them: not in flight, a mismatch
    # (tests/inspect/test_verify_in_flight.py has the daemon that makes them in flight).
    assert t.status == "mismatch"
    assert not report.match
    assert report.not_applying is not None
    pg.execute("UPDATE t SET v = 'forged' WHERE id = 9")  # a real difference next to the in-flight ones
    mixed = verify.verify(path, pg_dsn, CFG)
    t = next(x for x in mixed.tables if x.table == "t")
    assert t.status == "mismatch"
    assert t.in_flight == 3
    assert not mixed.match
    pg.execute("UPDATE t SET v = 'v9' WHERE id = 9")
    pg.execute("UPDATE t SET v = 'new' WHERE id = 5")  # what the apply would do, then its checkpoint
    pg.execute("DELETE FROM t WHERE id = 7")
    pg.execute("INSERT INTO t VALUES (1000, 'late')")
    with pg.transaction():
        first = store.latest(pg)
        assert first is not None
        store.append(pg, model.next_checkpoint(first, seq_to=head + 3, tables={}))
    drained = verify.verify(path, pg_dsn, CFG)
    assert drained.applied_through == drained.journal_head == head + 3
    assert all(x.status == "match" for x in drained.tables)
    assert drained.not_applying is None


def test_key_whose_sqlite_storage_orders_differently_is_still_diagnosed(
    tmp_path: Path, pg_dsn: str, pg: Any, monkeypatch: Any
) -> None:
    path = tmp_path / "mixed.db"
    _app(
        path,
        "CREATE TABLE m (code PRIMARY KEY, v TEXT)",  # no affinity: integers and text side by side
        *[f"INSERT INTO m VALUES ({i}, 'int {i}')" for i in range(0, 300, 3)],
        *[f"INSERT INTO m VALUES ('{i}', 'text {i}')" for i in range(1, 300, 3)],
    )
    snapshot.snapshot(path, pg_dsn, CFG, mode="create")
    assert verify.verify(path, pg_dsn, CFG, keys=True).match
    monkeypatch.setattr(verify_compare, "FANOUT", 4)
    monkeypatch.setattr(verify_compare, "SUBFANOUT", 4)
    monkeypatch.setattr(verify_compare, "LEAF_ROWS", 5)
    pg.execute("UPDATE m SET v = 'x' WHERE code IN ('3', '4')")
    m = verify.verify(path, pg_dsn, CFG, keys=True).tables[0]
    assert m.status == "mismatch"
    assert sorted(m.different) == [("3",), ("4",)]


@pytest.mark.parametrize("parallel", ["off", "thread"])
def test_deep_jsonb_documents_verify_and_a_change_deep_inside_is_found(
    tmp_path: Path, pg_dsn: str, pg: Any, parallel: Any
) -> None:
    """The independent reading parsed a document with ``json.loads``, which stops near Python's recursion
    limit (~1,000 levels): past it the value was compared as its raw text, equal for json (stored verbatim)
    but not for jsonb (PostgreSQL respaces it), so a faithful load of a 3,000-level jsonb document was
    reported as a mismatch and blocked the cutover (found by a red-team pass). The same reading must still
    find a value changed at the innermost level."""
    path = tmp_path / "deep.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, doc JSON, arr JSON)")
    deep_object = '{"b": 0, "a":' * 3_000 + "1" + "}" * 3_000
    deep_array = "[1, " * 6_000 + "[]" + "]" * 6_000
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(1, deep_object, deep_array), (2, '{"b": 1, "a": 2}', "[]")])
    conn.commit()
    conn.close()
    cfg = config.load(overrides={"types": {"t": {"doc": {"type": "jsonb"}, "arr": {"type": "jsonb"}}}}, environ={})
    snapshot.snapshot(path, pg_dsn, cfg, mode="create")
    report = verify.verify(path, pg_dsn, cfg, keys=True, parallel=parallel)
    assert report.match, [(t.table, t.different) for t in report.tables]
    changed_doc = """UPDATE t SET doc = replace(doc::text, '"a": 1,', '"a": 2,')::jsonb WHERE id = 1"""
    assert pg.execute(changed_doc).rowcount == 1  # the innermost object, {"a": 1, "b": 0}: its "a" is now 2
    changed = verify.verify(path, pg_dsn, cfg, keys=True, parallel=parallel)
    assert [t.different for t in changed.tables] == [((1,),)]


@pytest.mark.parametrize("kind", ["json", "jsonb"])
def test_json_with_nul_loaded_under_strip_nul_verifies(tmp_path: Path, pg_dsn: str, kind: str) -> None:
    """``strip_nul = true`` is the operator's opt-in to drop NUL from text: the load removes a raw NUL from a
    document's text (and jsonb's ``\\u0000`` escape). The independent reading parsed the SQLite text with the
    raw NUL still in it, found no JSON there and compared the raw text: a mismatch for every such row,
    which blocked the cutover the operator had opted into (found by a red-team pass). A NUL that was
    never opted out of still differs: without strip_nul the row is refused, never loaded altered."""
    path = tmp_path / "nul.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, doc JSON)")
    docs = [(1, '"a\x00b"'), (2, '{"k": "x\\u0000y", "n\x00": 1}'), (3, '["plain"]')]
    conn.executemany("INSERT INTO t VALUES (?, ?)", docs)
    conn.commit()
    conn.close()
    cfg = config.load(overrides={"types": {"t": {"doc": {"type": kind, "strip_nul": True}}}}, environ={})
    loaded = snapshot.snapshot(path, pg_dsn, cfg, mode="create")
    assert loaded.quarantined == 0
    report = verify.verify(path, pg_dsn, cfg, keys=True)
    assert report.match, [(t.table, t.different) for t in report.tables]
    with psycopg.connect(pg_dsn, autocommit=True) as pg:
        pg.execute(f"UPDATE t SET doc = '\"a b\"'::{kind} WHERE id = 1")
    assert [t.different for t in verify.verify(path, pg_dsn, cfg, keys=True).tables] == [((1,),)]
