"""producers.edge.content_coding alone: which codings a Content-Encoding names, and inflating a body
chunk by chunk without ever producing more than its limit."""

from __future__ import annotations

import gzip

import pytest

from producers.edge.content_coding import Inflater, coding_of, zstd
from producers.edge.errors import ApiError

BODY = b'{"frames": [{"timestamp": 1718884800000, "metrics": {"level": 1.5}}]}' * 200
COMPRESS = {"gzip": gzip.compress, "zstd": zstd.compress}


def inflate(coding: str, data: bytes, limit: int = 1 << 20, chunk: int = 7) -> bytes:
    inflater = Inflater(coding, limit)
    out = b"".join(inflater.feed(data[i:i + chunk]) for i in range(0, len(data), chunk))
    inflater.end()
    return out


@pytest.mark.parametrize("value,coding", [
    ("gzip", "gzip"), ("GZip ", "gzip"), ("x-gzip", "gzip"), ("zstd", "zstd"), ("identity, zstd", "zstd"),
    ("identity", None), ("", None), (" , ", None)])
def test_the_coding_a_content_encoding_names(value, coding):
    assert coding_of(value) == coding


@pytest.mark.parametrize("value,reason", [
    ("br", "'br' is not supported"), ("deflate", "'deflate' is not supported"),
    ("gzip, zstd", "one content coding at most"), ("gzip, gzip", "one content coding at most")])
def test_another_coding_or_two_of_them_are_415(value, reason):
    with pytest.raises(ApiError) as refused:
        coding_of(value)
    assert (refused.value.status, refused.value.code) == (415, "UNSUPPORTED_CONTENT_ENCODING")
    assert reason in refused.value.message and refused.value.details["supported"] == ["gzip", "zstd"]


@pytest.mark.parametrize("coding", list(COMPRESS))
@pytest.mark.parametrize("chunk", [1, 7, 1 << 16])
def test_a_body_inflates_whatever_its_chunks(coding, chunk):
    assert inflate(coding, COMPRESS[coding](BODY), chunk=chunk) == BODY


@pytest.mark.parametrize("coding", list(COMPRESS))
def test_concatenated_members_are_one_body(coding):
    data = COMPRESS[coding](BODY[:5000]) + COMPRESS[coding](BODY[5000:])
    assert inflate(coding, data) == BODY
    assert inflate(coding, data, chunk=len(data)) == BODY


@pytest.mark.parametrize("coding", list(COMPRESS))
def test_the_limit_is_on_the_inflated_size_and_holds_while_inflating(coding):
    assert inflate(coding, COMPRESS[coding](BODY), limit=len(BODY)) == BODY  # exactly the limit: fine
    bomb = COMPRESS[coding](b"\0" * (64 << 20))  # 64 MiB of zeros, a few KiB compressed
    inflater = Inflater(coding, 1 << 20)
    with pytest.raises(ApiError) as refused:
        inflater.feed(bomb)  # in one chunk: the cap, not the chunk size, bounds what is made
    assert (refused.value.status, refused.value.details["limit"]) == (413, 1 << 20)
    assert inflater.size == (1 << 20) + 1  # stopped one byte past the limit


@pytest.mark.parametrize("coding,data,reason", [
    ("gzip", BODY, "incorrect header check"),
    ("gzip", gzip.compress(BODY)[:-4], "truncated"),
    ("gzip", gzip.compress(BODY) + b"trailing", "incorrect header check"),
    ("zstd", zstd.compress(BODY)[:-3], "truncated"),
    ("zstd", b"\x28\xb5\x2f\xfd" + b"\xff" * 20, "not valid zstd data"),
    ("gzip", b"", "truncated"),
])
def test_bytes_not_of_the_coding_are_400_saying_why(coding, data, reason):
    with pytest.raises(ApiError) as refused:
        inflate(coding, data)
    assert (refused.value.status, refused.value.code, refused.value.details["field"]) == (400, "INVALID_PAYLOAD",
                                                                                         "body")
    assert f"not valid {coding} data" in refused.value.message and reason in refused.value.message


def test_a_zstd_frame_wanting_a_window_over_8_mib_is_refused():
    # RFC 9659: a zstd body never needs more; a frame asking for 128 MiB would get the memory.
    compressor = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: 27})
    data = compressor.compress(BODY) + compressor.flush()  # streamed: no content size, the window stands
    with pytest.raises(ApiError) as refused:
        inflate("zstd", data)
    assert refused.value.status == 400
