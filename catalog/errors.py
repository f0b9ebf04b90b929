"""The one error shape of the API: an HTTP status, a machine-readable code, a
message, and details pointing at the offending field."""

from __future__ import annotations


class SluiceError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None, **details: object):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = {"field": field, **details} if field else dict(details)

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def not_found(kind: str, entity_id: str, field: str | None = None) -> SluiceError:
    """404: `entity_id` names nothing of the caller's org; `field` says where a body or query named it."""
    return SluiceError(404, "NOT_FOUND", f"{kind} {entity_id!r} not found", field=field, id=entity_id)
