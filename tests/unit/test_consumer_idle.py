"""When ``--exit-when-idle`` lets the consumer exit (``bp_core.consumer.idle.IdleExit``):
after that long with nothing read and nothing left to write, counted from the last
batch made durable or given up, or the last assignment; and, for a member that owns only
part of the topic, not while the rest holds messages the group has not committed
(within a bound).

CI once caught the consumer exiting with half a topic unread: Elasticsearch had been
down for 16 s, so the batch in flight was written 16 s after it was read; the first poll
after the write returned nothing, and an idle clock counted from the last read said
16 s > 6 s. It caught the same outcome another way: a consumer killed with -9 while it
was joining the group still took part in the next assignment; the consumer started
after it drained its own share and exited idle before the coordinator expired the dead
member and handed the rest over.
"""

from __future__ import annotations

from kafka import TopicPartition

from bp_core.consumer.idle import IdleExit

P0, P1, P2 = (TopicPartition("bp", p) for p in range(3))
IDLE = 6.0
SESSION_TIMEOUT_MS, HEARTBEAT_MS = 45000, 3000
BOUND = (SESSION_TIMEOUT_MS + 2 * HEARTBEAT_MS) / 1000
T0 = 1000.0  # a monotonic time


class StandInConsumer:
    """The consumer calls the idle check makes. The topic "bp" has ``partitions``; this
    member owns P0. ``ends`` are the broker's end offsets of the others; ``broker_down``
    makes the call fail."""

    config = {"session_timeout_ms": SESSION_TIMEOUT_MS, "heartbeat_interval_ms": HEARTBEAT_MS}

    def __init__(self, partitions=(0,)):
        self.partitions = set(partitions)
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


def idle_exit(partitions=(0,), committed=None) -> IdleExit:
    committed = committed or {}
    return IdleExit(StandInConsumer(partitions), "bp", IDLE,
                    group_positions=lambda tps: {tp: committed.get(tp, 0) for tp in tps})


def test_never_idle_before_the_first_assignment():
    assert not idle_exit().due(T0 + 3600, busy=False)


def test_idle_after_the_given_time_without_a_batch():
    idle = idle_exit()
    idle.assignment_changed(assigned=True, now=T0)
    assert not idle.due(T0 + IDLE - 0.1, busy=False)
    assert idle.due(T0 + IDLE, busy=False)


def test_never_idle_with_a_batch_being_written():
    idle = idle_exit()
    idle.assignment_changed(assigned=True, now=T0)
    assert not idle.due(T0 + 10 * IDLE, busy=True)


def test_a_long_write_restarts_the_idle_clock():
    idle = idle_exit()
    idle.assignment_changed(assigned=True, now=T0)
    idle.activity(now=T0 + 16.0)  # the batch read at T0 was durable 16 s later (Elasticsearch was down)
    assert not idle.due(T0 + 16.0, busy=False), "the first empty poll after a long write is not idleness"
    assert idle.due(T0 + 16.0 + IDLE, busy=False)


def test_the_check_is_off_without_exit_when_idle():
    idle = IdleExit(StandInConsumer(), "bp", None, group_positions=dict)
    idle.assignment_changed(assigned=True, now=T0)
    assert not idle.due(T0 + 3600, busy=False)


def member_of_three(*, unread: bool) -> IdleExit:
    """A member that owns P0 of three partitions, assigned at T0; P1 is fully
    committed, P2 holds unread messages or not."""
    committed = {P1: 800, P2: 600 if unread else 900}
    idle = idle_exit(partitions=(0, 1, 2), committed=committed)
    idle.consumer.ends = {P1: 800, P2: 900}
    idle.assignment_changed(assigned=True, now=T0)
    idle.committed = committed
    return idle


def test_a_member_waits_while_another_members_partitions_hold_unread_messages():
    idle = member_of_three(unread=True)
    assert not idle.due(T0 + IDLE, busy=False)
    idle.committed[P2] = 900  # the other member (or this one, after a rebalance) drained it
    assert idle.due(T0 + IDLE + IdleExit.CHECK_EVERY_S, busy=False)


def test_a_member_exits_when_what_others_own_is_all_committed():
    assert member_of_three(unread=False).due(T0 + IDLE, busy=False)


def test_the_wait_for_other_members_is_bounded_by_the_session_timeout():
    idle = member_of_three(unread=True)
    assert not idle.due(T0 + BOUND - 0.1, busy=False)
    assert idle.due(T0 + BOUND, busy=False), "e.g. a partition that ends in a transaction marker"


def test_a_revocation_restarts_the_bound():
    idle = member_of_three(unread=True)
    later = T0 + 2 * BOUND
    assert idle.due(later, busy=False)
    idle.assignment_changed(assigned=False, now=later)  # the coordinator expired a member and rebalances
    assert not idle.due(later + IDLE, busy=False)


def test_when_the_broker_cannot_say_the_member_waits_within_the_bound():
    idle = member_of_three(unread=False)
    idle.consumer.broker_down = True
    assert not idle.due(T0 + IDLE, busy=False)
    assert idle.due(T0 + BOUND, busy=False)


def test_the_broker_is_asked_at_most_once_a_second():
    idle = member_of_three(unread=True)
    for step in range(10):
        idle.due(T0 + IDLE + step * 0.05, busy=False)
    assert idle.consumer.offset_requests == 1
