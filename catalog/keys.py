"""API key secrets: generation, hashing and scope checks.

Secrets are shown once at creation; the catalog keeps only their SHA-256.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "slk_"
SCOPES = ("read", "write", "admin")
PLATFORM_ADMIN = "platform-admin"


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def allows(key: dict, scope: str) -> bool:
    """Whether the key grants `scope`; admin implies write and read, write implies read."""
    granted = set(key.get("scopes", ()))
    if PLATFORM_ADMIN in granted or "admin" in granted:
        return True
    return scope in granted or (scope == "read" and "write" in granted)
