"""The canonical JSON text of checkpoints.digest: the msgspec (C) path against the definition in Python.

The fast path must give exactly the text ``canonical_json_py`` (the module docstring's definition as
code) gives, for every document, or digests would stop matching those stored by earlier versions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import struct
import sys
from decimal import Decimal
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoints import canonical_numbers as numbers
from checkpoints import digest
from checkpoints.digest import Json, JsonText, RowEncoder, canonical_json, canonical_json_py, canonical_json_text
from checkpoints.errors import CheckpointError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


def _bits_float(bits: int) -> float:
    number: float = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
    return number if math.isfinite(number) else 0.5


def _spellings(value: Any) -> list[str]:
    """Several texts of one document: compact, spaced, indented, ASCII-escaped, keys unsorted/sorted."""
    return [
        json.dumps(value, ensure_ascii=False, separators=(",", ":")),
        json.dumps(value),
        json.dumps(value, indent=2, sort_keys=True),
        json.dumps(value, ensure_ascii=True, separators=(" ,", ": ")),
    ]


@settings(max_examples=400)
@given(json_values)
def test_the_text_path_gives_the_definitions_text(value: Any) -> None:
    """Through the C pass where it answers (bytes never take it), and with it off: the msgspec path."""
    expected = canonical_json_py(value)
    for text in _spellings(value):
        assert canonical_json_text(text) == expected
        assert canonical_json_text(text.encode()) == expected
        with mock.patch.object(digest, "_c_canonical", None):
            assert canonical_json_text(text) == expected


@settings(max_examples=400)
@given(json_values)
def test_the_parsed_path_gives_the_definitions_text(value: Any) -> None:
    assert canonical_json(value) == canonical_json_py(value)


def test_every_code_point_is_escaped_as_json_dumps_escapes_it() -> None:
    everything = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    expected = canonical_json_py(everything)
    assert canonical_json(everything) == expected
    assert canonical_json_text(json.dumps(everything)) == expected
    assert canonical_json_text(json.dumps(everything, ensure_ascii=False)) == expected
    for c in range(0x80):  # one by one too: each escape on its own
        assert canonical_json_text(json.dumps(chr(c))) == json.dumps(chr(c), ensure_ascii=False)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1e2", "100"),
        ("1E+2", "100"),
        ("100.0", "100"),
        ("100", "100"),
        ("1.00e2", "100"),
        ("1.50", "1.5"),
        ("-0.0", "0"),
        ("-0", "0"),
        ("0.1", "0.1"),
        ("1e-7", "0.0000001"),
        ("1e16", "10000000000000000"),
        ("1.5e300", "15" + "0" * 299),
        ("1e400", "Infinity"),
        ("-1e400", "-Infinity"),
        ("123456789012345678901234567890", "123456789012345678901234567890"),
        ("-9223372036854775809", "-9223372036854775809"),
        ("0.1000000000000000000001", "0.1"),  # read as the float json.loads gives
        ("5e-324", "0." + "0" * 323 + "5"),
    ],
)
def test_numbers_are_their_exact_value(text: str, canonical: str) -> None:
    assert canonical_json_text(text) == canonical
    assert canonical_json_text(f'{{"n": [{text}]}}') == f'{{"n":[{canonical}]}}'
    assert canonical_json_py(json.loads(text)) == canonical


def test_key_order_whitespace_and_duplicates_do_not_count() -> None:
    texts = [
        '{"a": 1, "b": [true, null, "x"]}',
        '{"b":[true,null,"x"],"a":1}',
        '\n{ "b" :\t[ true , null , "x" ] ,\r\n "a" : 1.0 }\n',
        '{"a": 2, "b": [true, null, "x"], "a": 1}',  # the last duplicate wins, as in jsonb
        '{"\\u0061": 1e0, "b": [true, null, "\\u0078"]}',
    ]
    enc = RowEncoder(["json"])
    assert {canonical_json_text(t) for t in texts} == {'{"a":1,"b":[true,null,"x"]}'}
    assert len({enc.encode([JsonText(t)]) for t in texts}) == 1
    assert enc.encode([JsonText(texts[0])]) == enc.encode([{"b": [True, None, "x"], "a": 1}])


def test_different_documents_never_share_a_digest() -> None:
    """Negative control: values that differ in any way, including ones that look alike, differ."""
    documents = [
        "null", '"null"', "0", '"0"', "1", "1.5", "-1", "true", "false", '"true"', "[]", "{}", '""', "[null]",
        '{"a":null}', '{"a":1}', '{"a":"1"}', '{"a":[1]}', '{"A":1}', '{"a ":1}', '{"b":1}', "[1,2]", "[2,1]",
        '[[1],2]', '[1,[2]]', '{"a":{"b":1}}', '{"a.b":1}', '"a\\u0000"', '"a"', '"\\u00e9"', '"e\\u0301"',
        '{"a":1,"b":2}', '{"a":2,"b":1}', "1e400", "-1e400", "123456789012345678901", "123456789012345678902",
        '[{"a":1},{"b":2}]', '[{"a":1,"b":2}]', '["a,b"]', '["a","b"]',
    ]  # fmt: skip
    rows = [RowEncoder(["json"]).encode([JsonText(t)]) for t in documents]
    assert len(set(rows)) == len(documents)
    parsed = [RowEncoder(["json"]).encode([json.loads(t)]) for t in documents]
    assert parsed[1:] == rows[1:]  # parsed and text agree (JSON null: see the next test)


def test_json_null_is_sql_null_and_a_string_null_is_not() -> None:
    enc = RowEncoder(["json"])
    assert enc.encode([JsonText("null")]) == enc.encode([None]) == enc.encode([JsonText(" null ")])
    assert enc.encode([JsonText('"null"')]) != enc.encode([None])
    assert digest.encode_row([JsonText("[null]")]) == digest.encode_row([Json([None])])


def test_what_msgspec_refuses_is_read_by_json_loads() -> None:
    assert canonical_json_text('"\\ud800"') == canonical_json_py("\ud800")  # a lone surrogate escape
    assert canonical_json_text("[NaN, -Infinity]") == "[NaN,-Infinity]"
    assert digest.encode_row([JsonText('"\\udc80"')]) == digest.encode_row([Json("\udc80")])
    with pytest.raises(CheckpointError, match="not JSON"):
        canonical_json_text('{"a": ')


def test_the_parsed_path_stays_strict() -> None:
    """Values msgspec would write as something else take the Python path (and keep its rules)."""
    assert canonical_json({"x": Decimal("1.50"), "y": Decimal("0.1000000000000000000001")}) == (
        '{"x":1.5,"y":0.1000000000000000000001}'
    )
    assert canonical_json([float("nan"), float("inf"), None]) == "[NaN,Infinity,null]"
    assert canonical_json((1, (2.0,))) == "[1,[2]]"
    with pytest.raises(CheckpointError, match="not a string"):
        canonical_json({1: "a"})
    with pytest.raises(CheckpointError, match="datetime"):
        canonical_json({"at": dt.datetime(2024, 1, 2)})
    with pytest.raises(CheckpointError, match="bytes"):
        canonical_json([b"x"])


@settings(max_examples=3000)
@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 2**64 - 1).map(_bits_float))
def test_a_float_msgspec_writes_without_exponent_or_dot_zero_is_canonical(number: float) -> None:
    """What lets canonical_json_text return msgspec's own text (see canonical_numbers)."""
    written = msgspec.json.encode(number)
    flagged = numbers.DOT_ZERO_END.search(written) or numbers.EXPONENT.search(written.translate(numbers.DIGITS_AS_ZERO))
    if not flagged:  # no exponent, no ".0" ending: msgspec's text is the canonical one
        assert written.decode() == canonical_json_py(number)
    else:
        assert "e" in written.decode() or written.endswith(b".0")
    assert digest._sorted_json(number) == canonical_json_py(number)  # flagged: rewritten
    assert canonical_json_text(written) == canonical_json_py(number)
    assert canonical_json_text(f"[{written.decode()}, 1]") == f"[{canonical_json_py(number)},1]"


