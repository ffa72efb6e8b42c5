"""One confluent-kafka group consumer in its own process, for test_groups.py (started by
group_util.ConsumerProc). Argument: a JSON object {bootstrap, group, topic, name, conf}.

Writes JSON lines on stdout, each with "ev" and "t" (time.monotonic(), which is system-wide on Linux
and so comparable between processes):
  {"ev": "assign"|"revoke"|"lost", "parts": [...], "protocol": "EAGER"|"COOPERATIVE"}
  {"ev": "msg", "p": partition, "o": offset, "v": value (latin-1 text)}
  {"ev": "commit", "offsets": [[partition, offset], ...]}   (after the broker acknowledged it)
  {"ev": "error", "error": "..."}
  {"ev": "closed"}
Commits synchronously after every non-empty batch and in the revoke callback. Reads commands from stdin:
"close" commits, closes the consumer (LeaveGroup) and exits 0. Exits by itself after 170 s.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException

LIFETIME_S = 170


def emit(ev: str, **data) -> None:
    data["ev"] = ev
    data["t"] = time.monotonic()
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def main() -> int:
    args = json.loads(sys.argv[1])
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    conf = {
        "bootstrap.servers": args["bootstrap"],
        "group.id": args["group"],
        "client.id": args["name"],
        "broker.address.family": "v4",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 100,
        "reconnect.backoff.max.ms": 1000,
        "logger": logging.getLogger(f"rdkafka.{args['name']}"),
        "log_level": 6,
    }
    conf.update(args.get("conf") or {})
    consumer = Consumer(conf)
    # confluent-kafka's Python Consumer has no rebalance_protocol(): the configured strategy tells
    protocol = "COOPERATIVE" if "cooperative" in str(conf.get("partition.assignment.strategy", "")) else "EAGER"
    stop = threading.Event()

    def read_stdin():
        for line in sys.stdin:
            if line.strip() == "close":
                break
        stop.set()  # "close" or the parent went away

    threading.Thread(target=read_stdin, daemon=True).start()

    def commit(where: str) -> None:
        try:
            res = consumer.commit(asynchronous=False) or []
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError._NO_OFFSET:
                emit("error", error=f"commit ({where}): {err.name()}: {err.str()}")
            return
        done = [[tp.partition, tp.offset] for tp in res if tp.error is None and tp.offset >= 0]
        bad = [f"{tp.partition}: {tp.error}" for tp in res if tp.error is not None]
        if done:
            emit("commit", offsets=done, where=where)
        if bad:
            emit("error", error=f"commit ({where}) partition errors: {bad}")

    def on_assign(c, parts):
        emit("assign", parts=sorted(tp.partition for tp in parts), protocol=protocol)

    def on_revoke(c, parts):
        if parts:
            commit("revoke")
        emit("revoke", parts=sorted(tp.partition for tp in parts), protocol=protocol)

    def on_lost(c, parts):
        emit("lost", parts=sorted(tp.partition for tp in parts), protocol=protocol)

    consumer.subscribe([args["topic"]], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    deadline = time.monotonic() + LIFETIME_S
    while not stop.is_set() and time.monotonic() < deadline:
        msgs = consumer.consume(num_messages=200, timeout=0.2)
        n = 0
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    emit("error", error=f"{err.name()}: {err.str()}")
                continue
            n += 1
            v = m.value()
            emit("msg", p=m.partition(), o=m.offset(), v=None if v is None else v.decode("latin-1"))
        if n:
            commit("batch")
    commit("close")
    consumer.close()
    emit("closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
