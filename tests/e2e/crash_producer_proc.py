"""The producer of the crash harness (test_crash.py), in its own process so that the broker's crashes,
the harness's waits and the producer's own pace do not interfere.

Argument: a JSON object {bootstrap, topic, out, conf}. Produces records `make_key(seq)` /
`make_value(seq)` for seq = 0, 1, 2, ... as fast as librdkafka accepts them (idempotent, acks=all),
until it receives SIGTERM; then flushes (every record gets its delivery report) and exits 0.

Every delivery report becomes one line of the file `out`, flushed and fsynced at least every 100 ms:
  A <seq> <partition> <offset> <crc32 of the value>       acknowledged
  F <seq> <partition> <ERRNAME> <retriable 0|1> <fatal 0|1>  failed
  E <ERRNAME> <fatal 0|1> <text>                           error callback (no record)
  END produced=N acked=N failed=N remaining=N               after the final flush
On stdout, every 100 ms, a JSON line {"t", "produced", "acked", "failed", "max_off": {partition: offset}}
(t = time.monotonic(), comparable between processes on Linux): the harness learns which offsets were
acknowledged before each kill.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import zlib

from confluent_kafka import KafkaError, Producer

from crash_util import make_key, make_value

FLUSH_TIMEOUT_S = 120
LIFETIME_S = 600  # stop by itself if the harness vanished without sending SIGTERM
SYNC_EVERY_S = 0.1


def main() -> int:
    args = json.loads(sys.argv[1])
    debug = "debug" in (args.get("conf") or {})
    level = logging.DEBUG if debug else logging.INFO
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(name)s %(message)s")
    out = open(args["out"], "wb", buffering=1 << 20)
    fd = out.fileno()
    stop = False

    def on_term(_sig, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)

    counts = {"produced": 0, "acked": 0, "failed": 0}
    max_off: dict[int, int] = {}

    def on_delivery(err, msg):
        value = msg.value()
        seq = int(value[4:16])  # the sequence number travels in the value ("seq=000000000042;...")
        if err is None:
            p, off = msg.partition(), msg.offset()
            out.write(b"A %d %d %d %d\n" % (seq, p, off, zlib.crc32(value)))
            counts["acked"] += 1
            if off > max_off.get(p, -1):
                max_off[p] = off
        else:
            out.write(
                b"F %d %d %s %d %d\n"
                % (seq, msg.partition(), err.name().encode(), 1 if err.retriable() else 0, 1 if err.fatal() else 0)
            )
            counts["failed"] += 1

    def on_error(err: KafkaError):
        out.write(b"E %s %d %s\n" % (err.name().encode(), 1 if err.fatal() else 0, err.str().replace("\n", " ").encode()))

    conf = {
        "bootstrap.servers": args["bootstrap"],
        "broker.address.family": "v4",
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": 60000,
        "linger.ms": 5,
        "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 500,
        "retry.backoff.ms": 50,
        "retry.backoff.max.ms": 500,
        "socket.timeout.ms": 30000,
        # librdkafka >= 2.7 (KIP-899) forgets the brokers once all are down and re-bootstraps, then waits
        # for its 1 s "refresh unavailable topics" timer before asking for metadata: with a single broker
        # killed every 0.2-2 s it would sit out whole cycles. Keep the known broker and just reconnect.
        "metadata.recovery.strategy": "none",
        "error_cb": on_error,
        "logger": logging.getLogger("rdkafka.crash-producer"),
        "log_level": 4,
    }
    conf.update(args.get("conf") or {})
    producer = Producer(conf)
    topic = args["topic"]

    last_sync = last_progress = time.monotonic()

    def progress(now: float) -> None:
        sys.stdout.write(json.dumps({"t": now, **counts, "max_off": max_off}) + "\n")
        sys.stdout.flush()

    def sync() -> None:
        out.flush()
        os.fsync(fd)

    seq = 0
    started = time.monotonic()
    while not stop and time.monotonic() - started < LIFETIME_S:
        try:
            producer.produce(topic, key=make_key(seq), value=make_value(seq), on_delivery=on_delivery)
            seq += 1
            counts["produced"] = seq
            if seq % 500 == 0:
                producer.poll(0)
        except BufferError:
            producer.poll(0.01)  # the queue is full (e.g. the broker is down): serve delivery reports
        now = time.monotonic()
        if now - last_sync >= SYNC_EVERY_S:
            sync()
            last_sync = now
        if now - last_progress >= 0.1:
            progress(now)
            last_progress = now

    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    remaining = len(producer)
    while remaining > 0 and time.monotonic() < deadline:
        remaining = producer.flush(0.1)
        sync()
        progress(time.monotonic())
    out.write(b"END produced=%d acked=%d failed=%d remaining=%d\n" % (seq, counts["acked"], counts["failed"], remaining))
    sync()
    out.close()
    progress(time.monotonic())
    return 0 if remaining == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
