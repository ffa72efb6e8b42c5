"""Group metadata is replicated before members hear of it: a coordinator answers JoinGroup and
SyncGroup only once the in-sync replicas of the group's __consumer_offsets partition have the
generation it announces (Kafka's storeGroup with acks=-1), so a coordinator failover never
forgets a generation its members were given.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from confluent_kafka import Consumer

from e2e_util import assert_all_delivered, base_conf, gen_records, produce_confluent, wait_for
from test_cluster import print_logs_if_failed
from test_reassignment import start_cluster
from test_replication import create_replicated, java_hash, partitions


@pytest.mark.timeout(240)
def test_a_group_gets_no_assignment_until_its_metadata_is_replicated(request, tmp_path_factory):
    # min.insync.replicas=3 everywhere, __consumer_offsets included: one follower of the
    # group's offsets partition paused is enough to hold its high watermark.
    c = start_cluster(tmp_path_factory.mktemp("groupmeta"), {"min.insync.replicas": 3})
    paused = None
    consumer = None
    try:
        create_replicated(c.bootstrap(1), "gm", 1, {"min.insync.replicas": "1"})
        assert_all_delivered(produce_confluent(c.bootstrap(1), "gm", gen_records(10, null_values=False)))
        group = "replicated-metadata"
        wait_for(lambda: len(partitions(c.bootstrap(1), "__consumer_offsets")) > 0, 60, "the offsets topic")
        offsets_parts = partitions(c.bootstrap(1), "__consumer_offsets")
        leader, replicas, _ = offsets_parts[(java_hash(group) & 0x7FFFFFFF) % len(offsets_parts)]
        assert sorted(replicas) == [1, 2, 3], replicas
        follower = next(r for r in replicas if r != leader)
        paused = c.nodes[follower]
        os.kill(paused.pid, signal.SIGSTOP)

        assigned: list[float] = []
        conf = base_conf(c.bootstrap(leader))
        conf.update({"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer = Consumer(conf)
        consumer.subscribe(["gm"], on_assign=lambda _c, parts: assigned.append(time.monotonic()) if parts else None)
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            consumer.poll(0.2)
        assert not assigned, "the group was answered while its metadata could not reach the in-sync replicas"

        os.kill(paused.pid, signal.SIGCONT)
        paused = None
        got = 0
        deadline = time.monotonic() + 90
        while got < 10 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                got += 1
        assert assigned, "no assignment after the follower came back"
        assert got == 10, f"read {got} of 10"
    finally:
        if paused is not None:
            os.kill(paused.pid, signal.SIGCONT)
        if consumer is not None:
            consumer.close()
        print_logs_if_failed(request, c.nodes.values())
        c.close()
