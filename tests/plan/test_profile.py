"""The column profiler: SQL-side classification checked against an independent Python oracle.

The oracle restates each FORMATS definition as a regular expression over the Python value, so a
mistake in the GLOB translation shows up as a count that differs. Values are written to real SQLite
files; nothing is mocked.
"""

from __future__ import annotations

import json
import re
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from replicator.plan import category, chunkscan, formatsql, profile, profiler, typemap
from replicator.plan.profile import TEMPORAL_FORMATS, ColumnProfile
from replicator.plan.profiler import profile_table
from tests.conftest import realworld_files
from tests.support.source import make_db
from triggers import source
from triggers.errors import SourceBusy
from triggers.schema import read_schema

Value = int | float | str | bytes | None

_YMD = r"[0-9]{4}-[01][0-9]-[0-3][0-9]"
_HMS = r"[0-2][0-9]:[0-5][0-9]:[0-6][0-9]"
_FRAC = r"(\.[0-9]+)?"
_ORACLE_TEXT = {
    "iso8601_tz": re.compile(rf"{_YMD}[T ]{_HMS}{_FRAC}(Z|[+-][0-2][0-9]:?[0-5][0-9])"),
    "iso8601": re.compile(rf"{_YMD}T{_HMS}{_FRAC}"),
    "sql_datetime": re.compile(rf"{_YMD} {_HMS}{_FRAC}"),
    "date": re.compile(_YMD),
    "uuid": re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
    "decimal_text": re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"),
    "uuid_hex32": re.compile(r"[0-9a-fA-F]{32}"),
}


def oracle(value: Value) -> set[str]:
    """The formats of one value, straight from the FORMATS comments, computed in Python."""
    found: set[str] = set()
    if isinstance(value, int):
        if profile.UNIX_S_MIN <= value <= profile.UNIX_S_MAX:
            found.add("unix_s")
        if profile.UNIX_MS_MIN <= value <= profile.UNIX_MS_MAX:
            found.add("unix_ms")
        if value in (0, 1):
            found.add("bool01")
    elif isinstance(value, float):
        if profile.UNIX_S_MIN <= value <= profile.UNIX_S_MAX:
            found.add("unix_s")
    elif isinstance(value, bytes):  # stored as TEXT with these exact bytes
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            found.add("invalid_utf8")
            if b"\x00" in value:
                found.add("nul_text")
            return found
        found |= oracle(value)
    elif isinstance(value, str):
        if "\x00" in value:
            return found | {"nul_text"}  # a text holding a NUL counts in no other format
        found |= {name for name, rx in _ORACLE_TEXT.items() if rx.fullmatch(value)}
        if value.encode().lower() in (b"t", b"f", b"true", b"false", b"yes", b"no"):
            found.add("bool_text")
        if value in ("0", "1"):
            found.add("bool01_text")
        if value[:1] in ("{", "["):
            try:
                json.loads(value)
                found.add("json_object" if value[0] == "{" else "json_array")
            except ValueError:
                pass
    return found


def storage_class(value: Value) -> str:
    return {int: "integer", float: "real", str: "text", bytes: "text", type(None): "null"}[type(value)]


