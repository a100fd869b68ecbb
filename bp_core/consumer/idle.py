"""When ``bp consume --exit-when-idle SECONDS`` may exit.

After that long with nothing read and nothing left to write, counted from the last
batch made durable or given up, or the last assignment, not from the last read: a write
that took long (Elasticsearch down for a while) says nothing about what the stream holds.

And not while partitions of the topic owned by another member still hold messages the
group has not committed: a member killed while it was joining the group keeps its share
until its session times out, then the group rebalances and the share comes here.
Exiting before that would end a back-fill with part of the topic unread. The wait is
bounded by a session timeout and two heartbeats after the last assignment change; if the
broker cannot say, the member waits within that bound.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("bp_core.consumer")


class IdleExit:
    """The idle clock of one consumer.

    ``consumer`` is a kafka-python ``KafkaConsumer`` (``assignment``,
    ``partitions_for_topic``, ``end_offsets``, ``config``); ``group_positions`` gives where
    the group resumes a list of partitions (``Checkpoint.group_positions``).
    """

    CHECK_EVERY_S = 1.0  # when idle, how often to ask the broker about partitions owned elsewhere

    def __init__(self, consumer, topic: str, seconds: float | None,
                 group_positions: Callable[[list], dict]) -> None:
        self.consumer = consumer
        self.topic = topic
        self.seconds = seconds
        self.group_positions = group_positions
        self._idle_from: float | None = None   # None until the first assignment
        self._assignment_changed_at = 0.0
        self._next_check = 0.0

    def activity(self, now: float | None = None) -> None:
        """A batch was made durable or given up (what was given up is read again)."""
        self._idle_from = time.monotonic() if now is None else now

    def assignment_changed(self, *, assigned: bool, now: float | None = None) -> None:
        """A revocation or an assignment: restarts the bound; an assignment also the clock."""
        now = time.monotonic() if now is None else now
        self._assignment_changed_at = now
        if assigned:
            self._idle_from = now

    def due(self, now: float, *, busy: bool) -> bool:
        """Whether to exit now; ``busy`` while a batch is being written."""
        if self.seconds is None or self._idle_from is None or busy:
            return False
        if now - self._idle_from < self.seconds:
            return False
        return not self._unread_elsewhere(now)

    def _unread_elsewhere(self, now: float) -> bool:
        from kafka import TopicPartition

        owned = self.consumer.assignment()
        partitions = self.consumer.partitions_for_topic(self.topic) or ()
        elsewhere = [tp for tp in (TopicPartition(self.topic, p) for p in sorted(partitions)) if tp not in owned]
        if not elsewhere:
            return False
        config = self.consumer.config
        bound = (config["session_timeout_ms"] + 2 * config["heartbeat_interval_ms"]) / 1000
        if now - self._assignment_changed_at >= bound:
            return False  # a member that was gone has been expired; what is left is a live member's
        if now < self._next_check:
            return True
        self._next_check = now + self.CHECK_EVERY_S
        try:
            ends = self.consumer.end_offsets(elsewhere, timeout_ms=2000)
            resume_at = self.group_positions(elsewhere)
        except Exception as exc:  # the broker cannot say now: wait, within the bound
            log.debug("offsets of partitions owned elsewhere: %s", exc)
            return True
        return any(ends[tp] > resume_at[tp] for tp in elsewhere)
