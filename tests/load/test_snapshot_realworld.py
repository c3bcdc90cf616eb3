"""Every real-world SQLite file, create mode, into a real PostgreSQL; every row compared back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from replicator import config
from replicator.errors import UsageError
from replicator.load import snapshot
from replicator.plan import createmode
from tests.conftest import REALWORLD, realworld_files
from tests.support.compare import assert_same

#: Files holding values PostgreSQL cannot take as they are: loaded under quarantine, key → reason.
REFUSING = {
    "type-mismatch.db": {"products": {(2,)}},
    "bad-utf8.db": {"files": {(2,)}},
}
#: Refused before anything is created (names that collide at 63 bytes).
REFUSED = {"collision.db"}

CFG = config.load(None, environ={})


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REALWORLD)) for p in paths]


LOADABLE = [p for p in realworld_files() if p.name not in REFUSED]


@pytest.mark.parametrize("path", LOADABLE, ids=_ids(LOADABLE))
def test_create_mode_loads_every_row_exactly(path: Path, pg_dsn: str, pg: psycopg.Connection[Any]) -> None:
    refusing = REFUSING.get(path.name)
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="create", on_bad_value="quarantine" if refusing else "stop")
    assert result.plan is not None
    counts = assert_same(path, pg, result.plan, exclude=refusing)
    assert counts == {t.table: t.rows for t in result.tables}
    assert sum(counts.values()) == result.rows > 0 or path.name == "test_pk.db"
    quarantined = pg.execute("SELECT table_name, key::text FROM replicator.quarantine ORDER BY 1").fetchall()
    expected = sorted((t, "{" + f'"id": {k[0]}' + "}") for t, keys in (refusing or {}).items() for k in keys)
    assert quarantined == expected
    recorded = dict(pg.execute("SELECT table_name, rows FROM replicator.snapshot_tables").fetchall())
    assert recorded == counts
    # Types guessed from a sample and verified on every row (or re-profiled when a row disproved the
    # guess) are exactly the types a full profile of every value chooses.
    conn = snapshot.open_source(path, CFG)
    try:
        full = snapshot.read_source(conn)
    finally:
        conn.close()
    measured = createmode.plan_create(full.schema, full.profiles, CFG)
    assert {t.source: [c.type for c in t.columns] for t in result.plan.tables} == {
        t.source: [c.type for c in t.columns] for t in measured.tables
    }


def test_collision_is_refused_before_anything_is_created(realworld: Path, pg_dsn: str, pg: Any) -> None:
    with pytest.raises(UsageError, match=r"aaax.*aaay"):
        snapshot.snapshot(realworld / "pgloader-tests" / "collision.db", pg_dsn, CFG, mode="create")
    assert pg.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_chinook_constraints_indexes_and_types(realworld: Path, pg_dsn: str, pg: Any) -> None:
    snapshot.snapshot(realworld / "chinook" / "Chinook_Sqlite.sqlite", pg_dsn, CFG, mode="create")
    kinds = dict(
        pg.execute(
            "SELECT contype, count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = 'public' AND contype <> 'n' GROUP BY 1"  # PostgreSQL 18 catalogs NOT NULL too
        ).fetchall()
    )
    assert kinds == {"p": 11, "f": 11}
    indexes = pg.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'").fetchone()[0]
    assert indexes == 11 + 11  # 11 primary keys (PlaylistTrack composite) + the 11 IFK_* indexes
    types = dict(
        pg.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'Invoice'"
        ).fetchall()
    )
    assert types["InvoiceDate"] == "timestamp without time zone"
    assert types["Total"] == "numeric"
    assert types["InvoiceId"] == "bigint"
    # FKs are NOT VALID until cutover validates them; names keep their case.
    not_valid = (
        "SELECT bool_and(NOT convalidated) FROM pg_constraint "
        "WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
    )
    assert pg.execute(not_valid).fetchone() == (True,)
    assert str(pg.execute('SELECT "Total" FROM "Invoice" WHERE "InvoiceId" = 1').fetchone()[0]) == "1.98"


def test_autoincrement_sequence_continues_after_sqlite_sequence(realworld: Path, pg_dsn: str, pg: Any) -> None:
    path = realworld / "chinook" / "Chinook_Sqlite_AutoIncrementPKs.sqlite"
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="create")
    assert result.sequences["Genre.GenreId"] == 26
    new_id = pg.execute('INSERT INTO "Genre" ("Name") VALUES (%s) RETURNING "GenreId"', ("Zydeco",)).fetchone()[0]
    assert new_id == 26
    track = pg.execute('INSERT INTO "Artist" ("Name") VALUES (%s) RETURNING "ArtistId"', ("New",)).fetchone()[0]
    assert track == 276


def test_sakila_defaults_checks_and_triggers(realworld: Path, pg_dsn: str, pg: Any) -> None:
    result = snapshot.snapshot(realworld / "sakila" / "sakila.db", pg_dsn, CFG, mode="create")
    assert any("30 trigger(s) not migrated" in w for w in result.warnings)
    # last_update values set by the app's triggers are data like any other: compared by assert_same above;
    # here the translated defaults and CHECKs work for a row inserted in PostgreSQL.
    row = pg.execute(
        "INSERT INTO film (title, language_id, last_update) VALUES ('X', 1, now()) "
        "RETURNING rental_duration, rental_rate, replacement_cost, rating"
    ).fetchone()
    assert (row[0], str(row[1]), str(row[2]), row[3]) == (3, "4.99", "19.99", "G")
    with pytest.raises(psycopg.errors.CheckViolation):
        pg.execute("INSERT INTO film (title, language_id, last_update, rating) VALUES ('Y', 1, now(), 'XXX')")
    assert pg.execute("SELECT active FROM staff ORDER BY staff_id").fetchall() == [(True,), (True,)]
    assert pg.execute("SELECT count(*) FROM film WHERE special_features ILIKE '%trailers%'").fetchone()[0] > 0


def test_foreign_keys_validate_at_cutover(realworld: Path, tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    import sqlite3

    from replicator.plan import constraints

    snapshot.snapshot(realworld / "northwind" / "northwind.db", pg_dsn, CFG, mode="create")
    checks = constraints.validate_foreign_keys(pg, "public")
    assert len(checks) == 13
    assert [c for c in checks if c.error] == []
    orphan = tmp_path / "orphan.db"
    with sqlite3.connect(orphan) as conn:
        conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id))")
        conn.execute("INSERT INTO c VALUES (1, 7)")
    cfg = msgspec.structs.replace(CFG, target=msgspec.structs.replace(CFG.target, schema="orphans"))
    snapshot.snapshot(orphan, pg_dsn, cfg, mode="create")
    (check,) = constraints.validate_foreign_keys(pg, "orphans")
    assert check.name == "c_p_id_fkey"
    assert "violates foreign key constraint" in (check.error or "")
