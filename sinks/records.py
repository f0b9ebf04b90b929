"""RecordBatch messages → the dialects' own tables (stream items, data-source records, ...).

Each message names its table and carries its rows as JSON objects; a table's
builder takes the rows meant for it, in the columns the table declares, plus
the message's request id, org and version. Rows for a table no builder serves
are not written: upgrade sinks before processors.
"""

from __future__ import annotations

import orjson

from sinks.record_sink import BuildColumns
from sinks.stream_items import stream_items_columns

# Filled in by each message, not by the rows.
MESSAGE_COLUMNS = ("request_id", "org_id", "version")


def table_rows(table: str, columns: tuple[str, ...]) -> BuildColumns:
    """A column builder for `table`: `columns` taken from each row (None when absent,
    which the insert turns into the column's default), then MESSAGE_COLUMNS."""

    def build(batches: list[dict]) -> dict[str, list]:
        out: dict[str, list] = {name: [] for name in (*columns, *MESSAGE_COLUMNS)}
        for batch in batches:
            if batch["table"] != table:
                continue
            rows = orjson.loads(batch["rows"])
            for row in rows:
                for name in columns:
                    out[name].append(row.get(name))
            for name in MESSAGE_COLUMNS:
                out[name].extend([batch[name]] * len(rows))
        return out

    return build


# table → builder: a dialect that writes a table of its own adds a line here (and its DDL
# to warehouse/ddl.py).
RECORD_TABLES: dict[str, BuildColumns] = {
    "stream_items_input": stream_items_columns,  # seed 002: POST /api/ingest
    "datasource_records": table_rows("datasource_records", (  # seed 004
        "datasource_id", "record_key", "record_index", "ts", "record")),
}
