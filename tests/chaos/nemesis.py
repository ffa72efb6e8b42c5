"""Nemeses: the faults a chaos run injects into a NetnsCluster (issue 12).

Each nemesis is planned from a seeded ``random.Random`` (``plan``: its parameters, e.g. which node
to kill, which partition's leader to isolate), then started and stopped by the runner:

* ``start(cluster, rng)`` resolves what only the running cluster knows (the current leader of the
  planned partition, the active controller) and injects the fault; ``rng`` is the fault's own
  generator, used only to break ties among such runtime choices;
* ``stop(cluster)`` heals exactly what ``start`` did (restart, SIGCONT, delete its nft table or
  qdisc), so two nemeses on different nodes compose;
* ``describe()`` says what was done, to whom, with what mechanism.

``cluster.busy`` counts the faults acting on each node; runtime choices avoid busy nodes where
they can, so an overlapping pair acts on different nodes. ``NetnsCluster.heal_all`` undoes
anything left whatever made it.
"""

from __future__ import annotations

import random
import time
from typing import ClassVar

import netns

TOPIC_SETTLE_S = 60.0  # a rolling restart waits this long at most for a full ISR per node


# ----------------------------------------------------------------------------- cluster views
def _healthy_nodes(cluster: netns.NetnsCluster, exclude: set[int] = frozenset()) -> list[netns.Node]:
    return [
        n for i, n in sorted(cluster.nodes.items())
        if i not in exclude and n.is_running() and not n.paused and not cluster.busy.get(i)
    ]


def layout(cluster: netns.NetnsCluster, topic: str, exclude: set[int] = frozenset(),
           timeout: float = 5) -> dict[int, tuple[int, list[int], list[int]]]:
    """partition -> (leader, replicas, isr) as the first healthy node answers (not one under a
    fault: a cut-off node's metadata is stale). Empty if none answers."""
    from confluent_kafka.admin import AdminClient

    for node in _healthy_nodes(cluster, exclude) or [n for n in cluster.nodes.values() if n.is_running() and not n.paused]:
        try:
            admin = AdminClient({"bootstrap.servers": node.bootstrap, "broker.address.family": "v4",
                                 "log_level": 3, "socket.timeout.ms": int(timeout * 1000)})
            md = admin.list_topics(topic, timeout=timeout)
            t = md.topics.get(topic)
            if t is None or t.error is not None:
                continue
            return {p.id: (p.leader, list(p.replicas), list(p.isrs)) for p in t.partitions.values()}
        except Exception:
            continue
    return {}


def settled(cluster: netns.NetnsCluster, topics: list[str], timeout: float = 5) -> str | None:
    """None when every running node reports, for every partition of `topics`, a leader, the full
    ISR, and the same leader as the others; else what is not yet so."""
    from confluent_kafka.admin import AdminClient

    leaders: dict[tuple[str, int], set[int]] = {}
    for i, node in sorted(cluster.nodes.items()):
        if not node.is_running():
            return f"node {i} not running"
        admin = AdminClient({"bootstrap.servers": node.bootstrap, "broker.address.family": "v4",
                             "log_level": 3, "socket.timeout.ms": int(timeout * 1000)})
        for topic in topics:
            # One topic per request: an all-topics Metadata answer leaves internal topics out.
            try:
                t = admin.list_topics(topic, timeout=timeout).topics.get(topic)
            except Exception as exc:
                return f"node {i}: metadata: {exc}"
            if t is None or t.error is not None or not t.partitions:
                return f"node {i}: topic {topic} missing ({t.error if t else 'absent'})"
            for p in t.partitions.values():
                if p.leader < 0:
                    return f"node {i}: {topic}-{p.id} has no leader"
                if sorted(p.isrs) != sorted(p.replicas):
                    return f"node {i}: {topic}-{p.id} isr {sorted(p.isrs)} of {sorted(p.replicas)}"
                leaders.setdefault((topic, p.id), set()).add(p.leader)
    split = {k: v for k, v in leaders.items() if len(v) > 1}
    if split:
        return f"nodes disagree on leaders: {split}"
    return None