def write_values(path: Path, values: list[Value]) -> None:
    """One untyped column (no affinity: values stay exactly as given); bytes become TEXT as-is."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t(v)")
    for value in values:
        if isinstance(value, bytes):
            conn.execute("INSERT INTO t VALUES (CAST(? AS TEXT))", (value,))
        else:
            conn.execute("INSERT INTO t VALUES (?)", (value,))
    conn.commit()
    conn.close()


def profile_values(path: Path, values: list[Value]) -> ColumnProfile:
    write_values(path, values)
    conn = source.connect(path)
    try:
        return profile_table(conn, read_schema(conn).table("t")).column("v")
    finally:
        conn.close()


def expected_formats(values: list[Value]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for value in values:
        counts.update(oracle(value))
    return dict(counts)


EDGE_CASES: list[Value] = [
    # instants and dates
    "2024-03-05 06:07:08",
    "2024-03-05 06:07:08.009000",
    "2024-03-05T06:07:08",
    "2024-03-05T06:07:08.9",
    "2024-03-05T06:07:08.009+00:00",
    "2024-03-05 06:07:08Z",
    "2024-03-05T06:07:08-0530",
    "2024-03-05T06:07:08+05",
    "2024-03-05T06:07:08.Z",
    "2024-03-05T06:07",
    "2024-03-05T06:07:08.",
    "2024-03-05T06:07:08 ",
    "2024-03-05",
    "2024-3-05",
    "2024-03-05x",
    "20240305",
    1709618828,
    1709618828009,
    1709618828.5,
    99_999_999,
    profile.UNIX_S_MAX,
    profile.UNIX_S_MAX + 1,
    profile.UNIX_MS_MIN,
    -2208988800000,
    # booleans
    0,
    1,
    2,
    0.0,
    1.0,
    "t",
    "F",
    "TRUE",
    "yes",
    "No",
    "y",
    "0",
    "1",
    "01",
    # json
    '{"a": [1, 2]}',
    "[1, 2, 3]",
    "{",
    "[1,",
    '{"a":1} trailing',
    "null",
    "42",
    # uuids
    "5d9025c9-39bc-4278-a565-8d168b7310ea",
    "5D9025C9-39BC-4278-A565-8D168B7310EA",
    "5d9025c939bc4278a5658d168b7310ea",
    "5d9025c9-39bc-4278-a565-8d168b7310e",
    "g d9025c9-39bc-4278-a565-8d168b7310ea",
    # decimals
    "12.50",
    "-3",
    "+.5",
    "5.",
    ".",
    "+",
    "1.2.3",
    "1e5",
    "--1",
    "1-2",
    " 1",
    "",
    # hostile text
    "a\x00b",
    "\x001",
    "1\x00",
    "2024-03-05\x00x",
    "1E5",
    "5e",
    "1.5 ",
    "\t1",
    "0x10",
    "-.",
    "00012",
    "9" * 400,
    "日本語",
    "tab\tand\nnewline",
    b"file\x96name.txt",
    b"caf\xe9",
    b"\xed\xa0\x80",
    b"\xc0\xaf",
    b"ok\x00\xff",
    "😀".encode(),
    None,
    None,
]


def test_edge_cases_match_the_oracle(tmp_path: Path) -> None:
    col = profile_values(tmp_path / "edge.db", EDGE_CASES)
    assert col.formats == expected_formats(EDGE_CASES)
    assert col.storage == dict(Counter(storage_class(v) for v in EDGE_CASES))
    # spot checks that the oracle itself is what the contract says
    assert oracle("2024-03-05T06:07:08.009+00:00") == {"iso8601_tz"}
    assert oracle(b"file\x96name.txt") == {"invalid_utf8"}
    assert oracle("1") == {"decimal_text", "bool01_text"}
    assert oracle(1) == {"bool01"}


_digits = st.integers(0, 9).map(str)


@st.composite
def datetime_like(draw: st.DrawFn) -> str:
    """Strings near the date-time grammar: valid shapes plus single-character damage."""
    text = f"{draw(st.integers(0, 9999)):04d}-{draw(st.integers(0, 19)):02d}-{draw(st.integers(0, 39)):02d}"
    if draw(st.booleans()):
        text += draw(st.sampled_from(["T", " ", "t", "_"]))
        text += "{:02d}:{:02d}:{:02d}".format(*(draw(st.integers(0, 69)) for _ in range(3)))
        text += draw(st.sampled_from(["", ".", ".0", ".123", ".123456789"]))
        text += draw(st.sampled_from(["", "Z", "z", "+00:00", "-05:30", "+0530", "+05", "+0:00", "+00:00x"]))
    if draw(st.booleans()) and text:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(st.sampled_from(["", "x", "-", " ", "9"])) + text[i + 1 :]
    return text


values_strategy = st.lists(
    st.one_of(
        st.none(),
        st.integers(-(2**63), 2**63 - 1),
        st.integers(profile.UNIX_S_MIN - 10, profile.UNIX_S_MAX + 10),
        st.integers(profile.UNIX_MS_MIN - 10, profile.UNIX_MS_MAX + 10),
        st.integers(-2, 3),
        st.floats(allow_nan=False),
        st.floats(profile.UNIX_S_MIN - 1, profile.UNIX_S_MAX + 1),
        datetime_like(),
        st.text(max_size=40),
        st.text(alphabet="0123456789abcdefABCDEF-.+{}[]", max_size=40),
        st.uuids().map(str),
        st.uuids().map(lambda u: u.hex),
        st.decimals(allow_nan=False, allow_infinity=False).map(str),
        st.sampled_from(["t", "f", "true", "false", "yes", "no", "0", "1", "TRUE", "Yes"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        ).map(json.dumps),
        st.binary(max_size=12),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=values_strategy)
@example(values=["0.000001444538970879085199963855"])  # 32 characters of decimal text are not 32 hex digits
def test_profile_matches_the_oracle_on_generated_values(values: list[Value]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        col = profile_values(Path(tmp) / "gen.db", values)
    assert col.formats == expected_formats(values)
    assert col.storage == dict(Counter(storage_class(v) for v in values))
    ints = [v for v in values if isinstance(v, int)]
    assert (col.min_integer, col.max_integer) == ((min(ints), max(ints)) if ints else (None, None))
    temporal = sum(1 for v in values if oracle(v) & set(TEMPORAL_FORMATS))
    assert col.temporal == temporal  # the temporal formats never overlap


def test_sizes_count_bytes_not_characters(tmp_path: Path) -> None:
    path = tmp_path / "sizes.db"
    insert = "INSERT INTO t(s, b, n) VALUES (?, ?, ?)"
    make_db(
        path,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, b BLOB, n INTEGER)",
        (insert, ("日本", b"\x00" * 1000, -(2**63))),
        (insert, ("abc", b"x", 2**63 - 1)),
        (insert, (None, None, None)),
    )
    ro = source.connect(path)
    prof = profile_table(ro, "t")
    assert prof.rows == 3
    assert prof.column("s").max_text_bytes == 6
    assert prof.column("b").max_blob_bytes == 1000
    assert prof.column("b").storage == {"blob": 2, "null": 1}
    assert (prof.column("n").min_integer, prof.column("n").max_integer) == (-(2**63), 2**63 - 1)
    assert prof.column("id").min_integer == 1


def test_null_primary_key_rows_are_counted(tmp_path: Path) -> None:
    """Trap d8: SQLite accepts NULL in a composite (or non-INTEGER) primary key."""
    path = tmp_path / "nullpk.db"
    rows = [("x", 1, 0), (None, 1, 0), ("y", None, 0), (None, None, 0)]
    make_db(
        path,
        "CREATE TABLE t(a TEXT, b INT, v, PRIMARY KEY (a, b))",
        *(("INSERT INTO t VALUES (?, ?, ?)", r) for r in rows),
    )
    prof = profile_table(source.connect(path), "t")
    assert prof.rows == 4
    assert prof.null_key_rows == 3


def test_awkward_names_generated_columns_and_without_rowid(tmp_path: Path) -> None:
    path = tmp_path / "names.db"
    make_db(
        path,
        """
        CREATE TABLE "Order ""Details"" @c" ("@c" INTEGER PRIMARY KEY, "select" TEXT, "x y" REAL,
            g INTEGER GENERATED ALWAYS AS ("@c" * 2) VIRTUAL) ;
        INSERT INTO "Order ""Details"" @c" ("@c", "select", "x y") VALUES (1, '2024-01-01', 1.5), (2, 'no', NULL);
        CREATE TABLE kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
        INSERT INTO kv VALUES ('a', '{"x": 1}'), ('b', '[1]');
        """,
    )
    ro = source.connect(path)
    schema = read_schema(ro)
    odd = profile_table(ro, schema.table('Order "Details" @c'))
    assert [c.name for c in odd.columns] == ["@c", "select", "x y", "g"]
    assert odd.column("select").formats == {"date": 1, "bool_text": 1}
    assert odd.column("g").storage == {"integer": 2}
    assert (odd.column("g").min_integer, odd.column("g").max_integer) == (2, 4)
    assert odd.column("x y").storage == {"real": 1, "null": 1}
    kv = profile_table(ro, schema.table("kv"))
    assert kv.column("v").formats == {"json_object": 1, "json_array": 1}


def test_wide_table_takes_several_scans_and_keeps_column_order(tmp_path: Path) -> None:
    width = formatsql.COLUMNS_PER_SCAN * 2 + 5
    path = tmp_path / "wide.db"
    cols = ", ".join(f"c{i} INTEGER" for i in range(width))
    insert = f"INSERT INTO w VALUES (NULL, {', '.join('?' * width)})"
    make_db(
        path,
        f"CREATE TABLE w(id INTEGER PRIMARY KEY, {cols})",
        *((insert, tuple(range(r, r + width))) for r in range(3)),
    )
    prof = profile_table(source.connect(path), "w")
    assert len(prof.columns) == width + 1
    assert [c.name for c in prof.columns[1:]] == [f"c{i}" for i in range(width)]
    for i, col in enumerate(prof.columns[1:]):
        assert (col.min_integer, col.max_integer) == (i, i + 2)
    assert prof.rows == 3


def test_empty_table(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    make_db(path, "CREATE TABLE e(id INTEGER PRIMARY KEY, v TEXT)")
    prof = profile_table(source.connect(path), "e")
    assert prof.rows == 0
    assert prof.column("v") == ColumnProfile(name="v", storage={}, formats={})


def test_locked_source_is_reported_as_busy(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t(v)")
    writer.execute("INSERT INTO t VALUES (1)")
    reader = source.connect(path, busy_timeout_ms=50)
    schema = read_schema(reader)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(SourceBusy, match="locked"):
            profile_table(reader, schema.table("t"))
    finally:
        writer.execute("ROLLBACK")
    assert profile_table(reader, schema.table("t")).rows == 1


# --- real files: facts recorded in shared/research/realworld.md, checked against a plain SQL count ----


def _typeof_counts(path: Path, table: str, column: str) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    q = f'SELECT typeof("{column}"), count(*) FROM "{table}" GROUP BY 1'
    return dict(conn.execute(q).fetchall())


@pytest.mark.parametrize(
    ("file", "table", "column", "fmt", "expected"),
    [
        ("chinook/Chinook_Sqlite.sqlite", "Invoice", "InvoiceDate", "sql_datetime", 412),
        ("northwind/northwind.db", "Products", "Discontinued", "bool01_text", 77),
        ("northwind/northwind.db", "Orders", "OrderDate", "date", 830),
        ("orm-samples/prisma7_small_iso8601.db", "Account", "createdAt", "iso8601_tz", None),
        ("orm-samples/prisma7_small_unixms.db", "Account", "createdAt", "unix_ms", None),
        ("orm-samples/django52_sample.db", "app_thing", "uid", "uuid_hex32", None),
    ],
)
def test_real_files(realworld: Path, file: str, table: str, column: str, fmt: str, expected: int | None) -> None:
    path = realworld / file
    conn = source.connect(path)
    col = profile_table(conn, table).column(column)
    assert col.storage == _typeof_counts(path, table, column)
    if expected is None:  # ORM probes: every non-null value has the ORM's format
        assert col.non_null > 0
        assert col.formats.get(fmt) == col.non_null
    else:
        assert col.formats.get(fmt) == expected


def test_real_mixed_numeric_and_type_mismatch(realworld: Path) -> None:
    northwind = profile_table(source.connect(realworld / "northwind/northwind.db"), "Order Details")
    assert northwind.column("UnitPrice").storage == {"integer": 943, "real": 1212}
    mismatch = profile_table(source.connect(realworld / "pgloader-tests/type-mismatch.db"), "products")
    assert mismatch.column("qty").storage.get("text") == 1
    # pgloader's bad-utf8.db: the undecodable file name is stored as a BLOB in a TEXT column, not as TEXT
    bad = profile_table(source.connect(realworld / "pgloader-tests/bad-utf8.db"), "files").column("filename")
    assert bad.storage == {"text": 2, "blob": 1}
    assert "invalid_utf8" not in bad.formats
    chinook = profile_table(source.connect(realworld / "chinook/Chinook_Sqlite.sqlite"), "Invoice")
    assert chinook.column("Total").storage == {"real": 412}


# --- the chunked scan: chunk boundaries, the bulk text path and its per-value fallback ---------------


def _stored(path: Path, column: str) -> list[Value]:
    """The values as SQLite holds them (affinity applied), read back as the oracle needs them."""
    conn = sqlite3.connect(path)
    conn.text_factory = bytes
    out: list[Value] = []
    for value, kind in conn.execute(f'SELECT "{column}", typeof("{column}") FROM t ORDER BY rowid'):
        if kind == "blob":
            out.append(None)  # counted apart below
        elif kind == "text":
            try:
                out.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(value)
        else:
            out.append(value)
    conn.close()
    return out


def _check_against_oracle(path: Path, prof: profile.TableProfile, column: str) -> None:
    values = _stored(path, column)
    blobs = _count(path, f"SELECT count(*) FROM t WHERE typeof(\"{column}\") = 'blob'")
    col = prof.column(column)
    assert col.formats == expected_formats(values), column
    storage = Counter(storage_class(v) for v in values)
    storage["null"] -= blobs
    if blobs:
        storage["blob"] = blobs
    assert col.storage == {k: v for k, v in storage.items() if v}, column
    texts = [v.encode() if isinstance(v, str) else v for v in values if isinstance(v, str | bytes)]
    assert col.max_text_bytes == (max(map(len, texts)) if texts else None), column
    ints = [v for v in values if isinstance(v, int)]
    assert (col.min_integer, col.max_integer) == ((min(ints), max(ints)) if ints else (None, None)), column


def _count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


MIXED_COLUMNS = "id INTEGER PRIMARY KEY, body TEXT, day DATE, qty INTEGER, anything, price REAL, pic BLOB"


def _mixed_rows(n: int, seed: int) -> list[tuple[object, ...]]:
    import random

    rnd = random.Random(seed)
    texts = [v for v in EDGE_CASES if isinstance(v, str | bytes)]
    rows: list[tuple[object, ...]] = []
    for i in range(1, n + 1):
        rows.append(
            (
                i * 7 if i % 50 else i * 10**9,  # sparse rowids, and gaps far wider than a chunk
                rnd.choice(texts) if i % 4 else json.dumps({"i": i}),
                rnd.choice(["2024-03-05", "2024-03-05 06:07:08", 1709618828, None, "someday", b"\xff"]),
                rnd.choice([1, 0, 1709618828009, "lots", None, 2.5]),
                rnd.choice([*texts, 1, 1.5, None, b"\x00\x01".decode("latin-1")]),
                rnd.choice([1.5, 1709618828.5, None, "x"]),
                rnd.choice([b"\x00\xff", None]) if i % 3 else "text in a blob column",
            )
        )
    return rows


@pytest.mark.parametrize("chunk_bytes", [16 * 2**20, 4096])
def test_chunked_scan_matches_the_oracle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    """Many chunks or one: the same counts; chunks with NUL or invalid UTF-8 take the per-value path."""
    monkeypatch.setattr(chunkscan, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(chunkscan, "MIN_CHUNK_ROWS", 16)
    path = tmp_path / "mixed.db"
    rows = _mixed_rows(600, seed=chunk_bytes)
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE t ({MIXED_COLUMNS})")
    for row in rows:
        cells = ", ".join("CAST(? AS TEXT)" if isinstance(v, bytes) and j != 6 else "?" for j, v in enumerate(row))
        conn.execute(f"INSERT INTO t VALUES ({cells})", row)
    conn.commit()
    conn.close()
    ro = source.connect(path)
    table = read_schema(ro).table("t")
    parts = chunkscan.chunks(ro, table)
    assert (len(parts) > 1) == (chunk_bytes == 4096)
    prof = profile_table(ro, table)
    assert prof.rows == len(rows)
    for column in ("body", "day", "qty", "anything", "price"):
        _check_against_oracle(path, prof, column)
    pic = prof.column("pic")
    assert pic.storage == {
        k: v
        for k, v in {
            "blob": _count(path, "SELECT count(*) FROM t WHERE typeof(pic) = 'blob'"),
            "text": _count(path, "SELECT count(*) FROM t WHERE typeof(pic) = 'text'"),
            "null": _count(path, "SELECT count(*) FROM t WHERE pic IS NULL"),
        }.items()
        if v
    }
    assert pic.max_blob_bytes == 2
    assert pic.max_text_bytes == len("text in a blob column")
    # the aggregate-per-format scan, an independent implementation, agrees on the counts
    legacy = profiler.legacy_profile_table(ro, table)
    for col in prof.columns:
        assert col.storage == legacy.column(col.name).storage, col.name


def test_rowid_shadowed_and_without_rowid_tables_are_one_chunk(tmp_path: Path) -> None:
    path = tmp_path / "shadow.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE s (rowid TEXT, _rowid_ TEXT, oid TEXT, v);
        INSERT INTO s VALUES ('a', 'b', 'c', '2024-03-05'), ('d', 'e', 'f', '{"a": 1}'), ('g', 'h', 'i', 5);
        CREATE TABLE w (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
        INSERT INTO w VALUES ('x', 'true'), ('y', '550e8400-e29b-41d4-a716-446655440000');
        """
    )
    conn.close()
    ro = source.connect(path)
    schema = read_schema(ro)
    for name in ("s", "w"):
        assert chunkscan.chunks(ro, schema.table(name)) == [chunkscan.Chunk(name)]
    assert profile_table(ro, "s").column("v").formats == {"date": 1, "json_object": 1}
    assert profile_table(ro, "w").column("v").formats == {"bool_text": 1, "uuid": 1}
    assert profile_table(ro, "w").column("k").max_text_bytes == 1


