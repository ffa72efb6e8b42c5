"""The native Rust client and kafka-python 3.0 (pure Python, its own wire and record code) both ways,
for every codec, plus the native consumer's regex subscription:

* records written by `vltava produce` (keys, UTF-8 values, headers incl. an empty value and a
  non-ASCII name) are read by kafka-python's KafkaConsumer with identical keys, values, headers and
  timestamps: the timestamps `vltava consume --format json` shows, CreateTime, set by the native
  producer while it ran (`vltava produce` has no flag for explicit timestamps); the batches are
  stored with the codec asked for, so kafka-python really decoded each codec;
* records written by kafka-python's KafkaProducer (keys, binary, empty and null values, headers with
  repeats and binary values, explicit timestamp_ms) with every codec are printed by `vltava consume
  --format json` exactly as produced, at the partition and offset kafka-python's acknowledgement named
  (kafka-python's producer refuses null header values, so there are none);
* `vltava consume --pattern REGEX --group G` reads the matching topics, picks up a topic created after
  it subscribed (the consumer rejoins the group at the next metadata refresh) and never reads a topic
  that does not match; a bad pattern, or one without --group, is a usage error (exit 2, one line).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from e2e_util import (
    Got,
    Rec,
    assert_matches_deliveries,
    create_topic,
    gen_records,
    kafka_partition_for,
    wait_for,
)
from group_util import GROUP_SETTINGS
from rawkafka import CODEC_IDS, fetch

REPO_ROOT = Path(__file__).resolve().parents[2]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3
# Explicit kafka-python timestamps: record i at T0 + i, an hour ago (well inside the retention).
T0 = (int(time.time()) - 3600) * 1000


# ----------------------------------------------------------------------------- the vltava CLI
def vltava_bin() -> str:
    return str(Path(os.environ.get("VLTAVA_BIN", str(REPO_ROOT / "target" / "debug" / "vltava"))).resolve())


def cli_env() -> dict:
    # A VLTAVA_BOOTSTRAP from the caller's shell must not leak into the tests.
    return {k: v for k, v in os.environ.items() if not k.startswith("VLTAVA_")}


def run_cli(*args: str, input: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([vltava_bin(), *args], input=input, capture_output=True, timeout=timeout, env=cli_env())


def ok(*args: str, input: bytes = b"") -> bytes:
    p = run_cli(*args, input=input)
    assert p.returncode == 0, f"vltava {' '.join(args)} exited {p.returncode}\nstderr:\n{p.stderr.decode(errors='replace')}"
    return p.stdout


def usage_error(*args: str) -> str:
    """Runs the CLI expecting exit 2 and exactly one line on stderr; returns that line."""
    p = run_cli(*args, timeout=60)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 2, f"vltava {' '.join(args)}: exit {p.returncode}, expected 2\nstderr:\n{err}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    return lines[0]


def from_json_bytes(v) -> bytes | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v.encode()
    return base64.b64decode(v["base64"])


def parse_json_line(line: bytes) -> tuple[str, Got]:
    d = json.loads(line)
    headers = tuple((h["key"], from_json_bytes(h["value"])) for h in d["headers"])
    got = Got(d["partition"], d["offset"], from_json_bytes(d["key"]), from_json_bytes(d["value"]), headers, d["timestamp"])
    return d["topic"], got


def vltava_consume_all(bootstrap: str, topic: str, count: int) -> list[Got]:
    out = ok("consume", topic, "--from-beginning", "--count", str(count), "--format", "json", "--bootstrap-server", bootstrap)
    got = [parse_json_line(line)[1] for line in out.splitlines() if line.strip()]
    assert len(got) == count, f"vltava consume printed {len(got)} records, expected {count}"
    return got


def stored_codecs(broker, topic: str) -> set[int]:
    """Codec ids of every batch stored in the topic (raw Fetch), after checking magic and CRC."""
    batches = [b for p in range(PARTITIONS) for b in fetch(broker.host, broker.port, topic, p, 0, version=11).batches()]
    assert batches and all(b.magic == 2 and b.crc_ok() for b in batches)
    return {b.codec for b in batches}


def assert_kafka_python_codecs(broker, topic: str, codec: str) -> None:
    """Every batch kafka-python produced is in `codec`, except the ones its producer sent uncompressed on
    purpose: it drops compression from a batch the codec would not make smaller (DefaultRecordBatchBuilder's
    _maybe_compress), which happens to small batches. Those are recompressed here to prove that was why."""
    from kafka import codec as kcodec

    batches = [b for p in range(PARTITIONS) for b in fetch(broker.host, broker.port, topic, p, 0, version=11).batches()]
    assert batches and all(b.magic == 2 and b.crc_ok() for b in batches)
    want = CODEC_IDS[codec]
    assert any(b.codec == want for b in batches), "no batch stored with the codec asked for"
    encode = {"gzip": kcodec.gzip_encode, "snappy": kcodec.snappy_encode, "lz4": kcodec.lz4_encode, "zstd": kcodec.zstd_encode}
    for b in batches:
        if b.codec == want:
            continue
        assert b.codec == 0 and codec != "none", f"batch at {b.base_offset} stored with codec {b.codec}, asked for {want}"
        records = b.raw[61:]
        assert len(encode[codec](records)) >= len(records), (
            f"batch at {b.base_offset} ({b.record_count} records) is uncompressed though {codec} would shrink it"
        )


# ----------------------------------------------------------------------------- kafka-python
def kafka_python_has(codec: str) -> bool:
    from kafka import codec as kcodec

    return {
        "none": True,
        "gzip": kcodec.has_gzip(),
        "snappy": kcodec.has_snappy(),
        "lz4": kcodec.has_lz4(),
        "zstd": kcodec.has_zstd(),
    }[codec]


def require_codec(codec: str) -> None:
    # A missing package is a broken environment, not a reason to skip: tests/e2e/requirements.txt has them.
    assert kafka_python_has(codec), f"kafka-python cannot handle {codec}: install tests/e2e/requirements.txt"


def kafka_python_read(bootstrap: str, topic: str, count: int) -> dict[tuple[int, int], tuple]:
    """(partition, offset) -> (key, value, headers, timestamp, timestamp_type), read by kafka-python from
    the start of every partition (manual assignment, no group); fails on a duplicate or an extra record."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KPTopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=30000,
        fetch_max_wait_ms=200,
    )
    got: dict[tuple[int, int], tuple] = {}
    try:
        tps = [KPTopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 120
        while len(got) < count and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=500, max_records=1000).values():
                for m in msgs:
                    assert (m.partition, m.offset) not in got, f"record {m.partition}/{m.offset} delivered twice"
                    headers = tuple((k, v) for k, v in m.headers)
                    got[(m.partition, m.offset)] = (m.key, m.value, headers, m.timestamp, m.timestamp_type)
        extra = consumer.poll(timeout_ms=1000)
        assert not any(extra.values()), f"unexpected extra records: {extra}"
    finally:
        consumer.close()
    assert len(got) == count, f"kafka-python read {len(got)} of {count} records"
    return got


