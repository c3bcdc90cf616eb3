"""Exact parsing of the number spellings found in SQLite files, and the decimal each ORM reads.

SQLite has no decimal type: applications store decimals as binary doubles, integers, or text. Every
function here either returns the exact value the text or number denotes (or, for a decimal column, the
exact decimal the application's ORM reads, :func:`app_decimal`) or raises :class:`ValueRefused` with a
short reason; none rounds, truncates or guesses silently. Grammars are deliberately strict (ASCII digits
only, no surrounding whitespace) so that what is accepted is unambiguous.
"""

from __future__ import annotations

import math
import re
import struct
from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal, InvalidOperation
from fractions import Fraction
from typing import Final

from replicator.values.refusal import ValueRefused

#: A base-10 integer and a plain decimal, as text (also the epoch numbers of :mod:`replicator.values.datetimes`).
INTEGER_TEXT: Final = re.compile(r"[+-]?[0-9]+")
DECIMAL_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_int_text(text: str) -> int:
    """A base-10 integer text with optional sign; no spaces, underscores or non-ASCII digits."""
    if INTEGER_TEXT.fullmatch(text) is None:
        raise ValueRefused("text is not an integer")
    return int(text)


def parse_decimal_text(text: str) -> Decimal:
    """A plain decimal text (``-12.50``, ``1e-3``), exactly; no spaces, NaN or Infinity."""
    if DECIMAL_TEXT.fullmatch(text) is None:
        raise ValueRefused("text is not a decimal number")
    return Decimal(text)


def float_to_decimal(number: float) -> Decimal:
    """The shortest decimal that round-trips to this double: ``0.1`` not ``0.1000000000000000055511``.

    That is the value the application saw and printed; ``Decimal(float)`` would expose binary noise.
    """
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueRefused(f"{number!r} has no exact numeric value")
    return Decimal(repr(number))


#: SQLite keeps only this many significant digits when it turns decimal text into a REAL (a NUMERIC
#: column's affinity, sqlite.org/datatype3.html §3), and Django's SQLite backend reads a
#: DecimalField's REAL with this many (``get_decimalfield_converter``). The digits past it are noise
#: of SQLite's conversion: 30475227.150471 written as text is stored as 30475227.150471002.
SQLITE_REAL_DIGITS: Final = 15
_REAL_DIGITS: Final = Context(prec=SQLITE_REAL_DIGITS)

#: ``TargetType.format`` of a numeric column whose REALs are read as Django reads them.
REAL15: Final = "real15"
#: ... as SQLAlchemy's ``Numeric`` reads them from SQLite (:func:`sqlalchemy_decimal`).
SQLALCHEMY: Final = "sqlalchemy"
#: ... as ActiveRecord's decimal type reads them from SQLite (:func:`rails_decimal`).
RAILS: Final = "rails"
#: Every ORM reading of a decimal column; any other format (None) is the shortest round-trip decimal.
DECIMAL_READERS: Final = (REAL15, SQLALCHEMY, RAILS)

#: SQLAlchemy's ``Numeric._default_decimal_return_scale``: the digits it formats when the type has no scale.
SQLALCHEMY_DEFAULT_SCALE: Final = 10
#: Ruby's ``Float::DIG + 1``: the most significant digits ActiveRecord and BigDecimal take from a Float.
RUBY_FLOAT_DIGITS: Final = 16
_RUBY_SHORTEST: Final = Context(prec=RUBY_FLOAT_DIGITS, rounding=ROUND_DOWN)
_WIDE: Final = Context(prec=2000)


