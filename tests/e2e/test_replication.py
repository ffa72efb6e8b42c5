"""Replicated partitions on three `vltava serve` processes (combined nodes): followers copy the
leader's batches unchanged, acks=all waits for the in-sync replicas, min.insync.replicas is
enforced, and a leader killed with SIGKILL again and again while an idempotent acks=all producer
writes loses no acknowledged record: after healing, every acknowledged value is in the log
exactly once, at the offset it was acknowledged at, and the three replicas hold the same bytes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import NewTopic

from e2e_util import admin_client, assert_all_delivered, base_conf, gen_records, kcat_consume_all, produce_confluent, wait_for
from group_util import committed_offsets
from test_cluster import Cluster, print_logs_if_failed

FAST = {
    # A killed broker is fenced, and its leaderships move, within ~3 s.
    "broker.session.timeout.ms": 3000,
    "broker.heartbeat.interval.ms": 500,
}


@pytest.fixture
def rcluster(request, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("rcluster"))
    for b in c.nodes.values():
        b.settings.update(FAST)
    try:
        c.start()
        yield c
    finally:
        print_logs_if_failed(request, c.nodes.values())
        c.close()


def partitions(bootstrap: str, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """Partition -> (leader, replicas, isrs) as the node at `bootstrap` answers Metadata."""
    md = admin_client(bootstrap).list_topics(topic, timeout=10)
    t = md.topics[topic]
    assert t.error is None, t.error
    return {p.id: (p.leader, list(p.replicas), list(p.isrs)) for p in t.partitions.values()}


def create_replicated(bootstrap: str, topic: str, n: int, config: dict) -> None:
    admin = admin_client(bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=n, replication_factor=3, config=config)])[topic].result(timeout=30)
    wait_for(lambda: len(partitions(bootstrap, topic)) == n, 30, f"topic {topic} in metadata")


def full_isr(c: Cluster, topic: str, timeout: float = 60) -> None:
    def ok():
        for i, b in c.nodes.items():
            if not b.is_running():
                continue
            for leader, replicas, isr in partitions(b.bootstrap, topic).values():
                if leader < 0 or sorted(isr) != sorted(replicas):
                    return False
        return True

    wait_for(ok, timeout, f"every partition of {topic} with all replicas in sync")


def log_bytes(data_dir: Path, topic: str, partition: int) -> bytes:
    d = data_dir / f"{topic}-{partition}"
    return b"".join(p.read_bytes() for p in sorted(d.glob("*.log")))


def assert_replicas_identical(c: Cluster, topic: str, n: int, timeout: float = 60) -> None:
    """Every replica's segments hold the same bytes (batches are stored as the leader wrote them)."""

    def same():
        for p in range(n):
            copies = {i: log_bytes(b.data_dir, topic, p) for i, b in c.nodes.items()}
            if len(set(copies.values())) != 1 or not next(iter(copies.values())):
                return False
        return True

    wait_for(same, timeout, f"identical replicas of every partition of {topic}")


def test_followers_copy_the_leaders_batches_and_acks_all_waits_for_the_isr(rcluster):
    c = rcluster
    create_replicated(c.bootstrap(1), "rep", 3, {"min.insync.replicas": "2"})
    parts = partitions(c.bootstrap(2), "rep")
    for leader, replicas, isr in parts.values():
        assert sorted(replicas) == [1, 2, 3] and sorted(isr) == [1, 2, 3], parts
    # Leaders spread over the three brokers.
    assert sorted(leader for leader, _, _ in parts.values()) == [1, 2, 3], parts

    records = gen_records(3000, null_values=False)
    results = produce_confluent(c.bootstrap(1), "rep", records, conf={"enable.idempotence": True})
    assert_all_delivered(results)
    got = kcat_consume_all(c.bootstrap(3), "rep")
    assert sorted((g.partition, g.offset) for g in got) == sorted((p, o) for (_, p, o) in results)
    assert_replicas_identical(c, "rep", 3)
    full_isr(c, "rep")


