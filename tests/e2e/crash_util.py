"""Helpers of the crash harness (test_crash.py) and its producer process (crash_producer_proc.py).

* ``make_key`` / ``make_value``: every record is a pure function of its sequence number, so the
  checker can tell a record that is byte-for-byte right from a corrupted one without storing values.
* ``metadata_ready`` / ``list_offsets_latest``: minimal raw Metadata v1 and ListOffsets v1 requests
  (used to time recovery precisely, and to note where each partition's log ends after each restart).
* ``restart_timed``: restart a killed broker on the same port and data dir, timing the recovery from
  the spawn of the new process until the port accepts and a Metadata request for the topic answers
  with a leader for every partition.
* ``read_reports``: parse the producer's delivery-report file.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from array import array
from dataclasses import dataclass

from rawkafka import Reader, header_v1, kstring, recv_frame, send_frame

# ----------------------------------------------------------------------------- records
SEQ_PREFIX = b"seq="
SEQ_DIGITS = 12
_HEAD = len(SEQ_PREFIX) + SEQ_DIGITS + 1  # "seq=000000000042;"
_TEXT = b"The Vltava flows through Prague; Smetana heard it in six movements. " * 80  # compressible
_RAND = random.Random(4242).randbytes(1 << 16)  # incompressible
N_KEYS = 101


def make_key(seq: int) -> bytes:
    return b"k%03d" % (seq % N_KEYS)


def make_value(seq: int) -> bytes:
    """17 to ~240 bytes: the sequence number, a compressible slice and an incompressible slice."""
    h = (seq * 2654435761) & 0xFFFFFFFF
    n_text = h % 150
    n_rand = (h >> 8) % 70
    s = (h >> 12) % 4096
    r = (h >> 3) % 60000
    return b"seq=%012d;" % seq + _TEXT[s : s + n_text] + _RAND[r : r + n_rand]


def seq_of(value: bytes | None) -> int | None:
    """The sequence number a value claims to carry, or None if it does not look like one of ours."""
    if value is None or len(value) < _HEAD or not value.startswith(SEQ_PREFIX) or value[_HEAD - 1 : _HEAD] != b";":
        return None
    digits = value[len(SEQ_PREFIX) : _HEAD - 1]
    if not digits.isdigit():
        return None
    return int(digits)


# ----------------------------------------------------------------------------- raw requests
def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> Reader:
    send_frame(sock, header_v1(api_key, version, corr) + body)
    r = Reader(recv_frame(sock))
    got = r.take("i")
    assert got == corr, f"correlation id {got}, want {corr}"
    return r


def metadata_ready(host: str, port: int, topic: str, partitions: int, timeout: float = 2.0) -> bool:
    """One Metadata v1 request for `topic` on a fresh connection: True when the topic and each of its
    `partitions` partitions answer without error and with a leader. Raises OSError if the port does
    not accept or the connection breaks."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        r = _request(s, 3, 1, 7, struct.pack(">i", 1) + kstring(topic))
        for _ in range(r.take("i")):  # brokers
            r.take("i")
            r.string()
            r.take("i")
            r.string()  # rack (nullable)
        r.take("i")  # controller id
        ok = False
        for _ in range(r.take("i")):
            t_err = r.take("h")
            name = r.string()
            r.take("b")  # is_internal
            leaders = {}
            errs = {}
            for _ in range(r.take("i")):
                p_err = r.take("h")
                idx = r.take("i")
                leader = r.take("i")
                for _ in range(r.take("i")):
                    r.take("i")
                for _ in range(r.take("i")):
                    r.take("i")
                leaders[idx] = leader
                errs[idx] = p_err
            if name == topic and t_err == 0:
                ok = sorted(leaders) == list(range(partitions)) and all(
                    leaders[p] >= 0 and errs[p] == 0 for p in range(partitions)
                )
        return ok


def list_offsets_latest(host: str, port: int, topic: str, partitions: int, timeout: float = 10.0) -> dict[int, int]:
    """ListOffsets v1 (timestamp -1: the log end offset = high watermark on one node) per partition."""
    body = struct.pack(">i", -1) + struct.pack(">i", 1) + kstring(topic) + struct.pack(">i", partitions)
    for p in range(partitions):
        body += struct.pack(">iq", p, -1)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        r = _request(s, 2, 1, 9, body)
    out = {}
    for _ in range(r.take("i")):
        r.string()
        for _ in range(r.take("i")):
            p = r.take("i")
            err = r.take("h")
            r.take("q")  # timestamp
            off = r.take("q")
            assert err == 0, f"ListOffsets {topic}/{p}: error {err}"
            out[p] = off
    return out


# ----------------------------------------------------------------------------- timed restart
@dataclass
class Recovery:
    port_s: float  # spawn -> port accepts a connection
    ready_s: float  # spawn -> Metadata answers with a leader for every partition
    spawns: int = 1  # >1 if the port was still held by the killed process (EADDRINUSE) and we respawned
    at: float = 0.0  # time.monotonic() when it was ready


