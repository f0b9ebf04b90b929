"""The catalog's request bodies, as clients send them (seed 001 field names).

Models live at the API boundary only; the hot path works on the plain lookup
tables in catalog.resolution. Every string, list and map is bounded: each
entity is held in the memory of every service, so its size must be too.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator

# Bounds of catalog fields (documented in the README's limits table).
NAME_MAX = 200
TEXT_MAX = 2000
UNIT_MAX = 50
ID_MAX = 64
ENUM_VALUES_MAX = 1000
METRICS_PER_TYPE_MAX = 1000
PROPERTY_DEFINITIONS_MAX = 100
CONSTRAINTS_MAX = 20
PROPERTIES_MAX = 100
PROPERTY_VALUE_MAX = 1000
FILTER_IDS_MAX = 1000
DATASOURCE_FIELDS_MAX = 1000

Name = Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX)]
Text = Annotated[str, StringConstraints(max_length=TEXT_MAX)]
Unit = Annotated[str, StringConstraints(max_length=UNIT_MAX)]
EntityId = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX)]
EnumValue = Annotated[str, StringConstraints(max_length=NAME_MAX)]
# A thing's static property: a scalar, checked against its type's property definitions.
PropertyValue = StrictBool | int | float | Annotated[str, StringConstraints(max_length=PROPERTY_VALUE_MAX)]
Properties = Annotated[dict[Name, PropertyValue], Field(max_length=PROPERTIES_MAX)]
# Strict: JSON `false` or `"12"` is not a coordinate (lax mode would read them as 0.0 and 12.0).
Latitude = Annotated[float, Field(strict=True, ge=-90, le=90)]
Longitude = Annotated[float, Field(strict=True, ge=-180, le=180)]


class DataType(str, enum.Enum):
    Double = "Double"
    Long = "Long"
    Boolean = "Boolean"
    String = "String"


class Aggregation(str, enum.Enum):
    Last = "Last"
    Avg = "Avg"
    Sum = "Sum"
    Min = "Min"
    Max = "Max"
    Count = "Count"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MetricDefinitionIn(_Body):
    # Said in the schema too, so that a client (or a generator) knows it without asking.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"properties": {"dataType": {"const": "String"}}},
        {"properties": {"enumValues": {"type": "null"}}},
    ], "description": "`enumValues` only with dataType String (an enum-shaped metric)"})

    name: str = Field(min_length=1, max_length=NAME_MAX, pattern=r"^[A-Za-z][A-Za-z0-9_.\-]*$")
    dataType: DataType
    defaultAggregation: Aggregation
    displayName: Name | None = None
    description: Text | None = None
    unitLabel: Unit | None = None
    enumValues: list[EnumValue] | None = Field(default=None, min_length=1, max_length=ENUM_VALUES_MAX,
                                               json_schema_extra={"uniqueItems": True})

    @field_validator("enumValues")
    @classmethod
    def _unique(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError("enum values must be unique")
        return values


class MetricPatch(_Body):
    """The mutable fields of a metric definition (name and dataType never change)."""

    displayName: Name | None = None
    description: Text | None = None
    unitLabel: Unit | None = None
    defaultAggregation: Aggregation | None = None
    enumValues: list[EnumValue] | None = Field(default=None, min_length=1, max_length=ENUM_VALUES_MAX,
                                               json_schema_extra={"uniqueItems": True})


class Constraint(_Body):
    operator: str = Field(pattern=r"^(>|>=|<|<=|==|!=)$")
    value: str = Field(max_length=NAME_MAX)


class PropertyDefinition(_Body):
    name: Name
    description: Text | None = None
    unit: Unit | None = None
    valueType: str = Field(pattern=r"^(double|long|boolean|string)$")
    constraints: list[Constraint] = Field(default=[], max_length=CONSTRAINTS_MAX)


class ThingTypeIn(_Body):
    displayName: Name
    description: Text | None = None
    metricIds: list[EntityId] = Field(max_length=METRICS_PER_TYPE_MAX)
    propertyDefinitions: list[PropertyDefinition] = Field(default=[], max_length=PROPERTY_DEFINITIONS_MAX)


class ThingTypeVersionIn(_Body):
    """A new version of a thing type: its full contract (display fields optional)."""

    displayName: Name | None = None
    description: Text | None = None
    metricIds: list[EntityId] = Field(max_length=METRICS_PER_TYPE_MAX)
    propertyDefinitions: list[PropertyDefinition] = Field(default=[], max_length=PROPERTY_DEFINITIONS_MAX)


class PlaceIn(_Body):
    name: Name
    description: Text | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None


class ThingIn(_Body):
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"properties": {"properties": {"maxProperties": 0}}},
        {"required": ["thingTypeId"], "properties": {"thingTypeId": {"type": "string"}}},
    ], "description": "`properties` need a `thingTypeId` (they are checked against its property definitions)"})

    thingName: Name
    thingType: Name | None = None
    thingTypeId: EntityId | None = None
    thingDescription: Text | None = None
    manufacturer: Name | None = None
    model: Name | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    properties: Properties = {}


class ThingPatch(_Body):
    """A partial update of a thing; absent fields stay as they are."""

    thingName: Name | None = None
    thingType: Name | None = None
    thingTypeId: EntityId | None = None
    thingDescription: Text | None = None
    manufacturer: Name | None = None
    model: Name | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    properties: Properties | None = None


class OrgIn(_Body):
    # Shorter than other names: the org's first key is named "<name> admin".
    name: str = Field(min_length=1, max_length=NAME_MAX - len(" admin"))


class KeyFilters(_Body):
    """Restrict a key to some places and/or things (empty lists: no restriction)."""

    placeIds: list[EntityId] = Field(default=[], max_length=FILTER_IDS_MAX)
    thingIds: list[EntityId] = Field(default=[], max_length=FILTER_IDS_MAX)
    streams: list[Name] = Field(default=[], max_length=FILTER_IDS_MAX)


class ApiKeyIn(_Body):
    name: Name
    scopes: list[Literal["read", "write", "admin"]] = Field(min_length=1)
    filters: KeyFilters = KeyFilters()


# A stream's name is how ingest keys (filters.streams), the X-Stream header and the
# stream_items table name it, so it is a plain token and never changes.
STREAM_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class StreamIn(_Body):
    """A record stream (seed 002): items pushed to it with POST /api/ingest."""

    name: str = Field(min_length=1, max_length=NAME_MAX, pattern=STREAM_NAME_PATTERN)
    description: Text | None = None


class HarborIn(_Body):
    """A harbor (seed 003): a dataset of tall points. With autoProvision, unknown ships and
    cargos are created on first sight; without, points naming them are rejected."""

    name: Name
    description: Text | None = None
    autoProvision: StrictBool = False


class HarborPatch(_Body):
    name: Name | None = None
    description: Text | None = None
    autoProvision: StrictBool | None = None


class ShipIn(_Body):
    shipId: Name
    thingName: Name | None = None


class CargoIn(_Body):
    cargoId: Name
    displayName: Name | None = None
    description: Text | None = None
    unitLabel: Unit | None = None
    defaultAggregation: Aggregation | None = None


class DataSourceIn(_Body):
    """A data source (seed 004): where a client's records go. `externalId` is the client's own
    identifier (the seed's "67890"), unique in the org; `schema` (field name → type) is
    declared here or inferred from the first records (catalog.datasource_schema)."""

    name: Name
    externalId: str | None = Field(default=None, min_length=1, max_length=ID_MAX,
                                   pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
    description: Text | None = None
    schema_: dict[Name, Literal["string", "number", "boolean", "timestamp"]] | None = Field(
        default=None, alias="schema", min_length=1, max_length=DATASOURCE_FIELDS_MAX)

    @field_validator("externalId")
    @classmethod
    def _not_a_catalog_id(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("dsrc_"):
            raise ValueError("must not start with 'dsrc_' (the catalog's own ids)")
        return value


# Templates (seed 001, "Ingesting via templates"): JMESPath expressions, bounded like any text.
EXPRESSION_MAX = 1000
TEMPLATE_METRICS_MAX = 1000
Expression = Annotated[str, StringConstraints(min_length=1, max_length=EXPRESSION_MAX)]


class TemplateTimestamp(_Body):
    path: Expression
    format: Literal["epochMillis", "epochSeconds", "iso8601"]


class TemplateIn(_Body):
    """A ThingData template: where the records are in a raw payload (`records`, a JMESPath
    expression that must yield an array), each record's timestamp (`timestamp.path`,
    evaluated on the record, in `timestamp.format`), and which expression, evaluated on
    the record, feeds which metric (`metrics`: metric name → expression)."""

    name: Name
    description: Text | None = None
    target: Literal["ThingData"]
    records: Expression
    timestamp: TemplateTimestamp
    metrics: dict[Annotated[str, StringConstraints(min_length=1, max_length=NAME_MAX)], Expression] = Field(
        min_length=1, max_length=TEMPLATE_METRICS_MAX)
