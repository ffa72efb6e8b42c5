"""Durability across restarts on the same data directory: graceful (SIGTERM) and crash (SIGKILL)."""

from __future__ import annotations

import signal

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

from e2e_util import (
    Rec,
    admin_client,
    assert_all_delivered,
    assert_contiguous,
    assert_matches_deliveries,
    consume_confluent,
    create_topic,
    gen_records,
    produce_confluent,
    topic_partition_counts,
    wait_for,
    watermarks,
)

PARTITIONS = 3
# small segments, so that recovery has to deal with several segments per partition
SETTINGS = {"log.segment.bytes": 1_048_576}
PRODUCE = {"partitioner": "murmur2_random", "linger.ms": 10, "acks": "all", "compression.type": "lz4"}


def _check_all(broker, topic, records, results):
    got = consume_confluent(broker.bootstrap, topic, range(PARTITIONS), expected=len(records), timeout=120)
    assert_matches_deliveries(records, results, got)
    assert_contiguous(got, range(PARTITIONS))
    for p in range(PARTITIONS):
        n = sum(1 for (_e, pp, _o) in results if pp == p)
        assert watermarks(broker.bootstrap, topic, p) == (0, n), f"partition {p} watermarks after restart"


def _next_offsets_continue(broker, topic, results):
    """A record produced after the restart lands right after the recovered ones (no offset reused)."""
    for p in range(PARTITIONS):
        n = sum(1 for (_e, pp, _o) in results if pp == p)
        res = produce_confluent(broker.bootstrap, topic, [Rec(b"after", f"after restart p{p}".encode())], partition=p)
        assert_all_delivered(res)
        assert res[0][2] == n, f"partition {p}: first offset after restart is {res[0][2]}, want {n}"


@pytest.mark.timeout(600)
def test_sigterm_restart_keeps_everything(broker_factory):
    broker = broker_factory(SETTINGS)
    topic = "restart-term"
    create_topic(broker.bootstrap, topic, PARTITIONS, config={"retention.ms": "86400000"})
    create_topic(broker.bootstrap, "restart-deleted", 1)
    records = gen_records(6000, seed=5)
    results = produce_confluent(broker.bootstrap, topic, records, conf=PRODUCE)
    assert_all_delivered(results)
    admin = admin_client(broker.bootstrap)
    admin.delete_topics(["restart-deleted"], operation_timeout=30, request_timeout=30)["restart-deleted"].result(timeout=30)
    wait_for(lambda: "restart-deleted" not in topic_partition_counts(broker.bootstrap), 30, "topic deletion")

    broker.restart(signal.SIGTERM)

    counts = topic_partition_counts(broker.bootstrap)
    assert counts.get(topic) == PARTITIONS, f"topics after restart: {counts}"
    assert "restart-deleted" not in counts, "a deleted topic came back after the restart"
    res = ConfigResource(ResourceType.TOPIC, topic)
    admin = admin_client(broker.bootstrap)  # keep the client alive while its future is pending
    entry = admin.describe_configs([res], request_timeout=30)[res].result(timeout=30)["retention.ms"]
    assert entry.value == "86400000", "topic config override lost across the restart"

    _check_all(broker, topic, records, results)
    _next_offsets_continue(broker, topic, results)


@pytest.mark.timeout(600)
def test_sigkill_keeps_acknowledged_records(broker_factory):
    broker = broker_factory(SETTINGS)
    topic = "restart-kill"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    records = gen_records(6000, seed=6)
    results = produce_confluent(broker.bootstrap, topic, records, conf=PRODUCE)
    assert_all_delivered(results)  # every record acknowledged (acks=all) before the kill

    broker.restart(signal.SIGKILL)
    _check_all(broker, topic, records, results)

    # a second round on the recovered log: more acknowledged records, killed again
    more = gen_records(3000, seed=7)
    more_results = produce_confluent(broker.bootstrap, topic, more, conf=PRODUCE)
    assert_all_delivered(more_results)
    broker.restart(signal.SIGKILL)

    everything = records + more
    all_results = results + more_results
    got = consume_confluent(broker.bootstrap, topic, range(PARTITIONS), expected=len(everything), timeout=120)
    assert_matches_deliveries(everything, all_results, got)
    assert_contiguous(got, range(PARTITIONS))
    _next_offsets_continue(broker, topic, all_results)