def app_decimal(number: int | float, precision: int | None, scale: int | None, reader: str | None) -> Decimal:
    """The decimal the application reads for a number SQLite stores in a decimal column.

    This is the one rule for numbers loaded into ``numeric``: PostgreSQL gets what the app reads.

    * ``reader`` None (Prisma, plain SQL): an integer is itself; a REAL is its shortest round-trip
      decimal (:func:`float_to_decimal`), the digits every language prints.
    * ``reader`` ``"real15"`` (Django, chosen automatically for a Django project): Django's SQLite
      backend reads ``Context(prec=15).create_decimal_from_float(value)`` -- integers too -- then
      quantizes to ``decimal_places`` in a context of ``max_digits`` digits, both rounding half to even.
      So 30475227.150471002, the REAL SQLite made of the text 30475227.150471, reads 30475227.150471,
      and a 20-digit price SQLite kept as a 15-digit REAL reads those 15 digits. A value Django cannot
      read (the quantized value needs more than max_digits digits) is refused: Django's own read fails.
    * ``"sqlalchemy"`` and ``"rails"``: :func:`sqlalchemy_decimal`, :func:`rails_decimal`.

    The caller still checks the result fits numeric(precision, scale) (:func:`decimal_fits`).
    """
    if reader == SQLALCHEMY:
        return sqlalchemy_decimal(number, scale)
    if reader == RAILS:
        return rails_decimal(number, precision, scale)
    if reader != REAL15:
        return Decimal(number) if isinstance(number, int) else float_to_decimal(number)
    if isinstance(number, float) and (number != number or number in (float("inf"), float("-inf"))):
        raise ValueRefused(f"{number!r} has no exact numeric value")
    value = _REAL_DIGITS.create_decimal_from_float(number)
    if scale is None:
        return value
    try:
        return value.quantize(Decimal(1).scaleb(-scale), context=Context(prec=precision or 1000))
    except InvalidOperation:
        raise ValueRefused(
            f"{value} does not fit numeric({precision},{scale}) once rounded to {scale} decimal places, "
            "so Django cannot read it from SQLite either"
        ) from None


def sqlalchemy_decimal(number: int | float, scale: int | None) -> Decimal:
    """What SQLAlchemy's ``Numeric`` (``asdecimal=True``) reads from SQLite for a stored number.

    pysqlite returns REALs as floats and SQLAlchemy's SQLite dialect has ``supports_native_decimal =
    False``, so ``Numeric.result_processor`` is ``processors.to_decimal_processor_factory(Decimal,
    self._effective_decimal_return_scale)``: ``Decimal("%.{scale}f" % value)``, the scale being the
    type's ``scale`` or, without one, ``_default_decimal_return_scale`` (10). ``%`` formats the exact
    binary value correctly rounded (half to even), integers included after Python turns them into a
    double. 30475227.150471002 in a ``Numeric(20, 6)`` reads 30475227.150471, the 17-digit double
    12345678901234.568 reads 12345678901234.568359. The text keeps its trailing zeros, so an unconstrained
    numeric gets ``0.1000000000`` and SQLAlchemy reads the same digits back from PostgreSQL.
    """
    digits = SQLALCHEMY_DEFAULT_SCALE if scale is None else scale
    if digits < 0:
        raise ValueRefused(f"SQLAlchemy cannot read a Numeric with scale {digits} from SQLite ('%.{digits}f')")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueRefused(f"{number!r} has no exact numeric value")
    return Decimal(f"%.{digits}f" % number)


def rails_decimal(number: int | float, precision: int | None, scale: int | None) -> Decimal:
    """What ActiveRecord's decimal type reads from SQLite for a stored number.

    The sqlite3 gem returns REALs as Floats and integers as Integers; ``ActiveModel::Type::Decimal#cast_value``
    (the same since Rails 5.0) reads an Integer exactly, and a Float, for a column with a precision, as
    ``BigDecimal(value.round(scale), [precision, Float::DIG + 1].min)`` then ``.round(scale)`` (BigDecimal's
    default ROUND_HALF_UP), and without one (``t.decimal`` with no options) as ``value.to_d``: BigDecimal's
    shortest digits of the Float, cut (not rounded) to 16. A column of scale 0 (``decimal(10)``) is
    ``Type::DecimalWithoutScale``, an integer type: ``Float#to_i`` truncates toward zero. ``Float#round``
    is Ruby's (:func:`ruby_float_round`), half away from zero on the double's own arithmetic.
    """
    if type(number) is int:
        return Decimal(number)
    if not math.isfinite(number):
        raise ValueRefused(f"{number!r} has no exact numeric value")
    if scale == 0:
        return Decimal(int(number))
    if precision is None or scale is None or scale < 0:  # BigDecimal keeps no trailing zeros
        return _RUBY_SHORTEST.plus(Decimal(repr(number))).normalize(_WIDE)
    rounded = ruby_float_round(number, scale)
    digits = min(precision, RUBY_FLOAT_DIGITS)
    value = Decimal(f"{rounded:.{digits - 1}e}") if rounded else Decimal(0)
    return value.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP, context=_WIDE)


