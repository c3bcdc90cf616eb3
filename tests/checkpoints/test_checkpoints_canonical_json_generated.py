"""canonical_json_text against the definition on generated JSON *texts* (seeded, reproducible).

The hypothesis tests in test_checkpoints_canonical_json.py start from Python values and spell them
with ``json.dumps``; these start from the text, so the number literals are as varied as the ones
applications write (``1E+2``, ``100.00``, ``1.0e5``, ``5e-324``, integers beyond 64 bits) and the
strings hold what looks like a float msgspec writes non-canonically (``"1e16,"``, ``"v1.0"``, hex
digests), which the fast path must tell from a number. Every text must give exactly the text of
``canonical_json_py(json.loads(text))``: a different byte would change stored checksums.
"""

from __future__ import annotations

import json
import random
import struct
import uuid
from typing import Any

import msgspec
import pytest

from checkpoints import digest
from checkpoints.digest import canonical_json, canonical_json_py, canonical_json_text

FLOAT_LITERALS = [
    *("1e16", "1E16", "1e+16", "1E+016", "-1e16", "1e-7", "1E-7", "-1e-7", "1.5e300", "-0.0", "0.0", "-0.000"),
    *("100.0", "100.00", "1.50", "1.0e5", "12.0e-1", "5e-324", "4.9e-324", "1.7976931348623157e308"),
    *("-1.7976931348623157e308", "2.2250738585072014e-308", "0.1", "0.1000000000000000000001", "0.000001"),
    *("0.00001", "0.0001", "0.00009999999999999999", "9999999999999999.0", "9999999999999999.5"),
    *("10000000000000000.0", "9007199254740993.0", "123456789012345678.0", "99.99999999999999999", "1e15"),
    *("1e400", "-1e400", "1e-400", "-1e-400", "0e0", "0E-5", "1e0", "2.5E-5", "3.0", "-7.0e2", "0.30000000000000004"),
]
INT_LITERALS = [
    *("0", "-0", "1", "-1", "100", "9223372036854775807", "-9223372036854775808", "-9223372036854775809"),
    *("18446744073709551615", "18446744073709551616", "123456789012345678901234567890", "-" + "9" * 40),
]
STRINGS = [
    *("", "1e5", "1e16", "v1.0", "0e", "1.0", "x.0", "100.0,", "3e4]", "7e-1}", "a1e16", "1e-7,", "5.0}", ".0"),
    *("naïve", "café", "é", "😀", "\u2028", "\x00\x1e\n\t\r\b\f", '"', "\\", '"1e16,"', "\\1.0]", "de-DE"),
    *("SKU-600881", "2e5\\", "e", "E", "1E5", "12.0", "-0.0", "[1.0]", "{1e16}", ",1e16,", "\x7f\x80", "\ud800"),
]
ALPHABET = '0123456789e.-,]}E+ abcdef"\\é😀\n'


def _float_literal(rnd: random.Random) -> str:
    """A float literal as some writer spells it: Python's repr, msgspec, printf styles, raw bits."""
    kind = rnd.randrange(9)
    if kind == 0:
        return rnd.choice(FLOAT_LITERALS)
    if kind == 1:  # any finite double, from its bits
        x: float = struct.unpack("<d", rnd.getrandbits(64).to_bytes(8, "little"))[0]
        return repr(x) if x == x and abs(x) != float("inf") else "0.5"
    x = rnd.choice((rnd.random(), rnd.gauss(0, 0.05), rnd.uniform(-1e6, 1e6))) * 10.0 ** rnd.randrange(-30, 30)
    if kind == 2:
        return repr(x)
    if kind == 3:
        return msgspec.json.encode(x).decode()
    if kind == 4:
        return f"{x:.{rnd.randrange(1, 18)}e}".replace("e", rnd.choice("eE"))
    if kind == 5:
        return f"{x:.{rnd.randrange(1, 8)}f}"  # trailing zeros, rounding, -0.000
    if kind == 6:
        return f"{rnd.randrange(-(10**18), 10**18)}.{'0' * rnd.randrange(1, 4)}"  # integral
    if kind == 7:
        return f"{x:.17g}" if "." in f"{x:.17g}" or "e" in f"{x:.17g}" else f"{x:.17g}.0"
    return f"{rnd.randrange(1, 10)}e{rnd.choice(('', '-', '+'))}{rnd.randrange(0, 330)}"


