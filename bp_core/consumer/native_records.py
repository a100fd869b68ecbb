"""Kafka record batches decoded in C for kafka-python's fetcher.

kafka-python decodes every record of a fetch in pure Python (varints, one object per
record): about three quarters of the CPU of a bare kafka-python read, and a third of
the consumer's. aiokafka, kafka-python's asyncio sibling, ships the same v2 record-batch
decoder compiled with Cython. ``use_native_records(consumer)`` makes one consumer's
fetcher decode plain v2 batches with it; everything else goes the pure-Python way:

- batches of the old formats (magic 0 and 1), and every batch when records are
  deserialised or read ``read_committed`` (aborted transactions are then filtered);
- control batches (transaction markers) are skipped, as kafka-python skips them.

The records are kafka-python's own ``ConsumerRecord`` tuples with the same fields,
except ``checksum`` (None, as for every v2 record) and ``serialized_header_size`` (-1,
unused here). The fetcher's position moves record by record as before, so a poll that
ends in the middle of a batch resumes after its last record.

Both sides are private APIs, which is why the versions are pinned (kafka-python 3.0.12,
aiokafka 0.14.0) and tests/unit/test_native_records.py compares both decoders record by
record on batches of every compression.
"""

from __future__ import annotations

import logging

from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel

log = logging.getLogger("bp_core.consumer")

try:
    from aiokafka.record._crecords.default_records import DefaultRecordBatch as _NativeBatch
except ImportError as _exc:  # no wheel for this platform: the pure-Python decoder stays
    _NativeBatch = None
    _IMPORT_ERROR = f"{type(_exc).__name__}: {_exc}"
else:
    _IMPORT_ERROR = None


class NativePartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's records of one partition's fetch, v2 batches decoded in C."""

    def _unpack_records(self, tp, records, key_deserializer, value_deserializer):
        if (key_deserializer is not None or value_deserializer is not None
                or self.isolation_level != IsolationLevel.READ_UNCOMMITTED):
            yield from super()._unpack_records(tp, records, key_deserializer, value_deserializer)
            return
        topic, partition = tp.topic, tp.partition
        new_record = tuple.__new__
        check_crcs = self.check_crcs
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if check_crcs and not batch.validate_crc():
                raise CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset {batch.base_offset} failed crc check")
            if batch.magic < 2:
                yield from self._python_records(tp, batch)
                batch = records.next_batch()
                continue
            self.leader_epoch = epoch = batch.leader_epoch
            if batch.is_control_batch:
                self.next_fetch_offset = batch.next_offset
                batch = records.next_batch()
                continue
            self.bytes_read += len(batch._buffer)
            try:
                for record in _NativeBatch(batch._buffer):
                    key, value, offset = record.key, record.value, record.offset
                    self.records_read += 1
                    self.next_fetch_offset = offset + 1
                    # tuple.__new__ skips the namedtuple's Python-level __new__: the same
                    # ConsumerRecord, built in C (0.3 to 0.5 µs less a record, measured alone).
                    yield new_record(ConsumerRecord, (
                        topic, partition, epoch, offset, record.timestamp, record.timestamp_type, key, value,
                        record.headers, None, -1 if key is None else len(key), -1 if value is None else len(value), -1))
            except Exception as exc:  # the decoder's own errors (and a bad UTF-8 header key), as kafka-python names them
                raise CorruptRecordError(f"Found invalid record structure: {exc!r}") from exc
            batch = records.next_batch()
        # v2 keeps the last offset of a batch even when compaction removed its record:
        # fetch from the batch's end, or the same batch would be fetched again.
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()

    def _python_records(self, tp, batch):
        """A batch of the old formats, the way kafka-python reads it."""
        for record in batch:
            if self.check_crcs and not record.validate_crc():
                raise CorruptRecordError(
                    f"Record for partition {self.topic_partition} at offset {record.offset} failed crc check")
            key, value = record.key, record.value
            self.records_read += 1
            self.bytes_read += record.size_in_bytes
            self.next_fetch_offset = record.offset + 1
            yield ConsumerRecord(
                tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp, record.timestamp_type,
                key, value, record.headers, record.checksum,
                -1 if key is None else len(key), -1 if value is None else len(value), -1)


def native_records_available() -> str | None:
    """None when the C decoder can be used, else why not."""
    return _IMPORT_ERROR


def use_native_records(consumer) -> bool:
    """Make ``consumer`` (a ``KafkaConsumer``) decode plain v2 batches in C.

    Returns False, and logs why, when the decoder or the fetcher hook is missing: the
    consumer then decodes in pure Python, as kafka-python does by default.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    if _NativeBatch is None or not isinstance(fetcher, Fetcher):
        log.warning("Kafka records decoded in pure Python (slower): %s",
                    _IMPORT_ERROR or "this kafka-python has no fetcher to hook into")
        return False
    fetcher.PartitionRecords = NativePartitionRecords
    return True
