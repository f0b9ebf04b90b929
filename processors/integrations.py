"""The rulebook for an integration's message (route `integration`): an MQTT message, a
webhook's body or a polled page, mapped through the integration's template onto the
things its external resource ids are mapped to.

The envelope's body is the message, `{"topic", "headers", "payload"}` (the integrations
stage and the webhook route write it); `key_id` names the integration. The template
(processors.templates, the same rules as a template request) finds the records in the
payload; the integration's resource expression finds each record's external id, on the
message (`topicLevels` added: the topic split at "/") or on the record; its `things` map
names the thing. Records of an external id mapped to nothing are not written: the
request's dead letter (reason UNMAPPED_RESOURCE) carries the whole message, so `sluice
replay --reason UNMAPPED_RESOURCE` once the mapping is added lands them (the records that
were written then are rewritten in place).

An integration with `autoRegister` maps an external id that `things` does not name to a
thing it registers in the given place with the given type, the first time the id is seen:
the thing's id is derived from (org, integration, external id), so every processor decides
the same one, and it reaches the catalog as the request's catalog output
(Outcome.catalog), like a harbor's ships. At most AUTO_REGISTER_MAX per message; the ids
past them are unmapped, and a replay registers them.

Pure: the catalog is read through the lookups it is given.
"""

from __future__ import annotations

import time

import orjson

from catalog.brief import brief, clip
from catalog.integrations import auto_thing, auto_thing_id
from catalog.templates import TemplateCompileError, compile_expression
from processors import json_body
from processors.budget import Budget, BudgetedSearch, BudgetExceeded
from processors.outcome import Outcome, Rejection, make_verdict, rejected
from processors.templates import (MAX_SKIPPED_LISTED, Lookup, TableLookup, map_records, payload_records,
                                  pinned_template)

UNMAPPED = "UNMAPPED_RESOURCE"
MAX_UNMAPPED_LISTED = 100
AUTO_REGISTER_MAX = 100  # things one message registers


def map_integration(envelope: dict, get: Lookup, table_lookup: TableLookup, budget: Budget | None = None) -> Outcome:
    """Judge one integration message; never raises for bad input (BudgetExceeded aside, as
    every rulebook: the caller turns it into a verdict)."""
    now = int(time.time() * 1000)
    search = BudgetedSearch(budget or Budget())
    org_id = envelope["org_id"]
    try:
        integration = get("integration", envelope.get("key_id") or "", org_id)
        if integration is None:
            raise Rejection(404, "INTEGRATION_NOT_FOUND", f"integration {brief(envelope.get('key_id'))} not found "
                            "(deleted?)")
        template = pinned_template({"org_id": org_id, "template_id": integration["templateId"]}, get)
        message = _message(envelope)
        records = payload_records({json_body.PARSED: message["payload"]}, template, search)
        by_id, unresolved = _external_ids(integration, message, records, search)
    except Rejection as rejection:
        return rejected(envelope, rejection, 0, now)
    batches, skipped, names, unmapped, written, values = [], [], {}, {}, 0, 0
    registered: list[dict] = []  # catalog entities, as Outcome.catalog holds them
    for external_id, indexes in by_id.items():
        thing = _thing(get, org_id, integration, external_id)
        if thing is None and external_id not in integration["things"] and integration.get("autoRegister") \
                and len(registered) < AUTO_REGISTER_MAX:
            thing, new = _registered(get, org_id, integration, external_id, envelope["received_at"])
            if new:
                registered.append({"kind": "thing", "id": thing["id"], "org_id": org_id, "body": thing})
        if thing is None:
            unmapped[external_id] = len(indexes)
            continue
        table = table_lookup(thing["thingTypeVersionId"]) if thing.get("thingTypeVersionId") else None
        if table is None:
            skipped.extend((i, "type_not_initialized", thing["id"], "the thing has no initialized thing type")
                           for i in indexes)
            continue
        readings, count, skips, metric_names = map_records([records[i] for i in indexes], template, table, now,
                                                           search)
        skipped.extend((indexes[i], reason, value, detail) for i, reason, value, detail in skips)
        names.update(dict.fromkeys(metric_names))
        written += count
        values += readings.rows
        if readings.rows:
            batches.append({"request_id": envelope["request_id"], "org_id": org_id, "thing_id": thing["id"],
                            "type_version_id": thing["thingTypeVersionId"], "version": envelope["received_at"],
                            "frames": count, "readings": readings, "locations": []})
    skipped.extend((i, "missing_resource_id", None, "the resource expression finds no id") for i in unresolved)
    skipped.sort()
    report = {"integrationId": integration["id"], "templateId": template.template_id,
              "templateRevision": template.revision, "recordsParsed": len(records), "readingsWritten": written,
              "metricValuesWritten": values,
              "recordsSkipped": [{"index": i, "reason": r, "value": v} for i, r, v, _ in skipped[:MAX_SKIPPED_LISTED]],
              "unmappedResources": [{"externalId": k, "records": n} for k, n in list(unmapped.items())
                                    [:MAX_UNMAPPED_LISTED]],
              "thingsRegistered": [{"externalId": e["body"]["externalId"], "thingId": e["id"]} for e in registered]}
    errors = [{"code": UNMAPPED, "message": _unmapped_words(unmapped), "field": "resource"}] if unmapped else []
    status = "ingested" if written or not records else "rejected"
    verdict = make_verdict(envelope, status, 200 if written or not records else 422, len(records), written,
                           list(names), errors, now)
    verdict["report"] = orjson.dumps(report).decode()
    dead_letters = []
    if unmapped or skipped:
        reason = UNMAPPED if unmapped else "RECORDS_SKIPPED"
        detail = "; ".join(filter(None, [
            _unmapped_words(unmapped) if unmapped else "",
            f"{len(skipped)} record(s) skipped: " + "; ".join(f"[{i}] {r}: {d}" for i, r, _, d in skipped[:5])
            if skipped else ""]))
        dead_letters = rejected(envelope, Rejection(422, reason, detail), 0, now).dead_letters
    return Outcome(batches, verdict, dead_letters, catalog=registered)


