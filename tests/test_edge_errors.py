"""The catalog refuses in its own words; the edge answers each kind with its HTTP status."""

from __future__ import annotations

import catalog.errors
from catalog.errors import CatalogError, Conflict, Forbidden, Invalid, NotFound, not_found
from producers.edge.errors import CATALOG_STATUS, from_catalog


def test_every_kind_of_catalog_refusal_has_its_status():
    kinds = {kind for kind in vars(catalog.errors).values()
             if isinstance(kind, type) and issubclass(kind, CatalogError) and kind is not CatalogError}
    assert kinds == set(CATALOG_STATUS)
    assert [from_catalog(kind("no")).status for kind in (Invalid, Forbidden, NotFound, Conflict)] == [400, 403, 404, 409]


def test_a_refusal_answers_in_the_one_shape_with_its_code_and_details():
    error = from_catalog(Invalid("bad expression", field="metrics.level", code="INVALID_TEMPLATE", expression="v["))
    assert (error.status, error.body()) == (400, {"error": {"code": "INVALID_TEMPLATE", "message": "bad expression",
                                                            "details": {"field": "metrics.level", "expression": "v["}}})
    error = from_catalog(not_found("thing", "thg_1", field="filters.thingIds"))
    assert (error.status, error.body()) == (404, {"error": {"code": "NOT_FOUND", "message": "thing 'thg_1' not found",
                                                            "details": {"field": "filters.thingIds", "id": "thg_1"}}})
    assert from_catalog(Conflict("taken")).body()["error"] == {"code": "CONFLICT", "message": "taken", "details": {}}
