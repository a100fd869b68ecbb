"""When ``--exit-when-idle`` lets the consumer exit: after that long with nothing read and
nothing left to write, counted from the last batch made durable or given up, or the
last partition assignment; and, for a member that owns only part of the topic, not while
the rest holds messages the group has not committed (within a bound).

CI once caught the consumer exiting with half a topic unread: Elasticsearch had been
down for 16 s, so the batch in flight was written 16 s after it was read; the first poll
after the write returned nothing (the fetch of what waited was still on its way), and
the idle clock, counted from the last read, said 16 s > 6 s. Nothing was lost (what was
not read was not committed) but a back-fill stopped half-way with exit code 0.

It caught the same outcome another way: a consumer killed with -9 while it was joining
the group still took part in the next assignment, with two of the three partitions; the
consumer started after it got one, drained it and exited idle before the coordinator
expired the dead member and handed the other two over.
"""

from __future__ import annotations

import time
from concurrent.futures import Future

from kafka import TopicPartition

from bp_core.consumer.service import ConsumerOptions, ConsumerService, PreparedBatch
from bp_core.settings import Settings
from bp_core.sinks.archive import ArchiveSink
from bp_core.sinks.dlq import DeadLetterSink

P0 = TopicPartition("bp", 0)
IDLE = 6.0


SESSION_TIMEOUT_MS, HEARTBEAT_MS = 45000, 3000
BOUND = (SESSION_TIMEOUT_MS + 2 * HEARTBEAT_MS) / 1000


class StandInConsumer:
    """The consumer calls that completing and dropping a batch, and the idle check, make.

    The topic "bp" has ``partitions``; this member owns P0. ``committed`` and ``ends``
    are the group's committed offsets and the broker's end offsets of the others;
    ``broker_down`` makes those two calls fail."""

    config = {"session_timeout_ms": SESSION_TIMEOUT_MS, "heartbeat_interval_ms": HEARTBEAT_MS}

    def __init__(self, partitions=(0,)):
        self.seeks: list[tuple] = []
        self.partitions = set(partitions)
        self.committed_offsets: dict = {}
        self.ends: dict = {}
        self.broker_down = False
        self.offset_requests = 0

    def assignment(self):
        return {P0}

    def partitions_for_topic(self, topic):
        return self.partitions if topic == "bp" else None

    def end_offsets(self, partitions, timeout_ms=None):
        self.offset_requests += 1
        if self.broker_down:
            raise TimeoutError("no answer")
        return {tp: self.ends[tp] for tp in partitions}

    def committed(self, tp, timeout_ms=None):
        return self.committed_offsets.get(tp)

    def beginning_offsets(self, partitions, timeout_ms=None):
        return {tp: 0 for tp in partitions}

    def commit_async(self, offsets, callback):
        pass

    def highwater(self, tp):
        return 1000

    def seek(self, tp, offset):
        self.seeks.append((tp, offset))


def idle_service(tmp_path) -> ConsumerService:
    settings = Settings.from_env().with_(archive_dir=tmp_path, topic="bp")
    service = ConsumerService(settings, ConsumerOptions(exit_when_idle=IDLE))
    service._consumer = StandInConsumer()
    service._archive = ArchiveSink(settings.archive_dir, settings.topic)
    return service


def written_batch() -> PreparedBatch:
    batch = PreparedBatch(offsets={P0: 500}, first_offsets={P0: 0}, es=None, archive=None,
                          dlq=DeadLetterSink(None, "bp.dlq"), messages=500)
    batch.future = Future()
    batch.future.set_result(None)
    return batch


def test_never_idle_before_the_first_assignment(tmp_path):
    service = idle_service(tmp_path)
    assert not service._idle_exit_due(time.monotonic() + 3600)


def test_idle_after_the_given_time_without_a_batch(tmp_path):
    service = idle_service(tmp_path)
    service._on_assigned([P0])
    assigned = service._idle_from
    assert not service._idle_exit_due(assigned + IDLE - 0.1)
    assert service._idle_exit_due(assigned + IDLE)


def test_a_long_write_restarts_the_idle_clock(tmp_path):
    service = idle_service(tmp_path)
    service._on_assigned([P0])
    service._idle_from -= 16.0  # the batch was read 16 s ago; Elasticsearch was down since
    batch = written_batch()
    service._inflight = batch
    assert not service._idle_exit_due(time.monotonic()), "never idle with a batch in flight"
    assert service._complete(batch)
    service._inflight = None
    now = time.monotonic()
    assert not service._idle_exit_due(now), "the first empty poll after a long write is not idleness"
    assert service._idle_exit_due(now + IDLE)


def test_a_batch_given_up_restarts_the_idle_clock(tmp_path):
    service = idle_service(tmp_path)
    service._on_assigned([P0])
    service._idle_from -= 60.0
    service._drop(written_batch())
    assert service._consumer.seeks == [(P0, 0)]
    assert not service._idle_exit_due(time.monotonic()), "what was given up is read again first"


P1, P2 = TopicPartition("bp", 1), TopicPartition("bp", 2)


def member_of_three(tmp_path, *, unread: bool) -> ConsumerService:
    """A member that owns P0 of three partitions, idle for IDLE seconds since its
    assignment; P1 is fully committed, P2 holds unread messages or not."""
    service = idle_service(tmp_path)
    consumer = service._consumer = StandInConsumer(partitions=(0, 1, 2))
    consumer.ends = {P1: 800, P2: 900}
    consumer.committed_offsets = {P1: 800, P2: 600 if unread else 900}
    service._on_assigned([P0])
    return service


def test_a_member_waits_while_another_members_partitions_hold_unread_messages(tmp_path):
    service = member_of_three(tmp_path, unread=True)
    assigned = service._assignment_changed_at
    assert not service._idle_exit_due(assigned + IDLE)
    service._consumer.committed_offsets[P2] = 900  # the other member (or this one, after a rebalance) drained it
    assert service._idle_exit_due(assigned + IDLE + service._ELSEWHERE_CHECK_S)


def test_a_member_exits_when_what_others_own_is_all_committed(tmp_path):
    service = member_of_three(tmp_path, unread=False)
    assert service._idle_exit_due(service._assignment_changed_at + IDLE)


def test_the_wait_for_other_members_is_bounded_by_the_session_timeout(tmp_path):
    service = member_of_three(tmp_path, unread=True)
    assigned = service._assignment_changed_at
    assert not service._idle_exit_due(assigned + BOUND - 0.1)
    assert service._idle_exit_due(assigned + BOUND), "e.g. a partition that ends in a transaction marker"


def test_a_revocation_restarts_the_bound(tmp_path):
    service = member_of_three(tmp_path, unread=True)
    service._idle_from -= 2 * BOUND  # assigned long ago, idle since
    service._assignment_changed_at -= 2 * BOUND
    assert service._idle_exit_due(time.monotonic())
    service._on_revoked([P0])  # the coordinator expired a member and rebalances
    assert not service._idle_exit_due(time.monotonic() + IDLE)


def test_when_the_broker_cannot_say_the_member_waits_within_the_bound(tmp_path):
    service = member_of_three(tmp_path, unread=False)
    service._consumer.broker_down = True
    assigned = service._assignment_changed_at
    assert not service._idle_exit_due(assigned + IDLE)
    assert service._idle_exit_due(assigned + BOUND)


def test_the_broker_is_asked_at_most_once_a_second(tmp_path):
    service = member_of_three(tmp_path, unread=True)
    start = service._assignment_changed_at + IDLE
    for step in range(10):
        service._idle_exit_due(start + step * 0.05)
    assert service._consumer.offset_requests == 1
