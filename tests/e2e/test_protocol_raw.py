"""Raw wire checks, with a tiny hand-written encoder: ApiVersions in its non-flexible and flexible
forms (response header always v0), KIP-511 fallback for an unknown ApiVersions version, and
malformed frames that must cost the sender its connection, never the broker its process."""

from __future__ import annotations

import socket
import struct

import pytest

from e2e_util import Rec, assert_all_delivered, create_topic, produce_confluent, topic_partition_counts, wait_for
from rawkafka import connect, fetch, header_v1, recv_frame, send_frame

# The ranges the broker is specified to support (see the task brief / README).
REQUIRED = {
    18: ("ApiVersions", 0, 4),
    3: ("Metadata", 0, 12),
    0: ("Produce", 3, 11),
    1: ("Fetch", 4, 16),
    2: ("ListOffsets", 1, 8),
    19: ("CreateTopics", 2, 7),
    20: ("DeleteTopics", 1, 6),
    37: ("CreatePartitions", 0, 3),
    32: ("DescribeConfigs", 1, 4),
    33: ("AlterConfigs", 0, 2),
    44: ("IncrementalAlterConfigs", 0, 1),
    60: ("DescribeCluster", 0, 1),
    21: ("DeleteRecords", 0, 2),
    22: ("InitProducerId", 0, 4),
}


def _connect(broker) -> socket.socket:
    return connect(broker.host, broker.port)


_recv_frame = recv_frame
_send = send_frame
_header_v1 = header_v1


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _skip_tagged(data: bytes, pos: int) -> int:
    n, pos = _uvarint(data, pos)
    for _ in range(n):
        _tag, pos = _uvarint(data, pos)
        size, pos = _uvarint(data, pos)
        pos += size
    return pos


def _parse_api_versions_v0_body(body: bytes, pos: int) -> tuple[int, dict[int, tuple[int, int]]]:
    (err,) = struct.unpack_from(">h", body, pos)
    (n,) = struct.unpack_from(">i", body, pos + 2)
    pos += 6
    apis = {}
    for _ in range(n):
        k, lo, hi = struct.unpack_from(">hhh", body, pos)
        pos += 6
        assert k not in apis, f"api key {k} listed twice"
        apis[k] = (lo, hi)
    return err, apis


def _check_ranges(apis: dict[int, tuple[int, int]]) -> None:
    for k, (lo, hi) in apis.items():
        assert 0 <= lo <= hi, f"api key {k}: bad range {lo}-{hi}"
    missing = []
    for k, (name, lo, hi) in REQUIRED.items():
        have = apis.get(k)
        if have is None or have[0] > lo or have[1] < hi:
            missing.append(f"{name}({k}) wants {lo}-{hi}, advertised {have}")
    assert not missing, "ApiVersions does not cover: " + "; ".join(missing)


def _api_versions_v0(broker) -> dict[int, tuple[int, int]]:
    with _connect(broker) as s:
        _send(s, _header_v1(18, 0, 7))
        resp = _recv_frame(s)
    (corr,) = struct.unpack_from(">i", resp, 0)
    assert corr == 7
    err, apis = _parse_api_versions_v0_body(resp, 4)
    assert err == 0
    return apis


def test_api_versions_v0(broker):
    _check_ranges(_api_versions_v0(broker))


def test_api_versions_let_librdkafka_compress(broker):
    """librdkafka decides which codecs a broker takes from ApiVersions alone: LZ4 needs FindCoordinator
    (key 10) v0 advertised, and librdkafka < 2.10 (Debian's kcat: 2.0.2) needs Produce v2 advertised for
    gzip/snappy (librdkafka #4956). Kafka 4 therefore still advertises Produce from v0 while refusing
    v0-v2 requests (KAFKA-18659). Without these, those clients silently send uncompressed batches."""
    apis = _api_versions_v0(broker)
    problems = []
    if 10 not in apis or apis[10][0] > 0:
        problems.append(f"FindCoordinator v0 not advertised ({apis.get(10)}): librdkafka disables LZ4")
    if apis.get(0, (99, 0))[0] > 2:
        problems.append(f"Produce advertised from v{apis[0][0]}: librdkafka < 2.10 disables gzip/snappy")
    assert not problems, "; ".join(problems)