def test_acks_all_is_refused_below_min_insync_replicas_and_accepted_when_a_replica_returns(rcluster):
    c = rcluster
    # min.insync.replicas=3: one broker down is one too few.
    create_replicated(c.bootstrap(1), "strict", 1, {"min.insync.replicas": "3"})
    leader = partitions(c.bootstrap(1), "strict")[0][0]
    victim = next(i for i in c.nodes if i != leader)
    c.nodes[victim].kill()
    wait_for(
        lambda: victim not in partitions(c.bootstrap(leader), "strict")[0][2],
        30,
        f"broker {victim} out of the ISR after its fencing",
    )
    conf = {"acks": "all", "message.send.max.retries": 0, "enable.idempotence": False, "message.timeout.ms": 10000}
    results = produce_confluent(c.bootstrap(leader), "strict", gen_records(5, null_values=False), conf=conf)
    codes = {err.code() if err else None for (err, _, _) in results}
    assert codes == {KafkaError.NOT_ENOUGH_REPLICAS}, results

    c.nodes[victim].start(timeout=60)
    full_isr(c, "strict")
    results = produce_confluent(c.bootstrap(leader), "strict", gen_records(5, null_values=False), conf=conf)
    assert_all_delivered(results)


class UniqueProducer:
    """An idempotent acks=all producer writing unique values round-robin until stopped; it
    remembers where each acknowledged value landed."""

    def __init__(self, bootstrap: str, topic: str, n_partitions: int):
        conf = base_conf(bootstrap)
        conf.update(
            {
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.timeout.ms": 120000,
                "request.timeout.ms": 10000,
            }
        )
        self.producer = Producer(conf)
        self.topic = topic
        self.n = n_partitions
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.failed: list[tuple[bytes, str]] = []
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _cb(self, err, msg):
        if err is None:
            offset = msg.offset()
            self.acked[msg.value()] = (msg.partition(), offset if offset is not None and offset >= 0 else None)
        else:
            self.failed.append((msg.value(), str(err)))

    def _run(self):
        i = 0
        while not self.stop.is_set():
            value = f"v-{i:08d}".encode()
            try:
                self.producer.produce(self.topic, value=value, partition=i % self.n, on_delivery=self._cb)
                i += 1
                self.sent = i
            except BufferError:
                pass
            self.producer.poll(0.001 if i % 50 else 0.02)
        self.producer.flush(150)

    def start(self):
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join(180)
        assert not self.thread.is_alive(), "producer did not finish"


