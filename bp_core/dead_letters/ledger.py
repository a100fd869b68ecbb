"""What the dead-letter topic already holds for records read but not yet committed.

Every DLQ record goes to partition 0, and each offset commit of a source partition
carries a mark (``bp-dlq/1:<dlq offset>``) from which the DLQ may hold records of batches
not yet committed; the next reader of the partition reads the DLQ back from there and
does not send again what it finds: the DLQ is exactly once in effect.
``DeadLetterLedger`` is pure bookkeeping (thread-safe); ``DeadLetterReader`` reads the
DLQ back. How the mark is computed: docs/internals.md#the-dead-letter-ledger.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

DLQ_PARTITION = 0
MARK_PREFIX = "bp-dlq/1:"


def encode_mark(dlq_offset: int) -> str:
    """The offset-commit metadata that carries a mark."""
    return f"{MARK_PREFIX}{dlq_offset}"


def decode_mark(metadata: object) -> int | None:
    """The mark in an offset commit's metadata, or None when it holds none (a new group,
    a commit made by another tool or before marks existed)."""
    if type(metadata) is not str or not metadata.startswith(MARK_PREFIX):
        return None
    digits = metadata[len(MARK_PREFIX):]
    return int(digits) if digits.isdigit() else None


class DeadLetterEntry(NamedTuple):
    """A DLQ record, by what it says of its source: the ledger's unit of identity."""

    source_partition: int
    source_offset: int
    stage: str
    reason: bytes  # the ``bp.error.reason`` header, as sent


def entry_of_headers(headers: Iterable[tuple[str, bytes]], source_topic: str) -> DeadLetterEntry | None:
    """The entry a DLQ record's headers describe, if it came from ``source_topic``."""
    values = dict(headers or ())
    try:
        if values["bp.source.topic"].decode() != source_topic:
            return None
        return DeadLetterEntry(int(values["bp.source.partition"]), int(values["bp.source.offset"]),
                               values["bp.error.stage"].decode(), values["bp.error.reason"])
    except (KeyError, ValueError, AttributeError, UnicodeDecodeError):
        return None  # not written by bp consume: nothing to deduplicate against


@dataclass
class _Partition:
    floor: int                                     # the DLQ's end when this partition was taken up
    known: dict = field(default_factory=dict)      # entry -> DLQ offset, for offsets not committed
    stale_from: int | None = None                  # a send failed: what landed from here on is unknown