def _message(envelope: dict) -> dict:
    try:
        message = json_body.document(envelope)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "INVALID_PAYLOAD", f"the integration message is not JSON: {exc}", field="body") from None
    if not isinstance(message, dict) or "payload" not in message:
        raise Rejection(400, "INVALID_PAYLOAD", "the integration message is no {topic, headers, payload} object",
                        field="body")
    topic = message.get("topic")
    return {**message, "topicLevels": topic.split("/") if isinstance(topic, str) else []}


def _external_ids(integration: dict, message: dict, records: list,
                  search: BudgetedSearch) -> tuple[dict[str, list[int]], list[int]]:
    """({external id: indexes of its records}, indexes of records without an id)."""
    resource = integration["resource"]
    try:
        expression = compile_expression("resource.expression", resource["expression"])
    except TemplateCompileError as exc:  # only from a catalog written by hand: the edge refuses these
        raise Rejection(400, "INVALID_EXPRESSION", str(exc), field=exc.field) from None
    by_id: dict[str, list[int]] = {}
    unresolved: list[int] = []
    if resource["from"] == "message":
        found = _id(search, expression, message)
        if found is None:
            raise Rejection(422, "MISSING_RESOURCE_ID", f"resource expression {expression.expression!r} finds no id "
                            "in the message", field="resource.expression")
        return {found: list(range(len(records)))}, []
    for index, record in enumerate(records):
        found = _id(search, expression, record)
        if found is None:
            unresolved.append(index)
        else:
            by_id.setdefault(found, []).append(index)
    return by_id, unresolved


def _id(search: BudgetedSearch, expression, value: object) -> str | None:
    try:
        found = search.search(expression, value)
    except BudgetExceeded:
        raise
    except Exception:  # a function on the wrong type: no id
        return None
    if isinstance(found, bool) or not isinstance(found, (str, int)):
        return None
    return clip(str(found), 200)


def _thing(get: Lookup, org_id: str, integration: dict, external_id: str) -> dict | None:
    thing_id = integration["things"].get(external_id)
    # Only the org's own things: another org's thing id is as unmapped as none.
    return get("thing", thing_id, org_id) if thing_id else None


def _registered(get: Lookup, org_id: str, integration: dict, external_id: str,
                created_at: int) -> tuple[dict | None, bool]:
    """(the thing `autoRegister` gives the external id, whether this message registers it);
    (None, False) when its place or type is gone since."""
    thing = get("thing", auto_thing_id(org_id, integration["id"], external_id), org_id)
    if thing is not None:
        return thing, False
    auto = integration["autoRegister"]
    thing_type = get("thing_type", auto["thingTypeId"], org_id)
    if get("place", auto["placeId"], org_id) is None or thing_type is None:
        return None, False
    return auto_thing(org_id, integration, external_id, thing_type["latestVersionId"], created_at), True


def _unmapped_words(unmapped: dict[str, int]) -> str:
    shown = ", ".join(f"{brief(k)} ({n} record(s))" for k, n in list(unmapped.items())[:5])
    more = f" and {len(unmapped) - 5} more" if len(unmapped) > 5 else ""
    return f"external id(s) mapped to no thing: {shown}{more}; add the mapping (PUT /v2/integrations/{{id}}/things/" \
           "{externalId}) and replay"
