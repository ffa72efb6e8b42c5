"""A deliberately tiny Kafka wire client for checks that no client library exposes: exact response
layouts, Fetch at chosen versions, the record batches exactly as the broker serves them."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


# ----------------------------------------------------------------------------- framing
def connect(host: str, port: int, timeout: float = 10) -> socket.socket:
    s = socket.create_connection((host, port), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_frame(s: socket.socket) -> bytes:
    (size,) = struct.unpack(">i", recv_exact(s, 4))
    assert 0 <= size < 200_000_000, f"implausible response size {size}"
    return recv_exact(s, size)


def send_frame(s: socket.socket, payload: bytes) -> None:
    s.sendall(struct.pack(">i", len(payload)) + payload)


def header_v1(api_key: int, version: int, corr: int, client_id: bytes = b"vltava-e2e-raw") -> bytes:
    return struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id


def kstring(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


class Reader:
    def __init__(self, data: bytes, pos: int = 0):
        self.data, self.pos = data, pos

    def take(self, fmt: str):
        vals = struct.unpack_from(">" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(">" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def string(self) -> str | None:
        n = self.take("h")
        if n < 0:
            return None
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def bytes_(self) -> bytes | None:
        n = self.take("i")
        if n < 0:
            return None
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b


# ----------------------------------------------------------------------------- CRC-32C
# The one CRC-32C of the Python tests and benchmarks (tests/chaos/segments.py and
# bench/lib/replication.py import it): the `crc32c` package's C code where it is installed,
# which the chaos final reads of whole segment files want, a table otherwise (standard library only).
try:
    import crc32c as _crc32c_c  # type: ignore

    def crc32c(data: bytes) -> int:
        return _crc32c_c.crc32c(data)

except ImportError:

    def _crc32c_table() -> list[int]:
        table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
            table.append(c)
        return table

    _CRC_TABLE = _crc32c_table()

    def crc32c(data: bytes) -> int:
        c = 0xFFFFFFFF
        t = _CRC_TABLE
        for b in data:
            c = t[(c ^ b) & 0xFF] ^ (c >> 8)
        return c ^ 0xFFFFFFFF


# ----------------------------------------------------------------------------- Fetch
@dataclass
class Batch:
    base_offset: int
    length: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    record_count: int
    raw: bytes

    @property
    def codec(self) -> int:
        return self.attributes & 0x07

    def crc_ok(self) -> bool:
        return crc32c(self.raw[21:]) == self.crc  # CRC covers attributes .. end


@dataclass
class FetchPartition:
    error_code: int
    high_watermark: int
    log_start_offset: int | None
    records: bytes | None

    def batches(self) -> list[Batch]:
        out = []
        data = self.records or b""
        pos = 0
        while pos + 61 <= len(data):
            base, length = struct.unpack_from(">qi", data, pos)
            end = pos + 12 + length
            if end > len(data):
                break  # a partial trailing batch is allowed in a Fetch response
            magic = data[pos + 16]
            (crc,) = struct.unpack_from(">I", data, pos + 17)
            (attrs,) = struct.unpack_from(">h", data, pos + 21)
            (lod,) = struct.unpack_from(">i", data, pos + 23)
            (count,) = struct.unpack_from(">i", data, pos + 57)
            out.append(Batch(base, length, magic, crc, attrs, lod, count, data[pos:end]))
            pos = end
        return out


def fetch(
    host: str,
    port: int,
    topic: str,
    partition: int,
    offset: int,
    version: int = 4,
    max_bytes: int = 1 << 20,
    max_wait_ms: int = 100,
) -> FetchPartition:
    """One Fetch (non-flexible versions 4..11) for one partition, by topic name."""
    assert 4 <= version <= 11
    body = struct.pack(">iiii", -1, max_wait_ms, 1, max_bytes) + b"\x00"  # replica, wait, min bytes, max bytes, isolation
    if version >= 7:
        body += struct.pack(">ii", 0, -1)  # sessionless full fetch
    part = struct.pack(">i", partition)
    if version >= 9:
        part += struct.pack(">i", -1)  # current leader epoch: unknown
    part += struct.pack(">q", offset)
    if version >= 5:
        part += struct.pack(">q", -1)  # log start offset (followers only)
    part += struct.pack(">i", max_bytes)
    body += struct.pack(">i", 1) + kstring(topic) + struct.pack(">i", 1) + part
    if version >= 7:
        body += struct.pack(">i", 0)  # forgotten topics
    if version >= 11:
        body += kstring("")  # rack id
    with connect(host, port, timeout=30) as s:
        send_frame(s, header_v1(1, version, 5) + body)
        resp = recv_frame(s)
    r = Reader(resp)
    assert r.take("i") == 5, "correlation id mismatch"
    r.take("i")  # throttle
    if version >= 7:
        top_error = r.take("h")
        assert top_error == 0, f"Fetch v{version}: top-level error {top_error}"
        r.take("i")  # session id
    n_topics = r.take("i")
    assert n_topics == 1, f"Fetch v{version}: {n_topics} topics in the response"
    assert r.string() == topic
    n_parts = r.take("i")
    assert n_parts == 1
    assert r.take("i") == partition
    err = r.take("h")
    hw = r.take("q")
    r.take("q")  # last stable offset
    lso = r.take("q") if version >= 5 else None
    n_aborted = r.take("i")
    for _ in range(max(n_aborted, 0)):
        r.take("qq")
    if version >= 11:
        r.take("i")  # preferred read replica
    records = r.bytes_()
    assert r.pos == len(resp), f"Fetch v{version}: {len(resp) - r.pos} bytes left over"
    return FetchPartition(err, hw, lso, records)
