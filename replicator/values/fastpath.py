"""The shape of a column converter: its closure, plus the fast paths the row converter inlines.

Why a module of its own: every family of converters (``values/convert_*``) returns a :class:`Plan`, and
the row converter compiles their fast-path expressions in a namespace of the helpers listed here
(:data:`INLINE_NAMES`); both sides must agree on those names, so they are defined once, below both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Final, NamedTuple

from replicator.values.datetimes import (
    DATE_SHAPE,
    JULIAN_MAX,
    JULIAN_MIN,
    MS_THRESHOLD,
    NAIVE_SHAPES,
    NINES,
    PROFILED_SHAPES,
)

Converter = Callable[[object], object]


class Plan(NamedTuple):
    """A column's converter plus inline fast paths for :func:`replicator.values.convert.row_converter`.

    Each fast path is ``(guard, result)``: Python expressions over ``{v}`` (the value), ``{k}``
    (``const``) and the helpers in ``INLINE_NAMES``. Where ``guard`` is true, ``result`` must equal
    what ``convert`` returns (the tests check both agree); elsewhere ``convert`` is called. A result
    may raise ``ValueError`` (``fromisoformat`` on February 30th): the row is then converted again
    without fast paths, so ``convert`` decides.
    """

    convert: Converter
    fast: tuple[tuple[str, str], ...] = ()
    const: object = None


def utf8_ok(s: str) -> bool:
    """No lone surrogate (i.e. no invalid source byte, see convert_text.decode_text); faster than a regex search."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: The text fast path's UTF-8 clause (``convert_text.text_plan``): a non-ASCII text is checked for a lone
#: surrogate. ``row_converter(strict_text=True)`` drops exactly this clause: its rows come from a strict
#: UTF-8 read, whose decoder never produces a surrogate, so the check (an encode of the whole text) is void.
UTF8_CLAUSE: Final = " and ({v}.isascii() or _utf8_ok({v}))"


#: Epoch numbers of 0001-01-01T00:00:00 and 9999-12-31T23:59:59.999 (UTC).
_MIN_S: Final = -62_135_596_800
_MAX_S: Final = 253_402_300_799
_MIN_MS: Final = _MIN_S * 1000
_MAX_MS: Final = _MAX_S * 1000 + 999

#: Integers below this (1e1000) fit an unconstrained numeric; SQLite's never exceed 2**63 anyway.
NUMERIC_INT_LIMIT: Final = 10**1000

#: Helpers the generated row functions may use in fast-path expressions.
INLINE_NAMES: Final[Mapping[str, object]] = {
    "_td": timedelta,
    "_D": Decimal,
    "_repr": repr,
    "_INF": float("inf"),
    "_NUMERIC_INT_LIMIT": NUMERIC_INT_LIMIT,
    "_utf8_ok": utf8_ok,
    "_T": MS_THRESHOLD,
    "_JD_LO": math.ceil(JULIAN_MIN),
    "_JD_HI": math.ceil(JULIAN_MAX),
    "_MIN_S": _MIN_S,
    "_MAX_S": _MAX_S,
    "_MIN_MS": _MIN_MS,
    "_MAX_MS": _MAX_MS,
    "_NINES": NINES,
    "_NAIVE_SHAPES": NAIVE_SHAPES,
    "_PROFILED_SHAPES": PROFILED_SHAPES,
    "_DATE_SHAPE": DATE_SHAPE,
    "_fromiso": datetime.fromisoformat,
    "_date_fromiso": date.fromisoformat,
}


def unchanged(guard: str) -> tuple[tuple[str, str], ...]:
    """A fast path for values that already have the target's Python type and range."""
    return ((guard, "{v}"),)
