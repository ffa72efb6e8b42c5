"""Admin APIs that tools call (issue 15 item 7): DescribeLogDirs and DescribeProducers through
kafka-python's KafkaAdminClient, and KIP-714's client telemetry answered as "no telemetry"
(GetTelemetrySubscriptions, PushTelemetry, ListClientMetricsResources) over raw requests, since
kafka-python has no classes for them."""

from __future__ import annotations

import json
import os
import struct
import urllib.request
import uuid

import pytest
from confluent_kafka import Producer
from kafka import KafkaAdminClient, TopicPartition
from kafka.errors import UnknownTopicOrPartitionError
from prometheus_client.parser import text_string_to_metric_families

import rawkafka
from conftest import free_port
from e2e_util import Rec, assert_all_delivered, base_conf, create_topic, produce_confluent, wait_for


def log_bytes(broker, topic: str, partition: int) -> int:
    return sum(p.stat().st_size for p in broker.data_dir.glob(f"{topic}-{partition}/*.log"))


def admin(broker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=20000)


def no_errors_logged(broker) -> None:
    bad = [line for line in broker.stderr_tail().splitlines() if " ERROR " in line or '"level":"ERROR"' in line]
    assert not bad, bad[:5]


def test_describe_log_dirs_sizes_match_the_files(broker):
    topic = "logdirs"
    create_topic(broker.bootstrap, topic, partitions=3)
    # No retries and no idempotence: every batch is appended exactly once.
    records = [Rec(f"k{i}".encode(), f"value-{i}".encode() * 7) for i in range(240)]
    results = produce_confluent(broker.bootstrap, topic, records,
                                conf={"enable.idempotence": False, "retries": 0})
    assert_all_delivered(results)
    written = {p for _, p, _ in results}
    assert written == {0, 1, 2}, "the keys spread over every partition"

    a = admin(broker)
    try:
        [answer] = a.describe_log_dirs({topic: [0, 1, 2, 99], "no-such-topic": [0]})
        [result] = answer["log_dirs"]
        assert result["error_code"] == 0
        assert result["log_dir"] == os.path.abspath(broker.data_dir)
        assert result["total_bytes"] > 0 and result["usable_bytes"] > 0
        assert result["usable_bytes"] <= result["total_bytes"]
        [t] = result["topics"]
        assert t["name"] == topic, "unknown topics and partitions are left out"
        parts = {p["partition_index"]: p for p in t["partitions"]}
        assert sorted(parts) == [0, 1, 2]
        for index, p in parts.items():
            on_disk = log_bytes(broker, topic, index)
            assert on_disk > 0
            assert p["partition_size"] == on_disk, index
            assert p["offset_lag"] == 0, "a leader's log end is at its high watermark"
            assert p["is_future_key"] is False

        # topics = null: every hosted partition, this topic's among them.
        [everything] = a._manager.run(a._async_describe_log_dirs, None, None)
        [result] = everything["log_dirs"]
        by_topic = {t["name"]: t for t in result["topics"]}
        assert sorted(p["partition_index"] for p in by_topic[topic]["partitions"]) == [0, 1, 2]
        assert sum(p["partition_size"] for p in by_topic[topic]["partitions"]) == sum(
            log_bytes(broker, topic, i) for i in range(3))
    finally:
        a.close()
    no_errors_logged(broker)


def requests_served(http_port: int, request: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "kafka_network_requestmetrics_requests_total" and s.labels.get("request") == request)


def idempotent_producer_id(producer: Producer, stats: list[dict]) -> int:
    def known():
        producer.poll(0.1)
        return any(s.get("eos", {}).get("producer_id", -1) >= 0 for s in stats)

    wait_for(known, 20, "librdkafka's statistics to show the producer id")
    return next(s["eos"]["producer_id"] for s in reversed(stats) if s.get("eos", {}).get("producer_id", -1) >= 0)


