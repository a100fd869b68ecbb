"""The checkpoint: the offsets of batches every sink holds, and their commit.

The service hands it the offsets of a batch only once the batch is durable (Elasticsearch
acknowledged, archive fsynced, dead letters acknowledged). Commits between batches are
asynchronous (the following polls complete them); one the group refuses (typically
while it rebalances) is sent again until the coordinator holds every durable offset of
the partitions this member keeps. The last commit, at exit, is synchronous.

Every commit carries the dead-letter mark of its partition in its metadata
(``bp_core.dead_letters.ledger``), and ``take_up`` reads the DLQ back before a
partition's first batch is written, so a replay never dead-letters a message twice.
"""

from __future__ import annotations

import logging
import time

from bp_core.dead_letters.ledger import DeadLetterLedger, DeadLetterReader, decode_mark

log = logging.getLogger("bp_core.consumer")


class Checkpoint:
    """Offsets of durable batches, per owned partition, and what the coordinator holds.

    ``consumer`` is a kafka-python ``KafkaConsumer`` (or anything with ``assignment``,
    ``commit``, ``commit_async``, ``committed``, ``beginning_offsets``).
    """

    RECOMMIT_DELAY_S = 0.5  # after a failed commit, before the durable offsets are sent again

    def __init__(self, consumer, ledger: DeadLetterLedger, dlq_reader: DeadLetterReader | None = None) -> None:
        self.consumer = consumer
        self.ledger = ledger
        self.dlq_reader = dlq_reader
        self._durable: dict = {}      # owned partition -> next offset, every batch before it durable
        self._committed: dict = {}    # owned partition -> offset the coordinator acknowledged
        self._in_flight = 0
        self._recommit_at: float | None = None
        self.commits = 0              # acknowledged commits

    @property
    def durable(self) -> dict:
        """Owned partition -> the next offset to read; everything before it is durable."""
        return dict(self._durable)

    @property
    def committed(self) -> dict:
        """Owned partition -> the offset the coordinator acknowledged."""
        return dict(self._committed)

    @property
    def recommit_due(self) -> float | None:
        """When a failed commit will be sent again (monotonic time), or None."""
        return self._recommit_at

    # ------------------------------------------------------------------ commits

    def commit(self, offsets: dict, *, wait: bool = False) -> None:
        """Commit the offsets of a durable batch, for the partitions this member still owns.

        Asynchronous unless ``wait`` (at exit). Not from a rebalance callback: it runs
        inside kafka-python's event loop, and the asynchronous commits sent before it
        reach the coordinator before the member rejoins, in order.
        """
        from kafka import OffsetAndMetadata
        from kafka.errors import KafkaError

        owned = self.consumer.assignment()
        # The metadata carries the DLQ mark; computed now, it is right whenever it is sent.
        to_commit = {tp: OffsetAndMetadata(offset, self.ledger.commit_metadata(tp.partition, offset), -1)
                     for tp, offset in offsets.items() if tp in owned}
        if not to_commit:
            return
        self._durable.update({tp: om.offset for tp, om in to_commit.items()})
        if not wait:
            self._in_flight += 1
            self.consumer.commit_async(to_commit, callback=self._on_async_commit)
            return
        try:
            self.consumer.commit(to_commit)
        except KafkaError as exc:
            self._on_commit(to_commit, exc)
        else:
            self._on_commit(to_commit, None)

    def commit_all(self) -> None:
        """Commit every durable offset synchronously (at exit; settles the asynchronous ones)."""
        self.commit(dict(self._durable), wait=True)

    def maybe_recommit(self, now: float) -> None:
        """After a failed commit, once none is in flight: commit what the coordinator lacks."""
        if self._recommit_at is None or now < self._recommit_at or self._in_flight:
            return
        self._recommit_at = None
        behind = {tp: offset for tp, offset in self._durable.items() if offset > self._committed.get(tp, -1)}
        if behind:
            self.commit(behind)

    def _on_async_commit(self, offsets: dict, response) -> None:
        self._in_flight -= 1
        self._on_commit(offsets, response)

    def _on_commit(self, offsets: dict, response) -> None:
        if isinstance(response, Exception):
            # The data is durable: the offsets go again shortly; if the partitions move to
            # another member meanwhile, it replays them idempotently.
            log.warning("offset commit failed (%s); sending the durable offsets again in %.1fs",
                        type(response).__name__, self.RECOMMIT_DELAY_S)
            self._recommit_at = time.monotonic() + self.RECOMMIT_DELAY_S
            return
        for tp, om in offsets.items():
            self._committed[tp] = max(om.offset, self._committed.get(tp, om.offset))
        self.commits += 1

    # ------------------------------------------------------------------ assignment

    def revoked(self, partitions) -> None:
        """Forget partitions that leave this member."""
        self.ledger.forget(tp.partition for tp in partitions)
        for tp in partitions:
            self._durable.pop(tp, None)
            self._committed.pop(tp, None)

    def assigned(self, partitions) -> None:
        """Forget every partition not in the new assignment: a batch completed during the
        rebalance may have recorded offsets of a partition now owned by another member,
        and no later commit may move that member's offsets back."""
        kept = set(partitions)
        for offsets in (self._durable, self._committed):
            for tp in [tp for tp in offsets if tp not in kept]:
                del offsets[tp]

    def group_positions(self, partitions) -> dict:
        """Where the group resumes each partition: its commit, or else the first retained offset."""
        positions = {}
        for tp in partitions:
            committed = self.consumer.committed(tp, timeout_ms=2000)
            positions[tp] = (committed if committed is not None
                             else self.consumer.beginning_offsets([tp], timeout_ms=2000)[tp])
        return positions

    # ------------------------------------------------------------------ dead letters

    def take_up(self, first_offsets: dict) -> bool:
        """Before a partition's first batch is written: read back what the DLQ holds for
        its records from here on (from the mark committed with it), and commit a mark now
        if it has none. False when Kafka did not answer: the batch must be read again."""
        from kafka import OffsetAndMetadata

        new = [tp for tp in first_offsets if not self.ledger.knows(tp.partition)]
        if not new:
            return True
        try:
            end = self.dlq_reader.end()
            committed = {tp: self.consumer.committed(tp, metadata=True, timeout_ms=30_000) for tp in new}
            marks = {tp: decode_mark(c.metadata) if c is not None else None for tp, c in committed.items()}
            # Read the DLQ from the mark, or from its beginning when the group reads the
            # partition from before its commit (--from-beginning) or without one (a new
            # group: what another group dead-lettered is not sent twice either).
            start = min(0 if marks[tp] is None or first_offsets[tp] < committed[tp].offset else marks[tp]
                        for tp in new)
            found = self.dlq_reader.read(start, end)
            unmarked = {}
            for tp in new:
                held = self.ledger.take_up(tp.partition, end, found, from_offset=first_offsets[tp])
                if held:
                    log.warning("partition %d: the dead-letter topic already holds %d record(s) of it from offset "
                                "%d on; they are not sent again", tp.partition, held, first_offsets[tp])
                if marks[tp] is None:
                    unmarked[tp] = committed[tp].offset if committed[tp] is not None else first_offsets[tp]
            if unmarked:
                # A crash before this partition's first commit must find its DLQ records too.
                self.consumer.commit({tp: OffsetAndMetadata(offset, self.ledger.commit_metadata(tp.partition, offset), -1)
                                      for tp, offset in unmarked.items()})
        except Exception as exc:  # a broker error or a timeout: nothing of the batch is written
            self.ledger.forget(tp.partition for tp in new)
            log.warning("could not read the dead-letter topic back (%s: %s); reading the batch again",
                        type(exc).__name__, exc)
            return False
        return True