def test_whole_column_shortcut_and_mixed_column_agree(tmp_path: Path) -> None:
    """A column of one format is proven by one regex; one odd value sends it to per-value classification."""
    path = tmp_path / "dates.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
    days = [f"2024-{m:02d}-{d:02d} 10:11:12" for m in range(1, 13) for d in range(1, 29)]
    conn.executemany("INSERT INTO t (a, b) VALUES (?, ?)", [(d, d) for d in days])
    conn.execute("UPDATE t SET b = '2024-01-01 10:11:12+02:00' WHERE id = 200")
    conn.commit()
    conn.close()
    prof = profile_table(source.connect(path), "t")
    assert prof.column("a").formats == {"sql_datetime": len(days)}
    assert prof.column("b").formats == {"sql_datetime": len(days) - 1, "iso8601_tz": 1}


def test_table_wider_than_one_statement(tmp_path: Path) -> None:
    """700 TEXT columns need more result columns than SQLite allows in one SELECT: several statements."""
    width = 700
    path = tmp_path / "widetext.db"
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE w (id INTEGER PRIMARY KEY, {', '.join(f'c{i} TEXT' for i in range(width))})")
    rows = [(None, *(["2024-03-05", "x", '{"a": 1}', None][(r + i) % 4] for i in range(width))) for r in range(5)]
    conn.executemany(f"INSERT INTO w VALUES ({', '.join('?' * (width + 1))})", rows)
    conn.commit()
    conn.close()
    ro = source.connect(path)
    table = read_schema(ro).table("w")
    assert len(chunkscan.column_groups(table)) > 1
    prof = profile_table(ro, table)
    assert prof.rows == 5
    for i in range(width):
        expected = Counter(["date", "plain", "json_object", "null"][(r + i) % 4] for r in range(5))
        col = prof.column(f"c{i}")
        assert col.formats == {k: v for k, v in expected.items() if k in ("date", "json_object")}
        assert col.storage == {k: v for k, v in {"text": 5 - expected["null"], "null": expected["null"]}.items() if v}


