"""Validation of a thing's static properties against its type's property definitions."""

from __future__ import annotations

import operator

from catalog.coercion import CoercionError, coerce
from catalog.errors import Invalid

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
        "==": operator.eq, "!=": operator.ne}
_TYPES = {"double": "Double", "long": "Long", "boolean": "Boolean", "string": "String"}


def _typed(data_type: str, value: object) -> object:
    number, integer, text = coerce(data_type, value)
    return {"Double": number, "Long": integer, "Boolean": bool(integer), "String": text}[data_type]


def check_properties(properties: dict, definitions: list[dict]) -> None:
    """Raise Invalid naming the key and constraint a property breaks."""
    by_name = {d["name"]: d for d in definitions}
    for key, raw in properties.items():
        definition = by_name.get(key)
        field = f"properties.{key}"
        if definition is None:
            raise Invalid(f"unknown property {key!r}", field=field)
        data_type = _TYPES[definition["valueType"]]
        try:
            value = _typed(data_type, raw)
            for constraint in definition.get("constraints", []):
                bound = _typed(data_type, constraint["value"])
                if not _OPS[constraint["operator"]](value, bound):
                    raise Invalid(
                        f"property {key!r} = {raw!r} violates constraint {constraint['operator']} {constraint['value']}",
                        field=field, constraint=constraint,
                    )
        except CoercionError as exc:
            raise Invalid(f"property {key!r}: {exc}", field=field) from None
