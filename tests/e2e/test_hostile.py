"""Hostile input against a real broker: garbage, truncated and oversized frames, unknown api keys,
thousands of idle connections, a peer that never reads its socket. The broker must never die, its
memory must stay bounded, and a well-behaved client must be served meanwhile."""

import os
import random
import socket
import struct
import time

import pytest

from e2e_util import Rec, assert_all_delivered, consume_confluent, create_topic, produce_confluent
from rawkafka import connect, header_v1, recv_frame, send_frame


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def well_behaved_roundtrip(bootstrap: str, topic: str, n: int = 200) -> None:
    recs = [Rec(key=f"k{i}".encode(), value=os.urandom(100)) for i in range(n)]
    res = produce_confluent(bootstrap, topic, recs, flush_timeout=60)
    assert_all_delivered(res)
    got = consume_confluent(bootstrap, topic, [0], timeout=60)
    values = {g.value for g in got}
    assert all(r.value in values for r in recs)


def api_versions_ok(port: int) -> None:
    s = connect("127.0.0.1", port)
    try:
        send_frame(s, header_v1(18, 0, 99))
        body = recv_frame(s)
        assert struct.unpack(">i", body[:4])[0] == 99
    finally:
        s.close()


@pytest.mark.timeout(120)
def test_garbage_frames_never_kill_the_broker(broker):
    create_topic(broker.bootstrap, "calm", 1)
    rng = random.Random(20261127)
    port = int(broker.bootstrap.split(":")[1])
    payloads = []
    for _ in range(300):
        payloads.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))))
    # Valid-looking headers for every api key 0..80 and versions -1..20 followed by random bytes.
    for key in range(0, 80):
        for version in (-1, 0, 3, 9, 20):
            payloads.append(struct.pack(">hhi", key, version, 7) + b"\xff\xff" + bytes(rng.getrandbits(8) for _ in range(40)))
    for p in payloads:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(struct.pack(">i", len(p)) + p)
            s.settimeout(0.2)
            try:
                s.recv(65536)
            except (socket.timeout, ConnectionError):
                pass
            s.close()
        except ConnectionError:
            pass
    # Huge declared lengths and truncated frames.
    for declared in (2**31 - 1, 200_000_000, -5, 104_857_601):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(struct.pack(">i", declared) + b"\x00" * 16)
        s.settimeout(5)
        try:
            assert s.recv(10) == b"", "an oversized frame must close the connection"
        except ConnectionResetError:
            pass
        s.close()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(struct.pack(">i", 1000) + b"\x00\x03\x00\x01")  # announces 1000 bytes, sends 4
    s.close()
    assert broker.is_running(), broker.stderr_tail()
    api_versions_ok(port)
    well_behaved_roundtrip(broker.bootstrap, "calm")
    assert broker.is_running()
    assert "panicked" not in broker.stderr_tail(200_000)


@pytest.mark.timeout(180)
def test_thousands_of_idle_connections_bounded_memory(broker):
    create_topic(broker.bootstrap, "busy", 1)
    port = int(broker.bootstrap.split(":")[1])
    before = rss_mib(broker.pid)
    socks = []
    try:
        for i in range(3000):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            if i % 3 == 0:
                # Some of them start a frame and stall in the middle of it.
                socks[-1].sendall(struct.pack(">i", 5_000_000) + b"\x00\x12\x00\x00")
        time.sleep(1)
        peak = rss_mib(broker.pid)
        well_behaved_roundtrip(broker.bootstrap, "busy")
        peak = max(peak, rss_mib(broker.pid))
        print(f"broker RSS: {before:.1f} MiB before, {peak:.1f} MiB with 3000 hostile connections")
        # 1000 of them announced 5 MB frames; queued.max.request.bytes keeps what is reserved
        # bounded, and nothing is allocated before the bytes arrive.
        assert peak < before + 300, f"RSS grew from {before:.0f} to {peak:.0f} MiB"
    finally:
        for s in socks:
            s.close()
    assert broker.is_running()


@pytest.mark.timeout(120)
def test_peer_that_never_reads_does_not_block_others(broker):
    create_topic(broker.bootstrap, "bulk", 1)
    recs = [Rec(key=None, value=os.urandom(50_000)) for _ in range(100)]
    assert_all_delivered(produce_confluent(broker.bootstrap, "bulk", recs))
    port = int(broker.bootstrap.split(":")[1])
    s = connect("127.0.0.1", port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # Pipelined ApiVersions+Metadata requests whose responses it never reads; the broker's send
    # buffer fills and that connection stalls, alone.
    frame = struct.pack(">i", len(header_v1(3, 1, 1)) + 4) + header_v1(3, 1, 1) + struct.pack(">i", -1)
    s.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            sent += s.send(frame * 200)
        except BlockingIOError:
            break
    assert sent > 0
    well_behaved_roundtrip(broker.bootstrap, "bulk2", n=100)
    api_versions_ok(port)
    s.close()
    assert broker.is_running()


@pytest.mark.timeout(60)
def test_idle_connections_are_closed(broker_factory):
    b = broker_factory({"connections.max.idle.ms": 1000})
    port = int(b.bootstrap.split(":")[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.settimeout(10)
    start = time.monotonic()
    assert s.recv(10) == b"", "the broker should close an idle connection"
    assert time.monotonic() - start < 9
    api_versions_ok(port)
