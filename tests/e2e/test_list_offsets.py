"""ListOffsets: by timestamp, earliest/latest watermarks, max timestamp; DeleteRecords moves the
log start offset."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import OffsetSpec

from e2e_util import (
    CONSUMER_GROUP,
    Rec,
    admin_client,
    assert_all_delivered,
    base_conf,
    consume_confluent,
    create_topic,
    produce_confluent,
    watermarks,
)

T = 30


def _consumer(bootstrap):
    conf = base_conf(bootstrap)
    conf.update({"group.id": CONSUMER_GROUP, "enable.auto.commit": False})
    return Consumer(conf)


def _produce_timestamped(bootstrap, topic, t0, n, step=1000, conf=None):
    records = [Rec(f"k{i}".encode(), f"v{i}".encode(), (), t0 + i * step) for i in range(n)]
    results = produce_confluent(bootstrap, topic, records, conf=conf, partition=0)
    assert_all_delivered(results)
    assert [off for (_e, _p, off) in results] == list(range(n))
    return records


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_offsets_for_times(broker, codec):
    topic = f"ts-{codec}"
    create_topic(broker.bootstrap, topic, 1)
    t0 = (int(time.time()) - 3600) * 1000  # an hour ago, well inside retention
    n = 20
    # linger so that several timestamped records share a batch: the lookup has to look inside batches
    _produce_timestamped(broker.bootstrap, topic, t0, n, conf={"compression.type": codec, "linger.ms": 200})

    got = consume_confluent(broker.bootstrap, topic, [0], expected=n)
    assert [g.timestamp for g in got] == [t0 + i * 1000 for i in range(n)], "CreateTime timestamps not preserved"

    c = _consumer(broker.bootstrap)
    try:
        cases = {
            t0 - 5000: 0,  # before everything: the first record
            t0: 0,
            t0 + 1: 1,  # first record with timestamp >= target
            t0 + 500: 1,
            t0 + 1000: 1,
            t0 + 7000: 7,
            t0 + 7999: 8,
            t0 + (n - 1) * 1000: n - 1,
            t0 + n * 1000: -1,  # after the last record: no offset (librdkafka reports OFFSET_END, -1)
        }
        for target, want in cases.items():
            res = c.offsets_for_times([TopicPartition(topic, 0, target)], timeout=T)
            assert res[0].error is None, f"offsets_for_times({target - t0:+d}): {res[0].error}"
            assert res[0].offset == want, f"offsets_for_times(t0{target - t0:+d}) = {res[0].offset}, want {want}"
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=T, cached=False) == (0, n)
    finally:
        c.close()


def test_watermarks_and_admin_list_offsets(broker):
    topic = "ts-admin"
    create_topic(broker.bootstrap, topic, 2)
    assert watermarks(broker.bootstrap, topic, 0) == (0, 0), "empty partition: low and high watermark 0"
    t0 = (int(time.time()) - 600) * 1000
    # timestamps out of order: the record with the largest timestamp is offset 3
    stamps = [t0 + 10, t0 + 30, t0 + 20, t0 + 90, t0 + 40, t0 + 50]
    records = [Rec(None, f"r{i}".encode(), (), ts) for i, ts in enumerate(stamps)]
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, records, partition=0))

    assert watermarks(broker.bootstrap, topic, 0) == (0, len(stamps))
    assert watermarks(broker.bootstrap, topic, 1) == (0, 0)

    admin = admin_client(broker.bootstrap)
    tp = TopicPartition(topic, 0)
    specs = {
        "earliest": (OffsetSpec.earliest(), 0),
        "latest": (OffsetSpec.latest(), len(stamps)),
        "max_timestamp": (OffsetSpec.max_timestamp(), 3),  # ListOffsets v7 (KIP-734)
        "for_timestamp": (OffsetSpec.for_timestamp(t0 + 25), 1),
    }
    for name, (spec, want) in specs.items():
        res = admin.list_offsets({tp: spec}, request_timeout=T)[tp].result(timeout=T)
        assert res.offset == want, f"list_offsets {name}: {res.offset}, want {want}"
        if name == "max_timestamp":
            assert res.timestamp == t0 + 90


def test_kafka_python_offsets(broker):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KPTopicPartition

    topic = "ts-kafka-python"
    create_topic(broker.bootstrap, topic, 1)
    t0 = (int(time.time()) - 1200) * 1000
    _produce_timestamped(broker.bootstrap, topic, t0, 10)
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False, request_timeout_ms=30000)
    try:
        tp = KPTopicPartition(topic, 0)
        assert c.beginning_offsets([tp], timeout_ms=T * 1000) == {tp: 0}
        assert c.end_offsets([tp], timeout_ms=T * 1000) == {tp: 10}
        found = c.offsets_for_times({tp: t0 + 4500}, timeout_ms=T * 1000)
        assert found[tp] is not None and found[tp].offset == 5 and found[tp].timestamp == t0 + 5000
        assert c.offsets_for_times({tp: t0 + 99_000}, timeout_ms=T * 1000)[tp] is None
    finally:
        c.close()


def test_delete_records(broker):
    topic = "delete-records"
    create_topic(broker.bootstrap, topic, 1)
    n = 50
    records = [Rec(None, f"d{i}".encode()) for i in range(n)]
    # small batches, so the new log start falls inside a batch for at least one of the cuts
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, records, partition=0, conf={"batch.num.messages": 8}))

    admin = admin_client(broker.bootstrap)
    res = admin.delete_records([TopicPartition(topic, 0, 13)], request_timeout=T, operation_timeout=T)
    low = res[TopicPartition(topic, 0)].result(timeout=T)
    assert low.low_watermark == 13, f"DeleteRecords reported low watermark {low.low_watermark}"
    assert watermarks(broker.bootstrap, topic, 0) == (13, n)

    got = consume_confluent(broker.bootstrap, topic, [0], expected=n - 13)
    assert [g.offset for g in got] == list(range(13, n)), "records before the new log start offset were served"
    assert [g.value for g in got] == [r.value for r in records[13:]]

    # -1 means "up to the high watermark"
    res = admin.delete_records([TopicPartition(topic, 0, -1)], request_timeout=T, operation_timeout=T)
    assert res[TopicPartition(topic, 0)].result(timeout=T).low_watermark == n
    assert watermarks(broker.bootstrap, topic, 0) == (n, n)

    # the partition still takes writes, at the next offset
    results = produce_confluent(broker.bootstrap, topic, [Rec(None, b"after")], partition=0)
    assert_all_delivered(results)
    assert results[0][2] == n