def wait_settled(cluster: netns.NetnsCluster, topics: list[str], timeout: float) -> tuple[bool, float, str | None]:
    t0 = time.monotonic()
    why = None
    while time.monotonic() - t0 < timeout:
        why = settled(cluster, topics)
        if why is None:
            return True, time.monotonic() - t0, None
        time.sleep(0.5)
    return False, time.monotonic() - t0, why


# ----------------------------------------------------------------------------- base
class Nemesis:
    kind: ClassVar[str] = ""
    # Acts on the whole cluster's connectivity or every node in turn: never overlapped.
    exclusive: ClassVar[bool] = False
    # Needs an acks=1 producer on its partition (the runner adds one).
    needs_acks1: ClassVar[bool] = False

    def __init__(self, fid: int, params: dict, topic: str):
        self.fid = fid
        self.params = dict(params)
        self.topic = topic
        self.nodes: list[int] = []
        self.detail = ""
        self.note = ""
        self.t_start: float | None = None
        self.t_end: float | None = None
        self._marked: list[int] = []

    # planning ---------------------------------------------------------------
    @classmethod
    def plan(cls, rng: random.Random, n_nodes: int, n_partitions: int, avoid: set[int]) -> dict:
        return {}

    def planned_nodes(self) -> set[int]:
        """Nodes the plan fixes (empty where the target is only known at run time)."""
        out = set()
        if "node" in self.params:
            out.add(self.params["node"])
        return out

    @property
    def tag(self) -> str:
        return f"f{self.fid}"

    # running ----------------------------------------------------------------
    def _mark(self, cluster: netns.NetnsCluster, nodes: list[int]) -> None:
        self.nodes = sorted(nodes)
        for i in nodes:
            cluster.busy[i] = cluster.busy.get(i, 0) + 1
        self._marked = list(nodes)

    def _unmark(self, cluster: netns.NetnsCluster) -> None:
        for i in self._marked:
            cluster.busy[i] = max(0, cluster.busy.get(i, 0) - 1)
        self._marked = []

    def _planned_node(self, cluster: netns.NetnsCluster, rng: random.Random) -> int:
        """The planned node, unless a fault that resolved its target at run time (the leader of a
        partition, the controller) already acts on it: then another free node, noted."""
        node = self.params["node"]
        busy = {i for i, k in cluster.busy.items() if k}
        if node in busy:
            free = [i for i in sorted(cluster.nodes) if i not in busy]
            if free:
                other = rng.choice(free)
                self.note = f"planned node {node} under another fault, took node {other}; "
                return other
        return node

    def start(self, cluster: netns.NetnsCluster, rng: random.Random) -> None:
        raise NotImplementedError

    def stop(self, cluster: netns.NetnsCluster) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.kind} {self.params}" + (f": {self.note}{self.detail}" if self.detail or self.note else "")

    def fault_op(self) -> dict:
        return {"op": "fault", "id": self.fid, "kind": self.kind, "nodes": list(self.nodes),
                "t_start": self.t_start, "t_end": self.t_end, "detail": self.describe()}


def _pick_node(rng: random.Random, n_nodes: int, avoid: set[int]) -> int:
    free = [i for i in range(1, n_nodes + 1) if i not in avoid]
    return rng.choice(free or list(range(1, n_nodes + 1)))


def _free_leader(cluster: netns.NetnsCluster, topic: str, want: int, rng: random.Random) -> tuple[int, int, str]:
    """(partition, its leader, note): the planned partition's leader unless that node is under
    another fault, then a partition led by a node that is not, then any free node."""
    lay = layout(cluster, topic)
    busy = {i for i, k in cluster.busy.items() if k}
    if want in lay and lay[want][0] > 0 and lay[want][0] not in busy:
        return want, lay[want][0], ""
    others = sorted(p for p, (ldr, _, _) in lay.items() if ldr > 0 and ldr not in busy)
    if others:
        p = rng.choice(others)
        return p, lay[p][0], f"leader of p{want} busy or unknown ({lay.get(want)}), took p{p}"
    node = _pick_node(rng, cluster.n, busy)
    return want, node, f"no free leader in {lay}, took node {node}"


