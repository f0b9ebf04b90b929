"""A sink's whole policy, and the arroyo chain it builds: batch → insert → commit.

    Batcher (ours: messages, bytes, a window from when the first message was written)
      → RunTaskInThreads (arroyo: the insert, retried in place; `inserts_in_flight` at once)
        → CommitOffsets (arroyo: the batch's offsets, committed only after its insert)

Backpressure is arroyo's MessageRejected: while the insert step has no room, the batcher
holds its closed batch and refuses messages, and the consumer loop pauses its partitions
(sinks.consumer_loop). Every sink runs this chain; only its policy and insert differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from arroyo.processing.strategies import CommitOffsets, ProcessingStrategy, ProcessingStrategyFactory, RunTaskInThreads
from arroyo.types import Commit, Partition

from config import Settings
from sinks.batches import Batcher
from sinks.inserting import Inserting


@dataclass(frozen=True)
class SinkPolicy:
    max_messages: int  # a batch closes at this many messages,
    max_bytes: int  # or this many bytes of message values,
    window_s: float  # or this long after its first message was written
    # Inserts running at once (their batches are committed in order all the same). One: the
    # embedded warehouse takes one insert at a time; the next batch is filled meanwhile.
    inserts_in_flight: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> "SinkPolicy":
        return cls(max_messages=settings.sink_batch_messages, max_bytes=settings.sink_batch_bytes,
                   window_s=settings.sink_batch_ms / 1000)


class SinkChain(ProcessingStrategyFactory[bytes]):
    """Builds a sink's chain for `policy` around `inserting` (one chain per assignment)."""

    def __init__(self, policy: SinkPolicy, inserting: Inserting) -> None:
        self.policy = policy
        self.inserting = inserting

    def create_with_partitions(self, commit: Commit, partitions: Mapping[Partition, int]) -> ProcessingStrategy[bytes]:
        policy = self.policy
        return Batcher(
            policy.max_messages, policy.max_bytes, policy.window_s,
            next_step=RunTaskInThreads(
                self.inserting, concurrency=policy.inserts_in_flight,
                # arroyo refuses a submit once more than this many wait: none waits beyond those running.
                max_pending_futures=policy.inserts_in_flight - 1,
                next_step=CommitOffsets(commit)))
