"""Converters for the number columns: smallint, integer, bigint, real, double precision and numeric.

Each builder takes the column's :class:`~replicator.values.targettype.TargetType` and returns its
:class:`~replicator.values.fastpath.Plan`: a closure that turns one SQLite value into the exact number
psycopg's binary dumper writes, or refuses it (out of range, not whole, not exact in the target), plus the
fast paths (an in-range int, a double into a wide numeric) the row converter inlines. A decimal column's
REALs are read as the application's ORM reads them (:func:`replicator.values.decimals.app_decimal`).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Final

from replicator.values.decimals import (
    DECIMAL_READERS,
    RAILS,
    REAL15,
    SQLALCHEMY,
    SQLITE_REAL_DIGITS,
    app_decimal,
    decimal_fits,
    float4_value,
    parse_decimal_text,
    parse_int_text,
    shortest_float4_repr,
)
from replicator.values.fastpath import NUMERIC_INT_LIMIT, Plan, unchanged
from replicator.values.refusal import ValueRefused, refuse_storage
from replicator.values.targettype import TargetType

INT_RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}


def integer_plan(t: TargetType) -> Plan:
    lo, hi = INT_RANGES[t.name]
    name = t.name

    def in_range(number: int) -> int:
        if lo <= number <= hi:
            return number
        raise ValueRefused(f"{number} is outside the {name} range {lo}..{hi}")

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is int:
            return in_range(v)
        if type(v) is float:
            if v.is_integer():
                return in_range(int(v))
            raise ValueRefused(f"real {v!r} is not a whole number; {name} would lose the fraction")
        if type(v) is str:
            return in_range(parse_int_text(v))
        raise refuse_storage(v, name)

    return Plan(convert, unchanged(f"type({{v}}) is int and {lo} <= {{v}} <= {hi}"))


def double_plan(t: TargetType) -> Plan:
    def convert(v: object) -> object:
        if v is None or type(v) is float:
            return v
        if type(v) is int:
            as_float = float(v)
            if as_float == v:
                return as_float
            raise ValueRefused(f"integer {v} has more than 53 significant bits; double precision would round it")
        if type(v) is str:
            exact = parse_decimal_text(v)
            as_float = float(exact)
            if as_float in (float("inf"), float("-inf")) or Decimal(repr(as_float)) != exact:
                raise ValueRefused("text number has no exact double precision value")
            return as_float
        raise refuse_storage(v, "double precision")

    return Plan(convert, unchanged("type({v}) is float"))


def real_plan(t: TargetType) -> Plan:
    """float4: accepted when PostgreSQL will print the same shortest decimal SQLite printed."""

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is int:
            number = float(v)
            if number != v:
                raise ValueRefused(f"integer {v} cannot be a double exactly")
        elif type(v) is float:
            number = v
        elif type(v) is str:
            number = float(parse_decimal_text(v))
            if Decimal(repr(number)) != Decimal(v):
                raise ValueRefused("text number has no exact real value")
        else:
            raise refuse_storage(v, "real")
        near = float4_value(number)
        if near == number or near != near or float(shortest_float4_repr(near)) == number:
            return number
        raise ValueRefused(
            f"{number!r} would become {shortest_float4_repr(near)} in real (float4)",
            hint="use double precision for this column",
        )

    return Plan(convert)


#: Integers below this have at most 15 digits: Django's 15-significant-digit read keeps them whole.
_REAL15_EXACT: Final = 10**SQLITE_REAL_DIGITS
#: Integers below this are exact as doubles: SQLAlchemy's "%.6f" % v reads them as themselves.
_DOUBLE_EXACT: Final = 2**53

#: Bounds on the shortest repr of a double with 1e-4 <= |x| < 1e16: 17 significant digits at most.
_REPR_MAX_FRACTION: Final = 20
_REPR_MAX_INTEGER: Final = 16


def _refuse_real(v: float, number: Decimal, precision: int | None, scale: int | None) -> None:
    """A REAL that does not fit: when its 15-significant-digit reading does (the digits SQLite keeps
    turning decimal text into a REAL, and Django's reading), the refusal names that setting."""
    reason = decimal_fits(number, precision, scale) or ""
    try:
        fifteen = app_decimal(v, precision, scale, REAL15)
    except ValueRefused:
        raise ValueRefused(reason) from None
    if decimal_fits(fifteen, precision, scale) is not None:
        raise ValueRefused(reason)
    raise ValueRefused(
        f"{reason} (read with the 15 significant digits SQLite keeps, it is {fifteen}; an app whose ORM reads"
        ' it loads what the ORM reads with [snapshot] orm = "django", "sqlalchemy" or "rails")',
        setting=f'format = "{REAL15}"',
    )


def numeric_plan(t: TargetType) -> Plan:
    precision, scale = t.precision, t.scale
    # Integers pass unchanged when every integer below the limit fits (never for a negative scale).
    limit = 10 ** (precision - (scale or 0)) if precision is not None and (scale or 0) >= 0 else 0
    label = f"numeric({precision},{scale or 0})" if precision is not None else "numeric"

    def checked(number: Decimal) -> Decimal:
        reason = decimal_fits(number, precision, scale)
        if reason is not None:
            raise ValueRefused(reason)
        return number

    reader = t.format if t.format in DECIMAL_READERS else None

    def convert(v: object) -> object:
        if v is None:
            return None
        if type(v) is int:
            if reader in (None, RAILS) and (
                (precision is None and -NUMERIC_INT_LIMIT < v < NUMERIC_INT_LIMIT) or -limit < v < limit
            ):
                return v
            return checked(app_decimal(v, precision, scale, reader))
        if type(v) is float:
            number = app_decimal(v, precision, scale, reader)
            reason = decimal_fits(number, precision, scale)  # once: most prices fit
            if reason is None:
                return number
            if reader is None:
                _refuse_real(v, number, precision, scale)
            raise ValueRefused(reason)
        if type(v) is str:
            return checked(parse_decimal_text(v))
        raise refuse_storage(v, label)

    if reader == REAL15:
        # Integers of up to 15 digits read as themselves; every other number goes through app_decimal.
        small = min(limit, _REAL15_EXACT) if precision is not None else _REAL15_EXACT
        return Plan(convert, ((f"type({{v}}) is int and {-small} < {{v}} < {small}", "{v}"),))
    if reader == SQLALCHEMY:
        # SQLAlchemy formats integers as doubles: exact below 2**53. An unconstrained numeric keeps the
        # digits it is given, so there every number takes SQLAlchemy's spelling (3.0000000000).
        small = min(limit, _DOUBLE_EXACT)
        return Plan(convert, ((f"type({{v}}) is int and {-small} < {{v}} < {small}", "{v}"),) if small else ())
    if reader == RAILS:
        return Plan(convert, ((f"type({{v}}) is int and {-limit} < {{v}} < {limit}", "{v}"),) if limit else ())
    if precision is None:
        # Any finite double (and any SQLite integer) fits an unconstrained numeric.
        return Plan(
            convert,
            (
                ("type({v}) is int and -_NUMERIC_INT_LIMIT < {v} < _NUMERIC_INT_LIMIT", "{v}"),
                ("type({v}) is float and -_INF < {v} < _INF", "_D(_repr({v}))"),
            ),
        )
    fast = [(f"type({{v}}) is int and {-limit} < {{v}} < {limit}", "{v}")] if limit else []
    if (scale or 0) >= _REPR_MAX_FRACTION and precision - (scale or 0) >= _REPR_MAX_INTEGER:
        # The shortest repr of a double in [1e-4, 1e16) has at most 20 decimals and 16 integer
        # digits, so numeric(65,30) holds every such value: no digit counting needed.
        fast.append(("type({v}) is float and (1e-4 <= {v} < 1e16 or -1e16 < {v} <= -1e-4)", "_D(_repr({v}))"))
    return Plan(convert, tuple(fast))
