"""``bp dlq replay``: send dead letters back to the topic, each exactly once in effect.

A replay keeps its place in the DLQ as a consumer group's offsets, and every commit
carries a mark (the topic's end before any send it does not cover), so a replay killed
between a send and its commit is taken up without sending anything twice. Run one replay
at a time per group. How: docs/internals.md#dead-letter-replay.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from bp_core.dead_letters.reader import (
    REPLAY_HEADER, DeadLetter, group_less_consumer, parse_replay_header, read_range, replay_header,
    topic_partitions,
)
from bp_core.crashpoints import crash_point
from bp_core.errors import ReplayFailed
from bp_core.settings import Settings

log = logging.getLogger(__name__)

MARK_PREFIX = "bp-replay/1:"
DEFAULT_GROUP = "bp-dlq-replay"
CHUNK = 1000  # dead letters read between two commits


def encode_mark(ends: dict[int, int] | None) -> str:
    """The commit metadata: the topic's end offsets by partition, or clean (None)."""
    if not ends:
        return MARK_PREFIX
    return MARK_PREFIX + ",".join(f"{p}={o}" for p, o in sorted(ends.items()))


def decode_mark(metadata: object) -> dict[int, int] | None:
    """The end offsets a commit's metadata holds: {} when clean, None when it holds no
    mark (no commit yet, or a commit by another tool)."""
    if type(metadata) is not str or not metadata.startswith(MARK_PREFIX):
        return None
    body = metadata[len(MARK_PREFIX):]
    if not body:
        return {}
    try:
        return {int(p): int(o) for p, o in (pair.split("=") for pair in body.split(","))}
    except ValueError:
        return None


@dataclass
class ReplaySummary:
    """What a replay did with each dead letter it read."""

    read: int = 0
    replayed: Counter = field(default_factory=Counter)    # stage -> count
    already: int = 0        # sent by an interrupted replay, found in the topic: not sent again
    passed_over: int = 0    # not matching the filters
    unsendable: int = 0     # neither key nor value: Kafka refuses such a record
    found_in_topic_scan: int = 0  # records of the topic read to find what an interrupted replay sent
    positions: dict = field(default_factory=dict)  # DLQ partition -> offset the group is at now
    dry_run: bool = False

    @property
    def sent(self) -> int:
        return sum(self.replayed.values())


