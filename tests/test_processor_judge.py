"""The processor's judge (processors.judge), without Faust or services: a batch of requests
and a catalog view in, each request's messages out (frames, verdicts, dead letters, first
verdicts, decided catalog entities), judged cheapest org first, repeats of an
Idempotency-Key answered by the first verdict, and a request the catalog view is behind
for answered with a retryable 503 instead of judged on a stale catalog."""

from __future__ import annotations

import orjson

import schemas
from processors.deciding_catalog import DecidingCatalog
from processors.idempotency import IdempotencyStore
from processors.judge import Judge
from schemas.topics import CATALOG, DEADLETTER, FRAMES, IDEMPOTENCY, RESULTS, MessageLimits
from tests.test_datasource_records import SEED_ONE, envelope as datasource_envelope
from tests.test_normalize import TABLE, THING

LIMITS = MessageLimits.for_body(1_048_576)
BODY = {"frames": [{"timestamp": 1718884800000, "metrics": {"moduleSoC": 87.4}}]}


class View:
    """The catalog as the view holds it: one thing and its type version, a data source."""

    def __init__(self, applied_offset: int = 100) -> None:
        self.applied_offset = applied_offset
        self.entities = {("thing", "thg_1"): THING, ("datasource", "dsrc_1"): {"id": "dsrc_1", "name": "t",
                                                                              "externalId": "67890"}}

    def get(self, kind: str, entity_id: str, org_id: str | None = None) -> dict | None:
        return self.entities.get((kind, entity_id))

    def resolution(self, type_version_id: str):
        return TABLE if type_version_id == "tdef_1" else None


def request(request_id: str, org: str = "org_a", body: dict = BODY, **fields) -> tuple[bytes, dict]:
    envelope = {"request_id": request_id, "org_id": org, "key_id": "key_1", "route": "thing_data",
                "thing_id": "thg_1", "stream": None, "template_id": None, "received_at": 1718884800999,
                "catalog_offset": 3, "body": orjson.dumps(body), **fields}
    return b"raw bytes", envelope


def judge_all(judge: Judge, requests: list, catalog: DecidingCatalog) -> list[list[tuple[str, bytes, bytes]]]:
    """Each request's messages, in the order the judge takes them (the handler's loop, no catalog waits)."""
    return [judge.one(request, catalog) for request in judge.order(requests)]


def verdict_of(messages) -> dict:
    [value] = [value for topic, _, value in messages if topic == RESULTS]
    return schemas.decode(schemas.VERDICT, value)


def topics_of(messages) -> list[str]:
    return [topic for topic, _, _ in messages]


def new_judge() -> Judge:
    return Judge(IdempotencyStore("127.0.0.1:9", "unused"), LIMITS)  # never started: memory only


def test_each_request_yields_its_frames_and_verdict_cheapest_org_first():
    judge = new_judge()
    judge.costs.spent("org_costly", 5.0)  # its requests took the processor 5 s lately
    batch = [request("req_1", "org_costly"), request("req_2", "org_a"), request("req_3", "org_costly")]
    judged = judge_all(judge, batch, DecidingCatalog(View()))
    assert [verdict_of(m)["request_id"] for m in judged] == ["req_2", "req_1", "req_3"]  # one org's keep order
    for messages in judged:
        assert topics_of(messages) == [FRAMES, RESULTS]
        verdict = verdict_of(messages)
        assert (verdict["status"], verdict["http_status"], verdict["frames_ingested"]) == ("ingested", 200, 1)
    assert judge.costs.cost("org_a") > 0  # judging is charged to the org whose request it was


def test_an_idempotency_key_repeat_gets_the_first_verdict_and_another_body_a_422():
    judge = new_judge()
    keyed = {"idempotency_key": "k-1"}
    batch = [request("req_1", **keyed), request("req_2", **keyed),
             request("req_3", body={"frames": [{"timestamp": 1, "metrics": {"moduleSoC": 1}}]}, **keyed),
             request("req_1", **keyed)]  # the first again, replayed after a crash: judged again
    first, repeat, reused, replayed = judge_all(judge, batch, DecidingCatalog(View()))
    assert topics_of(first) == [IDEMPOTENCY, FRAMES, RESULTS]
    assert topics_of(repeat) == [RESULTS] and verdict_of(repeat)["duplicate_of"] == "req_1"
    assert verdict_of(repeat)["frames_ingested"] == 1  # the first verdict's figures
    assert topics_of(reused) == [RESULTS]
    assert (verdict_of(reused)["http_status"], verdict_of(reused)["errors"][0]["code"]) == (
        422, "IDEMPOTENCY_KEY_REUSED")
    assert FRAMES in topics_of(replayed) and verdict_of(replayed)["duplicate_of"] is None


def test_a_request_the_view_has_not_caught_up_for_is_a_retryable_503_and_its_batch_mates_go_on():
    judge = new_judge()
    behind, current = request("req_1", catalog_offset=8), request("req_2", catalog_offset=5)
    too_new, judged = judge_all(judge, [behind, current], DecidingCatalog(View(applied_offset=5)))
    assert topics_of(too_new) == [DEADLETTER, RESULTS]  # nothing written, the body kept for a replay
    verdict = verdict_of(too_new)
    assert (verdict["status"], verdict["http_status"], verdict["errors"][0]["code"]) == ("failed", 503, "UNAVAILABLE")
    assert "send the request again" in verdict["errors"][0]["message"]
    [dead] = [schemas.decode(schemas.DEAD_LETTER, v) for t, _, v in too_new if t == DEADLETTER]
    assert dead["reason"] == "UNAVAILABLE" and dead["original"] == behind[1]["body"]
    assert verdict_of(judged)["status"] == "ingested"


def test_a_catalog_decision_waits_for_the_catalogs_end_or_is_a_503_when_the_view_cannot_get_there():
    judge = new_judge()
    deciding = (b"", {**datasource_envelope(SEED_ONE, "req_ds"), "catalog_offset": -1})
    batch = [request("req_1"), deciding, request("req_2")]
    catalog = DecidingCatalog(View())
    assert judge.one(deciding, catalog) is None  # not on a view that may miss another processor's decision

    catalog.fresh = True  # the handler caught the view up to the catalog's end
    decided, after = judge_all(judge, batch[1:], catalog)
    assert topics_of(decided)[0] == CATALOG and verdict_of(decided)["catalog_changed"] is True
    assert verdict_of(after)["status"] == "ingested"

    lagging = DecidingCatalog(View())
    lagging.lagging = True  # the handler could not catch the view up within its bound
    refused, after = judge_all(judge, batch[1:], lagging)
    assert CATALOG not in topics_of(refused) and verdict_of(refused)["http_status"] == 503
    assert verdict_of(after)["status"] == "ingested"


def test_bytes_that_are_no_envelope_become_a_dead_letter_and_nothing_else():
    judge = new_judge()
    [messages] = judge_all(judge, [(b"\x00junk", "not an envelope")], DecidingCatalog(View()))
    assert topics_of(messages) == [DEADLETTER]
    assert schemas.decode(schemas.DEAD_LETTER, messages[0][2])["reason"] == "UNDECODABLE"
