"""An org's SQL over its own rows: a database of views per org, and the check that a
query reads nothing else.

Each org queried gets a database of its own (`<database>_<org id>`, e.g.
`sluice_org_demo`) holding one view per analyst table, each `SELECT * FROM` the
table `WHERE org_id = '<org>'`, created on demand. An org's query runs with that
database as its current one, its `<database>.` prefixes pointed at it
(`sluice.readings` reads the org's view), and is refused unless the engine's own
parse of it (EXPLAIN AST, which reads no data) names no other database, no table
function, no dictionary and no function that reads a table by name. So every
table it can reach is one of the org's views. Pure functions; only ReadOnlyError
is raised.
"""

from __future__ import annotations

import hashlib
import re

from warehouse.errors import ReadOnlyError
from warehouse.guard import spans
from warehouse.literals import quote_string

#: The tables an org's query sees (docs/analytics.md), each as a view of its org's rows.
TABLES = ("readings", "locations", "ingest_log", "rejects", "stream_items", "stream_items_latest",
          "datasource_records", "metric_definitions", "thing_types", "things", "places", "datasources")

#: Databases no org query names, whatever else exists (the engine's own, the information schema).
_ENGINE_DATABASES = frozenset({"system", "information_schema", "INFORMATION_SCHEMA", "default",
                               "_temporary_and_external_tables"})

#: Functions that read a table or dictionary named in a string, or the engine's internals.
_BY_NAME = re.compile(r"^(dict|joinget|hascolumnintable|__)", re.I)

_AST_LINE = re.compile(r"^(\s*)(\w+)(?: (\S+))?")


def org_database(database: str, org_id: str) -> str:
    """The database of `org_id`'s views beside `database`."""
    if re.fullmatch(r"[A-Za-z0-9_]{1,64}", org_id):
        return f"{database}_{org_id}"
    return f"{database}_org_{hashlib.sha256(org_id.encode()).hexdigest()[:16]}"


def view_statements(database: str, org_id: str) -> list[str]:
    """The statements that (re)create `org_id`'s database and views (idempotent)."""
    scoped = org_database(database, org_id)
    return [f"CREATE DATABASE IF NOT EXISTS {scoped}"] + [
        f"CREATE OR REPLACE VIEW {scoped}.{table} AS SELECT * FROM {database}.{table} "
        f"WHERE org_id = {quote_string(org_id)}" for table in TABLES]


def pointed(sql: str, database: str, scoped: str) -> str:
    """`sql` with each `database.` prefix (bare or quoted) naming `scoped` instead."""
    found = spans(sql)
    out, last = [], 0
    for i, (kind, text, start, end) in enumerate(found):
        name = text[1:-1] if kind == "quoted" else text
        if kind in ("word", "quoted") and name == database and i + 1 < len(found) and found[i + 1][1] == ".":
            out.append(sql[last:start] + scoped)
            last = end
    return "".join(out) + sql[last:]


def check_scoped(ast: str, database: str, scoped: str, databases: set[str]) -> None:
    """Raise ReadOnlyError unless the EXPLAIN AST text `ast` of a query reads only the
    tables of database `scoped`: names no other database among `databases` (nor the
    engine's, nor `database` or any other org's beside it), no table function, no
    function reading by name."""
    others = set(databases) | _ENGINE_DATABASES
    after_table = False
    for line in ast.splitlines():
        match = _AST_LINE.match(line)
        if not match:
            continue
        node, name = match.group(2), match.group(3) or ""
        if after_table and node not in ("TableIdentifier", "Subquery"):
            raise ReadOnlyError(f"{name or node}() is a table function; an org's SQL reads only its tables "
                                f"({', '.join(TABLES)})")
        after_table = node == "TableExpression"
        if node in ("Identifier", "TableIdentifier") and "." in name:
            first = name.split(".", 1)[0]
            if first != scoped and (first in others or first == database or first.startswith(f"{database}_")):
                raise ReadOnlyError(f"{name} is outside this org's tables: an org's SQL reads only its own "
                                    f"(sluice.readings, sluice.things, …), not other databases or system tables")
        if node == "Function" and _BY_NAME.match(name):
            raise ReadOnlyError(f"{name}() reads a table or dictionary by name; an org's SQL reads only its tables")
