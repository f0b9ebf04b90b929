"""The pure parts of `sluice import`: row parsing (three formats, two shapes), batching
under the body limit, the checkpoint."""

from __future__ import annotations

import json

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice.backfill.batches import body_size, make_batches
from sluice.backfill.checkpoint import Checkpoint, fingerprint
from sluice.backfill.rows import BadRow, parse_timestamp, read_chunks, row_frame

T0 = 1718884800000


def test_timestamps_epoch_ms_and_iso():
    assert parse_timestamp(T0) == T0
    assert parse_timestamp(str(T0)) == T0
    assert parse_timestamp("2024-06-20T12:00:00Z") == T0
    assert parse_timestamp("2024-06-20T14:00:00+02:00") == T0
    assert parse_timestamp("2024-06-20 12:00:00") == T0  # no offset: UTC
    for bad in ("yesterday", None, "", True):
        with pytest.raises(BadRow):
            parse_timestamp(bad)


def test_long_and_wide_rows():
    assert row_frame({"thing_id": "thg_a", "timestamp": T0, "metric": "m", "value": "1.5"}) == (
        "thg_a", T0, {"m": 1.5})
    assert row_frame({"thing_id": "thg_a", "timestamp": T0, "b": "", "a": 2, "c": "x"}) == (
        "thg_a", T0, {"a": 2, "c": "x"})
    for row, reason in (({"timestamp": T0, "m": 1}, "thing_id"), ({"thing_id": "t", "timestamp": T0}, "no metric"),
                        ({"thing_id": "t", "timestamp": T0, "metric": "m", "value": None}, "value missing"), ([], "object")):
        with pytest.raises(BadRow, match=reason):
            row_frame(row)


def _write(tmp_path, fmt, rows):
    path = tmp_path / f"in.{fmt}"
    if fmt == "ndjson":
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" if isinstance(r, dict) else r for r in rows))
    elif fmt == "csv":
        path.write_text("thing_id,timestamp,metric,value\n" + "".join(
            f"{r['thing_id']},{r['timestamp']},{r['metric']},{r['value']}\n" if isinstance(r, dict) else r.decode()
            for r in rows))
    else:
        good = [r for r in rows if isinstance(r, dict)]
        pq.write_table(pa.Table.from_pylist(good), path)
    return path


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "parquet"])
def test_each_format_parses_and_resumes_at_a_chunk_end(tmp_path, fmt):
    rows = [{"thing_id": f"thg_{i % 3}", "timestamp": T0 + i, "metric": "m", "value": i} for i in range(10)]
    if fmt != "parquet":
        rows.insert(4, b"not a row\n")
    path = _write(tmp_path, fmt, rows)
    chunks = list(read_chunks(path, fmt, chunk_values=4))
    frames = [f for c in chunks for f in c.frames]
    assert sorted(frames, key=lambda f: f[1]) == [(f"thg_{i % 3}", T0 + i, {"m": i}) for i in range(10)]
    assert all(c.values >= 4 for c in chunks[:-1])
    if fmt != "parquet":
        assert [row for c in chunks for row, _ in c.bad] == [5 if fmt == "ndjson" else 6]  # a line number
    again = [f for c in read_chunks(path, fmt, 4, start=chunks[1].start) for f in c.frames]
    assert again == [f for c in chunks[1:] for f in c.frames]


def test_batches_group_per_thing_and_stay_under_the_limit():
    readings = [(f"thg_{i % 7}", T0 + (i * 7919) % 5000, f"m{i % 10}", i * 1.5) for i in range(20000)]
    frames = [(thing, ts, {metric: value}) for thing, ts, metric, value in readings]  # long rows, out of order
    batches, too_large = make_batches(frames, 20_000, "k")
    assert not too_large
    assert all(len(b.body) <= 20_000 and len(b.body) == body_size(list(b.frames)) for b in batches)
    assert sum(b.values for b in batches) == len({(t, ts, m) for t, ts, m, _ in readings})
    for b in batches:
        sent = orjson.loads(b.body)["frames"]
        assert [f["timestamp"] for f in sent] == sorted(f["timestamp"] for f in sent)
    assert len({b.key for b in batches}) == len(batches)
    assert make_batches(frames, 20_000, "k")[0] == batches  # deterministic: the same keys name the same bodies
    half, other = batches[0].halves()
    assert half.frames + other.frames == batches[0].frames and half.key != other.key


def test_checkpoint_round_trip_and_refuses_another_file(tmp_path):
    data = tmp_path / "in.ndjson"
    data.write_text('{"a": 1}\n')
    print_ = fingerprint(data, "ndjson", 10)
    assert fingerprint(data, "ndjson", 11) != print_
    point = Checkpoint.load(Checkpoint.for_file(data), print_)
    point.position, point.rows, point.acknowledged = 42, 3, {"k-1"}
    point.add("accepted", 10)
    point.save()
    again = Checkpoint.load(point.path, print_)
    assert (again.position, again.rows, again.acknowledged, again.totals) == (42, 3, {"k-1"}, {"accepted": 10})
    assert json.loads(point.path.read_text())["fingerprint"] == print_
    with pytest.raises(ValueError, match="restart"):
        Checkpoint.load(point.path, "other")


def test_sender_honours_retry_after_and_isolates_a_bad_frame_by_halving():
    import httpx

    from sluice.backfill.sender import Sender

    seen: list[tuple[str, int]] = []

    def edge(request: httpx.Request) -> httpx.Response:
        key, frames = request.headers["idempotency-key"], orjson.loads(request.content)["frames"]
        seen.append((key, len(frames)))
        if len(seen) == 1:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"code": "RATE_LIMITED"}})
        if any(f["metrics"].get("m") == "bad" for f in frames):
            return httpx.Response(400, json={"error": {"code": "INVALID_VALUE", "details": {"field": "m"}}})
        return httpx.Response(200, json={})

    frames = [("thg_a", T0 + i, {"m": "bad" if i == 5 else i, "n": 1}) for i in range(8)]
    (batch,), _ = make_batches(frames, 1_000_000, "k")
    with httpx.Client(base_url="http://edge", transport=httpx.MockTransport(edge)) as client:
        outcome = Sender(client).send(batch)
    assert seen[0] == seen[1] == ("k-0", 8)  # the 429'd batch again, under the same key
    assert outcome.retries == 1
    assert (outcome.accepted, dict(outcome.rejected)) == (14, {"INVALID_VALUE (m)": 2})
    assert len(seen) == 2 + 2 + 2 + 2  # halves of 4, then of 2, then of 1: one bad frame costs only itself
    assert len({key for key, _ in seen[1:]}) == 7


def test_pace_spaces_batches_at_the_rate():
    import threading
    import time

    from sluice.backfill.importer import Pace

    pace, start = Pace(10_000, threading.Event()), time.monotonic()
    for _ in range(4):
        pace.take(1_000)  # the first goes at once, then one every 0.1 s
    assert 0.28 <= time.monotonic() - start < 0.6
