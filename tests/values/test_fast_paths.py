"""The per-row fast paths of the load give exactly what the slow paths give.

``readback.row_digester`` (the finisher and the encoder in one pass) must give the bytes of
``RowEncoder(digest_kinds).encode(digest_finisher(row))`` for every converted row, or the snapshot's
checksums would stop matching verify's and the apply's. The row converter's inlined ISO-text path
for timestamp and date columns must convert, or refuse, every text as the column's converter does.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.types.json import Json, Jsonb

from checkpoints.digest import RowEncoder
from replicator.values import convert_datetimes, convert_json, fastpath, readback
from replicator.values.convert import row_converter, value_converter
from replicator.values.convert_json import _identity
from replicator.values.readback import digest_finisher, digest_kinds, row_digester
from replicator.values.refusal import RowRefused, ValueRefused
from replicator.values.targettype import TargetType, parse_type

# -- row_digester against the finisher + encoder ------------------------------------------------------------------

DIGEST_TYPES = [
    parse_type(n)
    for n in ("bigint", "json", "jsonb", "real", "char(3)", "text", "numeric", "double precision", "timestamp", "bytea")
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=15,
)
#: Texts the digest must read as JSON does: duplicate keys, numbers spelled several ways, escapes
#: (a lone surrogate among them, which msgspec refuses), the document null, deep nesting.
TRICKY_JSON = [
    "null",
    " null ",
    '"null"',
    '{"b": 1, "a": 2, "a": 3}',
    "[1.0, 1, 1e2, 1E+2, -0.0, 0.1000000000000000000001, 5e-324, 1e400]",
    '{"\\u00e9": "\\ud800", "e\\u0301": "\\udc80"}',
    "12345678901234567890123456789",
    '{"n": -9223372036854775809, "m": 18446744073709551616}',
    "[" * 300 + "]" * 300,
    '"\\u0000 in json"',
    '{"k": "tab\\there", "z": {"y": [], "x": {}}}',
]


def _rows(docs: Sequence[str], wire: bool) -> list[tuple[Any, ...]]:
    """Converted rows, one per document, with values of every other type beside it."""
    convert = row_converter("t", [f"c{i}" for i in range(len(DIGEST_TYPES))], DIGEST_TYPES, wire=wire)
    rows = [convert((None,) * len(DIGEST_TYPES))]
    for n, doc in enumerate(docs):
        source = (n, "[]", "[]", 0.5 * n, "ab", "é\x7f", "1.50", -0.0, f"2024-01-0{n % 9 + 1} 10:00:00", b"\x00")
        row = list(convert(source))
        # the converted document as the converter gives it, also where it refuses the text (a lone
        # surrogate escape, which msgspec cannot read, or jsonb's \u0000): the digest reads any text
        row[1:3] = [doc, "\x01" + doc] if wire else [Json(doc, _identity), Jsonb(doc, _identity)]
        rows.append(tuple(row))
    return rows


def _disagreements(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    finish, encode = digest_finisher(DIGEST_TYPES), RowEncoder(digest_kinds(DIGEST_TYPES)).encode
    assert finish is not None
    fused = row_digester(DIGEST_TYPES)
    return [row for row in rows if fused(row) != encode(finish(row))]


@pytest.mark.parametrize("wire", [False, True], ids=["values", "wire"])
def test_row_digester_gives_the_finisher_and_encoders_bytes_on_tricky_documents(wire: bool) -> None:
    assert _disagreements(_rows(TRICKY_JSON, wire)) == []


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans(), st.booleans())
def test_row_digester_gives_the_finisher_and_encoders_bytes(value: Any, spaced: bool, wire: bool) -> None:
    text = json.dumps(value, ensure_ascii=spaced, separators=(", ", ": ") if spaced else (",", ":"))
    assert _disagreements(_rows([text], wire)) == []


def test_a_planted_difference_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: a digester whose JSON text keeps the source's key order disagrees."""

    def unsorted(text: str | bytes) -> str:
        return msgspec.json.encode(msgspec.json.decode(text)).decode()

    monkeypatch.setattr(readback, "canonical_json_text", unsorted)
    found = _disagreements(_rows(['{"b": 1, "a": 2}', "[1, 2]"], wire=False))
    assert len(found) == 1  # the object; the array's text is the same either way
    assert found[0][1].obj == '{"b": 1, "a": 2}'