@pytest.mark.parametrize(
    "odd",
    ["TRUE", "no", "5d9025c939bc4278a5658d168b7310ea", "5d9025c9-39bc-4278-a565-8d168b7310ea", "-1.5", "[1]", "7"],
)
def test_plain_text_column_with_one_formatted_value(tmp_path: Path, odd: str) -> None:
    """The one-search proof that a column is plain text must not miss a single formatted value."""
    path = tmp_path / "plain.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    plain = ["alpha beta", "Bravo", "délta", "yes sir", "f x", "deadbeef", "a" * 33, ""]
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in [*plain * 20, odd]])
    conn.commit()
    conn.close()
    col = profile_table(source.connect(path), "t").column("v")
    assert col.formats == expected_formats([*plain * 20, odd])
    assert col.formats


def test_nul_text_beside_a_blob_in_a_text_column(tmp_path: Path) -> None:
    """A blob's length could make up for the characters a NUL hides from length(): still nul_text."""
    path = tmp_path / "nulblob.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t (v) VALUES ('a' || char(0) || 'b'), (x'0102'), ('plain')")
    conn.commit()
    conn.close()
    col = profile_table(source.connect(path), "t").column("v")
    assert col.formats == {"nul_text": 1}
    assert col.storage == {"text": 2, "blob": 1}


