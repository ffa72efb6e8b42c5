"""`vltava consume` (the native Rust consumer) against a real broker and confluent-kafka (librdkafka 2.16):

* records confluent-kafka produced (keys, binary values, headers with repeats and nulls, explicit
  timestamps) with every codec are printed by `vltava consume --from-beginning --count N --format json`
  exactly as confluent-kafka reads them back;
* a mixed consumer group, one `vltava consume --group G` process and one confluent-kafka consumer, on a
  4-partition topic: each member reads only its own partitions and together they read every record once,
  whichever of the two leads the group (and so runs the assignor); when the confluent member leaves, the
  vltava member takes over all four partitions;
* the command line itself: start positions (--offset, --partition, --from-timestamp), the value and kv
  formats, VLTAVA_BOOTSTRAP, one-line errors with exit 1 and usage errors with exit 2.
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
    assert_all_delivered,
    assert_matches_deliveries,
    consume_confluent,
    create_topic,
    gen_records,
    produce_confluent,
    wait_for,
)
from group_util import GROUP_SETTINGS, Member, check_partitioning, group_conf, produce_to_partitions, pump, pump_for

REPO_ROOT = Path(__file__).resolve().parents[2]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
# Record i has timestamp T0 + i: an hour ago, recent enough for the default retention.
T0 = (int(time.time()) - 3600) * 1000


def vltava_bin() -> str:
    return str(Path(os.environ.get("VLTAVA_BIN", str(REPO_ROOT / "target" / "debug" / "vltava"))).resolve())


def cli_env(extra: dict | None = None) -> dict:
    # VLTAVA_* from the caller's shell must not leak into tests that rely on flags or defaults.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLTAVA_")}
    env.update(extra or {})
    return env


def consume_cli(*args: str, bootstrap: str | None, timeout: float = 120, env: dict | None = None):
    cmd = [vltava_bin(), "consume", *args]
    if bootstrap is not None:
        cmd += ["--bootstrap-server", bootstrap]
    return subprocess.run(cmd, capture_output=True, timeout=timeout, env=cli_env(env), stdin=subprocess.DEVNULL)


def ok(*args: str, bootstrap: str | None, env: dict | None = None) -> bytes:
    p = consume_cli(*args, bootstrap=bootstrap, env=env)
    assert p.returncode == 0, f"vltava consume {' '.join(args)} exited {p.returncode}\nstderr:\n{p.stderr.decode()}"
    return p.stdout


def fails(code: int, *args: str, bootstrap: str | None = None) -> str:
    """Runs expecting exit `code` and exactly one line on stderr; returns that line."""
    p = consume_cli(*args, bootstrap=bootstrap, timeout=60)
    assert p.returncode == code, f"exit {p.returncode}, expected {code}\nstdout:\n{p.stdout!r}\nstderr:\n{p.stderr.decode()}"
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{p.stderr.decode()}"
    return lines[0]


def from_json_bytes(v) -> bytes | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v.encode()
    return base64.b64decode(v["base64"])


def parse_json_line(line: bytes | str) -> tuple[str, Got]:
    d = json.loads(line)
    headers = tuple((h["key"], from_json_bytes(h["value"])) for h in d["headers"])
    return d["topic"], Got(
        d["partition"], d["offset"], from_json_bytes(d["key"]), from_json_bytes(d["value"]), headers, d["timestamp"]
    )


def parse_json(out: bytes) -> list[Got]:
    return [parse_json_line(line)[1] for line in out.splitlines() if line.strip()]


# ============================================================================ codecs
@pytest.mark.timeout(300)
@pytest.mark.parametrize("codec", CODECS)
def test_reads_what_confluent_produced_identically(broker, codec):
    bs = broker.bootstrap
    topic = f"native-{codec}"
    create_topic(bs, topic, 3)
    records = [
        Rec(r.key, r.value, r.headers, T0 + i) for i, r in enumerate(gen_records(1500, n_keys=40, seed=CODECS.index(codec) + 101))
    ]
    results = produce_confluent(
        bs,
        topic,
        records,
        conf={"compression.type": codec, "partitioner": "murmur2_random", "linger.ms": 25, "batch.num.messages": 200},
    )
    assert_all_delivered(results)

    out = ok(topic, "--from-beginning", "--count", str(len(records)), "--format", "json", bootstrap=bs)
    got = parse_json(out)
    assert_matches_deliveries(records, results, got)
    ts = {(p, off): rec.timestamp for rec, (_e, p, off) in zip(records, results)}
    wrong_ts = [(g.partition, g.offset, g.timestamp) for g in got if g.timestamp != ts[(g.partition, g.offset)]]
    assert not wrong_ts, f"timestamps differ: {wrong_ts[:5]}"
    # Within each partition, in offset order.
    for p in range(3):
        offs = [g.offset for g in got if g.partition == p]
        assert offs == sorted(offs) and offs == list(range(len(offs))), f"partition {p} out of order"

    # What librdkafka reads is the same, field for field.
    reference = consume_confluent(bs, topic, range(3), expected=len(records))
    key = lambda g: (g.partition, g.offset)  # noqa: E731
    assert sorted(got, key=key) == sorted(reference, key=key)


# ============================================================================ command line
@pytest.mark.timeout(180)
def test_start_positions_formats_and_errors(broker_factory):
    bs = broker_factory(GROUP_SETTINGS).bootstrap
    topic = "native-cli"
    create_topic(bs, topic, 2)
    values = produce_to_partitions(bs, topic, {0: 10, 1: 10}, prefix="c")
    # Timestamps: confluent sets produce time; find the time of partition 0's offset 6 from the output.
    all_json = parse_json(ok(topic, "--from-beginning", "--count", "20", "--format", "json", bootstrap=bs))
    assert sorted((g.partition, g.offset) for g in all_json) == sorted(values)
    assert all(g.value == values[(g.partition, g.offset)] for g in all_json)

    # --partition and --offset
    got = parse_json(ok(topic, "--partition", "1", "--offset", "7", "--count", "3", "--format", "json", bootstrap=bs))
    assert [(g.partition, g.offset) for g in got] == [(1, 7), (1, 8), (1, 9)]
    # value and kv formats, VLTAVA_BOOTSTRAP instead of the flag.
    out = ok(topic, "--partition", "0", "--from-beginning", "--count", "2", bootstrap=None, env={"VLTAVA_BOOTSTRAP": bs})
    assert out == b"c-p0-0\nc-p0-1\n"
    out = ok(topic, "--partition", "0", "--offset", "3", "--count", "1", "--format", "kv", bootstrap=bs)
    assert out == b"null\tc-p0-3\n"

    # --from-timestamp: every record at or after the time of partition 0's offset 6.
    t6 = next(g.timestamp for g in all_json if (g.partition, g.offset) == (0, 6))
    want = sorted((g.partition, g.offset) for g in all_json if g.timestamp >= t6)
    got = parse_json(ok(topic, "--from-timestamp", str(t6), "--count", str(len(want)), "--format", "json", bootstrap=bs))
    assert sorted((g.partition, g.offset) for g in got) == want

    # Errors: one line, exit 1; usage: exit 2.
    assert fails(1, "no-such-topic", "--count", "1", bootstrap=bs) == "error: topic 'no-such-topic' does not exist"
    assert fails(1, topic, "--partition", "9", "--count", "1", bootstrap=bs) == f"error: topic '{topic}' has no partition 9"
    line = fails(1, topic, "--count", "1", bootstrap="127.0.0.1:1")
    assert line.startswith("error: cannot connect to 127.0.0.1:1"), line
    assert fails(2, topic, "--group", "g", "--offset", "3", bootstrap=bs).startswith("error:")
    assert fails(2, topic, "--from-beginning", "--offset", "3", bootstrap=bs).startswith("error:")
    assert fails(2, topic, "--format", "xml", bootstrap=bs).startswith("error:")
    assert fails(2, topic, "--bootstrap-server", "nonsense").startswith("error:")
    assert fails(2, bootstrap=bs).startswith("error:")


@pytest.mark.timeout(120)
def test_offset_past_the_end_starts_at_the_end(broker):
    bs = broker.bootstrap
    topic = "native-clamp"
    create_topic(bs, topic, 1)
    produce_to_partitions(bs, topic, {0: 3}, prefix="old")
    proc = subprocess.Popen(
        [vltava_bin(), "consume", topic, "--offset", "500", "--count", "1", "--bootstrap-server", bs],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    try:
        # Give it time to position itself at the end, then write one new record.
        time.sleep(2)
        produce_to_partitions(bs, topic, {0: 1}, prefix="new")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert out == b"new-p0-0\n"
    assert b"beyond the log end offset; starting at 3" in err


# ============================================================================ mixed group
class CliMember:
    """`vltava consume --group` in its own process; its JSON lines are collected by a thread."""

    def __init__(self, bootstrap: str, topic: str, group: str, strategy: str = "range"):
        self.proc = subprocess.Popen(
            [
                vltava_bin(),
                "consume",
                topic,
                "--group",
                group,
                "--from-beginning",
                "--format",
                "json",
                "--bootstrap-server",
                bootstrap,
                "--set",
                "session.timeout.ms=6000",
                "--set",
                "heartbeat.interval.ms=500",
                "--set",
                "fetch.max.wait.ms=100",
                "--set",
                "client.id=vltava-member",
                "--set",
                f"partition.assignment.strategy={strategy}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(),
        )
        self.got: list[Got] = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                _topic, g = parse_json_line(line)
                with self.lock:
                    self.got.append(g)

    def records(self) -> list[Got]:
        with self.lock:
            return list(self.got)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        self.reader.join(timeout=5)
        return self.proc.returncode, (err or b"").decode()


def describe(bootstrap: str, group: str) -> dict:
    p = subprocess.run(
        [vltava_bin(), "group", "describe", group, "--json", "--bootstrap-server", bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def owned_by_client(bootstrap: str, group: str, topic: str) -> dict[str, set[int]] | None:
    """client id -> partitions, while the group is Stable; None otherwise."""
    d = describe(bootstrap, group)
    if d["state"] != "Stable":
        return None
    out: dict[str, set[int]] = {}
    for m in d["members"]:
        parts: set[int] = set()
        for a in m["assignment"] or []:
            if a["topic"] == topic:
                parts |= set(a["partitions"])
        out[m["client_id"]] = parts
    return out


@pytest.mark.timeout(240)
@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
@pytest.mark.parametrize("leader", ["vltava", "confluent"])
def test_mixed_group_splits_partitions_and_vltava_takes_over(broker_factory, leader, strategy):
    """Eager (range) and incremental (cooperative-sticky) rebalancing; either member leads."""
    bs = broker_factory(GROUP_SETTINGS).bootstrap
    topic = group = f"native-mixed-{leader}-{strategy}"
    create_topic(bs, topic, 4)
    members: list[Member] = []
    cli = None
    try:
        conf = group_conf(bs, group, client_id="confluent-member", partition_assignment_strategy=strategy)
        if leader == "vltava":
            cli = CliMember(bs, topic, group, strategy)
            wait_for(
                lambda: (owned_by_client(bs, group, topic) or {}).get("vltava-member") == {0, 1, 2, 3},
                60,
                "vltava alone owns all",
            )
            members.append(Member("confluent", conf, [topic]))
        else:
            members.append(Member("confluent", conf, [topic]))
            pump(members, lambda: members[0].owned == {0, 1, 2, 3}, 60, "confluent alone owns all")
            cli = CliMember(bs, topic, group, strategy)

        def split():
            owned = owned_by_client(bs, group, topic)
            if owned is None or set(owned) != {"vltava-member", "confluent-member"}:
                return None
            if members[0].owned != owned["confluent-member"]:
                return None
            return owned if check_partitioning(owned, range(4)) is None else None

        owned = pump(members, split, 90, "the two members split the four partitions", stable_for=1.0)
        assert len(owned["vltava-member"]) == 2 and len(owned["confluent-member"]) == 2, owned
        d = describe(bs, group)
        assert d["protocol"] == strategy, d

        # Records produced now go to whichever member owns their partition, each exactly once.
        before_cli = len(cli.records())
        before_conf = len(members[0].got)
        values = produce_to_partitions(bs, topic, {p: 25 for p in range(4)}, prefix="split")
        pump(
            members,
            lambda: len(cli.records()) - before_cli + len(members[0].got) - before_conf >= len(values),
            60,
            "every record consumed by the group",
        )
        pump_for(members, 2)  # anything extra (a duplicate) would show up now
        cli_new = cli.records()[before_cli:]
        conf_new = members[0].got[before_conf:]
        assert all(g.partition in owned["vltava-member"] for g in cli_new), "vltava read a partition it does not own"
        assert all(c.partition in owned["confluent-member"] for c in conf_new), "confluent read a partition it does not own"
        together = sorted([(g.partition, g.offset) for g in cli_new] + [(c.partition, c.offset) for c in conf_new])
        assert together == sorted(values), "the group did not read every record exactly once"
        assert all(g.value == values[(g.partition, g.offset)] for g in cli_new)
        members[0].commit()

        # The confluent member leaves: vltava takes every partition and reads what comes next.
        members[0].close()
        wait_for(
            lambda: owned_by_client(bs, group, topic) == {"vltava-member": {0, 1, 2, 3}},
            60,
            "vltava owns all four partitions",
        )
        before = len(cli.records())
        more = produce_to_partitions(bs, topic, {p: 10 for p in range(4)}, prefix="takeover")
        wait_for(lambda: len(cli.records()) - before >= len(more), 60, "vltava reads the records of every partition")
        time.sleep(1)
        taken = cli.records()[before:]
        assert sorted((g.partition, g.offset) for g in taken) == sorted(more)

        code, err = cli.stop()
        assert code == 0, err
        cli = None
        # It left the group on SIGTERM (no waiting for its session to expire) after committing.
        wait_for(lambda: describe(bs, group)["state"] == "Empty", 30, "the group is Empty")
        committed = {o["partition"]: o["current_offset"] for o in describe(bs, group)["offsets"] if o["topic"] == topic}
        assert committed == {p: 35 for p in range(4)}, committed
    finally:
        for m in members:
            m.close()
        if cli is not None:
            cli.stop()