def test_a_table_without_json_is_hashed_as_converted() -> None:
    types = [parse_type("bigint"), parse_type("text")]
    assert row_digester(types)((1, "x")) == RowEncoder(digest_kinds(types)).encode((1, "x"))


# -- the digesting converter: JSON validated by the C pass whose text the digest then takes ----------------------------

#: What a JSON column may hold, valid or not: each must be converted, refused and digested as without the C pass.
CONVERTER_INPUTS: list[object] = [
    *TRICKY_JSON,
    *("not json", '{"a": 1} x', "[1,]", "", "   ", '{"a":\x00 1}', '"raw \x00 nul"', '"\x01"', "\ud800"),
    *('"lone \udc80"', '{"é": "naïve ☃ 𝄞"}', "  [1, 2]  ", '"\\u0000 kept"', '{"z": "\\\u0000"}'),
    *("[1.00000000000000001, 0.30000000000000004]", '{"a": {"c": 1, "b": [true, false, null]}, "A": 0}'),
    *("[" * 30_000 + "]" * 30_000, '{"d": ' + "[" * 3_000 + "]" * 3_000 + "}", '"' + "x" * 50_000 + '"'),
    *(7, -0.0, 2.5, 1e300, float("nan"), float("inf"), b'{"b": 1, "a": 2}', b"\xff\xfe", b"[1, 2]"),
]
JSON_TYPES = [parse_type("json"), parse_type("jsonb"), msgspec.structs.replace(parse_type("jsonb"), strip_nul=True)]


def _json_outcome(convert: Callable[[tuple[Any, ...]], tuple[Any, ...]], value: object) -> tuple[str, object]:
    try:
        (out,) = convert((value,))
    except RowRefused as exc:
        return ("refused", exc.reason)
    return ("value", out.obj if isinstance(out, Json | Jsonb) else out)


def _converter_disagreements(t: TargetType, wire: bool) -> list[object]:
    """Inputs the digesting converter converts, refuses or digests otherwise than the plain converter does;
    the reference digest is the finisher's and encoder's, which never read ``convert_json.CANONICAL``."""
    plain = row_converter("t", ["c"], [t], wire=wire)
    digesting = row_converter("t", ["c"], [t], wire=wire, digest=True)
    finish, encode, fused = digest_finisher([t]), RowEncoder(digest_kinds([t])).encode, row_digester([t])
    assert finish is not None
    wrong: list[object] = []
    for value in CONVERTER_INPUTS:
        expected = _json_outcome(plain, value)
        same = _json_outcome(digesting, value) == expected
        if not same or (expected[0] == "value" and fused(digesting((value,))) != encode(finish(plain((value,))))):
            wrong.append(value)
    return wrong


@pytest.mark.parametrize("wire", [False, True], ids=["values", "wire"])
@pytest.mark.parametrize("t", JSON_TYPES, ids=["json", "jsonb", "jsonb-strip-nul"])
def test_the_digesting_converter_converts_refuses_and_digests_as_the_plain_one(t: TargetType, wire: bool) -> None:
    assert _converter_disagreements(t, wire) == []


@pytest.mark.skipif(convert_json._c_canonical is None, reason="the C pass is not built (a test elsewhere says so)")
def test_the_digest_takes_the_text_the_converter_validated() -> None:
    """The optimisation is in force: the converter leaves its C pass's text, the digest takes it."""
    t = parse_type("json")
    (value,) = row_converter("t", ["c"], [t], digest=True)(('{"b": 1, "a": 2}',))
    assert convert_json.CANONICAL[id(value)] == (value, '{"a":2,"b":1}')
    row_digester([t])((value,))
    assert id(value) not in convert_json.CANONICAL


def test_the_converters_texts_are_bounded_when_no_digest_follows() -> None:
    convert = row_converter("t", ["c"], [parse_type("json")], digest=True)
    for n in range(1_000):
        convert((f'{{"n": {n}}}',))  # refused rows and blocked rows are converted and never digested
    assert len(convert_json.CANONICAL) <= 64


@pytest.mark.skipif(convert_json._c_canonical is None, reason="the C pass is not built (a test elsewhere says so)")
@pytest.mark.parametrize(
    ("planted", "caught"),
    [
        (lambda text: text if isinstance(text, str) else None, '{"b": 1, "a": 2, "a": 3}'),  # the source's text
        (lambda text: "[]", "not json"),  # accepts what is not JSON
    ],
    ids=["unsorted-text", "accepts-anything"],
)
def test_a_planted_c_pass_is_caught(
    monkeypatch: pytest.MonkeyPatch, planted: Callable[[object], Any], caught: str
) -> None:
    """Negative controls: a validating pass that writes the wrong text, or takes what is not JSON, disagrees."""
    monkeypatch.setattr(convert_json, "_c_canonical", planted)
    assert caught in _converter_disagreements(parse_type("json"), wire=False)