def ruby_float_round(number: float, ndigits: int) -> float:
    """Ruby's ``Float#round(ndigits)`` for ``ndigits > 0`` (numeric.c ``flo_round``), double for double.

    A number with fewer than ``ndigits`` decimals of precision is returned as is, one far below the last
    digit is 0.0; above 14 digits the exact value is rounded half up, then its numerator and denominator
    divided as doubles (``rb_flo_round_by_rational``); otherwise ``round_half_up(x, 10**ndigits) /
    10**ndigits``, whose ``(f + 0.5) / s <= x`` correction makes 2.675 (binary 2.67499999...) round to
    2.68 as its shortest digits suggest.
    """
    if number == 0.0 or not math.isfinite(number):
        return number
    binexp = math.frexp(number)[1]
    if ndigits >= 17 - (_c_div(binexp, 4) if binexp > 0 else _c_div(binexp, 3) - 1):
        return number
    if ndigits < -(_c_div(binexp, 3) + 1 if binexp > 0 else _c_div(binexp, 4)):
        return 0.0
    if ndigits > 14:  # Rational#round, then Rational#to_f: numerator and denominator each made a double
        exact = Fraction(Decimal(number).quantize(Decimal(1).scaleb(-ndigits), rounding=ROUND_HALF_UP, context=_WIDE))
        return float(exact.numerator) / float(exact.denominator)
    s = float(10**ndigits)
    xs = number * s
    f = float(math.floor(abs(xs)))
    if abs(xs) - f >= 0.5:  # C's round(): half away from zero
        f += 1.0
    f = math.copysign(f, xs)
    if number > 0 and (f + 0.5) / s <= number:
        f += 1.0
    elif number < 0 and (f - 0.5) / s >= number:
        f -= 1.0
    return f / s


def _c_div(a: int, b: int) -> int:
    """C's integer division: truncates toward zero."""
    return -(-a // b) if a < 0 else a // b


#: Unconstrained numeric holds up to 131072 digits before the point and 16383 after it.
NUMERIC_MAX_INTEGER_DIGITS: Final = 131_072
NUMERIC_MAX_SCALE: Final = 16_383


def decimal_fits(value: Decimal, precision: int | None, scale: int | None) -> str | None:
    """Why ``value`` does not fit numeric(precision, scale) exactly, or None when it does.

    Handles PostgreSQL 15's negative scales (numeric(2,-3) holds multiples of 1000) and scales above
    the precision (numeric(3,5) holds values below 0.001).
    """
    if not value.is_finite():
        return f"{value} is not a finite number; numeric holds neither NaN nor infinities here"
    if not value:
        return None
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    # Trailing zeros of the coefficient are not significant ("25000" = 25 with exponent 3).
    stripped = len(digits)
    while stripped > 1 and digits[stripped - 1] == 0:
        stripped -= 1
        exponent += 1
    top = value.adjusted()  # the power of ten of the leading digit
    if precision is None:
        if -exponent > NUMERIC_MAX_SCALE or top >= NUMERIC_MAX_INTEGER_DIGITS:
            return f"{value} is beyond the range of numeric"
        return None
    scale = scale or 0
    label = f"numeric({precision},{scale})"
    if -exponent > scale:
        if scale >= 0:
            return f"{value} has {-exponent} decimal places; {label} would round it"
        return f"{value} is not a multiple of 1e{-scale}; {label} would round it"
    if top >= precision - scale:
        if scale >= 0 and precision > scale:
            return f"{value} has {top + 1} integer digits; {label} allows {precision - scale}"
        return f"{value} is too large for {label} (its magnitude must be below 1e{precision - scale})"
    return None


_F4 = struct.Struct("f")
FLOAT4_MAX: Final = 3.4028234663852886e38


def float4_value(number: float) -> float:
    """The float4 nearest to ``number``; refuses numbers outside float4's range."""
    if abs(number) > FLOAT4_MAX and number not in (float("inf"), float("-inf")):
        raise ValueRefused(f"{number!r} is outside the range of real (float4)")
    (near,) = _F4.unpack(_F4.pack(number))
    return float(near)


def shortest_float4_repr(value: float) -> str:
    """What PostgreSQL prints for a float4 (shortest text that reads back to the same float4)."""
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if _F4.unpack(_F4.pack(float(text)))[0] == value:
            return text
    return repr(value)
