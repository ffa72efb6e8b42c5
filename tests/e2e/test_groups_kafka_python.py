"""kafka-python 3.0.12 group consumers (FindCoordinator v6, JoinGroup v7, SyncGroup v5, LeaveGroup v5,
whatever OffsetCommit/OffsetFetch/Heartbeat it negotiates): two members split a 4-partition topic,
commit, and a new member resumes at the committed offsets. KAFKA-NOTES: another Kafka-compatible broker
once gave kafka-python's group consumer an empty assignment, so every member must get partitions."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from e2e_util import create_topic, wait_for
from group_util import GROUP_SETTINGS, T, check_partitioning, committed_offsets, produce_to_partitions


class KPMember(threading.Thread):
    """A kafka-python KafkaConsumer(group_id=...) subscribed to one topic, owned by its own thread (the
    consumer is not thread-safe); the test sends commands through a queue and waits for the answers."""

    def __init__(self, name: str, bootstrap: str, group: str, topic: str):
        super().__init__(name=f"kafka-python-{name}", daemon=True)
        self.member = name
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.cmds: queue.Queue = queue.Queue()
        self.replies: queue.Queue = queue.Queue()
        self.got: list[tuple[int, int, bytes]] = []
        self.assigned: set[int] = set()
        self.listener_events: list[tuple[str, tuple[int, ...]]] = []
        self.exc: BaseException | None = None
        self.done = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        owner = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                owner.listener_events.append(("revoke", tuple(sorted(tp.partition for tp in revoked))))

            def on_partitions_assigned(self, assigned):
                owner.listener_events.append(("assign", tuple(sorted(tp.partition for tp in assigned))))

        consumer = None
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=self.group,
                client_id=f"kp-{self.member}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=6000,
                heartbeat_interval_ms=500,
                fetch_max_wait_ms=100,
                request_timeout_ms=30000,
            )
            consumer.subscribe([self.topic], listener=Listener())
            while True:
                try:
                    cmd, arg = self.cmds.get_nowait()
                except queue.Empty:
                    cmd = None
                if cmd == "commit":
                    self.replies.put(self._commit(consumer))
                elif cmd == "committed":
                    from kafka import TopicPartition

                    self.replies.put({p: consumer.committed(TopicPartition(self.topic, p), timeout_ms=T * 1000) for p in arg})
                elif cmd == "close":
                    consumer.close()
                    consumer = None
                    self.replies.put("closed")
                    return
                batches = consumer.poll(timeout_ms=300)
                with self.lock:
                    for msgs in batches.values():
                        self.got.extend((m.partition, m.offset, m.value) for m in msgs)
                    self.assigned = {tp.partition for tp in consumer.assignment()}
        except BaseException as exc:  # reported by call() / the test
            self.exc = exc
            self.replies.put(exc)
        finally:
            if consumer is not None:
                try:
                    consumer.close(autocommit=False)
                except Exception:
                    pass
            self.done.set()

    @staticmethod
    def _commit(consumer, timeout: float = 30):
        """commit() as an application does it: a commit refused because a rebalance is under way is
        retried after poll() has completed the rebalance."""
        from kafka.errors import CommitFailedError, RebalanceInProgressError

        deadline = time.monotonic() + timeout
        while True:
            try:
                consumer.commit()
                return "committed"
            except (RebalanceInProgressError, CommitFailedError):
                if time.monotonic() > deadline:
                    raise
                consumer.poll(timeout_ms=200)

    def call(self, cmd: str, arg=None, timeout: float = 45):
        assert self.is_alive(), f"{self.member} is not running: {self.exc!r}"
        self.cmds.put((cmd, arg))
        reply = self.replies.get(timeout=timeout)
        if isinstance(reply, BaseException):
            raise AssertionError(f"{self.member}: {cmd} failed: {reply!r}") from reply
        return reply

    def snapshot(self):
        with self.lock:
            return set(self.assigned), list(self.got)

    def check_alive(self):
        assert self.exc is None, f"kafka-python member {self.member} failed: {self.exc!r}"
        return True


def _wait_split(members, partitions, timeout, desc, stable_for=1.0):
    since = None
    deadline = time.monotonic() + timeout
    while True:
        for m in members:
            m.check_alive()
        owned = {m.member: m.snapshot()[0] for m in members}
        ok = check_partitioning(owned, partitions) is None
        now = time.monotonic()
        if ok:
            since = since or now
            if now - since >= stable_for:
                return owned
        else:
            since = None
        if now >= deadline:
            detail = "; ".join(f"{m.member}: {m.listener_events[-4:]}" for m in members)
            raise AssertionError(f"timed out waiting for {desc}: {check_partitioning(owned, partitions)} {owned}; {detail}")
        time.sleep(0.1)


# Not 0 as elsewhere. kafka-python 3.0.12's leader compares the partitions it assigned against a metadata
# snapshot that is only filled by the first metadata update after subscribe(). When the coordinator
# completes the first rebalance at once, that update arrives after the assignment, so the leader rejoins
# (an extra rebalance; a commit racing it fails with REBALANCE_IN_PROGRESS), and if that JoinGroup then
# outlasts a poll()'s timeout, the next poll() no longer sees a reason to rejoin and never applies the
# assignment it gets back: its heartbeats stay off, the coordinator expires it, the member owns nothing
# (maybe the "empty assignment" of KAFKA-NOTES). Client bugs, and Kafka's default delay (3 s) hides them.
KAFKA_PYTHON_SETTINGS = {**GROUP_SETTINGS, "group.initial.rebalance.delay.ms": 500}


@pytest.mark.timeout(120)
def test_kafka_python_group_split_commit_resume(broker_factory):
    broker = broker_factory(KAFKA_PYTHON_SETTINGS)
    bs = broker.bootstrap
    topic = group = "kp-group"
    create_topic(bs, topic, 4)
    where = produce_to_partitions(bs, topic, {p: 50 for p in range(4)})

    a = KPMember("a", bs, group, topic)
    b = KPMember("b", bs, group, topic)
    members = [a, b]
    try:
        a.start()
        b.start()
        owned = _wait_split(members, range(4), 60, "two kafka-python members to split 4 partitions (none empty)")
        assert sorted(len(p) for p in owned.values()) == [2, 2], owned

        def all_read():
            for m in members:
                m.check_alive()
            return {(p, o) for m in members for (p, o, _v) in m.snapshot()[1]} >= set(where)

        wait_for(all_read, 45, "the two members to read all 200 records")
        for m in members:
            for p, o, v in m.snapshot()[1]:
                assert where[(p, o)] == v, f"{m.member}: record {p}/{o} differs"
        for m in members:
            assert m.call("commit") == "committed"
        for m in members:
            assert m.call("close") == "closed"
    finally:
        for m in members:
            if m.is_alive() and not m.done.is_set():
                m.cmds.put(("close", None))
        for m in members:
            m.join(timeout=20)

    # commits made by kafka-python, read back by librdkafka
    assert committed_offsets(bs, group, topic, range(4)) == {p: 50 for p in range(4)}

    more = produce_to_partitions(bs, topic, {p: 5 for p in range(4)}, prefix="more")
    c = KPMember("c", bs, group, topic)
    try:
        c.start()
        assert c.call("committed", list(range(4))) == {p: 50 for p in range(4)}
        _wait_split([c], range(4), 45, "a lone member to own all 4 partitions", stable_for=0.2)
        wait_for(lambda: c.check_alive() and len(c.snapshot()[1]) >= 20, 45, "the new member to read the 20 new records")
        time.sleep(0.5)
        got = c.snapshot()[1]
        assert sorted((p, o) for p, o, _v in got) == sorted(more), f"resumed with {sorted((p, o) for p, o, _v in got)[:8]}..."
        first = {}
        for p, o, _v in got:
            first.setdefault(p, o)
        assert first == {p: 50 for p in range(4)}
        c.call("commit")
        c.call("close")
    finally:
        if c.is_alive() and not c.done.is_set():
            c.cmds.put(("close", None))
        c.join(timeout=20)
    assert committed_offsets(bs, group, topic, range(4)) == {p: 55 for p in range(4)}
