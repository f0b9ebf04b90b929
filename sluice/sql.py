"""`sluice sql`: a read-only query, printed as a table.

With the embedded warehouse the running edge owns chDB's folder, so while the
stack is up the query goes through the edge's admin SQL endpoint; otherwise
the warehouse is opened directly.
"""

from __future__ import annotations

import sys

import httpx

from config import Settings


def format_table(columns: list[str], rows: list[list]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    def fmt(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"
    out = [line, fmt(columns), line, *(fmt(r) for r in cells), line, f"({len(rows)} rows)"]
    return "\n".join(out)


def _through_edge(settings: Settings, query: str) -> tuple[list[str], list[list]] | None:
    from sluice.stack import admin_key

    url = f"http://{settings.http_host}:{settings.http_port}"
    try:
        reply = httpx.post(f"{url}/v2/admin/sql", json={"sql": query},
                           headers={"X-Api-Key": admin_key(settings)}, timeout=60)
    except httpx.ConnectError:
        return None
    if reply.status_code != 200:
        raise RuntimeError(reply.json().get("error", {}).get("message", reply.text))
    body = reply.json()
    return body["columns"], body["rows"]


def run_sql(settings: Settings, query: str) -> int:
    try:
        result = _through_edge(settings, query) if settings.embedded_warehouse else None
        if result is None:
            from warehouse import open_warehouse

            warehouse = open_warehouse(settings)
            try:
                found = warehouse.readonly_query(query)
            finally:
                warehouse.close()
            result = list(found.column_names), [list(r) for r in found.rows]
    except Exception as exc:
        print(f"sluice sql: {exc}", file=sys.stderr)
        return 1
    print(format_table(*result))
    return 0
