"""Topic administration through confluent-kafka's AdminClient (CreateTopics, Metadata,
DescribeConfigs, IncrementalAlterConfigs, CreatePartitions, DeleteTopics, DescribeCluster)
and kafka-python's KafkaAdminClient."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from e2e_util import admin_client, create_topic, topic_partition_counts, wait_for, wait_topic

T = 30  # seconds, for every admin future


def _error_of(fut) -> KafkaError:
    with pytest.raises(KafkaException) as excinfo:
        fut.result(timeout=T)
    err = excinfo.value.args[0]
    assert isinstance(err, KafkaError), f"unexpected exception payload {err!r}"
    return err


def _describe_topic(admin, topic: str) -> dict:
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res], request_timeout=T)[res].result(timeout=T)


def test_topic_lifecycle(broker):
    admin = admin_client(broker.bootstrap)
    topic = "admin-lifecycle"

    fs = admin.create_topics(
        [NewTopic(topic, num_partitions=2, replication_factor=1, config={"retention.ms": "123456"})],
        operation_timeout=T,
        request_timeout=T,
    )
    assert fs[topic].result(timeout=T) is None
    wait_topic(broker.bootstrap, topic, 2)
    md = admin.list_topics(timeout=T)
    assert sorted(md.topics[topic].partitions) == [0, 1]
    for p in md.topics[topic].partitions.values():
        assert p.leader == md.brokers[p.leader].id
        assert p.replicas == [p.leader] and p.isrs == [p.leader]

    configs = _describe_topic(admin, topic)
    entry = configs.get("retention.ms")
    assert entry is not None, f"retention.ms missing from DescribeConfigs: {sorted(configs)}"
    assert entry.value == "123456"
    assert ConfigSource(entry.source) == ConfigSource.DYNAMIC_TOPIC_CONFIG, f"source {entry.source}"
    assert not entry.is_default
    # topics also report the settings they were not given, at their defaults
    assert "cleanup.policy" in configs, f"DescribeConfigs lists only {sorted(configs)}"
    assert configs["cleanup.policy"].value == "delete"
    assert configs["cleanup.policy"].is_default

    fs = admin.create_partitions([NewPartitions(topic, 4)], operation_timeout=T, request_timeout=T)
    assert fs[topic].result(timeout=T) is None
    wait_topic(broker.bootstrap, topic, 4)
    assert topic_partition_counts(broker.bootstrap)[topic] == 4

    fs = admin.delete_topics([topic], operation_timeout=T, request_timeout=T)
    assert fs[topic].result(timeout=T) is None
    wait_for(lambda: topic not in topic_partition_counts(broker.bootstrap), T, f"{topic} to disappear from Metadata")


def test_create_with_broker_default_partitions(broker_factory):
    broker = broker_factory({"num.partitions": 3})
    admin = admin_client(broker.bootstrap)
    topic = "admin-defaults"
    # KIP-464: -1 partitions / replication factor means "the broker's default"
    fs = admin.create_topics([NewTopic(topic, num_partitions=-1, replication_factor=-1)], operation_timeout=T, request_timeout=T)
    assert fs[topic].result(timeout=T) is None
    wait_topic(broker.bootstrap, topic, 3)
    assert topic_partition_counts(broker.bootstrap)[topic] == 3


@pytest.mark.parametrize(
    "name",
    ["bad name", "bad/name", "x" * 250, ".", "..", "tópic"],
    ids=["space", "slash", "250-chars", "dot", "dotdot", "non-ascii"],
)
def test_invalid_topic_name_rejected(broker, name):
    admin = admin_client(broker.bootstrap)
    fs = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)], operation_timeout=T, request_timeout=T)
    err = _error_of(fs[name])
    assert err.code() == KafkaError.TOPIC_EXCEPTION, f"{name!r}: got {err.name()} ({err.code()}): {err.str()}"
    assert name not in topic_partition_counts(broker.bootstrap)


def test_create_existing_topic(broker):
    admin = admin_client(broker.bootstrap)
    topic = "admin-dup"
    create_topic(broker.bootstrap, topic, 2)
    fs = admin.create_topics([NewTopic(topic, num_partitions=5, replication_factor=1)], operation_timeout=T, request_timeout=T)
    err = _error_of(fs[topic])
    assert err.code() == KafkaError.TOPIC_ALREADY_EXISTS, f"got {err.name()}: {err.str()}"
    assert topic_partition_counts(broker.bootstrap)[topic] == 2  # unchanged


def test_invalid_configs_rejected(broker):
    admin = admin_client(broker.bootstrap)
    cases = {
        "admin-badvalue": {"retention.ms": "not-a-number"},
        "admin-badname": {"no.such.topic.config": "1"},
        "admin-badpolicy": {"cleanup.policy": "shred"},
    }
    fs = admin.create_topics(
        [NewTopic(t, num_partitions=1, replication_factor=1, config=c) for t, c in cases.items()],
        operation_timeout=T,
        request_timeout=T,
    )
    for t in cases:
        err = _error_of(fs[t])
        assert err.code() == KafkaError.INVALID_CONFIG, f"{t} {cases[t]}: got {err.name()}: {err.str()}"
    existing = topic_partition_counts(broker.bootstrap)
    assert not set(cases) & set(existing), "a topic with an invalid config was created anyway"


def test_partition_count_cannot_shrink(broker):
    admin = admin_client(broker.bootstrap)
    topic = "admin-shrink"
    create_topic(broker.bootstrap, topic, 3)
    err = _error_of(admin.create_partitions([NewPartitions(topic, 2)], operation_timeout=T, request_timeout=T)[topic])
    assert err.code() == KafkaError.INVALID_PARTITIONS, f"got {err.name()}: {err.str()}"
    err = _error_of(
        admin.create_partitions([NewPartitions("admin-nosuch", 4)], operation_timeout=T, request_timeout=T)["admin-nosuch"]
    )
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, f"got {err.name()}: {err.str()}"
    assert topic_partition_counts(broker.bootstrap)[topic] == 3


def test_delete_unknown_topic(broker):
    admin = admin_client(broker.bootstrap)
    err = _error_of(admin.delete_topics(["admin-never-existed"], operation_timeout=T, request_timeout=T)["admin-never-existed"])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, f"got {err.name()}: {err.str()}"


def test_incremental_alter_configs(broker):
    admin = admin_client(broker.bootstrap)
    topic = "admin-alter"
    create_topic(broker.bootstrap, topic, 1)
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([res], request_timeout=T)[res].result(timeout=T)
    entry = _describe_topic(admin, topic)["retention.ms"]
    assert (entry.value, ConfigSource(entry.source)) == ("7200000", ConfigSource.DYNAMIC_TOPIC_CONFIG)

    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)],
    )
    admin.incremental_alter_configs([res], request_timeout=T)[res].result(timeout=T)
    entry = _describe_topic(admin, topic)["retention.ms"]
    assert entry.value == "604800000", f"retention.ms after DELETE: {entry.value} (Kafka's default is 7 days)"
    assert entry.is_default

    bad = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)],
    )
    err = _error_of(admin.incremental_alter_configs([bad], request_timeout=T)[bad])
    assert err.code() == KafkaError.INVALID_CONFIG, f"got {err.name()}: {err.str()}"


def test_describe_cluster_and_broker_config(broker_factory):
    broker = broker_factory({"message.max.bytes": 2000000})
    admin = admin_client(broker.bootstrap)
    cluster = admin.describe_cluster(request_timeout=T).result(timeout=T)
    assert cluster.cluster_id, "empty cluster id"
    assert len(cluster.nodes) == 1
    node = cluster.nodes[0]
    assert (node.host, node.port) == ("127.0.0.1", broker.port)
    assert cluster.controller is not None and cluster.controller.id == node.id

    res = ConfigResource(ResourceType.BROKER, str(node.id))
    configs = admin.describe_configs([res], request_timeout=T)[res].result(timeout=T)
    assert configs["message.max.bytes"].value == "2000000"


def test_kafka_python_admin(broker):
    """kafka-python 3.x: CreateTopics, AlterConfigs (the non-incremental API), DescribeConfigs,
    CreatePartitions, DeleteTopics."""
    from kafka.admin import ConfigResource as KPConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=T * 1000)
    try:
        topic = "kp-admin"
        admin.create_topics(
            {topic: {"num_partitions": 2, "replication_factor": 1, "configs": {"retention.ms": "99000"}}},
            wait_for_metadata=True,
        )
        wait_topic(broker.bootstrap, topic, 2)
        assert topic in admin.list_topics()

        described = admin.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
        assert described["topic"][topic]["retention.ms"]["value"] == "99000"

        result = admin.alter_configs(
            [KPConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "88000"})], incremental=False
        )
        assert result == {"topic": {topic: "OK"}}, result
        described = admin.describe_configs([KPConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
        assert described["topic"][topic]["retention.ms"]["value"] == "88000"

        admin.create_partitions({topic: 3})
        wait_topic(broker.bootstrap, topic, 3)

        admin.delete_topics([topic])
        wait_for(lambda: topic not in topic_partition_counts(broker.bootstrap), T, f"{topic} to be deleted")
    finally:
        admin.close()


def test_recreated_topic_starts_empty(broker):
    """Deleting a topic deletes its data: a new topic of the same name starts at offset 0, empty."""
    from e2e_util import Rec, assert_all_delivered, consume_confluent, produce_confluent, watermarks

    admin = admin_client(broker.bootstrap)
    topic = "admin-recreate"
    create_topic(broker.bootstrap, topic, 2)
    old = [Rec(f"k{i}".encode(), f"old-{i}".encode()) for i in range(200)]
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, old, conf={"partitioner": "murmur2_random"}))
    admin.delete_topics([topic], operation_timeout=T, request_timeout=T)[topic].result(timeout=T)
    wait_for(lambda: topic not in topic_partition_counts(broker.bootstrap), T, f"{topic} to be deleted")

    create_topic(broker.bootstrap, topic, 1)
    assert watermarks(broker.bootstrap, topic, 0) == (0, 0), "the recreated topic is not empty"
    results = produce_confluent(broker.bootstrap, topic, [Rec(b"k", b"new")], partition=0)
    assert_all_delivered(results)
    assert results[0][2] == 0
    got = consume_confluent(broker.bootstrap, topic, [0], expected=1)
    assert [(g.offset, g.value) for g in got] == [(0, b"new")]