def test_api_versions_v3_flexible_request_v0_response_header(broker):
    name, version = b"vltava-e2e-py", b"1.0.0"
    # compact strings (uvarint length+1), then empty tagged fields
    body = bytes([len(name) + 1]) + name + bytes([len(version) + 1]) + version + b"\x00"
    req = _header_v1(18, 3, 42) + b"\x00" + body  # request header v2 = v1 + tagged fields
    with _connect(broker) as s:
        _send(s, req)
        resp = _recv_frame(s)
    (corr,) = struct.unpack_from(">i", resp, 0)
    assert corr == 42
    pos = 4  # response header v0: correlation id only, no tagged fields, whatever the version
    (err,) = struct.unpack_from(">h", resp, pos)
    pos += 2
    assert err == 0, f"error code {err}"
    n, pos = _uvarint(resp, pos)
    apis = {}
    for _ in range(n - 1):
        k, lo, hi = struct.unpack_from(">hhh", resp, pos)
        pos = _skip_tagged(resp, pos + 6)
        apis[k] = (lo, hi)
    pos += 4  # throttle_time_ms
    pos = _skip_tagged(resp, pos)
    assert pos == len(resp), f"{len(resp) - pos} unparsed bytes at the end of ApiVersions v3"
    assert apis == _api_versions_v0(broker), "v0 and v3 list different versions"
    _check_ranges(apis)


def test_api_versions_unknown_version_kip511(broker):
    with _connect(broker) as s:
        _send(s, _header_v1(18, 127, 9) + b"\x00" + b"\x01\x01\x00")
        resp = _recv_frame(s)
    (corr,) = struct.unpack_from(">i", resp, 0)
    assert corr == 9
    err, apis = _parse_api_versions_v0_body(resp, 4)
    assert err == 35, f"want UNSUPPORTED_VERSION (35), got {err}"
    assert 18 in apis, "the UNSUPPORTED_VERSION answer must still list the supported versions"
    _check_ranges(apis)


def _expect_closed_or_answered(s: socket.socket) -> None:
    """After a malformed request the broker may answer with an error or close; it must not hang."""
    try:
        data = s.recv(65536)
    except socket.timeout:
        pytest.fail("broker neither answered nor closed the connection within 10 s of a malformed frame")
    except ConnectionResetError:
        return
    del data  # closed (b"") or some answer: both fine


def _assert_alive(broker) -> None:
    assert broker.is_running(), f"broker process died:\n{broker.stderr_tail()}"
    _check_ranges(_api_versions_v0(broker))


