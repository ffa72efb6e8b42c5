"""kafka-python's consumer (manual assignment, no group) reads what confluent-kafka produced,
in every codec (snappy, lz4 and zstd through the packages in requirements.txt)."""

from __future__ import annotations

import time

import pytest

from e2e_util import (
    assert_all_delivered,
    create_topic,
    gen_records,
    kafka_partition_for,
    produce_confluent,
)

PARTITIONS = 3


@pytest.mark.timeout(300)
@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_consumer_reads_confluent_records(broker, codec):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KPTopicPartition

    topic = f"kp-consume-{codec}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    records = gen_records(3000, n_keys=40, seed=21)
    results = produce_confluent(
        broker.bootstrap, topic, records, conf={"compression.type": codec, "partitioner": "murmur2_random", "linger.ms": 20}
    )
    assert_all_delivered(results)

    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=30000,
        fetch_max_wait_ms=200,
    )
    got = {}
    try:
        tps = [KPTopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 120
        while len(got) < len(records) and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=500, max_records=1000).values():
                for m in msgs:
                    assert (m.partition, m.offset) not in got, f"record {m.partition}/{m.offset} delivered twice"
                    got[(m.partition, m.offset)] = m
        # nothing beyond what was produced
        extra = consumer.poll(timeout_ms=1000)
        assert not any(extra.values()), f"unexpected extra records: {extra}"
        ends = consumer.end_offsets(tps)
    finally:
        consumer.close()

    assert len(got) == len(records), f"kafka-python read {len(got)} of {len(records)} records"
    for p in range(PARTITIONS):
        n = sum(1 for (_e, pp, _o) in results if pp == p)
        assert ends[KPTopicPartition(topic, p)] == n
        assert sorted(o for (pp, o) in got if pp == p) == list(range(n)), f"partition {p}: offsets not contiguous"
    for i, (rec, (_e, p, off)) in enumerate(zip(records, results)):
        m = got[(p, off)]
        assert m.key == rec.key and m.value == rec.value, f"record #{i} at {p}/{off} differs"
        assert [(k, v) for k, v in m.headers] == list(rec.headers), f"record #{i}: headers {m.headers} vs {rec.headers}"
        assert p == kafka_partition_for(rec.key, PARTITIONS)
