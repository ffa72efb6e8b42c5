#!/usr/bin/env python3
"""Measurement driver of the cluster phase (bench/phases/cluster.sh), one subcommand per figure.

It speaks the Kafka wire protocol itself over plain sockets (Metadata v4, CreateTopics v2): a
poll costs one small request and no client library threads, so a tight polling loop stays cheap
on a 2-core machine, and every timestamp is taken right where the bytes are sent or received.
The phase script starts and stops the brokers; this driver only sends requests (and, for the
failover figure, the SIGKILL it times). Each subcommand prints one JSON object on stdout.

  create-wait  one CreateTopics of N partitions; time to the response and until every watched
               broker's Metadata shows all N partitions with a leader
  lag          T single-partition topics created one after another; for each, the time from the
               CreateTopics response until each watched broker's Metadata shows it
  failover     SIGKILL a process, then CreateTopics through a survivor until one is accepted
  wait-brokers until every watched broker lists exactly the expected broker ids (or until the
               process given by --pid, a node just started, has exited)
  wait-topic   until every watched broker shows the topic with all its partitions led
  create       one CreateTopics, its response time

Standard library only (runs with any python3).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import struct
import sys
import time

CLIENT_ID = b"vltava-bench-cluster"
METADATA, CREATE_TOPICS = 3, 19
METADATA_V, CREATE_TOPICS_V = 4, 2  # v4: allow_auto_topic_creation=false; both non-flexible
ERRORS = {
    0: "NONE",
    3: "UNKNOWN_TOPIC_OR_PARTITION",
    5: "LEADER_NOT_AVAILABLE",
    7: "REQUEST_TIMED_OUT",
    36: "TOPIC_ALREADY_EXISTS",
    37: "INVALID_PARTITIONS",
    38: "INVALID_REPLICATION_FACTOR",
    41: "NOT_CONTROLLER",
}

now = time.monotonic


def parse_addr(a: str) -> tuple[str, int]:
    host, port = a.rsplit(":", 1)
    return host, int(port)


class Conn:
    """One connection to one broker; requests are sent one at a time (or pipelined by hand)."""

    def __init__(self, addr: str, timeout: float = 10.0):
        self.addr = addr
        self.sock = socket.create_connection(parse_addr(addr), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.corr = 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, api_key: int, version: int, body: bytes) -> int:
        self.corr += 1
        header = struct.pack(">hhih", api_key, version, self.corr, len(CLIENT_ID)) + CLIENT_ID
        payload = header + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        return self.corr

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"{self.addr}: connection closed")
            buf += chunk
        return bytes(buf)

    def recv(self, corr: int) -> "Reader":
        (size,) = struct.unpack(">i", self._exact(4))
        data = self._exact(size)
        r = Reader(data)
        got = r.i32()
        if got != corr:
            raise ConnectionError(f"{self.addr}: correlation id {got}, expected {corr}")
        return r

    def call(self, api_key: int, version: int, body: bytes) -> "Reader":
        return self.recv(self.send(api_key, version, body))


class Reader:
    def __init__(self, data: bytes):
        self.d, self.p = data, 0

    def _u(self, fmt: str, n: int):
        v = struct.unpack_from(fmt, self.d, self.p)[0]
        self.p += n
        return v

    def i8(self) -> int:
        return self._u(">b", 1)

    def i16(self) -> int:
        return self._u(">h", 2)

    def i32(self) -> int:
        return self._u(">i", 4)

    def string(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        s = self.d[self.p : self.p + n].decode()
        self.p += n
        return s

    def skip_i32_array(self) -> None:
        n = self.i32()
        if n > 0:
            self.p += 4 * n


def kstr(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


# ------------------------------------------------------------------------------ Metadata v4
def metadata_body(topics: list[str] | None) -> bytes:
    if topics is None:
        arr = struct.pack(">i", -1)
    else:
        arr = struct.pack(">i", len(topics)) + b"".join(kstr(t) for t in topics)
    return arr + b"\x00"  # allow_auto_topic_creation = false


def parse_metadata(r: Reader) -> tuple[set[int], dict[str, tuple[int, int, int]]]:
    """(broker ids, {topic: (error code, partitions, partitions with a leader)})."""
    r.i32()  # throttle_time_ms
    brokers = set()
    for _ in range(r.i32()):
        brokers.add(r.i32())
        r.string()
        r.i32()
        r.string()
    r.string()  # cluster_id
    r.i32()  # controller_id
    topics = {}
    for _ in range(max(r.i32(), 0)):
        err = r.i16()
        name = r.string()
        r.i8()  # is_internal
        n = r.i32()
        led = 0
        for _ in range(max(n, 0)):
            r.i16()
            r.i32()
            if r.i32() >= 0:
                led += 1
            r.skip_i32_array()
            r.skip_i32_array()
        topics[name] = (err, max(n, 0), led)
    return brokers, topics


def topic_ready(topics: dict, name: str, partitions: int) -> bool:
    t = topics.get(name)
    return t is not None and t[0] == 0 and t[1] == partitions and t[2] == partitions


# ------------------------------------------------------------------------------ CreateTopics v2
def create_topics_body(name: str, partitions: int, rf: int = 1, timeout_ms: int = 60000) -> bytes:
    topic = kstr(name) + struct.pack(">ihii", partitions, rf, 0, 0)  # no assignments, no configs
    return struct.pack(">i", 1) + topic + struct.pack(">i", timeout_ms) + b"\x00"


def parse_create_topics(r: Reader) -> tuple[int, str | None]:
    r.i32()  # throttle_time_ms
    n = r.i32()
    if n != 1:
        return -1, f"{n} topic results"
    r.string()
    return r.i16(), r.string()


def create_topic(conn: Conn, name: str, partitions: int) -> tuple[int, str | None, float, float]:
    """(error code, message, send time, response time)."""
    body = create_topics_body(name, partitions)
    t0 = now()
    r = conn.call(CREATE_TOPICS, CREATE_TOPICS_V, body)
    t1 = now()
    code, msg = parse_create_topics(r)
    return code, msg, t0, t1


def err_name(code: int) -> str:
    return f"{ERRORS.get(code, 'error')}({code})"


# ------------------------------------------------------------------------------ polling
def poll_until(conns: dict[str, Conn], body: bytes, done, deadline: float, interval: float) -> dict[str, float]:
    """Rounds of one Metadata request to every broker not done yet (sent to all of them, then
    read back), `interval` apart, until done(brokers, topics) holds for each; returns, per
    broker, the time its first satisfying response was received (an upper bound of the moment
    it became true there: it was false at the previous round)."""
    seen: dict[str, float] = {}
    while len(seen) < len(conns):
        if now() > deadline:
            missing = sorted(set(conns) - set(seen))
            raise TimeoutError(f"not seen within the deadline on {', '.join(missing)}")
        pending = [(a, c, c.send(METADATA, METADATA_V, body)) for a, c in conns.items() if a not in seen]
        for addr, c, corr in pending:
            r = c.recv(corr)
            t = now()
            brokers, topics = parse_metadata(r)
            if done(brokers, topics):
                seen[addr] = t
        if len(seen) < len(conns) and interval > 0:
            time.sleep(interval)
    return seen


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(xs)
    k = max(1, min(len(s), int(-(-q * len(s) // 100))))  # ceil(q/100 * n)
    return s[k - 1]


def connect_all(addrs: list[str], timeout: float = 30.0) -> dict[str, Conn]:
    return {a: Conn(a, timeout) for a in addrs}


# ------------------------------------------------------------------------------ subcommands
def cmd_create_wait(a) -> dict:
    watch = connect_all(a.watch)
    conn = Conn(a.via, timeout=a.timeout)
    code, msg, t0, t1 = create_topic(conn, a.topic, a.partitions)
    if code != 0:
        raise SystemExit(f"CreateTopics {a.topic} ({a.partitions} partitions) via {a.via}: {err_name(code)} {msg or ''}")
    seen = poll_until(
        watch,
        metadata_body([a.topic]),
        lambda _b, topics: topic_ready(topics, a.topic, a.partitions),
        t1 + a.timeout,
        a.interval,
    )
    return {
        "topic": a.topic,
        "partitions": a.partitions,
        "via": a.via,
        "response_s": t1 - t0,
        "visible_s": {addr: t - t0 for addr, t in seen.items()},
        "all_visible_s": max(seen.values()) - t0,
    }


def cmd_lag(a) -> dict:
    watch = connect_all(a.watch)
    conn = Conn(a.via, timeout=a.timeout)
    rows = []
    t_start = now()
    for i in range(a.count):
        name = f"{a.prefix}-{i:04d}"
        code, msg, t0, t1 = create_topic(conn, name, 1)
        if code != 0:
            raise SystemExit(f"CreateTopics {name} via {a.via}: {err_name(code)} {msg or ''}")
        seen = poll_until(
            watch,
            metadata_body([name]),
            lambda _b, topics, name=name: topic_ready(topics, name, 1),
            t1 + a.timeout,
            a.interval,
        )
        rows.append({"create_ms": (t1 - t0) * 1e3, "lag_ms": {addr: (t - t1) * 1e3 for addr, t in seen.items()}})
    elapsed = now() - t_start
    maxes = [max(r["lag_ms"].values()) for r in rows]
    creates = [r["create_ms"] for r in rows]
    per_broker = {
        addr: {
            "p50_ms": percentile([r["lag_ms"][addr] for r in rows], 50),
            "p99_ms": percentile([r["lag_ms"][addr] for r in rows], 99),
            "max_ms": max(r["lag_ms"][addr] for r in rows),
        }
        for addr in a.watch
    }
    return {
        "count": a.count,
        "via": a.via,
        "elapsed_s": elapsed,
        "lag_max_over_brokers": {
            "p50_ms": percentile(maxes, 50),
            "p99_ms": percentile(maxes, 99),
            "max_ms": max(maxes),
            "mean_ms": statistics.fmean(maxes),
        },
        "per_broker": per_broker,
        "create": {"p50_ms": percentile(creates, 50), "p99_ms": percentile(creates, 99), "max_ms": max(creates)},
        "rows": rows,
    }


def cmd_failover(a) -> dict:
    attempts = 0
    errors: dict[str, int] = {}
    kill_unix = time.time()
    t_kill = now()
    os.kill(a.kill_pid, signal.SIGKILL)
    deadline = t_kill + a.timeout
    while True:
        attempts += 1
        name = f"{a.prefix}-{attempts:03d}"
        t_attempt = now()
        conn = None
        try:
            conn = Conn(a.via, timeout=a.request_timeout)
            code, msg, _t0, t1 = create_topic(conn, name, 1)
            if code == 0:
                return {
                    "seconds": t1 - t_kill,
                    "kill_unix": kill_unix,
                    "attempts": attempts,
                    "errors": errors,
                    "topic": name,
                    "last_attempt_s": t1 - t_attempt,
                }
            key = err_name(code)
        except (OSError, ConnectionError) as e:
            key = type(e).__name__
        finally:
            if conn is not None:
                conn.close()
        errors[key] = errors.get(key, 0) + 1
        if now() > deadline:
            raise SystemExit(
                f"no CreateTopics accepted via {a.via} within {a.timeout:.0f} s of the kill "
                f"({attempts} attempts: {errors})"
            )
        time.sleep(a.retry_interval)


def process_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cmd_wait_brokers(a) -> dict:
    expected = {int(x) for x in a.expect.split(",")}
    t0 = now()
    deadline = t0 + a.timeout
    last: dict[str, object] = {}
    while True:
        if a.pid and not process_running(a.pid):
            raise SystemExit(f"process {a.pid} exited while waiting for brokers {sorted(expected)}: {last}")
        ok = True
        for addr in a.watch:
            try:
                c = Conn(addr, timeout=5)
                try:
                    brokers, _ = parse_metadata(c.call(METADATA, METADATA_V, metadata_body([])))
                finally:
                    c.close()
                last[addr] = sorted(brokers)
                ok = ok and brokers == expected
            except (OSError, ConnectionError) as e:
                last[addr] = type(e).__name__
                ok = False
        if ok:
            return {"seconds": now() - t0, "brokers": last}
        if now() > deadline:
            raise SystemExit(f"brokers {sorted(expected)} not listed everywhere within {a.timeout:.0f} s: {last}")
        time.sleep(0.1)


def cmd_wait_topic(a) -> dict:
    t0 = now()
    watch = connect_all(a.watch)
    seen = poll_until(
        watch,
        metadata_body([a.topic]),
        lambda _b, topics: topic_ready(topics, a.topic, a.partitions),
        t0 + a.timeout,
        0.01,
    )
    return {"seconds": max(seen.values()) - t0}


def cmd_create(a) -> dict:
    conn = Conn(a.via, timeout=a.timeout)
    code, msg, t0, t1 = create_topic(conn, a.topic, a.partitions)
    if code != 0:
        raise SystemExit(f"CreateTopics {a.topic} via {a.via}: {err_name(code)} {msg or ''}")
    return {"response_s": t1 - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def addrs(s: str) -> list[str]:
        return [x for x in s.split(",") if x]

    s = sub.add_parser("create-wait")
    s.add_argument("--via", required=True)
    s.add_argument("--watch", type=addrs, required=True)
    s.add_argument("--topic", required=True)
    s.add_argument("--partitions", type=int, required=True)
    s.add_argument("--interval", type=float, default=0.001)
    s.add_argument("--timeout", type=float, default=120)
    s.set_defaults(fn=cmd_create_wait)

    s = sub.add_parser("lag")
    s.add_argument("--via", required=True)
    s.add_argument("--watch", type=addrs, required=True)
    s.add_argument("--count", type=int, default=200)
    s.add_argument("--prefix", default="lag")
    s.add_argument("--interval", type=float, default=0.001)
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_lag)

    s = sub.add_parser("failover")
    s.add_argument("--kill-pid", type=int, required=True)
    s.add_argument("--via", required=True)
    s.add_argument("--prefix", default="failover")
    s.add_argument("--timeout", type=float, default=120)
    s.add_argument("--request-timeout", type=float, default=30)
    s.add_argument("--retry-interval", type=float, default=0.01)
    s.set_defaults(fn=cmd_failover)

    s = sub.add_parser("wait-brokers")
    s.add_argument("--watch", type=addrs, required=True)
    s.add_argument("--expect", required=True)
    s.add_argument("--timeout", type=float, default=90)
    s.add_argument("--pid", type=int, help="fail as soon as this process (a node being started) has exited")
    s.set_defaults(fn=cmd_wait_brokers)

    s = sub.add_parser("wait-topic")
    s.add_argument("--watch", type=addrs, required=True)
    s.add_argument("--topic", required=True)
    s.add_argument("--partitions", type=int, default=1)
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_wait_topic)

    s = sub.add_parser("create")
    s.add_argument("--via", required=True)
    s.add_argument("--topic", required=True)
    s.add_argument("--partitions", type=int, default=1)
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_create)

    a = p.parse_args()
    try:
        out = a.fn(a)
    except TimeoutError as e:
        raise SystemExit(f"{a.cmd}: {e}") from None
    except (OSError, ConnectionError) as e:
        raise SystemExit(f"{a.cmd}: {type(e).__name__}: {e}") from None
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
