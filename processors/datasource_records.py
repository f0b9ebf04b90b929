"""The rulebook for `POST /restapi/datasource/insert` (seed 004): a pure function from
one raw envelope to its `datasource_records` rows, its verdict and its dead letters,
and, when the request is the first to show a field, the data source's grown schema.

No I/O: the catalog is read through `get` (processors.rulebooks.Catalog). The
envelope's `stream` is the data source's catalog id (the edge resolved the
client's `datasource_id`). A request is all or nothing: one record off the
schema refuses the whole request (400 naming the record's index and field).

Schema rules (catalog.datasources has the types):
- declared schema: every field of a record must be declared, with a value of its type;
- no declared schema: a field's type is set by the first accepted value it has,
  and a later request may add fields (never change a type). A request that adds
  fields returns the new schema as an Outcome.catalog entity, which the processor
  writes to the catalog on a view caught up to the catalog's end (processors.handling),
  so two processors never infer two schemas for one data source.
In both, a field may be absent or null in any record.

Row key: a record's key is the SHA-256 of its canonical JSON (keys sorted), with
the number of identical records before it in the same request appended, so a
re-send or a replay of the same records writes the same keys (the table is a
ReplacingMergeTree on them) while two equal records of one request stay two.
"""

from __future__ import annotations

import hashlib
import time

import orjson

from catalog.brief import brief
from catalog.datasources import SCHEMA_KIND, fits, schema_of, timestamp_ms, value_type
from catalog.models import DATASOURCE_FIELDS_MAX, NAME_MAX
from processors.outcome import Outcome, Rejection, make_verdict, rejected

TABLE = "datasource_records"
TIMESTAMP_FIELD = "timestamp"  # a record's event time (the `ts` column), when typed timestamp


def judge_records(envelope: dict, get) -> Outcome:
    """Validate one data-source insert and build its rows; never raises for bad input.

    `get(kind, id, org)` reads the catalog (a data source, its inferred schema).
    """
    now = int(time.time() * 1000)
    received = 0
    org_id, datasource_id = envelope["org_id"], envelope.get("stream") or ""
    try:
        records = _parse(envelope["body"])
        received = len(records)
        datasource = get("datasource", datasource_id, org_id)
        if datasource is None:
            raise Rejection(404, "DATASOURCE_NOT_FOUND", f"data source {brief(datasource_id)} not found",
                            field="datasource_id")
        schema = schema_of(get, org_id, datasource)
        fields = dict(schema.fields)
        added = _check(records, fields, schema.declared)
        rows = _rows(records, datasource_id, fields)
    except Rejection as rejection:
        return rejected(envelope, rejection, received, now)
    writes = []
    if added:
        writes.append({"kind": SCHEMA_KIND, "id": datasource_id, "org_id": org_id, "body": {
            "id": datasource_id, "fields": fields, "version": schema.version + 1,
            "requestId": envelope["request_id"], "updatedAt": now}})
    verdict = make_verdict(envelope, "ingested", 200, received, received, sorted(fields), [], now)
    return Outcome(None, verdict, records=[{"table": TABLE, "rows": rows}], catalog=writes)


def _parse(raw: bytes) -> list:
    """The request's records; the edge checked this outline already, so only a replay or an
    upstream producer's message fails here."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "INVALID_PAYLOAD", f"body is not valid JSON: {exc}", field="body") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), list) or not body["data"]:
        raise Rejection(400, "INVALID_PAYLOAD", "body must be an object with a non-empty 'data' array",
                        field="data")
    return body["data"]


def _check(records: list, fields: dict[str, str], declared: bool) -> bool:
    """Check every record against `fields`, adding the fields an undeclared schema gains
    (in place); whether any was added. Raises Rejection naming `data[i].field`."""
    added = False
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise Rejection(400, "INVALID_RECORD", f"data[{index}]: a record must be a JSON object, "
                            f"not {brief(record)}", field=f"data[{index}]")
        if not record:
            raise Rejection(400, "INVALID_RECORD", f"data[{index}]: a record needs at least one field",
                            field=f"data[{index}]")
        for name, value in record.items():
            where = f"data[{index}].{name}"
            expected = fields.get(name)
            if value is None:
                continue  # null is as good as absent, for any type
            if expected is None:
                if declared:
                    raise Rejection(400, "UNKNOWN_FIELD", f"{where}: not a field of the data source's declared "
                                    f"schema ({', '.join(sorted(fields))})", field=where)
                shown = value_type(value)
                if shown is None:
                    raise Rejection(400, "SCHEMA_MISMATCH", f"{where}: nested objects and arrays are not "
                                    "supported; send a string, number, boolean or timestamp", field=where)
                if not 0 < len(name) <= NAME_MAX or len(fields) >= DATASOURCE_FIELDS_MAX:
                    raise Rejection(400, "SCHEMA_MISMATCH", f"{where}: a data source has at most "
                                    f"{DATASOURCE_FIELDS_MAX} fields, named with 1–{NAME_MAX} characters",
                                    field=where)
                fields[name] = shown
                added = True
            elif not fits(value, expected):
                raise Rejection(400, "SCHEMA_MISMATCH", f"{where}: expected {_article(expected)}, got "
                                f"{_shown(value)} {brief(value)}", field=where)
    return added


def _rows(records: list[dict], datasource_id: str, fields: dict[str, str]) -> list[dict]:
    """One row per record: its key, index, event time (0 without one) and canonical JSON."""
    rows = []
    seen: dict[str, int] = {}
    timestamped = fields.get(TIMESTAMP_FIELD) == "timestamp"
    for index, record in enumerate(records):
        canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(canonical).hexdigest()[:32]
        repeat = seen.get(digest, 0)
        seen[digest] = repeat + 1
        stamp = record.get(TIMESTAMP_FIELD) if timestamped else None
        rows.append({"datasource_id": datasource_id, "record_key": f"{digest}-{repeat}" if repeat else digest,
                     "record_index": index, "ts": timestamp_ms(stamp) if isinstance(stamp, str) else 0,
                     "record": canonical.decode()})
    return rows


def _article(type_name: str) -> str:
    return f"a {type_name}" if type_name != "timestamp" else "a timestamp (ISO 8601, UTC)"


def _shown(value: object) -> str:
    shown = value_type(value)
    return {None: "an object or array", "timestamp": "a string"}.get(shown, f"a {shown}")
