"""Crash harness: the broker is killed with SIGKILL at random moments and restarted on the same data dir
and port, under load; afterwards everything the clients were told is checked against what the broker has.

1. ``test_sigkill_cycles_under_idempotent_producer``: an idempotent producer (crash_producer_proc.py, its
   own process, acks=all, 4 partitions, keyed records carrying a unique sequence number, a codec and a
   batch.size picked by the seed) runs flat out and records every delivery report in a file it fsyncs as
   it goes. 20 kill cycles, 0.2-2 s apart, some with a second kill while the broker recovers; each
   recovery is timed (spawn -> port accepts -> Metadata names a leader for every partition). Then the
   producer flushes and stops, and:
   * every acknowledged record is in the log exactly once, at the partition and offset of its ack, key
     and value byte for byte (records are a function of their sequence number);
   * every partition's offsets run from 0 to the high watermark without gaps; the consumer (with
     ``check.crcs``) reports no error; a raw Fetch walk finds well-formed batches with contiguous offsets
     and correct CRC-32C (recomputed here for the batches at each restart's log end and a sample of the
     rest: pure-Python CRC is slow);
   * no sequence number appears twice (idempotence) and each partition holds its records in produce order;
   * no record whose delivery failed *definitely* (non-retriable, not a timeout) is in the log; ambiguous
     failures (timeouts: Kafka promises nothing about them) are counted;
   * after each restart every partition's log end is above every offset seen acknowledged before the kill.
2. ``test_sigkill_while_group_commits_offsets``: two standalone committers and a subscribed group member
   commit synchronously in a loop (one partition per commit, so each kill leaves most partitions with a
   commit acknowledged before it); after each restart committed() must return, for every partition, the
   last successful commit (or a later attempt that failed ambiguously), offset and metadata.

Reproduce a run with its printed seed: ``VLTAVA_E2E_CRASH_SEED=<seed>``. ``VLTAVA_E2E_CRASH_CYCLES`` and
``VLTAVA_E2E_CRASH_GROUP_CYCLES`` set the number of kills (20, 10); ``VLTAVA_E2E_CRASH_PRODUCER_DEBUG=eos,broker``
turns on librdkafka debug logs in the producer's stderr file (kept with the broker's logs when the test
fails, or with ``VLTAVA_E2E_KEEP=1``). The figures are printed at the end of each test, also without -s.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from array import array
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

import rawkafka
from crash_util import (
    Recovery,
    list_offsets_latest,
    make_key,
    make_value,
    read_reports,
    restart_timed,
    seq_of,
    summary,
)
from e2e_util import E2E_DIR, base_conf, create_topic, python_exe, wait_for

CYCLES = int(os.environ.get("VLTAVA_E2E_CRASH_CYCLES", "20"))
PARTITIONS = 4
# Small segments: kills land during segment rolls too, and recovery deals with several segments.
SETTINGS = {"log.segment.bytes": 2 * 1024 * 1024}
CODECS = ["lz4", "zstd", "snappy", "gzip"]
KILL_INTERVAL_S = (0.2, 2.0)
DOUBLE_KILL_P = 0.15  # probability that a cycle also kills the broker again while it recovers
# The raw walk recomputes CRC-32C in Python (~5 MB/s): for the batches that end or begin at a restart's
# log end (the ones a crash could have torn), up to a budget, and for a sample of the others.
CRC_BOUNDARY_BUDGET = 32 * 2**20
CRC_SAMPLE_P = 0.03
CRC_SAMPLE_BUDGET = 8 * 2**20
BATCH_SIZES = [16384, 65536, 262144]  # librdkafka batch.size, chosen by the seed
PRODUCER_SCRIPT = E2E_DIR / "crash_producer_proc.py"


def crash_seed() -> int:
    env = os.environ.get("VLTAVA_E2E_CRASH_SEED")
    return int(env) if env else random.SystemRandom().randrange(1, 2**31)


class Out:
    """Progress lines go straight to the terminal (also without -s) and into the captured output, which
    pytest shows with a failure; `show` prints the final summary the same way."""

    def __init__(self, request):
        self.capman = request.config.pluginmanager.getplugin("capturemanager")

    def _tty(self, text: str) -> None:
        if self.capman is None:
            return
        with self.capman.global_and_fixture_disabled():
            sys.stdout.write(text)
            sys.stdout.flush()

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self._tty("\n" + line)

    def show(self, lines: list[str]) -> None:
        print("\n".join(lines), flush=True)
        self._tty("\n" + "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- producer process
class ProducerProc:
    def __init__(self, bootstrap: str, topic: str, workdir: Path, conf: dict):
        self.out_path = workdir / "deliveries.txt"
        self.stderr_path = workdir / "producer-stderr.log"
        self._stderr = open(self.stderr_path, "wb")
        arg = json.dumps({"bootstrap": bootstrap, "topic": topic, "out": str(self.out_path), "conf": conf})
        self.proc = subprocess.Popen(
            [python_exe(), str(PRODUCER_SCRIPT), arg],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=str(E2E_DIR),
        )
        self.latest: dict = {"t": 0, "produced": 0, "acked": 0, "failed": 0, "max_off": {}}
        self.history: list[tuple[float, int]] = []  # (time.monotonic(), acked) every 100 ms
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            d["max_off"] = {int(k): v for k, v in d["max_off"].items()}
            with self._lock:
                self.latest = d
                self.history.append((d["t"], d["acked"]))

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self.latest)

    def resumed_after(self, t_ready: float) -> float | None:
        """Seconds from `t_ready` until the producer's ack count next grew (100 ms resolution), if it did."""
        with self._lock:
            hist = list(self.history)
        base = None
        for t, acked in hist:
            if t < t_ready:
                continue
            if base is None:
                base = acked
            elif acked > base:
                return t - t_ready
        return None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, n: int = 3000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 150) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._reader.join(5)
            self._stderr.close()
        return code