class KafkaPythonProducer:
    """kafka-python's producer (idempotent by default, acks=all) writing its own unique values
    beside the confluent-kafka one, at a gentler pace."""

    def __init__(self, bootstrap: str, topic: str, n_partitions: int):
        from kafka import KafkaProducer

        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap.split(","),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=10000,
            delivery_timeout_ms=120000,
            retries=2**31 - 1,
        )
        self.topic = topic
        self.n = n_partitions
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.failed: list[tuple[bytes, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        i = 0
        while not self.stop.is_set():
            value = f"kp-{i:08d}".encode()
            fut = self.producer.send(self.topic, value=value, partition=i % self.n)
            fut.add_callback(lambda md, v=value: self.acked.__setitem__(v, (md.partition, md.offset)))
            fut.add_errback(lambda exc, v=value: self.failed.append((v, repr(exc))))
            i += 1
            time.sleep(0.002)
        self.producer.flush(timeout=150)
        self.producer.close(timeout=10)

    def start(self):
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join(180)
        assert not self.thread.is_alive(), "kafka-python producer did not finish"


def read_all(bootstrap: str, topic: str, n_partitions: int, expected: int, timeout: float = 120) -> list[tuple[int, int, bytes]]:
    conf = base_conf(bootstrap)
    conf.update({"group.id": f"read-{time.monotonic_ns()}", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None or m.error():
                continue
            out.append((m.partition(), m.offset(), m.value()))
    finally:
        consumer.close()
    return out


def leader_elsewhere(c: Cluster, topic: str, partition: int, old: int) -> bool:
    for i, b in c.nodes.items():
        if i == old or not b.is_running():
            continue
        leader = partitions(b.bootstrap, topic)[partition][0]
        if leader < 0 or leader == old:
            return False
    return True


@pytest.mark.timeout(420)
@pytest.mark.parametrize("fault", ["kill", "pause", "term"])
def test_leaders_failing_again_and_again_lose_no_acknowledged_record(rcluster, fault):
    """kill: SIGKILL and restart; pause: SIGSTOP for longer than the session timeout (the
    controller fences the leader, another takes over, the old one wakes up as a zombie and must
    truncate what it took alone), then SIGCONT; term: SIGTERM (controlled shutdown) and restart."""
    c = rcluster
    n = 3
    create_replicated(c.bootstrap(1), "kills", n, {"min.insync.replicas": "2"})
    bootstrap = ",".join(c.bootstrap(i) for i in c.nodes)
    producer = UniqueProducer(bootstrap, "kills", n)
    kproducer = KafkaPythonProducer(bootstrap, "kills", n)
    producer.start()
    kproducer.start()
    try:
        wait_for(lambda: len(producer.acked) > 2000, 60, "records acknowledged before the first kill")
        # Three rounds of SIGKILL, two of the others (the suite's time is bounded).
        for round_ in range(3 if fault == "kill" else 2):
            survivor = next(i for i, b in c.nodes.items() if b.is_running())
            leader = partitions(c.bootstrap(survivor), "kills")[round_ % n][0]
            assert leader in c.nodes, leader
            before = len(producer.acked)
            victim = c.nodes[leader]
            if fault == "kill":
                victim.kill()
            elif fault == "term":
                code = victim.stop()
                assert code in (0, None), f"exit code {code} on SIGTERM"
            else:
                os.kill(victim.pid, signal.SIGSTOP)
                wait_for(lambda: leader_elsewhere(c, "kills", round_ % n, leader), 60, f"a new leader than the paused {leader}")
            # Writes go on through the new leaders while the victim is away.
            wait_for(lambda: len(producer.acked) > before + 1000, 90, f"writes acknowledged after the {fault} of {leader}")
            if fault == "pause":
                os.kill(victim.pid, signal.SIGCONT)
            else:
                victim.start(timeout=60)
            full_isr(c, "kills", timeout=90)
            print(f"round {round_}: {fault} of leader {leader}; acked {len(producer.acked)} so far")
    finally:
        producer.finish()
        kproducer.finish()
    assert not producer.failed, producer.failed[:10]
    assert not kproducer.failed, kproducer.failed[:10]
    assert len(kproducer.acked) > 100, "kafka-python's producer got almost nothing acknowledged"
    full_isr(c, "kills", timeout=90)
    acked = {**producer.acked, **kproducer.acked}
    got = read_all(c.bootstrap(2), "kills", n, len(acked))
    print(f"acknowledged: {len(producer.acked)} (confluent-kafka), {len(kproducer.acked)} (kafka-python); read {len(got)}")
    seen: dict[bytes, list[tuple[int, int]]] = {}
    for p, o, v in got:
        seen.setdefault(v, []).append((p, o))
    lost = [v for v in acked if v not in seen]
    dups = {v: at for v, at in seen.items() if len(at) > 1}
    # An idempotent producer may learn that a request it timed out on was written from the
    # answer to a later one: that value is acknowledged without an offset (librdkafka reports
    # offset -1001); it must still be there once.
    moved = {
        v: (acked[v], seen[v]) for v in acked if v in seen and acked[v][1] is not None and seen[v][0] != acked[v]
    }
    assert not lost, f"{len(lost)} acknowledged values lost, e.g. {lost[:5]}"
    assert not dups, f"duplicates: {list(dups.items())[:5]}"
    assert not moved, f"values at another offset than acknowledged: {list(moved.items())[:5]}"
    assert_replicas_identical(c, "kills", n)


def java_hash(s: str) -> int:
    h = 0
    for ch in s.encode("utf-16-be").decode("utf-16-be"):
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def commit_until_done(consumer: Consumer, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            consumer.commit(asynchronous=False)
            return
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"commit not accepted within {deadline_s} s: {exc}")
            time.sleep(0.2)


@pytest.mark.timeout(300)
def test_a_group_keeps_consuming_and_its_committed_offsets_when_its_coordinator_dies(rcluster):
    c = rcluster
    n, total = 3, 3000
    create_replicated(c.bootstrap(1), "grp", n, {"min.insync.replicas": "2"})
    assert_all_delivered(produce_confluent(c.bootstrap(1), "grp", gen_records(total, null_values=False)))
    group = "replicated-group"
    conf = base_conf(",".join(c.bootstrap(i) for i in c.nodes))
    conf.update({"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer = Consumer(conf)
    consumer.subscribe(["grp"])
    seen: set[tuple[int, int]] = set()
    try:
        while len(seen) < total // 2:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                seen.add((m.partition(), m.offset()))
        commit_until_done(consumer)
        before = {tp.partition: tp.offset for tp in consumer.committed(consumer.assignment(), timeout=30)}
        assert sum(max(o, 0) for o in before.values()) >= total // 2, before
        # The group's offsets partition is replicated on all three; its leader coordinates it.
        offsets_parts = partitions(c.bootstrap(1), "__consumer_offsets")
        assert all(sorted(r) == [1, 2, 3] for _, r, _ in offsets_parts.values()), offsets_parts
        index = (java_hash(group) & 0x7FFFFFFF) % len(offsets_parts)
        coordinator = offsets_parts[index][0]
        c.nodes[coordinator].kill()
        # The new coordinator has every commit acknowledged before the kill (asked by a client
        # of its own, bootstrapped at the survivors).
        survivors = ",".join(b.bootstrap for i, b in c.nodes.items() if i != coordinator)
        deadline = time.monotonic() + 60
        after, last_error = None, None
        while True:
            try:
                after = committed_offsets(survivors, group, "grp", range(n))
                if all(after.get(p, -1) >= o for p, o in before.items()):
                    break
            except KafkaException as exc:
                last_error = exc
            assert time.monotonic() < deadline, (
                f"committed offsets not back after the coordinator's death: {after} vs {before}, {last_error}"
            )
            time.sleep(0.5)
        # And the group goes on to the end, committing through the new coordinator.
        deadline = time.monotonic() + 120
        while len(seen) < total and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                seen.add((m.partition(), m.offset()))
        assert len(seen) == total, f"consumed {len(seen)} of {total}"
        commit_until_done(consumer)
        final = {tp.partition: tp.offset for tp in consumer.committed(consumer.assignment(), timeout=30)}
        assert sum(final.values()) == total, final
    finally:
        consumer.close()


@pytest.mark.timeout(240)
def test_kafkajs_and_kcat_on_replicated_partitions(rcluster):
    from test_kafkajs import COUNT, IDEMPOTENT_COUNT, _run_scenario

    c = rcluster
    # kafkajs creates an RF=3 topic and writes with its default acks=-1 (gzip, then idempotent).
    out = _run_scenario(c.bootstrap(2), "js-rep", replication_factor=3)
    assert out["created"] is True
    assert all(s["errorCode"] == 0 for s in out["sent"] + out["idempotent"]), out["sent"][:5]
    for _, replicas, _ in partitions(c.bootstrap(1), "js-rep").values():
        assert sorted(replicas) == [1, 2, 3]
    high = {int(o["partition"]): int(o["high"]) for o in out["offsets"]}
    assert sum(high.values()) == COUNT + IDEMPOTENT_COUNT, high
    # kcat reads it all back, bootstrapped at each node in turn.
    for i in c.nodes:
        got = kcat_consume_all(c.bootstrap(i), "js-rep")
        assert sorted((g.partition, g.offset) for g in got) == [(p, o) for p in sorted(high) for o in range(high[p])]
    assert_replicas_identical(c, "js-rep", 2)


@pytest.mark.timeout(180)
def test_flush_on_append_on_every_replica_still_acknowledges_and_replicates(rcluster):
    """flush.on.append on an RF=3 topic: the leader counts only what it fsynced toward the high
    watermark and followers fsync before they report a log end, so acks=all waits for an fsync
    on every in-sync replica; writes still flow and the replicas still match."""
    c = rcluster
    create_replicated(c.bootstrap(1), "flushed", 2, {"min.insync.replicas": "2", "flush.on.append": "true"})
    records = gen_records(2000, null_values=False)
    results = produce_confluent(c.bootstrap(1), "flushed", records, conf={"enable.idempotence": True, "acks": "all"})
    assert_all_delivered(results)
    got = kcat_consume_all(c.bootstrap(2), "flushed")
    assert sorted((g.partition, g.offset) for g in got) == sorted((p, o) for (_, p, o) in results)
    assert_replicas_identical(c, "flushed", 2)
