"""kafkajs 2.2.4 (non-flexible protocol versions throughout): admin, gzip producer, idempotent producer."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from e2e_util import NODE_DIR, consume_confluent, kafka_partition_for, node_path

COUNT = 1000
IDEMPOTENT_COUNT = 200


def _run_scenario(bootstrap: str, topic: str, replication_factor: int = 1) -> dict:
    if not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.fail(f"kafkajs is not installed in {NODE_DIR}: run `npm ci` there (scripts/test does)")
    proc = subprocess.run(
        [node_path(), str(NODE_DIR / "kafkajs_scenario.js"), bootstrap, topic, str(COUNT), str(replication_factor)],
        cwd=NODE_DIR,
        env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=150,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"kafkajs scenario exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(240)
def test_kafkajs_admin_and_gzip_producer(broker):
    topic = "kafkajs-topic"
    out = _run_scenario(broker.bootstrap, topic)

    assert out["created"] is True, "createTopics did not report the topic as created"
    assert out["createdAgain"] is False, "createTopics on an existing topic should resolve to false (TOPIC_ALREADY_EXISTS)"
    assert topic in out["topics"]
    assert sorted(p["partitionId"] for p in out["partitions"]) == [0, 1]
    assert all(s["errorCode"] == 0 for s in out["sent"] + out["idempotent"]), out["sent"][:5]

    offsets = {int(o["partition"]): o for o in out["offsets"]}
    high = {p: int(o["high"]) for p, o in offsets.items()}
    low = {p: int(o["low"]) for p, o in offsets.items()}
    assert low == {0: 0, 1: 0}
    assert sum(high.values()) == COUNT + IDEMPOTENT_COUNT, f"high watermarks {high}"
    by_ts = {int(o["partition"]): int(o["offset"]) for o in out["offsetsByTimestamp"]}
    assert by_ts == {0: 0, 1: 0}, f"fetchTopicOffsetsByTimestamp(before the first record) = {by_ts}"
    future = {int(o["partition"]): int(o["offset"]) for o in out["offsetsFuture"]}
    # kafkajs maps "no record at or after that time" (-1) to the high watermark
    assert future == high, f"fetchTopicOffsetsByTimestamp(in an hour) = {future}, high watermarks {high}"

    got = consume_confluent(broker.bootstrap, topic, [0, 1], expected=COUNT + IDEMPOTENT_COUNT)
    assert len(got) == COUNT + IDEMPOTENT_COUNT
    for p in (0, 1):
        offs = sorted(g.offset for g in got if g.partition == p)
        assert offs == list(range(high[p])), f"partition {p}: offsets not 0..high-1"

    keyed = [g for g in got if g.key is not None]
    assert len(keyed) == COUNT
    by_key: dict[bytes, list[int]] = {}
    for g in sorted(keyed, key=lambda g: (g.partition, g.offset)):
        headers = dict(g.headers)
        idx = int(headers["idx"])
        assert headers["src"] == b"kafkajs"
        assert g.key == f"k{idx % 10}".encode()
        assert g.value == f"kafkajs-{idx}-".encode() + b"x" * (idx % 300)
        # kafkajs' default partitioner is the Java client's murmur2
        assert g.partition == kafka_partition_for(g.key, 2), f"{g.key!r} on partition {g.partition}"
        by_key.setdefault(g.key, []).append(idx)
    for key, idxs in by_key.items():
        assert idxs == sorted(idxs), f"key {key!r}: out of order"
    assert sorted(i for idxs in by_key.values() for i in idxs) == list(range(COUNT)), "kafkajs records lost or duplicated"

    idem = [g.value for g in sorted(got, key=lambda g: (g.partition, g.offset)) if g.key is None]
    assert idem == [f"idem-{i}".encode() for i in range(IDEMPOTENT_COUNT)], "idempotent kafkajs records out of order"
    assert all(g.partition == 0 for g in got if g.key is None)
