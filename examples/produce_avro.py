"""Produce seed 001 frames to Sluice's ingest topic as schema-registry Avro, with confluent-kafka's
own SerializingProducer, AvroSerializer and SchemaRegistryClient.

The code an upstream system would write (docs/producers.md is the contract). Usage:

    SLUICE_API_KEY=sk_... python examples/produce_avro.py --thing thg_... \\
        --registry http://127.0.0.1:8081/apis/ccompat/v7

The value is Confluent wire format (magic byte 0, 4-byte schema id, Avro binary) written with
Sluice's public frames schema, registered under the topic's `-value` subject (the serializer
registers it if Sluice has not yet: the same schema gets the same id). Prints each message's
request id; its verdict is at GET /v2/ingest-log/{requestId}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import StringSerializer

# sluice.public.Frames, as Sluice ships it; a producer may use any schema that resolves to it.
FRAMES_SCHEMA = (Path(__file__).resolve().parent.parent / "schemas" / "avro" / "public" / "frames.avsc").read_text()


def frames(count: int, start_ms: int) -> dict:
    """A seed 001 frames body: one frame a second, the walkthrough's battery metrics.
    Metric values are null, boolean, long, double or string (the schema's union)."""
    return {"frames": [
        {"timestamp": start_ms + i * 1000,
         "metrics": {"status": 1, "moduleSoC": 87.4 - i * 0.1, "moduleSoH": 98.1, "moduleVoltage": 52.3,
                     "moduleCurrent": 12.1}}
        for i in range(count)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--registry", default="http://127.0.0.1:8081/apis/ccompat/v7",
                        help="the schema registry's Confluent API base URL")
    parser.add_argument("--topic", default="sluice.ingest", help="the ingest topic (<prefix>ingest)")
    parser.add_argument("--thing", required=True, help="the thing id (thg_…): the message key")
    parser.add_argument("--frames", type=int, default=10, help="frames in the message")
    args = parser.parse_args()
    api_key = os.environ.get("SLUICE_API_KEY")
    if not api_key:
        print("set SLUICE_API_KEY to an API key with the write scope", file=sys.stderr)
        return 2

    # The registry client waits forever by default; bounded, it retries a request left unanswered.
    registry = SchemaRegistryClient({"url": args.registry, "timeout": 10})
    producer = SerializingProducer({
        "bootstrap.servers": args.bootstrap,
        # acks=all + idempotence: a message that reports delivered is durable and written once.
        "acks": "all",
        "enable.idempotence": True,
        "key.serializer": StringSerializer("utf_8"),
        # Subject <topic>-value (TopicNameStrategy), the one Sluice registers its schema under.
        "value.serializer": AvroSerializer(registry, FRAMES_SCHEMA),
    })
    failed = []

    def delivered(err, msg):
        if err is not None:
            failed.append(err)
            print(f"not delivered: {err}", file=sys.stderr)
        else:
            print(f"delivered: requestId kafka-{msg.partition()}-{msg.offset()}")

    producer.produce(
        args.topic,
        key=args.thing,
        value=frames(args.frames, int(time.time() * 1000) - args.frames * 1000),
        headers=[
            ("sluice-api-key", api_key.encode()),
            ("content-type", b"application/vnd.sluice.frames+avro"),
            # Same meaning as HTTP's Idempotency-Key: a retry with this key is not ingested twice.
            ("sluice-idempotency-key", str(uuid.uuid4()).encode()),
        ],
        on_delivery=delivered,
    )
    producer.flush(30)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
