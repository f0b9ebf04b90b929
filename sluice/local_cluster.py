"""A local Kafka cluster: N KRaft nodes on loopback, each a broker and a controller.

`sluice up --brokers 3` (SLUICE_BROKERS) runs three from the same jars as the single
broker, so leader elections, controller failover and rolling restarts can be met on
one machine. One node is exactly sluice.local_kafka's single broker (its folder
`kafka`, its ports, its settings). With N nodes, node i (1..N) keeps its files in
`kafka-<i>` under the state folder and listens on `port + 2(i-1)` for clients and the
port after that for the quorum; every node lists every other as a voter, and all are
formatted with one cluster id.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from pathlib import Path

from sluice.kafka_quorum import Quorum, min_insync_replicas, new_cluster_id, replication_factor
from sluice.local_kafka import LocalKafka, LocalKafkaError

SINGLE_HEAP = "512m"
NODE_HEAP = "256m"  # each of several nodes: three JVMs share a laptop with the pipeline
# The JIT's first tier only: three freshly started JVMs compiling at once took the two cores the
# pipeline needs. Measured on 2 cores, three nodes acknowledging 250 acks=all messages/s: start-up
# 17 s against 34 s, 14 against 25 CPU-seconds per node over the run, and p99 34 ms against 237 ms
# once warm (p50 3 ms either way).
NODE_JVM_OPTIONS = ("-XX:TieredStopAtLevel=1",)


class LocalKafkaCluster:
    """The local broker, or several: `nodes` (in node id order), reached through `bootstrap`."""

    def __init__(self, state_dir: Path, brokers: int = 1, port: int = 9092) -> None:
        if brokers < 1:
            raise ValueError(f"a cluster needs at least one broker, not {brokers}")
        state_dir = Path(state_dir).expanduser().resolve()
        if brokers == 1:
            self.nodes = [LocalKafka(state_dir, port, heap=SINGLE_HEAP)]
            return
        voters = ",".join(f"{i}@127.0.0.1:{port + 2 * (i - 1) + 1}" for i in range(1, brokers + 1))
        self.nodes = [LocalKafka(state_dir, port + 2 * (i - 1), heap=NODE_HEAP, node_id=i,
                                 quorum=Quorum(voters, brokers), home_name=f"kafka-{i}",
                                 jvm_options=NODE_JVM_OPTIONS)
                      for i in range(1, brokers + 1)]
        quorum = Quorum(voters, brokers, self._formatted_cluster_id())
        for node in self.nodes:
            node.quorum = quorum

    def _formatted_cluster_id(self) -> str:
        """The id the nodes already formatted share (a node whose folder was removed joins it again),
        else a new one for them all."""
        ids = {node.cluster_id for node in self.nodes} - {None}
        if len(ids) > 1:
            raise LocalKafkaError(f"the nodes' folders belong to different clusters ({', '.join(sorted(ids))}); "
                                  "remove them to start a fresh cluster")
        return ids.pop() if ids else new_cluster_id()

    @property
    def bootstrap(self) -> str:
        """Every node's client address: a client finds the cluster through any that is up."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def replication_factor(self) -> int:
        return replication_factor(len(self.nodes))

    @property
    def min_insync_replicas(self) -> int:
        return min_insync_replicas(len(self.nodes))

    def node(self, node_id: int) -> LocalKafka:
        return next(node for node in self.nodes if node.node_id == node_id)

    def start(self, timeout: float = 120) -> str:
        """Start every node and return the bootstrap list once each serves; blocks.

        All are launched before any is waited for: a node serves only once a majority of the
        voters runs. Raises LocalKafkaError (after stopping every node) as LocalKafka.start does.
        """
        deadline = time.monotonic() + timeout
        try:
            # Formatting a fresh node is a JVM run of its own: all at once. The JVMs are started from
            # this thread, which the kernel's parent-death signal is tied to (sluice.child_jvm).
            with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
                prepared = list(pool.map(LocalKafka.prepare, self.nodes))
            for node, ready_to_spawn in zip(self.nodes, prepared):
                node.spawn(ready_to_spawn)
            for node in self.nodes:
                node.wait_ready(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def stop(self) -> None:
        """Stop every node at once (each SIGTERMed, killed after 30 s); blocks until all exited.

        At once: stopped one by one, the last nodes would have lost their quorum and wait out a
        controlled shutdown that cannot happen.
        """
        stoppers = [threading.Thread(target=node.stop, name=f"stop-kafka-{node.node_id}") for node in self.nodes]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()

    def active_controller(self) -> int | None:
        """The node id of the quorum's leader (the active controller) as the nodes last recorded it; None
        when no node has seen an election.

        Read from each node's `quorum-state` file (the KRaft state a voter writes at every election): the
        newest epoch's leader. Clients cannot ask: a broker names a random live broker as "controller".
        """
        newest: tuple[int, int] | None = None
        for node in self.nodes:
            state = quorum_state(node)
            if state is not None and state.get("leaderId", -1) >= 0:
                epoch = (state.get("leaderEpoch", -1), state["leaderId"])
                newest = max(newest, epoch) if newest else epoch
        return newest[1] if newest else None


def quorum_state(node: LocalKafka) -> dict | None:
    """The node's KRaft quorum state (leaderId, leaderEpoch, ...); None if it has not written one."""
    try:
        return json.loads((node.data_dir / "__cluster_metadata-0" / "quorum-state").read_text())
    except (OSError, ValueError):
        return None