def _string(rnd: random.Random) -> str:
    kind = rnd.randrange(6)
    if kind == 0:
        return rnd.choice(STRINGS)
    if kind == 1:
        return str(uuid.UUID(int=rnd.getrandbits(128), version=4))
    if kind == 2:
        return f"{rnd.getrandbits(256):064x}"
    if kind == 3:
        return "".join(rnd.choice(ALPHABET) for _ in range(rnd.randrange(12)))
    if kind == 4:
        return rnd.choice(STRINGS) + _float_literal(rnd) + rnd.choice(',]}"')
    return "".join(rnd.choice(("alpha", "beta", "sigma", "price", " ", "-", "e")) for _ in range(rnd.randrange(5)))


def _string_text(rnd: random.Random, s: str) -> str:
    return json.dumps(s, ensure_ascii=rnd.random() < 0.3)


def _ws(rnd: random.Random) -> str:
    return rnd.choice(("", "", "", " ", "\n  ", "\t", "\r\n"))


def _value_text(rnd: random.Random, depth: int, strings: bool, kind: int | None = None) -> str:
    """The text of a random JSON value: nesting, duplicate keys, whitespace, literal spellings."""
    if kind is None:
        kind = rnd.randrange(10 if depth < 4 else 7)
    if kind in (0, 1, 2):
        return _float_literal(rnd)
    if kind == 3:
        return rnd.choice(INT_LITERALS) if rnd.random() < 0.5 else str(rnd.randrange(-(10**6), 10**6))
    if kind == 4:
        return rnd.choice(("null", "true", "false"))
    if kind in (5, 6):
        return _string_text(rnd, _string(rnd)) if strings else _float_literal(rnd)
    n = rnd.randrange(7)
    if kind in (7, 8) or not strings:
        items = [_ws(rnd) + _value_text(rnd, depth + 1, strings) + _ws(rnd) for _ in range(n)]
        return "[" + ",".join(items) + "]"
    keys = [_string(rnd) for _ in range(n)]
    keys += rnd.sample(keys, min(len(keys), rnd.randrange(2)))  # sometimes a duplicate key (the last wins)
    members = [
        f"{_ws(rnd)}{_string_text(rnd, k)}{_ws(rnd)}:{_ws(rnd)}{_value_text(rnd, depth + 1, strings)}" for k in keys
    ]
    return "{" + ",".join(members) + "}"


def _document(rnd: random.Random) -> str:
    """A document; a quarter hold no string at all (number arrays, like embeddings), whose texts
    msgspec writes without a quote."""
    strings = rnd.random() < 0.75
    kind = rnd.choice((7, 9, 9, None))  # mostly an array or an object at the top
    return _ws(rnd) + _value_text(rnd, 0, strings, kind) + _ws(rnd)


def _expected(text: str) -> str:
    value: Any = json.loads(text)
    return canonical_json_py(value)


