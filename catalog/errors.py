"""What the catalog refuses, in its own words: the kind of refusal, a machine-readable
code, a message, and details pointing at the offending field.

The catalog knows nothing of HTTP: the edge answers each kind with its status
(producers.edge.errors).
"""

from __future__ import annotations


class CatalogError(Exception):
    """A catalog rule refused a request. `code` is machine-readable; `details` say where."""

    default_code = "CATALOG_ERROR"

    def __init__(self, message: str, field: str | None = None, code: str | None = None, **details: object):
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message
        self.details = {"field": field, **details} if field else dict(details)


class Invalid(CatalogError):
    """The request breaks a rule of the catalog (a property's constraint, a template that does not compile)."""

    default_code = "INVALID_PAYLOAD"


class Forbidden(CatalogError):
    """The caller may not do this to that object (a key acting on a broader one)."""

    default_code = "FORBIDDEN"


class NotFound(CatalogError):
    """An id names nothing of the caller's org."""

    default_code = "NOT_FOUND"


class Conflict(CatalogError):
    """A name or an external id is already taken."""

    default_code = "CONFLICT"


def not_found(kind: str, entity_id: str, field: str | None = None) -> NotFound:
    """`entity_id` names nothing of the caller's org; `field` says where a body or query named it."""
    return NotFound(f"{kind} {entity_id!r} not found", field=field, id=entity_id)
