"""Client values shown in error messages: short, and safe for any value.

A plain repr() of a client's value can be as large as the request (a 900 KiB
string) or raise RecursionError (a value nested 1,000 deep); error messages
travel in verdicts and dead letters, so they must stay small and never raise.
Called only when building an error, never per value.
"""

from __future__ import annotations

import reprlib

SHOWN_CHARS = 60  # of a string or a number

_short = reprlib.Repr()
_short.maxlevel = 2  # nested containers show as [[...]]: no recursion into them
_short.maxstring = SHOWN_CHARS
_short.maxother = SHOWN_CHARS
_short.maxlong = SHOWN_CHARS
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 4


def brief(value: object) -> str:
    """A bounded repr: strings longer than SHOWN_CHARS keep a prefix and say their length."""
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}… ({len(value)} characters)"
    try:
        return _short.repr(value)
    except Exception:  # e.g. an int too long to print; the type is still worth saying
        return f"<{type(value).__name__}>"


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marking the cut."""
    return text if len(text) <= limit else f"{text[:limit - 25]}… ({len(text)} characters)"
