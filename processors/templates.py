"""The rulebook for `POST /v2/thing/{thingId}/data/template/{templateId}`: a raw
third-party payload, mapped through a pinned template revision onto the thing's
metrics, as one frame batch and the seed's processing report.

Pure: the catalog is read through the lookups it is given. The payload as a
whole is refused (a verdict with one error, and a dead letter unless previewing)
when it is not JSON, its records are not an array, or there are too many; a record
that fails (no or bad timestamp, a bad value, a metric not on the thing's type)
is skipped with its reason and the others are written. Values are coerced by
catalog.coercion, the frames rulebook's own rules.
"""

from __future__ import annotations

import math
import re
import time
from typing import Callable

import orjson

from catalog.brief import brief, clip
from catalog.coercion import CoercionError, coerce
from catalog.datasources import timestamp_ms
from catalog.resolution import ResolutionTable
from catalog.templates import REVISION_KIND, CompiledTemplate, TemplateCompileError, compiled
from processors import json_body
from processors.budget import Budget, BudgetedSearch, BudgetExceeded
from processors.columns import Readings
from processors.normalize import MAX_FUTURE_MS
from processors.outcome import Outcome, Rejection, make_verdict, rejected

MAX_RECORDS = 5000  # per request: a larger export is sent in several requests
MAX_SKIPPED_LISTED = 1000  # entries of recordsSkipped in a report (the count is always recordsParsed - written)
SHOWN_VALUE_CHARS = 200

Lookup = Callable[..., "dict | None"]  # (kind, id, org) -> body, as CatalogView.get
TableLookup = Callable[[str], "ResolutionTable | None"]


def map_template(envelope: dict, get: Lookup, table_lookup: TableLookup, preview: bool = False,
                 budget: Budget | None = None) -> Outcome:
    """Judge one thing_template request; never raises for bad input.

    Its expressions run within `budget` (processors.budget): past it the whole request is a
    422 BUDGET_EXCEEDED verdict (and a dead letter unless previewing).

    `envelope["template_id"]` is the pinned revision (`tmpl_…@n`; the edge pins it), or a
    template id alone (an upstream producer's), mapped with its current revision. With `preview`
    (route thing_template_preview, previewOnly=true) nothing is written and no dead letter.
    """
    now = int(time.time() * 1000)
    search = BudgetedSearch(budget or Budget())
    try:
        template = pinned_template(envelope, get)
        thing = get("thing", envelope.get("thing_id") or "", envelope["org_id"])
        if thing is None:
            raise Rejection(404, "THING_NOT_FOUND", f"thing {brief(envelope.get('thing_id'))} not found")
        version_id = thing.get("thingTypeVersionId")
        table = table_lookup(version_id) if version_id else None
        if table is None:
            raise Rejection(424, "TYPE_NOT_INITIALIZED", "the thing has no initialized thing type",
                            field="thingTypeId")
        records = payload_records(envelope, template, search)
        readings, written, skipped, names = map_records(records, template, table, now, search)
    except Rejection as rejection:
        outcome = rejected(envelope, rejection, 0, now)
        return Outcome([], outcome.verdict) if preview else outcome
    values = readings.rows
    report = {"previewOnly": preview, "templateId": template.template_id, "templateRevision": template.revision,
              "recordsParsed": len(records), "readingsWritten": written, "metricValuesWritten": values,
              "recordsSkipped": [{"index": i, "reason": reason, "value": value}
                                 for i, reason, value, _ in skipped[:MAX_SKIPPED_LISTED]]}
    if len(skipped) > MAX_SKIPPED_LISTED:
        report["recordsSkippedTruncated"] = True
    status = "previewed" if preview else "ingested" if written or not records else "rejected"
    verdict = make_verdict(envelope, status, 200, len(records), written, names, [], now)
    verdict["report"] = orjson.dumps(report).decode()
    if preview:
        return Outcome([], verdict)
    batches = [] if not values else [{
        "request_id": envelope["request_id"], "org_id": envelope["org_id"], "thing_id": envelope["thing_id"],
        "type_version_id": version_id, "version": envelope["received_at"], "frames": written,
        "readings": readings, "locations": []}]
    return Outcome(batches, verdict, [_dead_letter(envelope, skipped, now)] if skipped else [])


def pinned_template(envelope: dict, get: Lookup) -> CompiledTemplate:
    """The revision the envelope's `template_id` pins (or the template's current one), compiled;
    raises Rejection (404 TEMPLATE_NOT_FOUND, 400 INVALID_TEMPLATE)."""
    pinned = envelope.get("template_id") or ""
    if "@" in pinned:
        body = get(REVISION_KIND, pinned, envelope["org_id"])
    else:  # an upstream producer naming the template alone: its current revision
        body = get("template", pinned, envelope["org_id"])
    if body is None:
        raise Rejection(404, "TEMPLATE_NOT_FOUND", f"template revision {brief(pinned)} not found (deleted?)",
                        field="templateId")
    try:
        return compiled(body)
    except TemplateCompileError as exc:  # only from a catalog written by hand: the edge refuses these
        raise Rejection(400, "INVALID_TEMPLATE", str(exc), field=exc.field) from None


