"""The dead-letter topic, read back: what each record says, and a summary by reason.

``bp consume`` writes a rejected message to ``<topic>.dlq`` with its original key and
bytes and headers that say why and where from (see ``bp_core.sinks.dlq``). This module
turns those records back into ``DeadLetter`` values, for ``bp dlq show`` and
``bp dlq replay``. The values are never printed: a rejected Observation may name a
patient; the summary says what was wrong, not what the message held.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from bp_core.errors import TopicMissing

STAGES = ("parse", "index")  # 'parse': not a usable Observation; 'index': refused by Elasticsearch
REPLAY_HEADER = "bp.replay.of"  # on a replayed message: "<dlq topic>:<partition>:<offset>"
_ES_PREFIX = "elasticsearch refused document "


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic, as ``bp consume`` wrote it."""

    partition: int                   # of the DLQ
    offset: int                      # of the DLQ
    key: bytes | None
    value: bytes | None              # the original bytes; None when the source value was null
    stage: str                       # 'parse', 'index', or '' when the headers do not say
    reason: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    rejected_at: str                 # ISO-8601, as written

    @classmethod
    def from_record(cls, record) -> "DeadLetter":
        """A kafka-python ``ConsumerRecord`` of the DLQ as a ``DeadLetter`` (headers that
        are missing or garbled leave their fields empty: it still counts, and shows)."""
        headers = {name: value for name, value in (record.headers or ())}

        def text(name: str) -> str:
            raw = headers.get(name)
            return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""

        def number(name: str) -> int | None:
            raw = text(name)
            return int(raw) if raw.isdigit() else None

        null = text("bp.source.null") == "true"
        return cls(
            partition=record.partition, offset=record.offset, key=record.key,
            value=None if null else (record.value if record.value is not None else b""),
            stage=text("bp.error.stage"), reason=text("bp.error.reason"),
            source_topic=text("bp.source.topic") or None,
            source_partition=number("bp.source.partition"), source_offset=number("bp.source.offset"),
            rejected_at=text("bp.rejected.at"),
        )

    @property
    def source(self) -> str:
        """``topic/partition/offset`` of the message it came from (``?`` where unknown)."""
        return "/".join("?" if part is None else str(part)
                        for part in (self.source_topic, self.source_partition, self.source_offset))

    @property
    def kind(self) -> str:
        """The reason without the particulars (ids, values): what summaries group by."""
        return reason_kind(self.reason)

    def matches(self, stage: str | None = None, reason: str | None = None) -> bool:
        """Whether it is of ``stage`` (if given) and its reason contains ``reason`` (if given,
        ignoring case)."""
        return (stage is None or self.stage == stage) and (reason is None or reason.lower() in self.reason.lower())


def reason_kind(reason: str) -> str:
    """What a summary groups by: the reason without its particulars (ids, values).

    ``"o-17: impossible systolic 400 mmHg (...)"`` -> ``"impossible systolic"``; an
    Elasticsearch refusal -> ``"elasticsearch: <error type>"``. The consumer writes
    "<observation id>: <reason>" where the Observation has an id, reasons joined by "; "
    for a Bundle (the first one counts here), and a reason is "<what>: <particulars>" or
    carries numbers and quoted values; the kind keeps the words of <what> before those.
    """
    if reason.startswith(_ES_PREFIX):
        parts = reason[len(_ES_PREFIX):].split(": ", 2)
        return f"elasticsearch: {parts[1]}" if len(parts) > 1 else "elasticsearch"
    first = reason.split("; ", 1)[0]
    head, _, rest = first.partition(": ")
    if rest and " " not in head:  # "<observation id>: <reason>"
        head = rest.partition(": ")[0]
    words = []
    for word in head.split():
        if any(ch.isdigit() for ch in word) or word.startswith(("(", "'", '"')):
            break
        words.append(word)
    return " ".join(words) or "(no reason)"


def replay_header(dlq_topic: str, partition: int, offset: int) -> bytes:
    """The ``bp.replay.of`` header value of a replayed dead letter."""
    return f"{dlq_topic}:{partition}:{offset}".encode()


