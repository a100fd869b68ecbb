"""The C record decoder gives exactly what kafka-python's own gives, batch by batch.

Batches are built with kafka-python's builders (every compression it can write, the
old formats, a control batch) and read through both ``PartitionRecords`` classes,
a few records per ``take`` as a poll with ``max_poll_records`` would.
"""

from __future__ import annotations

import struct

import pytest
from crc32c import crc32c
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.structs import TopicPartition

from bp_core.consumer.native_records import NativePartitionRecords, native_records_available

TP = TopicPartition("blood-pressure", 2)
NONE, GZIP, LZ4, ZSTD = 0, 1, 3, 4


def v2_batch(base: int, count: int, codec: int = NONE, *, control: bool = False) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=control,
                                        producer_id=7 if control else -1, producer_epoch=0 if control else -1,
                                        base_sequence=0 if control else -1, batch_size=1 << 30)
    for i in range(count):
        key = None if i % 5 == 0 else f"pat-{i % 3}".encode()
        value = [b"", None][i % 2] if i % 7 == 3 else f'{{"id":"obs-{base + i}","n":"é{i}"}}'.encode()
        headers = [("trace", b"t-%d" % i), ("empty", None)] if i % 4 == 1 else []
        builder.append(i, timestamp=1_760_000_000_000 + i * 37, key=key, value=value, headers=headers)
    buf = builder.build()
    struct.pack_into(">q", buf, 0, base)
    if control:
        attributes_at, crc_at = DefaultRecordBatch.ATTRIBUTES_OFFSET, DefaultRecordBatch.CRC_OFFSET
        struct.pack_into(">h", buf, attributes_at, struct.unpack_from(">h", buf, attributes_at)[0] | 0x20)
        struct.pack_into(">I", buf, crc_at, crc32c(bytes(buf[attributes_at:])))
    return bytes(buf)


def legacy_batch(magic: int, base: int, count: int, codec: int = NONE) -> bytes:
    builder = LegacyRecordBatchBuilder(magic=magic, compression_type=codec, batch_size=1 << 30)
    for i in range(count):
        builder.append(base + i if codec == NONE else i, timestamp=1_760_000_000_000 + i,
                       key=None if i % 2 else b"k", value=b"v%d" % i)
    buf = builder.build()
    if codec != NONE:  # the wrapper message carries the last offset
        struct.pack_into(">q", buf, 0, base + count - 1)
    return bytes(buf)


def read(cls, data: bytes, fetch_offset: int, per_take: int = 7) -> list[tuple]:
    """Every record, with the fetch position after each take (a poll's worth)."""
    records = cls(fetch_offset, TP, MemoryRecords(data))
    out = []
    while records:
        taken = records.take(per_take)
        out.extend(r._replace(serialized_header_size=-1) for r in taken)  # not computed natively
        out.append(("position", records.next_fetch_offset))
    out.append(("read", records.records_read))
    return out


pytestmark = pytest.mark.skipif(native_records_available() is not None, reason=str(native_records_available()))


@pytest.mark.parametrize("codec", [NONE, GZIP, LZ4, ZSTD], ids=["none", "gzip", "lz4", "zstd"])
def test_same_records_and_positions_for_every_codec(codec):
    data = v2_batch(0, 40, codec) + v2_batch(40, 1, codec) + v2_batch(41, 23, codec)
    native = read(NativePartitionRecords, data, 0)
    assert native == read(Fetcher.PartitionRecords, data, 0)
    assert sum(1 for r in native if r[0] == TP.topic) == 64
    assert native[-2:] == [("position", 64), ("read", 64)]


def test_a_fetch_from_the_middle_of_a_batch_skips_what_comes_before():
    data = v2_batch(100, 30, LZ4) + v2_batch(130, 30, LZ4)
    native = read(NativePartitionRecords, data, 117, per_take=5)
    assert native == read(Fetcher.PartitionRecords, data, 117, per_take=5)
    assert [r[3] for r in native if r[0] == TP.topic] == list(range(117, 160))


def test_control_batches_are_skipped_and_old_formats_read_the_python_way():
    data = (legacy_batch(0, 0, 5) + legacy_batch(1, 5, 5) + legacy_batch(1, 10, 5, GZIP)
            + v2_batch(15, 10) + v2_batch(25, 1, control=True) + v2_batch(26, 10, LZ4))
    native = read(NativePartitionRecords, data, 0)
    assert native == read(Fetcher.PartitionRecords, data, 0)
    assert [r[3] for r in native if r[0] == TP.topic] == list(range(25)) + list(range(26, 36))


def test_a_corrupt_batch_is_refused_as_kafka_python_refuses_it():
    good, bad = v2_batch(0, 10), bytearray(v2_batch(10, 10, LZ4))
    bad[-3] ^= 0xFF
    for cls in (Fetcher.PartitionRecords, NativePartitionRecords):
        records = cls(0, TP, MemoryRecords(good + bytes(bad)))
        assert [r.offset for r in records.take(100)] == list(range(10))  # what came before is returned
        with pytest.raises(CorruptRecordError):
            records.take(100)


@pytest.mark.parametrize("garbled", [5, 20], ids=["a header key", "a value length"])
def test_garbage_under_a_valid_crc_is_a_corrupt_record_error_too(garbled):
    buf = bytearray(v2_batch(0, 10))
    buf[-garbled:] = b"\xff" * garbled
    at = DefaultRecordBatch.ATTRIBUTES_OFFSET
    struct.pack_into(">I", buf, DefaultRecordBatch.CRC_OFFSET, crc32c(bytes(buf[at:])))
    for cls in (Fetcher.PartitionRecords, NativePartitionRecords):
        records = cls(0, TP, MemoryRecords(bytes(buf)))
        assert len(records.take(100)) == 9
        with pytest.raises(CorruptRecordError, match="invalid record structure"):
            records.take(100)


def test_deserializers_keep_kafka_python_s_path():
    class Upper:
        def deserialize(self, topic, headers, data):
            return None if data is None else data.upper()

    data = v2_batch(0, 12, LZ4)
    native = NativePartitionRecords(0, TP, MemoryRecords(data), value_deserializer=Upper()).take(100)
    python = Fetcher.PartitionRecords(0, TP, MemoryRecords(data), value_deserializer=Upper()).take(100)
    assert native == python and native[1].value.startswith(b'{"ID"')