class DeadLetterReplay:
    """One replay of ``settings.dlq_topic`` into ``settings.topic`` (see the module doc)."""

    def __init__(self, settings: Settings, *, group: str = DEFAULT_GROUP, stage: str | None = None,
                 reason: str | None = None, dry_run: bool = False, chunk: int = CHUNK,
                 timeout_s: float = 60.0) -> None:
        self.settings = settings
        self.group = group
        self.stage = stage
        self.reason = reason
        self.dry_run = dry_run
        self.chunk = chunk
        self.timeout_s = timeout_s
        self.summary = ReplaySummary(dry_run=dry_run)
        self._consumer = None
        self._producer = None
        self._held: dict = {}               # DLQ partition -> an interrupted replay's mark, kept
        self._already: set[tuple[int, int]] = set()  # what that replay sent: not sent again

    def run(self) -> ReplaySummary:
        """Replay every dead letter after the group's position that matches the filters.

        Raises:
            TopicMissing: no dead-letter topic, or no topic to replay into.
            ReplayFailed: Kafka did not acknowledge a send or a commit in time.
            TimeoutError: Kafka delivered no record for ``timeout_s`` while reading.
        """
        from kafka.errors import KafkaError

        from bp_core.clients import kafka_consumer

        settings = self.settings
        self._consumer = consumer = kafka_consumer(settings, "bp-dlq-replay", group_id=self.group,
                                                   bootstrap_timeout_ms=10_000)
        try:
            dlq = topic_partitions(consumer, settings.dlq_topic)
            topic_partitions(consumer, settings.topic)  # replaying into a topic that is not there: say so
            consumer.assign(dlq)
            committed = {tp: consumer.committed(tp, metadata=True, timeout_ms=30_000) for tp in dlq}
            beginnings = consumer.beginning_offsets(dlq)
            starts = {tp: beginnings[tp] if c is None else max(c.offset, beginnings[tp])
                      for tp, c in committed.items()}
            ends = consumer.end_offsets(dlq)
            marks = {tp: decode_mark(c.metadata) if c is not None else None for tp, c in committed.items()}
            self._already = self._sent_by_interrupted_replay(marks)
            self._held = {tp: mark for tp, mark in marks.items() if mark}
            if not self.dry_run:
                self._producer = self._connect()
                self._commit(starts)  # before any send: a mark, so what follows can be found again
            self._replay(starts, ends)
        except KafkaError as exc:
            raise ReplayFailed(f"Kafka: {type(exc).__name__}: {exc}") from exc
        finally:
            if self._producer is not None:
                self._producer.close(timeout=self.timeout_s)
            consumer.close()
        return self.summary

    def _replay(self, starts: dict, ends: dict) -> None:
        from kafka import TopicPartition

        summary = self.summary
        positions = dict(starts)
        sending: list[tuple[DeadLetter, object]] = []
        since_commit = 0
        for record in read_range(self._consumer, starts, ends, timeout_s=self.timeout_s):
            letter = DeadLetter.from_record(record)
            summary.read += 1
            positions[TopicPartition(record.topic, record.partition)] = record.offset + 1
            if (letter.partition, letter.offset) in self._already:
                summary.already += 1
            elif not letter.matches(self.stage, self.reason):
                summary.passed_over += 1
            elif letter.key is None and letter.value is None:
                summary.unsendable += 1
                log.warning("dead letter %s:%d:%d has neither key nor value: Kafka refuses such a record",
                            self.settings.dlq_topic, letter.partition, letter.offset)
            else:
                summary.replayed[letter.stage or "?"] += 1
                if not self.dry_run:
                    sending.append((letter, self._send(letter)))
            since_commit += 1
            if since_commit >= self.chunk and not self.dry_run:
                self._settle(sending)
                self._commit(positions)
                sending, since_commit = [], 0
        if not self.dry_run:
            self._settle(sending)
            self._commit(positions, clean=True)
        summary.positions = {tp.partition: offset for tp, offset in positions.items()}

    # ------------------------------------------------------------------ sends

    def _connect(self):
        from bp_core.simulation.stream import connect

        return connect(self.settings, linger_ms=5)

    def _send(self, letter: DeadLetter):
        headers = [(REPLAY_HEADER, replay_header(self.settings.dlq_topic, letter.partition, letter.offset))]
        return self._producer.send(self.settings.topic, key=letter.key, value=letter.value, headers=headers)

    def _settle(self, sending: list) -> None:
        """Wait for a chunk's sends; any failure stops the replay before the commit."""
        if not sending:
            return
        try:
            self._producer.flush(timeout=self.timeout_s)
        except Exception as exc:  # a timeout
            raise ReplayFailed(f"{self.settings.topic} did not acknowledge the replayed messages in "
                               f"{self.timeout_s:.0f}s: {exc}") from exc
        for letter, future in sending:
            if not future.is_done or future.failed():
                raise ReplayFailed(f"{self.settings.topic} did not acknowledge dead letter "
                                   f"{letter.partition}:{letter.offset}: {future.exception}")

    # ------------------------------------------------------------------ marks

    def _commit(self, positions: dict, *, clean: bool = False) -> None:
        """Commit the DLQ positions, each with its mark: an interrupted replay's, while
        some of what it sent lies ahead of the position; else the topic's end now (every
        send so far is acknowledged, so later ones land after it); clean at the end."""
        from kafka import OffsetAndMetadata

        crash_point("dlq-replay.before-commit")  # fault tests: sent, not committed
        self._held = {tp: mark for tp, mark in self._held.items()
                      if any(p == tp.partition and o >= positions[tp] for p, o in self._already)}
        fresh = encode_mark(None if clean else self._topic_ends())
        self._consumer.commit({tp: OffsetAndMetadata(offset, encode_mark(self._held[tp]) if tp in self._held
                                                     else fresh, -1)
                               for tp, offset in positions.items()})

    def _topic_ends(self) -> dict[int, int]:
        partitions = topic_partitions(self._consumer, self.settings.topic)
        return {tp.partition: offset for tp, offset in self._consumer.end_offsets(partitions).items()}

    def _sent_by_interrupted_replay(self, marks: dict) -> set[tuple[int, int]]:
        """(DLQ partition, offset) of every dead letter an interrupted replay of this group
        sent: read in the topic, from the lowest mark to the topic's end."""
        starts: dict[int, int] = {}
        for mark in marks.values():
            for partition, offset in (mark or {}).items():
                starts[partition] = min(offset, starts.get(partition, offset))
        if not starts:
            return set()
        reader = group_less_consumer(self.settings.kafka_bootstrap, "bp-dlq-replay-reader")
        try:
            partitions = topic_partitions(reader, self.settings.topic)
            reader.assign(partitions)
            ends = reader.end_offsets(partitions)
            begin = {tp: starts.get(tp.partition, 0) for tp in partitions}  # a partition added since: all of it
            found = set()
            for record in read_range(reader, begin, ends, timeout_s=self.timeout_s):
                self.summary.found_in_topic_scan += 1
                for name, value in record.headers or ():
                    if name == REPLAY_HEADER and (named := parse_replay_header(value, self.settings.dlq_topic)):
                        found.add(named)
        finally:
            reader.close()
        log.info("an earlier replay was interrupted: read %d messages of %s after its mark, %d of them "
                 "replayed dead letters", self.summary.found_in_topic_scan, self.settings.topic, len(found))
        return found
