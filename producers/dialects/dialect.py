"""What a dialect is: its routes, the paths they own, and the shape its errors answer in."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter

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