def test_unranged_chunk_beyond_the_packed_counts(tmp_path: Path) -> None:
    """A WITHOUT ROWID table is one chunk: past 65535 rows its JSON counts come from the per-value path."""
    path = tmp_path / "big_without_rowid.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, doc TEXT, tag TEXT) WITHOUT ROWID")
    n = category.MAX_CHUNK_ROWS + 10
    conn.executemany(
        "INSERT INTO t VALUES (?, ?, ?)", [(i, f'{{"i": {i}}}' if i % 7 else "[1, 2", "t") for i in range(n)]
    )
    conn.commit()
    conn.close()
    prof = profile_table(source.connect(path), "t")
    invalid = len(range(0, n, 7))
    assert prof.column("doc").formats == {"json_object": n - invalid}
    assert prof.column("doc").storage == {"text": n}
    assert prof.column("tag").formats == {"bool_text": n}


# --- the snapshot's storage-class-only profile ------------------------------------------------------


def _plan_types(plan: Any) -> dict[tuple[str, str], Any]:
    return {(t.source, c.name): (c.type, c.identity) for t in plan.tables for c in t.columns}


@pytest.mark.parametrize("path", realworld_files(), ids=lambda p: p.name)
def test_plain_columns_choose_the_same_types_as_the_full_profile(path: Path) -> None:
    """Skipping the formats of TEXT/BLOB/JSON/untyped columns (the snapshot, create mode) must not
    change one type choice: every real-world file planned both ways gives the same columns."""
    from replicator import config
    from replicator.load import snapshot
    from replicator.plan import createmode

    cfg = config.load(None, environ={})
    conn = snapshot.open_source(path, cfg)
    try:
        full = snapshot.read_source(conn)
        plain = snapshot.read_source(conn, cfg, guess=False)  # the guesses: test_snapshot_realworld
    finally:
        conn.close()
    plain_of = {
        (t, c): classes
        for t in plain.profiles
        for c, classes in snapshot.plain_columns(full.schema.table(t), cfg).items()
    }
    skipped = set(plain_of)
    assert (
        skipped
        or not full.schema.tables
        or all(not typemap.plain_classes(c) for t in full.schema.tables for c in t.columns)
    )
    for name, prof in full.profiles.items():
        for col in prof.columns:
            lite = plain.profiles[name].column(col.name)
            assert lite.storage == col.storage, (name, col.name)  # the storage classes are always exact
            storage_only = plain_of.get((name, col.name)) == profile.STORAGE_ONLY
            extremes = (col.min_integer, col.max_integer) if not storage_only else (None, None)
            assert (lite.min_integer, lite.max_integer) == extremes, (name, col.name)
            if (name, col.name) not in skipped:
                assert lite == col, (name, col.name)
    assert _planned(createmode, plain, cfg) == _planned(createmode, full, cfg)