def restart_timed(broker, topic: str, partitions: int, timeout: float = 60.0, poll_s: float = 0.005) -> Recovery:
    """Start the (stopped) broker again on its port and data dir and time the recovery.

    Uses the conftest Broker's `_spawn`, because `Broker.start` polls the port only every 50 ms, too
    coarse to time recoveries of a few tens of milliseconds. Like `Broker.start`, respawns if the
    killed process's port was not yet released (EADDRINUSE)."""
    assert not broker.is_running(), "restart_timed needs a stopped broker"
    t0 = time.monotonic()
    broker._spawn()
    spawns = 1
    port_t = None
    deadline = t0 + timeout
    while True:
        now = time.monotonic()
        if broker.proc.poll() is not None:
            tail = broker._current_stderr()
            low = tail.lower()
            if ("address already in use" in low or "os error 98" in low) and spawns < 5:
                broker._close_log()
                time.sleep(0.2)
                broker._spawn()
                spawns += 1
                continue
            raise AssertionError(
                f"broker exited with code {broker.proc.returncode} while recovering\nstderr tail:\n{tail[-6000:]}"
            )
        if now > deadline:
            raise AssertionError(
                f"broker not ready {timeout:.0f}s after the restart (port accepted: {port_t is not None})\n"
                f"stderr tail:\n{broker._current_stderr()[-6000:]}"
            )
        try:
            ok = metadata_ready(broker.host, broker.port, topic, partitions)
            if port_t is None:
                port_t = time.monotonic()
            if ok:
                now = time.monotonic()
                return Recovery(port_t - t0, now - t0, spawns, now)
        except (OSError, AssertionError, struct.error):
            pass  # refused, reset, or an incomplete answer while starting: try again
        time.sleep(poll_s)


def summary(xs: list[float]) -> str:
    if not xs:
        return "n/a"
    s = sorted(xs)
    med = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
    return f"min {s[0] * 1000:.0f} ms, median {med * 1000:.0f} ms, max {s[-1] * 1000:.0f} ms (n={len(s)})"


# ----------------------------------------------------------------------------- delivery reports
# librdkafka errors after which the record may or may not be in the log: Kafka promises nothing about
# them (a timed-out or purged in-flight batch may have been written). Everything else that fails is a
# definite failure: it must not be in the log.
AMBIGUOUS_ERRORS = {
    "_MSG_TIMED_OUT",
    "_TIMED_OUT",
    "REQUEST_TIMED_OUT",
    "_TRANSPORT",
    "_PURGE_INFLIGHT",
    "NETWORK_EXCEPTION",
    "_TIMED_OUT_QUEUE",
    "_FATAL",  # the producer died with in-flight batches; reported separately as a failure anyway
}


class Reports:
    """The parsed report file. Acknowledgements are kept in arrays (millions of them)."""

    def __init__(self):
        self.ack_seq = array("q")
        self.ack_part = array("i")
        self.ack_off = array("q")
        self.ack_crc = array("q")
        self.failed: list[tuple[int, int, str, bool, bool]] = []  # (seq, partition, name, retriable, fatal)
        self.errors: list[str] = []  # error_cb lines
        self.end: dict | None = None  # the END line: produced, acked, failed, remaining
        self.torn_lines = 0

    @property
    def n_acked(self) -> int:
        return len(self.ack_seq)

    def definite_failures(self) -> list[tuple[int, int, str]]:
        return [(s, p, n) for (s, p, n, retr, fatal) in self.failed if n not in AMBIGUOUS_ERRORS and not retr and not fatal]

    def ambiguous_failures(self) -> list[tuple[int, int, str]]:
        defs = {s for (s, _p, _n) in self.definite_failures()}
        return [(s, p, n) for (s, p, n, _r, _f) in self.failed if s not in defs]


def read_reports(path) -> Reports:
    """Lines: `A seq partition offset crc32` | `F seq partition ERRNAME retriable fatal` |
    `E ERRNAME fatal text...` | `END produced=N acked=N failed=N remaining=N`."""
    rep = Reports()
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                rep.torn_lines += 1
                continue
            parts = raw.split()
            if not parts:
                continue
            kind = parts[0]
            if kind == b"A":
                rep.ack_seq.append(int(parts[1]))
                rep.ack_part.append(int(parts[2]))
                rep.ack_off.append(int(parts[3]))
                rep.ack_crc.append(int(parts[4]))
            elif kind == b"F":
                rep.failed.append((int(parts[1]), int(parts[2]), parts[3].decode(), parts[4] == b"1", parts[5] == b"1"))
            elif kind == b"E":
                rep.errors.append(raw.decode(errors="replace").strip())
            elif kind == b"END":
                rep.end = {k: int(v) for k, v in (p.decode().split("=") for p in parts[1:])}
    return rep
