"""The bounds of a query run for a caller, as ClickHouse settings.

Every read a caller causes (the read API's queries, an analyst's SQL) gets a
deadline and a memory cap; an analyst's SQL also gets result-size caps, which
throw rather than shorten the result (`result_overflow_mode = 'throw'`), so a
too-large result is always an error, never a quietly partial answer. The values
come from config.Settings (SLUICE_SQL_*); 0 leaves a bound off. Pure: nothing blocks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from config import Settings
from warehouse.literals import quote_string

#: ClickHouse error codes of the bounds, and of a query stopped by KILL QUERY.
TIMEOUT_EXCEEDED = 159
MEMORY_LIMIT_EXCEEDED = 241
TOO_MANY_ROWS_OR_BYTES = 396
QUERY_WAS_CANCELLED = 394


@dataclasses.dataclass(frozen=True)
class QueryLimits:
    timeout_s: float
    max_memory_bytes: int
    max_result_rows: int
    max_result_bytes: int
    concurrency: int  # analyst queries at once (Warehouse.readonly_stream / readonly_query)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "QueryLimits":
        """The limits `settings` (by default, the declared defaults) set."""
        s = settings or Settings()
        return cls(timeout_s=s.sql_timeout_s, max_memory_bytes=s.sql_max_memory_bytes,
                   max_result_rows=s.sql_max_result_rows, max_result_bytes=s.sql_max_result_bytes,
                   concurrency=max(1, s.sql_concurrency))

    def for_reads(self) -> dict[str, Any]:
        """The settings of every query run for a caller: deadline and memory."""
        return {"max_execution_time": self.timeout_s, "max_memory_usage": self.max_memory_bytes}

    def for_analysts(self) -> dict[str, Any]:
        """for_reads(), and the result caps of an analyst's query (an error beyond them)."""
        return {**self.for_reads(), "max_result_rows": self.max_result_rows,
                "max_result_bytes": self.max_result_bytes, "result_overflow_mode": "throw"}


    def exceeded(self, code: int | None, message: str = "") -> tuple[str, str] | None:
        """When a query failed with ClickHouse error `code` (and `message`) because it ran
        into one of these bounds: (the setting that sets it, what happened in words)."""
        if code == TIMEOUT_EXCEEDED:
            return _env("sql_timeout_s"), f"the query ran past its deadline of {self.timeout_s:g} s"
        if code == MEMORY_LIMIT_EXCEEDED:
            return _env("sql_max_memory_bytes"), f"the query needed more memory than its {self.max_memory_bytes} bytes"
        if code == TOO_MANY_ROWS_OR_BYTES:
            if "max bytes" in message:
                return _env("sql_max_result_bytes"), f"the result passes {self.max_result_bytes} bytes"
            return _env("sql_max_result_rows"), f"the result passes {self.max_result_rows} rows"
        return None


def _env(field: str) -> str:
    """The environment variable of a Settings field."""
    return Settings.__dataclass_fields__[field].metadata["env"]


def settings_clause(settings: dict[str, Any]) -> str:
    """`name = value, ...` for a SETTINGS clause or a SET statement."""
    return ", ".join(f"{name} = {_literal(value)}" for name, value in settings.items())


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return quote_string(value)
    return f"{value:g}" if isinstance(value, float) else str(int(value))
