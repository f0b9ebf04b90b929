"""Every place the processor reaches inside Faust or aiokafka, checked one by one, so that an
upgrade that moves one fails here with the name of what moved (the behaviour built on them
is tested in test_processor_batching.py and test_processor_faust_consumer.py).

- processors.batching drives a Faust Stream by hand: `Stream._enable_passive(channel)`,
  `Stream._processors`, `enable_acks`, `current_event`, `channel.queue.empty()`,
  `wait_for_stopped(event, timeout=)`, `should_stop`, `ack(event)`;
- processors.faust_consumer subclasses Faust's aiokafka driver (`Consumer._new_consumer_thread`,
  `AIOKafkaConsumerThread._create_worker_consumer`) and sets aiokafka's
  `AIOKafkaConsumer._fetch_max_wait_ms`, which `start()` hands to its Fetcher; it also
  overrides `Consumer._filter_committable_offsets` and `_new_offset`, reading
  `_unacked_messages` and `_acked` (behaviour: test_processor_faust_consumer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect

import faust
from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from config import Settings
from processors import faust_consumer
from processors.app import create_app


def touch(owner, name: str, user: str):
    """`owner.name`, or a failure saying which private API an upgrade took from `user`."""
    assert hasattr(owner, name), (f"{getattr(owner, '__qualname__', type(owner).__qualname__)}.{name} is gone: "
                                  f"{user} relies on it; a Faust/aiokafka upgrade changed what it reaches into")
    return getattr(owner, name)


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_faust_stream_internals_processors_batching_drives():
    used_by = "processors.batching"

    async def check() -> None:
        app = faust.App("touch-points", web_enabled=False, store="memory://")
        stream = app.stream(app.channel())
        enable_passive = touch(stream, "_enable_passive", used_by)
        assert "channel" in parameters(enable_passive), (
            f"faust Stream._enable_passive no longer takes a channel ({parameters(enable_passive)}): {used_by}")
        processors = touch(stream, "_processors", used_by)

        def processor(value):
            return value

        stream.add_processor(processor)
        assert processor in processors, f"faust Stream.add_processor no longer adds to Stream._processors: {used_by}"
        processors.remove(processor)
        assert isinstance(touch(stream, "enable_acks", used_by), bool)
        touch(type(stream), "current_event", used_by)
        assert isinstance(touch(touch(stream, "channel", used_by), "queue", used_by).empty(), bool)
        assert {"timeout"} <= set(parameters(touch(stream, "wait_for_stopped", used_by))), (
            f"faust Stream.wait_for_stopped takes no timeout any more: {used_by}")
        assert isinstance(touch(stream, "should_stop", used_by), bool)
        assert inspect.iscoroutinefunction(touch(stream, "ack", used_by)), f"faust Stream.ack is not async: {used_by}"

    asyncio.run(check())


def test_the_faust_driver_hooks_processors_faust_consumer_overrides(tmp_path):
    used_by = "processors.faust_consumer"
    touch(faust_aiokafka.Consumer, "_new_consumer_thread", used_by)
    create_worker = touch(faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer", used_by)
    assert parameters(create_worker) == ["self", "transport"], (
        f"Faust's AIOKafkaConsumerThread._create_worker_consumer changed its signature: {used_by}")
    settings = Settings.from_env(kafka_bootstrap="127.0.0.1:9", topic_prefix="touch.", state_dir=tmp_path)
    app = create_app(settings, settings.kafka_bootstrap, view=None, seen=None)
    assert isinstance(app.consumer._thread, faust_consumer._ConsumerThread), (
        "Faust's Consumer no longer builds its thread through _new_consumer_thread (or keeps it in ._thread): "
        f"{used_by}'s short fetch wait is not in force")
    for name in ("_filter_committable_offsets", "_new_offset"):
        assert parameters(touch(faust_aiokafka.Consumer, name, used_by))[0] == "self"
    assert parameters(faust_aiokafka.Consumer._new_offset) == ["self", "tp"], (
        f"Faust's Consumer._new_offset changed its signature: {used_by}'s commit floor is not in force")
    for name in ("_unacked_messages", "_acked", "_committed_offset"):
        touch(app.consumer, name, used_by)


def test_aiokafka_hands_the_fetch_wait_field_to_its_fetcher(kafka_bootstrap):
    used_by = "processors.faust_consumer"

    async def fetcher_wait() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, fetch_max_wait_ms=1500)
        assert touch(consumer, "_fetch_max_wait_ms", used_by) == 1500, (
            f"aiokafka's AIOKafkaConsumer._fetch_max_wait_ms no longer holds fetch_max_wait_ms: {used_by}")
        consumer._fetch_max_wait_ms = faust_consumer.FETCH_MAX_WAIT_MS  # as processors.faust_consumer does, before start()
        await consumer.start()
        try:
            return touch(touch(consumer, "_fetcher", used_by), "_fetch_max_wait_ms", used_by)
        finally:
            # aiokafka 0.14's group-less coordinator re-raises the cancellation of its own task on close.
            with contextlib.suppress(asyncio.CancelledError):
                await consumer.stop()

    assert asyncio.run(fetcher_wait()) == faust_consumer.FETCH_MAX_WAIT_MS, (
        f"aiokafka's start() no longer reads AIOKafkaConsumer._fetch_max_wait_ms: {used_by}'s override is lost")
