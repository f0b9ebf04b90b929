"""The catalog mirror's pure column builders."""

import orjson

from sinks.catalog_dims import TABLES, metric_definitions, thing_types, things


def record(kind: str, entity_id: str, body: dict, updated_at: int = 5) -> dict:
    return {"kind": kind, "id": entity_id, "org_id": "org_a", "body": orjson.dumps(body).decode(),
            "updated_at": updated_at}


RECORDS = [
    record("metric", "mdef_1", {"name": "soc", "dataType": "Double", "defaultAggregation": "Last", "unitLabel": "%"}),
    record("thing_type_version", "tdef_1", {"thingTypeId": "tdefi_1", "displayName": "Battery",
                                            "metricIds": ["mdef_1"]}),
    record("thing", "thg_1", {"thingName": "A1", "placeId": "site_1", "thingTypeId": "tdefi_1",
                              "thingTypeVersionId": "tdef_1", "properties": {"capacity": "75"}}),
    record("api_key", "key_1", {"hash": "secret"}),
]


def test_each_table_takes_only_its_kind():
    assert metric_definitions(RECORDS) == {
        "org_id": ["org_a"], "metric_id": ["mdef_1"], "name": ["soc"], "display_name": [""], "description": [""],
        "data_type": ["Double"], "default_aggregation": ["Last"], "unit_label": ["%"], "enum_values": [[]],
        "updated_at": [5], "deleted": [0]}
    assert thing_types(RECORDS)["version_id"] == ["tdef_1"]
    assert things(RECORDS)["properties"] == ['{"capacity":"75"}']


def test_api_keys_are_never_mirrored():
    for build in TABLES.values():
        assert "secret" not in repr(build(RECORDS))
