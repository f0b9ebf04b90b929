"""`python -m bench.sizes`: bytes per metric value on each topic, for a 100 frames × 10 metrics request.

The messages are built by the same fixtures the stage benchmarks produce (the project's own
encoders: the raw envelope as the edge writes it, the frames message as the processor writes
it), so the figures follow any change of the message formats; rerun after one. Besides each
message alone, it prints the lz4 size of a batch of messages, since the producers compress
whole record batches (lz4 frame, as Kafka's lz4 codec does) and neighbours share ids and
field names. The fixtures' values follow a short arithmetic pattern, so they compress better
than real readings would: read the lz4 columns as a floor. Kafka's own framing (tens of
bytes a record and a batch) is left out. Needs no broker; blocks for about a second.
"""

from __future__ import annotations

import argparse
import sys
import time

import lz4.frame

import schemas
from bench import fixtures as fx

BATCH = 16  # messages per compressed batch: about what one partition's batch holds at linger 5 ms


def verdict_messages(fleet: fx.Fleet, count: int) -> list[bytes]:
    """One ingested verdict per request, as the processor writes to the results topic."""
    now = int(time.time() * 1000)
    return [schemas.encode(schemas.VERDICT, {
        "request_id": f"req_bench{i:016d}", "org_id": fleet.org_id,
        "thing_id": fleet.thing_ids[i % len(fleet.thing_ids)], "route": "thing_data", "key_id": None,
        "stream": None, "status": "ingested", "http_status": 202,
        "frames_received": fx.FRAMES, "frames_ingested": fx.FRAMES, "metrics": list(fleet.metric_names),
        "errors": [], "duplicate_of": None, "received_at": now, "processed_at": now, "request_hash": None,
        "report": None}) for i in range(count)]


def sizes(batch: int = BATCH) -> dict[str, dict[str, float]]:
    """Per topic: bytes per message and per value, alone and lz4-compressed (alone, and in a batch)."""
    fleet = fx.synthetic_fleet()
    topics = {
        "raw": [value for _, value in fx.raw_messages(fleet, batch)],
        "frames": [value for _, value in fx.frames_messages(fx.frame_batches(fleet, batch))],
        "results": verdict_messages(fleet, batch),
    }
    out = {}
    for topic, values in topics.items():
        one = len(values[0])
        alone = len(lz4.frame.compress(values[0]))
        together = len(lz4.frame.compress(b"".join(values))) / len(values)
        out[topic] = {"bytes_per_message": one, "bytes_per_value": one / fx.VALUES_PER_MESSAGE,
                      "lz4_bytes_per_value": alone / fx.VALUES_PER_MESSAGE,
                      "lz4_batch_bytes_per_value": together / fx.VALUES_PER_MESSAGE}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sizes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=BATCH, help="messages per compressed batch")
    args = parser.parse_args(argv)
    print(f"one request: {fx.FRAMES} frames × {fx.METRICS} metrics = {fx.VALUES_PER_MESSAGE} values; "
          f"lz4 batch = {args.batch} messages")
    print(f"{'topic':<8} {'bytes/message':>14} {'bytes/value':>12} {'lz4 alone':>10} {'lz4 batch':>10}")
    for topic, size in sizes(args.batch).items():
        print(f"{topic:<8} {size['bytes_per_message']:>14,} {size['bytes_per_value']:>12.2f} "
              f"{size['lz4_bytes_per_value']:>10.2f} {size['lz4_batch_bytes_per_value']:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
