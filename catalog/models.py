"""The catalog's request bodies, as clients send them (seed 001 field names).

Models live at the API boundary only; the hot path works on the plain lookup
tables in catalog.resolution.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z][A-Za-z0-9_.\-]*$")
    dataType: DataType
    defaultAggregation: Aggregation
    displayName: str | None = None
    description: str | None = None
    unitLabel: str | None = None
    enumValues: list[str] | None = Field(default=None, min_length=1)

    @field_validator("enumValues")
    @classmethod
    def _unique(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError("enum values must be unique")
        return values


class MetricPatch(_Body):
    """The mutable fields of a metric definition (name and dataType never change)."""

    displayName: str | None = None
    description: str | None = None
    unitLabel: str | None = None
    defaultAggregation: Aggregation | None = None
    enumValues: list[str] | None = Field(default=None, min_length=1)


class Constraint(_Body):
    operator: str = Field(pattern=r"^(>|>=|<|<=|==|!=)$")
    value: str


class PropertyDefinition(_Body):
    name: str = Field(min_length=1)
    description: str | None = None
    unit: str | None = None
    valueType: str = Field(pattern=r"^(double|long|boolean|string)$")
    constraints: list[Constraint] = []


class ThingTypeIn(_Body):
    displayName: str = Field(min_length=1)
    description: str | None = None
    metricIds: list[str]
    propertyDefinitions: list[PropertyDefinition] = []


class ThingTypeVersionIn(_Body):
    """A new version of a thing type: its full contract (display fields optional)."""

    displayName: str | None = Field(default=None, min_length=1)
    description: str | None = None
    metricIds: list[str]
    propertyDefinitions: list[PropertyDefinition] = []


class PlaceIn(_Body):
    name: str = Field(min_length=1)
    description: str | None = None
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)


class ThingIn(_Body):
    thingName: str = Field(min_length=1)
    thingType: str | None = None
    thingTypeId: str | None = None
    thingDescription: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    properties: dict[str, Any] = {}


class ThingPatch(_Body):
    """A partial update of a thing; absent fields stay as they are."""

    thingName: str | None = Field(default=None, min_length=1)
    thingType: str | None = None
    thingTypeId: str | None = None
    thingDescription: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    properties: dict[str, Any] | None = None


class OrgIn(_Body):
    name: str = Field(min_length=1, max_length=200)


class KeyFilters(_Body):
    """Restrict a key to some places and/or things (empty lists: no restriction)."""

    placeIds: list[str] = []
    thingIds: list[str] = []
    streams: list[str] = []


class ApiKeyIn(_Body):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Literal["read", "write", "admin"]] = Field(min_length=1)
    filters: KeyFilters = KeyFilters()
