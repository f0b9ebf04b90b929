"""The read-only guard's lexer alone (no services): what it lets through and what it
refuses; tests/test_readonly_sql.py sends the same kinds to real engines."""

from __future__ import annotations

import pytest

from warehouse import ReadOnlyError
from warehouse.guard import check_readonly

ALLOWED = [
    "SELECT 1",
    "select 1;",
    "SELECT 1 ; ; ",
    "(SELECT 1) UNION ALL (SELECT 2)",
    "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
    "SELECT 'DROP TABLE t; --' AS s",
    "SELECT 'it''s; DROP', 'back\\'slash; DELETE' AS s",
    "SELECT $$; DROP TABLE t$$ AS s, $x$ file('/etc/passwd') $x$",
    "SELECT 1 -- ; DROP TABLE t",
    "SELECT 1 /* ; SETTINGS readonly = 0 */",
    "SELECT count() FROM system.tables",
    "SELECT formatDateTime(now(), '%F'), format('{}', 1), profile.file FROM t AS profile",
    "SELECT `file` FROM t",  # a column named file is no call
    "SELECT * FROM numbers(10)",
]

REFUSED = {
    "SELECT 1; SELECT 2": "one statement at a time",
    "SELECT 1; DROP TABLE t": "DROP after ';' is DDL",
    "SELECT 1 /* ; */ ; /* x */ DELETE FROM t WHERE 1": "DELETE after ';' is a write",
    "SELECT 1 -- x\n; TRUNCATE t": "TRUNCATE after ';' is DDL",
    "  /* c */ -- c\n INSERT INTO t VALUES (1)": "INSERT is a write",
    "(ALTER TABLE t DELETE WHERE 1)": "ALTER is a write",
    "OPTIMIZE TABLE t FINAL": "OPTIMIZE is DDL",
    "SYSTEM RELOAD CONFIG": "SYSTEM is a SYSTEM command",
    "SET max_threads = 1": "SET is a settings change",
    "KILL QUERY WHERE 1": "KILL is a query kill",
    "GRANT ALL ON *.* TO u": "GRANT is an access change",
    "SHOW TABLES": "SHOW is not a query",
    "SELECT 1 SETTINGS max_threads = 1": "SETTINGS clauses are not allowed",
    "SELECT * FROM (SELECT 1 SETTINGS readonly = 0)": "SETTINGS clauses are not allowed",
    "SELECT 1 FORMAT CSV": "leave out FORMAT",
    "SELECT 1 INTO OUTFILE 'x'": "INTO OUTFILE writes a file",
    "SELECT file('/etc/passwd')": "file() reaches outside",
    "SELECT `file`('/etc/passwd')": "file() reaches outside",
    "SELECT \"file\" ( '/etc/passwd')": "file() reaches outside",
    "SELECT arrayMap(p -> file(p), ['/etc/passwd'])": "file() reaches outside",
    "SELECT * FROM s3('http://h/b/k')": "s3() reaches outside",
    "SELECT * FROM t JOIN remoteSecure('h', db.t) USING (a)": "remoteSecure() reaches outside",
    "SELECT * FROM Python(df)": "Python() reaches outside",
    "SELECT * FROM view(SELECT * FROM url('http://h'))": "url() reaches outside",
    "": "the query is empty",
    "-- only a comment": "the query is empty",
    ";": "the query is empty",
}


@pytest.mark.parametrize("sql", ALLOWED)
def test_reads_pass(sql):
    assert check_readonly(sql) == sql


@pytest.mark.parametrize("sql", list(REFUSED))
def test_everything_else_is_refused_saying_why(sql):
    with pytest.raises(ReadOnlyError) as refused:
        check_readonly(sql)
    assert REFUSED[sql] in str(refused.value)
