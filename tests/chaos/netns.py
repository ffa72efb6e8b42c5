"""A Vltava cluster in network namespaces, with an nftables partition nemesis (issue 12, step 1).

What one run creates (every name carries the pid of the process that created it):

* a bridge ``vtv-br-<pid>`` in the root namespace, with address ``10.<x>.<y>.1/24`` on it (the
  /24 is picked per run so it collides with no address or route on the machine);
* per node ``i``: a namespace ``vtv-<pid>-n<i>`` with loopback up and a veth pair whose root end
  ``vtv<pid>h<i>`` is on the bridge and whose other end (``eth0`` in the namespace) holds
  ``10.<x>.<y>.<10+i>/24``;
* a ``vltava serve`` per namespace (``ip netns exec``), listening on ``<addr>:9092`` (Kafka) and
  ``<addr>:9093`` (controller), data and logs under a temporary directory;
* while a node is isolated: an nftables table ``inet vtvchaos`` inside that node's namespace only.

Cleanup: ``NetnsCluster`` is a context manager; an atexit hook and SIGINT/SIGTERM handlers run the
same cleanup (kill the brokers, delete the nftables tables, the namespaces, the veths and the
bridge). ``sweep_stale()`` (run on every start) removes ``vtv-`` resources whose creating pid no
longer exists, after killing any process still inside such a namespace.

Needs root, ``ip`` (iproute2) with netns support and ``nft`` (nftables) for partitions.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "vltava"
KAFKA_PORT = 9092
CONTROLLER_PORT = 9093
NFT_TABLE = "vtvchaos"
GUARD_METRIC = "4093"  # marks the "unreachable" fallback route of a run's /24 (see _setup_network)

FAST_SETTINGS = {
    "broker.session.timeout.ms": 3000,
    "broker.heartbeat.interval.ms": 500,
    "group.initial.rebalance.delay.ms": 0,
    "group.min.session.timeout.ms": 1000,
}

NS_RE = re.compile(r"^vtv-(\d+)-(?:n\d+|probe|netem)$")
ACTIVE_RE = re.compile(r"this node is the active controller node=(\d+) term=(\d+)")
LINK_RE = re.compile(r"^(?:vtv-br-(\d+)|vtv(\d+)h\d+)$")


def vltava_bin() -> Path:
    return Path(os.environ.get("VLTAVA_BIN", str(DEFAULT_BIN))).resolve()


def run(cmd: list[str], check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


def unavailable_reason() -> str | None:
    """Why this harness cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) not found"
    probe = f"vtv-{os.getpid()}-probe"
    try:
        out = run(["ip", "netns", "add", probe], check=False)
        if out.returncode != 0:
            return f"`ip netns add` unavailable: {out.stderr.strip()}"
    finally:
        run(["ip", "netns", "del", probe], check=False)
    return None


def nft_available() -> str | None:
    """None if nft works, else the reason partitions cannot be made."""
    if shutil.which("nft") is None:
        return "`nft` (nftables) not found: apt-get install -y nftables"
    return None


_NETEM: list[str | None] = []


def netem_available() -> str | None:
    """None if `tc qdisc ... netem` works here, else why not. Probed once with a real qdisc on
    the loopback of a throwaway namespace (the tc binary may be there without the kernel module)."""
    if _NETEM:
        return _NETEM[0]
    reason = None
    if shutil.which("tc") is None:
        reason = "`tc` not found"
    else:
        probe = f"vtv-{os.getpid()}-netem"
        try:
            run(["ip", "netns", "add", probe])
            run(["ip", "netns", "exec", probe, "ip", "link", "set", "lo", "up"])
            out = run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"], check=False)
            if out.returncode != 0:
                reason = f"tc netem: {out.stderr.strip() or out.returncode}"
        except RuntimeError as exc:
            reason = str(exc)
        finally:
            run(["ip", "netns", "del", probe], check=False)
    _NETEM.append(reason)
    return reason


