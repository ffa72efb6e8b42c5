"""`vltava produce` and `vltava bench produce` (the native Rust producer) against a real broker, read
back by confluent-kafka (librdkafka 2.16): keys, values and headers byte-identical, every codec
stored as asked (raw Fetch), keyed records in the partition Java's murmur2 partitioner predicts,
per-key order kept; --file, --partition, --acks; one-line errors and exit codes; and the bench's
JSON figures with the topic holding exactly the records it reports."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from e2e_util import consume_confluent, create_topic, kafka_partition_for, watermarks
from rawkafka import CODEC_IDS, fetch

REPO_ROOT = Path(__file__).resolve().parents[2]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3


def vltava_bin() -> str:
    return str(Path(os.environ.get("VLTAVA_BIN", str(REPO_ROOT / "target" / "debug" / "vltava"))).resolve())


def cli_env(extra: dict | None = None) -> dict:
    # A VLTAVA_BOOTSTRAP from the caller's shell must not leak into the tests.
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLTAVA_")}
    env.update(extra or {})
    return env


def run_cli(*args: str, input: bytes | None = None, env: dict | None = None, timeout: float = 120):
    return subprocess.run(
        [vltava_bin(), *args],
        input=input if input is not None else b"",
        capture_output=True,
        timeout=timeout,
        env=cli_env(env),
    )


def ok(*args: str, input: bytes | None = None, env: dict | None = None) -> bytes:
    p = run_cli(*args, input=input, env=env)
    assert p.returncode == 0, (
        f"vltava {' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout!r}\nstderr:\n{p.stderr.decode(errors='replace')}"
    )
    return p.stdout


def fails(code: int, *args: str, input: bytes | None = None, env: dict | None = None) -> str:
    """Runs the CLI expecting exit `code` and exactly one line on stderr; returns that line."""
    p = run_cli(*args, input=input, env=env)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == code, f"vltava {' '.join(args)}: exit {p.returncode}, expected {code}\nstderr:\n{err}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    return lines[0]


def keyed_lines(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: 40 keys, values with spaces, UTF-8, '=' and ':' (no tab, no newline)."""
    out = []
    for i in range(n):
        key = f"key-{(i * 7 + seed) % 40:02d}".encode()
        value = f"value {i} – Vltava ≈ {seed} a=b:c {'x' * (i % 50)}".encode()
        out.append((key, value))
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("codec", CODECS)
def test_produce_keys_headers_codecs_partitions(broker, codec):
    topic = f"native-{codec}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    pairs = keyed_lines(600, seed=CODECS.index(codec))
    data = b"".join(k + b"\t" + v + b"\n" for k, v in pairs)
    ok(
        "produce", topic,
        "--bootstrap-server", broker.bootstrap,
        "--key-separator", "\t",
        "--header", "source=vltava-cli",
        "--header", "eq=a=b",
        "--compression", codec,
        input=data,
    )  # fmt: skip

    got = consume_confluent(broker.bootstrap, topic, range(PARTITIONS), expected=len(pairs))
    assert len(got) == len(pairs), f"consumed {len(got)} records, produced {len(pairs)}"
    for g in got:
        assert g.partition == kafka_partition_for(g.key, PARTITIONS), f"{g.key!r} in partition {g.partition}"
        assert g.headers == (("source", b"vltava-cli"), ("eq", b"a=b")), g.headers
    # Per key, values in line order; and the same multiset of records.
    want: dict[bytes, list[bytes]] = {}
    for k, v in pairs:
        want.setdefault(k, []).append(v)
    have: dict[bytes, list[bytes]] = {}
    for g in sorted(got, key=lambda g: (g.partition, g.offset)):
        have.setdefault(g.key, []).append(g.value)
    assert have == want

    # The batches are stored with the codec asked for, with valid CRCs.
    stored = [b for p in range(PARTITIONS) for b in fetch(broker.host, broker.port, topic, p, 0, version=11).batches()]
    assert stored and all(b.magic == 2 and b.crc_ok() for b in stored)
    assert {b.codec for b in stored} == {CODEC_IDS[codec]}, f"codecs stored: {sorted({b.codec for b in stored})}"


@pytest.mark.timeout(300)
def test_produce_file_partition_and_acks(broker, tmp_path):
    topic = "native-file"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    lines = [f"line {i}".encode() for i in range(300)] + [b"", b"crlf line"]
    path = tmp_path / "in.txt"
    path.write_bytes(b"\n".join(lines[:-1]) + b"\n" + lines[-1] + b"\r\n")
    for acks in ["all", "1", "0"]:
        ok("produce", topic, "--bootstrap-server", broker.bootstrap, "--file", str(path), "--partition", "1", "--acks", acks)
    got = consume_confluent(broker.bootstrap, topic, range(PARTITIONS), expected=3 * len(lines))
    assert all(g.partition == 1 for g in got), sorted({g.partition for g in got})
    values = [g.value or b"" for g in sorted(got, key=lambda g: g.offset)]
    assert values == lines * 3
    assert all(g.key is None and g.headers == () for g in got)


