"""Client-side helpers shared by the end-to-end tests (confluent-kafka, kafka-python, kcat, node)."""

from __future__ import annotations

import glob
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

E2E_DIR = Path(__file__).resolve().parent
NODE_DIR = E2E_DIR / "node"

# librdkafka's log lines go to a Python logger, so pytest shows them with the test that failed
# (and a client left alive by a failed test does not flood the terminal once its broker is gone).
RDKAFKA_LOG_LEVEL = int(os.environ.get("VLTAVA_E2E_RDKAFKA_LOG_LEVEL", "6"))
RDKAFKA_LOGGER = logging.getLogger("rdkafka")
CONSUMER_GROUP = "vltava-e2e-assign-only"  # never used for a coordinator call: consumers only assign()


# ----------------------------------------------------------------------------- generic waiting
def wait_for(cond: Callable[[], object], timeout: float, desc: str, interval: float = 0.2):
    """Poll `cond` until it returns a truthy value; fail with `desc` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:  # keep polling, report the last error
            last_exc = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {desc}; last error: {last_exc!r}")
        time.sleep(interval)


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Rec:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int | None = None  # ms since epoch, CreateTime; None: let the client set it


@dataclass(frozen=True)
class Got:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int


def gen_records(n: int, n_keys: int = 100, seed: int = 1, null_values: bool = True) -> list[Rec]:
    """Deterministic keyed records: varied value sizes (0 B to ~6 KB), compressible and random
    parts, binary bytes, some headers (incl. repeated names and a null header value), a few null values."""
    rnd = random.Random(seed)
    keys = [f"key-{i:03d}".encode() for i in range(n_keys)]
    text = b"The Vltava flows through Prague. " * 200
    out = []
    for i in range(n):
        key = rnd.choice(keys)
        kind = i % 10
        if kind == 0:
            size = rnd.randint(0, 16)
        elif kind == 9:
            size = rnd.randint(2000, 6000)
        else:
            size = rnd.randint(50, 1200)
        start = rnd.randint(0, 500)
        value = f"#{i}:".encode() + text[start : start + size // 2] + rnd.randbytes(size - size // 2)
        if null_values and i % 397 == 5:
            value = None
        elif i % 211 == 7:
            value = b""
        headers: tuple[tuple[str, bytes | None], ...] = ()
        if i % 3 == 0:
            headers = (("seq", str(i).encode()), ("bin", rnd.randbytes(rnd.randint(0, 40))))
        if i % 17 == 0:
            headers = headers + (("dup", b"first"), ("dup", b"second"), ("nullhdr", None))
        out.append(Rec(key, value, headers))
    return out


def norm_headers(h) -> tuple[tuple[str, bytes | None], ...]:
    if not h:
        return ()
    return tuple((k, v) for k, v in h)


# ----------------------------------------------------------------------------- Kafka's murmur2
def murmur2(data: bytes) -> int:
    """Kafka's org.apache.kafka.common.utils.Utils.murmur2 (signed 32-bit result)."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = data[i4] | (data[i4 + 1] << 8) | (data[i4 + 2] << 16) | (data[i4 + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    extra = length % 4
    idx = length & ~3
    if extra == 3:
        h ^= data[idx + 2] << 16
    if extra >= 2:
        h ^= data[idx + 1] << 8
    if extra >= 1:
        h ^= data[idx]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    if h & 0x80000000:
        h -= 1 << 32
    return h


def kafka_partition_for(key: bytes, num_partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


# ----------------------------------------------------------------------------- confluent-kafka
def base_conf(bootstrap: str) -> dict:
    return {
        "bootstrap.servers": bootstrap,
        "log_level": RDKAFKA_LOG_LEVEL,
        "logger": RDKAFKA_LOGGER,
        "socket.timeout.ms": 20000,
        "broker.address.family": "v4",
    }


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient(base_conf(bootstrap))


def topic_partition_counts(bootstrap: str, timeout: float = 15) -> dict[str, int]:
    """All topics (a Metadata request for all topics never auto-creates) -> partition count."""
    md = admin_client(bootstrap).list_topics(timeout=timeout)
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict | None = None, timeout: float = 30) -> None:
    admin = admin_client(bootstrap)
    fut = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=timeout,
        request_timeout=timeout,
    )[name]
    fut.result(timeout=timeout)
    wait_topic(bootstrap, name, partitions, timeout=timeout)


def wait_topic(bootstrap: str, name: str, partitions: int, timeout: float = 30) -> None:
    def ready():
        md = admin_client(bootstrap).list_topics(timeout=10)
        t = md.topics.get(name)
        return (
            t is not None
            and t.error is None
            and len(t.partitions) == partitions
            and all(p.leader >= 0 for p in t.partitions.values())
        )

    wait_for(ready, timeout, f"topic {name} with {partitions} partitions and leaders in metadata")


