"""Helpers for the consumer-group end-to-end tests (test_groups*.py).

* ``GROUP_SETTINGS``: broker settings that keep group tests fast (no initial rebalance delay, short
  session timeouts allowed).
* ``Member``: one confluent-kafka group consumer driven from the test's thread (``pump`` polls a list
  of them in turn); it tracks what it owns from its rebalance callbacks (eager and cooperative).
* ``ConsumerProc``: a confluent-kafka group consumer in its own process (``group_consumer_proc.py``)
  reporting assignments, records and commits as JSON lines; it can be killed with SIGKILL.
* ``ContinuousProducer``: a producer thread writing numbered records round-robin over the partitions
  until stopped, remembering where each record landed.
* checks on assignments (disjoint, covering) and on what a group consumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from e2e_util import E2E_DIR, base_conf, python_exe, wait_for

# Kafka's defaults (3 s initial rebalance delay, 6 s minimum session timeout) would only slow the tests.
GROUP_SETTINGS = {"group.initial.rebalance.delay.ms": 0, "group.min.session.timeout.ms": 1000}
T = 30  # seconds for one admin / commit / committed() call

CONSUMER_PROC_SCRIPT = E2E_DIR / "group_consumer_proc.py"


def group_conf(bootstrap: str, group: str, **extra) -> dict:
    """A group consumer's configuration: earliest reset, no auto commit (tests commit explicitly),
    short heartbeats and a session timeout that keep rebalances quick."""
    conf = base_conf(bootstrap)
    conf.update(
        {
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 5000,
        }
    )
    conf.update({k.replace("_", "."): v for k, v in extra.items()})
    return conf


# ----------------------------------------------------------------------------- committed offsets
def committed(bootstrap: str, group: str, topic: str, partitions, timeout: float = T) -> dict[int, TopicPartition]:
    """committed() through a consumer of `group` that never joins it (OffsetFetch only)."""
    c = Consumer(group_conf(bootstrap, group))
    try:
        res = c.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
    finally:
        c.close()
    for tp in res:
        assert tp.error is None, f"committed({group}, {topic}/{tp.partition}): {tp.error}"
    return {tp.partition: tp for tp in res}


def committed_offsets(bootstrap, group, topic, partitions) -> dict[int, int]:
    return {p: tp.offset for p, tp in committed(bootstrap, group, topic, partitions).items()}


# ----------------------------------------------------------------------------- assignments
def check_partitioning(owned: dict[str, set[int]], partitions: Iterable[int], allow_idle: bool = False) -> str | None:
    """None when the members' partitions are pairwise disjoint, cover `partitions` exactly and (unless
    `allow_idle`) every member owns at least one; otherwise what is wrong."""
    want = set(partitions)
    seen: dict[int, str] = {}
    for name, parts in owned.items():
        if not parts and not allow_idle:
            return f"{name} owns nothing"
        for p in parts:
            if p in seen:
                return f"partition {p} owned by both {seen[p]} and {name}"
            seen[p] = name
    if set(seen) != want:
        return f"owned {sorted(seen)} instead of {sorted(want)}"
    return None


def fmt_owned(owned: dict[str, set[int]]) -> str:
    return ", ".join(f"{n}={sorted(p)}" for n, p in sorted(owned.items()))


# ----------------------------------------------------------------------------- in-process members
@dataclass
class Consumed:
    member: str
    partition: int
    offset: int
    value: bytes | None
    t: float


class Member:
    """A subscribed confluent-kafka consumer. Rebalance callbacks run inside poll(), so a test drives
    several members from one thread with ``pump``."""

    def __init__(self, name: str, conf: dict, topics: Sequence[str], commit_on_revoke: bool = True):
        self.name = name
        self.conf = dict(conf)
        self.consumer = Consumer(self.conf)
        self.topics = list(topics)
        self.owned: set[int] = set()
        self.events: list[tuple[str, tuple[int, ...], float]] = []  # ("assign"|"revoke"|"lost", partitions, t)
        self.got: list[Consumed] = []
        self.errors: list[str] = []
        self.commit_on_revoke = commit_on_revoke
        # confluent-kafka's Python Consumer has no rebalance_protocol(): the configured strategy tells
        self.cooperative = "cooperative" in str(self.conf.get("partition.assignment.strategy", ""))
        self.protocol = "COOPERATIVE" if self.cooperative else "EAGER"
        self.closed = False
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    # callbacks ---------------------------------------------------------------
    def _on_assign(self, consumer, parts):
        ps = tuple(sorted(tp.partition for tp in parts))
        self.events.append(("assign", ps, time.monotonic()))
        if self.cooperative:
            self.owned |= set(ps)  # incremental: only the partitions added
        else:
            self.owned = set(ps)  # eager: the whole assignment

    def _on_revoke(self, consumer, parts):
        ps = tuple(sorted(tp.partition for tp in parts))
        self.events.append(("revoke", ps, time.monotonic()))
        if self.commit_on_revoke and ps:
            self._commit_quietly(consumer)
        self.owned -= set(ps)

    def _on_lost(self, consumer, parts):
        ps = tuple(sorted(tp.partition for tp in parts))
        self.events.append(("lost", ps, time.monotonic()))
        self.owned -= set(ps)

    def _commit_quietly(self, consumer):
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError._NO_OFFSET:
                self.errors.append(f"commit on revoke: {err.name()}: {err.str()}")

    # polling -----------------------------------------------------------------
    def poll(self, timeout: float = 0.05, max_messages: int = 500) -> list[Consumed]:
        out = []
        for m in self.consumer.consume(num_messages=max_messages, timeout=timeout):
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.errors.append(f"{err.name()}: {err.str()}")
                continue
            c = Consumed(self.name, m.partition(), m.offset(), m.value(), time.monotonic())
            out.append(c)
        self.got.extend(out)
        return out

    def commit(self) -> list[TopicPartition]:
        """Synchronous commit of what this member consumed (positions); [] if there was nothing to commit."""
        try:
            return self.consumer.commit(asynchronous=False) or []
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError._NO_OFFSET:
                return []
            raise

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()

    def first_offsets(self) -> dict[int, int]:
        first: dict[int, int] = {}
        for c in self.got:
            first.setdefault(c.partition, c.offset)
        return first


def pump(members: Sequence[Member], cond: Callable[[], object], timeout: float, desc: str, stable_for: float = 0.0):
    """Poll every member in turn until `cond()` is truthy (and stayed so for `stable_for` seconds)."""
    deadline = time.monotonic() + timeout
    since: float | None = None
    last_exc: BaseException | None = None
    while True:
        for m in members:
            if not m.closed:
                m.poll(0.05)
        try:
            ok = cond()
        except Exception as exc:  # keep polling, report the last error
            ok, last_exc = False, exc
        now = time.monotonic()
        if ok:
            since = now if since is None else since
            if now - since >= stable_for:
                return ok
        else:
            since = None
        if now >= deadline:
            state = "; ".join(f"{m.name}: owned={sorted(m.owned)} events={m.events[-6:]} errors={m.errors[-3:]}" for m in members)
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {desc}; last error: {last_exc!r}\n{state}")


def pump_for(members: Sequence[Member], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for m in members:
            if not m.closed:
                m.poll(0.05)


def partitioned(members: Sequence[Member], partitions: Iterable[int], allow_idle: bool = False) -> Callable[[], bool]:
    """Condition: the members' owned partitions (from callbacks) and their assignment() agree, are
    disjoint and cover `partitions`."""
    parts = list(partitions)

    def cond():
        owned = {m.name: set(m.owned) for m in members}
        if any(m.assignment() != owned[m.name] for m in members):
            return False
        return check_partitioning(owned, parts, allow_idle) is None

    return cond


# ----------------------------------------------------------------------------- producing
def produce_to_partitions(
    bootstrap: str, topic: str, per_partition: dict[int, int], prefix: str = "v"
) -> dict[tuple[int, int], bytes]:
    """Produce `n` records to each partition; returns (partition, offset) -> value."""
    producer = Producer({**base_conf(bootstrap), "linger.ms": 5, "acks": "all"})
    where: dict[tuple[int, int], bytes] = {}
    errors: list[str] = []

    def cb(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            where[(msg.partition(), msg.offset())] = msg.value()

    for p, n in per_partition.items():
        for i in range(n):
            producer.produce(topic, value=f"{prefix}-p{p}-{i}".encode(), partition=p, on_delivery=cb)
            producer.poll(0)
    left = producer.flush(60)
    assert left == 0 and not errors, f"produce to {topic}: {left} undelivered, errors {errors[:3]}"
    return where


class ContinuousProducer:
    """Writes records round-robin over `partitions` from a thread until stop(); every record's
    (partition, offset) comes from its delivery report."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, interval: float = 0.004):
        self.topic = topic
        self.partitions = partitions
        self.interval = interval
        self.producer = Producer({**base_conf(bootstrap), "linger.ms": 5, "acks": "all", "message.timeout.ms": 60000})
        self.where: dict[tuple[int, int], bytes] = {}
        self.errors: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="continuous-producer", daemon=True)

    def _cb(self, err, msg):
        if err is not None:
            self.errors.append(str(err))
        else:
            self.where[(msg.partition(), msg.offset())] = msg.value()

    def _run(self):
        i = 0
        while not self._stop.is_set():
            p = i % self.partitions
            try:
                self.producer.produce(self.topic, value=f"c-{i}".encode(), partition=p, on_delivery=self._cb)
                i += 1
                self.sent = i
            except BufferError:
                pass
            self.producer.poll(0)
            time.sleep(self.interval)

    def start(self) -> "ContinuousProducer":
        self._thread.start()
        return self

    def stop(self, timeout: float = 60) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        left = self.producer.flush(timeout)
        assert left == 0, f"{left} records undelivered after {timeout}s"
        assert not self.errors, f"delivery errors: {self.errors[:5]}"
        assert len(self.where) == self.sent, f"{self.sent} produced, {len(self.where)} delivery reports"

    def high_watermarks(self) -> dict[int, int]:
        hw = {p: 0 for p in range(self.partitions)}
        for p, o in self.where:
            hw[p] = max(hw[p], o + 1)
        return hw


