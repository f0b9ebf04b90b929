"""Coercion of a reading's scalar value to its metric's declared data type.

Pure functions over plain values: the processors call them for every value, so
they avoid allocation beyond the result tuple. Error messages show the value
through `brief` (bounded, never raising: a client's value can be anything).
"""

from __future__ import annotations

import math

from catalog.brief import brief

# A coerced value, shaped like the readings columns: (value, value_long, value_string).
Coerced = tuple[float, int, str]

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1


class CoercionError(ValueError):
    """The value cannot be represented in the metric's data type; str() says why."""


def _to_double(value: object) -> Coerced:
    if isinstance(value, bool):
        raise CoercionError("expected a number, got a boolean")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise CoercionError(f"expected a number, got the string {brief(value)}") from None
    else:
        raise CoercionError(f"expected a scalar number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise CoercionError("expected a finite number")
    return number, 0, ""


def _to_long(value: object) -> Coerced:
    if isinstance(value, bool):
        raise CoercionError("expected an integer, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise CoercionError(f"expected an integer, got {brief(value)}")
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            raise CoercionError(f"expected an integer, got the string {brief(value)}") from None
    else:
        raise CoercionError(f"expected a scalar integer, got {type(value).__name__}")
    if not LONG_MIN <= number <= LONG_MAX:
        raise CoercionError("integer out of the 64-bit range")
    return float(number), number, ""


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _to_boolean(value: object) -> Coerced:
    if isinstance(value, bool):
        flag = value
    elif isinstance(value, (int, float)) and value in (0, 1):
        flag = bool(value)
    elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        flag = value.strip().lower() in _TRUE
    else:
        raise CoercionError(f"expected a boolean, got {brief(value)}")
    return float(flag), int(flag), ""


def _to_string(value: object) -> Coerced:
    if isinstance(value, str):
        return 0.0, 0, value
    if isinstance(value, bool):
        return 0.0, 0, "true" if value else "false"
    if isinstance(value, (int, float)):
        return 0.0, 0, repr(value)
    raise CoercionError(f"expected a scalar, got {type(value).__name__}")


COERCERS = {
    "Double": _to_double,
    "Long": _to_long,
    "Boolean": _to_boolean,
    "String": _to_string,
}


def coerce(data_type: str, value: object, enum_values: frozenset[str] | None = None) -> Coerced:
    """Coerce one scalar; raises CoercionError naming what was expected."""
    coerced = COERCERS[data_type](value)
    if enum_values is not None and coerced[2] not in enum_values:
        raise CoercionError(f"{brief(coerced[2])} is not one of {sorted(enum_values)}")
    return coerced
