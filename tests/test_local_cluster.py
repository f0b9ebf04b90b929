"""The local cluster's shape, without starting a JVM: each node's folder, ports and settings, the
cluster id they share, and the active controller read from their quorum files. (tests/test_cluster.py
runs a real one.)"""

from __future__ import annotations

import dataclasses
import json

import pytest

from bus.cluster import ClusterView
from sluice.local_cluster import LocalKafkaCluster
from sluice.local_kafka import LocalKafka, LocalKafkaError


def test_one_broker_is_the_single_broker_as_before(tmp_path):
    cluster = LocalKafkaCluster(tmp_path, 1, port=19092)
    [node] = cluster.nodes
    assert node.home == tmp_path / "kafka" and node.bootstrap == cluster.bootstrap == "127.0.0.1:19092"
    assert node.server_properties() == LocalKafka(tmp_path, 19092).server_properties()
    props = node.server_properties()
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["offsets.topic.replication.factor"] == "1" and "min.insync.replicas" not in props
    assert (cluster.replication_factor, cluster.min_insync_replicas) == (1, 1)


def test_three_nodes_each_a_broker_and_a_voter_with_its_own_folder_and_ports(tmp_path):
    cluster = LocalKafkaCluster(tmp_path, 3, port=19092)
    assert [n.home.name for n in cluster.nodes] == ["kafka-1", "kafka-2", "kafka-3"]
    assert [(n.port, n.controller_port) for n in cluster.nodes] == [(19092, 19093), (19094, 19095), (19096, 19097)]
    assert cluster.bootstrap == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    ids = {n.quorum.cluster_id for n in cluster.nodes}
    assert len(ids) == 1 and None not in ids
    for node in cluster.nodes:
        props = node.server_properties()
        assert props["node.id"] == str(node.node_id) and props["process.roles"] == "broker,controller"
        assert props["controller.quorum.voters"] == "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
        assert props["log.dirs"] == str(tmp_path / f"kafka-{node.node_id}" / "data")
        assert props["default.replication.factor"] == props["offsets.topic.replication.factor"] == "3"
        assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
        assert props["unclean.leader.election.enable"] == "false"
    assert (cluster.replication_factor, cluster.min_insync_replicas) == (3, 2)


def test_two_nodes_keep_two_copies_and_accept_a_write_on_one(tmp_path):
    cluster = LocalKafkaCluster(tmp_path, 2)
    assert (cluster.replication_factor, cluster.min_insync_replicas) == (2, 1)
    assert (LocalKafkaCluster(tmp_path / "five", 5).replication_factor) == 3


def _formatted(tmp_path, node: int, cluster_id: str) -> None:
    data = tmp_path / f"kafka-{node}" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text(f"version=1\ncluster.id={cluster_id}\nnode.id={node}\n")


def test_a_node_whose_folder_was_removed_rejoins_the_cluster_id_of_the_others(tmp_path):
    _formatted(tmp_path, 1, "abc")
    _formatted(tmp_path, 3, "abc")
    assert {n.quorum.cluster_id for n in LocalKafkaCluster(tmp_path, 3).nodes} == {"abc"}
    _formatted(tmp_path, 2, "other")
    with pytest.raises(LocalKafkaError, match="different clusters"):
        LocalKafkaCluster(tmp_path, 3)


def test_the_active_controller_is_the_leader_of_the_newest_epoch_the_nodes_recorded(tmp_path):
    cluster = LocalKafkaCluster(tmp_path, 3)
    assert cluster.active_controller() is None
    for node_id, (leader, epoch) in {1: (2, 4), 2: (3, 5), 3: (-1, 6)}.items():  # 3 is voting in a new election
        state = tmp_path / f"kafka-{node_id}" / "data" / "__cluster_metadata-0"
        state.mkdir(parents=True)
        (state / "quorum-state").write_text(json.dumps({"leaderId": leader, "leaderEpoch": epoch, "votedId": -1}))
    assert cluster.active_controller() == 3


def test_a_cluster_view_names_the_brokers_down_and_whether_all_is_in_sync():
    view = ClusterView(brokers={1: "h:1", 3: "h:3"}, leaders={("s.raw", 0): 1, ("s.raw", 1): 3},
                       replicas={("s.raw", 0): (1, 2, 3), ("s.raw", 1): (3, 1, 2)},
                       health={"s.raw": (1, 0), "__consumer_offsets": (0, 0)})
    assert view.known_brokers == [1, 2, 3] and view.down == [2]
    assert view.leaders_of("s.raw") == {0: 1, 1: 3}
    assert not view.in_sync
    assert dataclasses.replace(view, health={"s.raw": (0, 0)}).in_sync
