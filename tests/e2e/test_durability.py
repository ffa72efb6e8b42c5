"""Durability settings and disk errors through real clients: flush.on.append, a full disk
(KAFKA_STORAGE_ERROR, reads keep working, appends resume when space returns)."""

import os
import subprocess

import pytest
from confluent_kafka import KafkaError, Producer

from conftest import Broker
from e2e_util import Rec, assert_all_delivered, base_conf, consume_confluent, create_topic, produce_confluent


@pytest.mark.timeout(120)
def test_flush_on_append_topic_roundtrip(broker_factory):
    b = broker_factory({"log.segment.bytes": 1048576})
    create_topic(b.bootstrap, "durable", 2, {"flush.on.append": "true"})
    recs = [Rec(key=f"k{i}".encode(), value=os.urandom(200)) for i in range(5000)]
    res = produce_confluent(b.bootstrap, "durable", recs, conf={"enable.idempotence": True})
    assert_all_delivered(res)
    got = consume_confluent(b.bootstrap, "durable", [0, 1], expected=len(recs))
    assert sorted(g.value for g in got) == sorted(r.value for r in recs)
    # Acknowledged records are on disk: they survive a SIGKILL (and, per the storage tests,
    # a power loss, since each acknowledgement waited for an fsync).
    b.restart(__import__("signal").SIGKILL)
    got = consume_confluent(b.bootstrap, "durable", [0, 1], expected=len(recs))
    assert len(got) == len(recs)


def _produce_until_error(bootstrap: str, topic: str, limit: int) -> tuple[int, KafkaError | None]:
    conf = base_conf(bootstrap)
    conf.update({"acks": "1", "retries": 0, "linger.ms": 5, "message.timeout.ms": 20000, "enable.idempotence": False})
    p = Producer(conf)
    state = {"acked": 0, "error": None}

    def cb(err, msg):
        if err is None:
            state["acked"] += 1
        elif state["error"] is None:
            state["error"] = err

    for i in range(limit):
        while True:
            try:
                p.produce(topic, key=f"k{i}".encode(), value=os.urandom(1000), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
        if state["error"] is not None:
            break
    p.flush(30)
    return state["acked"], state["error"]


@pytest.mark.timeout(180)
def test_full_disk_returns_storage_error_and_recovers(tmp_path):
    b = Broker(tmp_path / "full", {"log.segment.bytes": 1048576, "offsets.topic.num.partitions": 1})
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(b.data_dir)]).returncode != 0:
        pytest.fail("cannot mount a small tmpfs (the e2e suite runs as root)")
    try:
        b.start()
        create_topic(b.bootstrap, "fill", 1)
        acked, err = _produce_until_error(b.bootstrap, "fill", 40000)
        assert err is not None, f"16 MiB should fill up; {acked} records acknowledged without error"
        assert err.code() == KafkaError.KAFKA_STORAGE_ERROR, f"expected KAFKA_STORAGE_ERROR, got {err}"
        assert b.is_running()
        # Everything acknowledged is still readable.
        got = consume_confluent(b.bootstrap, "fill", [0], expected=acked)
        assert len(got) >= acked
        # Space returns: appends resume.
        subprocess.run(["mount", "-o", "remount,size=64m", str(b.data_dir)], check=True)
        more = [Rec(key=b"after", value=os.urandom(1000)) for _ in range(100)]
        res = produce_confluent(b.bootstrap, "fill", more, conf={"enable.idempotence": False, "acks": "1"})
        assert_all_delivered(res)
        got = consume_confluent(b.bootstrap, "fill", [0], expected=acked + 100)
        assert sum(1 for g in got if g.key == b"after") == 100
        b.stop()
    finally:
        if b.is_running():
            b.kill()
        subprocess.run(["umount", "-l", str(b.data_dir)])
