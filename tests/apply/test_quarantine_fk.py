"""Quarantine keeps foreign keys whole: a quarantined parent takes its children (and theirs) with it.

A real SQLite file with parent, child and grandchild tables (and a self-referencing one), a target
schema the app's migrations created beforehand with its foreign keys enforced (existing mode), a
parent row whose value PostgreSQL cannot hold. The snapshot loads every other row and lists the
parent and each descendant in the quarantine, each descendant with the reason naming its parent;
streaming keeps new children of a quarantined parent out, and releases them all once the parent is
fixed in SQLite. A genuine orphan still refuses with the orphan message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from replicator import config
from replicator.cli.main import cli
from replicator.cutover.session import Options
from replicator.cutover.window import cutover
from replicator.inspect import verify
from replicator.load import snapshot
from replicator.state.quarantine import acknowledge
from replicator.state.store import StateStore
from tests.support.compare import check_same, drain
from tests.support.source import app, make_db, make_source, sqlite_write

BIG = 2**40  # an INTEGER SQLite holds that PostgreSQL's integer cannot

SQLITE = """
CREATE TABLE app_parent (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, name TEXT);
CREATE TABLE app_child (
    id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES app_parent (id), note TEXT
);
CREATE TABLE app_grandchild (id INTEGER PRIMARY KEY, child_id INTEGER REFERENCES app_child (id), v TEXT);
CREATE TABLE app_node (id INTEGER PRIMARY KEY, up_id INTEGER REFERENCES app_node (id), label TEXT);
"""

ROWS = f"""
INSERT INTO app_parent VALUES (1, 10, 'one'), (2, {BIG}, 'two'), (3, 30, 'three');
INSERT INTO app_child VALUES (20, 2, 'of two'), (21, 2, 'of two too'), (10, 1, 'of one'), (30, 3, 'of three');
INSERT INTO app_grandchild VALUES (200, 20, 'under 20'), (100, 10, 'under 10'), (300, NULL, 'no parent');
INSERT INTO app_node VALUES (1, 5, 'before 5'), (2, NULL, 'root'), (3, 2, 'under 2'),
    (4, 3, 'under 3'), (5, 3, 'also under 3'), (6, NULL, 'other root'), (7, 6, 'fine');