def kafka_python_produce(bootstrap: str, topic: str, records: list[Rec], codec: str) -> list[tuple[None, int, int]]:
    """Produces in order with explicit timestamps; returns (None, partition, offset) per record."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type=None if codec == "none" else codec,
        linger_ms=20,
        batch_size=64 * 1024,
        request_timeout_ms=30000,
        max_block_ms=30000,
    )
    try:
        futures = [
            producer.send(topic, key=r.key, value=r.value, headers=list(r.headers), timestamp_ms=r.timestamp) for r in records
        ]
        producer.flush(timeout=120)
        metas = [f.get(timeout=60) for f in futures]
    finally:
        producer.close(timeout=30)
    return [(None, m.partition, m.offset) for m in metas]


# ============================================================================ vltava -> kafka-python
def keyed_lines(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, value) lines: 30 keys, values with spaces, UTF-8, '=' and ':', varied lengths."""
    return [
        (f"key-{(i * 7 + seed) % 30:02d}".encode(), f"value {i} – Vltava ≈ {seed} a=b:c {'x' * (i * 13 % 700)}".encode())
        for i in range(n)
    ]


HEADERS = (("source", b"vltava-cli"), ("eq", b"a=b"), ("empty", b""), ("město", "Vltava ≈ Moldau".encode()))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_reads_what_vltava_produced(broker, codec):
    require_codec(codec)
    bs = broker.bootstrap
    topic = f"interop-vltava-{codec}"
    create_topic(bs, topic, PARTITIONS)
    pairs = keyed_lines(500, seed=CODECS.index(codec))
    header_flags = [arg for k, v in HEADERS for arg in ("--header", f"{k}={v.decode()}")]
    before = int(time.time() * 1000)
    ok(
        "produce", topic, "--bootstrap-server", bs, "--key-separator", "\t", "--compression", codec, *header_flags,
        input=b"".join(k + b"\t" + v + b"\n" for k, v in pairs),
    )  # fmt: skip
    after = int(time.time() * 1000)
    assert stored_codecs(broker, topic) == {CODEC_IDS[codec]}, "batches not stored with the codec asked for"

    ours = vltava_consume_all(bs, topic, len(pairs))
    theirs = kafka_python_read(bs, topic, len(pairs))
    # kafka-python reads every field exactly as the native consumer does.
    assert {(g.partition, g.offset) for g in ours} == set(theirs)
    differ = []
    for g in ours:
        key, value, headers, ts, ts_type = theirs[(g.partition, g.offset)]
        if (key, value, headers, ts) != (g.key, g.value, g.headers, g.timestamp) or ts_type != 0:
            differ.append(f"{g.partition}/{g.offset}: kafka-python {(key, value[:40], headers, ts, ts_type)!r:.300}")
    assert not differ, "\n".join(differ[:10])

    # And that is what was written: every header on every record, CreateTime of the produce run,
    # keyed records in murmur2's partition, each key's values in line order.
    assert all(g.headers == HEADERS for g in ours)
    assert all(before <= g.timestamp <= after for g in ours), (before, after, sorted({g.timestamp for g in ours})[:5])
    assert all(g.partition == kafka_partition_for(g.key, PARTITIONS) for g in ours)
    want: dict[bytes, list[bytes]] = {}
    for k, v in pairs:
        want.setdefault(k, []).append(v)
    have: dict[bytes, list[bytes]] = {}
    for g in sorted(ours, key=lambda g: (g.partition, g.offset)):
        have.setdefault(g.key, []).append(g.value)
    assert have == want