@pytest.mark.timeout(300)
def test_sigkill_with_idempotent_producer_state(broker_factory):
    """After a crash, a new idempotent producer session works and nothing acknowledged is lost."""
    broker = broker_factory(SETTINGS)
    topic = "restart-idem"
    create_topic(broker.bootstrap, topic, 1)
    first = [Rec(None, f"first-{i}".encode()) for i in range(1000)]
    r1 = produce_confluent(broker.bootstrap, topic, first, conf={"enable.idempotence": True}, partition=0)
    assert_all_delivered(r1)
    broker.restart(signal.SIGKILL)
    second = [Rec(None, f"second-{i}".encode()) for i in range(1000)]
    r2 = produce_confluent(broker.bootstrap, topic, second, conf={"enable.idempotence": True}, partition=0)
    assert_all_delivered(r2)
    assert [o for (_e, _p, o) in r2] == list(range(1000, 2000))
    got = consume_confluent(broker.bootstrap, topic, [0], expected=2000)
    assert [g.value for g in got] == [r.value for r in first + second]


def _as_single_node_release(data_dir):
    """Turn a data dir into the single-node release's layout: no metadata log, the topics in
    `vltava-topics.json` (ids from each log's partition.metadata, configs as given)."""
    import base64
    import shutil
    import uuid
    from pathlib import Path

    data_dir = Path(data_dir)
    shutil.rmtree(data_dir / "__cluster_metadata-0")
    for f in ("quorum-state", "vltava-topics.json.migrated"):
        (data_dir / f).unlink(missing_ok=True)
    topics: dict[str, dict] = {}
    for d in data_dir.iterdir():
        meta = d / "partition.metadata"
        if not d.is_dir() or not meta.exists():
            continue
        name, _, part = d.name.rpartition("-")
        raw = next(line.split(":", 1)[1].strip() for line in meta.read_text().splitlines() if line.startswith("topic_id:"))
        try:
            tid = uuid.UUID(raw)
        except ValueError:
            tid = uuid.UUID(bytes=base64.urlsafe_b64decode(raw + "=="))
        t = topics.setdefault(name, {"name": name, "id": str(tid), "partitions": 0, "configs": {}})
        t["partitions"] = max(t["partitions"], int(part) + 1)
    return topics


def test_single_node_release_data_dir_is_migrated_with_everything(broker_factory):
    broker = broker_factory(SETTINGS)
    topic = "from-single-node"
    create_topic(broker.bootstrap, topic, PARTITIONS, config={"retention.ms": "86400000"})
    records = gen_records(3000, seed=9)
    results = produce_confluent(broker.bootstrap, topic, records, conf=PRODUCE)
    assert_all_delivered(results)
    assert broker.stop(signal.SIGTERM) in (0, 143, -signal.SIGTERM)

    import json

    topics = _as_single_node_release(broker.data_dir)
    assert topic in topics and topics[topic]["partitions"] == PARTITIONS, topics
    topics[topic]["configs"] = {"retention.ms": "86400000"}
    (broker.data_dir / "vltava-topics.json").write_text(
        json.dumps({"topics": list(topics.values()), "next_producer_id": 5000})
    )

    broker.start()
    counts = topic_partition_counts(broker.bootstrap)
    assert counts.get(topic) == PARTITIONS, f"topics after the migration: {counts}"
    res = ConfigResource(ResourceType.TOPIC, topic)
    admin = admin_client(broker.bootstrap)
    entry = admin.describe_configs([res], request_timeout=30)[res].result(timeout=30)["retention.ms"]
    assert entry.value == "86400000", "topic config lost in the migration"
    assert (broker.data_dir / "vltava-topics.json.migrated").exists()
    assert not (broker.data_dir / "vltava-topics.json").exists()
    _check_all(broker, topic, records, results)
    _next_offsets_continue(broker, topic, results)
