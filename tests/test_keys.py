"""The "no broader than" rule between two keys, alone (catalog.keys.broader)."""

import pytest

from catalog import keys

PLACE_OF = {"thg_a1": "site_a", "thg_b1": "site_b"}.get


def key(*scopes: str, **filters: list[str]) -> dict:
    return {"scopes": list(scopes), "filters": filters}


@pytest.mark.parametrize("other,holder", [
    (key("admin"), key("admin")),
    (key("read", placeIds=["site_b"]), key("admin")),  # an unfiltered key reaches the whole org
    (key("write"), key("write")),
    (key("admin", placeIds=["site_a"]), key("admin", placeIds=["site_a", "site_b"])),
    (key("read", thingIds=["thg_a1"]), key("admin", placeIds=["site_a"])),  # a thing in a covered place
    (key("read", thingIds=["thg_a1"]), key("read", thingIds=["thg_a1", "thg_b1"])),
    (key("read", streams=["s1"]), key("admin", streams=["s1", "s2"])),
])
def test_no_broader(other, holder):
    assert keys.broader(other, holder, PLACE_OF) is None


@pytest.mark.parametrize("other,holder,reason", [
    (key("admin"), key("write"), "grants 'admin'"),
    (key("write", "read"), key("read"), "grants 'write'"),
    (key("read"), key("admin", placeIds=["site_a"]), "no resource filters"),
    (key("read", placeIds=["site_b"]), key("admin", placeIds=["site_a"]), "places ['site_b']"),
    (key("read", thingIds=["thg_b1"]), key("admin", placeIds=["site_a"]), "things ['thg_b1']"),
    (key("read", placeIds=["site_a"]), key("admin", thingIds=["thg_a1"]), "places ['site_a']"),
    (key("read", thingIds=["thg_gone"]), key("admin", placeIds=["site_a"]), "things ['thg_gone']"),
    (key("read", streams=["s3"]), key("admin", streams=["s1"]), "streams ['s3']"),
])
def test_broader(other, holder, reason):
    assert reason in keys.broader(other, holder, PLACE_OF)


def test_scopes_imply_the_ones_before():
    assert keys.allows(key("admin"), "read") and keys.allows(key("write"), "read")
    assert not keys.allows(key("write"), "admin") and not keys.allows(key(keys.PLATFORM_ADMIN), "read")