# ============================================================================ kafka-python -> vltava
@pytest.mark.timeout(300)
@pytest.mark.parametrize("codec", CODECS)
def test_vltava_reads_what_kafka_python_produced(broker, codec):
    require_codec(codec)
    bs = broker.bootstrap
    topic = f"interop-kp-{codec}"
    create_topic(bs, topic, PARTITIONS)
    records = [
        # kafka-python's producer refuses null header values (TypeError): leave those out.
        Rec(r.key, r.value, tuple(h for h in r.headers if h[1] is not None), T0 + i)
        for i, r in enumerate(gen_records(800, n_keys=40, seed=CODECS.index(codec) + 301))
    ]
    assert any(r.value is None for r in records) and any(r.value == b"" for r in records)
    assert any(("dup", b"first") in r.headers for r in records)
    results = kafka_python_produce(bs, topic, records, codec)
    assert_kafka_python_codecs(broker, topic, codec)

    got = vltava_consume_all(bs, topic, len(records))
    # Keys, values (binary, empty, null) and headers (repeats, binary values) at the acknowledged offsets.
    assert_matches_deliveries(records, results, got)
    want_ts = {(p, off): r.timestamp for r, (_e, p, off) in zip(records, results)}
    wrong_ts = [(g.partition, g.offset, g.timestamp) for g in got if g.timestamp != want_ts[(g.partition, g.offset)]]
    assert not wrong_ts, f"timestamps differ: {wrong_ts[:5]}"
    assert all(p == kafka_partition_for(r.key, PARTITIONS) for r, (_e, p, _o) in zip(records, results))


