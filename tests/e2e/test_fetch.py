"""Fetch behaviour seen from clients: long polling, out-of-range offsets, records larger than the
fetch limits, concurrent producers on one partition, reading from the middle of the log."""

from __future__ import annotations

import os
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from e2e_util import (
    CONSUMER_GROUP,
    Rec,
    assert_all_delivered,
    base_conf,
    consume_confluent,
    create_topic,
    produce_confluent,
)


def _consumer(bootstrap, **extra):
    conf = base_conf(bootstrap)
    conf.update(
        {
            "group.id": CONSUMER_GROUP,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 500,
        }
    )
    conf.update(extra)
    return Consumer(conf)


def _poll_until(consumer, want: int, timeout: float):
    got, errors = [], []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=500, timeout=0.5):
            if m.error():
                errors.append(m.error())
            else:
                got.append(m)
    return got, errors


def test_consumer_waiting_at_the_end_gets_new_records(broker):
    """A consumer parked at the end of the log (long-polling Fetch) receives records produced later."""
    topic = "fetch-tail"
    create_topic(broker.bootstrap, topic, 1)
    c = _consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        early, errors = _poll_until(c, 1, 3)  # nothing there yet
        assert early == [] and errors == [], f"unexpected {early} {errors}"
        records = [Rec(None, f"late-{i}".encode()) for i in range(100)]
        assert_all_delivered(produce_confluent(broker.bootstrap, topic, records, partition=0))
        got, errors = _poll_until(c, 100, 60)
        assert not errors, errors
        assert [m.value() for m in got] == [r.value for r in records]
        assert [m.offset() for m in got] == list(range(100))
    finally:
        c.close()


def test_offset_out_of_range_resets_to_earliest(broker):
    topic = "fetch-oor"
    create_topic(broker.bootstrap, topic, 1)
    records = [Rec(None, f"r{i}".encode()) for i in range(10)]
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, records, partition=0))
    c = _consumer(broker.bootstrap, **{"auto.offset.reset": "earliest"})
    try:
        # Fetch at 5000 in a 10-record log: OFFSET_OUT_OF_RANGE, and the client resets to the start
        c.assign([TopicPartition(topic, 0, 5000)])
        got, errors = _poll_until(c, 10, 60)
        assert [m.offset() for m in got] == list(range(10)), f"got offsets {[m.offset() for m in got]}, errors {errors}"
    finally:
        c.close()

    c = _consumer(broker.bootstrap, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, 5000)])
        got, errors = _poll_until(c, 1, 20)
        assert got == []
        assert any(e.code() == KafkaError._AUTO_OFFSET_RESET for e in errors), f"errors: {errors}"
    finally:
        c.close()


def test_read_from_the_middle(broker):
    topic = "fetch-middle"
    create_topic(broker.bootstrap, topic, 1)
    records = [Rec(None, f"m{i:05d}".encode() * 10) for i in range(3000)]
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, records, partition=0, conf={"batch.num.messages": 64}))
    c = _consumer(broker.bootstrap)
    try:
        # 1234 lies inside a batch: the records before it in that batch must not be handed out
        c.assign([TopicPartition(topic, 0, 1234)])
        got, errors = _poll_until(c, 3000 - 1234, 60)
        assert not errors, errors
        assert [m.offset() for m in got] == list(range(1234, 3000))
        assert [m.value() for m in got] == [r.value for r in records[1234:]]
    finally:
        c.close()


def test_record_larger_than_fetch_limits_is_still_returned(broker):
    """KIP-74: the first batch is returned even when it exceeds max.partition.fetch.bytes / fetch.max.bytes."""
    topic = "fetch-big"
    create_topic(broker.bootstrap, topic, 1)
    big = os.urandom(900_000)
    records = [Rec(b"small-before", b"a"), Rec(b"big", big), Rec(b"small-after", b"b")]
    results = produce_confluent(
        broker.bootstrap, topic, records, partition=0, conf={"linger.ms": 0, "message.max.bytes": 2_000_000}
    )
    assert_all_delivered(results)
    got = consume_confluent(
        broker.bootstrap,
        topic,
        [0],
        expected=3,
        conf={
            "message.max.bytes": 65536,
            "max.partition.fetch.bytes": 65536,
            "fetch.max.bytes": 100_000,
            "receive.message.max.bytes": 2_000_000,
        },
    )
    assert [(g.key, g.value) for g in got] == [(r.key, r.value) for r in records]


@pytest.mark.timeout(300)
def test_concurrent_producers_one_partition(broker):
    topic = "fetch-concurrent"
    create_topic(broker.bootstrap, topic, 1)
    producers, per = 4, 2500
    outcome: dict[int, list] = {}
    failures: list[BaseException] = []

    def run(pid: int):
        try:
            recs = [Rec(f"p{pid}".encode(), f"p{pid}-{i:05d}".encode()) for i in range(per)]
            outcome[pid] = produce_confluent(
                broker.bootstrap,
                topic,
                recs,
                partition=0,
                conf={"linger.ms": 2, "compression.type": "snappy" if pid % 2 else "none"},
            )
        except BaseException as exc:  # surfaced in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=200)
    assert not any(t.is_alive() for t in threads), "a producer thread did not finish"
    assert not failures, failures
    offsets = []
    for res in outcome.values():
        assert_all_delivered(res)
        offsets += [off for (_e, _p, off) in res]
    assert sorted(offsets) == list(range(producers * per)), "acked offsets overlap or leave gaps"

    got = consume_confluent(broker.bootstrap, topic, [0], expected=producers * per)
    assert [g.offset for g in got] == list(range(producers * per))
    for pid in range(producers):
        mine = [g.value for g in got if g.key == f"p{pid}".encode()]
        assert mine == [f"p{pid}-{i:05d}".encode() for i in range(per)], f"producer {pid}: lost, duplicated or reordered"
    at = {g.offset: g.value for g in got}
    for pid, res in outcome.items():
        for i, (_e, _p, off) in enumerate(res):
            assert at[off] == f"p{pid}-{i:05d}".encode(), f"offset {off} holds {at[off]!r}"