class DeliveryTracker:
    def __init__(self):
        self.results: dict[int, tuple[KafkaError | None, int, int]] = {}

    def callback(self, idx: int):
        def cb(err, msg):
            self.results[idx] = (err, msg.partition(), msg.offset())

        return cb


def produce_confluent(
    bootstrap: str,
    topic: str,
    records: Sequence[Rec],
    conf: dict | None = None,
    partition: int | None = None,
    flush_timeout: float = 120,
) -> list[tuple[KafkaError | None, int, int]]:
    """Produce every record (in order) and return, per record, (error, partition, offset)."""
    pconf = base_conf(bootstrap)
    pconf.update({"linger.ms": 20, "acks": "all", "message.timeout.ms": 60000})
    pconf.update(conf or {})
    producer = Producer(pconf)
    tracker = DeliveryTracker()
    deadline = time.monotonic() + flush_timeout
    for idx, rec in enumerate(records):
        kwargs = {"key": rec.key, "value": rec.value, "on_delivery": tracker.callback(idx)}
        if rec.headers:
            kwargs["headers"] = list(rec.headers)
        if rec.timestamp is not None:
            kwargs["timestamp"] = rec.timestamp
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                if time.monotonic() > deadline:
                    raise AssertionError("producer queue stayed full until the deadline")
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(max(1.0, deadline - time.monotonic()))
    assert remaining == 0, f"{remaining} messages still undelivered after {flush_timeout}s"
    assert len(tracker.results) == len(records), "missing delivery reports"
    return [tracker.results[i] for i in range(len(records))]


def assert_all_delivered(results, what: str = "records") -> None:
    errors = [(i, r[0]) for i, r in enumerate(results) if r[0] is not None]
    assert not errors, f"{len(errors)} of {len(results)} {what} failed delivery; first: {errors[:3]}"


