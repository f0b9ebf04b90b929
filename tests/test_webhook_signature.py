"""The webhook signature (X-Sluice-Signature) alone: pure, no services."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from producers.edge.webhook_replays import remember_accepted
from producers.edge.webhook_signature import (BadSignature, SeenSignatures, header_value, parse_replay_key,
                                              replay_key, verify)

SECRET = "whsec_test"
BODY = b'{"device":"d1","temp":21.5}'
NOW = 1_800_000_000


def reason(header, secret=SECRET, body=BODY, now=NOW, tolerance=300) -> str:
    with pytest.raises(BadSignature) as refused:
        verify(header, secret, body, now, tolerance)
    return refused.value.reason


def test_a_good_signature_is_the_hmac_of_time_dot_body():
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header_value(SECRET, NOW, BODY) == f"t={NOW},v1={expected}"
    assert verify(f"t={NOW},v1={expected}", SECRET, BODY, NOW + 10, 300) == (NOW, expected)


def test_a_wrong_secret_or_another_body_does_not_match():
    assert reason(header_value("whsec_other", NOW, BODY)) == "mismatch"
    assert reason(header_value(SECRET, NOW, BODY), body=BODY + b" ") == "mismatch"
    # The time is signed too: the same v1 under another t is refused.
    v1 = header_value(SECRET, NOW, BODY).split("v1=")[1]
    assert reason(f"t={NOW + 1},v1={v1}") == "mismatch"


def test_one_matching_v1_of_several_is_enough():
    good = header_value(SECRET, NOW, BODY).split("v1=")[1]
    assert verify(f"t={NOW},v1={'0' * 64},v1={good}", SECRET, BODY, NOW, 300)[1] == good


@pytest.mark.parametrize("age", [301, -301, 10_000])
def test_a_time_outside_the_tolerance_is_stale(age):
    assert reason(header_value(SECRET, NOW - age, BODY)) == "stale"


def test_the_tolerance_is_a_parameter():
    header = header_value(SECRET, NOW - 100, BODY)
    assert verify(header, SECRET, BODY, NOW, 120)[0] == NOW - 100
    assert reason(header, tolerance=60) == "stale"


@pytest.mark.parametrize("header", [
    None, "", "v1=" + "a" * 64, f"t={NOW}", f"t={NOW},v1=xyz", f"t=soon,v1={'a' * 64}",
    f"t={NOW},t={NOW},v1={'a' * 64}", f"t={NOW};v1={'a' * 64}", f"t={NOW},v1={'A' * 64}", "x" * 2000,
])
def test_a_malformed_header_is_refused_as_such(header):
    assert reason(header) == "malformed"


def test_a_signature_is_accepted_once_within_its_window():
    seen = SeenSignatures()
    assert seen.first_time("intg_a", "v1a", NOW, NOW, 300)
    assert not seen.first_time("intg_a", "v1a", NOW, NOW + 5, 300)
    assert seen.first_time("intg_b", "v1a", NOW, NOW + 5, 300)  # per integration
    # Forgotten once the time check refuses it by itself.
    assert seen.first_time("intg_a", "v1a", NOW, NOW + 301, 300)


def test_seen_signatures_are_bounded():
    seen = SeenSignatures(capacity=3)
    for n in range(5):
        assert seen.first_time("intg_a", f"v{n}", NOW, NOW, 300)
    assert len(seen._seen) == 3
    assert not seen.first_time("intg_a", "v4", NOW, NOW, 300)


def test_a_signature_another_edge_accepted_is_refused_until_it_is_stale():
    seen = SeenSignatures()
    seen.remember("intg_a", "v1a", NOW + 3600)
    assert not seen.first_time("intg_a", "v1a", NOW, NOW + 5, 300)
    assert seen.first_time("intg_b", "v1a", NOW, NOW + 5, 300)
    # Told again (the tail re-read at a restart) it is not forgotten sooner.
    seen.first_time("intg_a", "v1b", NOW, NOW, 300)
    seen.remember("intg_a", "v1b", NOW)
    assert not seen.first_time("intg_a", "v1b", NOW, NOW + 100, 300)


def test_the_replay_key_names_the_signed_request_and_nothing_else():
    v1 = header_value(SECRET, NOW, BODY).split("v1=")[1]
    assert replay_key(NOW, v1) == replay_key(NOW, v1) == f"webhook-signature:{NOW}:{v1}"
    assert parse_replay_key(replay_key(NOW, v1)) == (NOW, v1)
    for other in ["order-17", "webhook-signature:", f"webhook-signature:{NOW}:xyz", f"webhook-signature:soon:{v1}"]:
        assert parse_replay_key(other) is None


class Record:
    """An idempotency topic record, as the tail hands it over."""

    def __init__(self, key: str, value: bytes | None = b"verdict") -> None:
        self._key, self._value = key.encode(), value

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def test_the_signatures_the_processors_recorded_are_refused_and_nothing_else():
    seen, now = SeenSignatures(), int(time.time())
    v1 = header_value(SECRET, now, BODY).split("v1=")[1]
    for record in [Record("org_a/key_1/thing_data/thg_1///order-17"),  # an API client's own key
                   Record(f"org_a/intg_1/integration////{replay_key(now - 7200, v1)}"),  # stale by now
                   Record(f"org_a/intg_1/integration////{replay_key(now, v1)}", None)]:  # a tombstone
        remember_accepted(seen, 3600, record)
    assert seen._seen == {}
    remember_accepted(seen, 3600, Record(f"org_a/intg_1/integration////{replay_key(now, v1)}"))
    assert not seen.first_time("intg_1", v1, now, now, 300)
