"""`vltava group` (the native client's CLI) against a real broker and confluent-kafka consumer groups:
list, describe (committed offsets, log end offsets, lag, members and their assignments), reset-offsets
(--to-earliest, --to-offset, --to-latest, --to-datetime, --dry-run; refused while the group has active
members), delete, and the exit codes (0 ok, 1 error with one line on stderr, 2 usage)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

from e2e_util import base_conf, create_topic, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
GROUP_SETTINGS = {"group.initial.rebalance.delay.ms": 0, "group.min.session.timeout.ms": 1000}
TOPIC = "cli-t"
GROUP = "cli-g"
PARTITIONS = 3
PER_PARTITION = 10
# Record i of every partition has timestamp T0 + i * 1000: an hour ago, recent enough for retention.
T0 = (int(time.time()) - 3600) * 1000


def vltava_bin() -> str:
    return str(Path(os.environ.get("VLTAVA_BIN", str(REPO_ROOT / "target" / "debug" / "vltava"))).resolve())


def cli_env(extra: dict | None = None) -> dict:
    # VLTAVA_BOOTSTRAP from the caller's shell must not leak into tests that rely on the flag or default.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLTAVA_")}
    env.update(extra or {})
    return env


def run_cli(*args: str, bootstrap: str | None = None, env: dict | None = None, timeout: float = 60):
    cmd = [vltava_bin(), *args]
    if bootstrap is not None:
        cmd += ["--bootstrap-server", bootstrap]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=cli_env(env), stdin=subprocess.DEVNULL)


def ok(*args: str, bootstrap: str) -> str:
    p = run_cli(*args, bootstrap=bootstrap)
    assert p.returncode == 0, f"vltava {' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p.stdout


def fails(code: int, *args: str, bootstrap: str | None = None, env: dict | None = None) -> str:
    """Runs the CLI expecting exit `code` and exactly one line on stderr; returns that line."""
    p = run_cli(*args, bootstrap=bootstrap, env=env)
    assert p.returncode == code, (
        f"vltava {' '.join(args)}: exit {p.returncode}, expected {code}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    )
    lines = p.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{p.stderr}"
    return lines[0]


# ----------------------------------------------------------------------------- output parsing
def table_after(out: str, first_header: str) -> list[dict[str, str]]:
    """Rows of the whitespace-separated table whose header line starts with `first_header`."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.split()[:1] == [first_header]:
            header = line.split()
            rows = []
            for row in lines[i + 1 :]:
                if not row.strip():
                    break
                cells = row.split(None, len(header) - 1)
                rows.append(dict(zip(header, cells)))
            return rows
    raise AssertionError(f"no table starting with {first_header} in:\n{out}")


def field(out: str, name: str) -> str:
    for line in out.splitlines():
        parts = line.split(None, 1)
        if parts and parts[0] == name:
            return parts[1].strip() if len(parts) > 1 else ""
    raise AssertionError(f"no {name} line in:\n{out}")


def describe_offsets(bootstrap: str, group: str = GROUP) -> dict[int, tuple]:
    """partition -> (current, log end, lag, consumer id) from the human-readable describe."""
    out = ok("group", "describe", group, bootstrap=bootstrap)
    rows = table_after(out, "TOPIC")
    return {
        int(r["PARTITION"]): (r["CURRENT-OFFSET"], r["LOG-END-OFFSET"], r["LAG"], r["CONSUMER-ID"])
        for r in rows
        if r["TOPIC"] == TOPIC
    }


def committed_via_json(bootstrap: str, group: str = GROUP) -> dict[int, int | None]:
    d = json.loads(ok("group", "describe", group, "--json", bootstrap=bootstrap))
    return {o["partition"]: o["current_offset"] for o in d["offsets"] if o["topic"] == TOPIC}


def reset(bootstrap: str, *args: str) -> dict[int, int]:
    out = ok("group", "reset-offsets", GROUP, *args, bootstrap=bootstrap)
    rows = table_after(out, "GROUP")
    assert all(r["GROUP"] == GROUP and r["TOPIC"] == TOPIC for r in rows), out
    return {int(r["PARTITION"]): int(r["NEW-OFFSET"]) for r in rows}


