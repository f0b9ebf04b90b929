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


def test_every_dialect_answers_a_verdict_the_processor_could_not_give_yet_with_retry_after():
    # processors.judge answers 503 UNAVAILABLE while its catalog view lags; clients back off by the header.
    from producers.dialects import assets, datasource, frames, harbor, templates

    verdict = {"request_id": "req_1", "duplicate_of": None, "http_status": 503, "status": "failed",
               "errors": [{"code": "UNAVAILABLE", "message": "send the request again in 5 s"}]}
    replies = [frames.verdict_response(verdict), datasource.verdict_response(verdict),
               assets.verdict_response(verdict, {}), harbor.verdict_response(verdict, "hbr_1"),
               templates.report_response(verdict)]
    for reply in replies:
        assert reply.status_code == 503 and reply.headers["Retry-After"] == "5", reply.body
        assert reply.headers["X-Request-Id"] == "req_1"
    assert "Retry-After" not in frames.verdict_response({**verdict, "http_status": 422}).headers
