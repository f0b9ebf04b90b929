"""The one error shape of the API: an HTTP status, a machine-readable code, a
message, and details pointing at the offending field.

The edge owns it: the catalog raises its own errors (catalog.errors), which
`from_catalog` answers with the status of their kind.
"""

from __future__ import annotations

from catalog import errors as catalog_errors
from catalog.errors import CatalogError, Conflict, Forbidden, Invalid, NotFound

# Each kind of catalog refusal and the status that answers it.
CATALOG_STATUS: dict[type[CatalogError], int] = {Invalid: 400, Forbidden: 403, NotFound: 404, Conflict: 409}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None, **details: object):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = {"field": field, **details} if field else dict(details)

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def from_catalog(error: CatalogError) -> ApiError:
    """The HTTP answer to a catalog refusal (a kind without a status of its own is a 400)."""
    status = next((CATALOG_STATUS[kind] for kind in type(error).__mro__ if kind in CATALOG_STATUS), 400)
    return ApiError(status, error.code, error.message, **error.details)


def not_found(kind: str, entity_id: str, field: str | None = None) -> ApiError:
    """404: `entity_id` names nothing of the caller's org; `field` says where a body or query named it."""
    return from_catalog(catalog_errors.not_found(kind, entity_id, field))
