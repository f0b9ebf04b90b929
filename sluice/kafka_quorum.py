"""A KRaft quorum of local nodes and the settings it implies: who votes, how many copies of a
write each topic keeps, and how fast a lost node is replaced (sluice.local_kafka starts the
nodes, sluice.local_cluster several of them)."""

from __future__ import annotations

import base64
import dataclasses
import uuid


def new_cluster_id() -> str:
    """A Kafka-style cluster id (base64url of 16 random bytes, no padding).

    Generated in Python to save a JVM start (StorageTool random-uuid); like
    Kafka, avoid ids starting with '-' since they read as CLI flags.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


@dataclasses.dataclass(frozen=True)
class Quorum:
    """The KRaft quorum a node belongs to: every node is a broker and a voter.

    ``voters`` is ``controller.quorum.voters`` (``id@host:port`` of each node);
    ``size`` decides how the internal topics replicate (``replication_configs``).
    """

    voters: str
    size: int
    cluster_id: str | None = None  # formatted into a fresh log dir; None: a new one


def replication_factor(nodes: int) -> int:
    """The replication factor of every topic on a cluster of ``nodes``: up to three copies."""
    return min(3, nodes)


def min_insync_replicas(nodes: int) -> int:
    """Copies that must have a write before acks=all answers: two once there are three, so one node
    may be lost without a write being lost or refused."""
    return 2 if replication_factor(nodes) >= 3 else 1


def replication_configs(nodes: int) -> dict[str, str]:
    """Broker settings for the internal topics' replication (consumer offsets, transactions, share state)."""
    factor, min_isr = str(replication_factor(nodes)), str(min_insync_replicas(nodes))
    return {
        "offsets.topic.replication.factor": factor,
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": factor,
        "share.coordinator.state.topic.min.isr": min_isr,
    }


def cluster_configs(nodes: int) -> dict[str, str]:
    """What a node of a cluster of several sets beyond a single node's settings."""
    return {
        "default.replication.factor": str(replication_factor(nodes)),
        "min.insync.replicas": str(min_insync_replicas(nodes)),
        # A replica that fell out of sync never becomes leader: that would drop acknowledged writes.
        "unclean.leader.election.enable": "false",
        # A dead node's partitions get new leaders once the active controller fences it, after the
        # broker session timeout (9 s by default); when the dead node was the active controller too,
        # the voters first notice (fetch timeout, 2 s by default) and elect another. All of it must fit
        # well inside the edge's 10 s delivery timeout, so that a request in flight when a leader dies
        # is still delivered, not answered 503. Measured on 2 cores at 250 acks=all messages/s, the
        # active controller SIGKILLed: leaders again after 3.1-4.5 s with these, 5.1-5.9 s with a 3 s
        # session and Kafka's default quorum timeouts.
        "broker.session.timeout.ms": "2000",
        "broker.heartbeat.interval.ms": "500",
        "controller.quorum.fetch.timeout.ms": "1000",
        "controller.quorum.election.backoff.max.ms": "500",
    }