# ----------------------------------------------------------------------------- member processes
@dataclass
class ProcEvent:
    ev: str
    t: float
    data: dict = field(default_factory=dict)


class ConsumerProc:
    """`group_consumer_proc.py` in a child process: a subscribed confluent-kafka consumer that commits
    synchronously after every batch (and on revoke), reporting everything as JSON lines."""

    def __init__(self, name: str, bootstrap: str, group: str, topic: str, workdir: Path, conf: dict | None = None):
        self.name = name
        self.events: list[ProcEvent] = []
        self.lock = threading.Lock()
        self.stderr_path = workdir / f"consumer-{name}.stderr"
        args = {"bootstrap": bootstrap, "group": group, "topic": topic, "name": name, "conf": conf or {}}
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [python_exe(), str(CONSUMER_PROC_SCRIPT), json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=E2E_DIR,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"reader-{name}", daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append(ProcEvent(obj.pop("ev"), obj.pop("t", 0.0), obj))

    # views -------------------------------------------------------------------
    def snapshot(self) -> list[ProcEvent]:
        with self.lock:
            return list(self.events)

    def owned(self) -> set[int]:
        owned: set[int] = set()
        for e in self.snapshot():
            if e.ev == "assign":
                owned = set(e.data["parts"]) if e.data["protocol"] != "COOPERATIVE" else owned | set(e.data["parts"])
            elif e.ev in ("revoke", "lost"):
                owned -= set(e.data["parts"])
        return owned

    def records(self) -> list[ProcEvent]:
        return [e for e in self.snapshot() if e.ev == "msg"]

    def errors(self) -> list[str]:
        return [e.data["error"] for e in self.snapshot() if e.ev == "error"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, n: int = 3000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # control -----------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL: no LeaveGroup, no final commit; the coordinator must notice the session expire."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)

    def close(self, timeout: float = 30) -> int:
        """Ask it to commit, close (LeaveGroup) and exit; returns the exit code."""
        if self.alive():
            try:
                self.proc.stdin.write(b"close\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"consumer {self.name} did not close within {timeout}s\n{self.stderr_tail()}")
        self._reader.join(timeout=5)
        self._stderr.close()
        return code

    def ensure_dead(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)
        try:
            self._stderr.close()
        except OSError:
            pass


def wait_procs_partitioned(
    procs: Sequence[ConsumerProc],
    partitions: Iterable[int],
    timeout: float,
    desc: str,
    stable_for: float = 1.0,
    allow_idle: bool = False,
) -> dict[str, set[int]]:
    """Wait until the live processes' partitions are disjoint and cover `partitions`, steadily for `stable_for` s."""
    parts = list(partitions)
    deadline = time.monotonic() + timeout
    since: float | None = None
    while True:
        dead = [p.name for p in procs if not p.alive()]
        assert not dead, f"consumer process(es) {dead} exited:\n" + "\n".join(p.stderr_tail() for p in procs if not p.alive())
        owned = {p.name: p.owned() for p in procs}
        problem = check_partitioning(owned, parts, allow_idle)
        now = time.monotonic()
        if problem is None:
            since = now if since is None else since
            if now - since >= stable_for:
                return owned
        else:
            since = None
        if now >= deadline:
            detail = "\n".join(
                f"{p.name}: last events {[(e.ev, e.data) for e in p.snapshot() if e.ev != 'msg'][-6:]}" for p in procs
            )
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {desc}: {problem} ({fmt_owned(owned)})\n{detail}")
        time.sleep(0.1)


def check_group_consumption(
    where: dict[tuple[int, int], bytes],
    hw: dict[int, int],
    streams: dict[str, list[tuple[int, int, bytes | None, float]]],
    assigns: dict[str, list[tuple[float, set[int]]]],
    commits: list[tuple[float, int, int]],
) -> list[str]:
    """What a group consumed against what was produced. `streams`: member -> [(partition, offset, value, t)]
    in arrival order; `assigns`: member -> [(t, partitions newly owned)]; `commits`: [(t, partition,
    committed offset)] acknowledged by the broker. Returns a list of problems:
    * a record produced but never consumed (a gap), or consumed with another value;
    * within one ownership of a partition, offsets not consecutive (skips or reordering);
    * an ownership that started below an offset the group had committed before it was assigned
      (duplicates beyond the uncommitted tail)."""
    problems: list[str] = []
    seen: dict[int, set[int]] = {p: set() for p in hw}
    for member, stream in streams.items():
        last: dict[int, tuple[int, float]] = {}
        for p, o, v, t in stream:
            if where.get((p, o)) != v:
                problems.append(f"{member}: record {p}/{o} has value {v!r:.40}, produced {where.get((p, o))!r:.40}")
            seen.setdefault(p, set()).add(o)
            prev = last.get(p)
            # a new assignment of p between the previous record and this one starts a new run
            new_run = prev is None or any(prev[1] < ta <= t and p in parts for ta, parts in assigns.get(member, []))
            if not new_run and o != prev[0] + 1:
                problems.append(f"{member}: partition {p} jumped from offset {prev[0]} to {o} within one assignment")
            if new_run:
                # the newest commit of p acknowledged before this run's assignment
                ta = max((ta for ta, parts in assigns.get(member, []) if p in parts and ta <= t), default=None)
                if ta is not None:
                    floor = max((o2 for (tc, p2, o2) in commits if p2 == p and tc < ta), default=0)
                    if o < floor:
                        problems.append(
                            f"{member}: partition {p} resumed at {o}, below the offset {floor} committed before the assignment"
                        )
            last[p] = (o, t)
            if len(problems) > 20:
                return problems
    for p, n in hw.items():
        missing = sorted(set(range(n)) - seen.get(p, set()))
        if missing:
            problems.append(f"partition {p}: {len(missing)} of {n} records never consumed, first {missing[:10]}")
    return problems


def wait_all(cond: Callable[[], object], timeout: float, desc: str):
    return wait_for(cond, timeout, desc, interval=0.1)