UPDATE app_node SET label = 'a label far too long for varchar(12)' WHERE id = 2;
"""

#: What the app's own migrations create in PostgreSQL (existing mode): every foreign key enforced.
PG_SCHEMA = """
CREATE TABLE app_parent (id integer PRIMARY KEY, n integer NOT NULL, name varchar(20));
CREATE TABLE app_child (id integer PRIMARY KEY, parent_id integer NOT NULL REFERENCES app_parent (id), note text);
CREATE INDEX ON app_child (parent_id);
CREATE TABLE app_grandchild (id integer PRIMARY KEY, child_id integer REFERENCES app_child (id), v text);
CREATE TABLE app_node (id integer PRIMARY KEY, up_id integer REFERENCES app_node (id), label varchar(12));
"""

CFG = config.load(None, environ={})

#: table → key → reason fragment, for the rows the quarantine must hold after the snapshot.
EXPECTED = {
    "app_parent": {2: "range"},
    "app_child": {20: "parent app_parent key id=2 quarantined", 21: "parent app_parent key id=2 quarantined"},
    "app_grandchild": {200: "parent app_child key id=20 quarantined"},
    "app_node": {
        2: "varchar(12)",
        3: "parent app_node key id=2 quarantined",
        4: "parent app_node key id=3 quarantined",
        5: "parent app_node key id=3 quarantined",
        1: "parent app_node key id=5 quarantined",
    },
}


def _source(path: Path, *, capture: bool = False) -> Path:
    if capture:
        return make_source(path, SQLITE, ROWS)
    return make_db(path, SQLITE + ROWS)


def _quarantined(pg: Any) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {}
    for table, key, reason in pg.execute("SELECT table_name, key, reason FROM replicator.quarantine ORDER BY id"):
        out.setdefault(table, {})[key["id"]] = reason
    return out


def _assert_expected(found: dict[str, dict[int, str]], expected: dict[str, dict[int, str]]) -> None:
    assert {t: sorted(keys) for t, keys in found.items()} == {t: sorted(keys) for t, keys in expected.items()}
    for table, keys in expected.items():
        for key, fragment in keys.items():
            assert fragment in found[table][key], (table, key, found[table][key])


def _ids(pg: Any, table: str) -> list[int]:
    return [r[0] for r in pg.execute(f"SELECT id FROM {table} ORDER BY id")]


@pytest.mark.parametrize("deferred", [False, True], ids=["immediate", "deferred"])
def test_existing_mode_quarantines_the_descendants_of_a_quarantined_parent(
    deferred: bool, tmp_path: Path, pg_dsn: str, pg: Any
) -> None:
    path = _source(tmp_path / "app.db")
    # Django declares its keys DEFERRABLE INITIALLY DEFERRED: PostgreSQL then checks them at COMMIT.
    pg.execute(PG_SCHEMA.replace(" (id)", " (id) DEFERRABLE INITIALLY DEFERRED") if deferred else PG_SCHEMA)
    runner = CliRunner()
    common = ["--source", str(path), "--target", pg_dsn]
    loaded = runner.invoke(cli, ["snapshot", *common, "--mode", "existing", "--on-bad-value", "quarantine"])
    assert loaded.exit_code == 0, loaded.output
    assert _ids(pg, "app_parent") == [1, 3]
    assert _ids(pg, "app_child") == [10, 30]
    assert _ids(pg, "app_grandchild") == [100, 300]
    assert _ids(pg, "app_node") == [6, 7]
    _assert_expected(_quarantined(pg), EXPECTED)
    counts = dict(pg.execute("SELECT table_name, quarantined FROM replicator.snapshot_tables").fetchall())
    assert counts == {"app_parent": 1, "app_child": 2, "app_grandchild": 1, "app_node": 5}

    listed = runner.invoke(cli, ["quarantine", "list", *common, "--json"])
    assert listed.exit_code == 0, listed.output
    values = json.loads(listed.stdout.strip().splitlines()[-1])
    child = next(v for v in values if v["table"] == "app_child" and v["key"] == {"id": 20})
    assert child["column"] == "parent_id"
    assert child["reason"] == "parent app_parent key id=2 quarantined"

    # verify leaves every quarantined key out and counts it as refused: the tables match.
    report = verify.verify(path, pg_dsn, CFG)
    assert report.match, report
    assert {t.table: t.refused for t in report.tables} == counts


def test_existing_mode_stop_still_names_the_bad_value(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = _source(tmp_path / "app.db")
    pg.execute(PG_SCHEMA)
    result = CliRunner().invoke(cli, ["snapshot", "--source", str(path), "--target", pg_dsn, "--mode", "existing"])
    assert result.exit_code == 1, result.output
    assert "refused value in app_node (id=2) column label" in result.output


@pytest.mark.parametrize("deferred", [False, True], ids=["immediate", "deferred"])
def test_a_genuine_orphan_still_refuses_with_the_orphan_message(
    deferred: bool, tmp_path: Path, pg_dsn: str, pg: Any
) -> None:
    path = _source(tmp_path / "app.db")
    # SQLite's foreign keys are off: it keeps a child of no parent
    sqlite_write(path, "INSERT INTO app_child VALUES (99, 77, 'orphan')")
    pg.execute(PG_SCHEMA.replace(" (id)", " (id) DEFERRABLE INITIALLY DEFERRED") if deferred else PG_SCHEMA)
    result = CliRunner().invoke(
        cli,
        ["snapshot", "--source", str(path), "--target", pg_dsn, "--mode", "existing", "--on-bad-value", "quarantine"],
    )
    assert result.exit_code == 1, result.output
    assert "SQLite holds rows whose parent is missing" in result.output
    assert "(parent_id)=(77)" in result.output
    assert pg.execute("SELECT count(*) FROM app_child").fetchone() == (0,)


@pytest.mark.parametrize("workers", [1, 2])
def test_create_mode_quarantines_the_descendants_too(workers: int, tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = _source(tmp_path / "app.db")
    cfg = config.load(
        overrides={
            "snapshot": {"workers": workers, "helper_min_bytes": 0},
            "types": {"app_parent": {"n": {"type": "integer"}}, "app_node": {"label": {"type": "varchar(12)"}}},
        },
        environ={},
    )
    result = snapshot.snapshot(path, pg_dsn, cfg, mode="create", on_bad_value="quarantine")
    assert result.quarantined == 9
    _assert_expected(_quarantined(pg), EXPECTED)
    assert _ids(pg, "app_child") == [10, 30]
    assert _ids(pg, "app_node") == [6, 7]
    # The foreign keys created after the load hold: cutover's validation has no orphan to find.
    fks = pg.execute(
        "SELECT conname FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
    ).fetchall()
    assert len(fks) == 3
    for (name,) in fks:
        table = name.split("_", 2)[0] + "_" + name.split("_", 2)[1]
        pg.execute(f'ALTER TABLE {table} VALIDATE CONSTRAINT "{name}"')


def _existing(path: Path, dsn: str) -> config.Config:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PG_SCHEMA)
    return config.load(
        overrides={"apply": {"poll_interval_s": 0.05}, "snapshot": {"on_bad_value": "quarantine"}}, environ={}
    )


def test_streaming_keeps_children_of_a_quarantined_parent_out_and_releases_them_once_fixed(
    tmp_path: Path, pg_dsn: str, pg: Any
) -> None:
    path = _source(tmp_path / "app.db", capture=True)
    conf = _existing(path, pg_dsn)
    drain(path, pg_dsn, conf)  # the daemon's first run takes the snapshot
    _assert_expected(_quarantined(pg), EXPECTED)

    db = app(path)
    db.execute("PRAGMA foreign_keys = OFF")
    db.execute("INSERT INTO app_child VALUES (22, 2, 'new child of two')")  # its parent is quarantined
    db.execute("INSERT INTO app_grandchild VALUES (220, 22, 'under the new one')")
    db.execute("UPDATE app_grandchild SET v = 'edited' WHERE id = 200")  # a quarantined row changes
    db.execute("INSERT INTO app_node VALUES (8, 4, 'under 4')")
    db.execute("INSERT INTO app_child VALUES (11, 1, 'fine')")
    drain(path, pg_dsn, conf)
    expected = {t: dict(keys) for t, keys in EXPECTED.items()}
    expected["app_child"][22] = "parent app_parent key id=2 quarantined"
    expected["app_grandchild"][220] = "parent app_child key id=22 quarantined"
    expected["app_node"][8] = "parent app_node key id=4 quarantined"
    _assert_expected(_quarantined(pg), expected)
    assert _ids(pg, "app_child") == [10, 11, 30]

    # A parent that becomes bad in SQLite takes its children out of PostgreSQL with it.
    db.execute(f"UPDATE app_parent SET n = {BIG} WHERE id = 3")
    drain(path, pg_dsn, conf)
    expected["app_parent"][3] = "range"
    expected["app_child"][30] = "parent app_parent key id=3 quarantined"
    _assert_expected(_quarantined(pg), expected)
    assert _ids(pg, "app_child") == [10, 11]

    # Fixed in SQLite, the parents come back, and with them every descendant.
    db.execute("UPDATE app_parent SET n = 2 WHERE id = 2")
    db.execute("UPDATE app_parent SET n = 3 WHERE id = 3")
    db.execute("UPDATE app_node SET label = 'root' WHERE id = 2")
    drain(path, pg_dsn, conf)
    assert _quarantined(pg) == {}
    assert _ids(pg, "app_child") == [10, 11, 20, 21, 22, 30]
    assert _ids(pg, "app_grandchild") == [100, 200, 220, 300]
    assert _ids(pg, "app_node") == [1, 2, 3, 4, 5, 6, 7, 8]
    check_same(path, pg_dsn)


def test_cutover_lists_the_quarantined_descendants_and_the_foreign_keys_hold(
    tmp_path: Path, pg_dsn: str, pg: Any
) -> None:
    path = _source(tmp_path / "app.db", capture=True)
    conf = _existing(path, pg_dsn)
    drain(path, pg_dsn, conf)
    assert acknowledge(StateStore(pg, "replicator")) == 9
    result = cutover(path, pg_dsn, conf, Options(backup_dir=tmp_path / "b", certificate_path=tmp_path / "c.json"))
    assert result.certificate is not None
    entries = {(e.table, e.key["id"]): e.reason for e in result.certificate.quarantine}
    assert len(entries) == 9
    assert entries[("app_child", 21)] == "parent app_parent key id=2 quarantined"
    assert entries[("app_node", 1)] == "parent app_node key id=5 quarantined"
    proofs = {p.table: (p.sqlite_rows, p.pg_rows) for p in result.certificate.tables}
    assert proofs["app_child"] == (2, 2)  # SQLite's count leaves the quarantined keys out, as verify does


def test_a_fixed_parent_releases_acknowledged_dependents_too(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = _source(tmp_path / "app.db", capture=True)
    conf = _existing(path, pg_dsn)
    drain(path, pg_dsn, conf)
    assert acknowledge(StateStore(pg, "replicator")) == 9  # reviewed: nothing waits unacknowledged
    app(path).execute("UPDATE app_parent SET n = 2 WHERE id = 2")
    drain(path, pg_dsn, conf)
    # An acknowledged entry leaves the quarantine once its row is in PostgreSQL: kept, it would make
    # verify leave the row out of SQLite's side while PostgreSQL holds it.
    left = {t: sorted(keys) for t, keys in _quarantined(pg).items()}
    assert left == {"app_node": [1, 2, 3, 4, 5]}
    assert _ids(pg, "app_grandchild") == [100, 200, 300]
    assert verify.verify(path, pg_dsn, conf).match


def test_existing_mode_follows_postgresqls_own_foreign_keys(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """SQLite declares no foreign key here (and its names sort the child first): PostgreSQL's keys decide
    both the load order and which rows follow a quarantined parent."""
    path = tmp_path / "app.db"
    make_db(
        path,
        f"""
            CREATE TABLE a_line (id INTEGER PRIMARY KEY, order_id INTEGER, sku TEXT);
            CREATE TABLE b_order (id INTEGER PRIMARY KEY, total INTEGER);
            INSERT INTO b_order VALUES (1, 5), (2, {BIG});
            INSERT INTO a_line VALUES (10, 1, 'x'), (20, 2, 'y'), (21, 2, 'z');
            """,
    )
    pg.execute(
        "CREATE TABLE b_order (id integer PRIMARY KEY, total integer);"
        "CREATE TABLE a_line (id integer PRIMARY KEY, order_id integer REFERENCES b_order (id), sku text);"
    )
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="existing", on_bad_value="quarantine")
    assert result.plan is not None
    assert result.plan.order == ("b_order", "a_line")
    assert _ids(pg, "a_line") == [10]
    _assert_expected(
        _quarantined(pg),
        {
            "b_order": {2: "range"},
            "a_line": {20: "parent b_order key id=2 quarantined", 21: "parent b_order key id=2 quarantined"},
        },
    )


def test_parked_foreign_keys_are_followed_and_hold_at_cutover(
    tmp_path: Path,
    unprivileged_dsn: str,
) -> None:
    """A role that may not disable FK triggers has the apply park the app's foreign keys (dropped until
    cutover): a later snapshot still follows them, and cutover restores and validates them."""
    dsn = unprivileged_dsn
    path = _source(tmp_path / "app.db", capture=True)
    conf = _existing(path, dsn)
    drain(path, dsn, conf)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM replicator.parked_foreign_keys").fetchone() == (3,)
        snapshot.snapshot(path, dsn, conf, mode="existing", on_bad_value="quarantine", replace=True)
        _assert_expected(_quarantined(conn), EXPECTED)
    app(path).execute("INSERT INTO app_child VALUES (22, 2, 'new child of two')")
    drain(path, dsn, conf)
    options = Options(backup_dir=tmp_path / "b", certificate_path=tmp_path / "c.json", accept_quarantine=True)
    result = cutover(path, dsn, conf, options)
    assert result.certificate is not None
    assert len(result.certificate.quarantine) == 10
    assert len(result.certificate.foreign_keys) == 3


def test_a_foreign_key_over_a_column_no_longer_loaded_is_not_followed() -> None:
    """A saved plan's key whose column was dropped (or skipped) since: the apply starts, the key is left."""
    from replicator.apply import dependents
    from replicator.plan.schemaplan import ColumnPlan, ForeignKey, SchemaPlan, TablePlan
    from replicator.values.targettype import parse_type

    integer = parse_type("integer")
    parent = TablePlan("p", "p", (ColumnPlan("id", "id", integer),), ("id",), ("id",))
    child = TablePlan("c", "c", (ColumnPlan("id", "id", integer),), ("id",), ("id",))
    fk = ForeignKey("c_p_id_fkey", "c", ("p_id",), "p", ("id",))
    held = dependents.Held(SchemaPlan("existing", "public", (parent, child), ("p", "c"), foreign_keys=(fk,)))
    assert held.into("c") == []
    assert not held.referenced("p")
    assert held.hooks("c") == (None, None)
