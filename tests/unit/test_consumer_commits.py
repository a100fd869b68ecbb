"""The checkpoint's bookkeeping (``bp_core.consumer.checkpoint.Checkpoint``): what is sent
again after a failed commit, when, and for which partitions.

The commit itself is exercised against a real broker in the integration and fault
suites (``test_second_member_joins_and_leaves_mid_stream`` makes commits fail during
rebalances). Here only the decision is checked, with a recording stand-in for the two
consumer calls a commit makes.
"""

from __future__ import annotations

from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import RebalanceInProgressError

from bp_core.consumer.checkpoint import Checkpoint
from bp_core.dead_letters.ledger import DeadLetterLedger, decode_mark

P0, P1, P2 = (TopicPartition("bp", p) for p in range(3))


class RecordingConsumer:
    """``assignment`` and ``commit_async``, the calls ``Checkpoint.commit`` makes."""

    def __init__(self, owned):
        self.owned = set(owned)
        self.sent: list[tuple[dict, object]] = []
        self.metadata: list[dict] = []

    def assignment(self):
        return set(self.owned)

    def commit_async(self, offsets, callback):
        self.sent.append(({tp: om.offset for tp, om in offsets.items()}, callback))
        self.metadata.append({tp: om.metadata for tp, om in offsets.items()})


def answer(consumer: RecordingConsumer, index: int, response=None) -> None:
    """The coordinator's answer to the ``index``-th commit: success, or ``response`` (an error)."""
    offsets, callback = consumer.sent[index]
    callback({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}, response)


def test_a_failed_commit_is_sent_again_for_what_the_coordinator_lacks():
    consumer = RecordingConsumer([P0, P1, P2])
    checkpoint = Checkpoint(consumer, DeadLetterLedger())
    checkpoint.commit({P0: 100, P1: 200})
    answer(consumer, 0)                      # acknowledged
    checkpoint.commit({P1: 250, P2: 300})
    answer(consumer, 1, RebalanceInProgressError())
    due = checkpoint.recommit_due
    assert due is not None

    checkpoint.maybe_recommit(due - 0.1)     # not yet
    assert len(consumer.sent) == 2
    checkpoint.maybe_recommit(due)
    assert consumer.sent[2][0] == {P1: 250, P2: 300}   # P0 is already held by the coordinator
    answer(consumer, 2)
    checkpoint.maybe_recommit(due + 10)
    assert len(consumer.sent) == 3           # nothing more to send
    assert checkpoint.committed == {P0: 100, P1: 250, P2: 300}
    assert checkpoint.commits == 2


def test_no_resend_while_a_commit_is_in_flight():
    consumer = RecordingConsumer([P0])
    checkpoint = Checkpoint(consumer, DeadLetterLedger())
    checkpoint.commit({P0: 10})
    checkpoint.commit({P0: 20})
    answer(consumer, 0, RebalanceInProgressError())
    checkpoint.maybe_recommit(checkpoint.recommit_due + 1)
    assert len(consumer.sent) == 2           # the second commit may still succeed
    answer(consumer, 1)
    checkpoint.maybe_recommit(float("inf"))
    assert len(consumer.sent) == 2           # it did: it covers the failed one


def test_offsets_of_partitions_given_to_another_member_are_never_sent_again():
    consumer = RecordingConsumer([P0, P1])
    checkpoint = Checkpoint(consumer, DeadLetterLedger())
    checkpoint.commit({P0: 10, P1: 20})
    answer(consumer, 0, RebalanceInProgressError())
    # The rebalance hands P1 to another member; that member may commit past 20, and
    # sending 20 again would move its offset back.
    checkpoint.revoked([P0, P1])
    consumer.owned = {P0}
    checkpoint.assigned([P0])
    checkpoint.commit({P0: 15})              # a batch completed after the assignment
    answer(consumer, 1, RebalanceInProgressError())
    checkpoint.maybe_recommit(float("inf"))
    assert consumer.sent[-1][0] == {P0: 15}


def test_a_batch_completed_mid_rebalance_is_forgotten_if_its_partition_goes():
    consumer = RecordingConsumer([P0, P1])
    checkpoint = Checkpoint(consumer, DeadLetterLedger())
    checkpoint.revoked([P0, P1])             # revocation: the assignment is still the old one ...
    checkpoint.commit({P1: 40})              # ... when the batch in flight completes
    answer(consumer, 0, RebalanceInProgressError())
    consumer.owned = {P0}
    checkpoint.assigned([P0])                # P1 went to another member
    checkpoint.maybe_recommit(float("inf"))
    assert len(consumer.sent) == 1
    assert checkpoint.durable == {}


def test_only_owned_partitions_are_committed_and_each_commit_carries_the_dead_letter_mark():
    consumer = RecordingConsumer([P0])
    ledger = DeadLetterLedger()
    ledger.take_up(0, dlq_end=42)
    checkpoint = Checkpoint(consumer, ledger)
    checkpoint.commit({P0: 7, P1: 9})        # P1 is not ours (any more)
    assert consumer.sent[0][0] == {P0: 7}
    assert decode_mark(consumer.metadata[0][P0]) == 42
