"""What a request becomes, whatever its dialect: its verdict, its dead letters, and
the rows it writes (readings as a frame batch, or rows of a dialect's own table).

Every rulebook builds its outcome with these helpers, so verdicts and dead
letters have one shape. Whatever a client sends, they stay small: error
messages and fields are bounded (`Rejection`), and values are shown through
`catalog.brief`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from catalog.brief import clip

# The route of a dead letter that is no request anyone could judge again (bytes that are not a
# request, a message without a valid key): `sluice replay` skips it; its producer must send it anew.
NOT_A_REQUEST = "unknown"

# Longest error message and field name in a verdict or dead letter (characters).
MAX_MESSAGE_CHARS = 512
MAX_FIELD_CHARS = 160


@dataclass
class Outcome:
    """What one raw request becomes: frame batches (readings and locations, one per thing),
    rows of dialect tables, one verdict, dead letters, and the catalog entities it decides."""

    frames: list[dict]  # FrameBatch dicts, one per thing (a harbor batch spans many ships)
    verdict: dict | None  # None only for bytes that are not a request at all
    dead_letters: list[dict] = field(default_factory=list)
    # Rows for a dialect's own warehouse tables: [{"table": name, "rows": [row dict, ...]}]
    # (see schemas/avro/records.avsc and sinks/records.py).
    records: list[dict] = field(default_factory=list)
    # Catalog entities the request decides, [{"kind", "id", "org_id", "body"}]: a data source's
    # inferred schema, a harbor's ships and cargos seen first. The processor writes them to the
    # catalog topic with the request's other outputs, decided on a caught-up view
    # (processors.deciding_catalog).
    catalog: list[dict] = field(default_factory=list)

    @property
    def request_id(self) -> str:
        return self.verdict["request_id"] if self.verdict else self.dead_letters[0]["request_id"]


class Rejection(Exception):
    """Why a request is refused; message and field are cut to a bounded length."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        message = clip(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field = None if field is None else clip(field, MAX_FIELD_CHARS)


def failed(envelope: dict, code: str, message: str, status: int = 500) -> Outcome:
    """The verdict and dead letter of a request the processor could not handle
    (INTERNAL_ERROR, TOO_LARGE): its own outcome, so its batch-mates are unaffected."""
    return rejected(envelope, Rejection(status, code, message), 0, int(time.time() * 1000))


def rejected(envelope: dict, rejection: Rejection, received: int, now: int) -> Outcome:
    """A refused request: its verdict (the rejection's status, nothing ingested) and one
    dead letter carrying the whole body, for a replay once the cause is fixed."""
    status = {424: "failed_dependency", 500: "failed"}.get(rejection.status, "rejected")
    errors = [{"code": rejection.code, "message": rejection.message, "field": rejection.field}]
    verdict = make_verdict(envelope, status, rejection.status, received, 0, [], errors, now)
    dead = {
        "request_id": envelope["request_id"],
        "org_id": envelope["org_id"],
        "key_id": envelope.get("key_id"),
        "route": envelope["route"],
        "thing_id": envelope.get("thing_id"),
        "stream": envelope.get("stream"),
        "template_id": envelope.get("template_id"),
        "received_at": envelope["received_at"],
        "item_index": -1,
        "reason": rejection.code,
        "detail": rejection.message,
        "original": envelope["body"],
        "rejected_at": now,
    }
    return Outcome([], verdict, [dead])


def make_verdict(envelope: dict, status: str, http_status: int, received: int, ingested: int,
                 metrics: list[str], errors: list[dict], now: int) -> dict:
    """A verdict on `envelope`; `received`/`ingested` count the request's frames, items or records."""
    return {
        "request_id": envelope["request_id"],
        "org_id": envelope["org_id"],
        "thing_id": envelope.get("thing_id"),
        "route": envelope["route"],
        "key_id": envelope.get("key_id"),
        "stream": envelope.get("stream"),
        "status": status,
        "http_status": http_status,
        "frames_received": received,
        "frames_ingested": ingested,
        "metrics": metrics,
        "errors": errors,
        "duplicate_of": None,
        "received_at": envelope["received_at"],
        "processed_at": now,
    }


def undecodable(payload: bytes, reason: str) -> Outcome:
    """A message on the raw topic that is not a request envelope: dead-letter it whole."""
    now = int(time.time() * 1000)
    dead = {"request_id": "", "org_id": "", "route": NOT_A_REQUEST, "received_at": now, "item_index": -1,
            "reason": "UNDECODABLE", "detail": clip(reason, MAX_MESSAGE_CHARS), "original": payload,
            "rejected_at": now}
    return Outcome([], None, [dead])
