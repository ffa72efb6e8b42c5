"""Reads a partition straight from a broker's segment files (Kafka v2 record batches).

The final read of a chaos run goes to every replica's files rather than through the broker, so a
replica that diverged cannot hide behind the leader that serves the Kafka API. Layout read here
(big-endian, as Kafka's DefaultRecordBatch):

    baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 (2) | crc u32 |
    attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
    producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32 | records...

``crc`` is CRC32C over everything from ``attributes`` to the end of the batch. A record is
``length varint | attributes i8 | timestampDelta varlong | offsetDelta varint | key | value |
headers`` with zigzag varints and length -1 for null. Only uncompressed batches are decoded (the
chaos producers send ``compression.type=none``); a compressed batch is reported, not skipped.
Control batches (transaction markers) carry no values and are left out.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "e2e"))
from rawkafka import crc32c  # noqa: E402  (re-exported: test_random checks it)

HEADER = struct.Struct(">qiibIhiqqqhii")  # through recordCount: 61 bytes
HEADER_LEN = HEADER.size
LOG_OVERHEAD = 12  # baseOffset + batchLength: batchLength counts the bytes after them


class SegmentError(Exception):
    pass


@dataclass
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    producer_id: int
    leader_epoch: int


@dataclass
class PartitionRead:
    records: list[Record] = field(default_factory=list)
    batches: int = 0
    files: list[str] = field(default_factory=list)
    # Problems found while reading (a bad CRC, a torn tail, a compressed batch, offsets going
    # backwards): the checker sees the records read before them, the run reports these.
    problems: list[str] = field(default_factory=list)

    def pairs(self) -> list[list]:
        return [[r.offset, r.value.decode("utf-8", "replace") if r.value is not None else None] for r in self.records]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    raw = 0
    while True:
        if pos >= len(buf):
            raise SegmentError("varint past the end of the batch")
        b = buf[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift > 63:
            raise SegmentError("varint too long")
    return (raw >> 1) ^ -(raw & 1), pos


def _bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    n, pos = _varint(buf, pos)
    if n < 0:
        return None, pos
    if pos + n > len(buf):
        raise SegmentError("field past the end of the record")
    return bytes(buf[pos:pos + n]), pos + n


def decode_records(body: bytes, base_offset: int, count: int, producer_id: int, leader_epoch: int) -> list[Record]:
    out = []
    pos = 0
    for _ in range(count):
        length, pos = _varint(body, pos)
        end = pos + length
        if end > len(body):
            raise SegmentError("record past the end of the batch")
        p = pos + 1  # attributes
        _, p = _varint(body, p)  # timestamp delta
        delta, p = _varint(body, p)
        key, p = _bytes(body, p)
        value, p = _bytes(body, p)
        nh, p = _varint(body, p)
        for _ in range(nh):
            _, p = _bytes(body, p)
            _, p = _bytes(body, p)
        if p != end:
            raise SegmentError(f"record of {length} bytes decoded to {p - pos}")
        out.append(Record(base_offset + delta, key, value, producer_id, leader_epoch))
        pos = end
    if pos != len(body):
        raise SegmentError(f"{len(body) - pos} bytes after the last record")
    return out


def read_segment_bytes(data: bytes, name: str, out: PartitionRead, verify_crc: bool = True) -> None:
    pos = 0
    while pos < len(data):
        if len(data) - pos < HEADER_LEN:
            out.problems.append(f"{name}@{pos}: torn batch header ({len(data) - pos} bytes at the end)")
            return
        (base, blen, epoch, magic, crc, attrs, last_delta, _bts, _mts, pid, _pe, _bseq, count) = HEADER.unpack_from(data, pos)
        end = pos + LOG_OVERHEAD + blen
        if blen < HEADER_LEN - LOG_OVERHEAD or end > len(data):
            out.problems.append(f"{name}@{pos}: batch of {blen} bytes past the end of the file ({len(data)})")
            return
        if magic != 2:
            out.problems.append(f"{name}@{pos}: magic {magic}, only v2 batches are read")
            return
        if verify_crc:
            got = crc32c(data[pos + 21:end])
            if got != crc:
                out.problems.append(f"{name}@{pos}: CRC32C {got:#010x} != {crc:#010x} (batch at offset {base})")
                return
        out.batches += 1
        if attrs & 0x20:  # control batch
            pos = end
            continue
        if attrs & 0x07:
            out.problems.append(f"{name}@{pos}: compressed batch (codec {attrs & 7}) at offset {base}")
            return
        try:
            recs = decode_records(data[pos + HEADER_LEN:end], base, count, pid, epoch)
        except SegmentError as exc:
            out.problems.append(f"{name}@{pos}: batch at offset {base}: {exc}")
            return
        if recs and recs[-1].offset != base + last_delta:
            out.problems.append(f"{name}@{pos}: batch at {base} ends at {recs[-1].offset}, header says {base + last_delta}")
        if out.records and recs and recs[0].offset <= out.records[-1].offset:
            out.problems.append(f"{name}@{pos}: offset {recs[0].offset} after {out.records[-1].offset}")
        out.records.extend(recs)
        pos = end


def segment_files(partition_dir: Path) -> list[Path]:
    """The `<20-digit base offset>.log` files of a partition directory, in offset order."""
    files = []
    for p in partition_dir.glob("*.log"):
        stem = p.name[:-4]
        if len(stem) == 20 and stem.isdigit():
            files.append(p)
    return sorted(files, key=lambda p: int(p.name[:-4]))


def read_partition(data_dir: Path, topic: str, partition: int, verify_crc: bool = True) -> PartitionRead:
    out = PartitionRead()
    d = Path(data_dir) / f"{topic}-{partition}"
    if not d.is_dir():
        out.problems.append(f"no directory {d}")
        return out
    for f in segment_files(d):
        out.files.append(f.name)
        try:
            data = f.read_bytes()
        except FileNotFoundError:  # deleted by the broker between the listing and the read
            continue
        read_segment_bytes(data, f"{d.name}/{f.name}", out, verify_crc)
    return out


if __name__ == "__main__":  # a quick look at one partition: segments.py <data dir> <topic> <partition>
    import sys

    r = read_partition(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
    print(f"{len(r.records)} records in {r.batches} batches from {r.files}; problems: {r.problems or 'none'}")
    for rec in r.records[:5] + ([] if len(r.records) <= 10 else r.records[-5:]):
        print(rec.offset, rec.value)
