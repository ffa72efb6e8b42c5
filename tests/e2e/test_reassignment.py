"""Operator moves on a replicated cluster of real `vltava serve` processes: a partition
reassigned from brokers {1,2,3} to {2,3,4} while two idempotent acks=all producers write to it
(`vltava topic reassign`), preferred-leader election on request (`vltava cluster
elect-leaders`) and by the controller's periodic rebalance (`auto.leader.rebalance.enable`).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

from confluent_kafka import KafkaError

from conftest import Broker, free_port
from e2e_util import admin_client, assert_all_delivered, gen_records, kcat_consume_all, produce_confluent, wait_for
from group_util import GROUP_SETTINGS
from test_cluster import Cluster, print_logs_if_failed, vltava_cli
from test_replication import (
    FAST,
    KafkaPythonProducer,
    UniqueProducer,
    full_isr,
    log_bytes,
    partitions,
    read_all,
)


def start_cluster(base: Path, extra: dict | None = None) -> Cluster:
    c = Cluster(base)
    for b in c.nodes.values():
        b.settings.update(FAST)
        b.settings.update(extra or {})
    c.start()
    return c


def observer(c: Cluster, base: Path, node_id: int = 4) -> Broker:
    """A broker beside the cluster's three voters, following the metadata as an observer."""
    return Broker(
        Path(tempfile.mkdtemp(prefix=f"node{node_id}-", dir=base)),
        {
            **GROUP_SETTINGS,
            **FAST,
            "node.id": node_id,
            "controller.listen": f"127.0.0.1:{free_port()}",
            "controller.quorum.bootstrap.servers": ",".join(f"127.0.0.1:{p}" for p in c.controller_ports.values()),
        },
        port=free_port(),
    )


@pytest.mark.timeout(300)
def test_reassignment_to_other_brokers_under_load_loses_nothing(request, tmp_path_factory, tmp_path):
    c = start_cluster(tmp_path_factory.mktemp("reassign"))
    node4 = observer(c, tmp_path)
    try:
        node4.start(timeout=60)
        everyone = {**c.nodes, 4: node4}
        c.wait_brokers({1, 2, 3, 4}, via=everyone.values())
        admin = admin_client(c.bootstrap(1))
        admin.create_topics(
            [NewTopic("moving", num_partitions=1, replica_assignment=[[1, 2, 3]], config={"min.insync.replicas": "2"})]
        )["moving"].result(30)
        wait_for(lambda: 0 in partitions(c.bootstrap(1), "moving"), 30, "the topic in metadata")
        assert partitions(c.bootstrap(1), "moving")[0][:2] == (1, [1, 2, 3])

        bootstrap = ",".join(b.bootstrap for b in everyone.values())
        producer = UniqueProducer(bootstrap, "moving", 1)
        kproducer = KafkaPythonProducer(bootstrap, "moving", 1)
        producer.start()
        kproducer.start()
        try:
            wait_for(lambda: len(producer.acked) > 3000, 60, "records acknowledged before the move")
            cli = ["--bootstrap-server", c.bootstrap(3)]
            out = vltava_cli("topic", "reassign", "moving", "--partition", "0", "--replicas", "2,3,4", "--wait", "120", *cli)
            assert "reassignment complete" in out, out
            before = len(producer.acked)
            wait_for(lambda: len(producer.acked) > before + 2000, 60, "writes acknowledged after the move")
        finally:
            producer.finish()
            kproducer.finish()

        leader, replicas, isr = partitions(node4.bootstrap, "moving")[0]
        assert replicas == [2, 3, 4], replicas
        assert leader == 2, f"the first in-sync target replica leads, not {leader}"
        assert json.loads(vltava_cli("topic", "reassignments", "--json", *cli)) == []
        # Broker 1 is no longer a replica: its copy is deleted.
        wait_for(lambda: not (c.nodes[1].data_dir / "moving-0").exists(), 30, "broker 1's replica deleted")

        assert not producer.failed, producer.failed[:10]
        assert not kproducer.failed, kproducer.failed[:10]
        acked = {**producer.acked, **kproducer.acked}
        got = read_all(node4.bootstrap, "moving", 1, len(acked))
        seen: dict[bytes, list[int]] = {}
        for _, o, v in got:
            seen.setdefault(v, []).append(o)
        lost = [v for v in acked if v not in seen]
        dups = {v: at for v, at in seen.items() if len(at) > 1}
        print(f"acknowledged {len(producer.acked)} + {len(kproducer.acked)}; read {len(got)}")
        assert not lost, f"{len(lost)} acknowledged values lost, e.g. {lost[:5]}"
        assert not dups, f"duplicates: {list(dups.items())[:5]}"
        # The new replica holds the same bytes as the two that stayed.
        wait_for(
            lambda: len({log_bytes(everyone[i].data_dir, "moving", 0) for i in (2, 3, 4)}) == 1,
            60,
            "identical replicas on 2, 3 and 4",
        )

        # A reordering is immediate and elects nobody; elect-leaders then moves leadership to
        # the new preferred replica.
        vltava_cli("topic", "reassign", "moving", "--partition", "0", "--replicas", "3,2,4", *cli)
        wait_for(lambda: partitions(node4.bootstrap, "moving")[0][1] == [3, 2, 4], 30, "replicas reordered")
        assert partitions(node4.bootstrap, "moving")[0][0] == 2
        out = vltava_cli("cluster", "elect-leaders", "--topic", "moving", *cli)
        assert "moving-0: leader elected" in out, out
        wait_for(lambda: partitions(node4.bootstrap, "moving")[0][0] == 3, 30, "broker 3 leading")
        out = vltava_cli("cluster", "elect-leaders", *cli)
        assert "no leader election needed" in out, out
    finally:
        print_logs_if_failed(request, [*c.nodes.values(), node4])
        node4.kill() if node4.is_running() else None
        c.close()


