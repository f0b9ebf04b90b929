"""Produce seed 001 frames to Sluice's ingest topic as JSON, with confluent-kafka's own Producer.

The code an upstream system would write (docs/producers.md is the contract). Usage:

    SLUICE_API_KEY=sk_... python examples/produce_json.py --thing thg_...

The API key travels in a header, so it is read from the environment, never the command line.
Prints each message's request id; its verdict is at GET /v2/ingest-log/{requestId}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

from confluent_kafka import Producer


def frames(count: int, start_ms: int) -> dict:
    """A seed 001 frames body: one frame a second, the walkthrough's battery metrics."""
    return {"frames": [
        {"timestamp": start_ms + i * 1000,
         "metrics": {"status": 1, "moduleSoC": 87.4 - i * 0.1, "moduleSoH": 98.1, "moduleVoltage": 52.3,
                     "moduleCurrent": 12.1}}
        for i in range(count)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--topic", default="sluice.ingest", help="the ingest topic (<prefix>ingest)")
    parser.add_argument("--thing", required=True, help="the thing id (thg_…): the message key")
    parser.add_argument("--frames", type=int, default=10, help="frames in the message")
    args = parser.parse_args()
    api_key = os.environ.get("SLUICE_API_KEY")
    if not api_key:
        print("set SLUICE_API_KEY to an API key with the write scope", file=sys.stderr)
        return 2

    # acks=all + idempotence: a message that reports delivered is durable and written once.
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "enable.idempotence": True})
    failed = []

    def delivered(err, msg):
        if err is not None:
            failed.append(err)
            print(f"not delivered: {err}", file=sys.stderr)
        else:
            print(f"delivered: requestId kafka-{msg.partition()}-{msg.offset()}")

    body = frames(args.frames, int(time.time() * 1000) - args.frames * 1000)
    producer.produce(
        args.topic,
        key=args.thing.encode(),
        value=json.dumps(body).encode(),
        headers=[
            ("sluice-api-key", api_key.encode()),
            ("content-type", b"application/json"),
            # Same meaning as HTTP's Idempotency-Key: a retry with this key is not ingested twice.
            ("sluice-idempotency-key", str(uuid.uuid4()).encode()),
        ],
        on_delivery=delivered,
    )
    producer.flush(30)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