def _framed(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


@pytest.mark.parametrize(
    "frame",
    [
        # a length prefix far beyond any sane request size, with nothing after it
        pytest.param(struct.pack(">i", 0x7FFFFFF0), id="huge-length"),
        # negative length
        pytest.param(struct.pack(">i", -5), id="negative-length"),
        # Metadata v4 claiming 2^31-16 topics in a tiny frame
        pytest.param(_framed(_header_v1(3, 4, 1, b"x") + struct.pack(">i", 0x7FFFFFF0) + b"\x00" * 13), id="huge-array-count"),
        # Produce v9 (flexible) claiming an enormous compact string
        pytest.param(
            _framed(_header_v1(0, 9, 1, b"x") + b"\x00" + b"\xff\xff\xff\xff\x07" + b"\x00" * 8), id="huge-compact-length"
        ),
        # Produce v3 claiming 2^31-1 topics
        pytest.param(
            _framed(_header_v1(0, 3, 1, b"x") + b"\xff\xff" + struct.pack(">hii", -1, 1000, 0x7FFFFFFF)), id="huge-produce-topics"
        ),
        # an API key nobody knows
        pytest.param(_framed(_header_v1(9999, 0, 1, b"x") + b"\x00" * 3), id="unknown-api-key"),
        # a known API at a version far outside its range
        pytest.param(_framed(_header_v1(3, 999, 1, b"x") + b"\x00" * 3), id="unsupported-version"),
        # truncated header
        pytest.param(_framed(b"\x00\x12\x00"), id="short-header"),
    ],
)
def test_malformed_frames_do_not_kill_the_broker(broker, frame):
    create_topic(broker.bootstrap, "still-here", 1)
    with _connect(broker) as s:
        s.sendall(frame)
        _expect_closed_or_answered(s)
    _assert_alive(broker)
    assert "still-here" in topic_partition_counts(broker.bootstrap)


def _metadata_v4(broker, topic: str, allow_auto_create: bool) -> int:
    """Metadata v4 for one topic; returns that topic's error code."""
    name = topic.encode()
    body = struct.pack(">i", 1) + struct.pack(">h", len(name)) + name + (b"\x01" if allow_auto_create else b"\x00")
    with _connect(broker) as s:
        _send(s, _header_v1(3, 4, 77) + body)
        resp = _recv_frame(s)
    pos = 4  # correlation id
    pos += 4  # throttle_time_ms
    (nb,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    for _ in range(nb):
        pos += 4  # node_id
        (hl,) = struct.unpack_from(">h", resp, pos)
        pos += 2 + hl + 4  # host, port
        (rl,) = struct.unpack_from(">h", resp, pos)
        pos += 2 + max(rl, 0)  # rack
    (cl,) = struct.unpack_from(">h", resp, pos)
    pos += 2 + max(cl, 0) + 4  # cluster_id, controller_id
    (nt,) = struct.unpack_from(">i", resp, pos)
    assert nt == 1, f"asked for one topic, got {nt}"
    (err,) = struct.unpack_from(">h", resp, pos + 4)
    (tl,) = struct.unpack_from(">h", resp, pos + 6)
    assert resp[pos + 8 : pos + 8 + tl] == name
    return err


def test_metadata_allow_auto_topic_creation_flag(broker):
    """Metadata v4+: a consumer's request (allow_auto_topic_creation=false) never creates a topic."""
    err = _metadata_v4(broker, "meta-no-create", allow_auto_create=False)
    assert err == 3, f"want UNKNOWN_TOPIC_OR_PARTITION (3), got {err}"
    assert "meta-no-create" not in topic_partition_counts(broker.bootstrap)

    err = _metadata_v4(broker, "meta-create", allow_auto_create=True)
    assert err in (0, 5), f"auto-creating Metadata answered error {err} (want NONE or LEADER_NOT_AVAILABLE)"
    wait_for(lambda: "meta-create" in topic_partition_counts(broker.bootstrap), 30, "the auto-created topic")


def test_metadata_no_auto_create_when_disabled(broker_factory):
    broker = broker_factory({"auto.create.topics.enable": False})
    err = _metadata_v4(broker, "meta-disabled", allow_auto_create=True)
    assert err == 3, f"want UNKNOWN_TOPIC_OR_PARTITION (3), got {err}"
    assert "meta-disabled" not in topic_partition_counts(broker.bootstrap)


def test_fetch_versions_serve_identical_batches(broker):
    """Fetch v4 (by name, non-flexible) up to v11 serve the same stored batches, CRCs intact."""
    topic = "raw-fetch"
    create_topic(broker.bootstrap, topic, 1)
    records = [Rec(f"k{i}".encode(), f"value {i}".encode() * (i % 20)) for i in range(500)]
    assert_all_delivered(produce_confluent(broker.bootstrap, topic, records, partition=0, conf={"batch.num.messages": 50}))
    answers = {}
    for v in (4, 5, 7, 9, 10, 11):
        part = fetch(broker.host, broker.port, topic, 0, 0, version=v)
        assert part.error_code == 0, f"Fetch v{v}: error {part.error_code}"
        assert part.high_watermark == 500
        if v >= 5:
            assert part.log_start_offset == 0
        answers[v] = part.records
        batches = part.batches()
        assert batches and batches[0].base_offset == 0
        assert all(b.magic == 2 and b.crc_ok() for b in batches), f"Fetch v{v}: bad magic or CRC"
        for a, b in zip(batches, batches[1:]):
            assert b.base_offset == a.base_offset + a.last_offset_delta + 1, "batches not contiguous"
        assert batches[-1].base_offset + batches[-1].last_offset_delta + 1 == 500
    assert len(set(answers.values())) == 1, "different Fetch versions served different bytes"

    # from an offset inside the log: the batch holding it comes first
    part = fetch(broker.host, broker.port, topic, 0, 123, version=11)
    first = part.batches()[0]
    assert first.base_offset <= 123 <= first.base_offset + first.last_offset_delta
    # at the high watermark: no error, no records
    part = fetch(broker.host, broker.port, topic, 0, 500, version=11)
    assert part.error_code == 0 and not part.records
    # beyond it: OFFSET_OUT_OF_RANGE
    part = fetch(broker.host, broker.port, topic, 0, 501, version=11)
    assert part.error_code == 1, f"want OFFSET_OUT_OF_RANGE (1), got {part.error_code}"