@pytest.mark.timeout(240)
def test_leadership_returns_to_the_preferred_replica_by_itself(request, tmp_path_factory):
    c = start_cluster(
        tmp_path_factory.mktemp("rebalance"),
        {"auto.leader.rebalance.enable": "true", "leader.imbalance.check.interval.seconds": 2},
    )
    try:
        admin = admin_client(c.bootstrap(1))
        admin.create_topics([NewTopic("pref", num_partitions=3, replication_factor=3)])["pref"].result(30)
        wait_for(lambda: len(partitions(c.bootstrap(1), "pref")) == 3, 30, "the topic in metadata")
        full_isr(c, "pref")
        preferred = {p: replicas[0] for p, (_, replicas, _) in partitions(c.bootstrap(1), "pref").items()}
        assert all(partitions(c.bootstrap(1), "pref")[p][0] == preferred[p] for p in preferred)
        victim_partition = 0
        victim = preferred[victim_partition]
        c.nodes[victim].kill()
        other = next(i for i in c.nodes if i != victim)
        wait_for(
            lambda: partitions(c.bootstrap(other), "pref")[victim_partition][0] not in (victim, -1),
            30,
            f"a new leader than the killed {victim}",
        )
        c.nodes[victim].start(timeout=60)
        t0 = time.monotonic()
        wait_for(
            lambda: all(leader == preferred[p] for p, (leader, _, _) in partitions(c.bootstrap(other), "pref").items()),
            60,
            "every partition led by its preferred replica again",
        )
        print(f"leadership back {time.monotonic() - t0:.1f} s after the restart")
    finally:
        print_logs_if_failed(request, c.nodes.values())
        c.close()


@pytest.mark.timeout(240)
def test_two_of_three_replicas_down_refuses_acks_all_until_one_returns(request, tmp_path_factory, tmp_path):
    """Replicas on brokers 1, 2 and 4 while the controller quorum is 1, 2 and 3: with 2 and 4
    down the quorum still has a majority, the ISR shrinks to the leader alone, and acks=all is
    refused with NOT_ENOUGH_REPLICAS (min.insync.replicas=2) until broker 4 is back in sync."""
    c = start_cluster(tmp_path_factory.mktemp("twodown"))
    node4 = observer(c, tmp_path)
    try:
        node4.start(timeout=60)
        c.wait_brokers({1, 2, 3, 4}, via=[*c.nodes.values(), node4])
        admin = admin_client(c.bootstrap(1))
        admin.create_topics(
            [NewTopic("twodown", num_partitions=1, replica_assignment=[[1, 2, 4]], config={"min.insync.replicas": "2"})]
        )["twodown"].result(30)
        wait_for(lambda: 0 in partitions(c.bootstrap(1), "twodown"), 30, "the topic in metadata")
        conf = {"acks": "all", "message.send.max.retries": 0, "enable.idempotence": False, "message.timeout.ms": 10000}
        assert_all_delivered(produce_confluent(c.bootstrap(1), "twodown", gen_records(20, null_values=False), conf=conf))

        c.nodes[2].kill()
        node4.kill()
        wait_for(lambda: partitions(c.bootstrap(1), "twodown")[0][2] == [1], 30, "the ISR down to broker 1")
        results = produce_confluent(c.bootstrap(1), "twodown", gen_records(5, null_values=False), conf=conf)
        codes = {err.code() if err else None for (err, _, _) in results}
        assert codes == {KafkaError.NOT_ENOUGH_REPLICAS}, results

        node4.start(timeout=60)
        wait_for(lambda: sorted(partitions(c.bootstrap(1), "twodown")[0][2]) == [1, 4], 60, "broker 4 back in sync")
        results = produce_confluent(c.bootstrap(1), "twodown", gen_records(5, null_values=False), conf=conf)
        assert_all_delivered(results)
        assert len(kcat_consume_all(node4.bootstrap, "twodown")) == 25
    finally:
        print_logs_if_failed(request, [*c.nodes.values(), node4])
        node4.kill() if node4.is_running() else None
        c.close()
