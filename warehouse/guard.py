"""The parser-level half of read-only SQL: is this text one plain SELECT?

A small lexer of our own (strings, quoted identifiers, comments, words,
punctuation) reads the statement the way ClickHouse splits it, so a keyword
inside a string or a comment is never mistaken for one outside, and a
statement hidden after `;` or behind a comment is seen. The engine's own
`readonly = 1` is the other half (Warehouse.readonly_query): each catches what
the other cannot. Pure functions; only ReadOnlyError is raised.
"""

from __future__ import annotations

import re

from warehouse.errors import ReadOnlyError

# One token at a time; order matters (comments before operators, strings before words).
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|\#[^\n]*|/\*.*?(?:\*/|\Z))
  | (?P<string>'(?:[^'\\]|\\.|'')*(?:'|\Z))
  | (?P<quoted>"(?:[^"\\]|\\.|"")*(?:"|\Z)|`(?:[^`\\]|\\.|``)*(?:`|\Z))
  | (?P<heredoc>\$(?P<tag>[A-Za-z0-9_]*)\$.*?(?:\$(?P=tag)\$|\Z))
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<number>[0-9][0-9A-Za-z_.]*(?:[eE][+-]?[0-9]+)?)
  | (?P<punct>.)
""", re.VERBOSE | re.DOTALL)

#: Statements that are not a read, named in the refusal.
_STATEMENTS = {
    "INSERT": "a write", "UPDATE": "a write", "DELETE": "a write", "ALTER": "a write", "REPLACE": "a write",
    "UPSERT": "a write", "CREATE": "DDL", "DROP": "DDL", "RENAME": "DDL", "TRUNCATE": "DDL", "ATTACH": "DDL",
    "DETACH": "DDL", "OPTIMIZE": "DDL", "UNDROP": "DDL", "EXCHANGE": "DDL", "MOVE": "DDL",
    "SYSTEM": "a SYSTEM command", "SET": "a settings change", "USE": "a session change", "KILL": "a query kill",
    "GRANT": "an access change", "REVOKE": "an access change", "BACKUP": "a backup", "RESTORE": "a restore",
    "CHECK": "a table check", "EXPLAIN": "not a query", "SHOW": "not a query", "DESCRIBE": "not a query",
    "DESC": "not a query", "EXISTS": "not a query", "BEGIN": "a transaction", "COMMIT": "a transaction",
    "ROLLBACK": "a transaction", "WATCH": "not a query",
}

#: Functions and table functions that reach outside the warehouse's tables: files,
#: URLs, other servers and databases, programs, this process's memory (chDB's
#: Python()). Refused by name wherever they are called.
_OUTSIDE = frozenset(name.lower() for name in (
    "file", "fileCluster", "url", "urlCluster", "s3", "s3Cluster", "gcs", "oss", "cosn", "hdfs", "hdfsCluster",
    "azureBlobStorage", "azureBlobStorageCluster", "remote", "remoteSecure", "cluster", "clusterAllReplicas",
    "mysql", "postgresql", "jdbc", "odbc", "sqlite", "mongodb", "redis", "input", "executable", "python",
    "iceberg", "icebergS3", "icebergAzure", "icebergHDFS", "icebergLocal", "icebergS3Cluster",
    "icebergAzureCluster", "icebergHDFSCluster", "deltaLake", "deltaLakeS3", "deltaLakeAzure",
    "deltaLakeLocal", "deltaLakeCluster", "hudi", "hudiCluster", "paimon", "paimonS3", "paimonAzure",
    "paimonHDFS", "paimonLocal", "arrowFlight", "arrowflight", "ytsaurus", "dictionary", "fuzzJSON",
    "fuzzQuery", "loop", "prometheusQuery", "prometheusQueryRange", "timeSeriesData", "timeSeriesTags",
    "timeSeriesMetrics", "mergeTreeIndex", "mergeTreeProjection", "dataLakeCatalog", "filesystem",
    "catboostEvaluate", "modelEvaluate",  # load a model from a path
))

_READ_HEADS = ("SELECT", "WITH")


def check_readonly(sql: str) -> str:
    """`sql` itself if it is one SELECT (or WITH … SELECT; a trailing `;` is fine) that
    stays inside the warehouse; else raise ReadOnlyError saying why."""
    tokens = _tokens(sql)
    if not tokens:
        raise ReadOnlyError("the query is empty")
    end = len(tokens)
    while end and tokens[end - 1] == ("punct", ";"):
        end -= 1
    for i, (kind, text) in enumerate(tokens[:end]):
        if (kind, text) == ("punct", ";"):
            following = next((t for k, t in tokens[i + 1:] if k == "word"), "")
            what = _STATEMENTS.get(following.upper())
            raise ReadOnlyError("one statement at a time: " + (
                f"{following.upper()} after ';' is {what}, and sluice sql is read-only" if what
                else "several statements separated by ';'"))
    if end == 0:
        raise ReadOnlyError("the query is empty")
    head = next((t.upper() for k, t in tokens if k == "word" or (k == "punct" and t != "(")), "")
    if head not in _READ_HEADS:
        what = _STATEMENTS.get(head)
        raise ReadOnlyError(f"{head} is {what}; sluice sql runs only SELECT queries" if what
                            else f"sluice sql runs only SELECT queries, not {head or 'this'}")
    previous = ""
    for i, (kind, text) in enumerate(tokens[:end]):
        called = i + 1 < end and tokens[i + 1] == ("punct", "(")
        if kind == "quoted" and called and _unquoted(text).lower() in _OUTSIDE:  # `file`(…) calls file() too
            raise ReadOnlyError(f"{_unquoted(text)}() reaches outside the warehouse (files, URLs, other servers); "
                                "sluice sql reads only the warehouse's tables")
        if kind == "word":
            word = text.upper()
            if called and text.lower() in _OUTSIDE and previous != ".":
                raise ReadOnlyError(f"{text}() reaches outside the warehouse (files, URLs, other servers); "
                                    "sluice sql reads only the warehouse's tables")
            if word == "SETTINGS" and previous not in (".",):
                raise ReadOnlyError("SETTINGS clauses are not allowed: the query runs with the warehouse's "
                                    "read-only settings")
            if word == "FORMAT" and not called and previous != ".":
                raise ReadOnlyError("leave out FORMAT: choose the output with --format")
            if word == "OUTFILE" and previous.upper() == "INTO":
                raise ReadOnlyError("INTO OUTFILE writes a file; redirect the output instead")
        previous = text
    return sql


def _unquoted(text: str) -> str:
    """A quoted identifier's name: quotes off, doubled or escaped quote characters undone."""
    quote, body = text[0], text[1:-1] if len(text) > 1 and text[-1] == text[0] else text[1:]
    return re.sub(r"\\(.)", r"\1", body.replace(quote * 2, quote))


def _tokens(sql: str) -> list[tuple[str, str]]:
    """The tokens of `sql` without whitespace and comments, as (kind, text)."""
    return [(kind, text) for kind, text, _, _ in spans(sql)]


def spans(sql: str) -> list[tuple[str, str, int, int]]:
    """The tokens of `sql` without whitespace and comments, as (kind, text, start, end)."""
    found = []
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        if kind in ("space", "comment"):
            continue
        found.append(("string" if kind in ("heredoc", "tag") else kind, match.group(), match.start(), match.end()))
    return found
