"""Partition nemesis on a three-node cluster in network namespaces (issue 12, step 1).

An idempotent acks=all producer writes unique values to an RF=3, min.insync.replicas=2 topic with
three partitions while the leader of one partition is cut off from the other two nodes (nftables
in its own namespace; the clients in the root namespace still reach it) for longer than the
broker session timeout, so the controller fences it and another replica takes over; then the
partition heals, and the same happens to another node. After the faults: every ISR full, every
acknowledged value read back once at its acknowledged offset, the replicas byte-identical.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "e2e"))

import netns  # noqa: E402

_REASON = netns.unavailable_reason()
if _REASON:
    pytest.skip(f"netns harness unavailable: {_REASON}", allow_module_level=True)
if netns.nft_available():
    pytest.skip(f"partitions unavailable: {netns.nft_available()}", allow_module_level=True)

from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import NewTopic  # noqa: E402

from e2e_util import admin_client, base_conf, wait_for  # noqa: E402
from test_replication import assert_replicas_identical, full_isr, partitions, read_all  # noqa: E402

TOPIC = "chaos"
NPART = 3
FAULT_S = 10.0  # > broker.session.timeout.ms (3 s): the isolated node is fenced


class TimedProducer:
    """Idempotent acks=all producer writing unique values round-robin; remembers where and when
    each value was acknowledged, and every error it was told about."""

    def __init__(self, bootstrap: str, log_dir: Path | None = None):
        conf = base_conf(bootstrap)
        debug = os.environ.get("VTV_CHAOS_RDKAFKA_DEBUG")  # e.g. eos,msg,broker,metadata
        if debug and log_dir is not None:
            import logging

            logger = logging.getLogger(f"vtvchaos.rdkafka.{id(self)}")
            handler = logging.FileHandler(log_dir / "producer-rdkafka.log")
            handler.setFormatter(logging.Formatter("%(created).3f %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
            logger.propagate = False
            conf.update({"debug": debug, "logger": logger})
        conf.update({
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.timeout.ms": 120000,
            "request.timeout.ms": int(os.environ.get("VTV_CHAOS_REQUEST_TIMEOUT_MS", "10000")),
            "error_cb": self._err,
        })
        self.producer = Producer(conf)
        self.acked: dict[bytes, tuple[int, int | None]] = {}
        self.ack_times: dict[int, list[float]] = {p: [] for p in range(NPART)}
        self.failed: list[tuple[bytes, str]] = []
        self.errors: list[tuple[float, str]] = []
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _err(self, err):
        self.errors.append((time.monotonic(), str(err)))

    def _cb(self, err, msg):
        now = time.monotonic()
        if err is None:
            off = msg.offset()
            self.acked[msg.value()] = (msg.partition(), off if off is not None and off >= 0 else None)
            self.ack_times[msg.partition()].append(now)
        else:
            self.failed.append((msg.value(), str(err)))
            self.errors.append((now, f"delivery: {err}"))

    def _run(self):
        i = 0
        while not self.stop.is_set():
            try:
                self.producer.produce(TOPIC, value=f"v-{i:08d}".encode(), partition=i % NPART, on_delivery=self._cb)
                i += 1
                self.sent = i
            except BufferError:
                pass
            self.producer.poll(0.001 if i % 50 else 0.02)
        self.t_end = time.monotonic()  # the last value was handed to the client
        self.producer.flush(150)

    def start(self):
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join(180)
        assert not self.thread.is_alive(), "producer did not finish"


def probe(bootstrap: str, partition: int, timeout_s: float = 4.0) -> str:
    """One value through a fresh non-idempotent acks=all producer: 'ok <seconds>' or the error."""
    conf = base_conf(bootstrap)
    conf.update({"acks": "all", "enable.idempotence": False, "message.timeout.ms": int(timeout_s * 1000),
                 "request.timeout.ms": int(timeout_s * 1000)})
    p = Producer(conf)
    out: list[str] = []
    t = time.monotonic()
    p.produce(TOPIC, value=b"probe-%d" % time.monotonic_ns(), partition=partition,
              on_delivery=lambda err, msg: out.append(f"ok {time.monotonic() - t:.1f}s offset {msg.offset()}" if err is None else f"error {err}"))
    p.flush(timeout_s + 2)
    return out[0] if out else "no answer"


def view_from(c: netns.NetnsCluster, exclude: int) -> str:
    return next(n.bootstrap for i, n in c.nodes.items() if i != exclude)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("client_reachable", [True, False], ids=["client-reaches-victim", "client-cut-too"])
def test_isolated_leader_is_fenced_and_no_acknowledged_write_is_lost(client_reachable):
    seed = int(os.environ.get("VTV_CHAOS_SEED", "12"))
    rng = random.Random(seed)
    # Fault schedule: two isolations of a partition leader, the second on another node.
    schedule = [("isolate-leader", 0, FAULT_S), ("isolate-leader", None, FAULT_S)]
    print(f"\n[chaos] seed={seed} client_reachable={client_reachable} schedule={schedule} (partition None: one led by another node, chosen by the seed)")

    with netns.NetnsCluster(3, keep_dir=bool(os.environ.get("VTV_CHAOS_KEEP"))) as c:
        print(f"[chaos] subnet {c.subnet}, bridge {c.bridge}, nodes {c.addrs}, dir {c.base}")
        admin = admin_client(c.bootstrap(1))
        wait_for(lambda: set(admin.list_topics(timeout=5).brokers) == {1, 2, 3}, 60, "three brokers registered")
        admin.create_topics([NewTopic(TOPIC, num_partitions=NPART, replication_factor=3,
                                      config={"min.insync.replicas": "2"})])[TOPIC].result(timeout=30)
        wait_for(lambda: len(partitions(c.bootstrap(1), TOPIC)) == NPART, 30, "topic in metadata")
        full_isr(c, TOPIC)

        producer = TimedProducer(c.bootstrap_all(), log_dir=c.base)
        producer.start()
        faults = []  # (victim, partitions it led, t_isolate, t_heal, t_recovered)
        victims: list[int] = []
        n_probes = 0  # probe values in the log beside the main producer's
        try:
            wait_for(lambda: len(producer.acked) > 1000, 60, "acknowledgements before the first fault")
            for kind, part, dur in schedule:
                view = view_from(c, victims[-1] if victims else 0)
                layout = partitions(view, TOPIC)
                if part is None:
                    candidates = sorted(p for p, (ldr, _, _) in layout.items() if ldr not in victims)
                    part = rng.choice(candidates) if candidates else 0
                victim = layout[part][0]
                led = sorted(p for p, (ldr, _, _) in layout.items() if ldr == victim)
                before = len(producer.acked)
                controller = c.active_controller()
                c.isolate(victim, client_reachable=client_reachable)
                t0 = time.monotonic()
                print(f"[chaos]   isolated node {victim} at {time.time():.3f}")
                other = view_from(c, victim)
                # The controller fences the isolated node; another in-sync replica leads its partitions.
                wait_for(
                    lambda: all(partitions(other, TOPIC)[p][0] not in (victim, -1) for p in led),
                    dur + 20, f"new leaders for {led} after isolating node {victim}",
                )
                t_elected = time.monotonic() - t0
                print(f"[chaos]   after {t_elected:.1f}s node {other} says (leader, replicas, isr): {partitions(other, TOPIC)}")
                # A fresh producer (not bootstrapped at the victim) writes to each partition the victim led.
                probes = {p: probe(other, p) for p in led}
                n_probes += sum(1 for r in probes.values() if r.startswith("ok"))
                print(f"[chaos]   probes at {time.monotonic() - t0:.1f}s: {probes}; "
                      f"main producer acks on {led} since isolation: {[sum(1 for x in producer.ack_times[p] if x > t0) for p in led]}")
                time.sleep(max(0.0, dur - (time.monotonic() - t0)))
                c.heal([victim])
                t_heal = time.monotonic()
                print(f"[chaos]   healed node {victim} at {time.time():.3f}")
                full_isr(c, TOPIC, timeout=60)
                wait_for(lambda: len(producer.acked) > before + 500, 60, "writes acknowledged after the heal")
                t_rec = time.monotonic()
                faults.append((victim, led, t0, t_heal, t_rec))
                victims.append(victim)
                print(f"[chaos] {kind} p{part}: node {victim} (led {led}; active controller before: {controller}) isolated {t_heal - t0:.1f}s, "
                      f"new leaders after {t_elected:.1f}s, ISR full {t_rec - t_heal:.1f}s after heal; "
                      f"acked {len(producer.acked)}, per partition since isolation "
                      f"{[sum(1 for x in producer.ack_times[p] if x > t0) for p in range(NPART)]}")
        finally:
            producer.finish()

        full_isr(c, TOPIC, timeout=60)
        acked = producer.acked
        got = [r for r in read_all(c.bootstrap(2), TOPIC, NPART, len(acked) + n_probes) if not r[2].startswith(b"probe-")]
        seen: dict[bytes, list[tuple[int, int]]] = {}
        for p, o, v in got:
            seen.setdefault(v, []).append((p, o))
        lost = [v for v in acked if v not in seen]
        dups = {v: at for v, at in seen.items() if len(at) > 1}
        moved = {v: (acked[v], seen[v]) for v in acked if v in seen and acked[v][1] is not None and seen[v][0] != acked[v]}
        # Per fault: the longest stretch without an acknowledgement on a partition the victim led,
        # from its isolation to the next fault's isolation (the last: to the end of the writes).
        # Same for the partitions it did not lead.
        t_end = producer.t_end
        windows = [(led, t0, faults[k + 1][2] if k + 1 < len(faults) else t_end) for k, (_, led, t0, _, _) in enumerate(faults)]

        def stall(p: int, start: float, end: float) -> float:
            ts = [start] + [t for t in producer.ack_times[p] if start < t < end] + [end]
            return max(b - a for a, b in zip(ts, ts[1:]))

        unavail = [max(stall(p, t0, end) for p in led) for (led, t0, end) in windows]
        unavail_other = [max([stall(p, t0, end) for p in range(NPART) if p not in led] or [0.0]) for (led, t0, end) in windows]
        print(
            f"[chaos] SUMMARY seed={seed} acked={len(acked)} failed={len(producer.failed)} read={len(got)} lost={len(lost)} "
            f"duplicates={len(dups)} moved={len(moved)} unavailable_s={[round(u, 1) for u in unavail]} "
            f"others_s={[round(u, 1) for u in unavail_other]} client_reachable={client_reachable} "
            f"victims={victims} producer_errors={len(producer.errors)}"
        )
        for t, e in producer.errors[:10]:
            print(f"[chaos]   producer error: {e}")
        assert len(victims) == 2 and victims[0] != victims[1], victims
        assert not producer.failed, producer.failed[:10]
        assert not lost, f"{len(lost)} acknowledged values lost, e.g. {lost[:5]}"
        assert not dups, f"duplicates: {list(dups.items())[:5]}"
        assert not moved, f"values at another offset than acknowledged: {list(moved.items())[:5]}"
        assert_replicas_identical(c, TOPIC, NPART)
        for i in c.nodes:
            assert "vtvchaos" not in c.nft_tables(i), f"rules left on node {i}"
