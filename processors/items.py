"""Seed 002's rulebook: the items of one `POST /api/ingest` request → stream_items rows.

The edge lands each request on the raw topic (route `stream_items`, target the
stream's name) as one document, so everything a replay needs travels in the body:

    {"itemKey": <the X-Item-Key field name, or null>, "items": <the client's body, verbatim>}

`items` is one JSON object or an array of them. Each item becomes one row of
`stream_items`, keyed by (org, stream, item key): the value of its `itemKey`
field (a string, or a number or boolean as its JSON text), or, when there is no
such field (or no X-Item-Key), `<request id>/<index>`: deterministic, so a
replay of the request overwrites its own rows instead of adding new ones.

Any broken rule refuses the whole request (400 INVALID_PAYLOAD, naming the
item's index), like a bad frame refuses its request: a client fixes and resends
one request, never a guessed subset. Pure: bytes in, an Outcome out; never raises.
"""

from __future__ import annotations

import time

import orjson

from catalog.brief import brief
from processors.outcome import Outcome, Rejection, make_verdict, rejected

ROUTE = "stream_items"
TABLE = "stream_items_input"  # the warehouse parses it into stream_items
MAX_ITEM_KEY_CHARS = 1024  # an item key is part of the table's sort key: keep it an identifier


def stream_items(envelope: dict) -> Outcome:
    """The request's verdict and its stream_items rows, or its rejection and dead letter."""
    now = int(time.time() * 1000)
    received = 0
    try:
        field, items = _document(envelope["body"])
        received = len(items)
        stream, request_id = envelope.get("stream") or "", envelope["request_id"]
        if not stream:
            raise Rejection(400, "INVALID_PAYLOAD", "the request names no stream", field="stream")
        rows = [_row(stream, request_id, envelope["received_at"], field, index, item)
                for index, item in enumerate(items)]
    except Rejection as rejection:
        return rejected(envelope, rejection, received, now)
    verdict = make_verdict(envelope, "ingested", 200, received, received, [], [], now)
    return Outcome(None, verdict, records=[{"table": TABLE, "rows": rows}])


def _document(body: bytes) -> tuple[str | None, list]:
    """(item key field, items) of the route's document; Rejection when it is not one."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "INVALID_PAYLOAD", f"body: not valid JSON ({exc})", field="body") from None
    if not isinstance(document, dict) or "items" not in document:
        raise Rejection(400, "INVALID_PAYLOAD", 'body: not a stream_items document {"itemKey", "items"}',
                        field="body")
    field = document.get("itemKey")
    if field is not None and (not isinstance(field, str) or not field):
        raise Rejection(400, "INVALID_PAYLOAD", f"X-Item-Key must name a field, not {brief(field)}",
                        field="X-Item-Key")
    items = document["items"]
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise Rejection(400, "INVALID_PAYLOAD", "body: one item (a JSON object) or a non-empty array of items",
                        field="body")
    return field, items


def _row(stream: str, request_id: str, received_at: int, field: str | None, index: int, item: object) -> dict:
    if not isinstance(item, dict):
        raise Rejection(400, "INVALID_PAYLOAD", f"item {index} is not a JSON object: {brief(item)}",
                        field=f"items[{index}]")
    if (path := duplicate_path(item)) is not None:
        raise Rejection(400, "INVALID_PAYLOAD", f"item {index} has the path {brief(path)} twice (a dotted key "
                        "names a nested field, so {\"a.b\": 1, \"a\": {\"b\": 2}} says a.b twice)",
                        field=f"items[{index}]")
    return {"stream": stream, "item_key": item_key(item, field, request_id, index), "item_index": index,
            "received_at": received_at, "item": item}


def item_key(item: dict, field: str | None, request_id: str, index: int) -> str:
    """The item's key: its `field` value as text, or `<request id>/<index>` when it has none."""
    value = item.get(field) if field is not None else None
    if value is None:
        return f"{request_id}/{index}"
    if isinstance(value, str):
        key = value
    elif isinstance(value, (bool, int, float)):
        key = orjson.dumps(value).decode()  # 42 → "42", true → "true": what a client reads back
    else:
        raise Rejection(400, "INVALID_PAYLOAD", f"item {index}: its key field {brief(field)} must be a string, "
                        f"number or boolean, not {brief(value)}", field=f"items[{index}].{field}")
    if len(key) > MAX_ITEM_KEY_CHARS:
        raise Rejection(400, "INVALID_PAYLOAD", f"item {index}: its key {brief(key)} is longer than "
                        f"{MAX_ITEM_KEY_CHARS} characters", field=f"items[{index}].{field}")
    return key


def duplicate_path(document: dict) -> str | None:
    """A path ClickHouse's JSON type would read twice in `document` (and refuse the whole
    insert for), or None.

    The JSON type splits keys on dots ({"a.b": 1} is {"a": {"b": 1}}), stores no
    path for a null or an empty object, and reads each object inside an array as
    a document of its own. Iterative: items may nest about a thousand levels deep.
    """
    documents = [document]
    while documents:
        seen: set[tuple[str, ...]] = set()
        objects: list[tuple[tuple[str, ...], dict]] = [((), documents.pop())]
        while objects:
            prefix, obj = objects.pop()
            for key, value in obj.items():
                path = (*prefix, *key.split("."))
                if isinstance(value, dict):
                    objects.append((path, value))
                    continue
                if value is None:
                    continue
                if path in seen:
                    return ".".join(path)
                seen.add(path)
                if isinstance(value, list):
                    lists = [value]
                    while lists:
                        for element in lists.pop():
                            if isinstance(element, dict):
                                documents.append(element)
                            elif isinstance(element, list):
                                lists.append(element)
    return None
