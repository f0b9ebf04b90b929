"""Immutable, kind-prefixed identifiers (mdef_, tdefi_, tdef_, site_, ...)."""

from __future__ import annotations

import hashlib
import secrets

PREFIXES = {
    "org": "org_",
    "metric": "mdef_",
    "thing_type": "tdefi_",
    "thing_type_version": "tdef_",
    "site": "site_",
    "fleet": "flt_",
    "thing": "thg_",
    "api_key": "key_",
    "stream": "stm_",
    "harbor": "hbr_",
    "datasource": "dsrc_",
    "template": "tmpl_",
    "integration": "intg_",
}


def new_id(kind: str) -> str:
    # 80 random bits: collision-free in practice and short enough to read aloud.
    return PREFIXES[kind] + secrets.token_hex(10)


def derived_id(kind: str, *parts: str) -> str:
    """An id that is a function of `parts` (as long as a random one): whoever derives it
    from the same parts, in whichever process, names the same entity."""
    return PREFIXES[kind] + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


def request_id() -> str:
    return "req_" + secrets.token_hex(12)
