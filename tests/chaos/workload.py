"""Workloads of a chaos run: producers and group consumers that record every operation in the
history format of tests/chaos/README.md (the contract with checker.py).

Producers (confluent-kafka, kafka-python, and the native client through ``vltava produce``)
write unique values ``<producer>-<seq:08d>`` at a bounded rate, round-robin or at random over
the partitions. A send's status:

* ``ok``: acknowledged, with the offset the client reported;
* ``fail``: the client guarantees it was not written — it refused the record before sending it
  (``produce()``/``send()`` raised, or librdkafka's local errors such as an unknown partition);
* ``info``: anything else — a timeout, a broker error after retries (an earlier attempt may have
  been appended), a record still in flight when the producer was closed. librdkafka knows
  whether a failed message was possibly persisted, but confluent-kafka does not expose it, so
  its delivery errors are ``info`` unless they are local.

Consumers are confluent-kafka members of one group with ``enable.auto.commit=false``; they poll
one record at a time (so each record is attributed to the assignment it was read under), commit
what they read every batch and on revocation, and record assign/revoke/poll/commit. The
``generation`` they record is the member's own count of assignments (confluent-kafka does not
expose the group generation): it changes exactly when a rebalance hands out partitions.

Every client's timeouts are bounded and every thread is joined with a timeout.
"""

from __future__ import annotations

import logging
import random
import subprocess
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

MESSAGE_TIMEOUT_MS = 30000
REQUEST_TIMEOUT_MS = 5000
CLOSE_FLUSH_S = 40.0  # > message.timeout.ms: every record gets its answer before the purge

RDKAFKA_LOG = logging.getLogger("vtvchaos.rdkafka")


class History:
    """The run's operations, appended from many threads."""

    def __init__(self):
        self._ops: list[dict] = []
        self._lock = threading.Lock()

    def add(self, op: dict) -> None:
        with self._lock:
            self._ops.append(op)

    def ops(self) -> list[dict]:
        with self._lock:
            return list(self._ops)

    def count(self, **match) -> int:
        with self._lock:
            return sum(1 for o in self._ops if all(o.get(k) == v for k, v in match.items()))


def base_conf(bootstrap: str) -> dict:
    return {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "socket.timeout.ms": 10000,
        "reconnect.backoff.max.ms": 1000,
        "topic.metadata.refresh.interval.ms": 5000,
        "logger": RDKAFKA_LOG,
        "log_level": 4,
    }


# Local errors librdkafka raises before a record is ever sent.
_CONFLUENT_NOT_SENT = {
    KafkaError.MSG_SIZE_TOO_LARGE,  # the same size is refused on every attempt
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._INVALID_ARG,
}


def confluent_status(err: KafkaError | None) -> str:
    if err is None:
        return "ok"
    return "fail" if err.code() in _CONFLUENT_NOT_SENT else "info"


