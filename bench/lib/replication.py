#!/usr/bin/env python3
"""Measurement driver of the replication phase (bench/phases/replication.sh).

Like bench/lib/cluster.py (whose connection and encoding helpers it imports), it speaks the
Kafka wire protocol itself over plain sockets: Metadata v4 (with each partition's leader,
replicas and ISR), CreateTopics v2 (with an explicit replica assignment and topic configs) and
Produce v7 (acks=all, one RecordBatch v2 built here, CRC-32C included). A poll is one small
request, so polling every 10 ms costs little CPU on a 2-core machine, and every timestamp
(time.monotonic, or time.time where it is compared with a moment taken by the phase script)
is taken where the bytes are sent or received. The phase script starts and stops the nodes;
this driver only sends requests (and, for the failover figure, the SIGKILL it times). Each
subcommand prints one JSON object on stdout.

  create    CreateTopics of a topic with the given replica assignment and configs; waits until
            every watched broker shows each partition led by its first replica with a full ISR
  describe  leader, replicas and ISR of each partition, as the first watched broker answers
  wait-isr  until a broker is in (or out of) a partition's ISR; per watched broker the time its
            Metadata first showed it, counted from --since (a wall-clock time of the caller)
  failover  a client producing continuously, acks=all, one request at a time, to the leader of
            a partition; after --warmup seconds it SIGKILLs the leader's process and keeps
            going (Metadata from the survivors every 10 ms until another broker leads, then
            Produce there) until a Produce is acknowledged by the successor

Standard library only (runs with any python3); the CRC-32C is tests/e2e/rawkafka.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "e2e"))
from cluster import ERRORS, Conn, Reader, kstr, now, process_running  # noqa: E402
from rawkafka import crc32c  # noqa: E402  (standard library only without the crc32c package)

METADATA, PRODUCE, CREATE_TOPICS = 3, 0, 19
METADATA_V, PRODUCE_V, CREATE_TOPICS_V = 4, 7, 2  # all non-flexible
ERRORS = {
    **ERRORS,
    6: "NOT_LEADER_OR_FOLLOWER",
    19: "NOT_ENOUGH_REPLICAS",
    20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    -1: "UNKNOWN_SERVER_ERROR",
}


def name_of(code: int) -> str:
    return f"{ERRORS.get(code, 'error')}({code})"


# ------------------------------------------------------------------------------ Metadata v4
def metadata_body(topics: list[str] | None) -> bytes:
    if topics is None:
        arr = struct.pack(">i", -1)
    else:
        arr = struct.pack(">i", len(topics)) + b"".join(kstr(t) for t in topics)
    return arr + b"\x00"  # allow_auto_topic_creation = false


def i32_array(r: Reader) -> list[int]:
    return [r.i32() for _ in range(max(r.i32(), 0))]


def parse_metadata(r: Reader) -> tuple[dict[int, str], dict[str, tuple[int, dict[int, dict]]]]:
    """({broker id: "host:port"}, {topic: (error, {partition: {leader, replicas, isr, error}})})."""
    r.i32()  # throttle_time_ms
    brokers = {}
    for _ in range(r.i32()):
        node = r.i32()
        host = r.string()
        port = r.i32()
        r.string()  # rack
        brokers[node] = f"{host}:{port}"
    r.string()  # cluster_id
    r.i32()  # controller_id
    topics = {}
    for _ in range(max(r.i32(), 0)):
        err = r.i16()
        name = r.string()
        r.i8()  # is_internal
        parts = {}
        for _ in range(max(r.i32(), 0)):
            perr = r.i16()
            index = r.i32()
            leader = r.i32()
            replicas = i32_array(r)
            isr = i32_array(r)
            parts[index] = {"leader": leader, "replicas": replicas, "isr": isr, "error": perr}
        topics[name] = (err, parts)
    return brokers, topics


def metadata(conn: Conn, topic: str):
    return parse_metadata(conn.call(METADATA, METADATA_V, metadata_body([topic])))


def metadata_any(addrs: list[str], topic: str, timeout: float = 5.0):
    """Metadata of the topic from the first of `addrs` that answers: (addr, brokers, topics)."""
    last = None
    for a in addrs:
        c = None
        try:
            c = Conn(a, timeout=timeout)
            b, t = metadata(c, topic)
            return a, b, t
        except (OSError, ConnectionError) as e:
            last = e
        finally:
            if c is not None:
                c.close()
    raise ConnectionError(f"no broker of {addrs} answered Metadata: {last}")


# ------------------------------------------------------------------------------ CreateTopics v2
def create_topics_body(name: str, assignment: list[list[int]], configs: dict[str, str], timeout_ms: int = 60000) -> bytes:
    # An explicit assignment: num_partitions and replication_factor -1 (Kafka's rule).
    body = kstr(name) + struct.pack(">ih", -1, -1)
    body += struct.pack(">i", len(assignment))
    for index, replicas in enumerate(assignment):
        body += struct.pack(">ii", index, len(replicas)) + b"".join(struct.pack(">i", b) for b in replicas)
    body += struct.pack(">i", len(configs))
    for k, v in configs.items():
        body += kstr(k) + kstr(v)
    return struct.pack(">i", 1) + body + struct.pack(">i", timeout_ms) + b"\x00"  # validate_only


def parse_create_topics(r: Reader) -> tuple[int, str | None]:
    r.i32()  # throttle_time_ms
    n = r.i32()
    if n != 1:
        return -1, f"{n} topic results"
    r.string()
    return r.i16(), r.string()


# ------------------------------------------------------------------------------ Produce v7
def varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)  # zigzag
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def record_batch(values: list[bytes], timestamp_ms: int) -> bytes:
    """A RecordBatch v2 (magic 2) of the given values, no keys, no headers, no producer id.
    The leader assigns the offsets (base offset and partition leader epoch lie outside the
    CRC), so one batch can be sent again and again."""
    recs = b""
    for i, v in enumerate(values):
        body = b"\x00" + varint(0) + varint(i) + varint(-1) + varint(len(v)) + v + varint(0)
        recs += varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, timestamp_ms, timestamp_ms, -1, -1, -1, len(values)) + recs
    crc = crc32c(after_crc)
    tail = struct.pack(">ibI", -1, 2, crc) + after_crc  # partitionLeaderEpoch, magic, crc
    return struct.pack(">qi", 0, len(tail)) + tail


def produce_body(topic: str, partition: int, batch: bytes, timeout_ms: int) -> bytes:
    return (
        struct.pack(">h", -1)  # transactional_id: null
        + struct.pack(">hi", -1, timeout_ms)  # acks=all
        + struct.pack(">i", 1)
        + kstr(topic)
        + struct.pack(">i", 1)
        + struct.pack(">ii", partition, len(batch))
        + batch
    )


def parse_produce(r: Reader) -> tuple[int, int]:
    """(error code, base offset) of the one partition of a Produce v7 response."""
    if r.i32() != 1:
        return -1, -1
    r.string()
    if r.i32() != 1:
        return -1, -1
    r.i32()  # partition index
    code = r.i16()
    base = r._u(">q", 8)
    return code, base


# ------------------------------------------------------------------------------ subcommands
def parse_assign(s: str) -> list[list[int]]:
    """"1,2,3" one partition; "1,2,3/2,3,1" two partitions."""
    return [[int(b) for b in p.split(",")] for p in s.split("/")]


def full_and_led(topics: dict, name: str, assignment: list[list[int]]) -> bool:
    t = topics.get(name)
    if t is None or t[0] != 0 or len(t[1]) != len(assignment):
        return False
    for index, replicas in enumerate(assignment):
        p = t[1].get(index)
        if p is None or p["leader"] != replicas[0] or sorted(p["isr"]) != sorted(replicas):
            return False
    return True


def cmd_create(a) -> dict:
    assignment = parse_assign(a.assign)
    configs = dict(kv.split("=", 1) for kv in a.config)
    conn = Conn(a.via, timeout=a.timeout)
    t0 = now()
    code, msg = parse_create_topics(conn.call(CREATE_TOPICS, CREATE_TOPICS_V, create_topics_body(a.topic, assignment, configs)))
    t1 = now()
    if code != 0:
        raise SystemExit(f"CreateTopics {a.topic} {assignment} {configs} via {a.via}: {name_of(code)} {msg or ''}")
    seen = {}
    deadline = t1 + a.timeout
    conns = {addr: Conn(addr, timeout=a.timeout) for addr in a.watch}
    while len(seen) < len(conns):
        if now() > deadline:
            raise SystemExit(f"{a.topic}: not led by the first replicas with a full ISR on {sorted(set(conns) - set(seen))} within {a.timeout:.0f} s")
        for addr, c in conns.items():
            if addr not in seen and full_and_led(metadata(c, a.topic)[1], a.topic, assignment):
                seen[addr] = now() - t0
        if len(seen) < len(conns):
            time.sleep(0.01)
    return {"topic": a.topic, "assignment": assignment, "configs": configs, "response_s": t1 - t0, "ready_s": max(seen.values())}


def cmd_describe(a) -> dict:
    addr, brokers, topics = metadata_any(a.watch, a.topic)
    t = topics.get(a.topic)
    if t is None or t[0] != 0:
        raise SystemExit(f"{a.topic}: {name_of(t[0]) if t else 'not in Metadata'} (from {addr})")
    return {"from": addr, "brokers": {str(k): v for k, v in brokers.items()}, "partitions": {str(k): v for k, v in t[1].items()}}


def cmd_wait_isr(a) -> dict:
    """Polls every watched broker (a new connection when one fails: the nodes may be starting)
    until each shows the broker in (--in) or out of (--out) the partition's ISR."""
    want_in = a.state == "in"
    seen: dict[str, float] = {}
    conns: dict[str, Conn | None] = {addr: None for addr in a.watch}
    deadline = now() + a.timeout
    last: dict[str, object] = {}
    while len(seen) < len(conns):
        for addr in conns:
            if addr in seen:
                continue
            try:
                if conns[addr] is None:
                    conns[addr] = Conn(addr, timeout=5)
                _, topics = metadata(conns[addr], a.topic)
                wall = time.time()
                t = topics.get(a.topic)
                p = t[1].get(a.partition) if t and t[0] == 0 else None
                last[addr] = p
                if p is not None and (a.broker in p["isr"]) == want_in:
                    seen[addr] = wall - a.since
            except (OSError, ConnectionError) as e:
                last[addr] = type(e).__name__
                if conns[addr] is not None:
                    conns[addr].close()
                conns[addr] = None
        if len(seen) < len(conns):
            if now() > deadline:
                raise SystemExit(f"broker {a.broker} not {a.state} the ISR of {a.topic}-{a.partition} on {sorted(set(conns) - set(seen))} within {a.timeout:.0f} s: {last}")
            time.sleep(a.interval)
    return {"seconds_first": min(seen.values()), "seconds_all": max(seen.values()), "seconds": seen, "last": last}