def test_the_msgspec_path_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(value: Any) -> str:
        raise AssertionError("the Python definition ran")

    monkeypatch.setattr(digest, "_c_canonical", None)  # as on an install without a C compiler
    monkeypatch.setattr(digest, "canonical_json_py", refuse)
    doc = '{"b": [1.25, 100.0, 1e-9, -0.0], "a": {"é": null, "n": 12345678901234567890123}}'
    assert canonical_json_text(doc) == '{"a":{"n":12345678901234567890123,"é":null},"b":[1.25,100,0.000000001,0]}'
    assert canonical_json(json.loads(doc)) == canonical_json_text(doc)
    # floats msgspec already writes canonically: not even the float_hook runs
    monkeypatch.setattr(digest, "_JSON_NUMBERS", None)
    plain = '{"price": 471.5, "ratio": 0.7548, "tiny": 0.00001, "n": [1, -2], "s": "1.0e5"}'
    assert canonical_json_text(plain.replace('"1.0e5"', '"x"')) == (
        '{"n":[1,-2],"price":471.5,"ratio":0.7548,"s":"x","tiny":0.00001}'
    )
    # ".0e" inside a string, a float to rewrite: quotes tell them apart, the float_hook is not needed
    assert canonical_json_text(plain.replace("0.00001", "1e16")) == (
        '{"n":[1,-2],"price":471.5,"ratio":0.7548,"s":"1.0e5","tiny":10000000000000000}'
    )
    assert canonical_json_text(plain.replace('"1.0e5"', '"a\\\\b"')) == (  # a backslash, all floats plain
        '{"n":[1,-2],"price":471.5,"ratio":0.7548,"s":"a\\\\b","tiny":0.00001}'
    )
    with pytest.raises(AttributeError):  # a backslash and a float to rewrite: the float_hook pass runs
        canonical_json_text(plain.replace('"1.0e5"', '"a\\\\b"').replace("0.00001", "1e16"))