class _Producer:
    """The loop shared by the producers: pace, pick a partition, hand a value to the client."""

    client = ""

    def __init__(self, name: str, bootstrap: str, topic: str, partitions: list[int], history: History, *,
                 acks: str = "all", idempotent: bool = False, rate: float = 100.0,
                 order: str = "round-robin", seed: int = 0):
        self.name = name
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = list(partitions)
        self.history = history
        self.acks = acks
        self.idempotent = idempotent
        self.rate = rate
        self.order = order
        self.rng = random.Random(f"{seed}:{name}")
        self.seq = 0
        self.pending: dict[int, dict] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.error: str | None = None  # the thread's own failure, if any
        self.t_last_send: float | None = None
        self.thread = threading.Thread(target=self._main, name=f"producer-{name}", daemon=True)

    def _next_partition(self) -> int:
        if self.order == "random":
            return self.rng.choice(self.partitions)
        return self.partitions[self.seq % len(self.partitions)]

    def _op(self, partition: int, value: str) -> dict:
        return {"op": "send", "producer": self.name, "client": self.client, "idempotent": self.idempotent,
                "acks": self.acks, "partition": partition, "value": value, "seq": self.seq,
                "status": None, "offset": None, "t_invoke": time.monotonic(), "t_complete": None, "error": None}

    def _complete(self, op: dict, status: str, offset: int | None, error: str | None) -> None:
        with self.lock:
            if self.pending.pop(op["seq"], None) is None:
                return  # already closed out
        op.update(status=status, offset=offset if status == "ok" and offset is not None and offset >= 0 else None,
                  t_complete=time.monotonic(), error=error)
        self.history.add(op)

    def _close_out(self, why: str) -> None:
        with self.lock:
            left = list(self.pending.values())
            self.pending.clear()
        for op in left:
            op.update(status="info", t_complete=None, error=why)
            self.history.add(op)

    def _main(self) -> None:
        try:
            self._run()
        except Exception as exc:  # reported by finish(); the history keeps what was sent
            self.error = f"{type(exc).__name__}: {exc}"
            self._close_out(f"producer thread failed: {self.error}")

    def _run(self) -> None:
        raise NotImplementedError

    def _pace(self, next_t: float) -> float:
        now = time.monotonic()
        return max(next_t + 1.0 / self.rate, now - 0.5)

    def _send_loop(self, wait, send) -> None:
        """Until stopped: at the producer's rate, the next value for the next partition goes to
        `send(partition, value, op)`, which hands it to the client and returns False when the
        client had no room (the same value is offered again after a wait); `wait(seconds)` idles,
        polling the client where it needs that."""
        next_t = time.monotonic()
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now < next_t:
                wait(min(next_t - now, 0.05))
                continue
            p = self._next_partition()
            value = f"{self.name}-{self.seq:08d}"
            if not send(p, value, self._op(p, value)):
                wait(0.05)
                continue
            self.seq += 1
            self.t_last_send = time.monotonic()
            next_t = self._pace(next_t)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def finish(self, timeout: float = CLOSE_FLUSH_S + 20) -> str | None:
        """Stop, wait for the thread (which flushes and closes the client); None or a problem."""
        self.stop_event.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            self._close_out("producer thread still running at the end of the run")
            return f"{self.name}: thread not finished after {timeout:.0f}s"
        return self.error and f"{self.name}: {self.error}"

    def describe(self) -> str:
        return (f"{self.name}: {self.client} acks={self.acks} idempotent={self.idempotent} "
                f"{self.order} over {self.partitions} at {self.rate:.0f}/s"
                + (f"; replaced {len(r)} time(s) after a fatal error" if (r := getattr(self, "fatal_restarts", None)) else ""))


class ConfluentProducer(_Producer):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.client = "confluent-idempotent" if self.idempotent else "confluent"
        conf = base_conf(self.bootstrap)
        conf.update({
            "acks": self.acks,
            "enable.idempotence": self.idempotent,
            "linger.ms": 5,
            "compression.type": "none",
            "message.timeout.ms": MESSAGE_TIMEOUT_MS,
            "request.timeout.ms": REQUEST_TIMEOUT_MS,
            "retry.backoff.ms": 100,
            "retry.backoff.max.ms": 1000,
        })
        if not self.idempotent:
            # Without idempotence a retry behind a later batch reorders; one request in flight
            # keeps "out of order within a producer" meaningful for these producers too.
            conf["max.in.flight.requests.per.connection"] = 1
        self.conf = conf
        self.producer = Producer(conf)
        self.fatal_restarts: list[str] = []

    def _poll(self, timeout: float) -> None:
        try:
            self.producer.poll(timeout)
        except KafkaException as exc:
            if not (exc.args and exc.args[0].fatal()):
                raise
            self._replace_after_fatal(exc)

    def _replace_after_fatal(self, exc: KafkaException) -> None:
        """An idempotent producer that librdkafka declared fatally failed (its sequence numbers
        no longer match the partition's, which only follows a loss such as an unclean election)
        takes nothing more: do what an application does, close it and start a new one (a new
        producer id). What the old one still held gets its delivery report (``info``) or is
        closed out as ``info``."""
        self.fatal_restarts.append(str(exc))
        try:
            self.producer.purge(in_queue=True, in_flight=True)
            self.producer.flush(5)
        except KafkaException:
            pass
        self._close_out(f"in flight when the producer failed fatally: {exc}")
        self.producer = Producer(self.conf)

    def _cb(self, op: dict):
        def cb(err, msg):
            self._complete(op, confluent_status(err), msg.offset() if err is None else None,
                           None if err is None else f"{err.name()}: {err.str()}")
        return cb

    def _send(self, p: int, value: str, op: dict) -> bool:
        try:
            with self.lock:
                self.pending[op["seq"]] = op
            self.producer.produce(self.topic, value=value.encode(), partition=p, on_delivery=self._cb(op))
        except BufferError:
            with self.lock:
                self.pending.pop(op["seq"], None)
            return False
        except KafkaException as exc:
            self._complete(op, "fail", None, f"produce() raised: {exc}")
            if exc.args and exc.args[0].fatal():
                self._replace_after_fatal(exc)
        self._poll(0)
        return True

    def _run(self) -> None:
        self._send_loop(self._poll, self._send)
        left = self.producer.flush(CLOSE_FLUSH_S)
        if left:
            self.producer.purge(in_queue=True, in_flight=True)
            self.producer.flush(5)
        self._close_out("in flight when the producer was closed")


