"""Keys reach the reader as the exact SQLite values, for every storage class; and the canonical text
encoding of keys is total and round-trips."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggers import install, journal

INVALID_UTF8 = b"a\xff\xfeb"

KEY_VALUES: list[object] = [
    0,
    -1,
    2**63 - 1,
    -(2**63),
    0.1,
    0.1 + 0.2,
    1e308,
    -1e308,
    5e-324,
    math.inf,
    -math.inf,
    1.5,
    123456789.12345679,
    "",
    "plain",
    "it's",
    'dq"uote',
    "a,b,c",
    "a\x00b",
    "NULL",
    "X'00'",
    "T41",
    "日本語 ✓",
    b"",
    b"\x00\xff,'",
    bytes(range(256)),
]


def _app(tmp_path: Path, ddl: str) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(ddl)
    return conn


def _journaled_keys(conn: sqlite3.Connection) -> list[tuple[journal.KeyValue, ...]]:
    return [e.key for e in journal.read(conn, 0)]


@pytest.mark.parametrize("value", KEY_VALUES, ids=repr)
def test_every_storage_class_round_trips_through_the_trigger(tmp_path: Path, value: object) -> None:
    conn = _app(tmp_path, "CREATE TABLE t (k PRIMARY KEY, v)")  # no type: BLOB affinity keeps the class
    install.install_on(conn)
    conn.execute("INSERT INTO t (k, v) VALUES (?, 'x')", (value,))
    conn.execute("UPDATE t SET v = 'y'")
    conn.execute("DELETE FROM t")
    entries = journal.read(conn, 0)
    assert [e.op for e in entries] == ["I", "U", "D"]
    for entry in entries:
        (got,) = entry.key
        assert type(got) is type(value)
        assert got == value
        assert entry.old_key is None  # the UPDATE did not change the key
    text = journal.encode_key(entries[0].key)
    assert text.isascii()
    assert "," not in text  # text and blobs are hex: a single-column key never contains the separator
    assert journal.decode_key(text) == entries[0].key
    conn.execute("INSERT INTO t (k, v) VALUES (?, 'x')", (value,))
    where, params = journal.key_predicate(("k",), entries[0].key)
    assert conn.execute(f"SELECT count(*) FROM t WHERE {where}", params).fetchone()[0] == 1


def test_invalid_utf8_text_key_decodes_to_the_exact_bytes(tmp_path: Path) -> None:
    conn = _app(tmp_path, "CREATE TABLE t (k TEXT PRIMARY KEY, v)")
    install.install_on(conn)
    conn.execute("INSERT INTO t (k, v) VALUES (CAST(? AS TEXT), 1)", (INVALID_UTF8,))
    ((decoded,),) = _journaled_keys(conn)
    assert isinstance(decoded, str)
    assert decoded.encode("utf-8", "surrogateescape") == INVALID_UTF8
    assert conn.execute("SELECT typeof(k), hex(k) FROM t").fetchone() == ("text", INVALID_UTF8.hex().upper())
    where, params = journal.key_predicate(("k",), (decoded,))
    assert params == [INVALID_UTF8]  # bound as bytes, cast to TEXT in SQL
    assert conn.execute(f"SELECT v FROM t WHERE {where}", params).fetchone() == (1,)


def test_null_in_a_non_integer_pk_column_is_encodable_and_findable(tmp_path: Path) -> None:
    conn = _app(tmp_path, "CREATE TABLE t (a TEXT, b INT, v, PRIMARY KEY (a, b))")
    install.install_on(conn)
    conn.execute("INSERT INTO t VALUES (NULL, 1, 'n')")
    (values,) = _journaled_keys(conn)
    assert values == (None, 1)
    assert journal.encode_key(values) == "NULL,1"
    where, params = journal.key_predicate(("a", "b"), values)
    assert conn.execute(f"SELECT v FROM t WHERE {where}", params).fetchall() == [("n",)]


def test_affinity_is_applied_before_the_key_is_encoded(tmp_path: Path) -> None:
    """NEW in an AFTER trigger holds the stored value: '5' into an INTEGER PK column is integer 5."""
    conn = _app(tmp_path, "CREATE TABLE t (k INT PRIMARY KEY, s TEXT, v)")
    install.install_on(conn)
    conn.execute("INSERT INTO t VALUES ('5', 'x', 1)")
    assert _journaled_keys(conn) == [(5,)]


def test_composite_keys_of_mixed_classes(tmp_path: Path) -> None:
    conn = _app(tmp_path, "CREATE TABLE t (a, b, c, v, PRIMARY KEY (a, b, c)) WITHOUT ROWID")
    install.install_on(conn)
    rows: list[tuple[journal.KeyValue, ...]] = [
        (1, "x,y", b","),
        (0.1, "", b""),
        ("a\x00", 2**62, 1e308),
        (-5, "'", "T"),
    ]
    for row in rows:
        conn.execute("INSERT INTO t VALUES (?, ?, ?, 0)", row)
    assert _journaled_keys(conn) == rows
    assert [journal.decode_key(journal.encode_key(r)) for r in rows] == rows


def test_decode_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a journal key token"):
        journal.decode_key("hello")


_values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(max_size=64),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_values, min_size=1, max_size=4))
def test_canonical_encoding_round_trips_and_matches_sqlite_quote(values: list[journal.KeyValue]) -> None:
    """Property: decode(encode(k)) == k exactly; each token is SQLite's quote() except TEXT (hex)."""
    text = journal.encode_key(values)
    assert text.isascii()
    decoded = journal.decode_key(text)
    assert [type(v) for v in decoded] == [type(v) for v in values]
    assert decoded == tuple(values)
    conn = sqlite3.connect(":memory:")
    for value, token in zip(values, text.split(","), strict=True):
        if not isinstance(value, str):
            assert conn.execute("SELECT quote(?)", (value,)).fetchone()[0] == token


def test_a_real_key_that_python_parses_to_a_neighbour_decodes_as_sqlite_stored_it() -> None:
    """quote() keeps 15 digits when SQLite's own parser gets the value back from them; Python's
    correctly rounded float() would read the key of 5.6220172868976805e-301 as its neighbour."""
    value = 5.6220172868976805e-301
    token = journal.encode_value(value)
    assert token == "5.62201728689768e-301"
    assert float(token) != value
    assert journal.decode_value(token) == value


def test_a_real_key_that_sqlite_parses_to_a_neighbour_decodes_exactly() -> None:
    """The other way round: quote() writes 20 digits that SQLite's own parser misreads."""
    value = 3.8521434872836237e-292
    token = journal.encode_value(value)
    assert token == "3.85214348728362367601e-292"
    assert journal.decode_value(token) == value
