"""Parameter declarations: typed values, overrides and value constraints.

A declaration's value may itself be a reference or an expression over the parameters declared
before it (``<ParameterDeclaration name="ActorSpeed" value="${$EgoSpeed + 2.5}" .../>``). An
override (a sweep point, a caller's choice) replaces the declared value before the later
declarations that depend on it are evaluated, and must satisfy the declaration's
``ConstraintGroup`` s (any group, all constraints in it).

Domain code: no dagster import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from adas.simulation.openscenario.expressions import ExpressionError, ParamValue, resolve

_INT_TYPES: Final[frozenset[str]] = frozenset({"int", "integer", "unsignedInt", "unsignedShort"})
PARAMETER_TYPES: Final[frozenset[str]] = _INT_TYPES | {"double", "string", "boolean", "dateTime"}


def coerce(value: ParamValue, parameter_type: str, name: str) -> ParamValue:
    """A declared or overridden value as its declared type; raises ``ExpressionError`` if it is not one."""
    if parameter_type in _INT_TYPES:
        if isinstance(value, bool):
            raise ExpressionError(f"parameter {name!r}: {value!r} is not an integer")
        try:
            number = float(value)
        except ValueError:
            raise ExpressionError(f"parameter {name!r}: {value!r} is not an integer") from None
        # An expression's result is a double: round it to the nearest integer (half away from zero).
        as_int = math.floor(abs(number) + 0.5) * (1 if number >= 0 else -1)
        if parameter_type.startswith("unsigned") and as_int < 0:
            raise ExpressionError(f"parameter {name!r}: {value!r} is negative for {parameter_type}")
        return as_int
    if parameter_type == "double":
        if isinstance(value, bool):
            raise ExpressionError(f"parameter {name!r}: {value!r} is not a number")
        try:
            return float(value)
        except ValueError:
            raise ExpressionError(f"parameter {name!r}: {value!r} is not a number") from None
    if parameter_type == "boolean":
        if isinstance(value, bool):
            return value
        if str(value) in ("true", "false"):
            return str(value) == "true"
        raise ExpressionError(f"parameter {name!r}: {value!r} is not true/false")
    return str(value)  # string, dateTime


def declared_value(text: str, parameter_type: str, name: str, scope: Mapping[str, ParamValue]) -> ParamValue:
    """A declaration's value, resolved against the parameters declared before it."""
    return coerce(resolve(text, scope), parameter_type, name)


def satisfies(value: ParamValue, rule: str, bound: str, parameter_type: str) -> bool:
    """One ``ValueConstraint``: ``value <rule> bound`` compared as numbers for numeric types, else as strings."""
    if parameter_type in _INT_TYPES or parameter_type == "double":
        a, b = float(value), float(bound)  # type: ignore[arg-type]
        return {
            "greaterThan": a > b,
            "lessThan": a < b,
            "equalTo": a == b,
            "greaterOrEqual": a >= b,
            "lessOrEqual": a <= b,
            "notEqualTo": a != b,
        }[rule]
    sa = str(value).lower() if isinstance(value, bool) else str(value)
    if rule == "equalTo":
        return sa == bound
    if rule == "notEqualTo":
        return sa != bound
    raise ExpressionError(f"rule {rule!r} is not defined for {parameter_type} parameters")