def _is_stopped(pid: int | None) -> bool:
    try:
        return pid is not None and Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "T"
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def sweep_stale() -> list[str]:
    """Remove vtv- namespaces and links whose creating pid is gone. Returns what was removed."""
    removed = []
    for line in run(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NS_RE.match(name)
        if not m or pid_alive(int(m.group(1))):
            continue
        for p in run(["ip", "netns", "pids", name], check=False).stdout.split():
            try:
                os.kill(int(p), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        run(["ip", "netns", "del", name], check=False)
        removed.append(f"netns {name}")
    for line in run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        m = LINK_RE.match(name)
        if not m:
            continue
        pid = int(m.group(1) or m.group(2))
        if pid_alive(pid):
            continue
        run(["ip", "link", "del", name], check=False)
        removed.append(f"link {name}")
    # Fallback routes whose bridge is gone (no live vtv bridge holds an address in that /24).
    bridges = set()
    for line in run(["ip", "-4", "-o", "addr", "show"], check=False).stdout.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[1].startswith("vtv-br-"):
            try:
                bridges.add(ipaddress.ip_interface(parts[3]).network)
            except ValueError:
                pass
    for line in run(["ip", "-4", "route", "show", "type", "unreachable"], check=False).stdout.splitlines():
        parts = line.split()
        if "metric" in parts and parts[parts.index("metric") + 1] == GUARD_METRIC and len(parts) > 1:
            try:
                net = ipaddress.ip_network(parts[1])
            except ValueError:
                continue
            if net not in bridges:
                run(["ip", "route", "del", "unreachable", str(net), "metric", GUARD_METRIC], check=False)
                removed.append(f"route unreachable {net}")
    for d in Path(tempfile.gettempdir()).glob("vtv-chaos-*-*"):
        m = re.match(r"^vtv-chaos-(\d+)-", d.name)
        if m and d.is_dir() and not pid_alive(int(m.group(1))) and not (d / "KEEP").exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(f"dir {d}")
    return removed


def pick_subnet(seed: int) -> ipaddress.IPv4Network:
    """A 10.x.y.0/24 that overlaps no address or route on this machine."""
    used = []
    for cmd in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        for tok in run(cmd, check=False).stdout.split():
            try:
                if "/" in tok or tok.count(".") == 3:
                    used.append(ipaddress.ip_network(tok, strict=False))
            except ValueError:
                pass
    rng = random.Random(seed)
    for _ in range(1000):
        net = ipaddress.ip_network(f"10.{rng.randrange(100, 250)}.{rng.randrange(1, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free 10.x.y.0/24 found")


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Node:
    """One broker in its namespace. Duck-compatible with tests/e2e's Broker where the replication
    helpers need it (bootstrap, data_dir, is_running, stderr_tail, pid)."""

    def __init__(self, cluster: "NetnsCluster", node_id: int, addr: str, workdir: Path, settings: dict):
        self.cluster = cluster
        self.id = node_id
        self.addr = addr
        self.ns = f"vtv-{cluster.owner}-n{node_id}"
        self.host_veth = f"vtv{cluster.owner}h{node_id}"
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._log = None
        self.isolated = False
        self.paused = False

    @property
    def bootstrap(self) -> str:
        return f"{self.addr}:{KAFKA_PORT}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = [
            "ip", "netns", "exec", self.ns,
            str(vltava_bin()), "serve",
            "--listen", self.bootstrap,
            "--controller-listen", f"{self.addr}:{CONTROLLER_PORT}",
            "--node-id", str(self.id),
            "--controller-quorum-voters", self.cluster.voters,
            "--data-dir", str(self.data_dir),
        ]
        for k, v in self.settings.items():
            cmd += ["--set", f"{k}={'true' if v is True else 'false' if v is False else v}"]
        return cmd

    def spawn(self) -> None:
        assert not self.is_running()
        self.starts += 1
        self._log = open(self.workdir / f"stderr-{self.starts:02d}.log", "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLTAVA_")}
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        # The broker's failing disk (vltava-storage `faultfs`, in builds with the
        # `fault-injection` feature), driven by writing a word to this file; a start always
        # begins with a working disk.
        self.disk_fault_file.write_text("none\n")
        env["VLTAVA_DISK_FAULT_FILE"] = str(self.disk_fault_file)
        # `ip netns exec` execs the broker after setns: the pid is the broker's own.
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            env=env, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.id} exited with {self.proc.returncode}:\n{self.stderr_tail()}")
            if port_accepts(self.addr, KAFKA_PORT):
                return
            time.sleep(0.05)
        raise RuntimeError(f"node {self.id} not accepting on {self.bootstrap} within {timeout:.0f}s:\n{self.stderr_tail()}")

    def kill(self) -> None:
        """SIGKILL (kill -9); the data directory stays for a restart."""
        self.paused = False
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)  # a paused process still dies, but be sure
                self.proc.kill()
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def disk_fault_file(self) -> Path:
        return self.workdir / "disk-fault"

    def set_disk_fault(self, mode: str) -> None:
        """`none`, `eio-write`, `eio-fsync`, `enospc` or `crash-unsynced` (see faultfs)."""
        self.disk_fault_file.write_text(mode + "\n")

    def disk_faults_supported(self) -> bool:
        """Whether the running broker watches its disk-fault file: it says so at start."""
        logs = self.log_paths()
        return bool(logs) and "disk fault injection is on" in logs[-1].read_text(errors="replace")

    def restart(self, timeout: float = 60) -> None:
        """Start again on the same data directory (after a kill or a SIGTERM)."""
        if self.is_running():
            return
        if self._log is not None:
            self._log.close()
            self._log = None
        self.spawn()
        self.wait_ready(timeout)

    def pause(self) -> None:
        if self.is_running():
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def terminate(self, timeout: float = 30) -> float:
        """SIGTERM (the broker's controlled shutdown) and wait for the exit; SIGKILL after
        `timeout`. Returns how long the shutdown took."""
        t0 = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return time.monotonic() - t0

    def log_paths(self) -> list[Path]:
        return sorted(self.workdir.glob("stderr-*.log"))

    def stderr_tail(self, limit: int = 6000) -> str:
        text = "\n".join(
            f"--- {p.name} ---\n" + p.read_text(errors="replace") for p in sorted(self.workdir.glob("stderr-*.log"))
        )
        return text[-limit:]

    def nsexec(self, cmd: list[str], check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        full = ["ip", "netns", "exec", self.ns, *cmd]
        out = subprocess.run(full, capture_output=True, text=True, timeout=20, input=stdin)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(full)} failed ({out.returncode}): {out.stderr.strip()}")
        return out


