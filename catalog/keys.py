"""API key secrets and what a key may reach: generation, hashing, scopes, and
the "no broader than" rule that bounds what a key may do to other keys.

Secrets are shown once at creation; the catalog keeps only their SHA-256.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Callable

KEY_PREFIX = "slk_"
SCOPES = ("read", "write", "admin")  # each implies the ones before it
PLATFORM_ADMIN = "platform-admin"


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def rank(key: dict) -> int:
    """How much the key's scopes grant: 0 none, 1 read, 2 write, 3 admin."""
    return max((SCOPES.index(s) + 1 for s in key.get("scopes", ()) if s in SCOPES), default=0)


def allows(key: dict, scope: str) -> bool:
    """Whether the key grants `scope`; admin implies write and read, write implies read."""
    return rank(key) >= SCOPES.index(scope) + 1


def reach(key: dict) -> tuple[set[str], set[str], set[str]] | None:
    """(places, things, streams) the key's filters name, or None for an unfiltered key (the whole org)."""
    filters = key.get("filters") or {}
    named = tuple(set(filters.get(f) or ()) for f in ("placeIds", "thingIds", "streams"))
    return named if any(named) else None


def may_use_thing(key: dict, thing: dict) -> bool:
    """Whether the key's filters reach `thing`: unfiltered, or naming it or its place."""
    named = reach(key)
    return named is None or thing["id"] in named[1] or thing.get("placeId") in named[0]


def broader(other: dict, holder: dict, place_of: Callable[[str], str | None]) -> str | None:
    """Why `other` reaches further than `holder`, or None when it is no broader.

    A thing is within a filtered holder's reach when the holder names it or names
    the place it is registered in (things never change place). A place is within
    reach only when named: a place filter also covers the place's future things,
    which naming today's things does not. `place_of` answers a thing's place id.
    """
    if rank(other) > rank(holder):
        return f"it grants {SCOPES[rank(other) - 1]!r}, more than this key's {SCOPES[rank(holder) - 1]!r}"
    mine = reach(holder)
    if mine is None:
        return None
    theirs = reach(other)
    if theirs is None:
        return "it has no resource filters, and this key is limited by its filters"
    places, things, streams = mine
    if extra := sorted(theirs[0] - places):
        return f"its places {extra} are outside this key's filters"
    if extra := sorted(t for t in theirs[1] - things if place_of(t) not in places):
        return f"its things {extra} are outside this key's filters"
    if extra := sorted(theirs[2] - streams):
        return f"its streams {extra} are outside this key's filters"
    return None