def _planned(createmode: Any, read: Any, cfg: Any) -> Any:
    try:
        return _plan_types(createmode.plan_create(read.schema, read.profiles, cfg))
    except Exception as exc:  # collision.db is refused: both ways alike
        return str(exc)


def test_plain_text_column_still_counts_every_storage_class(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT, raw BLOB, any_)")
    rows = [(i, "2024-01-01" if i % 3 else i, b"x" if i % 2 else "t", 1.5 if i % 5 else None) for i in range(2000)]
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    table = read_schema(conn).table("t")
    full = profile_table(conn, table)
    lite = profile_table(conn, table, plain=dict.fromkeys(("body", "raw", "any_"), profile.STORAGE_ONLY))
    conn.close()
    for name in ("body", "raw", "any_"):
        assert lite.column(name).storage == full.column(name).storage
        assert lite.column(name).formats == {}
    assert full.column("body").formats.get("date") == sum(1 for r in rows if r[1] == "2024-01-01")
    assert lite.column("id") == full.column("id")


def test_numbers_only_keeps_the_formats_of_text_in_a_number_column(tmp_path: Path) -> None:
    path = tmp_path / "n.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, "yes" if i == 7 else 1_700_000_000 + i) for i in range(500)])
    conn.commit()
    table = read_schema(conn).table("t")
    full = profile_table(conn, table)
    lite = profile_table(conn, table, plain={"n": profile.NUMBERS_ONLY})
    conn.close()
    assert full.column("n").formats["unix_s"] == 499
    assert "unix_s" not in lite.column("n").formats  # the integers' formats are not measured...
    assert lite.column("n").formats["bool_text"] == 1  # ...but the text's are
    assert lite.column("n").storage == full.column("n").storage
    assert lite.column("id") == full.column("id")