#: Documents the C pass writes itself, each a case of its own: key order (nested, unsorted, equal
#: after unescaping, duplicates: the last kept), escapes (short forms, controls, ``\/``, pairs), each
#: number form it takes (-0, 15 significant digits, exponents, trailing zeros, a ``.0`` ending) and
#: whitespace.
C_DOCUMENTS = [
    '{"schema": 3, "theme": "dark", "flags": {"sso": null, "beta": false}, "ratio": 0.8213, "tags": ["café"]}',
    '{"b": {"d": {"f": 1, "e": 2}, "c": 3}, "a": {"z": 1, "y": {"q": [1, {"s": 1, "r": 2}], "p": 2}}}',
    r'{"a": 1, "\u0061": 2, "b": 3, "a": 4}',
    r'{"é": 1, "e": 2, "😀": 3, "\uffff": 4, "": 5, "\u0000": 6, "\ud83d\ude00": 7}',
    r'["\"\\\/\b\f\n\r\t\u0001\u001f\u007f\u00e9\u2028\ud83d\ude00", "tab\tnew", "\u00E9\u00e9"]',
    "[0, -0, 1, -1, 123456789012345678, -123456789012345678, 0.0, -0.0, 0e0, -0E-5]",
    "[1.5, 1.50, 100.0, 1e2, 1E+2, 1e-7, 2.5E-5, 123456789012345.0, 0.1, 12.0e-1, 1e16, 1e298, 1e-298]",
    ' \t\r\n{ "k" : [ true , false , null , { } , [ ] , "" ] } \n',
    '"just a string, \x7f and \u2028 as they are"',
    "-12.340",
]
#: Documents it leaves to the Python paths (None), each for its own reason.
C_DECLINED = [
    "0.30000000000000004",  # 17 significant digits: its shortest repr needs arithmetic
    "[1.5, 1e300]",  # outside the normal range the 15-digit rule is proved for
    "1e400",
    "NaN",
    "[-Infinity]",
    r'"\ud800"',  # a lone surrogate escape
    r'"\udc00x"',
    r'"\ud800\u0041"',
    "1234567890123456789",  # 19 digits
    '"a\x01b"',  # a raw control character: json.loads refuses it
    "[1,]",
    '{"a" 1}',
    "01",
    "1.",
    '{"a":1}x',
    "",
    r'"\x"',
]


