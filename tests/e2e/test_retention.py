"""Time- and size-based retention delete whole closed segments and move the log start offset.
The broker checks retention every second here; every wait is bounded and generous."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from e2e_util import (
    Rec,
    admin_client,
    assert_all_delivered,
    consume_confluent,
    create_topic,
    produce_confluent,
    wait_for,
    watermarks,
)

SETTINGS = {"log.retention.check.interval.ms": 1000, "log.segment.delete.delay.ms": 0}


SEGMENT = 1_048_576  # Kafka 4 does not accept segment.bytes below 1 MiB (KIP-1030)


def _fill(broker, topic, n=3500):
    # ~1 kB records, ~3.5 MB: three closed 1 MiB segments and an active one
    records = [Rec(None, f"{i:06d}".encode() + b"r" * 1000) for i in range(n)]
    results = produce_confluent(broker.bootstrap, topic, records, partition=0, conf={"batch.num.messages": 50})
    assert_all_delivered(results)
    return records


@pytest.mark.timeout(180)
def test_retention_ms_deletes_old_segments(broker_factory):
    broker = broker_factory(SETTINGS)
    topic = "retention-time"
    create_topic(broker.bootstrap, topic, 1, config={"segment.bytes": str(SEGMENT)})
    records = _fill(broker, topic)
    assert watermarks(broker.bootstrap, topic, 0) == (0, len(records))

    admin = admin_client(broker.bootstrap)
    res = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([res], request_timeout=30)[res].result(timeout=30)

    wait_for(lambda: watermarks(broker.bootstrap, topic, 0)[0] > 0, 90, "retention to delete old segments", interval=0.5)
    lo, hi = watermarks(broker.bootstrap, topic, 0)
    assert hi == len(records), "retention must not change the high watermark"
    assert 0 < lo <= hi
    got = consume_confluent(broker.bootstrap, topic, [0], expected=hi - lo)
    assert got and got[0].offset == lo and [g.offset for g in got] == list(range(lo, hi))
    assert [g.value for g in got] == [r.value for r in records[lo:]]


@pytest.mark.timeout(180)
def test_retention_bytes_keeps_the_newest_data(broker_factory):
    broker = broker_factory(SETTINGS)
    topic = "retention-bytes"
    create_topic(broker.bootstrap, topic, 1, config={"segment.bytes": str(SEGMENT), "retention.bytes": str(2 * SEGMENT)})
    records = _fill(broker, topic)
    wait_for(lambda: watermarks(broker.bootstrap, topic, 0)[0] > 0, 90, "size-based retention", interval=0.5)
    lo, hi = watermarks(broker.bootstrap, topic, 0)
    assert hi == len(records)
    # Kafka deletes the oldest segments only while what remains is still >= retention.bytes
    assert (hi - lo) * 1006 >= 2 * SEGMENT - 65536, f"retention deleted too much: [{lo}, {hi})"
    got = consume_confluent(broker.bootstrap, topic, [0], expected=hi - lo)
    assert [g.value for g in got] == [r.value for r in records[lo:]]
