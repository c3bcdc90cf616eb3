"""The canonical text of numbers, as :mod:`checkpoints.digest`'s docstring defines it ("Exact numbers",
"Floats", "JSON"), and the floats msgspec's JSON writes unlike it.

Split from :mod:`checkpoints.digest` (which re-exports :func:`exact_number`) to keep modules small; the
definition stays in that module's docstring. ``canonical_json_text`` returns msgspec's sorted JSON
text when :data:`DOT_ZERO_END` and :data:`EXPONENT` find no float to fix, and :func:`rewritten`
otherwise: both must never change a byte of the canonical text (tests hold them to
``canonical_json_py``).
"""

from __future__ import annotations

import decimal
import re
from typing import Final


def exact_number(value: int | decimal.Decimal) -> str:
    """The canonical text of an exact number (see checkpoints.digest's docstring); never rounds."""
    if type(value) is int:
        return str(value)
    if isinstance(value, int):
        return str(int(value))
    if not value.is_finite():
        if value.is_nan():
            return "NaN"
        return "-Infinity" if value.is_signed() else "Infinity"
    text = format(value, "f")  # plain notation, all digits, no context rounding
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        return "0"
    return text


def float_as_exact(value: float) -> str:
    """A float's canonical text in JSON: the exact number of its shortest repr, or NaN/Infinity."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return exact_number(decimal.Decimal(repr(value)))


def float_text(literal: str) -> str:
    """A number literal with a fraction or exponent → the canonical text of its float.

    The float's shortest repr is already the canonical text unless it ends in ``.0`` (drop it) or
    has an exponent or is not finite (the exact-number path)."""
    text = repr(float(literal))
    if text[-2:] == ".0":
        return text[:-2] if text != "-0.0" else "0"
    if "e" in text or "n" in text:
        return float_as_exact(float(literal))
    return text


#: msgspec's JSON writes a float unlike its canonical text only with an exponent (``1e16``, ``1e-7``,
#: ``1.5e300``: a digit, ``e``, then digits or ``-``) or a ``.0`` ending (``100.0``, ``-0.0``). Any
#: other float it writes in plain notation with the shortest round-trip digits, the digits of
#: Python's repr: its canonical text (a test checks). A number ends at ``,``, ``]``, ``}`` or the end
#: of the text (msgspec writes no whitespace), which a string's ``"`` never is.
DOT_ZERO_END: Final = re.compile(rb"\.0(?![0-9])")
#: The exponent is looked for in a copy with digits and ``-`` as ``0`` (one ``translate``), where it
#: starts with the literal ``e0``: the regex engine runs to each ``e`` in a tight loop and tries a
#: match only at an ``e0``, not at every ``e`` of the document's words as ``e(?<=[0-9]e)`` on the text
#: itself would (``b"0e" in`` on such a copy, used before, searches ~2x slower). Requiring the end of
#: a number after the exponent keeps hex strings (``"3e4f"``) off the rewrite below.
DIGITS_AS_ZERO: Final = bytes.maketrans(b"123456789-", b"0000000000")
EXPONENT: Final = re.compile(rb"e0(?<=0e0)0*+(?![^,\]}])")
#: A number as msgspec writes it.
_NUMBER: Final = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?(?:e-?[0-9]+)?")


def rewritten(out: bytes, digits_as_zero: bytes) -> str | None:
    """msgspec's JSON text ``out`` (``digits_as_zero``: its translation by :data:`DIGITS_AS_ZERO`) with
    each float it wrote unlike its canonical text (a match of :data:`DOT_ZERO_END` or
    :data:`EXPONENT` outside strings) replaced by that text; None when ``out`` holds a backslash.

    Why: the other way, msgspec's ``float_hook``, reads the whole document again and calls Python
    for every float; an embedding of 1536 floats with one tiny one (``1e-6``) cost ~10x its fast
    path. Without a backslash msgspec wrote no escape, so no ``"`` inside a string, and a match is
    inside a string exactly when an odd number of ``"`` precede it. Rewriting the float msgspec wrote
    gives the text of the literal it read: msgspec's digits round-trip to the same float."""
    if b"\\" in out:
        return None
    found = {m.start() for m in DOT_ZERO_END.finditer(out)}
    found.update(m.start() for m in EXPONENT.finditer(digits_as_zero))
    pieces: list[bytes] = []
    done = counted = quotes = 0  # out[:done] is in pieces; quotes counts the '"' in out[:counted]
    for at in sorted(found):
        if at < done:
            continue  # in the number just rewritten
        quotes += out.count(b'"', counted, at)
        counted = at
        if quotes & 1:
            continue  # inside a string (or a key)
        start = max(out.rfind(b",", 0, at), out.rfind(b":", 0, at), out.rfind(b"[", 0, at)) + 1
        number = _NUMBER.match(out, start)
        if number is None or number.end() <= at:
            return None  # not inside a number msgspec wrote: never seen, left to the float_hook
        pieces += (out[done:start], float_text(number[0].decode()).encode())
        done = number.end()
    pieces.append(out[done:])
    return b"".join(pieces).decode()
