"""Produce and consume with every compression codec, through confluent-kafka (librdkafka 2.16)
and kcat (Debian's librdkafka 2.0.2, and the same kcat on the wheel's librdkafka 2.16)."""

from __future__ import annotations

import random

import pytest

from rawkafka import CODEC_IDS, fetch
from e2e_util import (
    assert_all_delivered,
    assert_contiguous,
    assert_matches_deliveries,
    assert_per_key_order,
    bundled_librdkafka,
    consume_confluent,
    create_topic,
    gen_records,
    kafka_partition_for,
    kcat_consume_all,
    kcat_version,
    produce_confluent,
    run_kcat,
)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3


@pytest.mark.timeout(600)
@pytest.mark.parametrize("codec", CODECS)
def test_confluent_10k_keyed_records_roundtrip(broker, codec):
    topic = f"codec-{codec}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    records = gen_records(10_000, n_keys=100, seed=CODECS.index(codec) + 11)

    results = produce_confluent(
        broker.bootstrap,
        topic,
        records,
        conf={
            "compression.type": codec,
            "partitioner": "murmur2_random",
            "linger.ms": 25,
            "batch.num.messages": 1000,
        },
    )
    assert_all_delivered(results)
    wrong = [(i, p) for i, (rec, (_, p, _o)) in enumerate(zip(records, results)) if p != kafka_partition_for(rec.key, PARTITIONS)]
    assert not wrong, f"records acked on a partition other than murmur2(key): {wrong[:5]}"

    got = consume_confluent(broker.bootstrap, topic, range(PARTITIONS), expected=len(records), timeout=180)
    assert_matches_deliveries(records, results, got)
    assert_contiguous(got, range(PARTITIONS))
    assert_per_key_order(records, got)
    # every partition's offsets run from 0 to the number of records acknowledged there
    for p in range(PARTITIONS):
        acked = sorted(off for (_e, pp, off) in results if pp == p)
        assert acked == list(range(len(acked))), f"partition {p}: acked offsets are not 0..n-1"

    # The broker keeps the producer's batches as they were sent (compression.type=producer): magic 2,
    # valid CRC-32C, the producer's codec (librdkafka sends a batch uncompressed when compressing
    # does not make it smaller, so "none" may be mixed in). librdkafka does not check CRCs by default,
    # so they are checked here, on a raw Fetch v11 answer.
    part = fetch(broker.host, broker.port, topic, 0, 0, version=11, max_bytes=256 * 1024)
    assert part.error_code == 0
    batches = part.batches()
    assert batches, "raw Fetch returned no complete batch"
    for b in batches:
        assert b.magic == 2 and b.codec in (0, CODEC_IDS[codec]), f"batch at {b.base_offset}: magic {b.magic}, codec {b.codec}"
        assert b.crc_ok(), f"batch at {b.base_offset}: CRC-32C mismatch"
    assert any(b.codec == CODEC_IDS[codec] for b in batches), f"no batch stored with codec {codec}"

    # Debian's kcat (librdkafka 2.0.2) reads the very same bytes, offsets and timestamps.
    kgot = kcat_consume_all(broker.bootstrap, topic, librdkafka="system", timeout=180)
    by_pos = {(g.partition, g.offset): g for g in got}
    assert len(kgot) == len(got), f"kcat read {len(kgot)} records, confluent-kafka {len(got)}"
    for k in kgot:
        g = by_pos.get((k.partition, k.offset))
        assert g is not None, f"kcat read {k.partition}/{k.offset} that confluent-kafka did not"
        assert (k.key, k.value, k.timestamp) == (g.key, g.value, g.timestamp), (
            f"kcat and confluent-kafka differ at {k.partition}/{k.offset}"
        )