def test_describe_producers_shows_an_idempotent_producer(broker_factory):
    http_port = free_port()
    broker = broker_factory({"http.listen": f"127.0.0.1:{http_port}"})
    topic = "producers"
    create_topic(broker.bootstrap, topic, partitions=3)
    stats: list[dict] = []
    conf = {**base_conf(broker.bootstrap), "enable.idempotence": True, "linger.ms": 5,
            "statistics.interval.ms": 200, "stats_cb": lambda s: stats.append(json.loads(s))}
    producer = Producer(conf)
    counts = {0: 17, 1: 40}
    errors = []
    for partition, n in counts.items():
        for i in range(n):
            producer.produce(topic, value=f"v{i}".encode(), partition=partition,
                             on_delivery=lambda err, _msg: err and errors.append(err))
    assert producer.flush(30) == 0
    assert not errors, errors[:3]
    pid = idempotent_producer_id(producer, stats)
    # librdkafka asks for its telemetry subscription once the broker advertises the API (KIP-714).
    wait_for(lambda: requests_served(http_port, "GetTelemetrySubscriptions") >= 1, 20,
             "librdkafka's GetTelemetrySubscriptions")

    a = admin(broker)
    try:
        got = a.describe_producers([TopicPartition(topic, p) for p in range(3)])
        for partition, n in counts.items():
            [state] = got[TopicPartition(topic, partition)].active_producers
            assert state.producer_id == pid
            assert state.producer_epoch == 0
            assert state.last_sequence == n - 1, partition
            assert state.last_timestamp > 0
            assert state.coordinator_epoch == -1
            assert state.current_transaction_start_offset == -1
        assert got[TopicPartition(topic, 2)].active_producers == [], "never written"

        node = a._manager.cluster.brokers().pop().node_id
        with pytest.raises(UnknownTopicOrPartitionError):
            a.describe_producers([TopicPartition(topic, 3)], broker_id=node)
        with pytest.raises(UnknownTopicOrPartitionError):
            a.describe_producers([TopicPartition("no-such-topic", 0)], broker_id=node)
    finally:
        a.close()
        producer.flush(5)
    no_errors_logged(broker)


# ----------------------------------------------------------------------------- telemetry, raw
def header_v2(api_key: int, version: int, corr: int) -> bytes:
    client_id = b"vltava-e2e-raw"
    return struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id + b"\x00"


def call(sock, api_key: int, corr: int, body: bytes) -> rawkafka.Reader:
    rawkafka.send_frame(sock, header_v2(api_key, 0, corr) + body + b"\x00")
    r = rawkafka.Reader(rawkafka.recv_frame(sock))
    assert r.take("i") == corr
    assert r.take("B") == 0, "no tagged fields in the response header"
    return r


def uvarint(r: rawkafka.Reader) -> int:
    shift = value = 0
    while True:
        b = r.take("B")
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value
        shift += 7


def get_subscriptions(sock, corr: int, instance_id: uuid.UUID) -> dict:
    r = call(sock, 71, corr, instance_id.bytes)
    out = {"throttle": r.take("i"), "error_code": r.take("h")}
    out["client_instance_id"] = uuid.UUID(bytes=bytes(r.take("16s")))
    out["subscription_id"] = r.take("i")
    out["accepted_compression_types"] = [r.take("b") for _ in range(uvarint(r) - 1)]
    out["push_interval_ms"] = r.take("i")
    out["telemetry_max_bytes"] = r.take("i")
    out["delta_temporality"] = r.take("?")
    out["requested_metrics"] = []
    for _ in range(uvarint(r) - 1):
        n = uvarint(r) - 1
        out["requested_metrics"].append(bytes(r.take(f"{n}s")).decode())
    return out


def push(sock, corr: int, instance_id: uuid.UUID, subscription_id: int, metrics: bytes) -> int:
    body = instance_id.bytes + struct.pack(">i?b", subscription_id, False, 0) + bytes([len(metrics) + 1]) + metrics
    r = call(sock, 72, corr, body)
    r.take("i")
    return r.take("h")


def test_telemetry_is_answered_as_no_telemetry(broker):
    sock = rawkafka.connect(broker.host, broker.port)
    try:
        fresh = get_subscriptions(sock, 1, uuid.UUID(int=0))
        assert fresh["error_code"] == 0
        assert fresh["client_instance_id"] != uuid.UUID(int=0), "a new instance id"
        assert fresh["subscription_id"] == 0
        assert fresh["requested_metrics"] == [], "no metrics requested: the client must not push"
        assert fresh["accepted_compression_types"] == []
        assert fresh["push_interval_ms"] == 300000
        assert fresh["telemetry_max_bytes"] == 1048576
        assert fresh["delta_temporality"] is True
        mine = uuid.uuid4()
        assert get_subscriptions(sock, 2, mine)["client_instance_id"] == mine, "echoed"

        # A client that pushes anyway is answered, and the connection stays open.
        assert push(sock, 3, mine, 12345, b"x") == 117, "UNKNOWN_SUBSCRIPTION_ID"
        assert push(sock, 4, uuid.UUID(int=0), 0, b"x") == 42, "INVALID_REQUEST: reserved id"
        assert push(sock, 5, mine, 0, b"otlp") == 0, "the subscription handed out: accepted, dropped"

        # ListClientMetricsResources (ListConfigResources v0): none.
        r = call(sock, 74, 6, b"")
        r.take("i")
        assert r.take("h") == 0
        assert uvarint(r) - 1 == 0
    finally:
        sock.close()
