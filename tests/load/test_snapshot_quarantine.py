"""Refused values: each kind under on_bad_value = stop and = quarantine, against a real PostgreSQL."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from replicator import config
from replicator.config import ColumnOverride
from replicator.errors import BadValue
from replicator.load import snapshot
from replicator.load.copyrows import RowPipe, copy_rows, key_getter
from replicator.plan import createmode
from replicator.plan.schemaplan import ColumnPlan, TablePlan
from replicator.state.quarantine import acknowledge, unacknowledged
from replicator.state.store import StateStore
from replicator.values.targettype import parse_type
from tests.support.compare import assert_same
from tests.support.source import make_db, sqlite_write

CFG = config.load(None, environ={})

#: kind → (declared type, SQL literal of the bad value, override type or None, reason fragment)
KINDS: dict[str, tuple[str, str, str | None, str]] = {
    "text_in_integer": ("INTEGER", "'lots-of-it'", None, "not an integer"),
    "invalid_utf8_text": ("TEXT", "CAST(x'66696c65966e616d65' AS TEXT)", None, "not valid UTF-8"),
    "invalid_utf8_blob_in_text": ("TEXT", "x'66696c65966e616d65'", None, "not valid UTF-8"),
    "nul_in_text": ("TEXT", "'a' || char(0) || 'b'", None, "NUL"),
    "numeric_scale": ("NUMERIC(4,2)", "1.234", "numeric(4,2)", "numeric(4,2)"),
    "smallint_range": ("SMALLINT", "70000", "smallint", "range"),
    "bad_datetime": ("DATETIME", "'next tuesday'", "timestamptz", ""),
    "bad_boolean": ("BOOLEAN", "'maybe'", "boolean", "not a boolean"),
    "bad_json": ("JSON", "'{bad'", "jsonb", "not valid JSON"),
}
GOOD = {
    "INTEGER": "7",
    "TEXT": "'fine'",
    "NUMERIC(4,2)": "12.5",
    "SMALLINT": "3",
    "DATETIME": "'2024-03-05 06:07:08'",
    "BOOLEAN": "1",
    "JSON": "'{\"a\": 1}'",
}


def _database(tmp_path: Path, declared: str, bad: str) -> Path:
    path = tmp_path / "app.db"
    good = GOOD[declared]
    return make_db(
        path,
        f"CREATE TABLE items (id INTEGER PRIMARY KEY, v {declared}, note TEXT);"
        f"INSERT INTO items VALUES (1, {good}, 'first'), (2, {bad}, 'bad'), (3, {good}, 'last');",
    )


def _config(override: str | None) -> config.Config:
    if override is None:
        return CFG
    return msgspec.structs.replace(CFG, types={"items": {"v": ColumnOverride(type=override)}})


@pytest.mark.parametrize("kind", list(KINDS))
def test_stop_names_the_value_and_leaves_the_table_empty(kind: str, tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    declared, bad, override, reason = KINDS[kind]
    path = _database(tmp_path, declared, bad)
    with pytest.raises(BadValue) as info:
        snapshot.snapshot(path, pg_dsn, _config(override), mode="create", on_bad_value="stop")
    message = info.value.message
    assert "items (id=2) column v" in message
    assert reason in message
    assert "value " in message
    assert "quarantine" in info.value.hint
    assert pg.execute("SELECT count(*) FROM items").fetchone() == (0,)
    run = pg.execute("SELECT status, message FROM replicator.runs").fetchone()
    assert run[0] == "failed"
    assert "column v" in run[1]


@pytest.mark.parametrize("kind", list(KINDS))
def test_quarantine_skips_the_row_and_records_the_original(kind: str, tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    declared, bad, override, reason = KINDS[kind]
    path = _database(tmp_path, declared, bad)
    result = snapshot.snapshot(path, pg_dsn, _config(override), mode="create", on_bad_value="quarantine")
    assert result.quarantined == 1
    assert result.rows == 2
    assert result.plan is not None
    if kind in ("invalid_utf8_text", "nul_text"):
        # Announced before any load by analyze and `replicator schema` (the full profile); the
        # snapshot's own profile skips text formats (typemap.needs_formats) and quarantines the row.
        conn = snapshot.open_source(path, CFG)
        try:
            read = snapshot.read_source(conn)
        finally:
            conn.close()
        plan = createmode.plan_create(read.schema, read.profiles, _config(override))
        assert any("refused unless" in w for t in plan.tables for w in t.warnings)
    assert assert_same(path, pg, result.plan, exclude={"items": {(2,)}}) == {"items": 2}
    row = pg.execute(
        "SELECT table_name, key::text, column_name, storage_class, original_base64, reason, action, acknowledged "
        "FROM replicator.quarantine"
    ).fetchone()
    with sqlite3.connect(path) as conn:
        conn.text_factory = bytes
        original, storage = conn.execute("SELECT v, typeof(v) FROM items WHERE id = 2").fetchone()
    expected = (
        original
        if isinstance(original, bytes)
        else (repr(original) if isinstance(original, float) else str(original)).encode()
    )
    assert row[:4] == ("items", '{"id": 2}', "v", storage.decode())
    assert base64.b64decode(row[4]) == expected
    assert reason in row[5]
    assert row[6:] == ("row skipped", False)
    assert unacknowledged(StateStore(pg, "replicator")) == {"items": 1}
    assert pg.execute("SELECT quarantined FROM replicator.snapshot_tables").fetchone() == (1,)


def test_reload_replaces_the_quarantine_and_acknowledge_clears_it(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = _database(tmp_path, "INTEGER", "'x'")
    snapshot.snapshot(path, pg_dsn, CFG, mode="create", on_bad_value="quarantine")
    snapshot.snapshot(path, pg_dsn, CFG, mode="create", on_bad_value="quarantine", replace=True)
    assert pg.execute("SELECT count(*) FROM replicator.quarantine").fetchone() == (1,)
    assert acknowledge(StateStore(pg, "replicator"), "items") == 1
    assert unacknowledged(StateStore(pg, "replicator")) == {}


@pytest.mark.parametrize(
    ("bad", "flag", "stored"),
    [
        ("CAST(x'66696c65966e616d65' AS TEXT)", "replace_bad_utf8", "file\ufffdname"),
        ("'a' || char(0) || 'b'", "strip_nul", "ab"),
    ],
)
def test_opt_in_alterations_load_the_row(
    bad: str, flag: str, stored: str, tmp_path: Path, pg_dsn: str, pg: Any
) -> None:
    path = _database(tmp_path, "TEXT", bad)
    override = msgspec.convert({flag: True}, ColumnOverride)
    cfg = msgspec.structs.replace(CFG, types={"items": {"v": override}})
    result = snapshot.snapshot(path, pg_dsn, cfg, mode="create")
    assert result.quarantined == 0
    assert pg.execute("SELECT v FROM items WHERE id = 2").fetchone() == (stored,)


def test_enum_label_refused_in_existing_mode(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = tmp_path / "app.db"
    make_db(
        path,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, role TEXT NOT NULL);"
        "INSERT INTO users VALUES (1, 'ADMIN'), (2, 'SUPERUSER'), (3, 'USER');",
    )
    pg.execute(
        "CREATE TYPE role AS ENUM ('USER', 'ADMIN'); CREATE TABLE users (id serial PRIMARY KEY, role role NOT NULL)"
    )
    with pytest.raises(BadValue, match=r"users \(id=2\) column role: text value is not a label of enum role"):
        snapshot.snapshot(path, pg_dsn, CFG, mode="existing")
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="existing", on_bad_value="quarantine")
    assert result.quarantined == 1
    assert pg.execute("SELECT id, role::text FROM users ORDER BY id").fetchall() == [(1, "ADMIN"), (3, "USER")]
    assert result.sequences["users.id"] == 4


def test_rerun_after_a_stop_rebuilds_in_create_mode(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    path = tmp_path / "app.db"
    make_db(
        path,
        """
            CREATE TABLE a (id INTEGER PRIMARY KEY, name TEXT); CREATE INDEX a_name ON a (name);
            CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a(id), n INTEGER NOT NULL);
            INSERT INTO a VALUES (1, 'x'); INSERT INTO b VALUES (1, 1, 5), (2, 1, 'five'), (3, 1, 6);
            """,
    )
    with pytest.raises(BadValue, match="--replace"):
        snapshot.snapshot(path, pg_dsn, CFG)
    assert pg.execute("SELECT count(*) FROM a").fetchone() == (1,)  # loaded before the refusal...
    assert pg.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'a_name'").fetchone() == (1,)  # ...indexed
    fks = "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
    assert pg.execute(fks).fetchone() == (0,)  # FKs come last
    sqlite_write(path, "UPDATE b SET n = 55 WHERE id = 2")
    result = snapshot.snapshot(path, pg_dsn, CFG, replace=True)
    assert result.mode == "create"
    assert result.rows == 4
    assert pg.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'a_name'").fetchone() == (1,)
    assert pg.execute(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conname = 'b_a_id_fkey'"
    ).fetchone() == (1,)


def test_a_lone_surrogate_that_reached_a_strict_pipe_fails_the_copy_loudly(pg: Any) -> None:
    """A strict pipe (``strict_text``: rows from a read that cannot produce a lone surrogate) skips the
    converter's UTF-8 check. Were it ever handed a fallback read's surrogate, psycopg could not encode
    the value: the COPY stops with an error and nothing is committed, never a silently altered row."""
    pg.execute("CREATE TABLE items (id bigint PRIMARY KEY, v text)")
    columns = (ColumnPlan("id", "id", parse_type("bigint")), ColumnPlan("v", "v", parse_type("text")))
    table = TablePlan("items", "items", columns, primary_key=("id",), key_source=("id",))
    pipe = RowPipe(table, key_of=key_getter(table), policy="quarantine", verify=False, extra=False, strict_text=True)
    rows = [(1, "café"), (2, "file\udc96name"), (3, "last")]
    with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"), pg.transaction():
        copy_rows(pg, "public", pipe, [rows])
    assert pg.execute("SELECT count(*) FROM items").fetchone() == (0,)
    assert pipe.refusals == []  # not quarantined: the strict converter let it through


def test_refused_rows_leave_no_canonical_texts_behind() -> None:
    """A row refused after its JSON column was validated (another column refused) is never digested: the
    canonical texts its converter left for the digest (``convert_json.CANONICAL``) must not pile up. A
    40,000-character document of ``1e298`` is ~2 MB of canonical text (numbers in plain notation); 64
    held entries cost 128 MB a process (found by a red-team pass: peak RSS 75 -> 192 MB end to end)."""
    from replicator.values import convert_json

    types = (parse_type("bigint"), parse_type("json"), parse_type("json"))
    columns = tuple(ColumnPlan(n, n, t) for n, t in zip(("id", "doc", "other"), types, strict=True))
    table = TablePlan("t", "t", columns, primary_key=("id",), key_source=("id",))
    pipe = RowPipe(table, key_of=key_getter(table), policy="quarantine", verify=False, extra=False, strict_text=True)
    docs = ["[" + ",".join(["1e298"] * 6_665) + f",{i}]" for i in range(40)]
    pipe.run([(i, docs[i], "not json") for i in range(40)], lambda row: None)  # every row refused by "other"
    assert len(pipe.refusals) == 40
    assert convert_json.CANONICAL == {}


def test_a_client_encoding_from_the_environment_does_not_alter_text(
    tmp_path: Path, pg_dsn: str, pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader's connection speaks UTF-8 whatever PGCLIENTENCODING says: under LATIN1, "é" was stored as
    mojibake ("Ã©") and "€" stopped the snapshot with a UnicodeEncodeError (found by a red-team pass)."""
    path = tmp_path / "enc.db"
    values = [(1, '{"a": "é"}', "café"), (2, '{"a": "€"}', "€ 5"), (3, '["naïve ☃ 𝄞"]', "𝄞")]
    make_db(
        path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, doc JSON, label TEXT);",
        *[("INSERT INTO t VALUES (?, ?, ?)", row) for row in values],
    )
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    snapshot.snapshot(path, pg_dsn, CFG, replace=True)
    monkeypatch.delenv("PGCLIENTENCODING")
    assert pg.execute("SELECT id, doc::text, label FROM t ORDER BY id").fetchall() == values