def _kcat_lines(n: int, seed: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    rnd = random.Random(seed)
    keys = [f"k{i:02d}".encode() for i in range(50)]
    pairs = []
    for i in range(n):
        key = rnd.choice(keys)
        value = (f"{i:06d}-".encode() + rnd.randbytes(rnd.randint(0, 300)) + b"vltava" * rnd.randint(0, 50)).hex().encode()
        pairs.append((key, value))
    return pairs, b"".join(k + b":" + v + b"\n" for k, v in pairs)


LIBRDKAFKAS = ["system", "bundled"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("librdkafka", LIBRDKAFKAS)
@pytest.mark.parametrize("codec", CODECS)
def test_kcat_produce_and_consume(broker, codec, librdkafka):
    if librdkafka == "bundled" and bundled_librdkafka() is None:
        pytest.skip("the confluent-kafka wheel ships no librdkafka shared library")
    version = kcat_version(librdkafka)
    if librdkafka == "system":
        assert version.startswith("2.0."), f"Debian's kcat should use librdkafka 2.0.x, got {version}"
    else:
        assert not version.startswith("2.0."), f"LD_LIBRARY_PATH did not switch kcat's librdkafka (still {version})"

    topic = f"kcat-{codec}-{librdkafka}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    pairs, payload = _kcat_lines(2000, seed=CODECS.index(codec) * 7 + len(librdkafka))

    proc = run_kcat(
        [
            "-b",
            broker.bootstrap,
            "-P",
            "-t",
            topic,
            "-z",
            codec,
            "-K:",
            "-H",
            "source=kcat",
            "-H",
            f"codec={codec}",
            "-X",
            "partitioner=murmur2_random",
            "-X",
            "linger.ms=20",
            "-X",
            "broker.address.family=v4",
            "-X",
            "message.timeout.ms=60000",
        ],
        librdkafka=librdkafka,
        input=payload,
        timeout=180,
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"kcat -P (librdkafka {version}) exited {proc.returncode}: {stderr[-2000:]}"
    assert "Delivery failed" not in stderr and "ERROR" not in stderr, stderr[-2000:]

    # stored as kcat's librdkafka sent it: the requested codec (or none where compressing did not pay)
    stored = [b for p in range(PARTITIONS) for b in fetch(broker.host, broker.port, topic, p, 0, version=11).batches()]
    assert stored and all(b.magic == 2 and b.codec in (0, CODEC_IDS[codec]) and b.crc_ok() for b in stored)
    assert any(b.codec == CODEC_IDS[codec] for b in stored), (
        f"kcat (librdkafka {version}) -z {codec}: no batch stored with that codec; "
        f"codecs seen {sorted({b.codec for b in stored})}"
    )

    # kcat reads it back (length-prefixed format, so nothing depends on the bytes' content)
    kgot = kcat_consume_all(broker.bootstrap, topic, librdkafka=librdkafka, timeout=120)
    assert len(kgot) == len(pairs), f"kcat read {len(kgot)} of {len(pairs)} records"
    assert_contiguous(kgot, range(PARTITIONS))
    seen: dict[bytes, list[bytes]] = {}
    for g in sorted(kgot, key=lambda g: (g.partition, g.offset)):
        assert g.partition == kafka_partition_for(g.key, PARTITIONS), f"{g.key!r} stored on partition {g.partition}"
        seen.setdefault(g.key, []).append(g.value)
    want: dict[bytes, list[bytes]] = {}
    for k, v in pairs:
        want.setdefault(k, []).append(v)
    assert seen == want, "kcat round trip lost, duplicated, altered or reordered records"

    # confluent-kafka sees the same records, with kcat's headers
    got = consume_confluent(broker.bootstrap, topic, range(PARTITIONS), expected=len(pairs))
    assert len(got) == len(pairs)
    kpos = {(g.partition, g.offset): g for g in kgot}
    for g in got:
        k = kpos[(g.partition, g.offset)]
        assert (g.key, g.value) == (k.key, k.value)
        assert g.headers == (("source", b"kcat"), ("codec", codec.encode())), f"headers at {g.partition}/{g.offset}: {g.headers}"
