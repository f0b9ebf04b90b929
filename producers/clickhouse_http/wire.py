"""ClickHouse's HTTP protocol, the parts a Sluice answer needs: where a request carries its
query, format and credentials, and how an error reads. Pure functions.

What clients send and expect follows ClickHouse's HTTP interface: the query in the `query`
parameter, the body, or both (joined by a newline); the output format from a trailing
`FORMAT name`, else `default_format`, else TabSeparated; the user and password as basic
auth, `X-ClickHouse-User`/`X-ClickHouse-Key`, or `user`/`password` parameters; an error as
`Code: N. DB::Exception: message. (NAME)` with its code in `X-ClickHouse-Exception-Code`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

from warehouse.guard import spans

#: ClickHouse's error codes this interface answers with, by name.
CODES = {"BAD_ARGUMENTS": 36, "UNKNOWN_FORMAT": 73, "UNKNOWN_DATABASE": 81, "READONLY": 164,
         "TOO_MANY_SIMULTANEOUS_QUERIES": 202, "TOO_MANY_ROWS_OR_BYTES": 396, "ACCESS_DENIED": 497,
         "AUTHENTICATION_FAILED": 516}

#: The HTTP status of an error code, as ClickHouse's HTTP handler gives it (others: 500).
_STATUS = {516: 403, 192: 403, 193: 403, 497: 403, 164: 403, 36: 400, 62: 400, 27: 400, 6: 400, 43: 400,
           53: 400, 456: 400, 60: 404, 81: 404, 46: 404, 47: 404, 73: 404, 115: 404, 202: 503}

_ENGINE_ERROR = re.compile(r"Code: (\d+)\. DB::Exception: ", re.S)
_BLANKS = re.compile(r"\s+")

#: Queries clients send on connect that name a system table, each with its answer: the same
#: columns and no rows. clickhouse-connect reads which settings it may send from
#: system.settings; none here: the only settings this interface honours are output ones.
PROBES = {
    "select name, value, readonly from system.settings limit 10000":
        "SELECT name, value, readonly FROM (SELECT '' AS name, '' AS value, toUInt8(1) AS readonly) WHERE 0",
}


class ClickHouseError(Exception):
    """A refusal in ClickHouse's terms: `code` (CODES), and the message."""

    def __init__(self, name: str, message: str, code: int | None = None):
        super().__init__(message)
        self.name = name
        self.code = code if code is not None else CODES[name]

    @property
    def status(self) -> int:
        return status_of(self.code)

    def text(self) -> bytes:
        """The body ClickHouse writes for it."""
        return error_text(self.code, str(self), self.name)


def status_of(code: int) -> int:
    """The HTTP status of ClickHouse error `code`."""
    return _STATUS.get(code, 500)


def error_text(code: int, message: str, name: str = "") -> bytes:
    """`Code: N. DB::Exception: message. (NAME)` with a newline; of an engine's message that
    already reads so, its innermost such part (chDB wraps some in words of its own)."""
    engine = list(_ENGINE_ERROR.finditer(message))
    if engine:
        text = message[engine[-1].start():].rstrip()
        return (text[:-1] if text.endswith(").") else text).encode() + b"\n"
    tail = f" ({name})" if name else ""
    return f"Code: {code}. DB::Exception: {message.rstrip('.')}.{tail}\n".encode()


def query_text(param: str | None, body: bytes) -> str:
    """The query of a request: the `query` parameter, the body, or both joined by a newline."""
    text = body.decode("utf-8", errors="replace")
    if param and text.strip():
        return f"{param}\n{text}"
    return param or text


def split_format(sql: str) -> tuple[str, str | None]:
    """`sql` without a trailing `FORMAT name` (and `;`), and that name (None if absent)."""
    found = spans(sql)
    while found and found[-1][1] == ";":
        found.pop()
    if len(found) >= 3 and found[-2][0] == "word" and found[-2][1].upper() == "FORMAT" \
            and found[-1][0] in ("word", "quoted") and found[-3][1] != ".":
        name = found[-1][1].strip('`"')
        return sql[:found[-2][2]].rstrip(), name
    return sql, None


def answered_probe(sql: str) -> str:
    """`sql`, or the harmless stand-in of a client's connect probe (PROBES)."""
    return PROBES.get(_BLANKS.sub(" ", sql.strip().rstrip(";")).lower(), sql)


def credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> tuple[str, str]:
    """(user, password) of a request: basic auth, `X-ClickHouse-User`/`X-ClickHouse-Key`,
    the `user`/`password` parameters, in that order; an `Authorization: Bearer` token is a
    password too. ("default", "") when none is given."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ClickHouseError("AUTHENTICATION_FAILED", "the Authorization header is not valid basic auth") \
                from None
        return user or "default", password
    if scheme.lower() == "bearer":
        return headers.get("x-clickhouse-user") or "default", token.strip()
    if "x-clickhouse-key" in headers or "x-clickhouse-user" in headers:
        return headers.get("x-clickhouse-user") or "default", headers.get("x-clickhouse-key", "")
    return params.get("user") or "default", params.get("password", "")