class KafkaPythonProducer(_Producer):
    client = "kafka-python"

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        from kafka import KafkaProducer

        self.producer = KafkaProducer(
            bootstrap_servers=self.bootstrap.split(","),
            acks="all" if self.acks == "all" else int(self.acks),
            enable_idempotence=self.idempotent,
            linger_ms=5,
            compression_type=None,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            delivery_timeout_ms=MESSAGE_TIMEOUT_MS,
            retries=2**31 - 1,
            retry_backoff_ms=100,
            max_in_flight_requests_per_connection=1 if not self.idempotent else 5,
            max_block_ms=2000,
            metadata_max_age_ms=5000,
            reconnect_backoff_max_ms=1000,
        )

    def _send(self, p: int, value: str, op: dict) -> bool:
        with self.lock:
            self.pending[op["seq"]] = op
        try:
            fut = self.producer.send(self.topic, value=value.encode(), partition=p)
        except Exception as exc:  # refused before it was queued: never sent
            self._complete(op, "fail", None, f"send() raised {type(exc).__name__}: {exc}")
        else:
            fut.add_callback(lambda md, op=op: self._complete(op, "ok", md.offset, None))
            fut.add_errback(lambda exc, op=op: self._complete(op, "info", None, f"{type(exc).__name__}: {exc}"))
        return True

    def _run(self) -> None:
        from kafka.errors import KafkaTimeoutError

        self._send_loop(time.sleep, self._send)
        try:
            self.producer.flush(timeout=CLOSE_FLUSH_S)
        except KafkaTimeoutError:
            pass
        try:
            self.producer.close(timeout=5)
        except Exception:
            pass
        self._close_out("in flight when the producer was closed")


