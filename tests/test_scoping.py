"""warehouse.scoping's pure half: an org's database name, its views, the `sluice.` prefixes
pointed at it, and the parse check (on EXPLAIN AST text as ClickHouse writes it)."""

from __future__ import annotations

import pytest

from warehouse.errors import ReadOnlyError
from warehouse.scoping import TABLES, check_scoped, org_database, pointed, view_statements


def test_an_orgs_database_is_named_after_it_or_a_hash_of_an_unusual_id():
    assert org_database("sluice", "org_demo") == "sluice_org_demo"
    odd = org_database("sluice", "org'; DROP")
    assert odd.startswith("sluice_org_") and odd.replace("_", "").isalnum()


def test_the_views_filter_every_analyst_table_on_the_org():
    statements = view_statements("sluice", "org_demo")
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS sluice_org_demo"
    assert len(statements) == 1 + len(TABLES)
    assert all(s.endswith("WHERE org_id = 'org_demo'") for s in statements[1:])


def test_only_the_warehouses_prefixes_are_pointed_not_strings_comments_or_lookalikes():
    sql = ("SELECT 'sluice.readings', x.sluice FROM sluice.readings AS x -- sluice.things\n"
           "JOIN `sluice`.things USING (thing_id) JOIN \"sluice\" . places USING (place_id) JOIN sluicex.y")
    assert pointed(sql, "sluice", "sluice_org_a") == (
        "SELECT 'sluice.readings', x.sluice FROM sluice_org_a.readings AS x -- sluice.things\n"
        "JOIN sluice_org_a.things USING (thing_id) JOIN sluice_org_a . places USING (place_id) JOIN sluicex.y")


AST = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    {select}
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      {table}
"""


@pytest.mark.parametrize("select, table", [
    ("Identifier item.revenue", "TableIdentifier sluice_org_a.readings (alias r)"),
    ("Function count (children 1)", "TableIdentifier readings"),
    ("Identifier r.value", "Subquery (children 1)"),
])
def test_a_query_over_the_orgs_views_passes(select, table):
    check_scoped(AST.format(select=select, table=table), "sluice", "sluice_org_a", {"sluice", "sluice_org_a"})


@pytest.mark.parametrize("select, table, named", [
    ("Identifier v", "TableIdentifier sluice.readings", "sluice.readings"),
    ("Identifier v", "TableIdentifier sluice_org_b.readings", "sluice_org_b"),
    ("Identifier v", "TableIdentifier system.tables", "system.tables"),
    ("Identifier v", "TableIdentifier other.t", "other.t"),
    ("Identifier v", "Function numbers (alias n) (children 1)", "numbers()"),
    ("Function dictGetString (children 1)", "TableIdentifier readings", "dictGetString()"),
    ("Function joinGet (children 1)", "TableIdentifier readings", "joinGet()"),
    ("Identifier sluice.readings", "TableIdentifier readings", "sluice.readings"),
])
def test_anything_else_is_refused_by_name(select, table, named):
    with pytest.raises(ReadOnlyError, match=named.replace("(", r"\(").replace(")", r"\)")):
        check_scoped(AST.format(select=select, table=table), "sluice", "sluice_org_a",
                     {"sluice", "sluice_org_a", "other"})
