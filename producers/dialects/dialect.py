"""What a dialect is: its routes, the paths they own, and the shape its errors answer in."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter

import schemas
from producers.edge.errors import ApiError

# An error as one dialect's clients expect it: the JSON body (status and headers are shared).
ErrorShape = Callable[[ApiError], dict]


def sluice_error_body(error: ApiError) -> dict:
    """Sluice's own shape: {"error": {"code", "message", "details"}}."""
    return error.body()


@dataclass(frozen=True)
class Dialect:
    name: str
    router: APIRouter
    paths: re.Pattern  # every path of the dialect: ingest body limit, this error shape
    error_body: ErrorShape = sluice_error_body


def verdict_headers(verdict: dict) -> dict[str, str]:
    """The headers of every dialect's sync reply: the request id, whether an Idempotency-Key
    replayed a first verdict, and when to retry a request the processor could not judge yet."""
    headers = {"X-Request-Id": verdict["request_id"]}
    if verdict["duplicate_of"]:
        headers["Idempotent-Replayed"] = "true"
    if verdict["http_status"] == 503:
        headers["Retry-After"] = str(schemas.UNAVAILABLE_RETRY_AFTER_S)
    return headers
