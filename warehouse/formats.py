"""The ClickHouse output formats an analyst's query is answered in, and how each comes out
of the engine.

The engine writes every one of them itself; Sluice only passes the name through. Two
kinds: a *streamed* format's chunks, joined, are one valid answer (lines, or Native's
self-describing blocks; a `WithNames` header repeated per chunk is dropped), so it is sent
as the engine produces it. A *whole* format is one document (a JSON object, a Parquet or
Arrow file) which chDB's streaming would write once per chunk, so the embedded engine
builds it in one piece. Output settings (`output_format_*`) a client asks for are passed
on; no other setting is. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from warehouse.errors import ReadOnlyError

STREAMED = ("TabSeparated", "TabSeparatedRaw", "TabSeparatedWithNames", "TSV", "TSVRaw", "TSVWithNames", "CSV",
            "CSVWithNames", "JSONEachRow", "JSONLines", "JSONCompactEachRow", "JSONCompactEachRowWithNames",
            "Native", "RowBinary")
WHOLE = ("JSON", "JSONCompact", "JSONStrings", "Parquet", "Arrow", "ArrowStream", "RowBinaryWithNamesAndTypes",
         "TabSeparatedWithNamesAndTypes", "CSVWithNamesAndTypes", "Pretty", "PrettyCompact")

#: Lower-case name -> the engine's name, for every format an analyst query answers in.
FORMATS = {name.lower(): name for name in STREAMED + WHOLE}

_OUTPUT_SETTING = re.compile(r"output_format_[a-z0-9_]{1,80}|date_time_output_format")
_SETTING_VALUE = re.compile(r"[A-Za-z0-9_.+-]{0,64}")


def canonical(fmt: str) -> str:
    """The engine's name of output format `fmt` (any case); ValueError if no analyst query answers in it."""
    try:
        return FORMATS[fmt.lower()]
    except KeyError:
        raise ValueError(f"unknown output format {fmt!r}; these are served: {', '.join(FORMATS.values())}") from None


def is_whole(fmt: str) -> bool:
    """Whether `fmt` (the engine's name) is one document, built whole by the embedded engine."""
    return fmt in WHOLE


def output_settings(asked: Mapping[str, str]) -> dict[str, int | str]:
    """The output settings among `asked` (name -> text), digits as numbers; ReadOnlyError for a
    value that is not a plain word or number. Other names are left out."""
    chosen: dict[str, int | str] = {}
    for name, value in asked.items():
        if not _OUTPUT_SETTING.fullmatch(name):
            continue
        if not _SETTING_VALUE.fullmatch(value):
            raise ReadOnlyError(f"the value of {name} must be a plain word or number")
        chosen[name] = int(value) if value.isdigit() else value
    return chosen