def listed(bootstrap: str, *args: str) -> dict[str, tuple[str, str]]:
    out = ok("group", "list", *args, bootstrap=bootstrap)
    if not out.strip():
        return {}
    return {r["GROUP"]: (r["STATE"], r["PROTOCOL-TYPE"]) for r in table_after(out, "GROUP")}


# ----------------------------------------------------------------------------- clients
def group_conf(bootstrap: str, group: str = GROUP, reset: str = "earliest") -> dict:
    conf = base_conf(bootstrap)
    conf.update(
        {
            "group.id": group,
            "auto.offset.reset": reset,
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100,
        }
    )
    return conf


def produce(bootstrap: str, partition: int, count: int, first_index: int = 0) -> None:
    p = Producer({**base_conf(bootstrap), "linger.ms": 5, "acks": "all"})
    errors = []
    for i in range(first_index, first_index + count):
        p.produce(
            TOPIC,
            value=f"p{partition}-{i}".encode(),
            partition=partition,
            timestamp=T0 + i * 1000,
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
    assert p.flush(60) == 0, "records still undelivered"
    assert not errors, errors


def consume_group(bootstrap: str, want: int, reset: str = "earliest", commit: bool = True, timeout: float = 60) -> dict:
    """A subscribed consumer of GROUP reads `want` records; returns partition -> offsets read, commits
    its positions (if `commit`) and closes (leaving the group)."""
    c = Consumer(group_conf(bootstrap, reset=reset))
    got: dict[int, list[int]] = {}
    try:
        c.subscribe([TOPIC])
        deadline = time.monotonic() + timeout
        n = 0
        while n < want:
            assert time.monotonic() < deadline, f"consumed {n} of {want} records: {got}"
            for m in c.consume(num_messages=500, timeout=0.5):
                assert m.error() is None, m.error()
                got.setdefault(m.partition(), []).append(m.offset())
                n += 1
        if commit:
            c.commit(asynchronous=False)
    finally:
        c.close()
    return got


def group_state(bootstrap: str, group: str = GROUP) -> str:
    return json.loads(ok("group", "describe", group, "--json", bootstrap=bootstrap))["state"]


def setup_group(broker) -> str:
    """Topic with 3 x 10 records; GROUP consumed all of them and committed; then 5 more records on
    partition 1 (lag 5 there). The consumer has left: the group is Empty."""
    bs = broker.bootstrap
    create_topic(bs, TOPIC, PARTITIONS)
    for p in range(PARTITIONS):
        produce(bs, p, PER_PARTITION)
    got = consume_group(bs, PARTITIONS * PER_PARTITION)
    assert {p: sorted(o) for p, o in got.items()} == {p: list(range(PER_PARTITION)) for p in range(PARTITIONS)}
    produce(bs, 1, 5, first_index=PER_PARTITION)
    wait_for(lambda: group_state(bs) == "Empty", 30, "group Empty after the consumer closed")
    return bs


# ============================================================================ tests
@pytest.mark.timeout(180)
def test_list_and_describe_show_offsets_log_end_and_lag(broker_factory):
    bs = setup_group(broker_factory(GROUP_SETTINGS))

    groups = listed(bs)
    assert groups.get(GROUP) == ("Empty", "consumer"), groups
    assert GROUP in listed(bs, "--state", "empty")
    assert GROUP not in listed(bs, "--state", "Stable")
    as_json = json.loads(ok("group", "list", "--json", bootstrap=bs))
    assert {"group": GROUP, "state": "Empty", "protocol_type": "consumer"} in as_json

    out = ok("group", "describe", GROUP, bootstrap=bs)
    assert field(out, "STATE") == "Empty"
    assert field(out, "MEMBERS") == "0"
    assert describe_offsets(bs) == {
        0: ("10", "10", "0", "-"),
        1: ("10", "15", "5", "-"),
        2: ("10", "10", "0", "-"),
    }
    d = json.loads(ok("group", "describe", GROUP, "--json", bootstrap=bs))
    assert d["state"] == "Empty" and d["members"] == [] and d["protocol_type"] == "consumer"
    assert sorted((o["partition"], o["current_offset"], o["log_end_offset"], o["lag"]) for o in d["offsets"]) == [
        (0, 10, 10, 0),
        (1, 10, 15, 5),
        (2, 10, 10, 0),
    ]

    # The bootstrap server can come from the environment instead of the flag.
    p = run_cli("group", "list", env={"VLTAVA_BOOTSTRAP": bs})
    assert p.returncode == 0 and GROUP in p.stdout, p


@pytest.mark.timeout(240)
def test_reset_offsets_every_way(broker_factory):
    bs = setup_group(broker_factory(GROUP_SETTINGS))

    # --to-earliest: a new consumer of the group (auto.offset.reset=latest, so only the committed
    # offsets can make it start at 0) reads every partition from offset 0.
    assert reset(bs, "--topic", TOPIC, "--to-earliest") == {0: 0, 1: 0, 2: 0}
    assert committed_via_json(bs) == {0: 0, 1: 0, 2: 0}
    got = consume_group(bs, PARTITIONS * PER_PARTITION + 5, reset="latest", commit=False)
    assert {p: min(o) for p, o in got.items()} == {0: 0, 1: 0, 2: 0}
    wait_for(lambda: group_state(bs) == "Empty", 30, "group Empty again")

    # --to-offset on one partition; beyond the log end it is clamped (with a warning).
    assert reset(bs, "--topic", f"{TOPIC}:1", "--to-offset", "3") == {1: 3}
    assert committed_via_json(bs) == {0: 0, 1: 3, 2: 0}
    p = run_cli("group", "reset-offsets", GROUP, "--topic", f"{TOPIC}:2", "--to-offset", "100", bootstrap=bs)
    assert p.returncode == 0, p.stderr
    assert "warning" in p.stderr and "log end" in p.stderr, p.stderr
    assert committed_via_json(bs) == {0: 0, 1: 3, 2: 10}
    got = consume_group(bs, 10 + 12, reset="latest", commit=False)  # p0 0..9, p1 3..14, p2 nothing
    assert {p: (min(o), max(o)) for p, o in got.items()} == {0: (0, 9), 1: (3, 14)}, got
    wait_for(lambda: group_state(bs) == "Empty", 30, "group Empty again")

    # --to-latest.
    assert reset(bs, "--topic", TOPIC, "--to-latest") == {0: 10, 1: 15, 2: 10}
    assert describe_offsets(bs) == {
        0: ("10", "10", "0", "-"),
        1: ("15", "15", "0", "-"),
        2: ("10", "10", "0", "-"),
    }

    # --to-datetime, RFC 3339 ("Z" and offset forms) and epoch milliseconds. Partitions with no record
    # that recent go to their log end, as kafka-consumer-groups does.
    t4 = datetime.datetime.fromtimestamp((T0 + 4000) / 1000, tz=datetime.timezone.utc)
    assert reset(bs, "--topic", TOPIC, "--to-datetime", t4.strftime("%Y-%m-%dT%H:%M:%SZ")) == {0: 4, 1: 4, 2: 4}
    t7 = datetime.datetime.fromtimestamp((T0 + 7500) / 1000, tz=datetime.timezone(datetime.timedelta(hours=2)))
    assert reset(bs, "--topic", TOPIC, "--to-datetime", t7.isoformat(timespec="milliseconds")) == {0: 8, 1: 8, 2: 8}
    assert reset(bs, "--topic", TOPIC, "--to-datetime", str(T0 + 12_000)) == {0: 10, 1: 12, 2: 10}
    assert committed_via_json(bs) == {0: 10, 1: 12, 2: 10}

    # --dry-run prints the new offsets and commits nothing.
    p = run_cli("group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-earliest", "--dry-run", bootstrap=bs)
    assert p.returncode == 0, p.stderr
    assert {int(r["PARTITION"]): int(r["NEW-OFFSET"]) for r in table_after(p.stdout, "GROUP")} == {0: 0, 1: 0, 2: 0}
    assert committed_via_json(bs) == {0: 10, 1: 12, 2: 10}

    # Unknown topic or partition: one clear line, exit 1, nothing changed.
    line = fails(1, "group", "reset-offsets", GROUP, "--topic", "nope", "--to-earliest", bootstrap=bs)
    assert line == "error: topic 'nope' does not exist", line
    line = fails(1, "group", "reset-offsets", GROUP, "--topic", f"{TOPIC}:7", "--to-earliest", bootstrap=bs)
    assert line == f"error: topic '{TOPIC}' has no partition 7", line
    assert committed_via_json(bs) == {0: 10, 1: 12, 2: 10}


@pytest.mark.timeout(180)
def test_active_members_block_reset_and_delete_then_delete_works(broker_factory):
    bs = setup_group(broker_factory(GROUP_SETTINGS))
    c = Consumer(group_conf(bs))
    try:
        c.subscribe([TOPIC])
        deadline = time.monotonic() + 60
        while len(c.assignment()) < PARTITIONS:
            assert time.monotonic() < deadline, "consumer never got its assignment"
            c.poll(0.2)
        member_id = c.memberid()

        out = ok("group", "describe", GROUP, bootstrap=bs)
        assert field(out, "STATE") == "Stable"
        assert field(out, "MEMBERS") == "1"
        assert field(out, "PROTOCOL").startswith("consumer")
        members = table_after(out, "MEMBER-ID")
        assert [m["MEMBER-ID"] for m in members] == [member_id]
        assert members[0]["ASSIGNMENT"] == f"{TOPIC}:0,1,2", members
        offsets = describe_offsets(bs)
        assert {p: v[3] for p, v in offsets.items()} == {0: member_id, 1: member_id, 2: member_id}
        assert {p: v[2] for p, v in offsets.items()} == {0: "0", 1: "5", 2: "0"}
        d = json.loads(ok("group", "describe", GROUP, "--json", bootstrap=bs))
        assert d["members"][0]["assignment"] == [{"topic": TOPIC, "partitions": [0, 1, 2]}]
        assert GROUP in listed(bs, "--state", "Stable")

        line = fails(1, "group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-earliest", bootstrap=bs)
        assert line == f"error: group '{GROUP}' has active members; stop them before resetting offsets"
        line = fails(1, "group", "delete", GROUP, bootstrap=bs)
        assert line == f"error: group '{GROUP}' has active members; stop them before deleting it"
        assert committed_via_json(bs) == {0: 10, 1: 10, 2: 10}
    finally:
        c.close()

    wait_for(lambda: group_state(bs) == "Empty", 30, "group Empty after the consumer closed")
    assert ok("group", "delete", GROUP, bootstrap=bs).strip() == f"Deleted group '{GROUP}'"
    assert GROUP not in listed(bs)
    assert fails(1, "group", "describe", GROUP, bootstrap=bs) == f"error: group '{GROUP}' does not exist"
    assert fails(1, "group", "delete", GROUP, bootstrap=bs) == f"error: group '{GROUP}' does not exist"


def test_bad_arguments_exit_2_with_one_line(broker):
    bs = broker.bootstrap
    for args in (
        ["group"],
        ["group", "describe"],
        ["group", "frobnicate"],
        ["group", "list", "--state", "Running"],
        ["group", "reset-offsets", GROUP, "--topic", TOPIC],
        ["group", "reset-offsets", GROUP, "--to-earliest"],
        ["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-earliest", "--to-latest"],
        ["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-offset", "-1"],
        ["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-offset", "ten"],
        ["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-datetime", "yesterday"],
        ["group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-datetime", "2026-11-27T12:00:00"],
        ["group", "reset-offsets", GROUP, "--topic", f"{TOPIC}:x", "--to-earliest"],
        ["group", "delete"],
        ["group", "list", "--timeout", "0"],
    ):
        fails(2, *args, bootstrap=bs)
    # A malformed bootstrap list, from the flag or the environment, is a usage error too.
    assert "no-port" in fails(2, "group", "list", bootstrap="no-port")
    assert "no-port" in fails(2, "group", "list", env={"VLTAVA_BOOTSTRAP": "no-port"})
    # Help still works and exits 0.
    p = run_cli("group", "reset-offsets", "--help")
    assert p.returncode == 0 and "--to-datetime" in p.stdout


def test_unreachable_broker_exits_1_with_one_line(broker_factory):
    broker = broker_factory(start=False)  # a port nobody listens on
    addr = broker.bootstrap
    line = fails(1, "group", "list", bootstrap=addr)
    assert line == f"error: cannot connect to {addr}: connection refused", line
    line = fails(1, "group", "describe", GROUP, env={"VLTAVA_BOOTSTRAP": addr})
    assert line == f"error: cannot connect to {addr}: connection refused", line
    line = fails(1, "group", "reset-offsets", GROUP, "--topic", TOPIC, "--to-earliest", bootstrap=addr)
    assert addr in line
