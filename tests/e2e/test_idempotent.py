"""Idempotent producers (InitProducerId + sequenced batches): kafka-python (idempotent by default)
and confluent-kafka with enable.idempotence=true. Every record is read back once, in order."""

from __future__ import annotations

import pytest

from e2e_util import (
    Rec,
    assert_all_delivered,
    assert_contiguous,
    assert_matches_deliveries,
    assert_per_key_order,
    consume_confluent,
    create_topic,
    gen_records,
    produce_confluent,
    watermarks,
)


@pytest.mark.timeout(300)
def test_kafka_python_idempotent_producer(broker):
    from kafka import KafkaProducer

    topic = "idem-kafka-python"
    create_topic(broker.bootstrap, topic, 1)
    n = 3000
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5, request_timeout_ms=30000)
    try:
        assert producer.config["enable_idempotence"] is True, "kafka-python is expected to be idempotent by default"
        futures = [
            producer.send(
                topic, key=f"k{i % 7}".encode(), value=f"kafka-python idempotent #{i:05d}".encode() * (1 + i % 5), partition=0
            )
            for i in range(n)
        ]
        producer.flush(timeout=120)
        metas = [f.get(timeout=60) for f in futures]
    finally:
        producer.close(timeout=30)
    assert [m.offset for m in metas] == list(range(n)), "acked offsets are not 0..n-1 in send order"
    assert all(m.partition == 0 for m in metas)

    got = consume_confluent(broker.bootstrap, topic, [0], expected=n)
    assert len(got) == n, f"read {len(got)} records, produced {n}"
    assert [g.offset for g in got] == list(range(n))
    assert [g.value for g in got] == [f"kafka-python idempotent #{i:05d}".encode() * (1 + i % 5) for i in range(n)]
    assert [g.key for g in got] == [f"k{i % 7}".encode() for i in range(n)]
    assert watermarks(broker.bootstrap, topic, 0) == (0, n)


@pytest.mark.timeout(300)
def test_confluent_idempotent_producer(broker):
    topic = "idem-confluent"
    partitions = 3
    create_topic(broker.bootstrap, topic, partitions)
    records = gen_records(6000, n_keys=30, seed=99)
    results = produce_confluent(
        broker.bootstrap,
        topic,
        records,
        conf={
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "batch.num.messages": 200,  # many batches in flight per partition (max.in.flight=5)
            "compression.type": "lz4",
        },
    )
    assert_all_delivered(results)
    got = consume_confluent(broker.bootstrap, topic, range(partitions), expected=len(records))
    assert_matches_deliveries(records, results, got)
    assert_contiguous(got, range(partitions))
    assert_per_key_order(records, got)


@pytest.mark.timeout(300)
def test_confluent_idempotent_single_partition_order(broker):
    """One partition, unkeyed records: the log order must be exactly the produce order."""
    topic = "idem-order"
    create_topic(broker.bootstrap, topic, 1)
    records = [Rec(None, f"ordered-{i:06d}".encode()) for i in range(5000)]
    results = produce_confluent(
        broker.bootstrap,
        topic,
        records,
        conf={"enable.idempotence": True, "linger.ms": 2, "batch.num.messages": 100},
        partition=0,
    )
    assert_all_delivered(results)
    assert [off for (_e, _p, off) in results] == list(range(len(records)))
    got = consume_confluent(broker.bootstrap, topic, [0], expected=len(records))
    assert [g.value for g in got] == [r.value for r in records]
