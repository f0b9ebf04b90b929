"""The processor's consumer waits at most FETCH_MAX_WAIT_MS for data (processors.fetching).

Faust fixes aiokafka's fetch wait at 1.5 s, and a long-poll of idle partitions then
held back the busy ones. The override reaches into the consumer Faust builds, so a
Faust or aiokafka upgrade could undo it quietly: this checks the consumer the
processor's app really builds.
"""

import asyncio

from config import Settings
from processors.app import create_app
from processors.fetching import FETCH_MAX_WAIT_MS


def test_the_processors_consumer_waits_briefly_for_data(tmp_path):
    settings = Settings.from_env(kafka_bootstrap="127.0.0.1:9", topic_prefix="fetching.", state_dir=tmp_path)
    app = create_app(settings, settings.kafka_bootstrap, view=None, seen=None)

    async def fetch_wait_ms() -> int:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(fetch_wait_ms()) == FETCH_MAX_WAIT_MS <= 100