def consume_confluent(
    bootstrap: str,
    topic: str,
    partitions: Iterable[int],
    expected: int | None = None,
    timeout: float = 90,
    conf: dict | None = None,
) -> list[Got]:
    """Read every assigned partition from the beginning until each has reported end-of-partition
    and (if given) at least `expected` records have arrived. Manual assignment, no group calls."""
    cconf = base_conf(bootstrap)
    cconf.update(
        {
            "group.id": CONSUMER_GROUP,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 200,
        }
    )
    cconf.update(conf or {})
    consumer = Consumer(cconf)
    parts = list(partitions)
    got: list[Got] = []
    errors: list[str] = []
    eof: dict[int, int] = {}
    try:
        consumer.assign([TopicPartition(topic, p, -2) for p in parts])  # -2 = OFFSET_BEGINNING
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in consumer.consume(num_messages=1000, timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof[m.partition()] = m.offset()
                    else:
                        errors.append(f"{err.name()}: {err.str()} (partition {m.partition()})")
                    continue
                eof.pop(m.partition(), None)
                ts_type, ts = m.timestamp()
                got.append(Got(m.partition(), m.offset(), m.key(), m.value(), norm_headers(m.headers()), ts))
            if len(eof) == len(parts) and (expected is None or len(got) >= expected):
                break
        else:
            raise AssertionError(
                f"consuming {topic}: timed out after {timeout}s with {len(got)} records"
                f" (expected {expected}), partitions at EOF: {sorted(eof.items())}; errors: {errors[:5]}"
            )
    finally:
        consumer.close()
    fatal = [e for e in errors if not e.startswith("_TRANSPORT")]
    assert not fatal, f"consumer errors on {topic}: {fatal[:5]}"
    return got


def watermarks(bootstrap: str, topic: str, partition: int, timeout: float = 15) -> tuple[int, int]:
    cconf = base_conf(bootstrap)
    cconf.update({"group.id": CONSUMER_GROUP, "enable.auto.commit": False})
    c = Consumer(cconf)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
    finally:
        c.close()


def assert_contiguous(got: Sequence[Got], partitions: Iterable[int], start: int = 0) -> None:
    by_p: dict[int, list[int]] = {}
    for g in got:
        by_p.setdefault(g.partition, []).append(g.offset)
    for p in partitions:
        offs = by_p.get(p, [])
        assert offs == list(range(start, start + len(offs))), (
            f"partition {p}: offsets not contiguous from {start}: first gaps at "
            f"{[(a, b) for a, b in zip(offs, offs[1:]) if b != a + 1][:5]}"
        )


def assert_matches_deliveries(records: Sequence[Rec], results, got: Sequence[Got], check_headers: bool = True) -> None:
    """Each acknowledged record is found exactly once at the (partition, offset) its ack named,
    byte-identical; nothing else is there."""
    at = {}
    for g in got:
        assert (g.partition, g.offset) not in at, f"offset {(g.partition, g.offset)} delivered twice to the consumer"
        at[(g.partition, g.offset)] = g
    assert len(got) == len(records), f"consumed {len(got)} records, produced {len(records)}"
    mismatches = []
    for i, (rec, (err, p, off)) in enumerate(zip(records, results)):
        assert err is None
        g = at.get((p, off))
        if g is None:
            mismatches.append(f"record #{i} acked at {p}/{off} is missing")
        elif g.key != rec.key or g.value != rec.value:
            mismatches.append(
                f"record #{i} at {p}/{off}: key {g.key!r:.40} vs {rec.key!r:.40}, value"
                f" len {None if g.value is None else len(g.value)} vs {None if rec.value is None else len(rec.value)}"
                f" equal={g.value == rec.value}"
            )
        elif check_headers and g.headers != tuple(rec.headers):
            mismatches.append(f"record #{i} at {p}/{off}: headers {g.headers!r:.200} vs {tuple(rec.headers)!r:.200}")
        if len(mismatches) >= 10:
            break
    assert not mismatches, "\n".join(mismatches)


def assert_per_key_order(records: Sequence[Rec], got: Sequence[Got]) -> None:
    """Consumed in (partition, offset) order, each key's values appear in produce order."""
    want: dict[bytes | None, list] = {}
    for r in records:
        want.setdefault(r.key, []).append(r.value)
    have: dict[bytes | None, list] = {}
    for g in sorted(got, key=lambda g: (g.partition, g.offset)):
        have.setdefault(g.key, []).append(g.value)
    for k, vals in want.items():
        assert have.get(k) == vals, f"key {k!r}: values out of order or missing"


# ----------------------------------------------------------------------------- kcat
def kcat_path() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    assert path, "kcat not installed (scripts/test installs it with apt-get)"
    return path


def bundled_librdkafka() -> Path | None:
    """The librdkafka shared library that ships inside the confluent-kafka wheel."""
    import confluent_kafka

    site = Path(confluent_kafka.__file__).resolve().parent.parent
    for pattern in (
        "confluent_kafka.libs/librdkafka*.so*",
        "confluent_kafka/.libs/librdkafka*.so*",
        "confluent_kafka/librdkafka*.so*",
    ):
        hits = sorted(glob.glob(str(site / pattern)))
        if hits:
            return Path(hits[0])
    return None


_LIBDIR: Path | None = None


def kcat_env(librdkafka: str) -> dict:
    """Environment for kcat on Debian's librdkafka ("system") or the wheel's ("bundled").
    The wheel's library carries a hashed file name, so a symlink named librdkafka.so.1 is made."""
    global _LIBDIR
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    if librdkafka == "bundled":
        lib = bundled_librdkafka()
        assert lib is not None, "confluent-kafka wheel has no bundled librdkafka"
        if _LIBDIR is None:
            _LIBDIR = Path(tempfile.mkdtemp(prefix="vltava-rdkafka-"))
            (_LIBDIR / "librdkafka.so.1").symlink_to(lib)
        env["LD_LIBRARY_PATH"] = str(_LIBDIR)
    return env


def kcat_version(librdkafka: str) -> str:
    out = subprocess.run([kcat_path(), "-V"], env=kcat_env(librdkafka), capture_output=True, timeout=30, text=True)
    m = re.search(r"librdkafka (\d+\.\d+\.\d+)", out.stdout)
    return m.group(1) if m else "unknown"


def run_kcat(args: list[str], librdkafka: str = "system", input: bytes | None = None, timeout: float = 120):
    cmd = [kcat_path(), *args]
    proc = subprocess.run(
        cmd,
        input=input,
        capture_output=True,
        env=kcat_env(librdkafka),
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    return proc


def parse_kcat_lenprefixed(out: bytes) -> list[Got]:
    """Parse kcat -C output in the format  'P,O,T,KLEN,VLEN;' KEY VALUE '\\n'  (lengths -1 for null)."""
    got = []
    pos = 0
    n = len(out)
    while pos < n:
        semi = out.index(b";", pos)
        p, o, ts, kl, vl = (int(x) for x in out[pos:semi].split(b","))
        pos = semi + 1
        key = None if kl < 0 else out[pos : pos + kl]
        pos += max(kl, 0)
        value = None if vl < 0 else out[pos : pos + vl]
        pos += max(vl, 0)
        assert out[pos : pos + 1] == b"\n", f"kcat output framing broken at byte {pos}"
        pos += 1
        got.append(Got(p, o, key, value, (), ts))
    return got


KCAT_LENPREFIXED_FORMAT = "%p,%o,%T,%K,%S;%k%s\n"


def kcat_consume_all(bootstrap: str, topic: str, librdkafka: str = "system", timeout: float = 120) -> list[Got]:
    proc = run_kcat(
        [
            "-b",
            bootstrap,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-X",
            "broker.address.family=v4",
            "-f",
            KCAT_LENPREFIXED_FORMAT,
        ],
        librdkafka=librdkafka,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"kcat -C failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}"
    return parse_kcat_lenprefixed(proc.stdout)


# ----------------------------------------------------------------------------- node
def node_path() -> str:
    path = shutil.which("node")
    assert path, "node not installed"
    return path


def python_exe() -> str:
    return sys.executable