def parse_replay_header(value: bytes, dlq_topic: str) -> tuple[int, int] | None:
    """(DLQ partition, DLQ offset) named by a ``bp.replay.of`` header, if it names ``dlq_topic``."""
    try:
        topic, partition, offset = value.decode().rsplit(":", 2)
        return (int(partition), int(offset)) if topic == dlq_topic else None
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None


@dataclass
class Summary:
    """Counts of dead letters by stage and by kind of reason."""

    total: int = 0
    by_stage: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)  # (stage, kind) -> count

    def add(self, letter: DeadLetter) -> None:
        self.total += 1
        self.by_stage[letter.stage or "?"] += 1
        self.by_kind[(letter.stage or "?", letter.kind)] += 1


# ---------------------------------------------------------------------------- Kafka


def group_less_consumer(bootstrap: str, client_id: str, timeout_s: float = 30.0):
    """A KafkaConsumer that belongs to no group: it is assigned partitions and reads them."""
    from bp_core.clients import kafka_consumer
    from bp_core.settings import Settings

    return kafka_consumer(Settings(kafka_bootstrap=bootstrap), client_id,
                          request_timeout_ms=int(timeout_s * 1000) + 5000, bootstrap_timeout_ms=10_000)


def topic_partitions(consumer, topic: str, timeout_s: float = 10.0) -> list:
    """The ``TopicPartition``s of ``topic``.

    Raises:
        TopicMissing: the topic does not exist.
    """
    from kafka import TopicPartition

    deadline = time.monotonic() + timeout_s
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return [TopicPartition(topic, p) for p in sorted(partitions)]
        if topic not in consumer.topics() or time.monotonic() > deadline:  # topics(): fresh metadata
            raise TopicMissing(f"topic {topic} does not exist")
        time.sleep(0.2)  # listed, its partitions not known yet


def read_range(consumer, starts: dict, ends: dict, *, timeout_s: float = 60.0) -> Iterator:
    """Every record of the assigned partitions from ``starts`` up to (not including)
    ``ends``: in offset order within a partition, partitions interleaved.

    Raises:
        TimeoutError: Kafka delivered nothing for ``timeout_s`` with records still to come.
    """
    todo = {tp: end for tp, end in ends.items() if starts.get(tp, 0) < end}
    done = [tp for tp in consumer.assignment() if tp not in todo]
    if done:
        consumer.pause(*done)
    if todo:
        consumer.resume(*todo)  # a consumer read with before has them paused
    for tp in todo:
        consumer.seek(tp, starts.get(tp, 0))
    deadline = time.monotonic() + timeout_s
    while todo:
        polled = consumer.poll(timeout_ms=500)
        if polled:
            deadline = time.monotonic() + timeout_s
        elif time.monotonic() > deadline:
            raise TimeoutError(f"reading {sorted(str(tp) for tp in todo)}: nothing for {timeout_s:.0f}s")
        for tp, records in polled.items():
            end = todo.get(tp)
            if end is None:
                continue
            for record in records:
                if record.offset < end:
                    yield record
        # Done at ``end``, or past it where the log holds no record at ``end - 1`` (a
        # transaction marker, compaction).
        finished = [tp for tp, end in todo.items() if consumer.position(tp) >= end]
        for tp in finished:
            del todo[tp]
        if finished:
            consumer.pause(*finished)


def read_dead_letters(bootstrap: str, dlq_topic: str, *, timeout_s: float = 60.0) -> Iterator[DeadLetter]:
    """Every record of the dead-letter topic (all partitions), up to its end when called.

    Raises:
        TopicMissing: no such topic.
        TimeoutError: Kafka delivered nothing for ``timeout_s`` with records still to come.
    """
    consumer = group_less_consumer(bootstrap, "bp-dlq-reader")
    try:
        partitions = topic_partitions(consumer, dlq_topic)
        consumer.assign(partitions)
        starts = consumer.beginning_offsets(partitions)
        ends = consumer.end_offsets(partitions)
        for record in read_range(consumer, starts, ends, timeout_s=timeout_s):
            yield DeadLetter.from_record(record)
    finally:
        consumer.close()
