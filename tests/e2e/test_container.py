"""The container image (Containerfile, built by scripts/image) and the 3-node compose file
(deploy/compose.yaml), run by a real container runtime: podman with runc.

The image is built from the binary under test ($VLTAVA_BIN, no second build): that binary plus
the shared libraries ldd lists for it, FROM scratch. Containers use host networking (a broker's
advertised listener must be reachable from the host, and in the cluster from the other nodes),
on ports free_port() picks, and are started with an explicit runtime and limits: on these
machines podman's default crun and its default limits are refused.

Skipped, with the reason, where podman, runc (or for the compose test a podman-compose >= 1.4)
is missing or podman cannot run a container. Every container, volume, pod and the image are
removed at the end, also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, free_port, vltava_bin
from e2e_util import (
    admin_client,
    assert_all_delivered,
    assert_contiguous,
    assert_matches_deliveries,
    consume_confluent,
    gen_records,
    kcat_consume_all,
    produce_confluent,
    run_kcat,
    topic_partition_counts,
    wait_for,
)

RUN_ID = f"vltava-e2e-{os.getpid()}"
IMAGE = f"localhost/{RUN_ID}:test"
LABEL = f"vltava.e2e={RUN_ID}"
PODMAN = ["podman", "--runtime", "runc"]
MIN_PODMAN_COMPOSE = (1, 4)


def _ulimits() -> list[str]:
    """--ulimit flags within what this process may grant (a container cannot get a hard limit above
    its parent's: runc fails with 'error setting rlimit ... operation not permitted')."""
    args = []
    for name, res, want in (("nofile", resource.RLIMIT_NOFILE, 65536), ("nproc", resource.RLIMIT_NPROC, 4096)):
        hard = resource.getrlimit(res)[1]
        n = want if hard == resource.RLIM_INFINITY else min(want, hard)
        args += ["--ulimit", f"{name}={n}:{n}"]
    return args


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _quiet(*args: str) -> None:
    """Best-effort cleanup step: never raises."""
    try:
        subprocess.run([*PODMAN, *args], capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    except Exception:
        pass


def _no_runtime_reason() -> str | None:
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/test installs podman and runc with apt-get)"
    try:
        proc = subprocess.run([*PODMAN, "info"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"podman info failed: {e}"
    if proc.returncode != 0:
        return f"podman does not work here: {proc.stderr.strip()[-500:]}"
    return None


@pytest.fixture(scope="module")
def image():
    """The image built from $VLTAVA_BIN by scripts/image; removed afterwards with everything the
    tests labelled."""
    reason = _no_runtime_reason()
    if reason:
        pytest.skip(reason)
    binary = vltava_bin()
    assert binary.exists(), f"no broker binary at {binary}"
    try:
        build = subprocess.run(
            [str(REPO_ROOT / "scripts" / "image"), "--binary", str(binary), "--tag", IMAGE, "--engine", "podman"],
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert (
            build.returncode == 0
        ), f"scripts/image failed ({build.returncode}):\n{build.stdout[-2000:]}\n{build.stderr[-3000:]}"
        # Can this runtime start a container at all? Failures of the runtime itself (podman's
        # 125, the OCI runtime's 126, e.g. namespaces or limits refused) skip; anything else,
        # such as a library missing from the image, fails.
        probe = podman(
            "run",
            "--rm",
            "--network",
            "host",
            *_ulimits(),
            "--entrypoint",
            "/usr/local/bin/vltava",
            IMAGE,
            "--version",
            check=False,
        )
        if probe.returncode in (125, 126) and re.search(r"OCI|runc|namespace|cgroup|permission", probe.stderr):
            pytest.skip(f"podman cannot run containers here: {probe.stderr.strip()[-500:]}")
        assert probe.returncode == 0 and probe.stdout.startswith(
            "vltava "
        ), f"the image does not run vltava --version ({probe.returncode}): {probe.stdout!r} {probe.stderr[-2000:]}"
        yield IMAGE
    finally:
        for cid in podman("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split():
            _quiet("rm", "-f", "-v", "-t", "0", cid)
        for vol in podman("volume", "ls", "-q", "--filter", f"label={LABEL}", check=False).stdout.split():
            _quiet("volume", "rm", "-f", vol)
        _quiet("rmi", "-f", IMAGE)


def http_ready(port: int) -> bool:
    """True when the broker's /health/ready on 127.0.0.1:`port` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=3) as r:
            return r.status == 200 and r.read() == b"ready\n"
    except (urllib.error.URLError, OSError):
        return False


class Container:
    """One `podman run -d` of the image with host networking."""

    def __init__(self, image: str, name: str, env: dict[str, str], volume: str):
        self.image, self.name, self.env, self.volume = image, name, env, volume

    def run(self) -> Container:
        env_args = [a for k, v in self.env.items() for a in ("-e", f"{k}={v}")]
        podman(
            "run", "-d", "--name", self.name, "--label", LABEL, "--network", "host", *_ulimits(),
            "-v", f"{self.volume}:/var/lib/vltava", *env_args, self.image,
        )  # fmt: skip
        return self

    def logs(self) -> str:
        proc = podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def inspect(self) -> dict:
        return json.loads(podman("inspect", self.name).stdout)[0]

    def wait_serving(self, bootstrap: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            state = self.inspect()["State"]
            if state["Status"] != "running":  # a broker that exited will not come up: fail now
                raise AssertionError(f"container {self.name} is {state['Status']} ({state['ExitCode']}):\n{self.logs()[-3000:]}")
            try:
                if admin_client(bootstrap).list_topics(timeout=2).brokers:
                    return
            except Exception as e:
                last = e
            time.sleep(0.2)
        raise AssertionError(f"container {self.name} not answering Metadata on {bootstrap} after {timeout}s: {last!r}")

    def remove(self) -> None:
        _quiet("rm", "-f", "-v", "-t", "0", self.name)


def test_image_single_broker_survives_restart_on_its_volume(image):
    t0 = time.monotonic()
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    # FROM scratch with the binary and its libraries: small, unprivileged, no shell
    assert size < 120_000_000, f"image is {size / 1e6:.0f} MB"
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/usr/local/bin/vltava", "serve"]
    assert "/var/lib/vltava" in config.get("Volumes", {})
    # HTTP (health, /metrics) on every interface of the container's network, port 8092
    assert "VLTAVA_HTTP_LISTEN=0.0.0.0:8092" in config.get("Env", []), config.get("Env")
    assert "8092/tcp" in config.get("ExposedPorts", {}), config.get("ExposedPorts")
    no_shell = podman(
        "run", "--rm", "--network", "host", *_ulimits(), "--entrypoint", "/bin/sh", image, "-c", "true", check=False
    )
    assert no_shell.returncode != 0, "the image has a /bin/sh"

    port = free_port()
    http_port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    volume = f"{RUN_ID}-data"
    podman("volume", "create", "--label", LABEL, volume)
    env = {
        # the image's defaults are 0.0.0.0:9092 / 127.0.0.1:9092; every setting is an environment variable
        "VLTAVA_LISTEN": f"127.0.0.1:{port}",
        "VLTAVA_ADVERTISED_LISTENER": f"localhost:{port}",
        "VLTAVA_NUM_PARTITIONS": "3",
        "VLTAVA_BOOTSTRAP": bootstrap,  # for the image's health check (a client command's variable)
        # host networking: the image's 0.0.0.0:8092 may be taken on this host
        "VLTAVA_HTTP_LISTEN": f"127.0.0.1:{http_port}",
    }
    first = Container(image, f"{RUN_ID}-one", env, volume).run()
    try:
        first.wait_serving(bootstrap)
        md = admin_client(bootstrap).list_topics(timeout=10)
        assert {(b.id, b.host, b.port) for b in md.brokers.values()} == {(1, "localhost", port)}, "advertised listener"
        hc = podman("healthcheck", "run", first.name, check=False)
        assert hc.returncode == 0, f"health check: {hc.stdout} {hc.stderr[-1000:]}"
        wait_for(lambda: http_ready(http_port), 30, f"/health/ready on the container's HTTP port {http_port}")

        # kcat first: its produce auto-creates the topic with VLTAVA_NUM_PARTITIONS partitions
        topic = "container-records"
        lines = [f"k{i % 7}:kcat-{i}" for i in range(300)]
        proc = run_kcat(
            ["-b", bootstrap, "-P", "-t", topic, "-K", ":", "-X", "broker.address.family=v4", "-X", "acks=all"],
            input=("\n".join(lines) + "\n").encode(),
        )
        assert proc.returncode == 0, f"kcat -P failed: {proc.stderr.decode(errors='replace')[-2000:]}"
        assert topic_partition_counts(bootstrap).get(topic) == 3
        records = gen_records(1500, seed=16)
        results = produce_confluent(bootstrap, topic, records)
        assert_all_delivered(results)

        before = sorted(consume_confluent(bootstrap, topic, range(3), expected=1800), key=lambda g: (g.partition, g.offset))
        assert len(before) == 1800
        assert_contiguous(before, range(3))
        confluent_part = [g for g in before if (g.partition, g.offset) in {(p, o) for _, p, o in results}]
        assert_matches_deliveries(records, results, confluent_part)
        assert sorted(g.value.decode() for g in before if g.value and g.value.startswith(b"kcat-")) == sorted(
            line.split(":", 1)[1] for line in lines
        )
        by_kcat = sorted(kcat_consume_all(bootstrap, topic), key=lambda g: (g.partition, g.offset))
        assert [(g.partition, g.offset, g.key, g.value) for g in by_kcat] == [
            (g.partition, g.offset, g.key, g.value) for g in before
        ]

        # SIGTERM from the runtime: a clean shutdown, well before podman would resort to SIGKILL
        t_stop = time.monotonic()
        podman("stop", "-t", "30", first.name)
        stop_s = time.monotonic() - t_stop
        state = first.inspect()["State"]
        logs = first.logs()
        assert state["ExitCode"] == 0, f"exit code {state['ExitCode']} after podman stop:\n{logs[-3000:]}"
        assert stop_s < 25, f"podman stop took {stop_s:.1f}s"
        assert "vltava broker stopped cleanly" in logs, logs[-3000:]
        assert " ERROR " not in logs, [line for line in logs.splitlines() if " ERROR " in line][:5]
        mountpoint = Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())
        if os.access(mountpoint, os.R_OK):
            assert (mountpoint / ".kafka_cleanshutdown").exists(), "no clean-shutdown marker in the volume"
    finally:
        first.remove()

    # a new container on the same volume has every record
    second = Container(image, f"{RUN_ID}-two", env, volume).run()
    try:
        second.wait_serving(bootstrap)
        after = sorted(consume_confluent(bootstrap, topic, range(3), expected=1800), key=lambda g: (g.partition, g.offset))
        assert [(g.partition, g.offset, g.key, g.value, g.headers) for g in after] == [
            (g.partition, g.offset, g.key, g.value, g.headers) for g in before
        ]
        by_kcat = sorted(kcat_consume_all(bootstrap, topic), key=lambda g: (g.partition, g.offset))
        assert [(g.partition, g.offset, g.key, g.value) for g in by_kcat] == [
            (g.partition, g.offset, g.key, g.value) for g in before
        ]
        podman("stop", "-t", "30", second.name)
        assert second.inspect()["State"]["ExitCode"] == 0, second.logs()[-3000:]
    finally:
        second.remove()
    print(f"image {size / 1e6:.1f} MB; single-container test {time.monotonic() - t0:.1f}s")


def _podman_compose() -> tuple[str, tuple[int, ...]] | None:
    """podman-compose of the tests' venv (scripts/test installs it there), else one on PATH."""
    beside = Path(sys.executable).parent / "podman-compose"
    path = str(beside) if beside.exists() else shutil.which("podman-compose")
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL).stdout
    m = re.search(r"podman-compose(?:r)? version:?\s+(\d+)\.(\d+)", out)
    return path, tuple(int(x) for x in m.groups()) if m else (0, 0)


def test_compose_three_node_cluster(image):
    found = _podman_compose()
    if found is None:
        pytest.skip("podman-compose is not installed (scripts/test installs it into .venv)")
    compose_bin, version = found
    if version < MIN_PODMAN_COMPOSE:
        pytest.skip(
            f"podman-compose {'.'.join(map(str, version))} at {compose_bin} cannot run deploy/compose.yaml"
            " (it adds a bridge network to host-networked containers and runs CMD health checks through /bin/sh);"
            " >= 1.4 can (scripts/test installs it into .venv)"
        )
    t0 = time.monotonic()
    project = f"{RUN_ID}-compose"
    env = dict(os.environ, VLTAVA_IMAGE=image)
    ports = {}
    http_ports: dict[int, int] = {}
    for n in (1, 2, 3):
        ports[n] = free_port()
        env[f"VLTAVA_NODE{n}_PORT"] = str(ports[n])
        env[f"VLTAVA_NODE{n}_CONTROLLER_PORT"] = str(free_port())
        http_ports[n] = free_port()
        env[f"VLTAVA_NODE{n}_HTTP_PORT"] = str(http_ports[n])
    base = [
        compose_bin, "-p", project, "-f", str(REPO_ROOT / "deploy" / "compose.yaml"),
        "--podman-args", "--runtime runc", "--podman-run-args", " ".join(_ulimits()),
    ]  # fmt: skip

    def compose(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def containers() -> dict[int, str]:
        names = podman(
            "ps", "-a", "--filter", f"label=io.podman.compose.project={project}", "--format", "{{.Names}}"
        ).stdout.split()
        return {int(m.group(1)): name for name in names if (m := re.search(r"node(\d)", name))}

    def node_logs() -> str:
        out = []
        for n, name in sorted(containers().items()):
            proc = podman("logs", "--tail", "40", name, check=False)
            out.append(f"--- node {n} ({name})\n{proc.stdout}{proc.stderr}")
        return "\n".join(out)

    try:
        up = compose("up", "-d")
        assert up.returncode == 0, f"podman-compose up failed ({up.returncode}):\n{up.stdout[-2000:]}\n{up.stderr[-3000:]}"
        assert sorted(containers()) == [1, 2, 3], up.stderr[-3000:]
        boot = f"127.0.0.1:{ports[1]}"
        try:
            wait_for(
                lambda: {(b.id, b.port) for b in admin_client(boot).list_topics(timeout=3).brokers.values()}
                == {(n, ports[n]) for n in (1, 2, 3)},
                90,
                f"a client bootstrapped at node 1 ({boot}) to see all three brokers",
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\n{node_logs()}") from None
        # every node is healthy by the compose file's check (podman runs it from systemd timers,
        # absent here, so it is run by hand)
        for n, name in containers().items():
            wait_for(lambda name=name: podman("healthcheck", "run", name, check=False).returncode == 0, 30, f"node {n} healthy")
            wait_for(lambda n=n: http_ready(http_ports[n]), 30, f"node {n} ready on its HTTP port {http_ports[n]}")
        # default.replication.factor=3 from the compose file: a record produced through node 2
        # is replicated to all three and read back through node 3
        topic = "compose-replicated"
        records = gen_records(200, seed=3)
        results = produce_confluent(f"127.0.0.1:{ports[2]}", topic, records)
        assert_all_delivered(results)
        md = admin_client(boot).list_topics(topic, timeout=10).topics[topic]
        assert [sorted(p.replicas) for p in md.partitions.values()] == [[1, 2, 3]]
        got = consume_confluent(f"127.0.0.1:{ports[3]}", topic, [0], expected=len(records))
        assert_matches_deliveries(records, results, got)

        # down: SIGTERM to every node; each stops cleanly
        stop = compose("stop", timeout=240)
        assert stop.returncode == 0, stop.stderr[-3000:]
        for n, name in containers().items():
            state = json.loads(podman("inspect", name).stdout)[0]["State"]
            assert state["ExitCode"] == 0, f"node {n} exited {state['ExitCode']}:\n{node_logs()}"
    finally:
        down = compose("down", "-v", "-t", "5", timeout=240)
        # whatever down left (it failed, or up half-created things)
        for cid in podman("ps", "-aq", "--filter", f"label=io.podman.compose.project={project}", check=False).stdout.split():
            _quiet("rm", "-f", "-v", "-t", "0", cid)
        for vol in podman(
            "volume", "ls", "-q", "--filter", f"label=io.podman.compose.project={project}", check=False
        ).stdout.split():
            _quiet("volume", "rm", "-f", vol)
        _quiet("pod", "rm", "-f", f"pod_{project}")
    assert down.returncode == 0, down.stderr[-3000:]
    left = podman("volume", "ls", "-q", "--filter", f"label=io.podman.compose.project={project}").stdout.split()
    assert not left, f"volumes left after down -v: {left}"
    print(f"compose test {time.monotonic() - t0:.1f}s")