@pytest.fixture(params=["c", "msgspec"])
def text_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each text test twice: with the C pass (where it answers), and without it (the msgspec path)."""
    if request.param == "msgspec":
        monkeypatch.setattr(digest, "_c_canonical", None)
    return str(request.param)


@pytest.mark.parametrize("seed", range(6))
def test_generated_texts_give_the_definitions_text(seed: int, text_path: str) -> None:
    rnd = random.Random(seed)
    for _ in range(1500):
        text = _document(rnd)
        expected = _expected(text)
        assert canonical_json_text(text) == expected, text
        assert canonical_json_text(text.encode("utf-8", "surrogatepass")) == expected, text
        assert canonical_json(json.loads(text)) == expected, text


@pytest.mark.parametrize("seed", range(3))
def test_float_arrays_give_the_definitions_text(seed: int, text_path: str) -> None:
    """Embedding-like arrays (no strings), each with a few floats msgspec writes with an exponent or
    a ``.0`` ending among many it writes canonically."""
    rnd = random.Random(seed)
    for _ in range(40):
        numbers = [repr(rnd.gauss(0, 0.05)) for _ in range(rnd.randrange(1, 400))]
        for _ in range(rnd.randrange(4)):
            numbers[rnd.randrange(len(numbers))] = rnd.choice(FLOAT_LITERALS)
        text = "[" + ", ".join(numbers) + "]"
        assert canonical_json_text(text) == _expected(text), text


def test_look_alikes_inside_strings_stay_as_they_are(text_path: str) -> None:
    """Strings and keys holding what a non-canonical float looks like, next to real ones, with and
    without an escape (a backslash) in the document."""
    cases = {
        '{"a": "1e16,", "b": 1e16}': '{"a":"1e16,","b":10000000000000000}',
        '{"100.0": 100.0, "x": ["v1.0", "3e4]", 1e-7]}': '{"100.0":100,"x":["v1.0","3e4]",0.0000001]}',
        '["a\\"1.0,", 2.50, "\\\\", 1e16]': '["a\\"1.0,",2.5,"\\\\",10000000000000000]',
        '"12.0e5,"': '"12.0e5,"',
        "-0.0": "0",
        '[{"e": 5e-324}]': '[{"e":0.' + "0" * 323 + "5}]",
    }
    for text, canonical in cases.items():
        assert _expected(text) == canonical
        assert canonical_json_text(text) == canonical


def _short_literal(rnd: random.Random) -> str:
    """A number literal of 1-15 significant digits, spelled with leading and trailing zeros, a point
    anywhere, an exponent of either case and sign, or none."""
    digits = str(rnd.randrange(1, 10 ** rnd.randrange(1, 16)))
    digits = "0" * rnd.randrange(3) + digits + "0" * rnd.randrange(4)
    point = rnd.randrange(1, len(digits) + 1)
    mantissa = digits[:point].lstrip("0") or "0"
    if point < len(digits) or rnd.random() < 0.3:
        mantissa += "." + (digits[point:] or "0")
    if rnd.random() < 0.6:
        mantissa += rnd.choice("eE") + rnd.choice(("", "+", "-")) + str(rnd.randrange(0, 330))
    return rnd.choice(("", "-")) + mantissa


@pytest.mark.parametrize("seed", range(4))
def test_short_float_literals_are_their_shortest_repr(seed: int) -> None:
    """The C pass writes a float literal of at most 15 significant digits as its own exact value,
    with no arithmetic, because such a literal is its double's shortest repr (DBL_DIG = 15) in the
    normal range. Held to the definition (float(), repr, exact decimal) on 5,000 literals a seed,
    and the pass must take each such literal in range (declining only what it must)."""
    rnd = random.Random(seed)
    taken = 0
    for _ in range(5000):
        literal = _short_literal(rnd)
        if "." not in literal and "e" not in literal.lower():
            continue  # an integer: exact, not this rule
        expected = canonical_json_py(json.loads(literal))
        got = digest._c_canonical(literal) if digest._c_canonical is not None else None
        value = abs(float(literal))
        if got is None:
            assert value == 0.0 or not 1e-299 <= value < 1e299 or value == float("inf"), literal
            continue
        taken += 1
        assert got == expected, literal
    assert digest._c_canonical is None or taken > 2500


@pytest.mark.parametrize("seed", range(3))
def test_the_exact_mode_gives_the_definitions_text(seed: int) -> None:
    """The C pass's exact mode (for documents too deep for the Python paths) takes every float and
    integer: held to the definition on the generated texts, those with long floats and big integers
    above all."""
    if digest._c_canonical_exact is None:
        pytest.fail("checkpoints/_canonical.c was not built")
    rnd = random.Random(100 + seed)
    answered = 0
    for _ in range(1500):
        text = _document(rnd)
        got = digest._c_canonical_exact(text)
        if got is not None:
            answered += 1
            assert got == _expected(text), text
    assert answered > 900