def payload_records(envelope: dict, template: CompiledTemplate, search: BudgetedSearch) -> list:
    """The records the template's `records` expression finds in the envelope's body; raises
    Rejection (not JSON, none found, not an array, too many) or BudgetExceeded."""
    try:
        payload = json_body.document(envelope)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "INVALID_PAYLOAD", f"body is not valid JSON: {exc}", field="body") from None
    try:
        records = search.search(template.records, payload)
    except BudgetExceeded:
        raise
    except Exception as exc:  # a function applied to the wrong type, say
        raise Rejection(400, "RECORDS_NOT_FOUND", f"records expression {template.records.expression!r} "
                        f"failed on this payload: {exc}", field="records") from None
    if records is None:
        raise Rejection(400, "RECORDS_NOT_FOUND", f"records expression {template.records.expression!r} finds "
                        "nothing in this payload", field="records")
    if not isinstance(records, list):
        raise Rejection(400, "RECORDS_NOT_AN_ARRAY", f"records expression {template.records.expression!r} "
                        f"yields {_json_type(records)} {brief(records)}, not an array of records", field="records")
    if len(records) > MAX_RECORDS:
        raise Rejection(400, "TOO_MANY_RECORDS", f"{len(records)} records; at most {MAX_RECORDS} per request "
                        "(send the rest in further requests)", field="records")
    return records


Skipped = tuple[int, str, object, str]  # (record index, reason, the offending value as shown, detail)


def map_records(records: list, template: CompiledTemplate, table: ResolutionTable, now: int,
                search: BudgetedSearch | None = None) -> tuple[Readings, int, list[Skipped], list[str]]:
    """Map records to readings columns: (readings, records written, skipped, metric names written).

    A record is written whole or skipped whole: every value is checked before any is kept.
    Raises BudgetExceeded when `search`'s budget runs out.
    """
    search = search or BudgetedSearch(Budget())
    readings = Readings()
    names: dict[str, None] = {}
    skipped: list[Skipped] = []
    written = 0
    latest_allowed = now + MAX_FUTURE_MS
    parse_ts = _TIMESTAMP_PARSERS[template.timestamp_format]
    for index, record in enumerate(records):
        try:
            raw_ts = search.search(template.timestamp, record)
            if raw_ts is None:
                raise _Skip("missing_timestamp", None, f"timestamp expression {template.timestamp.expression!r} "
                            "finds nothing in the record")
            ts = parse_ts(raw_ts)
            if ts is None or not 0 <= ts <= latest_allowed:
                raise _Skip("invalid_timestamp", raw_ts, f"timestamp {brief(raw_ts)} is not "
                            f"{template.timestamp_format} between 1970 and now")
            row = []
            for name, expression in template.metrics:
                value = search.search(expression, record)
                if value is None:
                    continue  # this record does not carry this metric
                resolved = table.get(name.lower())
                if resolved is None:
                    raise _Skip("unknown_metric", name, f"metric {brief(name)} is not defined on the thing's type")
                try:
                    row.append((resolved, coerce(resolved.data_type, value, resolved.enum_values)))
                except CoercionError as exc:
                    raise _Skip("invalid_value", value, f"metric {brief(name)}: value {brief(value)}: {exc}") from None
            if not row:
                raise _Skip("no_metric_values", None, "no metric expression finds a value in the record")
        except _Skip as skip:
            skipped.append((index, skip.reason, _shown(skip.value), skip.detail))
            continue
        except BudgetExceeded:
            raise  # the whole request, not this record
        except Exception as exc:  # a JMESPath function on the wrong type in this record
            skipped.append((index, "expression_failed", None, clip(f"{type(exc).__name__}: {exc}", 512)))
            continue
        written += 1
        for resolved, coerced in row:
            readings.metric(resolved.metric_id, resolved.data_type).add(ts, *coerced)
            names[resolved.name] = None
    return readings, written, skipped, list(names)


class _Skip(Exception):
    def __init__(self, reason: str, value: object, detail: str):
        self.reason, self.value, self.detail = reason, value, detail


def _epoch_ms(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit() and len(value) <= 16:
        return int(value)
    return None


def _epoch_s(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and len(value) <= 20:
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return None
    if isinstance(value, int):
        return value * 1000
    if isinstance(value, float) and math.isfinite(value):
        return round(value * 1000)
    return None


def _iso_with_offset(value: object) -> int | None:
    """ISO 8601 with its offset (Z or ±hh:mm): a time without one is ambiguous, so refused."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    time_part = value[10:]  # after the date: a date's own dashes are no offset
    if not _OFFSET.search(time_part):
        return None
    return timestamp_ms(value)


_OFFSET = re.compile(r"\d(?:[Zz]|[+-]\d{2}(?::?\d{2})?)\Z")
_TIMESTAMP_PARSERS = {"epochMillis": _epoch_ms, "epochSeconds": _epoch_s, "iso8601": _iso_with_offset}


def _shown(value: object) -> object:
    """A skipped value as the report shows it: scalars as they are (strings cut), others briefly."""
    if value is None or isinstance(value, (bool, int, float)):
        return value if not isinstance(value, float) or math.isfinite(value) else brief(value)
    if isinstance(value, str):
        return clip(value, SHOWN_VALUE_CHARS)
    return brief(value)


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _dead_letter(envelope: dict, skipped: list[Skipped], now: int) -> dict:
    """One dead letter for the request's skipped records, carrying the whole body: a replay
    maps the payload afresh (records written already are rewritten in place, readings being
    keyed by thing, metric and time)."""
    shown = "; ".join(f"[{index}] {reason}: {detail}" for index, reason, _, detail in skipped[:5])
    more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return {
        "request_id": envelope["request_id"], "org_id": envelope["org_id"], "key_id": envelope.get("key_id"),
        "route": envelope["route"], "thing_id": envelope.get("thing_id"), "stream": envelope.get("stream"),
        "template_id": envelope.get("template_id"), "received_at": envelope["received_at"],
        "item_index": skipped[0][0], "reason": "RECORDS_SKIPPED",
        "detail": clip(f"{len(skipped)} record(s) skipped: {shown}{more}", 512),
        "original": envelope["body"], "rejected_at": now,
    }
