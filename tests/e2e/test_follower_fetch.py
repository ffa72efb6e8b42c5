"""Fetch from the closest replica (KIP-392) on three `vltava serve` processes in racks r1, r2, r3
with `replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector`: consumers
with `client.rack=r2` (confluent-kafka, then the native client through `vltava consume --set
client.rack=r2`) read an RF=3 topic whose partitions are led by all three nodes. The leaders in
r1 and r3 name the r2 replica as preferred read replica, and node 2 serves every record: as
follower for the partitions led elsewhere, as leader for its own. Each consumer reads every
record exactly once.

The broker-side evidence is node 2's debug line per consumer fetch it served with records
(`consumer fetch served ... as_follower=...`, with the offset range) and the leaders' debug line
per redirect (`preferred read replica ... preferred_read_replica=2`); nodes 1 and 3 must serve no
record of the topic to a consumer.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import subprocess
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

import rawkafka
from conftest import vltava_bin
from e2e_util import admin_client, assert_all_delivered, consume_confluent, gen_records, produce_confluent, wait_for
from test_cluster import Cluster, print_logs_if_failed

TOPIC = "closest"
PARTITIONS = 3
N = 3000
RACK_AWARE = "org.apache.kafka.common.replica.RackAwareReplicaSelector"

SERVED_RE = re.compile(
    r"consumer fetch served topic=(\S+) partition=(\d+) fetch_offset=(\d+) next_offset=(\d+) bytes=\d+ as_follower=(true|false)"
)
PREFERRED_RE = re.compile(r"preferred read replica topic=(\S+) partition=(\d+) fetch_offset=\d+ preferred_read_replica=(\d+)")


def start_rack_cluster(request, tmp_path_factory, monkeypatch, selector: str | None):
    # The fetch handler's debug lines are the evidence; the rest of the broker stays at info.
    monkeypatch.setenv("RUST_LOG", "info,vltava_broker::handlers::fetch=debug")
    c = Cluster(tmp_path_factory.mktemp("racks"))
    for i, b in c.nodes.items():
        b.settings.update(
            {
                "broker.rack": f"r{i}",
                "broker.session.timeout.ms": 3000,
                "broker.heartbeat.interval.ms": 500,
            }
        )
        if selector is not None:
            b.settings["replica.selector.class"] = selector
    try:
        c.start()
        yield c
    finally:
        print_logs_if_failed(request, c.nodes.values())
        c.close()


@pytest.fixture
def rack_cluster(request, tmp_path_factory, monkeypatch):
    yield from start_rack_cluster(request, tmp_path_factory, monkeypatch, RACK_AWARE)


@pytest.fixture
def plain_rack_cluster(request, tmp_path_factory, monkeypatch):
    yield from start_rack_cluster(request, tmp_path_factory, monkeypatch, None)


def partitions(bootstrap: str, topic: str = TOPIC) -> dict[int, tuple[int, list[int], list[int]]]:
    t = admin_client(bootstrap).list_topics(topic, timeout=10).topics[topic]
    assert t.error is None, t.error
    return {p.id: (p.leader, sorted(p.replicas), sorted(p.isrs)) for p in t.partitions.values()}


def node_log(b) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(Path(b.workdir).glob("stderr-*.log")))


def served(text: str) -> list[tuple[int, int, int, bool]]:
    """(partition, fetch offset, next offset, as follower) of each consumer fetch of TOPIC served with records."""
    return [
        (int(m.group(2)), int(m.group(3)), int(m.group(4)), m.group(5) == "true")
        for m in SERVED_RE.finditer(text)
        if m.group(1) == TOPIC
    ]


def assert_served_by_node_2(c: Cluster, leaders: dict[int, int], ends: dict[int, int], since: dict[int, int], who: str) -> None:
    """Node 2 served every offset of every partition exactly once (as follower where another node
    leads); nodes 1 and 3 served no record of the topic to a consumer."""
    logs = {i: node_log(b)[since[i] :] for i, b in c.nodes.items()}
    for i in (1, 3):
        assert not served(logs[i]), f"{who}: node {i} (not in the client's rack) served consumer fetches: {served(logs[i])[:5]}"
    reads = served(logs[2])
    for p in range(PARTITIONS):
        ranges = sorted((start, end) for (q, start, end, _) in reads if q == p)
        roles = {as_follower for (q, _, _, as_follower) in reads if q == p}
        assert roles == {leaders[p] != 2}, f"{who}: partition {p} (leader {leaders[p]}) served by node 2 as {roles}"
        # Contiguous from 0 to the end: every batch once (a fetch repeated after its answer was lost
        # would show as an overlap).
        pos = 0
        for start, end in ranges:
            assert start == pos, f"{who}: partition {p}: node 2 served {ranges} (gap or overlap at {pos})"
            pos = end
        assert pos == ends[p], f"{who}: partition {p}: node 2 served up to {pos} of {ends[p]}"
    # The leaders outside r2 redirected the client there.
    for p, leader in leaders.items():
        if leader == 2:
            continue
        named = [(int(m.group(2)), int(m.group(3))) for m in PREFERRED_RE.finditer(logs[leader]) if m.group(1) == TOPIC]
        assert (p, 2) in named, f"{who}: leader {leader} of partition {p} never named node 2: {named[:5]}"


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_consumers_in_rack_r2_read_everything_once_from_the_r2_replica(rack_cluster):
    c = rack_cluster
    admin = admin_client(c.bootstrap(1))
    admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=3)])[TOPIC].result(timeout=30)

    def in_sync():
        parts = partitions(c.bootstrap(1))
        return len(parts) == PARTITIONS and all(leader >= 0 and isr == [1, 2, 3] for leader, _, isr in parts.values())

    wait_for(in_sync, 30, f"{TOPIC} with all replicas in sync")
    leaders = {p: leader for p, (leader, _, _) in partitions(c.bootstrap(1)).items()}
    assert sorted(leaders.values()) == [1, 2, 3], leaders

    # Small batches, so that each partition takes many fetches of max.partition.fetch.bytes.
    conf = {"enable.idempotence": True, "batch.size": 16384}
    results = produce_confluent(c.bootstrap(1), TOPIC, gen_records(N, null_values=False), conf=conf)
    assert_all_delivered(results)
    delivered = sorted((p, o) for (_, p, o) in results)
    ends = {p: 1 + max(o for (q, o) in delivered if q == p) for p in range(PARTITIONS)}

    # confluent-kafka (librdkafka 2.16, Fetch v16) with client.rack=r2.
    since = {i: len(node_log(b)) for i, b in c.nodes.items()}
    log = logging.getLogger("rdkafka.closest")
    collect = Collect()
    log.addHandler(collect)
    log.setLevel(logging.DEBUG)
    try:
        got = consume_confluent(
            c.bootstrap(1),
            TOPIC,
            range(PARTITIONS),
            expected=N,
            timeout=40,
            conf={
                "client.rack": "r2",
                "max.partition.fetch.bytes": 65536,
                "debug": "fetch",
                "log_level": 7,
                "logger": log,
            },
        )
    finally:
        log.removeHandler(collect)
    pairs = sorted((g.partition, g.offset) for g in got)
    assert pairs == delivered, f"confluent-kafka read {len(pairs)} records ({len(set(pairs))} distinct) of {N}"
    assert_served_by_node_2(c, leaders, ends, since, "confluent-kafka")
    # librdkafka's own account: it was told to fetch from a preferred replica.
    assert any("preferred replica" in line.lower() for line in collect.lines), collect.lines[-20:]

    # The native client, through the CLI's generic consumer settings.
    since = {i: len(node_log(b)) for i, b in c.nodes.items()}
    p = subprocess.run(
        [
            str(vltava_bin()),
            "consume",
            TOPIC,
            "--from-beginning",
            "--count",
            str(N),
            "--format",
            "json",
            "--bootstrap-server",
            c.bootstrap(3),
            "--set",
            "client.rack=r2",
            "--set",
            "max.partition.fetch.bytes=65536",
        ],
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 0, f"vltava consume exited {p.returncode}\nstderr:\n{p.stderr.decode(errors='replace')[-3000:]}"
    native = sorted((r["partition"], r["offset"]) for r in map(json.loads, p.stdout.decode().splitlines()))
    assert native == delivered, f"vltava consume read {len(native)} records ({len(set(native))} distinct) of {N}"
    assert_served_by_node_2(c, leaders, ends, since, "vltava consume")


# ------------------------------------------------------------------------ raw consumer fetches
NONE, OFFSET_OUT_OF_RANGE, NOT_LEADER_OR_FOLLOWER, UNKNOWN_LEADER_EPOCH = 0, 1, 6, 75


def raw_fetch(b, topic: str, offset: int, rack: str = "", epoch: int = -1, version: int = 11):
    """One consumer Fetch (v10 or v11, partition 0) to broker `b`: (error, high watermark,
    preferred read replica (None before v11), record bytes)."""
    body = struct.pack(">iiii", -1, 100, 1, 1 << 20) + b"\x00" + struct.pack(">ii", 0, -1)
    part = struct.pack(">iiqqi", 0, epoch, offset, -1, 1 << 20)
    body += struct.pack(">i", 1) + rawkafka.kstring(topic) + struct.pack(">i", 1) + part + struct.pack(">i", 0)
    if version >= 11:
        body += rawkafka.kstring(rack)
    with rawkafka.connect(b.host, b.port, timeout=30) as s:
        rawkafka.send_frame(s, rawkafka.header_v1(1, version, 7) + body)
        resp = rawkafka.recv_frame(s)
    r = rawkafka.Reader(resp)
    assert r.take("i") == 7
    r.take("i")  # throttle
    assert r.take("h") == 0
    r.take("i")  # session
    assert r.take("i") == 1 and r.string() == topic and r.take("i") == 1
    assert r.take("i") == 0
    err, hw = r.take("h"), r.take("q")
    r.take("qq")  # last stable offset, log start
    for _ in range(max(r.take("i"), 0)):
        r.take("qq")
    preferred = r.take("i") if version >= 11 else None
    records = r.bytes_() or b""
    assert r.pos == len(resp)
    return err, hw, preferred, records


def leader_epoch_of(records: bytes) -> int:
    """The partitionLeaderEpoch of the first batch (bytes 12..16 of its header)."""
    return struct.unpack_from(">i", records, 12)[0]


def test_followers_serve_consumers_to_their_high_watermark_and_only_leaders_redirect(rack_cluster):
    c = rack_cluster
    topic = "raw-closest"
    admin = admin_client(c.bootstrap(1))
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)])[topic].result(timeout=30)
    wait_for(lambda: partitions(c.bootstrap(1), topic)[0][2] == [1, 2, 3], 30, f"{topic} in sync")
    leader = partitions(c.bootstrap(1), topic)[0][0]
    follower = next(i for i in c.nodes if i != leader)
    lb, fb = c.nodes[leader], c.nodes[follower]
    assert_all_delivered(produce_confluent(c.bootstrap(1), topic, gen_records(100, null_values=False)))
    # The follower learns the leader's high watermark from its next fetch answer.
    wait_for(lambda: raw_fetch(fb, topic, 100)[:2] == (NONE, 100), 20, "the follower's high watermark at 100")

    # The follower serves from its log, and never names a read replica (even for a client in
    # the leader's rack); the same bytes as the leader's.
    err, hw, preferred, records = raw_fetch(fb, topic, 0, rack=f"r{leader}")
    assert (err, hw, preferred) == (NONE, 100, -1) and records
    assert raw_fetch(lb, topic, 0)[3] == records
    epoch = leader_epoch_of(records)
    # The leader names the follower to a client in the follower's rack, with no records...
    assert raw_fetch(lb, topic, 0, rack=f"r{follower}")[:4] == (NONE, 100, follower, b"")
    # ... and serves a client in its own rack, or in a rack no replica is in, itself.
    assert raw_fetch(lb, topic, 0, rack=f"r{leader}")[2:] == (-1, records)
    assert raw_fetch(lb, topic, 0, rack="elsewhere")[2:] == (-1, records)
    # At the follower's log end: empty; beyond it: OFFSET_OUT_OF_RANGE, as Kafka's follower does.
    assert raw_fetch(fb, topic, 100)[:4] == (NONE, 100, -1, b"")
    assert raw_fetch(fb, topic, 101)[0] == OFFSET_OUT_OF_RANGE
    # KIP-320 at the follower: the current epoch is served, a newer one is unknown to it.
    assert raw_fetch(fb, topic, 0, epoch=epoch)[0] == NONE
    assert raw_fetch(fb, topic, 0, epoch=epoch + 1)[0] == UNKNOWN_LEADER_EPOCH
    # Fetch v10 has no rack and no preferred read replica: leader only.
    assert raw_fetch(fb, topic, 0, version=10)[0] == NOT_LEADER_OR_FOLLOWER
    assert raw_fetch(lb, topic, 0, version=10)[0] == NONE

    # A broker that holds no replica refuses, selector or not.
    two = "raw-closest-rf2"
    admin.create_topics([NewTopic(two, num_partitions=1, replication_factor=2)])[two].result(timeout=30)
    wait_for(lambda: len(partitions(c.bootstrap(1), two)[0][2]) == 2, 30, f"{two} in sync")
    outsider = next(i for i in c.nodes if i not in partitions(c.bootstrap(1), two)[0][1])
    assert raw_fetch(c.nodes[outsider], two, 0)[0] == NOT_LEADER_OR_FOLLOWER


def test_without_a_selector_followers_refuse_consumers_and_leaders_name_no_replica(plain_rack_cluster):
    c = plain_rack_cluster
    topic = "no-selector"
    admin = admin_client(c.bootstrap(1))
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3)])[topic].result(timeout=30)
    wait_for(lambda: partitions(c.bootstrap(1), topic)[0][2] == [1, 2, 3], 30, f"{topic} in sync")
    leader = partitions(c.bootstrap(1), topic)[0][0]
    follower = next(i for i in c.nodes if i != leader)
    assert_all_delivered(produce_confluent(c.bootstrap(1), topic, gen_records(10, null_values=False)))
    err, _, preferred, records = raw_fetch(c.nodes[leader], topic, 0, rack=f"r{follower}")
    assert (err, preferred) == (NONE, -1) and records
    assert raw_fetch(c.nodes[follower], topic, 0, rack=f"r{follower}")[0] == NOT_LEADER_OR_FOLLOWER