class NetnsCluster:
    """N brokers, one per network namespace, on one bridge. Use as a context manager."""

    _live: list["NetnsCluster"] = []
    _handlers_installed = False

    def __init__(self, n: int = 3, settings: dict | None = None, seed: int | None = None, keep_dir: bool = False):
        self.n = n
        self.owner = os.getpid()
        self.bridge = f"vtv-br-{self.owner}"
        self.subnet = pick_subnet(seed if seed is not None else self.owner * 7919 + int(time.time()))
        hosts = list(self.subnet.hosts())
        self.root_addr = str(hosts[0])  # .1
        self.addrs = {i: str(hosts[9 + i]) for i in range(1, n + 1)}  # .11, .12, ...
        self.voters = ",".join(f"{i}@{a}:{CONTROLLER_PORT}" for i, a in self.addrs.items())
        self.base = Path(tempfile.mkdtemp(prefix=f"vtv-chaos-{self.owner}-"))
        self.keep_dir = keep_dir
        self.settings = {**FAST_SETTINGS, **(settings or {})}
        self.nodes: dict[int, Node] = {
            i: Node(self, i, a, self.base / f"node{i}", dict(self.settings)) for i, a in self.addrs.items()
        }
        self.busy: dict[int, int] = {}  # node -> how many running faults act on it (nemesis.py)
        self._created_ns: list[str] = []
        self._created_links: list[str] = []
        self._guard_route = False
        self._closed = False

    # ------------------------------------------------------------------ network
    def _setup_network(self) -> None:
        # A fallback route for the run's /24 that answers "unreachable" locally: should the bridge
        # vanish under a live run (deleted by hand, or by another process's sweep), the clients'
        # packets to the nodes' addresses stop here instead of following the default route.
        run(["ip", "route", "add", "unreachable", str(self.subnet), "metric", GUARD_METRIC])
        self._guard_route = True
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._created_links.append(self.bridge)
        run(["ip", "addr", "add", f"{self.root_addr}/{self.subnet.prefixlen}", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        for i, node in self.nodes.items():
            run(["ip", "netns", "add", node.ns])
            self._created_ns.append(node.ns)
            peer = f"vtv{self.owner}p{i}"
            run(["ip", "link", "add", node.host_veth, "type", "veth", "peer", "name", peer])
            self._created_links.append(node.host_veth)
            run(["ip", "link", "set", peer, "netns", node.ns])
            run(["ip", "link", "set", node.host_veth, "master", self.bridge])
            run(["ip", "link", "set", node.host_veth, "up"])
            node.nsexec(["ip", "link", "set", "lo", "up"])
            node.nsexec(["ip", "link", "set", peer, "name", "eth0"])
            node.nsexec(["ip", "addr", "add", f"{node.addr}/{self.subnet.prefixlen}", "dev", "eth0"])
            node.nsexec(["ip", "link", "set", "eth0", "up"])

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 60) -> "NetnsCluster":
        self._install_cleanup_hooks()
        NetnsCluster._live.append(self)
        sweep_stale()
        self._setup_network()
        # All at once: a node's start waits for a quorum, which needs the others.
        for node in self.nodes.values():
            node.spawn()
        for node in self.nodes.values():
            node.wait_ready(timeout)
        return self

    def __enter__(self) -> "NetnsCluster":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.keep_dir = True
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for node in self.nodes.values():
            node.kill()
        for ns in self._created_ns:
            # The table lives in the namespace: deleting the namespace deletes it; be explicit anyway.
            run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", NFT_TABLE], check=False)
            for p in run(["ip", "netns", "pids", ns], check=False).stdout.split():
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run(["ip", "netns", "del", ns], check=False)
        for link in reversed(self._created_links):
            if run(["ip", "link", "show", link], check=False).returncode == 0:
                run(["ip", "link", "del", link], check=False)
        if self._guard_route:
            run(["ip", "route", "del", "unreachable", str(self.subnet), "metric", GUARD_METRIC], check=False)
            self._guard_route = False
        if self in NetnsCluster._live:
            NetnsCluster._live.remove(self)
        if self.keep_dir:
            (self.base / "KEEP").touch()  # the stale sweep leaves a failed run's logs alone
            print(f"[netns] kept data and logs in {self.base} (delete it by hand)")
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    @classmethod
    def _close_all(cls) -> None:
        for c in list(cls._live):
            try:
                c.close()
            except Exception:
                pass

    @classmethod
    def _install_cleanup_hooks(cls) -> None:
        if cls._handlers_installed:
            return
        cls._handlers_installed = True
        atexit.register(cls._close_all)
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)

            def handler(signum, frame, previous=previous):
                cls._close_all()
                if callable(previous):
                    previous(signum, frame)
                elif previous == signal.SIG_DFL:
                    signal.signal(signum, signal.SIG_DFL)
                    os.kill(os.getpid(), signum)

            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass

    # ------------------------------------------------------------------ nemesis
    def isolate(self, node_id: int, client_reachable: bool = True) -> None:
        """Drop every packet between node `node_id`'s namespace and the other nodes (and the root
        namespace's clients too unless `client_reachable`). Rules only in that namespace."""
        reason = nft_available()
        if reason:
            raise RuntimeError(reason)
        node = self.nodes[node_id]
        peers = [a for i, a in self.addrs.items() if i != node_id]
        if not client_reachable:
            peers.append(self.root_addr)
        s = ", ".join(peers)
        ruleset = (
            f"table inet {NFT_TABLE} {{\n"
            f"  chain input {{ type filter hook input priority -10; policy accept; ip saddr {{ {s} }} drop; }}\n"
            f"  chain output {{ type filter hook output priority -10; policy accept; ip daddr {{ {s} }} drop; }}\n"
            f"}}\n"
        )
        node.nsexec(["nft", "-f", "-"], stdin=ruleset)
        node.isolated = True

    def heal(self, node_ids: Iterable[int] | None = None) -> None:
        """Remove the partition rules (from every node, or the given ones)."""
        for i in node_ids if node_ids is not None else self.nodes:
            node = self.nodes[i]
            node.nsexec(["nft", "delete", "table", "inet", NFT_TABLE], check=False)
            node.isolated = False

    # Every nemesis loads its rules into a table of its own (``vtvchaos_<tag>``) in the namespace
    # of the node it acts on, so two faults on one node, or on two, never edit each other's rules
    # and healing one is deleting its table.
    def nft_table_name(self, tag: str) -> str:
        if not re.fullmatch(r"[a-z0-9_]+", tag):
            raise ValueError(f"bad nft tag {tag!r}")
        return f"{NFT_TABLE}_{tag}"

    def nft_load(self, node_id: int, tag: str, input_rules: list[str], output_rules: list[str]) -> str:
        """Load a table with an input and an output chain holding these rules (one per line)."""
        reason = nft_available()
        if reason:
            raise RuntimeError(reason)
        name = self.nft_table_name(tag)
        chains = []
        for chain, hook, rules in (("input", "input", input_rules), ("output", "output", output_rules)):
            body = "".join(f"    {r}\n" for r in rules)
            chains.append(f"  chain {chain} {{\n    type filter hook {hook} priority -10; policy accept;\n{body}  }}\n")
        ruleset = f"table inet {name} {{\n{''.join(chains)}}}\n"
        node = self.nodes[node_id]
        node.nsexec(["nft", "delete", "table", "inet", name], check=False)
        node.nsexec(["nft", "-f", "-"], stdin=ruleset)
        return name

    def nft_unload(self, node_id: int, tag: str) -> None:
        self.nodes[node_id].nsexec(["nft", "delete", "table", "inet", self.nft_table_name(tag)], check=False)

    def peer_addrs(self, node_id: int, among: Iterable[int] | None = None) -> list[str]:
        ids = among if among is not None else self.nodes
        return [self.addrs[i] for i in ids if i != node_id]

    def block(self, node_id: int, tag: str, addrs: list[str], incoming: bool = True, outgoing: bool = True) -> None:
        """Drop, in node `node_id`'s namespace, packets from (`incoming`) and to (`outgoing`) `addrs`."""
        s = ", ".join(addrs)
        self.nft_load(
            node_id, tag,
            [f"ip saddr {{ {s} }} drop"] if incoming else [],
            [f"ip daddr {{ {s} }} drop"] if outgoing else [],
        )

    def random_loss(self, node_id: int, tag: str, percent: int) -> None:
        """Drop `percent`% of the packets the node sends and receives on eth0, at random (nftables
        numgen: the fallback where the kernel has no netem)."""
        rule = f'iifname "eth0" numgen random mod 100 < {int(percent)} drop'
        self.nft_load(node_id, tag, [rule], [rule.replace("iifname", "oifname")])

    def tc_qdisc(self, node_id: int, spec: list[str]) -> None:
        """Replace the root qdisc of the node's eth0 (its egress), e.g. ``["netem", "delay", "100ms"]``."""
        self.nodes[node_id].nsexec(["tc", "qdisc", "replace", "dev", "eth0", "root", *spec])

    def tc_clear(self, node_id: int) -> None:
        self.nodes[node_id].nsexec(["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)

    def chaos_tables(self, node_id: int) -> list[str]:
        out = self.nodes[node_id].nsexec(["nft", "list", "tables"], check=False).stdout
        return [line.split()[-1] for line in out.splitlines() if line.split() and line.split()[-1].startswith(NFT_TABLE)]

    def qdiscs(self, node_id: int) -> str:
        return self.nodes[node_id].nsexec(["tc", "qdisc", "show", "dev", "eth0"], check=False).stdout.strip()

    def heal_all(self, restart_timeout: float = 60) -> list[str]:
        """Undo every fault whatever made it: SIGCONT to every process, delete every chaos nft
        table and any root qdisc, restart every node that is not running. Returns what it did."""
        done = []
        for i, node in self.nodes.items():
            if node.paused or (node.is_running() and _is_stopped(node.pid)):
                node.resume()
                done.append(f"SIGCONT node {i}")
            if shutil.which("nft"):
                for t in self.chaos_tables(i):
                    node.nsexec(["nft", "delete", "table", "inet", t], check=False)
                    done.append(f"nft table {t} deleted on node {i}")
            node.isolated = False
            if node.disk_fault_file.exists() and node.disk_fault_file.read_text().strip() not in ("", "none"):
                node.set_disk_fault("none")
                done.append(f"disk of node {i} working again")
            if shutil.which("tc") and re.search(r"qdisc (netem|tbf|htb)", self.qdiscs(i)):
                self.tc_clear(i)
                done.append(f"qdisc removed on node {i}")
        down = [node for node in self.nodes.values() if not node.is_running()]
        for node in down:  # all first: a restarting node may need the others for a quorum
            node.spawn()
            done.append(f"node {node.id} restarted")
        for node in down:
            node.wait_ready(restart_timeout)
        return done

    def active_controller(self) -> int | None:
        """The node that last logged becoming the active controller (highest term), or None."""
        best = (None, -1)
        for i, node in self.nodes.items():
            for m in ACTIVE_RE.finditer(node.stderr_tail(limit=10**8)):
                if int(m.group(2)) > best[1]:
                    best = (int(m.group(1)), int(m.group(2)))
        return best[0]

    def nft_tables(self, node_id: int) -> str:
        return self.nodes[node_id].nsexec(["nft", "list", "tables"], check=False).stdout

    def bootstrap_all(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes.values())

    def bootstrap(self, i: int) -> str:
        return self.nodes[i].bootstrap
