"""auto.create.topics.enable: topics are created on first produce by default, and producing to an
unknown topic fails with UNKNOWN_TOPIC_OR_PARTITION when it is off."""

from __future__ import annotations

from confluent_kafka import KafkaError

from e2e_util import (
    Rec,
    assert_all_delivered,
    consume_confluent,
    create_topic,
    produce_confluent,
    topic_partition_counts,
)


def test_topic_created_on_first_produce(broker):
    topic = "auto-created"
    assert topic not in topic_partition_counts(broker.bootstrap)
    records = [Rec(f"k{i}".encode(), f"auto {i}".encode()) for i in range(20)]
    results = produce_confluent(broker.bootstrap, topic, records, conf={"message.timeout.ms": 30000})
    assert_all_delivered(results)
    counts = topic_partition_counts(broker.bootstrap)
    assert counts.get(topic) == 1, f"auto-created topic should have num.partitions (Kafka default 1) partitions: {counts}"
    got = consume_confluent(broker.bootstrap, topic, [0], expected=len(records))
    assert [g.value for g in got] == [r.value for r in records]


def test_auto_created_topic_uses_num_partitions(broker_factory):
    broker = broker_factory({"num.partitions": 3})
    topic = "auto-created-3"
    results = produce_confluent(
        broker.bootstrap,
        topic,
        [Rec(f"k{i}".encode(), b"v") for i in range(30)],
        conf={"message.timeout.ms": 30000, "partitioner": "murmur2_random"},
    )
    assert_all_delivered(results)
    assert topic_partition_counts(broker.bootstrap).get(topic) == 3


def test_produce_to_unknown_topic_fails_when_auto_create_is_off(broker_factory):
    broker = broker_factory({"auto.create.topics.enable": False})
    topic = "not-auto-created"
    results = produce_confluent(
        broker.bootstrap,
        topic,
        [Rec(b"k", b"must not be stored")],
        # librdkafka waits topic.metadata.propagation.max.ms (default 30 s) before it believes the broker
        conf={"message.timeout.ms": 30000, "topic.metadata.propagation.max.ms": 2000},
        flush_timeout=60,
    )
    err = results[0][0]
    assert err is not None, "produce to an unknown topic succeeded although auto.create.topics.enable=false"
    assert err.code() in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART), f"got {err.name()}: {err.str()}"
    assert topic not in topic_partition_counts(broker.bootstrap), "the topic was created anyway"

    # explicit creation still works, and then so does producing
    create_topic(broker.bootstrap, topic, 1)
    results = produce_confluent(broker.bootstrap, topic, [Rec(b"k", b"now it exists")], partition=0)
    assert_all_delivered(results)
    assert results[0][2] == 0


def test_kafka_python_producer_auto_creates(broker):
    from kafka import KafkaProducer

    topic = "auto-kafka-python"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", request_timeout_ms=30000, max_block_ms=30000)
    try:
        metas = [producer.send(topic, value=f"kp {i}".encode()).get(timeout=60) for i in range(5)]
    finally:
        producer.close(timeout=30)
    assert [m.offset for m in metas] == [0, 1, 2, 3, 4]
    assert topic_partition_counts(broker.bootstrap).get(topic) == 1