class DeadLetterLedger:
    """Per source partition this member reads: which of its rejects the DLQ already holds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[int, _Partition] = {}
        self._high = 0  # the DLQ position after this process's last acknowledged record

    def knows(self, partition: int) -> bool:
        with self._lock:
            return partition in self._partitions

    def take_up(self, partition: int, dlq_end: int, found: Iterable[tuple[DeadLetterEntry, int]] = (),
                from_offset: int = 0) -> int:
        """Start keeping a source partition, read from ``from_offset`` on: ``dlq_end`` is
        the DLQ's end now, ``found`` the (entry, DLQ offset) pairs read up to that end
        (from the partition's committed mark, or earlier). Returns how many of them are
        for this partition's records from ``from_offset`` on: those are not sent again."""
        state = _Partition(floor=dlq_end)
        for entry, dlq_offset in found:
            if entry.source_partition == partition and entry.source_offset >= from_offset:
                state.known.setdefault(entry, dlq_offset)
        with self._lock:
            self._partitions[partition] = state
        return len(state.known)

    def forget(self, partitions: Iterable[int]) -> None:
        """The partitions went to another member (or are lost): its ledger is the truth now."""
        with self._lock:
            for partition in partitions:
                self._partitions.pop(partition, None)

    def already_sent(self, entry: DeadLetterEntry) -> bool:
        with self._lock:
            state = self._partitions.get(entry.source_partition)
            return state is not None and entry in state.known

    def sent(self, acked: Iterable[tuple[DeadLetterEntry, int]]) -> None:
        """Records the broker acknowledged, with their DLQ offsets."""
        with self._lock:
            for entry, dlq_offset in acked:
                self._high = max(self._high, dlq_offset + 1)
                state = self._partitions.get(entry.source_partition)
                if state is not None:
                    state.known.setdefault(entry, dlq_offset)

    def send_failed(self, partitions: Iterable[int]) -> None:
        """A send was not acknowledged: some of its records may be in the DLQ anyway."""
        with self._lock:
            for partition in partitions:
                state = self._partitions.get(partition)
                if state is not None and state.stale_from is None:
                    state.stale_from = max(state.floor, self._high)

    def stale(self) -> dict[int, int]:
        """Partitions to read back before sending again: partition -> DLQ offset to read from."""
        with self._lock:
            return {p: s.stale_from for p, s in self._partitions.items() if s.stale_from is not None}

    def read_back(self, partitions: Iterable[int], found: Iterable[tuple[DeadLetterEntry, int]]) -> None:
        """What reading the DLQ from ``stale()`` to its end found: those partitions are known again."""
        partitions = set(partitions)
        with self._lock:
            for entry, dlq_offset in found:
                state = self._partitions.get(entry.source_partition)
                if entry.source_partition in partitions and state is not None:
                    state.known.setdefault(entry, dlq_offset)
            for partition in partitions:
                state = self._partitions.get(partition)
                if state is not None:
                    state.stale_from = None

    def commit_metadata(self, partition: int, offset: int) -> str:
        """The metadata to commit with ``offset`` (everything before it durable) for a
        source partition; forgets what the DLQ holds for offsets before it."""
        with self._lock:
            state = self._partitions.get(partition)
            if state is None:
                return ""  # not taken up: no batch of it was written by this member
            state.known = {entry: at for entry, at in state.known.items() if entry.source_offset >= offset}
            mark = max(state.floor, self._high)
            if state.stale_from is not None:
                mark = min(mark, state.stale_from)
            if state.known:
                mark = min(mark, min(state.known.values()))
            return encode_mark(mark)


class DeadLetterReader:
    """Reads the DLQ partition back: ``end()`` and the entries between two offsets."""

    def __init__(self, bootstrap: str, dlq_topic: str, source_topic: str, *, timeout_s: float = 30.0) -> None:
        self.bootstrap = bootstrap
        self.topic = dlq_topic
        self.source_topic = source_topic
        self.timeout_s = timeout_s
        self._consumer = None
        self._lock = threading.Lock()  # the consumer's thread takes partitions up, the writer reads back

    def _client(self):
        from kafka import TopicPartition

        from bp_core.dead_letters.reader import group_less_consumer

        if self._consumer is None:
            self._consumer = group_less_consumer(self.bootstrap, "bp-consumer-dlq-reader", self.timeout_s)
            self._consumer.assign([TopicPartition(self.topic, DLQ_PARTITION)])
        return self._consumer, TopicPartition(self.topic, DLQ_PARTITION)

    def end(self) -> int:
        """The DLQ partition's end offset (0 while the topic does not exist yet)."""
        from kafka.errors import UnknownTopicOrPartitionError

        with self._lock:
            consumer, tp = self._client()
            try:
                return consumer.end_offsets([tp], timeout_ms=int(self.timeout_s * 1000))[tp]
            except UnknownTopicOrPartitionError:
                return 0

    def read(self, start: int, end: int) -> list[tuple[DeadLetterEntry, int]]:
        """The (entry, DLQ offset) of every record of ``source_topic`` in [start, end).

        Raises:
            TimeoutError: the DLQ yielded nothing for ``timeout_s`` before ``end``.
        """
        from bp_core.dead_letters.reader import read_range

        found: list[tuple[DeadLetterEntry, int]] = []
        with self._lock:
            consumer, tp = self._client()
            for record in read_range(consumer, {tp: start}, {tp: end}, timeout_s=self.timeout_s):
                entry = entry_of_headers(record.headers, self.source_topic)
                if entry is not None:
                    found.append((entry, record.offset))
        return found

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
