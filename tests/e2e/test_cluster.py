"""Three `vltava serve` processes as one cluster: a controller quorum of all three (combined
nodes), topics spread across them, clients bootstrapped at any node, and the active controller
killed with SIGKILL.

Partitions have one replica each until replication lands, so a dead broker's partitions have no
leader until it returns; what is checked here is the metadata layer: agreement, placement,
routing, fencing and controller failover.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from conftest import Broker, free_port
from e2e_util import (
    admin_client,
    gen_records,
    kcat_consume_all,
    produce_confluent,
    assert_all_delivered,
    wait_for,
)

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


@pytest.fixture
def cluster(request, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        yield c
    finally:
        failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
        if failed:
            for i, b in c.nodes.items():
                print(f"\n===== node {i} stderr (tail) =====\n{b.stderr_tail()}")
        c.close()


def cluster_ids(c: Cluster) -> set[str]:
    ids = set()
    for b in c.nodes.values():
        text = (b.data_dir / "meta.properties").read_text()
        ids |= set(re.findall(r"^cluster\.id=(\S+)$", text, re.M))
    return ids


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
    before = leaders(c.bootstrap(survivors[0]), "before")
    assert all((lead == -1) == (lead not in survivors) for lead in before.values()), before
    after_fenced = leaders(c.bootstrap(survivors[0]), "after")
    assert {p: (lead if after[p] in survivors else -1) for p, lead in after.items()} == after_fenced, (after, after_fenced)
    # The CLI describes the topic anyway: offline partitions with leader -1 and no offsets.
    import subprocess
    from conftest import vltava_bin

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
    assert len(cluster_ids(c)) == 1


def test_a_data_dir_of_another_cluster_is_refused(tmp_path):
    from conftest import vltava_bin
    import subprocess

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