# -- the inlined ISO text path of timestamp and date columns --------------------------------------------------------

DATETIME_TYPES = [
    parse_type(n) for n in ("timestamp", "timestamptz", "timestamp(6)", "timestamp(3)", "timestamptz(0)", "date")
]

_digits = st.text(alphabet="0123456789", min_size=1, max_size=1)


@st.composite
def datetime_texts(draw: Callable[..., Any]) -> str:
    """Texts of the fast layouts with any digits (February 30th, hour 24, month 13, second 60...), and
    some that only look alike (offsets, other separators, non-ASCII digits)."""
    layout = draw(
        st.sampled_from(
            [
                "dddd-dd-dd",
                "dddd-dd-dd dd:dd",
                "dddd-dd-dd dd:dd:dd",
                "dddd-dd-ddTdd:dd:dd.dddddd",
                "dddd-dd-dd dd:dd:dd.ddd",
                "dddd-dd-dd dd:dd:dd,dd",
                "dddd-dd-ddtdd:dd:dd",
                "dddd-dd-dd dd:dd:dd+dd:dd",
                "dddd-dd-dd dd:dd:ddZ",
                "dddd-dd-dd dd:dd:dd.ddddddddd",
                "dddd/dd/dd",
                "dddd-dd-dd\u00a0dd:dd",
            ]
        )
    )
    realistic = draw(st.booleans())
    sample = "2024-02-29 23:59:59.123456789+01:00"  # a valid date-time to take digits from
    out = []
    for n, c in enumerate(layout):
        if c != "d":
            out.append(c)
        else:
            out.append(sample[n] if realistic and n < len(sample) and sample[n].isdigit() else draw(_digits))
    text = "".join(out)
    return text.replace("1", "١") if draw(st.integers(0, 20)) == 0 else text  # an Arabic-Indic digit


def _outcome(call: Callable[[object], object], value: object) -> str:
    try:
        return repr(call(value))
    except (ValueRefused, RowRefused) as exc:
        return f"refused: {exc.reason}"


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(range(len(DATETIME_TYPES))), datetime_texts(), st.booleans())
def test_the_inlined_text_path_agrees_with_the_converter(index: int, text: str, wire: bool) -> None:
    t = DATETIME_TYPES[index]
    single = value_converter(t, wire=wire)
    row = row_converter("t", ["c", "d"], [t, parse_type("bigint")], wire=wire)
    assert _outcome(lambda v: row((v, 7))[0], text) == _outcome(single, text)


