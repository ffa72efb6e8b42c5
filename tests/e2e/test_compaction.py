"""Log compaction of a user topic through real clients: many updates per key plus tombstones;
after the cleaner runs only the latest record per key is left, at its original offset, and
tombstones disappear once delete.retention.ms has passed."""

import time

import pytest

from e2e_util import Rec, assert_all_delivered, consume_confluent, create_topic, produce_confluent, wait_for

TOPIC = "compacted"
KEYS = 50
ROUNDS = 20


def _read_all(bootstrap):
    return consume_confluent(bootstrap, TOPIC, [0], timeout=60)


@pytest.mark.timeout(180)
def test_compaction_keeps_latest_value_per_key_and_drops_tombstones(broker_factory):
    b = broker_factory({"log.cleaner.backoff.ms": 200})
    create_topic(
        b.bootstrap,
        TOPIC,
        1,
        {
            "cleanup.policy": "compact",
            "segment.bytes": 16384,
            "min.cleanable.dirty.ratio": 0.01,
            "delete.retention.ms": 3000,
        },
    )
    records = []
    for r in range(ROUNDS):
        for k in range(KEYS):
            records.append(Rec(key=f"key-{k}".encode(), value=f"round-{r}-{k}".encode() * 4))
    # Tombstones for the first ten keys, then enough filler for the tombstones to leave the
    # active segment (the cleaner never touches it).
    records += [Rec(key=f"key-{k}".encode(), value=None) for k in range(10)]
    records += [Rec(key=f"filler-{i}".encode(), value=b"x" * 500) for i in range(60)]
    results = produce_confluent(b.bootstrap, TOPIC, records, conf={"linger.ms": 0, "batch.num.messages": 1})
    assert_all_delivered(results)
    offsets = {i: r[2] for i, r in enumerate(results)}
    latest = {}
    for i, rec in enumerate(records):
        latest[rec.key] = (offsets[i], rec.value)

    def compacted():
        got = _read_all(b.bootstrap)
        keyed = [g for g in got if g.key.startswith(b"key-")]
        return got if len(keyed) <= KEYS else None

    got = wait_for(compacted, timeout=60, desc="the cleaner to compact the topic")
    offs = [g.offset for g in got]
    assert offs == sorted(offs) and len(set(offs)) == len(offs), "offsets must stay strictly increasing"
    by_key = {}
    for g in got:
        assert g.key not in by_key, f"key {g.key!r} appears twice after compaction"
        by_key[g.key] = (g.offset, g.value)
    for k in range(10, KEYS):
        key = f"key-{k}".encode()
        assert by_key[key] == latest[key], f"{key!r}: {by_key.get(key)} != latest {latest[key]}"
    # Tombstones are still there (as null values at their original offsets) until the horizon.
    for k in range(10):
        key = f"key-{k}".encode()
        if key in by_key:
            assert by_key[key] == latest[key] and by_key[key][1] is None

    # After delete.retention.ms a later cleaning removes them; more filler makes the log dirty.
    time.sleep(3.5)
    more = [Rec(key=f"filler-late-{i}".encode(), value=b"y" * 500) for i in range(60)]
    assert_all_delivered(produce_confluent(b.bootstrap, TOPIC, more, conf={"linger.ms": 0, "batch.num.messages": 1}))

    def tombstones_gone():
        got = _read_all(b.bootstrap)
        keys = {g.key for g in got}
        return got if not any(f"key-{k}".encode() in keys for k in range(10)) else None

    got = wait_for(tombstones_gone, timeout=60, desc="tombstones to be removed after delete.retention.ms")
    for k in range(10, KEYS):
        key = f"key-{k}".encode()
        match = [g for g in got if g.key == key]
        assert len(match) == 1 and (match[0].offset, match[0].value) == latest[key]


@pytest.mark.timeout(60)
def test_compacted_topic_refuses_keyless_records(broker):
    create_topic(broker.bootstrap, "compacted-nokey", 1, {"cleanup.policy": "compact"})
    results = produce_confluent(broker.bootstrap, "compacted-nokey", [Rec(key=None, value=b"v")], conf={"retries": 0})
    err = results[0][0]
    assert err is not None and err.name() in ("INVALID_RECORD",), f"expected INVALID_RECORD, got {err}"
    ok = produce_confluent(broker.bootstrap, "compacted-nokey", [Rec(key=b"k", value=b"v")])
    assert_all_delivered(ok)