class SingleNode(Nemesis):
    """A fault on one node chosen at planning time: the plan names the node (plus what
    `plan_params` adds), start takes it (or a free one, see `_planned_node`) and `inflict`s the
    fault, stop `heal`s it."""

    @classmethod
    def plan(cls, rng, n_nodes, n_partitions, avoid):
        return {"node": _pick_node(rng, n_nodes, avoid), **cls.plan_params(rng)}

    @classmethod
    def plan_params(cls, rng: random.Random) -> dict:
        return {}

    def start(self, cluster, rng):
        node = self._planned_node(cluster, rng)
        self.check_supported(cluster, node)
        self._mark(cluster, [node])
        self.inflict(cluster, node)

    def stop(self, cluster):
        for i in self.nodes:
            self.heal(cluster, i)
        self._unmark(cluster)

    def check_supported(self, cluster: netns.NetnsCluster, node: int) -> None:
        """Raises before anything is marked when this fault cannot be injected on `node`."""

    def inflict(self, cluster: netns.NetnsCluster, node: int) -> None:
        raise NotImplementedError

    def heal(self, cluster: netns.NetnsCluster, node: int) -> None:
        raise NotImplementedError


# ----------------------------------------------------------------------------- processes
class Kill(SingleNode):
    """kill -9, and at stop a restart on the same data directory."""
    kind = "kill"

    def inflict(self, cluster, node):
        cluster.nodes[node].kill()
        self.detail = f"SIGKILL node {node}"

    def heal(self, cluster, node):
        t = time.monotonic()
        cluster.nodes[node].restart(60)
        self.detail += f", restarted (listening after {time.monotonic() - t:.1f}s)"


class Pause(SingleNode):
    """SIGSTOP, SIGCONT at stop: the process keeps its sockets and wakes up with stale state."""
    kind = "pause"

    def inflict(self, cluster, node):
        cluster.nodes[node].pause()
        self.detail = f"SIGSTOP node {node}"

    def heal(self, cluster, node):
        cluster.nodes[node].resume()
        self.detail += ", SIGCONT"


class OnPartitionLeader(Nemesis):
    """A fault on whichever node leads the planned partition when it starts: the plan fixes
    only the partition."""

    @classmethod
    def plan(cls, rng, n_nodes, n_partitions, avoid):
        return {"partition": rng.randrange(n_partitions)}

    def planned_nodes(self):
        return set()


class KillLeaderAcks1(OnPartitionLeader):
    """kill -9 the leader of a partition an acks=1 producer writes to, after holding its
    followers back for a moment: what it acknowledged in that moment is on no other replica, and
    the next leader comes from the ISR without it — lost by design of acks=1, an expected loss.
    (Without the hold the followers are milliseconds behind and a kill rarely finds anything
    unfetched.) The hold is an nft drop between the leader and the other nodes, shorter than the
    broker session timeout, so the ISR is unchanged when the leader dies."""
    kind = "kill-leader-acks1"
    needs_acks1 = True
    HOLD_S = 0.6

    def start(self, cluster, rng):
        p, leader, note = _free_leader(cluster, self.topic, self.params["partition"], rng)
        self._mark(cluster, [leader])
        cluster.block(leader, self.tag, cluster.peer_addrs(leader))
        time.sleep(self.HOLD_S)
        cluster.nodes[leader].kill()
        cluster.nft_unload(leader, self.tag)
        self.detail = (f"node {leader}, leader of p{p} under the acks=1 producer, cut from its followers for "
                       f"{self.HOLD_S}s then SIGKILL" + (f" ({note})" if note else ""))

    def stop(self, cluster):
        for i in self.nodes:
            cluster.nodes[i].restart(60)
        self.detail += ", restarted"
        self._unmark(cluster)