# ============================================================================ regex subscription
class PatternMember:
    """`vltava consume --pattern REGEX --group G` in its own process; a thread collects its JSON lines."""

    def __init__(self, bootstrap: str, pattern: str, group: str):
        self.proc = subprocess.Popen(
            [
                vltava_bin(), "consume",
                "--pattern", pattern,
                "--group", group,
                "--from-beginning",
                "--format", "json",
                "--bootstrap-server", bootstrap,
                # New topics are found at the next metadata refresh.
                "--set", "metadata.max.age.ms=500",
                "--set", "fetch.max.wait.ms=100",
                "--set", "session.timeout.ms=6000",
                "--set", "heartbeat.interval.ms=500",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(),
        )  # fmt: skip
        self.got: list[tuple[str, Got]] = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                rec = parse_json_line(line)
                with self.lock:
                    self.got.append(rec)

    def records(self, topic: str | None = None) -> list[Got]:
        with self.lock:
            return [g for t, g in self.got if topic is None or t == topic]

    def topics(self) -> set[str]:
        with self.lock:
            return {t for t, _g in self.got}

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        self.reader.join(timeout=5)
        return self.proc.returncode, (err or b"").decode(errors="replace")


def produce_lines(bootstrap: str, topic: str, prefix: str, n: int) -> list[bytes]:
    values = [f"{prefix}-{i}".encode() for i in range(n)]
    ok("produce", topic, "--bootstrap-server", bootstrap, input=b"".join(v + b"\n" for v in values))
    return values


def assigned_topics(bootstrap: str, group: str) -> set[str] | None:
    """The topics assigned in the group while it is Stable (None otherwise)."""
    p = run_cli("group", "describe", group, "--json", "--bootstrap-server", bootstrap, timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    d = json.loads(p.stdout)
    if d["state"] != "Stable":
        return None
    return {a["topic"] for m in d["members"] for a in (m["assignment"] or [])}


@pytest.mark.timeout(180)
def test_pattern_subscription_reads_topics_created_later(broker_factory):
    bs = broker_factory(GROUP_SETTINGS).bootstrap
    group = "interop-pattern"
    create_topic(bs, "rx-orders", 2)
    create_topic(bs, "other-orders", 1)
    orders = produce_lines(bs, "rx-orders", "order", 10)
    produce_lines(bs, "other-orders", "other", 5)

    member = PatternMember(bs, "rx-.*", group)
    try:
        wait_for(lambda: len(member.records("rx-orders")) >= len(orders), 60, "the records of rx-orders")
        assert assigned_topics(bs, group) == {"rx-orders"}

        # A topic created after the consumer subscribed: it joins the subscription, the member
        # rejoins and reads it from the start; a new record in a non-matching topic stays unread.
        create_topic(bs, "rx-payments", 1)
        payments = produce_lines(bs, "rx-payments", "payment", 7)
        produce_lines(bs, "other-orders", "other-late", 3)
        wait_for(lambda: len(member.records("rx-payments")) >= len(payments), 60, "the records of rx-payments")
        wait_for(lambda: assigned_topics(bs, group) == {"rx-orders", "rx-payments"}, 30, "both topics assigned")
        time.sleep(1.5)  # room for anything that should not come
    finally:
        code, err = member.stop()
    assert code == 0, f"vltava consume --pattern exited {code}\nstderr:\n{err}"
    assert member.topics() == {"rx-orders", "rx-payments"}
    assert sorted(g.value for g in member.records("rx-orders")) == sorted(orders)
    assert [g.value for g in member.records("rx-payments")] == payments
    assert [g.offset for g in member.records("rx-payments")] == list(range(len(payments)))

    # Usage errors: exit 2, one line.
    line = usage_error("consume", "--pattern", "rx-(", "--group", "g", "--bootstrap-server", bs)
    assert line.startswith("error: invalid value 'rx-(' for '--pattern <REGEX>'") and "unclosed group" in line, line
    assert usage_error("consume", "--pattern", "rx-.*", "--bootstrap-server", bs).startswith("error:")
    assert usage_error("consume", "rx-orders", "--pattern", "rx-.*", "--group", "g").startswith("error:")