def test_json_deeper_than_postgresql_parses_is_quarantined_not_fatal(tmp_path: Path, pg_dsn: str, pg: Any) -> None:
    """PostgreSQL 15's JSON parser stops near 13,000 object levels (14,500 array levels) with the default
    2 MB max_stack_depth, and its "stack depth limit exceeded" aborted the whole table's COPY even under
    quarantine; the converter accepted up to 20,000. It refuses past JSON_MAX_DEPTH now, by name, so the row
    is quarantined and the rest of the table loads (found by a red-team pass)."""
    from replicator.values.convert_json import JSON_MAX_DEPTH

    def nested(levels: int) -> str:
        return '{"a":' * levels + "1" + "}" * levels

    path = tmp_path / "deep.db"
    rows = [(1, '{"ok": true}'), (2, nested(13_500)), (3, nested(JSON_MAX_DEPTH))]
    make_db(
        path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, doc JSON);",
        *[("INSERT INTO t VALUES (?, ?)", row) for row in rows],
    )
    result = snapshot.snapshot(path, pg_dsn, CFG, mode="create", on_bad_value="quarantine")
    assert result.quarantined == 1
    assert pg.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,), (3,)]
    (reason,) = pg.execute("SELECT reason FROM replicator.quarantine").fetchone()
    assert f"deeper than {JSON_MAX_DEPTH}" in reason
