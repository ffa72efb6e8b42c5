"""Three `vltava serve` processes as one cluster: a controller quorum of all three (combined
nodes), topics spread across them, clients bootstrapped at any node, and the active controller
killed with SIGKILL.

The topics here have one replica each (test_replication.py covers replicated ones), so a dead
broker's partitions have no leader until it returns; what is checked here is the metadata layer:
agreement, placement, routing, fencing and controller failover, and the group coordinator, whose
__consumer_offsets is replicated.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

import rawkafka
from conftest import Broker, free_port, vltava_bin
from e2e_util import (
    admin_client,
    create_topic,
    gen_records,
    kcat_consume_all,
    produce_confluent,
    assert_all_delivered,
    wait_for,
)
from group_util import GROUP_SETTINGS, committed_offsets, produce_to_partitions

NODES = 3
ACTIVE_RE = re.compile(r"this node is the active controller node=(\d+) term=(\d+)")


class Cluster:
    def __init__(self, base: Path):
        self.ports = {i: free_port() for i in range(1, NODES + 1)}
        self.controller_ports = {i: free_port() for i in range(1, NODES + 1)}
        voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in self.controller_ports.items())
        self.nodes: dict[int, Broker] = {}
        for i in range(1, NODES + 1):
            workdir = Path(tempfile.mkdtemp(prefix=f"node{i}-", dir=base))
            settings = {
                **GROUP_SETTINGS,
                "node.id": i,
                "controller.listen": f"127.0.0.1:{self.controller_ports[i]}",
                "controller.quorum.voters": voters,
            }
            self.nodes[i] = Broker(workdir, settings, port=self.ports[i])

    def start(self) -> None:
        # All at once: a node's start waits for a quorum, which needs the others.
        for b in self.nodes.values():
            b._spawn()
        for b in self.nodes.values():
            b._wait_ready(60)
        self.wait_brokers(set(self.nodes), via=self.nodes.values())

    def bootstrap(self, i: int) -> str:
        return self.nodes[i].bootstrap

    def brokers_seen(self, via: Broker) -> set[int]:
        md = admin_client(via.bootstrap).list_topics(timeout=5)
        return set(md.brokers)

    def wait_brokers(self, expected: set[int], via, timeout: float = 60) -> None:
        for b in via:
            wait_for(
                lambda b=b: self.brokers_seen(b) == expected,
                timeout,
                f"node on {b.bootstrap} to list brokers {sorted(expected)}",
            )

    def active_controller(self) -> int:
        best = (-1, -1)
        for i, b in self.nodes.items():
            for m in ACTIVE_RE.finditer(b.stderr_tail(limit=10**7)):
                node, term = int(m.group(1)), int(m.group(2))
                if term > best[1]:
                    best = (node, term)
        assert best[0] in self.nodes, "no node ever became the active controller"
        return best[0]

    def close(self) -> None:
        # SIGKILL: a clean stop of the last voters waits for a quorum that is already gone.
        for b in self.nodes.values():
            if b.is_running():
                b.kill()


def print_logs_if_failed(request, nodes) -> None:
    """Prints the stderr tail of every node when the test that ran them failed."""
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for b in nodes:
            print(f"\n===== {b.data_dir} stderr (tail) =====\n{b.stderr_tail()}")


@pytest.fixture
def cluster(request, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        yield c
    finally:
        print_logs_if_failed(request, c.nodes.values())
        c.close()


def cluster_ids(c: Cluster) -> set[str]:
    ids = set()
    for b in c.nodes.values():
        text = (b.data_dir / "meta.properties").read_text()
        ids |= set(re.findall(r"^cluster\.id=(\S+)$", text, re.M))
    return ids


def describe_cluster(bootstrap: str) -> dict:
    out = subprocess.run(
        [str(vltava_bin()), "cluster", "describe", "--json", "--bootstrap-server", bootstrap],
        capture_output=True, timeout=60, text=True,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    md = admin_client(bootstrap).list_topics(topic, timeout=10)
    t = md.topics[topic]
    assert t.error is None, t.error
    return {p.id: p.leader for p in t.partitions.values()}


def test_three_nodes_agree_spread_leaders_and_serve_clients_through_any_node(cluster):
    c = cluster
    ids = cluster_ids(c)
    assert len(ids) == 1, f"the nodes disagree on the cluster id: {ids}"
    for b in c.nodes.values():
        md = admin_client(b.bootstrap).list_topics(timeout=10)
        assert md.cluster_id == next(iter(ids))
        assert set(md.brokers) == {1, 2, 3}
    # The CLI's view through each node: three active brokers with their epochs, three voters
    # (DescribeQuorum, carried to the active controller), the same leader.
    for i in c.nodes:
        d = describe_cluster(c.bootstrap(i))
        assert d["cluster_id"] == next(iter(ids))
        assert [(b["node_id"], b["state"], b["port"]) for b in d["brokers"]] == [
            (j, "active", c.ports[j]) for j in sorted(c.nodes)
        ], d
        assert all(b["broker_epoch"] >= 0 for b in d["brokers"]), d
        assert d["quorum"]["leader_id"] == c.active_controller(), d
        assert [v["node_id"] for v in d["quorum"]["voters"]] == [1, 2, 3], d
        assert d["quorum"]["high_watermark"] > 0, d

    admin = admin_client(c.bootstrap(1))
    futures = admin.create_topics([NewTopic("spread", num_partitions=12, replication_factor=1)])
    futures["spread"].result(timeout=30)
    # Every node answers with the same placement, once it has applied the record.
    wait_for(lambda: all(len(leaders(c.bootstrap(i), "spread")) == 12 for i in c.nodes), 30, "topic on every node")
    placement = leaders(c.bootstrap(1), "spread")
    for i in c.nodes:
        assert leaders(c.bootstrap(i), "spread") == placement
    assert Counter(placement.values()) == {1: 4, 2: 4, 3: 4}, placement

    # Produced through node 1's bootstrap: the client follows Metadata to all three leaders.
    records = gen_records(3000, null_values=False)
    results = produce_confluent(c.bootstrap(1), "spread", records)
    assert_all_delivered(results)
    assert {p for (_, p, _) in results} == set(range(12))
    # Read back through node 3 by librdkafka's kcat: every record, at the offset it was acked at.
    got = kcat_consume_all(c.bootstrap(3), "spread")
    assert len(got) == len(records)
    acked = sorted((p, o) for (_, p, o) in results)
    assert sorted((g.partition, g.offset) for g in got) == acked


def test_active_controller_killed_another_takes_over_and_the_dead_broker_is_fenced_then_returns(cluster):
    c = cluster
    victim = c.active_controller()
    survivors = [i for i in c.nodes if i != victim]
    # The admin client must outlive its futures (librdkafka destroys their handle with it).
    admin = admin_client(c.bootstrap(survivors[0]))
    admin.create_topics([NewTopic("before", num_partitions=6, replication_factor=1)])["before"].result(timeout=30)
    wait_for(lambda: len(leaders(c.bootstrap(survivors[1]), "before")) == 6, 30, "topic 'before' everywhere")
    acked = produce_confluent(c.bootstrap(survivors[1]), "before", gen_records(1200, null_values=False))
    assert_all_delivered(acked)

    c.nodes[victim].kill()
    started = time.monotonic()
    # A metadata change through a survivor succeeds once the two remaining voters elect a leader.
    deadline = started + 60
    while True:
        try:
            admin = admin_client(c.bootstrap(survivors[0]))
            admin.create_topics([NewTopic("after", num_partitions=2, replication_factor=1)])["after"].result(timeout=30)
            break
        except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
            if time.monotonic() > deadline:
                raise AssertionError(f"no metadata change accepted within 60 s of the kill: {exc}")
            time.sleep(0.5)
    failover_s = time.monotonic() - started
    print(f"controller {victim} killed: CreateTopics through node {survivors[0]} done after {failover_s:.1f} s")
    assert c.active_controller() != victim
    after = leaders(c.bootstrap(survivors[1]), "after")
    # Like Kafka's, a new controller gives every registered broker a fresh session, since their
    # heartbeats went to the old one: until the victim's runs out it may still be given partitions.
    assert set(after.values()) <= set(c.nodes), after

    # Its session (broker.session.timeout.ms, 9 s) runs out: fenced, gone from Metadata, its
    # partitions without a leader.
    c.wait_brokers(set(survivors), via=[c.nodes[i] for i in survivors], timeout=40)
    fenced_s = time.monotonic() - started
    print(f"broker {victim} fenced and out of Metadata {fenced_s:.1f} s after its kill")
    # The new controller starts every session afresh, so: its election, then 9 s, then a margin.
    assert fenced_s < failover_s + 9 + 6, (failover_s, fenced_s)
    before = leaders(c.bootstrap(survivors[0]), "before")
    assert all((lead == -1) == (lead not in survivors) for lead in before.values()), before
    after_fenced = leaders(c.bootstrap(survivors[0]), "after")
    assert {p: (lead if after[p] in survivors else -1) for p, lead in after.items()} == after_fenced, (after, after_fenced)
    # `vltava cluster describe` shows it fenced, and a quorum led by a survivor with the dead
    # voter's log end falling behind.
    d = describe_cluster(c.bootstrap(survivors[0]))
    assert {b["node_id"]: b["state"] for b in d["brokers"]} == {
        i: ("fenced" if i == victim else "active") for i in c.nodes
    }, d
    assert d["quorum"]["leader_id"] in survivors, d
    assert sorted(v["node_id"] for v in d["quorum"]["voters"]) == sorted(c.nodes), d
    # The CLI describes the topic anyway: offline partitions with leader -1 and no offsets.
    out = subprocess.run(
        [str(vltava_bin()), "topic", "describe", "before", "--bootstrap-server", c.bootstrap(survivors[0])],
        capture_output=True, timeout=60, text=True,
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[3:] if line.strip()]
    assert {int(r[0]): int(r[1]) for r in rows} == before, out.stdout

    # Back on the same data dir: registered again, unfenced, its partitions led again.
    c.nodes[victim].start(timeout=60)
    c.wait_brokers({1, 2, 3}, via=c.nodes.values(), timeout=60)
    wait_for(
        lambda: -1 not in leaders(c.bootstrap(victim), "before").values(),
        30,
        "every partition of 'before' led again",
    )
    # Every acknowledged record is there, at the offset it was acknowledged at, the dead
    # broker's partitions included.
    got = kcat_consume_all(c.bootstrap(survivors[0]), "before")
    assert sorted((g.partition, g.offset) for g in got) == sorted((p, o) for (_, p, o) in acked)
    assert len(cluster_ids(c)) == 1
    wait_for(
        lambda: {b["state"] for b in describe_cluster(c.bootstrap(victim))["brokers"]} == {"active"},
        30,
        "every broker active again in `vltava cluster describe`",
    )


def vltava_cli(*args: str) -> str:
    out = subprocess.run([str(vltava_bin()), *args], capture_output=True, timeout=90, text=True)
    assert out.returncode == 0, f"vltava {' '.join(args)}: {out.stderr}"
    return out.stdout


@pytest.mark.timeout(300)
def test_a_node_joins_through_the_bootstrap_servers_becomes_a_voter_and_the_active_controller_leaves_the_voters(
    cluster, tmp_path
):
    c = cluster
    ctrl4 = free_port()
    bootstrap_controllers = ",".join(f"127.0.0.1:{p}" for p in c.controller_ports.values())
    node4 = Broker(
        Path(tempfile.mkdtemp(prefix="node4-", dir=tmp_path)),
        {
            **GROUP_SETTINGS,
            "node.id": 4,
            "controller.listen": f"127.0.0.1:{ctrl4}",
            "controller.quorum.bootstrap.servers": bootstrap_controllers,
        },
        port=free_port(),
    )
    node4.start(timeout=60)
    try:
        everyone = [*c.nodes.values(), node4]
        c.wait_brokers({1, 2, 3, 4}, via=everyone)
        # It follows the metadata log as an observer, with the cluster's id.
        d = describe_cluster(node4.bootstrap)
        assert [v["node_id"] for v in d["quorum"]["voters"]] == [1, 2, 3], d
        assert [o["node_id"] for o in d["quorum"]["observers"]] == [4], d
        assert "cluster.id=" + d["cluster_id"] in (node4.data_dir / "meta.properties").read_text()
        # New topics use it: 8 partitions are 2 leaders per broker, and clients reach all four.
        admin = admin_client(c.bootstrap(1))
        admin.create_topics([NewTopic("with-four", num_partitions=8, replication_factor=1)])["with-four"].result(30)
        wait_for(lambda: len(leaders(node4.bootstrap, "with-four")) == 8, 30, "the topic on node 4")
        assert Counter(leaders(node4.bootstrap, "with-four").values()) == {1: 2, 2: 2, 3: 2, 4: 2}
        records = gen_records(800, null_values=False)
        results = produce_confluent(node4.bootstrap, "with-four", records)
        assert_all_delivered(results)
        assert len(kcat_consume_all(c.bootstrap(2), "with-four")) == len(records)

        # A second process under a live node's id (a voter's, then the observer's) refuses to
        # start with one line, and the cluster is unharmed.
        for taken in (2, 4):
            data = tmp_path / f"impostor-{taken}"
            data.mkdir()
            proc = subprocess.run(
                [str(vltava_bin()), "serve", "--node-id", str(taken), "--process-roles", "broker",
                 "--listen", f"127.0.0.1:{free_port()}", "--controller-listen", f"127.0.0.1:{free_port()}",
                 "--controller-quorum-bootstrap-servers", bootstrap_controllers, "--data-dir", str(data)],
                capture_output=True, timeout=90, text=True,
            )
            assert proc.returncode == 1, proc.stderr[-2000:]
            errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and f"node {taken} " in errors[0] and "cannot join under its id" in errors[0], errors
        admin.create_topics([NewTopic("after-impostors", num_partitions=4, replication_factor=1)])[
            "after-impostors"
        ].result(30)
        wait_for(lambda: all(len(leaders(b.bootstrap, "after-impostors")) == 4 for b in everyone), 30, "the topic")

        # It becomes a voter on the running cluster.
        vltava_cli("cluster", "add-controller", "--node-id", "4", "--controller-address", f"127.0.0.1:{ctrl4}",
                   "--bootstrap-server", c.bootstrap(1))
        d = describe_cluster(c.bootstrap(2))
        assert [v["node_id"] for v in d["quorum"]["voters"]] == [1, 2, 3, 4], d
        assert d["quorum"]["observers"] == [], d
        # The active controller leaves the voters: it resigns, a remaining voter takes over, it
        # stays a broker following the log, and metadata changes go on (through it, too).
        old = d["quorum"]["leader_id"]
        vltava_cli("cluster", "remove-controller", "--node-id", str(old), "--bootstrap-server", node4.bootstrap)
        wait_for(lambda: describe_cluster(node4.bootstrap)["quorum"]["leader_id"] != old, 30, "another active controller")
        d = describe_cluster(node4.bootstrap)
        assert [v["node_id"] for v in d["quorum"]["voters"]] == sorted({1, 2, 3, 4} - {old}), d
        assert [o["node_id"] for o in d["quorum"]["observers"]] == [old], d
        assert {b["state"] for b in d["brokers"]} == {"active"}, d
        via_old = node4.bootstrap if old == 4 else c.bootstrap(old)
        admin = admin_client(via_old)
        admin.create_topics([NewTopic("after-removal", num_partitions=4, replication_factor=1)])["after-removal"].result(30)
        wait_for(lambda: all(len(leaders(b.bootstrap, "after-removal")) == 4 for b in everyone), 30, "the new topic")
    finally:
        if node4.is_running():
            node4.kill()


class ControllerOnly(Broker):
    """`vltava serve --process-roles controller`: no client port; ready once its controller
    listener accepts."""

    def command(self) -> list[str]:
        cmd = [str(vltava_bin()), "serve", "--process-roles", "controller", "--data-dir", str(self.data_dir)]
        for key, value in self.settings.items():
            cmd += ["--set", f"{key}={value}"]
        return cmd


@pytest.mark.timeout(300)
def test_a_quorum_of_controller_only_nodes_runs_the_metadata_of_broker_only_nodes(tmp_path):
    ctrl = {i: free_port() for i in (1, 2, 3)}
    voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in ctrl.items())
    seeds = ",".join(f"127.0.0.1:{p}" for p in ctrl.values())
    controllers = {
        i: ControllerOnly(
            Path(tempfile.mkdtemp(prefix=f"controller{i}-", dir=tmp_path)),
            {"node.id": i, "controller.listen": f"127.0.0.1:{ctrl[i]}", "controller.quorum.voters": voters},
            port=ctrl[i],
        )
        for i in ctrl
    }
    brokers = {
        i: Broker(
            Path(tempfile.mkdtemp(prefix=f"broker{i}-", dir=tmp_path)),
            {
                **GROUP_SETTINGS,
                "node.id": i,
                "process.roles": "broker",
                "controller.listen": f"127.0.0.1:{free_port()}",
                "controller.quorum.bootstrap.servers": seeds,
            },
        )
        for i in (4, 5)
    }
    try:
        for n in controllers.values():
            n._spawn()
        for n in controllers.values():
            n._wait_ready(60)
        for b in brokers.values():
            b.start(timeout=60)
        b4, b5 = brokers[4], brokers[5]
        d = describe_cluster(b4.bootstrap)
        assert [b["node_id"] for b in d["brokers"]] == [4, 5], d
        assert [v["node_id"] for v in d["quorum"]["voters"]] == [1, 2, 3], d
        assert [o["node_id"] for o in d["quorum"]["observers"]] == [4, 5], d
        admin = admin_client(b5.bootstrap)
        admin.create_topics([NewTopic("on-brokers", num_partitions=6, replication_factor=1)])["on-brokers"].result(30)
        wait_for(lambda: len(leaders(b4.bootstrap, "on-brokers")) == 6, 30, "the topic on broker 4")
        assert Counter(leaders(b4.bootstrap, "on-brokers").values()) == {4: 3, 5: 3}
        records = gen_records(600, null_values=False)
        assert_all_delivered(produce_confluent(b4.bootstrap, "on-brokers", records))
        assert len(kcat_consume_all(b5.bootstrap, "on-brokers")) == len(records)

        # The active controller dies: the two others elect one, and brokers carry on.
        best = (-1, -1)
        for i, n in controllers.items():
            for m in ACTIVE_RE.finditer(n.stderr_tail(limit=10**7)):
                if int(m.group(2)) > best[1]:
                    best = (int(m.group(1)), int(m.group(2)))
        victim = best[0]
        assert victim in controllers, best
        controllers[victim].kill()
        started = time.monotonic()
        while True:
            try:
                admin = admin_client(b5.bootstrap)
                admin.create_topics([NewTopic("after-kill", num_partitions=2, replication_factor=1)])[
                    "after-kill"
                ].result(timeout=30)
                break
            except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
                assert time.monotonic() - started < 60, f"no metadata change within 60 s of the kill: {exc}"
                time.sleep(0.5)
        print(f"controller-only node {victim} killed: CreateTopics done after {time.monotonic() - started:.1f} s")
        assert describe_cluster(b4.bootstrap)["quorum"]["leader_id"] not in (victim, -1)
        # Back, then stopped cleanly by SIGTERM.
        controllers[victim].start(timeout=60)
        wait_for(
            lambda: all(v["lag"] == 0 for v in describe_cluster(b4.bootstrap)["quorum"]["voters"]),
            30,
            "the restarted controller caught up",
        )
        assert controllers[victim].stop() == 0, controllers[victim].stderr_tail()
    finally:
        for n in [*controllers.values(), *brokers.values()]:
            if n.is_running():
                n.kill()


@pytest.mark.timeout(240)
def test_kafkajs_admin_and_producers_through_one_node_of_the_cluster(cluster):
    from test_kafkajs import COUNT, IDEMPOTENT_COUNT, _run_scenario

    c = cluster
    # kafkajs creates a 2-partition topic through node 2 and writes (gzip, then idempotent)
    # through whichever nodes lead; librdkafka reads it all back through node 3.
    out = _run_scenario(c.bootstrap(2), "js-cluster")
    assert out["created"] is True
    assert all(s["errorCode"] == 0 for s in out["sent"] + out["idempotent"]), out["sent"][:5]
    high = {int(o["partition"]): int(o["high"]) for o in out["offsets"]}
    assert sum(high.values()) == COUNT + IDEMPOTENT_COUNT, high
    got = kcat_consume_all(c.bootstrap(3), "js-cluster")
    assert sorted((g.partition, g.offset) for g in got) == [(p, o) for p in sorted(high) for o in range(high[p])]


NOT_COORDINATOR = 16
COORDINATOR_NOT_AVAILABLE = 15


def _host_port(bootstrap: str) -> tuple[str, int]:
    host, port = bootstrap.rsplit(":", 1)
    return host, int(port)


def find_coordinator(bootstrap: str, group: str) -> tuple[int, int]:
    """FindCoordinator v0 for a group: (error code, node id)."""
    s = rawkafka.connect(*_host_port(bootstrap))
    try:
        rawkafka.send_frame(s, rawkafka.header_v1(10, 0, 1) + rawkafka.kstring(group))
        r = rawkafka.Reader(rawkafka.recv_frame(s))
        _corr, code, node = r.take("ihi")
        return code, node
    finally:
        s.close()


def raw_heartbeat(bootstrap: str, group: str) -> int:
    """Heartbeat v0 for a member that does not exist: the error code."""
    s = rawkafka.connect(*_host_port(bootstrap))
    try:
        body = rawkafka.kstring(group) + b"\x00\x00\x00\x01" + rawkafka.kstring("nobody")
        rawkafka.send_frame(s, rawkafka.header_v1(12, 0, 1) + body)
        r = rawkafka.Reader(rawkafka.recv_frame(s))
        _corr, code = r.take("ih")
        return code
    finally:
        s.close()


@pytest.mark.timeout(300)
def test_a_group_is_coordinated_by_the_leader_of_its_offsets_partition_wherever_clients_bootstrap(cluster, tmp_path):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTopicPartition
    from test_groups_kafkajs import NodeMember, _wait_read

    c = cluster
    topic = "grouped"
    create_topic(c.bootstrap(1), topic, 6)
    wait_for(lambda: len(leaders(c.bootstrap(3), topic)) == 6, 30, "topic everywhere")
    # A group whose coordinator is not node 1, the node every client below starts from first.
    group = next(
        g for g in (f"cluster-group-{i}" for i in range(500)) if find_coordinator(c.bootstrap(1), g)[1] not in (1, -1)
    )
    code, coord = find_coordinator(c.bootstrap(1), group)
    assert code == 0
    others = [i for i in c.nodes if i != coord]
    for i in c.nodes:
        assert find_coordinator(c.bootstrap(i), group) == (0, coord), f"node {i} disagrees"
    # Only the coordinator serves the group: the others send clients to look it up again.
    for i in others:
        assert raw_heartbeat(c.bootstrap(i), group) == NOT_COORDINATOR
    assert raw_heartbeat(c.bootstrap(coord), group) not in (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE)

    # kafkajs bootstrapped at node 1 reads in the group what confluent-kafka wrote through another node.
    where = produce_to_partitions(c.bootstrap(others[-1]), topic, {p: 50 for p in range(6)})
    member = NodeMember("js", c.bootstrap(1), group, topic, tmp_path)
    try:
        _wait_read([member], where, 90, "kafkajs to read all 300 records")
        wait_for(
            lambda: committed_offsets(c.bootstrap(others[-1]), group, topic, range(6)) == {p: 50 for p in range(6)},
            30,
            "kafkajs's commits, read through another node",
        )
        assert member.stop() == 0, member.stderr_tail()
    finally:
        member.ensure_dead()

    # kafka-python: produced through one node, consumed in the group through node 1, resuming at
    # the committed offsets.
    producer = KafkaProducer(bootstrap_servers=c.bootstrap(others[-1]), acks="all")
    for p in range(6):
        for i in range(10):
            producer.send(topic, value=f"kp-{p}-{i}".encode(), partition=p)
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=c.bootstrap(1),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        consumer_timeout_ms=1000,
    )
    got = []
    deadline = time.monotonic() + 60
    while len(got) < 60 and time.monotonic() < deadline:
        got.extend((m.partition, m.offset, m.value) for m in consumer)
    consumer.commit()
    assert sorted((p, o) for p, o, _ in got) == [(p, o) for p in range(6) for o in range(50, 60)], got[:8]
    assert consumer.committed(KTopicPartition(topic, 0)) == 60
    consumer.close()

    # The coordinator dies: __consumer_offsets is replicated on all three, so another node takes
    # the group over, with its committed offsets, once the dead one is fenced.
    c.nodes[coord].kill()
    wait_for(
        lambda: find_coordinator(c.bootstrap(others[0]), group)[1] in others,
        40,
        "another node to coordinate the group when the broker is fenced",
    )
    wait_for(
        lambda: committed_offsets(c.bootstrap(others[0]), group, topic, range(6)) == {p: 60 for p in range(6)},
        30,
        "the committed offsets through the new coordinator",
    )
    c.nodes[coord].start(timeout=60)
    wait_for(lambda: find_coordinator(c.bootstrap(coord), group)[0] == 0, 60, "the restarted node answering")
    assert committed_offsets(c.bootstrap(1), group, topic, range(6)) == {p: 60 for p in range(6)}


def test_a_data_dir_of_another_cluster_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "meta.properties").write_text("version=1\ncluster.id=AAAAAAAAAAAAAAAAAAAAAA\nnode.id=1\n")
    proc = subprocess.run(
        [str(vltava_bin()), "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(data),
         "--cluster-id", "BBBBBBBBBBBBBBBBBBBBBB"],
        capture_output=True, timeout=60, text=True,
    )
    assert proc.returncode == 1
    assert "belongs to cluster AAAAAAAAAAAAAAAAAAAAAA" in proc.stderr, proc.stderr
    assert (data / "meta.properties").read_text().count("AAAAAAAAAAAAAAAAAAAAAA") == 1
