"""`vltava topic` (create, list, describe, alter, delete) against a real broker, cross-checked with
confluent-kafka's AdminClient, and the exit codes (0 ok, 1 error with one line on stderr, 2 usage)."""

from __future__ import annotations

import json

from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource, NewTopic

from e2e_util import admin_client, base_conf, create_topic, wait_for
from test_cli_group import fails, ok, run_cli, table_after


def topic_configs(bootstrap: str, topic: str) -> dict[str, tuple[str, bool]]:
    """name -> (value, is_default) as confluent-kafka sees them."""
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = admin_client(bootstrap)  # kept alive until the future completes
    entries = admin.describe_configs([res])[res].result(timeout=30)
    return {name: (e.value, e.is_default) for name, e in entries.items()}


def test_topic_create_list_describe_alter_delete(broker):
    bs = broker.bootstrap
    out = ok("topic", "create", "ct", "--partitions", "3", "--config", "retention.ms=60000", bootstrap=bs)
    assert "ct" in out

    md = admin_client(bs).list_topics(timeout=30)
    assert "ct" in md.topics and len(md.topics["ct"].partitions) == 3
    cfg = topic_configs(bs, "ct")
    assert cfg["retention.ms"] == ("60000", False)

    # confluent-kafka creates one, the CLI lists both (and no internal topics by default).
    create_topic(bs, "ct2", partitions=1)
    listed = ok("topic", "list", bootstrap=bs).split()
    assert "ct" in listed and "ct2" in listed
    assert "__consumer_offsets" not in listed
    as_json = json.loads(ok("topic", "list", "--json", bootstrap=bs))
    assert {"topic": "ct", "partitions": 3, "internal": False} in as_json

    # Five records to partition 1 make its log end 5.
    p = Producer(base_conf(bs))
    for i in range(5):
        p.produce("ct", value=f"v{i}".encode(), partition=1)
    assert p.flush(30) == 0

    out = ok("topic", "describe", "ct", bootstrap=bs)
    assert "Partitions: 3" in out and "retention.ms=60000" in out
    rows = {r["PARTITION"]: r for r in table_after(out, "PARTITION")}
    assert set(rows) == {"0", "1", "2"}
    assert rows["1"]["LOG-END-OFFSET"] == "5" and rows["0"]["LOG-END-OFFSET"] == "0"
    assert all(r["LOG-START-OFFSET"] == "0" and r["LEADER"] == "1" for r in rows.values())
    d = json.loads(ok("topic", "describe", "ct", "--json", bootstrap=bs))
    assert d["configs"] == {"retention.ms": "60000"}
    assert [x["log_end_offset"] for x in d["partitions"]] == [0, 5, 0]
    assert d["partitions"][0]["replicas"] == [1] and d["partitions"][0]["isr"] == [1]

    ok(
        "topic",
        "alter",
        "ct",
        "--partitions",
        "5",
        "--config",
        "segment.bytes=1048576",
        "--delete-config",
        "retention.ms",
        bootstrap=bs,
    )
    wait_for(lambda: len(admin_client(bs).list_topics(timeout=30).topics["ct"].partitions) == 5, 30, "topic change visible")
    cfg = topic_configs(bs, "ct")
    assert cfg["segment.bytes"] == ("1048576", False)
    assert cfg["retention.ms"][1] is True
    d = json.loads(ok("topic", "describe", "ct", "--json", bootstrap=bs))
    assert d["configs"] == {"segment.bytes": "1048576"} and len(d["partitions"]) == 5

    ok("topic", "delete", "ct2", bootstrap=bs)
    wait_for(lambda: "ct2" not in admin_client(bs).list_topics(timeout=30).topics, 30, "topic change visible")
    assert "ct2" not in ok("topic", "list", bootstrap=bs).split()

    # The bootstrap address may come from the environment.
    p = run_cli("topic", "list", env={"VLTAVA_BOOTSTRAP": bs})
    assert p.returncode == 0 and "ct" in p.stdout.split()


def test_topic_errors_and_usage(broker):
    bs = broker.bootstrap
    admin = admin_client(bs)
    admin.create_topics([NewTopic("et", num_partitions=2, replication_factor=1)])["et"].result(timeout=30)
    wait_for(lambda: "et" in admin_client(bs).list_topics(timeout=30).topics, 30, "topic change visible")
    assert fails(1, "topic", "describe", "x", bootstrap=bs) == "error: topic 'x' does not exist"
    assert fails(1, "topic", "delete", "x", bootstrap=bs) == "error: topic 'x' does not exist"
    assert fails(1, "topic", "alter", "x", "--partitions", "3", bootstrap=bs) == "error: topic 'x' does not exist"
    assert fails(1, "topic", "create", "et", bootstrap=bs) == "error: topic 'et' already exists"
    assert "only grow" in fails(1, "topic", "alter", "et", "--partitions", "1", bootstrap=bs)
    assert "INVALID_CONFIG" in fails(1, "topic", "alter", "et", "--config", "no.such=1", bootstrap=bs)
    fails(2, "topic", "alter", "et", bootstrap=bs)
    fails(2, "topic", "create", "y", "--config", "novalue", bootstrap=bs)
    fails(2, "topic", "create", "y", "--partitions", "0", bootstrap=bs)
    fails(2, "topic", bootstrap=bs)
    # Nothing listening: one line, exit 1.
    fails(1, "topic", "list", "--timeout", "2", bootstrap="127.0.0.1:1")


def test_bench_consume_and_e2e_json(broker):
    bs = broker.bootstrap
    create_topic(bs, "bt", partitions=2)
    p = Producer(base_conf(bs))
    for i in range(300):
        p.produce("bt", value=b"x" * 100, partition=i % 2)
    assert p.flush(30) == 0

    c = json.loads(ok("bench", "consume", "--topic", "bt", "--count", "200", "--json", bootstrap=bs))
    assert c["topic"] == "bt" and c["records"] == 200 and c["bytes"] == 200 * 100
    assert c["seconds"] >= 0 and c["records_per_sec"] > 0 and c["mb_per_sec"] > 0
    everything = json.loads(ok("bench", "consume", "--topic", "bt", "--json", bootstrap=bs))
    assert everything["records"] == 300
    assert "fewer than --count" in fails(1, "bench", "consume", "--topic", "bt", "--count", "301", bootstrap=bs)
    assert fails(1, "bench", "consume", "--topic", "nope", bootstrap=bs) == "error: topic 'nope' does not exist"

    e = json.loads(
        ok("bench", "e2e", "--topic", "be", "--count", "300", "--rate", "1000", "--record-size", "64", "--json", bootstrap=bs)
    )
    assert e["records"] == 300 and e["record_size"] == 64 and e["bytes"] == 300 * 64
    lat = e["latency_ms"]
    assert set(lat) == {"mean", "p50", "p90", "p99", "p99_9", "max"}
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"] < 30_000
    # At 1000 records/s, 300 records take about 0.3 s.
    assert 0.25 <= e["seconds"] < 30 and e["records_per_sec"] > 0
    # The records really went through the topic.
    md = admin_client(bs).list_topics(timeout=30)
    assert "be" in md.topics
    fails(2, "bench", "e2e", "--record-size", "8", bootstrap=bs)