def cmd_failover(a) -> dict:
    value = bytes((i * 7 + 13) & 0xFF for i in range(a.value_size))
    batch = record_batch([value] * a.records, int(time.time() * 1000))
    body = produce_body(a.topic, a.partition, batch, a.request_timeout_ms)

    def find_leader():
        _, brokers, topics = metadata_any(a.watch, a.topic, timeout=5)
        t = topics.get(a.topic)
        p = t[1].get(a.partition) if t and t[0] == 0 else None
        if p is None:
            return -1, None, None
        return p["leader"], brokers.get(p["leader"]), p

    leader, addr, p0 = find_leader()
    if leader != a.victim_id:
        raise SystemExit(f"{a.topic}-{a.partition}: leader is {leader} ({p0}), expected {a.victim_id}")
    conn = Conn(addr, timeout=a.request_timeout_ms / 1000 + 5)
    # Before the kill: acks=all requests one after another for --warmup seconds.
    lat = []
    t_start = now()
    while now() - t_start < a.warmup:
        t0 = now()
        code, _base = parse_produce(conn.call(PRODUCE, PRODUCE_V, body))
        if code != 0:
            raise SystemExit(f"produce to {leader} before the kill: {name_of(code)}")
        lat.append(now() - t0)
    conn.close()
    before = len(lat)
    last_ack = t_start + sum(lat)
    # The kill, right after an acknowledgement (as a client with one request in flight sees it).
    kill_unix = time.time()
    t_kill = now()
    os.kill(a.kill_pid, signal.SIGKILL)
    while process_running(a.kill_pid):
        time.sleep(0.0005)
    dead_s = now() - t_kill
    errors: dict[str, int] = {}
    first_other = None  # when the survivors' Metadata first named another leader
    deadline = t_kill + a.timeout
    attempts = 0
    conn = None
    conn_to = None
    while True:
        if now() > deadline:
            raise SystemExit(f"no Produce acknowledged by a successor within {a.timeout:.0f} s of the kill ({attempts} attempts: {errors})")
        try:
            leader, addr, _ = find_leader()
        except (OSError, ConnectionError) as e:
            errors[f"metadata {type(e).__name__}"] = errors.get(f"metadata {type(e).__name__}", 0) + 1
            time.sleep(a.retry_interval)
            continue
        if leader < 0 or leader == a.victim_id or addr is None:
            key = "metadata: no leader" if leader < 0 else "metadata: still the old leader"
            errors[key] = errors.get(key, 0) + 1
            time.sleep(a.retry_interval)
            continue
        if first_other is None:
            first_other = now()
        attempts += 1
        try:
            if conn is None or conn_to != leader:
                if conn is not None:
                    conn.close()
                conn, conn_to = Conn(addr, timeout=a.request_timeout_ms / 1000 + 5), leader
            t0 = now()
            code, base = parse_produce(conn.call(PRODUCE, PRODUCE_V, body))
            t1 = now()
        except (OSError, ConnectionError) as e:
            errors[f"produce {type(e).__name__}"] = errors.get(f"produce {type(e).__name__}", 0) + 1
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(a.retry_interval)
            continue
        if code == 0:
            return {
                "seconds": t1 - t_kill,
                "kill_unix": kill_unix,
                "dead_s": dead_s,
                "successor": leader,
                "new_leader_seen_s": first_other - t_kill,
                "last_request_s": t1 - t0,
                "base_offset": base,
                "attempts": attempts,
                "errors": errors,
                "before": {
                    "requests": before,
                    "records_per_request": a.records,
                    "p50_ms": sorted(lat)[len(lat) // 2] * 1e3 if lat else None,
                    "max_ms": max(lat) * 1e3 if lat else None,
                    "over_100ms": sum(1 for x in lat if x > 0.1),
                    "last_ack_before_kill_s": t_kill - last_ack,
                },
            }
        errors[f"produce {name_of(code)}"] = errors.get(f"produce {name_of(code)}", 0) + 1
        time.sleep(a.retry_interval)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def addrs(s: str) -> list[str]:
        return [x for x in s.split(",") if x]

    s = sub.add_parser("create")
    s.add_argument("--via", required=True)
    s.add_argument("--watch", type=addrs, required=True)
    s.add_argument("--topic", required=True)
    s.add_argument("--assign", required=True, help='replica lists, first = leader: "2,3,1" or "1/2" (two partitions)')
    s.add_argument("--config", action="append", default=[], help="KEY=VALUE (repeatable)")
    s.add_argument("--timeout", type=float, default=60)
    s.set_defaults(fn=cmd_create)

    s = sub.add_parser("describe")
    s.add_argument("--watch", type=addrs, required=True)
    s.add_argument("--topic", required=True)
    s.set_defaults(fn=cmd_describe)

    s = sub.add_parser("wait-isr")
    s.add_argument("--watch", type=addrs, required=True)
    s.add_argument("--topic", required=True)
    s.add_argument("--partition", type=int, default=0)
    s.add_argument("--broker", type=int, required=True)
    s.add_argument("--state", choices=["in", "out"], default="in")
    s.add_argument("--since", type=float, default=None, help="wall-clock time (s since the epoch) the figures count from; default: now")
    s.add_argument("--interval", type=float, default=0.01)
    s.add_argument("--timeout", type=float, default=300)
    s.set_defaults(fn=cmd_wait_isr)

    s = sub.add_parser("failover")
    s.add_argument("--watch", type=addrs, required=True, help="the survivors (Metadata is asked there)")
    s.add_argument("--topic", required=True)
    s.add_argument("--partition", type=int, default=0)
    s.add_argument("--victim-id", type=int, required=True)
    s.add_argument("--kill-pid", type=int, required=True)
    s.add_argument("--warmup", type=float, default=2.0)
    s.add_argument("--value-size", type=int, default=1024)
    s.add_argument("--records", type=int, default=1, help="records per Produce request")
    s.add_argument("--timeout", type=float, default=120)
    s.add_argument("--request-timeout-ms", type=int, default=30000)
    s.add_argument("--retry-interval", type=float, default=0.01)
    s.set_defaults(fn=cmd_failover)

    a = p.parse_args()
    if getattr(a, "since", "unset") is None:
        a.since = time.time()
    try:
        out = a.fn(a)
    except (OSError, ConnectionError) as e:
        raise SystemExit(f"{a.cmd}: {type(e).__name__}: {e}") from None
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