def test_the_c_pass_is_built_and_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The common documents never reach msgspec nor the Python definition; what it declines does."""
    assert digest._c_canonical is not None, "checkpoints/_canonical.c was not built: pip install -e . with a C compiler"
    expected = [canonical_json_py(json.loads(text)) for text in C_DOCUMENTS]

    def refuse(*args: Any) -> Any:
        raise AssertionError("a Python path ran")

    for name in ("canonical_json_py", "_decode_plain", "_sorted_json"):
        monkeypatch.setattr(digest, name, refuse)
    for text, canonical in zip(C_DOCUMENTS, expected, strict=True):
        assert digest._c_canonical(text) == canonical, text
        assert canonical_json_text(text) == canonical, text
    monkeypatch.undo()
    for text in C_DECLINED:
        assert digest._c_canonical(text) is None, text
    assert digest._c_canonical(b"[1]") is None  # bytes: msgspec validates their UTF-8
    assert digest._c_canonical("\ud800") is None  # a lone surrogate in the str itself
    for text in C_DECLINED[:9]:  # the valid ones still get the definition's text
        assert canonical_json_text(text) == canonical_json_py(json.loads(text)), text


#: Row digests computed by the implementation before the msgspec path (commit aa4f9db, recursive
#: Python): the canonical form did not change, so stored checkpoints and running digests still match.
PINNED = [
    (
        '{"b": 1, "a": [1.50, "\\u00e9", null, true, 1e2, -0.0, 1e-7, 12345678901234567890123]}',
        "6b927af44380d7bb3940bb1be1b209d9ba1c7c84db8dd10450656673197d79bb",
    ),
    (
        '{"z": {"y": [], "x": {}}, "": "\\n\\t\\u0001\\u007f\\u2028", "\\ud83d\\ude00": 0.1}',
        "e5ea9b3232420bf2e6ee4a448a8ac8c912477a7cd5db34e128f3af49f4a8c257",
    ),
    (
        "[1e400, -1e400, 3.141592653589793, 100.0, 5e-324, 1.7976931348623157e308]",
        "986d69ffd2fa9d23b9bec8297c80892174dffbf656aa470834c17a376d2849f2",
    ),
]


@pytest.mark.parametrize(("text", "sha"), PINNED)
def test_digests_are_those_of_earlier_versions(text: str, sha: str) -> None:
    for value in (JsonText(text), JsonText(text.encode()), Json(json.loads(text))):
        assert hashlib.sha256(digest.encode_row([1, value, "x"])).hexdigest() == sha


def test_the_c_pass_stays_linear_on_unsorted_nesting() -> None:
    """Each unsorted object copies its whole text, nested ones included: 1000 unsorted levels around
    a large string would copy it 1000 times (9 s for 50 MB). Past a budget linear in the input the
    C pass declines; a small document is handled at any depth; empty duplicate keys (no key bytes
    at all) are read like any other."""
    assert digest._c_canonical is not None
    deep_big = '{"b":' * 1000 + '"' + "x" * 200_000 + '"' + ',"a":1}' * 1000
    assert digest._c_canonical(deep_big) is None
    deep_small = '{"b":' * 1000 + '"' + "x" * 1000 + '"' + ',"a":1}' * 1000
    assert digest._c_canonical(deep_small) == '{"a":1,"b":' * 1000 + '"' + "x" * 1000 + '"' + "}" * 1000
    assert digest._c_canonical('{"":1,"":2}') == '{"":2}'
    assert digest._c_canonical('{"":[{"":1,"":{}}],"":{"":0}}') == '{"":{"":0}}'


def test_documents_nested_deeper_than_python_reads_are_canonical() -> None:
    """PostgreSQL stores JSON nested 20,000 deep (the load accepts it); json.loads and msgspec stop near
    1,000. The C pass reads with a stack of its own, and its exact mode takes the floats and integers
    its fast mode leaves. A deep document holding what only Python reads is refused by name."""
    assert digest._c_canonical is not None
    inner = "[0.30000000000000004, 12345678901234567890123, 1e400, -1e-400, 1.50]"
    inner_canonical = canonical_json_py(json.loads(inner))
    assert inner_canonical == "[0.30000000000000004,12345678901234567890123,Infinity,0,1.5]"
    in_order = ('{"a": 1e2, "b": ', 20_000, '{"a":100,"b":', "}")  # keys already in order at each level
    reordered = ('{"b": 1e2, "a": ', 1_500, '{"a":', ',"b":100}')  # each level reordered (copies its text)
    for opening, depth, canonical_opening, canonical_closing in (in_order, reordered):
        deep = opening * depth + inner + "}" * depth
        expected = canonical_opening * depth + inner_canonical + canonical_closing * depth
        assert digest._c_canonical(deep) is None, depth  # the fast mode leaves the long float
        assert canonical_json_text(deep) == expected, depth
        assert canonical_json_text(deep.encode()) == expected, depth
    depth = 20_000
    assert canonical_json_text("[" * depth + "]" * depth) == "[" * depth + "]" * depth
    with pytest.raises(CheckpointError, match="nests deeper"):
        canonical_json_text("[" * depth + "NaN" + "]" * depth)
    with pytest.raises(CheckpointError, match=r"nests deeper.*not JSON"):
        canonical_json_text("[" * depth + "]" * (depth - 1))
