"""The independent reading's rules for numbers (:mod:`replicator.inspect.proof` has the table): integers,
double precision, real (float4) and numeric, and what a number stored for a decimal column means to the ORM
that reads it (:func:`decimal_of_real`).
"""

from __future__ import annotations

import math
import re
import struct
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal
from fractions import Fraction
from typing import Final

from replicator.inspect.proof_rule import ColumnType, Read, unreadable

_EXACT: Final = Context(prec=2000, rounding=ROUND_HALF_EVEN)
_INT: Final = re.compile(r"[+-]?[0-9]+")
NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def plain(number: Decimal) -> str:
    """An exact number's canonical text: plain notation, no exponent, no trailing zeros, ``0`` unsigned."""
    if not number.is_finite():
        return "NaN" if number.is_nan() else ("-Infinity" if number < 0 else "Infinity")
    if number == 0:
        return "0"
    return format(number.normalize(_EXACT), "f")


def decimal_of_real(
    number: float | int, scale: int | None, reader: str | None = None, precision: int | None = None
) -> Decimal:
    """The meaning of a number stored for a decimal column: the value the ORM reads back.

    The plan records which reader the column has (``TargetType.format``); how it reads is written here,
    apart from the load's :func:`replicator.values.decimals.app_decimal`:

    * no reader (Prisma, plain SQL): the shortest decimal that round-trips the double (``repr``),
      quantized to the column's scale (half-even); an integer is itself;
    * ``real15`` (a Django project): Django's SQLite backend, 15 significant digits of the number
      (``Context(prec=15).create_decimal_from_float``, integers too), then quantized to the scale;
    * ``sqlalchemy``: ``Decimal("%.{scale}f" % value)`` (``to_decimal_processor_factory``; scale 10 when the
      type has none), i.e. the double's exact binary value rounded half-even to that many places;
    * ``rails``: ActiveModel's ``Type::Decimal``, see :func:`_rails_decimal`.
    """
    if reader == "real15":
        fifteen = Context(prec=15, rounding=ROUND_HALF_EVEN).create_decimal_from_float(number)
        return fifteen if scale is None else fifteen.quantize(Decimal(1).scaleb(-scale), context=_EXACT)
    if reader == "sqlalchemy" and math.isfinite(number):
        places = 10 if scale is None else scale
        return Decimal(float(number)).quantize(Decimal(1).scaleb(-places), context=_EXACT)
    if reader == "rails" and type(number) is float and math.isfinite(number):
        return _rails_decimal(number, precision, scale)
    exact = Decimal(number) if type(number) is int else Decimal(repr(number))
    if scale is None or not exact.is_finite():
        return exact
    return exact.quantize(Decimal(1).scaleb(-scale), context=_EXACT)


def _rails_decimal(number: float, precision: int | None, scale: int | None) -> Decimal:
    """ActiveRecord's read of a Float from a SQLite decimal column (``ActiveModel::Type::Decimal``):
    scale 0 is an integer type (``to_i``, toward zero); no precision is ``Float#to_d`` (its shortest
    digits, cut to 16); otherwise ``BigDecimal(value.round(scale), min(precision, 16)).round(scale)``,
    BigDecimal rounding half up."""
    if scale == 0:
        return Decimal(math.trunc(number))
    if precision is None or scale is None or scale < 0:
        return Context(prec=16, rounding=ROUND_DOWN).plus(Decimal(repr(number)))
    nearest = Context(prec=min(precision, 16), rounding=ROUND_HALF_EVEN).plus(Decimal(_ruby_round(number, scale)))
    return nearest.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP, context=_EXACT)


def _ruby_round(x: float, digits: int) -> float:
    """Ruby's ``Float#round(digits)``, digits > 0 (numeric.c ``flo_round`` with ``round_half_up``)."""
    if x == 0.0:
        return x
    exp2 = math.frexp(x)[1]
    if exp2 > 0:
        kept, gone = 17 - math.trunc(exp2 / 4), -(math.trunc(exp2 / 3) + 1)
    else:
        kept, gone = 17 - (math.trunc(exp2 / 3) - 1), -math.trunc(exp2 / 4)
    if digits >= kept:
        return x  # the double has no digit there
    if digits < gone:
        return 0.0
    if digits > 14:
        scaled = Fraction(x) * 10**digits
        whole = math.floor(abs(scaled) + Fraction(1, 2))
        rounded = Fraction(whole if x > 0 else -whole, 10**digits)
        return float(rounded.numerator) / float(rounded.denominator)
    s = float(10**digits)
    f = float(Decimal(x * s).to_integral_value(rounding=ROUND_HALF_UP))  # C's round(): half away from zero
    if x > 0 and (f + 0.5) / s <= x:
        f += 1
    if x < 0 and (f - 0.5) / s >= x:
        f -= 1
    return f / s


def _decimal_text(text: str) -> Decimal | None:
    return Decimal(text) if NUMBER.fullmatch(text) else None


def _float4(number: float) -> float:
    return float(struct.unpack("f", struct.pack("f", number))[0])


def _shortest_float4(value: float) -> str:
    """The shortest decimal text that reads back as this float4 (how PostgreSQL prints a real)."""
    if not math.isfinite(value):
        return "NaN" if value != value else ("-Infinity" if value < 0 else "Infinity")
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if _float4(float(text)) == value:
            return plain(Decimal(text))
    return plain(Decimal(repr(value)))


def _number(value: object) -> Decimal | None:
    """An exact number from integer, real (its repr) or decimal text; None for anything else."""
    if type(value) is int:
        return Decimal(value)
    if type(value) is float:
        return Decimal(repr(value))
    if type(value) is str:
        return _decimal_text(value)
    return None


def integer_source(value: object) -> object:
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is str and _INT.fullmatch(value):
        return int(value)
    return unreadable(value)


def double_source(value: object) -> object:
    if type(value) is float:
        return value
    if type(value) is int and float(value) == value:
        return float(value)
    if type(value) is str:
        exact = _decimal_text(value)
        if exact is not None and math.isfinite(float(exact)) and Decimal(repr(float(exact))) == exact:
            return float(exact)
    return unreadable(value)


def real_source(value: object) -> object:
    number = _number(value)
    return unreadable(value) if number is None else plain(number)


def real_target(value: object) -> object:
    return _shortest_float4(value) if type(value) is float else value


def numeric_source(t: ColumnType) -> Read:
    scale, reader, precision = t.scale, t.format, t.precision

    def read(value: object) -> object:
        if type(value) is float or (reader in ("real15", "sqlalchemy") and type(value) is int):
            return plain(decimal_of_real(value, scale, reader, precision))
        number = _number(value)
        return unreadable(value) if number is None else plain(number)

    return read


def numeric_target(value: object) -> object:
    return plain(value) if isinstance(value, Decimal) else plain(Decimal(value)) if type(value) is int else value