# ----------------------------------------------------------------------------- checks
def read_log(bootstrap: str, topic: str, hw: dict[int, int], produced: int, problems: list[str], figures: dict):
    """Read every partition from offset 0 to its high watermark (manual assignment, check.crcs) and
    check each record. Returns {partition: array of the sequence number at each offset}."""
    conf = base_conf(bootstrap)
    conf.update(
        {
            "group.id": "vltava-crash-check",  # never used for a group call: assign() only
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "enable.partition.eof": True,
            "check.crcs": True,
            "fetch.wait.max.ms": 100,
            "fetch.max.bytes": 16 * 1024 * 1024,
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
        }
    )
    seqs = {p: array("q") for p in hw}
    seen = bytearray(produced)
    dups = corrupt = phantom = consumer_errors = transport_errors = inversions = 0
    remaining = {p for p in hw if hw[p] > 0}
    c = Consumer(conf)
    try:
        c.assign([TopicPartition(topic, p, 0) for p in hw])
        deadline = time.monotonic() + 180
        while remaining:
            assert time.monotonic() < deadline, (
                f"reading the log back timed out; at {[(p, len(seqs[p]), hw[p]) for p in sorted(hw)]}"
            )
            for m in c.consume(num_messages=10000, timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if m.offset() >= hw[m.partition()]:
                            remaining.discard(m.partition())
                        continue
                    if err.code() == KafkaError._TRANSPORT:
                        transport_errors += 1
                        continue
                    consumer_errors += 1
                    if consumer_errors <= 10:
                        problems.append(f"consumer error on partition {m.partition()} at {m.offset()}: {err.name()} {err.str()}")
                    continue
                p, off = m.partition(), m.offset()
                arr = seqs[p]
                if off != len(arr):
                    problems.append(f"partition {p}: offset {off} follows {len(arr) - 1} (gap or reordering)")
                    if off < len(arr):
                        continue
                    while len(arr) < off:
                        arr.append(-2)  # a hole
                value = m.value()
                seq = seq_of(value)
                if seq is None or value != make_value(seq) or m.key() != make_key(seq):
                    corrupt += 1
                    if corrupt <= 10:
                        problems.append(
                            f"partition {p} offset {off}: corrupt record (seq {seq}, key {m.key()!r:.30}, value {value!r:.60})"
                        )
                    arr.append(-1)
                elif seq >= produced:
                    phantom += 1
                    if phantom <= 10:
                        problems.append(f"partition {p} offset {off}: seq {seq} was never produced ({produced} were)")
                    arr.append(seq)
                else:
                    if seen[seq]:
                        dups += 1
                        if dups <= 10:
                            problems.append(f"partition {p} offset {off}: seq {seq} is a DUPLICATE (already read once)")
                    seen[seq] = 1
                    if arr and seq < arr[-1]:
                        inversions += 1
                    arr.append(seq)
                if off + 1 >= hw[p]:
                    remaining.discard(p)
    finally:
        c.close()
    for p in hw:
        if len(seqs[p]) != hw[p]:
            problems.append(f"partition {p}: read {len(seqs[p])} records, high watermark {hw[p]}")
        holes = seqs[p].count(-2)
        if holes:
            problems.append(f"partition {p}: {holes} offsets below the high watermark were skipped (gaps)")
    if transport_errors:
        problems.append(f"{transport_errors} transport errors while reading back a stable broker")
    figures.update(
        records_in_log=sum(len(a) for a in seqs.values()),
        duplicates=dups,
        corrupt=corrupt,
        phantom=phantom,
        consumer_errors=consumer_errors,
        order_inversions=inversions,
    )
    if inversions:
        problems.append(f"{inversions} records sit below a record produced before them in the same partition (order)")
    return seqs, seen


def raw_walk(broker, topic: str, hw: dict[int, int], boundaries: dict[int, list[int]], rng: random.Random, problems, figures):
    """Fetch every partition raw from 0 to its high watermark: batches well formed and contiguous, the
    CRC-32C of batches near a restart's log end and of a sample of the rest recomputed here."""
    batches = crc_checked = crc_bytes = sample_bytes = boundary_batches = skipped = 0
    for p in sorted(hw):
        bounds = sorted(boundaries.get(p, []))
        off = 0
        while off < hw[p]:
            fp = rawkafka.fetch(broker.host, broker.port, topic, p, off, version=4, max_bytes=8 * 1024 * 1024, max_wait_ms=0)
            if fp.error_code != 0:
                problems.append(f"raw Fetch {topic}/{p} at {off}: error {fp.error_code}")
                break
            got = fp.batches()
            if not got:
                problems.append(f"raw Fetch {topic}/{p} at {off}: no complete batch below high watermark {fp.high_watermark}")
                break
            for b in got:
                last = b.base_offset + b.last_offset_delta
                if last < off:
                    continue  # a fetch may start inside an earlier batch (not here, but allowed)
                bad = []
                if b.base_offset != off:
                    bad.append(f"base offset {b.base_offset}, expected {off}")
                if b.magic != 2:
                    bad.append(f"magic {b.magic}")
                if b.record_count != b.last_offset_delta + 1:
                    bad.append(f"{b.record_count} records, lastOffsetDelta {b.last_offset_delta}")
                # the batch holding the last offset before a restart's log end, or the first after it
                boundary = any(b.base_offset <= x <= last + 1 for x in bounds)
                boundary_batches += boundary
                check = False
                if boundary:
                    check = crc_bytes + len(b.raw) <= CRC_BOUNDARY_BUDGET
                    skipped += not check
                elif rng.random() < CRC_SAMPLE_P and sample_bytes + len(b.raw) <= CRC_SAMPLE_BUDGET:
                    check = True
                    sample_bytes += len(b.raw)
                if check:
                    crc_checked += 1
                    crc_bytes += len(b.raw)
                    if not b.crc_ok():
                        bad.append(f"CRC mismatch (stored {b.crc:#010x})")
                if bad:
                    problems.append(f"raw Fetch {topic}/{p}: batch at {b.base_offset} (len {b.length}): " + "; ".join(bad))
                batches += 1
                off = last + 1
    figures.update(
        raw_batches=batches,
        raw_boundary_batches=boundary_batches,
        raw_boundary_crc_skipped=skipped,
        raw_crc_checked=crc_checked,
        raw_crc_mib=round(crc_bytes / 2**20, 1),
    )


def check_against_reports(reports, seqs, seen, problems, figures, restarts, acked_before) -> None:
    lost = misplaced = bad_report = double_acks = 0
    acked_at: dict[int, bytearray] = {p: bytearray(len(a)) for p, a in seqs.items()}
    where: dict[int, tuple[int, int]] | None = None
    for seq, p, off, crc in zip(reports.ack_seq, reports.ack_part, reports.ack_off, reports.ack_crc):
        if crc != zlib.crc32(make_value(seq)):
            bad_report += 1
        arr = seqs.get(p)
        if arr is None:
            problems.append(f"seq {seq} acked on partition {p}, which the topic does not have")
            continue
        if off < len(arr):
            if acked_at[p][off]:
                double_acks += 1
                if double_acks <= 10:
                    problems.append(f"offset {p}/{off} was acknowledged to two records (an offset reused after a loss)")
            acked_at[p][off] = 1
            if arr[off] == seq:
                continue
        if where is None:  # only when something is wrong: where is every seq actually?
            where = {s: (pp, o) for pp, a in seqs.items() for o, s in enumerate(a) if s >= 0}
        found = where.get(seq)
        if found is None:
            lost += 1
            if lost <= 10:
                at = arr[off] if off < len(arr) else "nothing (beyond the log end)"
                # the first restart that came back below an offset seen acknowledged before its kill
                cause = [
                    f"cycle {i + 1} (acked up to {acked_before[i].get(p)} before the kill, recovered to log end {r.get(p)})"
                    for i, r in enumerate(restarts)
                    if r.get(p, 0) <= off <= acked_before[i].get(p, -1)
                ]
                problems.append(
                    f"LOST: seq {seq} acknowledged at {p}/{off} is not in the log; that offset holds {at}; "
                    + (f"lost in {cause[0]}" if cause else "not acked before any kill (sampled), or lost later")
                )
        else:
            misplaced += 1
            if misplaced <= 10:
                problems.append(f"MISPLACED: seq {seq} acknowledged at {p}/{off} is at {found[0]}/{found[1]}")
    if bad_report:
        problems.append(f"{bad_report} delivery reports carry a value CRC that does not match the record (harness bug?)")

    definite = reports.definite_failures()
    in_log = [(s, p, n) for (s, p, n) in definite if s < len(seen) and seen[s]]
    for s, p, n in in_log[:10]:
        problems.append(f"seq {s} failed definitely ({n}, partition {p}) but is in the log")
    ambiguous = reports.ambiguous_failures()
    amb_in_log = sum(1 for (s, _p, _n) in ambiguous if s < len(seen) and seen[s])
    by_error: dict[str, int] = {}
    for _s, _p, n, _r, _f in reports.failed:
        by_error[n] = by_error.get(n, 0) + 1
    figures.update(
        acked=reports.n_acked,
        acked_checked=reports.n_acked - lost - misplaced,
        lost=lost,
        misplaced=misplaced,
        double_acks=double_acks,
        failed=len(reports.failed),
        failed_by_error=by_error,
        definite_failures=len(definite),
        definite_failures_in_log=len(in_log),
        ambiguous_failures=len(ambiguous),
        ambiguous_in_log=amb_in_log,
        in_log_without_ack=figures.get("records_in_log", 0) - (reports.n_acked - lost - misplaced),
    )


# ----------------------------------------------------------------------------- test 1
@pytest.mark.timeout(240)
def test_sigkill_cycles_under_idempotent_producer(broker_factory, tmp_path, request):
    seed = crash_seed()
    rng = random.Random(seed)
    codec = rng.choice(CODECS)
    batch_size = rng.choice(BATCH_SIZES)
    out = Out(request)
    head = (
        f"crash harness: seed {seed} (VLTAVA_E2E_CRASH_SEED={seed}), {CYCLES} cycles, {PARTITIONS} partitions,"
        f" compression {codec}, batch.size {batch_size}"
    )
    out(head)

    broker = broker_factory(SETTINGS)
    topic = "crash-idem"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    pconf = {"compression.type": codec, "batch.size": batch_size}
    if os.environ.get("VLTAVA_E2E_CRASH_PRODUCER_DEBUG"):  # e.g. "eos,broker": librdkafka debug contexts
        pconf.update({"debug": os.environ["VLTAVA_E2E_CRASH_PRODUCER_DEBUG"], "log_level": 7})
    producer = ProducerProc(broker.bootstrap, topic, tmp_path, pconf)
    problems: list[str] = []
    recoveries: list[Recovery] = []
    restarts: list[dict[int, int]] = []  # log end offsets right after each restart
    acked_before: list[dict[int, int]] = []  # highest offset per partition seen acked before each kill
    boundaries: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    acked_per_cycle: list[int] = []
    double_kills = 0
    cycle = 0
    kill_times: list[float] = []
    resumes: list[float] = []
    not_resumed: list[int] = []
    figures: dict = {}
    try:
        wait_for(lambda: producer.snapshot()["acked"] > 0 or not producer.alive(), 30, "the producer's first acks")
        assert producer.alive(), f"producer exited early:\n{producer.stderr_tail()}"
        prev_acked = producer.snapshot()["acked"]
        for cycle in range(1, CYCLES + 1):
            interval = rng.uniform(*KILL_INTERVAL_S)
            time.sleep(interval)
            assert producer.alive(), f"producer exited during cycle {cycle}:\n{producer.stderr_tail()}"
            assert broker.is_running(), (
                f"broker died by itself in cycle {cycle} (code {broker.proc.returncode})\n{broker.stderr_tail()}"
            )
            before = producer.snapshot()  # acknowledged before the kill (sampled every 100 ms)
            broker.kill()
            kill_times.append(time.monotonic())
            double = rng.random() < DOUBLE_KILL_P
            if double:  # crash again while recovering: recovery itself must be crash-safe
                double_kills += 1
                broker._spawn()
                time.sleep(rng.uniform(0.0, 0.25))
                broker.kill()
            rec = restart_timed(broker, topic, PARTITIONS)
            recoveries.append(rec)
            leo = list_offsets_latest(broker.host, broker.port, topic, PARTITIONS)
            restarts.append(leo)
            acked_before.append(before["max_off"])
            for p, off in leo.items():
                boundaries[p].append(off)
            for p, acked_off in before["max_off"].items():
                if leo.get(p, 0) <= acked_off:
                    problems.append(
                        f"cycle {cycle}: partition {p} recovered to log end {leo.get(p)} but offset {acked_off} had been"
                        f" acknowledged before the kill"
                    )
            acked_per_cycle.append(before["acked"] - prev_acked)
            prev_acked = before["acked"]
            again = " (+ killed again while recovering)" if double else ""
            spawns = f" ({rec.spawns} spawns)" if rec.spawns > 1 else ""
            out(
                f"cycle {cycle:2d}: killed after {interval:.2f} s with {before['acked']} acked{again};"
                f" port {rec.port_s * 1000:6.1f} ms, ready {rec.ready_s * 1000:6.1f} ms{spawns};"
                f" log ends {[leo[p] for p in sorted(leo)]}"
            )
        # the producer carries on after the last restart
        mark = producer.snapshot()["acked"]
        wait_for(
            lambda: producer.snapshot()["acked"] > mark + 1000 or not producer.alive(),
            60,
            "the producer to get acks after the last restart",
        )
        for i, r in enumerate(recoveries):
            res = producer.resumed_after(r.at)
            limit = kill_times[i + 1] if i + 1 < len(kill_times) else float("inf")
            if res is None or r.at + res > limit:
                not_resumed.append(i + 1)
            else:
                resumes.append(res)
        code = producer.stop()
        assert code == 0, f"producer exited with {code} (records left unreported?)\n{producer.stderr_tail()}"
        assert broker.is_running(), f"broker died after the last cycle\n{broker.stderr_tail()}"

        reports = read_reports(producer.out_path)
        assert reports.end is not None, "the producer's report file has no END line"
        produced = reports.end["produced"]
        assert reports.end["remaining"] == 0
        assert reports.n_acked + len(reports.failed) == produced, (
            f"{produced} produced but {reports.n_acked} acked + {len(reports.failed)} failed reports"
        )
        fatal = [e for e in reports.errors if e.split()[2:3] == ["1"]]
        if fatal:
            problems.append(f"the producer hit fatal errors: {fatal[:3]}")

        hw = list_offsets_latest(broker.host, broker.port, topic, PARTITIONS)
        t_check = time.monotonic()
        seqs, seen = read_log(broker.bootstrap, topic, hw, produced, problems, figures)
        check_against_reports(reports, seqs, seen, problems, figures, restarts, acked_before)
        t_raw = time.monotonic()
        raw_walk(broker, topic, hw, boundaries, random.Random(seed), problems, figures)
        figures["raw_walk_s"] = round(time.monotonic() - t_raw, 1)
        figures["check_s"] = round(time.monotonic() - t_check, 1)
        err_names: dict[str, int] = {}
        for e in reports.errors:
            name = e.split()[1]
            err_names[name] = err_names.get(name, 0) + 1
        figures.update(produced=produced, high_watermarks=hw, producer_error_cb=err_names)
        # what recovery itself reported (informational: a SIGKILL rarely tears a write in the page cache)
        logs = "".join(p.read_text(errors="replace") for p in sorted(broker.workdir.glob("stderr-*.log")))
        figures["broker_log_truncations"] = logs.count("log truncated during recovery")
        figures["broker_index_rebuilds"] = logs.count("rebuilt invalid index files")
    finally:
        if producer.alive():
            producer.stop(timeout=30)
        lines = [
            head,
            f"kill cycles survived: {len(recoveries)} of {CYCLES} ({double_kills} with a second kill during recovery)",
            f"recovery (spawn -> port accepts):          {summary([r.port_s for r in recoveries])}",
            f"recovery (spawn -> Metadata with leaders): {summary([r.ready_s for r in recoveries])}",
            f"producer's first new ack after a restart: {summary(resumes)} (100 ms sampling);"
            f" no ack before the next kill after restarts {not_resumed}",
            f"acks between kills: {acked_per_cycle}",
            f"records: produced {figures.get('produced')}, acknowledged {figures.get('acked')},"
            f" acknowledged and checked at their offset {figures.get('acked_checked')},"
            f" read back and checked {figures.get('records_in_log')}, LOST {figures.get('lost')},"
            f" DUPLICATES {figures.get('duplicates')}, corrupt {figures.get('corrupt')},"
            f" failed {figures.get('failed')} (definite {figures.get('definite_failures')}, of them in the log"
            f" {figures.get('definite_failures_in_log')}; ambiguous {figures.get('ambiguous_failures')}, of them in the log"
            f" {figures.get('ambiguous_in_log')})",
            "figures: " + json.dumps(figures, sort_keys=True),
        ]
        if problems:
            lines += [f"PROBLEMS ({len(problems)}), seed {seed}, last cycle reached {cycle}:"] + ["  " + p for p in problems[:40]]
        out.show(lines)
    assert not problems, f"seed {seed}: " + "\n".join(problems[:40]) + f"\nbroker stderr tail:\n{broker.stderr_tail(3000)}"
    assert figures["lost"] == 0 and figures["duplicates"] == 0
    assert len(recoveries) >= CYCLES


# ----------------------------------------------------------------------------- test 2
GROUP_CYCLES = int(os.environ.get("VLTAVA_E2E_CRASH_GROUP_CYCLES", "10"))
GROUP_PARTITIONS = 12
# Commit errors after which the commit may or may not have been written; any other error means the
# broker refused it (or it was never sent), so it must not be what committed() returns.
AMBIGUOUS_COMMIT_ERRORS = {"_TRANSPORT", "_TIMED_OUT", "REQUEST_TIMED_OUT", "NETWORK_EXCEPTION", "_MSG_TIMED_OUT"}


class Committer:
    """A consumer of `group` committing synchronously, as fast as it can: commit #n sets partition
    n % GROUP_PARTITIONS to offset n with metadata "n=<n>". Each commit touches one partition, so at a
    kill every partition but the one in flight holds a commit acknowledged before the kill (librdkafka
    retries an in-flight commit until the broker is back). mode "assign": standalone (no membership,
    generation -1); mode "subscribe": a real member of the group, committing while it owns everything."""

    def __init__(self, bootstrap: str, group: str, topic: str, mode: str):
        from group_util import group_conf

        self.group, self.topic, self.mode = group, topic, mode
        self.consumer = Consumer(group_conf(bootstrap, group, client_id=f"crash-{group}"))
        self.attempts: list[tuple[int, float, float, str | None]] = []  # (n, start, end, error name or None)
        self.n = 0
        self.pause = threading.Event()
        self.idle = threading.Event()
        self.stop = threading.Event()
        self.exc: BaseException | None = None
        if mode == "assign":
            self.consumer.assign([TopicPartition(topic, p, 0) for p in range(GROUP_PARTITIONS)])
        else:
            self.consumer.subscribe([topic])
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _owns_all(self) -> bool:
        try:
            return len(self.consumer.assignment()) == GROUP_PARTITIONS
        except KafkaException:
            return False

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                if self.mode == "subscribe":
                    self.consumer.poll(0.002)  # heartbeats, rebalance callbacks
                if self.pause.is_set():
                    self.idle.set()
                    time.sleep(0.005)
                    continue
                self.idle.clear()
                if self.mode == "subscribe" and not self._owns_all():
                    continue
                self.n += 1
                n = self.n
                p = n % GROUP_PARTITIONS
                t0 = time.monotonic()
                err = None
                try:
                    res = self.consumer.commit(offsets=[TopicPartition(self.topic, p, n, f"n={n}")], asynchronous=False)
                    errs = [tp.error for tp in res or [] if tp.error is not None]
                    if errs:
                        err = errs[0].name()
                except KafkaException as exc:
                    err = exc.args[0].name() if exc.args and isinstance(exc.args[0], KafkaError) else repr(exc)
                self.attempts.append((n, t0, time.monotonic(), err))
                if err is not None:
                    time.sleep(0.01)
            self.idle.set()
        except BaseException as exc:  # reported by the test
            self.exc = exc
            self.idle.set()

    def successes(self) -> int:
        return sum(1 for a in self.attempts if a[3] is None)

    def expectation(self, p: int) -> tuple[int | None, float, set[int]]:
        """For partition p: (n of the last successful commit or None, when its ack arrived, the n of later
        attempts that failed ambiguously: any of these may also be what the broker kept)."""
        last, end = None, 0.0
        for n, _t0, t1, err in self.attempts:
            if err is None and n % GROUP_PARTITIONS == p:
                last, end = n, t1
        amb = {
            n
            for n, _t0, _t1, err in self.attempts
            if n % GROUP_PARTITIONS == p and (last is None or n > last) and err in AMBIGUOUS_COMMIT_ERRORS
        }
        return last, end, amb

    def close(self) -> None:
        self.stop.set()
        self.pause.clear()
        self.thread.join(30)
        try:
            self.consumer.close()
        except KafkaException:
            pass


@pytest.mark.timeout(150)
def test_sigkill_while_group_commits_offsets(broker_factory, request):
    """Two standalone committers and one subscribed member commit synchronously in a loop; the broker is
    killed at random moments. After each restart (committers paused once their in-flight commit ends),
    committed() of every partition of each group must be the last successful commit of that partition
    (or a later one that failed ambiguously), offset and metadata."""
    from group_util import GROUP_SETTINGS, committed

    seed = crash_seed()
    rng = random.Random(seed)
    out = Out(request)
    head = f"group commit crash: seed {seed} (VLTAVA_E2E_CRASH_SEED={seed}), {GROUP_CYCLES} cycles, {GROUP_PARTITIONS} partitions"
    out(head)
    broker = broker_factory(GROUP_SETTINGS)
    topic = "crash-commits"
    create_topic(broker.bootstrap, topic, GROUP_PARTITIONS)
    committers = [
        Committer(broker.bootstrap, "crash-standalone-a", topic, "assign"),
        Committer(broker.bootstrap, "crash-standalone-b", topic, "assign"),
        Committer(broker.bootstrap, "crash-member", topic, "subscribe"),
    ]
    problems: list[str] = []
    recoveries: list[Recovery] = []
    checked = before_kill = retried = ambiguous_kept = 0
    err_names: dict[str, int] = {}
    try:
        wait_for(
            lambda: all(c.successes() > 2 * GROUP_PARTITIONS for c in committers), 45, "every committer to commit every partition"
        )
        for cycle in range(1, GROUP_CYCLES + 1):
            time.sleep(rng.uniform(0.2, 1.5))
            assert broker.is_running(), f"broker died by itself in cycle {cycle}\n{broker.stderr_tail()}"
            broker.kill()
            t_kill = time.monotonic()
            for c in committers:
                c.pause.set()
            rec = restart_timed(broker, "__consumer_offsets", 50)
            recoveries.append(rec)
            for c in committers:  # an attempt in flight at the kill ends (fails, or succeeds after the restart)
                assert c.idle.wait(60), f"committer {c.group} still busy 60 s after the restart"
                assert c.exc is None, f"committer {c.group} raised {c.exc!r}"
            notes = []
            for c in committers:
                got = committed(broker.bootstrap, c.group, topic, range(GROUP_PARTITIONS), timeout=30)
                pre = 0
                for p, tp in sorted(got.items()):
                    last, end, amb = c.expectation(p)
                    md = tp.metadata or ""
                    n = int(md[2:]) if md.startswith("n=") and md[2:].isdigit() else None
                    checked += 1
                    if n is not None and n == last and tp.offset == n:
                        if end < t_kill:
                            before_kill += 1
                            pre += 1
                        else:
                            retried += 1
                    elif n is not None and n in amb and tp.offset == n:
                        ambiguous_kept += 1
                    else:
                        problems.append(
                            f"cycle {cycle} {c.group} partition {p}: committed() is offset {tp.offset} metadata {md!r};"
                            f" the last successful commit of it is #{last} (acked {t_kill - end:.3f} s before the kill),"
                            f" ambiguous later attempts {sorted(amb)}"
                        )
                notes.append(f"{c.group}: #{c.n} attempts, {pre}/{GROUP_PARTITIONS} acked before the kill and kept")
            out(f"cycle {cycle:2d}: port {rec.port_s * 1000:6.1f} ms, ready {rec.ready_s * 1000:6.1f} ms; " + "; ".join(notes))
            marks = {c.group: c.successes() for c in committers}
            for c in committers:
                c.pause.clear()
            # every committer commits every partition again before the next kill
            wait_for(
                lambda marks=marks: all(c.successes() >= marks[c.group] + GROUP_PARTITIONS for c in committers),
                60,
                f"commits after restart {cycle}",
            )
    finally:
        for c in committers:
            c.close()
            for _n, _t0, _t1, err in c.attempts:
                if err is not None:
                    err_names[err] = err_names.get(err, 0) + 1
        lines = [
            head,
            f"kill cycles survived: {len(recoveries)} of {GROUP_CYCLES}",
            f"recovery (spawn -> Metadata of __consumer_offsets): {summary([r.ready_s for r in recoveries])}",
            f"commit attempts: {sum(len(c.attempts) for c in committers)}, failed by error: {err_names}",
            f"checked {checked} committed offsets: {before_kill} were commits acknowledged before the kill,"
            f" {retried} commits in flight at the kill and acknowledged after the restart, {ambiguous_kept} ambiguous",
        ]
        if problems:
            lines += [f"PROBLEMS ({len(problems)}), seed {seed}:"] + ["  " + p for p in problems[:40]]
        out.show(lines)
    assert not problems, f"seed {seed}: " + "\n".join(problems[:40]) + f"\nbroker stderr tail:\n{broker.stderr_tail(3000)}"
    assert len(recoveries) == GROUP_CYCLES