class NativeProducer(_Producer):
    """The project's own client: `vltava produce --print-deliveries`, one process per partition
    (the CLI sends all of a process's records to its `--partition`), fed one value per line on
    stdin. Each process reports every record's outcome on stdout; the CLI says whether a failed
    record may have been written (`unknown`, recorded as ``info``) or was refused before any
    broker saw it (`unsent`, recorded as ``fail``)."""

    def __init__(self, *args, vltava_bin: str, **kw):
        super().__init__(*args, **kw)
        self.client = "vltava-idempotent" if self.idempotent else "vltava"
        self.bin = vltava_bin
        self.procs: dict[int, subprocess.Popen] = {}
        self.lines: dict[int, dict[int, dict]] = {p: {} for p in self.partitions}  # partition -> line -> op
        self.next_line = {p: 1 for p in self.partitions}
        self.readers: list[threading.Thread] = []
        self.stderr: dict[int, list[str]] = {p: [] for p in self.partitions}

    def _command(self, partition: int) -> list[str]:
        settings = {
            "enable.idempotence": "true" if self.idempotent else "false",
            "linger.ms": 5,
            "delivery.timeout.ms": MESSAGE_TIMEOUT_MS,
            "request.timeout.ms": REQUEST_TIMEOUT_MS,
            "retry.backoff.ms": 100,
            "retry.backoff.max.ms": 1000,
            "metadata.max.age.ms": 5000,
            "max.block.ms": 2000,
        }
        if not self.idempotent:
            settings["max.in.flight.requests.per.connection"] = 1  # as for the other plain producers
        cmd = [self.bin, "produce", self.topic, "--bootstrap-server", self.bootstrap, "--partition", str(partition),
               "--acks", self.acks, "--timeout", "10", "--print-deliveries"]
        for k, v in settings.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd

    def _read(self, partition: int, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            fields = raw.rstrip("\n").split("\t")
            if len(fields) < 3 or not fields[0].isdigit():
                self.error = self.error or f"p{partition}: unreadable delivery line {raw!r}"
                continue
            with self.lock:
                op = self.lines[partition].pop(int(fields[0]), None)
            if op is None:
                self.error = self.error or f"p{partition}: delivery of unknown line {fields[0]}"
                continue
            if fields[1] == "ok" and len(fields) == 4:
                if int(fields[2]) != partition:
                    self.error = self.error or f"p{partition}: line {fields[0]} delivered to partition {fields[2]}"
                self._complete(op, "ok", int(fields[3]), None)
            elif fields[1] == "unsent":
                self._complete(op, "fail", None, fields[2])
            else:
                self._complete(op, "info", None, fields[2])

    def _read_stderr(self, partition: int, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            tail = self.stderr[partition]
            tail.append(line.rstrip())
            del tail[:-20]

    def _run(self) -> None:
        for p in self.partitions:
            proc = subprocess.Popen(self._command(p), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, bufsize=1)
            self.procs[p] = proc
            for target in (self._read, self._read_stderr):
                t = threading.Thread(target=target, args=(p, proc), name=f"{self.name}-{target.__name__}-p{p}",
                                     daemon=True)
                t.start()
                self.readers.append(t)
        try:
            self._send_loop(time.sleep, self._send)
        finally:
            self._close_processes()

    def _send(self, p: int, value: str, op: dict) -> bool:
        with self.lock:
            self.pending[op["seq"]] = op
            self.lines[p][self.next_line[p]] = op
            self.next_line[p] += 1
        try:
            self.procs[p].stdin.write(value + "\n")
            self.procs[p].stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            # The process is gone: what it had not read was never handed to the client.
            self._complete(op, "fail", None, f"vltava produce exited ({exc})")
            raise RuntimeError(f"vltava produce for p{p} exited: {self.stderr[p][-3:]}") from exc
        return True

    def _close_processes(self) -> None:
        # Closing stdin ends the input: the CLI delivers (or fails) everything it read, prints
        # each outcome and exits (1 if any record failed).
        for proc in self.procs.values():
            try:
                proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + CLOSE_FLUSH_S
        for p, proc in self.procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for t in self.readers:
            t.join(5)
        self._close_out("in flight when the producer was closed")

    def describe(self) -> str:
        return super().describe() + " (vltava produce, a process per partition)"


# ----------------------------------------------------------------------------- consumers
_COMMIT_REJECTED = {  # the coordinator refused the commit: it was not stored
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.OFFSET_METADATA_TOO_LARGE,
    KafkaError.INVALID_COMMIT_OFFSET_SIZE,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError._NO_OFFSET,
    KafkaError._STATE,
}


def commit_status(code: int | None) -> str:
    if code is None or code == KafkaError.NO_ERROR:
        return "ok"
    return "fail" if code in _COMMIT_REJECTED else "info"


class GroupConsumer:
    """One member of a consumer group reading the topic and committing as it goes."""

    def __init__(self, name: str, bootstrap: str, topic: str, group: str, history: History,
                 session_timeout_ms: int = 6000, batch: int = 50):
        self.name = name
        self.topic = topic
        self.group = group
        self.history = history
        self.batch = batch
        self.generation = 0
        self.assigned: set[int] = set()
        self.pending: dict[int, int] = {}  # partition -> next offset to commit
        self.polled = 0
        self.errors: list[str] = []
        self.error: str | None = None
        self.stop_event = threading.Event()
        conf = base_conf(bootstrap)
        conf.update({
            "group.id": group,
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": 500,
            "max.poll.interval.ms": 60000,
            "fetch.wait.max.ms": 100,
            "enable.partition.eof": False,
        })
        self.consumer = Consumer(conf)
        self.thread = threading.Thread(target=self._main, name=f"consumer-{name}", daemon=True)

    def _record(self, op: str, **kw) -> None:
        self.history.add({"op": op, "consumer": self.name, **kw, "t": time.monotonic()})

    def _on_assign(self, consumer, parts) -> None:
        self.generation += 1
        mine = sorted(tp.partition for tp in parts if tp.topic == self.topic)
        self.assigned = set(mine)
        self.pending = {}
        self._record("assign", generation=self.generation, partitions=mine)

    def _on_revoke(self, consumer, parts) -> None:
        gone = sorted(tp.partition for tp in parts if tp.topic == self.topic)
        self._commit([p for p in gone if p in self.pending])
        self._record("revoke", generation=self.generation, partitions=gone)
        self.assigned -= set(gone)
        for p in gone:
            self.pending.pop(p, None)

    def _on_lost(self, consumer, parts) -> None:
        gone = sorted(tp.partition for tp in parts if tp.topic == self.topic)
        self._record("revoke", generation=self.generation, partitions=gone, lost=True)
        self.assigned -= set(gone)
        for p in gone:
            self.pending.pop(p, None)

    def _commit(self, parts: list[int] | None = None) -> None:
        parts = [p for p in (parts if parts is not None else list(self.pending)) if p in self.assigned and p in self.pending]
        if not parts:
            return
        offsets = [TopicPartition(self.topic, p, self.pending[p]) for p in parts]
        try:
            res = self.consumer.commit(offsets=offsets, asynchronous=False)
            codes = {tp.partition: (tp.error.code() if tp.error else None) for tp in res or []}
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            code = err.code() if err else KafkaError._FAIL
            codes = {p: code for p in parts}
            self.errors.append(f"{time.monotonic():.1f} commit: {exc}")
        for tp in offsets:
            code = codes.get(tp.partition)
            self._record("commit", group=self.group, partition=tp.partition, offset=tp.offset,
                         status=commit_status(code), generation=self.generation,
                         **({"error": KafkaError(code).name()} if code not in (None, KafkaError.NO_ERROR) else {}))
            if code in (None, KafkaError.NO_ERROR):
                self.pending.pop(tp.partition, None)

    def _main(self) -> None:
        try:
            self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                    on_lost=self._on_lost)
            since = 0
            last_commit = time.monotonic()
            while not self.stop_event.is_set():
                msg = self.consumer.poll(0.2)
                if msg is not None and msg.error() is None and msg.topic() == self.topic:
                    p, off = msg.partition(), msg.offset()
                    self._record("poll", generation=self.generation, partition=p, offset=off,
                                 value=msg.value().decode("utf-8", "replace") if msg.value() is not None else None)
                    self.polled += 1
                    if p in self.assigned:
                        self.pending[p] = off + 1
                    since += 1
                elif msg is not None and msg.error() is not None:
                    self.errors.append(f"{time.monotonic():.1f} {msg.error()}")
                if self.pending and (since >= self.batch or msg is None or time.monotonic() - last_commit > 1.0):
                    self._commit()
                    since = 0
                    last_commit = time.monotonic()
            if self.pending:
                self._commit()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                self.consumer.close()
            except Exception as exc:
                self.errors.append(f"close: {exc}")

    def start(self) -> None:
        self.thread.start()

    def finish(self, timeout: float = 60) -> str | None:
        self.stop_event.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            return f"{self.name}: consumer thread not finished after {timeout:.0f}s"
        return self.error and f"{self.name}: {self.error}"

    def describe(self) -> str:
        return f"{self.name}: confluent-kafka group {self.group}, commit every {self.batch} records / 1 s and on revoke"


# ----------------------------------------------------------------------------- final reads
def read_through_api(bootstrap: str, topic: str, partitions: list[int], timeout: float = 60) -> tuple[dict[int, list[list]], list[str]]:
    """Every record of each partition from the log start to the high watermark, as one plain
    (assign-only) consumer reads it: {partition: [[offset, value], ...]} and the problems met."""
    conf = base_conf(bootstrap)
    conf.update({"group.id": f"vtvchaos-final-{time.monotonic_ns()}", "enable.auto.commit": False,
                 "auto.offset.reset": "earliest", "enable.partition.eof": True, "fetch.wait.max.ms": 100})
    c = Consumer(conf)
    out: dict[int, list[list]] = {p: [] for p in partitions}
    problems: list[str] = []
    try:
        ends = {}
        for p in partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            ends[p] = hi
        c.assign([TopicPartition(topic, p, -2) for p in partitions])  # OFFSET_BEGINNING
        todo = {p for p in partitions if ends[p] > 0}
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    if m.offset() >= ends.get(m.partition(), 0):
                        todo.discard(m.partition())
                else:
                    problems.append(str(m.error()))
                continue
            p = m.partition()
            out[p].append([m.offset(), m.value().decode("utf-8", "replace") if m.value() is not None else None])
            if m.offset() + 1 >= ends[p]:
                todo.discard(p)
        if todo:
            problems.append(f"api read incomplete on {sorted(todo)} after {timeout:.0f}s (ends {ends})")
    finally:
        c.close()
    return out, problems


def read_committed(bootstrap: str, group: str, topic: str, partitions: list[int], timeout: float = 20) -> dict[tuple[str, int], int]:
    """The group's committed offsets, asked by a consumer that never joins it (OffsetFetch)."""
    conf = base_conf(bootstrap)
    conf.update({"group.id": group, "enable.auto.commit": False})
    c = Consumer(conf)
    try:
        res = c.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
    finally:
        c.close()
    return {(group, tp.partition): tp.offset for tp in res if tp.error is None and tp.offset >= 0}
