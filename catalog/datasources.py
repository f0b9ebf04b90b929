"""Data sources (seed 004): named collections of a client's records, each with a schema.

A data source is addressed by its catalog id (`dsrc_…`) or by the `externalId`
its creator gave it (the client's own identifier, unique in the org). Its schema
(field name → string, number, boolean or timestamp) is either declared when it
is created, and then final, or inferred from the records it accepts: the
processor that owns the data source's raw partition writes it as a
`datasource_schema` catalog entity, whose `version` grows with every field it
adds. `schema_of` reads whichever applies; the type rules are here too, so the
edge and the processors agree on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from catalog.errors import Conflict, not_found
from catalog.ids import new_id
from catalog.models import DataSourceIn
from catalog.store import Store, now_ms, ordered

TYPES = ("string", "number", "boolean", "timestamp")
SCHEMA_KIND = "datasource_schema"  # the inferred schema's catalog kind (keyed by the data source id)

# ISO 8601 date and time (seconds and fraction optional), with Z or an offset, or none (read as UTC).
# Stricter than datetime.fromisoformat, which also takes "20250101" or a bare date.
_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?\Z")
# What a DateTime64(3) column holds.
_MIN_YEAR, _MAX_YEAR = 1900, 2299
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = datetime.resolution * 1000  # one millisecond


def timestamp_ms(value: str) -> int | None:
    """Epoch ms of an ISO 8601 date-time string (UTC unless it says otherwise), or None."""
    if not _ISO_DATETIME.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:  # e.g. month 13
        return None
    if not _MIN_YEAR <= parsed.year <= _MAX_YEAR:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return (parsed - _EPOCH) // _MS


def value_type(value: object) -> str | None:
    """The schema type a JSON value shows: None for null (it fits every type) and for
    objects and arrays (which no type holds)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "timestamp" if timestamp_ms(value) is not None else "string"
    return None


def fits(value: object, expected: str) -> bool:
    """Whether a non-null JSON value fits a field of type `expected`."""
    if expected == "string":
        return isinstance(value, str)
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected == "boolean":
        return isinstance(value, bool)
    return isinstance(value, str) and timestamp_ms(value) is not None


@dataclass(frozen=True)
class Schema:
    fields: dict[str, str]  # field name → type; empty until a first record is accepted
    declared: bool  # declared at creation: final, and a record may not add fields
    version: int  # of the inferred schema (0: none yet, or declared)


Lookup = Callable[..., "dict | None"]  # (kind, id, org) -> body, as CatalogView.get


def schema_of(get: Lookup, org_id: str, datasource: dict) -> Schema:
    """A data source's current schema: declared, or as inferred so far."""
    if datasource.get("schema"):
        return Schema(dict(datasource["schema"]), True, 0)
    inferred = get(SCHEMA_KIND, datasource["id"], org_id)
    if inferred is None:
        return Schema({}, False, 0)
    return Schema(dict(inferred["fields"]), False, inferred["version"])


class DataSources(Store):
    def create_datasource(self, org_id: str, spec: DataSourceIn) -> dict:
        if spec.externalId is not None and self.view.datasource_by_external_id(org_id, spec.externalId):
            raise Conflict(f"a data source with externalId {spec.externalId!r} already exists",
                           field="externalId")
        datasource_id = new_id("datasource")
        body = {"id": datasource_id, **spec.model_dump(mode="json", by_alias=True, exclude_none=True),
                "createdAt": now_ms()}
        return self.writer.put("datasource", datasource_id, org_id, body)

    def datasource(self, org_id: str, reference: str) -> dict:
        """The org's data source by catalog id or externalId; 404 otherwise (another org's too)."""
        found = self.view.get("datasource", reference, org_id)
        if found is None:
            found = self.view.datasource_by_external_id(org_id, reference)
        if found is None:
            raise not_found("data source", reference)
        return found

    def datasources(self, org_id: str) -> list[dict]:
        return ordered(self.view.list("datasource", org_id))

    def datasource_view(self, org_id: str, datasource: dict) -> dict:
        """A data source as the API shows it: with its current schema and where it came from."""
        schema = schema_of(self.view.get, org_id, datasource)
        source = "declared" if schema.declared else "inferred" if schema.fields else None
        return {**datasource, "schema": schema.fields or None, "schemaSource": source,
                "schemaVersion": schema.version}