def alter_topic(cluster: netns.NetnsCluster, topic: str, configs: dict[str, str], timeout: float = 20) -> None:
    """IncrementalAlterConfigs SET of topic settings, through any running node."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    boot = ",".join(n.bootstrap for n in cluster.nodes.values() if n.is_running() and not n.paused)
    admin = AdminClient({"bootstrap.servers": boot, "broker.address.family": "v4", "log_level": 3})
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in configs.items()]
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(timeout=timeout)


class UncleanElection(OnPartitionLeader):
    """What unclean leader election gives up, shown rather than claimed. The topic is switched to
    `min.insync.replicas=1` and `unclean.leader.election.enable=true` (back at stop); the
    followers' fetches to one partition leader's Kafka port are dropped until its ISR has shrunk
    to the leader alone (the controller's connections stay up, so the quorum and every broker's
    registration are untouched); acks=all writes are then acknowledged by that leader only;
    after `HOLD_S` the leader is killed, and once the controller fences it an out-of-sync
    follower becomes leader of each partition it led. What the dead leader acknowledged alone is
    on no other replica: an expected loss, reported as such for those partitions and that window
    (`expected_loss` in the fault op), and a loss anywhere else is still an anomaly. In a cluster
    of three nodes that are also the controller quorum this is the only way to it: with
    min.insync.replicas=2, losing both replicas that hold an acknowledged write takes two of the
    three controllers with them."""
    kind = "unclean-election"
    exclusive = True
    HOLD_S = 1.5
    WAIT_S = 25.0

    def _wait(self, cluster, what: str, pred) -> tuple[bool, dict]:
        deadline = time.monotonic() + self.WAIT_S
        lay: dict = {}
        while time.monotonic() < deadline:
            lay = layout(cluster, self.topic)
            if lay and pred(lay):
                return True, lay
            time.sleep(0.2)
        self.detail += f"; {what} not seen within {self.WAIT_S:.0f}s ({lay})"
        return False, lay

    def start(self, cluster, rng):
        # Every replica first holds everything acknowledged so far: whichever follower the
        # unclean election picks then lacks only what the leader acknowledged alone, inside the
        # window. (Right after an earlier fault a restarted follower may still be catching up;
        # elected, it would also lose writes acknowledged before the window: seed 6102.)
        ok, waited, why = wait_settled(cluster, [self.topic], TOPIC_SETTLE_S)
        if not ok:
            raise RuntimeError(f"ISR not full within {TOPIC_SETTLE_S:.0f}s before the fault: {why}")
        p, leader, note = _free_leader(cluster, self.topic, self.params["partition"], rng)
        self._mark(cluster, list(cluster.nodes))
        self.leader = leader
        self.expected_loss = {"partitions": [], "t_from": time.monotonic(), "t_to": None}
        alter_topic(cluster, self.topic, {"min.insync.replicas": "1", "unclean.leader.election.enable": "true"})
        peers = ", ".join(cluster.peer_addrs(leader))
        cluster.nft_load(leader, self.tag, [f"ip saddr {{ {peers} }} tcp dport {netns.KAFKA_PORT} drop"], [])
        t = time.monotonic()
        shrunk, _ = self._wait(cluster, f"ISR of p{p} shrunk to [{leader}]", lambda lay: lay.get(p, (0, [], []))[2] == [leader])
        self.detail = (f"ISR full after {waited:.1f}s; node {leader}, leader of p{p}" + (f" ({note})" if note else "")
                       + f": min.insync.replicas=1 + unclean election on; followers' fetches dropped, ISR "
                       + (f"[{leader}] after {time.monotonic() - t:.1f}s" if shrunk else "did not shrink") + self.detail)
        time.sleep(self.HOLD_S)
        lay = layout(cluster, self.topic)
        alone = sorted(q for q, (ldr, _, isr) in lay.items() if ldr == leader and isr == [leader])
        self.expected_loss["partitions"] = sorted(q for q, (ldr, _, _) in lay.items() if ldr == leader)
        cluster.nodes[leader].kill()
        self.expected_loss["t_to"] = time.monotonic() + 1.0  # acknowledgements already on the wire
        cluster.nft_unload(leader, self.tag)
        t = time.monotonic()
        led = self.expected_loss["partitions"]
        moved, lay = self._wait(cluster, "new leaders", lambda lay: all(lay.get(q, (leader,))[0] not in (-1, leader) for q in led))
        self.detail += (f"; SIGKILL after {self.HOLD_S}s with ISR [{leader}] on {alone} of the partitions it led {led}; "
                        + (f"new leaders {[lay[q][0] for q in led]} after {time.monotonic() - t:.1f}s" if moved else "no new leader"))

    def stop(self, cluster):
        t = time.monotonic()
        cluster.nodes[self.leader].restart(60)
        self.detail += f", node {self.leader} restarted (listening after {time.monotonic() - t:.1f}s)"
        alter_topic(cluster, self.topic, {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"})
        self.detail += ", topic settings restored"
        self._unmark(cluster)

    def fault_op(self) -> dict:
        op = super().fault_op()
        if getattr(self, "expected_loss", None):
            op["expected_loss"] = dict(self.expected_loss)
        return op


class RollingRestart(Nemesis):
    """SIGTERM every node in turn (controlled shutdown), each back and every ISR full before the
    next. Runs to completion inside start()."""
    kind = "rolling-restart"
    exclusive = True

    @classmethod
    def plan(cls, rng, n_nodes, n_partitions, avoid):
        order = list(range(1, n_nodes + 1))
        rng.shuffle(order)
        return {"order": order}

    def planned_nodes(self):
        return set(self.params["order"])

    def start(self, cluster, rng):
        self._mark(cluster, list(self.params["order"]))
        steps = []
        for i in self.params["order"]:
            took = cluster.nodes[i].terminate(30)
            t = time.monotonic()
            cluster.nodes[i].restart(60)
            up = time.monotonic() - t
            ok, waited, why = wait_settled(cluster, [self.topic], TOPIC_SETTLE_S)
            steps.append(f"node {i}: SIGTERM exit {took:.1f}s, up {up:.1f}s, ISR full {waited:.1f}s"
                         + ("" if ok else f" NOT SETTLED ({why})"))
            if not ok:
                raise RuntimeError(f"rolling restart: after node {i}: {why}")
        self.detail = "; ".join(steps)

    def stop(self, cluster):
        self._unmark(cluster)


# ----------------------------------------------------------------------------- network (nftables)
class IsolateLeader(Nemesis):
    """Cut the leader of a partition off from the other nodes (and sometimes the clients)."""
    kind = "isolate-leader"

    @classmethod
    def plan(cls, rng, n_nodes, n_partitions, avoid):
        return {"partition": rng.randrange(n_partitions), "client_reachable": rng.random() < 0.6}

    def planned_nodes(self):
        return set()

    def _target(self, cluster, rng) -> tuple[int, str]:
        p, leader, note = _free_leader(cluster, self.topic, self.params["partition"], rng)
        return leader, f"leader of p{p}" + (f" ({note})" if note else "")

    def start(self, cluster, rng):
        node, why = self._target(cluster, rng)
        self._mark(cluster, [node])
        addrs = cluster.peer_addrs(node)
        if not self.params["client_reachable"]:
            addrs.append(cluster.root_addr)
        cluster.block(node, self.tag, addrs)
        who = "other nodes" + ("" if self.params["client_reachable"] else " and clients")
        self.detail = f"node {node} ({why}) cut off from the {who} (nft drop both ways)"

    def stop(self, cluster):
        for i in self.nodes:
            cluster.nft_unload(i, self.tag)
        self._unmark(cluster)


class IsolateController(IsolateLeader):
    kind = "isolate-controller"

    @classmethod
    def plan(cls, rng, n_nodes, n_partitions, avoid):
        return {"client_reachable": rng.random() < 0.6}

    def _target(self, cluster, rng):
        ctl = cluster.active_controller()
        busy = {i for i, k in cluster.busy.items() if k}
        if ctl is not None and ctl not in busy:
            return ctl, "active controller"
        node = _pick_node(rng, cluster.n, busy)
        return node, f"active controller {ctl} busy or unknown, took node {node}"


class Split(Nemesis):
    """Majority | minority (3|2 of 5, 2|1 of 3): the minority's nodes drop the majority's."""
    kind = "split"
    exclusive = True

    @classmethod
    def plan(cls, rng, n_nodes, n_partitions, avoid):
        ids = list(range(1, n_nodes + 1))
        minority = sorted(rng.sample(ids, n_nodes // 2))
        return {"minority": minority, "client_reachable": rng.random() < 0.7}

    def start(self, cluster, rng):
        minority = self.params["minority"]
        majority = [i for i in cluster.nodes if i not in minority]
        self._mark(cluster, list(cluster.nodes))
        for i in minority:
            addrs = [cluster.addrs[j] for j in majority]
            if not self.params["client_reachable"]:
                addrs.append(cluster.root_addr)
            cluster.block(i, self.tag, addrs)
        self.nodes = sorted(minority)
        self.detail = f"minority {minority} | majority {majority}" + ("" if self.params["client_reachable"] else ", minority cut from clients")

    def stop(self, cluster):
        for i in self.params["minority"]:
            cluster.nft_unload(i, self.tag)
        self._unmark(cluster)


class Bridge(Nemesis):
    """Two sides that cannot see each other and one node that sees both."""
    kind = "bridge"
    exclusive = True

    @classmethod
    def plan(cls, rng, n_nodes, n_partitions, avoid):
        ids = list(range(1, n_nodes + 1))
        rng.shuffle(ids)
        bridge, rest = ids[0], ids[1:]
        half = len(rest) // 2
        return {"bridge": bridge, "sides": [sorted(rest[:half]), sorted(rest[half:])]}

    def start(self, cluster, rng):
        a, c = self.params["sides"]
        self._mark(cluster, list(cluster.nodes))
        for side, other in ((a, c), (c, a)):
            for i in side:
                cluster.block(i, self.tag, [cluster.addrs[j] for j in other])
        self.nodes = sorted(a + c)
        self.detail = f"{a} and {c} cannot see each other, node {self.params['bridge']} sees both"

    def stop(self, cluster):
        for i in self.params["sides"][0] + self.params["sides"][1]:
            cluster.nft_unload(i, self.tag)
        self._unmark(cluster)


class OneWay(SingleNode):
    """A node drops only what comes in from the other nodes, or only what it sends them."""
    kind = "one-way"

    @classmethod
    def plan_params(cls, rng):
        return {"direction": rng.choice(["in", "out"])}

    def inflict(self, cluster, node):
        d = self.params["direction"]
        cluster.block(node, self.tag, cluster.peer_addrs(node), incoming=d == "in", outgoing=d == "out")
        self.detail = f"node {node} drops {'incoming packets from' if d == 'in' else 'outgoing packets to'} the other nodes"

    def heal(self, cluster, node):
        cluster.nft_unload(node, self.tag)


class Disk(SingleNode):
    """A failing disk on one node (the broker's `faultfs`, built in with the `fault-injection`
    feature): EIO on writes, EIO on fsync, ENOSPC, or a crash that first cuts every file back to
    its last fsync (a power loss). The broker stops on a failed disk, as Kafka's does with its
    only log dir (`broker::disk`); at stop the disk works again and a stopped node is restarted
    on what the disk kept."""
    kind = "disk"
    MODES = ("eio-write", "eio-fsync", "enospc", "crash-unsynced")

    @classmethod
    def plan_params(cls, rng):
        return {"mode": rng.choice(cls.MODES)}

    def check_supported(self, cluster, node):
        if not cluster.nodes[node].disk_faults_supported():
            raise RuntimeError(
                "the broker under test has no disk fault injection: build it with "
                "`cargo build -p vltava-cli --features fault-injection`"
            )

    def inflict(self, cluster, node):
        cluster.nodes[node].set_disk_fault(self.params["mode"])
        self.detail = f"node {node}: disk {self.params['mode']}"

    def heal(self, cluster, node):
        n = cluster.nodes[node]
        n.set_disk_fault("none")
        code = n.proc.poll() if n.proc is not None else None
        if code is None:
            self.detail += ", broker still up (no write or fsync reached the disk)"
        else:
            self.detail += f", broker stopped (exit {code})"
            t = time.monotonic()
            n.restart(60)
            self.detail += f", restarted (listening after {time.monotonic() - t:.1f}s)"


# ----------------------------------------------------------------------------- network (loss, delay)
class Loss(SingleNode):
    """Random packet loss on a node's interface: tc netem where the kernel has it, else an
    nftables ``numgen random`` drop (both directions)."""
    kind = "loss"

    @classmethod
    def plan_params(cls, rng):
        return {"percent": rng.choice([5, 10, 20, 30, 50])}

    def inflict(self, cluster, node):
        pct = self.params["percent"]
        if netns.netem_available() is None:
            cluster.tc_qdisc(node, ["netem", "loss", f"{pct}%"])
            self.mech = "netem"
            self.detail = f"node {node}: netem loss {pct}% (egress)"
        else:
            cluster.random_loss(node, self.tag, pct)
            self.mech = "nft"
            self.detail = f"node {node}: nftables numgen drop of {pct}% in and out (no netem: {netns.netem_available()})"

    def heal(self, cluster, node):
        if getattr(self, "mech", "") == "netem":
            cluster.tc_clear(node)
        else:
            cluster.nft_unload(node, self.tag)


class Delay(SingleNode):
    """Delay on a node's egress: tc netem delay where the kernel has it; without netem a tbf
    rate limit, which delays by queueing (up to its latency bound, then drops) — a slow link
    rather than a fixed delay, and the description says so."""
    kind = "delay"

    @classmethod
    def plan_params(cls, rng):
        return {"ms": rng.choice([50, 100, 200, 400]), "kbit": rng.choice([256, 512, 1024])}

    def inflict(self, cluster, node):
        ms = self.params["ms"]
        if netns.netem_available() is None:
            cluster.tc_qdisc(node, ["netem", "delay", f"{ms}ms", f"{ms // 4}ms"])
            self.detail = f"node {node}: netem delay {ms}ms ±{ms // 4}ms (egress)"
        else:
            kbit = self.params["kbit"]
            cluster.tc_qdisc(node, ["tbf", "rate", f"{kbit}kbit", "burst", "16kb", "latency", f"{ms}ms"])
            self.detail = (f"node {node}: no netem ({netns.netem_available()}), tbf slow link {kbit} kbit/s with "
                           f"queueing up to {ms} ms, then drops (egress)")

    def heal(self, cluster, node):
        cluster.tc_clear(node)


NEMESES: dict[str, type[Nemesis]] = {
    cls.kind: cls
    for cls in (Kill, Pause, IsolateLeader, IsolateController, Split, Bridge, OneWay, Loss, Delay,
                RollingRestart, KillLeaderAcks1, Disk, UncleanElection)
}
KINDS = list(NEMESES)
# What a schedule draws from unless told otherwise: every kind that must lose nothing. The
# unclean election loses acknowledged writes by design, and while it runs the whole topic is on
# settings that allow that; it is run on its own (--nemesis unclean-election, test_expected_loss.py).
DEFAULT_KINDS = [k for k in KINDS if k != UncleanElection.kind]


def make(kind: str, fid: int, params: dict, topic: str) -> Nemesis:
    return NEMESES[kind](fid, params, topic)
