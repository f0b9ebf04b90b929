"""ClickHouse text forms of Python values, for the embedded backend.

chDB takes query-parameter values as text in ClickHouse's *escaped* format (the
TSV one: a raw newline or tab ends the value, a backslash starts an escape),
and settings such as insert_deduplication_token go into the SQL as quoted
literals. Pure functions: nothing blocks; TypeError for values with no text form.
"""

from __future__ import annotations

import decimal
import uuid
from typing import Any

# Characters that must be backslash-escaped inside both forms.
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0", "\b": "\\b", "\f": "\\f"}
_QUOTED_ESCAPES = {**_ESCAPES, "'": "\\'"}


def quote_string(text: str) -> str:
    """A single-quoted SQL string literal for `text`."""
    return "'" + "".join(_QUOTED_ESCAPES.get(c, c) for c in text) + "'"


def parameter_text(value: Any) -> str:
    """The escaped-format text a `{name:Type}` placeholder is parsed from.

    Strings go unquoted (escaped); None is NULL (\\N); lists, tuples and dicts
    become Array / Tuple / Map literals. Expects bools and datetimes already
    normalized (backend.normalize_parameters).
    """
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return "".join(_ESCAPES.get(c, c) for c in value)
    if isinstance(value, (int, float, decimal.Decimal, uuid.UUID)):
        return str(value)
    return _nested(value)


def _nested(value: Any) -> str:
    # Inside a composite the element syntax is the SQL literal one: quoted strings, NULL.
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return quote_string(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, decimal.Decimal)):
        return str(value)
    if isinstance(value, uuid.UUID):
        return quote_string(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_nested(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(_nested(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_nested(k)}: {_nested(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no ClickHouse text form for {type(value).__name__}")
