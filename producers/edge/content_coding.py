"""Compressed request bodies: `Content-Encoding: gzip` or `zstd`, inflated while they stream.

A device on a metered link compresses what it sends. The edge inflates the body
chunk by chunk as it arrives and stops at the first byte past the route's body
limit, so the limit holds for the inflated size and a decompression bomb costs
the edge at most the limit in memory, never what the bomb would inflate to.
Everything behind the edge (the route's outline check, the raw topic, the
processors, dead letters, replay) sees the plain body.

Pure: no I/O; errors are ApiErrors the edge answers in the route's dialect
(415 for a coding it does not speak, 413 past the limit, 400 for a body that
does not decode).
"""

from __future__ import annotations

import zlib

from producers.edge.errors import ApiError

try:
    from compression import zstd  # Python 3.14+
except ImportError:  # the same module, backported
    from backports import zstd

#: What the edge inflates; also the `Accept-Encoding` of a 415 (RFC 7694).
CODINGS = ("gzip", "zstd")
_ALIASES = {"x-gzip": "gzip"}  # RFC 9110 §8.4.1.3: a recipient should treat x-gzip as gzip
# RFC 9659: zstd content coding needs no window over 8 MiB; a frame asking for more is refused
# rather than given the memory.
_ZSTD_WINDOW_LOG_MAX = 23


def coding_of(content_encoding: str) -> str | None:
    """The coding a `Content-Encoding` value names (None for none or `identity`); 415 otherwise.

    Only one coding is inflated: a body compressed twice is refused, as is any coding
    not in CODINGS.
    """
    named = [token.strip().lower() for token in content_encoding.split(",")]
    named = [_ALIASES.get(token, token) for token in named if token and token != "identity"]
    if not named:
        return None
    if len(named) > 1:
        raise unsupported(f"one content coding at most, not {content_encoding.strip()[:100]!r}")
    if named[0] not in CODINGS:
        raise unsupported(f"content coding {named[0][:100]!r} is not supported")
    return named[0]


def unsupported(reason: str) -> ApiError:
    return ApiError(415, "UNSUPPORTED_CONTENT_ENCODING", f"{reason}; send {' or '.join(CODINGS)}, or identity",
                    field="Content-Encoding", supported=list(CODINGS))


def _decompressor(coding: str):
    if coding == "gzip":
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # the gzip wrapper only
    return zstd.ZstdDecompressor(options={zstd.DecompressionParameter.window_log_max: _ZSTD_WINDOW_LOG_MAX})


class Inflater:
    """One body's decoder: `feed` each chunk as it arrives, then `end`.

    Concatenated gzip members and zstd frames are one body, as the formats allow.
    Raises ApiError 413 once the inflated body passes `limit` bytes (having
    produced at most one byte more), 400 when the bytes are not of the coding.
    """

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.size = 0  # inflated bytes so far
        self._decompressor = _decompressor(coding)

    def feed(self, chunk: bytes) -> bytes:
        """The inflated bytes `chunk` yields (at most limit + 1 in all)."""
        pieces = []
        data = chunk
        while data:
            if self._decompressor.eof:  # a member (frame) ended: what follows is the next one
                self._decompressor = _decompressor(self.coding)
            try:
                # The cap is what is left of the limit, plus one byte to see it passed.
                piece = self._decompressor.decompress(data, self.limit - self.size + 1)
            except (zlib.error, zstd.ZstdError) as exc:
                raise self._corrupt(str(exc)) from None
            self.size += len(piece)
            if self.size > self.limit:
                raise ApiError(413, "PAYLOAD_TOO_LARGE", f"the {self.coding} body inflates to more than "
                               f"{self.limit} bytes", limit=self.limit)
            pieces.append(piece)
            # Below the cap, the decompressor took all the input it could: what it left
            # over belongs to the next member, if this one ended.
            data = self._decompressor.unused_data if self._decompressor.eof else b""
        return b"".join(pieces)

    def end(self) -> None:
        """The body is complete: 400 if its last member (frame) is cut short."""
        if not self._decompressor.eof:
            raise self._corrupt("truncated, the body ends before its compressed data does")

    def _corrupt(self, reason: str) -> ApiError:
        return ApiError(400, "INVALID_PAYLOAD", f"body: not valid {self.coding} data: {reason[:200]}",
                        field="body", reason=f"not valid {self.coding} data")