def test_the_text_path_is_inlined(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(text: str, aware: bool) -> datetime:
        raise AssertionError("the converter ran")

    monkeypatch.setattr(convert_datetimes, "parse_instant_text", slow)
    types: list[TargetType] = [parse_type("timestamp"), parse_type("timestamptz"), parse_type("date")]
    row = row_converter("t", ["a", "b", "c"], types)
    a, b, c = row(("2024-03-05 06:07:08.123456", "2024-03-05T06:07:08", "2024-03-05"))
    assert a == datetime.fromisoformat("2024-03-05 06:07:08.123456")
    assert b == datetime.fromisoformat("2024-03-05T06:07:08+00:00")
    assert str(c) == "2024-03-05"


def test_a_date_fromisoformat_refuses_is_refused_by_name_in_its_column() -> None:
    types = [parse_type("bigint"), parse_type("timestamp"), parse_type("date")]
    row = row_converter("t", ["id", "at", "day"], types)
    with pytest.raises(RowRefused) as refused:
        row((1, "2024-02-28 10:00:00", "2024-02-30"))
    assert (refused.value.column, refused.value.value) == ("day", "2024-02-30")
    with pytest.raises(RowRefused) as refused:
        row((1, "2024-02-28 24:00:00", "2024-02-28"))
    assert refused.value.column == "at"


NUMERIC_TYPES = [parse_type("numeric"), parse_type("text"), parse_type("bigint"), parse_type("numeric(10,2)")]
TRICKY_DECIMALS = [
    decimal.Decimal("1.50"),
    decimal.Decimal("100.00"),
    decimal.Decimal("-0"),
    decimal.Decimal("-0.000"),
    decimal.Decimal("15E-1"),
    decimal.Decimal("1E+30"),
    decimal.Decimal(2**64),
    decimal.Decimal(-(2**63) - 1),
    decimal.Decimal("NaN"),
    decimal.Decimal("sNaN"),
    decimal.Decimal("Infinity"),
    decimal.Decimal("-Infinity"),
    2**70,
    -5,
    True,
]


def _numeric_disagreements(values: Sequence[Any], text: str = "x") -> list[tuple[Any, ...]]:
    encode = RowEncoder(digest_kinds(NUMERIC_TYPES)).encode  # numeric is an "auto" column: every value mapped
    fused = row_digester(NUMERIC_TYPES)
    rows = [(v, text, 7, v) for v in values] + [(None, None, None, None)]
    return [row for row in rows if fused(row) != encode(row)]


def test_numeric_columns_are_mapped_alone_with_the_auto_paths_bytes() -> None:
    """A numeric column is mapped by itself (checkpoints.digest.canonical_value) and the row encoded in one
    call; the bytes are the auto path's, which maps every value of the row. A lone surrogate in the text
    column sends the row down the per-value fallback after the numeric column was mapped."""
    assert _numeric_disagreements(TRICKY_DECIMALS) == []
    assert _numeric_disagreements(TRICKY_DECIMALS, text="\udc80 lone") == []


@settings(max_examples=300, deadline=None)
@given(st.decimals(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(2**90), max_value=2**90))
def test_numeric_columns_give_the_auto_paths_bytes(value: Any) -> None:
    assert _numeric_disagreements([value]) == []


def test_a_planted_numeric_difference_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: a mapping that writes every number as its text disagrees on integral values
    (100.00 is the int 100) and agrees on the rest (1.5's exact text is its text)."""
    monkeypatch.setattr(readback, "canonical_value", str)
    found = _numeric_disagreements([decimal.Decimal("100.00"), decimal.Decimal("2"), decimal.Decimal("1.5")])
    assert [row[0] for row in found] == [decimal.Decimal("100.00"), decimal.Decimal("2")]


# -- strict_text: the UTF-8 check of the text fast path skipped for rows of a strict read ---------------------------

TEXT_TYPES = [parse_type("text"), parse_type("varchar(2000)"), parse_type("citext"), parse_type("bigint")]


def _counting_utf8_ok(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the fast path's UTF-8 check by one that records each text it is asked about."""
    calls: list[str] = []

    def counted(s: str) -> bool:
        calls.append(s)
        return fastpath.utf8_ok(s)

    monkeypatch.setitem(fastpath.INLINE_NAMES, "_utf8_ok", counted)
    return calls


def test_a_strict_converter_skips_the_utf8_check_a_default_one_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting_utf8_ok(monkeypatch)
    row = ("café " * 300, "naïve", "Ünïcode", 7)
    default = row_converter("t", ["a", "b", "c", "d"], TEXT_TYPES)
    strict = row_converter("t", ["a", "b", "c", "d"], TEXT_TYPES, strict_text=True)
    assert default(row) == row
    assert calls == list(row[:3])  # every non-ASCII text checked, once
    calls.clear()
    assert strict(row) == row
    assert strict(("ascii", "x", "y", 1)) == ("ascii", "x", "y", 1)
    assert calls == []
    # The rest of the guard holds in strict mode: NUL and length still go to the converter, which refuses them.
    with pytest.raises(RowRefused, match=r"t\.a: text contains NUL"):
        strict(("caf\x00é", "b", "c", 1))
    with pytest.raises(RowRefused, match=r"t\.b: 2001 characters do not fit varchar\(2000\)"):
        strict(("a", "é" * 2001, "c", 1))


@pytest.mark.parametrize("bad", ["file\udc96name", "\udcff", "café\udc80"])
def test_a_default_converter_still_refuses_or_replaces_a_lone_surrogate(bad: str) -> None:
    """What a decode-fallback read gives for invalid UTF-8 (convert_text.decode_text): refused by name, or
    replaced by U+FFFD when the column asks; never passed on (psycopg could not encode it)."""
    default = row_converter("t", ["a", "b", "c", "d"], TEXT_TYPES)
    with pytest.raises(RowRefused, match=r"t\.b: text is not valid UTF-8"):
        default(("ok", bad, "ok", 1))
    replacing = row_converter("t", ["a"], [TargetType("text", replace_bad_utf8=True)])
    assert replacing((bad,)) == (bad.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),)