@pytest.mark.timeout(120)
def test_print_deliveries_reports_each_record_offset_or_failure(broker):
    topic = "native-deliveries"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    lines = [f"v{i}".encode() for i in range(50)]
    out = ok("produce", topic, "--bootstrap-server", broker.bootstrap, "--partition", "2", "--print-deliveries",
             input=b"\n".join(lines) + b"\n").decode()
    rows = [line.split("\t") for line in out.splitlines()]
    # One line per input line, each acknowledged at the offset the record is really at.
    assert sorted(int(r[0]) for r in rows) == list(range(1, 51)), out
    assert all(r[1] == "ok" and r[2] == "2" for r in rows), out
    got = {g.offset: g.value for g in consume_confluent(broker.bootstrap, topic, [2], expected=len(lines))}
    assert {int(r[3]): lines[int(r[0]) - 1] for r in rows} == got
    # A record the producer refuses before any broker sees it is reported unsent.
    p = run_cli("produce", topic, "--bootstrap-server", broker.bootstrap, "--partition", "9", "--print-deliveries",
                input=b"x\n")
    assert p.returncode == 1
    assert p.stdout.decode().split("\t")[:2] == ["1", "unsent"], p.stdout


@pytest.mark.timeout(120)
def test_produce_errors_and_bootstrap_from_environment(broker):
    topic = "native-errors"
    create_topic(broker.bootstrap, topic, 1)
    line = fails(1, "produce", topic, "--bootstrap-server", broker.bootstrap, "--key-separator", ":", input=b"a:1\nno-sep\n")
    assert line == "error: line 2 has no key separator ':'"
    # The record before the bad line was still delivered; VLTAVA_BOOTSTRAP is the default server.
    ok("produce", topic, "--key-separator", ":", input=b"b:2\n", env={"VLTAVA_BOOTSTRAP": broker.bootstrap})
    assert watermarks(broker.bootstrap, topic, 0) == (0, 2)

    assert fails(2, "produce", topic, "--compression", "brotli").startswith("error: invalid value 'brotli'")
    assert fails(2, "produce", topic, "--acks", "2").startswith("error: invalid value '2'")
    line = fails(2, "produce", topic, "--set", "linger.ms=soon")
    assert line == "error: invalid producer setting: invalid value 'soon' for linger.ms: expected milliseconds"
    line = fails(1, "produce", topic, "--bootstrap-server", "127.0.0.1:1")
    assert line == "error: cannot connect to 127.0.0.1:1: connection refused"
    line = fails(1, "produce", topic, "--bootstrap-server", broker.bootstrap, "--partition", "5", input=b"x\n")
    assert line == f"error: partition 5 of topic '{topic}' does not exist (it has 1 partition)"
    assert fails(1, "produce", topic, "--file", "/nonexistent/in.txt").startswith("error: cannot open /nonexistent/in.txt")


@pytest.mark.timeout(300)
def test_bench_produce_json(broker):
    topic = "native-bench"
    out = ok(
        "bench", "produce",
        "--bootstrap-server", broker.bootstrap,
        "--topic", topic,
        "--count", "20000",
        "--partitions", "2",
        "--acks", "1",
        "--json",
    )  # fmt: skip
    # stdout is not a terminal: no progress bar, only the JSON object.
    report = json.loads(out)
    assert report["records"] == 20000 and report["failed"] == 0, report
    assert report["record_size"] == 1024 and report["bytes"] == 20000 * 1024
    assert report["seconds"] > 0 and report["records_per_sec"] > 0 and report["mb_per_sec"] > 0
    assert abs(report["mb_per_sec"] - report["records_per_sec"] * 1024 / 1e6) < 0.01 * report["mb_per_sec"] + 0.01
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"] < 60_000, lat
    # The topic was created with 2 partitions and holds exactly the records reported.
    total = sum(watermarks(broker.bootstrap, topic, p)[1] for p in range(2))
    assert total == 20000

    # --duration and --rate: about rate x duration records, at most that many.
    out = ok("bench", "produce", "--bootstrap-server", broker.bootstrap, "--topic", "native-bench-rate",
             "--duration", "1.5", "--rate", "2000", "--record-size", "100", "--compression", "lz4", "--json")  # fmt: skip
    report = json.loads(out)
    assert 2000 <= report["records"] <= 3010, report
    assert fails(2, "bench", "produce", "--count", "10", "--duration", "1").startswith("error: the argument")
