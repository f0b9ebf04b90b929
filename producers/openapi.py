"""The OpenAPI document: every status a route can answer, in the one error shape.

Routes declare their own error statuses with `responses=errors(...)`. The
statuses that come from layers in front of every route are added here, once:
the body limit (413), the content codings (415, on a route that takes a body),
the slow-client deadlines (408), the per-IP connection cap (429), and, on the
authenticated `/v2` routes, 401 and 403. FastAPI's 422 is dropped: validation
errors answer 400 INVALID_PAYLOAD here.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "details"],
        "properties": {
            "code": {"type": "string", "description": "machine-readable, e.g. INVALID_PAYLOAD"},
            "message": {"type": "string"},
            "details": {"type": "object", "additionalProperties": True,
                        "description": "`field` names the offending field; other keys depend on the code",
                        "properties": {"field": {"type": ["string", "null"]}}},
        },
    }},
}
DESCRIPTIONS = {
    400: "INVALID_PAYLOAD (or the rule's code): the request breaks a rule; `details.field` names where",
    401: "UNAUTHORIZED: no API key, or an invalid or revoked one",
    403: "FORBIDDEN: the key lacks the scope, or its filters do not cover the object (a filtered key writes no "
         "org-wide catalog object)",
    404: "NOT_FOUND: an id in the path, or one the body or query names (`details.field` says where), is no "
         "object of the caller's org (another org's objects are not found either)",
    408: "REQUEST_TIMEOUT: the headers or body did not arrive in time; the connection is closed",
    409: "CONFLICT: the name is taken",
    413: "PAYLOAD_TOO_LARGE: the body, as sent or inflated, exceeds the route's limit (`details.limit`)",
    415: "UNSUPPORTED_CONTENT_ENCODING: a Content-Encoding other than gzip, zstd or identity",
    424: "TYPE_NOT_INITIALIZED: the thing has no type",
    429: "RATE_LIMITED or TOO_MANY_CONNECTIONS; see Retry-After",
    503: "UNAVAILABLE: not ready, the broker is unreachable, the pipeline is behind (async ingest shed, "
         "`details.reason`), or the warehouse could not answer within its bounds (`details.setting`); see Retry-After",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with its description and the error schema."""
    declared: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        declared[status] = {"description": DESCRIPTIONS[status], "content": {"application/json": {"schema": ERROR_REF}}}
        if status in (429, 503):
            declared[status]["headers"] = RETRY_AFTER
    return declared


def _common(path: str) -> list[int]:
    return [401, 403, 408, 413, 429] if path.startswith("/v2/") else [408, 413, 429]


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, built once and cached like FastAPI's own."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):
                responses.pop("422")  # FastAPI's own; a route's declared 422 (admin SQL's bounds) stays
            statuses = _common(path) + ([415] if "requestBody" in operation else [])
            for status, spec in errors(*statuses).items():
                responses.setdefault(str(status), spec)
            if path.startswith("/v2/"):
                operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
    app.openapi_schema = schema
    return schema


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the document declares for `path`, and OPTIONS: the `Allow` header."""
    templates = getattr(app.state, "path_methods", None)
    if templates is None:
        templates = app.state.path_methods = [
            (re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"),
             {method.upper() for method in operations})
            for template, operations in document(app)["paths"].items()]
    methods = {"OPTIONS"}
    for pattern, declared in templates:
        if pattern.match(path):
            methods |= declared
    return sorted(methods)
