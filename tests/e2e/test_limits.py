"""message.max.bytes: an oversized batch is rejected with MESSAGE_TOO_LARGE, the broker goes on serving."""

from __future__ import annotations

import os

import pytest
from confluent_kafka import KafkaError

from e2e_util import Rec, consume_confluent, create_topic, produce_confluent

LIMIT = 10_000
# The client-side limits stay far above the broker's, so that the broker is the one refusing.
CLIENT = {"message.max.bytes": 1_000_000, "linger.ms": 0, "message.timeout.ms": 30000}


def test_oversized_record_rejected_confluent(broker_factory):
    broker = broker_factory({"message.max.bytes": LIMIT})
    topic = "limits-confluent"
    create_topic(broker.bootstrap, topic, 1)

    big = Rec(b"big", os.urandom(5 * LIMIT))
    results = produce_confluent(broker.bootstrap, topic, [big], conf=CLIENT, partition=0)
    err = results[0][0]
    assert err is not None, "a 50 kB record was accepted by a broker with message.max.bytes=10000"
    assert err.code() == KafkaError.MSG_SIZE_TOO_LARGE, f"got {err.name()}: {err.str()}"

    # the broker keeps serving: a normal record right after is accepted, at offset 0
    small = Rec(b"small", b"x" * 100)
    results = produce_confluent(broker.bootstrap, topic, [small], conf=CLIENT, partition=0)
    assert results[0][0] is None, f"normal record after the oversized one failed: {results[0][0]}"
    assert results[0][2] == 0, "the rejected record took an offset"

    got = consume_confluent(broker.bootstrap, topic, [0], expected=1)
    assert [(g.offset, g.key, g.value) for g in got] == [(0, b"small", b"x" * 100)]


def test_limit_applies_to_the_compressed_batch(broker_factory):
    """Like Kafka, the limit is on the batch as sent (compressed), not on the uncompressed records."""
    broker = broker_factory({"message.max.bytes": LIMIT})
    topic = "limits-compressed"
    create_topic(broker.bootstrap, topic, 1)
    compressible = Rec(b"zeros", bytes(5 * LIMIT))
    results = produce_confluent(
        broker.bootstrap, topic, [compressible], conf=dict(CLIENT, **{"compression.type": "gzip"}), partition=0
    )
    assert results[0][0] is None, f"a gzip batch of ~100 bytes (50 kB uncompressed) was refused: {results[0][0]}"
    incompressible = Rec(b"noise", os.urandom(5 * LIMIT))
    results = produce_confluent(
        broker.bootstrap, topic, [incompressible], conf=dict(CLIENT, **{"compression.type": "gzip"}), partition=0
    )
    assert results[0][0] is not None and results[0][0].code() == KafkaError.MSG_SIZE_TOO_LARGE, f"got {results[0][0]}"
    got = consume_confluent(broker.bootstrap, topic, [0], expected=1)
    assert [(g.key, g.value) for g in got] == [(b"zeros", bytes(5 * LIMIT))]


def test_oversized_record_rejected_kafka_python(broker_factory):
    from kafka import KafkaProducer
    from kafka.errors import MessageSizeTooLargeError

    broker = broker_factory({"message.max.bytes": LIMIT})
    topic = "limits-kafka-python"
    create_topic(broker.bootstrap, topic, 1)
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap, acks="all", max_request_size=1_000_000, retries=0, request_timeout_ms=30000
    )
    try:
        fut = producer.send(topic, key=b"big", value=os.urandom(5 * LIMIT), partition=0)
        with pytest.raises(MessageSizeTooLargeError):
            fut.get(timeout=60)
        meta = producer.send(topic, key=b"small", value=b"y" * 100, partition=0).get(timeout=60)
        assert meta.offset == 0
    finally:
        producer.close(timeout=30)
    got = consume_confluent(broker.bootstrap, topic, [0], expected=1)
    assert [(g.key, g.value) for g in got] == [(b"small", b"y" * 100)]
